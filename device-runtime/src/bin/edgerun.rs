//! `edgerun`: the device runtime's command-line tool (inspect, generate, perplexity, bench, profile,
//! devices).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[path = "edgerun/engine_cmds.rs"]
mod engine_cmds;
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
    /// Generate text from a prompt (greedy or sampled; --chat applies the model's chat template).
    Generate(engine_cmds::GenerateArgs),
    /// Perplexity of a text file, as llama-perplexity computes it.
    Perplexity(engine_cmds::PerplexityArgs),
    /// Prefill and decode speed, as llama-bench measures it.
    Bench(engine_cmds::BenchArgs),
    /// Measure this device's latency profile for sub-networks of a model (and validate the latency model).
    Profile(Box<profile_cmd::ProfileArgs>),
    /// List the compute devices this build can run on (the CPU; wgpu adapters with the `wgpu` feature), or find
    /// a committed profile measured on this machine (--find-profile).
    Devices(profile_cmd::DevicesArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Inspect { file, json } => inspect(&file, json),
        Cmd::Generate(a) => engine_cmds::generate(a),
        Cmd::Perplexity(a) => engine_cmds::perplexity_cmd(a),
        Cmd::Bench(a) => engine_cmds::bench(a),
        Cmd::Profile(a) => profile_cmd::run(*a),
        Cmd::Devices(a) => profile_cmd::devices(a),
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
