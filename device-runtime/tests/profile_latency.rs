//! The latency model and the profile file format, on a hand-written profile whose predictions are computed by
//! hand below; refusal of incomplete, truncated, foreign-version and mismatched profiles.

mod engine_common;

use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::profile::{
    AttentionRow, DecodeTables, DeviceFacts, FfnRow, LatencyModel, Method, ModelFamily, PrefillTables, Profile, ProfileError,
    RUNTIME_VERSION, SCHEMA_VERSION, Stat,
};

fn st(ms: f64) -> Stat {
    Stat { median_ms: ms, spread_ms: 0.01, runs: 5 }
}

fn base() -> ModelConfig {
    ModelConfig {
        arch: "llama".into(),
        n_layers: 3,
        d_model: 64,
        n_vocab: 40,
        n_ctx_train: 4096,
        head_dim: 16,
        rope_dim: 16,
        rope_freq_base: 10000.0,
        rope_neox: false,
        rms_eps: 1e-5,
        ffn: vec![512; 3],
        n_heads: vec![4; 3],
        n_kv_heads: vec![2; 3],
        tied_embeddings: true,
        name: Some("tiny".into()),
    }
}

/// Decode: contexts [0, 100]; overhead 0.1; embedding 0.01; final norm 0.02; head 1.0; attention kv 1: 0.1 at
/// 0, 0.3 at 100; kv 2: 0.2 / 0.6; FFN 256: 0.5, 512: 0.9. Prefill: lengths [1, 11]; overhead 0.2 / 0.4;
/// embedding 0.01 / 0.11; attention kv 1: 0.1 / 1.1, kv 2: 0.2 / 2.2; FFN 256: 0.5 / 2.5, 512: 0.9 / 4.9.
/// A schema-2 profile (no reference, uncalibrated).
fn profile() -> Profile {
    Profile {
        schema_version: 2,
        runtime_version: RUNTIME_VERSION.into(),
        created_unix_s: 0,
        device: DeviceFacts {
            cpu_brand: "Test CPU 9000".into(),
            cpu_vendor: "test".into(),
            physical_cores: Some(2),
            logical_cpus: 2,
            cpu_mhz: 3000,
            memory_bytes: 24 << 30,
            os: "Linux".into(),
            os_version: "1".into(),
            kernel: "6".into(),
            arch: "x86_64".into(),
            cpu_features: vec!["avx2".into()],
            adapter: None,
        },
        backend: "cpu".into(),
        threads: 2,
        quant: "q8_0".into(),
        weight_type: "Q8_0".into(),
        embedding_type: "Q8_0".into(),
        head_type: "Q8_0".into(),
        model: ModelFamily {
            family: "llama".into(),
            name: Some("tiny".into()),
            d_model: 64,
            head_dim: 16,
            n_vocab: 40,
            gqa_group: 2,
            n_layers: 3,
            max_kv_heads: 2,
            max_ffn: 512,
            tied_embeddings: true,
        },
        method: Method {
            warmup: 1,
            min_runs: 3,
            max_runs: 9,
            decode_layers: 8,
            prefill_layers: 4,
            cache_flush_bytes: 0,
            passes: 1,
            budget_s: 60.0,
            elapsed_s: 1.0,
            weights: "hand-written".into(),
        },
        decode: DecodeTables {
            contexts: vec![0, 100],
            overhead: vec![st(0.1), st(0.1)],
            embedding: st(0.01),
            final_norm: st(0.02),
            output_head: st(1.0),
            attention: vec![
                AttentionRow { kv_heads: 1, ms: vec![st(0.1), st(0.3)] },
                AttentionRow { kv_heads: 2, ms: vec![st(0.2), st(0.6)] },
            ],
            ffn: vec![FfnRow { width: 256, ms: vec![st(0.5)] }, FfnRow { width: 512, ms: vec![st(0.9)] }],
            reference: vec![],
        },
        prefill: PrefillTables {
            lengths: vec![1, 11],
            overhead: vec![st(0.2), st(0.4)],
            embedding: vec![st(0.01), st(0.11)],
            final_norm: st(0.02),
            output_head: st(1.0),
            attention: vec![
                AttentionRow { kv_heads: 1, ms: vec![st(0.1), st(1.1)] },
                AttentionRow { kv_heads: 2, ms: vec![st(0.2), st(2.2)] },
            ],
            ffn: vec![FfnRow { width: 256, ms: vec![st(0.5), st(2.5)] }, FfnRow { width: 512, ms: vec![st(0.9), st(4.9)] }],
            reference: vec![],
        },
        validation: None,
    }
}

/// The same tables as schema 3, with the reference model (3 blocks, KV heads 2, FFN 512) timed end to end.
/// Decode: its parts sum to 3 x (0.2 + 0.9) = 3.3 at context 0 and 3 x (0.6 + 0.9) = 4.5 at 100, fixed costs
/// 1.13; references 1.13 + 0.8 x 3.3 = 3.77 and 1.13 + 0.6 x 4.5 = 3.83 (factors 0.8 and 0.6). Prefill: parts
/// 3 x (0.2 + 0.9) = 3.3 at length 1 and 3 x (2.2 + 4.9) = 21.3 at 11, fixed 1.23 and 1.53; references
/// 1.23 + 0.9 x 3.3 = 4.2 and 1.53 + 0.7 x 21.3 = 16.44 (factors 0.9 and 0.7).
fn profile_v3() -> Profile {
    let mut p = profile();
    p.schema_version = SCHEMA_VERSION;
    p.decode.reference = vec![st(3.77), st(3.83)];
    p.prefill.reference = vec![st(4.2), st(16.44)];
    p
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn predictions_by_hand() {
    let lm = LatencyModel::new(profile(), &base(), "q8_0").unwrap();
    let s = SubnetConfig { layers: vec![0, 2], ffn: vec![512, 384], kv_heads: vec![2, 1] };
    // Decode at context 50: fixed 0.1 + 0.01 + 0.02 + 1.0 = 1.13; block 0: attention kv 2 at 50 = 0.4, FFN 512
    // = 0.9; block 1: attention kv 1 at 50 = 0.2, FFN 384 = (0.5 + 0.9) / 2 = 0.7. Total 3.33.
    close(lm.decode_ms(&s, 50).unwrap(), 3.33);
    // FFN 128 below the first width: 0.5 - (0.4 / 256) * 128 = 0.3; FFN 0: none; one block kv 1 at context 0.
    let s2 = SubnetConfig { layers: vec![1], ffn: vec![128], kv_heads: vec![1] };
    close(lm.decode_ms(&s2, 0).unwrap(), 1.13 + 0.1 + 0.3);
    let s3 = SubnetConfig { layers: vec![1], ffn: vec![0], kv_heads: vec![1] };
    close(lm.decode_ms(&s3, 100).unwrap(), 1.13 + 0.3);
    // Prefill of 6 tokens (halfway): overhead 0.3 + embedding 0.06 + norm 0.02 + head 1.0 = 1.38; block 0:
    // attention kv 2 1.2, FFN 512 2.9; block 1: attention kv 1 0.6, FFN 384 = halfway of (0.7 at 1, 3.7 at 11)
    // = 2.2. Total 8.28.
    close(lm.prefill_ms(&s, 6).unwrap(), 8.28);
    // Outside the profile.
    let e = lm.decode_ms(&s, 101).unwrap_err().to_string();
    assert!(e.contains("context 101 outside the measured 0..=100"), "{e}");
    let e = lm.prefill_ms(&s, 12).unwrap_err().to_string();
    assert!(e.contains("prompt length 12 outside the measured 1..=11"), "{e}");
    let bad = SubnetConfig { layers: vec![0], ffn: vec![600], kv_heads: vec![1] };
    let e = lm.decode_ms(&bad, 0).unwrap_err().to_string();
    assert!(e.contains("ffn 600 > base 512"), "{e}");
}

#[test]
fn calibrated_predictions_by_hand() {
    let lm = LatencyModel::new(profile_v3(), &base(), "q8_0").unwrap();
    let (d, p) = lm.calibration_factors();
    assert_eq!(d.len(), 2);
    close(d[0], 0.8);
    close(d[1], 0.6);
    close(p[0], 0.9);
    close(p[1], 0.7);
    // The base model is predicted as its reference.
    let full = base().full_subnet();
    close(lm.decode_ms(&full, 0).unwrap(), 3.77);
    close(lm.prefill_ms(&full, 11).unwrap(), 16.44);
    // Context 50: reference 3.80 (halfway), fixed 1.13, reference parts 3 x (0.4 + 0.9) = 3.9, so the factor is
    // 2.67 / 3.9; the sub-network's parts (predictions_by_hand) are 3.33 - 1.13 = 2.2.
    let s = SubnetConfig { layers: vec![0, 2], ffn: vec![512, 384], kv_heads: vec![2, 1] };
    close(lm.decode_ms(&s, 50).unwrap(), 1.13 + 2.67 / 3.9 * 2.2);
    // Prefill of 6: reference 10.32 (halfway), fixed 1.38, reference parts 3 x (1.2 + 2.9) = 12.3; the
    // sub-network's parts 8.28 - 1.38 = 6.9.
    close(lm.prefill_ms(&s, 6).unwrap(), 1.38 + (10.32 - 1.38) / 12.3 * 6.9);
    // A reference at or below the fixed costs (1.0 < 1.13) is clamped to the smallest factor, 0.5; one that
    // is far too slow (1.13 + 10 x 4.5) to the largest, 2.
    let mut odd = profile_v3();
    odd.decode.reference = vec![st(1.0), st(1.13 + 10.0 * 4.5)];
    let lm = LatencyModel::new(odd, &base(), "q8_0").unwrap();
    let (d, _) = lm.calibration_factors();
    close(d[0], 0.5);
    close(d[1], 2.0);
    close(lm.decode_ms(&full, 0).unwrap(), 1.13 + 0.5 * 3.3);
    // Schema 3 without the reference is incomplete.
    let mut bad = profile_v3();
    bad.prefill.reference.clear();
    let e = LatencyModel::new(bad, &base(), "q8_0").unwrap_err().to_string();
    assert!(e.contains("prefill.reference has 0 entries, expected 2"), "{e}");
}

#[test]
fn mismatched_profiles_are_refused() {
    let e = LatencyModel::new(profile(), &base(), "q4_0").unwrap_err();
    assert!(matches!(e, ProfileError::Mismatch(_)));
    assert!(e.to_string().contains("measured for quantization q8_0, not q4_0"), "{e}");
    let mut p = profile();
    p.runtime_version = "0.0.0-old".into();
    let e = LatencyModel::new(p, &base(), "q8_0").unwrap_err().to_string();
    assert!(e.contains("runtime version 0.0.0-old"), "{e}");
    let mut b = base();
    b.d_model = 128;
    let e = LatencyModel::new(profile(), &b, "q8_0").unwrap_err().to_string();
    assert!(e.contains("d_model 64, the model has 128"), "{e}");
    let mut b = base();
    b.ffn = vec![1024; 3];
    let e = LatencyModel::new(profile(), &b, "q8_0").unwrap_err().to_string();
    assert!(e.contains("FFN 512, the model has 2 and 1024"), "{e}");
}

/// A wgpu profile (adapter facts in `device.adapter`) is accepted for wgpu requests, survives the file round
/// trip, and is refused for a CPU request (and a CPU profile for a wgpu request), naming both backends.
#[test]
fn wgpu_profiles_are_accepted_for_wgpu_only() {
    let mut g = profile();
    g.backend = "wgpu".into();
    g.threads = 1;
    g.device.adapter = Some(device_runtime::profile::device::AdapterFacts {
        name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
        vendor: "0x10005".into(),
        device: "0x0".into(),
        device_type: "Cpu".into(),
        backend: "Vulkan".into(),
        driver: "llvmpipe".into(),
        driver_info: "Mesa 22.3.6 (LLVM 15.0.6)".into(),
    });
    assert_eq!(g.file_name(), "llvmpipe-llvm-15-0-6-wgpu-q8_0.json");
    let lm = LatencyModel::for_backend(g.clone(), &base(), "q8_0", "wgpu").unwrap();
    let s = SubnetConfig { layers: vec![0, 2], ffn: vec![512, 384], kv_heads: vec![2, 1] };
    close(lm.decode_ms(&s, 50).unwrap(), 3.33);
    let e = LatencyModel::for_backend(g.clone(), &base(), "q8_0", "cpu").unwrap_err().to_string();
    assert!(e.contains("measured on backend wgpu on llvmpipe") && e.contains("request is for backend cpu"), "{e}");
    let e = LatencyModel::for_backend(profile(), &base(), "q8_0", "wgpu").unwrap_err().to_string();
    assert!(e.contains("measured on backend cpu, the request is for backend wgpu"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(g.file_name());
    g.save(&path).unwrap();
    assert_eq!(Profile::load(&path).unwrap(), g);
}

#[test]
fn file_round_trip_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    // Schema 3 (with the reference) round-trips; a reference entry missing from the file is an error.
    let p3 = profile_v3();
    p3.save(&path).unwrap();
    assert_eq!(Profile::load(&path).unwrap(), p3);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["decode"]["reference"].as_array_mut().unwrap().pop();
    let q = dir.path().join("noref.json");
    std::fs::write(&q, v.to_string()).unwrap();
    let e = Profile::load(&q).unwrap_err().to_string();
    assert!(e.contains("noref.json: incomplete profile: decode.reference has 1 entries, expected 2"), "{e}");
    // Schema 2 (no reference) is still read.
    let p = profile();
    p.save(&path).unwrap();
    assert_eq!(Profile::load(&path).unwrap(), p);
    let text = std::fs::read_to_string(&path).unwrap();
    let write = |name: &str, t: &str| {
        let q = dir.path().join(name);
        std::fs::write(&q, t).unwrap();
        q
    };
    // Truncated.
    let q = write("trunc.json", &text[..text.len() / 2]);
    let e = Profile::load(&q).unwrap_err();
    assert!(matches!(e, ProfileError::Parse { .. }), "{e}");
    assert!(e.to_string().contains("trunc.json") && e.to_string().contains("EOF"), "{e}");
    // Another schema version.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["schema_version"] = 1.into();
    let e = Profile::load(write("v1.json", &v.to_string())).unwrap_err().to_string();
    assert!(e.contains("v1.json: profile schema version 1, this runtime reads versions 2..=3"), "{e}");
    // No schema version at all.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("schema_version");
    let e = Profile::load(write("nov.json", &v.to_string())).unwrap_err().to_string();
    assert!(e.contains("missing field `schema_version`"), "{e}");
    // A missing table.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("prefill");
    let e = Profile::load(write("nopre.json", &v.to_string())).unwrap_err().to_string();
    assert!(e.contains("missing field `prefill`"), "{e}");
    // A missing KV-head row.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["decode"]["attention"].as_array_mut().unwrap().pop();
    let e = Profile::load(write("nokv.json", &v.to_string())).unwrap_err().to_string();
    assert!(e.contains("incomplete profile: decode.attention: KV-head counts [1], expected 1..=2"), "{e}");
    // A missing context entry.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["decode"]["overhead"].as_array_mut().unwrap().pop();
    let e = Profile::load(write("noctx.json", &v.to_string())).unwrap_err().to_string();
    assert!(e.contains("decode.overhead has 1 entries, expected 2"), "{e}");
    // A missing FFN width.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["prefill"]["ffn"].as_array_mut().unwrap().remove(0);
    let e = Profile::load(write("noffn.json", &v.to_string())).unwrap_err().to_string();
    assert!(e.contains("prefill.ffn: widths [512], expected [256, 512]"), "{e}");
    // A non-number.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["decode"]["output_head"]["median_ms"] = "fast".into();
    let e = Profile::load(write("nan.json", &v.to_string())).unwrap_err().to_string();
    assert!(e.contains("not a valid device profile") && e.contains("invalid type"), "{e}");
    // An unknown key (a typo, or a field this runtime does not know) is refused, named.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["decode"]["ffn_widths"] = serde_json::json!([256]);
    let e = Profile::load(write("unknown.json", &v.to_string())).unwrap_err().to_string();
    assert!(e.contains("unknown.json") && e.contains("unknown field `ffn_widths`"), "{e}");
    // Implausible times: a sum of them would not be finite, or negative latencies would be predicted.
    for bad in [1e308, -1e9] {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["decode"]["output_head"]["median_ms"] = bad.into();
        let e = Profile::load(write("time.json", &v.to_string())).unwrap_err().to_string();
        assert!(e.contains("decode.output_head") && e.contains("is not a valid time (|t| < 1e7 ms)"), "{e}");
    }
    // A Q8_0 profile relabelled Q4_0: its tables were measured with Q8_0 weights.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["quant"] = "q4_0".into();
    let e = Profile::load(write("relabel.json", &v.to_string())).unwrap_err().to_string();
    assert!(e.contains("quant q4_0 means Q4_0 block weights, but the tables were measured with weight_type Q8_0"), "{e}");
    // The file name from the machine's facts.
    assert_eq!(p.file_name(), "test-cpu-9000-2c-24g-t2-q8_0.json");
}

/// Every committed profile is read by this runtime (no unknown field, labels consistent with the tables).
#[test]
fn committed_profiles_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            Profile::load(&p).unwrap();
            n += 1;
        }
    }
    assert!(n >= 5, "{n} profiles in {}", dir.display());
}

/// `edgerun profile --from P --quant Q` with Q not P's quantization is refused before anything runs.
#[test]
fn profile_from_with_another_quant_is_refused() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/amd-epyc-2c-24g-t2-q4_0.json");
    let model = engine_common::smollm2_path();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args(["profile".as_ref(), model.as_os_str(), "--from".as_ref(), p.as_os_str(), "--quant".as_ref(), "q8_0".as_ref()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("the profile was measured for q4_0, not --quant q8_0"), "{err}");
}
