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
#[derive(Clone, Debug, PartialEq)]
pub struct MetaArray {
    /// Type of every element.
    pub elem_type: GgufValueType,
    /// The elements.
    pub values: Vec<MetaValue>,
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
        MetaValue::Array(MetaArray { elem_type, values })
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
        self.as_array()?.values.iter().map(|v| v.as_str()).collect()
    }

    /// An array of integers (any integer element type) whose values all fit in `u32`.
    pub fn as_u32_vec(&self) -> Option<Vec<u32>> {
        self.as_array()?.values.iter().map(|v| v.as_u32()).collect()
    }

    /// An array of integers whose values all fit in `u64` (non-negative).
    pub fn as_u64_vec(&self) -> Option<Vec<u64>> {
        self.as_array()?.values.iter().map(|v| v.as_u64()).collect()
    }

    /// An array of integers whose values all fit in `i32`.
    pub fn as_i32_vec(&self) -> Option<Vec<i32>> {
        self.as_array()?.values.iter().map(|v| v.as_i32()).collect()
    }

    /// An array of `F32` (or `F64`, narrowed).
    pub fn as_f32_vec(&self) -> Option<Vec<f32>> {
        self.as_array()?.values.iter().map(|v| v.as_f32()).collect()
    }

    /// A short description for messages: the type, and the value for scalars and short strings.
    pub fn describe(&self) -> String {
        match self {
            MetaValue::Array(a) => format!("ARRAY[{}; {}]", a.elem_type, a.values.len()),
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
                for (i, v) in a.values.iter().take(8).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                if a.values.len() > 8 {
                    write!(f, ", ... ({} items)", a.values.len())?;
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
