//! `llamanas`: the host tool of the LLaMA-NAS toolkit (import, calibrate, finetune, search, prune, export, eval).
//!
//! Each stage is a subcommand; its logic lives in the `llamanas` library module of the same name.

use llamanas::search::linas::{Algo, Objective, Settings};
use llamanas::search::run::{SearchArgs, run as run_search};
use llamanas::{data, eval, export, finetune};

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Parser, Subcommand};
use device_runtime::subnet::ExportQuant;

#[derive(Parser)]
#[command(name = "llamanas", version, about = "Shrink LLaMA-family models with weight-sharing NAS (LLaMA-NAS)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The calibration options of `import` and `calibrate`.
#[derive(clap::Args)]
struct CalibOpts {
    /// Calibration text files, comma-separated: .jsonl (one {"text": ...} per line), .json (an Alpaca list,
    /// rendered through the chat template) or plain text; the token budget is split evenly over them
    /// [default: $LLAMANAS_ASSETS/data/c4_demo.jsonl,$LLAMANAS_ASSETS/data/wiki_demo.txt].
    #[arg(long, value_name = "FILE[,FILE]", value_delimiter = ',')]
    calib: Vec<PathBuf>,
    /// Calibration tokens.
    #[arg(long, value_name = "N", default_value_t = llamanas::store::import::DEFAULT_CALIB_TOKENS)]
    calib_tokens: usize,
    /// Tokens per calibration sequence.
    #[arg(long, value_name = "N", default_value_t = llamanas::store::import::DEFAULT_SEQ_LEN)]
    seq_len: usize,
    /// Engine threads (0: all CPUs).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// Import a LLaMA-family GGUF as a super-network folder (supernet.gguf + supernet.json), with FFN neurons
    /// and KV groups reordered by importance on calibration text (docs/SUPERNET.md).
    Import {
        /// The base model (llama or deci GGUF, any tensor type the runtime dequantizes).
        model: PathBuf,
        /// The super-network folder to create.
        #[arg(long, value_name = "SUPERNET_DIR")]
        out: PathBuf,
        /// Type of the 2-D weights of supernet.gguf (1-D tensors are F32).
        #[arg(long, value_enum, default_value = "f32")]
        dtype: llamanas::store::WeightDtype,
        /// Keep the base order (no calibration; identity permutations).
        #[arg(long)]
        no_reorder: bool,
        #[command(flatten)]
        c: CalibOpts,
        /// Replace an existing super-network folder.
        #[arg(long)]
        force: bool,
        /// Search space to store in supernet.json (JSON, or TOML by the .toml extension; docs/SEARCH.md); fine-tuning
        /// samples from it and the search explores it [default: any half of the layers or more, FFN from 512 in
        /// steps of 256, KV heads from 1].
        #[arg(long, value_name = "FILE")]
        space: Option<PathBuf>,
        /// Do not write calib.gguf (the statistics reconstruction needs; 323 MB for SmolLM2-135M).
        #[arg(long)]
        no_calib_stats: bool,
        /// FFN neuron order: `importance` (Minitron activation x weight norm) or `obs` (greedy structured OBS
        /// with least-squares refit; docs/QUALITY.md compares them).
        #[arg(long, value_enum, default_value = "importance")]
        order: llamanas::store::import::NeuronOrder,
    },
    /// Measure the calibration statistics (calib.gguf) of a super-network folder's own weights, e.g. after
    /// fine-tuning: reconstruction needs statistics of the weights it refits (docs/SUPERNET.md).
    Calibrate {
        /// The super-network folder.
        dir: PathBuf,
        #[command(flatten)]
        c: CalibOpts,
    },
    /// Training-free pruning baselines at a target decode speed-up (ShortGPT layer dropping, uniform FFN
    /// width): writes a sub-network JSON for `export --subnet ... --any-subnet` and `eval --subnet`.
    Prune {
        /// The super-network folder.
        input: PathBuf,
        /// The baseline.
        #[arg(long, value_enum)]
        method: llamanas::prune::Method,
        /// Predicted decode speed-up to reach (e.g. 1.25).
        #[arg(long, value_name = "X")]
        target_speedup: f64,
        /// Device profile giving the latencies.
        #[arg(long, value_name = "PROFILE.json")]
        profile: PathBuf,
        /// Decode context (tokens in the KV cache) of the latency.
        #[arg(long, default_value_t = 512)]
        context: usize,
        /// uniform-width: KV heads of every layer (default: the base's).
        #[arg(long)]
        kv_heads: Option<usize>,
        /// The sub-network JSON to write.
        #[arg(long, value_name = "CONFIG.json")]
        out: PathBuf,
    },
    /// InstaTune super-network fine-tuning: full network + sampled sub-networks per step (docs/FINETUNE.md).
    Finetune(Box<finetune::cli::FinetuneArgs>),
    /// LINAS multi-objective search: accuracy (measured), decode latency (device profile), GGUF size (exact).
    Search(Box<SearchCli>),
    /// Export sub-networks as quantized GGUF files (sliced from the super-network's shared weights).
    #[command(group(ArgGroup::new("which").required(true).args(["subnet", "pareto"])))]
    Export {
        /// The super-network: a folder holding `supernet.gguf`, or a GGUF model file.
        input: PathBuf,
        /// A sub-network config JSON: {"layers":[...],"ffn":[...],"kv_heads":[...]}.
        #[arg(long, value_name = "CONFIG.json")]
        subnet: Option<PathBuf>,
        /// A search run's pareto.json (format: docs/EXPORT.md); use with --pick.
        #[arg(long, value_name = "PARETO.json", requires = "pick")]
        pareto: Option<PathBuf>,
        /// Which sub-network of --pareto: its id, or `all`.
        #[arg(long, value_name = "ID|all", requires = "pareto")]
        pick: Option<String>,
        /// Quantization: q8_0, q4_0, q4_1, f16 or f32.
        #[arg(long, default_value = "q8_0")]
        quant: ExportQuant,
        /// Output: a .gguf file (one sub-network) or a folder (files named <base>-<id>-<quant>.gguf).
        #[arg(long, value_name = "DIR_OR_FILE")]
        out: PathBuf,
        /// Print one JSON object per exported file.
        #[arg(long)]
        json: bool,
        /// Require reconstruction (an error without calibration statistics); by default sub-networks are
        /// reconstructed whenever the super-network folder has calib.gguf.
        #[arg(long, conflicts_with = "no_reconstruct")]
        reconstruct: bool,
        /// Slice only: no reconstruction.
        #[arg(long)]
        no_reconstruct: bool,
        /// Accept sub-networks outside the super-network's search space (e.g. `llamanas prune` baselines).
        #[arg(long)]
        any_subnet: bool,
        /// Overwrite output files that exist (without it, an existing file is an error and nothing is written).
        #[arg(long)]
        force: bool,
    },
    /// Score a model, super-network or sub-network on benchmarks (lm-eval log-likelihood multiple choice) and
    /// the perplexity of a text file (docs/EVAL.md).
    Eval {
        /// The super-network: a folder holding `supernet.gguf`, or a GGUF model file.
        input: PathBuf,
        /// A sub-network config JSON: {"layers":[...],"ffn":[...],"kv_heads":[...]} (default: the whole model).
        #[arg(long, value_name = "CONFIG.json")]
        subnet: Option<PathBuf>,
        /// Comma-separated tasks: arc_easy, arc_challenge, winogrande, hellaswag, piqa, boolq, openbookqa, sciq,
        /// copa, mmlu, mmlu_5shot.
        #[arg(long, default_value = "")]
        tasks: String,
        /// Documents per task: a fixed-seed subset (docs/EVAL.md), at least 1; default all.
        #[arg(long, value_parser = at_least_one)]
        limit: Option<usize>,
        /// Seed of the --limit subset.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Scoring threads (0: all logical CPUs).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Quantize the (sub-)network in memory first: q8_0, q4_0, q4_1, f16 or f32 (default: keep the file's).
        #[arg(long)]
        quant: Option<ExportQuant>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also compute the perplexity of this text file (llama-perplexity's method).
        #[arg(long, value_name = "FILE")]
        ppl: Option<PathBuf>,
        /// Perplexity chunk length in tokens.
        #[arg(long, default_value_t = 512)]
        ppl_ctx: usize,
        /// Perplexity chunks (0: all).
        #[arg(long, default_value_t = 0)]
        ppl_chunks: usize,
        /// Append each scored document's log-likelihoods to this JSONL file; run again with the same file to
        /// continue a stopped run where it ended (docs/EVAL.md).
        #[arg(long, value_name = "FILE.jsonl")]
        cache: Option<PathBuf>,
        /// Require reconstruction of --subnet (an error without calibration statistics); by default it is
        /// reconstructed whenever the super-network folder has calib.gguf.
        #[arg(long, conflicts_with = "no_reconstruct")]
        reconstruct: bool,
        /// Slice --subnet only: no reconstruction.
        #[arg(long)]
        no_reconstruct: bool,
    },
}

/// clap parser of counts that must be at least 1 (`--limit 0` would score nothing and report 0).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (leave the option out for the whole split)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Import { model, out, dtype, no_reorder, c, force, space, no_calib_stats, order } => {
            let CalibOpts { calib, calib_tokens, seq_len, threads } = c;
            use llamanas::store::import::{ImportOptions, run};
            let space = match space {
                Some(p) => Some(llamanas::space::SearchSpace::load(&p)?),
                None => None,
            };
            let opts = ImportOptions {
                base: model,
                out: out.clone(),
                dtype,
                reorder: !no_reorder,
                calib,
                calib_tokens,
                seq_len,
                threads,
                force,
                progress: true,
                space,
                stats: !no_calib_stats,
                order,
            };
            let t0 = std::time::Instant::now();
            let rep = run(&opts).with_context(|| format!("llamanas import to {}", out.display()))?;
            let m = &rep.meta;
            println!(
                "{}: super-network of {} ({} layers, {:.1} M params), weights {:?}, {:.1} MiB",
                out.display(),
                m.base.file,
                m.base.config.n_layers,
                m.base.config.total_params() as f64 / 1e6,
                m.weights.dtype,
                rep.gguf_bytes as f64 / (1024.0 * 1024.0)
            );
            match &m.calibration {
                Some(c) => println!(
                    "  calibration: {} tokens ({}, {}) in {:.1} s ({:.0} tokens/s); {}; statistics for reconstruction: {}",
                    c.tokens,
                    c.format,
                    c.source,
                    rep.calib_seconds,
                    rep.calib_tokens_per_s,
                    match order {
                        llamanas::store::import::NeuronOrder::Importance => "FFN neurons and KV groups ordered by importance",
                        llamanas::store::import::NeuronOrder::Obs => "FFN neurons in OBS order, KV groups by importance",
                    },
                    c.stats.as_deref().unwrap_or("none (--no-calib-stats)")
                ),
                None => println!("  base order kept (--no-reorder), no calibration"),
            }
            println!("  total {:.1} s", t0.elapsed().as_secs_f64());
            return Ok(());
        }
        Cmd::Calibrate { dir, c: CalibOpts { calib, calib_tokens, seq_len, threads } } => {
            let (tokens, secs) = llamanas::store::import::calibrate_folder(&dir, &calib, calib_tokens, seq_len, threads, true)
                .with_context(|| format!("llamanas calibrate {}", dir.display()))?;
            println!(
                "{}: calibration statistics of {} tokens in {secs:.1} s",
                dir.join(llamanas::store::calib::STATS_NAME).display(),
                tokens
            );
            return Ok(());
        }
        Cmd::Prune { input, method, target_speedup, profile, context, kv_heads, out } => {
            let args = llamanas::prune::PruneArgs { input, method, target_speedup, profile, context, kv_heads, out: out.clone() };
            let r = llamanas::prune::run(&args)?;
            println!(
                "{}: {:?} sub-network {} ({} layers, FFN {:?}, KV heads {:?}): predicted decode {:.3} -> {:.3} ms/token ({:.3}x)",
                out.display(),
                method,
                r.config.id(),
                r.config.layers.len(),
                r.config.ffn.iter().min().copied().unwrap_or(0)..=r.config.ffn.iter().max().copied().unwrap_or(0),
                r.config.kv_heads.iter().min().copied().unwrap_or(0)..=r.config.kv_heads.iter().max().copied().unwrap_or(0),
                r.base_ms,
                r.subnet_ms,
                r.base_ms / r.subnet_ms
            );
            return Ok(());
        }
        Cmd::Search(a) => {
            search_cmd(*a)?;
            return Ok(());
        }
        Cmd::Finetune(a) => {
            let dev = llamanas::elastic::host_device(a.device, true)
                .with_context(|| format!("llamanas finetune --device {}", a.device))?;
            if !a.quiet {
                eprintln!("finetune: device {}", dev.describe());
            }
            let s = finetune::cli::run(&a, &finetune::train::load_elastic, &dev.device)?;
            eprintln!(
                "finetune: {} steps done{}; {:.1} tokens/s",
                s.steps_done,
                if s.finished { format!(", wrote {}", a.out.display()) } else { " (resume with --resume)".into() },
                s.tokens_per_s
            );
            return Ok(());
        }
        Cmd::Export { input, subnet, pareto, pick, quant, out, json, reconstruct, no_reconstruct, any_subnet, force } => {
            let source = match (subnet, pareto, pick) {
                (Some(c), _, _) => export::Source::Config(c),
                (None, Some(path), Some(pick)) => export::Source::Pareto { path, pick },
                _ => bail!("export: give --subnet CONFIG.json or --pareto PARETO.json --pick ID|all"),
            };
            let reconstruct = llamanas::reconstruct::Mode::from_flags(reconstruct, no_reconstruct);
            export::run(&export::ExportArgs { input, source, quant, out, json, reconstruct, any_subnet, force })?;
            return Ok(());
        }
        Cmd::Eval { input, subnet, tasks, limit, seed, threads, quant, json, ppl, ppl_ctx, ppl_chunks, cache, reconstruct, no_reconstruct } => {
            let tasks = data::TaskSpec::parse_list(&tasks)?;
            eval::cli::run(&eval::cli::EvalArgs {
                input,
                subnet,
                tasks,
                limit,
                seed,
                threads,
                quant,
                json,
                ppl,
                ppl_ctx,
                ppl_chunks,
                assets: None,
                cache,
                reconstruct: llamanas::reconstruct::Mode::from_flags(reconstruct, no_reconstruct),
            })?;
            return Ok(());
        }
    }
}

/// Arguments of `llamanas search` (docs/SEARCH.md).
#[derive(clap::Args)]
struct SearchCli {
    /// The super-network folder (supernet.gguf [+ supernet.json]) or a GGUF model.
    input: PathBuf,
    /// Accuracy task: a benchmark (arc_easy, ...) or ppl:FILE (1/perplexity of a text, no benchmark data).
    #[arg(long, default_value = "arc_easy")]
    task: String,
    /// Items of the task (a fixed-seed subset), or chunks of the text for ppl:FILE; at least 1.
    #[arg(long, value_parser = at_least_one)]
    limit: Option<usize>,
    /// Device profile (profiles/<name>.json); its quantization is the export quantization.
    #[arg(long, value_name = "PROFILE.json")]
    profile: Option<PathBuf>,
    /// Export quantization for the size objective when no profile is given.
    #[arg(long)]
    quant: Option<ExportQuant>,
    /// Decode context length (tokens in the KV cache) of the latency objective.
    #[arg(long, default_value_t = 512)]
    context: usize,
    /// Two or three of accuracy, latency, size.
    #[arg(long, default_value = "accuracy,latency,size", value_delimiter = ',')]
    objectives: Vec<Objective>,
    /// Search algorithm.
    #[arg(long, value_enum, default_value = "linas")]
    algo: Algo,
    /// Budget of real evaluations.
    #[arg(long, default_value_t = 100)]
    evals: usize,
    /// Batch (population) size.
    #[arg(long, default_value_t = 20)]
    population: usize,
    /// Seed: the same seed gives the same run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Predictor-only evaluations per LINAS loop.
    #[arg(long, default_value_t = 5000)]
    inner_evals: usize,
    /// Sub-network configs (JSON, comma-separated) evaluated in the first batch next to the full network, e.g.
    /// the `llamanas prune` baselines: the search starts from them (each must lie in the space).
    #[arg(long, value_name = "CONFIG.json[,...]", value_delimiter = ',')]
    init: Vec<PathBuf>,
    /// Search space file (JSON or TOML); default: the super-network's, else the model's default.
    #[arg(long, value_name = "FILE")]
    space: Option<PathBuf>,
    /// Output folder (runs/<name>).
    #[arg(long)]
    out: PathBuf,
    /// Continue a killed run in --out (same settings), re-using every finished evaluation.
    #[arg(long)]
    resume: bool,
    /// Print the space size and how long the budget takes, then stop.
    #[arg(long)]
    dry_run: bool,
    /// Scoring threads (0: all logical CPUs).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Require reconstruction of the scored sub-networks (an error without calibration statistics); by default
    /// they are reconstructed whenever the super-network folder has calib.gguf.
    #[arg(long, conflicts_with = "no_reconstruct")]
    reconstruct: bool,
    /// Score sliced sub-networks without reconstruction.
    #[arg(long)]
    no_reconstruct: bool,
}

fn search_cmd(a: SearchCli) -> Result<()> {
    let initial = a
        .init
        .iter()
        .map(|p| llamanas::export::read_subnet_config(p).context("--init"))
        .collect::<Result<Vec<_>>>()?;
    let args = SearchArgs {
        input: a.input,
        task: a.task,
        limit: a.limit,
        profile: a.profile,
        quant: a.quant,
        context: a.context,
        settings: Settings {
            algo: a.algo,
            objectives: a.objectives,
            evals: a.evals,
            population: a.population,
            seed: a.seed,
            inner_evals: a.inner_evals,
            initial,
        },
        space: a.space,
        out: a.out,
        resume: a.resume,
        dry_run: a.dry_run,
        threads: a.threads,
        progress: !a.quiet,
        reconstruct: llamanas::reconstruct::Mode::from_flags(a.reconstruct, a.no_reconstruct),
    };
    run_search(&args)?;
    Ok(())
}
