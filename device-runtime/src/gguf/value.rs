//! GGUF metadata values: the 13 value types of the spec and typed accessors.
//!
//! Source: ggml `docs/gguf.md` (`enum gguf_metadata_value_type`) and gguf-py `GGUFValueType`.

use std::fmt;

/// A metadata value type, with its on-disk id (`u32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum GgufValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl GgufValueType {
    /// The type with on-disk id `id` (0..=12), or `None`.
    pub fn from_id(id: u32) -> Option<GgufValueType> {
        use GgufValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// On-disk id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Name as gguf-py prints it (`UINT32`, `STRING`, ...).
    pub fn name(self) -> &'static str {
        use GgufValueType::*;
        match self {
            U8 => "UINT8",
            I8 => "INT8",
            U16 => "UINT16",
            I16 => "INT16",
            U32 => "UINT32",
            I32 => "INT32",
            F32 => "FLOAT32",
            Bool => "BOOL",
            String => "STRING",
            Array => "ARRAY",
            U64 => "UINT64",
            I64 => "INT64",
            F64 => "FLOAT64",
        }
    }

    /// Size in bytes of a scalar of this type; `None` for `String` and `Array` (variable size).
    pub fn fixed_size(self) -> Option<u64> {
        use GgufValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// Smallest number of bytes a value of this type takes in a file (8 for a string's length, 12 for an
    /// array's element type and count). Used to reject counts the rest of the file cannot hold.
    pub fn min_size(self) -> u64 {
        match self {
            GgufValueType::String => 8,
            GgufValueType::Array => 12,
            t => t.fixed_size().unwrap_or(1),
        }
    }
}

impl fmt::Display for GgufValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A homogeneous array value: the element type and the elements (each of that type; nested arrays allowed).
///
/// Scalar and string elements are stored packed (a `Vec<u8>` for a `UINT8` array, ...), so an array takes about
/// the bytes it takes in the file: a 5-million-element `UINT8` array is 5 MB, not 32 bytes per element.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaArray {
    /// Type of every element.
    pub elem_type: GgufValueType,
    items: Items,
}

/// The elements of a [`MetaArray`], packed by type; `Values` holds nested arrays and arrays built from
/// elements that do not all have the declared type (which the writer refuses).
#[derive(Clone, Debug, PartialEq)]
enum Items {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Values(Vec<MetaValue>),
}

macro_rules! pack {
    ($values:expr, $variant:ident) => {{
        let mut out = Vec::with_capacity($values.len());
        for v in &$values {
            match v {
                MetaValue::$variant(x) => out.push(x.clone()),
                _ => return MetaArray { elem_type: GgufValueType::$variant, items: Items::Values($values) },
            }
        }
        Items::$variant(out)
    }};
}

impl MetaArray {
    /// An array of `elem_type` holding `values`. Elements are packed when they all have `elem_type`; an array
    /// whose elements do not is kept as given (and refused by [`crate::gguf::GgufWriter`]).
    pub fn new(elem_type: GgufValueType, values: Vec<MetaValue>) -> MetaArray {
        use GgufValueType as T;
        let items = match elem_type {
            T::U8 => pack!(values, U8),
            T::I8 => pack!(values, I8),
            T::U16 => pack!(values, U16),
            T::I16 => pack!(values, I16),
            T::U32 => pack!(values, U32),
            T::I32 => pack!(values, I32),
            T::U64 => pack!(values, U64),
            T::I64 => pack!(values, I64),
            T::F32 => pack!(values, F32),
            T::F64 => pack!(values, F64),
            T::Bool => pack!(values, Bool),
            T::String => pack!(values, String),
            T::Array => Items::Values(values),
        };
        MetaArray { elem_type, items }
    }

    /// An array of the fixed-size type `elem_type` from its little-endian encoding (`bytes.len()` a multiple of
    /// the type's size; a trailing partial element is ignored). Panics for `STRING` and `ARRAY`.
    pub(crate) fn from_le_bytes(elem_type: GgufValueType, bytes: &[u8]) -> MetaArray {
        macro_rules! conv {
            ($t:ty, $n:expr) => {
                bytes.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size"))).collect()
            };
        }
        use GgufValueType as T;
        let items = match elem_type {
            T::U8 => Items::U8(bytes.to_vec()),
            T::I8 => Items::I8(bytes.iter().map(|&b| b as i8).collect()),
            T::Bool => Items::Bool(bytes.iter().map(|&b| b != 0).collect()),
            T::U16 => Items::U16(conv!(u16, 2)),
            T::I16 => Items::I16(conv!(i16, 2)),
            T::U32 => Items::U32(conv!(u32, 4)),
            T::I32 => Items::I32(conv!(i32, 4)),
            T::F32 => Items::F32(conv!(f32, 4)),
            T::U64 => Items::U64(conv!(u64, 8)),
            T::I64 => Items::I64(conv!(i64, 8)),
            T::F64 => Items::F64(conv!(f64, 8)),
            T::String | T::Array => panic!("from_le_bytes: {elem_type} has no fixed size"),
        };
        MetaArray { elem_type, items }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.items {
            Items::U8(v) => v.len(),
            Items::I8(v) => v.len(),
            Items::U16(v) => v.len(),
            Items::I16(v) => v.len(),
            Items::U32(v) => v.len(),
            Items::I32(v) => v.len(),
            Items::U64(v) => v.len(),
            Items::I64(v) => v.len(),
            Items::F32(v) => v.len(),
            Items::F64(v) => v.len(),
            Items::Bool(v) => v.len(),
            Items::String(v) => v.len(),
            Items::Values(v) => v.len(),
        }
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a value (strings and nested arrays are cloned); `None` past the end.
    pub fn get(&self, i: usize) -> Option<MetaValue> {
        Some(match &self.items {
            Items::U8(v) => MetaValue::U8(*v.get(i)?),
            Items::I8(v) => MetaValue::I8(*v.get(i)?),
            Items::U16(v) => MetaValue::U16(*v.get(i)?),
            Items::I16(v) => MetaValue::I16(*v.get(i)?),
            Items::U32(v) => MetaValue::U32(*v.get(i)?),
            Items::I32(v) => MetaValue::I32(*v.get(i)?),
            Items::U64(v) => MetaValue::U64(*v.get(i)?),
            Items::I64(v) => MetaValue::I64(*v.get(i)?),
            Items::F32(v) => MetaValue::F32(*v.get(i)?),
            Items::F64(v) => MetaValue::F64(*v.get(i)?),
            Items::Bool(v) => MetaValue::Bool(*v.get(i)?),
            Items::String(v) => MetaValue::String(v.get(i)?.clone()),
            Items::Values(v) => v.get(i)?.clone(),
        })
    }

    /// The elements as values, in order (see [`MetaArray::get`]).
    pub fn iter(&self) -> impl Iterator<Item = MetaValue> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// The elements of a string array, borrowed; `None` for other element types.
    pub fn as_strs(&self) -> Option<Vec<&str>> {
        match &self.items {
            Items::String(v) => Some(v.iter().map(String::as_str).collect()),
            Items::Values(v) => v.iter().map(MetaValue::as_str).collect(),
            _ => None,
        }
    }

    /// The first element whose type is not `elem_type`, with its index (only an array built by
    /// [`MetaArray::new`] from mixed elements has one).
    pub fn mismatched_element(&self) -> Option<(usize, GgufValueType)> {
        match &self.items {
            Items::Values(v) => v.iter().enumerate().find(|(_, e)| e.value_type() != self.elem_type).map(|(i, e)| (i, e.value_type())),
            _ => None,
        }
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(MetaArray),
}

impl MetaValue {
    /// The value's type.
    pub fn value_type(&self) -> GgufValueType {
        use MetaValue::*;
        match self {
            U8(_) => GgufValueType::U8,
            I8(_) => GgufValueType::I8,
            U16(_) => GgufValueType::U16,
            I16(_) => GgufValueType::I16,
            U32(_) => GgufValueType::U32,
            I32(_) => GgufValueType::I32,
            U64(_) => GgufValueType::U64,
            I64(_) => GgufValueType::I64,
            F32(_) => GgufValueType::F32,
            F64(_) => GgufValueType::F64,
            Bool(_) => GgufValueType::Bool,
            String(_) => GgufValueType::String,
            Array(_) => GgufValueType::Array,
        }
    }

    /// Build an array value from elements that all have type `elem_type`.
    pub fn array(elem_type: GgufValueType, values: Vec<MetaValue>) -> MetaValue {
        MetaValue::Array(MetaArray::new(elem_type, values))
    }

    /// An array of strings.
    pub fn string_array<S: AsRef<str>>(items: &[S]) -> MetaValue {
        Self::array(GgufValueType::String, items.iter().map(|s| MetaValue::String(s.as_ref().to_owned())).collect())
    }

    /// An array of `u32`.
    pub fn u32_array(items: &[u32]) -> MetaValue {
        Self::array(GgufValueType::U32, items.iter().map(|&v| MetaValue::U32(v)).collect())
    }

    /// An array of `i32`.
    pub fn i32_array(items: &[i32]) -> MetaValue {
        Self::array(GgufValueType::I32, items.iter().map(|&v| MetaValue::I32(v)).collect())
    }

    /// An array of `f32`.
    pub fn f32_array(items: &[f32]) -> MetaValue {
        Self::array(GgufValueType::F32, items.iter().map(|&v| MetaValue::F32(v)).collect())
    }

    /// Any integer type as `i128` (lossless); `None` for other types.
    fn as_i128(&self) -> Option<i128> {
        use MetaValue::*;
        Some(match *self {
            U8(v) => v as i128,
            I8(v) => v as i128,
            U16(v) => v as i128,
            I16(v) => v as i128,
            U32(v) => v as i128,
            I32(v) => v as i128,
            U64(v) => v as i128,
            I64(v) => v as i128,
            _ => return None,
        })
    }

    /// Any integer type whose value is non-negative, as `u64`; `None` for negatives and non-integers.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// Any integer type whose value fits in `u32`.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_i128().and_then(|v| u32::try_from(v).ok())
    }

    /// Any integer type whose value fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// Any integer type whose value fits in `i32`.
    pub fn as_i32(&self) -> Option<i32> {
        self.as_i128().and_then(|v| i32::try_from(v).ok())
    }

    /// `F32`, or `F64` narrowed to `f32`.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetaValue::F32(v) => Some(v),
            MetaValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// `F64`, or `F32` widened.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// `String`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// `Array`.
    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An array of strings as `Vec<&str>`; `None` if not an array of strings.
    pub fn as_string_vec(&self) -> Option<Vec<&str>> {
        self.as_array()?.as_strs()
    }

    /// An array of integers (any integer element type) whose values all fit in `u32`.
    pub fn as_u32_vec(&self) -> Option<Vec<u32>> {
        self.as_array()?.iter().map(|v| v.as_u32()).collect()
    }

    /// An array of integers whose values all fit in `u64` (non-negative).
    pub fn as_u64_vec(&self) -> Option<Vec<u64>> {
        self.as_array()?.iter().map(|v| v.as_u64()).collect()
    }

    /// An array of integers whose values all fit in `i32`.
    pub fn as_i32_vec(&self) -> Option<Vec<i32>> {
        self.as_array()?.iter().map(|v| v.as_i32()).collect()
    }

    /// An array of `F32` (or `F64`, narrowed).
    pub fn as_f32_vec(&self) -> Option<Vec<f32>> {
        self.as_array()?.iter().map(|v| v.as_f32()).collect()
    }

    /// A short description for messages: the type, and the value for scalars and short strings.
    pub fn describe(&self) -> String {
        match self {
            MetaValue::Array(a) => format!("ARRAY[{}; {}]", a.elem_type, a.len()),
            MetaValue::String(s) if s.len() > 40 => format!("STRING of {} bytes", s.len()),
            v => format!("{} {}", v.value_type(), v),
        }
    }
}

impl fmt::Display for MetaValue {
    /// Scalars as their value, strings quoted (Rust escaping), arrays as `[a, b, ...]` (the first 8 items).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MetaValue::*;
        match self {
            U8(v) => write!(f, "{v}"),
            I8(v) => write!(f, "{v}"),
            U16(v) => write!(f, "{v}"),
            I16(v) => write!(f, "{v}"),
            U32(v) => write!(f, "{v}"),
            I32(v) => write!(f, "{v}"),
            U64(v) => write!(f, "{v}"),
            I64(v) => write!(f, "{v}"),
            F32(v) => write!(f, "{v}"),
            F64(v) => write!(f, "{v}"),
            Bool(v) => write!(f, "{v}"),
            String(s) => write!(f, "{s:?}"),
            Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().take(8).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                if a.len() > 8 {
                    write!(f, ", ... ({} items)", a.len())?;
                }
                f.write_str("]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_accessors_are_lossless() {
        assert_eq!(MetaValue::I32(-1).as_u64(), None);
        assert_eq!(MetaValue::I32(7).as_u32(), Some(7));
        assert_eq!(MetaValue::U64(1 << 40).as_u32(), None);
        assert_eq!(MetaValue::U64(1 << 40).as_u64(), Some(1 << 40));
        assert_eq!(MetaValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(MetaValue::F32(1.5).as_u32(), None);
        assert_eq!(MetaValue::F64(0.25).as_f32(), Some(0.25));
        let a = MetaValue::u32_array(&[1, 2, 3]);
        assert_eq!(a.as_u32_vec(), Some(vec![1, 2, 3]));
        assert_eq!(a.as_i32_vec(), Some(vec![1, 2, 3]));
        assert_eq!(a.as_string_vec(), None);
        assert_eq!(MetaValue::string_array(&["a", "b"]).as_string_vec(), Some(vec!["a", "b"]));
        for id in 0..=12 {
            assert_eq!(GgufValueType::from_id(id).unwrap().id(), id);
        }
        assert_eq!(GgufValueType::from_id(13), None);
    }
}
