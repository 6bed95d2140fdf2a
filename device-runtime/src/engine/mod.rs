//! Forward pass of LLaMA-family models (llama, deci): RMSNorm, RoPE, GQA attention with KV cache, SwiGLU FFN.
//!
//! - [`Model`]: hyper-parameters ([`EngineConfig`], per-layer [`LayerShape`]) and weights kept in their GGUF
//!   block format (memory-mapped); [`Model::load`] reads a GGUF file.
//! - [`Session`]: a KV cache and a thread pool; [`Session::prefill`] runs a batch of tokens through
//!   matrix-matrix products, [`Session::decode`] one token; both return logits (`[n_vocab]` per position).
//! - [`Sampler`]: greedy / temperature / top-k / top-p, seeded.
//!
//! The model code does not know block layouts: products go through [`crate::quant::dot::matmul`].

pub mod model;
pub mod ops;
pub mod perplexity;
pub mod sampler;
pub mod session;

pub use model::{EngineConfig, LayerShape, Model, Storage, TensorRef};
pub use sampler::{Sampler, SamplerConfig};
pub use session::{available_memory_bytes, check_memory, ActivationObserver, Logits, Session, SessionOptions};

use crate::gguf::GgmlType;
use crate::quant::dot::KernelError;

/// A byte count for messages: `12.3 GiB`, or `25.6 MiB` below 1 GiB; `None` as `unknown`.
fn gib(bytes: Option<u64>) -> String {
    match bytes {
        None => "unknown".to_string(),
        Some(b) if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
    }
}

/// Errors of the engine: the model file does not describe a model it can run, or the input does not fit.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `general.architecture` is not `llama` or `deci`.
    #[error("unsupported architecture {0:?} (supported: llama, deci)")]
    UnsupportedArch(String),
    /// A tensor the config requires is absent.
    #[error("missing tensor {0}")]
    MissingTensor(String),
    /// A tensor has other dimensions than the config implies.
    #[error("tensor {tensor}: shape {got:?}, expected {expected:?} (ggml order, ne[0] first)")]
    Shape {
        /// Tensor name.
        tensor: String,
        /// Expected ggml dims.
        expected: Vec<usize>,
        /// Dims in the file.
        got: Vec<usize>,
    },
    /// A tensor's type or data is unusable.
    #[error("tensor {tensor}: {source}")]
    Tensor {
        /// Tensor name.
        tensor: String,
        /// Cause.
        source: KernelError,
    },
    /// A tensor type the engine cannot use.
    #[error("tensor {tensor}: unsupported type {ty}")]
    UnsupportedType {
        /// Tensor name.
        tensor: String,
        /// Its type.
        ty: GgmlType,
    },
    /// Missing or inconsistent hyper-parameters.
    #[error("model config: {0}")]
    Config(String),
    /// The GGUF file could not be read.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// The GGUF metadata does not describe a supported model.
    #[error(transparent)]
    Arch(#[from] crate::arch::ArchError),
    /// Where the error happened: the model file.
    #[error("{file}: {source}")]
    InFile {
        /// The model file.
        file: String,
        /// Cause.
        source: Box<EngineError>,
    },
    /// No tokens given.
    #[error("empty input: at least one token is needed")]
    EmptyInput,
    /// The tokens do not fit in the KV cache.
    #[error("context full: {n_tokens} tokens at position {pos} exceed the context of {n_ctx} tokens")]
    ContextFull {
        /// Tokens already in the cache.
        pos: usize,
        /// Tokens offered.
        n_tokens: usize,
        /// Capacity.
        n_ctx: usize,
    },
    /// An allocation larger than the memory available (checked before allocating).
    #[error("{what} needs {}, more than the memory available ({})", .bytes.map_or("more than 2^64 bytes".to_string(), |b| gib(Some(b))), gib(*.available))]
    OutOfMemory {
        /// What was to be allocated (e.g. "the KV cache for a context of 50000000 tokens").
        what: String,
        /// Bytes needed; `None` when the size overflows 64 bits.
        bytes: Option<u64>,
        /// Bytes available (`None`: unknown).
        available: Option<u64>,
    },
    /// NaN or infinity in the activations: broken weights (or an overflow).
    #[error("non-finite values (NaN or infinity) in {place}{}", .tensor.as_ref().map(|t| format!(": tensor {t} holds non-finite weights")).unwrap_or_default())]
    NonFinite {
        /// Where they were found ("the output of block 3", "the logits", ...).
        place: String,
        /// The first tensor of that place whose weights are not all finite, when one is.
        tensor: Option<String>,
    },
    /// A token id outside the vocabulary.
    #[error("token id {token} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// Vocabulary size.
        n_vocab: usize,
    },
}
