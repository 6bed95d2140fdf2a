//! Bad-input corpus for the GGUF reader: each case builds the bytes of one malformed file by hand (layout from
//! ggml `docs/gguf.md`) and checks that the reader returns the right error, naming the file, the place and the
//! problem, without panicking and without an allocation out of proportion to the input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use device_runtime::arch::{ArchError, ModelConfig};
use device_runtime::gguf::{GgmlType, GgufError, GgufFile, GgufWriter, MetaValue};

/// Records the largest single allocation made by the current thread (tests run on several threads).
struct MaxAlloc;

thread_local! {
    static MAX_ALLOC: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for MaxAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = MAX_ALLOC.try_with(|m| m.set(m.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = MAX_ALLOC.try_with(|m| m.set(m.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: MaxAlloc = MaxAlloc;

/// Little-endian byte builder for hand-made GGUF files.
#[derive(Clone, Default)]
struct B(Vec<u8>);

impl B {
    /// Magic, version 3, tensor count, metadata count.
    fn header(n_tensors: u64, n_kv: u64) -> B {
        B::default().raw(b"GGUF").u32(3).u64(n_tensors).u64(n_kv)
    }
    fn raw(mut self, b: &[u8]) -> B {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> B {
        self.raw(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> B {
        self.raw(&v.to_le_bytes())
    }
    fn str(self, s: &str) -> B {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// A metadata pair with a u32 value (type 4).
    fn kv_u32(self, key: &str, v: u32) -> B {
        self.str(key).u32(4).u32(v)
    }
    /// A tensor info.
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> B {
        let mut b = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            b = b.u64(d);
        }
        b.u32(ty).u64(offset)
    }
    /// Zero padding up to a multiple of `a`, then `n` data bytes.
    fn data(self, a: usize, n: usize) -> B {
        let pad = self.0.len().next_multiple_of(a) - self.0.len();
        self.raw(&vec![0; pad + n])
    }
}

/// Parse `bytes` as "bad.gguf"; it must fail. Checks the error kind, that the message names the file and
/// contains every `needles`, and that no single allocation exceeded 64 bytes per input byte (+4 KiB).
fn expect_err(bytes: B, kind: &str, needles: &[&str]) -> GgufError {
    let len = bytes.0.len();
    MAX_ALLOC.with(|m| m.set(0));
    let e = GgufFile::from_bytes(bytes.0, "bad.gguf").expect_err("malformed file was accepted");
    let max = MAX_ALLOC.with(|m| m.get());
    let msg = e.to_string();
    assert_eq!(e.kind(), kind, "wrong error: {msg}");
    assert!(msg.starts_with("bad.gguf: "), "message does not name the file: {msg}");
    for n in needles {
        assert!(msg.contains(n), "message lacks {n:?}: {msg}");
    }
    assert!(max <= 64 * len + 4096, "allocated {max} bytes for a {len}-byte file ({msg})");
    e
}

#[test]
fn empty_and_truncated_files() {
    expect_err(B::default(), "truncated", &["truncated at offset 0", "magic"]);
    expect_err(B::default().raw(b"GGUF\x03\x00"), "truncated", &["offset 4", "version"]);
    expect_err(B::header(0, 1).str("general.name").u32(8).u64(10).raw(b"abc"), "string_too_long", &[
        "string length 10 at offset 48",
        "value of \"general.name\"",
    ]);
    // Every proper prefix of a valid file (with metadata of every kind and two tensors) is rejected cleanly.
    let mut w = GgufWriter::new();
    w.add_metadata("a.u32", MetaValue::U32(7));
    w.add_metadata("a.s", MetaValue::String("text".into()));
    w.add_metadata("a.arr", MetaValue::string_array(&["x", "yz"]));
    w.add_metadata("a.f", MetaValue::F64(1.0));
    w.add_tensor("t0", &[4, 2], GgmlType::F32, vec![1u8; 32]).unwrap();
    w.add_tensor("t1", &[32], GgmlType::Q8_0, vec![2u8; 34]).unwrap();
    let full = w.to_bytes().unwrap();
    GgufFile::from_bytes(full.clone(), "ok.gguf").unwrap();
    let last_tensor_end = full.len() - 30; // t1's 34 bytes are followed by 30 bytes of padding
    for cut in 0..last_tensor_end {
        let e = GgufFile::from_bytes(full[..cut].to_vec(), "cut.gguf").expect_err("prefix accepted");
        assert!(
            matches!(e.kind(), "truncated" | "count_too_large" | "string_too_long" | "tensor_out_of_bounds"),
            "prefix of {cut} bytes: {e}"
        );
    }
}

#[test]
fn bad_magic_and_versions() {
    let e = expect_err(B::default().raw(b"GGML").u32(3).u64(0).u64(0), "bad_magic", &["bad magic", "not a GGUF file"]);
    // One line, hex (as `xxd` prints the first bytes) and the bytes as text.
    assert_eq!(
        e.to_string(),
        "bad.gguf: bad magic 47 47 4d 4c (\"GGML\") at offset 0 (expected 47 47 55 46, \"GGUF\"): not a GGUF file"
    );
    let e = expect_err(B::default().raw(b"\x7fELF").u32(3).u64(0).u64(0), "bad_magic", &["7f 45 4c 46"]);
    assert!(!e.to_string().contains('\n'), "{e}");
    expect_err(B::default().raw(b"GGUF").u32(1).u64(0).u64(0), "unsupported_version", &["version 1", "32-bit counts"]);
    expect_err(B::default().raw(b"GGUF").u32(4).u64(0).u64(0), "unsupported_version", &["version 4 at offset 4"]);
    expect_err(B::default().raw(b"GGUF").u32(3u32.swap_bytes()).u64(0).u64(0), "unsupported_version", &["big-endian"]);
    // Version 2 has the same layout for little-endian files and is accepted.
    let f = GgufFile::from_bytes(B::default().raw(b"GGUF").u32(2).u64(0).u64(0).0, "v2.gguf").unwrap();
    assert_eq!(f.version(), 2);
}

#[test]
fn counts_and_lengths_larger_than_the_file() {
    expect_err(B::header(0, u64::MAX), "count_too_large", &["metadata pair count 18446744073709551615 at offset 16"]);
    expect_err(B::header(1 << 40, 0), "count_too_large", &["tensor info count 1099511627776 at offset 8"]);
    expect_err(B::header(0, 1).u64(1 << 40).raw(b"key").raw(&[0; 16]), "string_too_long", &["string length 1099511627776 at offset 24"]);
    // An array of u32 whose count times 4 overflows 64 bits, and one that merely exceeds the file.
    let arr = |n: u64| B::header(0, 1).str("a").u32(9).u32(4).u64(n).u32(0);
    expect_err(arr(u64::MAX / 2), "count_too_large", &["array \"a\" element count", "at offset 41"]);
    expect_err(arr(2), "count_too_large", &["count 2 at offset 41", "4 bytes left"]);
    // An array of strings: each needs at least 8 bytes.
    expect_err(B::header(0, 1).str("a").u32(9).u32(8).u64(3).u64(0).u64(0), "count_too_large", &["at least 8 per item"]);
}

#[test]
fn bad_values_keys_and_strings() {
    expect_err(B::header(0, 1).str("k").u32(13).u32(0), "unknown_value_type", &["unknown metadata value type 13 at offset 33", "\"k\""]);
    expect_err(B::header(0, 1).str("").u32(4).u32(0), "empty_key", &["empty metadata key at offset 24"]);
    expect_err(B::header(0, 2).kv_u32("k", 1).kv_u32("k", 2), "duplicate_key", &["duplicate metadata key \"k\" at offset 41"]);
    expect_err(B::header(0, 1).u64(2).raw(&[0xff, 0xfe]).u32(4).u32(0), "invalid_utf8", &["offset 32 is not valid UTF-8"]);
    // Arrays nested 17 deep.
    let mut b = B::header(0, 1).str("deep").u32(9);
    for _ in 0..17 {
        b = b.u32(9).u64(1);
    }
    b = b.u32(4).u64(0);
    expect_err(b, "nesting_too_deep", &["nested more than 16 deep", "\"deep\""]);
}

#[test]
fn bad_alignment() {
    expect_err(B::header(0, 1).kv_u32("general.alignment", 0), "bad_alignment", &["general.alignment: is 0"]);
    expect_err(B::header(0, 1).kv_u32("general.alignment", 48), "bad_alignment", &["48 is not a power of two"]);
    expect_err(B::header(0, 1).str("general.alignment").u32(10).u64(32), "bad_alignment", &["UINT64 32, must be UINT32"]);
    // A valid non-default alignment is honoured: data section at a multiple of 64.
    let ok = B::header(1, 1).kv_u32("general.alignment", 64).tensor("t", &[2], 0, 0).data(64, 8);
    let f = GgufFile::from_bytes(ok.0, "ok.gguf").unwrap();
    assert_eq!((f.alignment(), f.data_offset()), (64, 128));
}

#[test]
fn bad_tensor_infos() {
    let t = |dims: &[u64], ty: u32, off: u64| B::header(1, 0).tensor("w", dims, ty, off);
    expect_err(t(&[32], 4, 0).data(32, 32), "unknown_tensor_type", &["tensor \"w\": unknown ggml type id 4 at offset 45"]);
    expect_err(t(&[1, 1, 1, 1, 1], 0, 0).data(32, 4), "bad_dim_count", &["5 dimensions at offset 33 (must be 1..=4)"]);
    expect_err(t(&[], 0, 0).data(32, 4), "bad_dim_count", &["0 dimensions"]);
    expect_err(t(&[4, 0], 0, 0).data(32, 64), "zero_dim", &["zero dimension in [4, 0] at offset 33"]);
    expect_err(t(&[1 << 32, 1 << 32, 2], 0, 0).data(32, 4), "size_overflow", &["overflows 64 bits"]);
    expect_err(t(&[1 << 62], 0, 0).data(32, 4), "size_overflow", &["[4611686018427387904] (F32) overflows"]);
    expect_err(t(&[33], 8, 0).data(32, 34), "row_not_block_multiple", &["row length 33 is not a multiple of the Q8_0 block size 32"]);
    expect_err(t(&[8], 0, 4).data(32, 64), "misaligned_tensor", &["data offset 4 is not a multiple of the alignment 32"]);
    expect_err(t(&[8], 0, 32).data(32, 40), "tensor_out_of_bounds", &["data [96, 96+32)", "outside the file of 104 bytes"]);
    expect_err(t(&[8], 0, u64::MAX - 31).data(32, 32), "tensor_out_of_bounds", &["outside the file"]);
    let two = B::header(2, 0).tensor("w", &[1], 0, 0).tensor("w", &[1], 0, 32).data(32, 64);
    expect_err(two, "duplicate_tensor", &["duplicate tensor name \"w\" at offset 57"]);
}

#[test]
fn per_layer_array_length_is_a_model_config_error() {
    let mut w = GgufWriter::new();
    for (k, v) in [
        ("general.architecture", MetaValue::String("llama".into())),
        ("llama.block_count", MetaValue::U32(4)),
        ("llama.embedding_length", MetaValue::U32(64)),
        ("llama.context_length", MetaValue::U32(64)),
        ("llama.feed_forward_length", MetaValue::u32_array(&[128, 128, 128])),
        ("llama.attention.head_count", MetaValue::U32(4)),
        ("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5)),
        ("llama.vocab_size", MetaValue::U32(10)),
    ] {
        w.add_metadata(k, v);
    }
    let f = GgufFile::from_bytes(w.to_bytes().unwrap(), "layers.gguf").unwrap();
    let e = ModelConfig::from_gguf(&f).unwrap_err();
    assert!(matches!(e, ArchError::PerLayer { .. }), "{e:?}");
    assert_eq!(e.to_string(), "layers.gguf: llama.feed_forward_length: array has 3 entries, block_count is 4");
    // A huge block_count is refused before anything per-layer is allocated.
    w.add_metadata("llama.block_count", MetaValue::U32(u32::MAX));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap(), "layers.gguf").unwrap();
    assert!(ModelConfig::from_gguf(&f).unwrap_err().to_string().contains("must be 1..=4096"));
}

#[test]
fn open_reports_missing_files_with_the_path() {
    let e = GgufFile::open("/nonexistent/dir/model.gguf").unwrap_err();
    assert_eq!(e.kind(), "io");
    assert!(e.to_string().starts_with("/nonexistent/dir/model.gguf: open:"), "{e}");
}

#[test]
fn open_on_a_directory_says_it_is_a_directory() {
    let dir = std::env::temp_dir();
    let e = GgufFile::open(&dir).unwrap_err();
    assert_eq!(e.kind(), "io");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{}: open: ", dir.display())) && msg.contains("is a directory"), "{msg}");
}

/// A 5-million-element UINT8 array (a 5 MB file) is held packed: no allocation much larger than the file (the
/// reader once made a 32-byte value per element, 166 MB resident). Element values as written.
#[test]
fn large_scalar_arrays_stay_compact() {
    let n = 5_000_000usize;
    let bytes: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let file = B::header(0, 1).str("blob").u32(9).u32(0).u64(n as u64).raw(&bytes);
    let len = file.0.len();
    MAX_ALLOC.with(|m| m.set(0));
    let f = GgufFile::from_bytes(file.0, "blob.gguf").unwrap();
    let max = MAX_ALLOC.with(|m| m.get());
    assert!(max <= len + 4096, "largest allocation {max} bytes for a {len}-byte file");
    let a = f.get_array("blob").unwrap();
    assert_eq!((a.len(), a.get(0), a.get(252), a.get(n)), (n, Some(MetaValue::U8(0)), Some(MetaValue::U8(1)), None));
    // Other scalar types too: an I16 array round-trips through the writer.
    let mut w = GgufWriter::new();
    let vals: Vec<MetaValue> = (0..1000).map(|i| MetaValue::I16(i as i16 - 500)).collect();
    w.add_metadata("i16s", MetaValue::array(device_runtime::gguf::GgufValueType::I16, vals.clone()));
    let g = GgufFile::from_bytes(w.to_bytes().unwrap(), "i16.gguf").unwrap();
    assert_eq!(g.get_array("i16s").unwrap().iter().collect::<Vec<_>>(), vals);
}

/// Inputs the fuzzer (`fuzz/`) found crashing, kept as regressions: each must go through the same steps as the
/// fuzz target without panicking.
#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if let Ok(f) = GgufFile::from_bytes(bytes, &path.display().to_string()) {
            if let Ok(m) = ModelConfig::from_gguf(&f) {
                let _ = (m.total_params(), m.full_subnet().validate(&m));
            }
            let _ = device_runtime::inspect::Report::new(&f).to_text();
            let rewritten = GgufWriter::from_file(&f).unwrap().to_bytes().unwrap();
            GgufFile::from_bytes(rewritten, "rewritten").unwrap();
        }
        n += 1;
    }
    assert!(n >= 1, "no regression inputs in {}", dir.display());
}
