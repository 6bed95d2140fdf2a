//! `llamanas`: the host tool of the LLaMA-NAS toolkit (import, finetune, search, export, eval).
//!
//! The stages are built issue by issue; a stage that is not there yet says so and exits non-zero.

use llamanas::{data, eval, export};

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{ArgGroup, Parser, Subcommand};
use device_runtime::subnet::ExportQuant;

#[derive(Parser)]
#[command(name = "llamanas", version, about = "Shrink LLaMA-family models with weight-sharing NAS (LLaMA-NAS)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Import a GGUF model as a super-network (not yet implemented).
    Import,
    /// InstaTune super-network fine-tuning (not yet implemented).
    Finetune,
    /// LINAS multi-objective search (not yet implemented).
    Search,
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
        /// Documents per task: a fixed-seed subset (docs/EVAL.md); default all.
        #[arg(long)]
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
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let name = match cli.cmd {
        Cmd::Import => "import",
        Cmd::Finetune => "finetune",
        Cmd::Search => "search",
        Cmd::Export { input, subnet, pareto, pick, quant, out, json } => {
            let source = match (subnet, pareto, pick) {
                (Some(c), _, _) => export::Source::Config(c),
                (None, Some(path), Some(pick)) => export::Source::Pareto { path, pick },
                _ => bail!("export: give --subnet CONFIG.json or --pareto PARETO.json --pick ID|all"),
            };
            export::run(&export::ExportArgs { input, source, quant, out, json })?;
            return Ok(());
        }
        Cmd::Eval { input, subnet, tasks, limit, seed, threads, quant, json, ppl, ppl_ctx, ppl_chunks } => {
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
            })?;
            return Ok(());
        }
    };
    bail!("llamanas {name}: this stage is not implemented yet")
}
