//! Dot-product and matrix kernels on quantized blocks, used by the engine (scalar reference + SIMD paths).
//!
//! The engine multiplies a weight matrix kept in its GGUF block format ([`QMatrix`]) by f32 activations.
//! As llama.cpp does (`ggml-cpu/quants.c`, `ggml_vec_dot_*`), activations are first quantized to 8-bit
//! blocks of 32 ([`BlockQ8`]: f16-rounded scale `d`, `s = d * sum(qs)` for the formats with a minimum, and
//! 32 `i8`), and the dot products run on integers inside each block:
//!
//! - Q8_0 · Q8:  `sum_b d_w d_a sum_i qw_i qa_i`
//! - Q4_0 · Q8:  `qw = nibble - 8`
//! - Q4_1 · Q8:  `sum_b (d_w d_a sum_i q_i qa_i + m_w s_a)` (the Q8_1 trick: needs the activation block sum)
//! - Q5_0 / Q5_1 · Q8: as Q4_0 / Q4_1 with the fifth bit from `qh`
//! - Q4_K · Q8: each 32-element sub-block has scale `d*sc` and minimum `dmin*m`: `d*sc*da*sum(q qa) - dmin*m*s_a`
//! - Q6_K · Q8: each 16-element sub-block has scale `d*sc`; a 32-element activation block covers two of them
//! - F16 and F32 weights multiply f32 activations directly.
//!
//! Block layouts: ggml `ggml-common.h` (`block_q8_0`, `block_q4_0`, ...); all little-endian, unaligned.
//!
//! Every format has a scalar kernel (portable, the reference the tests compare against); Q8_0, Q4_0 and Q4_1
//! also have AVX2+FMA kernels chosen at run time with `is_x86_feature_detected!`. The matrix product
//! [`matmul`] splits output rows across a rayon thread pool (llama.cpp-style) and, for several activation rows
//! (prefill), reuses each unpacked weight block across tiles of activation rows.
//!
//! Batch invariance: on a given kernel path, output `(row, token)` has the same bits whatever the number
//! of activation rows in the call, the tile it falls in and the thread count, so a prompt evaluated in one
//! prefill, in several, or token by token gives the same logits (KV-cache reuse in scoring relies on it).
//! Every kernel of a format follows one order of operations per output: Q4_0 / Q4_1 (scalar and AVX2,
//! bit-identical on the same quantized activations): for each block in order, `acc = fma(S, d_w*d_a, acc)`
//! with `S` the block's exact integer dot product, then for Q4_1 `acc = fma(m_w, s_a, acc)`; Q8_0 AVX2:
//! 8 lanes of partial sums, one FMA per lane and block, the same horizontal sum at the end. (The model
//! amplifies last-bit differences through the 8-bit activation quantization of later layers to tenths of
//! a logit, so a batch-dependent order is visible in scores.)

use crate::gguf::GgmlType;
use half::f16;
use rayon::prelude::*;

/// Errors of the kernels: a weight type without a kernel, or shapes that do not fit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    /// The tensor type has no matrix kernel in this runtime.
    #[error("tensor type {0} is not supported by the CPU engine (supported: F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K)")]
    UnsupportedType(GgmlType),
    /// The row length is not a whole number of blocks of the type.
    #[error("row length {cols} is not a multiple of the {ty} block size {block}")]
    RowNotBlockAligned {
        /// Tensor type.
        ty: GgmlType,
        /// Row length (elements).
        cols: usize,
        /// Block size (elements).
        block: usize,
    },
    /// The data length does not equal `rows * row_bytes`.
    #[error("tensor data is {got} bytes, expected {expected} for {rows} x {cols} {ty}")]
    DataLength {
        /// Tensor type.
        ty: GgmlType,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Expected bytes.
        expected: usize,
        /// Actual bytes.
        got: usize,
    },
}

/// Types [`QMatrix`] accepts.
pub const SUPPORTED_TYPES: [GgmlType; 9] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

/// A weight matrix in its GGUF block format: `rows` rows of `cols` elements, row-major.
///
/// In ggml terms the tensor has `ne = [cols, rows]` (`ne[0]` is the fastest dimension); `data` holds
/// `rows * row_bytes()` bytes, usually borrowed from the memory-mapped GGUF file (no copy).
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    /// Block format.
    pub ty: GgmlType,
    /// Number of rows (output features).
    pub rows: usize,
    /// Row length in elements (input features).
    pub cols: usize,
    /// Raw data, `rows * row_bytes()` bytes.
    pub data: &'a [u8],
}

#[inline]
fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

#[inline]
fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

impl<'a> QMatrix<'a> {
    /// Wrap `data` as a `rows x cols` matrix of type `ty`.
    ///
    /// Errors: [`KernelError::UnsupportedType`], [`KernelError::RowNotBlockAligned`], [`KernelError::DataLength`].
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, KernelError> {
        if !SUPPORTED_TYPES.contains(&ty) {
            return Err(KernelError::UnsupportedType(ty));
        }
        let (be, bb) = ty.block_size();
        if cols % be != 0 {
            return Err(KernelError::RowNotBlockAligned { ty, cols, block: be });
        }
        let expected = (cols / be).checked_mul(bb).and_then(|r| r.checked_mul(rows));
        if expected != Some(data.len()) {
            return Err(KernelError::DataLength { ty, rows, cols, expected: expected.unwrap_or(usize::MAX), got: data.len() });
        }
        Ok(QMatrix { ty, rows, cols, data })
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        let (be, bb) = self.ty.block_size();
        self.cols / be * bb
    }

    /// The raw bytes of row `r` (panics if `r >= rows`).
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Dequantize row `r` into `out` (`cols` f32). Used for the token-embedding lookup.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row(r), &mut out[..self.cols]);
    }

    /// Whether the kernels for this type take 8-bit quantized activations (else f32 activations).
    pub fn wants_q8(&self) -> bool {
        !matches!(self.ty, GgmlType::F32 | GgmlType::F16)
    }
}

/// An activation block: 32 values quantized to `i8` with scale `d` (rounded to f16 as llama.cpp's
/// `block_q8_0`/`block_q8_1` store it) and `s = d * sum(qs)` (used by formats with a minimum: Q4_1, Q5_1, Q4_K).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ8 {
    /// Scale: `x_i ~ d * qs_i`.
    pub d: f32,
    /// `d * sum(qs)`.
    pub s: f32,
    /// Quantized values.
    pub qs: [i8; 32],
}

/// Quantize `x` (length a multiple of 32) into `out` (`x.len() / 32` blocks), as ggml's
/// `quantize_row_q8_1_ref`: `d = max|x| / 127`, `q = round(x / d)`.
pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * 32);
    for (xb, ob) in x.chunks_exact(32).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in ob.qs.iter_mut().zip(xb) {
            let qi = (v * id).round() as i32;
            *q = qi as i8;
            sum += qi;
        }
        ob.d = round_f16(d);
        ob.s = round_f16(d * sum as f32);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Dequantization of one row (scalar; used for embeddings and as the reference of the tests).
// ---------------------------------------------------------------------------------------------------------

/// Dequantize one row of `ty` blocks (`src`) into `out` (f32, whole blocks). Panics on unsupported types
/// (callers go through [`QMatrix::new`], which checks).
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for i in 0..32 {
                    o[i] = d * (b[2 + i] as i8) as f32;
                }
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let bb = ty.block_bytes();
            for (o, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(bb)) {
                let (q, d, m) = unpack_small_block(ty, b);
                for i in 0..32 {
                    o[i] = d * q[i] as f32 + m;
                }
            }
        }
        GgmlType::Q4_K => {
            for (o, b) in out.chunks_exact_mut(256).zip(src.chunks_exact(144)) {
                let (q, sc, mn) = unpack_q4_k(b);
                for j in 0..8 {
                    for i in 0..32 {
                        o[j * 32 + i] = sc[j] * q[j * 32 + i] as f32 - mn[j];
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for (o, b) in out.chunks_exact_mut(256).zip(src.chunks_exact(210)) {
                let (q, sc) = unpack_q6_k(b);
                for j in 0..16 {
                    for i in 0..16 {
                        o[j * 16 + i] = sc[j] * q[j * 16 + i] as f32;
                    }
                }
            }
        }
        other => panic!("dequantize_row: unsupported type {other}"),
    }
}

/// Unpack a Q4_0/Q4_1/Q5_0/Q5_1 block to 32 integer values, scale `d` and additive minimum `m`
/// (`x = d*q + m`; for Q4_0/Q5_0 the offset is folded into `q`: `q - 8` / `q - 16`, `m = 0`).
#[inline]
fn unpack_small_block(ty: GgmlType, b: &[u8]) -> ([i32; 32], f32, f32) {
    let mut q = [0i32; 32];
    match ty {
        GgmlType::Q4_0 => {
            for j in 0..16 {
                q[j] = (b[2 + j] & 0x0F) as i32 - 8;
                q[j + 16] = (b[2 + j] >> 4) as i32 - 8;
            }
            (q, f16_at(b, 0), 0.0)
        }
        GgmlType::Q4_1 => {
            for j in 0..16 {
                q[j] = (b[4 + j] & 0x0F) as i32;
                q[j + 16] = (b[4 + j] >> 4) as i32;
            }
            (q, f16_at(b, 0), f16_at(b, 2))
        }
        GgmlType::Q5_0 => {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            for j in 0..16 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                q[j] = ((b[6 + j] & 0x0F) as u32 | h0) as i32 - 16;
                q[j + 16] = ((b[6 + j] >> 4) as u32 | h1) as i32 - 16;
            }
            (q, f16_at(b, 0), 0.0)
        }
        GgmlType::Q5_1 => {
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            for j in 0..16 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                q[j] = ((b[8 + j] & 0x0F) as u32 | h0) as i32;
                q[j + 16] = ((b[8 + j] >> 4) as u32 | h1) as i32;
            }
            (q, f16_at(b, 0), f16_at(b, 2))
        }
        _ => unreachable!(),
    }
}

/// Q4_K scale/min of sub-block `j` (ggml `get_scale_min_k4`).
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Unpack a Q4_K block (144 bytes: d, dmin, scales[12], qs[128]) into 256 values in 0..16 and, per
/// 32-element sub-block, its scale `d*sc` and minimum `dmin*m` (`x = scale*q - min`). Source: ggml
/// `dequantize_row_q4_K`.
#[inline]
fn unpack_q4_k(b: &[u8]) -> ([u8; 256], [f32; 8], [f32; 8]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    let mut q = [0u8; 256];
    let mut sc = [0f32; 8];
    let mut mn = [0f32; 8];
    for k in 0..4 {
        let (s0, m0) = scale_min_k4(2 * k, scales);
        let (s1, m1) = scale_min_k4(2 * k + 1, scales);
        sc[2 * k] = d * s0 as f32;
        mn[2 * k] = dmin * m0 as f32;
        sc[2 * k + 1] = d * s1 as f32;
        mn[2 * k + 1] = dmin * m1 as f32;
        let src = &qs[32 * k..32 * k + 32];
        for l in 0..32 {
            q[64 * k + l] = src[l] & 0x0F;
            q[64 * k + 32 + l] = src[l] >> 4;
        }
    }
    (q, sc, mn)
}

/// Unpack a Q6_K block (210 bytes: ql[128], qh[64], scales[16] i8, d) into 256 values in -32..32 and the
/// 16 sub-block scales `d*sc` (16 elements each). Source: ggml `dequantize_row_q6_K`.
#[inline]
fn unpack_q6_k(b: &[u8]) -> ([i8; 256], [f32; 16]) {
    let d = f16_at(b, 208);
    let mut q = [0i8; 256];
    let mut sc = [0f32; 16];
    for (j, s) in sc.iter_mut().enumerate() {
        *s = d * (b[192 + j] as i8) as f32;
    }
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let y = &mut q[128 * n..128 * n + 128];
        for l in 0..32 {
            y[l] = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            y[l + 32] = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    (q, sc)
}

// ---------------------------------------------------------------------------------------------------------
// Scalar dot products: one weight row (raw blocks) with one quantized activation row.
// ---------------------------------------------------------------------------------------------------------

#[inline]
fn isum(q: &[i32], a: &[i8]) -> i32 {
    q.iter().zip(a).map(|(x, y)| x * *y as i32).sum()
}

/// Scalar dot product of one weight row of type `ty` (`w`, raw blocks) with quantized activations `a`
/// (`cols / 32` blocks). The reference of the SIMD kernels. Panics for F32/F16 (use [`dot_f32_scalar`]).
pub fn dot_q8_scalar(ty: GgmlType, w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    match ty {
        GgmlType::Q8_0 => {
            for (b, ab) in w.chunks_exact(34).zip(a) {
                let mut s = 0i32;
                for i in 0..32 {
                    s += (b[2 + i] as i8) as i32 * ab.qs[i] as i32;
                }
                acc += f16_at(b, 0) * ab.d * s as f32;
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            // The canonical order of the Q4 kernels (module docs): one fused multiply-add of the block's
            // exact integer sum per block, then (Q4_1) one of the minimum term, so that the SIMD kernels of
            // every batch shape give these very bits.
            for (b, ab) in w.chunks_exact(ty.block_bytes()).zip(a) {
                let (q, d, m) = unpack_small_block(ty, b);
                acc = (isum(&q, &ab.qs) as f32).mul_add(d * ab.d, acc);
                if ty == GgmlType::Q4_1 {
                    acc = m.mul_add(ab.s, acc);
                }
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            for (b, ab) in w.chunks_exact(ty.block_bytes()).zip(a) {
                let (q, d, m) = unpack_small_block(ty, b);
                acc += d * ab.d * isum(&q, &ab.qs) as f32 + m * ab.s;
            }
        }
        GgmlType::Q4_K => {
            for (b, ab) in w.chunks_exact(144).zip(a.chunks_exact(8)) {
                let (q, sc, mn) = unpack_q4_k(b);
                for j in 0..8 {
                    let s: i32 = (0..32).map(|i| q[32 * j + i] as i32 * ab[j].qs[i] as i32).sum();
                    acc += sc[j] * ab[j].d * s as f32 - mn[j] * ab[j].s;
                }
            }
        }
        GgmlType::Q6_K => {
            for (b, ab) in w.chunks_exact(210).zip(a.chunks_exact(8)) {
                let (q, sc) = unpack_q6_k(b);
                for j in 0..8 {
                    let s0: i32 = (0..16).map(|i| q[32 * j + i] as i32 * ab[j].qs[i] as i32).sum();
                    let s1: i32 = (16..32).map(|i| q[32 * j + i] as i32 * ab[j].qs[i] as i32).sum();
                    acc += ab[j].d * (sc[2 * j] * s0 as f32 + sc[2 * j + 1] * s1 as f32);
                }
            }
        }
        other => panic!("dot_q8_scalar: no 8-bit kernel for {other}"),
    }
    acc
}

/// Scalar dot product of one F32 or F16 weight row with f32 activations `x`.
pub fn dot_f32_scalar(ty: GgmlType, w: &[u8], x: &[f32]) -> f32 {
    match ty {
        GgmlType::F32 => {
            // 8 partial sums: lets the compiler vectorize without reassociation flags.
            let mut acc = [0f32; 8];
            for (wc, xc) in w.chunks_exact(32).zip(x.chunks_exact(8)) {
                for i in 0..8 {
                    let v = f32::from_le_bytes([wc[4 * i], wc[4 * i + 1], wc[4 * i + 2], wc[4 * i + 3]]);
                    acc[i] += v * xc[i];
                }
            }
            let n8 = x.len() / 8 * 8;
            let mut s: f32 = acc.iter().sum();
            for i in n8..x.len() {
                s += f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]) * x[i];
            }
            s
        }
        GgmlType::F16 => {
            let mut acc = [0f32; 8];
            for (wc, xc) in w.chunks_exact(16).zip(x.chunks_exact(8)) {
                for i in 0..8 {
                    acc[i] += f16_at(wc, 2 * i) * xc[i];
                }
            }
            let n8 = x.len() / 8 * 8;
            let mut s: f32 = acc.iter().sum();
            for i in n8..x.len() {
                s += f16_at(w, 2 * i) * x[i];
            }
            s
        }
        other => panic!("dot_f32_scalar: {other} is not a float type"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// AVX2 + FMA kernels (x86_64): Q8_0, Q4_0, Q4_1 against BlockQ8, tiles of 1 weight row x R activation rows.
// ---------------------------------------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)]
mod avx2 {
    use super::{BlockQ8, GgmlType, Q32, QActs, QMatrix};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_at(p: *const u8) -> f32 {
        unsafe {
            let bits = u16::from_le_bytes([*p, *p.add(1)]);
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let lo = _mm256_castps256_ps128(v);
            let hi = _mm256_extractf128_ps(v, 1);
            let s = _mm_add_ps(lo, hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }

    /// 16 bytes of packed nibbles -> 32 bytes in 0..16 (low nibbles = elements 0..16, high = 16..32).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack_nibbles(p: *const u8) -> __m256i {
        unsafe {
            let t = _mm_loadu_si128(p as *const __m128i);
            let both = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
            _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
        }
    }

    /// Prefetch rows `ra..rb` of `w` (clipped to the matrix) towards the caches. A task calls it for the
    /// rows after its own range while it computes (the next task on this thread is usually the next range,
    /// as rayon splits the task list into contiguous halves): its first pass over the weights (the f16
    /// scale conversion) then finds them in cache instead of waiting on memory. Decode is limited by how
    /// fast the weights stream in, and the compute pass otherwise issues no memory requests.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn prefetch_rows(w: &QMatrix, ra: usize, rb: usize) {
        unsafe {
            let rb = rb.min(w.rows);
            if ra >= rb {
                return;
            }
            let bytes = w.row_bytes();
            let start = w.data.as_ptr().add(ra * bytes);
            let len = (rb - ra) * bytes;
            let mut o = 0;
            while o < len {
                _mm_prefetch::<_MM_HINT_T0>(start.add(o) as *const i8);
                o += 64;
            }
        }
    }

    /// Weight rows of a Q8_0 tile (the register tile is `RM` weight rows x `CN` activation rows).
    pub(super) const RM: usize = 2;
    /// Activation rows (tokens) of a Q8_0 tile.
    pub(super) const CN: usize = 4;

    thread_local! {
        /// Per-thread scratch: the task's weight scales (and Q4_1 minimums) as f32.
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Rows `r0..r1` of a Q8_0 / Q4_0 / Q4_1 matrix `w` against `n` quantized activation rows (`nb` blocks
    /// each), written to `y[t * w.rows + r]`.
    ///
    /// # Safety
    /// AVX2+FMA+F16C available; `y` holds `n * w.rows` f32 and no other thread writes these positions.
    pub(super) unsafe fn rows_task(w: &QMatrix, q: &QActs, n: usize, nb: usize, r0: usize, r1: usize, y: *mut f32) {
        unsafe {
            match w.ty {
                GgmlType::Q8_0 => rows_task_q8_0(w, q, n, nb, r0, r1, y),
                GgmlType::Q4_0 => q4_task::<1>(w, q, n, nb, r0, r1, y),
                _ => q4_task::<2>(w, q, n, nb, r0, r1, y),
            }
        }
    }

    const fn block_layout(kind: u8) -> (usize, usize) {
        match kind {
            0 => (34, 2),
            1 => (18, 2),
            _ => (20, 4),
        }
    }

    /// Q8_0 rows `r0..r1`: register tiles of [`RM`] x [`CN`] (and 1-row / 1-token tiles at the edges). Every
    /// tile shape computes an output the same way (8 f32 lanes of partial sums, one FMA per lane and block
    /// with the scale product `d_w * d_a`, the same horizontal sum at the end), so the result of a (row,
    /// token) pair does not depend on the batch or on which tile it falls in.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_task_q8_0(w: &QMatrix, q: &QActs, n: usize, nb: usize, r0: usize, r1: usize, y: *mut f32) {
        unsafe {
            let (bb, _) = block_layout(0);
            let rb = w.row_bytes();
            let rows = w.rows;
            let nr = r1 - r0;
            SCRATCH.with_borrow_mut(|sc| {
                // Scales (f16 -> f32 once per task, not once per tile).
                sc.clear();
                sc.resize(nr * nb + RM * CN * nb, 0.0);
                let (dw, sbuf) = sc.split_at_mut(nr * nb);
                for r in 0..nr {
                    let row = w.data.as_ptr().add((r0 + r) * rb);
                    for b in 0..nb {
                        dw[r * nb + b] = f16_at(row.add(b * bb));
                    }
                }
                let wp = w.data.as_ptr().add(r0 * rb);
                let ap = q.blocks.as_ptr();
                // Token chunks whose quantized activations fit in L1 (~16 KiB), reused by all the task's rows.
                let tc = ((16384 / (nb * std::mem::size_of::<BlockQ8>()).max(1)) / CN * CN).max(CN);
                let mut c0 = 0;
                while c0 < n {
                    let c1 = (c0 + tc).min(n);
                    let mut r = 0;
                    while r < nr {
                        let full_r = r + RM <= nr;
                        if c0 == 0 {
                            // The rows this thread most likely multiplies next (see `prefetch_rows`).
                            prefetch_rows(w, r0 + nr + r, r0 + nr + r + RM);
                        }
                        let mut t = c0;
                        while t < c1 {
                            let full_t = t + CN <= c1;
                            let wr = wp.add(r * rb);
                            let d = dw.as_ptr().add(r * nb);
                            let a = ap.add(t * nb);
                            let mut o = [[0f32; CN]; RM];
                            let (nr_t, nc_t) = match (full_r, full_t) {
                                (true, true) => {
                                    // c0 and t are multiples of CN (tc is): the tokens form one group of d_grouped.
                                    let go = t / CN * nb * CN;
                                    let aq = q.qs.as_ptr().add(t * nb);
                                    tile_main(wr, rb, d, nb, aq, q.d_grouped.as_ptr().add(go), sbuf.as_mut_ptr(), &mut o);
                                    (RM, CN)
                                }
                                (true, false) => {
                                    let mut o1 = [[0f32; 1]; RM];
                                    tile::<RM, 1>(wr, rb, d, nb, a, &mut o1);
                                    for i in 0..RM {
                                        o[i][0] = o1[i][0];
                                    }
                                    (RM, 1)
                                }
                                (false, true) => {
                                    let mut o1 = [[0f32; CN]; 1];
                                    tile::<1, CN>(wr, rb, d, nb, a, &mut o1);
                                    o[0] = o1[0];
                                    (1, CN)
                                }
                                (false, false) => {
                                    let mut o1 = [[0f32; 1]; 1];
                                    tile::<1, 1>(wr, rb, d, nb, a, &mut o1);
                                    o[0][0] = o1[0][0];
                                    (1, 1)
                                }
                            };
                            for i in 0..nr_t {
                                for j in 0..nc_t {
                                    *y.add((t + j) * rows + r0 + r + i) = o[i][j];
                                }
                            }
                            t += nc_t;
                        }
                        r += if full_r { RM } else { 1 };
                    }
                    c0 = c1;
                }
            });
        }
    }

    /// Smallest batch for which [`q4_rows8`] (which repacks its weight rows first) is used; smaller batches
    /// and rows left over from groups of 8 go through [`q4_tile_2x4`] and [`q4_tile_8x1`]. All three give
    /// the same bits for a (row, token) pair (the canonical order of the module docs).
    const Q4X8_MIN_TOKENS: usize = 8;

    thread_local! {
        /// Per-thread scratch of [`q4_rows8`]: 8 interleaved rows of unpacked nibbles (256 bytes per block).
        static WBUF: std::cell::RefCell<Vec<Q32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Rows `r0..r1` of a Q4_0 (`KIND` 1) / Q4_1 (`KIND` 2) matrix against all `n` tokens.
    ///
    /// Every kernel here computes output `(r, t)` in the canonical order of [`super::dot_q8_scalar`]:
    /// for each block `b` in order, `acc = fma(S_b, d_w*d_a, acc)` with `S_b` the block's exact integer
    /// dot product (Q4_0: of `q - 8`, as `sum(q qa) - 8 sum(qa)`), then for Q4_1 `acc = fma(m_w, s_a, acc)`.
    /// So a (row, token) output has the same bits whatever the batch size, the tile it falls in, the
    /// split of rows across tasks or threads: a prompt evaluated in one call or in several (KV-cache reuse)
    /// gives the same logits.
    ///
    /// The task's scales (and Q4_1 minimums) are converted from f16 once, into groups of 8 rows:
    /// `dt[(g*nb + b)*8 + i]` for row `r0 + 8g + i`, block `b` (past `r1`: the last row's).
    ///
    /// # Safety
    /// AVX2+FMA+F16C; `y` holds `n * w.rows` f32 and no other thread writes these positions.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_task<const KIND: u8>(w: &QMatrix, q: &QActs, n: usize, nb: usize, r0: usize, r1: usize, y: *mut f32) {
        unsafe {
            let (bb, _) = block_layout(KIND);
            let rb = w.row_bytes();
            let nr = r1 - r0;
            let groups = nr.div_ceil(8);
            SCRATCH.with_borrow_mut(|sc| {
                sc.clear();
                sc.resize(2 * groups * nb * 8, 0.0);
                let (dt, mt) = sc.split_at_mut(groups * nb * 8);
                // 8 rows' f16 scales of a block -> one vector store (rows past r1 repeat the last row).
                for g in 0..groups {
                    let rp: [*const u8; 8] = std::array::from_fn(|i| w.data.as_ptr().add((r0 + (8 * g + i).min(nr - 1)) * rb));
                    for b in 0..nb {
                        _mm256_storeu_ps(dt.as_mut_ptr().add((g * nb + b) * 8), f16x8(&rp, b * bb));
                        if KIND == 2 {
                            _mm256_storeu_ps(mt.as_mut_ptr().add((g * nb + b) * 8), f16x8(&rp, b * bb + 2));
                        }
                    }
                }
                let full = if n >= Q4X8_MIN_TOKENS { nr / 8 } else { 0 };
                for g in 0..full {
                    let o = g * nb * 8;
                    q4_rows8::<KIND>(w, q, n, nb, r0 + 8 * g, dt.as_ptr().add(o), mt.as_ptr().add(o), y);
                }
                let ra = r0 + 8 * full;
                if ra == r1 {
                    return;
                }
                let rows = w.rows;
                // Scales of row r (absolute), block 0 (block b at + 8b).
                let sp = |v: &[f32], r: usize| v.as_ptr().add(((r - r0) / 8) * nb * 8 + (r - r0) % 8);
                let mut t = 0;
                while t + 4 <= n {
                    let mut r = ra;
                    while r < r1 {
                        let r1b = (r + 1).min(r1 - 1);
                        let rp = [w.data.as_ptr().add(r * rb), w.data.as_ptr().add(r1b * rb)];
                        let o = q4_tile_2x4::<KIND>(rp, [sp(dt, r), sp(dt, r1b)], [sp(mt, r), sp(mt, r1b)], nb, q, t);
                        for (i, rr) in [r, r + 1].into_iter().enumerate().take(r1 - r) {
                            for j in 0..4 {
                                *y.add((t + j) * rows + rr) = o[i * 4 + j];
                            }
                        }
                        r += 2;
                    }
                    t += 4;
                }
                while t < n {
                    let mut r = ra;
                    while r < r1 {
                        // Groups of 8 rows aligned with the scale groups (ra - r0 is a multiple of 8).
                        let rp: [*const u8; 8] = std::array::from_fn(|i| w.data.as_ptr().add((r + i).min(r1 - 1) * rb));
                        if t == 0 {
                            prefetch_rows(w, r + nr, r + nr + 8);
                        }
                        let o = q4_tile_8x1::<KIND>(rp, sp(dt, r), sp(mt, r), nb, q, t);
                        let yo = y.add(t * rows + r);
                        if r + 8 <= r1 {
                            _mm256_storeu_ps(yo, o);
                        } else {
                            let mut v = [0f32; 8];
                            _mm256_storeu_ps(v.as_mut_ptr(), o);
                            for (i, vi) in v.iter().enumerate().take(r1 - r) {
                                *yo.add(i) = *vi;
                            }
                        }
                        r += 8;
                    }
                    t += 1;
                }
            });
        }
    }

    /// 8 f16 values at `p[i] + off` (little-endian) as 8 f32 (exact).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16x8(p: &[*const u8; 8], off: usize) -> __m256 {
        unsafe {
            let h = |i: usize| (p[i].add(off) as *const i16).read_unaligned();
            _mm256_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), h(4), h(5), h(6), h(7)))
        }
    }

    /// Horizontal sums of 8 vectors of 8 i32: lane `l` of the result is the sum of `p[l]`'s lanes (exact).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn reduce8_epi32(p: [__m256i; 8]) -> __m256i {
        let h01 = _mm256_hadd_epi32(p[0], p[1]);
        let h23 = _mm256_hadd_epi32(p[2], p[3]);
        let h45 = _mm256_hadd_epi32(p[4], p[5]);
        let h67 = _mm256_hadd_epi32(p[6], p[7]);
        // [p0 lo, p1 lo, p2 lo, p3 lo | p0 hi, p1 hi, p2 hi, p3 hi] and the same for p4..p7.
        let a = _mm256_hadd_epi32(h01, h23);
        let b = _mm256_hadd_epi32(h45, h67);
        _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31))
    }

    /// Integer dot product of a block of unpacked nibbles (0..16) with 32 `i8` activations: 8 i32 partial sums.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn nib_dot(wq: __m256i, yv: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(wq, yv), _mm256_set1_epi16(1))
    }

    /// Q4 register tile of 2 weight rows x 4 tokens (`t..t+4`, `t` a multiple of 4: one group of
    /// [`QActs::d_grouped`]); lane `4i + j` = row `i`, token `t + j`, in the canonical order of [`q4_task`].
    /// `w[i]`: row `i`'s blocks; `d[i]`, `m[i]`: its scales / minimums (block `b` at `+ 8b`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_tile_2x4<const KIND: u8>(w: [*const u8; 2], d: [*const f32; 2], m: [*const f32; 2], nb: usize, q: &QActs, t: usize) -> [f32; 8] {
        unsafe {
            let (bb, off) = block_layout(KIND);
            let go = t / 4 * nb * 4;
            let mut acc = _mm256_setzero_ps();
            for b in 0..nb {
                let wq = [unpack_nibbles(w[0].add(b * bb + off)), unpack_nibbles(w[1].add(b * bb + off))];
                let yv: [__m256i; 4] = std::array::from_fn(|j| _mm256_load_si256(q.qs.as_ptr().add((t + j) * nb + b) as *const __m256i));
                let p: [__m256i; 8] = std::array::from_fn(|l| nib_dot(wq[l / 4], yv[l % 4]));
                let mut s = reduce8_epi32(p);
                if KIND == 1 {
                    let s4 = _mm_loadu_si128(q.sq8_grouped.as_ptr().add(go + 4 * b) as *const __m128i);
                    s = _mm256_sub_epi32(s, _mm256_set_m128i(s4, s4));
                }
                let d4 = _mm_loadu_ps(q.d_grouped.as_ptr().add(go + 4 * b));
                let dws = _mm256_set_m128(_mm_broadcast_ss(&*d[1].add(8 * b)), _mm_broadcast_ss(&*d[0].add(8 * b)));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dws, _mm256_set_m128(d4, d4)), acc);
                if KIND == 2 {
                    let s4 = _mm_loadu_ps(q.c_q4_1_grouped.as_ptr().add(go + 4 * b));
                    let ms = _mm256_set_m128(_mm_broadcast_ss(&*m[1].add(8 * b)), _mm_broadcast_ss(&*m[0].add(8 * b)));
                    acc = _mm256_fmadd_ps(ms, _mm256_set_m128(s4, s4), acc);
                }
            }
            let mut o = [0f32; 8];
            _mm256_storeu_ps(o.as_mut_ptr(), acc);
            o
        }
    }

    /// Q4 register tile of 8 weight rows x 1 token `t` (decode); lane `i` = row `i`, in the canonical order
    /// of [`q4_task`]. `w[i]`: row `i`'s blocks; `d`, `m`: the 8 rows' scales / minimums, block `b` at
    /// `+ 8b` (one group of [`q4_task`]'s layout).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_tile_8x1<const KIND: u8>(w: [*const u8; 8], d: *const f32, m: *const f32, nb: usize, q: &QActs, t: usize) -> __m256 {
        unsafe {
            let (bb, off) = block_layout(KIND);
            let mut acc = _mm256_setzero_ps();
            for b in 0..nb {
                let i = t * nb + b;
                let yv = _mm256_load_si256(q.qs.as_ptr().add(i) as *const __m256i);
                let p: [__m256i; 8] = std::array::from_fn(|r| nib_dot(unpack_nibbles(w[r].add(b * bb + off)), yv));
                let mut s = reduce8_epi32(p);
                if KIND == 1 {
                    s = _mm256_sub_epi32(s, _mm256_set1_epi32(*q.sq8.as_ptr().add(i)));
                }
                let da = _mm256_broadcast_ss(&(*q.blocks.as_ptr().add(i)).d);
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(_mm256_loadu_ps(d.add(8 * b)), da), acc);
                if KIND == 2 {
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(m.add(8 * b)), _mm256_broadcast_ss(&*q.c_q4_1.as_ptr().add(i)), acc);
                }
            }
            acc
        }
    }

    /// Transpose 8 rows of 8 dwords: output `k` holds dword `k` of rows 0..8 (lane `i` = row `i`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn transpose8x8_epi32(r: [__m256i; 8]) -> [__m256i; 8] {
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256(u0, u4, 0x20),
            _mm256_permute2x128_si256(u1, u5, 0x20),
            _mm256_permute2x128_si256(u2, u6, 0x20),
            _mm256_permute2x128_si256(u3, u7, 0x20),
            _mm256_permute2x128_si256(u0, u4, 0x31),
            _mm256_permute2x128_si256(u1, u5, 0x31),
            _mm256_permute2x128_si256(u2, u6, 0x31),
            _mm256_permute2x128_si256(u3, u7, 0x31),
        ]
    }

    /// Rows `r..r+8` of a Q4_0 / Q4_1 matrix against all `n` activation rows, as llama.cpp's repacked
    /// `ggml_gemm_q4_0_8x8_q8_0`: the 8 rows are first unpacked to bytes and interleaved (dword `k` of a
    /// block = elements `4k..4k+4` of each row, lane `i` = row `i`), so that one `maddubs` with the
    /// activations' dword `k` broadcast gives 8 rows' partial sums; a block's 8 partial vectors add up in
    /// 16 bits (at most `8 * 2 * 15 * 127 = 30480`, no saturation) before a single `madd`, conversion and
    /// FMA per block and token (the canonical order of [`q4_task`]), and the result is 8 consecutive
    /// outputs (no horizontal sum). `d`, `m`: the 8 rows' scales / minimums, block `b` at `+ 8b`.
    ///
    /// # Safety
    /// AVX2+FMA+F16C; rows `r..r+8` exist; `y` holds `n * w.rows` f32 not written by another thread here.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn q4_rows8<const KIND: u8>(w: &QMatrix, q: &QActs, n: usize, nb: usize, r: usize, d: *const f32, m: *const f32, y: *mut f32) {
        unsafe {
            let (bb, off) = block_layout(KIND);
            let rb = w.row_bytes();
            WBUF.with_borrow_mut(|wbuf| {
                wbuf.clear();
                wbuf.resize(nb * 8, Q32([0; 32]));
                let base = w.data.as_ptr().add(r * rb);
                for b in 0..nb {
                    let v: [__m256i; 8] = std::array::from_fn(|i| unpack_nibbles(base.add(i * rb + b * bb + off)));
                    let t = transpose8x8_epi32(v);
                    for (k, tk) in t.iter().enumerate() {
                        _mm256_store_si256(wbuf.as_mut_ptr().add(8 * b + k) as *mut __m256i, *tk);
                    }
                }
                let rows = w.rows;
                let mut t = 0;
                while t + 4 <= n {
                    q4x8_tokens::<KIND, 4>(wbuf.as_ptr(), d, m, nb, q, t, y.add(t * rows + r), rows);
                    t += 4;
                }
                while t < n {
                    q4x8_tokens::<KIND, 1>(wbuf.as_ptr(), d, m, nb, q, t, y.add(t * rows + r), rows);
                    t += 1;
                }
            })
        }
    }

    /// `C` tokens from `t0` against 8 interleaved rows (see [`q4_rows8`]); writes 8 outputs per token at
    /// `y + j*rows`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn q4x8_tokens<const KIND: u8, const C: usize>(
        wbuf: *const Q32,
        d: *const f32,
        m: *const f32,
        nb: usize,
        q: &QActs,
        t0: usize,
        y: *mut f32,
        rows: usize,
    ) {
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [_mm256_setzero_ps(); C];
            for b in 0..nb {
                let wv: [__m256i; 8] = std::array::from_fn(|k| _mm256_load_si256(wbuf.add(8 * b + k) as *const __m256i));
                let dwv = _mm256_loadu_ps(d.add(8 * b));
                let mv = if KIND == 2 { _mm256_loadu_ps(m.add(8 * b)) } else { dwv };
                for (j, a) in acc.iter_mut().enumerate() {
                    let i = (t0 + j) * nb + b;
                    let yq = q.qs.as_ptr().add(i) as *const i32;
                    let mut s16 = _mm256_maddubs_epi16(wv[0], _mm256_set1_epi32(*yq));
                    for k in 1..8 {
                        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(wv[k], _mm256_set1_epi32(*yq.add(k))));
                    }
                    let mut s = _mm256_madd_epi16(s16, ones);
                    if KIND == 1 {
                        // Q4_0: sum((q - 8) qa) = sum(q qa) - 8 sum(qa), exact in i32.
                        s = _mm256_sub_epi32(s, _mm256_set1_epi32(*q.sq8.as_ptr().add(i)));
                    }
                    let da = _mm256_broadcast_ss(&(*q.blocks.as_ptr().add(i)).d);
                    *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dwv, da), *a);
                    if KIND == 2 {
                        // Q4_1: + m * s_a.
                        *a = _mm256_fmadd_ps(mv, _mm256_broadcast_ss(&*q.c_q4_1.as_ptr().add(i)), *a);
                    }
                }
            }
            for (j, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(y.add(j * rows), *a);
            }
        }
    }

    /// The main Q8_0 register tile, 2 weight rows x 4 tokens ([`RM`] x [`CN`]): as [`tile`], but the 8
    /// scale products `d_w * d_a` of a block are computed with one vector multiply (the tokens' `d` come
    /// contiguous from [`QActs::d_grouped`] at `dg`, group-relative) instead of 8 scalar multiplies and
    /// broadcasts: per block pair, `sign`, `maddubs`, `madd`, convert and FMA. Same bits as [`tile`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_main(w: *const u8, rb: usize, dw: *const f32, nb: usize, aq: *const Q32, dg: *const f32, sbuf: *mut f32, out: &mut [[f32; CN]; RM]) {
        const { assert!(RM == 2 && CN == 4 && super::TILE_TOKENS == CN) };
        unsafe {
            let (bb, off) = block_layout(0);
            // Scale products of every block first (8 per block, lanes r*4 + t), so that the main loop
            // broadcasts them from memory (a load, no shuffle) and keeps its registers for accumulators.
            for b in 0..nb {
                let d4 = _mm_loadu_ps(dg.add(b * CN));
                let dws = _mm256_set_m128(_mm_broadcast_ss(&*dw.add(nb + b)), _mm_broadcast_ss(&*dw.add(b)));
                _mm256_storeu_ps(sbuf.add(8 * b), _mm256_mul_ps(_mm256_set_m128(d4, d4), dws));
            }
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_ps(); CN]; RM];
            for b in 0..nb {
                let p0 = w.add(b * bb + off);
                let p1 = p0.add(rb);
                let wq = [_mm256_loadu_si256(p0 as *const __m256i), _mm256_loadu_si256(p1 as *const __m256i)];
                let wa = [_mm256_sign_epi8(wq[0], wq[0]), _mm256_sign_epi8(wq[1], wq[1])];
                let sb = sbuf.add(8 * b);
                for t in 0..CN {
                    let yv = _mm256_load_si256(aq.add(t * nb + b) as *const __m256i);
                    for r in 0..RM {
                        let prod = _mm256_maddubs_epi16(wa[r], _mm256_sign_epi8(yv, wq[r]));
                        let f = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
                        acc[r][t] = _mm256_fmadd_ps(f, _mm256_broadcast_ss(&*sb.add(r * CN + t)), acc[r][t]);
                    }
                }
            }
            for r in 0..RM {
                for t in 0..CN {
                    out[r][t] = hsum(acc[r][t]);
                }
            }
        }
    }

    /// Q8_0 register tile: `R` weight rows (row `i` at `w + i*rb`, its f32 scales at `dw + i*nb`) times `C`
    /// activation rows (row `j`'s `nb` blocks at `a + j*nb`), integer dot products inside each 32-element
    /// block (ggml `mul_sum_i8_pairs_float` / llamafile tinyBLAS `updot`), `R*C` f32 accumulators.
    /// Each weight block is loaded once per tile, each activation block once per tile.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const R: usize, const C: usize>(w: *const u8, rb: usize, dw: *const f32, nb: usize, a: *const BlockQ8, out: &mut [[f32; C]; R]) {
        unsafe {
            let (bb, off) = block_layout(0);
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            for b in 0..nb {
                let mut wq = [_mm256_setzero_si256(); R];
                let mut wa = [_mm256_setzero_si256(); R];
                let mut ds = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    let p = w.add(r * rb + b * bb + off);
                    wq[r] = _mm256_loadu_si256(p as *const __m256i);
                    wa[r] = _mm256_sign_epi8(wq[r], wq[r]);
                    ds[r] = _mm256_broadcast_ss(&*dw.add(r * nb + b));
                }
                for t in 0..C {
                    let ab = a.add(t * nb + b);
                    let yv = _mm256_loadu_si256((*ab).qs.as_ptr() as *const __m256i);
                    let da = _mm256_broadcast_ss(&(*ab).d);
                    for r in 0..R {
                        let prod = _mm256_maddubs_epi16(wa[r], _mm256_sign_epi8(yv, wq[r]));
                        let f = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
                        acc[r][t] = _mm256_fmadd_ps(f, _mm256_mul_ps(ds[r], da), acc[r][t]);
                    }
                }
            }
            for r in 0..R {
                for t in 0..C {
                    out[r][t] = hsum(acc[r][t]);
                }
            }
        }
    }

    /// AVX2 version of [`super::quantize_row_q8`] (as ggml's AVX2 `quantize_row_q8_1`: scale `127/amax`,
    /// rounding to nearest even, so a value exactly between two steps may differ by one from the scalar one).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
        unsafe {
            let sign = _mm256_set1_ps(-0.0);
            for (b, ob) in out.iter_mut().enumerate() {
                let p = x.as_ptr().add(32 * b);
                let v = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))];
                let mut m = _mm256_andnot_ps(sign, v[0]);
                for vi in &v[1..] {
                    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
                }
                let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
                let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
                let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
                let amax = _mm_cvtss_f32(m4);
                let d = amax / 127.0;
                let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
                let q = v.map(|vi| _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(vi, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
                let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
                let s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
                let s4 = _mm_hadd_epi32(s4, s4);
                let s4 = _mm_hadd_epi32(s4, s4);
                let isum = _mm_cvtsi128_si32(s4);
                let a = _mm256_packs_epi32(q[0], q[1]);
                let c = _mm256_packs_epi32(q[2], q[3]);
                let packed = _mm256_packs_epi16(a, c);
                let packed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                _mm256_storeu_si256(ob.qs.as_mut_ptr() as *mut __m256i, packed);
                ob.d = f16_round(d);
                ob.s = f16_round(d * isum as f32);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_round(x: f32) -> f32 {
        unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT))) }
    }

    /// F32 weight row · f32 activations.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f32(w: *const u8, x: &[f32]) -> f32 {
        unsafe {
            let n = x.len();
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            let mut i = 0;
            while i + 16 <= n {
                let w0 = _mm256_loadu_ps(w.add(4 * i) as *const f32);
                let w1 = _mm256_loadu_ps(w.add(4 * i + 32) as *const f32);
                acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x.as_ptr().add(i)), acc0);
                acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x.as_ptr().add(i + 8)), acc1);
                i += 16;
            }
            let mut s = hsum(_mm256_add_ps(acc0, acc1));
            while i < n {
                s += (w.add(4 * i) as *const f32).read_unaligned() * x[i];
                i += 1;
            }
            s
        }
    }

    /// F16 weight row · f32 activations (F16C conversion).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(w: *const u8, x: &[f32]) -> f32 {
        unsafe {
            let n = x.len();
            let mut acc = _mm256_setzero_ps();
            let mut i = 0;
            while i + 8 <= n {
                let h = _mm_loadu_si128(w.add(2 * i) as *const __m128i);
                acc = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(x.as_ptr().add(i)), acc);
                i += 8;
            }
            let mut s = hsum(acc);
            while i < n {
                s += f16_at(w.add(2 * i)) * x[i];
                i += 1;
            }
            s
        }
    }
}

/// Which kernels [`matmul`] uses: the portable scalar ones, or the fastest the CPU supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// Portable scalar kernels (the reference).
    Scalar,
    /// AVX2+FMA where available (x86_64, checked at run time), scalar otherwise.
    Best,
}

/// Whether the AVX2+FMA kernels can run on this CPU.
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Activations of one or more matrix products: `n` rows of `cols` f32 values, quantized to [`BlockQ8`]
/// blocks on first use by a quantized weight matrix and then shared by every matrix that reads the same
/// input (Q, K and V; FFN gate and up), as llama.cpp's `wdata` is.
///
/// Besides the blocks it keeps, per block, what the Q4 kernels add to their integer products:
/// `8 * sum(qs)` (Q4_0 weights are taken as unsigned nibbles: the exact integer sum of `(q - 8) qa` is
/// `sum(q qa) - 8 sum(qa)`) and `s` (Q4_1's `m * s` term), each `n x cols/32`, row-major.
pub struct Activations<'a> {
    x: &'a [f32],
    n: usize,
    cols: usize,
    path: KernelPath,
    q: std::sync::OnceLock<QActs>,
}

/// 32 quantized activations on a 32-byte boundary (one aligned AVX2 load, never split across cache lines).
#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct Q32([i8; 32]);

struct QActs {
    blocks: Vec<BlockQ8>,
    /// The blocks' `qs`, same order, aligned (read by the SIMD tiles).
    qs: Vec<Q32>,
    /// `8 * sum(qs)` per block (exact).
    sq8: Vec<i32>,
    /// `s` per block (contiguous copy of `BlockQ8::s`).
    c_q4_1: Vec<f32>,
    /// The scales `d` regrouped for the SIMD tiles: token group `g` (tokens `G*g..G*g+G`, `G` =
    /// [`TILE_TOKENS`]), block `b`, token `j` at `(g*nb + b)*G + j`; 0 past the last token.
    d_grouped: Vec<f32>,
    /// [`QActs::sq8`] in the layout of `d_grouped`.
    sq8_grouped: Vec<i32>,
    /// [`QActs::c_q4_1`] in the layout of `d_grouped`.
    c_q4_1_grouped: Vec<f32>,
}

/// Tokens per register tile of the SIMD kernels (the layout of [`QActs::d_grouped`]).
const TILE_TOKENS: usize = 4;

impl<'a> Activations<'a> {
    /// Wrap `x` (`n x cols`, row-major). Panics if `x.len() != n * cols` (caller bug).
    pub fn new(x: &'a [f32], n: usize, cols: usize, path: KernelPath) -> Self {
        assert_eq!(x.len(), n * cols, "Activations: length");
        Activations { x, n, cols, path, q: std::sync::OnceLock::new() }
    }

    /// Activation rows (tokens).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The quantized blocks, computed on first call (in parallel over rows when `n > 1`). `cols` must be
    /// a multiple of 32 (guaranteed for quantized weights by [`QMatrix::new`]).
    fn quantized(&self) -> &QActs {
        self.q.get_or_init(|| {
            let nb = self.cols / 32;
            let mut blocks = vec![BlockQ8::default(); self.n * nb];
            let simd = self.path == KernelPath::Best && has_avx2();
            let quant = |xr: &[f32], qb: &mut [BlockQ8]| {
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: avx2+fma+f16c detected; xr has 32 * qb.len() values.
                    return unsafe { avx2::quantize_row_q8(xr, qb) };
                }
                quantize_row_q8(xr, qb)
            };
            if self.n > 1 && nb > 0 {
                blocks.par_chunks_mut(nb).zip(self.x.par_chunks(self.cols)).for_each(|(qb, xr)| quant(xr, qb));
            } else if nb > 0 {
                quant(self.x, &mut blocks);
            }
            let sq8: Vec<i32> = blocks.iter().map(|b| 8 * b.qs.iter().map(|v| *v as i32).sum::<i32>()).collect();
            let c_q4_1: Vec<f32> = blocks.iter().map(|b| b.s).collect();
            let groups = self.n.div_ceil(TILE_TOKENS);
            fn regroup<T: Copy + Default>(n: usize, nb: usize, groups: usize, v: &dyn Fn(usize) -> T) -> Vec<T> {
                let mut out = vec![T::default(); groups * nb * TILE_TOKENS];
                for t in 0..n {
                    let (g, j) = (t / TILE_TOKENS, t % TILE_TOKENS);
                    for b in 0..nb {
                        out[(g * nb + b) * TILE_TOKENS + j] = v(t * nb + b);
                    }
                }
                out
            }
            let d_grouped = regroup(self.n, nb, groups, &|i| blocks[i].d);
            let sq8_grouped = regroup(self.n, nb, groups, &|i| sq8[i]);
            let c_q4_1_grouped = regroup(self.n, nb, groups, &|i| c_q4_1[i]);
            let qs = blocks.iter().map(|b| Q32(b.qs)).collect();
            QActs { blocks, qs, sq8, c_q4_1, d_grouped, sq8_grouped, c_q4_1_grouped }
        })
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Weight rows per task: enough work per task to amortize scheduling; small enough to balance 2+ threads.
const ROWS_PER_TASK: usize = 32;

/// `y = x · Wᵀ`: `x` is `n x cols` (row-major f32), `y` is `n x rows` (row-major f32): for every activation
/// row `t` and weight row `r`, `y[t*rows + r] = sum_k W[r,k] x[t*cols + k]`.
///
/// Quantized weights take activations quantized with [`quantize_row_q8`]; F32/F16 weights take f32. The
/// work is split across the current rayon pool (use `ThreadPool::install` to choose the thread count) by
/// chunks of weight rows. Panics if `x.len() != n*cols` or `y.len() != n*rows` (caller bug).
pub fn matmul(w: &QMatrix, x: &[f32], n: usize, y: &mut [f32], path: KernelPath) {
    assert_eq!(x.len(), n * w.cols, "matmul: activation length");
    let acts = Activations::new(x, n, w.cols, path);
    matmul_multi(&[*w], &acts, &mut [y]);
}

/// Several products of the same activations, `ys[i] = x · ws[i]ᵀ` (each `n x ws[i].rows`), in one parallel
/// region (one wake-up of the thread pool instead of one per matrix; the activations are quantized once).
/// Kernels as [`Activations::new`]'s `path`. Panics if a matrix's `cols` differs from the activations' or
/// an output has the wrong length (caller bug).
pub fn matmul_multi(ws: &[QMatrix], acts: &Activations, ys: &mut [&mut [f32]]) {
    assert_eq!(ws.len(), ys.len(), "matmul_multi: outputs");
    let n = acts.n;
    for (w, y) in ws.iter().zip(ys.iter()) {
        assert_eq!(w.cols, acts.cols, "matmul: activation length");
        assert_eq!(y.len(), n * w.rows, "matmul: output length");
    }
    if n == 0 {
        return;
    }
    let q = if ws.iter().any(|w| w.wants_q8()) { Some(acts.quantized()) } else { None };
    let simd = acts.path == KernelPath::Best && has_avx2();
    let yps: Vec<SendPtr> = ys.iter_mut().map(|y| SendPtr(y.as_mut_ptr())).collect();
    let mut tasks: Vec<(usize, usize)> = Vec::new();
    for (i, w) in ws.iter().enumerate() {
        for t in 0..w.rows.div_ceil(ROWS_PER_TASK) {
            tasks.push((i, t * ROWS_PER_TASK));
        }
    }
    let run = |&(i, r0): &(usize, usize)| {
        let w = &ws[i];
        let r1 = (r0 + ROWS_PER_TASK).min(w.rows);
        // SAFETY: tasks write disjoint output columns r0..r1 of matrix i's output; ys outlive the region.
        unsafe { rows_task(w, acts, q, r0, r1, yps[i], simd) };
    };
    if tasks.len() <= 1 {
        tasks.iter().for_each(run);
    } else {
        tasks.par_iter().for_each(run);
    }
}

/// Rows `r0..r1` of `w` against all activation rows, written to `y[t * w.rows + r]`.
///
/// # Safety
/// `y` points at `acts.n * w.rows` writable f32 that no other thread writes at these positions.
unsafe fn rows_task(w: &QMatrix, acts: &Activations, q: Option<&QActs>, r0: usize, r1: usize, y: SendPtr, simd: bool) {
    let (n, rows) = (acts.n, w.rows);
    let put = |t: usize, r: usize, v: f32| unsafe { *y.0.add(t * rows + r) = v };
    if !w.wants_q8() {
        for r in r0..r1 {
            let wr = w.row(r);
            for t in 0..n {
                put(t, r, dot_f32_row(w.ty, wr, &acts.x[t * w.cols..(t + 1) * w.cols], simd));
            }
        }
        return;
    }
    let q = q.expect("quantized activations");
    let nb = w.cols / 32;
    #[cfg(target_arch = "x86_64")]
    if simd && matches!(w.ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1) {
        unsafe { avx2::rows_task(w, q, n, nb, r0, r1, y.0) };
        return;
    }
    let _ = simd;
    for r in r0..r1 {
        let wr = w.row(r);
        for t in 0..n {
            put(t, r, dot_q8_scalar(w.ty, wr, &q.blocks[t * nb..(t + 1) * nb]));
        }
    }
}

#[inline]
fn dot_f32_row(ty: GgmlType, w: &[u8], x: &[f32], simd: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: simd implies avx2+fma+f16c detected; w holds x.len() elements of ty.
        unsafe {
            return match ty {
                GgmlType::F32 => avx2::dot_f32(w.as_ptr(), x),
                _ => avx2::dot_f16(w.as_ptr(), x),
            };
        }
    }
    let _ = simd;
    dot_f32_scalar(ty, w, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    fn random_bytes(n: usize, seed: &mut u64) -> Vec<u8> {
        (0..n).map(|_| (lcg(seed) * 127.0) as i8 as u8).collect()
    }

    /// Random blocks of `ty` with sane (small, finite) f16 scales.
    fn random_matrix(ty: GgmlType, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let (be, bb) = ty.block_size();
        let mut data = random_bytes(rows * cols / be * bb, seed);
        let put_f16 = |d: &mut [u8], off: usize, v: f32| d[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
        for b in data.chunks_exact_mut(bb) {
            match ty {
                GgmlType::F32 => {
                    let v = lcg(seed);
                    b.copy_from_slice(&v.to_le_bytes());
                }
                GgmlType::F16 => put_f16(b, 0, lcg(seed)),
                GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => put_f16(b, 0, 0.01 + 0.01 * lcg(seed).abs()),
                GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K => {
                    put_f16(b, 0, 0.01 + 0.01 * lcg(seed).abs());
                    put_f16(b, 2, 0.02 * lcg(seed));
                }
                GgmlType::Q6_K => put_f16(b, 208, 0.001 + 0.001 * lcg(seed).abs()),
                _ => unreachable!(),
            }
        }
        data
    }

    /// Hand-computed: a Q8_0 block with d=0.5 and q_i = i-16 dotted with x_i = 1.0 (quantized exactly:
    /// d_a = 1/127, q_a = 127) gives 0.5 * sum(i-16) = 0.5 * (-16) = -8.
    #[test]
    fn q8_0_hand_computed() {
        let mut blk = vec![0u8; 34];
        blk[0..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        for i in 0..32 {
            blk[2 + i] = (i as i8 - 16) as u8;
        }
        let w = QMatrix::new(GgmlType::Q8_0, 1, 32, &blk).unwrap();
        let x = [1.0f32; 32];
        for path in [KernelPath::Scalar, KernelPath::Best] {
            let mut y = [0f32; 1];
            matmul(&w, &x, 1, &mut y, path);
            assert!((y[0] + 8.0).abs() < 1e-3, "{path:?}: {}", y[0]);
        }
    }

    /// Every kernel against the f32 dot of the dequantized row with the unquantized activations: the error
    /// is bounded by the activation quantization (8 bits) and scalar and SIMD agree closely.
    #[test]
    fn kernels_match_dequantized_reference_and_simd_matches_scalar() {
        let mut seed = 42u64;
        // (1024 cols, 30 tokens): several L1 token chunks of 12 plus a remainder tile.
        for (ty, (rows, cols, n)) in SUPPORTED_TYPES.iter().flat_map(|t| [(*t, (37, 512, 6)), (*t, (9, 1024, 30)), (*t, (5, 256, 1)), (*t, (64, 512, 9))]) {
            let data = random_matrix(ty, rows, cols, &mut seed);
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed)).collect();
            let mut ys = vec![0f32; n * rows];
            let mut yb = vec![0f32; n * rows];
            matmul(&w, &x, n, &mut ys, KernelPath::Scalar);
            matmul(&w, &x, n, &mut yb, KernelPath::Best);
            let mut wr = vec![0f32; cols];
            for r in 0..rows {
                w.dequantize_row(r, &mut wr);
                let norm: f32 = wr.iter().map(|v| v * v).sum::<f32>().sqrt();
                for t in 0..n {
                    let xr = &x[t * cols..(t + 1) * cols];
                    let exact: f32 = wr.iter().zip(xr).map(|(a, b)| a * b).sum();
                    let (s, b) = (ys[t * rows + r], yb[t * rows + r]);
                    // 8-bit activations: |err| <~ |w| * |x quant error| ~ |w| * sqrt(cols) * (1/127)/sqrt(12)...
                    let tol = if w.wants_q8() { 0.01 * norm * (cols as f32).sqrt() / 10.0 } else { 1e-3 * (1.0 + norm) };
                    assert!((s - exact).abs() <= tol, "{ty} scalar r{r} t{t}: {s} vs {exact} (tol {tol})");
                    // The SIMD path also quantizes activations with the AVX2 quantizer, whose rounding of
                    // exact ties (to even) may differ by one step from the scalar one (away from zero).
                    assert!((b - s).abs() <= 2e-3 * (1.0 + s.abs()), "{ty} simd r{r} t{t}: {b} vs scalar {s}");
                }
            }
        }
    }

    /// Regression test of the scoring bug of 2026-11-30 (KV-cache reuse and a full prefill differed by up to
    /// 0.11 nats): a (row, token) output must have the same bits whatever the batch it is computed in (1 to
    /// 13 tokens, any offset), on 1 or 2 threads, for every type and both kernel paths. The AVX2 Q4 kernels
    /// used to sum in a different order for batches under 8 tokens than for 8 or more, and the model
    /// amplifies such last-bit differences through the 8-bit activation quantization of later layers.
    #[test]
    fn kernels_are_batch_invariant() {
        let mut seed = 17u64;
        let pools: Vec<rayon::ThreadPool> = [1, 2].iter().map(|&t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap()).collect();
        // 37 rows: groups of 8 plus a remainder; 45 rows: a task of 32 and one of 13.
        for (ty, rows) in SUPPORTED_TYPES.iter().flat_map(|t| [(*t, 37usize), (*t, 45)]) {
            let cols = 256;
            let n = 13;
            let data = random_matrix(ty, rows, cols, &mut seed);
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let mut x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed)).collect();
            x[7] = 40.0; // an outlier, as real activations have
            for path in [KernelPath::Scalar, KernelPath::Best] {
                let mut all = vec![0f32; n * rows];
                pools[0].install(|| matmul(&w, &x, n, &mut all, path));
                for pool in &pools {
                    for start in 0..n {
                        for len in 1..=n - start {
                            let mut y = vec![0f32; len * rows];
                            pool.install(|| matmul(&w, &x[start * cols..(start + len) * cols], len, &mut y, path));
                            for (i, (a, b)) in y.iter().zip(&all[start * rows..(start + len) * rows]).enumerate() {
                                assert!(a.to_bits() == b.to_bits(), "{ty} {path:?} rows {rows} tokens {start}..{}: token {} row {}: {a} vs {b} in the full batch", start + len, start + i / rows, i % rows);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The AVX2 Q4_0 / Q4_1 kernels (8-row interleaved, 2x4 and 8x1 tiles) give the scalar kernel's bits
    /// on the same quantized activations (they follow its order of operations: per block, a fused
    /// multiply-add of the exact integer sum, then of the minimum term).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn simd_q4_kernels_equal_scalar_bit_for_bit() {
        if !has_avx2() {
            return;
        }
        let mut seed = 23u64;
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1] {
            for (rows, cols, n) in [(37usize, 256usize, 1usize), (37, 256, 3), (45, 512, 6), (64, 256, 8), (45, 256, 13)] {
                let data = random_matrix(ty, rows, cols, &mut seed);
                let w = QMatrix::new(ty, rows, cols, &data).unwrap();
                let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed) * 4.0).collect();
                let mut y = vec![0f32; n * rows];
                matmul(&w, &x, n, &mut y, KernelPath::Best);
                let mut qb = vec![BlockQ8::default(); n * cols / 32];
                unsafe { avx2::quantize_row_q8(&x, &mut qb) };
                let nb = cols / 32;
                for t in 0..n {
                    for r in 0..rows {
                        let s = dot_q8_scalar(ty, w.row(r), &qb[t * nb..(t + 1) * nb]);
                        assert_eq!(y[t * rows + r].to_bits(), s.to_bits(), "{ty} {rows}x{cols} n {n}: token {t} row {r}: {} vs scalar {s}", y[t * rows + r]);
                    }
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn simd_activation_quantizer_matches_scalar() {
        if !has_avx2() {
            return;
        }
        let mut seed = 5u64;
        let mut x: Vec<f32> = (0..32 * 64).map(|_| lcg(&mut seed) * 3.0).collect();
        x[32..64].fill(0.0); // all-zero block
        x[64] = 127.0; // exact steps
        let (mut a, mut b) = (vec![BlockQ8::default(); 64], vec![BlockQ8::default(); 64]);
        quantize_row_q8(&x, &mut a);
        unsafe { avx2::quantize_row_q8(&x, &mut b) };
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert_eq!(p.d, q.d, "block {i}");
            for j in 0..32 {
                assert!((p.qs[j] as i32 - q.qs[j] as i32).abs() <= 1, "block {i} elem {j}: {} vs {}", p.qs[j], q.qs[j]);
            }
            let sa: i32 = p.qs.iter().map(|v| *v as i32).sum();
            assert!((p.s - q.s).abs() <= p.d * 4.0 + 1e-3 * sa.abs() as f32 * p.d, "block {i}: s {} vs {}", p.s, q.s);
        }
        assert_eq!(b[1].d, 0.0);
        assert!(b[1].qs.iter().all(|v| *v == 0));
    }

    /// This module's block decoding (used by the kernels) against `quant::dequant` (bit-exact with gguf-py).
    #[test]
    fn block_decoding_matches_quant_dequant() {
        let mut seed = 11u64;
        for ty in SUPPORTED_TYPES {
            let cols = 512;
            let data = random_matrix(ty, 3, cols, &mut seed);
            let w = QMatrix::new(ty, 3, cols, &data).unwrap();
            let expected = crate::quant::dequant::dequantize_to_vec(ty, &data).unwrap();
            let mut got = vec![0f32; cols];
            for r in 0..3 {
                w.dequantize_row(r, &mut got);
                for (i, (a, b)) in got.iter().zip(&expected[r * cols..(r + 1) * cols]).enumerate() {
                    assert!(a == b || (a - b).abs() <= 1e-6 * b.abs(), "{ty} row {r} elem {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert_eq!(QMatrix::new(GgmlType::Q2_K, 1, 256, &[0; 84]).unwrap_err(), KernelError::UnsupportedType(GgmlType::Q2_K));
        assert!(matches!(QMatrix::new(GgmlType::Q8_0, 1, 33, &[0; 34]), Err(KernelError::RowNotBlockAligned { .. })));
        assert!(matches!(QMatrix::new(GgmlType::Q8_0, 2, 32, &[0; 34]), Err(KernelError::DataLength { .. })));
    }
}
