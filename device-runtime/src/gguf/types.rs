//! ggml tensor data types as stored in GGUF files.
//!
//! Source: `ggml/include/ggml.h` (`enum ggml_type`) and gguf-py's `gguf/constants.py`
//! (`GGMLQuantizationType`, `GGML_QUANT_SIZES`). The ids are the on-disk values.

use std::fmt;

/// A ggml tensor data type: its on-disk id, block size (elements) and block size (bytes).
///
/// Data of a tensor of this type is a sequence of blocks along the first (fastest) dimension; the row
/// length `ne[0]` must be a multiple of [`GgmlType::block_elems`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types, missing_docs)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
}

impl GgmlType {
    /// Every type this crate knows, in id order.
    pub const ALL: [GgmlType; 32] = [
        Self::F32, Self::F16, Self::Q4_0, Self::Q4_1, Self::Q5_0, Self::Q5_1, Self::Q8_0, Self::Q8_1,
        Self::Q2_K, Self::Q3_K, Self::Q4_K, Self::Q5_K, Self::Q6_K, Self::Q8_K, Self::IQ2_XXS,
        Self::IQ2_XS, Self::IQ3_XXS, Self::IQ1_S, Self::IQ4_NL, Self::IQ3_S, Self::IQ2_S, Self::IQ4_XS,
        Self::I8, Self::I16, Self::I32, Self::I64, Self::F64, Self::IQ1_M, Self::BF16, Self::TQ1_0,
        Self::TQ2_0, Self::MXFP4,
    ];

    /// The type with on-disk id `id`, or `None` for an id ggml does not define (or has removed: 4, 5).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Self::ALL.iter().copied().find(|t| *t as u32 == id)
    }

    /// On-disk id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// `(elements per block, bytes per block)`, as `GGML_QUANT_SIZES` in gguf-py.
    pub fn block_size(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 => (1, 4),
            F16 => (1, 2),
            BF16 => (1, 2),
            F64 => (1, 8),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            I64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
            IQ2_XXS => (256, 66),
            IQ2_XS => (256, 74),
            IQ3_XXS => (256, 98),
            IQ1_S => (256, 50),
            IQ4_NL => (32, 18),
            IQ3_S => (256, 110),
            IQ2_S => (256, 82),
            IQ4_XS => (256, 136),
            IQ1_M => (256, 56),
            TQ1_0 => (256, 54),
            TQ2_0 => (256, 66),
            MXFP4 => (32, 17),
        }
    }

    /// Elements per block (1 for plain types).
    pub fn block_elems(self) -> usize {
        self.block_size().0
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.block_size().1
    }

    /// Whether this is a block-quantized type (block size > 1).
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes taken by `n` elements, or `None` if `n` is not a whole number of blocks or the size overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let (be, bb) = self.block_size();
        if !n.is_multiple_of(be as u64) {
            return None;
        }
        (n / be as u64).checked_mul(bb as u64)
    }

    /// Canonical name as gguf-py and llama.cpp print it (`"Q4_K"`, `"F16"`, ...).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32", F16 => "F16", Q4_0 => "Q4_0", Q4_1 => "Q4_1", Q5_0 => "Q5_0", Q5_1 => "Q5_1",
            Q8_0 => "Q8_0", Q8_1 => "Q8_1", Q2_K => "Q2_K", Q3_K => "Q3_K", Q4_K => "Q4_K", Q5_K => "Q5_K",
            Q6_K => "Q6_K", Q8_K => "Q8_K", IQ2_XXS => "IQ2_XXS", IQ2_XS => "IQ2_XS", IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S", IQ4_NL => "IQ4_NL", IQ3_S => "IQ3_S", IQ2_S => "IQ2_S", IQ4_XS => "IQ4_XS",
            I8 => "I8", I16 => "I16", I32 => "I32", I64 => "I64", F64 => "F64", IQ1_M => "IQ1_M",
            BF16 => "BF16", TQ1_0 => "TQ1_0", TQ2_0 => "TQ2_0", MXFP4 => "MXFP4",
        }
    }

    /// Parse a name case-insensitively (`"q8_0"`, `"F16"`).
    pub fn from_name(s: &str) -> Option<GgmlType> {
        Self::ALL.iter().copied().find(|t| t.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes_match_gguf_py() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(&t.name().to_lowercase()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(5), None);
        // Hand-computed: Q4_K = d(2) + dmin(2) + scales(12) + qs(128).
        assert_eq!(GgmlType::Q4_K.block_size(), (256, 144));
        assert_eq!(GgmlType::Q6_K.block_size(), (256, 210));
        assert_eq!(GgmlType::Q8_0.bytes_for(576), Some(18 * 34));
        assert_eq!(GgmlType::Q8_0.bytes_for(577), None);
    }
}
