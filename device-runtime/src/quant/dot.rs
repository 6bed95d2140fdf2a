//! Dot-product and matrix kernels on quantized blocks, used by the engine (scalar reference + SIMD paths).
