//! ggml block formats: dequantize, quantize, and dot-product kernels.
//!
//! Bit-exact with gguf-py's `gguf.quants` (gguf 0.19.0, the numpy reference implementation of ggml's
//! `ggml-quants.c`), including its rounding (`np_roundf`, truncation of `x * id + 0.5`), the f16 conversion
//! of block scales (numpy's round-to-nearest-even, NaN payloads kept as numpy keeps them), numpy's
//! float-to-integer casts on x86-64 and the order of numpy's AVX2 min/max reductions (sign of a zero scale). Block layouts: `ggml/src/ggml-common.h`; summary and parity method in
//! `docs/QUANT.md`.
//!
//! Data are little-endian byte slices of packed blocks (no alignment is assumed). A tensor of `n` elements
//! of type `ty` takes `n / ty.block_elems() * ty.block_bytes()` bytes.
//!
//! | operation  | types                                                                              |
//! |------------|------------------------------------------------------------------------------------|
//! | dequantize | F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K           |
//! | quantize   | F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0                                         |

pub mod dequant;
pub mod dot;
pub mod quantize;

mod half_np;

pub use dequant::{can_dequantize, dequantize, dequantize_to_vec};
pub use quantize::{can_quantize, quantize, quantize_into};

use crate::gguf::GgmlType;

/// Errors of [`dequantize`] and [`quantize`]: the data do not fit the block format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The type has no implementation for this operation (e.g. quantizing to Q4_K, dequantizing IQ2_XXS).
    #[error("{op} is not supported for tensor type {ty}")]
    Unsupported {
        /// The tensor type asked for.
        ty: GgmlType,
        /// `"dequantize"` or `"quantize"`.
        op: &'static str,
    },
    /// A length is not a whole number of blocks: `len` elements (or bytes) for blocks of `block`.
    #[error("{ty}: {len} {unit} is not a multiple of the block size ({block} {unit})")]
    NotBlockMultiple {
        /// The tensor type.
        ty: GgmlType,
        /// The length given.
        len: usize,
        /// Elements (or bytes) per block of `ty`.
        block: usize,
        /// `"elements"` or `"bytes"`.
        unit: &'static str,
    },
    /// The input and output buffers do not describe the same number of blocks.
    #[error("{ty}: buffer size mismatch: {elements} elements need {expected} bytes, got {actual} bytes")]
    SizeMismatch {
        /// The tensor type.
        ty: GgmlType,
        /// Number of f32 elements on the f32 side.
        elements: usize,
        /// Bytes `elements` take in type `ty`.
        expected: usize,
        /// Bytes given on the block side.
        actual: usize,
    },
}

/// Check that `elements` f32 values and `bytes` block bytes are the same whole number of `ty` blocks.
fn check_sizes(ty: GgmlType, elements: usize, bytes: usize) -> Result<usize, QuantError> {
    let (be, bb) = ty.block_size();
    if !elements.is_multiple_of(be) {
        return Err(QuantError::NotBlockMultiple { ty, len: elements, block: be, unit: "elements" });
    }
    let n_blocks = elements / be;
    let expected = n_blocks.saturating_mul(bb);
    if expected != bytes {
        return Err(QuantError::SizeMismatch { ty, elements, expected, actual: bytes });
    }
    Ok(n_blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_errors_name_type_and_sizes() {
        let e = dequantize(GgmlType::Q8_0, &[0u8; 34], &mut [0.0; 31]).unwrap_err();
        assert_eq!(e, QuantError::NotBlockMultiple { ty: GgmlType::Q8_0, len: 31, block: 32, unit: "elements" });
        assert_eq!(e.to_string(), "Q8_0: 31 elements is not a multiple of the block size (32 elements)");
        let e = dequantize(GgmlType::Q8_0, &[0u8; 33], &mut [0.0; 32]).unwrap_err();
        assert_eq!(e, QuantError::SizeMismatch { ty: GgmlType::Q8_0, elements: 32, expected: 34, actual: 33 });
        let e = dequantize_to_vec(GgmlType::Q4_K, &[0u8; 145]).unwrap_err();
        assert_eq!(e, QuantError::NotBlockMultiple { ty: GgmlType::Q4_K, len: 145, block: 144, unit: "bytes" });
        let e = quantize(GgmlType::Q4_K, &[0.0; 256]).unwrap_err();
        assert_eq!(e.to_string(), "quantize is not supported for tensor type Q4_K");
        let e = dequantize_to_vec(GgmlType::IQ2_XXS, &[0u8; 66]).unwrap_err();
        assert_eq!(e, QuantError::Unsupported { ty: GgmlType::IQ2_XXS, op: "dequantize" });
        let e = quantize(GgmlType::Q4_0, &[0.0; 33]).unwrap_err();
        assert!(matches!(e, QuantError::NotBlockMultiple { len: 33, .. }));
        let mut out = [0u8; 17];
        let e = quantize_into(GgmlType::Q4_0, &[0.0; 32], &mut out).unwrap_err();
        assert_eq!(e, QuantError::SizeMismatch { ty: GgmlType::Q4_0, elements: 32, expected: 18, actual: 17 });
    }

    #[test]
    fn capabilities() {
        use GgmlType::*;
        for t in [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K] {
            assert!(can_dequantize(t), "{t}");
        }
        for t in [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
            assert!(can_quantize(t), "{t}");
        }
        for t in [Q8_1, Q8_K, IQ2_XXS, IQ4_NL, I8, I32, F64, TQ1_0, MXFP4] {
            assert!(!can_dequantize(t), "{t}");
            assert!(!can_quantize(t), "{t}");
        }
        assert!(!can_quantize(Q4_K) && !can_quantize(Q6_K));
    }

    /// Hand-computed blocks (values from the formulas in ggml-common.h, not from this code).
    #[test]
    fn hand_computed_blocks() {
        // Q8_0: d = 0.5 (f16 0x3800), q = [-2, 3, 0, ...] -> [-1.0, 1.5, 0, ...].
        let mut b = vec![0x00, 0x38];
        b.extend([0xFEu8, 3]);
        b.extend([0u8; 30]);
        let v = dequantize_to_vec(GgmlType::Q8_0, &b).unwrap();
        assert_eq!(&v[..3], &[-1.0, 1.5, 0.0]);
        // Q4_1: d = 2.0 (0x4000), m = -1.0 (0xBC00); byte 0 = 0x51: element 0 = 1*2-1 = 1, element 16 = 5*2-1 = 9.
        let mut b = vec![0x00, 0x40, 0x00, 0xBC, 0x51];
        b.extend([0u8; 15]);
        let v = dequantize_to_vec(GgmlType::Q4_1, &b).unwrap();
        assert_eq!((v[0], v[1], v[16], v[17]), (1.0, -1.0, 9.0, -1.0));
        // Q8_0 quantize of 0..31: amax 31, d = 31/127, q_i = round(i * 127/31); q_31 = 127, q_1 = round(4.0967) = 4.
        let src: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let q = quantize(GgmlType::Q8_0, &src).unwrap();
        assert_eq!(u16::from_le_bytes([q[0], q[1]]), half::f16::from_f32(31.0 / 127.0).to_bits());
        assert_eq!((q[2], q[3], q[33]), (0, 4, 127));
    }
}
