//! Dequantization of every supported block format to f32 (bit-exact with `gguf.quants.dequantize`).
//!
//! Each `block_*` function turns one packed little-endian block into `block_elems` f32 values with the same
//! operations, in the same order and precision (f32), as the numpy code of gguf-py 0.19 `gguf/quants.py`
//! (`dequantize_blocks` of each class); layouts from `ggml/src/ggml-common.h`. No fused multiply-add is used:
//! numpy rounds every product and sum separately.

use super::half_np::{f16_le, f16_to_f32};
use super::{QuantError, check_sizes};
use crate::gguf::GgmlType;

/// Whether [`dequantize`] supports `ty`: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K,
/// Q5_K, Q6_K.
pub fn can_dequantize(ty: GgmlType) -> bool {
    block_fn(ty).is_some()
}

/// Dequantize `data` (packed blocks of type `ty`) into `out`, whose length is the number of elements.
///
/// `data.len()` must be `out.len() / ty.block_elems() * ty.block_bytes()`. Bit-exact with
/// `gguf.quants.dequantize(data, ty)` (gguf-py 0.19).
///
/// # Errors
/// [`QuantError::Unsupported`] for a type outside [`can_dequantize`], [`QuantError::NotBlockMultiple`] if
/// `out.len()` is not a whole number of blocks, [`QuantError::SizeMismatch`] if `data` has the wrong size.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let f = block_fn(ty).ok_or(QuantError::Unsupported { ty, op: "dequantize" })?;
    check_sizes(ty, out.len(), data.len())?;
    let (be, bb) = ty.block_size();
    match ty {
        // Plain types: one loop over elements rather than a call per 1-element "block".
        GgmlType::F32 => {
            for (y, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (y, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *y = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        GgmlType::BF16 => {
            for (y, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *y = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        _ => {
            for (b, y) in data.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
                f(b, y);
            }
        }
    }
    Ok(())
}

/// Dequantize `data` (packed blocks of type `ty`) into a new vector of `data.len() / block_bytes *
/// block_elems` f32 values. See [`dequantize`].
///
/// # Errors
/// [`QuantError::Unsupported`], or [`QuantError::NotBlockMultiple`] if `data.len()` is not a whole number of
/// blocks (in bytes).
pub fn dequantize_to_vec(ty: GgmlType, data: &[u8]) -> Result<Vec<f32>, QuantError> {
    if !can_dequantize(ty) {
        return Err(QuantError::Unsupported { ty, op: "dequantize" });
    }
    let (be, bb) = ty.block_size();
    if !data.len().is_multiple_of(bb) {
        return Err(QuantError::NotBlockMultiple { ty, len: data.len(), block: bb, unit: "bytes" });
    }
    let mut out = vec![0.0f32; data.len() / bb * be];
    dequantize(ty, data, &mut out)?;
    Ok(out)
}

type BlockFn = fn(&[u8], &mut [f32]);

fn block_fn(ty: GgmlType) -> Option<BlockFn> {
    use GgmlType::*;
    Some(match ty {
        // Plain types are handled in `dequantize` directly; the entry only marks them as supported.
        F32 | F16 | BF16 => |_, _| unreachable!("plain types are converted element-wise"),
        Q4_0 => block_q4_0,
        Q4_1 => block_q4_1,
        Q5_0 => block_q5_0,
        Q5_1 => block_q5_1,
        Q8_0 => block_q8_0,
        Q2_K => block_q2_k,
        Q3_K => block_q3_k,
        Q4_K => block_q4_k,
        Q5_K => block_q5_k,
        Q6_K => block_q6_k,
        _ => return None,
    })
}

/// Q4_0 (18 bytes / 32): `d: f16`, `qs[16]`; element `j` is the low nibble of `qs[j]`, element `j + 16` the
/// high nibble; `y = d * (q - 8)`.
fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_le(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = d * ((qs[j] & 0x0F) as i32 - 8) as f32;
        y[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
    }
}

/// Q4_1 (20 bytes / 32): `d: f16`, `m: f16`, `qs[16]` (nibbles as Q4_0); `y = d * q + m`.
fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_le(b, 0);
    let m = f16_le(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = d * (qs[j] & 0x0F) as f32 + m;
        y[j + 16] = d * (qs[j] >> 4) as f32 + m;
    }
}

/// Q5_0 (22 bytes / 32): `d: f16`, `qh: u32 LE` (bit `i` = 5th bit of element `i`), `qs[16]` (low nibbles as
/// Q4_0); `y = d * (q - 16)`.
fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_le(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let q0 = (qs[j] & 0x0F) as u32 | ((qh >> j) & 1) << 4;
        let q1 = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (q0 as i32 - 16) as f32;
        y[j + 16] = d * (q1 as i32 - 16) as f32;
    }
}

/// Q5_1 (24 bytes / 32): `d: f16`, `m: f16`, `qh: u32 LE`, `qs[16]` (as Q5_0); `y = d * q + m`.
fn block_q5_1(b: &[u8], y: &mut [f32]) {
    let d = f16_le(b, 0);
    let m = f16_le(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let q0 = (qs[j] & 0x0F) as u32 | ((qh >> j) & 1) << 4;
        let q1 = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * q0 as f32 + m;
        y[j + 16] = d * q1 as f32 + m;
    }
}

/// Q8_0 (34 bytes / 32): `d: f16`, `qs[32]: i8`; `y = q * d`.
fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_le(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = (q as i8) as f32 * d;
    }
}

/// Q2_K (84 bytes / 256): `scales[16]` (low nibble: scale, high nibble: min, per 16 elements), `qs[64]`
/// (2-bit), `d: f16`, `dmin: f16`. Element `128 j + 32 s + l` (j < 2, s < 4, l < 32) is
/// `(qs[32 j + l] >> 2 s) & 3`; group `g = index / 16`: `y = (d * sc_g) * q - (dmin * m_g)`.
fn block_q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = f16_le(b, 80);
    let dmin = f16_le(b, 82);
    let mut dl = [0f32; 16];
    let mut ml = [0f32; 16];
    for g in 0..16 {
        dl[g] = d * (scales[g] & 0x0F) as f32;
        ml[g] = dmin * (scales[g] >> 4) as f32;
    }
    for j in 0..2 {
        for s in 0..4 {
            for l in 0..32 {
                let i = 128 * j + 32 * s + l;
                let q = ((qs[32 * j + l] >> (2 * s)) & 3) as f32;
                y[i] = dl[i / 16] * q - ml[i / 16];
            }
        }
    }
}

/// Q3_K (110 bytes / 256): `hmask[32]`, `qs[64]` (low 2 bits, as Q2_K), `scales[12]` (16 six-bit scales),
/// `d: f16`. Scale `i`: low 4 bits from `scales[i % 8]` (nibble `i / 8`), high 2 bits from
/// `scales[8 + i % 4] >> 2 (i / 4)`; minus 32. Element `32 b + l` has high bit `(hmask[l] >> b) & 1`;
/// `q = low2 - 4 * (1 - hbit)`; `y = (d * scale_g) * q`, `g = index / 16`.
fn block_q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let sc = &b[96..108];
    let d = f16_le(b, 108);
    let mut dl = [0f32; 16];
    for (i, dl) in dl.iter_mut().enumerate() {
        let lo = (sc[i % 8] >> (4 * (i / 8))) & 0x0F;
        let hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        let s = ((lo | (hi << 4)) as i32 - 32) as f32;
        *dl = d * s;
    }
    for j in 0..2 {
        for s in 0..4 {
            for l in 0..32 {
                let i = 128 * j + 32 * s + l;
                let low = ((qs[32 * j + l] >> (2 * s)) & 3) as i32;
                let hbit = ((hmask[l] >> (i / 32)) & 1) as i32;
                let q = low - ((hbit ^ 1) << 2);
                y[i] = dl[i / 16] * q as f32;
            }
        }
    }
}

/// The 8 six-bit scales and mins of a Q4_K / Q5_K super-block (`get_scale_min_k4` in ggml-quants.c).
fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K (144 bytes / 256): `d: f16`, `dmin: f16`, `scales[12]` (8 six-bit scales and mins), `qs[128]`.
/// Element `64 j + 32 s + l` is nibble `s` of `qs[32 j + l]`; sub-block `k = 2 j + s`:
/// `y = (d * sc_k) * q - (dmin * m_k)`.
fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_le(b, 0);
    let dmin = f16_le(b, 2);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qs = &b[16..144];
    for j in 0..4 {
        for s in 0..2 {
            let k = 2 * j + s;
            let dk = d * sc[k] as f32;
            let mk = dmin * mn[k] as f32;
            for l in 0..32 {
                let q = ((qs[32 * j + l] >> (4 * s)) & 0x0F) as f32;
                y[32 * k + l] = dk * q - mk;
            }
        }
    }
}

/// Q5_K (176 bytes / 256): `d: f16`, `dmin: f16`, `scales[12]`, `qh[32]`, `qs[128]`. Low 4 bits as Q4_K;
/// element `32 k + l` has 5th bit `(qh[l] >> k) & 1`; `y = (d * sc_k) * q - (dmin * m_k)`.
fn block_q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_le(b, 0);
    let dmin = f16_le(b, 2);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for j in 0..4 {
        for s in 0..2 {
            let k = 2 * j + s;
            let dk = d * sc[k] as f32;
            let mk = dmin * mn[k] as f32;
            for l in 0..32 {
                let q = ((qs[32 * j + l] >> (4 * s)) & 0x0F) | (((qh[l] >> k) & 1) << 4);
                y[32 * k + l] = dk * q as f32 - mk;
            }
        }
    }
}

/// Q6_K (210 bytes / 256): `ql[128]` (low 4 bits), `qh[64]` (high 2 bits), `scales[16]: i8`, `d: f16`.
/// Element `128 j + 64 s + l` (l < 64) has low bits nibble `s` of `ql[64 j + l]`; element `128 j + 32 t + l`
/// (l < 32) has high bits `(qh[32 j + l] >> 2 t) & 3`; `y = (d * scale_g) * (q - 32)`, `g = index / 16`.
fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let sc = &b[192..208];
    let d = f16_le(b, 208);
    let mut dl = [0f32; 16];
    for (g, dl) in dl.iter_mut().enumerate() {
        *dl = d * (sc[g] as i8) as f32;
    }
    for j in 0..2 {
        for t in 0..4 {
            for l in 0..32 {
                let i = 128 * j + 32 * t + l;
                let lo = (ql[64 * j + 32 * (t % 2) + l] >> (4 * (t / 2))) & 0x0F;
                let hi = (qh[32 * j + l] >> (2 * t)) & 0x03;
                let q = (lo | (hi << 4)) as i32 - 32;
                y[i] = dl[i / 16] * q as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q6_k_layout_by_hand() {
        // d = 1.0 (0x3C00), all scales 1; ql[64] low nibble = 5 -> element 128 (j=1, s=0, l=0);
        // qh[32] bits 2..3 = 2 -> element 128 + 32 (t=1) gets high bits 2: q = 0 | 2<<4 = 32 -> 0.
        let mut b = vec![0u8; 210];
        for s in &mut b[192..208] {
            *s = 1;
        }
        b[208] = 0x00;
        b[209] = 0x3C;
        b[64] = 0x05;
        b[160] = 0b0000_1000;
        let v = dequantize_to_vec(GgmlType::Q6_K, &b).unwrap();
        assert_eq!(v[128], 5.0 - 32.0);
        assert_eq!(v[160], 0.0);
        assert_eq!(v[0], -32.0);
    }
}
