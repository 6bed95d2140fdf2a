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
#[inline]
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

/// `y += a * x`.
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// Softmax in place (max-subtracted).
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

/// SwiGLU gate: `g[i] = silu(g[i]) * u[i]`, `silu(z) = z / (1 + e^-z)`.
pub fn swiglu(g: &mut [f32], u: &[f32]) {
    for (a, b) in g.iter_mut().zip(u) {
        *a = *a / (1.0 + (-*a).exp()) * b;
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

    #[test]
    fn softmax_and_log_softmax() {
        let mut x = [0.0f32, 2f32.ln()];
        softmax(&mut x);
        assert!((x[0] - 1.0 / 3.0).abs() < 1e-6 && (x[1] - 2.0 / 3.0).abs() < 1e-6);
        assert!((log_softmax_at(&[0.0, 2f32.ln()], 1) - (2.0f64 / 3.0).ln()).abs() < 1e-6);
    }
}
