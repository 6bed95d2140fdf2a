//! `llamanas`: the host tool of the LLaMA-NAS toolkit (import, finetune, search, export, eval).
//!
//! The stages are built issue by issue; a stage that is not there yet says so and exits non-zero.

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

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
    /// Export sub-networks as quantized GGUF (not yet implemented).
    Export,
    /// Score a model or sub-network on benchmarks (not yet implemented).
    Eval,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let name = match cli.cmd {
        Cmd::Import => "import",
        Cmd::Finetune => "finetune",
        Cmd::Search => "search",
        Cmd::Export => "export",
        Cmd::Eval => "eval",
    };
    bail!("llamanas {name}: this stage is not implemented yet")
}
