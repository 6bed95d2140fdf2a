//! Device profiles and the latency model (issue 4; schema in `docs/PROFILES.md`).
//!
//! The search optimizes the latency of a sub-network on the device it will run on, so the latency comes from
//! measurements made there, with the engine that will run the model:
//!
//! - [`device`]: facts about the machine (CPU, cores, frequency, memory, OS) from the `sysinfo` crate.
//! - [`measure`]: builds the parts of one transformer block in memory (attention at every KV-head count, FFN at
//!   widths in steps of 256, from the real model's weights quantized to the profile's type) and times them
//!   through [`crate::engine::Session`], plus the embedding lookup, final RMSNorm and output head with the
//!   engine's kernels; writes a [`Profile`].
//! - [`latency`]: [`LatencyModel`] predicts decode ms/token at a context length and prefill ms for a prompt
//!   length for any [`crate::arch::SubnetConfig`] from a profile.
//! - [`validate`]: random sub-networks measured end to end against the model's predictions.
//!
//! Method in the style of nn-Meter (Zhang et al., MobiSys 2021: per-kernel latency tables summed over the
//! model) and HAT (Wang et al., ACL 2020: measured on the target, ~5% MAPE).

pub mod device;
pub mod latency;
pub mod measure;
pub mod validate;

pub use device::DeviceFacts;
pub use latency::LatencyModel;
pub use measure::{ProfileOptions, profile_model};
pub use validate::{ValidationOptions, ValidationReport, ValidationRow, validate_profile};

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of the profile JSON schema this runtime writes (`schema_version`). Version 3 added the
/// end-to-end timings of the base model (`decode.reference`, `prefill.reference`) that calibrate the sum of
/// the parts; version-2 files (no reference) are still read and predict from the uncalibrated sum.
pub const SCHEMA_VERSION: u32 = 3;

/// Oldest `schema_version` this runtime reads.
pub const MIN_SCHEMA_VERSION: u32 = 2;

/// Version of the runtime whose kernels a profile measures (the crate version). A profile made by another
/// version is refused by [`LatencyModel::new`].
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// FFN widths are measured in steps of this many neurons, up to the model's width.
pub const FFN_STEP: usize = 256;

/// Errors of profiling, reading a profile and predicting from it. Every message names the file or the entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Reading or writing the profile file failed.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid profile JSON (truncated, a missing or mistyped entry).
    #[error("{file}: not a valid device profile: {reason}")]
    Parse {
        /// The file.
        file: String,
        /// What serde_json reported, with line and column.
        reason: String,
    },
    /// The file's `schema_version` is not in [`MIN_SCHEMA_VERSION`]`..=`[`SCHEMA_VERSION`].
    #[error("{file}: profile schema version {found}, this runtime reads versions 2..={expected}")]
    SchemaVersion {
        /// The file.
        file: String,
        /// Version in the file.
        found: u64,
        /// [`SCHEMA_VERSION`].
        expected: u32,
    },
    /// Entries that parse but do not form a complete profile (a table without a value for some context
    /// length, a missing KV-head count or FFN width, a negative or non-finite time, ...).
    #[error("{file}: incomplete profile: {reason}")]
    Incomplete {
        /// The file (or `<memory>`).
        file: String,
        /// The first problem found.
        reason: String,
    },
    /// The profile was made for another quantization, runtime version or model family.
    #[error("profile mismatch: {0}")]
    Mismatch(String),
    /// A prediction outside what the profile measured (context longer than measured, FFN wider, ...).
    #[error("outside the profile: {0}")]
    OutOfRange(String),
    /// Bad options or a model the profiler cannot use.
    #[error("{0}")]
    Invalid(String),
    /// The measurement exceeded `--budget`.
    #[error("profiling exceeded the budget of {budget_s} s after {done} of {total} measurements; raise --budget or measure fewer points")]
    Budget {
        /// The budget in seconds.
        budget_s: f64,
        /// Measurements done.
        done: usize,
        /// Measurements planned.
        total: usize,
    },
    /// The engine refused a model or input built by the profiler.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// Reading the base GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// The base model's configuration is unusable.
    #[error(transparent)]
    Arch(#[from] crate::arch::ArchError),
    /// Exporting a model failed: the profile's reference (the base model) or a validation sub-network.
    #[error(transparent)]
    Subnet(#[from] crate::subnet::SubnetError),
    /// Dequantizing or quantizing weights failed.
    #[error("tensor {tensor}: {source}")]
    Quant {
        /// Tensor name.
        tensor: String,
        /// Cause.
        source: crate::quant::QuantError,
    },
}

/// `ms` rounded to whole nanoseconds (1e-6 ms): finer digits are noise, and short decimals survive the JSON
/// round trip exactly.
pub fn round_ns(ms: f64) -> f64 {
    (ms * 1e6).round() / 1e6
}

/// A timing: median and spread (interquartile range) over the repeated runs, in milliseconds.
///
/// For block parts (measured as the difference between a model with `L` such parts and one without, divided
/// by `L`) the median is `(median_L - median_0) / L` and the spread `(iqr_L + iqr_0) / L`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stat {
    /// Median, ms.
    pub median_ms: f64,
    /// Interquartile range (p75 - p25), ms.
    pub spread_ms: f64,
    /// Timed runs (after warm-up).
    pub runs: usize,
}

impl Stat {
    /// Median and IQR of `samples` (ms). Empty input gives zeros.
    pub fn from_samples(samples: &[f64]) -> Stat {
        if samples.is_empty() {
            return Stat { median_ms: 0.0, spread_ms: 0.0, runs: 0 };
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let x = p * (s.len() - 1) as f64;
            let (i, f) = (x.floor() as usize, x - x.floor());
            if i + 1 < s.len() { s[i] * (1.0 - f) + s[i + 1] * f } else { s[i] }
        };
        Stat { median_ms: round_ns(q(0.5)), spread_ms: round_ns(q(0.75) - q(0.25)), runs: s.len() }
    }

    /// `(self - base) / n`: the per-part figure of a differential measurement.
    pub fn per_part(self, base: Stat, n: usize) -> Stat {
        let n = n.max(1) as f64;
        Stat {
            median_ms: round_ns((self.median_ms - base.median_ms) / n),
            spread_ms: round_ns((self.spread_ms + base.spread_ms) / n),
            runs: self.runs.min(base.runs),
        }
    }
}

/// The shape family a profile was measured for (from the base model's [`crate::arch::ModelConfig`]). A
/// sub-network of another family (other width, head size, vocabulary, GQA group) cannot use the profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelFamily {
    /// `llama` (covers `llama` and `deci` files: the same forward pass).
    pub family: String,
    /// `general.name` of the base model, for reports.
    pub name: Option<String>,
    /// Model width d.
    pub d_model: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Vocabulary size (rows of the output head).
    pub n_vocab: usize,
    /// Query heads per KV head.
    pub gqa_group: usize,
    /// Blocks of the base model.
    pub n_layers: usize,
    /// Largest KV-head count measured (the base model's).
    pub max_kv_heads: usize,
    /// Largest FFN width measured (the base model's).
    pub max_ffn: usize,
    /// Output head tied to the token embedding.
    pub tied_embeddings: bool,
}

/// How the profile was measured.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Method {
    /// Untimed runs before each measurement.
    pub warmup: usize,
    /// Fewest timed runs per measurement.
    pub min_runs: usize,
    /// Most timed runs per measurement (fewer when the budget is short).
    pub max_runs: usize,
    /// Blocks per part model in decode measurements (`L`).
    pub decode_layers: usize,
    /// Blocks per part model in prefill measurements.
    pub prefill_layers: usize,
    /// Bytes read before each timed run to evict the caches (0: no flush).
    pub cache_flush_bytes: usize,
    /// Passes over the whole table; each entry is the median of the passes' medians.
    pub passes: usize,
    /// `--budget` in seconds.
    pub budget_s: f64,
    /// Wall time the profile took, seconds.
    pub elapsed_s: f64,
    /// Where the weights of the part models come from.
    pub weights: String,
}

/// Decode latency of one block's attention part at one KV-head count, per context length.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttentionRow {
    /// KV heads (query heads = `kv_heads * gqa_group`).
    pub kv_heads: usize,
    /// One entry per context length / prompt length of the table.
    pub ms: Vec<Stat>,
}

/// Latency of one block's FFN part at one width.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FfnRow {
    /// FFN width (neurons).
    pub width: usize,
    /// Decode: one entry (independent of the context). Prefill: one entry per prompt length.
    pub ms: Vec<Stat>,
}

/// Decode tables: one token with the KV cache holding `contexts[i]` tokens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecodeTables {
    /// Tokens in the KV cache before the decoded token, increasing.
    pub contexts: Vec<usize>,
    /// Fixed per-token overhead per context (session, RoPE tables, thread pool), without embedding lookup,
    /// final norm and output head.
    pub overhead: Vec<Stat>,
    /// Token-embedding lookup of one token.
    pub embedding: Stat,
    /// Final RMSNorm of one row.
    pub final_norm: Stat,
    /// Output head (`n_vocab x d` product) of one row.
    pub output_head: Stat,
    /// Attention part of one block, per KV-head count `1..=max_kv_heads`.
    pub attention: Vec<AttentionRow>,
    /// FFN part of one block, per width (`FFN_STEP, 2*FFN_STEP, ..`, and the model's width).
    pub ffn: Vec<FfnRow>,
    /// The reference timed end to end in the same passes as the parts, one entry per context: `n_layers`
    /// blocks at the largest KV-head count and FFN width (for a uniform base such as SmolLM2 the base model
    /// itself, loaded from its export): calibrates the sum of the parts (see [`LatencyModel`]). Schema 3; empty in schema-2
    /// files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference: Vec<Stat>,
}

/// Prefill tables: a prompt of `lengths[i]` tokens into an empty KV cache, logits of the last token only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrefillTables {
    /// Prompt lengths, increasing (at most the engine's batch size).
    pub lengths: Vec<usize>,
    /// Fixed overhead per prompt length.
    pub overhead: Vec<Stat>,
    /// Token-embedding lookup of the prompt, per length.
    pub embedding: Vec<Stat>,
    /// Final RMSNorm of the last row.
    pub final_norm: Stat,
    /// Output head of the last row.
    pub output_head: Stat,
    /// Attention part of one block, per KV-head count, per length.
    pub attention: Vec<AttentionRow>,
    /// FFN part of one block, per width, per length.
    pub ffn: Vec<FfnRow>,
    /// The base model timed end to end, one entry per prompt length (see [`DecodeTables::reference`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference: Vec<Stat>,
}

/// Validation figures (`edgerun profile --validate K`), stored with the profile they validate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidationSummary {
    /// Random sub-networks measured.
    pub k: usize,
    /// Seed of the random sub-networks.
    pub seed: u64,
    /// Context length of the decode measurements.
    pub decode_context: usize,
    /// Prompt length of the prefill measurements.
    pub prefill_length: usize,
    /// Mean absolute percentage error of decode predictions, %.
    pub decode_mape_pct: f64,
    /// Share of decode predictions within +-10% of the measurement, %.
    pub decode_within_10_pct: f64,
    /// Largest decode error, % of the measurement.
    pub decode_max_err_pct: f64,
    /// Mean absolute percentage error of prefill predictions, %.
    pub prefill_mape_pct: f64,
    /// Share of prefill predictions within +-10%, %.
    pub prefill_within_10_pct: f64,
    /// Largest prefill error, %.
    pub prefill_max_err_pct: f64,
    /// Drift of the machine between profiling and validation: the base model's decode time measured in the
    /// validation rounds over the profile's prediction for it, minus 1, % (positive: the machine was slower).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_drift_pct: Option<f64>,
    /// The same for prefill, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_drift_pct: Option<f64>,
    /// Decode MAPE after scaling every prediction by the drift (the latency model's own error, with the
    /// machine's change of speed between profiling and validation removed), %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_mape_normalized_pct: Option<f64>,
    /// Share of drift-normalized decode predictions within +-10%, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_within_10_normalized_pct: Option<f64>,
    /// Largest drift-normalized decode error, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_max_err_normalized_pct: Option<f64>,
    /// Prefill MAPE after drift normalization, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_mape_normalized_pct: Option<f64>,
    /// Share of drift-normalized prefill predictions within +-10%, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_within_10_normalized_pct: Option<f64>,
    /// Largest drift-normalized prefill error, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_max_err_normalized_pct: Option<f64>,
}

/// A device profile: device facts, measurement method and the latency tables (`docs/PROFILES.md`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// [`RUNTIME_VERSION`] of the runtime that measured it.
    pub runtime_version: String,
    /// When it was measured, seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// The machine.
    pub device: DeviceFacts,
    /// Compute backend (`cpu` or `wgpu`; a `wgpu` profile has the adapter in `device.adapter`).
    pub backend: String,
    /// Worker threads of the engine (1 for `wgpu`: the thread that drives the GPU).
    pub threads: usize,
    /// Quantization of the sub-networks this profile is for (`q8_0`, `q4_0`, ...).
    pub quant: String,
    /// ggml type of the block weights (`Q8_0`, ...).
    pub weight_type: String,
    /// ggml type of the token embedding.
    pub embedding_type: String,
    /// ggml type of the output head (tied: the embedding's).
    pub head_type: String,
    /// The model family measured.
    pub model: ModelFamily,
    /// The measurement method.
    pub method: Method,
    /// Decode latency tables.
    pub decode: DecodeTables,
    /// Prefill latency tables.
    pub prefill: PrefillTables,
    /// Validation figures, when `--validate` ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSummary>,
}

impl Profile {
    /// Read and check a profile file.
    ///
    /// Errors: [`ProfileError::Io`]; [`ProfileError::Parse`] (truncated file, missing or mistyped entry);
    /// [`ProfileError::SchemaVersion`]; [`ProfileError::Incomplete`] ([`Profile::check`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Profile, ProfileError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Io { file: file.clone(), source: e })?;
        Self::from_json(&text, &file)
    }

    /// Parse and check profile JSON; `file` names the source in errors. Errors as [`Profile::load`].
    pub fn from_json(text: &str, file: &str) -> Result<Profile, ProfileError> {
        let parse = |e: serde_json::Error| ProfileError::Parse { file: file.to_string(), reason: e.to_string() };
        let v: serde_json::Value = serde_json::from_str(text).map_err(parse)?;
        match v.get("schema_version").map(|s| s.as_u64()) {
            None => {
                return Err(ProfileError::Parse { file: file.to_string(), reason: "missing field `schema_version`".into() });
            }
            Some(None) => {
                return Err(ProfileError::Parse {
                    file: file.to_string(),
                    reason: "`schema_version` is not a non-negative integer".into(),
                });
            }
            Some(Some(n)) if !(MIN_SCHEMA_VERSION as u64..=SCHEMA_VERSION as u64).contains(&n) => {
                return Err(ProfileError::SchemaVersion { file: file.to_string(), found: n, expected: SCHEMA_VERSION });
            }
            _ => {}
        }
        let p: Profile = serde_json::from_value(v).map_err(parse)?;
        p.check().map_err(|reason| ProfileError::Incomplete { file: file.to_string(), reason })?;
        Ok(p)
    }

    /// Write the profile as pretty JSON to a temporary file in the same folder and rename it into place.
    ///
    /// Errors: [`ProfileError::Io`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ProfileError> {
        let path = path.as_ref();
        let io = |e: std::io::Error| ProfileError::Io { file: path.display().to_string(), source: e };
        let mut text = serde_json::to_string_pretty(self).expect("profile serializes");
        text.push('\n');
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "profile".into());
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }

    /// Check that every table is complete and every time finite and non-negative: one value per context
    /// (prompt length), contexts and lengths increasing, attention rows for KV heads `1..=max_kv_heads`, FFN
    /// rows at `FFN_STEP` steps up to `max_ffn` (and `max_ffn` itself), and (schema 3) a positive reference
    /// time per context and prompt length. Returns the first problem.
    pub fn check(&self) -> Result<(), String> {
        let m = &self.model;
        if m.d_model == 0 || m.head_dim == 0 || m.n_vocab == 0 || m.gqa_group == 0 || m.max_kv_heads == 0 || m.max_ffn == 0 {
            return Err("model: d_model, head_dim, n_vocab, gqa_group, max_kv_heads and max_ffn must all be > 0".into());
        }
        if self.threads == 0 {
            return Err("threads is 0".into());
        }
        // The tables were measured with the weight type of `quant`: a profile whose label says another
        // quantization (edited by hand) would be used for what it did not measure.
        let wt = measure::quant_type(&self.quant).ok_or_else(|| format!("unknown quant {:?}", self.quant))?;
        if !wt.name().eq_ignore_ascii_case(&self.weight_type) {
            return Err(format!(
                "quant {} means {} block weights, but the tables were measured with weight_type {}",
                self.quant,
                wt.name(),
                self.weight_type
            ));
        }
        let heads: &[&str] = match wt {
            crate::gguf::GgmlType::Q4_0 | crate::gguf::GgmlType::Q4_1 => &["Q8_0", "Q6_K"],
            _ => &[wt.name()],
        };
        if !heads.iter().any(|h| h.eq_ignore_ascii_case(&self.head_type)) {
            return Err(format!("head_type {} is not what export writes for {} (one of {heads:?})", self.head_type, self.quant));
        }
        let stat = |what: &str, s: &Stat| -> Result<(), String> {
            // Times are below 10^7 ms in size (sums of thousands of entries must stay finite); entries that are
            // differences of measurements may be slightly negative, spreads may not.
            let ok = |t: f64| t.is_finite() && t.abs() < 1e7;
            if !(ok(s.median_ms) && ok(s.spread_ms) && s.spread_ms >= 0.0) {
                return Err(format!("{what}: median {} / spread {} is not a valid time (|t| < 1e7 ms)", s.median_ms, s.spread_ms));
            }
            Ok(())
        };
        let increasing = |what: &str, v: &[usize]| -> Result<(), String> {
            if v.is_empty() {
                return Err(format!("{what} is empty"));
            }
            if v.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("{what} {v:?} is not strictly increasing"));
            }
            Ok(())
        };
        let per_point = |what: &str, v: &[Stat], n: usize| -> Result<(), String> {
            if v.len() != n {
                return Err(format!("{what} has {} entries, expected {n}", v.len()));
            }
            v.iter().enumerate().try_for_each(|(i, s)| stat(&format!("{what}[{i}]"), s))
        };
        let widths = ffn_widths(m.max_ffn);
        let attn_rows = |what: &str, rows: &[AttentionRow], n: usize| -> Result<(), String> {
            let ks: Vec<usize> = rows.iter().map(|r| r.kv_heads).collect();
            if ks != (1..=m.max_kv_heads).collect::<Vec<_>>() {
                return Err(format!("{what}: KV-head counts {ks:?}, expected 1..={}", m.max_kv_heads));
            }
            rows.iter().try_for_each(|r| per_point(&format!("{what}[kv_heads={}]", r.kv_heads), &r.ms, n))
        };
        let ffn_rows = |what: &str, rows: &[FfnRow], n: usize| -> Result<(), String> {
            let ws: Vec<usize> = rows.iter().map(|r| r.width).collect();
            if ws != widths {
                return Err(format!("{what}: widths {ws:?}, expected {widths:?}"));
            }
            rows.iter().try_for_each(|r| per_point(&format!("{what}[width={}]", r.width), &r.ms, n))
        };
        let d = &self.decode;
        increasing("decode.contexts", &d.contexts)?;
        let nc = d.contexts.len();
        per_point("decode.overhead", &d.overhead, nc)?;
        stat("decode.embedding", &d.embedding)?;
        stat("decode.final_norm", &d.final_norm)?;
        stat("decode.output_head", &d.output_head)?;
        attn_rows("decode.attention", &d.attention, nc)?;
        ffn_rows("decode.ffn", &d.ffn, 1)?;
        // Schema 3 requires the reference; a schema-2 file has none.
        let reference = |what: &str, v: &[Stat], n: usize| -> Result<(), String> {
            if self.schema_version < 3 && v.is_empty() {
                return Ok(());
            }
            per_point(what, v, n)?;
            match v.iter().position(|s| s.median_ms <= 0.0) {
                Some(i) => Err(format!("{what}[{i}] is not a positive time")),
                None => Ok(()),
            }
        };
        reference("decode.reference", &d.reference, nc)?;
        let p = &self.prefill;
        increasing("prefill.lengths", &p.lengths)?;
        if p.lengths[0] == 0 {
            return Err("prefill.lengths starts at 0".into());
        }
        let nl = p.lengths.len();
        per_point("prefill.overhead", &p.overhead, nl)?;
        per_point("prefill.embedding", &p.embedding, nl)?;
        stat("prefill.final_norm", &p.final_norm)?;
        stat("prefill.output_head", &p.output_head)?;
        attn_rows("prefill.attention", &p.attention, nl)?;
        ffn_rows("prefill.ffn", &p.ffn, nl)?;
        reference("prefill.reference", &p.reference, nl)?;
        Ok(())
    }

    /// A file name from the machine's facts: `<cpu>-<cores>c-<memory>g-t<threads>-<quant>.json`, lower case,
    /// e.g. `amd-epyc-2c-24g-t2-q8_0.json`; for `wgpu`: `<adapter>-wgpu-<quant>.json`, e.g.
    /// `llvmpipe-llvm-15-0-6-wgpu-q8_0.json`.
    pub fn file_name(&self) -> String {
        let cpu: String = self
            .device
            .cpu_brand
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let cpu = cpu.split('-').filter(|s| !s.is_empty()).take(4).collect::<Vec<_>>().join("-");
        let cpu = if cpu.is_empty() { "cpu".to_string() } else { cpu };
        let gib = (self.device.memory_bytes as f64 / (1u64 << 30) as f64).round() as u64;
        if let (true, Some(a)) = (self.backend == "wgpu", &self.device.adapter) {
            let name: String = a.name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
            let name = name.split('-').filter(|s| !s.is_empty()).take(5).collect::<Vec<_>>().join("-");
            return format!("{name}-wgpu-{}.json", self.quant);
        }
        format!("{cpu}-{}c-{gib}g-t{}-{}.json", self.device.logical_cpus, self.threads, self.quant)
    }
}

/// The FFN widths a profile measures for a model of FFN width `max_ffn`: `FFN_STEP, 2*FFN_STEP, ...` up to
/// `max_ffn`, and `max_ffn` itself when it is not a multiple of the step.
pub fn ffn_widths(max_ffn: usize) -> Vec<usize> {
    let mut w: Vec<usize> = (1..).map(|i| i * FFN_STEP).take_while(|&w| w <= max_ffn).collect();
    if w.last() != Some(&max_ffn) {
        w.push(max_ffn);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_median_and_iqr_by_hand() {
        // 1..=5: median 3, p25 2, p75 4 (linear interpolation, numpy's default).
        let s = Stat::from_samples(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.median_ms, s.spread_ms, s.runs), (3.0, 2.0, 5));
        // [1, 2, 3, 10]: median 2.5, p25 1.75, p75 4.75 (numpy.percentile).
        let s = Stat::from_samples(&[1.0, 2.0, 3.0, 10.0]);
        assert_eq!((s.median_ms, s.spread_ms), (2.5, 3.0));
        let p = Stat { median_ms: 10.0, spread_ms: 1.0, runs: 5 }.per_part(Stat { median_ms: 2.0, spread_ms: 1.0, runs: 7 }, 4);
        assert_eq!((p.median_ms, p.spread_ms, p.runs), (2.0, 0.5, 5));
    }

    #[test]
    fn ffn_widths_steps() {
        assert_eq!(ffn_widths(1536), vec![256, 512, 768, 1024, 1280, 1536]);
        assert_eq!(ffn_widths(600), vec![256, 512, 600]);
        assert_eq!(ffn_widths(100), vec![100]);
    }
}
