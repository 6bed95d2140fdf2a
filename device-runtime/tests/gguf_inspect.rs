//! `edgerun inspect` on the real model: the figures gguf-py reports for SmolLM2-135M-Instruct Q4_1 (30 blocks,
//! d=576, FFN 1536, 9/3 heads, vocab 49152, tied embeddings, 210 Q4_1 + 61 F32 + 1 Q8_0 tensors).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn smollm2() -> PathBuf {
    let dir = std::env::var_os("LLAMANAS_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets"));
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh (or set LLAMANAS_ASSETS)", p.display());
    p
}

fn edgerun(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgerun")).args(args).env_remove("RUST_BACKTRACE").output().unwrap()
}

#[test]
fn inspect_json_reports_the_real_model() {
    let p = smollm2();
    let out = edgerun(&["inspect".as_ref(), "--json".as_ref(), p.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &r["config"];
    assert_eq!(r["architecture"], "llama");
    assert_eq!(c["n_layers"], 30);
    assert_eq!(c["d_model"], 576);
    assert_eq!(c["n_vocab"], 49152);
    assert_eq!(c["head_dim"], 64);
    assert!(c["ffn"].as_array().unwrap().iter().all(|v| v == 1536));
    assert!(c["n_heads"].as_array().unwrap().iter().all(|v| v == 9));
    assert!(c["n_kv_heads"].as_array().unwrap().iter().all(|v| v == 3));
    assert_eq!(r["tied_embeddings"], true);
    assert_eq!(r["file_size"], 98362432);
    assert_eq!(r["n_tensors"], 272);
    assert_eq!(r["params_in_file"], 134515008u64);
    assert_eq!(r["tensor_types"]["Q4_1"]["count"], 210);
    assert_eq!(r["tensor_types"]["F32"]["count"], 61);
    assert_eq!(r["tensor_types"]["Q8_0"]["count"], 1);
    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 30);
    let l0: Vec<(String, Value)> = layers[0]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["dims"].clone()))
        .collect();
    assert!(l0.contains(&("attn_k.weight".into(), serde_json::json!([576, 192]))), "{l0:?}");
    assert!(l0.contains(&("ffn_down.weight".into(), serde_json::json!([1536, 576]))), "{l0:?}");
    assert_eq!(l0.len(), 9);
    let t = &r["tokenizer"];
    assert_eq!((t["model"].as_str(), t["pre"].as_str()), (Some("gpt2"), Some("smollm")));
    assert_eq!((t["vocab_size"].as_u64(), t["merges"].as_u64()), (Some(49152), Some(48900)));
    assert_eq!((t["bos_id"].as_u64(), t["eos_id"].as_u64(), t["unk_id"].as_u64(), t["pad_id"].as_u64()), (Some(1), Some(2), Some(0), Some(2)));
    assert_eq!(t["chat_template"], true);
}

#[test]
fn inspect_text_and_bad_file() {
    let p = smollm2();
    let out = edgerun(&["inspect".as_ref(), p.as_os_str()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in ["blocks        30", "d_model       576", "ffn           1536", "heads         9 query / 3 KV", "vocab         49152",
        "tied (no output.weight)", "blocks 0-29: ffn 1536, heads 9/3", "Q4_1      210 tensors", "chat template present"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00\x01").unwrap();
    let out = edgerun(&["inspect".as_ref(), bad.as_os_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.gguf: truncated at offset 8: tensor count needs 8 bytes, only 1 left"), "{err}");
}
