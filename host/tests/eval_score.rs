//! Scoring on the real SmolLM2-135M-Instruct (Q4_1): the fast path (KV-cache prefix reuse across choices and
//! documents, output head only at continuation positions, sharded threads) must give the same
//! log-likelihoods as a naive computation (each choice's whole sequence prefilled from an empty cache with
//! `Logits::All`); the in-memory sub-network must score as the same sub-network exported to a file.

use std::path::PathBuf;

use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::engine::{Logits, Model, Session, SessionOptions, ops};
use device_runtime::gguf::GgufFile;
use device_runtime::subnet::{ExportQuant, Provenance, export_subnet};
use llamanas::data::TaskSpec;
use llamanas::eval::{Scorer, loglikelihoods, subnet_model};

fn model_path() -> PathBuf {
    let p = llamanas::data::assets_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh or set LLAMANAS_ASSETS", p.display());
    p
}

fn naive(model: &Model, ctx: &[u32], cont: &[u32]) -> f64 {
    let mut s = Session::new(model, SessionOptions { n_ctx: 512, threads: 1, ..Default::default() }).unwrap();
    let mut seq = ctx.to_vec();
    seq.extend_from_slice(&cont[..cont.len() - 1]);
    let all = s.prefill(&seq, Logits::All).unwrap();
    let nv = model.config.n_vocab;
    cont.iter().enumerate().map(|(j, &t)| ops::log_softmax_at(&all[(ctx.len() - 1 + j) * nv..][..nv], t as usize)).sum()
}

#[test]
fn fast_scoring_equals_naive() {
    let path = model_path();
    let scorer = Scorer::new(&path, &[TaskSpec::ArcEasy, TaskSpec::Winogrande, TaskSpec::Mmlu { shots: 0 }], Some(3), 0, 2).unwrap();
    let model = Model::load(&path).unwrap();
    for t in scorer.tasks() {
        let (lls, evaluated) = loglikelihoods(&model, &t.requests, scorer.n_ctx(), 2, &|_| {}).unwrap();
        let total: usize = t.requests.iter().flatten().map(|r| r.ctx.len() + r.cont.len() - 1).sum();
        assert!(evaluated < total, "{}: the cache reuse evaluated {evaluated} of {total} tokens", t.spec);
        for (doc, (reqs, ll)) in t.docs.iter().zip(t.requests.iter().zip(&lls)) {
            for (r, &l) in reqs.iter().zip(ll) {
                let want = naive(&model, &r.ctx, &r.cont);
                // The engine's logits do not depend on how a sequence is batched (its kernels compute every
                // (row, token) output in one order: device-runtime `logits_do_not_depend_on_batching`), so
                // the two ways give the same f32 logits and the same f64 sums: measured difference 0 on every
                // request here. The tolerance only allows for an f64 summation order. (Before that fix of
                // 2026-11-30 they differed by up to 0.11 nats, arc_easy doc 130; a reuse bug costs whole nats.)
                assert!((l - want).abs() < 1e-9, "{} doc {}: fast {l} vs naive {want}", t.spec, doc.index);
                assert!(l < 0.0);
            }
        }
    }
}

#[test]
fn logits_from_equals_all() {
    let model = Model::load(model_path()).unwrap();
    let toks: Vec<u32> = (0..12).map(|i| 100 + 37 * i).collect();
    let opts = SessionOptions { n_ctx: 64, threads: 1, n_batch: 5, ..Default::default() };
    let all = Session::new(&model, opts).unwrap().prefill(&toks, Logits::All).unwrap();
    let from = Session::new(&model, opts).unwrap().prefill(&toks, Logits::From(7)).unwrap();
    let nv = model.config.n_vocab;
    assert_eq!(from.len(), 5 * nv);
    assert_eq!(&from[..], &all[7 * nv..]);
    assert!(Session::new(&model, opts).unwrap().prefill(&toks, Logits::From(12)).is_err());
}

#[test]
fn in_memory_subnet_scores_as_exported_file() {
    let path = model_path();
    let base = GgufFile::open(&path).unwrap();
    let mc = ModelConfig::from_gguf(&base).unwrap();
    let n = mc.n_layers;
    let cfg = SubnetConfig {
        layers: (0..n).filter(|l| l % 5 != 4).collect(),
        ffn: (0..n).filter(|l| l % 5 != 4).map(|l| if l % 2 == 1 { 1024 } else { 1536 }).collect(),
        kv_heads: (0..n).filter(|l| l % 5 != 4).map(|l| if l % 3 == 0 { 2 } else { 3 }).collect(),
    };
    let mem = subnet_model(&base, &cfg, ExportQuant::Q4_1, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub.gguf");
    let prov = Provenance { base_sha256: "0".repeat(64), run: None, objectives: None };
    export_subnet(&base, &cfg, ExportQuant::Q4_1, &prov, &out).unwrap();
    let file = Model::load(&out).unwrap();
    let scorer = Scorer::new(&path, &[TaskSpec::Piqa], Some(2), 1, 1).unwrap();
    let t = &scorer.tasks()[0];
    let (a, _) = loglikelihoods(&mem, &t.requests, scorer.n_ctx(), 1, &|_| {}).unwrap();
    let (b, _) = loglikelihoods(&file, &t.requests, scorer.n_ctx(), 1, &|_| {}).unwrap();
    assert_eq!(a, b);
    // The full model through the in-memory path is the file itself.
    let full = subnet_model(&base, &mc.full_subnet(), ExportQuant::Q4_1, None).unwrap();
    let whole = Model::load(&path).unwrap();
    let (c, _) = loglikelihoods(&full, &t.requests, scorer.n_ctx(), 1, &|_| {}).unwrap();
    let (d, _) = loglikelihoods(&whole, &t.requests, scorer.n_ctx(), 1, &|_| {}).unwrap();
    assert_eq!(c, d);
    assert_ne!(a, d);
    let s = scorer.score(&cfg).unwrap();
    assert_eq!(s[0].n, 2);
}
