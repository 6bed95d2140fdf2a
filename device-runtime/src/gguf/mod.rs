//! GGUF container format: read (memory-mapped, zero-copy, v2 and v3) and write (v3, atomic).
//!
//! Knows nothing about models. Spec: ggml `docs/gguf.md`; reference implementation: gguf-py
//! (`gguf/gguf_reader.py`, `gguf/gguf_writer.py`).

pub mod types;

pub use types::GgmlType;
