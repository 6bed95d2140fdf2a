//! `llamanas finetune`: arguments and the wiring of data, search space and model into [`super::run_training`].

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use device_runtime::arch::ModelConfig;
use device_runtime::gguf::GgufFile;
use device_runtime::tokenizer::Tokenizer;

use super::data::{self, DataSource};
use super::sample::SubnetPlan;
use super::train::ElasticLm;
use crate::elastic::DeviceName;
use super::{FinetuneError, TrainConfig, TrainInputs, TrainSummary, run_training, supernet_gguf_path};
use crate::space::SearchSpace;

/// Sub-network plan presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The sandwich rule: largest + smallest + `--random-subnets` random sub-networks, distillation as given.
    Sandwich,
    /// LLaMA-NAS's modified InstaTune: the full network + one random sub-network, no distillation
    /// (overrides `--random-subnets` and `--distill-weight`).
    LlamaNas,
}

/// Arguments of `llamanas finetune`.
#[derive(Clone, Debug, clap::Args)]
pub struct FinetuneArgs {
    /// The super-network: a folder holding `supernet.gguf` (and `supernet.json`), or a GGUF file.
    pub supernet: PathBuf,
    /// Training data: Alpaca JSON (`.json`: instruction/input/output, rendered with the model's chat template,
    /// loss on the answer) or a plain text file (continued pre-training, packed into --seq-len windows).
    #[arg(long)]
    pub data: PathBuf,
    /// Output super-network folder (supernet.gguf F32 + supernet.json, finetune.jsonl, checkpoints/).
    #[arg(long)]
    pub out: PathBuf,
    /// Optimizer steps of the whole run.
    #[arg(long)]
    pub steps: u64,
    /// Maximum tokens per sequence (longer Alpaca items are cut).
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Which sub-networks each step trains.
    #[arg(long, value_enum, default_value_t = Preset::Sandwich)]
    pub preset: Preset,
    /// Random sub-networks per step (sandwich preset).
    #[arg(long, default_value_t = 1)]
    pub random_subnets: usize,
    /// In-place distillation weight towards the full network's distribution (sandwich preset; 0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub distill_weight: f32,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    /// Final learning rate (cosine decay floor); default lr / 10.
    #[arg(long)]
    pub min_lr: Option<f64>,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Global gradient-norm clipping (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    /// Seed of batch order and sub-network sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of the data held out (the last items / windows), never trained on.
    #[arg(long, default_value_t = 0.1)]
    pub held_out: f64,
    /// Checkpoint every this many steps (0 = only at the end).
    #[arg(long, default_value_t = 50)]
    pub save_every: u64,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Stop (after checkpointing) when this process has done this many steps; resume later with --resume.
    #[arg(long)]
    pub max_steps_this_run: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Device to train on: `cpu` (burn's flex backend) or `wgpu` (a GPU, or Mesa's llvmpipe on a machine
    /// without one; needs a build with `--features wgpu`). Checkpoints and outputs are the same either way.
    #[arg(long, value_enum, default_value_t = DeviceName::Cpu)]
    pub device: DeviceName,
}

impl FinetuneArgs {
    /// The training configuration these arguments describe.
    pub fn train_config(&self) -> TrainConfig {
        let (plan, distill) = match self.preset {
            Preset::Sandwich => (SubnetPlan::sandwich(self.random_subnets), self.distill_weight),
            Preset::LlamaNas => (SubnetPlan::llama_nas(), 0.0),
        };
        TrainConfig {
            steps: self.steps,
            batch: self.batch,
            grad_accum: self.grad_accum,
            lr: self.lr,
            min_lr: self.min_lr.unwrap_or(self.lr / 10.0),
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            clip_norm: (self.clip > 0.0).then_some(self.clip),
            plan,
            distill_weight: distill,
            seed: self.seed,
            save_every: self.save_every,
            max_steps_this_run: self.max_steps_this_run,
        }
    }
}

/// The search space of a super-network: the `search_space` of the folder's `supernet.json`, read and checked
/// with [`crate::store::SupernetMeta::read`] (schema version, neuron orders, space within the base model),
/// or the default space of the model ([`SearchSpace::default_for`]) for a bare GGUF file or a folder without
/// one. Errors: [`FinetuneError::Invalid`] naming the file and the problem.
pub fn search_space(supernet: &Path, m: &ModelConfig) -> Result<SearchSpace, FinetuneError> {
    let p = supernet.join("supernet.json");
    if supernet.is_dir() && p.exists() {
        let meta = crate::store::SupernetMeta::read(&p).map_err(|e| FinetuneError::Invalid(e.to_string()))?;
        return Ok(meta.search_space);
    }
    Ok(SearchSpace::default_for(m))
}

/// Reads `DIR/supernet.json` when the super-network is a folder that has one.
pub fn read_supernet_json(input: &Path) -> Result<Option<serde_json::Value>, FinetuneError> {
    let p = input.join("supernet.json");
    if !input.is_dir() || !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(super::io_err(&p, "read"))?;
    serde_json::from_str(&text).map(Some).map_err(|e| FinetuneError::Invalid(format!("{}: {e}", p.display())))
}

/// Runs `llamanas finetune` with the model type `M`: `load` builds it from a super-network GGUF on a device.
pub fn run<M: ElasticLm>(
    args: &FinetuneArgs,
    load: &dyn Fn(&Path, &Device) -> Result<M, String>,
    device: &Device,
) -> anyhow::Result<TrainSummary> {
    use anyhow::Context;
    let gguf_path = supernet_gguf_path(&args.supernet);
    if let (Ok(a), Ok(b)) = (args.out.canonicalize(), args.supernet.canonicalize())
        && (a == b || gguf_path.parent().is_some_and(|p| p.canonicalize().is_ok_and(|p| p == a)))
    {
        anyhow::bail!("--out {} is the input super-network's folder: choose a new folder", args.out.display());
    }
    let template = GgufFile::open(&gguf_path).with_context(|| format!("opening {}", gguf_path.display()))?;
    let mcfg = ModelConfig::from_gguf(&template).with_context(|| format!("reading {}", gguf_path.display()))?;
    let tok = Tokenizer::from_gguf(&template).with_context(|| format!("tokenizer of {}", gguf_path.display()))?;
    let json = read_supernet_json(&args.supernet)?;
    let space = search_space(&args.supernet, &mcfg)?;
    let src = DataSource::from_path(&args.data);
    let ds = data::load(&src, &tok, args.seq_len, args.held_out)?;
    let pad = tok.metadata().pad.or(tok.eos()).unwrap_or(0);
    let data_note = serde_json::json!({
        "file": args.data.display().to_string(),
        "kind": match src { DataSource::Alpaca(_) => "alpaca", DataSource::Text(_) => "text" },
        "seq_len": args.seq_len,
        "train_examples": ds.train.len(),
        "held_out_examples": ds.held_out.len(),
        "held_out_rule": format!("the last {} of the items/windows, in file order", args.held_out),
    });
    if !args.quiet {
        eprintln!(
            "finetune: {} training examples ({} held out, {} skipped), {} target tokens; search space of {} layers",
            ds.train.len(),
            ds.held_out.len(),
            ds.skipped,
            ds.train.iter().map(|e| e.n_targets()).sum::<usize>(),
            space.n_layers
        );
    }
    let init = || load(&gguf_path, device).map_err(|e| format!("loading {}: {e}", gguf_path.display()));
    let inputs = TrainInputs { template: &template, supernet_json: json, space, train: &ds.train, pad, data_note };
    let cfg = args.train_config();
    let s = run_training(init, load, &inputs, &cfg, args.resume, &args.out, device, !args.quiet)?;
    Ok(s)
}
