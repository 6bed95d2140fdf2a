//! Language-model losses on the elastic model: next-token NLL over a batch's targets, distillation KL, and
//! perplexity with llama.cpp's `llama-perplexity` method.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use device_runtime::arch::SubnetConfig;

use super::load::read_vec;
use super::{ElasticError, ElasticModel, TokenBatch};

/// The mean next-token loss of a batch.
#[derive(Clone, Debug)]
pub struct LmLoss {
    /// Mean negative log-likelihood (nats) over the batch's targets, shape `[1]`; call `.backward()` on it
    /// when the model lives on an autodiff device.
    pub loss: Tensor<1>,
    /// Number of target tokens averaged over.
    pub n_targets: usize,
}

impl ElasticModel {
    /// Logits at the positions that predict the batch's targets: `[n_targets, n_vocab]`, targets in
    /// row-major order ([`TokenBatch::target_positions`]). Only those rows go through the output head.
    ///
    /// Errors: as [`ElasticModel::hidden`], and [`ElasticError::Batch`] when the batch has no target.
    pub fn target_logits(&self, batch: &TokenBatch, subnet: &SubnetConfig) -> Result<Tensor<2>, ElasticError> {
        let (pos, _) = batch.target_positions();
        if pos.is_empty() {
            return Err(ElasticError::Batch("no target tokens (sequences of one token, or all masked)".into()));
        }
        let h = self.hidden(batch, subnet)?;
        let device = self.device();
        let n = pos.len();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(pos.into_iter().map(|p| p as i64).collect(), [n]), &device);
        Ok(self.head(h.select(0, idx)))
    }

    /// Log-probability of each target token: `[n_targets]` (nats), row-major order.
    ///
    /// Errors: as [`ElasticModel::target_logits`].
    pub fn target_logprobs(&self, batch: &TokenBatch, subnet: &SubnetConfig) -> Result<Tensor<1>, ElasticError> {
        let logits = self.target_logits(batch, subnet)?;
        Ok(gather_targets(logits, batch))
    }

    /// Mean next-token negative log-likelihood of sub-network `subnet` over the batch's targets (the
    /// cross-entropy loss of causal language modelling).
    ///
    /// Errors: as [`ElasticModel::target_logits`].
    pub fn loss(&self, batch: &TokenBatch, subnet: &SubnetConfig) -> Result<LmLoss, ElasticError> {
        let lp = self.target_logprobs(batch, subnet)?;
        Ok(LmLoss { loss: lp.mean().neg(), n_targets: batch.n_targets() })
    }
}

/// `log_softmax(logits)[i, target_i]` for the batch's targets: `[n_targets]`.
pub(crate) fn gather_targets(logits: Tensor<2>, batch: &TokenBatch) -> Tensor<1> {
    let (_, ids) = batch.target_positions();
    let n = ids.len();
    let device = logits.device();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.into_iter().map(|t| t as i64).collect(), [n, 1]), &device);
    log_softmax(logits, 1).gather(1, ids).reshape([n])
}

/// Mean Kullback-Leibler divergence `KL(teacher ‖ student)` over rows of logits `[n, n_vocab]` (nats):
/// `mean_i sum_v p_t(v) (log p_t(v) - log p_s(v))`, with the teacher detached (no gradient flows into it).
/// The in-place distillation loss of InstaTune / OFA (sub-network towards the full network's distribution).
pub fn kl_divergence(student_logits: Tensor<2>, teacher_logits: Tensor<2>) -> Tensor<1> {
    let lt = log_softmax(teacher_logits.detach(), 1);
    let ls = log_softmax(student_logits, 1);
    let pt = lt.clone().exp();
    let [n, _] = lt.dims();
    (pt * (lt - ls)).sum().div_scalar(n as f32)
}

/// Result of [`perplexity`].
#[derive(Clone, Debug, PartialEq)]
pub struct PerplexityResult {
    /// `exp(nll / count)`.
    pub ppl: f64,
    /// Sum of negative log-likelihoods (nats).
    pub nll: f64,
    /// Scored tokens (`n_chunks * (n_ctx - 1 - n_ctx/2)`).
    pub count: usize,
    /// Chunks evaluated.
    pub n_chunks: usize,
}

/// Perplexity of sub-network `subnet` on `tokens` with llama.cpp's `llama-perplexity` method (as
/// `device_runtime::engine::perplexity`): non-overlapping chunks of `n_ctx` tokens (the remainder dropped),
/// the first token of each replaced by `bos` when given, only the second half of each chunk scored
/// (`-log p(token[j+1] | tokens[..=j])` for `j` in `n_ctx/2 .. n_ctx-1`). `max_chunks` limits the chunks (0:
/// all); `batch` chunks run per forward pass. Use a model on a device without autodiff (e.g.
/// `model.valid()`), or the graph of every chunk is recorded for nothing.
///
/// Errors: [`ElasticError::Batch`] when `n_ctx < 4`, `batch == 0` or fewer than `n_ctx` tokens are given;
/// errors of [`ElasticModel::target_logprobs`].
pub fn perplexity(
    model: &ElasticModel,
    subnet: &SubnetConfig,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: usize,
    batch: usize,
) -> Result<PerplexityResult, ElasticError> {
    if n_ctx < 4 || batch == 0 {
        return Err(ElasticError::Batch(format!("perplexity context {n_ctx} (at least 4) or batch {batch} (at least 1)")));
    }
    let mut n_chunks = tokens.len() / n_ctx;
    if n_chunks == 0 {
        return Err(ElasticError::Batch(format!("{} tokens is less than one chunk of {n_ctx}", tokens.len())));
    }
    if max_chunks > 0 {
        n_chunks = n_chunks.min(max_chunks);
    }
    let first = n_ctx / 2;
    let mask: Vec<bool> = (0..n_ctx).map(|t| t > first).collect();
    let mut nll = 0f64;
    let mut count = 0usize;
    for start in (0..n_chunks).step_by(batch) {
        let end = (start + batch).min(n_chunks);
        let seqs: Vec<Vec<u32>> = (start..end)
            .map(|c| {
                let mut s = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
                if let Some(b) = bos {
                    s[0] = b;
                }
                s
            })
            .collect();
        let masks = vec![mask.clone(); seqs.len()];
        let tb = TokenBatch::with_targets(&seqs, &masks)?;
        let lp = read_vec(model.target_logprobs(&tb, subnet)?)?;
        nll -= lp.iter().map(|&x| x as f64).sum::<f64>();
        count += lp.len();
    }
    Ok(PerplexityResult { ppl: (nll / count as f64).exp(), nll, count, n_chunks })
}
