//! GGUF v3 writer (little-endian): metadata pairs in insertion order, tensor infos, data section with every
//! tensor aligned to `general.alignment` (default 32) and zero padding after each tensor, as gguf-py's
//! `GGUFWriter` and llama.cpp's `gguf_write_to_file` do. [`GgufWriter::write_atomic`] writes a temporary file in
//! the target folder and renames it into place.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::error::GgufError;
use super::reader::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufFile, MAX_DIMS};
use super::types::GgmlType;
use super::value::MetaValue;

const WRITER: &str = "<writer>";

fn invalid(reason: String) -> GgufError {
    GgufError::InvalidInput { file: WRITER.into(), reason }
}

/// Bytes of a tensor of `ty` with ggml dims `dims` (non-empty, no zero): the row length `dims[0]` must be a
/// whole number of blocks and the size must fit in 64 bits, else [`GgufError::InvalidInput`] naming the tensor.
fn data_size(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    let (be, bb) = ty.block_size();
    if !dims[0].is_multiple_of(be as u64) {
        return Err(invalid(format!(
            "tensor {name:?}: row length {} is not a multiple of the {ty} block size {be}",
            dims[0]
        )));
    }
    dims.iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| (n / be as u64).checked_mul(bb as u64))
        .ok_or_else(|| invalid(format!("tensor {name:?}: size of {dims:?} ({ty}) overflows 64 bits")))
}

/// A tensor queued for writing.
struct PendingTensor<'a> {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Cow<'a, [u8]>,
}

/// Builds a GGUF v3 file: metadata (insertion order, a re-added key keeps its place) and tensors (insertion order).
///
/// Tensor data is borrowed (`&'a [u8]`, e.g. from a memory-mapped [`GgufFile`]) or owned (`Vec<u8>`).
#[derive(Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<PendingTensor<'a>>,
    tensor_index: HashMap<String, usize>,
}

impl<'a> GgufWriter<'a> {
    /// An empty writer (no metadata, no tensors, alignment 32).
    pub fn new() -> GgufWriter<'a> {
        GgufWriter::default()
    }

    /// A writer holding all metadata and tensors of `f`, tensor data borrowed (zero-copy). Writing it unchanged
    /// reproduces a file written by gguf-py or llama.cpp byte for byte (as long as the source has zero padding).
    pub fn from_file(f: &'a GgufFile) -> Result<GgufWriter<'a>, GgufError> {
        let mut w = GgufWriter::new();
        for (k, v) in f.metadata() {
            w.add_metadata(k, v.clone());
        }
        for t in f.tensors() {
            w.add_tensor(&t.name, &t.dims, t.ty, f.tensor_data(t))?;
        }
        Ok(w)
    }

    /// Set `general.alignment` (bytes; a power of two that fits in u32). Errors: [`GgufError::InvalidInput`].
    pub fn set_alignment(&mut self, alignment: u64) -> Result<(), GgufError> {
        match u32::try_from(alignment) {
            Ok(a) if a.is_power_of_two() => {
                self.add_metadata(ALIGNMENT_KEY, MetaValue::U32(a));
                Ok(())
            }
            _ => Err(invalid(format!("alignment {alignment} is not a power of two in u32 range"))),
        }
    }

    /// The alignment the file will use: `general.alignment` if set (validated when writing), else 32.
    pub fn alignment(&self) -> u64 {
        match self.get(ALIGNMENT_KEY) {
            Some(MetaValue::U32(a)) if a.is_power_of_two() => *a as u64,
            _ => DEFAULT_ALIGNMENT,
        }
    }

    /// Add a metadata pair, or replace the value of an existing key (which keeps its position).
    /// Keys and array element types are validated when writing.
    pub fn add_metadata(&mut self, key: &str, value: MetaValue) {
        match self.meta_index.get(key) {
            Some(&i) => self.metadata[i].1 = value,
            None => {
                self.meta_index.insert(key.to_owned(), self.metadata.len());
                self.metadata.push((key.to_owned(), value));
            }
        }
    }

    /// Remove a metadata key; returns its value if it was present.
    pub fn remove_metadata(&mut self, key: &str) -> Option<MetaValue> {
        let i = self.meta_index.remove(key)?;
        let (_, v) = self.metadata.remove(i);
        for idx in self.meta_index.values_mut() {
            if *idx > i {
                *idx -= 1;
            }
        }
        Some(v)
    }

    /// The value queued for `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The metadata queued, in order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// Queue a tensor. `dims` in ggml `ne` order (`dims[0]` = row length), 1..=4 dims, none zero, `dims[0]` a
    /// multiple of the type's block size; `data.len()` must equal the size those imply.
    ///
    /// Errors: [`GgufError::InvalidInput`] naming the tensor (bad dims, size mismatch, duplicate name).
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<(), GgufError> {
        let data = data.into();
        if self.tensor_index.contains_key(name) {
            return Err(invalid(format!("tensor {name:?} added twice")));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(invalid(format!("tensor {name:?}: {} dims (must be 1..={MAX_DIMS})", dims.len())));
        }
        if dims.contains(&0) {
            return Err(invalid(format!("tensor {name:?}: zero dimension in {dims:?}")));
        }
        let size = data_size(name, dims, ty)?;
        if size != data.len() as u64 {
            return Err(invalid(format!(
                "tensor {name:?}: {} bytes of data, but dims {dims:?} of {ty} need {size}",
                data.len()
            )));
        }
        self.tensor_index.insert(name.to_owned(), self.tensors.len());
        self.tensors.push(PendingTensor { name: name.to_owned(), dims: dims.to_vec(), ty, data });
        Ok(())
    }

    /// Number of tensors queued.
    pub fn n_tensors(&self) -> usize {
        self.tensors.len()
    }

    fn validate(&self) -> Result<u64, GgufError> {
        for (k, v) in &self.metadata {
            if k.is_empty() {
                return Err(invalid("empty metadata key".into()));
            }
            check_value(k, v, 0)?;
        }
        match self.get(ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(MetaValue::U32(a)) if a.is_power_of_two() => Ok(*a as u64),
            Some(v) => Err(invalid(format!("{ALIGNMENT_KEY} is {}, must be a UINT32 power of two", v.describe()))),
        }
    }

    /// Serialize the file to `w`. Returns the number of bytes written.
    ///
    /// Errors: [`GgufError::InvalidInput`] (empty key, array element of the wrong type, bad alignment),
    /// [`GgufError::Io`] from `w`.
    pub fn write_to(&self, w: &mut impl Write) -> Result<u64, GgufError> {
        let alignment = self.validate()?;
        let mut out = Counter { w, n: 0 };
        let io = |source| GgufError::Io { file: WRITER.into(), op: "write", source };
        out.put(&GGUF_MAGIC).map_err(io)?;
        out.put(&3u32.to_le_bytes()).map_err(io)?;
        out.put(&(self.tensors.len() as u64).to_le_bytes()).map_err(io)?;
        out.put(&(self.metadata.len() as u64).to_le_bytes()).map_err(io)?;
        for (k, v) in &self.metadata {
            put_str(&mut out, k).map_err(io)?;
            out.put(&v.value_type().id().to_le_bytes()).map_err(io)?;
            put_value(&mut out, v).map_err(io)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name).map_err(io)?;
            out.put(&(t.dims.len() as u32).to_le_bytes()).map_err(io)?;
            for d in &t.dims {
                out.put(&d.to_le_bytes()).map_err(io)?;
            }
            out.put(&t.ty.id().to_le_bytes()).map_err(io)?;
            out.put(&offset.to_le_bytes()).map_err(io)?;
            offset += (t.data.len() as u64).next_multiple_of(alignment);
        }
        out.pad(alignment).map_err(io)?;
        for t in &self.tensors {
            out.put(&t.data).map_err(io)?;
            out.pad(alignment).map_err(io)?;
        }
        out.w.flush().map_err(io)?;
        Ok(out.n)
    }

    /// The serialized file. Errors as [`GgufWriter::write_to`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }

    /// Write the file to `path` atomically: a temporary file in the same folder, flushed and synced, then
    /// renamed over `path`. On error the temporary file is removed and `path` is untouched. Returns the size.
    pub fn write_atomic(&self, path: impl AsRef<Path>) -> Result<u64, GgufError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let io = |op, source| GgufError::Io { file: name.clone(), op, source };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let base = path.file_name().ok_or_else(|| invalid(format!("{name}: not a file path")))?;
        let tmp = dir.join(format!(".{}.{}.tmp", base.to_string_lossy(), std::process::id()));
        let result = (|| {
            let f = File::create(&tmp).map_err(|e| io("create temporary file", e))?;
            let mut bw = BufWriter::with_capacity(1 << 20, f);
            let n = self.write_to(&mut bw).map_err(|e| match e {
                GgufError::Io { op, source, .. } => io(op, source),
                e => e,
            })?;
            let f = bw.into_inner().map_err(|e| io("write", e.into_error()))?;
            f.sync_all().map_err(|e| io("sync", e))?;
            std::fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
            Ok(n)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// The exact size in bytes of the GGUF v3 file that [`GgufWriter::write_to`] would write for `metadata` (in
/// order) and tensors given as `(name, dims, type)` without their data: header, key-value pairs, tensor infos,
/// padding to the alignment (`general.alignment` in `metadata`, else 32) and every tensor's data padded to it.
///
/// Lets a caller (e.g. the sub-network search) know a file's size without building its tensors.
///
/// Errors: [`GgufError::InvalidInput`] for the problems [`GgufWriter::add_tensor`] and
/// [`GgufWriter::write_to`] reject (bad dims, row length not a whole number of blocks, bad alignment, ...).
pub fn predict_file_size<S: AsRef<str>>(
    metadata: &[(String, MetaValue)],
    tensors: &[(S, Vec<u64>, GgmlType)],
) -> Result<u64, GgufError> {
    let mut w = GgufWriter::new();
    for (k, v) in metadata {
        w.add_metadata(k, v.clone());
    }
    let alignment = w.validate()?;
    let mut sink = std::io::sink();
    let mut out = Counter { w: &mut sink, n: 0 };
    let io = |source| GgufError::Io { file: WRITER.into(), op: "count", source };
    out.n = 4 + 4 + 8 + 8;
    for (k, v) in &w.metadata {
        put_str(&mut out, k).map_err(io)?;
        out.n += 4;
        put_value(&mut out, v).map_err(io)?;
    }
    let mut data = 0u64;
    for (name, dims, ty) in tensors {
        let name = name.as_ref();
        // Same checks as add_tensor (with an empty buffer replaced by the size they imply).
        if dims.is_empty() || dims.len() > MAX_DIMS || dims.contains(&0) {
            return Err(invalid(format!("tensor {name:?}: bad dims {dims:?} (1..={MAX_DIMS} dims, none zero)")));
        }
        let size = data_size(name, dims, *ty)?;
        put_str(&mut out, name).map_err(io)?;
        out.n += 4 + 8 * dims.len() as u64 + 4 + 8;
        data += size.next_multiple_of(alignment);
    }
    Ok(out.n.next_multiple_of(alignment) + data)
}

/// Check that every element of an array has the declared element type (recursively).
fn check_value(key: &str, v: &MetaValue, depth: usize) -> Result<(), GgufError> {
    if let MetaValue::Array(a) = v {
        if depth >= super::reader::MAX_ARRAY_DEPTH {
            return Err(invalid(format!("key {key:?}: arrays nested too deep")));
        }
        if let Some((i, t)) = a.mismatched_element() {
            return Err(invalid(format!("key {key:?}: array of {} has element {i} of type {t}", a.elem_type)));
        }
        for e in a.iter().filter(|e| e.value_type() == super::GgufValueType::Array) {
            check_value(key, &e, depth + 1)?;
        }
    }
    Ok(())
}

/// A writer that counts bytes and pads.
struct Counter<'w, W: Write> {
    w: &'w mut W,
    n: u64,
}

impl<W: Write> Counter<'_, W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.w.write_all(b)?;
        self.n += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, alignment: u64) -> std::io::Result<()> {
        const ZEROS: [u8; 64] = [0; 64];
        let mut n = self.n.next_multiple_of(alignment) - self.n;
        while n > 0 {
            let k = n.min(64);
            self.put(&ZEROS[..k as usize])?;
            n -= k;
        }
        Ok(())
    }
}

fn put_str<W: Write>(out: &mut Counter<'_, W>, s: &str) -> std::io::Result<()> {
    out.put(&(s.len() as u64).to_le_bytes())?;
    out.put(s.as_bytes())
}

fn put_value<W: Write>(out: &mut Counter<'_, W>, v: &MetaValue) -> std::io::Result<()> {
    match v {
        MetaValue::U8(x) => out.put(&x.to_le_bytes()),
        MetaValue::I8(x) => out.put(&x.to_le_bytes()),
        MetaValue::U16(x) => out.put(&x.to_le_bytes()),
        MetaValue::I16(x) => out.put(&x.to_le_bytes()),
        MetaValue::U32(x) => out.put(&x.to_le_bytes()),
        MetaValue::I32(x) => out.put(&x.to_le_bytes()),
        MetaValue::U64(x) => out.put(&x.to_le_bytes()),
        MetaValue::I64(x) => out.put(&x.to_le_bytes()),
        MetaValue::F32(x) => out.put(&x.to_le_bytes()),
        MetaValue::F64(x) => out.put(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.put(&[*x as u8]),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(a) => {
            out.put(&a.elem_type.id().to_le_bytes())?;
            out.put(&(a.len() as u64).to_le_bytes())?;
            for e in a.iter() {
                put_value(out, &e)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn predicted_size_equals_written_size() {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", MetaValue::String("llama".into()));
        w.add_metadata("a.list", MetaValue::u32_array(&[1, 2, 3]));
        w.add_metadata("s.list", MetaValue::string_array(&["x", "yz"]));
        w.add_tensor("a", &[64, 3], GgmlType::Q8_0, vec![0u8; 2 * 3 * 34]).unwrap();
        w.add_tensor("b", &[5], GgmlType::F32, vec![0u8; 20]).unwrap();
        w.add_tensor("c", &[32, 2], GgmlType::Q4_1, vec![0u8; 40]).unwrap();
        let infos = vec![
            ("a", vec![64, 3], GgmlType::Q8_0),
            ("b", vec![5], GgmlType::F32),
            ("c", vec![32, 2], GgmlType::Q4_1),
        ];
        let n = w.to_bytes().unwrap().len() as u64;
        assert_eq!(predict_file_size(w.metadata(), &infos).unwrap(), n);
        // Hand count for one key and no tensors: 24 header + (8+1 key, 4 type, 4 value) = 41 -> padded to 64.
        let md = vec![("k".to_string(), MetaValue::U32(7))];
        assert_eq!(predict_file_size::<&str>(&md, &[]).unwrap(), 64);
        // With alignment 64 the data padding changes too.
        w.set_alignment(64).unwrap();
        let n = w.to_bytes().unwrap().len() as u64;
        assert_eq!(predict_file_size(w.metadata(), &infos).unwrap(), n);
        let e = predict_file_size(&md, &[("q", vec![33], GgmlType::Q4_0)]).unwrap_err().to_string();
        assert!(e.contains("row length 33 is not a multiple of the Q4_0 block size 32"), "{e}");
    }
}
