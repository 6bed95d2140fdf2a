//! The model: hyper-parameters ([`EngineConfig`]) and weights, kept in their GGUF block format in the
//! memory map (only the small norm vectors are copied to f32).
//!
//! Tensor names and shapes follow llama.cpp (`LLM_ARCH_LLAMA`, `LLM_ARCH_DECI` in `llama-arch.cpp`):
//! `token_embd.weight [n_embd, n_vocab]`, `output_norm.weight [n_embd]`, `output.weight [n_embd, n_vocab]`
//! (absent: tied to `token_embd`), and per block `blk.N.`: `attn_norm [n_embd]`, `attn_q [n_embd, n_head*hd]`,
//! `attn_k`/`attn_v [n_embd, n_head_kv*hd]`, `attn_output [n_head*hd, n_embd]`, `ffn_norm [n_embd]`,
//! `ffn_gate`/`ffn_up [n_embd, n_ff]`, `ffn_down [n_ff, n_embd]` (ggml order: `ne[0]` first).

use super::EngineError;
use crate::arch::ModelConfig;
use crate::gguf::{GgmlType, GgufFile};
use std::path::Path;
use crate::quant::dot::{self, QMatrix};

/// Shape of one transformer block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerShape {
    /// Query heads (0: no attention).
    pub n_head: usize,
    /// Key/value heads (0: no attention).
    pub n_head_kv: usize,
    /// FFN width (0: no FFN).
    pub n_ff: usize,
}

impl LayerShape {
    /// Whether the block has self-attention (`n_head > 0 && n_head_kv > 0`).
    pub fn has_attention(&self) -> bool {
        self.n_head > 0 && self.n_head_kv > 0
    }
    /// Whether the block has a feed-forward network.
    pub fn has_ffn(&self) -> bool {
        self.n_ff > 0
    }
}

/// Hyper-parameters the forward pass needs (from GGUF metadata `{arch}.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// `general.architecture`: `llama` or `deci`.
    pub arch: String,
    /// Model width `d` (`{arch}.embedding_length`).
    pub n_embd: usize,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub n_vocab: usize,
    /// Head dimension (`{arch}.attention.key_length`, default `n_embd / n_head`).
    pub head_dim: usize,
    /// One entry per block.
    pub layers: Vec<LayerShape>,
    /// `{arch}.rope.freq_base` (default 10000).
    pub rope_base: f32,
    /// `{arch}.rope.dimension_count` (default `head_dim`): rotated dimensions of each head.
    pub rope_dims: usize,
    /// NeoX ordering (pairs `i, i+n/2`) instead of the normal one (pairs `2i, 2i+1`). `false` for llama/deci.
    pub rope_neox: bool,
    /// `{arch}.attention.layer_norm_rms_epsilon`.
    pub rms_eps: f32,
    /// `{arch}.context_length`: the training context (the default session context is capped by it).
    pub n_ctx_train: usize,
}

/// Where one tensor lives in the model's byte storage, and its type and ggml dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    /// Name, for error messages.
    pub name: String,
    /// Block format.
    pub ty: GgmlType,
    /// ggml dimensions (`ne[0]` first).
    pub dims: Vec<usize>,
    /// Byte offset in the storage.
    pub offset: usize,
    /// Byte length.
    pub len: usize,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub offset: usize,
    pub len: usize,
}

pub(crate) struct LayerWeights {
    pub shape: LayerShape,
    pub attn_norm: Vec<f32>,
    pub wq: Option<Mat>,
    pub wk: Option<Mat>,
    pub wv: Option<Mat>,
    pub wo: Option<Mat>,
    pub ffn_norm: Vec<f32>,
    pub gate: Option<Mat>,
    pub up: Option<Mat>,
    pub down: Option<Mat>,
}

/// Byte storage of a model's tensors: usually the memory-mapped GGUF file.
pub trait Storage: Send + Sync {
    /// All bytes that [`TensorRef`] offsets point into.
    fn bytes(&self) -> &[u8];
    /// The GGUF file, when the storage is one (for its metadata: tokenizer, chat template).
    fn gguf(&self) -> Option<&GgufFile> {
        None
    }
}

impl Storage for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Storage for GgufFile {
    fn bytes(&self) -> &[u8] {
        GgufFile::bytes(self)
    }
    fn gguf(&self) -> Option<&GgufFile> {
        Some(self)
    }
}

impl EngineConfig {
    /// The engine's view of a [`ModelConfig`] (per-layer shapes zipped into [`LayerShape`]s).
    pub fn from_model_config(m: &ModelConfig) -> EngineConfig {
        EngineConfig {
            arch: m.arch.clone(),
            n_embd: m.d_model,
            n_vocab: m.n_vocab,
            head_dim: m.head_dim,
            layers: (0..m.n_layers)
                .map(|i| LayerShape { n_head: m.n_heads[i], n_head_kv: m.n_kv_heads[i], n_ff: m.ffn[i] })
                .collect(),
            rope_base: m.rope_freq_base,
            rope_dims: m.rope_dim,
            rope_neox: m.rope_neox,
            rms_eps: m.rms_eps,
            n_ctx_train: m.n_ctx_train,
        }
    }
}

/// A loaded model: config and weights (borrowed from the storage, never converted).
pub struct Model {
    /// Hyper-parameters.
    pub config: EngineConfig,
    pub(crate) storage: Box<dyn Storage>,
    pub(crate) tok_embd: Mat,
    pub(crate) output: Mat,
    pub(crate) output_norm: Vec<f32>,
    pub(crate) layers: Vec<LayerWeights>,
    /// Bytes of all weight tensors the model uses.
    pub weight_bytes: usize,
    model_config: Option<ModelConfig>,
}

impl Model {
    /// The GGUF name of the first tensor with a non-finite (NaN or infinite) weight: of block `block` (norms,
    /// attention, FFN, in the file's order), or with `None` of the embeddings and the output head. Dequantizes
    /// row by row (O(one row) memory); used to name the culprit of [`EngineError::NonFinite`].
    pub fn non_finite_tensor(&self, block: Option<usize>) -> Option<String> {
        let bad_vec = |v: &[f32]| v.iter().any(|x| !x.is_finite());
        let bad_mat = |m: &Mat| {
            let q = self.mat(m);
            let mut row = vec![0f32; m.cols];
            (0..m.rows).any(|r| {
                q.dequantize_row(r, &mut row);
                bad_vec(&row)
            })
        };
        match block {
            None => [("token_embd.weight", Some(&self.tok_embd)), ("output_norm.weight", None), ("output.weight", Some(&self.output))]
                .into_iter()
                .find(|(_, m)| match m {
                    Some(m) => bad_mat(m),
                    None => bad_vec(&self.output_norm),
                })
                .map(|(n, _)| n.to_string()),
            Some(l) => {
                let lw = self.layers.get(l)?;
                let mats = [
                    ("attn_q", &lw.wq),
                    ("attn_k", &lw.wk),
                    ("attn_v", &lw.wv),
                    ("attn_output", &lw.wo),
                    ("ffn_gate", &lw.gate),
                    ("ffn_up", &lw.up),
                    ("ffn_down", &lw.down),
                ];
                let name = if bad_vec(&lw.attn_norm) {
                    Some("attn_norm")
                } else if bad_vec(&lw.ffn_norm) {
                    Some("ffn_norm")
                } else {
                    mats.iter().find(|(_, m)| m.as_ref().is_some_and(bad_mat)).map(|(n, _)| *n)
                };
                name.map(|n| format!("blk.{l}.{n}.weight"))
            }
        }
    }

    /// Bytes of the f32 KV cache of a session with `n_ctx` tokens: K and V, `n_ctx x n_head_kv x head_dim`
    /// floats each, for every block with attention; `None` if that overflows 64 bits.
    pub fn kv_cache_bytes(&self, n_ctx: usize) -> Option<u64> {
        let per_token: u64 = self
            .layers
            .iter()
            .filter(|l| l.shape.has_attention())
            .map(|l| 2 * 4 * (l.shape.n_head_kv * self.config.head_dim) as u64)
            .sum();
        per_token.checked_mul(n_ctx as u64)
    }

    /// Build a model from its config, the storage and a tensor lookup (`name -> TensorRef`), checking
    /// every tensor's presence, type and shape against the config.
    ///
    /// Errors: [`EngineError::MissingTensor`], [`EngineError::Shape`], [`EngineError::UnsupportedType`],
    /// [`EngineError::Config`] (inconsistent hyper-parameters).
    pub fn from_parts(
        config: EngineConfig,
        storage: Box<dyn Storage>,
        lookup: &dyn Fn(&str) -> Option<TensorRef>,
    ) -> Result<Model, EngineError> {
        let c = &config;
        let total = storage.bytes().len();
        if c.n_embd == 0 || c.head_dim == 0 || c.n_vocab == 0 || c.layers.is_empty() {
            return Err(EngineError::Config(format!(
                "n_embd {}, head_dim {}, n_vocab {}, {} layers: all must be > 0",
                c.n_embd, c.head_dim, c.n_vocab, c.layers.len()
            )));
        }
        if c.rope_dims > c.head_dim || c.rope_dims % 2 != 0 {
            return Err(EngineError::Config(format!("rope.dimension_count {} must be even and <= head_dim {}", c.rope_dims, c.head_dim)));
        }
        for (i, l) in c.layers.iter().enumerate() {
            if l.has_attention() && l.n_head % l.n_head_kv != 0 {
                return Err(EngineError::Config(format!("layer {i}: head_count {} is not a multiple of head_count_kv {}", l.n_head, l.n_head_kv)));
            }
        }
        let mut weight_bytes = 0usize;
        let mut get = |name: &str, rows: usize, cols: usize| -> Result<Mat, EngineError> {
            let t = lookup(name).ok_or_else(|| EngineError::MissingTensor(name.to_string()))?;
            let (r, cl) = match t.dims.as_slice() {
                [a] => (1, *a),
                [a, b] => (*b, *a),
                _ => (0, 0),
            };
            if (r, cl) != (rows, cols) {
                return Err(EngineError::Shape { tensor: name.to_string(), expected: vec![cols, rows], got: t.dims.clone() });
            }
            if t.offset.checked_add(t.len).is_none_or(|e| e > total) {
                return Err(EngineError::Config(format!("tensor {name}: data {}+{} lies outside the file ({total} bytes)", t.offset, t.len)));
            }
            QMatrix::new(t.ty, rows, cols, &storage.bytes()[t.offset..t.offset + t.len])
                .map_err(|e| EngineError::Tensor { tensor: name.to_string(), source: e })?;
            weight_bytes += t.len;
            Ok(Mat { ty: t.ty, rows, cols, offset: t.offset, len: t.len })
        };
        let d = c.n_embd;
        let tok_embd = get("token_embd.weight", c.n_vocab, d)?;
        let output = if lookup("output.weight").is_some() { get("output.weight", c.n_vocab, d)? } else { tok_embd };
        let on = get("output_norm.weight", 1, d)?;
        let mut layers = Vec::with_capacity(c.layers.len());
        let mut norms = vec![on];
        for (i, &shape) in c.layers.iter().enumerate() {
            let p = |n: &str| format!("blk.{i}.{n}.weight");
            let mut lw = LayerWeights {
                shape,
                attn_norm: vec![],
                wq: None,
                wk: None,
                wv: None,
                wo: None,
                ffn_norm: vec![],
                gate: None,
                up: None,
                down: None,
            };
            let mut ln = (None, None);
            if shape.has_attention() {
                let (qd, kvd) = (shape.n_head * c.head_dim, shape.n_head_kv * c.head_dim);
                ln.0 = Some(get(&p("attn_norm"), 1, d)?);
                lw.wq = Some(get(&p("attn_q"), qd, d)?);
                lw.wk = Some(get(&p("attn_k"), kvd, d)?);
                lw.wv = Some(get(&p("attn_v"), kvd, d)?);
                lw.wo = Some(get(&p("attn_output"), d, qd)?);
            }
            if shape.has_ffn() {
                ln.1 = Some(get(&p("ffn_norm"), 1, d)?);
                lw.gate = Some(get(&p("ffn_gate"), shape.n_ff, d)?);
                lw.up = Some(get(&p("ffn_up"), shape.n_ff, d)?);
                lw.down = Some(get(&p("ffn_down"), d, shape.n_ff)?);
            }
            layers.push((lw, ln));
        }
        let bytes = storage.bytes();
        let to_f32 = |m: &Mat| {
            let mut v = vec![0f32; m.cols];
            dot::dequantize_row(m.ty, &bytes[m.offset..m.offset + m.len], &mut v);
            v
        };
        let output_norm = to_f32(&norms.remove(0));
        let layers = layers
            .into_iter()
            .map(|(mut lw, (an, fnm))| {
                if let Some(m) = an {
                    lw.attn_norm = to_f32(&m);
                }
                if let Some(m) = fnm {
                    lw.ffn_norm = to_f32(&m);
                }
                lw
            })
            .collect();
        Ok(Model { config, storage, tok_embd, output, output_norm, layers, weight_bytes, model_config: None })
    }

    /// Open a GGUF file (memory-mapped) and check that it describes a model this engine can run.
    ///
    /// Errors (each names the file once): [`EngineError::Gguf`] (unreadable file), [`EngineError::Arch`]
    /// (unsupported architecture, bad hyper-parameters), and inside [`EngineError::InFile`]
    /// [`EngineError::MissingTensor`], [`EngineError::Shape`], [`EngineError::Tensor`] (unsupported type).
    pub fn load(path: impl AsRef<Path>) -> Result<Model, EngineError> {
        let path = path.as_ref();
        // GGUF and architecture errors already name the file; the rest get it from `InFile`.
        let wrap = |e: EngineError| match e {
            EngineError::Gguf(_) | EngineError::Arch(_) => e,
            e => EngineError::InFile { file: path.display().to_string(), source: Box::new(e) },
        };
        let f = GgufFile::open(path).map_err(|e| wrap(e.into()))?;
        Self::from_gguf(f).map_err(wrap)
    }

    /// Build the model from an open GGUF file (which the model keeps).
    pub fn from_gguf(f: GgufFile) -> Result<Model, EngineError> {
        let mc = ModelConfig::from_gguf(&f)?;
        let config = EngineConfig::from_model_config(&mc);
        let base = f.data_offset() as usize;
        let refs: std::collections::HashMap<String, TensorRef> = f
            .tensors()
            .iter()
            .map(|t| {
                let r = TensorRef {
                    name: t.name.clone(),
                    ty: t.ty,
                    dims: t.dims.iter().map(|&d| d as usize).collect(),
                    offset: base + t.offset as usize,
                    len: t.n_bytes() as usize,
                };
                (t.name.clone(), r)
            })
            .collect();
        let mut m = Model::from_parts(config, Box::new(f), &|n| refs.get(n).cloned())?;
        m.model_config = Some(mc);
        Ok(m)
    }

    /// The GGUF file the model was loaded from (metadata: tokenizer, chat template), if any.
    pub fn gguf(&self) -> Option<&GgufFile> {
        self.storage.gguf()
    }

    /// The shared [`ModelConfig`] when loaded from GGUF.
    pub fn model_config(&self) -> Option<&ModelConfig> {
        self.model_config.as_ref()
    }

    pub(crate) fn mat(&self, m: &Mat) -> QMatrix<'_> {
        QMatrix { ty: m.ty, rows: m.rows, cols: m.cols, data: &self.storage.bytes()[m.offset..m.offset + m.len] }
    }

    /// The type of the output head's weights (for reports).
    pub fn output_type(&self) -> GgmlType {
        self.output.ty
    }
}
