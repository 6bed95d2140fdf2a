//! Unit tests: writer → reader round trips on small hand-built files.

use super::*;

fn all_types_writer() -> GgufWriter<'static> {
    let mut w = GgufWriter::new();
    w.add_metadata("u8", MetaValue::U8(200));
    w.add_metadata("i8", MetaValue::I8(-100));
    w.add_metadata("u16", MetaValue::U16(60000));
    w.add_metadata("i16", MetaValue::I16(-30000));
    w.add_metadata("u32", MetaValue::U32(4_000_000_000));
    w.add_metadata("i32", MetaValue::I32(-2_000_000_000));
    w.add_metadata("f32", MetaValue::F32(1.5));
    w.add_metadata("bool", MetaValue::Bool(true));
    w.add_metadata("string", MetaValue::String("héllo".into()));
    w.add_metadata("u64", MetaValue::U64(u64::MAX));
    w.add_metadata("i64", MetaValue::I64(i64::MIN));
    w.add_metadata("f64", MetaValue::F64(-0.125));
    w.add_metadata(
        "nested",
        MetaValue::array(
            GgufValueType::Array,
            vec![MetaValue::u32_array(&[1, 2]), MetaValue::string_array(&["a", "bc"]), MetaValue::f32_array(&[])],
        ),
    );
    w
}

#[test]
fn every_value_type_round_trips_in_order() {
    let w = all_types_writer();
    let bytes = w.to_bytes().unwrap();
    let f = GgufFile::from_bytes(bytes.clone(), "mem").unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.metadata(), w.metadata());
    assert_eq!(f.get_u32("u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_u64("u64").unwrap(), u64::MAX);
    assert_eq!(f.get_str("string").unwrap(), "héllo");
    assert!(f.get_bool("bool").unwrap());
    assert_eq!(f.get_f32("f64").unwrap(), -0.125);
    // Header (hand-computed): 4 magic + 4 version + 8 + 8, then 13 pairs; no tensors, data offset padded to 32.
    assert_eq!(&bytes[..8], b"GGUF\x03\x00\x00\x00");
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.data_offset(), bytes.len() as u64);
    // Rewriting what we read gives the same bytes.
    assert_eq!(GgufWriter::from_file(&f).unwrap().to_bytes().unwrap(), bytes);
}

#[test]
fn typed_getters_report_key_and_type() {
    let f = GgufFile::from_bytes(all_types_writer().to_bytes().unwrap(), "mem.gguf").unwrap();
    let e = f.get_u32("i32").unwrap_err().to_string();
    assert!(e.contains("mem.gguf") && e.contains("\"i32\"") && e.contains("INT32"), "{e}");
    let e = f.get_str("missing.key").unwrap_err().to_string();
    assert!(e.contains("missing metadata key \"missing.key\""), "{e}");
    assert_eq!(f.opt_u32("missing.key").unwrap(), None);
    assert!(f.get_u32("u64").is_err());
}

#[test]
fn tensors_are_aligned_and_viewed_without_copy() {
    let mut w = GgufWriter::new();
    w.set_alignment(64).unwrap();
    w.add_metadata("general.architecture", MetaValue::String("test".into()));
    let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
    let a_bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
    w.add_tensor("a", &[3, 2], GgmlType::F32, a_bytes).unwrap();
    let h: Vec<u8> = [1.0f32, -2.0, 0.5].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
    w.add_tensor("h", &[3], GgmlType::F16, h).unwrap();
    w.add_tensor("q", &[64, 1], GgmlType::Q8_0, vec![7u8; 68]).unwrap();
    assert!(w.add_tensor("bad", &[32], GgmlType::Q8_0, vec![0u8; 33]).is_err());
    assert!(w.add_tensor("bad", &[33], GgmlType::Q8_0, vec![0u8; 34]).is_err());
    assert!(w.add_tensor("a", &[1], GgmlType::F32, vec![0u8; 4]).is_err());
    let bytes = w.to_bytes().unwrap();
    let f = GgufFile::from_bytes(bytes, "mem").unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    let ta = f.tensor("a").unwrap();
    assert_eq!((ta.n_elements(), ta.n_rows(), ta.row_bytes(), ta.n_bytes()), (6, 2, 12, 24));
    assert_eq!(f.tensor_f32(ta).unwrap(), &a[..]);
    let th = f.tensor("h").unwrap();
    assert_eq!(th.offset, 64);
    assert_eq!(f.tensor_f16(th).unwrap()[1].to_f32(), -2.0);
    assert!(f.tensor_f32(th).is_err());
    let tq = f.tensor("q").unwrap();
    assert_eq!(tq.offset, 128);
    assert_eq!(f.tensor_data(tq), &[7u8; 68][..]);
    assert_eq!(f.file_size(), f.data_offset() + 128 + 128);
}

#[test]
fn writer_rejects_bad_metadata() {
    let mut w = GgufWriter::new();
    w.add_metadata("", MetaValue::U8(1));
    assert!(w.to_bytes().unwrap_err().to_string().contains("empty metadata key"));
    let mut w = GgufWriter::new();
    w.add_metadata("x", MetaValue::array(GgufValueType::U32, vec![MetaValue::I32(1)]));
    assert!(w.to_bytes().unwrap_err().to_string().contains("element 0 of type INT32"));
    let mut w = GgufWriter::new();
    assert!(w.set_alignment(48).is_err());
    w.add_metadata(ALIGNMENT_KEY, MetaValue::U64(32));
    assert!(w.to_bytes().is_err());
    // add_metadata replaces in place, remove_metadata removes.
    let mut w = GgufWriter::new();
    w.add_metadata("a", MetaValue::U8(1));
    w.add_metadata("b", MetaValue::U8(2));
    w.add_metadata("a", MetaValue::U8(3));
    assert_eq!(w.metadata()[0], ("a".to_string(), MetaValue::U8(3)));
    assert_eq!(w.remove_metadata("a"), Some(MetaValue::U8(3)));
    assert_eq!(w.get("b"), Some(&MetaValue::U8(2)));
}

#[test]
fn write_atomic_replaces_file() {
    let dir = std::env::temp_dir().join(format!("gguf-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("x.gguf");
    std::fs::write(&p, b"old").unwrap();
    let n = all_types_writer().write_atomic(&p).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), n);
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.get_str("string").unwrap(), "héllo");
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).collect();
    assert_eq!(leftovers.len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
