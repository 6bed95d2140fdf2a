//! InstaTune super-network fine-tuning (Sridhar et al. 2023, "InstaTune: Instantaneous Neural Architecture
//! Search During Fine-Tuning"), in the modified form of LLaMA-NAS (Sarah et al. 2024, sec. 3): the pre-trained
//! model is fine-tuned once as a super-network, each step training the full network and sampled sub-networks
//! of the search space on the same batch with their gradients summed, so that all sub-networks work.
//!
//! - [`data`]: Alpaca JSON rendered with the chat template (loss on response tokens) or packed plain text; a
//!   held-out split; a repeatable batch order.
//! - [`sample`]: SplitMix64 streams, warm-up + cosine learning rate, the sub-networks of a step (sandwich rule
//!   or the LLaMA-NAS preset).
//! - [`train`]: one optimizer step in burn (losses, distillation, global-norm clipping, AdamW).
//! - [`checkpoint`]: atomic checkpoints and `--resume`.
//! - [`toy`]: a tiny elastic model built in code, for tests.
//!
//! The run itself is [`run_training`]; the `llamanas finetune` command wires it to the burn super-network.
//! Output folder layout: docs/FINETUNE.md.

pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod sample;
pub mod toy;
pub mod train;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use device_runtime::arch::SubnetConfig;
use device_runtime::gguf::GgufFile;
use serde::{Deserialize, Serialize};

use crate::space::SearchSpace;
use checkpoint::{Checkpoint, TrainState};
use data::{Batch, BatchOrder, Example};
use sample::{SubnetPlan, learning_rate};
use train::{ElasticLm, StepConfig, adamw, renumber_params, train_step};

/// Errors of a fine-tuning run.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    /// A file or folder cannot be read or written.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The path.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Invalid arguments or inconsistent inputs.
    #[error("{0}")]
    Invalid(String),
    /// A checkpoint cannot be used (missing file, other configuration, unreadable state).
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Writing the super-network GGUF failed.
    #[error("{path}: {source}")]
    Gguf {
        /// The file.
        path: String,
        /// The GGUF error.
        source: device_runtime::gguf::GgufError,
    },
}

pub(crate) fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> FinetuneError {
    let path = path.display().to_string();
    move |source| FinetuneError::Io { path, op, source }
}

/// The hyper-parameters of a run. Everything but the run-control fields (`steps`, `save_every`, `resume`,
/// `max_steps_this_run`, `progress`) must match when resuming.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps of the whole run.
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine decay.
    pub min_lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// Global gradient-norm clipping threshold (None: off).
    pub clip_norm: Option<f32>,
    /// Which sub-networks each step trains.
    pub plan: SubnetPlan,
    /// In-place distillation weight (0: off).
    pub distill_weight: f32,
    /// Seed of the batch order and sub-network sampling.
    pub seed: u64,
    /// Save a checkpoint every this many steps (0: only at the end / at `max_steps_this_run`).
    pub save_every: u64,
    /// Stop after this many steps in this process (checkpointing first), to be resumed later.
    pub max_steps_this_run: Option<u64>,
}

impl TrainConfig {
    /// The fields that define the training trajectory (run-control fields cleared), compared on resume.
    fn trajectory(&self) -> TrainConfig {
        TrainConfig { steps: 0, save_every: 0, max_steps_this_run: None, ..self.clone() }
    }
}

/// Everything a run reads besides the model.
pub struct TrainInputs<'a> {
    /// The input super-network GGUF: metadata (and any tensor the model does not produce) of every written
    /// GGUF come from it.
    pub template: &'a GgufFile,
    /// The input `supernet.json`, if any (copied to the output with a `finetune` note).
    pub supernet_json: Option<serde_json::Value>,
    /// The search space the sub-networks are drawn from.
    pub space: SearchSpace,
    /// Training examples.
    pub train: &'a [Example],
    /// Padding token id.
    pub pad: u32,
    /// A note on the data (file, split) recorded in the output.
    pub data_note: serde_json::Value,
}

/// Result of [`run_training`].
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Steps completed in total (including resumed ones).
    pub steps_done: u64,
    /// Whether the run reached `steps` (and wrote the final super-network).
    pub finished: bool,
    /// Mean losses (nats/token) of the last step, per planned sub-network.
    pub last_losses: Vec<f64>,
    /// Training throughput of this process: tokens read (all sub-networks) per second.
    pub tokens_per_s: f64,
}

/// One line of the JSONL metrics log (`finetune.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogLine {
    /// 1-based step number (steps completed).
    pub step: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Ids of the sub-networks trained ([`SubnetConfig::id`]), the largest first.
    pub subnets: Vec<String>,
    /// Mean cross-entropy (nats/token) per sub-network.
    pub losses: Vec<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Loss target tokens of the step.
    pub target_tokens: usize,
    /// Tokens read by forward passes (all sub-networks).
    pub tokens: usize,
    /// Seconds the step took.
    pub seconds: f64,
}

/// Fine-tunes the model `init` builds as a super-network and writes `out` (a super-network folder: `supernet.gguf` F32 and
/// `supernet.json`, plus `finetune.jsonl` and `checkpoints/`).
///
/// With `resume` and a checkpoint present, `init` is not called and the run continues from `out/checkpoints/latest.json` (model via `load`, optimizer state, step),
/// after checking that the configuration matches; a run killed at any time loses no finished step that was
/// checkpointed, and the resumed trajectory equals an uninterrupted one (batches and sub-networks are a
/// function of `(seed, step)`).
///
/// Errors: [`FinetuneError`] for I/O, invalid configuration and unusable checkpoints.
pub fn run_training<M: ElasticLm>(
    init: impl FnOnce() -> Result<M, String>,
    load: &dyn Fn(&Path, &Device) -> Result<M, String>,
    inputs: &TrainInputs<'_>,
    cfg: &TrainConfig,
    resume: bool,
    out: &Path,
    device: &Device,
    progress: bool,
) -> Result<TrainSummary, FinetuneError> {
    if cfg.steps == 0 || cfg.batch == 0 || cfg.grad_accum == 0 {
        return Err(FinetuneError::Invalid("--steps, --batch and --grad-accum must be positive".into()));
    }
    if inputs.train.is_empty() {
        return Err(FinetuneError::Invalid("no training examples".into()));
    }
    if !(0.0..1.0).contains(&cfg.distill_weight) {
        return Err(FinetuneError::Invalid(format!("--distill-weight {} must be in [0, 1)", cfg.distill_weight)));
    }
    std::fs::create_dir_all(out).map_err(io_err(out, "create folder"))?;
    let ckpt = Checkpoint::new(out);
    let mut optim = adamw(cfg.weight_decay);
    let mut start = 0u64;
    let latest = if resume { ckpt.latest()? } else { None };
    let mut model = if let Some(state) = latest {
        if state.config.trajectory() != cfg.trajectory() {
            return Err(FinetuneError::Checkpoint {
                path: ckpt.dir().display().to_string(),
                reason: format!(
                    "was written with another configuration: {} (this run: {})",
                    serde_json::to_string(&state.config.trajectory()).unwrap_or_default(),
                    serde_json::to_string(&cfg.trajectory()).unwrap_or_default()
                ),
            });
        }
        let (m, o) = ckpt.load(&state, load, device)?;
        optim = o;
        start = state.step;
        checkpoint::truncate_log(&out.join("finetune.jsonl"), start)?;
        renumber_params(m)
    } else {
        ckpt.clear()?;
        let log = out.join("finetune.jsonl");
        if log.exists() {
            std::fs::remove_file(&log).map_err(io_err(&log, "remove old log"))?;
        }
        renumber_params(init().map_err(FinetuneError::Invalid)?)
    };

    let order = BatchOrder::new(inputs.train.len(), cfg.seed);
    let step_cfg = StepConfig { distill_weight: cfg.distill_weight, clip_norm: cfg.clip_norm };
    let warmup = cfg.warmup.min(cfg.steps);
    let stop = cfg.max_steps_this_run.map_or(cfg.steps, |m| (start + m).min(cfg.steps));
    let log_path = out.join("finetune.jsonl");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err(&log_path, "open log"))?;
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(cfg.steps);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_position(start);
        b.reset_eta();
        b
    });
    let t_run = Instant::now();
    let mut tokens_run = 0usize;
    let mut last_losses = Vec::new();
    let mut step = start;
    while step < stop {
        let t0 = Instant::now();
        let micro: Vec<Batch> = (0..cfg.grad_accum as u64)
            .map(|m| {
                let idx = order.micro_batch(step * cfg.grad_accum as u64 + m, cfg.batch);
                let ex: Vec<&Example> = idx.iter().map(|&i| &inputs.train[i]).collect();
                Batch::from_examples(&ex, inputs.pad)
            })
            .collect();
        let subnets: Vec<SubnetConfig> = cfg.plan.subnets(&inputs.space, cfg.seed, step);
        let lr = learning_rate(step, cfg.steps, warmup, cfg.lr, cfg.min_lr);
        let (m, stats) = train_step(model, &mut optim, &micro, &subnets, lr, &step_cfg, device);
        model = m;
        step += 1;
        let secs = t0.elapsed().as_secs_f64();
        tokens_run += stats.tokens_processed;
        let line = LogLine {
            step,
            lr,
            subnets: subnets.iter().map(|s| s.id()).collect(),
            losses: stats.losses.clone(),
            grad_norm: stats.grad_norm,
            target_tokens: stats.target_tokens,
            tokens: stats.tokens_processed,
            seconds: secs,
        };
        let json = serde_json::to_string(&line).map_err(|e| FinetuneError::Invalid(e.to_string()))?;
        writeln!(log, "{json}").and_then(|_| log.flush()).map_err(io_err(&log_path, "write log"))?;
        last_losses = stats.losses;
        if let Some(b) = &bar {
            let tps = tokens_run as f64 / t_run.elapsed().as_secs_f64().max(1e-9);
            let losses: Vec<String> = last_losses.iter().map(|l| format!("{l:.3}")).collect();
            b.set_message(format!("loss {} | {tps:.0} tok/s", losses.join(" ")));
            b.set_position(step);
        }
        let at_save = cfg.save_every > 0 && step % cfg.save_every == 0;
        if at_save || step == stop {
            ckpt.save(
                &model,
                &optim,
                inputs.template,
                &TrainState { step, config: cfg.clone() },
            )?;
        }
    }
    if let Some(b) = &bar {
        b.finish();
    }
    let finished = step >= cfg.steps;
    if finished {
        write_supernet(&model, inputs, cfg, out)?;
    }
    Ok(TrainSummary {
        steps_done: step,
        finished,
        last_losses,
        tokens_per_s: tokens_run as f64 / t_run.elapsed().as_secs_f64().max(1e-9),
    })
}

/// Writes `out/supernet.gguf` (the template's metadata and the model's weights, F32) and `out/supernet.json`
/// (the input's, with a `finetune` note added: configuration, data, date), both atomically.
pub fn write_supernet<M: ElasticLm>(
    model: &M,
    inputs: &TrainInputs<'_>,
    cfg: &TrainConfig,
    out: &Path,
) -> Result<(), FinetuneError> {
    let gguf = out.join("supernet.gguf");
    checkpoint::write_gguf(model, inputs.template, &gguf)?;
    let mut json = inputs.supernet_json.clone().unwrap_or_else(|| serde_json::json!({}));
    let note = serde_json::json!({
        "method": "InstaTune (LLaMA-NAS modified form when plan = full + 1 random, no distillation)",
        "config": cfg,
        "data": inputs.data_note,
        "finished_unix_s": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    });
    if let Some(obj) = json.as_object_mut() {
        obj.insert("finetune".into(), note);
    }
    let text = serde_json::to_string_pretty(&json).map_err(|e| FinetuneError::Invalid(e.to_string()))?;
    checkpoint::write_atomic(&out.join("supernet.json"), text.as_bytes())
}

/// The GGUF of a super-network argument: `DIR/supernet.gguf` for a folder, else the file itself.
pub fn supernet_gguf_path(input: &Path) -> PathBuf {
    if input.is_dir() { input.join("supernet.gguf") } else { input.to_path_buf() }
}

#[cfg(test)]
mod tests;
