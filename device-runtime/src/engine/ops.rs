//! Element-wise operations of the forward pass (f32): RMSNorm, RoPE, softmax, SiLU.
//!
//! Sources: llama.cpp `ggml-cpu/ops.cpp` (`ggml_compute_forward_rms_norm_f32`, `rope_f32`, `soft_max_f32`) and
//! the LLaMA paper; llama2.c `run.c` for the plain formulation.

/// RMSNorm of each row of `x` (`n x d`, row-major), in place... into `out`: `out = x / sqrt(mean(x²) + eps) * w`.
/// `w` has `d` elements. The mean is accumulated in f64 (as ggml's `ggml_float`).
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let d = w.len();
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let ss: f64 = xr.iter().map(|v| (*v as f64) * (*v as f64)).sum();
        let scale = 1.0 / ((ss / d as f64) as f32 + eps).sqrt();
        for ((o, v), g) in o.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// RoPE rotation table for one position: `(cos, sin)` of `pos * base^(-2i/n_dims)` for `i in 0..n_dims/2`.
pub fn rope_table(pos: usize, n_dims: usize, base: f32, out: &mut Vec<(f32, f32)>) {
    out.clear();
    for i in 0..n_dims / 2 {
        let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / n_dims as f64);
        out.push((theta.cos() as f32, theta.sin() as f32));
    }
}

/// Apply RoPE in place to every head of `x` (`n_heads x head_dim`), rotating the first `2 * table.len()`
/// dimensions of each head. `neox = false`: pairs `(x[2i], x[2i+1])` (ggml `LLAMA_ROPE_TYPE_NORM`, used
/// by `llama`/`deci`); `neox = true`: pairs `(x[i], x[i + n_dims/2])` (`LLAMA_ROPE_TYPE_NEOX`).
pub fn rope(x: &mut [f32], head_dim: usize, table: &[(f32, f32)], neox: bool) {
    let half = table.len();
    for h in x.chunks_exact_mut(head_dim) {
        for (i, (c, s)) in table.iter().enumerate() {
            let (a, b) = if neox { (i, i + half) } else { (2 * i, 2 * i + 1) };
            let (x0, x1) = (h[a], h[b]);
            h[a] = x0 * c - x1 * s;
            h[b] = x0 * s + x1 * c;
        }
    }
}

/// `sum_i a_i b_i` in f32 with 8 partial sums (vectorizes without reassociation flags).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Four dot products `q · k_j` (`j = 0..4`) at once: independent accumulators, so the FMAs of the four
/// (and of the 4 partial sums of each) overlap instead of waiting on one another.
#[inline(always)]
fn dot4(q: &[f32], k: [&[f32]; 4]) -> [f32; 4] {
    let n = q.len();
    let n8 = n / 8 * 8;
    let mut acc = [[0f32; 8]; 4];
    let mut i = 0;
    while i < n8 {
        let qc = &q[i..i + 8];
        for j in 0..4 {
            let kc = &k[j][i..i + 8];
            for l in 0..8 {
                acc[j][l] += qc[l] * kc[l];
            }
        }
        i += 8;
    }
    let mut out = [0f32; 4];
    for j in 0..4 {
        out[j] = acc[j].iter().sum::<f32>() + (n8..n).map(|l| q[l] * k[j][l]).sum::<f32>();
    }
    out
}

/// Attention of one query head over cached positions `0..len` (causal: the caller passes only the
/// visible ones): `out = softmax(scale * q · K_pᵀ) V`, where position `p`'s key is
/// `kc[p*stride + off ..][..hd]` and its value `vc[p*stride + off ..][..hd]` (`hd = q.len() = out.len()`).
/// `sc` is scratch for the `len` scores. Source: the LLaMA attention (Touvron et al. 2023), llama.cpp
/// `ggml_compute_forward_flash_attn_ext_f16` (one query row at a time).
/// On x86_64 with AVX2+FMA (checked at run time) and `hd % 8 == 0`, an intrinsics version runs (four
/// positions' scores at once; the weighted sum of values kept in registers); it sums in another order
/// and with fused multiply-adds, so it differs from the portable version by rounding only.
#[allow(clippy::too_many_arguments)]
pub fn attend(q: &[f32], kc: &[f32], vc: &[f32], stride: usize, off: usize, len: usize, scale: f32, out: &mut [f32], sc: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::dot::has_avx2() {
        // SAFETY: AVX2+FMA+F16C detected.
        unsafe { attend_avx2(q, kc, vc, stride, off, len, scale, out, sc) };
        return;
    }
    attend_impl(q, kc, vc, stride, off, len, scale, out, sc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn attend_avx2(q: &[f32], kc: &[f32], vc: &[f32], stride: usize, off: usize, len: usize, scale: f32, out: &mut [f32], sc: &mut Vec<f32>) {
    use std::arch::x86_64::*;
    let hd = q.len();
    if hd % 8 != 0 {
        return attend_impl(q, kc, vc, stride, off, len, scale, out, sc);
    }
    assert!(len == 0 || (len - 1) * stride + off + hd <= kc.len().min(vc.len()), "attend: cache too short");
    // SAFETY: every access below is within q (hd), out (hd) and kc/vc rows p < len (checked above).
    unsafe {
        let key = |p: usize| kc.as_ptr().add(p * stride + off);
        sc.clear();
        sc.reserve(len);
        let mut p = 0;
        while p + 4 <= len {
            let mut a = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i < hd {
                let qv = _mm256_loadu_ps(q.as_ptr().add(i));
                for (j, aj) in a.iter_mut().enumerate() {
                    *aj = _mm256_fmadd_ps(qv, _mm256_loadu_ps(key(p + j).add(i)), *aj);
                }
                i += 8;
            }
            let h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
            let s4 = _mm_mul_ps(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)), _mm_set1_ps(scale));
            let mut v = [0f32; 4];
            _mm_storeu_ps(v.as_mut_ptr(), s4);
            sc.extend_from_slice(&v);
            p += 4;
        }
        while p < len {
            sc.push(dot(q, std::slice::from_raw_parts(key(p), hd)) * scale);
            p += 1;
        }
        softmax_avx2(sc);
        // out = sum_p w_p v_p, 64 dimensions (8 registers) at a time, accumulated in registers.
        let mut c = 0;
        while c < hd {
            let w = (hd - c).min(64) / 8;
            let mut acc = [_mm256_setzero_ps(); 8];
            for (p, wp) in sc.iter().enumerate() {
                let wv = _mm256_set1_ps(*wp);
                let v = vc.as_ptr().add(p * stride + off + c);
                for (l, al) in acc.iter_mut().enumerate().take(w) {
                    *al = _mm256_fmadd_ps(wv, _mm256_loadu_ps(v.add(8 * l)), *al);
                }
            }
            for (l, al) in acc.iter().enumerate().take(w) {
                _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * l), *al);
            }
            c += 8 * w;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_impl(q: &[f32], kc: &[f32], vc: &[f32], stride: usize, off: usize, len: usize, scale: f32, out: &mut [f32], sc: &mut Vec<f32>) {
    let hd = q.len();
    let key = |p: usize| &kc[p * stride + off..p * stride + off + hd];
    sc.clear();
    let mut p = 0;
    while p + 4 <= len {
        let d = dot4(q, [key(p), key(p + 1), key(p + 2), key(p + 3)]);
        sc.extend(d.iter().map(|v| v * scale));
        p += 4;
    }
    while p < len {
        sc.push(dot(q, key(p)) * scale);
        p += 1;
    }
    softmax(sc);
    // out = sum_p w_p v_p, 32 dimensions at a time kept in registers across all positions.
    let mut c = 0;
    while c < hd {
        let w = (hd - c).min(32);
        let mut acc = [0f32; 32];
        for (p, wp) in sc.iter().enumerate() {
            let v = &vc[p * stride + off + c..p * stride + off + c + w];
            if w == 32 {
                for l in 0..32 {
                    acc[l] += wp * v[l];
                }
            } else {
                for l in 0..w {
                    acc[l] += wp * v[l];
                }
            }
        }
        out[c..c + w].copy_from_slice(&acc[..w]);
        c += w;
    }
}

/// `y += a * x`.
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// Softmax in place (max-subtracted).
#[inline(always)]
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// SwiGLU gate: `g[i] = silu(g[i]) * u[i]`, `silu(z) = z / (1 + e^-z)`. On x86_64 with AVX2+FMA
/// (checked at run time) every element goes through [`v_expf`] (8 at a time, the last ones padded), so the
/// result of an element does not depend on its position or the slice length; it differs from
/// [`swiglu_scalar`] by the exponential's rounding (under 2 ulp).
pub fn swiglu(g: &mut [f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::dot::has_avx2() {
        // SAFETY: AVX2+FMA+F16C detected.
        unsafe { swiglu_avx2(g, u) };
        return;
    }
    swiglu_scalar(g, u)
}

/// [`swiglu`] with libm's `exp` (the portable reference).
pub fn swiglu_scalar(g: &mut [f32], u: &[f32]) {
    for (a, b) in g.iter_mut().zip(u) {
        *a = *a / (1.0 + (-*a).exp()) * b;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn swiglu_avx2(g: &mut [f32], u: &[f32]) {
    use std::arch::x86_64::*;
    let n = g.len().min(u.len());
    let silu_mul = |x: __m256, y: __m256| {
        let e = v_expf(_mm256_sub_ps(_mm256_setzero_ps(), x));
        _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e)), y)
    };
    let mut i = 0;
    // SAFETY: i + 8 <= n for the loads and stores in the loop; the tail goes through local arrays.
    unsafe {
        while i + 8 <= n {
            let r = silu_mul(_mm256_loadu_ps(g.as_ptr().add(i)), _mm256_loadu_ps(u.as_ptr().add(i)));
            _mm256_storeu_ps(g.as_mut_ptr().add(i), r);
            i += 8;
        }
        if i < n {
            let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
            a[..n - i].copy_from_slice(&g[i..n]);
            b[..n - i].copy_from_slice(&u[i..n]);
            _mm256_storeu_ps(a.as_mut_ptr(), silu_mul(_mm256_loadu_ps(a.as_ptr()), _mm256_loadu_ps(b.as_ptr())));
            g[i..n].copy_from_slice(&a[..n - i]);
        }
    }
}

/// `e^x` of 8 lanes with AVX2+FMA: range reduction `x = n ln2 + b` (`ln2` in two parts), a degree-5
/// polynomial for `e^b - 1`, and the scaling by `2^n` split in two when `|n| > 126` so that results
/// overflow to `inf` above about 88.7 and underflow (through subnormals) to 0 below about -103.
/// Maximum error about 1.5 ulp. Source: ggml `ggml_v_expf` (ggml-cpu/vec.h, MIT), after ARM's
/// optimized-routines `expf`.
///
/// # Safety
/// The CPU must support AVX2 and FMA (check with [`crate::quant::dot::has_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub fn v_expf(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let r = c(0x4b40_0000); // 0x1.8p23: rounds n to an integer in the low mantissa bits
    let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), r); // x / ln2 + r
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), _mm256_fnmadd_ps(n, c(0x3f31_7200), x)); // x - n ln2
    let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0)))); // 2^n
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let big = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0)));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)), u, _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb))),
        u,
        _mm256_mul_ps(c(0x3f7f_fff6), b),
    ); // e^b - 1
    if _mm256_movemask_ps(_mm256_castsi256_ps(big)) == 0 {
        return _mm256_fmadd_ps(j, k, k);
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let huge = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0)));
    let scaled = _mm256_or_ps(
        _mm256_and_ps(_mm256_castsi256_ps(big), _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
        _mm256_andnot_ps(_mm256_castsi256_ps(big), _mm256_fmadd_ps(k, j, k)),
    );
    _mm256_or_ps(
        _mm256_and_ps(_mm256_castsi256_ps(huge), _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(_mm256_castsi256_ps(huge), scaled),
    )
}

/// Softmax in place with [`v_expf`] (8 lanes; the last ones padded, so every value goes through the same
/// code). Same contract as [`softmax`]; differs from it by the exponential's rounding and the order of
/// the sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn softmax_avx2(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len();
    if n == 0 {
        return;
    }
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mv = _mm256_set1_ps(max);
    let mut sum = _mm256_setzero_ps();
    let mut i = 0;
    // SAFETY: i + 8 <= n in the loop; the tail goes through a local array.
    unsafe {
        while i + 8 <= n {
            let e = v_expf(_mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), mv));
            _mm256_storeu_ps(x.as_mut_ptr().add(i), e);
            sum = _mm256_add_ps(sum, e);
            i += 8;
        }
        if i < n {
            let mut a = [f32::NEG_INFINITY; 8];
            a[..n - i].copy_from_slice(&x[i..]);
            // Padding: -inf - max is -inf; clamp to a finite value whose exponential is 0.
            let v = _mm256_max_ps(_mm256_sub_ps(_mm256_loadu_ps(a.as_ptr()), mv), _mm256_set1_ps(-1e30));
            let e = v_expf(v);
            _mm256_storeu_ps(a.as_mut_ptr(), e);
            x[i..].copy_from_slice(&a[..n - i]);
            sum = _mm256_add_ps(sum, e);
        }
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), sum);
        let inv = 1.0 / l.iter().sum::<f32>();
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
}

/// `log softmax(logits)[target]`, computed stably in f64 (for perplexity).
pub fn log_softmax_at(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
    let sum: f64 = logits.iter().map(|v| (*v as f64 - max).exp()).sum();
    logits[target] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_hand_computed() {
        // x = [3, 4]: mean(x²) = 12.5, 1/sqrt(12.5) = 0.28284271
        let mut o = [0f32; 2];
        rmsnorm(&mut o, &[3.0, 4.0], &[1.0, 2.0], 0.0);
        assert!((o[0] - 0.848_528_1).abs() < 1e-6 && (o[1] - 2.262_741_7).abs() < 1e-6, "{o:?}");
    }

    #[test]
    fn rope_rotates_pairs() {
        // pos 1, n_dims 2, base anything: theta = 1 rad on the single pair.
        let mut t = Vec::new();
        rope_table(1, 2, 10000.0, &mut t);
        let mut x = [1.0f32, 0.0];
        rope(&mut x, 2, &t, false);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
        // neox with 4 dims: pairs (0,2) and (1,3); second pair theta = base^(-1/2) = 0.01 at base 10000.
        rope_table(1, 4, 10000.0, &mut t);
        let mut x = [1.0f32, 1.0, 0.0, 0.0];
        rope(&mut x, 4, &t, true);
        assert!((x[2] - 1f32.sin()).abs() < 1e-6 && (x[3] - 0.01f32.sin()).abs() < 1e-6, "{x:?}");
    }

    /// `attend` against the plain formulation (scores, softmax, weighted sum), head_dim 64 and 20 (tails).
    #[test]
    fn attend_matches_plain_attention() {
        let mut seed = 3u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (hd, len) in [(64usize, 11usize), (20, 6), (64, 1)] {
            let (stride, off) = (3 * hd, hd);
            let q: Vec<f32> = (0..hd).map(|_| rnd()).collect();
            let kc: Vec<f32> = (0..len * stride).map(|_| rnd()).collect();
            let vc: Vec<f32> = (0..len * stride).map(|_| rnd()).collect();
            let mut out = vec![0f32; hd];
            attend(&q, &kc, &vc, stride, off, len, 0.125, &mut out, &mut Vec::new());
            let mut s: Vec<f64> = (0..len).map(|p| (0..hd).map(|i| q[i] as f64 * kc[p * stride + off + i] as f64).sum::<f64>() * 0.125).collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
            s.iter_mut().for_each(|v| *v = (*v - m).exp() / z);
            for i in 0..hd {
                let e: f64 = (0..len).map(|p| s[p] * vc[p * stride + off + i] as f64).sum();
                assert!((out[i] as f64 - e).abs() < 1e-5, "hd {hd} len {len} dim {i}: {} vs {e}", out[i]);
            }
        }
    }

    /// The vectorized exponential against f64 `exp` over the whole useful range (and past it: overflow to
    /// inf, underflow to 0), and the AVX2 SwiGLU / softmax against the scalar ones.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vectorized_exp_swiglu_softmax_match_scalar() {
        use std::arch::x86_64::*;
        if !crate::quant::dot::has_avx2() {
            return;
        }
        let mut xs: Vec<f32> = (0..200_000).map(|i| -110.0 + i as f32 * 0.0011).collect();
        xs.extend([0.0, -0.0, 88.7, 89.0, 200.0, -200.0, -1e30, 1e-30]);
        for c in xs.chunks(8) {
            let mut a = [0f32; 8];
            a[..c.len()].copy_from_slice(c);
            let mut o = [0f32; 8];
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v_expf(_mm256_loadu_ps(a.as_ptr()))) };
            for (x, got) in a.iter().zip(o).take(c.len()) {
                let want = (*x as f64).exp();
                if want > f32::MAX as f64 {
                    assert!(got == f32::INFINITY, "exp({x}) = {got}, want inf");
                } else if want < 1e-38 {
                    assert!(got.abs() <= 2e-38, "exp({x}) = {got}, want {want}");
                } else {
                    let rel = ((got as f64 - want) / want).abs();
                    assert!(rel < 3.0 * f32::EPSILON as f64, "exp({x}) = {got}, want {want} (rel {rel:e})");
                }
            }
        }
        let g0: Vec<f32> = (0..1541).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3).collect();
        let u: Vec<f32> = (0..1541).map(|i| ((i * 13 % 29) as f32 - 14.0) * 0.1).collect();
        let (mut a, mut b) = (g0.clone(), g0.clone());
        swiglu(&mut a, &u);
        swiglu_scalar(&mut b, &u);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 4.0 * f32::EPSILON * y.abs().max(1e-30), "swiglu {i}: {x} vs {y}");
        }
        for n in [1usize, 5, 8, 13, 64] {
            let v: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) * 1.7).collect();
            let (mut a, mut b) = (v.clone(), v.clone());
            unsafe { softmax_avx2(&mut a) };
            softmax(&mut b);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-6 * y.max(1e-30) + 1e-9, "softmax n {n}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn softmax_and_log_softmax() {
        let mut x = [0.0f32, 2f32.ln()];
        softmax(&mut x);
        assert!((x[0] - 1.0 / 3.0).abs() < 1e-6 && (x[1] - 2.0 / 3.0).abs() < 1e-6);
        assert!((log_softmax_at(&[0.0, 2f32.ln()], 1) - (2.0f64 / 3.0).ln()).abs() < 1e-6);
    }
}
