//! `llamanas import`: a LLaMA-family GGUF → a super-network folder (docs/SUPERNET.md).
//!
//! 1. The base GGUF is opened and checked (`llama` or `deci`, every tensor type dequantizable).
//! 2. Calibration: general text (by default 128k tokens of `c4_demo.jsonl` and `wiki_demo.txt`, half each) is
//!    tokenized and evaluated by the runtime engine on the base model as it is (its own block formats), in
//!    independent sequences of `seq_len` tokens; [`ActivationStats`] collects the FFN hidden activations and
//!    attention outputs of every block, and [`CovStats`] in the same pass the second moments reconstruction
//!    needs and ShortGPT's Block Influence.
//! 3. Scores and order per layer ([`crate::importance`]) (unless `--no-reorder`).
//! 4. Every tensor is dequantized to F32 ([`device_runtime::quant::dequantize`]), reordered, converted to the
//!    output type (F32, or F16 for 2-D tensors) and written to `supernet.gguf` (atomic); the statistics,
//!    permuted into the same order, to `calib.gguf` with `supernet.gguf`'s SHA-256; `supernet.json` last.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use device_runtime::arch::ModelConfig;
use device_runtime::chat::{ChatMessage, apply_model_chat_template};
use device_runtime::engine::{Logits, Model, Session, SessionOptions};
use device_runtime::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use device_runtime::quant;
use device_runtime::subnet::Provenance;
use device_runtime::tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use super::{
    BaseModel, Calibration, GGUF_NAME, JSON_NAME, KEY_BASE_FILE, KEY_BASE_SHA256, KEY_REORDERED, KEY_SCHEMA, LayerOrder,
    SCHEMA_VERSION, SupernetMeta, WeightDtype, Weights, check_output_dir,
};
use super::calib::{self, Both, CovStats};
use crate::importance::{self, ActivationStats, BlockDims};
use device_runtime::engine::ActivationObserver;
use crate::space::SearchSpace;

/// Default number of calibration tokens (issue 20: at least 100k tokens of general text).
pub const DEFAULT_CALIB_TOKENS: usize = 131_072;
/// Default calibration sequence length (tokens per independent sequence).
pub const DEFAULT_SEQ_LEN: usize = 512;
/// The default calibration files under `$LLAMANAS_ASSETS`: general web and encyclopedia text (llamafactory's
/// `c4_demo.jsonl` and `wiki_demo.txt`). The held-out GPL-3 text and the benchmarks are never used.
pub const DEFAULT_CALIB_FILES: [&str; 2] = ["data/c4_demo.jsonl", "data/wiki_demo.txt"];

/// Options of `llamanas import`.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The base GGUF.
    pub base: PathBuf,
    /// The output folder.
    pub out: PathBuf,
    /// Type of the 2-D tensors of `supernet.gguf`.
    pub dtype: WeightDtype,
    /// Reorder by importance (false: `--no-reorder`, identity order, no calibration and no statistics:
    /// `llamanas calibrate` adds them).
    pub reorder: bool,
    /// Calibration files ([`calibration_tokens`]); empty: [`DEFAULT_CALIB_FILES`] under `$LLAMANAS_ASSETS`.
    pub calib: Vec<PathBuf>,
    /// Calibration tokens (at most; fewer if the texts are shorter).
    pub calib_tokens: usize,
    /// Tokens per calibration sequence.
    pub seq_len: usize,
    /// Engine threads (0: all CPUs).
    pub threads: usize,
    /// Replace an existing super-network folder.
    pub force: bool,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// The search space to store in `supernet.json` (checked against the base model); `None`:
    /// [`SearchSpace::default_for`]. Fine-tuning samples from it and the search explores it.
    pub space: Option<SearchSpace>,
    /// Write the calibration statistics `calib.gguf` that reconstruction needs ([`crate::store::calib`]).
    pub stats: bool,
    /// How FFN neurons are ordered.
    pub order: NeuronOrder,
}

impl ImportOptions {
    /// Options with the defaults of the command line for `base` and `out`.
    pub fn new(base: impl Into<PathBuf>, out: impl Into<PathBuf>) -> ImportOptions {
        ImportOptions {
            base: base.into(),
            out: out.into(),
            dtype: WeightDtype::F32,
            reorder: true,
            calib: Vec::new(),
            calib_tokens: DEFAULT_CALIB_TOKENS,
            seq_len: DEFAULT_SEQ_LEN,
            threads: 0,
            force: false,
            progress: false,
            space: None,
            stats: true,
            order: NeuronOrder::default(),
        }
    }
}

/// The calibration files: `given`, or [`DEFAULT_CALIB_FILES`] under `$LLAMANAS_ASSETS`.
///
/// Errors: nothing given and `LLAMANAS_ASSETS` unset.
pub fn calib_files(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let dir = std::env::var_os("LLAMANAS_ASSETS").context(
        "no --calib given and LLAMANAS_ASSETS is not set (the default calibration text is $LLAMANAS_ASSETS/data/c4_demo.jsonl \
         and $LLAMANAS_ASSETS/data/wiki_demo.txt)",
    )?;
    Ok(DEFAULT_CALIB_FILES.iter().map(|f| PathBuf::from(&dir).join(f)).collect())
}

#[derive(Deserialize)]
struct AlpacaItem {
    instruction: String,
    #[serde(default)]
    input: String,
    #[serde(default)]
    output: String,
}

#[derive(Deserialize)]
struct TextLine {
    text: String,
}

/// Calibration tokens from `paths`, at most `max_tokens` in all, the budget split evenly over the files (a
/// file shorter than its share leaves the rest to the next ones). Formats by extension: `.json` an Alpaca
/// list (each item rendered as a user/assistant conversation through the model's chat template, or as plain
/// `instruction\n\ninput\n\noutput` text when the model has none); `.jsonl` one JSON object with a `"text"`
/// field per line (c4), each document followed by the end-of-text token; anything else UTF-8 text. Returns
/// the tokens and the formats (`alpaca-chat`, `alpaca-plain`, `jsonl-text`, `text`, comma-separated).
///
/// Errors: no file, an unreadable file, invalid JSON (naming the line), invalid UTF-8, no tokens.
pub fn calibration_tokens(paths: &[PathBuf], tok: &Tokenizer, max_tokens: usize) -> Result<(Vec<u32>, String)> {
    ensure!(!paths.is_empty(), "no calibration file");
    let mut tokens = Vec::new();
    let mut formats = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let budget = (max_tokens - tokens.len()) / (paths.len() - i);
        let (t, f) = file_tokens(path, tok, budget)?;
        tokens.extend(t);
        formats.push(f);
    }
    ensure!(!tokens.is_empty(), "calibration text {}: no tokens", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok((tokens, formats.join(",")))
}

fn file_tokens(path: &Path, tok: &Tokenizer, max_tokens: usize) -> Result<(Vec<u32>, &'static str)> {
    let len = std::fs::metadata(path).with_context(|| format!("calibration text {}: cannot read", path.display()))?.len();
    ensure!(len <= 1 << 30, "calibration text {}: {len} bytes is larger than 1 GiB", path.display());
    let text = std::fs::read_to_string(path).with_context(|| format!("calibration text {}: cannot read as UTF-8", path.display()))?;
    let mut tokens = Vec::new();
    let ext = path.extension().map(|e| e.to_ascii_lowercase());
    let format = if ext.as_deref() == Some("json".as_ref()) {
        let items: Vec<AlpacaItem> = serde_json::from_str(&text).with_context(|| {
            format!("calibration text {}: not an Alpaca JSON list ([{{\"instruction\",\"input\",\"output\"}}, ...])", path.display())
        })?;
        let chat = tok.chat_template().is_some();
        for (i, it) in items.iter().enumerate() {
            if tokens.len() >= max_tokens {
                break;
            }
            let prompt = if it.input.is_empty() { it.instruction.clone() } else { format!("{}\n\n{}", it.instruction, it.input) };
            let (rendered, special) = if chat {
                let msgs = [ChatMessage::new("user", prompt), ChatMessage::new("assistant", it.output.clone())];
                let r = apply_model_chat_template(tok, &msgs, false)
                    .with_context(|| format!("calibration text {}: item {i}: chat template", path.display()))?;
                (r, true)
            } else {
                (format!("{prompt}\n\n{}\n\n", it.output), false)
            };
            let t = tok
                .encode(&rendered, !chat, special)
                .with_context(|| format!("calibration text {}: item {i}: tokenizer", path.display()))?;
            tokens.extend(t);
        }
        if chat { "alpaca-chat" } else { "alpaca-plain" }
    } else if ext.as_deref() == Some("jsonl".as_ref()) {
        let eos = tok.eos();
        for (i, line) in text.lines().enumerate() {
            if tokens.len() >= max_tokens {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            let doc: TextLine = serde_json::from_str(line)
                .with_context(|| format!("calibration text {}: line {}: not a JSON object with a \"text\" field", path.display(), i + 1))?;
            let t = tok.encode(&doc.text, false, false).with_context(|| format!("calibration text {}: line {}: tokenizer", path.display(), i + 1))?;
            tokens.extend(t);
            tokens.extend(eos);
        }
        "jsonl-text"
    } else {
        tokens = tok.encode(&text, true, false).with_context(|| format!("calibration text {}: tokenizer", path.display()))?;
        "text"
    };
    tokens.truncate(max_tokens);
    Ok((tokens, format))
}

/// Shapes of the blocks of `m` for [`ActivationStats`].
pub fn block_dims(m: &ModelConfig) -> Vec<BlockDims> {
    (0..m.n_layers)
        .map(|l| BlockDims { n_ff: m.ffn[l], n_head: m.n_heads[l], n_head_kv: m.n_kv_heads[l], head_dim: m.head_dim })
        .collect()
}

/// Run `tokens` through `model` in independent sequences of `seq_len` tokens (each from an empty KV cache)
/// and collect the activation statistics of every block. `progress(tokens_done)` after each sequence.
///
/// Errors: the engine's (a sequence longer than the model's context, ...).
pub fn calibrate(model: &Model, tokens: &[u32], seq_len: usize, threads: usize, progress: impl FnMut(usize)) -> Result<ActivationStats> {
    let mc = model.model_config().context("the calibration model was not loaded from GGUF")?;
    let mut stats = ActivationStats::new(block_dims(mc));
    run_calibration(model, tokens, seq_len, threads, &mut stats, progress)?;
    Ok(stats)
}

/// [`calibrate`] that also gathers the statistics of `calib.gguf` ([`CovStats`]) in the same pass.
///
/// Errors: as [`calibrate`].
pub fn calibrate_with_stats(
    model: &Model,
    tokens: &[u32],
    seq_len: usize,
    threads: usize,
    progress: impl FnMut(usize),
) -> Result<(ActivationStats, CovStats)> {
    let mc = model.model_config().context("the calibration model was not loaded from GGUF")?;
    let mut stats = ActivationStats::new(block_dims(mc));
    let mut cov = CovStats::new(block_dims(mc), mc.d_model);
    run_calibration(model, tokens, seq_len, threads, &mut Both(&mut stats, &mut cov), progress)?;
    cov.full();
    Ok((stats, cov))
}

fn run_calibration(
    model: &Model,
    tokens: &[u32],
    seq_len: usize,
    threads: usize,
    observer: &mut dyn ActivationObserver,
    mut progress: impl FnMut(usize),
) -> Result<()> {
    let mc = model.model_config().context("the calibration model was not loaded from GGUF")?;
    ensure!(seq_len > 0, "calibration sequence length must be > 0");
    let opts = SessionOptions { n_ctx: seq_len.min(mc.n_ctx_train.max(1)), threads, n_batch: seq_len, ..Default::default() };
    let seq = opts.n_ctx;
    let mut session = Session::new(model, opts).context("calibration session")?;
    let mut done = 0;
    for chunk in tokens.chunks(seq) {
        session.reset();
        session.prefill_observed(chunk, Logits::Last, observer).context("calibration forward pass")?;
        done += chunk.len();
        progress(done);
    }
    Ok(())
}

/// Permute `cov` (measured on the base model) into the super-network's order: FFN statistics by each
/// layer's neuron order, attention statistics by the columns of the reordered KV groups.
pub fn reorder_stats(cov: &mut CovStats, m: &ModelConfig, orders: &[LayerOrder]) {
    for (l, o) in orders.iter().enumerate() {
        if m.ffn[l] > 0 && !cov.ffn[l].is_empty() {
            cov.ffn[l] = calib::permute_sym(&cov.ffn[l], &o.ffn);
        }
        if !cov.att[l].is_empty() && m.n_kv_heads[l] > 0 {
            let cols = calib::head_columns(&o.kv_groups, m.n_heads[l] / m.n_kv_heads[l], m.head_dim);
            cov.att[l] = calib::permute_sym(&cov.att[l], &cols);
        }
    }
}

/// Short description of the calibration files for reports and `calib.gguf` (file names, comma-separated).
pub fn describe_files(files: &[PathBuf]) -> String {
    files.iter().map(|p| p.file_name().map_or(p.display().to_string(), |n| n.to_string_lossy().into_owned())).collect::<Vec<_>>().join(",")
}

/// `llamanas calibrate DIR`: measure the calibration statistics of the weights in `DIR/supernet.gguf` as they
/// are (e.g. after fine-tuning, whose weights the import's statistics do not describe) and write
/// `DIR/calib.gguf`. Returns the tokens used and the seconds spent.
///
/// Errors: not a super-network folder, unreadable calibration text, engine errors, I/O.
pub fn calibrate_folder(dir: &Path, files: &[PathBuf], max_tokens: usize, seq_len: usize, threads: usize, progress: bool) -> Result<(usize, f64)> {
    let gguf = dir.join(GGUF_NAME);
    ensure!(gguf.is_file(), "{}: not a super-network folder (no {GGUF_NAME})", dir.display());
    let files = calib_files(files)?;
    let model = Model::load(&gguf)?;
    let f = GgufFile::open(&gguf).with_context(|| format!("opening {}", gguf.display()))?;
    let tok = Tokenizer::from_gguf(&f).with_context(|| format!("{}: tokenizer", gguf.display()))?;
    let (tokens, _) = calibration_tokens(&files, &tok, max_tokens)?;
    let mc = model.model_config().context("model config")?.clone();
    let mut cov = CovStats::new(block_dims(&mc), mc.d_model);
    let pb = bar(progress, tokens.len() as u64, "calibration");
    let t0 = std::time::Instant::now();
    run_calibration(&model, &tokens, seq_len, threads, &mut cov, |n| pb.set_position(n as u64))?;
    cov.full();
    pb.finish_and_clear();
    let sha = Provenance::sha256_hex(f.bytes());
    calib::write_stats(&dir.join(calib::STATS_NAME), &cov, tokens.len(), &describe_files(&files), &sha)?;
    Ok((tokens.len(), t0.elapsed().as_secs_f64()))
}

/// Parse `blk.N.KIND.weight` into `(N, KIND)`.
fn block_tensor(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (n, rest) = rest.split_once('.')?;
    let kind = rest.strip_suffix(".weight")?;
    Some((n.parse().ok()?, kind))
}

const REORDERED_KINDS: [&str; 7] = ["ffn_gate", "ffn_up", "ffn_down", "attn_q", "attn_k", "attn_v", "attn_output"];
const PLAIN_KINDS: [&str; 2] = ["attn_norm", "ffn_norm"];

/// Dequantize tensor `name` of `f` to f32.
fn tensor_f32(f: &GgufFile, name: &str) -> Result<Vec<f32>> {
    let t = f.tensor(name).with_context(|| format!("{}: missing tensor {name}", f.name()))?;
    quant::dequantize_to_vec(t.ty, f.tensor_data(t)).with_context(|| format!("{}: tensor {name}", f.name()))
}

/// How FFN neurons are ordered at import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NeuronOrder {
    /// Minitron activation x weight-norm importance ([`importance::ffn_scores`]).
    #[default]
    Importance,
    /// Greedy structured OBS with least-squares refit ([`importance::obs_ffn_order`]): every prefix is the
    /// set the reconstruction keeps best. Needs the calibration statistics.
    Obs,
}

/// Relative damping of the OBS order's inverse statistic (`lambda = 0.01 mean(diag C)`).
pub const OBS_DAMP: f64 = 0.01;

/// Importance scores and order of every layer from the statistics (`ffn_down` and `attn_output` of `f`
/// supply the weight norms). With `obs` (the second moments of the same pass, base order), FFN neurons are
/// ordered by [`importance::obs_ffn_order`] instead (layers in parallel), their scores the removal costs.
///
/// Errors: a missing tensor, a singular statistic.
pub fn layer_orders(f: &GgufFile, m: &ModelConfig, stats: &ActivationStats, obs: Option<&CovStats>) -> Result<Vec<LayerOrder>> {
    use rayon::prelude::*;
    (0..m.n_layers)
        .into_par_iter()
        .map(|l| {
            let (n_ff, nh, nkv, hd) = (m.ffn[l], m.n_heads[l], m.n_kv_heads[l], m.head_dim);
            let (ffn, ffn_scores) = if n_ff == 0 {
                (vec![], vec![])
            } else {
                let down = tensor_f32(f, &format!("blk.{l}.ffn_down.weight"))?;
                match obs {
                    Some(c) => importance::obs_ffn_order(&down, down.len() / n_ff, n_ff, &c.ffn[l], OBS_DAMP)
                        .map_err(|e| anyhow::anyhow!("layer {l}: OBS order: {e}"))?,
                    None => {
                        let s = importance::ffn_scores(&stats.ffn_mean_abs(l), &down, n_ff);
                        let o = importance::descending_order(&s);
                        let sorted = o.iter().map(|&i| s[i]).collect();
                        (o, sorted)
                    }
                }
            };
            let kv_scores = if nh > 0 && nkv > 0 {
                let wo = tensor_f32(f, &format!("blk.{l}.attn_output.weight"))?;
                importance::kv_scores(&stats.kv_mean_norm(l), &wo, nh * hd, nh / nkv * hd)
            } else {
                vec![]
            };
            let kv_groups = importance::descending_order(&kv_scores);
            Ok(LayerOrder { kv_scores: kv_groups.iter().map(|&i| kv_scores[i]).collect(), ffn_scores, ffn, kv_groups })
        })
        .collect()
}

/// The identity order of every layer (no scores).
pub fn identity_orders(m: &ModelConfig) -> Vec<LayerOrder> {
    (0..m.n_layers)
        .map(|l| LayerOrder {
            ffn: (0..m.ffn[l]).collect(),
            kv_groups: (0..if m.n_heads[l] > 0 { m.n_kv_heads[l] } else { 0 }).collect(),
            ffn_scores: vec![],
            kv_scores: vec![],
        })
        .collect()
}

/// Build `supernet.gguf` in memory: base metadata (with `general.file_type` of `dtype`) plus the
/// `llamanas.supernet.*` keys, every tensor dequantized, reordered by `orders`, converted to `dtype` (2-D) or
/// F32 (1-D). `progress(i)` after each tensor.
///
/// Errors: a tensor that cannot be dequantized, a per-block tensor import does not know how to reorder (when
/// an order is not the identity), shapes that do not match the config.
pub fn build_supernet_gguf(
    f: &GgufFile,
    m: &ModelConfig,
    orders: &[LayerOrder],
    dtype: WeightDtype,
    base_sha256: &str,
    base_file: &str,
    reordered: bool,
    mut progress: impl FnMut(usize),
) -> Result<GgufWriter<'static>> {
    ensure!(orders.len() == m.n_layers, "{} orders for {} layers", orders.len(), m.n_layers);
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_metadata(k, v.clone());
    }
    w.add_metadata("general.file_type", MetaValue::U32(dtype.ftype()));
    w.add_metadata(KEY_SCHEMA, MetaValue::U32(SCHEMA_VERSION));
    w.add_metadata(KEY_BASE_FILE, MetaValue::String(base_file.to_owned()));
    w.add_metadata(KEY_BASE_SHA256, MetaValue::String(base_sha256.to_owned()));
    w.add_metadata(KEY_REORDERED, MetaValue::Bool(reordered));
    for (i, t) in f.tensors().iter().enumerate() {
        let data = tensor_f32(f, &t.name)?;
        let data = match block_tensor(&t.name) {
            Some((l, kind)) if l < m.n_layers => {
                let o = &orders[l];
                let moved = !o.ffn.iter().enumerate().all(|(i, &p)| i == p) || !o.kv_groups.iter().enumerate().all(|(i, &p)| i == p);
                if REORDERED_KINDS.contains(&kind) {
                    let (nh, nkv, hd) = (m.n_heads[l], m.n_kv_heads[l], m.head_dim);
                    let expect = match kind {
                        "ffn_gate" | "ffn_up" | "ffn_down" => m.d_model * m.ffn[l],
                        "attn_k" | "attn_v" => m.d_model * nkv * hd,
                        _ => m.d_model * nh * hd,
                    };
                    ensure!(data.len() == expect, "{}: tensor {} has {} elements, the config implies {expect}", f.name(), t.name, data.len());
                    importance::reorder_tensor(kind, data, &o.ffn, &o.kv_groups, if nkv > 0 { nh / nkv } else { 1 }, hd)
                } else if PLAIN_KINDS.contains(&kind) || !moved {
                    data
                } else {
                    bail!("{}: tensor {}: import does not know how to reorder it (use --no-reorder)", f.name(), t.name);
                }
            }
            _ => data,
        };
        let ty = if t.dims.len() >= 2 { dtype.ggml_type() } else { GgmlType::F32 };
        let bytes = quant::quantize(ty, &data).with_context(|| format!("{}: tensor {} to {ty}", f.name(), t.name))?;
        w.add_tensor(&t.name, &t.dims, ty, bytes).with_context(|| format!("tensor {}", t.name))?;
        progress(i + 1);
    }
    Ok(w)
}

/// What [`run`] did.
#[derive(Clone, Debug)]
pub struct ImportReport {
    /// The description written.
    pub meta: SupernetMeta,
    /// Bytes of `supernet.gguf`.
    pub gguf_bytes: u64,
    /// Seconds spent in calibration.
    pub calib_seconds: f64,
    /// Calibration tokens per second.
    pub calib_tokens_per_s: f64,
}

fn bar(show: bool, len: u64, msg: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len).with_message(msg);
    b.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})").expect("valid template").progress_chars("=> "),
    );
    b
}

/// Run `llamanas import`.
pub fn run(opts: &ImportOptions) -> Result<ImportReport> {
    let base_path = &opts.base;
    let base = GgufFile::open(base_path).with_context(|| format!("opening the base model {}", base_path.display()))?;
    let mc = ModelConfig::from_gguf(&base)
        .with_context(|| format!("{}: not a LLaMA-family (llama/deci) GGUF model", base_path.display()))?;
    for t in base.tensors() {
        ensure!(
            quant::can_dequantize(t.ty),
            "{}: tensor {} has type {}, which cannot be dequantized",
            base_path.display(),
            t.name,
            t.ty
        );
    }
    if let Some(space) = &opts.space {
        space.check(&mc).with_context(|| format!("--space does not fit the base model {}", base_path.display()))?;
    }
    // The engine's checks (every tensor present, of a usable type and the shape the metadata implies) before
    // anything is written, with or without calibration.
    let engine_model = Model::load(base_path)?;
    check_output_dir(&opts.out, opts.force)?;
    let base_file = base_path.file_name().map_or_else(|| base_path.display().to_string(), |s| s.to_string_lossy().into_owned());
    let sha = Provenance::sha256_hex(base.bytes());

    let (orders, calibration, cov, calib_seconds, calib_tps) = if opts.reorder {
        let files = calib_files(&opts.calib)?;
        let model = engine_model;
        let tok = Tokenizer::from_gguf(&base).with_context(|| format!("{}: tokenizer", base_path.display()))?;
        let (tokens, format) = calibration_tokens(&files, &tok, opts.calib_tokens)?;
        let pb = bar(opts.progress, tokens.len() as u64, "calibration");
        let t0 = std::time::Instant::now();
        let (stats, mut cov) = if opts.stats {
            let (s, c) = calibrate_with_stats(&model, &tokens, opts.seq_len, opts.threads, |n| pb.set_position(n as u64))?;
            (s, Some(c))
        } else {
            (calibrate(&model, &tokens, opts.seq_len, opts.threads, |n| pb.set_position(n as u64))?, None)
        };
        let secs = t0.elapsed().as_secs_f64();
        pb.finish_and_clear();
        if opts.order == NeuronOrder::Obs {
            ensure!(cov.is_some(), "--order obs needs the calibration statistics (drop --no-calib-stats)");
        }
        let orders = layer_orders(&base, &mc, &stats, if opts.order == NeuronOrder::Obs { cov.as_ref() } else { None })?;
        if let Some(c) = cov.as_mut() {
            reorder_stats(c, &mc, &orders);
        }
        let cal = Calibration {
            source: files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","),
            format,
            tokens: tokens.len(),
            seq_len: opts.seq_len.min(mc.n_ctx_train.max(1)),
            ffn_score: match opts.order {
                NeuronOrder::Importance => importance::FFN_SCORE.to_owned(),
                NeuronOrder::Obs => importance::FFN_OBS_SCORE.to_owned(),
            },
            kv_score: importance::KV_SCORE.to_owned(),
            stats: cov.as_ref().map(|_| calib::STATS_NAME.to_owned()),
            block_influence: cov.as_ref().map(|c| c.block_influence().iter().map(|&x| x as f32).collect()).unwrap_or_default(),
        };
        let cov = cov.map(|c| (c, tokens.len(), describe_files(&files)));
        (orders, Some(cal), cov, secs, tokens.len() as f64 / secs.max(1e-9))
    } else {
        (identity_orders(&mc), None, None, 0.0, 0.0)
    };

    let meta = SupernetMeta {
        schema_version: SCHEMA_VERSION,
        created_by: format!("llamanas {}", env!("CARGO_PKG_VERSION")),
        base: BaseModel { file: base_file.clone(), sha256: sha.clone(), config: mc.clone() },
        weights: Weights { file: GGUF_NAME.to_owned(), dtype: opts.dtype },
        search_space: opts.space.clone().unwrap_or_else(|| SearchSpace::default_for(&mc)),
        reordered: opts.reorder,
        order: orders,
        calibration,
        finetune: None,
    };
    let json_path = opts.out.join(JSON_NAME);
    meta.validate(&json_path)?;

    let pb = bar(opts.progress, base.tensors().len() as u64, "tensors");
    let w = build_supernet_gguf(&base, &mc, &meta.order, opts.dtype, &sha, &base_file, opts.reorder, |i| pb.set_position(i as u64))?;
    pb.finish_and_clear();
    check_output_dir(&opts.out, opts.force)?; // again: the folder may have changed during calibration
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    // An old supernet.json goes first, so that an interrupted import never leaves a folder that looks complete.
    if json_path.exists() {
        std::fs::remove_file(&json_path).with_context(|| format!("removing the old {}", json_path.display()))?;
    }
    let gguf_path = opts.out.join(GGUF_NAME);
    let stats_path = opts.out.join(calib::STATS_NAME);
    if stats_path.exists() {
        std::fs::remove_file(&stats_path).with_context(|| format!("removing the old {}", stats_path.display()))?;
    }
    let gguf_bytes = w.write_atomic(&gguf_path).with_context(|| format!("writing {}", gguf_path.display()))?;
    drop(w);
    if let Some((cov, tokens, source)) = &cov {
        let weights_sha = calib::file_sha256(&gguf_path)?;
        calib::write_stats(&stats_path, cov, *tokens, source, &weights_sha)?;
    }
    meta.write(&json_path)?;
    Ok(ImportReport { meta, gguf_bytes, calib_seconds, calib_tokens_per_s: calib_tps })
}
