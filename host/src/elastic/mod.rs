//! The elastic super-network in burn: one set of shared LLaMA weights, any sub-network's forward pass.
//!
//! LLaMA-NAS (Sarah et al., 2024) fine-tunes a pre-trained model once as a super-network whose sub-networks
//! (fewer layers, narrower FFNs, fewer KV heads per layer) share its weights, then searches them. This module
//! holds those shared weights as burn parameters ([`ElasticModel`]) and runs the forward pass of any
//! [`SubnetConfig`] on them:
//!
//! - **Slicing** (DESIGN.md, the same rules as [`device_runtime::subnet`]): a kept layer with FFN width `k`
//!   uses the first `k` rows of `ffn_gate`/`ffn_up` and the first `k` columns of `ffn_down`; one with `k` KV
//!   groups (of `g = n_head / n_kv` query heads each) uses the first `k*hd` rows of `attn_k`/`attn_v`, the
//!   first `k*g*hd` rows of `attn_q` and the first `k*g*hd` columns of `attn_output`. Dropped layers are
//!   skipped; a kept layer with 0 KV heads has no attention, one with FFN 0 no FFN (as the runtime).
//!   Slices are `Tensor::narrow` views of the shared parameters: no copies, and the gradient of a parameter
//!   is exactly zero outside the slice a step used.
//! - **Forward** (llama.cpp `llm_build_llama`, the runtime's `engine::session`): token embedding; per kept
//!   block pre-norm RMSNorm, GQA causal attention with RoPE (the NORM variant, pairs `(2i, 2i+1)`, unless the
//!   [`ModelConfig`] says NeoX), residual; RMSNorm, SwiGLU FFN, residual; final RMSNorm and the output head
//!   (`output.weight`, or `token_embd.weight` when the embeddings are tied, as in SmolLM2).
//! - **Batches** ([`TokenBatch`]): `B` sequences right-padded to `T` tokens; causal attention means a real
//!   token never sees the padding after it, and padded positions never count in the loss.
//!
//! The model lives on any burn [`Device`]: [`Device::flex()`] (pure-Rust CPU, the default,
//! [`default_device`]) for inference, `Device::flex().autodiff()` ([`training_device`]) for training, or a
//! wgpu adapter when `host` is built with its `wgpu` cargo feature. [`device_by_name`] (`"cpu"` or `"wgpu"`,
//! with or without autodiff) picks one and says which adapter wgpu chose; the `--device` flag of
//! `llamanas finetune` uses it.
//!
//! Typical training step (the `finetune` module):
//!
//! ```no_run
//! use llamanas::elastic::{ElasticModel, TokenBatch, training_device};
//! use burn::optim::{AdamWConfig, GradientsParams};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = training_device();
//! let mut model = ElasticModel::load("supernet_dir", &device)?;
//! let mut optim = AdamWConfig::new().init();
//! let full = model.config().full_subnet();
//! let batch = TokenBatch::new(&[vec![1, 2, 3, 4], vec![5, 6, 7]])?;
//! let loss = model.loss(&batch, &full)?;
//! let grads = GradientsParams::from_grads(loss.loss.backward(), &model);
//! model = optim.step(1e-5, model, grads);
//! # Ok(()) }
//! ```

mod batch;
mod device;
mod forward;
mod load;
mod loss;

#[cfg(test)]
mod tests;

pub use batch::TokenBatch;
pub use device::{AdapterSummary, DeviceError, DeviceName, HostDevice, WGPU_BUILT, device_by_name, host_device};
pub use load::SaveType;
pub use loss::{LmLoss, PerplexityResult, kl_divergence, perplexity};

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use device_runtime::arch::{ArchError, ModelConfig};
use device_runtime::gguf::GgufError;
use device_runtime::quant::QuantError;

/// Errors of the elastic model: loading weights, checking a sub-network or a batch, saving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElasticError {
    /// The GGUF file could not be read or written.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The GGUF metadata does not describe a supported model, or the sub-network does not fit the model
    /// ([`device_runtime::arch::SubnetConfig::validate`]).
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// A super-network folder without `supernet.gguf`, or a path that does not exist.
    #[error("{path}: {reason}")]
    Path {
        /// The path given.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the configuration requires is absent from the file.
    #[error("{file}: missing tensor {tensor}")]
    MissingTensor {
        /// File name.
        file: String,
        /// Tensor name.
        tensor: String,
    },
    /// A tensor's dimensions differ from what the configuration implies.
    #[error("{file}: tensor {tensor}: dims {got:?}, expected {expected:?} (ggml order, ne[0] first)")]
    Shape {
        /// File name.
        file: String,
        /// Tensor name.
        tensor: String,
        /// Expected ggml dims.
        expected: Vec<u64>,
        /// Dims in the file.
        got: Vec<u64>,
    },
    /// A tensor that could not be dequantized (unsupported type, truncated data) or quantized for saving.
    #[error("{file}: tensor {tensor}: {source}")]
    Quant {
        /// File name.
        file: String,
        /// Tensor name.
        tensor: String,
        /// The block-format error.
        #[source]
        source: QuantError,
    },
    /// A batch that cannot be run: empty, ragged target masks, token ids outside the vocabulary, ...
    #[error("bad batch: {0}")]
    Batch(String),
    /// A tensor read back from the device could not be converted (should not happen on CPU devices).
    #[error("reading a tensor back from the device: {0}")]
    Readback(String),
}

/// The device used when none is given: burn's pure-Rust CPU backend (`Device::flex()`), multi-threaded
/// over rayon's global pool (`RAYON_NUM_THREADS` sets its size).
pub fn default_device() -> Device {
    Device::flex()
}

/// [`default_device`] with autodiff: parameters created on it record gradients (for fine-tuning).
pub fn training_device() -> Device {
    Device::flex().autodiff()
}

/// One transformer block's shared weights (full size). Matrices are `[out, in]` row-major, which is the GGUF
/// layout (ggml dims `[in, out]`), so a layer computes `y = x · Wᵀ`.
///
/// `None` weights: a `deci` block without attention (`n_head == 0`) or without FFN (`ffn == 0`).
#[derive(Module, Debug)]
pub struct ElasticBlock {
    /// `blk.N.attn_norm.weight` `[d]`.
    pub attn_norm: Option<Param<Tensor<1>>>,
    /// `blk.N.attn_q.weight` `[n_head*hd, d]`.
    pub wq: Option<Param<Tensor<2>>>,
    /// `blk.N.attn_k.weight` `[n_kv*hd, d]`.
    pub wk: Option<Param<Tensor<2>>>,
    /// `blk.N.attn_v.weight` `[n_kv*hd, d]`.
    pub wv: Option<Param<Tensor<2>>>,
    /// `blk.N.attn_output.weight` `[d, n_head*hd]`.
    pub wo: Option<Param<Tensor<2>>>,
    /// `blk.N.ffn_norm.weight` `[d]`.
    pub ffn_norm: Option<Param<Tensor<1>>>,
    /// `blk.N.ffn_gate.weight` `[ffn, d]`.
    pub gate: Option<Param<Tensor<2>>>,
    /// `blk.N.ffn_up.weight` `[ffn, d]`.
    pub up: Option<Param<Tensor<2>>>,
    /// `blk.N.ffn_down.weight` `[d, ffn]`.
    pub down: Option<Param<Tensor<2>>>,
}

/// The elastic super-network: the full model's weights as burn parameters plus its [`ModelConfig`].
///
/// Build it with [`ElasticModel::load`] (a GGUF file or a super-network folder holding `supernet.gguf`),
/// run sub-networks with [`ElasticModel::forward`] / [`ElasticModel::loss`], hand it to a burn optimizer
/// as a [`Module`] (every weight is a trainable parameter), and write it back with
/// [`ElasticModel::save_gguf`].
#[derive(Module, Debug)]
pub struct ElasticModel {
    /// `token_embd.weight` `[n_vocab, d]` (also the output head when the embeddings are tied).
    pub tok_embd: Param<Tensor<2>>,
    /// `output.weight` `[n_vocab, d]`; `None` when tied to `tok_embd`.
    pub output: Option<Param<Tensor<2>>>,
    /// `output_norm.weight` `[d]`.
    pub output_norm: Param<Tensor<1>>,
    /// The blocks, `n_layers` of them, in base-layer order.
    pub blocks: Vec<ElasticBlock>,
    /// Hyper-parameters of the full model (from the GGUF metadata).
    #[module(skip)]
    pub config: ModelConfig,
}

impl ElasticModel {
    /// Hyper-parameters of the full model.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.tok_embd.val().device()
    }
}
