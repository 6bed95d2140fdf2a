//! Errors of the GGUF reader and writer.

use super::GgmlType;

/// Four magic bytes as one line: hex, and the bytes as text where printable (`7f 45 4c 46 ("\x7fELF")`).
fn magic_text(b: &[u8; 4]) -> String {
    let hex = b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ");
    format!("{hex} ({:?})", String::from_utf8_lossy(b))
}

/// Everything that can go wrong reading or writing a GGUF file.
///
/// Every variant names the file (`file`: the path given to [`super::GgufFile::open`], the name given to
/// [`super::GgufFile::from_bytes`], or `"<writer>"` for the writer) and, where the problem sits at a place in
/// the file, the byte `offset` from the start of the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened, mapped, read or written.
    #[error("{file}: {op}: {source}")]
    Io {
        /// File name.
        file: String,
        /// What was being done ("open", "memory-map", "write", "rename", ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file ends before a field that the format requires.
    #[error("{file}: truncated at offset {offset}: {what} needs {need} bytes, only {have} left")]
    Truncated {
        /// File name.
        file: String,
        /// Where the field starts.
        offset: u64,
        /// The field being read.
        what: String,
        /// Bytes the field needs.
        need: u64,
        /// Bytes left in the file.
        have: u64,
    },
    /// The first four bytes are not `GGUF`.
    #[error("{file}: bad magic {} at offset 0 (expected 47 47 55 46, \"GGUF\"): not a GGUF file", magic_text(.found))]
    BadMagic {
        /// File name.
        file: String,
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A GGUF version this reader does not support (it reads 2 and 3, little-endian).
    #[error("{file}: unsupported GGUF version {version} at offset 4 (supported: 2, 3){hint}")]
    UnsupportedVersion {
        /// File name.
        file: String,
        /// The version field as read (little-endian).
        version: u32,
        /// Extra explanation (e.g. that the file looks big-endian).
        hint: &'static str,
    },
    /// A count (metadata pairs, tensors, array elements) that cannot fit in the rest of the file.
    #[error("{file}: {what} count {count} at offset {offset} is larger than the file allows ({remaining} bytes left, at least {min_each} per item)")]
    CountTooLarge {
        /// File name.
        file: String,
        /// Where the count is stored.
        offset: u64,
        /// What is being counted.
        what: String,
        /// The count read.
        count: u64,
        /// Bytes left after the count.
        remaining: u64,
        /// Minimum bytes each item takes.
        min_each: u64,
    },
    /// A string whose length field is larger than the rest of the file.
    #[error("{file}: string length {len} at offset {offset} is larger than the {remaining} bytes left in the file ({what})")]
    StringTooLong {
        /// File name.
        file: String,
        /// Where the length is stored.
        offset: u64,
        /// The length read.
        len: u64,
        /// Bytes left after the length.
        remaining: u64,
        /// Which string.
        what: String,
    },
    /// A string that is not valid UTF-8.
    #[error("{file}: string at offset {offset} is not valid UTF-8 ({what})")]
    InvalidUtf8 {
        /// File name.
        file: String,
        /// Where the string bytes start.
        offset: u64,
        /// Which string.
        what: String,
    },
    /// A metadata value type id outside 0..=12.
    #[error("{file}: unknown metadata value type {id} at offset {offset} ({what}; known: 0..=12)")]
    UnknownValueType {
        /// File name.
        file: String,
        /// Where the type id is stored.
        offset: u64,
        /// The id read.
        id: u32,
        /// Which key.
        what: String,
    },
    /// Arrays nested deeper than the reader allows.
    #[error("{file}: arrays nested more than {max} deep at offset {offset} (key {key:?})")]
    NestingTooDeep {
        /// File name.
        file: String,
        /// Where the innermost array starts.
        offset: u64,
        /// The key.
        key: String,
        /// The maximum depth.
        max: usize,
    },
    /// A metadata key of length 0.
    #[error("{file}: empty metadata key at offset {offset}")]
    EmptyKey {
        /// File name.
        file: String,
        /// Where the key is stored.
        offset: u64,
    },
    /// The same metadata key twice.
    #[error("{file}: duplicate metadata key {key:?} at offset {offset}")]
    DuplicateKey {
        /// File name.
        file: String,
        /// Where the second occurrence starts.
        offset: u64,
        /// The key.
        key: String,
    },
    /// `general.alignment` that is not a u32, is 0, or is not a power of two.
    #[error("{file}: bad general.alignment: {reason}")]
    BadAlignment {
        /// File name.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor type id that ggml does not define.
    #[error("{file}: tensor {tensor:?}: unknown ggml type id {id} at offset {offset}")]
    UnknownTensorType {
        /// File name.
        file: String,
        /// Where the type id is stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// The id read.
        id: u32,
    },
    /// A tensor with more than 4 dimensions (`GGML_MAX_DIMS`) or none.
    #[error("{file}: tensor {tensor:?}: {n_dims} dimensions at offset {offset} (must be 1..=4)")]
    BadDimCount {
        /// File name.
        file: String,
        /// Where the count is stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// The count read.
        n_dims: u32,
    },
    /// A tensor with a dimension of 0.
    #[error("{file}: tensor {tensor:?}: zero dimension in {dims:?} at offset {offset}")]
    ZeroDim {
        /// File name.
        file: String,
        /// Where the dimensions are stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// The dimensions read (ggml `ne` order).
        dims: Vec<u64>,
    },
    /// A tensor whose element count or byte size overflows 64 bits.
    #[error("{file}: tensor {tensor:?}: element count or byte size of dims {dims:?} ({ty}) overflows 64 bits (offset {offset})")]
    SizeOverflow {
        /// File name.
        file: String,
        /// Where the dimensions are stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// The dimensions.
        dims: Vec<u64>,
        /// The tensor type.
        ty: GgmlType,
    },
    /// A tensor whose row length is not a whole number of blocks of its type.
    #[error("{file}: tensor {tensor:?}: row length {ne0} is not a multiple of the {ty} block size {block} (offset {offset})")]
    RowNotBlockMultiple {
        /// File name.
        file: String,
        /// Where the dimensions are stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// The tensor type.
        ty: GgmlType,
        /// `dims[0]`.
        ne0: u64,
        /// Elements per block.
        block: usize,
    },
    /// A tensor data offset that is not a multiple of the alignment.
    #[error("{file}: tensor {tensor:?}: data offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        /// File name.
        file: String,
        /// The tensor.
        tensor: String,
        /// The offset, relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor whose data does not lie inside the file.
    #[error("{file}: tensor {tensor:?}: data [{start}, {start}+{size}) (absolute offsets) lies outside the file of {file_size} bytes")]
    TensorOutOfBounds {
        /// File name.
        file: String,
        /// The tensor.
        tensor: String,
        /// Absolute start of the data (data section offset + tensor offset), saturating.
        start: u64,
        /// Bytes of the tensor.
        size: u64,
        /// File size.
        file_size: u64,
    },
    /// Two tensors with the same name.
    #[error("{file}: duplicate tensor name {tensor:?} at offset {offset}")]
    DuplicateTensor {
        /// File name.
        file: String,
        /// Where the second occurrence starts.
        offset: u64,
        /// The tensor.
        tensor: String,
    },
    /// A metadata key that is required but missing.
    #[error("{file}: missing metadata key {key:?}")]
    MissingKey {
        /// File name.
        file: String,
        /// The key.
        key: String,
    },
    /// A metadata value of the wrong type (or out of range for the requested type).
    #[error("{file}: metadata key {key:?} is {found}, expected {expected}")]
    WrongType {
        /// File name.
        file: String,
        /// The key.
        key: String,
        /// What the caller asked for.
        expected: &'static str,
        /// What the file holds (type, and value when it is a scalar out of range).
        found: String,
    },
    /// A typed view of a tensor of another type, or of misaligned data.
    #[error("{file}: tensor {tensor:?}: {reason}")]
    BadView {
        /// File name.
        file: String,
        /// The tensor.
        tensor: String,
        /// Why the view is impossible.
        reason: String,
    },
    /// The writer was given inconsistent input (data size vs. shape, array element types, ...).
    #[error("{file}: {reason}")]
    InvalidInput {
        /// File name (`"<writer>"` for the writer).
        file: String,
        /// What is wrong.
        reason: String,
    },
}

impl GgufError {
    /// A short, stable name of the variant (used by tests and `--json` output).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Truncated { .. } => "truncated",
            Self::BadMagic { .. } => "bad_magic",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::CountTooLarge { .. } => "count_too_large",
            Self::StringTooLong { .. } => "string_too_long",
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::UnknownValueType { .. } => "unknown_value_type",
            Self::NestingTooDeep { .. } => "nesting_too_deep",
            Self::EmptyKey { .. } => "empty_key",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::BadAlignment { .. } => "bad_alignment",
            Self::UnknownTensorType { .. } => "unknown_tensor_type",
            Self::BadDimCount { .. } => "bad_dim_count",
            Self::ZeroDim { .. } => "zero_dim",
            Self::SizeOverflow { .. } => "size_overflow",
            Self::RowNotBlockMultiple { .. } => "row_not_block_multiple",
            Self::MisalignedTensor { .. } => "misaligned_tensor",
            Self::TensorOutOfBounds { .. } => "tensor_out_of_bounds",
            Self::DuplicateTensor { .. } => "duplicate_tensor",
            Self::MissingKey { .. } => "missing_key",
            Self::WrongType { .. } => "wrong_type",
            Self::BadView { .. } => "bad_view",
            Self::InvalidInput { .. } => "invalid_input",
        }
    }
}

