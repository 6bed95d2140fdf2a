//! Forward pass of LLaMA-family models (llama, deci): RMSNorm, RoPE, GQA attention with KV cache, SwiGLU FFN.
