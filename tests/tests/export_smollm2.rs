//! Sub-network export of the real SmolLM2-135M (Q4_1) model, checked against gguf-py (GGUFReader and
//! `gguf.quants`, run through python3): shapes, types, metadata (llama scalars / deci arrays), provenance,
//! and tensor bytes (gguf-py dequantizes the base tensor, slices it with numpy and quantizes it to the target
//! type; the bytes must be identical). The file size must equal `subnet::predicted_gguf_size`.

use std::path::Path;
use std::process::Command;

use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::gguf::GgufFile;
use device_runtime::subnet::{self, ExportQuant, Provenance};
use serde_json::{Value, json};

/// gguf-py side: metadata (tokenizer arrays as lengths), tensor infos, sha256 of the base, and byte
/// comparisons of sliced + re-quantized base tensors against the exported ones.
const PY: &str = r#"
import sys, json, hashlib
import numpy as np
from gguf import GGUFReader
from gguf import quants
out = GGUFReader(sys.argv[1]); base = GGUFReader(sys.argv[2]); checks = json.loads(sys.argv[3])
md = {}
for k, f in out.fields.items():
    if k.startswith('GGUF.'):
        continue
    if k in ('tokenizer.ggml.tokens', 'tokenizer.ggml.merges', 'tokenizer.ggml.token_type'):
        md[k] = {'len': len(f.data)}
    else:
        md[k] = f.contents()
tensors = [{'name': t.name, 'type': t.tensor_type.name, 'shape': [int(x) for x in t.shape]} for t in out.tensors]
bt = {t.name: t for t in base.tensors}; ot = {t.name: t for t in out.tensors}
res = []
for c in checks:
    b = bt[c['base']]; o = ot[c['out']]
    w = quants.dequantize(b.data, b.tensor_type).reshape(-1, int(b.shape[0]))
    n = c['n']
    if c['kind'] == 'rows': w = w[:n, :]
    elif c['kind'] == 'cols': w = w[:, :n]
    want = np.asarray(quants.quantize(np.ascontiguousarray(w, dtype=np.float32), o.tensor_type)).tobytes()
    res.append({'out': c['out'], 'equal': want == np.asarray(o.data).tobytes()})
sha = hashlib.sha256(open(sys.argv[2], 'rb').read()).hexdigest()
base_md = {k: f.contents() for k, f in base.fields.items() if k in ('tokenizer.chat_template', 'general.name')}
print(json.dumps({'metadata': md, 'tensors': tensors, 'checks': res, 'base_sha256': sha, 'base': base_md}))
"#;

fn gguf_py(out: &Path, base: &Path, checks: &Value) -> Value {
    let o = Command::new("python3")
        .args(["-c", PY])
        .arg(out)
        .arg(base)
        .arg(checks.to_string())
        .output()
        .expect("python3 must be installed (scripts/test.sh installs gguf, numpy)");
    assert!(o.status.success(), "gguf-py failed (pip install gguf==0.19.0 numpy): {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Export `cfg` at `q`, check size == prediction and our reader, return gguf-py's view.
fn export_and_read(cfg: &SubnetConfig, q: ExportQuant, checks: Value) -> (Value, GgufFile) {
    let base_path = llamanas_tests::smollm2_path();
    let base = GgufFile::open(&base_path).unwrap();
    let dir = std::env::temp_dir().join(format!("llamanas-export-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{}-{q}.gguf", cfg.id()));
    let predicted = subnet::predicted_gguf_size(&base, cfg, q).unwrap();
    let rep = subnet::export_subnet(&base, cfg, q, &Provenance::for_base(&base), &out).unwrap();
    let on_disk = std::fs::metadata(&out).unwrap().len();
    assert_eq!((rep.size_bytes, on_disk), (predicted, predicted), "{q} {cfg:?}");
    let py = gguf_py(&out, &base_path, &checks);
    for c in py["checks"].as_array().unwrap() {
        assert_eq!(c["equal"], json!(true), "{q}: tensor {} differs from gguf-py's slice + quantize", c["out"]);
    }
    let f = GgufFile::open(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    // Shared provenance and base metadata.
    let md = &py["metadata"];
    assert_eq!(md["llamanas.base.sha256"], py["base_sha256"]);
    assert_eq!(md["llamanas.base.name"], py["base"]["general.name"]);
    assert_eq!(md["llamanas.subnet"], json!(cfg.canonical_json()));
    assert_eq!(md["llamanas.subnet.id"], json!(cfg.id()));
    assert_eq!(md["llamanas.quant"], json!(q.name()));
    assert_eq!(md["tokenizer.chat_template"], py["base"]["tokenizer.chat_template"]);
    assert_eq!(md["tokenizer.ggml.tokens"]["len"], json!(49152));
    assert_eq!(md["tokenizer.ggml.merges"]["len"], json!(48900));
    assert_eq!(md["tokenizer.ggml.pre"], json!("smollm"));
    assert_eq!(md["general.file_type"], json!(q.ftype()));
    (py, f)
}

fn shapes(py: &Value) -> Vec<(String, String, Vec<u64>)> {
    py["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape = t["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            (t["name"].as_str().unwrap().to_owned(), t["type"].as_str().unwrap().to_owned(), shape)
        })
        .collect()
}

fn find<'a>(s: &'a [(String, String, Vec<u64>)], name: &str) -> &'a (String, String, Vec<u64>) {
    s.iter().find(|t| t.0 == name).unwrap_or_else(|| panic!("gguf-py sees no tensor {name}"))
}

#[test]
fn deci_q8_0_export_reads_back_in_gguf_py() {
    // Layers 0, 1, 2, 5, 10, 29 with mixed widths; layer 10 has no FFN, layer 29 no attention.
    let cfg = SubnetConfig {
        layers: vec![0, 1, 2, 5, 10, 29],
        ffn: vec![1536, 1024, 512, 768, 0, 256],
        kv_heads: vec![3, 2, 1, 3, 2, 0],
    };
    let checks = json!([
        {"out": "blk.1.attn_q.weight", "base": "blk.1.attn_q.weight", "kind": "rows", "n": 384},
        {"out": "blk.1.attn_k.weight", "base": "blk.1.attn_k.weight", "kind": "rows", "n": 128},
        {"out": "blk.2.attn_output.weight", "base": "blk.2.attn_output.weight", "kind": "cols", "n": 192},
        {"out": "blk.3.ffn_down.weight", "base": "blk.5.ffn_down.weight", "kind": "cols", "n": 768},
        {"out": "blk.3.ffn_gate.weight", "base": "blk.5.ffn_gate.weight", "kind": "rows", "n": 768},
        {"out": "blk.5.ffn_up.weight", "base": "blk.29.ffn_up.weight", "kind": "rows", "n": 256},
        {"out": "blk.4.attn_v.weight", "base": "blk.10.attn_v.weight", "kind": "rows", "n": 128},
        {"out": "blk.5.ffn_norm.weight", "base": "blk.29.ffn_norm.weight", "kind": "all", "n": 0},
    ]);
    let (py, f) = export_and_read(&cfg, ExportQuant::Q8_0, checks);
    let md = &py["metadata"];
    assert_eq!(md["general.architecture"], json!("deci"));
    assert_eq!(md["deci.block_count"], json!(6));
    assert_eq!(md["deci.feed_forward_length"], json!([1536, 1024, 512, 768, 0, 256]));
    assert_eq!(md["deci.attention.head_count"], json!([9, 6, 3, 9, 6, 0]));
    assert_eq!(md["deci.attention.head_count_kv"], json!([3, 2, 1, 3, 2, 0]));
    assert_eq!(md["deci.attention.key_length"], json!(64));
    assert_eq!(md["deci.attention.value_length"], json!(64));
    assert_eq!(md["deci.embedding_length"], json!(576));
    assert_eq!(md["deci.vocab_size"], json!(49152));
    assert_eq!(md["deci.rope.freq_base"], json!(100000.0));
    assert!(md.as_object().unwrap().keys().all(|k| !k.starts_with("llama.")), "llama.* keys left");
    let s = shapes(&py);
    // 1 embedding + 4 full blocks (9) + 1 attention-only (5) + 1 FFN-only (4) + output_norm.
    assert_eq!(s.len(), 1 + 4 * 9 + 5 + 4 + 1);
    assert_eq!(find(&s, "token_embd.weight").1, "Q8_0");
    assert_eq!(find(&s, "token_embd.weight").2, vec![576, 49152]);
    assert_eq!(find(&s, "blk.1.attn_q.weight").2, vec![576, 384]);
    assert_eq!(find(&s, "blk.1.attn_k.weight").2, vec![576, 128]);
    assert_eq!(find(&s, "blk.2.attn_output.weight").2, vec![192, 576]);
    assert_eq!(find(&s, "blk.3.ffn_down.weight").2, vec![768, 576]);
    assert_eq!(find(&s, "blk.5.ffn_gate.weight").2, vec![576, 256]);
    assert_eq!(find(&s, "blk.5.ffn_norm.weight").1, "F32");
    assert!(s.iter().all(|t| !t.0.starts_with("blk.4.ffn") && !t.0.starts_with("blk.5.attn")));
    assert!(s.iter().all(|t| t.2.len() == 1 && t.1 == "F32" || t.2.len() == 2 && t.1 == "Q8_0"));
    // Our reader agrees.
    let mc = ModelConfig::from_gguf(&f).unwrap();
    assert_eq!(mc.arch, "deci");
    assert_eq!(mc.ffn, cfg.ffn);
    assert_eq!(mc.n_heads, vec![9, 6, 3, 9, 6, 0]);
    assert_eq!(mc.n_kv_heads, cfg.kv_heads);
    assert_eq!(mc.head_dim, 64);
}

#[test]
fn uniform_q4_0_export_is_llama_with_q8_0_tied_embedding() {
    let cfg = SubnetConfig { layers: (0..30).step_by(3).collect(), ffn: vec![1024; 10], kv_heads: vec![2; 10] };
    let checks = json!([
        {"out": "token_embd.weight", "base": "token_embd.weight", "kind": "all", "n": 0},
        {"out": "blk.3.attn_q.weight", "base": "blk.9.attn_q.weight", "kind": "rows", "n": 384},
        {"out": "blk.9.ffn_down.weight", "base": "blk.27.ffn_down.weight", "kind": "cols", "n": 1024},
    ]);
    let (py, f) = export_and_read(&cfg, ExportQuant::Q4_0, checks);
    let md = &py["metadata"];
    assert_eq!(md["general.architecture"], json!("llama"));
    assert_eq!(md["llama.block_count"], json!(10));
    assert_eq!(md["llama.feed_forward_length"], json!(1024));
    assert_eq!(md["llama.attention.head_count"], json!(6));
    assert_eq!(md["llama.attention.head_count_kv"], json!(2));
    assert_eq!(md["llama.attention.key_length"], json!(64));
    let s = shapes(&py);
    assert_eq!(s.len(), 1 + 10 * 9 + 1);
    // llama.cpp: the tied embedding would be Q6_K, but 576 is not a multiple of 256 -> Q8_0.
    assert_eq!(find(&s, "token_embd.weight").1, "Q8_0");
    assert_eq!(find(&s, "blk.0.ffn_up.weight").1, "Q4_0");
    assert_eq!(find(&s, "blk.0.ffn_up.weight").2, vec![576, 1024]);
    assert_eq!(find(&s, "blk.0.attn_v.weight").2, vec![576, 128]);
    let mc = ModelConfig::from_gguf(&f).unwrap();
    assert!(mc.is_uniform() && mc.n_layers == 10 && mc.n_heads[0] == 6);
}

#[test]
fn f16_export_and_full_q4_1_copy() {
    let cfg = SubnetConfig { layers: vec![3, 4], ffn: vec![64, 1536], kv_heads: vec![1, 3] };
    let checks = json!([
        {"out": "blk.0.ffn_down.weight", "base": "blk.3.ffn_down.weight", "kind": "cols", "n": 64},
        {"out": "blk.0.attn_output.weight", "base": "blk.3.attn_output.weight", "kind": "cols", "n": 192},
        {"out": "token_embd.weight", "base": "token_embd.weight", "kind": "all", "n": 0},
    ]);
    let (py, _) = export_and_read(&cfg, ExportQuant::F16, checks);
    let s = shapes(&py);
    assert_eq!(find(&s, "token_embd.weight").1, "F16");
    assert_eq!(find(&s, "blk.1.ffn_down.weight").1, "F16");
    assert_eq!(find(&s, "blk.0.ffn_down.weight").2, vec![64, 576]);
    assert_eq!(py["metadata"]["deci.attention.head_count"], json!([3, 9]));

    // The full network at the base's own type: every tensor copied, same shapes and bytes as the base
    // (checked with our reader only: gguf-py's reader takes ~10 s per file on a loaded CI machine).
    let base = GgufFile::open(llamanas_tests::smollm2_path()).unwrap();
    let full = ModelConfig::from_gguf(&base).unwrap().full_subnet();
    let out = std::env::temp_dir().join(format!("llamanas-export-full-{}.gguf", std::process::id()));
    let rep = subnet::export_subnet(&base, &full, ExportQuant::Q4_1, &Provenance::for_base(&base), &out).unwrap();
    assert_eq!(rep.size_bytes, subnet::predicted_gguf_size(&base, &full, ExportQuant::Q4_1).unwrap());
    assert_eq!((rep.arch.as_str(), rep.copied_tensors), ("llama", 272));
    let f = GgufFile::open(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    assert_eq!(f.tensors().len(), 272);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    for t in base.tensors() {
        let o = f.tensor(&t.name).unwrap();
        assert_eq!((&o.dims, o.ty), (&t.dims, t.ty), "{}", t.name);
        assert!(f.tensor_data(o) == base.tensor_data(t), "{} bytes differ", t.name);
    }
}

#[test]
fn predicted_size_matches_on_many_configs() {
    // Prediction alone (no data): compared with real exports of the same configs in the tests above and
    // here with a spread of shapes and quantizations.
    let base = GgufFile::open(llamanas_tests::smollm2_path()).unwrap();
    let dir = std::env::temp_dir().join(format!("llamanas-export-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfgs = [
        SubnetConfig { layers: vec![0], ffn: vec![32], kv_heads: vec![1] },
        SubnetConfig { layers: vec![7, 8], ffn: vec![1536, 0], kv_heads: vec![0, 3] },
        SubnetConfig { layers: (0..30).collect(), ffn: (0..30).map(|i| 32 * (1 + i)).collect(), kv_heads: vec![1; 30] },
    ];
    for (i, cfg) in cfgs.iter().enumerate() {
        for q in ExportQuant::ALL {
            let out = dir.join(format!("{i}-{q}.gguf"));
            let predicted = subnet::predicted_gguf_size(&base, cfg, q).unwrap();
            let rep = subnet::export_subnet(&base, cfg, q, &Provenance::for_base(&base), &out).unwrap();
            assert_eq!(std::fs::metadata(&out).unwrap().len(), predicted, "config {i} {q}");
            assert_eq!(rep.size_bytes, predicted);
            std::fs::remove_file(&out).unwrap();
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
