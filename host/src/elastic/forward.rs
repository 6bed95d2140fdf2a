//! The elastic forward pass: [`ElasticModel::hidden`], [`ElasticModel::head`], [`ElasticModel::forward`].
//!
//! The same computation as the runtime's `engine::session::forward` (and llama.cpp's `llm_build_llama`),
//! batched over `B` sequences of `T` positions and written with burn tensor operations so that autodiff can
//! run it backwards:
//!
//! ```text
//! x = token_embd[tokens]                                              [N = B*T, d]
//! for each kept layer l (SubnetConfig.layers[i]) with FFN f and k KV groups (g query heads each):
//!   if k > 0:  h = rmsnorm(x) * attn_norm
//!              q = h · Wq[..k*g*hd]ᵀ, K = h · Wk[..k*hd]ᵀ, V = h · Wv[..k*hd]ᵀ; RoPE(q, K) at positions 0..T
//!              per query head j (KV group j / g): o_j = softmax(q_j K_jᵀ / sqrt(hd) + causal mask) V_j
//!              x += o · Wo[:, ..k*g*hd]ᵀ
//!   if f > 0:  h = rmsnorm(x) * ffn_norm;  x += (silu(h · Wg[..f]ᵀ) * (h · Wu[..f]ᵀ)) · Wd[:, ..f]ᵀ
//! hidden = rmsnorm(x) * output_norm;  logits = hidden · outputᵀ (token_embd when tied)  [N, n_vocab]
//! ```

use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use device_runtime::arch::SubnetConfig;

use super::{ElasticBlock, ElasticError, ElasticModel, TokenBatch};

/// Additive attention bias for a causal mask: 0 where allowed, this where masked. Large and finite rather
/// than -inf so that a row with no allowed key (never produced by right padding) gives no NaN.
const MASKED: f32 = -1.0e9;

/// RMSNorm over the last dim of `x` `[n, d]` with weight `w` `[d]`: `x / sqrt(mean(x²) + eps) * w`.
fn rmsnorm(x: Tensor<2>, w: Tensor<1>, eps: f32) -> Tensor<2> {
    let ms = x.clone().square().mean_dim(1); // [n, 1]
    x * ms.add_scalar(eps).sqrt().recip() * w.unsqueeze_dim::<2>(0)
}

/// Tables for RoPE over `t` positions and `hd` dims, both `[t, hd]`: `cos` repeats `cos θ_i` on the pair of
/// dims `i` rotates, `sin` holds `-sin θ_i` on the first and `+sin θ_i` on the second element of the pair,
/// so that `rope(x) = x * cos + pairswap(x) * sin`. Dims beyond `rope_dim` get cos 1, sin 0 (not rotated).
/// `θ_i = pos * base^(-2i/rope_dim)`, computed in f64 as the runtime's `ops::rope_table`.
fn rope_tables(t: usize, hd: usize, rope_dim: usize, base: f32, neox: bool, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let mut cos = vec![1f32; t * hd];
    let mut sin = vec![0f32; t * hd];
    let half = rope_dim / 2;
    for p in 0..t {
        for i in 0..half {
            let theta = p as f64 * (base as f64).powf(-2.0 * i as f64 / rope_dim as f64);
            let (c, s) = (theta.cos() as f32, theta.sin() as f32);
            let (a, b) = if neox { (i, i + half) } else { (2 * i, 2 * i + 1) };
            cos[p * hd + a] = c;
            cos[p * hd + b] = c;
            sin[p * hd + a] = -s;
            sin[p * hd + b] = s;
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [t, hd]), device),
        Tensor::from_data(TensorData::new(sin, [t, hd]), device),
    )
}

/// Per-forward constants: positions' RoPE tables and the causal mask.
struct Ctx {
    b: usize,
    t: usize,
    hd: usize,
    rope_dim: usize,
    neox: bool,
    eps: f32,
    cos: Tensor<4>, // [1, T, 1, hd]
    sin: Tensor<4>, // [1, T, 1, hd]
    mask: Tensor<4>, // [1, 1, T, T]
}

impl Ctx {
    /// RoPE of `x` `[B, T, H, hd]`: `x * cos + pairswap(x) * sin`, where `pairswap` exchanges the two
    /// elements of every rotated pair (adjacent dims for the NORM variant, halves for NeoX).
    fn rope(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, t, h, hd] = x.dims();
        let swapped = if self.neox {
            let half = self.rope_dim / 2;
            let lo = x.clone().narrow(3, 0, half);
            let hi = x.clone().narrow(3, half, half);
            let mut parts = vec![hi, lo];
            if self.rope_dim < hd {
                parts.push(x.clone().narrow(3, self.rope_dim, hd - self.rope_dim));
            }
            Tensor::cat(parts, 3)
        } else {
            x.clone().reshape([b, t, h, hd / 2, 2]).flip([4]).reshape([b, t, h, hd])
        };
        x * self.cos.clone() + swapped * self.sin.clone()
    }
}

impl ElasticModel {
    /// The final hidden states (after `output_norm`) of sub-network `subnet` on `batch`: `[B*T, d]`, row
    /// `b*T + t` for position `t` of sequence `b` (padded positions included). Feed rows to
    /// [`ElasticModel::head`] for logits; scoring only some positions saves most of the head's cost.
    ///
    /// Errors: [`ElasticError::Arch`] when `subnet` does not fit the model ([`SubnetConfig::validate`]),
    /// [`ElasticError::Batch`] for a token id outside the vocabulary.
    pub fn hidden(&self, batch: &TokenBatch, subnet: &SubnetConfig) -> Result<Tensor<2>, ElasticError> {
        let c = &self.config;
        subnet.validate(c)?;
        if let Some(&bad) = batch.tokens().iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(ElasticError::Batch(format!("token id {bad} is outside the vocabulary of {}", c.n_vocab)));
        }
        let device = self.device();
        let (b, t, hd) = (batch.batch(), batch.seq_len(), c.head_dim);
        let ids: Vec<i64> = batch.tokens().iter().map(|&x| x as i64).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [b * t]), &device);
        let mut x = self.tok_embd.val().select(0, ids); // [N, d]

        let (cos, sin) = rope_tables(t, hd, c.rope_dim, c.rope_freq_base, c.rope_neox, &device);
        let mut mask = vec![0f32; t * t];
        for q in 0..t {
            mask[q * t + q + 1..(q + 1) * t].fill(MASKED);
        }
        let ctx = Ctx {
            b,
            t,
            hd,
            rope_dim: c.rope_dim,
            neox: c.rope_neox,
            eps: c.rms_eps,
            cos: cos.reshape([1, t, 1, hd]),
            sin: sin.reshape([1, t, 1, hd]),
            mask: Tensor::from_data(TensorData::new(mask, [1, 1, t, t]), &device),
        };
        for ((&l, &ffn), &kv) in subnet.layers.iter().zip(&subnet.ffn).zip(&subnet.kv_heads) {
            let blk = &self.blocks[l];
            if kv > 0 {
                x = x.clone() + attention(blk, &ctx, x, kv, c.gqa_group(l));
            }
            if ffn > 0 {
                x = x.clone() + feed_forward(blk, &ctx, x, ffn);
            }
        }
        Ok(rmsnorm(x, self.output_norm.val(), c.rms_eps))
    }

    /// The output head on hidden states `[n, d]`: logits `[n, n_vocab]` (`output.weight`, or `token_embd`
    /// when tied).
    pub fn head(&self, hidden: Tensor<2>) -> Tensor<2> {
        let w = match &self.output {
            Some(o) => o.val(),
            None => self.tok_embd.val(),
        };
        hidden.matmul(w.transpose())
    }

    /// Logits of sub-network `subnet` on `batch`: `[B, T, n_vocab]` (the logits at position `t` predict
    /// token `t + 1`). Padded positions hold values that mean nothing.
    ///
    /// Errors: as [`ElasticModel::hidden`].
    pub fn forward(&self, batch: &TokenBatch, subnet: &SubnetConfig) -> Result<Tensor<3>, ElasticError> {
        let h = self.hidden(batch, subnet)?;
        Ok(self.head(h).reshape([batch.batch(), batch.seq_len(), self.config.n_vocab]))
    }
}

/// First `n` rows of a `[rows, cols]` weight (a view). The whole weight is returned as it is, not narrowed:
/// burn's slice records a backward step that allocates a zero tensor of the weight's full shape and copies
/// the gradient into it (burn-autodiff 0.22.1 `float_slice`), which for the full network is one needless
/// allocation and copy per weight and pass.
fn rows(w: Tensor<2>, n: usize) -> Tensor<2> {
    if n == w.dims()[0] { w } else { w.narrow(0, 0, n) }
}

/// First `n` columns of a `[rows, cols]` weight (a view); the whole weight as it is (see [`rows`]).
fn cols(w: Tensor<2>, n: usize) -> Tensor<2> {
    if n == w.dims()[1] { w } else { w.narrow(1, 0, n) }
}

/// The attention sub-block's output `[N, d]` (before the residual add) with the first `kv` KV groups of
/// `g` query heads each.
fn attention(blk: &ElasticBlock, ctx: &Ctx, x: Tensor<2>, kv: usize, g: usize) -> Tensor<2> {
    let (b, t, hd) = (ctx.b, ctx.t, ctx.hd);
    let nq = kv * g;
    let w = |p: &Option<burn::module::Param<Tensor<2>>>| p.as_ref().expect("attention weights of a layer with KV heads").val();
    let h = rmsnorm(x, blk.attn_norm.as_ref().expect("attn_norm").val(), ctx.eps);
    let q = h.clone().matmul(rows(w(&blk.wq), nq * hd).transpose()); // [N, nq*hd]
    let k = h.clone().matmul(rows(w(&blk.wk), kv * hd).transpose()); // [N, kv*hd]
    let v = h.matmul(rows(w(&blk.wv), kv * hd).transpose());
    let q = ctx.rope(q.reshape([b, t, nq, hd]));
    let k = ctx.rope(k.reshape([b, t, kv, hd]));
    // Query head j = group * g + i belongs to KV group j / g: lay the g heads of a group along the rows so one
    // batched product per group serves them all, with no copy of K or V.
    let q = q.reshape([b, t, kv, g, hd]).permute([0, 2, 3, 1, 4]).reshape([b, kv, g * t, hd]);
    let k = k.swap_dims(1, 2); // [B, kv, T, hd]
    let v = v.reshape([b, t, kv, hd]).swap_dims(1, 2);
    let scores = q.matmul(k.transpose()).mul_scalar(1.0 / (hd as f32).sqrt()); // [B, kv, g*T, T]
    let scores = scores.reshape([b, kv * g, t, t]) + ctx.mask.clone();
    let p = softmax(scores, 3).reshape([b, kv, g * t, t]);
    let o = p.matmul(v); // [B, kv, g*T, hd]
    let o = o.reshape([b, kv, g, t, hd]).permute([0, 3, 1, 2, 4]).reshape([b * t, nq * hd]);
    o.matmul(cols(w(&blk.wo), nq * hd).transpose())
}

/// The FFN sub-block's output `[N, d]` (before the residual add) with the first `f` neurons.
fn feed_forward(blk: &ElasticBlock, ctx: &Ctx, x: Tensor<2>, f: usize) -> Tensor<2> {
    let w = |p: &Option<burn::module::Param<Tensor<2>>>| p.as_ref().expect("FFN weights of a layer with FFN").val();
    let h = rmsnorm(x, blk.ffn_norm.as_ref().expect("ffn_norm").val(), ctx.eps);
    let gate = h.clone().matmul(rows(w(&blk.gate), f).transpose());
    let up = h.matmul(rows(w(&blk.up), f).transpose());
    (silu(gate) * up).matmul(cols(w(&blk.down), f).transpose())
}
