//! Dequantization of every supported block format to f32 (bit-exact with `gguf.quants.dequantize`).
