//! Unit tests of the elastic model on a tiny random model (no assets): agreement with the runtime engine
//! (an independent implementation, itself checked against llama.cpp), gradients confined to the slices,
//! padding, saving, and bad input. The real-model tests live in `host/tests/elastic_smollm2.rs` and the
//! `tests` crate.

use super::*;
use burn::tensor::Tensor;
use device_runtime::arch::SubnetConfig;
use device_runtime::engine::{Logits, Model, Session, SessionOptions};
use device_runtime::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use device_runtime::subnet::{ExportQuant, Provenance, export_subnet};

const D: usize = 64;
const HEADS: usize = 4;
const KV: usize = 2;
const HD: usize = 16;
const FFN: usize = 96;
const VOCAB: usize = 50;
const LAYERS: usize = 3;

/// Deterministic pseudo-random values in `[-scale, scale)` (a 64-bit LCG; no dependency).
fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A tiny llama GGUF (F32) with random weights: 3 layers, d 64, 4 heads / 2 KV heads of 16, FFN 96,
/// vocabulary 50, RoPE base 10000; tied embeddings unless `untied`.
fn tiny_gguf(untied: bool) -> GgufFile {
    let mut w = GgufWriter::new();
    let m = |w: &mut GgufWriter, k: &str, v: u32| w.add_metadata(k, MetaValue::U32(v));
    w.add_metadata("general.architecture", MetaValue::String("llama".into()));
    m(&mut w, "llama.block_count", LAYERS as u32);
    m(&mut w, "llama.embedding_length", D as u32);
    m(&mut w, "llama.context_length", 128);
    m(&mut w, "llama.feed_forward_length", FFN as u32);
    m(&mut w, "llama.attention.head_count", HEADS as u32);
    m(&mut w, "llama.attention.head_count_kv", KV as u32);
    w.add_metadata("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5));
    w.add_metadata("llama.rope.freq_base", MetaValue::F32(10000.0));
    let mut seed = 1u64;
    let mut add = |w: &mut GgufWriter, name: &str, dims: &[u64], scale: f32, offset: f32| {
        seed += 1;
        let n: u64 = dims.iter().product();
        let v: Vec<u8> = rand_vec(n as usize, seed, scale).iter().flat_map(|x| (x + offset).to_le_bytes()).collect();
        w.add_tensor(name, dims, GgmlType::F32, v).unwrap();
    };
    let (d, v, f) = (D as u64, VOCAB as u64, FFN as u64);
    add(&mut w, "token_embd.weight", &[d, v], 1.0, 0.0);
    add(&mut w, "output_norm.weight", &[d], 0.2, 1.0);
    if untied {
        add(&mut w, "output.weight", &[d, v], 0.3, 0.0);
    }
    for l in 0..LAYERS {
        let p = |s: &str| format!("blk.{l}.{s}.weight");
        add(&mut w, &p("attn_norm"), &[d], 0.2, 1.0);
        add(&mut w, &p("attn_q"), &[d, (HEADS * HD) as u64], 0.25, 0.0);
        add(&mut w, &p("attn_k"), &[d, (KV * HD) as u64], 0.25, 0.0);
        add(&mut w, &p("attn_v"), &[d, (KV * HD) as u64], 0.25, 0.0);
        add(&mut w, &p("attn_output"), &[(HEADS * HD) as u64, d], 0.15, 0.0);
        add(&mut w, &p("ffn_norm"), &[d], 0.2, 1.0);
        add(&mut w, &p("ffn_gate"), &[d, f], 0.2, 0.0);
        add(&mut w, &p("ffn_up"), &[d, f], 0.2, 0.0);
        add(&mut w, &p("ffn_down"), &[f, d], 0.15, 0.0);
    }
    GgufFile::from_bytes(w.to_bytes().unwrap(), "tiny.gguf").unwrap()
}

fn tokens(n: usize, seed: u64) -> Vec<u32> {
    rand_vec(n, seed, 1.0).iter().map(|x| ((x + 1.0) * 0.5 * VOCAB as f32) as u32 % VOCAB as u32).collect()
}

/// Logits `[n, vocab]` of the runtime engine on `toks` for a GGUF in memory.
fn runtime_logits(f: GgufFile, toks: &[u32]) -> Vec<f32> {
    let m = Model::from_gguf(f).unwrap();
    let mut s = Session::new(&m, SessionOptions { n_ctx: 64, threads: 1, ..Default::default() }).unwrap();
    s.prefill(toks, Logits::All).unwrap()
}

fn burn_logits(model: &ElasticModel, toks: &[u32], subnet: &SubnetConfig) -> Vec<f32> {
    let b = TokenBatch::new(&[toks.to_vec()]).unwrap();
    load::read_vec(model.forward(&b, subnet).unwrap()).unwrap()
}

/// `max |a - b| / max |b|`.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn export_f32(base: &GgufFile, s: &SubnetConfig) -> GgufFile {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub.gguf");
    export_subnet(base, s, ExportQuant::F32, &Provenance::for_base(base), &out).unwrap();
    GgufFile::from_bytes(std::fs::read(&out).unwrap(), "sub.gguf").unwrap()
}

#[test]
fn full_model_matches_the_runtime_engine() {
    for untied in [false, true] {
        let f = tiny_gguf(untied);
        let model = ElasticModel::from_gguf(&f, &default_device()).unwrap();
        assert_eq!(model.config().tied_embeddings, !untied);
        let toks = tokens(20, 7);
        let got = burn_logits(&model, &toks, &model.config().full_subnet());
        let want = runtime_logits(tiny_gguf(untied), &toks);
        let e = rel_err(&got, &want);
        assert!(e < 1e-5, "untied={untied}: relative error {e}");
    }
}

#[test]
fn subnetworks_match_the_runtime_on_their_f32_export() {
    let base = tiny_gguf(false);
    let model = ElasticModel::from_gguf(&base, &default_device()).unwrap();
    let toks = tokens(17, 3);
    let subnets = [
        SubnetConfig { layers: vec![0, 1, 2], ffn: vec![96, 32, 64], kv_heads: vec![2, 1, 2] },
        SubnetConfig { layers: vec![0, 2], ffn: vec![40, 96], kv_heads: vec![1, 1] },
        // A layer without attention and one without FFN.
        SubnetConfig { layers: vec![1, 2], ffn: vec![0, 8], kv_heads: vec![2, 0] },
    ];
    for s in &subnets {
        let got = burn_logits(&model, &toks, s);
        let want = runtime_logits(export_f32(&base, s), &toks);
        let e = rel_err(&got, &want);
        assert!(e < 1e-5, "{}: relative error {e}", s.canonical_json());
    }
}

#[test]
fn right_padding_does_not_change_the_real_tokens() {
    let model = ElasticModel::from_gguf(&tiny_gguf(false), &default_device()).unwrap();
    let full = model.config().full_subnet();
    let (a, b) = (tokens(11, 5), tokens(6, 9));
    let both = TokenBatch::new(&[a.clone(), b.clone()]).unwrap();
    assert_eq!((both.batch(), both.seq_len(), both.n_tokens(), both.n_targets()), (2, 11, 17, 15));
    let out = load::read_vec(model.forward(&both, &full).unwrap()).unwrap();
    let alone = burn_logits(&model, &b, &full);
    let padded_b = &out[11 * VOCAB..(11 + 6) * VOCAB];
    assert!(rel_err(padded_b, &alone) < 1e-6);
    // The loss averages over the 15 targets only: equal to the token-weighted mean of the two alone.
    let nll = |s: &[u32]| {
        let l = model.loss(&TokenBatch::new(&[s.to_vec()]).unwrap(), &full).unwrap();
        l.loss.into_scalar::<f32>() as f64 * l.n_targets as f64
    };
    let joint = model.loss(&both, &full).unwrap();
    assert_eq!(joint.n_targets, 15);
    let want = (nll(&a) + nll(&b)) / 15.0;
    assert!((joint.loss.into_scalar::<f32>() as f64 - want).abs() < 1e-5 * want.abs());
}

#[test]
fn loss_is_the_mean_nll_of_the_runtime_logits() {
    // Reference: log-softmax of the runtime's logits, computed here in f64.
    let model = ElasticModel::from_gguf(&tiny_gguf(false), &default_device()).unwrap();
    let toks = tokens(12, 11);
    let mask: Vec<bool> = (0..12).map(|t| t % 3 != 0).collect(); // targets 1,2,4,5,7,8,10,11
    let b = TokenBatch::with_targets(&[toks.clone()], &[mask.clone()]).unwrap();
    let l = model.loss(&b, &model.config().full_subnet()).unwrap();
    let logits = runtime_logits(tiny_gguf(false), &toks);
    let (mut nll, mut n) = (0f64, 0);
    for t in 1..12 {
        if mask[t] {
            nll -= device_runtime::engine::ops::log_softmax_at(&logits[(t - 1) * VOCAB..t * VOCAB], toks[t] as usize);
            n += 1;
        }
    }
    assert_eq!(l.n_targets, n);
    let got = l.loss.into_scalar::<f32>() as f64;
    assert!((got - nll / n as f64).abs() < 1e-5, "{got} vs {}", nll / n as f64);
}

/// Rows (or columns) of a `[rows, cols]` gradient outside `keep` are exactly zero and inside are not all zero.
fn check_grad(g: Tensor<2>, dim: usize, keep: usize, what: &str) {
    let [r, c] = g.dims();
    let v = load::read_vec(g).unwrap();
    let inside = |i: usize, j: usize| if dim == 0 { i < keep } else { j < keep };
    let (mut zero_out, mut nonzero_in) = (true, false);
    for i in 0..r {
        for j in 0..c {
            let x = v[i * c + j];
            if inside(i, j) {
                nonzero_in |= x != 0.0;
            } else {
                zero_out &= x == 0.0;
            }
        }
    }
    assert!(zero_out, "{what}: non-zero gradient outside the first {keep} along dim {dim}");
    assert!(nonzero_in, "{what}: no gradient inside the slice");
}

#[test]
fn gradients_flow_only_into_the_slices_used() {
    let model = ElasticModel::from_gguf(&tiny_gguf(false), &training_device()).unwrap();
    // Layer 1 dropped; layer 0: FFN 32 of 96, 1 KV group of 2 (query heads 0-1 of 4); layer 2: full FFN, no
    // attention.
    let s = SubnetConfig { layers: vec![0, 2], ffn: vec![32, 96], kv_heads: vec![1, 0] };
    let b = TokenBatch::new(&[tokens(9, 1), tokens(7, 2)]).unwrap();
    let grads = model.loss(&b, &s).unwrap().loss.backward();
    let g = |p: &Option<burn::module::Param<Tensor<2>>>| p.as_ref().unwrap().val().grad(&grads);
    let b0 = &model.blocks[0];
    check_grad(g(&b0.gate).unwrap(), 0, 32, "blk.0.ffn_gate");
    check_grad(g(&b0.up).unwrap(), 0, 32, "blk.0.ffn_up");
    check_grad(g(&b0.down).unwrap(), 1, 32, "blk.0.ffn_down");
    check_grad(g(&b0.wq).unwrap(), 0, 2 * HD, "blk.0.attn_q");
    check_grad(g(&b0.wk).unwrap(), 0, HD, "blk.0.attn_k");
    check_grad(g(&b0.wv).unwrap(), 0, HD, "blk.0.attn_v");
    check_grad(g(&b0.wo).unwrap(), 1, 2 * HD, "blk.0.attn_output");
    check_grad(g(&model.blocks[2].down).unwrap(), 1, FFN, "blk.2.ffn_down");
    // Unused weights get no gradient at all (or an all-zero one).
    for (what, p) in [("blk.1.ffn_gate", &model.blocks[1].gate), ("blk.2.attn_q", &model.blocks[2].wq)] {
        if let Some(t) = g(p) {
            assert!(load::read_vec(t).unwrap().iter().all(|&x| x == 0.0), "{what} has a gradient");
        }
    }
}

#[test]
fn save_and_reload_round_trips() {
    let f = tiny_gguf(true);
    let model = ElasticModel::from_gguf(&f, &default_device()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(load::SUPERNET_GGUF);
    model.save_gguf(&f, &out, SaveType::F32).unwrap();
    // A super-network folder loads through its supernet.gguf; the bytes of every tensor are the source's.
    let back = ElasticModel::load(dir.path(), &default_device()).unwrap();
    assert_eq!(back.config(), model.config());
    let g = GgufFile::open(&out).unwrap();
    for t in f.tensors() {
        let u = g.tensor(&t.name).unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((&u.dims, u.ty), (&t.dims, t.ty));
        assert_eq!(g.tensor_data(u), f.tensor_data(t), "{}", t.name);
    }
    assert_eq!(g.tensors().len(), f.tensors().len());
    // F16: matrices F16, norms F32, values within f16 rounding.
    model.save_gguf(&f, &out, SaveType::F16).unwrap();
    let h = ElasticModel::load(&out, &default_device()).unwrap();
    assert_eq!(GgufFile::open(&out).unwrap().tensor("blk.0.attn_q.weight").unwrap().ty, GgmlType::F16);
    let a = load::read_vec(model.blocks[0].wq.as_ref().unwrap().val()).unwrap();
    let b = load::read_vec(h.blocks[0].wq.as_ref().unwrap().val()).unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= x.abs() * 1e-3 + 1e-7));
}

#[test]
fn bad_input_gives_clear_errors() {
    let model = ElasticModel::from_gguf(&tiny_gguf(false), &default_device()).unwrap();
    let b = TokenBatch::new(&[vec![1, 2, 3]]).unwrap();
    let bad = SubnetConfig { layers: vec![0, 3], ffn: vec![96, 96], kv_heads: vec![2, 2] };
    let e = model.forward(&b, &bad).unwrap_err().to_string();
    assert!(e.contains("layer 3 is out of range"), "{e}");
    let wide = SubnetConfig { layers: vec![0], ffn: vec![97], kv_heads: vec![2] };
    assert!(model.forward(&b, &wide).unwrap_err().to_string().contains("ffn 97 > base 96"));
    let oov = TokenBatch::new(&[vec![1, 50]]).unwrap();
    let e = model.forward(&oov, &model.config().full_subnet()).unwrap_err().to_string();
    assert!(e.contains("token id 50 is outside the vocabulary of 50"), "{e}");
    assert!(TokenBatch::new(&[]).unwrap_err().to_string().contains("no sequences"));
    assert!(TokenBatch::new(&[vec![1], vec![]]).unwrap_err().to_string().contains("sequence 1 is empty"));
    let e = TokenBatch::with_targets(&[vec![1, 2]], &[vec![true]]).unwrap_err().to_string();
    assert!(e.contains("2 tokens but a target mask of 1"), "{e}");
    let one = TokenBatch::new(&[vec![4]]).unwrap();
    assert!(model.loss(&one, &model.config().full_subnet()).unwrap_err().to_string().contains("no target tokens"));
    let dir = tempfile::tempdir().unwrap();
    let e = ElasticModel::load(dir.path(), &default_device()).unwrap_err().to_string();
    assert!(e.contains("without supernet.gguf"), "{e}");
    let e = ElasticModel::load(dir.path().join("nope.gguf"), &default_device()).unwrap_err().to_string();
    assert!(e.contains("nope.gguf: no such file"), "{e}");
}

#[test]
fn kl_divergence_hand_computed() {
    // p = softmax([0, ln 3]) = [1/4, 3/4], q = softmax([0, 0]) = [1/2, 1/2]:
    // KL = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.1308120...
    let dev = default_device();
    let t = Tensor::<2>::from_data(burn::tensor::TensorData::new(vec![0.0f32, 3f32.ln()], [1, 2]), &dev);
    let s = Tensor::<2>::from_data(burn::tensor::TensorData::new(vec![0.0f32, 0.0], [1, 2]), &dev);
    let kl = kl_divergence(s, t).into_scalar::<f32>();
    assert!((kl - 0.130_812_04).abs() < 1e-6, "{kl}");
}
