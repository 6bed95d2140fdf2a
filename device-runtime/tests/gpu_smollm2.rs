//! The wgpu backend against independent references: the f32 reference forward pass of `engine_common` (weights
//! dequantized with `quant::dequant`, bit-exact with gguf-py) and the CPU engine (itself checked against
//! llama.cpp in `engine_smollm2.rs`). Runs on whatever adapter wgpu finds first (on the CI machine, which has
//! no GPU: Mesa's lavapipe, "llvmpipe (LLVM 15.0.6, 256 bits)"); the tests FAIL when there is none. Needs
//! `XDG_RUNTIME_DIR` set for Mesa (and `MESA_SHADER_CACHE_DIR` to keep compiled shaders between runs).
#![cfg(feature = "wgpu")]

mod engine_common;
use device_runtime::engine::{perplexity::perplexity, sampler, Logits, Model, Session, SessionOptions};
use device_runtime::gguf::{GgmlType, GgufFile};
use device_runtime::gpu::{GpuContext, GpuModel, GpuSession};
use device_runtime::tokenizer::Tokenizer;
use engine_common::*;
use std::path::Path;
use std::sync::{Arc, OnceLock};

const GPL3: &str = "/usr/share/common-licenses/GPL-3";

/// One device for all tests of this file (shader compilation is cached per device by the driver).
fn ctx() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = GpuContext::new(std::env::var("LLAMANAS_ADAPTER").ok().as_deref())
            .unwrap_or_else(|e| panic!("the wgpu tests need an adapter: {e}"));
        let a = &c.adapter;
        eprintln!("wgpu adapter: {} (vendor {}, {}, {}, driver {} {})", a.name, a.vendor, a.device_type, a.backend, a.driver, a.driver_info);
        Arc::new(c)
    })
    .clone()
}

/// `(rms, max)` of `a - b` in units of the standard deviation of `b`.
fn err_sd(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let n = b.len() as f32;
    let mean = b.iter().sum::<f32>() / n;
    let sd = (b.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
    let rms = (a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / n).sqrt();
    let max = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    (rms / sd, max / sd)
}

fn tiny_layers() -> Vec<TinyLayer> {
    // Heterogeneous (deci): GQA 4/2, MHA 4/4, attention only, FFN only, GQA 4/1 with another FFN width.
    vec![
        TinyLayer { n_head: 4, n_head_kv: 2, n_ff: 128 },
        TinyLayer { n_head: 4, n_head_kv: 4, n_ff: 96 },
        TinyLayer { n_head: 4, n_head_kv: 2, n_ff: 0 },
        TinyLayer { n_head: 0, n_head_kv: 0, n_ff: 64 },
        TinyLayer { n_head: 4, n_head_kv: 1, n_ff: 160 },
    ]
}

/// A tiny random model per weight type (F32, F16, Q8_0, Q4_0, Q4_1; llama and heterogeneous deci): GPU logits
/// against the f32 reference pass over the same dequantized weights (the GPU computes the same f32 math, so
/// only summation order differs: within 1e-4 sd; measured up to 4e-6), and against the CPU engine (which
/// quantizes activations to 8 bits for quantized weights: within 0.1 sd rms; measured up to 0.055 on deci Q8_0,
/// 2e-6 on F32/F16). Also: prefill in one call, in two calls and token by
/// token give the same logits (the GPU sums every token's products in the same order whatever the batch).
/// Run with the adapter's own rows per matrix-product invocation (8 on llvmpipe) and with 1 (what GPUs use)
/// and 3 (row counts that are not a multiple of it).
#[test]
fn tiny_models_per_type_match_reference_and_cpu() {
    check_tiny_models(ctx());
    for rows in [1, 3] {
        let c = GpuContext::new(std::env::var("LLAMANAS_ADAPTER").ok().as_deref()).unwrap().with_rows_per_lane(rows);
        eprintln!("rows per invocation: {}", c.rows_per_lane);
        check_tiny_models(Arc::new(c));
    }
}

fn check_tiny_models(ctx: Arc<GpuContext>) {
    for arch in ["llama", "deci"] {
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let layers = if arch == "deci" { tiny_layers() } else { vec![TinyLayer { n_head: 4, n_head_kv: 2, n_ff: 128 }; 2] };
            let bytes = tiny_gguf(arch, &layers, ty, |_| {});
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tiny.gguf");
            std::fs::write(&path, &bytes).unwrap();
            let m = Model::load(&path).unwrap();
            let g = GpuModel::upload(ctx.clone(), &m).unwrap();
            let tokens: Vec<u32> = vec![1, 5, 9, 2, 33, 7, 7, 12, 39, 0, 4];
            let nv = m.config.n_vocab;
            let reference = reference_logits(&GgufFile::open(&path).unwrap(), &tokens);
            let mut s = GpuSession::new(&g, 32, 0).unwrap();
            let all = s.prefill(&tokens, Logits::All).unwrap();
            let mut cpu = Session::new(&m, SessionOptions { n_ctx: 32, threads: 1, ..Default::default() }).unwrap();
            let cpu_all = cpu.prefill(&tokens, Logits::All).unwrap();
            let (mut worst_ref, mut worst_cpu) = (0f32, 0f32);
            for (t, r) in reference.iter().enumerate() {
                let e = &all[t * nv..(t + 1) * nv];
                let (rms, max) = err_sd(e, r);
                worst_ref = worst_ref.max(max);
                assert!(max < 1e-4, "{arch} {ty}: position {t}: GPU vs f32 reference: rms {rms} max {max} sd");
                let (rms_c, _) = err_sd(e, &cpu_all[t * nv..(t + 1) * nv]);
                worst_cpu = worst_cpu.max(rms_c);
                assert!(rms_c < 0.1, "{arch} {ty}: position {t}: GPU vs CPU engine rms {rms_c} sd");
            }
            eprintln!("{arch} {ty}: GPU vs f32 reference max {worst_ref:.2e} sd; GPU vs CPU engine rms up to {worst_cpu:.2e} sd");
            // Same logits whatever the batching.
            let mut s2 = GpuSession::new(&g, 32, 0).unwrap();
            let mut split = s2.prefill(&tokens[..4], Logits::All).unwrap();
            split.extend(s2.prefill(&tokens[4..], Logits::All).unwrap());
            assert_eq!(split, all, "{arch} {ty}: split prefill");
            let mut s3 = GpuSession::new(&g, 32, 3).unwrap();
            assert_eq!(s3.prefill(&tokens, Logits::All).unwrap(), all, "{arch} {ty}: batches of 3");
            s3.reset();
            let dec: Vec<f32> = tokens.iter().flat_map(|&t| s3.decode(t).unwrap()).collect();
            assert_eq!(dec, all, "{arch} {ty}: decode");
            // KV-cache reuse after truncate, logits from an index.
            s3.truncate(5);
            let from = s3.prefill(&tokens[5..], Logits::From(2)).unwrap();
            assert_eq!(from, all[7 * nv..], "{arch} {ty}: reuse after truncate");
        }
    }
}

/// Bad input is refused as by the CPU engine, and a model with an unsupported tensor type names the tensor.
#[test]
fn errors_are_clear() {
    let ctx = ctx();
    let bytes = tiny_gguf("llama", &[TinyLayer { n_head: 4, n_head_kv: 2, n_ff: 128 }], GgmlType::Q8_0, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let m = Model::load(&path).unwrap();
    let g = GpuModel::upload(ctx.clone(), &m).unwrap();
    let mut s = GpuSession::new(&g, 8, 0).unwrap();
    assert!(s.prefill(&[], Logits::Last).unwrap_err().to_string().contains("empty input"));
    assert!(s.prefill(&[40], Logits::Last).unwrap_err().to_string().contains("outside the vocabulary"));
    assert!(s.prefill(&[1; 9], Logits::Last).unwrap_err().to_string().contains("context full"));
    let e = GpuContext::new(Some("no such adapter xyz")).err().expect("no adapter matches");
    assert!(e.to_string().contains("no wgpu adapter matches") && e.to_string().contains(&ctx.adapter.name), "{e}");
    // A bad EDGERUN_WGPU_ROWS is refused by name, not ignored (run in a child process: the variable is global).
    for bad in ["0", "9", "eight"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_edgerun"))
            .args(["bench", path.to_str().unwrap(), "-p", "4", "-n", "2", "-r", "1", "--backend", "wgpu"])
            .env("EDGERUN_WGPU_ROWS", bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(&format!("EDGERUN_WGPU_ROWS=\"{bad}\"")), "{bad}: {err}");
    }
}

/// The real SmolLM2 model (requantized to Q8_0, as the CPU tests build it): GPU logits against the f32
/// reference pass and against the CPU engine, and greedy decoding gives " Paris.".
#[test]
fn real_q8_0_model_logits_match_reference_and_cpu() {
    let path = derived("q8_0");
    let m = Model::load(&path).unwrap();
    let g = GpuModel::upload(ctx(), &m).unwrap();
    let tok = Tokenizer::from_gguf(m.gguf().unwrap()).unwrap();
    let tokens = tok.encode("The quick brown fox jumps over", true, false).unwrap();
    let reference = reference_logits(m.gguf().unwrap(), &tokens);
    let nv = m.config.n_vocab;
    let all = GpuSession::new(&g, 64, 0).unwrap().prefill(&tokens, Logits::All).unwrap();
    let cpu = Session::new(&m, SessionOptions { n_ctx: 64, threads: 2, ..Default::default() }).unwrap().prefill(&tokens, Logits::All).unwrap();
    for (t, r) in reference.iter().enumerate() {
        let e = &all[t * nv..(t + 1) * nv];
        let (rms, max) = err_sd(e, r);
        let (rms_c, max_c) = err_sd(e, &cpu[t * nv..(t + 1) * nv]);
        eprintln!("position {t}: GPU vs f32 reference rms {rms:.2e} max {max:.2e} sd; GPU vs CPU engine rms {rms_c:.3} max {max_c:.3} sd");
        // Same f32 math as the reference, in another summation order (f32 sums over 576-1536 terms, 30 blocks):
        // measured rms up to 5e-6, max up to 1e-5 sd.
        assert!(rms < 1e-4 && max < 1e-3, "position {t}: GPU vs f32 reference rms {rms} max {max}");
        // The CPU engine's 8-bit activations: engine_smollm2.rs measures up to 0.16 sd rms against the reference
        // (here: GPU vs CPU rms up to 0.164, max 0.42 sd).
        assert!(rms_c < 0.25 && max_c < 0.6, "position {t}: GPU vs CPU rms {rms_c} max {max_c}");
        assert_eq!(sampler::argmax(e), sampler::argmax(r), "position {t}: top token");
    }
    let prompt = tok.encode("The capital of France is", true, false).unwrap();
    let mut s = GpuSession::new(&g, 64, 0).unwrap();
    let mut logits = s.prefill(&prompt, Logits::Last).unwrap();
    let mut out = vec![];
    for _ in 0..4 {
        let t = sampler::argmax(&logits);
        out.push(t);
        logits = s.decode(t).unwrap();
    }
    let text = tok.decode(&out, false).unwrap();
    assert!(text.starts_with(" Paris."), "greedy continuation {text:?}");
}

/// GPL-3 is scored by both engines on the same fixed prefix: `CHUNKS` chunks of `CTX` tokens (llama-perplexity's
/// method, second half of each chunk scored): 126 scored tokens per file, one to two minutes per file on llvmpipe.
/// The whole text in chunks of 512 (14 chunks, 3570 scored tokens) takes 45-60 minutes per file on llvmpipe, too
/// long for CI; it was measured with `edgerun perplexity FILE -f GPL-3 --backend wgpu|cpu` and is recorded in
/// docs/PERFORMANCE.md ("wgpu backend", Accuracy): there the two engines agree within the issue's 0.5%.
///
/// Tolerance: 2% on this short prefix, not 0.5%. Measured (2026-12-01): Q8_0 GPU 28.6676 vs CPU 28.2608 (+1.44%),
/// deci GPU 273.6509 vs CPU 277.6595 (-1.44%). The GPU's logits equal the f32 reference pass within 1.2e-5 sd at
/// every position up to 127 (`long_context_logits_match_reference`); the gap is the CPU engine's 8-bit activation
/// quantization (0.06-0.16 sd of logit noise) averaged over only 126 tokens, in opposite directions for the two
/// files; over the whole text it averages out.
const CHUNKS: usize = 2;
/// Relative PPL difference allowed on this short prefix.
const PPL_TOL: f64 = 0.02;
const CTX: usize = 128;

fn check_ppl_gpu_vs_cpu(model: &Path) {
    let m = Model::load(model).unwrap();
    let tok = Tokenizer::from_gguf(m.gguf().unwrap()).unwrap();
    let text = std::fs::read_to_string(GPL3).expect("GPL-3 text (/usr/share/common-licenses/GPL-3)");
    let tokens = tok.encode(&text, true, false).unwrap();
    let bos = if tok.metadata().add_bos { tok.bos() } else { None };
    let mut cpu = Session::new(&m, SessionOptions { n_ctx: CTX, threads: 2, ..Default::default() }).unwrap();
    let pc = perplexity(&mut cpu, &tokens, CTX, bos, CHUNKS, |_, _| {}).unwrap();
    let g = GpuModel::upload(ctx(), &m).unwrap();
    let mut gs = GpuSession::new(&g, CTX, CTX).unwrap();
    let t0 = std::time::Instant::now();
    let pg = perplexity(&mut gs, &tokens, CTX, bos, CHUNKS, |_, _| {}).unwrap();
    let rel = (pg.ppl - pc.ppl).abs() / pc.ppl;
    eprintln!(
        "{}: {} chunks of {CTX}: PPL GPU {:.4}, CPU {:.4} ({:+.3}%); GPU {:.1} s",
        model.display(),
        pg.n_chunks,
        pg.ppl,
        pc.ppl,
        100.0 * (pg.ppl - pc.ppl) / pc.ppl,
        t0.elapsed().as_secs_f64()
    );
    assert_eq!((pg.n_chunks, pg.count), (pc.n_chunks, pc.count));
    assert!(rel < PPL_TOL, "PPL GPU {:.4} vs CPU {:.4}: {:.3}% off", pg.ppl, pc.ppl, rel * 100.0);
}

#[test]
fn perplexity_q8_0_gpu_matches_cpu() {
    check_ppl_gpu_vs_cpu(&derived("q8_0"));
}

#[test]
fn perplexity_heterogeneous_deci_gpu_matches_cpu() {
    check_ppl_gpu_vs_cpu(&derived("deci"));
}

/// Positions past one attention workgroup (64) and a full 128-token context: the heterogeneous deci file's
/// GPU logits against the f32 reference pass at the last positions of the first 128 tokens of GPL-3.
#[test]
fn long_context_logits_match_reference() {
    let path = derived("deci");
    let m = Model::load(&path).unwrap();
    let g = GpuModel::upload(ctx(), &m).unwrap();
    let tok = Tokenizer::from_gguf(m.gguf().unwrap()).unwrap();
    let text = std::fs::read_to_string(GPL3).unwrap();
    let tokens: Vec<u32> = tok.encode(&text, true, false).unwrap()[..128].to_vec();
    let reference = reference_logits(m.gguf().unwrap(), &tokens);
    let nv = m.config.n_vocab;
    let all = GpuSession::new(&g, 128, 0).unwrap().prefill(&tokens, Logits::All).unwrap();
    let mut worst = (0f32, 0f32);
    for t in [0, 31, 63, 64, 65, 100, 127] {
        let (rms, max) = err_sd(&all[t * nv..(t + 1) * nv], &reference[t]);
        eprintln!("position {t}: GPU vs f32 reference rms {rms:.2e} max {max:.2e} sd");
        worst = (worst.0.max(rms), worst.1.max(max));
    }
    assert!(worst.0 < 1e-4 && worst.1 < 1e-3, "GPU vs f32 reference at long context: rms {} max {}", worst.0, worst.1);
}
