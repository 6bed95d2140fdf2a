//! GGUF container format: read (memory-mapped, zero-copy, v2 and v3) and write (v3, atomic).
//!
//! Knows nothing about models. Spec: ggml `docs/gguf.md`; reference implementation: gguf-py
//! (`gguf/gguf_reader.py`, `gguf/gguf_writer.py`). Supported features and the error list: `docs/GGUF.md`.
//!
//! ```no_run
//! use device_runtime::gguf::GgufFile;
//! let f = GgufFile::open("model.gguf")?;
//! let n_layers = f.get_u32("llama.block_count")?;
//! let norm = f.tensor("output_norm.weight").unwrap();
//! let w: &[f32] = f.tensor_f32(norm)?;
//! # Ok::<(), device_runtime::gguf::GgufError>(())
//! ```

pub mod error;
pub mod reader;
pub mod types;
pub mod value;
pub mod writer;

pub use error::GgufError;
pub use reader::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GgufFile, TensorInfo};
pub use types::GgmlType;
pub use value::{GgufValueType, MetaArray, MetaValue};
pub use writer::{GgufWriter, predict_file_size};

#[cfg(test)]
mod tests;
