//! `edgerun`: the device runtime's command-line tool (inspect, generate, perplexity, bench, profile).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Inspect { file, json } => inspect(&file, json),
    }
}

/// `edgerun inspect FILE [--json]`.
fn inspect(file: &std::path::Path, json: bool) -> Result<()> {
    let f = device_runtime::gguf::GgufFile::open(file).context("inspect: cannot read the GGUF file")?;
    let report = device_runtime::inspect::Report::new(&f);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
