//! `edgerun`: the device runtime's command-line tool (inspect, generate, perplexity, bench, profile).

use anyhow::Result;
use clap::{Parser, Subcommand};

#[path = "edgerun/profile_cmd.rs"]
mod profile_cmd;

#[derive(Parser)]
#[command(name = "edgerun", version, about = "Run and inspect LLaMA-family GGUF models on the target device")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a GGUF file's architecture, hyper-parameters, tensors and tokenizer facts.
    Inspect {
        /// The GGUF file.
        file: std::path::PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure this device's latency profile for sub-networks of a model (and validate the latency model).
    Profile(Box<profile_cmd::ProfileArgs>),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Inspect { file, json } => {
            let _ = (file, json);
            anyhow::bail!("inspect: not implemented yet")
        }
        Cmd::Profile(a) => profile_cmd::run(*a),
    }
}
