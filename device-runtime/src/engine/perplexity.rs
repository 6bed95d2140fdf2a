//! Perplexity as llama.cpp's `llama-perplexity` computes it (`tools/perplexity/perplexity.cpp`,
//! `perplexity()`): the token sequence is cut into `n_chunk = len / n_ctx` non-overlapping chunks of `n_ctx`
//! tokens (the remainder is dropped); each chunk is evaluated from an empty KV cache, with its first token
//! replaced by BOS when the vocabulary adds BOS; only the second half is scored: for `j` in
//! `n_ctx/2 .. n_ctx-1`, `-log p(token[j+1] | tokens[..=j])`. PPL = `exp(mean NLL)` over all scored tokens.

use super::session::{Logits, Session};
use super::{ops, EngineError};

/// What [`perplexity`] needs of a session: forget the sequence, and prefill returning logits
/// (`[tokens.len(), n_vocab]` for [`Logits::All`]). Implemented by the CPU [`Session`] and, with the `wgpu`
/// feature, by `gpu::GpuSession`.
pub trait Evaluator {
    /// Forget the sequence (empty KV cache).
    fn reset(&mut self);
    /// Run `tokens` and return their logits as [`Session::prefill`] does.
    fn prefill(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, EngineError>;
}

impl Evaluator for Session<'_> {
    fn reset(&mut self) {
        Session::reset(self)
    }
    fn prefill(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, EngineError> {
        Session::prefill(self, tokens, logits)
    }
}

#[cfg(feature = "wgpu")]
impl Evaluator for crate::gpu::GpuSession<'_> {
    fn reset(&mut self) {
        crate::gpu::GpuSession::reset(self)
    }
    fn prefill(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, EngineError> {
        crate::gpu::GpuSession::prefill(self, tokens, logits).map_err(EngineError::from)
    }
}

/// Result of [`perplexity`].
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// `exp(nll / count)`.
    pub ppl: f64,
    /// Sum of negative log-likelihoods (nats).
    pub nll: f64,
    /// Scored tokens (`n_chunks * (n_ctx - 1 - n_ctx/2)`).
    pub count: usize,
    /// Chunks evaluated.
    pub n_chunks: usize,
    /// PPL after each chunk (running), as llama-perplexity prints it.
    pub running: Vec<f64>,
}

/// Chunks of `n_ctx` tokens that [`perplexity`] scores in `n_tokens` tokens, at most `max_chunks` (0: all).
/// Check it before sizing a session: a chunk larger than the text is refused before any KV cache exists.
///
/// Errors: [`EngineError::Config`] if `n_ctx < 4` or the text holds less than one chunk.
pub fn n_chunks(n_tokens: usize, n_ctx: usize, max_chunks: usize) -> Result<usize, EngineError> {
    if n_ctx < 4 {
        return Err(EngineError::Config(format!("perplexity context {n_ctx} is too small (at least 4)")));
    }
    let n = n_tokens / n_ctx;
    if n == 0 {
        return Err(EngineError::Config(format!(
            "{n_tokens} tokens is less than one chunk of {n_ctx}: use a longer text or a smaller --ctx"
        )));
    }
    Ok(if max_chunks > 0 { n.min(max_chunks) } else { n })
}

/// Score `tokens` with llama-perplexity's method, chunks of `n_ctx` tokens (the session's context must hold
/// `n_ctx`). `bos`: the BOS id when the vocabulary adds BOS (`tokenizer.ggml.add_bos_token`), else `None`.
/// `max_chunks` limits the chunks (0: all). `progress` is called after each chunk with `(chunk, running ppl)`.
///
/// Errors: as [`n_chunks`]; [`EngineError::NonFinite`] if a logit is NaN or infinite; errors of
/// [`Session::prefill`] (any [`Evaluator`]: the CPU or the GPU session).
pub fn perplexity<S: Evaluator + ?Sized>(
    session: &mut S,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: usize,
    mut progress: impl FnMut(usize, f64),
) -> Result<Perplexity, EngineError> {
    let n_chunks = n_chunks(tokens.len(), n_ctx, max_chunks)?;
    let first = n_ctx / 2;
    let (mut nll, mut count) = (0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunks);
    for c in 0..n_chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.reset();
        let logits = session.prefill(&chunk, Logits::All)?;
        if logits.iter().any(|v| !v.is_finite()) {
            // The CPU session names the block; another evaluator may only return the logits.
            return Err(EngineError::NonFinite { place: format!("the logits of chunk {}", c + 1), tensor: None });
        }
        let nv = logits.len() / n_ctx;
        for j in first..n_ctx - 1 {
            let target = tokens[c * n_ctx + j + 1] as usize;
            nll -= ops::log_softmax_at(&logits[j * nv..(j + 1) * nv], target);
            count += 1;
        }
        let p = (nll / count as f64).exp();
        running.push(p);
        progress(c, p);
    }
    Ok(Perplexity { ppl: (nll / count as f64).exp(), nll, count, n_chunks, running })
}
