//! Profiling a tiny random model end to end (no timing assertions: the structure, the shapes measured, the file
//! and the validation pipeline), and the exporter's type rules on the real model.

mod engine_common;

use device_runtime::arch::SubnetConfig;
use device_runtime::gguf::{GgmlType, GgufFile};
use device_runtime::profile::measure::ModelBuilder;
use device_runtime::profile::validate::{build_subnet, random_subnets};
use device_runtime::profile::{LatencyModel, Profile, ProfileOptions, ValidationOptions, profile_model, validate_profile};
use engine_common::{TinyLayer, reference_logits, tiny_gguf};

fn tiny() -> GgufFile {
    // d 64, head_dim 16, 4 query heads over 2 KV heads, FFN 512, vocabulary 40, 3 blocks (engine_common).
    let l = TinyLayer { n_head: 4, n_head_kv: 2, n_ff: 512 };
    GgufFile::from_bytes(tiny_gguf("llama", &[l, l, l], GgmlType::F32, |_| {}), "tiny.gguf").unwrap()
}

fn quick() -> ProfileOptions {
    ProfileOptions {
        threads: 2,
        quant: "q8_0".into(),
        contexts: vec![0, 8, 16],
        lengths: vec![1, 4, 8],
        warmup: 0,
        min_runs: 1,
        max_runs: 1,
        decode_layers: 2,
        prefill_layers: 2,
        cache_flush_bytes: 0,
        passes: 2,
        budget_s: 600.0,
        ..Default::default()
    }
}

#[test]
fn tiny_profile_is_complete_and_usable() {
    let f = tiny();
    let p = profile_model(&f, &quick()).unwrap();
    assert_eq!(p.decode.reference.len(), 3);
    assert_eq!(p.prefill.reference.len(), 3);
    // Shapes from the tiny model's definition.
    assert_eq!((p.model.d_model, p.model.head_dim, p.model.n_vocab, p.model.gqa_group), (64, 16, 40, 2));
    assert_eq!((p.model.max_kv_heads, p.model.max_ffn, p.model.n_layers), (2, 512, 3));
    assert_eq!(p.decode.attention.iter().map(|r| r.kv_heads).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(p.decode.ffn.iter().map(|r| r.width).collect::<Vec<_>>(), vec![256, 512]);
    assert_eq!(p.prefill.ffn[1].ms.len(), 3);
    assert_eq!((p.weight_type.as_str(), p.head_type.as_str(), p.threads), ("Q8_0", "Q8_0", 2));
    assert!(p.device.logical_cpus >= 1 && p.device.memory_bytes > 0);
    // Round trip through the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(p.file_name());
    p.save(&path).unwrap();
    let back = Profile::load(&path).unwrap();
    assert_eq!(back, p);
    // The latency model accepts it for this model and quantization, and refuses another quantization.
    let base = device_runtime::arch::ModelConfig::from_gguf(&f).unwrap();
    let lm = LatencyModel::new(back.clone(), &base, "q8_0").unwrap();
    let s = SubnetConfig { layers: vec![0, 2], ffn: vec![384, 512], kv_heads: vec![1, 2] };
    assert!(lm.decode_ms(&s, 12).unwrap().is_finite());
    assert!(lm.prefill_ms(&s, 5).unwrap().is_finite());
    assert!(LatencyModel::new(back, &base, "q4_0").is_err());
    // Validation pipeline on two random sub-networks.
    let o = ValidationOptions { k: 2, seed: 3, decode_context: 8, prefill_length: 4, runs: 1, progress: false };
    let r = validate_profile(&f, &p, &o).unwrap();
    assert_eq!(r.rows.len(), 2);
    assert!(r.summary.decode_mape_pct.is_finite() && r.summary.prefill_mape_pct.is_finite());
}

#[test]
fn heterogeneous_base_is_profiled() {
    // Blocks of different FFN widths (as a deci model): no block-uniform file to export for the reference, so
    // it is built in memory from blocks at the largest shape; the tables still cover every width.
    let (a, b) = (TinyLayer { n_head: 4, n_head_kv: 2, n_ff: 512 }, TinyLayer { n_head: 4, n_head_kv: 2, n_ff: 256 });
    let f = GgufFile::from_bytes(tiny_gguf("deci", &[a, b, a], GgmlType::F32, |_| {}), "tiny-mixed.gguf").unwrap();
    let p = profile_model(&f, &quick()).unwrap();
    assert_eq!(p.model.max_ffn, 512);
    assert_eq!(p.decode.ffn.iter().map(|r| r.width).collect::<Vec<_>>(), vec![256, 512]);
    assert_eq!(p.decode.reference.len(), 3);
    assert!(p.decode.reference.iter().all(|s| s.median_ms > 0.0));
}

#[test]
fn bad_options_are_clear_errors() {
    let f = tiny();
    let e = profile_model(&f, &ProfileOptions { quant: "q3_x".into(), ..quick() }).unwrap_err().to_string();
    assert!(e.contains("unknown quantization \"q3_x\""), "{e}");
    #[cfg(not(feature = "wgpu"))]
    {
        let e = profile_model(&f, &ProfileOptions { backend: "wgpu".into(), ..quick() }).unwrap_err().to_string();
        assert!(e.contains("backend \"wgpu\" is not available"), "{e}");
    }
    let e = profile_model(&f, &ProfileOptions { backend: "opencl".into(), ..quick() }).unwrap_err().to_string();
    assert!(e.contains("backend \"opencl\" is not available"), "{e}");
    let e = profile_model(&f, &ProfileOptions { lengths: vec![1, 1024], ..quick() }).unwrap_err().to_string();
    assert!(e.contains("must lie in 1..=512"), "{e}");
    let e = profile_model(&f, &ProfileOptions { contexts: vec![8, 0], ..quick() }).unwrap_err().to_string();
    assert!(e.contains("strictly increasing"), "{e}");
    // The tiny model's training context is 64 tokens: a decode at context 64 needs 65.
    let e = profile_model(&f, &ProfileOptions { contexts: vec![0, 64], ..quick() }).unwrap_err().to_string();
    assert!(e.contains("tiny.gguf") && e.contains("training context 64"), "{e}");
    assert!(profile_model(&f, &ProfileOptions { contexts: vec![0, 63], passes: 1, ..quick() }).is_ok());
}

#[test]
fn random_subnets_fit_the_space() {
    let ffn = vec![1536; 30];
    let kv = vec![3; 30];
    let subs = random_subnets(&ffn, &kv, 40, 1);
    assert_eq!(subs.len(), 40);
    for s in &subs {
        assert!(s.layers.len() >= 8 && s.layers.len() <= 30);
        assert!(s.layers.windows(2).all(|w| w[0] < w[1]));
        assert!(s.ffn.iter().all(|&w| w % 128 == 0 && (128..=1536).contains(&w)));
        assert!(s.kv_heads.iter().all(|&k| (1..=3).contains(&k)));
    }
    assert_eq!(subs, random_subnets(&ffn, &kv, 40, 1));
}

/// The builder's full model (F32) computes what the independent f32 reference forward pass computes.
#[test]
fn builder_full_model_matches_reference() {
    let f = tiny();
    let b = ModelBuilder::new(&f, "f32").unwrap();
    let full = SubnetConfig { layers: vec![0, 1, 2], ffn: vec![512; 3], kv_heads: vec![2; 3] };
    let m = build_subnet(&b, &full, 16).unwrap();
    let toks = [3u32, 17, 5, 39, 0];
    let mut s = device_runtime::engine::Session::new(&m, Default::default()).unwrap();
    let got = s.prefill(&toks, device_runtime::engine::Logits::All).unwrap();
    let want = reference_logits(&f, &toks);
    for (t, w) in want.iter().enumerate() {
        for (a, b) in got[t * 40..(t + 1) * 40].iter().zip(w) {
            assert!((a - b).abs() < 1e-3, "token {t}: {a} vs {b}");
        }
    }
}

/// The output head type follows llama.cpp's pure-ftype rule (as `device_runtime::subnet`): SmolLM2's tied
/// embedding (Q8_0, row 576 not a multiple of 256) stays Q8_0 for Q4_0 sub-networks.
#[test]
fn real_model_types() {
    let f = GgufFile::open(engine_common::smollm2_path()).unwrap();
    let b = ModelBuilder::new(&f, "q4_0").unwrap();
    assert_eq!((b.weight_type, b.head_type, b.embedding_type), (GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q8_0));
    let b = ModelBuilder::new(&f, "q8_0").unwrap();
    assert_eq!((b.weight_type, b.head_type), (GgmlType::Q8_0, GgmlType::Q8_0));
}
