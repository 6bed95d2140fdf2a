//! Unit tests on a tiny hand-built model whose weights encode their own position (`row * 1000 + col`), so
//! every slice can be checked by hand.

use super::*;
use crate::quant;

const D: u64 = 64;
const HD: u64 = 16;
const FFN: u64 = 96;
const HEADS: u64 = 4;
const KV: u64 = 2;
const VOCAB: u64 = 10;

/// `dims` tensor of `ty` whose element (row r, col c) is `r * 1000 + c` (+ `salt`) before quantization.
fn tensor(dims: &[u64], ty: GgmlType, salt: f32) -> Vec<u8> {
    let n: u64 = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i / dims[0]) * 1000 + i % dims[0]) as f32 + salt).collect();
    quant::quantize(ty, &v).unwrap()
}

/// A 3-layer llama model with 2-D weights of type `ty` (norms F32), tied embeddings.
fn tiny_model(ty: GgmlType) -> GgufFile {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", MetaValue::String("llama".into()));
    w.add_metadata("general.name", MetaValue::String("tiny".into()));
    w.add_metadata("llama.block_count", MetaValue::U32(3));
    w.add_metadata("llama.context_length", MetaValue::U32(128));
    w.add_metadata("llama.embedding_length", MetaValue::U32(D as u32));
    w.add_metadata("llama.feed_forward_length", MetaValue::U32(FFN as u32));
    w.add_metadata("llama.attention.head_count", MetaValue::U32(HEADS as u32));
    w.add_metadata("llama.attention.head_count_kv", MetaValue::U32(KV as u32));
    w.add_metadata("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5));
    w.add_metadata("general.file_type", MetaValue::U32(3));
    w.add_metadata("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
    w.add_metadata("tokenizer.chat_template", MetaValue::String("{{ messages }}".into()));
    let mut add = |name: String, dims: &[u64], ty: GgmlType, salt: f32| {
        let data = tensor(dims, ty, salt);
        w.add_tensor(&name, dims, ty, data).unwrap();
    };
    add("token_embd.weight".into(), &[D, VOCAB], ty, 0.0);
    for l in 0..3 {
        let s = l as f32 * 0.25;
        add(format!("blk.{l}.attn_norm.weight"), &[D], GgmlType::F32, s);
        add(format!("blk.{l}.attn_q.weight"), &[D, HEADS * HD], ty, s);
        add(format!("blk.{l}.attn_k.weight"), &[D, KV * HD], ty, s);
        add(format!("blk.{l}.attn_v.weight"), &[D, KV * HD], ty, s);
        add(format!("blk.{l}.attn_output.weight"), &[HEADS * HD, D], ty, s);
        add(format!("blk.{l}.ffn_norm.weight"), &[D], GgmlType::F32, s);
        add(format!("blk.{l}.ffn_gate.weight"), &[D, FFN], ty, s);
        add(format!("blk.{l}.ffn_up.weight"), &[D, FFN], ty, s);
        add(format!("blk.{l}.ffn_down.weight"), &[FFN, D], ty, s);
    }
    add("output_norm.weight".into(), &[D], GgmlType::F32, 0.0);
    GgufFile::from_bytes(w.to_bytes().unwrap(), "tiny.gguf").unwrap()
}

fn export_to(base: &GgufFile, cfg: &SubnetConfig, q: ExportQuant, dir: &Path) -> (ExportReport, GgufFile) {
    let path = dir.join(format!("{}-{q}.gguf", cfg.id()));
    let prov = Provenance::for_base(base);
    let rep = export_subnet(base, cfg, q, &prov, &path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    (rep, f)
}

fn f32s(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"));
    quant::dequantize_to_vec(t.ty, f.tensor_data(t)).unwrap()
}

#[test]
fn deci_export_slices_renumbers_and_writes_per_layer_arrays() {
    let base = tiny_model(GgmlType::F32);
    let dir = tempfile::tempdir().unwrap();
    // Layer 0: FFN 64, 1 KV head (2 query heads); layer 2: FFN 32, 2 KV heads; layer 1 dropped.
    let cfg = SubnetConfig { layers: vec![0, 2], ffn: vec![64, 32], kv_heads: vec![1, 2] };
    let (rep, f) = export_to(&base, &cfg, ExportQuant::F32, dir.path());
    assert_eq!(rep.arch, "deci");
    assert_eq!(rep.size_bytes, rep.predicted_bytes);
    assert_eq!(rep.size_bytes, std::fs::metadata(&rep.path).unwrap().len());
    assert_eq!(predicted_gguf_size(&base, &cfg, ExportQuant::F32).unwrap(), rep.size_bytes);
    assert_eq!(f.get_str("general.architecture").unwrap(), "deci");
    assert_eq!(f.get_u32("deci.block_count").unwrap(), 2);
    assert_eq!(f.get("deci.feed_forward_length").unwrap().as_u32_vec().unwrap(), vec![64, 32]);
    assert_eq!(f.get("deci.attention.head_count").unwrap().as_u32_vec().unwrap(), vec![2, 4]);
    assert_eq!(f.get("deci.attention.head_count_kv").unwrap().as_u32_vec().unwrap(), vec![1, 2]);
    assert_eq!(f.get_u32("deci.attention.key_length").unwrap(), 16);
    assert_eq!(f.get_u32("deci.attention.value_length").unwrap(), 16);
    assert_eq!(f.get_u32("deci.embedding_length").unwrap(), 64);
    assert!(f.metadata().iter().all(|(k, _)| !k.starts_with("llama.")));
    assert_eq!(f.get_u32("general.file_type").unwrap(), 0);
    assert_eq!(f.get_str("tokenizer.chat_template").unwrap(), "{{ messages }}");
    assert_eq!(f.get_str(KEY_SUBNET).unwrap(), cfg.canonical_json());
    assert_eq!(f.get_str(KEY_SUBNET_ID).unwrap(), cfg.id());
    assert_eq!(f.get_str(KEY_BASE_NAME).unwrap(), "tiny");
    assert_eq!(f.get_str(KEY_BASE_SHA256).unwrap(), Provenance::sha256_hex(base.bytes()));
    assert!(f.get(KEY_RUN).is_none());
    // The runtime reads it back as the sub-network's configuration.
    let mc = ModelConfig::from_gguf(&f).unwrap();
    assert_eq!((mc.ffn, mc.n_heads, mc.n_kv_heads, mc.head_dim), (vec![64, 32], vec![2, 4], vec![1, 2], 16));
    assert_eq!(f.tensors().len(), 1 + 9 * 2 + 1);
    let dims = |n: &str| f.tensor(n).unwrap().dims.clone();
    assert_eq!(dims("blk.0.attn_q.weight"), vec![64, 32]);
    assert_eq!(dims("blk.0.attn_k.weight"), vec![64, 16]);
    assert_eq!(dims("blk.0.attn_output.weight"), vec![32, 64]);
    assert_eq!(dims("blk.0.ffn_gate.weight"), vec![64, 64]);
    assert_eq!(dims("blk.0.ffn_down.weight"), vec![64, 64]);
    assert_eq!(dims("blk.1.attn_q.weight"), vec![64, 64]);
    assert_eq!(dims("blk.1.ffn_down.weight"), vec![32, 64]);
    assert!(f.tensor("blk.2.attn_q.weight").is_none());
    // Values: element (r, c) of base layer l is r*1000 + c + l/4.
    let q = f32s(&f, "blk.0.attn_q.weight");
    assert_eq!((q[0], q[63], q[64], q[31 * 64 + 5]), (0.0, 63.0, 1000.0, 31005.0));
    let o = f32s(&f, "blk.0.attn_output.weight");
    assert_eq!((o[31], o[32], o[63 * 32 + 31]), (31.0, 1000.0, 63031.0));
    let down = f32s(&f, "blk.1.ffn_down.weight"); // from base layer 2: salt 0.5
    assert_eq!((down[0], down[31], down[32], down[63 * 32 + 31]), (0.5, 31.5, 1000.5, 63031.5));
    let norm = f32s(&f, "blk.1.ffn_norm.weight");
    assert_eq!(norm[3], 3.5);
}

#[test]
fn uniform_subnet_is_llama_and_full_network_copies_everything() {
    let base = tiny_model(GgmlType::Q8_0);
    let dir = tempfile::tempdir().unwrap();
    let cfg = SubnetConfig { layers: vec![1, 2], ffn: vec![64, 64], kv_heads: vec![1, 1] };
    let (rep, f) = export_to(&base, &cfg, ExportQuant::Q8_0, dir.path());
    assert_eq!(rep.arch, "llama");
    assert_eq!(rep.size_bytes, rep.predicted_bytes);
    assert_eq!(f.get_u32("llama.feed_forward_length").unwrap(), 64);
    assert_eq!(f.get_u32("llama.attention.head_count").unwrap(), 2);
    assert_eq!(f.get_u32("llama.attention.head_count_kv").unwrap(), 1);
    assert_eq!(f.get_u32("general.file_type").unwrap(), 7);
    // Q8_0 -> Q8_0 with 32-aligned slices: every tensor is copied block by block.
    assert_eq!(rep.copied_tensors, f.tensors().len());
    let src = base.tensor("blk.2.ffn_down.weight").unwrap();
    let out = f.tensor("blk.1.ffn_down.weight").unwrap();
    let (sd, od) = (base.tensor_data(src), f.tensor_data(out));
    // First row: the first 2 of 3 blocks (34 bytes each); second row starts at source byte 102.
    assert_eq!(&od[..68], &sd[..68]);
    assert_eq!(&od[68..136], &sd[102..170]);

    // The full network at the base's own type reproduces the base tensors byte for byte.
    let full = ModelConfig::from_gguf(&base).unwrap().full_subnet();
    let (rep, f) = export_to(&base, &full, ExportQuant::Q8_0, dir.path());
    assert_eq!(rep.size_bytes, rep.predicted_bytes);
    for t in base.tensors() {
        assert_eq!(f.tensor_data(f.tensor(&t.name).unwrap()), base.tensor_data(t), "{}", t.name);
    }
}

#[test]
fn tensor_types_follow_llama_cpp_rules() {
    let base = tiny_model(GgmlType::F32);
    let dir = tempfile::tempdir().unwrap();
    let cfg = SubnetConfig { layers: vec![0], ffn: vec![32], kv_heads: vec![2] };
    for (q, bulk, embd, ftype) in [
        (ExportQuant::Q4_0, GgmlType::Q4_0, GgmlType::Q8_0, 2),
        (ExportQuant::Q4_1, GgmlType::Q4_1, GgmlType::Q8_0, 3),
        (ExportQuant::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0, 7),
        (ExportQuant::F16, GgmlType::F16, GgmlType::F16, 1),
        (ExportQuant::F32, GgmlType::F32, GgmlType::F32, 0),
    ] {
        let (rep, f) = export_to(&base, &cfg, q, dir.path());
        assert_eq!(rep.size_bytes, rep.predicted_bytes, "{q}");
        assert_eq!(predicted_gguf_size(&base, &cfg, q).unwrap(), rep.size_bytes, "{q}");
        assert_eq!(f.get_u32("general.file_type").unwrap(), ftype);
        assert_eq!(f.tensor("token_embd.weight").unwrap().ty, embd, "{q}");
        assert_eq!(f.tensor("blk.0.ffn_down.weight").unwrap().ty, bulk, "{q}");
        assert_eq!(f.tensor("blk.0.attn_norm.weight").unwrap().ty, GgmlType::F32, "{q}");
        assert_eq!(f.tensor("output_norm.weight").unwrap().ty, GgmlType::F32, "{q}");
        // Quantized from the exact F32 values: compare with quantizing the hand-built slice directly.
        let want: Vec<f32> = (0..64u64).flat_map(|r| (0..32u64).map(move |c| (r * 1000 + c) as f32)).collect();
        let t = f.tensor("blk.0.ffn_down.weight").unwrap();
        assert_eq!(f.tensor_data(t), quant::quantize(bulk, &want).unwrap(), "{q}");
    }
}

#[test]
fn attention_free_and_ffn_free_layers() {
    let base = tiny_model(GgmlType::F32);
    let dir = tempfile::tempdir().unwrap();
    let cfg = SubnetConfig { layers: vec![0, 1], ffn: vec![0, 96], kv_heads: vec![2, 0] };
    let (rep, f) = export_to(&base, &cfg, ExportQuant::F16, dir.path());
    assert_eq!(rep.arch, "deci");
    assert_eq!(rep.size_bytes, rep.predicted_bytes);
    assert_eq!(f.get("deci.attention.head_count").unwrap().as_u32_vec().unwrap(), vec![4, 0]);
    assert_eq!(f.get("deci.feed_forward_length").unwrap().as_u32_vec().unwrap(), vec![0, 96]);
    assert!(f.tensor("blk.0.ffn_up.weight").is_none() && f.tensor("blk.0.ffn_norm.weight").is_none());
    assert!(f.tensor("blk.1.attn_q.weight").is_none() && f.tensor("blk.1.attn_norm.weight").is_none());
    assert!(f.tensor("blk.0.attn_q.weight").is_some() && f.tensor("blk.1.ffn_down.weight").is_some());
    assert_eq!(f.tensors().len(), 1 + 5 + 4 + 1);
    ModelConfig::from_gguf(&f).unwrap();
}

#[test]
fn bad_subnets_are_refused_before_writing() {
    let base = tiny_model(GgmlType::Q8_0);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let prov = Provenance::for_base(&base);
    let err = |cfg: SubnetConfig, q: ExportQuant| {
        let e = export_subnet(&base, &cfg, q, &prov, &out).unwrap_err().to_string();
        assert!(predicted_gguf_size(&base, &cfg, q).is_err());
        e
    };
    let e = err(SubnetConfig { layers: vec![0, 3], ffn: vec![32, 32], kv_heads: vec![1, 1] }, ExportQuant::Q8_0);
    assert!(e.contains("layer 3 is out of range (base has 3 layers)"), "{e}");
    let e = err(SubnetConfig { layers: vec![0], ffn: vec![48], kv_heads: vec![1] }, ExportQuant::Q4_0);
    assert!(e.contains("layer 0: FFN width 48 is not a multiple of the Q4_0 block size 32"), "{e}");
    let e = err(SubnetConfig { layers: vec![1], ffn: vec![0], kv_heads: vec![0] }, ExportQuant::Q8_0);
    assert!(e.contains("layer 1 is kept with 0 KV heads and FFN 0"), "{e}");
    let e = err(SubnetConfig { layers: vec![1], ffn: vec![128], kv_heads: vec![1] }, ExportQuant::Q8_0);
    assert!(e.contains("ffn 128 > base 96"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
    // The same width is fine at F32 (block size 1), sliced through dequantization of the Q8_0 source.
    let cfg = SubnetConfig { layers: vec![0], ffn: vec![48], kv_heads: vec![1] };
    let rep = export_subnet(&base, &cfg, ExportQuant::F32, &prov, &out).unwrap();
    assert_eq!(rep.size_bytes, rep.predicted_bytes);
    let f = GgufFile::open(&out).unwrap();
    let down = f32s(&f, "blk.0.ffn_down.weight");
    let src = f32s(&base, "blk.0.ffn_down.weight");
    assert_eq!(down.len(), 64 * 48);
    assert_eq!(&down[48..96], &src[96..144]);
}

#[test]
fn search_provenance_is_written_and_counted() {
    let base = tiny_model(GgmlType::F32);
    let dir = tempfile::tempdir().unwrap();
    let cfg = SubnetConfig { layers: vec![0, 1, 2], ffn: vec![32, 32, 32], kv_heads: vec![1, 1, 1] };
    let prov = Provenance {
        base_sha256: Provenance::sha256_hex(base.bytes()),
        run: Some("demo".into()),
        objectives: Some(serde_json::json!({"accuracy": 0.5, "latency_ms": 3.25})),
    };
    let plan = ExportPlan::new(&base, &cfg, ExportQuant::Q8_0, &prov).unwrap();
    let predicted = plan.predicted_size().unwrap();
    let rep = plan.write(&dir.path().join("p.gguf")).unwrap();
    assert_eq!(rep.size_bytes, predicted);
    let f = GgufFile::open(&rep.path).unwrap();
    assert_eq!(f.get_str(KEY_RUN).unwrap(), "demo");
    assert_eq!(f.get_str(KEY_OBJECTIVES).unwrap(), r#"{"accuracy":0.5,"latency_ms":3.25}"#);
    assert_eq!(f.get_str(KEY_QUANT).unwrap(), "q8_0");
    // Without search keys the prediction is the plain one.
    let plain = predicted_gguf_size(&base, &cfg, ExportQuant::Q8_0).unwrap();
    let extra = (8 + KEY_RUN.len() + 4 + 8 + 4) + (8 + KEY_OBJECTIVES.len() + 4 + 8 + 34);
    assert!(predicted >= plain && predicted - plain <= extra as u64 + 32, "{predicted} vs {plain}");
}

#[test]
fn quant_names_parse() {
    assert_eq!("Q4_1".parse::<ExportQuant>().unwrap(), ExportQuant::Q4_1);
    assert_eq!("f16".parse::<ExportQuant>().unwrap().ftype(), 1);
    assert!("q6_k".parse::<ExportQuant>().unwrap_err().contains("expected one of q8_0, q4_0, q4_1, f16, f32"));
}

#[test]
fn reconstructed_tensors_replace_the_slices_and_are_checked() {
    let base = tiny_model(GgmlType::F32);
    let dir = tempfile::tempdir().unwrap();
    let cfg = SubnetConfig { layers: vec![0, 2], ffn: vec![32, 64], kv_heads: vec![2, 1] };
    let prov = Provenance::for_base(&base);
    let plan = || ExportPlan::new(&base, &cfg, ExportQuant::F32, &prov).unwrap();
    let rec = |name: &str, v: Vec<f32>| Reconstruction { method: "test refit".into(), tensors: [(name.to_owned(), v)].into() };
    // blk.1 (base layer 2) ffn_down is [64, D]: replaced by 0.5 everywhere, written as F32 unchanged.
    let p = plan().with_reconstruction(rec("blk.1.ffn_down.weight", vec![0.5; 64 * D as usize])).unwrap();
    assert!(p.is_reconstructed());
    let rep = p.write(&dir.path().join("r.gguf")).unwrap();
    assert!(rep.reconstructed);
    assert_eq!(rep.size_bytes, rep.predicted_bytes);
    let f = GgufFile::open(&rep.path).unwrap();
    assert_eq!(f.get_str(KEY_RECONSTRUCTION).unwrap(), "test refit");
    let t = f.tensor("blk.1.ffn_down.weight").unwrap();
    assert!(quant::dequantize_to_vec(t.ty, f.tensor_data(t)).unwrap().iter().all(|&x| x == 0.5));
    // Other tensors keep the sliced values (row r, col c = r*1000 + c + 0.5 for base layer 2).
    let t = f.tensor("blk.1.ffn_up.weight").unwrap();
    assert_eq!(quant::dequantize_to_vec(t.ty, f.tensor_data(t)).unwrap()[65], 1001.5);
    // Without replacements nothing changes and no key is written.
    let p = plan().with_reconstruction(Reconstruction::default()).unwrap();
    assert!(!p.is_reconstructed() && p.metadata().iter().all(|(k, _)| k != KEY_RECONSTRUCTION));
    // Bad replacements: unknown tensor, wrong size, NaN; nothing is built.
    let e = plan().with_reconstruction(rec("blk.5.ffn_down.weight", vec![0.0; 4])).unwrap_err().to_string();
    assert!(e.contains("blk.5.ffn_down.weight") && e.contains("not a tensor"), "{e}");
    let e = plan().with_reconstruction(rec("blk.0.ffn_down.weight", vec![0.0; 4])).unwrap_err().to_string();
    assert!(e.contains("4 values"), "{e}");
    let mut v = vec![0.0; 32 * D as usize];
    v[7] = f32::NAN;
    let e = plan().with_reconstruction(rec("blk.0.ffn_down.weight", v)).unwrap_err().to_string();
    assert!(e.contains("value 7") && e.contains("non-finite"), "{e}");
}

#[test]
fn in_memory_model_has_the_subnet_shapes() {
    let base = tiny_model(GgmlType::F32);
    let cfg = SubnetConfig { layers: vec![0, 2], ffn: vec![32, 64], kv_heads: vec![2, 1] };
    let m = ExportPlan::new(&base, &cfg, ExportQuant::Q8_0, &Provenance::placeholder()).unwrap().build_model().unwrap();
    let shapes: Vec<(usize, usize, usize)> = m.config.layers.iter().map(|l| (l.n_head, l.n_head_kv, l.n_ff)).collect();
    assert_eq!(shapes, vec![(4, 2, 32), (2, 1, 64)]);
}
