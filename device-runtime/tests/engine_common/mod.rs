//! Shared helpers of the engine tests: a plain f32 reference forward pass (no quantized kernels, weights
//! dequantized with `quant::dequant`, which is checked bit-exact against gguf-py), tiny synthetic models, and
//! the real assets.
#![allow(dead_code)]

use device_runtime::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use device_runtime::quant::dequant::dequantize_to_vec;
use std::path::PathBuf;

/// `$LLAMANAS_ASSETS` (else `assets/` at the workspace root), as `llamanas_tests::assets_dir`.
pub fn assets_dir() -> PathBuf {
    match std::env::var_os("LLAMANAS_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets"),
    }
}

/// The shipped SmolLM2 Q4_1 file; panics (the test fails) when missing.
pub fn smollm2_path() -> PathBuf {
    let p = assets_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh (or set LLAMANAS_ASSETS)", p.display());
    p
}

/// A derived reference file (`q8_0`, `q4_0`, `f32`, `deci`) made by `scripts/ref/make_reference_ggufs.py`
/// (gguf-py) into `$LLAMANAS_ASSETS/derived/` when missing (the script writes a temporary file and renames
/// it). Fails loudly if python3 or gguf-py is missing.
pub fn derived(variant: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = assets_dir().join("derived");
    let p = dir.join(format!("smollm2-{variant}.gguf"));
    if !p.is_file() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/ref/make_reference_ggufs.py");
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .arg("--model")
            .arg(smollm2_path())
            .arg("--only")
            .arg(variant)
            .output()
            .expect("python3 is needed to make the reference files (scripts/test.sh installs gguf-py)");
        assert!(out.status.success(), "{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    assert!(p.is_file(), "{} was not made", p.display());
    p
}

fn f32_of(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.tensor(name).unwrap_or_else(|| panic!("missing {name}"));
    dequantize_to_vec(t.ty, f.tensor_data(t)).unwrap()
}

/// Reference logits `[tokens.len()][n_vocab]` of a llama/deci GGUF: everything in f32 (f64 sums), written
/// from the LLaMA equations independently of the engine.
pub fn reference_logits(f: &GgufFile, tokens: &[u32]) -> Vec<Vec<f32>> {
    let arch = f.get_str("general.architecture").unwrap().to_string();
    let u = |k: &str| f.get(&format!("{arch}.{k}")).unwrap();
    let nl = u("block_count").as_u32().unwrap() as usize;
    let d = u("embedding_length").as_u32().unwrap() as usize;
    let per_layer = |k: &str| -> Vec<usize> {
        let v = u(k);
        match v.as_u32() {
            Some(x) => vec![x as usize; nl],
            None => v.as_u32_vec().unwrap().into_iter().map(|x| x as usize).collect(),
        }
    };
    let ffn = per_layer("feed_forward_length");
    let nh = per_layer("attention.head_count");
    let nkv = per_layer("attention.head_count_kv");
    let hd = d / nh.iter().copied().find(|&h| h > 0).unwrap();
    let eps = u("attention.layer_norm_rms_epsilon").as_f32().unwrap();
    let base = f.get(&format!("{arch}.rope.freq_base")).and_then(|v| v.as_f32()).unwrap_or(10000.0) as f64;
    let emb = f32_of(f, "token_embd.weight");
    let nv = emb.len() / d;
    let out_w = if f.tensor("output.weight").is_some() { f32_of(f, "output.weight") } else { emb.clone() };
    let n = tokens.len();
    let rms = |x: &[f32], w: &[f32]| -> Vec<f32> {
        let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
        let s = 1.0 / (ms + eps as f64).sqrt();
        x.iter().zip(w).map(|(a, b)| (*a as f64 * s) as f32 * b).collect()
    };
    let matvec = |w: &[f32], x: &[f32]| -> Vec<f32> {
        w.chunks_exact(x.len()).map(|r| r.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() as f32).collect()
    };
    let rope = |v: &mut [f32], pos: usize| {
        for h in v.chunks_exact_mut(hd) {
            for i in 0..hd / 2 {
                let th = pos as f64 * base.powf(-2.0 * i as f64 / hd as f64);
                let (a, b) = (h[2 * i] as f64, h[2 * i + 1] as f64);
                h[2 * i] = (a * th.cos() - b * th.sin()) as f32;
                h[2 * i + 1] = (a * th.sin() + b * th.cos()) as f32;
            }
        }
    };
    let mut x: Vec<Vec<f32>> = tokens.iter().map(|&t| emb[t as usize * d..(t as usize + 1) * d].to_vec()).collect();
    for l in 0..nl {
        let w = |s: &str| f32_of(f, &format!("blk.{l}.{s}.weight"));
        if nh[l] > 0 && nkv[l] > 0 {
            let (an, wq, wk, wv, wo) = (w("attn_norm"), w("attn_q"), w("attn_k"), w("attn_v"), w("attn_output"));
            let mut ks = vec![];
            let mut vs = vec![];
            let mut qs = vec![];
            for (p, xt) in x.iter().enumerate() {
                let h = rms(xt, &an);
                let (mut q, mut k) = (matvec(&wq, &h), matvec(&wk, &h));
                rope(&mut q, p);
                rope(&mut k, p);
                qs.push(q);
                ks.push(k);
                vs.push(matvec(&wv, &h));
            }
            for (p, xt) in x.iter_mut().enumerate() {
                let mut o = vec![0f32; nh[l] * hd];
                for j in 0..nh[l] {
                    let g = j / (nh[l] / nkv[l]);
                    let q = &qs[p][j * hd..(j + 1) * hd];
                    let sc: Vec<f64> = (0..=p)
                        .map(|s| q.iter().zip(&ks[s][g * hd..(g + 1) * hd]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / (hd as f64).sqrt())
                        .collect();
                    let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
                    for (s, sv) in sc.iter().enumerate() {
                        let pr = (sv - m).exp() / z;
                        for i in 0..hd {
                            o[j * hd + i] += (pr * vs[s][g * hd + i] as f64) as f32;
                        }
                    }
                }
                let y = matvec(&wo, &o);
                xt.iter_mut().zip(y).for_each(|(a, b)| *a += b);
            }
        }
        if ffn[l] > 0 {
            let (fnw, wg, wu, wd) = (w("ffn_norm"), w("ffn_gate"), w("ffn_up"), w("ffn_down"));
            for xt in x.iter_mut() {
                let h = rms(xt, &fnw);
                let (g, up) = (matvec(&wg, &h), matvec(&wu, &h));
                let a: Vec<f32> = g.iter().zip(&up).map(|(g, u)| (*g as f64 / (1.0 + (-*g as f64).exp()) * *u as f64) as f32).collect();
                let y = matvec(&wd, &a);
                xt.iter_mut().zip(y).for_each(|(a, b)| *a += b);
            }
        }
    }
    let on = f32_of(f, "output_norm.weight");
    let _ = n;
    x.iter().map(|xt| matvec(&out_w[..nv * d], &rms(xt, &on))).collect()
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn rnd(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Per-layer shape of a tiny synthetic model.
#[derive(Clone, Copy)]
pub struct TinyLayer {
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_ff: u32,
}

/// A tiny synthetic model (d = 64, head_dim 16, vocab 40, F32 or Q8_0 matrices) as GGUF bytes. `arch` is
/// written as is; per-layer values are arrays when `arch == "deci"`. `mutate` may edit the writer last.
pub fn tiny_gguf(arch: &str, layers: &[TinyLayer], wty: GgmlType, mutate: impl FnOnce(&mut GgufWriter<'static>)) -> Vec<u8> {
    let (d, hd, nv) = (64u64, 16u64, 40u64);
    let mut seed = 7u64;
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", MetaValue::String(arch.into()));
    let k = |s: &str| format!("{arch}.{s}");
    w.add_metadata(&k("block_count"), MetaValue::U32(layers.len() as u32));
    w.add_metadata(&k("context_length"), MetaValue::U32(64));
    w.add_metadata(&k("embedding_length"), MetaValue::U32(d as u32));
    w.add_metadata(&k("attention.key_length"), MetaValue::U32(hd as u32));
    w.add_metadata(&k("attention.layer_norm_rms_epsilon"), MetaValue::F32(1e-5));
    w.add_metadata(&k("rope.freq_base"), MetaValue::F32(10000.0));
    let per = |f: &dyn Fn(&TinyLayer) -> u32| -> MetaValue {
        if arch == "deci" { MetaValue::u32_array(&layers.iter().map(f).collect::<Vec<_>>()) } else { MetaValue::U32(f(&layers[0])) }
    };
    w.add_metadata(&k("feed_forward_length"), per(&|l| l.n_ff));
    w.add_metadata(&k("attention.head_count"), per(&|l| l.n_head));
    w.add_metadata(&k("attention.head_count_kv"), per(&|l| l.n_head_kv));
    let enc = |v: &[f32], ty: GgmlType| -> Vec<u8> {
        match ty {
            GgmlType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            _ => device_runtime::quant::quantize::quantize(ty, v).unwrap(),
        }
    };
    let mut add = |w: &mut GgufWriter<'static>, name: &str, dims: &[u64], ty: GgmlType, scale: f32, offset: f32| {
        let n: u64 = dims.iter().product();
        let v: Vec<f32> = rnd(&mut seed, n as usize, scale).into_iter().map(|x| x + offset).collect();
        w.add_tensor(name, dims, ty, enc(&v, ty)).unwrap();
    };
    add(&mut w, "token_embd.weight", &[d, nv], wty, 1.0, 0.0);
    add(&mut w, "output_norm.weight", &[d], GgmlType::F32, 0.2, 1.0);
    for (i, l) in layers.iter().enumerate() {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        let (qd, kvd, ff) = (l.n_head as u64 * hd, l.n_head_kv as u64 * hd, l.n_ff as u64);
        if l.n_head > 0 {
            add(&mut w, &p("attn_norm"), &[d], GgmlType::F32, 0.2, 1.0);
            add(&mut w, &p("attn_q"), &[d, qd], wty, 0.3, 0.0);
            add(&mut w, &p("attn_k"), &[d, kvd], wty, 0.3, 0.0);
            add(&mut w, &p("attn_v"), &[d, kvd], wty, 0.3, 0.0);
            add(&mut w, &p("attn_output"), &[qd, d], wty, 0.2, 0.0);
        }
        if ff > 0 {
            add(&mut w, &p("ffn_norm"), &[d], GgmlType::F32, 0.2, 1.0);
            add(&mut w, &p("ffn_gate"), &[d, ff], wty, 0.3, 0.0);
            add(&mut w, &p("ffn_up"), &[d, ff], wty, 0.3, 0.0);
            add(&mut w, &p("ffn_down"), &[ff, d], wty, 0.2, 0.0);
        }
    }
    mutate(&mut w);
    w.to_bytes().unwrap()
}

/// Asserts that `tokens` get the same logits, bit for bit, however they are fed to a session: in one
/// prefill call, split in two calls at every point, in batches of 1, 2, 3, 5 and 8, on 2 threads, token by
/// token (decode), and continuing after a truncated cache that held other tokens (KV-cache reuse, as the
/// scorer does). The regression test of the scoring bug of 2026-11-30, where the AVX2 Q4 kernels summed in
/// a batch-size dependent order and KV-reuse scoring differed from a full prefill by up to 0.11 nats.
pub fn assert_batch_invariant(model: &device_runtime::engine::Model, tokens: &[u32], kernels: &[device_runtime::quant::dot::KernelPath]) {
    use device_runtime::engine::{Logits, Session, SessionOptions};
    let n = tokens.len();
    let nv = model.config.n_vocab;
    let same = |what: &str, got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len(), "{what}: length");
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits()) {
            panic!("{what}: position {} logit {}: {} vs {} in one call", i / nv, i % nv, got[i], want[i]);
        }
    };
    for &k in kernels {
        let opts = SessionOptions { n_ctx: 2 * n + 8, threads: 1, n_batch: 512, kernels: k };
        let want = Session::new(model, opts).unwrap().prefill(tokens, Logits::All).unwrap();
        for split in 1..n {
            let mut s = Session::new(model, opts).unwrap();
            let mut got = s.prefill(&tokens[..split], Logits::All).unwrap();
            got.extend(s.prefill(&tokens[split..], Logits::All).unwrap());
            same(&format!("{k:?} split at {split}"), &got, &want);
        }
        for n_batch in [1, 2, 3, 5, 8] {
            let got = Session::new(model, SessionOptions { n_batch, ..opts }).unwrap().prefill(tokens, Logits::All).unwrap();
            same(&format!("{k:?} n_batch {n_batch}"), &got, &want);
        }
        let got = Session::new(model, SessionOptions { threads: 2, ..opts }).unwrap().prefill(tokens, Logits::All).unwrap();
        same(&format!("{k:?} 2 threads"), &got, &want);
        let mut s = Session::new(model, opts).unwrap();
        let got: Vec<f32> = tokens.iter().flat_map(|&t| s.decode(t).unwrap()).collect();
        same(&format!("{k:?} decode"), &got, &want);
        // KV-cache reuse: the cache held the first `keep` tokens and then others; continue after `keep`.
        for keep in [1, n / 2, n - 1] {
            let mut s = Session::new(model, opts).unwrap();
            let mut other = tokens[..keep].to_vec();
            other.extend(tokens.iter().rev().take(n - keep + 3).map(|t| (t + 1) % nv as u32));
            s.prefill(&other, Logits::Last).unwrap();
            s.truncate(keep);
            let from = (n - keep) / 2;
            let got = s.prefill(&tokens[keep..], Logits::From(from)).unwrap();
            same(&format!("{k:?} reuse after {keep}, logits from {from}"), &got, &want[(keep + from) * nv..]);
        }
    }
}
