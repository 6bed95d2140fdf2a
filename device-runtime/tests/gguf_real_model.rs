//! The GGUF reader, writer and `ModelConfig` on the real model (SmolLM2-135M-Instruct Q4_1), checked against
//! gguf-py's `GGUFReader` (run through `python3 tests/gguf_py_dump.py`) and the figures of the model card.

use std::path::PathBuf;
use std::process::Command;

use device_runtime::arch::ModelConfig;
use device_runtime::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `$LLAMANAS_ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf` (default `assets/` at the workspace root). Panics, with
/// the command that fetches it, when missing: tests on real assets never skip.
fn smollm2() -> PathBuf {
    let dir = std::env::var_os("LLAMANAS_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets"));
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh (or set LLAMANAS_ASSETS)", p.display());
    p
}

/// Our value in the shape the Python script prints (floats tagged as `{"float": x}`).
fn to_json(v: &MetaValue) -> Value {
    match v {
        MetaValue::F32(x) => json!({ "float": *x as f64 }),
        MetaValue::F64(x) => json!({ "float": *x }),
        MetaValue::Bool(b) => json!(b),
        MetaValue::String(s) => json!(s),
        MetaValue::Array(a) => Value::Array(a.iter().map(|v| to_json(&v)).collect()),
        v => json!(v.as_i64().map(Value::from).unwrap_or_else(|| Value::from(v.as_u64().unwrap()))),
    }
}

fn types(v: &MetaValue) -> Vec<String> {
    let mut t = vec![v.value_type().name().to_string()];
    if let MetaValue::Array(a) = v {
        match a.get(0) {
            Some(e @ MetaValue::Array(_)) => t.extend(types(&e)),
            _ => t.push(a.elem_type.name().to_string()),
        }
    }
    t
}

#[test]
fn reader_matches_gguf_py_on_every_key_and_tensor() {
    let path = smollm2();
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gguf_py_dump.py"))
        .arg(&path)
        .output()
        .expect("python3 is required for the gguf-py parity test (scripts/test.sh installs gguf==0.19.0)");
    assert!(
        out.status.success(),
        "gguf-py dump failed (pip install gguf==0.19.0 numpy): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).unwrap();

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version() as u64, reference["version"].as_u64().unwrap());
    assert_eq!(f.alignment(), reference["alignment"].as_u64().unwrap());
    assert_eq!(f.data_offset(), reference["data_offset"].as_u64().unwrap());

    let ref_meta = reference["metadata"].as_array().unwrap();
    assert_eq!(f.metadata().len(), ref_meta.len());
    assert_eq!(ref_meta.len(), 33);
    for ((key, value), r) in f.metadata().iter().zip(ref_meta) {
        assert_eq!(key, r["key"].as_str().unwrap());
        assert_eq!(json!(types(value)), r["types"], "types of {key}");
        assert!(to_json(value) == r["value"], "value of {key}: ours {} vs gguf-py {}", value, r["value"]);
    }

    let ref_tensors = reference["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), ref_tensors.len());
    assert_eq!(f.tensors().len(), 272);
    for (t, r) in f.tensors().iter().zip(ref_tensors) {
        assert_eq!(t.name, r["name"].as_str().unwrap());
        assert_eq!(json!(t.dims), r["dims"], "{}", t.name);
        assert_eq!(t.ty.id() as u64, r["type"].as_u64().unwrap(), "{}", t.name);
        assert_eq!(f.data_offset() + t.offset, r["data_offset"].as_u64().unwrap(), "{}", t.name);
        assert_eq!(t.n_bytes(), r["n_bytes"].as_u64().unwrap(), "{}", t.name);
        assert_eq!(t.n_elements(), r["n_elements"].as_u64().unwrap(), "{}", t.name);
        let sha = format!("{:x}", Sha256::digest(f.tensor_data(t)));
        assert_eq!(sha, r["sha256"].as_str().unwrap(), "data of {}", t.name);
    }
}

#[test]
fn real_model_facts() {
    let f = GgufFile::open(smollm2()).unwrap();
    let count = |ty| f.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!((count(GgmlType::Q4_1), count(GgmlType::F32), count(GgmlType::Q8_0)), (210, 61, 1));
    assert!(f.tensor("output.weight").is_none());
    assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert_eq!(f.get_array("tokenizer.ggml.merges").unwrap().len(), 48900);
    // F32 tensors are viewable in place; RMSNorm weights of a trained model are finite and mostly positive.
    let norm = f.tensor_f32(f.tensor("output_norm.weight").unwrap()).unwrap();
    assert_eq!(norm.len(), 576);
    assert!(norm.iter().all(|x| x.is_finite()));

    let m = ModelConfig::from_gguf(&f).unwrap();
    assert_eq!(m.arch, "llama");
    assert_eq!((m.n_layers, m.d_model, m.n_vocab, m.n_ctx_train), (30, 576, 49152, 8192));
    assert_eq!((m.head_dim, m.rope_dim), (64, 64));
    assert_eq!(m.ffn, vec![1536; 30]);
    assert_eq!(m.n_heads, vec![9; 30]);
    assert_eq!(m.n_kv_heads, vec![3; 30]);
    assert_eq!(m.rope_freq_base, 100000.0);
    assert_eq!(m.rms_eps, 1e-5f32);
    assert!(m.tied_embeddings && !m.rope_neox && m.is_uniform());
    // The parameter count equals the element count of all tensors in the file (134,515,008: the model card's
    // 135M), so the per-layer formula covers every weight.
    let n_in_file: u64 = f.tensors().iter().map(|t| t.n_elements()).sum();
    assert_eq!(n_in_file, 134_515_008);
    assert_eq!(m.total_params(), n_in_file);
    m.full_subnet().validate(&m).unwrap();
}

#[test]
fn writer_reproduces_the_real_file_byte_for_byte() {
    let path = smollm2();
    let f = GgufFile::open(&path).unwrap();
    let bytes = GgufWriter::from_file(&f).unwrap().to_bytes().unwrap();
    assert_eq!(bytes.len() as u64, f.file_size());
    assert!(bytes == f.bytes(), "first difference at byte {:?}", bytes.iter().zip(f.bytes()).position(|(a, b)| a != b));

    // Atomic write to a file, then read back.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.gguf");
    let n = GgufWriter::from_file(&f).unwrap().write_atomic(&out).unwrap();
    assert_eq!(n, f.file_size());
    let g = GgufFile::open(&out).unwrap();
    assert_eq!(g.metadata(), f.metadata());
    assert_eq!(g.tensors(), f.tensors());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temporary file left behind");
}
