//! GGUF reader: parses the header, metadata and tensor infos of a memory-mapped (or in-memory) file and gives
//! zero-copy views of the tensor data.
//!
//! Layout (ggml `docs/gguf.md`, little-endian): magic `GGUF`, `u32` version, `u64` tensor count, `u64` metadata
//! count, metadata pairs (`string` key, `u32` value type, value), tensor infos (`string` name, `u32` n_dims,
//! `u64` × n_dims dims, `u32` ggml type, `u64` offset relative to the data section), padding to
//! `general.alignment` (default 32), the data section. A `string` is a `u64` byte length and UTF-8 bytes; an
//! array is a `u32` element type, a `u64` count and the elements.
//!
//! Every count and length is checked against the bytes left in the file before anything is allocated, so a
//! hostile file cannot make the reader allocate more than a small constant factor of its own size (an array
//! element takes at least 1 byte on disk and a [`MetaValue`] 40 bytes in memory).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::error::GgufError;
use super::types::GgmlType;
use super::value::{GgufValueType, MetaArray, MetaValue};

/// GGUF magic, the first four bytes of every file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Key that sets the alignment (a `u32` power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Maximum number of tensor dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Maximum nesting depth of arrays the reader accepts (real files use 1).
pub const MAX_ARRAY_DEPTH: usize = 16;

/// One tensor's entry in the tensor-info table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name (e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml `ne` order: `dims[0]` is the row length (contiguous), `dims[1]` the number of rows, ...
    /// A PyTorch/NumPy shape is this reversed.
    pub dims: Vec<u64>,
    /// Data type of the elements.
    pub ty: GgmlType,
    /// Byte offset of the data relative to the start of the data section ([`GgufFile::data_offset`]).
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (product of the dims; saturates at `u64::MAX`, which the reader rejects at open).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Number of rows: `n_elements / dims[0]` (0 for a tensor with no dims or `dims[0] == 0`).
    pub fn n_rows(&self) -> u64 {
        match self.dims.first() {
            Some(&d0) if d0 > 0 => self.n_elements() / d0,
            _ => 0,
        }
    }

    /// Bytes of one row: `dims[0] / block_elems * block_bytes` of the type.
    pub fn row_bytes(&self) -> u64 {
        let (be, bb) = self.ty.block_size();
        self.dims.first().map_or(0, |&d0| (d0 / be as u64).saturating_mul(bb as u64))
    }

    /// Bytes of the whole tensor data (`row_bytes * n_rows`, saturating).
    pub fn n_bytes(&self) -> u64 {
        self.row_bytes().saturating_mul(self.n_rows())
    }

    /// The dims reversed, i.e. the shape as PyTorch, NumPy and gguf-py's `GGUFReader` data arrays use it.
    pub fn shape_rev(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// Where the bytes of an open file live.
enum Storage {
    /// A read-only memory map of the file.
    Mmap(memmap2::Mmap),
    /// Bytes held in memory, stored in `u64` words so that the start is 8-byte aligned (typed views need it).
    Owned { words: Vec<u64>, len: usize },
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned { words, len } => {
                // SAFETY: `words` holds at least `len` initialized bytes; u8 has no alignment requirement.
                unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, *len) }
            }
        }
    }

    fn from_vec(bytes: Vec<u8>) -> Storage {
        let len = bytes.len();
        let mut words = vec![0u64; len.div_ceil(8)];
        // SAFETY: `words` has room for `len.div_ceil(8) * 8 >= len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr() as *mut u8, len) };
        Storage::Owned { words, len }
    }
}

/// An open GGUF file (v2 or v3, little-endian): metadata and tensor infos parsed, tensor data viewed in place.
///
/// Opened with [`GgufFile::open`] (memory map, nothing is copied) or [`GgufFile::from_bytes`]. Every tensor's data
/// range was checked at open time to lie inside the file and to be aligned, so [`GgufFile::tensor_data`] never
/// fails for a tensor of this file.
pub struct GgufFile {
    storage: Storage,
    path: PathBuf,
    name: String,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Open and parse the file at `path` through a read-only memory map.
    ///
    /// Errors: [`GgufError::Io`] if it cannot be opened or mapped; any format error (see [`GgufError`]).
    /// As with every memory map, the file must not be truncated or modified by another process while open.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let io = |op, source| GgufError::Io { file: name.clone(), op, source };
        // Stat the path before opening it: opening a FIFO blocks until something writes to it.
        let meta = std::fs::metadata(path).map_err(|e| io("open", e))?;
        if meta.is_dir() {
            let e = std::io::Error::new(std::io::ErrorKind::IsADirectory, "it is a directory, not a GGUF file");
            return Err(io("open", e));
        }
        if !meta.is_file() {
            // A FIFO or device would block or never end: a GGUF is memory-mapped from a regular file.
            let e = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file (a pipe or device?)");
            return Err(io("open", e));
        }
        let file = File::open(path).map_err(|e| io("open", e))?;
        let len = meta.len();
        let storage = if len == 0 {
            Storage::from_vec(Vec::new())
        } else {
            // SAFETY: read-only map; the documented contract is that the file is not modified while open.
            Storage::Mmap(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io("memory-map", e))?)
        };
        Self::parse(storage, path.to_path_buf(), name)
    }

    /// Parse a file held in memory (tests, fuzzing, files received over a link). `name` is used in errors.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<GgufFile, GgufError> {
        Self::parse(Storage::from_vec(bytes), PathBuf::from(name), name.to_owned())
    }

    fn parse(storage: Storage, path: PathBuf, name: String) -> Result<GgufFile, GgufError> {
        let parsed = Parser { buf: storage.bytes(), pos: 0, file: &name }.parse()?;
        Ok(GgufFile {
            storage,
            path,
            name,
            version: parsed.version,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            meta_index: parsed.metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect(),
            metadata: parsed.metadata,
            tensor_index: parsed.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect(),
            tensors: parsed.tensors,
        })
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of every tensor (bytes; `general.alignment` or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset of the data section (tensor offsets are relative to it).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// File size in bytes.
    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// The path given to [`GgufFile::open`] (or the name given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file name as used in error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// All metadata pairs, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn missing(&self, key: &str) -> GgufError {
        GgufError::MissingKey { file: self.name.clone(), key: key.to_owned() }
    }

    fn wrong(&self, key: &str, expected: &'static str, v: &MetaValue) -> GgufError {
        GgufError::WrongType { file: self.name.clone(), key: key.to_owned(), expected, found: v.describe() }
    }

    fn typed<T>(
        &self,
        key: &str,
        expected: &'static str,
        f: impl Fn(&MetaValue) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| self.wrong(key, expected, v)),
        }
    }

    /// `key` as `u32`: any integer type whose value fits. Errors: missing key, wrong type or out of range.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.opt_u32(key)?.ok_or_else(|| self.missing(key))
    }

    /// `key` as `u64`: any non-negative integer. Errors: missing key, wrong type or negative.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.opt_u64(key)?.ok_or_else(|| self.missing(key))
    }

    /// `key` as `f32` (`FLOAT32`, or `FLOAT64` narrowed). Errors: missing key or wrong type.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.opt_f32(key)?.ok_or_else(|| self.missing(key))
    }

    /// `key` as a string. Errors: missing key or wrong type.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// `key` as a bool. Errors: missing key or wrong type.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.opt_bool(key)?.ok_or_else(|| self.missing(key))
    }

    /// `key` as an array. Errors: missing key or wrong type.
    pub fn get_array(&self, key: &str) -> Result<&MetaArray, GgufError> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(v) => v.as_array().ok_or_else(|| self.wrong(key, "ARRAY", v)),
        }
    }

    /// Like [`GgufFile::get_u32`], `Ok(None)` when the key is missing.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.typed(key, "an integer in u32 range", |v| v.as_u32())
    }

    /// Like [`GgufFile::get_u64`], `Ok(None)` when the key is missing.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "a non-negative integer", |v| v.as_u64())
    }

    /// Like [`GgufFile::get_f32`], `Ok(None)` when the key is missing.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "FLOAT32 or FLOAT64", |v| v.as_f32())
    }

    /// Like [`GgufFile::get_str`], `Ok(None)` when the key is missing.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.wrong(key, "STRING", v)),
        }
    }

    /// Like [`GgufFile::get_bool`], `Ok(None)` when the key is missing.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "BOOL", |v| v.as_bool())
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor's data (`t.n_bytes()` bytes), without copying.
    ///
    /// For a `TensorInfo` of this file the range was checked at open. For any other `TensorInfo` whose range
    /// falls outside the file, returns an empty slice rather than panicking.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = self.data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes()));
        match (start, end) {
            (Some(s), Some(e)) => self.bytes().get(s as usize..e as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    fn view<T>(&self, t: &TensorInfo, want: GgmlType) -> Result<&[T], GgufError> {
        let bad = |reason: String| GgufError::BadView { file: self.name.clone(), tensor: t.name.clone(), reason };
        if t.ty != want {
            return Err(bad(format!("is {}, not {want}", t.ty)));
        }
        if cfg!(target_endian = "big") {
            return Err(bad("typed views need a little-endian host".into()));
        }
        let data = self.tensor_data(t);
        if data.len() as u64 != t.n_bytes() {
            return Err(bad("data range lies outside the file".into()));
        }
        let size = std::mem::size_of::<T>();
        if !(data.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) || !data.len().is_multiple_of(size) {
            return Err(bad(format!("data at absolute offset {} is not {}-byte aligned", self.data_offset + t.offset, size)));
        }
        // SAFETY: aligned, in bounds, length a multiple of size_of::<T>(); T is f32 or f16, for which every bit
        // pattern is valid; the data is little-endian and so is the host (checked above).
        Ok(unsafe { std::slice::from_raw_parts(data.as_ptr() as *const T, data.len() / size) })
    }

    /// The data of an `F32` tensor as `&[f32]` (`n_elements` values, row-major in ggml `ne` order), zero-copy.
    ///
    /// Errors: [`GgufError::BadView`] if the tensor is not F32 or its data is not 4-byte aligned in memory
    /// (only possible with `general.alignment` < 4).
    pub fn tensor_f32(&self, t: &TensorInfo) -> Result<&[f32], GgufError> {
        self.view(t, GgmlType::F32)
    }

    /// The data of an `F16` tensor as `&[half::f16]`, zero-copy. Errors as [`GgufFile::tensor_f32`].
    pub fn tensor_f16(&self, t: &TensorInfo) -> Result<&[half::f16], GgufError> {
        self.view(t, GgmlType::F16)
    }
}

/// Result of parsing.
struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorInfo>,
}

/// A cursor over the file's bytes that turns every short read into [`GgufError::Truncated`].
struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Parser<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                file: self.file.to_owned(),
                offset: self.pos as u64,
                what: what(),
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Read a count and check that `count * min_each` bytes can follow.
    fn count(&mut self, min_each: u64, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        let offset = self.pos as u64;
        let count = self.u64(&|| format!("{} count", what()))?;
        if count.checked_mul(min_each).is_none_or(|b| b > self.remaining()) {
            return Err(GgufError::CountTooLarge {
                file: self.file.to_owned(),
                offset,
                what: what(),
                count,
                remaining: self.remaining(),
                min_each,
            });
        }
        Ok(count)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let offset = self.pos as u64;
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(GgufError::StringTooLong {
                file: self.file.to_owned(),
                offset,
                len,
                remaining: self.remaining(),
                what: what(),
            });
        }
        let start = self.pos as u64;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 { file: self.file.to_owned(), offset: start, what: what() }),
        }
    }

    fn value_type(&mut self, key: &str) -> Result<GgufValueType, GgufError> {
        let offset = self.pos as u64;
        let id = self.u32(&|| format!("value type of {key:?}"))?;
        GgufValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            file: self.file.to_owned(),
            offset,
            id,
            what: format!("key {key:?}"),
        })
    }

    fn value(&mut self, ty: GgufValueType, key: &str, depth: usize) -> Result<MetaValue, GgufError> {
        let what = || format!("value of {key:?}");
        use GgufValueType as T;
        Ok(match ty {
            T::U8 => MetaValue::U8(self.array::<1>(&what)?[0]),
            T::I8 => MetaValue::I8(self.array::<1>(&what)?[0] as i8),
            T::U16 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            T::I16 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            T::U32 => MetaValue::U32(u32::from_le_bytes(self.array(&what)?)),
            T::I32 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            T::U64 => MetaValue::U64(u64::from_le_bytes(self.array(&what)?)),
            T::I64 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            T::F32 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            T::F64 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            T::Bool => {
                // The spec allows only 0 and 1; gguf-py and llama.cpp read any non-zero byte as true.
                MetaValue::Bool(self.array::<1>(&what)?[0] != 0)
            }
            T::String => MetaValue::String(self.string(&what)?),
            T::Array => {
                let offset = self.pos as u64;
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestingTooDeep {
                        file: self.file.to_owned(),
                        offset,
                        key: key.to_owned(),
                        max: MAX_ARRAY_DEPTH,
                    });
                }
                let elem_type = self.value_type(key)?;
                let n = self.count(elem_type.min_size(), &|| format!("array {key:?} element"))?;
                if let Some(size) = elem_type.fixed_size() {
                    // Scalars are converted from the bytes straight into a packed vector (no value per element).
                    let bytes = self.take(n * size, &|| format!("array {key:?} elements"))?;
                    return Ok(MetaValue::Array(MetaArray::from_le_bytes(elem_type, bytes)));
                }
                let mut values = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    values.push(self.value(elem_type, key, depth + 1)?);
                }
                MetaValue::Array(MetaArray::new(elem_type, values))
            }
        })
    }

    fn parse(mut self) -> Result<Parsed, GgufError> {
        let file = self.file.to_owned();
        let magic: [u8; 4] = self.array(&|| "magic".into())?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic { file, found: magic });
        }
        let version = self.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            let hint = if version == 1 {
                " (GGUF v1 used 32-bit counts; convert the file with a current llama.cpp)"
            } else if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                " (the file looks big-endian; only little-endian files are supported)"
            } else {
                ""
            };
            return Err(GgufError::UnsupportedVersion { file, version, hint });
        }
        // A tensor info takes at least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset) bytes.
        let n_tensors = self.u64(&|| "tensor count".into())?;
        // A metadata pair takes at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes.
        let kv_offset = self.pos as u64;
        let n_kv = self.u64(&|| "metadata count".into())?;
        let after_counts = self.remaining();
        for (what, count, min_each, offset) in
            [("metadata pair", n_kv, 14u64, kv_offset), ("tensor info", n_tensors, 32, kv_offset - 8)]
        {
            if count.checked_mul(min_each).is_none_or(|b| b > after_counts) {
                return Err(GgufError::CountTooLarge {
                    file,
                    offset,
                    what: what.into(),
                    count,
                    remaining: after_counts,
                    min_each,
                });
            }
        }
        if (n_kv * 14).checked_add(n_tensors * 32).is_none_or(|b| b > after_counts) {
            return Err(GgufError::CountTooLarge {
                file,
                offset: kv_offset - 8,
                what: "tensor info (after the metadata pairs)".into(),
                count: n_tensors,
                remaining: after_counts - n_kv * 14,
                min_each: 32,
            });
        }

        let mut metadata: Vec<(String, MetaValue)> = Vec::with_capacity(n_kv as usize);
        let mut seen: HashMap<String, ()> = HashMap::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let offset = self.pos as u64;
            let key = self.string(&|| format!("key of metadata pair {i}"))?;
            if key.is_empty() {
                return Err(GgufError::EmptyKey { file, offset });
            }
            if seen.insert(key.clone(), ()).is_some() {
                return Err(GgufError::DuplicateKey { file, offset, key });
            }
            let ty = self.value_type(&key)?;
            let value = self.value(ty, &key, 0)?;
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some((_, MetaValue::U32(0))) => {
                return Err(GgufError::BadAlignment { file, reason: "is 0".into() });
            }
            Some((_, MetaValue::U32(a))) if !a.is_power_of_two() => {
                return Err(GgufError::BadAlignment { file, reason: format!("{a} is not a power of two") });
            }
            Some((_, MetaValue::U32(a))) => *a as u64,
            Some((_, v)) => {
                return Err(GgufError::BadAlignment {
                    file,
                    reason: format!("is {}, must be UINT32", v.describe()),
                });
            }
        };

        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
        let mut tensor_names: HashMap<String, ()> = HashMap::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let offset = self.pos as u64;
            let name = self.string(&|| format!("name of tensor {i}"))?;
            if tensor_names.insert(name.clone(), ()).is_some() {
                return Err(GgufError::DuplicateTensor { file, offset, tensor: name });
            }
            let dims_offset = self.pos as u64;
            let n_dims = self.u32(&|| format!("n_dims of tensor {name:?}"))?;
            if n_dims == 0 || n_dims as usize > MAX_DIMS {
                return Err(GgufError::BadDimCount { file, offset: dims_offset, tensor: name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(self.u64(&|| format!("dim {d} of tensor {name:?}"))?);
            }
            let ty_offset = self.pos as u64;
            let ty_id = self.u32(&|| format!("type of tensor {name:?}"))?;
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownTensorType {
                file: file.clone(),
                offset: ty_offset,
                tensor: name.clone(),
                id: ty_id,
            })?;
            let data_off = self.u64(&|| format!("data offset of tensor {name:?}"))?;
            if dims.contains(&0) {
                return Err(GgufError::ZeroDim { file, offset: dims_offset, tensor: name, dims });
            }
            let n_elem = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let (be, bb) = ty.block_size();
            if dims[0] % be as u64 != 0 {
                return Err(GgufError::RowNotBlockMultiple {
                    file,
                    offset: dims_offset,
                    tensor: name,
                    ty,
                    ne0: dims[0],
                    block: be,
                });
            }
            let n_bytes = n_elem.and_then(|n| (n / be as u64).checked_mul(bb as u64));
            if n_bytes.is_none() {
                return Err(GgufError::SizeOverflow { file, offset: dims_offset, tensor: name, dims, ty });
            }
            tensors.push(TensorInfo { name, dims, ty, offset: data_off });
        }

        let end_of_infos = self.pos as u64;
        let data_offset = end_of_infos.div_ceil(alignment) * alignment; // cannot overflow: pos < 2^63
        let file_size = self.buf.len() as u64;
        for t in &tensors {
            if t.offset % alignment != 0 {
                return Err(GgufError::MisalignedTensor {
                    file,
                    tensor: t.name.clone(),
                    offset: t.offset,
                    alignment,
                });
            }
            let size = t.n_bytes();
            let start = data_offset.saturating_add(t.offset);
            if start.checked_add(size).is_none_or(|end| end > file_size) {
                return Err(GgufError::TensorOutOfBounds { file, tensor: t.name.clone(), start, size, file_size });
            }
        }
        Ok(Parsed { version, alignment, data_offset, metadata, tensors })
    }
}
