//! Fuzz the GGUF reader: any byte string must give `Ok` or a `GgufError`, never a panic, a hang or a huge
//! allocation. For inputs that parse, also exercise `ModelConfig`, every tensor view, and check that
//! write → read → write is a fixed point (the writer's output parses and re-serializes to the same bytes).
#![no_main]

use device_runtime::arch::ModelConfig;
use device_runtime::gguf::{GgufFile, GgufWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec(), "fuzz") else { return };
    let _ = ModelConfig::from_gguf(&f).map(|m| (m.total_params(), m.full_subnet().validate(&m)));
    let _ = device_runtime::inspect::Report::new(&f).to_text();
    for t in f.tensors() {
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes());
        let _ = f.tensor_f32(t);
        let _ = f.tensor_f16(t);
    }
    for (_, v) in f.metadata() {
        let _ = (v.to_string(), v.describe(), v.as_u32_vec(), v.as_string_vec(), v.as_f32_vec());
    }
    let once = GgufWriter::from_file(&f).and_then(|w| w.to_bytes()).expect("a parsed file must be writable");
    let g = GgufFile::from_bytes(once.clone(), "fuzz-rewritten").expect("the writer's output must parse");
    assert_eq!(g.tensors().len(), f.tensors().len());
    let twice = GgufWriter::from_file(&g).and_then(|w| w.to_bytes()).expect("rewritable");
    assert!(once == twice, "write -> read -> write is not a fixed point");
});
