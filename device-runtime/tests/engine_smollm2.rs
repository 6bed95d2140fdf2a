//! The engine on the real SmolLM2-135M-Instruct files against llama.cpp's figures (quoted in the issue and
//! docs/PERFORMANCE.md; `llama-perplexity -c 512 -b 512` on /usr/share/common-licenses/GPL-3) and against the
//! plain f32 reference forward pass. The derived files are made with gguf-py by
//! `scripts/ref/make_reference_ggufs.py` into `$LLAMANAS_ASSETS/derived/` when missing.

mod engine_common;
use device_runtime::engine::{perplexity::perplexity, sampler, Logits, Model, Session, SessionOptions};
use device_runtime::quant::dot::KernelPath;
use device_runtime::tokenizer::Tokenizer;
use engine_common::*;
use std::path::Path;

const GPL3: &str = "/usr/share/common-licenses/GPL-3";

/// llama-perplexity's figure on GPL-3 for `model`, within 0.5%.
fn check_ppl(model: &Path, expected: f64) {
    let m = Model::load(model).unwrap();
    let tok = Tokenizer::from_gguf(m.gguf().unwrap()).unwrap();
    let text = std::fs::read_to_string(GPL3).expect("GPL-3 text (/usr/share/common-licenses/GPL-3)");
    // llama-perplexity tokenizes with add_special = true: BOS only if the vocab adds it (SmolLM2: no).
    let tokens = tok.encode(&text, true, false).unwrap();
    let bos = if tok.metadata().add_bos { tok.bos() } else { None };
    let mut s = Session::new(&m, SessionOptions { n_ctx: 512, threads: 2, ..Default::default() }).unwrap();
    let p = perplexity(&mut s, &tokens, 512, bos, 0, |_, _| {}).unwrap();
    let rel = (p.ppl - expected).abs() / expected;
    eprintln!("{}: {} tokens, {} chunks, PPL {:.4} (llama.cpp {expected}, {:+.3}%)", model.display(), tokens.len(), p.n_chunks, p.ppl, 100.0 * (p.ppl - expected) / expected);
    assert_eq!(p.n_chunks, tokens.len() / 512);
    assert!(rel < 0.005, "PPL {:.4} vs llama.cpp {expected}: {:.3}% off", p.ppl, rel * 100.0);
}

#[test]
fn perplexity_q4_1_as_shipped_matches_llama_cpp() {
    check_ppl(&smollm2_path(), 18.3645);
}

#[test]
fn perplexity_requantized_q8_0_matches_llama_cpp() {
    check_ppl(&derived("q8_0"), 18.3758);
}

#[test]
fn perplexity_heterogeneous_deci_matches_llama_cpp() {
    check_ppl(&derived("deci"), 237.22);
}

#[test]
fn greedy_capital_of_france_is_paris() {
    let m = Model::load(smollm2_path()).unwrap();
    let tok = Tokenizer::from_gguf(m.gguf().unwrap()).unwrap();
    let prompt = tok.encode("The capital of France is", true, false).unwrap();
    let mut s = Session::new(&m, SessionOptions { n_ctx: 64, threads: 2, ..Default::default() }).unwrap();
    let mut logits = s.prefill(&prompt, Logits::Last).unwrap();
    let mut out = vec![];
    for _ in 0..4 {
        let t = sampler::argmax(&logits);
        out.push(t);
        logits = s.decode(t).unwrap();
    }
    let text = tok.decode(&out, false).unwrap();
    assert!(text.starts_with(" Paris."), "greedy continuation {text:?} ({out:?})");
}

/// On the real model (Q4_1 as shipped, Q4_0 and Q8_0 requantized), the logits of a prompt do not depend on
/// how it is fed to the session (split points, batch sizes, threads, decode, KV-cache reuse), bit for bit.
/// Before the fix, a 3-token continuation prefilled on a filled cache differed from a one-call prefill by
/// up to 1 logit (0.11 nats in arc_easy scoring): the model amplifies last-bit differences through the
/// 8-bit activation quantization of the following layers.
#[test]
fn real_model_logits_do_not_depend_on_batching() {
    for path in [smollm2_path(), derived("q4_0"), derived("q8_0")] {
        let m = Model::load(&path).unwrap();
        let tok = Tokenizer::from_gguf(m.gguf().unwrap()).unwrap();
        let tokens = tok.encode("Question: Which gas do plants take in? Answer: carbon dioxide", true, false).unwrap();
        assert!(tokens.len() >= 10, "{} tokens", tokens.len());
        assert_batch_invariant(&m, &tokens, &[KernelPath::Best]);
    }
}

/// The engine's logits (quantized kernels, 8-bit activations) against the f32 reference pass (weights
/// dequantized, f32/f64 arithmetic) on the real model: the same top token (or one within 0.1 sd of the
/// reference's top logit) at every position and logits within
/// the error that 8-bit activation quantization explains.
#[test]
fn real_model_logits_match_f32_reference() {
    // Measured (1 and 2 threads, SIMD and scalar): rms error up to 0.16 sd, max up to 0.40 sd of the logits; the
    // top token agrees except at position 1, where the reference's three best are within 0.064 sd (970: 26.142,
    // 284: 26.081, 29: 25.921) and which one the engine ranks first changes with the last bit of the block
    // sums (the kernels' order before 2026-11-30 picked 284, the canonical fused order picks 29). Activation
    // outliers (up to hundreds at early positions) make the 8-bit activation blocks coarse, and later layers
    // re-quantize, so last-bit differences grow to tenths of a logit; llama.cpp does the same and the
    // perplexities above agree with it within 0.1%.
    compare_with_reference(&smollm2_path(), 0.25, 0.6, 0.1);
}

/// On the dequantized F32 file, the engine runs f32 products (no activation quantization): tight agreement.
#[test]
fn real_f32_model_logits_match_f32_reference_tightly() {
    // Measured: rms error up to 0.018 sd, max up to 0.082 sd; the only quantized product left is the tied
    // Q8_0 output head (8-bit activations), every other product is f32 x f32.
    compare_with_reference(&derived("f32"), 0.03, 0.15, 0.0);
}

fn compare_with_reference(path: &Path, rms_tol: f32, max_tol: f32, top_tol: f32) {
    let m = Model::load(path).unwrap();
    let tok = Tokenizer::from_gguf(m.gguf().unwrap()).unwrap();
    let tokens = tok.encode("The quick brown fox jumps over", true, false).unwrap();
    let reference = reference_logits(m.gguf().unwrap(), &tokens);
    let nv = m.config.n_vocab;
    for kernels in [KernelPath::Best, KernelPath::Scalar] {
        let mut s = Session::new(&m, SessionOptions { n_ctx: 64, threads: 2, kernels, ..Default::default() }).unwrap();
        let all = s.prefill(&tokens, Logits::All).unwrap();
        for (t, r) in reference.iter().enumerate() {
            let e = &all[t * nv..(t + 1) * nv];
            let max_abs = e.iter().zip(r).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let mean = r.iter().sum::<f32>() / nv as f32;
            let sd = (r.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / nv as f32).sqrt();
            let rms = (e.iter().zip(r).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / nv as f32).sqrt();
            eprintln!("{kernels:?} position {t}: rms |engine - f32| = {rms:.4}, max {max_abs:.4} (logit sd {sd:.3})");
            let (top_e, top_r) = (sampler::argmax(e) as usize, sampler::argmax(r) as usize);
            eprintln!("  top engine {top_e} (ref logit {:.3}), top ref {top_r} ({:.3})", r[top_e], r[top_r]);
            // The engine's top token is the reference's, or within `top_tol` sd of its top logit.
            assert!(r[top_r] - r[top_e] <= top_tol * sd, "{kernels:?} position {t}: top token {top_e} vs {top_r}");
            assert!(rms < rms_tol * sd, "{kernels:?} position {t}: rms err {rms} vs logit sd {sd}");
            assert!(max_abs < max_tol * sd, "{kernels:?} position {t}: max abs err {max_abs} vs logit sd {sd}");
        }
    }
}
