//! Latency measurement: part models built in memory from the real model's weights, timed through the engine.
//!
//! Method (`docs/PROFILES.md`):
//! - The block weights of the base model are dequantized, sliced as `device_runtime::subnet` slices them
//!   (first `k` KV groups with their query heads, first `w` FFN neurons) and quantized to the profile's type
//!   with [`crate::quant::quantize`]. The output head / embedding get the type the exporter gives them (Q8_0
//!   for Q8_0; for Q4_0/Q4_1: Q6_K copied when the base has it and the row is a multiple of 256, else Q8_0).
//! - A *part model* has `L` blocks that all hold one part (attention only at `k` KV heads, or FFN only at
//!   width `w`), taken from base blocks `0..L`; the *baseline model* has one empty block. Each is run through
//!   [`Session`] (the engine's own forward pass, kernels and threads); one part costs `(T_L - T_0) / L`.
//! - Decode part and baseline models keep the base model's full output head (for SmolLM2 a 49152 x 576
//!   matrix, 30 MiB at Q8_0, about the size of the last-level cache). Consecutive decodes then stream the
//!   head through the cache on every token, as a real model does, so the blocks' weights come from memory
//!   in the steady state that a user's decode loop sees. Prefill part models (compute-bound) have a
//!   32-token vocabulary.
//! - The embedding lookup, final RMSNorm and output head are timed directly with the engine's kernels on
//!   full-size tensors; the fixed per-token overhead is the baseline model's time minus them.
//! - The *reference*: the base model is timed end to end (decode at every context, prefill at every length)
//!   in every pass, next to its parts; the latency model scales the sum of the parts by it (schema 3). When
//!   the base is uniform (SmolLM2) it is exported at the profile's quantization to a GGUF file and loaded from
//!   it, as the exported sub-networks are (a heap-built copy ran 4.5% slower, see `reference_model`); else
//!   `n_layers` blocks at the largest KV-head count and FFN width are built in memory.
//! - Optionally (`cache_flush_bytes` > 0) memory is read before every timed run so that each run starts
//!   with cold caches. Off by default: a flushed run also starts with cold TLBs and idle prefetchers, and
//!   over-predicted end-to-end decode by 50% on this machine (2026-12-01); without a flush but with a 32-token
//!   head, part models stay in the cache and decode was under-predicted.
//! - Each measurement: `warmup` untimed runs, then `min_runs..=max_runs` timed runs (fewer when the budget is
//!   short); median. The whole table is measured `passes` times and each entry keeps the median of its
//!   passes (spread: IQR of the passes' medians), so that a slow phase of a shared machine (memory
//!   bandwidth taken by a neighbour) does not bias a few entries.

use super::{
    AttentionRow, DecodeTables, DeviceFacts, FfnRow, Method, ModelFamily, PrefillTables, Profile, ProfileError,
    RUNTIME_VERSION, SCHEMA_VERSION, Stat, ffn_widths,
};
use crate::arch::ModelConfig;
use crate::engine::model::{EngineConfig, LayerShape, TensorRef};
use crate::backend::{Backend, BackendKind};
use crate::engine::{Logits, Model, SessionOptions, ops};
use crate::gguf::{GgmlType, GgufFile};
use crate::arch::SubnetConfig;
use crate::quant::{self, dot};
use crate::subnet::{ExportQuant, Provenance, export_subnet};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Settings of [`profile_model`].
#[derive(Clone, Debug)]
pub struct ProfileOptions {
    /// Engine worker threads.
    pub threads: usize,
    /// Quantization of the sub-networks: `q8_0`, `q4_0`, `q4_1`, `f16`, `f32`.
    pub quant: String,
    /// Backend: `cpu`, or `wgpu` (cargo feature `wgpu`; the models run on a wgpu adapter).
    pub backend: String,
    /// With `wgpu`: the adapter whose name contains this text (`None`: the best one, see
    /// `gpu::GpuContext::new`).
    pub adapter: Option<String>,
    /// Decode context lengths (tokens in the KV cache), increasing.
    pub contexts: Vec<usize>,
    /// Prefill prompt lengths, increasing, each at most the engine's batch size.
    pub lengths: Vec<usize>,
    /// Untimed runs per measurement.
    pub warmup: usize,
    /// Fewest timed runs per measurement.
    pub min_runs: usize,
    /// Most timed runs per measurement.
    pub max_runs: usize,
    /// Blocks per part model for decode (0: as many as the base model has, so that the weights streamed per
    /// token are of the real model's order).
    pub decode_layers: usize,
    /// Blocks per part model for prefill.
    pub prefill_layers: usize,
    /// Bytes read before each timed run to evict the caches (0: none).
    pub cache_flush_bytes: usize,
    /// Passes over the whole table: every entry is measured once per pass and the profile keeps, per entry,
    /// the median of the passes' medians, so that a slow phase of a shared machine hits all entries alike
    /// instead of a few.
    pub passes: usize,
    /// Wall-time bound, seconds.
    pub budget_s: f64,
    /// Show a progress bar (indicatif) on stderr.
    pub progress: bool,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            threads: 0,
            quant: "q8_0".into(),
            backend: "cpu".into(),
            adapter: None,
            contexts: vec![0, 256, 512, 1024, 2048],
            lengths: vec![1, 16, 64, 128, 256, 512],
            warmup: 1,
            min_runs: 3,
            max_runs: 9,
            decode_layers: 0,
            prefill_layers: 4,
            cache_flush_bytes: 0,
            passes: 5,
            budget_s: 600.0,
            progress: false,
        }
    }
}

/// The ggml type of the block weights for a quantization name (`q8_0` ...), or `None`.
pub fn quant_type(quant: &str) -> Option<GgmlType> {
    match quant.to_ascii_lowercase().as_str() {
        "q8_0" => Some(GgmlType::Q8_0),
        "q4_0" => Some(GgmlType::Q4_0),
        "q4_1" => Some(GgmlType::Q4_1),
        "f16" => Some(GgmlType::F16),
        "f32" => Some(GgmlType::F32),
        _ => None,
    }
}

/// One block of a model the profiler builds: which base block its weights come from, its KV heads (0: no
/// attention) and FFN width (0: no FFN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    /// Base block whose weights are sliced.
    pub base_layer: usize,
    /// KV heads kept (first groups).
    pub kv_heads: usize,
    /// FFN neurons kept (first ones).
    pub ffn: usize,
}

/// Builds models in memory from a base GGUF's weights, sliced and quantized as the exporter does.
pub struct ModelBuilder<'a> {
    base: &'a GgufFile,
    /// The base model's configuration.
    pub config: ModelConfig,
    /// Type of the block weights.
    pub weight_type: GgmlType,
    /// Type of the token embedding.
    pub embedding_type: GgmlType,
    /// Type of the output head (tied: the embedding's).
    pub head_type: GgmlType,
}

enum Cut {
    Whole,
    Rows(usize),
    Cols(usize),
}

impl<'a> ModelBuilder<'a> {
    /// A builder for sub-networks of `base` quantized to `quant` (`q8_0`, `q4_0`, `q4_1`, `f16`, `f32`).
    ///
    /// Errors: [`ProfileError::Invalid`] (unknown quantization), [`ProfileError::Arch`] (base unusable).
    pub fn new(base: &'a GgufFile, quant: &str) -> Result<Self, ProfileError> {
        let weight_type = quant_type(quant)
            .ok_or_else(|| ProfileError::Invalid(format!("unknown quantization {quant:?} (expected q8_0, q4_0, q4_1, f16, f32)")))?;
        let config = ModelConfig::from_gguf(base)?;
        // The exporter's rule (llama.cpp llama_tensor_get_type for pure ftypes): see crate::subnet.
        let out_name = if config.tied_embeddings { "token_embd.weight" } else { "output.weight" };
        let out_src = base.tensor(out_name).map(|t| t.ty);
        let head_type = match weight_type {
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                if out_src == Some(GgmlType::Q6_K) && config.d_model % 256 == 0 {
                    GgmlType::Q6_K
                } else {
                    GgmlType::Q8_0
                }
            }
            t => t,
        };
        let embedding_type = if config.tied_embeddings { head_type } else { weight_type };
        Ok(ModelBuilder { base, config, weight_type, embedding_type, head_type })
    }

    fn tensor(&self, name: &str, ty: GgmlType, cut: Cut) -> Result<Vec<u8>, ProfileError> {
        let t = self
            .base
            .tensor(name)
            .ok_or_else(|| ProfileError::Invalid(format!("{}: missing tensor {name}", self.base.name())))?;
        let data = self.base.tensor_data(t);
        let cols = t.dims.first().copied().unwrap_or(0) as usize;
        let rows = t.n_rows() as usize;
        let qerr = |e| ProfileError::Quant { tensor: name.to_string(), source: e };
        // Same type, whole rows: copy the blocks.
        if t.ty == ty {
            match cut {
                Cut::Whole => return Ok(data.to_vec()),
                Cut::Rows(r) if r <= rows => return Ok(data[..r * t.row_bytes() as usize].to_vec()),
                _ => {}
            }
        }
        let f = quant::dequantize_to_vec(t.ty, data).map_err(qerr)?;
        let sliced: Vec<f32> = match cut {
            Cut::Whole => f,
            Cut::Rows(r) => f[..r.min(rows) * cols].to_vec(),
            Cut::Cols(c) => f.chunks_exact(cols).flat_map(|row| row[..c.min(cols)].iter().copied()).collect(),
        };
        quant::quantize(ty, &sliced).map_err(qerr)
    }

    /// Build a model of `blocks` (weights from the named base blocks) with the full vocabulary, or the first
    /// `vocab` tokens of it, and a KV-cache limit of `n_ctx` tokens.
    ///
    /// Errors: [`ProfileError::Invalid`] (block outside the base, KV heads or width larger than the base's),
    /// [`ProfileError::Quant`], [`ProfileError::Engine`].
    pub fn build(&self, blocks: &[BlockSpec], vocab: Option<usize>, n_ctx: usize) -> Result<Model, ProfileError> {
        let c = &self.config;
        let (d, hd) = (c.d_model, c.head_dim);
        let n_vocab = vocab.unwrap_or(c.n_vocab).clamp(1, c.n_vocab);
        let mut storage: Vec<u8> = Vec::new();
        let mut refs: HashMap<String, TensorRef> = HashMap::new();
        let mut put = |name: String, ty: GgmlType, dims: Vec<usize>, bytes: Vec<u8>| {
            let offset = storage.len().next_multiple_of(64);
            storage.resize(offset, 0);
            storage.extend_from_slice(&bytes);
            refs.insert(name.clone(), TensorRef { name, ty, dims, offset, len: bytes.len() });
        };
        put(
            "token_embd.weight".into(),
            self.embedding_type,
            vec![d, n_vocab],
            self.tensor("token_embd.weight", self.embedding_type, Cut::Rows(n_vocab))?,
        );
        if !c.tied_embeddings {
            put("output.weight".into(), self.head_type, vec![d, n_vocab], self.tensor("output.weight", self.head_type, Cut::Rows(n_vocab))?);
        }
        put("output_norm.weight".into(), GgmlType::F32, vec![d], self.tensor("output_norm.weight", GgmlType::F32, Cut::Whole)?);
        let mut layers = Vec::with_capacity(blocks.len());
        let wt = self.weight_type;
        for (i, b) in blocks.iter().enumerate() {
            let l = b.base_layer;
            if l >= c.n_layers || b.kv_heads > c.n_kv_heads[l] || b.ffn > c.ffn[l] {
                return Err(ProfileError::Invalid(format!(
                    "block {b:?} does not fit the base model ({} layers, layer {l}: {} KV heads, FFN {})",
                    c.n_layers,
                    c.n_kv_heads.get(l).copied().unwrap_or(0),
                    c.ffn.get(l).copied().unwrap_or(0)
                )));
            }
            let g = c.gqa_group(l);
            let src = |n: &str| format!("blk.{l}.{n}.weight");
            let dst = |n: &str| format!("blk.{i}.{n}.weight");
            let (hq, kv) = (b.kv_heads * g, b.kv_heads);
            if kv > 0 {
                put(dst("attn_norm"), GgmlType::F32, vec![d], self.tensor(&src("attn_norm"), GgmlType::F32, Cut::Whole)?);
                put(dst("attn_q"), wt, vec![d, hq * hd], self.tensor(&src("attn_q"), wt, Cut::Rows(hq * hd))?);
                put(dst("attn_k"), wt, vec![d, kv * hd], self.tensor(&src("attn_k"), wt, Cut::Rows(kv * hd))?);
                put(dst("attn_v"), wt, vec![d, kv * hd], self.tensor(&src("attn_v"), wt, Cut::Rows(kv * hd))?);
                put(dst("attn_output"), wt, vec![hq * hd, d], self.tensor(&src("attn_output"), wt, Cut::Cols(hq * hd))?);
            }
            if b.ffn > 0 {
                let w = b.ffn;
                put(dst("ffn_norm"), GgmlType::F32, vec![d], self.tensor(&src("ffn_norm"), GgmlType::F32, Cut::Whole)?);
                put(dst("ffn_gate"), wt, vec![d, w], self.tensor(&src("ffn_gate"), wt, Cut::Rows(w))?);
                put(dst("ffn_up"), wt, vec![d, w], self.tensor(&src("ffn_up"), wt, Cut::Rows(w))?);
                put(dst("ffn_down"), wt, vec![w, d], self.tensor(&src("ffn_down"), wt, Cut::Cols(w))?);
            }
            layers.push(LayerShape { n_head: hq, n_head_kv: kv, n_ff: b.ffn });
        }
        let config = EngineConfig {
            arch: "deci".into(),
            n_embd: d,
            n_vocab,
            head_dim: hd,
            layers,
            rope_base: c.rope_freq_base,
            rope_dims: c.rope_dim,
            rope_neox: c.rope_neox,
            rms_eps: c.rms_eps,
            n_ctx_train: n_ctx.max(1),
        };
        Ok(Model::from_parts(config, Box::new(storage), &|n| refs.get(n).cloned())?)
    }
}

/// Times operations: cache flush before each run, warm-up, repeated runs, the budget.
pub(crate) struct Timer {
    flush: Vec<u8>,
    warmup: usize,
    min_runs: usize,
    max_runs: usize,
    allowance: Duration,
    start: Instant,
    budget: Duration,
    pub(crate) done: usize,
    pub(crate) total: usize,
    bar: indicatif::ProgressBar,
}

impl Timer {
    pub(crate) fn new(o: &ProfileOptions, total: usize) -> Timer {
        let bar = if o.progress {
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(s) = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}") {
                b.set_style(s.progress_chars("=> "));
            }
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let budget = Duration::from_secs_f64(o.budget_s.max(0.0));
        Timer {
            flush: (0..o.cache_flush_bytes).map(|i| i as u8).collect(),
            warmup: o.warmup,
            min_runs: o.min_runs.max(1),
            max_runs: o.max_runs.max(o.min_runs.max(1)),
            allowance: budget.mul_f64(0.8 / total.max(1) as f64),
            start: Instant::now(),
            budget,
            done: 0,
            total,
            bar,
        }
    }

    /// Evict the caches by reading (not writing: dirty lines would cost a write-back when the timed run
    /// evicts them) one byte per cache line of the flush buffer.
    fn flush(&mut self) {
        let mut acc = 0u8;
        for chunk in self.flush.chunks(64) {
            acc = acc.wrapping_add(std::hint::black_box(chunk[0]));
        }
        std::hint::black_box(acc);
    }

    /// Run `op` (which returns the time of the operation it times, ms) `warmup` times untimed, then
    /// `min_runs..=max_runs` times; one progress step. Errors from `op`, or [`ProfileError::Budget`].
    pub(crate) fn measure(&mut self, what: &str, mut op: impl FnMut() -> Result<f64, ProfileError>) -> Result<Stat, ProfileError> {
        self.bar.set_message(what.to_string());
        for _ in 0..self.warmup {
            self.flush();
            op()?;
        }
        let t0 = Instant::now();
        let mut samples = Vec::with_capacity(self.max_runs);
        while samples.len() < self.max_runs && (samples.len() < self.min_runs || t0.elapsed() < self.allowance) {
            self.flush();
            samples.push(op()?);
        }
        self.done += 1;
        self.bar.inc(1);
        if self.start.elapsed() > self.budget {
            self.bar.abandon();
            return Err(ProfileError::Budget { budget_s: self.budget.as_secs_f64(), done: self.done, total: self.total });
        }
        Ok(Stat::from_samples(&samples))
    }

    pub(crate) fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Deterministic token ids below `n_vocab`.
pub(crate) fn tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % n_vocab) as u32).collect()
}

/// A temporary folder for exported models (`std::env::temp_dir()/edgerun-{what}-{pid}-{n}`, `n` counting the
/// folders of this process, so that profiles and validations running at once never share one), removed on
/// drop. It holds one exported model at a time (for SmolLM2 at Q8_0, 138 MiB), removed once loaded.
pub(crate) struct ExportDir {
    dir: std::path::PathBuf,
    base: &'static str,
}

/// Folders made by [`ExportDir::new`] in this process.
static EXPORT_DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl ExportDir {
    /// Create the folder. Errors: [`ProfileError::Io`] naming it.
    pub(crate) fn new(what: &'static str) -> Result<ExportDir, ProfileError> {
        let n = EXPORT_DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("edgerun-{what}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| ProfileError::Io { file: dir.display().to_string(), source: e })?;
        Ok(ExportDir { dir, base: what })
    }

    /// `cfg` of `base` exported at `quant` to a GGUF file in the folder with [`export_subnet`] and loaded
    /// with [`Model::load`] (memory-mapped, as a user's model is; the file is removed, the mapping stays on
    /// Unix; where a mapped file cannot be removed it goes with the folder or stays in the temp folder).
    ///
    /// Errors: [`ProfileError::Subnet`] (export), [`ProfileError::Engine`] (load).
    pub(crate) fn load(&self, base: &GgufFile, cfg: &SubnetConfig, quant: ExportQuant, provenance: &Provenance) -> Result<Model, ProfileError> {
        let path = self.dir.join(format!("{}-{}.gguf", self.base, cfg.id()));
        export_subnet(base, cfg, quant, provenance, &path)?;
        let model = Model::load(&path);
        let _ = std::fs::remove_file(&path);
        Ok(model?)
    }
}

impl Drop for ExportDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the profiler runs its models: the CPU engine with a number of threads, or a wgpu device opened once
/// (every part model is uploaded to it; kernels are compiled once per device).
pub(crate) enum Runner {
    /// The CPU engine.
    Cpu {
        /// Worker threads.
        threads: usize,
    },
    /// A wgpu device.
    #[cfg(feature = "wgpu")]
    Gpu(std::sync::Arc<crate::gpu::GpuContext>),
}

impl Runner {
    /// The runner of `backend` (`cpu`, `wgpu`); errors name the backends of this build.
    pub(crate) fn new(backend: &str, adapter: Option<&str>, threads: usize) -> Result<Runner, ProfileError> {
        let kind = BackendKind::parse(backend, adapter).map_err(|_| {
            ProfileError::Invalid(format!(
                "backend {backend:?} is not available in this build (available: {})",
                crate::backend::available().join(", ")
            ))
        })?;
        match kind {
            BackendKind::Cpu => Ok(Runner::Cpu { threads }),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu(name) => Ok(Runner::Gpu(std::sync::Arc::new(
                crate::gpu::GpuContext::new(name.as_deref()).map_err(|e| ProfileError::Invalid(e.to_string()))?,
            ))),
            #[cfg(not(feature = "wgpu"))]
            BackendKind::Wgpu(_) => unreachable!("parse refuses wgpu without the feature"),
        }
    }

    /// `model` made ready for this runner (wgpu: weights uploaded).
    pub(crate) fn backend(&self, model: &Model) -> Result<Backend, ProfileError> {
        match self {
            Runner::Cpu { .. } => Ok(Backend::open(&BackendKind::Cpu, model)?),
            #[cfg(feature = "wgpu")]
            Runner::Gpu(ctx) => Ok(Backend::on_device(ctx.clone(), model)?),
        }
    }

    /// Session options with a context of `n_ctx` tokens.
    pub(crate) fn opts(&self, n_ctx: usize) -> SessionOptions {
        SessionOptions { n_ctx, threads: self.threads(), ..Default::default() }
    }

    /// CPU threads (1 on a GPU: the thread that drives it).
    pub(crate) fn threads(&self) -> usize {
        match self {
            Runner::Cpu { threads } => *threads,
            #[cfg(feature = "wgpu")]
            Runner::Gpu(_) => 1,
        }
    }

    /// The adapter's facts on a GPU.
    pub(crate) fn adapter(&self) -> Option<super::device::AdapterFacts> {
        match self {
            Runner::Cpu { .. } => None,
            #[cfg(feature = "wgpu")]
            Runner::Gpu(ctx) => Some(ctx.adapter.clone()),
        }
    }
}

/// Decode times of `model` at each context (descending order internally so that `truncate` can rewind).
fn decode_at(model: &Model, runner: &Runner, contexts: &[usize], timer: &mut Timer, what: &str) -> Result<Vec<Stat>, ProfileError> {
    let max_c = *contexts.last().unwrap_or(&0);
    let be = runner.backend(model)?;
    let mut s = be.session(model, runner.opts(max_c + 1))?;
    let toks = tokens(max_c + 1, model.config.n_vocab);
    if max_c > 0 {
        s.prefill(&toks[..max_c], Logits::Last)?;
    }
    let mut out = vec![Stat::from_samples(&[]); contexts.len()];
    for (i, &c) in contexts.iter().enumerate().rev() {
        out[i] = timer.measure(&format!("decode {what} ctx {c}"), || {
            s.truncate(c);
            let t = Instant::now();
            s.decode(toks[c])?;
            Ok(ms(t))
        })?;
    }
    Ok(out)
}

/// Prefill times of `model` at each prompt length (empty cache, logits of the last token).
fn prefill_at(model: &Model, runner: &Runner, lengths: &[usize], timer: &mut Timer, what: &str) -> Result<Vec<Stat>, ProfileError> {
    let max_n = *lengths.last().unwrap_or(&1);
    let be = runner.backend(model)?;
    let mut s = be.session(model, runner.opts(max_n))?;
    let toks = tokens(max_n, model.config.n_vocab);
    lengths
        .iter()
        .map(|&n| {
            timer.measure(&format!("prefill {what} n {n}"), || {
                s.reset();
                let t = Instant::now();
                s.prefill(&toks[..n], Logits::Last)?;
                Ok(ms(t))
            })
        })
        .collect()
}

/// Vocabulary of the prefill part and baseline models (their output head costs a few microseconds).
const PART_VOCAB: usize = 32;
/// Vocabulary of the decode part and baseline models: the base model's (`None`), see [`profile_model`].
const DECODE_VOCAB: Option<usize> = None;

/// Measure a device profile for sub-networks of the model in `base` (see the module docs for the method).
///
/// Writes one temporary GGUF file, the base model exported at `o.quant` for the reference (see
/// [`reference_model`]), and removes it.
///
/// Errors: [`ProfileError::Invalid`] (options: unknown quantization or backend, lengths above the engine's
/// batch size, empty lists, a context at or above the model's training context), [`ProfileError::Budget`],
/// [`ProfileError::Subnet`] / [`ProfileError::Io`] (the reference's export), and engine / quantization errors.
pub fn profile_model(base: &GgufFile, o: &ProfileOptions) -> Result<Profile, ProfileError> {
    let b = ModelBuilder::new(base, &o.quant)?;
    let c = b.config.clone();
    let check_list = |what: &str, v: &[usize]| -> Result<(), ProfileError> {
        if v.is_empty() || v.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ProfileError::Invalid(format!("{what} {v:?} must be non-empty and strictly increasing")));
        }
        Ok(())
    };
    check_list("contexts", &o.contexts)?;
    check_list("prompt lengths", &o.lengths)?;
    let max_c = *o.contexts.last().unwrap();
    if c.n_ctx_train > 0 && max_c >= c.n_ctx_train {
        return Err(ProfileError::Invalid(format!(
            "{}: decode context {max_c} needs {} tokens of KV cache, above the model's training context {} (use smaller --contexts)",
            base.name(),
            max_c.saturating_add(1),
            c.n_ctx_train
        )));
    }
    let n_batch = SessionOptions::default().n_batch;
    if o.lengths[0] == 0 || *o.lengths.last().unwrap() > n_batch {
        return Err(ProfileError::Invalid(format!("prompt lengths {:?} must lie in 1..={n_batch} (the engine's batch)", o.lengths)));
    }
    let groups: Vec<usize> = (0..c.n_layers).map(|l| c.gqa_group(l)).collect();
    let max_kv = c.n_kv_heads.iter().copied().max().unwrap_or(0);
    let max_ffn = c.ffn.iter().copied().max().unwrap_or(0);
    if max_kv == 0 || max_ffn == 0 || groups.iter().any(|&g| g != groups[0]) {
        return Err(ProfileError::Invalid(format!("{}: the profiler needs attention and FFN in every block and one GQA group size", base.name())));
    }
    let threads = if o.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { o.threads };
    let runner = Runner::new(&o.backend, o.adapter.as_deref(), threads)?;
    let widths = ffn_widths(max_ffn);
    let (nc, nl) = (o.contexts.len(), o.lengths.len());
    let total = nc * (3 + max_kv) + widths.len() + nl * (3 + max_kv + widths.len()) + 2;
    let passes = o.passes.max(1);
    let mut timer = Timer::new(o, total * passes);
    timer.bar.set_message("export the base model");
    let reference = reference_model(base, &b, &o.quant, max_c + 1, *o.lengths.last().unwrap())?;
    let mut all = Vec::with_capacity(passes);
    for _ in 0..passes {
        all.push(measure_pass(base, o, &b, &runner, &groups, &reference, &mut timer)?);
    }
    timer.finish();
    let mut profile = combine_passes(&all);
    profile.method.elapsed_s = (timer.elapsed_s() * 1e3).round() / 1e3;
    profile.check().map_err(|reason| ProfileError::Incomplete { file: "<measured>".into(), reason })?;
    Ok(profile)
}

/// The profile's reference model: the base model itself, exported at `quant` to a GGUF file and loaded from it
/// as a user's model is, when all its blocks have the largest KV-head count and FFN width (SmolLM2); else
/// `n_layers` blocks at the largest shape, built in memory (a heterogeneous base such as a deci model).
///
/// Why the file: the same weights built into one heap buffer by [`ModelBuilder`] decoded 4.5% slower than
/// the exported, memory-mapped file (SmolLM2 Q8_0, 1 thread, context 256: 19.87 vs 19.00 ms/token, medians
/// of 70 decodes, 2026-12-07; the KV-cache size made no difference), which biased every prediction for the
/// exported sub-networks the search picks and `--validate` times (docs/PERFORMANCE.md, "Device profiles").
///
/// The 4.5% was measured on the CPU engine; on wgpu the weights are uploaded to the device either way.
///
/// Errors: [`ProfileError::Io`] (the temporary folder), [`ProfileError::Subnet`] (export),
/// [`ProfileError::Invalid`] (no base block holds the largest shape), engine and quantization errors.
fn reference_model(base: &GgufFile, b: &ModelBuilder, quant: &str, n_ctx: usize, n_batch: usize) -> Result<Model, ProfileError> {
    let c = &b.config;
    let max_kv = c.n_kv_heads.iter().copied().max().unwrap_or(0);
    let max_ffn = c.ffn.iter().copied().max().unwrap_or(0);
    if (0..c.n_layers).all(|l| c.n_kv_heads[l] == max_kv && c.ffn[l] == max_ffn) {
        let q: ExportQuant = quant.parse().map_err(ProfileError::Invalid)?;
        return ExportDir::new("profile")?.load(base, &c.full_subnet(), q, &Provenance::for_base(base));
    }
    let holds = |l: usize| c.n_kv_heads[l] >= max_kv && c.ffn[l] >= max_ffn;
    let full: Vec<BlockSpec> = blocks_holding(c, &holds, c.n_layers, "the largest KV-head count and FFN width")?
        .into_iter()
        .map(|l| BlockSpec { base_layer: l, kv_heads: max_kv, ffn: max_ffn })
        .collect();
    b.build(&full, None, n_ctx.max(n_batch))
}

/// `n` base block indices whose shape holds a part (`pred`), cycling through them in order: the blocks a part
/// or reference model takes its weights from. Errors: [`ProfileError::Invalid`] "no base block holds `what`".
fn blocks_holding(c: &ModelConfig, pred: &dyn Fn(usize) -> bool, n: usize, what: &str) -> Result<Vec<usize>, ProfileError> {
    let ok: Vec<usize> = (0..c.n_layers).filter(|&l| pred(l)).collect();
    if ok.is_empty() {
        return Err(ProfileError::Invalid(format!("no base block holds {what}")));
    }
    Ok((0..n).map(|i| ok[i % ok.len()]).collect())
}

/// The CPU's direct timings on full-size tensors: (output head, final norm, prefill embedding per length,
/// decode embedding).
fn direct_timings(b: &ModelBuilder, o: &ProfileOptions, threads: usize, timer: &mut Timer) -> Result<(Stat, Stat, Vec<Stat>, Stat), ProfileError> {
    let c = &b.config;
    let full = b.build(&[BlockSpec { base_layer: 0, kv_heads: 0, ffn: 0 }], None, 1)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| ProfileError::Invalid(format!("thread pool: {e}")))?;
    let d = c.d_model;
    let x: Vec<f32> = (0..d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
    let mut logits = vec![0f32; c.n_vocab];
    let head = full.mat(&full.output);
    let output_head = timer.measure("output head", || {
        let t = Instant::now();
        pool.install(|| dot::matmul(&head, &x, 1, &mut logits, dot::KernelPath::Best));
        Ok(ms(t))
    })?;
    let mut hn = vec![0f32; d];
    let final_norm = timer.measure("final norm", || {
        let t = Instant::now();
        ops::rmsnorm(&mut hn, &x, &full.output_norm, c.rms_eps);
        Ok(ms(t))
    })?;
    let emb = full.mat(&full.tok_embd);
    let toks = tokens(*o.lengths.last().unwrap(), c.n_vocab);
    let mut rows = vec![0f32; toks.len() * d];
    let mut embedding_at = |n: usize, timer: &mut Timer| {
        timer.measure(&format!("embedding n {n}"), || {
            let t = Instant::now();
            for (tok, row) in toks[..n].iter().zip(rows.chunks_exact_mut(d)) {
                emb.dequantize_row(*tok as usize, row);
            }
            Ok(ms(t))
        })
    };
    let prefill_embedding: Vec<Stat> = o.lengths.iter().map(|&n| embedding_at(n, &mut *timer)).collect::<Result<_, _>>()?;
    let decode_embedding = if o.lengths[0] == 1 { prefill_embedding[0] } else { embedding_at(1, &mut *timer)? };
    Ok((output_head, final_norm, prefill_embedding, decode_embedding))
}

/// One pass over every entry of the profile's tables (see [`profile_model`]).
fn measure_pass(
    base: &GgufFile,
    o: &ProfileOptions,
    b: &ModelBuilder,
    runner: &Runner,
    groups: &[usize],
    reference: &Model,
    timer: &mut Timer,
) -> Result<Profile, ProfileError> {
    let c = &b.config;
    // Part models take base blocks whose shape holds the part.
    let n_batch = SessionOptions::default().n_batch;
    let max_kv = c.n_kv_heads.iter().copied().max().unwrap_or(0);
    let max_ffn = c.ffn.iter().copied().max().unwrap_or(0);
    let with = |pred: &dyn Fn(usize) -> bool, n: usize| blocks_holding(c, pred, n, "the part");
    let widths = ffn_widths(max_ffn);
    let dl = if o.decode_layers == 0 { c.n_layers } else { o.decode_layers };

    let n_ctx = o.contexts.last().unwrap() + 1;
    // Reference: the base model end to end; calibrates the sum of the parts, see `LatencyModel`.
    let decode_reference = decode_at(reference, runner, &o.contexts, timer, "base model")?;
    let prefill_reference = prefill_at(reference, runner, &o.lengths, timer, "base model")?;

    // Baseline: one empty block, 32-token vocabulary.
    // Decode models keep the full output head: it streams through the last-level cache on every token, as
    // in a real model, so the blocks' weights are read from memory in steady state without a cache flush.
    let m0 = b.build(&[BlockSpec { base_layer: 0, kv_heads: 0, ffn: 0 }], DECODE_VOCAB, n_ctx)?;
    let base_dec = decode_at(&m0, runner, &o.contexts, timer, "baseline")?;
    drop(m0);
    // The same with a 32-token head: the difference is the decode cost of the full output head inside a
    // model (the direct timing below, a head alone in a loop, streams it differently).
    let m0 = b.build(&[BlockSpec { base_layer: 0, kv_heads: 0, ffn: 0 }], Some(PART_VOCAB), n_ctx.max(n_batch))?;
    let base_dec_small = decode_at(&m0, runner, &o.contexts, timer, "baseline, small head")?;
    let base_pre = prefill_at(&m0, runner, &o.lengths, timer, "baseline")?;
    drop(m0);
    let decode_head = base_dec[0].per_part(base_dec_small[0], 1);

    // Direct timings on full-size tensors: embedding lookup, final norm, output head (CPU). On a GPU they
    // run inside the forward's command buffer and cost less than a separate submission would: the embedding
    // and final norm stay in the overhead (0 here) and the prefill head (last token's logits) is the decode
    // head's differential figure.
    let (output_head, final_norm, prefill_embedding, decode_embedding) = match runner {
        Runner::Cpu { threads } => direct_timings(b, o, *threads, timer)?,
        #[cfg(feature = "wgpu")]
        Runner::Gpu(_) => {
            let zero = Stat { median_ms: 0.0, spread_ms: 0.0, runs: 0 };
            (decode_head, zero, vec![zero; o.lengths.len()], zero)
        }
    };
    let sub = |a: Stat, b: f64| Stat { median_ms: super::round_ns((a.median_ms - b).max(0.0)), ..a };
    let decode_overhead: Vec<Stat> = base_dec
        .iter()
        .map(|s| sub(*s, decode_embedding.median_ms + final_norm.median_ms + decode_head.median_ms))
        .collect();
    let prefill_overhead: Vec<Stat> = base_pre
        .iter()
        .zip(&prefill_embedding)
        .map(|(s, e)| sub(*s, e.median_ms + final_norm.median_ms))
        .collect();

    // Attention parts at every KV-head count.
    let (mut dec_attn, mut pre_attn) = (Vec::new(), Vec::new());
    for k in 1..=max_kv {
        let spec = |n: usize| -> Result<Vec<BlockSpec>, ProfileError> {
            Ok(with(&|l| c.n_kv_heads[l] >= k, n)?.into_iter().map(|l| BlockSpec { base_layer: l, kv_heads: k, ffn: 0 }).collect())
        };
        let m = b.build(&spec(dl)?, DECODE_VOCAB, n_ctx)?;
        let t = decode_at(&m, runner, &o.contexts, timer, &format!("attention kv {k}"))?;
        drop(m);
        dec_attn.push(AttentionRow { kv_heads: k, ms: t.iter().zip(&base_dec).map(|(a, z)| a.per_part(*z, dl)).collect() });
        let m = b.build(&spec(o.prefill_layers)?, Some(PART_VOCAB), n_batch)?;
        let t = prefill_at(&m, runner, &o.lengths, timer, &format!("attention kv {k}"))?;
        pre_attn.push(AttentionRow { kv_heads: k, ms: t.iter().zip(&base_pre).map(|(a, z)| a.per_part(*z, o.prefill_layers)).collect() });
    }
    // FFN parts in steps of FFN_STEP.
    let (mut dec_ffn, mut pre_ffn) = (Vec::new(), Vec::new());
    for &w in &widths {
        let spec = |n: usize| -> Result<Vec<BlockSpec>, ProfileError> {
            Ok(with(&|l| c.ffn[l] >= w, n)?.into_iter().map(|l| BlockSpec { base_layer: l, kv_heads: 0, ffn: w }).collect())
        };
        let m = b.build(&spec(dl)?, DECODE_VOCAB, o.contexts[0] + 1)?;
        let t = decode_at(&m, runner, &o.contexts[..1], timer, &format!("ffn {w}"))?;
        drop(m);
        dec_ffn.push(FfnRow { width: w, ms: vec![t[0].per_part(base_dec[0], dl)] });
        let m = b.build(&spec(o.prefill_layers)?, Some(PART_VOCAB), n_batch)?;
        let t = prefill_at(&m, runner, &o.lengths, timer, &format!("ffn {w}"))?;
        pre_ffn.push(FfnRow { width: w, ms: t.iter().zip(&base_pre).map(|(a, z)| a.per_part(*z, o.prefill_layers)).collect() });
    }
    let profile = Profile {
        schema_version: SCHEMA_VERSION,
        runtime_version: RUNTIME_VERSION.to_string(),
        created_unix_s: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        device: DeviceFacts { adapter: runner.adapter(), ..DeviceFacts::detect() },
        backend: o.backend.clone(),
        threads: runner.threads(),
        quant: o.quant.to_ascii_lowercase(),
        weight_type: b.weight_type.name().to_string(),
        embedding_type: b.embedding_type.name().to_string(),
        head_type: b.head_type.name().to_string(),
        model: ModelFamily {
            family: "llama".into(),
            name: c.name.clone(),
            d_model: c.d_model,
            head_dim: c.head_dim,
            n_vocab: c.n_vocab,
            gqa_group: groups[0],
            n_layers: c.n_layers,
            max_kv_heads: max_kv,
            max_ffn,
            tied_embeddings: c.tied_embeddings,
        },
        method: Method {
            warmup: o.warmup,
            min_runs: o.min_runs,
            max_runs: o.max_runs,
            decode_layers: dl,
            prefill_layers: o.prefill_layers,
            cache_flush_bytes: o.cache_flush_bytes,
            passes: 1,
            budget_s: o.budget_s,
            elapsed_s: (timer.elapsed_s() * 1e3).round() / 1e3,
            weights: format!(
                "{}: blocks dequantized, sliced (first KV groups / FFN neurons) and quantized to {}",
                base.name(),
                b.weight_type.name()
            ),
        },
        decode: DecodeTables {
            contexts: o.contexts.clone(),
            overhead: decode_overhead,
            embedding: decode_embedding,
            final_norm,
            output_head: decode_head,
            attention: dec_attn,
            ffn: dec_ffn,
            reference: decode_reference,
        },
        prefill: PrefillTables {
            lengths: o.lengths.clone(),
            overhead: prefill_overhead,
            embedding: prefill_embedding,
            final_norm,
            output_head,
            attention: pre_attn,
            ffn: pre_ffn,
            reference: prefill_reference,
        },
        validation: None,
    };
    Ok(profile)
}

/// Per entry: the median of the passes' medians, the spread (IQR) of those medians, and all runs.
fn combine(stats: &[Stat]) -> Stat {
    let medians: Vec<f64> = stats.iter().map(|s| s.median_ms).collect();
    Stat { runs: stats.iter().map(|s| s.runs).sum(), ..Stat::from_samples(&medians) }
}

/// Every [`Stat`] of a profile's tables, in one fixed order (the same for all profiles of one layout).
fn stats_mut(p: &mut Profile) -> Vec<&mut Stat> {
    let (d, f) = (&mut p.decode, &mut p.prefill);
    let mut v: Vec<&mut Stat> = vec![&mut d.embedding, &mut d.final_norm, &mut d.output_head, &mut f.final_norm, &mut f.output_head];
    v.extend(d.overhead.iter_mut().chain(d.reference.iter_mut()));
    v.extend(d.attention.iter_mut().flat_map(|r| r.ms.iter_mut()));
    v.extend(d.ffn.iter_mut().flat_map(|r| r.ms.iter_mut()));
    v.extend(f.overhead.iter_mut().chain(f.embedding.iter_mut()).chain(f.reference.iter_mut()));
    v.extend(f.attention.iter_mut().flat_map(|r| r.ms.iter_mut()));
    v.extend(f.ffn.iter_mut().flat_map(|r| r.ms.iter_mut()));
    v
}

/// Merge the passes of [`profile_model`] entry by entry with [`combine`] (all passes share one layout).
fn combine_passes(all: &[Profile]) -> Profile {
    let cols: Vec<Vec<Stat>> = all.iter().map(|p| stats_mut(&mut p.clone()).into_iter().map(|s| *s).collect()).collect();
    let mut out = all[0].clone();
    for (i, slot) in stats_mut(&mut out).into_iter().enumerate() {
        *slot = combine(&cols.iter().map(|c| c[i]).collect::<Vec<_>>());
    }
    out.method.passes = all.len();
    out
}
