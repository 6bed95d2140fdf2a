//! `llamanas`: the host tool of the LLaMA-NAS toolkit (import, finetune, search, export, eval).
//!
//! The stages are built issue by issue; a stage that is not there yet says so and exits non-zero.

use llamanas::export;
use llamanas::finetune;

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
    /// InstaTune super-network fine-tuning: full network + sampled sub-networks per step (docs/FINETUNE.md).
    Finetune(Box<finetune::cli::FinetuneArgs>),
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
    /// Score a model or sub-network on benchmarks (not yet implemented).
    Eval,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let name = match cli.cmd {
        Cmd::Import => "import",
        Cmd::Finetune(a) => {
            let device = burn::tensor::Device::flex().autodiff();
            let s = finetune::cli::run(&a, &finetune::llama::LlamaSupernet::load, &device)?;
            eprintln!(
                "finetune: {} steps done{}; {:.1} tokens/s",
                s.steps_done,
                if s.finished { format!(", wrote {}", a.out.display()) } else { " (resume with --resume)".into() },
                s.tokens_per_s
            );
            return Ok(());
        }
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
        Cmd::Eval => "eval",
    };
    bail!("llamanas {name}: this stage is not implemented yet")
}
