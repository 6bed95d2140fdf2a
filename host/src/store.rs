//! The super-network folder (`SUPERNET_DIR`) written by `llamanas import` and read by the later stages
//! (finetune, search, eval, export). Format: docs/SUPERNET.md.
//!
//! ```text
//! SUPERNET_DIR/
//!   supernet.gguf   weights: every tensor of the base model under its own name, F32 (or F16 for 2-D tensors
//!                   with --dtype f16; 1-D tensors stay F32), FFN neurons and KV groups reordered by importance;
//!                   the base metadata plus `llamanas.supernet.*` keys
//!   supernet.json   [`SupernetMeta`]: schema_version, base model facts, search space, neuron order, calibration
//!   calib.gguf      calibration statistics of supernet.gguf's weights for reconstruction ([`calib`]; optional)
//! ```
//!
//! Writes are atomic (temporary file in the folder + rename); `supernet.json` is written last, so a folder
//! with a `supernet.json` always has its `supernet.gguf`.

use std::path::{Path, PathBuf};

use device_runtime::arch::{ArchError, ModelConfig};
use device_runtime::gguf::{GgmlType, GgufError, GgufFile, MetaValue};
use serde::{Deserialize, Serialize};

use crate::space::SearchSpace;

pub mod calib;
pub mod import;

/// Version of the `supernet.json` schema this crate writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// File name of the weights in a super-network folder.
pub const GGUF_NAME: &str = "supernet.gguf";
/// File name of the description in a super-network folder.
pub const JSON_NAME: &str = "supernet.json";
/// GGUF key `llamanas.supernet.schema_version` (u32): [`SCHEMA_VERSION`] of the folder.
pub const KEY_SCHEMA: &str = "llamanas.supernet.schema_version";
/// GGUF key `llamanas.supernet.base_sha256` (string): SHA-256 of the base GGUF file.
pub const KEY_BASE_SHA256: &str = "llamanas.supernet.base_sha256";
/// GGUF key `llamanas.supernet.base_file` (string): file name of the base GGUF.
pub const KEY_BASE_FILE: &str = "llamanas.supernet.base_file";
/// GGUF key `llamanas.supernet.reordered` (bool): whether FFN neurons and KV groups were reordered.
pub const KEY_REORDERED: &str = "llamanas.supernet.reordered";

/// Errors of reading, validating and writing a super-network folder. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// `supernet.json` is not valid JSON of the schema.
    #[error("{path}: not a supernet.json of schema version {SCHEMA_VERSION}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: serde_json::Error,
    },
    /// `supernet.json` has another schema version.
    #[error("{path}: schema_version {found}, this tool reads version {SCHEMA_VERSION} (re-run llamanas import)")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// `supernet.json` parses but its content is inconsistent.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The folder is not a super-network folder.
    #[error("{path}: not a super-network folder ({reason})")]
    NotSupernet {
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The output folder exists.
    #[error("{path}: {reason}")]
    OutputExists {
        /// The folder.
        path: PathBuf,
        /// Why it cannot be written.
        reason: String,
    },
    /// `supernet.gguf` could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// `supernet.gguf` does not describe a LLaMA-family model.
    #[error(transparent)]
    Arch(#[from] ArchError),
}

/// Weight type of `supernet.gguf`'s 2-D tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// 32-bit float (exact dequantized values of the base).
    F32,
    /// IEEE half precision (round to nearest even; half the size).
    F16,
}

impl WeightDtype {
    /// The GGML type of the 2-D tensors.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            WeightDtype::F32 => GgmlType::F32,
            WeightDtype::F16 => GgmlType::F16,
        }
    }
    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_ALL_F32` 0, `LLAMA_FTYPE_MOSTLY_F16` 1).
    pub fn ftype(self) -> u32 {
        match self {
            WeightDtype::F32 => 0,
            WeightDtype::F16 => 1,
        }
    }
}

/// The base model the super-network was imported from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseModel {
    /// File name of the base GGUF (no folder).
    pub file: String,
    /// SHA-256 of the base GGUF file, 64 lowercase hex digits.
    pub sha256: String,
    /// Its hyper-parameters (also those of `supernet.gguf`).
    pub config: ModelConfig,
}

/// The weights file of the folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// File name, [`GGUF_NAME`].
    pub file: String,
    /// Type of the 2-D tensors (1-D tensors are F32).
    pub dtype: WeightDtype,
}

/// The order applied to one layer. A permutation `p` lists, for each new index `i`, the old index `p[i]`:
/// new neuron `i` is the base model's neuron `p[i]`. Empty for a layer without FFN (resp. attention).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerOrder {
    /// Permutation of the FFN neurons (`ffn` entries).
    pub ffn: Vec<usize>,
    /// Permutation of the KV groups (`n_kv_heads` entries); query heads move with their group.
    pub kv_groups: Vec<usize>,
    /// Importance of the FFN neurons in the new order (non-increasing when reordered); empty without calibration.
    #[serde(default)]
    pub ffn_scores: Vec<f32>,
    /// Importance of the KV groups in the new order; empty without calibration.
    #[serde(default)]
    pub kv_scores: Vec<f32>,
}

/// How importance was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// The calibration text file (as given on the command line).
    pub source: String,
    /// How it was rendered to text: `alpaca-chat` (items through the model's chat template), `alpaca-plain`,
    /// or `text` (the file as is).
    pub format: String,
    /// Tokens evaluated.
    pub tokens: usize,
    /// Sequence length: the tokens were evaluated in independent sequences of at most this many tokens.
    pub seq_len: usize,
    /// Definition of the FFN neuron score.
    pub ffn_score: String,
    /// Definition of the KV group score.
    pub kv_score: String,
    /// The calibration statistics file of the folder (`calib.gguf`, [`calib`]), when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    /// ShortGPT's Block Influence of each base layer on the calibration text (`1 - mean cos(x_in, x_out)`;
    /// empty without statistics).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_influence: Vec<f32>,
}

/// `supernet.json`: everything about a super-network folder except the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupernetMeta {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Tool and version that wrote the folder (e.g. `llamanas 0.1.0`).
    pub created_by: String,
    /// The base model.
    pub base: BaseModel,
    /// The weights file.
    pub weights: Weights,
    /// The search space over the sub-networks ([`SearchSpace::default_for`] by default).
    pub search_space: SearchSpace,
    /// Whether the weights were reordered by importance (`false` with `--no-reorder`: identity permutations).
    pub reordered: bool,
    /// Per base layer, the order applied.
    pub order: Vec<LayerOrder>,
    /// How importance was measured (absent when no calibration ran).
    pub calibration: Option<Calibration>,
    /// The note `llamanas finetune` adds to a fine-tuned folder (free JSON; absent after import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<serde_json::Value>,
}

fn is_permutation(p: &[usize], n: usize) -> bool {
    if p.len() != n {
        return false;
    }
    let mut seen = vec![false; n];
    for &i in p {
        if i >= n || seen[i] {
            return false;
        }
        seen[i] = true;
    }
    true
}

impl SupernetMeta {
    /// Check the description against itself: schema version, SHA-256 format, one order per layer, each a
    /// permutation of the right length, scores of the right length, and a search space that fits the base.
    ///
    /// Errors: [`StoreError::Version`], [`StoreError::Invalid`] naming `path` (the file the meta came from).
    pub fn validate(&self, path: &Path) -> Result<(), StoreError> {
        let bad = |reason: String| Err(StoreError::Invalid { path: path.to_path_buf(), reason });
        if self.schema_version != SCHEMA_VERSION {
            return Err(StoreError::Version { path: path.to_path_buf(), found: self.schema_version });
        }
        let sha = &self.base.sha256;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return bad(format!("base.sha256 {sha:?} is not 64 lowercase hex digits"));
        }
        let m = &self.base.config;
        if m.ffn.len() != m.n_layers || m.n_heads.len() != m.n_layers || m.n_kv_heads.len() != m.n_layers {
            return bad(format!("base.config: per-layer lists do not have n_layers = {} entries", m.n_layers));
        }
        if self.order.len() != m.n_layers {
            return bad(format!("order has {} layers, the base model has {}", self.order.len(), m.n_layers));
        }
        for (l, o) in self.order.iter().enumerate() {
            if !is_permutation(&o.ffn, m.ffn[l]) {
                return bad(format!("order[{l}].ffn is not a permutation of 0..{}", m.ffn[l]));
            }
            let n_kv = if m.n_heads[l] > 0 { m.n_kv_heads[l] } else { 0 };
            if !is_permutation(&o.kv_groups, n_kv) {
                return bad(format!("order[{l}].kv_groups is not a permutation of 0..{n_kv}"));
            }
            if !o.ffn_scores.is_empty() && o.ffn_scores.len() != m.ffn[l] {
                return bad(format!("order[{l}].ffn_scores has {} entries, expected {}", o.ffn_scores.len(), m.ffn[l]));
            }
            if !o.kv_scores.is_empty() && o.kv_scores.len() != n_kv {
                return bad(format!("order[{l}].kv_scores has {} entries, expected {n_kv}", o.kv_scores.len()));
            }
            if !self.reordered && (o.ffn.iter().enumerate().any(|(i, &p)| i != p) || o.kv_groups.iter().enumerate().any(|(i, &p)| i != p)) {
                return bad(format!("reordered is false but order[{l}] is not the identity"));
            }
        }
        let s = &self.search_space;
        if s.n_layers != m.n_layers || s.ffn_choices.len() != m.n_layers || s.kv_choices.len() != m.n_layers {
            return bad(format!("search_space is for {} layers, the base model has {}", s.n_layers, m.n_layers));
        }
        if s.min_layers == 0 || s.min_layers > s.n_layers {
            return bad(format!("search_space.min_layers {} is not in 1..={}", s.min_layers, s.n_layers));
        }
        for l in 0..m.n_layers {
            let (f, k) = (&s.ffn_choices[l], &s.kv_choices[l]);
            let ascending = |v: &[usize]| v.windows(2).all(|w| w[0] < w[1]);
            if f.is_empty() || !ascending(f) || *f.last().unwrap() > m.ffn[l] {
                return bad(format!("search_space.ffn_choices[{l}] {f:?}: must be ascending, non-empty, at most {}", m.ffn[l]));
            }
            if k.is_empty() || !ascending(k) || *k.last().unwrap() > m.n_kv_heads[l] {
                return bad(format!(
                    "search_space.kv_choices[{l}] {k:?}: must be ascending, non-empty, at most {}",
                    m.n_kv_heads[l]
                ));
            }
        }
        if self.weights.file != GGUF_NAME {
            return bad(format!("weights.file is {:?}, expected {GGUF_NAME:?}", self.weights.file));
        }
        Ok(())
    }

    /// Read and validate `supernet.json` at `path`. Errors: [`StoreError::Io`], [`StoreError::Json`], those of
    /// [`SupernetMeta::validate`]. The file is refused if larger than 64 MiB (a real one is about 1 MiB).
    pub fn read(path: &Path) -> Result<SupernetMeta, StoreError> {
        let io = |source| StoreError::Io { path: path.to_path_buf(), source };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > 64 << 20 {
            return Err(StoreError::Invalid { path: path.to_path_buf(), reason: format!("{len} bytes is too large for a supernet.json") });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        // Check the version first, so an old or newer file gets the version message, not a field error.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(found) = v.get("schema_version").and_then(|x| x.as_u64())
            && found != SCHEMA_VERSION as u64
        {
            return Err(StoreError::Version { path: path.to_path_buf(), found: found.min(u32::MAX as u64) as u32 });
        }
        let meta: SupernetMeta =
            serde_json::from_str(&text).map_err(|source| StoreError::Json { path: path.to_path_buf(), source })?;
        meta.validate(path)?;
        Ok(meta)
    }

    /// Validate and write `supernet.json` to `path` atomically (temporary file in the same folder + rename).
    pub fn write(&self, path: &Path) -> Result<(), StoreError> {
        self.validate(path)?;
        let text = serde_json::to_string_pretty(self).expect("SupernetMeta serializes");
        write_atomic(path, format!("{text}\n").as_bytes())
    }
}

/// Write `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let io = |source| StoreError::Io { path: path.to_path_buf(), source };
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// An opened super-network folder: its description and its memory-mapped weights.
#[derive(Debug)]
pub struct Supernet {
    /// The folder.
    pub dir: PathBuf,
    /// `supernet.json`.
    pub meta: SupernetMeta,
    /// `supernet.gguf`.
    pub gguf: GgufFile,
}

impl Supernet {
    /// Open and check a super-network folder: `supernet.json` is read and validated, `supernet.gguf` opened
    /// (memory-mapped); the GGUF's model config must equal `base.config`, its `llamanas.supernet.*` keys must
    /// match the JSON, and every 2-D tensor must have the type `weights.dtype`.
    ///
    /// Errors: [`StoreError::NotSupernet`] (no folder, no `supernet.json` or `supernet.gguf`), errors of
    /// [`SupernetMeta::read`], [`StoreError::Gguf`], [`StoreError::Arch`], [`StoreError::Invalid`] naming
    /// `supernet.gguf`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Supernet, StoreError> {
        let dir = dir.as_ref();
        let not = |reason: &str| StoreError::NotSupernet { path: dir.to_path_buf(), reason: reason.to_owned() };
        if !dir.is_dir() {
            return Err(not("no such folder"));
        }
        let (jp, gp) = (dir.join(JSON_NAME), dir.join(GGUF_NAME));
        if !jp.is_file() {
            return Err(not("no supernet.json; create one with llamanas import"));
        }
        if !gp.is_file() {
            return Err(not("supernet.json but no supernet.gguf"));
        }
        let meta = SupernetMeta::read(&jp)?;
        let gguf = GgufFile::open(&gp)?;
        let bad = |reason: String| StoreError::Invalid { path: gp.clone(), reason };
        let cfg = ModelConfig::from_gguf(&gguf)?;
        if cfg != meta.base.config {
            return Err(bad(format!("model config differs from base.config in {JSON_NAME}")));
        }
        match gguf.get(KEY_SCHEMA).and_then(MetaValue::as_u32) {
            Some(SCHEMA_VERSION) => {}
            other => return Err(bad(format!("{KEY_SCHEMA} is {other:?}, expected {SCHEMA_VERSION}"))),
        }
        if gguf.get(KEY_BASE_SHA256).and_then(MetaValue::as_str) != Some(meta.base.sha256.as_str()) {
            return Err(bad(format!("{KEY_BASE_SHA256} differs from base.sha256 in {JSON_NAME}")));
        }
        if gguf.get(KEY_REORDERED).and_then(MetaValue::as_bool) != Some(meta.reordered) {
            return Err(bad(format!("{KEY_REORDERED} differs from reordered in {JSON_NAME}")));
        }
        let want = meta.weights.dtype.ggml_type();
        for t in gguf.tensors() {
            let expect = if t.dims.len() >= 2 { want } else { GgmlType::F32 };
            if t.ty != expect {
                return Err(bad(format!("tensor {} is {}, expected {expect} (weights.dtype {:?})", t.name, t.ty, meta.weights.dtype)));
            }
        }
        Ok(Supernet { dir: dir.to_path_buf(), meta, gguf })
    }

    /// Path of `supernet.gguf`.
    pub fn gguf_path(&self) -> PathBuf {
        self.dir.join(GGUF_NAME)
    }
}

/// Whether `dir` looks like a super-network folder (it holds a `supernet.json`).
pub fn is_supernet_dir(dir: &Path) -> bool {
    dir.join(JSON_NAME).is_file()
}

/// Check that `dir` may receive a new super-network (nothing is created): it must not exist, be empty, or
/// (with `force`) be a super-network folder. A non-empty folder that is not a super-network folder is never
/// overwritten, nor is a file.
///
/// Errors: [`StoreError::OutputExists`], [`StoreError::Io`].
pub fn check_output_dir(dir: &Path, force: bool) -> Result<(), StoreError> {
    let exists = |reason: String| Err(StoreError::OutputExists { path: dir.to_path_buf(), reason });
    let io = |source| StoreError::Io { path: dir.to_path_buf(), source };
    if dir.exists() {
        if !dir.is_dir() {
            return exists("exists and is not a folder".into());
        }
        let empty = std::fs::read_dir(dir).map_err(io)?.next().is_none();
        if !empty {
            if !is_supernet_dir(dir) {
                return exists("exists, is not empty and is not a super-network folder (no supernet.json): refusing to write into it".into());
            }
            if !force {
                return exists("already holds a super-network: use --force to replace it".into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy_config() -> ModelConfig {
        ModelConfig {
            arch: "llama".into(),
            n_layers: 2,
            d_model: 8,
            n_vocab: 16,
            n_ctx_train: 64,
            head_dim: 4,
            rope_dim: 4,
            rope_freq_base: 10000.0,
            rope_neox: false,
            rms_eps: 1e-5,
            ffn: vec![4, 4],
            n_heads: vec![2, 2],
            n_kv_heads: vec![2, 2],
            tied_embeddings: true,
            name: Some("toy".into()),
        }
    }

    fn toy_meta() -> SupernetMeta {
        let config = toy_config();
        SupernetMeta {
            schema_version: SCHEMA_VERSION,
            created_by: "llamanas test".into(),
            base: BaseModel { file: "toy.gguf".into(), sha256: "ab".repeat(32), config: config.clone() },
            weights: Weights { file: GGUF_NAME.into(), dtype: WeightDtype::F32 },
            search_space: SearchSpace::default_for(&config),
            reordered: true,
            order: vec![
                LayerOrder { ffn: vec![2, 0, 3, 1], kv_groups: vec![1, 0], ffn_scores: vec![4.0, 3.0, 2.0, 1.0], kv_scores: vec![2.0, 1.0] },
                LayerOrder { ffn: vec![0, 1, 2, 3], kv_groups: vec![0, 1], ffn_scores: vec![], kv_scores: vec![] },
            ],
            calibration: Some(Calibration {
                source: "calib.txt".into(),
                format: "text".into(),
                tokens: 100,
                seq_len: 50,
                ffn_score: "f".into(),
                kv_score: "k".into(),
                stats: None,
                block_influence: vec![],
            }),
            finetune: None,
        }
    }

    #[test]
    fn json_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(JSON_NAME);
        let m = toy_meta();
        m.write(&p).unwrap();
        assert_eq!(SupernetMeta::read(&p).unwrap(), m);
        // The documented field names (docs/SUPERNET.md).
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["weights"]["dtype"], "f32");
        assert_eq!(v["order"][0]["ffn"], serde_json::json!([2, 0, 3, 1]));
        assert_eq!(v["base"]["config"]["ffn"], serde_json::json!([4, 4]));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    fn write_raw(v: &serde_json::Value) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(JSON_NAME);
        std::fs::write(&p, v.to_string()).unwrap();
        (dir, p)
    }

    #[test]
    fn bad_json_is_refused_with_the_reason() {
        let good = serde_json::to_value(toy_meta()).unwrap();
        let cases: Vec<(Box<dyn Fn(&mut serde_json::Value)>, &str)> = vec![
            (Box::new(|v| v["schema_version"] = 2.into()), "schema_version 2"),
            (Box::new(|v| v["order"][0]["ffn"] = serde_json::json!([0, 0, 1, 2])), "order[0].ffn is not a permutation"),
            (Box::new(|v| v["order"][1]["kv_groups"] = serde_json::json!([0])), "order[1].kv_groups is not a permutation"),
            (Box::new(|v| v["order"].as_array_mut().unwrap().pop().map(|_| ()).unwrap()), "order has 1 layers"),
            (Box::new(|v| v["base"]["sha256"] = "xyz".into()), "base.sha256"),
            (Box::new(|v| v["reordered"] = false.into()), "not the identity"),
            (Box::new(|v| v["search_space"]["ffn_choices"][0] = serde_json::json!([2, 8])), "ffn_choices[0]"),
            (Box::new(|v| v["extra"] = 1.into()), "unknown field `extra`"),
            (Box::new(|v| v["weights"]["dtype"] = "q4_0".into()), "unknown variant `q4_0`"),
        ];
        for (edit, want) in cases {
            let mut v = good.clone();
            edit(&mut v);
            let (_d, p) = write_raw(&v);
            let e = SupernetMeta::read(&p).unwrap_err().to_string();
            assert!(e.contains(want), "expected {want:?} in: {e}");
            assert!(e.contains(JSON_NAME), "error does not name the file: {e}");
        }
        let (_d, p) = write_raw(&serde_json::json!("not an object"));
        assert!(matches!(SupernetMeta::read(&p), Err(StoreError::Json { .. })));
    }

    #[test]
    fn open_refuses_non_supernet_folders() {
        let dir = tempfile::tempdir().unwrap();
        let e = Supernet::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no supernet.json"), "{e}");
        toy_meta().write(&dir.path().join(JSON_NAME)).unwrap();
        let e = Supernet::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no supernet.gguf"), "{e}");
        std::fs::write(dir.path().join(GGUF_NAME), b"not a gguf").unwrap();
        let e = Supernet::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(GGUF_NAME), "{e}");
        let e = Supernet::open(dir.path().join("absent")).unwrap_err().to_string();
        assert!(e.contains("no such folder"), "{e}");
    }

    #[test]
    fn output_dir_rules() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("a/b");
        check_output_dir(&fresh, false).unwrap();
        assert!(!fresh.exists());
        std::fs::create_dir_all(&fresh).unwrap();
        check_output_dir(&fresh, false).unwrap(); // empty: fine
        std::fs::write(fresh.join("notes.txt"), "x").unwrap();
        let e = check_output_dir(&fresh, true).unwrap_err().to_string();
        assert!(e.contains("not a super-network folder"), "{e}");
        std::fs::write(fresh.join(JSON_NAME), "{}").unwrap();
        let e = check_output_dir(&fresh, false).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        check_output_dir(&fresh, true).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(check_output_dir(&file, true).unwrap_err().to_string().contains("not a folder"));
    }
}
