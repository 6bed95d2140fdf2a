//! Quantization of f32 data to F16, Q8_0, Q4_0, Q4_1 (bit-exact with `gguf.quants.quantize`).
