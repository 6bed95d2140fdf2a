//! `llamanas eval`: score a model, a super-network or one of its sub-networks on benchmark tasks (a table or
//! JSON) and optionally the perplexity of a text file. Definitions: [`crate::eval`], docs/EVAL.md.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::engine::{Model, Session, SessionOptions, perplexity::perplexity};
use device_runtime::gguf::GgufFile;
use device_runtime::subnet::ExportQuant;
use device_runtime::tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::cache::{CACHE_VERSION, CacheKey, DocCache};
use super::{Scorer, TaskScore, subnet_model};
use crate::data::{self, TaskSpec};

/// Arguments of `llamanas eval`.
#[derive(Clone, Debug)]
pub struct EvalArgs {
    /// A super-network folder (holding `supernet.gguf`) or a GGUF model file.
    pub input: PathBuf,
    /// A sub-network config JSON; `None`: the whole model.
    pub subnet: Option<PathBuf>,
    /// Tasks (may be empty when only perplexity is asked).
    pub tasks: Vec<TaskSpec>,
    /// `--limit`: documents per task (seeded subset, [`data::subset`]).
    pub limit: Option<usize>,
    /// `--seed` of the subset.
    pub seed: u64,
    /// Scoring threads (0: all logical CPUs).
    pub threads: usize,
    /// Quantize the (sub-)network in memory first.
    pub quant: Option<ExportQuant>,
    /// Print JSON instead of a table.
    pub json: bool,
    /// Perplexity of this text file.
    pub ppl: Option<PathBuf>,
    /// Perplexity chunk length in tokens.
    pub ppl_ctx: usize,
    /// Perplexity chunks (0: all).
    pub ppl_chunks: usize,
    /// Assets folder (tasks' data); `None`: [`data::assets_dir`].
    pub assets: Option<PathBuf>,
    /// `--cache FILE`: per-document log-likelihoods, appended as scored; a rerun continues
    /// ([`super::cache`]).
    pub cache: Option<PathBuf>,
    /// Reconstruction of a `--subnet` ([`crate::reconstruct::Mode`]; only with a super-network that has
    /// calibration statistics).
    pub reconstruct: crate::reconstruct::Mode,
}

/// What `llamanas eval --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// The GGUF scored.
    pub model: String,
    /// The sub-network (canonical JSON form) or `None` for the whole model.
    pub subnet: Option<SubnetConfig>,
    /// Its id.
    pub subnet_id: Option<String>,
    /// In-memory quantization, if any.
    pub quant: Option<String>,
    /// Whether the sub-network was reconstructed (and how).
    pub reconstruction: Option<String>,
    /// `--limit` and `--seed`.
    pub limit: Option<usize>,
    /// Subset seed.
    pub seed: u64,
    /// Scoring threads.
    pub threads: usize,
    /// Per-task scores.
    pub tasks: Vec<TaskScore>,
    /// Perplexity, if asked.
    pub perplexity: Option<PplReport>,
}

/// Perplexity of a text file (llama-perplexity's method, [`device_runtime::engine::perplexity`]).
#[derive(Clone, Debug, Serialize)]
pub struct PplReport {
    /// The text file.
    pub file: String,
    /// Chunk length in tokens.
    pub n_ctx: usize,
    /// Chunks scored.
    pub chunks: usize,
    /// Tokens scored.
    pub tokens: usize,
    /// Perplexity.
    pub ppl: f64,
}

/// Run `llamanas eval`; prints the report and returns it.
pub fn run(args: &EvalArgs) -> Result<EvalReport> {
    ensure!(!args.tasks.is_empty() || args.ppl.is_some(), "eval: give --tasks and/or --ppl FILE");
    let path = crate::export::base_gguf(&args.input)?;
    let assets = args.assets.clone().unwrap_or_else(data::assets_dir);
    let scorer = Scorer::with_assets(&path, &assets, &args.tasks, args.limit, args.seed, args.threads)
        .with_context(|| format!("preparing the tasks for {}", path.display()))?;
    let cfg: Option<SubnetConfig> = match &args.subnet {
        Some(p) => Some(crate::export::read_subnet_config(p)?),
        None => None,
    };
    let mut reconstruction = None;
    let model = match (&cfg, args.quant) {
        (None, None) => Model::load(&path)?,
        (c, q) => {
            let base = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let full = ModelConfig::from_gguf(&base)?.full_subnet();
            let c = c.clone().unwrap_or(full);
            let q = match q {
                Some(q) => q,
                None => super::native_quant(&base)?,
            };
            let recon = crate::reconstruct::Reconstructor::for_mode(&path, args.reconstruct)?;
            if let Some(r) = &recon
                && c != ModelConfig::from_gguf(&base)?.full_subnet()
            {
                reconstruction = Some(r.method());
            }
            subnet_model(&base, &c, q, recon.as_ref()).with_context(|| format!("{}: building sub-network {}", path.display(), c.id()))?
        }
    };
    let cache = match &args.cache {
        Some(p) => {
            let key = CacheKey {
                llamanas_eval_cache: CACHE_VERSION,
                model: path.display().to_string(),
                model_bytes: std::fs::metadata(&path).with_context(|| format!("{}: cannot read", path.display()))?.len(),
                subnet: cfg.as_ref().map(|c| match &reconstruction {
                    Some(_) => format!("{}-reconstructed", c.id()),
                    None => c.id(),
                }),
                quant: args.quant.map(|q| q.to_string()),
                limit: args.limit,
                seed: args.seed,
            };
            let c = DocCache::open(p, &key)?;
            for t in scorer.tasks() {
                let n = c.count(t.spec.name());
                if n > 0 {
                    eprintln!("eval: {}: {n} of {} {} documents already scored, continuing", p.display(), t.docs.len(), t.spec.name());
                }
            }
            Some(c)
        }
        None => None,
    };
    let mut scores = Vec::new();
    for t in scorer.tasks() {
        let pb = ProgressBar::new(t.docs.len() as u64);
        pb.set_style(
            ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} docs {elapsed_precise} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(t.spec.name());
        let s = super::score_task_cached(&model, t, scorer.n_ctx(), scorer.threads(), cache.as_ref(), &|d| pb.set_position(d as u64))
            .with_context(|| format!("scoring {} on {}", path.display(), t.spec))?;
        pb.finish_and_clear();
        scores.push(s);
    }
    let perplexity = match &args.ppl {
        Some(f) => Some(run_ppl(&model, &path, f, args)?),
        None => None,
    };
    let report = EvalReport {
        model: path.display().to_string(),
        subnet_id: cfg.as_ref().map(|c| c.id()),
        subnet: cfg,
        quant: args.quant.map(|q| q.to_string()),
        reconstruction,
        limit: args.limit,
        seed: args.seed,
        threads: scorer.threads(),
        tasks: scores,
        perplexity,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(report)
}

fn run_ppl(model: &Model, path: &Path, file: &Path, args: &EvalArgs) -> Result<PplReport> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let gguf = GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    let tok = Tokenizer::from_gguf(&gguf).with_context(|| format!("{}: tokenizer", path.display()))?;
    let tokens = tok.encode(&text, true, false).with_context(|| format!("{}: tokenizing", file.display()))?;
    let bos = if tok.metadata().add_bos { tok.bos() } else { None };
    let mut s = Session::new(model, SessionOptions { n_ctx: args.ppl_ctx, threads: args.threads, ..Default::default() })?;
    let p = perplexity(&mut s, &tokens, args.ppl_ctx, bos, args.ppl_chunks, |_, _| {})
        .with_context(|| format!("perplexity of {}", file.display()))?;
    Ok(PplReport { file: file.display().to_string(), n_ctx: args.ppl_ctx, chunks: p.n_chunks, tokens: p.count, ppl: p.ppl })
}

fn print_table(r: &EvalReport) {
    println!("model: {}", r.model);
    if let Some(id) = &r.subnet_id {
        println!("sub-network: {id}");
    }
    if let Some(q) = &r.quant {
        println!("in-memory quantization: {q}");
    }
    if let Some(m) = &r.reconstruction {
        println!("reconstructed: {m}");
    }
    if !r.tasks.is_empty() {
        println!(
            "{:<14} {:>6} {:>16} {:>16} {:>16} {:>9} {:>8}",
            "task", "n", "acc %", "acc_norm %", "acc_bytes %", "tokens/s", "seconds"
        );
        for s in &r.tasks {
            let pct = |v: f64, e: f64| format!("{:.2} ± {:.2}", 100.0 * v, 100.0 * e);
            println!(
                "{:<14} {:>6} {:>16} {:>16} {:>16} {:>9.1} {:>8.1}",
                s.task,
                s.n,
                pct(s.acc, s.acc_stderr),
                pct(s.acc_norm, s.acc_norm_stderr),
                pct(s.acc_bytes, s.acc_bytes_stderr),
                s.tokens as f64 / s.seconds.max(1e-9),
                s.seconds
            );
            if s.resumed > 0 {
                println!("{:<14} {} of the {} documents came from the --cache file (tokens/s and seconds: the others)", "", s.resumed, s.n);
            }
        }
    }
    if let Some(p) = &r.perplexity {
        println!("perplexity of {}: {:.4} ({} chunks of {} tokens, {} tokens scored)", p.file, p.ppl, p.chunks, p.n_ctx, p.tokens);
    }
}
