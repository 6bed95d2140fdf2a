//! `device_runtime`: the part of the LLaMA-NAS toolkit that ships to the target device.
//!
//! - [`gguf`]: the GGUF container format (read through a memory map, write atomically). Knows nothing about models.
//! - [`quant`]: ggml tensor block formats: dequantize, quantize, dot-product kernels. Bit-exact with gguf-py.
//! - [`tokenizer`]: tokenizers built from GGUF metadata (`tokenizer.ggml.*`).
//! - [`chat`]: chat templates (`tokenizer.chat_template`) rendered with minijinja as HF transformers does.
//! - [`arch`]: `ModelConfig` / `SubnetConfig`, the vocabulary that host and runtime share.
//! - [`inspect`]: the report of `edgerun inspect` (architecture, shapes, tensor types, tokenizer facts).
//! - [`engine`]: the CPU forward pass, prefill/decode, sampling.
//! - [`backend`]: the choice of CPU engine or wgpu adapter, behind one session API.
//! - [`subnet`]: sub-network extraction (slice, quantize, write GGUF) and exact file-size prediction.
//! - [`profile`]: device facts, latency measurement and the latency model.
//! - `gpu` (cargo feature `wgpu`): the forward pass on a wgpu adapter with WGSL kernels on GGUF blocks.
//!
//! Design notes: `DESIGN.md` in the shared folder; the format follows the GGUF spec of ggml
//! (`docs/gguf.md` in the ggml repository) and the reference reader/writer in gguf-py.

pub mod arch;
pub mod backend;
pub mod chat;
pub mod engine;
pub mod gguf;
#[cfg(feature = "wgpu")]
pub mod gpu;
pub mod inspect;
pub mod profile;
pub mod quant;
pub mod subnet;
pub mod tokenizer;
