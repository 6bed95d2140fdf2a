//! Quantization of f32 data to F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (bit-exact with
//! `gguf.quants.quantize`).
//!
//! Each `block_*` function mirrors the numpy code of gguf-py 0.19 `gguf/quants.py` (`quantize_blocks`)
//! operation for operation in f32: `id = 1 / d` (0 when `d == 0`) and `x * id` (not `x / d`), rounding with
//! `np_roundf` (Q8_0) or truncation of `x * id + 0.5` / `+ 8.5` / `+ 16.5` (Q4/Q5), numpy's float-to-u8 cast
//! before the clip, and the first index of the largest `|x|` for Q4_0 / Q5_0. These are ggml's reference
//! quantizers (`quantize_row_*_ref` in `ggml-quants.c`); llama.cpp's other quantizers (imatrix, K-quants)
//! are not implemented.

use super::half_np::{f32_to_f16, np_cast_u8, np_roundf};
use super::{QuantError, check_sizes};
use crate::gguf::GgmlType;

/// Whether [`quantize`] supports `ty`: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1)
}

/// Quantize `src` to type `ty`; returns `src.len() / block_elems * block_bytes` bytes of packed blocks.
///
/// Bit-exact with `gguf.quants.quantize(src, ty)` (gguf-py 0.19, numpy 2.x with AVX2 dispatch on x86-64) for
/// every input tested: subnormals, infinities, NaNs, signed zeros (see `docs/QUANT.md` for what depends on
/// numpy's platform).
///
/// # Errors
/// [`QuantError::Unsupported`] for a type outside [`can_quantize`], [`QuantError::NotBlockMultiple`] if
/// `src.len()` is not a multiple of `ty.block_elems()`.
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    if !can_quantize(ty) {
        return Err(QuantError::Unsupported { ty, op: "quantize" });
    }
    let (be, bb) = ty.block_size();
    if !src.len().is_multiple_of(be) {
        return Err(QuantError::NotBlockMultiple { ty, len: src.len(), block: be, unit: "elements" });
    }
    let mut out = vec![0u8; src.len() / be * bb];
    quantize_into(ty, src, &mut out)?;
    Ok(out)
}

/// Quantize `src` to type `ty` into `out`, which must hold exactly `src.len() / block_elems * block_bytes`
/// bytes. See [`quantize`].
///
/// # Errors
/// [`QuantError::Unsupported`], [`QuantError::NotBlockMultiple`], or [`QuantError::SizeMismatch`] if `out`
/// has the wrong size.
pub fn quantize_into(ty: GgmlType, src: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    use GgmlType::*;
    let f: fn(&[f32], &mut [u8]) = match ty {
        F32 => |x, o| o.copy_from_slice(&x[0].to_le_bytes()),
        F16 => |x, o| o.copy_from_slice(&f32_to_f16(x[0]).to_le_bytes()),
        BF16 => |x, o| o.copy_from_slice(&f32_to_bf16(x[0]).to_le_bytes()),
        Q8_0 => block_q8_0,
        Q4_0 => block_q4_0,
        Q4_1 => block_q4_1,
        Q5_0 => block_q5_0,
        Q5_1 => block_q5_1,
        _ => return Err(QuantError::Unsupported { ty, op: "quantize" }),
    };
    check_sizes(ty, src.len(), out.len())?;
    match ty {
        F16 => {
            quantize_f16(src, out);
            return Ok(());
        }
        BF16 => {
            for (&x, o) in src.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&f32_to_bf16(x).to_le_bytes());
            }
            return Ok(());
        }
        _ => {}
    }
    let (be, bb) = ty.block_size();
    for (x, o) in src.chunks_exact(be).zip(out.chunks_exact_mut(bb)) {
        f(x, o);
    }
    Ok(())
}

/// F16 in bulk: `half`'s slice conversion (F16C when available, same IEEE rounding as numpy), then NaNs
/// redone with numpy's payload rule.
fn quantize_f16(src: &[f32], out: &mut [u8]) {
    use half::slice::HalfFloatSliceExt;
    let mut buf = [half::f16::ZERO; 1024];
    for (x, o) in src.chunks(1024).zip(out.chunks_mut(2048)) {
        let h = &mut buf[..x.len()];
        h.convert_from_f32_slice(x);
        for ((hv, &xv), o) in h.iter().zip(x).zip(o.chunks_exact_mut(2)) {
            let bits = if xv.is_nan() { f32_to_f16(xv) } else { hv.to_bits() };
            o.copy_from_slice(&bits.to_le_bytes());
        }
    }
}

/// f32 to bf16 bits, round to nearest even, NaN forced quiet (gguf-py `BF16.quantize_blocks`, same as
/// `ggml_compute_fp32_to_bf16` in `ggml-impl.h`).
fn f32_to_bf16(x: f32) -> u16 {
    let mut n = x.to_bits();
    if n & 0x7FFF_FFFF > 0x7F80_0000 {
        n = (n & 0xFFFF_0000) | (64 << 16);
    }
    ((n as u64 + (0x7FFF + ((n >> 16) & 1)) as u64) >> 16) as u16
}

/// `id = 1 / d`, or 0 when `d == 0` (`np.where(d == 0, 0, 1 / d)`).
#[inline]
fn inv(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

/// `(np.max, np.min)` of a 32-element block, down to the sign of a zero result and NaN bits.
///
/// When +0.0 and -0.0 tie for the maximum (minimum), which one numpy returns depends on its reduction order.
/// This reproduces numpy 2.x's AVX2 contiguous reduction (`simd_reduce_c_*_f32` in `loops_minmax.dispatch.c.src`):
/// the accumulator starts as 8 copies of `x[0]`, takes `x[1..25]` as three 8-lane vectors with
/// `_mm256_max_ps(acc, v)` (which returns `v` on ties), folds the lanes `(lo, hi)`, `(0, 2)`, `(1, 3)`, `(0, 1)`
/// with `_mm_max_ps` (second operand on ties), then takes `x[25..32]` one by one, again the new value on
/// ties. A NaN in the vector part gives the canonical quiet NaN `0x7FC0_0000`; a NaN in the scalar tail is
/// returned as it is (first one wins). Checked against numpy 2.4.6 on 5000 blocks of mixed signed zeros.
fn max_min(x: &[f32]) -> (f32, f32) {
    let max = |a: f32, b: f32| if a > b { a } else { b };
    let min = |a: f32, b: f32| if a < b { a } else { b };
    (np_reduce32(x, max), np_reduce32(x, min))
}

/// The reduction order of [`max_min`] for one operation (`op(acc, new)` returns `new` on ties).
fn np_reduce32(x: &[f32], op: impl Fn(f32, f32) -> f32) -> f32 {
    debug_assert_eq!(x.len(), 32);
    let mut r = if x[..25].iter().any(|v| v.is_nan()) {
        f32::from_bits(0x7FC0_0000)
    } else {
        let mut acc = [x[0]; 8];
        for c in 0..3 {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = op(*a, x[1 + 8 * c + k]);
            }
        }
        let v128 = [op(acc[0], acc[4]), op(acc[1], acc[5]), op(acc[2], acc[6]), op(acc[3], acc[7])];
        let v64 = [op(v128[0], v128[2]), op(v128[1], v128[3])];
        op(v64[0], v64[1])
    };
    for &v in &x[25..32] {
        if !r.is_nan() {
            r = if v.is_nan() { v } else { op(r, v) };
        }
    }
    r
}

/// The element of largest magnitude, first one on ties (`take_along_axis(x, abs(x).argmax())`; argmax
/// returns the first NaN if there is one).
fn signed_absmax(x: &[f32]) -> f32 {
    let mut best = x[0];
    if best.is_nan() {
        return best;
    }
    for &v in &x[1..] {
        if v.is_nan() {
            return v;
        }
        if v.abs() > best.abs() {
            best = v;
        }
    }
    best
}

/// Q8_0: `d = max|x| / 127` (numpy's reduction order, see [`max_min`]), `q = np_roundf(x * id)` cast to i8; block = `d: f16`, `q[32]`.
fn block_q8_0(x: &[f32], o: &mut [u8]) {
    let mut a = [0f32; 32];
    for (a, v) in a.iter_mut().zip(x) {
        *a = v.abs();
    }
    let amax = np_reduce32(&a, |a, b| if a > b { a } else { b });
    let d = amax / 127.0;
    let id = inv(d);
    o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    for (q, &v) in o[2..34].iter_mut().zip(x) {
        *q = np_cast_u8(np_roundf(v * id));
    }
}

/// Q4_0: `d = max / -8` (max = signed element of largest magnitude), `q = min(trunc(x * id + 8.5), 15)`;
/// block = `d: f16`, `qs[16]` (element `j` low nibble, `j + 16` high nibble).
fn block_q4_0(x: &[f32], o: &mut [u8]) {
    let d = signed_absmax(x) / -8.0;
    let id = inv(d);
    o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    let q = |v: f32| np_cast_u8(v * id + 8.5).min(15);
    for j in 0..16 {
        o[2 + j] = q(x[j]) | (q(x[j + 16]) << 4);
    }
}

/// Q4_1: `d = (max - min) / 15`, `q = min(trunc((x - min) * id + 0.5), 15)`; block = `d: f16`, `m: f16`
/// (the block minimum), `qs[16]`.
fn block_q4_1(x: &[f32], o: &mut [u8]) {
    let (max, min) = max_min(x);
    let d = (max - min) / 15.0;
    let id = inv(d);
    o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    o[2..4].copy_from_slice(&f32_to_f16(min).to_le_bytes());
    let q = |v: f32| np_cast_u8((v - min) * id + 0.5).min(15);
    for j in 0..16 {
        o[4 + j] = q(x[j]) | (q(x[j + 16]) << 4);
    }
}

/// Q5_0: `d = max / -16`, `q = min(trunc(x * id + 16.5), 31)`; block = `d: f16`, `qh: u32 LE` (bit `i` =
/// bit 4 of `q_i`), `qs[16]` (low nibbles, element `j` low, `j + 16` high).
fn block_q5_0(x: &[f32], o: &mut [u8]) {
    let d = signed_absmax(x) / -16.0;
    let id = inv(d);
    let mut q = [0u8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = np_cast_u8(v * id + 16.5).min(31);
    }
    o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    pack_q5(&q, &mut o[2..22]);
}

/// Q5_1: `d = (max - min) / 31`, `q = min(trunc((x - min) * id + 0.5), 31)`; block = `d: f16`, `m: f16`,
/// `qh: u32 LE`, `qs[16]`.
fn block_q5_1(x: &[f32], o: &mut [u8]) {
    let (max, min) = max_min(x);
    let d = (max - min) / 31.0;
    let id = inv(d);
    let mut q = [0u8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = np_cast_u8((v - min) * id + 0.5).min(31);
    }
    o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    o[2..4].copy_from_slice(&f32_to_f16(min).to_le_bytes());
    pack_q5(&q, &mut o[4..24]);
}

/// `qh` (4 bytes, bit `i` = bit 4 of `q_i`) then `qs` (16 bytes of nibbles) of a Q5 block.
fn pack_q5(q: &[u8; 32], o: &mut [u8]) {
    let mut qh = 0u32;
    for (i, &v) in q.iter().enumerate() {
        qh |= ((v >> 4) as u32 & 1) << i;
    }
    o[0..4].copy_from_slice(&qh.to_le_bytes());
    for j in 0..16 {
        o[4 + j] = (q[j] & 0x0F) | (q[j + 16] << 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_by_hand() {
        // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties to even -> 1.0 (0x3F80).
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3F80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: -> 0x3F82.
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7F80_0001)), 0x7FC0);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7F80);
    }

    #[test]
    fn q4_0_ties_by_hand() {
        // max magnitude -8 -> d = 1, id = 1; x = 0.5 -> trunc(9.0) = 9; x = -7.5 -> trunc(1.0) = 1;
        // x = 7.0 -> trunc(15.5) = 15; x = -8 -> trunc(0.5) = 0.
        let mut x = [0f32; 32];
        x[0] = -8.0;
        x[1] = 0.5;
        x[16] = -7.5;
        x[17] = 7.0;
        let q = quantize(GgmlType::Q4_0, &x).unwrap();
        assert_eq!(&q[0..2], &[0x00, 0x3C]);
        assert_eq!(q[2], 1 << 4); // element 0 -> 0, element 16 -> 1
        assert_eq!(q[3], 9 | (15 << 4));
    }
}
