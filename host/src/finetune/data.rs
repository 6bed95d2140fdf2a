//! Training data for InstaTune: Alpaca-format instruction data rendered with the model's chat template (loss
//! on response tokens only) and plain text for continued pre-training (packed into windows), a held-out split,
//! and a repeatable batch order.
//!
//! Conventions: an [`Example`] is a token sequence with a per-token `target` flag; the model reads
//! `tokens[0..T-1]` and predicts `tokens[1..T]`, and position `t`'s prediction counts in the loss iff
//! `target[t + 1]` (Alpaca: the tokens of the assistant's answer, including the template's end-of-turn token).
//! Batches pad on the right with the padding token and `target = false`; with causal attention, right padding
//! never changes the real positions' outputs, so no attention mask is needed.

use std::path::{Path, PathBuf};

use device_runtime::chat::{ChatMessage, apply_model_chat_template};
use device_runtime::tokenizer::Tokenizer;
use serde::Deserialize;

use super::sample::SplitMix64;

/// Errors of loading training data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file cannot be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not Alpaca-format JSON (an array of objects with `instruction`, optional `input`, `output`).
    #[error("{file}: not Alpaca-format JSON (an array of {{instruction, input, output}}): {reason}")]
    Format {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// Rendering the chat template or tokenizing failed.
    #[error("{file}: item {item}: {reason}")]
    Render {
        /// The file.
        file: String,
        /// Index of the item.
        item: usize,
        /// What failed.
        reason: String,
    },
    /// Too little data for the requested split.
    #[error("{file}: {reason}")]
    TooSmall {
        /// The file.
        file: String,
        /// What is missing.
        reason: String,
    },
}

/// One training sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Token ids (at most the sequence length).
    pub tokens: Vec<u32>,
    /// Per token: whether predicting it counts in the loss (same length as `tokens`; `target[0]` is never used).
    pub target: Vec<bool>,
}

impl Example {
    /// Number of positions whose prediction counts in the loss: `target[1..]` set.
    pub fn n_targets(&self) -> usize {
        self.target.iter().skip(1).filter(|&&t| t).count()
    }
}

/// One Alpaca item (<https://github.com/tatsu-lab/stanford_alpaca>, `alpaca_data.json` format).
#[derive(Clone, Debug, Deserialize)]
pub struct AlpacaItem {
    /// The task.
    pub instruction: String,
    /// Optional context for the task (may be empty).
    #[serde(default)]
    pub input: String,
    /// The reference answer.
    pub output: String,
}

/// Where training data comes from (chosen by file name: `.json` is Alpaca, anything else plain text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// Alpaca-format JSON.
    Alpaca(PathBuf),
    /// Plain UTF-8 text (continued pre-training).
    Text(PathBuf),
}

impl DataSource {
    /// `.json` files are Alpaca data, other files plain text.
    pub fn from_path(p: &Path) -> DataSource {
        if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            DataSource::Alpaca(p.to_path_buf())
        } else {
            DataSource::Text(p.to_path_buf())
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            DataSource::Alpaca(p) | DataSource::Text(p) => p,
        }
    }
}

/// Reads an Alpaca-format JSON file.
///
/// Errors: [`DataError::Io`], [`DataError::Format`] (not an array of items with string `instruction` and
/// `output`).
pub fn read_alpaca(path: &Path) -> Result<Vec<AlpacaItem>, DataError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { file: file.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| DataError::Format { file, reason: e.to_string() })
}

/// The user message of an Alpaca item: the instruction, then a blank line and the input when there is one
/// (the Alpaca prompt's "Instruction"/"Input" parts, without its English frame, since the chat template
/// supplies the turn structure).
pub fn alpaca_user_text(item: &AlpacaItem) -> String {
    if item.input.trim().is_empty() {
        item.instruction.clone()
    } else {
        format!("{}\n\n{}", item.instruction, item.input)
    }
}

/// Renders one Alpaca item with the model's chat template and tokenizes it: the prompt (the conversation up to
/// and including the generation prompt, as at inference) is tokenized on its own and the rest (the answer and
/// the end-of-turn text) after it, so the response tokens are exactly those the model would generate.
/// `target` is set on the response tokens. Sequences longer than `max_len` are cut at `max_len`.
///
/// Errors: [`DataError::Render`] when the template fails or the full conversation does not start with the
/// prompt (a template this scheme cannot split).
pub fn render_alpaca(tok: &Tokenizer, item: &AlpacaItem, max_len: usize, file: &str, idx: usize) -> Result<Example, DataError> {
    let err = |reason: String| DataError::Render { file: file.to_string(), item: idx, reason };
    let user = ChatMessage::new("user", alpaca_user_text(item));
    let prompt = apply_model_chat_template(tok, std::slice::from_ref(&user), true).map_err(|e| err(e.to_string()))?;
    let full = apply_model_chat_template(tok, &[user, ChatMessage::new("assistant", item.output.clone())], false)
        .map_err(|e| err(e.to_string()))?;
    let Some(rest) = full.strip_prefix(&prompt) else {
        return Err(err("the rendered conversation does not start with the rendered prompt".into()));
    };
    let mut tokens = tok.encode(&prompt, false, true).map_err(|e| err(e.to_string()))?;
    let n_prompt = tokens.len();
    tokens.extend(tok.encode(rest, false, true).map_err(|e| err(e.to_string()))?);
    let mut target: Vec<bool> = (0..tokens.len()).map(|i| i >= n_prompt).collect();
    tokens.truncate(max_len);
    target.truncate(max_len);
    Ok(Example { tokens, target })
}

/// Packs a token stream into consecutive windows of `seq_len` tokens (the last partial window is dropped);
/// every token but the first of a window is a target.
pub fn pack_text(tokens: &[u32], seq_len: usize) -> Vec<Example> {
    if seq_len < 2 {
        return Vec::new();
    }
    tokens
        .chunks_exact(seq_len)
        .map(|w| Example { tokens: w.to_vec(), target: (0..seq_len).map(|i| i > 0).collect() })
        .collect()
}

/// A data set split into training and held-out examples.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Examples trained on.
    pub train: Vec<Example>,
    /// Held-out examples (never trained on): the last `held_out` fraction of the items (Alpaca) or windows
    /// (text), in file order.
    pub held_out: Vec<Example>,
    /// Items skipped because they have no target token within the sequence length.
    pub skipped: usize,
}

/// Loads a data source: Alpaca items rendered with [`render_alpaca`], or text tokenized (no special tokens)
/// and packed with [`pack_text`]; the last `held_out` fraction (0 <= f < 1, rounded up to at least one item
/// when f > 0) is held out.
///
/// Errors: those of reading and rendering; [`DataError::TooSmall`] when no training example remains.
pub fn load(src: &DataSource, tok: &Tokenizer, seq_len: usize, held_out: f64) -> Result<Dataset, DataError> {
    let file = src.path().display().to_string();
    let mut examples = match src {
        DataSource::Alpaca(p) => {
            let items = read_alpaca(p)?;
            let mut v = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                v.push(render_alpaca(tok, item, seq_len, &file, i)?);
            }
            v
        }
        DataSource::Text(p) => {
            let bytes = std::fs::read(p).map_err(|source| DataError::Io { file: file.clone(), source })?;
            let text = String::from_utf8(bytes)
                .map_err(|e| DataError::Format { file: file.clone(), reason: format!("not UTF-8 text: {e}") })?;
            let toks = tok
                .encode(&text, false, false)
                .map_err(|e| DataError::Render { file: file.clone(), item: 0, reason: e.to_string() })?;
            pack_text(&toks, seq_len)
        }
    };
    let n = examples.len();
    let n_held = if held_out > 0.0 { ((n as f64 * held_out).ceil() as usize).max(1) } else { 0 };
    if n_held >= n {
        return Err(DataError::TooSmall {
            file,
            reason: format!("{n} examples of at most {seq_len} tokens: none left for training after the held-out split"),
        });
    }
    let held = examples.split_off(n - n_held);
    let before = examples.len();
    examples.retain(|e| e.n_targets() > 0);
    let skipped = before - examples.len();
    if examples.is_empty() {
        return Err(DataError::TooSmall { file, reason: format!("no example has a target token within {seq_len} tokens") });
    }
    Ok(Dataset { train: examples, held_out: held, skipped })
}

/// A batch of `B` sequences of `T` tokens, row-major, right-padded.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Rows.
    pub b: usize,
    /// Columns (the longest sequence of the batch).
    pub t: usize,
    /// Token ids, `[b * t]`.
    pub tokens: Vec<u32>,
    /// Loss weight of the prediction at each position, `[b * (t - 1)]`: 1.0 where `target[t + 1]`, else 0.0.
    pub weights: Vec<f32>,
    /// Target ids `[b * (t - 1)]` (the tokens shifted by one; 0 where the weight is 0).
    pub targets: Vec<u32>,
}

impl Batch {
    /// Builds a right-padded batch (`pad` fills the tail of short rows).
    pub fn from_examples(examples: &[&Example], pad: u32) -> Batch {
        let b = examples.len();
        let t = examples.iter().map(|e| e.tokens.len()).max().unwrap_or(0).max(2);
        let mut tokens = vec![pad; b * t];
        let mut weights = vec![0f32; b * (t - 1)];
        let mut targets = vec![0u32; b * (t - 1)];
        for (r, e) in examples.iter().enumerate() {
            tokens[r * t..r * t + e.tokens.len()].copy_from_slice(&e.tokens);
            for p in 0..e.tokens.len().saturating_sub(1) {
                if e.target[p + 1] {
                    weights[r * (t - 1) + p] = 1.0;
                    targets[r * (t - 1) + p] = e.tokens[p + 1];
                }
            }
        }
        Batch { b, t, tokens, weights, targets }
    }

    /// Number of predictions that count in the loss.
    pub fn n_targets(&self) -> usize {
        self.weights.iter().filter(|&&w| w > 0.0).count()
    }
}

/// The repeatable order in which training examples are drawn: epoch `e` visits the examples in a permutation
/// seeded by `(seed, e)` (Fisher-Yates with [`SplitMix64`]), and micro-batch `k` of the whole run takes the
/// examples at positions `k*B .. (k+1)*B` of the concatenated epochs. The batch of any step is a function of
/// the step alone, so a resumed run sees exactly the batches it would have seen.
#[derive(Clone, Debug)]
pub struct BatchOrder {
    n: usize,
    seed: u64,
}

impl BatchOrder {
    /// The order over `n` examples for `seed` (n > 0).
    pub fn new(n: usize, seed: u64) -> BatchOrder {
        BatchOrder { n, seed }
    }

    fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut rng = SplitMix64::new(self.seed ^ 0x5eed_da7a).fork(epoch);
        let mut p: Vec<usize> = (0..self.n).collect();
        for i in (1..self.n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }

    /// Indices of the examples of micro-batch `k` of size `b`.
    pub fn micro_batch(&self, k: u64, b: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(b);
        let mut pos = k * b as u64;
        let mut cached: Option<(u64, Vec<usize>)> = None;
        while out.len() < b {
            let epoch = pos / self.n as u64;
            let i = (pos % self.n as u64) as usize;
            if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
                cached = Some((epoch, self.permutation(epoch)));
            }
            out.push(cached.as_ref().map(|(_, p)| p[i]).unwrap_or(0));
            pos += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_batch() {
        let toks: Vec<u32> = (0..10).collect();
        let ex = pack_text(&toks, 4);
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[1].tokens, vec![4, 5, 6, 7]);
        let short = Example { tokens: vec![9, 8, 7], target: vec![false, false, true] };
        let b = Batch::from_examples(&[&ex[0], &short], 99);
        assert_eq!((b.b, b.t), (2, 4));
        assert_eq!(b.tokens, vec![0, 1, 2, 3, 9, 8, 7, 99]);
        assert_eq!(b.weights, vec![1.0, 1.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(b.targets, vec![1, 2, 3, 0, 7, 0]);
        assert_eq!(b.n_targets(), 4);
    }

    #[test]
    fn batch_order_is_a_permutation_per_epoch_and_repeatable() {
        let o = BatchOrder::new(10, 7);
        let mut all: Vec<usize> = (0..5).flat_map(|k| o.micro_batch(k, 2)).collect();
        assert_eq!(all.clone(), (0..5).flat_map(|k| BatchOrder::new(10, 7).micro_batch(k, 2)).collect::<Vec<_>>());
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        // A batch straddling two epochs.
        assert_eq!(o.micro_batch(3, 4).len(), 4);
        assert_ne!(o.permutation(0), o.permutation(1));
    }
}
