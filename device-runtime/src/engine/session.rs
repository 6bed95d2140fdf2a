//! A session: the KV cache and the forward pass (batched prefill, token-by-token decode).
//!
//! The forward pass of one batch of `n` tokens at positions `pos..pos+n`, top to bottom (llama.cpp's
//! `llm_build_llama` / `llm_build_deci`):
//!
//! ```text
//! x = token_embd[tokens]                                  [n, d]
//! for each block:
//!   if attention:  h = rmsnorm(x) * attn_norm
//!                  q = h Wqᵀ [n, nh*hd], k = h Wkᵀ, v = h Wvᵀ [n, nkv*hd]; RoPE(q, k) at their positions
//!                  append k, v to the cache; per query head j (group j / (nh/nkv)):
//!                  o_j = softmax(q_j Kᵀ / sqrt(hd), causal) V      x += o Woᵀ
//!   if FFN:        h = rmsnorm(x) * ffn_norm;  x += (silu(h Wgᵀ) * (h Wuᵀ)) Wdᵀ
//! logits = rmsnorm(x) * output_norm · outputᵀ            [n or 1, n_vocab]
//! ```
//!
//! A block with 0 KV heads (or 0 query heads) has no attention, a block with FFN width 0 has no FFN, and a
//! block with neither passes `x` through unchanged. (llama.cpp's `deci` graph skips a whole block, its
//! attention included, when its FFN width is 0; the two agree when both are 0, which is what the sub-networks
//! of this toolkit produce when they drop a layer. A block with attention but no FFN keeps its attention here.)

use super::model::{Mat, Model};
use super::ops;
use super::EngineError;
use crate::quant::dot::{self, KernelPath};
use rayon::prelude::*;

/// Session settings.
#[derive(Clone, Copy, Debug)]
pub struct SessionOptions {
    /// KV cache capacity in tokens (prompt + generated). 0: the model's training context, capped at 4096.
    pub n_ctx: usize,
    /// Worker threads (0: all logical CPUs).
    pub threads: usize,
    /// Tokens per prefill batch (a longer prompt runs in several batches).
    pub n_batch: usize,
    /// Kernels: the fastest this CPU supports, or the portable scalar ones.
    pub kernels: KernelPath,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { n_ctx: 0, threads: 0, n_batch: 512, kernels: KernelPath::Best }
    }
}

/// Most worker threads a session starts (more would only exhaust the OS: every thread has its own stack).
pub const MAX_THREADS: usize = 1024;

/// Memory this machine can still give a process, bytes (`MemAvailable` on Linux, through `sysinfo`); `None`
/// where the OS does not say.
pub fn available_memory_bytes() -> Option<u64> {
    use sysinfo::{MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()));
    Some(sys.available_memory()).filter(|&b| b > 0)
}

/// Refuse to allocate `bytes` (`None`: more than a `u64` holds) for `what` when that is more than the memory
/// available ([`available_memory_bytes`]), before anything is allocated.
///
/// Errors: [`EngineError::OutOfMemory`] naming `what`, the bytes and the bytes available.
pub fn check_memory(what: &str, bytes: Option<u64>) -> Result<(), EngineError> {
    let available = available_memory_bytes();
    match (bytes, available) {
        (None, _) => Err(EngineError::OutOfMemory { what: what.to_string(), bytes: None, available }),
        (Some(b), Some(a)) if b > a => Err(EngineError::OutOfMemory { what: what.to_string(), bytes, available }),
        _ => Ok(()),
    }
}

/// Which positions of a prefill return logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (what generation and llama-bench need): `[n_vocab]`.
    Last,
    /// Every token's (perplexity, scoring): `[n_tokens, n_vocab]`, row-major.
    All,
    /// The tokens from index `i` of this call's `tokens` on (multiple-choice scoring, where only the
    /// continuation's positions need the output head): `[n_tokens - i, n_vocab]`, row-major.
    /// `From(0)` is [`Logits::All`]; `i >= n_tokens` is an error ([`EngineError::Config`]).
    From(usize),
}

/// Receives intermediate activations of [`Session::prefill_observed`] (for importance scores at import:
/// Minitron, Muralidharan et al. 2024). Both methods default to doing nothing. Called once per block and
/// prefill batch, in block order, on the calling thread.
pub trait ActivationObserver: Send {
    /// Block `layer`'s attention output before `attn_output`, `[n_tokens, n_head*head_dim]` row-major (query
    /// head `j` occupies columns `j*head_dim..(j+1)*head_dim`; KV group `j / (n_head/n_head_kv)`).
    fn attention(&mut self, layer: usize, n_tokens: usize, att: &[f32]) {
        let _ = (layer, n_tokens, att);
    }
    /// Block `layer`'s FFN hidden activations `silu(h Wgᵀ) * (h Wuᵀ)` (the input of `ffn_down`),
    /// `[n_tokens, n_ff]` row-major.
    fn ffn_hidden(&mut self, layer: usize, n_tokens: usize, hidden: &[f32]) {
        let _ = (layer, n_tokens, hidden);
    }
    /// The residual stream entering block `layer`, `[n_tokens, n_embd]` row-major; `layer == n_layers` is the
    /// output of the last block (before `output_norm`). ShortGPT's Block Influence of block `l` compares the
    /// streams at `l` and `l + 1`.
    fn residual(&mut self, layer: usize, n_tokens: usize, x: &[f32]) {
        let _ = (layer, n_tokens, x);
    }
}

struct LayerCache {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// A sequence being evaluated: the model, the KV cache (f32, `n_ctx x n_head_kv*head_dim` per block with
/// attention) and a thread pool.
pub struct Session<'m> {
    model: &'m Model,
    n_ctx: usize,
    n_batch: usize,
    pos: usize,
    cache: Vec<LayerCache>,
    pool: rayon::ThreadPool,
    kernels: KernelPath,
}

impl<'m> Session<'m> {
    /// A new session on `model` with an empty KV cache.
    ///
    /// Errors: [`EngineError::Config`] if the thread pool cannot start, `threads` exceeds [`MAX_THREADS`] or
    /// `n_ctx` exceeds the training context;
    /// [`EngineError::OutOfMemory`] if the KV cache ([`Model::kv_cache_bytes`]) is larger than the memory
    /// available (checked before allocating it).
    pub fn new(model: &'m Model, opts: SessionOptions) -> Result<Self, EngineError> {
        let c = &model.config;
        let n_ctx = if opts.n_ctx == 0 { c.n_ctx_train.clamp(1, 4096) } else { opts.n_ctx };
        if c.n_ctx_train > 0 && n_ctx > c.n_ctx_train {
            return Err(EngineError::Config(format!("context {n_ctx} exceeds the model's training context {}", c.n_ctx_train)));
        }
        if opts.threads > MAX_THREADS {
            return Err(EngineError::Config(format!("{} threads is more than {MAX_THREADS}", opts.threads)));
        }
        check_memory(&format!("the KV cache for a context of {n_ctx} tokens"), model.kv_cache_bytes(n_ctx))?;
        let mut cache = Vec::with_capacity(model.layers.len());
        for l in &model.layers {
            let kv = if l.shape.has_attention() { n_ctx * l.shape.n_head_kv * c.head_dim } else { 0 };
            let zeros = |n: usize| -> Result<Vec<f32>, EngineError> {
                let mut v = Vec::new();
                v.try_reserve_exact(n).map_err(|_| EngineError::OutOfMemory {
                    what: format!("the KV cache for a context of {n_ctx} tokens"),
                    bytes: model.kv_cache_bytes(n_ctx),
                    available: available_memory_bytes(),
                })?;
                v.resize(n, 0.0);
                Ok(v)
            };
            cache.push(LayerCache { k: zeros(kv)?, v: zeros(kv)? });
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .build()
            .map_err(|e| EngineError::Config(format!("thread pool: {e}")))?;
        Ok(Session { model, n_ctx, n_batch: opts.n_batch.max(1), pos: 0, cache, pool, kernels: opts.kernels })
    }

    /// Tokens in the KV cache (the position of the next token).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// KV cache capacity in tokens.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes held by the KV cache.
    pub fn kv_cache_bytes(&self) -> usize {
        self.cache.iter().map(|c| (c.k.len() + c.v.len()) * 4).sum()
    }

    /// Worker threads of this session.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Forget the sequence (the cache is overwritten by the next tokens).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Keep only the first `pos` tokens of the KV cache (no-op when `pos >= self.pos()`): the next token is
    /// evaluated at position `pos`. Used by the latency profiler to decode repeatedly at one context length.
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }

    /// Run `tokens` through the model (in batches of `n_batch`), append them to the cache, and return
    /// logits: `[n_vocab]` for [`Logits::Last`], `[tokens.len(), n_vocab]` for [`Logits::All`],
    /// `[tokens.len() - i, n_vocab]` for [`Logits::From(i)`](Logits::From) (the output head runs only there).
    ///
    /// Errors: [`EngineError::EmptyInput`], [`EngineError::ContextFull`] (nothing is evaluated then),
    /// [`EngineError::TokenOutOfRange`], [`EngineError::Config`] for `Logits::From(i)` with `i >= tokens.len()`.
    pub fn prefill(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, EngineError> {
        self.prefill_impl(tokens, logits, None)
    }

    /// [`Session::prefill`] that also hands every block's attention output and FFN hidden activations to
    /// `observer` ([`ActivationObserver`]). Same results and errors as [`Session::prefill`].
    pub fn prefill_observed(
        &mut self,
        tokens: &[u32],
        logits: Logits,
        observer: &mut dyn ActivationObserver,
    ) -> Result<Vec<f32>, EngineError> {
        self.prefill_impl(tokens, logits, Some(observer))
    }

    fn prefill_impl(
        &mut self,
        tokens: &[u32],
        logits: Logits,
        mut observer: Option<&mut dyn ActivationObserver>,
    ) -> Result<Vec<f32>, EngineError> {
        if tokens.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        if self.pos + tokens.len() > self.n_ctx {
            return Err(EngineError::ContextFull { pos: self.pos, n_tokens: tokens.len(), n_ctx: self.n_ctx });
        }
        let nv = self.model.config.n_vocab;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= nv) {
            return Err(EngineError::TokenOutOfRange { token: t, n_vocab: nv });
        }
        // First index of `tokens` whose logits are returned.
        let from = match logits {
            Logits::Last => tokens.len() - 1,
            Logits::All => 0,
            Logits::From(i) if i < tokens.len() => i,
            Logits::From(i) => {
                return Err(EngineError::Config(format!("logits from token {i} of a batch of {}", tokens.len())));
            }
        };
        let mut out = Vec::with_capacity((tokens.len() - from) * nv);
        let nb = self.n_batch;
        for (i, chunk) in tokens.chunks(nb).enumerate() {
            let start = i * nb;
            let first = from.max(start) - start;
            let (want, need) = if first >= chunk.len() {
                (Logits::Last, false)
            } else if first == chunk.len() - 1 {
                (Logits::Last, true)
            } else {
                (Logits::From(first), true)
            };
            let l = self.pool.install(|| {
                let obs = observer.as_deref_mut();
                forward(self.model, &mut self.cache, self.pos, chunk, want, self.kernels, need, obs)
            })?;
            self.pos += chunk.len();
            out.extend_from_slice(&l);
        }
        Ok(out)
    }

    /// Run one token and return its logits `[n_vocab]`. Errors as [`Session::prefill`].
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>, EngineError> {
        self.prefill(&[token], Logits::Last)
    }
}

/// Batches from which the per-token element-wise steps (RMSNorm, RoPE, SwiGLU, residual adds) are split
/// across the pool by tokens (below, waking the pool costs more than the work). Per-token results do not
/// depend on it.
const PAR_MIN_TOKENS: usize = 8;

/// [`ops::rmsnorm`] of `n` rows of `d`, split by rows across the current pool for large batches.
fn rmsnorm_rows(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, d: usize) {
    if x.len() / d >= PAR_MIN_TOKENS {
        out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(o, xr)| ops::rmsnorm(o, xr, w, eps));
    } else {
        ops::rmsnorm(out, x, w, eps);
    }
}

/// `x += o` (residual), split by rows of `d` across the current pool for large batches.
fn add_rows(x: &mut [f32], o: &[f32], d: usize) {
    let add = |(a, b): (&mut [f32], &[f32])| a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
    if x.len() / d >= PAR_MIN_TOKENS {
        x.par_chunks_mut(d).zip(o.par_chunks(d)).for_each(add);
    } else {
        add((x, o));
    }
}

/// True when every value is finite (no NaN, no infinity).
fn all_finite(x: &[f32]) -> bool {
    x.iter().fold(true, |ok, v| ok & v.is_finite())
}

/// One batch through the model; returns the logits of the last token (`want = Last`) or all tokens, or
/// nothing when `need_logits` is false (an intermediate prefill batch).
///
/// Errors: [`EngineError::NonFinite`] when the embeddings, a block's output or the logits hold NaN or
/// infinity, naming the place and the first tensor of it with non-finite weights (the check is a pass over
/// `n x d` values per block, small next to the products).
#[allow(clippy::too_many_arguments)]
fn forward<'o>(
    model: &Model,
    cache: &mut [LayerCache],
    pos0: usize,
    tokens: &[u32],
    want: Logits,
    kernels: KernelPath,
    need_logits: bool,
    mut observer: Option<&mut (dyn ActivationObserver + 'o)>,
) -> Result<Vec<f32>, EngineError> {
    let non_finite = |place: String, block: Option<usize>| EngineError::NonFinite { place, tensor: model.non_finite_tensor(block) };
    let c = &model.config;
    let (n, d, hd) = (tokens.len(), c.n_embd, c.head_dim);
    let mm = |m: &Mat, x: &[f32], y: &mut Vec<f32>| {
        y.resize(n * m.rows, 0.0);
        dot::matmul(&model.mat(m), x, x.len() / m.cols, y, kernels);
    };
    // Several products of the same input: its quantized activations are shared and the products run in
    // one parallel region (Q, K, V; FFN gate and up).
    fn mm_shared<const K: usize>(model: &Model, ms: &[&Mat; K], x: &[f32], ys: [&mut Vec<f32>; K], kernels: KernelPath) {
        let n = x.len() / ms[0].cols;
        let ws: Vec<_> = ms.iter().map(|m| model.mat(m)).collect();
        let mut outs: Vec<&mut [f32]> = ys
            .into_iter()
            .zip(ms.iter())
            .map(|(y, m)| {
                y.resize(n * m.rows, 0.0);
                &mut y[..]
            })
            .collect();
        dot::matmul_multi(&ws, &dot::Activations::new(x, n, ms[0].cols, kernels), &mut outs);
    }

    // Token embeddings.
    let mut x = vec![0f32; n * d];
    let emb = model.mat(&model.tok_embd);
    for (t, row) in tokens.iter().zip(x.chunks_exact_mut(d)) {
        emb.dequantize_row(*t as usize, row);
    }
    if !all_finite(&x) {
        return Err(non_finite("the token embeddings".into(), None));
    }
    // RoPE tables for the batch's positions.
    let ropes: Vec<Vec<(f32, f32)>> = (0..n)
        .map(|t| {
            let mut tab = Vec::new();
            ops::rope_table(pos0 + t, c.rope_dims, c.rope_base, &mut tab);
            tab
        })
        .collect();

    let mut h = vec![0f32; n * d];
    let (mut q, mut k, mut v, mut att, mut o) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut g, mut u) = (Vec::new(), Vec::new());
    for (il, (lw, lc)) in model.layers.iter().zip(cache.iter_mut()).enumerate() {
        let s = lw.shape;
        if let Some(ob) = observer.as_deref_mut() {
            ob.residual(il, n, &x);
        }
        if s.has_attention() {
            rmsnorm_rows(&mut h, &x, &lw.attn_norm, c.rms_eps, d);
            let qkv = [lw.wq.as_ref().unwrap(), lw.wk.as_ref().unwrap(), lw.wv.as_ref().unwrap()];
            mm_shared(model, &qkv, &h, [&mut q, &mut k, &mut v], kernels);
            let (qd, kvd) = (s.n_head * hd, s.n_head_kv * hd);
            let rope_token = |qt: &mut [f32], kt: &mut [f32], tab: &[(f32, f32)]| {
                ops::rope(qt, hd, tab, c.rope_neox);
                ops::rope(kt, hd, tab, c.rope_neox);
            };
            if n >= PAR_MIN_TOKENS {
                q.par_chunks_mut(qd).zip(k.par_chunks_mut(kvd)).zip(ropes.par_iter()).for_each(|((qt, kt), tab)| rope_token(qt, kt, tab));
            } else {
                q.chunks_mut(qd).zip(k.chunks_mut(kvd)).zip(ropes.iter()).for_each(|((qt, kt), tab)| rope_token(qt, kt, tab));
            }
            lc.k[pos0 * kvd..(pos0 + n) * kvd].copy_from_slice(&k);
            lc.v[pos0 * kvd..(pos0 + n) * kvd].copy_from_slice(&v);
            att.resize(n * qd, 0.0);
            let group = s.n_head / s.n_head_kv;
            let scale = 1.0 / (hd as f32).sqrt();
            let (kc, vc, qr) = (&lc.k, &lc.v, &q);
            // Attention of query head j of token t over the cached positions 0..=pos0+t (causal).
            let head = |t: usize, j: usize, out: &mut [f32], sc: &mut Vec<f32>| {
                let kvh = j / group;
                let qv = &qr[t * qd + j * hd..t * qd + (j + 1) * hd];
                ops::attend(qv, kc, vc, kvd, kvh * hd, pos0 + t + 1, scale, out, sc);
            };
            if n == 1 && (pos0 + 1) * qd < 65536 {
                // Short decode: less work than waking the pool costs.
                let mut sc = Vec::new();
                att.chunks_mut(hd).enumerate().for_each(|(j, out)| head(0, j, out, &mut sc));
            } else if n == 1 {
                att.par_chunks_mut(hd).enumerate().for_each_init(Vec::new, |sc, (j, out)| head(0, j, out, sc));
            } else {
                att.par_chunks_mut(qd).enumerate().for_each_init(Vec::new, |sc, (t, row)| {
                    for (j, out) in row.chunks_mut(hd).enumerate() {
                        head(t, j, out, sc);
                    }
                });
            }
            if let Some(ob) = observer.as_deref_mut() {
                ob.attention(il, n, &att);
            }
            mm(lw.wo.as_ref().unwrap(), &att, &mut o);
            add_rows(&mut x, &o, d);
        }
        if s.has_ffn() {
            rmsnorm_rows(&mut h, &x, &lw.ffn_norm, c.rms_eps, d);
            mm_shared(model, &[lw.gate.as_ref().unwrap(), lw.up.as_ref().unwrap()], &h, [&mut g, &mut u], kernels);
            let nff = g.len() / n;
            if n >= PAR_MIN_TOKENS {
                g.par_chunks_mut(nff).zip(u.par_chunks(nff)).for_each(|(gt, ut)| ops::swiglu(gt, ut));
            } else {
                ops::swiglu(&mut g, &u);
            }
            if let Some(ob) = observer.as_deref_mut() {
                ob.ffn_hidden(il, n, &g);
            }
            mm(lw.down.as_ref().unwrap(), &g, &mut o);
            add_rows(&mut x, &o, d);
        }
        if !all_finite(&x) {
            return Err(non_finite(format!("the output of block {il}"), Some(il)));
        }
    }
    if let Some(ob) = observer.as_deref_mut() {
        ob.residual(model.layers.len(), n, &x);
    }
    if !need_logits {
        return Ok(Vec::new());
    }
    let xs = match want {
        Logits::Last => &x[(n - 1) * d..],
        Logits::All => &x[..],
        Logits::From(f) => &x[f * d..],
    };
    let rows = xs.len() / d;
    let mut hn = vec![0f32; rows * d];
    ops::rmsnorm(&mut hn, xs, &model.output_norm, c.rms_eps);
    let out = &model.output;
    let mut logits = vec![0f32; rows * out.rows];
    dot::matmul(&model.mat(out), &hn, rows, &mut logits, kernels);
    if !all_finite(&logits) {
        return Err(non_finite("the logits".into(), None));
    }
    Ok(logits)
}
