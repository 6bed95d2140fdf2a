//! ggml block formats: dequantize, quantize, and dot-product kernels.
//!
//! Bit-exact with gguf-py's `gguf.quants` (reference implementation in numpy).

pub mod dequant;
pub mod quantize;
pub mod dot;
