//! [`TokenBatch`]: token sequences right-padded to one length, with the positions the loss scores.

use super::ElasticError;

/// `B` token sequences right-padded to a common length `T`, with per-token flags:
///
/// - `valid[b*T + t]`: position `t` of sequence `b` holds a real token (not padding);
/// - `target[b*T + t]`: token `t` of sequence `b` is predicted by the loss (from the logits at position
///   `t - 1`). Only real tokens at `t >= 1` can be targets.
///
/// Padding is at the end of each sequence, so with causal attention no real token attends to padding; the
/// padded positions are computed and ignored. Positions (RoPE) start at 0 in every sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    tokens: Vec<u32>,
    valid: Vec<bool>,
    target: Vec<bool>,
    batch: usize,
    seq_len: usize,
}

impl TokenBatch {
    /// A batch for language modelling: every real token after the first of each sequence is a target.
    ///
    /// Errors: [`ElasticError::Batch`] when there are no sequences or a sequence is empty.
    pub fn new(seqs: &[Vec<u32>]) -> Result<TokenBatch, ElasticError> {
        let targets: Vec<Vec<bool>> = seqs.iter().map(|s| (0..s.len()).map(|t| t > 0).collect()).collect();
        Self::with_targets(seqs, &targets)
    }

    /// A batch whose targets are given per token (e.g. only the response tokens of an instruction
    /// example): `targets[b][t]` says whether token `t` of sequence `b` is scored. A flag on token 0 is
    /// ignored (nothing predicts the first token).
    ///
    /// Errors: [`ElasticError::Batch`] when there are no sequences, a sequence is empty, or a target mask's
    /// length differs from its sequence's.
    pub fn with_targets(seqs: &[Vec<u32>], targets: &[Vec<bool>]) -> Result<TokenBatch, ElasticError> {
        if seqs.is_empty() {
            return Err(ElasticError::Batch("no sequences".into()));
        }
        if targets.len() != seqs.len() {
            return Err(ElasticError::Batch(format!("{} sequences but {} target masks", seqs.len(), targets.len())));
        }
        let seq_len = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if let Some(b) = seqs.iter().position(Vec::is_empty) {
            return Err(ElasticError::Batch(format!("sequence {b} is empty")));
        }
        let batch = seqs.len();
        let mut out = TokenBatch {
            tokens: vec![0; batch * seq_len],
            valid: vec![false; batch * seq_len],
            target: vec![false; batch * seq_len],
            batch,
            seq_len,
        };
        for (b, (s, m)) in seqs.iter().zip(targets).enumerate() {
            if m.len() != s.len() {
                return Err(ElasticError::Batch(format!(
                    "sequence {b}: {} tokens but a target mask of {}",
                    s.len(),
                    m.len()
                )));
            }
            let row = b * seq_len;
            out.tokens[row..row + s.len()].copy_from_slice(s);
            out.valid[row..row + s.len()].fill(true);
            for (t, &f) in m.iter().enumerate().skip(1) {
                out.target[row + t] = f;
            }
        }
        Ok(out)
    }

    /// Number of sequences `B`.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Padded length `T`.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Token ids, `[B*T]` row-major (padding holds 0).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Real-token flags, `[B*T]` row-major.
    pub fn valid(&self) -> &[bool] {
        &self.valid
    }

    /// Target flags, `[B*T]` row-major.
    pub fn targets(&self) -> &[bool] {
        &self.target
    }

    /// Number of target tokens (what the loss averages over).
    pub fn n_targets(&self) -> usize {
        self.target.iter().filter(|&&f| f).count()
    }

    /// Number of real tokens (what the forward pass costs, padding aside).
    pub fn n_tokens(&self) -> usize {
        self.valid.iter().filter(|&&f| f).count()
    }

    /// For each target, in row-major order: the flat index `b*T + t - 1` of the position whose logits
    /// predict it, and the target token id.
    pub fn target_positions(&self) -> (Vec<usize>, Vec<u32>) {
        let mut pos = Vec::new();
        let mut ids = Vec::new();
        for (i, &f) in self.target.iter().enumerate() {
            if f {
                pos.push(i - 1);
                ids.push(self.tokens[i]);
            }
        }
        (pos, ids)
    }
}
