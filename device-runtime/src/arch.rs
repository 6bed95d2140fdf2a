//! `ModelConfig` (hyper-parameters of a LLaMA-family model) and `SubnetConfig` (kept layers, FFN width and KV
//! heads per kept layer): the one vocabulary that host and runtime share.
//!
//! Keys follow llama.cpp's `LLM_KV_*` names (`src/llama-arch.cpp`) and gguf-py's `gguf/constants.py` (`Keys`):
//! `{arch}.block_count`, `{arch}.embedding_length`, `{arch}.feed_forward_length`, `{arch}.attention.head_count`,
//! `{arch}.attention.head_count_kv`, ... The `deci` architecture (llama.cpp `LLM_ARCH_DECI`) stores the last
//! three as per-layer arrays; `llama` files may too (llama.cpp accepts both forms for both).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::gguf::{GgufError, GgufFile, MetaValue};

/// Architectures the runtime can run: plain LLaMA and Deci (LLaMA with per-layer FFN widths and head counts).
pub const SUPPORTED_ARCHS: [&str; 2] = ["llama", "deci"];

/// Largest `block_count` accepted (guards allocations on hostile files; real models have < 200).
pub const MAX_LAYERS: usize = 4096;

/// Largest `embedding_length`, FFN width, vocabulary size and head dimension accepted (2^24; real models are
/// below 2^18). Guards the allocations that follow from a configuration.
pub const MAX_WIDTH: usize = 1 << 24;

/// Largest number of attention heads per layer accepted.
pub const MAX_HEADS: usize = 1 << 16;

/// Errors building or checking a [`ModelConfig`] or [`SubnetConfig`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchError {
    /// A GGUF error (missing key, wrong value type, ...).
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// `general.architecture` names an architecture the runtime does not support.
    #[error("{file}: unsupported architecture {arch:?} (supported: llama, deci)")]
    UnsupportedArch {
        /// File name.
        file: String,
        /// The architecture found.
        arch: String,
    },
    /// A per-layer array whose length is not `block_count`, or whose elements are not integers.
    #[error("{file}: {key}: {reason}")]
    PerLayer {
        /// File name.
        file: String,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A hyper-parameter out of range or inconsistent with another.
    #[error("{file}: {reason}")]
    Invalid {
        /// File name.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A sub-network that does not fit its base model.
    #[error("invalid sub-network {id}: {reason}")]
    InvalidSubnet {
        /// The sub-network's id ([`SubnetConfig::id`]).
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// Hyper-parameters of a LLaMA-family model (pre-norm RMSNorm, RoPE, GQA attention, SwiGLU FFN).
///
/// Per-layer vectors have one entry per block (`n_layers` entries). A `deci` layer with `n_heads == 0` has no
/// attention; one with `ffn == 0` has no FFN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `general.architecture`: `"llama"` or `"deci"`.
    pub arch: String,
    /// `{arch}.block_count`.
    pub n_layers: usize,
    /// `{arch}.embedding_length` (hidden size d).
    pub d_model: usize,
    /// Vocabulary size: `{arch}.vocab_size`, else `token_embd.weight` dims[1].
    pub n_vocab: usize,
    /// `{arch}.context_length` (training context, tokens).
    pub n_ctx_train: usize,
    /// Per-head dimension: `{arch}.attention.key_length`, else `d_model / n_heads` of the first layer with heads.
    pub head_dim: usize,
    /// Rotated dimensions per head: `{arch}.rope.dimension_count`, else `head_dim`.
    pub rope_dim: usize,
    /// `{arch}.rope.freq_base` (default 10000).
    pub rope_freq_base: f32,
    /// NeoX-style RoPE (rotate halves) instead of interleaved pairs; `false` for llama and deci (llama.cpp
    /// `LLAMA_ROPE_TYPE_NORM`).
    pub rope_neox: bool,
    /// `{arch}.attention.layer_norm_rms_epsilon`.
    pub rms_eps: f32,
    /// FFN hidden width per layer (`{arch}.feed_forward_length`).
    pub ffn: Vec<usize>,
    /// Query heads per layer (`{arch}.attention.head_count`).
    pub n_heads: Vec<usize>,
    /// KV heads per layer (`{arch}.attention.head_count_kv`, default = `n_heads`).
    pub n_kv_heads: Vec<usize>,
    /// Output projection shares the token embedding (no `output.weight` tensor).
    pub tied_embeddings: bool,
    /// `general.name`.
    pub name: Option<String>,
}

/// Read `key` as a scalar (repeated `n_layers` times) or a per-layer integer array of length `n_layers`.
fn per_layer(f: &GgufFile, key: &str, n_layers: usize) -> Result<Option<Vec<usize>>, ArchError> {
    let file = f.name().to_owned();
    let Some(v) = f.get(key) else { return Ok(None) };
    if let Some(a) = v.as_array() {
        if a.len() != n_layers {
            return Err(ArchError::PerLayer {
                file,
                key: key.into(),
                reason: format!("array has {} entries, block_count is {n_layers}", a.len()),
            });
        }
        let vals = v.as_u32_vec().ok_or_else(|| ArchError::PerLayer {
            file,
            key: key.into(),
            reason: format!("must be an array of non-negative u32/i32 integers, found ARRAY of {}", a.elem_type),
        })?;
        return Ok(Some(vals.into_iter().map(|x| x as usize).collect()));
    }
    match v.as_u32() {
        Some(x) => Ok(Some(vec![x as usize; n_layers])),
        None => Err(ArchError::PerLayer {
            file,
            key: key.into(),
            reason: format!("must be a u32 or a per-layer array, found {}", v.describe()),
        }),
    }
}

impl ModelConfig {
    /// Read the configuration from a GGUF file's metadata (and the `token_embd.weight` / `output.weight`
    /// tensor infos).
    ///
    /// Errors: [`ArchError::UnsupportedArch`]; [`ArchError::Gguf`] for a missing or mistyped key;
    /// [`ArchError::PerLayer`] for a per-layer array whose length differs from `block_count`;
    /// [`ArchError::Invalid`] for zero sizes or inconsistent head counts.
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig, ArchError> {
        let file = f.name().to_owned();
        let invalid = |reason: String| ArchError::Invalid { file: file.clone(), reason };
        let arch = f.get_str("general.architecture")?.to_owned();
        if !SUPPORTED_ARCHS.contains(&arch.as_str()) {
            return Err(ArchError::UnsupportedArch { file, arch });
        }
        let k = |s: &str| format!("{arch}.{s}");
        let n_layers = f.get_u32(&k("block_count"))? as usize;
        if n_layers == 0 || n_layers > MAX_LAYERS {
            return Err(invalid(format!("{} = {n_layers} (must be 1..={MAX_LAYERS})", k("block_count"))));
        }
        let d_model = f.get_u32(&k("embedding_length"))? as usize;
        if d_model == 0 {
            return Err(invalid(format!("{} is 0", k("embedding_length"))));
        }
        let n_ctx_train = f.get_u32(&k("context_length"))? as usize;
        if n_ctx_train == 0 {
            return Err(invalid(format!("{} is 0 (the training context must hold at least one token)", k("context_length"))));
        }
        let required = |key: String| -> Result<Vec<usize>, ArchError> {
            per_layer(f, &key, n_layers)?.ok_or(ArchError::Gguf(GgufError::MissingKey { file: file.clone(), key }))
        };
        let ffn = required(k("feed_forward_length"))?;
        let n_heads = required(k("attention.head_count"))?;
        let n_kv_heads = per_layer(f, &k("attention.head_count_kv"), n_layers)?.unwrap_or_else(|| n_heads.clone());
        let too_big = |what: &str, v: usize, max: usize| (v > max).then(|| invalid(format!("{what} {v} exceeds {max}")));
        if let Some(e) = too_big("embedding_length", d_model, MAX_WIDTH)
            .or_else(|| ffn.iter().find_map(|&x| too_big("feed_forward_length", x, MAX_WIDTH)))
            .or_else(|| n_heads.iter().find_map(|&x| too_big("attention.head_count", x, MAX_HEADS)))
        {
            return Err(e);
        }
        for (i, (&h, &kv)) in n_heads.iter().zip(&n_kv_heads).enumerate() {
            if h == 0 && arch == "llama" {
                return Err(invalid(format!("layer {i}: 0 attention heads (only deci allows attention-free layers)")));
            }
            if h > 0 && (kv == 0 || h % kv != 0) {
                return Err(invalid(format!("layer {i}: {h} query heads is not a multiple of {kv} KV heads")));
            }
            if h == 0 && kv != 0 {
                return Err(invalid(format!("layer {i}: {kv} KV heads but no query heads")));
            }
        }
        let first_heads = n_heads.iter().copied().find(|&h| h > 0);
        let head_dim = match f.opt_u32(&k("attention.key_length"))? {
            Some(h) => h as usize,
            None => match first_heads {
                Some(h) if d_model.is_multiple_of(h) => d_model / h,
                Some(h) => return Err(invalid(format!("d_model {d_model} is not a multiple of {h} heads"))),
                None => d_model,
            },
        };
        if head_dim == 0 || head_dim > MAX_WIDTH {
            return Err(invalid(format!("head dimension {head_dim} out of range 1..={MAX_WIDTH}")));
        }
        if let Some(v) = f.opt_u32(&k("attention.value_length"))?
            && v as usize != head_dim {
                return Err(invalid(format!("value_length {v} differs from key_length {head_dim} (unsupported)")));
            }
        let rope_dim = f.opt_u32(&k("rope.dimension_count"))?.map_or(head_dim, |r| r as usize);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(invalid(format!("rope dimension {rope_dim} must be even and <= head_dim {head_dim}")));
        }
        let rope_freq_base = f.opt_f32(&k("rope.freq_base"))?.unwrap_or(10000.0);
        let rms_eps = f.get_f32(&k("attention.layer_norm_rms_epsilon"))?;
        let ok = |x: f32, min_exclusive: bool| x.is_finite() && if min_exclusive { x > 0.0 } else { x >= 0.0 };
        if !ok(rope_freq_base, true) || !ok(rms_eps, false) {
            return Err(invalid(format!("rope freq_base {rope_freq_base} or rms epsilon {rms_eps} out of range")));
        }
        let n_vocab = match f.opt_u32(&k("vocab_size"))? {
            Some(v) => v as usize,
            None => match f.tensor("token_embd.weight") {
                Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
                _ => return Err(invalid(format!("no {} and no 2-D token_embd.weight tensor", k("vocab_size")))),
            },
        };
        if n_vocab == 0 || n_vocab > MAX_WIDTH {
            return Err(invalid(format!("vocabulary size {n_vocab} out of range 1..={MAX_WIDTH}")));
        }
        // The token embedding, when present, must agree: [d_model, n_vocab] in ggml order.
        if let Some(t) = f.tensor("token_embd.weight") {
            if t.dims.len() != 2 || t.dims[0] != d_model as u64 || t.dims[1] != n_vocab as u64 {
                return Err(invalid(format!(
                    "token_embd.weight has dims {:?}, expected [{d_model}, {n_vocab}] (embedding_length, vocab)",
                    t.dims
                )));
            }
        }
        let name = match f.get("general.name") {
            Some(MetaValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(ModelConfig {
            arch,
            n_layers,
            d_model,
            n_vocab,
            n_ctx_train,
            head_dim,
            rope_dim,
            rope_freq_base,
            rope_neox: false,
            rms_eps,
            ffn,
            n_heads,
            n_kv_heads,
            tied_embeddings: f.tensor("output.weight").is_none(),
            name,
        })
    }

    /// The sub-network that keeps everything: all layers, full FFN width and all KV heads.
    pub fn full_subnet(&self) -> SubnetConfig {
        SubnetConfig {
            layers: (0..self.n_layers).collect(),
            ffn: self.ffn.clone(),
            kv_heads: self.n_kv_heads.clone(),
        }
    }

    /// Query heads per KV head in `layer` (GQA group size; 0 for an attention-free layer).
    pub fn gqa_group(&self, layer: usize) -> usize {
        match self.n_kv_heads[layer] {
            0 => 0,
            kv => self.n_heads[layer] / kv,
        }
    }

    /// Whether every layer has the same FFN width and head counts (writable as `llama`, else `deci`).
    pub fn is_uniform(&self) -> bool {
        let same = |v: &[usize]| v.windows(2).all(|w| w[0] == w[1]);
        same(&self.ffn) && same(&self.n_heads) && same(&self.n_kv_heads)
    }

    /// Parameters of one block of base layer `layer` with FFN width `ffn` and `kv_heads` KV heads
    /// (query heads = `kv_heads * gqa_group(layer)`): attn_norm `d` + Wq `d*hq*hd` + Wk, Wv `d*kv*hd` each +
    /// Wo `hq*hd*d` + ffn_norm `d` + gate, up, down `d*ffn` each. Norms are dropped with their sub-block.
    pub fn layer_params(&self, layer: usize, ffn: usize, kv_heads: usize) -> u64 {
        // Saturating: the fields are public and a hostile file may hold absurd sizes.
        let mul = |xs: &[u64]| xs.iter().fold(1u64, |a, &x| a.saturating_mul(x));
        let d = self.d_model as u64;
        let hd = self.head_dim as u64;
        let kv = kv_heads as u64;
        let hq = mul(&[kv, self.gqa_group(layer) as u64]);
        let attn = if hq > 0 { d.saturating_add(mul(&[2, d, hq, hd])).saturating_add(mul(&[2, d, kv, hd])) } else { 0 };
        let mlp = if ffn > 0 { d.saturating_add(mul(&[3, d, ffn as u64])) } else { 0 };
        attn.saturating_add(mlp)
    }

    /// Parameters outside the blocks: token embedding `n_vocab*d`, output norm `d`, and the output
    /// projection `n_vocab*d` unless tied.
    pub fn non_layer_params(&self) -> u64 {
        let ve = (self.n_vocab as u64).saturating_mul(self.d_model as u64);
        ve.saturating_add(self.d_model as u64).saturating_add(if self.tied_embeddings { 0 } else { ve })
    }

    /// Total parameters of a sub-network (assumed valid for this model).
    pub fn subnet_params(&self, s: &SubnetConfig) -> u64 {
        s.layers
            .iter()
            .zip(&s.ffn)
            .zip(&s.kv_heads)
            .map(|((&l, &f), &k)| self.layer_params(l, f, k))
            .fold(self.non_layer_params(), u64::saturating_add)
    }

    /// Total parameters of the full model.
    pub fn total_params(&self) -> u64 {
        self.subnet_params(&self.full_subnet())
    }
}

/// A sub-network of a base model: which layers are kept and, per kept layer, the FFN width and the number of
/// KV heads (each KV head keeps its `n_heads / n_kv_heads` query heads). Slicing keeps the first `ffn` neurons
/// and the first `kv_heads` KV groups (DESIGN.md). Serialized as
/// `{"layers":[...],"ffn":[...],"kv_heads":[...]}`, one entry per kept layer; other keys are refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct SubnetConfig {
    /// Indices of the kept base layers, strictly increasing.
    pub layers: Vec<usize>,
    /// FFN width of each kept layer.
    pub ffn: Vec<usize>,
    /// KV heads of each kept layer.
    pub kv_heads: Vec<usize>,
}

impl SubnetConfig {
    /// The canonical JSON (compact, fields in the order layers, ffn, kv_heads).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("SubnetConfig serializes")
    }

    /// Stable short id: the first 12 hex digits of the SHA-256 of [`SubnetConfig::canonical_json`].
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.canonical_json().as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// Query heads of each kept layer: `kv_heads * (n_heads / n_kv_heads)` of its base layer.
    /// Assumes the sub-network is valid for `base`.
    pub fn n_heads(&self, base: &ModelConfig) -> Vec<usize> {
        self.layers.iter().zip(&self.kv_heads).map(|(&l, &k)| k * base.gqa_group(l)).collect()
    }

    /// Check the sub-network against its base model: equal lengths, at least one layer, layers strictly
    /// increasing and `< n_layers`, `ffn <=` the base layer's FFN width, `kv_heads <=` its KV heads.
    ///
    /// Errors: [`ArchError::InvalidSubnet`] naming the first problem.
    pub fn validate(&self, base: &ModelConfig) -> Result<(), ArchError> {
        let err = |reason: String| ArchError::InvalidSubnet { id: self.id(), reason };
        let n = self.layers.len();
        if self.ffn.len() != n || self.kv_heads.len() != n {
            return Err(err(format!(
                "lengths differ: {} layers, {} ffn, {} kv_heads",
                n,
                self.ffn.len(),
                self.kv_heads.len()
            )));
        }
        if n == 0 {
            return Err(err("no layers".into()));
        }
        for (i, &l) in self.layers.iter().enumerate() {
            if l >= base.n_layers {
                return Err(err(format!("layer {l} is out of range (base has {} layers)", base.n_layers)));
            }
            if i > 0 && l <= self.layers[i - 1] {
                return Err(err(format!("layers are not strictly increasing at {} -> {l}", self.layers[i - 1])));
            }
            if self.ffn[i] > base.ffn[l] {
                return Err(err(format!("layer {l}: ffn {} > base {}", self.ffn[i], base.ffn[l])));
            }
            if self.kv_heads[i] > base.n_kv_heads[l] {
                return Err(err(format!("layer {l}: kv_heads {} > base {}", self.kv_heads[i], base.n_kv_heads[l])));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgmlType, GgufWriter};

    fn model(extra: &[(&str, MetaValue)]) -> Result<ModelConfig, ArchError> {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", MetaValue::String("deci".into()));
        w.add_metadata("deci.block_count", MetaValue::U32(3));
        w.add_metadata("deci.embedding_length", MetaValue::U32(64));
        w.add_metadata("deci.context_length", MetaValue::U32(128));
        w.add_metadata("deci.feed_forward_length", MetaValue::u32_array(&[96, 0, 32]));
        w.add_metadata("deci.attention.head_count", MetaValue::i32_array(&[4, 0, 4]));
        w.add_metadata("deci.attention.head_count_kv", MetaValue::u32_array(&[2, 0, 1]));
        w.add_metadata("deci.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5));
        for (k, v) in extra {
            w.add_metadata(k, v.clone());
        }
        w.add_tensor("token_embd.weight", &[64, 10], GgmlType::F32, vec![0u8; 64 * 10 * 4]).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes().unwrap(), "t.gguf").unwrap();
        ModelConfig::from_gguf(&f)
    }

    #[test]
    fn per_layer_arrays_and_defaults() {
        let m = model(&[]).unwrap();
        assert_eq!(m.ffn, vec![96, 0, 32]);
        assert_eq!(m.n_heads, vec![4, 0, 4]);
        assert_eq!(m.n_kv_heads, vec![2, 0, 1]);
        assert_eq!((m.head_dim, m.rope_dim, m.n_vocab), (16, 16, 10));
        assert_eq!(m.rope_freq_base, 10000.0);
        assert!(m.tied_embeddings && !m.is_uniform());
        // Hand count, layer 0: attention 64 + 2*64*4*16 + 2*64*2*16 = 12352, FFN 64 + 3*64*96 = 18496.
        assert_eq!(m.layer_params(0, 96, 2), 12352 + 18496);
        assert_eq!(m.layer_params(1, 0, 0), 0);
        let s = SubnetConfig { layers: vec![0, 2], ffn: vec![48, 32], kv_heads: vec![1, 1] };
        s.validate(&m).unwrap();
        assert_eq!(s.n_heads(&m), vec![2, 4]);
    }

    #[test]
    fn bad_per_layer_length_is_a_model_error() {
        let e = model(&[("deci.feed_forward_length", MetaValue::u32_array(&[1, 2]))]).unwrap_err().to_string();
        assert!(e.contains("t.gguf") && e.contains("deci.feed_forward_length") && e.contains("2 entries, block_count is 3"), "{e}");
        let e = model(&[("general.architecture", MetaValue::String("gpt2".into()))]).unwrap_err().to_string();
        assert!(e.contains("unsupported architecture \"gpt2\""), "{e}");
        let e = model(&[("deci.attention.head_count_kv", MetaValue::u32_array(&[3, 0, 1]))]).unwrap_err().to_string();
        assert!(e.contains("4 query heads is not a multiple of 3 KV heads"), "{e}");
    }

    #[test]
    fn absurd_sizes_are_refused_and_param_counts_saturate() {
        // Found by the fuzzer: embedding_length 0xfff70040 made layer_params overflow.
        let e = model(&[("deci.embedding_length", MetaValue::U32(0xfff7_0040))]).unwrap_err().to_string();
        assert!(e.contains("embedding_length 4294377536 exceeds 16777216"), "{e}");
        let e = model(&[("deci.embedding_length", MetaValue::U32(32))]).unwrap_err().to_string();
        assert!(e.contains("token_embd.weight has dims [64, 10], expected [32, 10]"), "{e}");
        let mut m = model(&[]).unwrap();
        m.d_model = usize::MAX;
        m.head_dim = usize::MAX;
        m.n_vocab = usize::MAX;
        assert_eq!(m.total_params(), u64::MAX);
    }

    #[test]
    fn subnet_validation_and_id() {
        let m = model(&[]).unwrap();
        let bad = |s: SubnetConfig| s.validate(&m).unwrap_err().to_string();
        assert!(bad(SubnetConfig { layers: vec![0, 0], ffn: vec![1, 1], kv_heads: vec![1, 1] }).contains("strictly increasing"));
        assert!(bad(SubnetConfig { layers: vec![3], ffn: vec![1], kv_heads: vec![1] }).contains("out of range"));
        assert!(bad(SubnetConfig { layers: vec![0], ffn: vec![97], kv_heads: vec![1] }).contains("ffn 97 > base 96"));
        assert!(bad(SubnetConfig { layers: vec![0], ffn: vec![1], kv_heads: vec![3] }).contains("kv_heads 3 > base 2"));
        assert!(bad(SubnetConfig { layers: vec![0], ffn: vec![1, 2], kv_heads: vec![3] }).contains("lengths differ"));
        let s = SubnetConfig { layers: vec![0, 1, 2], ffn: vec![1536, 1024, 512], kv_heads: vec![3, 3, 2] };
        assert_eq!(s.canonical_json(), r#"{"layers":[0,1,2],"ffn":[1536,1024,512],"kv_heads":[3,3,2]}"#);
        // python3 -c 'import hashlib;print(hashlib.sha256(b"{\"layers\":[0,1,2],\"ffn\":[1536,1024,512],\"kv_heads\":[3,3,2]}").hexdigest()[:12])'
        assert_eq!(s.id(), "ab43f27664a4");
    }
}
