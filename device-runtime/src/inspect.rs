//! `edgerun inspect`: a summary of a GGUF model file (architecture, hyper-parameters, per-layer shapes, tensor
//! counts by type, file size, tokenizer facts), as text for people or JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::arch::ModelConfig;
use crate::gguf::{GgufFile, MetaValue, TensorInfo};

/// One tensor in the report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TensorSummary {
    /// Tensor name.
    pub name: String,
    /// Dims in ggml `ne` order (`dims[0]` = row length).
    pub dims: Vec<u64>,
    /// ggml type name (`Q4_1`, `F32`, ...).
    #[serde(rename = "type")]
    pub ty: String,
    /// Bytes of data.
    pub bytes: u64,
}

impl TensorSummary {
    fn new(t: &TensorInfo) -> TensorSummary {
        TensorSummary { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty.name().into(), bytes: t.n_bytes() }
    }
}

/// One block (layer) of the model.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LayerSummary {
    /// Block index.
    pub index: usize,
    /// FFN hidden width.
    pub ffn: usize,
    /// Query heads.
    pub n_heads: usize,
    /// KV heads.
    pub n_kv_heads: usize,
    /// Parameters of the block (from the hyper-parameters, [`ModelConfig::layer_params`]).
    pub params: u64,
    /// Its tensors (`blk.{index}.*`), with the `blk.{index}.` prefix removed from the names.
    pub tensors: Vec<TensorSummary>,
}

/// Count and bytes of the tensors of one type.
#[derive(Clone, Debug, Serialize, PartialEq, Default)]
pub struct TypeCount {
    /// Number of tensors.
    pub count: usize,
    /// Their data bytes.
    pub bytes: u64,
}

/// Tokenizer facts from `tokenizer.ggml.*` (each `None` when the key is absent).
#[derive(Clone, Debug, Serialize, PartialEq, Default)]
pub struct TokenizerSummary {
    /// `tokenizer.ggml.model` (`gpt2`, `llama`, ...).
    pub model: Option<String>,
    /// `tokenizer.ggml.pre` (pre-tokenizer name, e.g. `smollm`).
    pub pre: Option<String>,
    /// Length of `tokenizer.ggml.tokens`.
    pub vocab_size: Option<usize>,
    /// Length of `tokenizer.ggml.merges`.
    pub merges: Option<usize>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u64>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u64>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u64>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u64>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// Whether `tokenizer.chat_template` is present.
    pub chat_template: bool,
}

/// Everything `edgerun inspect` prints.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    /// The file as given.
    pub file: String,
    /// File size in bytes.
    pub file_size: u64,
    /// GGUF version.
    pub gguf_version: u32,
    /// Data alignment in bytes.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Number of metadata pairs.
    pub n_metadata: usize,
    /// Number of tensors.
    pub n_tensors: usize,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// The model's hyper-parameters, or `None` if they could not be read (see `config_error`).
    pub config: Option<ModelConfig>,
    /// Why `config` is missing.
    pub config_error: Option<String>,
    /// Total parameters: elements of all tensors in the file.
    pub params_in_file: u64,
    /// Per-block summary (empty when `config` is missing).
    pub layers: Vec<LayerSummary>,
    /// Tensors outside the blocks (`token_embd.weight`, `output_norm.weight`, ...).
    pub other_tensors: Vec<TensorSummary>,
    /// Tensor count and bytes by type name.
    pub tensor_types: BTreeMap<String, TypeCount>,
    /// Whether the output projection is tied to the token embedding (no `output.weight`).
    pub tied_embeddings: bool,
    /// Tokenizer facts.
    pub tokenizer: TokenizerSummary,
}

impl Report {
    /// Build the report of an open file. Never fails: a model it cannot understand gets `config_error`.
    pub fn new(f: &GgufFile) -> Report {
        let (config, config_error) = match ModelConfig::from_gguf(f) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mut tensor_types: BTreeMap<String, TypeCount> = BTreeMap::new();
        for t in f.tensors() {
            let c = tensor_types.entry(t.ty.name().into()).or_default();
            c.count += 1;
            c.bytes = c.bytes.saturating_add(t.n_bytes());
        }
        let block_of = |name: &str| -> Option<(usize, String)> {
            let rest = name.strip_prefix("blk.")?;
            let (idx, suffix) = rest.split_once('.')?;
            Some((idx.parse().ok()?, suffix.to_owned()))
        };
        let mut layers = Vec::new();
        let mut other_tensors = Vec::new();
        if let Some(c) = &config {
            layers = (0..c.n_layers)
                .map(|i| LayerSummary {
                    index: i,
                    ffn: c.ffn[i],
                    n_heads: c.n_heads[i],
                    n_kv_heads: c.n_kv_heads[i],
                    params: c.layer_params(i, c.ffn[i], c.n_kv_heads[i]),
                    tensors: Vec::new(),
                })
                .collect();
        }
        for t in f.tensors() {
            match block_of(&t.name) {
                Some((i, suffix)) if i < layers.len() => {
                    layers[i].tensors.push(TensorSummary { name: suffix, ..TensorSummary::new(t) })
                }
                _ => other_tensors.push(TensorSummary::new(t)),
            }
        }
        let s = |k: &str| f.get(k).and_then(MetaValue::as_str).map(str::to_owned);
        let id = |k: &str| f.get(k).and_then(MetaValue::as_u64);
        let len = |k: &str| f.get(k).and_then(MetaValue::as_array).map(|a| a.len());
        let tokenizer = TokenizerSummary {
            model: s("tokenizer.ggml.model"),
            pre: s("tokenizer.ggml.pre"),
            vocab_size: len("tokenizer.ggml.tokens"),
            merges: len("tokenizer.ggml.merges"),
            bos_id: id("tokenizer.ggml.bos_token_id"),
            eos_id: id("tokenizer.ggml.eos_token_id"),
            unk_id: id("tokenizer.ggml.unknown_token_id"),
            pad_id: id("tokenizer.ggml.padding_token_id"),
            add_bos: f.get("tokenizer.ggml.add_bos_token").and_then(MetaValue::as_bool),
            chat_template: f.get("tokenizer.chat_template").is_some(),
        };
        Report {
            file: f.name().to_owned(),
            file_size: f.file_size(),
            gguf_version: f.version(),
            alignment: f.alignment(),
            data_offset: f.data_offset(),
            n_metadata: f.metadata().len(),
            n_tensors: f.tensors().len(),
            architecture: s("general.architecture"),
            name: s("general.name"),
            config,
            config_error,
            params_in_file: f.tensors().iter().map(|t| t.n_elements()).fold(0, u64::saturating_add),
            layers,
            other_tensors,
            tensor_types,
            tied_embeddings: f.tensor("output.weight").is_none(),
            tokenizer,
        }
    }

    /// The report as text (what `edgerun inspect` prints without `--json`).
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let optn = |v: Option<u64>| v.map_or("-".into(), |x| x.to_string());
        let _ = writeln!(o, "file          {}", self.file);
        let _ = writeln!(o, "size          {} bytes ({:.1} MiB), GGUF v{}, alignment {}, data at {}, {} metadata keys, {} tensors",
            self.file_size, mib(self.file_size), self.gguf_version, self.alignment, self.data_offset, self.n_metadata, self.n_tensors);
        let _ = writeln!(o, "architecture  {}   name: {}", opt(&self.architecture), opt(&self.name));
        match &self.config {
            Some(c) => {
                let uniform = |v: &[usize]| if v.windows(2).all(|w| w[0] == w[1]) { v.first().map_or("-".into(), |x| x.to_string()) } else { "per-layer".into() };
                let _ = writeln!(o, "blocks        {}", c.n_layers);
                let _ = writeln!(o, "d_model       {}", c.d_model);
                let _ = writeln!(o, "ffn           {}", uniform(&c.ffn));
                let _ = writeln!(o, "heads         {} query / {} KV, head_dim {}", uniform(&c.n_heads), uniform(&c.n_kv_heads), c.head_dim);
                let _ = writeln!(o, "vocab         {}", c.n_vocab);
                let _ = writeln!(o, "context       {} (training)", c.n_ctx_train);
                let _ = writeln!(o, "rope          dim {}, freq_base {}, {}", c.rope_dim, c.rope_freq_base, if c.rope_neox { "neox" } else { "normal" });
                let _ = writeln!(o, "rms_eps       {:e}", c.rms_eps);
            }
            None => {
                let _ = writeln!(o, "config        unavailable: {}", self.config_error.as_deref().unwrap_or("-"));
            }
        }
        let _ = writeln!(o, "embeddings    {}", if self.tied_embeddings { "tied (no output.weight)" } else { "separate output.weight" });
        let _ = writeln!(o, "parameters    {} ({:.1} M)", self.params_in_file, self.params_in_file as f64 / 1e6);

        let _ = writeln!(o, "\ntensor types");
        for (ty, c) in &self.tensor_types {
            let _ = writeln!(o, "  {ty:<8} {:>4} tensors  {:>10.2} MiB", c.count, mib(c.bytes));
        }

        if !self.layers.is_empty() {
            let _ = writeln!(o, "\nper-layer shapes (dims in ggml order: row length first)");
            // Group consecutive blocks with the same hyper-parameters and tensor shapes.
            let key = |l: &LayerSummary| (l.ffn, l.n_heads, l.n_kv_heads, l.tensors.clone());
            let mut start = 0;
            while start < self.layers.len() {
                let mut end = start;
                while end + 1 < self.layers.len() && key(&self.layers[end + 1]) == key(&self.layers[start]) {
                    end += 1;
                }
                let l = &self.layers[start];
                let range = if end > start { format!("blocks {start}-{end}") } else { format!("block {start}") };
                let _ = writeln!(o, "  {range}: ffn {}, heads {}/{}, {} params each", l.ffn, l.n_heads, l.n_kv_heads, l.params);
                for t in &l.tensors {
                    let _ = writeln!(o, "    {:<22} {:<16} {}", t.name, format!("{:?}", t.dims), t.ty);
                }
                start = end + 1;
            }
        }
        let _ = writeln!(o, "\nother tensors");
        for t in &self.other_tensors {
            let _ = writeln!(o, "  {:<26} {:<16} {}", t.name, format!("{:?}", t.dims), t.ty);
        }

        let t = &self.tokenizer;
        let _ = writeln!(o, "\ntokenizer");
        let _ = writeln!(o, "  model {}, pre {}, vocab {}, merges {}", opt(&t.model), opt(&t.pre),
            optn(t.vocab_size.map(|x| x as u64)), optn(t.merges.map(|x| x as u64)));
        let _ = writeln!(o, "  bos {}, eos {}, unk {}, pad {}, add_bos {}", optn(t.bos_id), optn(t.eos_id), optn(t.unk_id),
            optn(t.pad_id), t.add_bos.map_or("-".into(), |b| b.to_string()));
        let _ = writeln!(o, "  chat template {}", if t.chat_template { "present" } else { "absent" });
        o
    }
}
