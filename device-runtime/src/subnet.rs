//! Sub-network extraction: slice a base model (or super-network) GGUF to a [`SubnetConfig`], quantize, and
//! write a GGUF that llama.cpp and this runtime load; predict that file's exact size without building it.
//!
//! Lives in the runtime (not only in the host tool) so that `edgerun profile --validate` can build random
//! sub-network files on the target device. Rules (docs/EXPORT.md, issue 9):
//!
//! - **Slicing** (ggml order, `dims[0]` = row length): `ffn_gate`/`ffn_up` `[d, ffn]` keep the first `k` rows;
//!   `ffn_down` `[ffn, d]` keeps the first `k` columns of every row; for `k` KV groups out of `n_kv`
//!   (`g = n_head / n_kv` query heads per group): `attn_k`/`attn_v` `[d, n_kv*hd]` keep the first `k*hd` rows,
//!   `attn_q` `[d, n_head*hd]` the first `k*g*hd` rows, `attn_output` `[n_head*hd, d]` the first `k*g*hd`
//!   columns. Dropped layers are absent and the kept blocks renumbered `blk.0..`. A kept layer with 0 KV heads
//!   has no attention tensors (and 0 query heads); one with FFN 0 has no FFN tensors.
//! - **Architecture**: `llama` when every kept layer has the same FFN width and head counts (all non-zero),
//!   else `deci` with per-layer u32 arrays `deci.feed_forward_length`, `deci.attention.head_count`,
//!   `deci.attention.head_count_kv` (llama.cpp `LLM_ARCH_DECI`); every `{base_arch}.*` key is renamed.
//!   `{arch}.attention.key_length`/`value_length` carry the head dimension; `general.file_type` is the
//!   llama.cpp ftype of the quantization (F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 7).
//! - **Tensor types** (llama.cpp `llama_tensor_get_type` for the pure ftypes): 1-D tensors (norms) F32; with
//!   F32/F16 every 2-D tensor F32/F16; with Q8_0 every 2-D tensor Q8_0; with Q4_0/Q4_1 the output tensor (or
//!   `token_embd.weight` when the embeddings are tied) becomes Q6_K, or Q8_0 when its row length is not a
//!   multiple of 256, and every other 2-D tensor Q4_0/Q4_1. This crate cannot quantize Q6_K: a Q6_K source is
//!   copied as is, any other source gets Q8_0 (llama.cpp's own fallback for Q6_K) — see docs/EXPORT.md.
//! - **Data**: tensor by tensor. Same source and target type with a block-aligned slice: the blocks are copied
//!   (bit-identical); otherwise rows are dequantized with [`quant::dequantize`], sliced and quantized with
//!   [`quant::quantize`] (bit-exact with gguf-py). At most one dequantized tensor is held at a time.
//! - **Provenance** (`llamanas.*` keys): base name and sha256, the sub-network (canonical JSON) and its id,
//!   quantization, and optionally the search run and objectives ([`Provenance`]).
//!
//! The file is written atomically (temporary file + rename); every check runs before anything is written.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::arch::{ArchError, ModelConfig, SubnetConfig};
use crate::gguf::{GgmlType, GgufError, GgufFile, GgufWriter, MetaValue, TensorInfo, predict_file_size};
use crate::quant::{self, QuantError};

/// Metadata key prefix of the provenance keys.
pub const PROVENANCE_PREFIX: &str = "llamanas.";
/// `llamanas.base.name`: `general.name` of the base model (or its file name).
pub const KEY_BASE_NAME: &str = "llamanas.base.name";
/// `llamanas.base.sha256`: SHA-256 of the base GGUF file, 64 lowercase hex digits.
pub const KEY_BASE_SHA256: &str = "llamanas.base.sha256";
/// `llamanas.subnet`: the [`SubnetConfig`] as canonical JSON.
pub const KEY_SUBNET: &str = "llamanas.subnet";
/// `llamanas.subnet.id`: [`SubnetConfig::id`].
pub const KEY_SUBNET_ID: &str = "llamanas.subnet.id";
/// `llamanas.quant`: the export quantization (`q8_0`, `q4_0`, `q4_1`, `f16`, `f32`).
pub const KEY_QUANT: &str = "llamanas.quant";
/// `llamanas.version`: version of the toolkit that wrote the file.
pub const KEY_VERSION: &str = "llamanas.version";
/// `llamanas.search.run`: name of the search run the sub-network was picked from (optional).
pub const KEY_RUN: &str = "llamanas.search.run";
/// `llamanas.search.objectives`: the sub-network's objectives in that run, as a JSON object (optional).
pub const KEY_OBJECTIVES: &str = "llamanas.search.objectives";
/// `llamanas.reconstruction`: how the tensors that read pruned activations were refit ([`Reconstruction::method`]);
/// absent when the sliced weights were kept as they are.
pub const KEY_RECONSTRUCTION: &str = "llamanas.reconstruction";

/// Tensors of a sub-network that replace the sliced base tensors (calibration reconstruction: `ffn_down` and
/// `attn_output` refit to the kept neurons and heads; computed by the host's `llamanas::reconstruct`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reconstruction {
    /// What was done, written to [`KEY_RECONSTRUCTION`] (e.g. `least-squares ffn_down,attn_output; damp 0.01;
    /// calibration 131072 tokens of c4_demo.jsonl,wiki_demo.txt`).
    pub method: String,
    /// Output tensor name (blocks renumbered, e.g. `blk.3.ffn_down.weight`) -> f32 values in ggml order
    /// (`dims[0]` elements per row), exactly as many as the planned tensor has.
    pub tensors: HashMap<String, Vec<f32>>,
}

/// Errors of sub-network extraction. Every message names the base file, the sub-network or the tensor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubnetError {
    /// The base model's configuration could not be read, or the sub-network does not fit it
    /// ([`SubnetConfig::validate`]).
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// Reading the base or writing the output failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The sub-network is valid for the base but cannot be exported this way.
    #[error("sub-network {id}: {reason}")]
    Unexportable {
        /// [`SubnetConfig::id`].
        id: String,
        /// What is wrong (layer, width, block size, ...).
        reason: String,
    },
    /// A base tensor that the exporter does not know how to slice, or whose shape does not match the
    /// base model's configuration.
    #[error("{file}: tensor {tensor:?}: {reason}")]
    BadTensor {
        /// Base file name.
        file: String,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A reconstructed tensor does not fit the plan (unknown name, wrong element count) or holds a
    /// non-finite value: nothing is built or written.
    #[error("sub-network {id}: reconstructed tensor {tensor:?}: {reason}")]
    Reconstruction {
        /// [`SubnetConfig::id`].
        id: String,
        /// The output tensor.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// Building the in-memory model failed ([`ExportPlan::build_model`]).
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// Dequantizing or quantizing a tensor failed.
    #[error("tensor {tensor:?}: {source}")]
    Quant {
        /// The output tensor.
        tensor: String,
        /// The block-format error.
        #[source]
        source: QuantError,
    },
}

/// The quantization of an exported sub-network (llama.cpp's "pure" file types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExportQuant {
    /// All 2-D weights F32.
    F32,
    /// All 2-D weights F16.
    F16,
    /// All 2-D weights Q8_0.
    Q8_0,
    /// 2-D weights Q4_0; output / tied embedding Q6_K or Q8_0.
    Q4_0,
    /// 2-D weights Q4_1; output / tied embedding Q6_K or Q8_0.
    Q4_1,
}

impl ExportQuant {
    /// Every export quantization, in the order of the CLI's help.
    pub const ALL: [ExportQuant; 5] = [Self::Q8_0, Self::Q4_0, Self::Q4_1, Self::F16, Self::F32];

    /// The tensor type of the bulk of the 2-D weights.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4_0 => GgmlType::Q4_0,
            Self::Q4_1 => GgmlType::Q4_1,
        }
    }

    /// llama.cpp `llama_ftype` value written to `general.file_type` (`LLAMA_FTYPE_ALL_F32` 0, `MOSTLY_F16` 1,
    /// `MOSTLY_Q4_0` 2, `MOSTLY_Q4_1` 3, `MOSTLY_Q8_0` 7).
    pub fn ftype(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 7,
        }
    }

    /// Lower-case name as on the command line (`q8_0`, `q4_0`, `q4_1`, `f16`, `f32`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
        }
    }
}

impl std::fmt::Display for ExportQuant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ExportQuant {
    type Err = String;

    /// Parse `q8_0`, `q4_0`, `q4_1`, `f16`, `f32` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, String> {
        let l = s.to_ascii_lowercase();
        Self::ALL.into_iter().find(|q| q.name() == l).ok_or_else(|| {
            format!("unknown quantization {s:?} (expected one of q8_0, q4_0, q4_1, f16, f32)")
        })
    }
}

/// Where an exported sub-network comes from, written as `llamanas.*` metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Provenance {
    /// SHA-256 of the base GGUF file, 64 lowercase hex digits ([`Provenance::sha256_hex`]).
    pub base_sha256: String,
    /// Name of the search run (`pareto.json` `"run"`), if the sub-network was picked from one.
    pub run: Option<String>,
    /// The sub-network's objectives in that run (a JSON object, e.g. `{"accuracy":0.41,"latency_ms":12.5}`).
    pub objectives: Option<serde_json::Value>,
}

impl Provenance {
    /// Provenance without search information; hashes the base file's bytes (about 0.3 s per 100 MB).
    pub fn for_base(base: &GgufFile) -> Provenance {
        Provenance { base_sha256: Self::sha256_hex(base.bytes()), run: None, objectives: None }
    }

    /// SHA-256 of `bytes` as 64 lowercase hex digits.
    pub fn sha256_hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A stand-in with the same metadata size as [`Provenance::for_base`] (hash of zeros), used to predict sizes.
    fn placeholder() -> Provenance {
        Provenance { base_sha256: "0".repeat(64), run: None, objectives: None }
    }
}

/// How a base tensor is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slice {
    /// The whole tensor.
    Whole,
    /// The first `n` rows (rows are `dims[0]` elements).
    Rows(u64),
    /// The first `n` elements of every row.
    Cols(u64),
}

/// One tensor of the output file.
#[derive(Clone, Debug)]
struct PlannedTensor {
    /// Output name (blocks renumbered).
    name: String,
    /// Index of the source tensor in the base file's tensor list.
    src: usize,
    /// Output dims (ggml order).
    dims: Vec<u64>,
    /// Output type.
    ty: GgmlType,
    /// How the source is cut.
    slice: Slice,
}

/// Everything about an exported file except its tensor data: metadata (in order), tensor names, shapes and
/// types. Built by [`ExportPlan::new`], which runs every check; [`ExportPlan::write`] then cannot fail on the
/// sub-network (only on I/O).
#[derive(Debug)]
pub struct ExportPlan<'f> {
    base: &'f GgufFile,
    cfg: SubnetConfig,
    quant: ExportQuant,
    arch: String,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PlannedTensor>,
    replaced: HashMap<String, Vec<f32>>,
}

/// What [`ExportPlan::write`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportReport {
    /// The file written.
    pub path: PathBuf,
    /// `llama` or `deci`.
    pub arch: String,
    /// [`SubnetConfig::id`].
    pub subnet_id: String,
    /// Blocks in the file.
    pub n_layers: usize,
    /// Parameters of the sub-network ([`ModelConfig::subnet_params`]).
    pub params: u64,
    /// Bytes written.
    pub size_bytes: u64,
    /// Bytes predicted by [`ExportPlan::predicted_size`] before writing.
    pub predicted_bytes: u64,
    /// Number of tensors per type, sorted by type name.
    pub tensor_types: Vec<(GgmlType, usize)>,
    /// Tensors whose blocks were copied unchanged from the base.
    pub copied_tensors: usize,
    /// Whether tensors were replaced by a [`Reconstruction`].
    pub reconstructed: bool,
}

/// The exact size in bytes of the GGUF file [`export_subnet`] writes for `cfg` at `quant` from `base`, with
/// provenance from [`Provenance::for_base`] (no search run or objectives; those add their key-value pairs:
/// use [`ExportPlan::predicted_size`] on a plan with the full provenance to include them). Computed from
/// metadata and tensor shapes and types only; no tensor data is read.
///
/// Errors: as [`ExportPlan::new`].
pub fn predicted_gguf_size(base: &GgufFile, cfg: &SubnetConfig, quant: ExportQuant) -> Result<u64, SubnetError> {
    ExportPlan::new(base, cfg, quant, &Provenance::placeholder())?.predicted_size()
}

/// Slice, quantize and write `cfg` of `base` to `out` (atomically). Returns what was written.
///
/// Errors: as [`ExportPlan::new`] (before anything is written) and [`ExportPlan::write`].
pub fn export_subnet(
    base: &GgufFile,
    cfg: &SubnetConfig,
    quant: ExportQuant,
    provenance: &Provenance,
    out: &Path,
) -> Result<ExportReport, SubnetError> {
    ExportPlan::new(base, cfg, quant, provenance)?.write(out)
}

/// The type llama.cpp's `llama_tensor_get_type` gives `name` in a pure `quant` file (see the module docs).
fn target_type(name: &str, src: &TensorInfo, quant: ExportQuant, tied: bool) -> GgmlType {
    if src.dims.len() < 2 {
        return GgmlType::F32;
    }
    let is_output = name == "output.weight" || (tied && name == "token_embd.weight");
    match quant {
        ExportQuant::Q4_0 | ExportQuant::Q4_1 if is_output => {
            if src.dims[0].is_multiple_of(256) && src.ty == GgmlType::Q6_K {
                GgmlType::Q6_K
            } else {
                GgmlType::Q8_0
            }
        }
        q => q.ggml_type(),
    }
}

/// Split `blk.N.rest` into `(N, rest)`.
fn block_name(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (n, rest) = rest.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

impl<'f> ExportPlan<'f> {
    /// Plan the export of `cfg` from `base` at `quant`: checks the sub-network ([`SubnetConfig::validate`],
    /// no kept layer with both 0 KV heads and FFN 0, every output row length a whole number of blocks of its
    /// type, e.g. FFN widths multiples of 32 for Q8_0/Q4_0/Q4_1), checks every base tensor's shape against
    /// the base configuration, and builds the output metadata and tensor list.
    ///
    /// Errors: [`SubnetError::Arch`] (base config unreadable, sub-network outside the base),
    /// [`SubnetError::Unexportable`], [`SubnetError::BadTensor`] (unknown per-block tensor, shape mismatch).
    pub fn new(
        base: &'f GgufFile,
        cfg: &SubnetConfig,
        quant: ExportQuant,
        provenance: &Provenance,
    ) -> Result<ExportPlan<'f>, SubnetError> {
        let mc = ModelConfig::from_gguf(base)?;
        cfg.validate(&mc)?;
        let id = cfg.id();
        let unexportable = |reason: String| SubnetError::Unexportable { id: id.clone(), reason };
        let bad_tensor = |t: &TensorInfo, reason: String| SubnetError::BadTensor {
            file: base.name().to_owned(),
            tensor: t.name.clone(),
            reason,
        };
        let n_heads = cfg.n_heads(&mc);
        let qt = quant.ggml_type();
        for (i, &l) in cfg.layers.iter().enumerate() {
            if cfg.kv_heads[i] == 0 && cfg.ffn[i] == 0 {
                return Err(unexportable(format!(
                    "layer {l} is kept with 0 KV heads and FFN 0 (an empty block): drop the layer instead"
                )));
            }
            if !cfg.ffn[i].is_multiple_of(qt.block_elems()) {
                return Err(unexportable(format!(
                    "layer {l}: FFN width {} is not a multiple of the {qt} block size {} (the row length of ffn_down)",
                    cfg.ffn[i],
                    qt.block_elems()
                )));
            }
        }

        // Output tensors, in base order.
        let kept: HashMap<usize, usize> = cfg.layers.iter().enumerate().map(|(i, &l)| (l, i)).collect();
        let (d, hd) = (mc.d_model as u64, mc.head_dim as u64);
        let mut tensors = Vec::with_capacity(base.tensors().len());
        for (src, t) in base.tensors().iter().enumerate() {
            let (name, dims, slice, expect) = match block_name(&t.name) {
                None => (t.name.clone(), t.dims.clone(), Slice::Whole, None),
                Some((l, rest)) => {
                    if l >= mc.n_layers {
                        return Err(bad_tensor(t, format!("block {l} is beyond block_count {}", mc.n_layers)));
                    }
                    let Some(&i) = kept.get(&l) else { continue };
                    let (ffn_base, ffn) = (mc.ffn[l] as u64, cfg.ffn[i] as u64);
                    let (hq_base, kv_base) = (mc.n_heads[l] as u64, mc.n_kv_heads[l] as u64);
                    let (hq, kv) = (n_heads[i] as u64, cfg.kv_heads[i] as u64);
                    let attn = kv > 0;
                    let mlp = ffn > 0;
                    // (keep?, expected base dims, output dims, slice)
                    let (keep, expect, dims, slice) = match rest {
                        "attn_norm.weight" => (attn, vec![d], vec![d], Slice::Whole),
                        "attn_q.weight" => (attn, vec![d, hq_base * hd], vec![d, hq * hd], Slice::Rows(hq * hd)),
                        "attn_k.weight" | "attn_v.weight" => {
                            (attn, vec![d, kv_base * hd], vec![d, kv * hd], Slice::Rows(kv * hd))
                        }
                        "attn_output.weight" => {
                            (attn, vec![hq_base * hd, d], vec![hq * hd, d], Slice::Cols(hq * hd))
                        }
                        "ffn_norm.weight" => (mlp, vec![d], vec![d], Slice::Whole),
                        "ffn_gate.weight" | "ffn_up.weight" => {
                            (mlp, vec![d, ffn_base], vec![d, ffn], Slice::Rows(ffn))
                        }
                        "ffn_down.weight" => (mlp, vec![ffn_base, d], vec![ffn, d], Slice::Cols(ffn)),
                        _ => {
                            return Err(bad_tensor(
                                t,
                                "unknown per-block tensor: the exporter can slice only attn_norm, attn_q, attn_k, \
                                 attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down weights"
                                    .into(),
                            ));
                        }
                    };
                    if !keep {
                        continue;
                    }
                    (format!("blk.{i}.{rest}"), dims, slice, Some(expect))
                }
            };
            if let Some(expect) = expect
                && t.dims != expect
            {
                return Err(bad_tensor(
                    t,
                    format!("dims {:?} do not match the base configuration (expected {expect:?})", t.dims),
                ));
            }
            if !quant::can_dequantize(t.ty) {
                return Err(bad_tensor(t, format!("tensor type {} cannot be dequantized", t.ty)));
            }
            let ty = target_type(&t.name, t, quant, mc.tied_embeddings);
            if !dims[0].is_multiple_of(ty.block_elems() as u64) {
                return Err(unexportable(format!(
                    "tensor {name}: row length {} is not a multiple of the {ty} block size {}",
                    dims[0],
                    ty.block_elems()
                )));
            }
            tensors.push(PlannedTensor { name, src, dims, ty, slice });
        }
        for (i, &l) in cfg.layers.iter().enumerate() {
            let prefix = format!("blk.{i}.");
            let want = (cfg.kv_heads[i] > 0) as usize * 5 + (cfg.ffn[i] > 0) as usize * 4;
            let have = tensors.iter().filter(|t| t.name.starts_with(&prefix)).count();
            if have != want {
                return Err(SubnetError::BadTensor {
                    file: base.name().to_owned(),
                    tensor: format!("blk.{l}.*"),
                    reason: format!("base block {l} has {have} of the {want} tensors the sub-network needs"),
                });
            }
        }

        // Metadata: the base's, in order, renamed to the output architecture, then the overrides.
        let uniform = cfg.ffn.windows(2).all(|w| w[0] == w[1])
            && n_heads.windows(2).all(|w| w[0] == w[1])
            && cfg.kv_heads.windows(2).all(|w| w[0] == w[1])
            && cfg.ffn[0] > 0
            && cfg.kv_heads[0] > 0;
        let arch = if uniform { "llama" } else { "deci" }.to_owned();
        let base_prefix = format!("{}.", mc.arch);
        let mut w = GgufWriter::new();
        for (k, v) in base.metadata() {
            match k.strip_prefix(&base_prefix) {
                Some(rest) => w.add_metadata(&format!("{arch}.{rest}"), v.clone()),
                None => w.add_metadata(k, v.clone()),
            }
        }
        let key = |s: &str| format!("{arch}.{s}");
        let u32s = |v: &[usize]| v.iter().map(|&x| x as u32).collect::<Vec<u32>>();
        w.add_metadata("general.architecture", MetaValue::String(arch.clone()));
        w.add_metadata(&key("block_count"), MetaValue::U32(cfg.layers.len() as u32));
        if uniform {
            w.add_metadata(&key("feed_forward_length"), MetaValue::U32(cfg.ffn[0] as u32));
            w.add_metadata(&key("attention.head_count"), MetaValue::U32(n_heads[0] as u32));
            w.add_metadata(&key("attention.head_count_kv"), MetaValue::U32(cfg.kv_heads[0] as u32));
        } else {
            w.add_metadata(&key("feed_forward_length"), MetaValue::u32_array(&u32s(&cfg.ffn)));
            w.add_metadata(&key("attention.head_count"), MetaValue::u32_array(&u32s(&n_heads)));
            w.add_metadata(&key("attention.head_count_kv"), MetaValue::u32_array(&u32s(&cfg.kv_heads)));
        }
        w.add_metadata(&key("attention.key_length"), MetaValue::U32(mc.head_dim as u32));
        w.add_metadata(&key("attention.value_length"), MetaValue::U32(mc.head_dim as u32));
        w.add_metadata("general.file_type", MetaValue::U32(quant.ftype()));
        if w.get("general.quantization_version").is_none() {
            // llama.cpp's quantizer always writes it (GGML_QNT_VERSION).
            w.add_metadata("general.quantization_version", MetaValue::U32(2));
        }
        let base_name = mc.name.clone().unwrap_or_else(|| {
            Path::new(base.name()).file_name().map_or(base.name().to_owned(), |n| n.to_string_lossy().into_owned())
        });
        w.add_metadata(KEY_VERSION, MetaValue::String(env!("CARGO_PKG_VERSION").into()));
        w.add_metadata(KEY_BASE_NAME, MetaValue::String(base_name));
        w.add_metadata(KEY_BASE_SHA256, MetaValue::String(provenance.base_sha256.clone()));
        w.add_metadata(KEY_SUBNET, MetaValue::String(cfg.canonical_json()));
        w.add_metadata(KEY_SUBNET_ID, MetaValue::String(id.clone()));
        w.add_metadata(KEY_QUANT, MetaValue::String(quant.name().into()));
        if let Some(run) = &provenance.run {
            w.add_metadata(KEY_RUN, MetaValue::String(run.clone()));
        }
        if let Some(obj) = &provenance.objectives {
            w.add_metadata(KEY_OBJECTIVES, MetaValue::String(obj.to_string()));
        }
        Ok(ExportPlan {
            base,
            cfg: cfg.clone(),
            quant,
            arch,
            metadata: w.metadata().to_vec(),
            tensors,
            replaced: HashMap::new(),
        })
    }

    /// Replace planned tensors by reconstructed values (quantized to each tensor's planned type when built)
    /// and record [`Reconstruction::method`] under [`KEY_RECONSTRUCTION`]. An empty reconstruction changes
    /// nothing (no key is added).
    ///
    /// Errors: [`SubnetError::Reconstruction`] for a name that is not a planned tensor, a wrong element count
    /// or a non-finite value (checked before anything is built).
    pub fn with_reconstruction(mut self, r: Reconstruction) -> Result<ExportPlan<'f>, SubnetError> {
        if r.tensors.is_empty() {
            return Ok(self);
        }
        let err = |tensor: &str, reason: String| SubnetError::Reconstruction { id: self.cfg.id(), tensor: tensor.to_owned(), reason };
        for (name, v) in &r.tensors {
            let Some(t) = self.tensors.iter().find(|t| &t.name == name) else {
                return Err(err(name, "not a tensor of this sub-network".into()));
            };
            let n: u64 = t.dims.iter().product();
            if v.len() as u64 != n {
                return Err(err(name, format!("{} values for dims {:?} ({n} elements)", v.len(), t.dims)));
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(err(name, format!("value {i} is {} (non-finite): the reconstruction failed", v[i])));
            }
        }
        self.metadata.push((KEY_RECONSTRUCTION.to_owned(), MetaValue::String(r.method)));
        self.replaced = r.tensors;
        Ok(self)
    }

    /// Whether any tensor was replaced by [`ExportPlan::with_reconstruction`].
    pub fn is_reconstructed(&self) -> bool {
        !self.replaced.is_empty()
    }

    /// `llama` or `deci`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The output metadata, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The output tensors as `(name, dims, type)`, in file order.
    pub fn tensor_infos(&self) -> Vec<(String, Vec<u64>, GgmlType)> {
        self.tensors.iter().map(|t| (t.name.clone(), t.dims.clone(), t.ty)).collect()
    }

    /// The exact size in bytes of the file [`ExportPlan::write`] writes ([`predict_file_size`]).
    ///
    /// Errors: [`SubnetError::Gguf`] if the metadata cannot be serialized (not expected after `new`).
    pub fn predicted_size(&self) -> Result<u64, SubnetError> {
        Ok(predict_file_size(&self.metadata, &self.tensor_infos())?)
    }

    /// The data of one output tensor: copied blocks (borrowed when the whole source is used) or
    /// dequantized, sliced and re-quantized rows.
    /// The flag says whether the blocks were copied unchanged.
    fn tensor_data(&self, t: &PlannedTensor) -> Result<(Cow<'f, [u8]>, bool), SubnetError> {
        let qerr = |source| SubnetError::Quant { tensor: t.name.clone(), source };
        if let Some(v) = self.replaced.get(&t.name) {
            return Ok((Cow::Owned(quant::quantize(t.ty, v).map_err(qerr)?), false));
        }
        let base: &'f GgufFile = self.base;
        let src = &base.tensors()[t.src];
        let data = base.tensor_data(src);
        let row_len = src.dims[0] as usize;
        let rb = src.row_bytes() as usize;
        let (keep_rows, keep_cols) = match t.slice {
            Slice::Whole => (src.n_rows() as usize, row_len),
            Slice::Rows(n) => (n as usize, row_len),
            Slice::Cols(n) => (src.n_rows() as usize, n as usize),
        };
        let (be, bb) = src.ty.block_size();
        if src.ty == t.ty && keep_cols.is_multiple_of(be) {
            if keep_cols == row_len {
                return Ok((Cow::Borrowed(&data[..keep_rows * rb]), true));
            }
            let cb = keep_cols / be * bb;
            let mut out = Vec::with_capacity(keep_rows * cb);
            for r in 0..keep_rows {
                out.extend_from_slice(&data[r * rb..r * rb + cb]);
            }
            return Ok((Cow::Owned(out), true));
        }
        let mut row = vec![0f32; row_len];
        let mut f = Vec::with_capacity(keep_rows * keep_cols);
        for r in 0..keep_rows {
            quant::dequantize(src.ty, &data[r * rb..(r + 1) * rb], &mut row).map_err(qerr)?;
            f.extend_from_slice(&row[..keep_cols]);
        }
        Ok((Cow::Owned(quant::quantize(t.ty, &f).map_err(qerr)?), false))
    }

    /// Build every tensor and write the file to `out` atomically (temporary file in the same folder, then
    /// rename). The output tensors are held in memory until written (copied whole tensors are borrowed from
    /// the memory-mapped base); at most one dequantized tensor exists at a time.
    ///
    /// Errors: [`SubnetError::Quant`] (not expected after `new`), [`SubnetError::Gguf`] for I/O; `out` is
    /// untouched on error.
    pub fn write(&self, out: &Path) -> Result<ExportReport, SubnetError> {
        let predicted_bytes = self.predicted_size()?;
        let mut w = GgufWriter::new();
        for (k, v) in &self.metadata {
            w.add_metadata(k, v.clone());
        }
        let mut copied = 0;
        let mut types: HashMap<GgmlType, usize> = HashMap::new();
        for t in &self.tensors {
            let (data, was_copied) = self.tensor_data(t)?;
            copied += was_copied as usize;
            *types.entry(t.ty).or_default() += 1;
            w.add_tensor(&t.name, &t.dims, t.ty, data)?;
        }
        let size_bytes = w.write_atomic(out)?;
        let mut tensor_types: Vec<(GgmlType, usize)> = types.into_iter().collect();
        tensor_types.sort_by_key(|(t, _)| t.name());
        let mc = ModelConfig::from_gguf(self.base)?;
        Ok(ExportReport {
            path: out.to_path_buf(),
            arch: self.arch.clone(),
            subnet_id: self.cfg.id(),
            n_layers: self.cfg.layers.len(),
            params: mc.subnet_params(&self.cfg),
            size_bytes,
            predicted_bytes,
            tensor_types,
            copied_tensors: copied,
            reconstructed: self.is_reconstructed(),
        })
    }

    /// The quantization of this plan.
    pub fn quant(&self) -> ExportQuant {
        self.quant
    }

    /// Build every output tensor in memory, in file order, without writing a file (what the host's scorer
    /// uses to run a sub-network directly): `(name, dims, type, data)` with the same bytes
    /// [`ExportPlan::write`] would write (copied blocks are borrowed from the memory-mapped base).
    ///
    /// Errors: [`SubnetError::Quant`] (not expected after `new`).
    pub fn build_tensors(&self) -> Result<Vec<(String, Vec<u64>, GgmlType, Cow<'f, [u8]>)>, SubnetError> {
        self.tensors.iter().map(|t| Ok((t.name.clone(), t.dims.clone(), t.ty, self.tensor_data(t)?.0))).collect()
    }

    /// The sub-network as an engine [`Model`] in memory, without writing a file: the tensors of
    /// [`ExportPlan::build_tensors`] (byte for byte those [`ExportPlan::write`] writes) concatenated into one
    /// buffer, the hyper-parameters from the base's metadata and the sub-network's per-layer shapes. This is
    /// what the search scores and what `llamanas eval --subnet` runs.
    ///
    /// Errors: [`SubnetError::Quant`] (not expected after `new`), [`SubnetError::Engine`] (a tensor the
    /// engine refuses), [`SubnetError::Arch`].
    pub fn build_model(&self) -> Result<crate::engine::Model, SubnetError> {
        use crate::engine::{EngineConfig, LayerShape, Model, TensorRef};
        let mc = ModelConfig::from_gguf(self.base)?;
        let tensors = self.build_tensors()?;
        let total: usize = tensors.iter().map(|t| t.3.len()).sum();
        let mut buf = Vec::with_capacity(total);
        let mut refs = HashMap::with_capacity(tensors.len());
        for (name, dims, ty, data) in &tensors {
            let dims = dims.iter().map(|&d| d as usize).collect();
            refs.insert(name.clone(), TensorRef { name: name.clone(), ty: *ty, dims, offset: buf.len(), len: data.len() });
            buf.extend_from_slice(data);
        }
        drop(tensors);
        let mut config = EngineConfig::from_model_config(&mc);
        let n_heads = self.cfg.n_heads(&mc);
        config.layers = (0..self.cfg.layers.len())
            .map(|i| LayerShape { n_head: n_heads[i], n_head_kv: self.cfg.kv_heads[i], n_ff: self.cfg.ffn[i] })
            .collect();
        Ok(Model::from_parts(config, Box::new(buf), &|n| refs.get(n).cloned())?)
    }

    /// The sub-network of this plan.
    pub fn subnet(&self) -> &SubnetConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests;
