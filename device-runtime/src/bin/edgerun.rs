//! `edgerun`: the device runtime's command-line tool (inspect, generate, tokenize, perplexity, bench, profile,
//! devices).

use anyhow::Result;
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
    /// Token ids and pieces of a text (as llama-tokenize): special tokens parsed, BOS where the vocabulary adds it.
    Tokenize(engine_cmds::TokenizeArgs),
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
        Cmd::Tokenize(a) => engine_cmds::tokenize(a),
        Cmd::Perplexity(a) => engine_cmds::perplexity_cmd(a),
        Cmd::Bench(a) => engine_cmds::bench(a),
        Cmd::Profile(a) => profile_cmd::run(*a),
        Cmd::Devices(a) => profile_cmd::devices(a),
    }
}

/// `edgerun inspect FILE [--json]`: the report, then, for a llama/deci file, the engine's own checks (every
/// tensor present, of a usable type, of the shape the metadata implies): a file `generate` would refuse is
/// reported and the exit status is 1.
fn inspect(file: &std::path::Path, json: bool) -> Result<()> {
    let f = device_runtime::gguf::GgufFile::open(file)?;
    let report = device_runtime::inspect::Report::new(&f);
    let is_model = matches!(report.architecture.as_deref(), Some("llama" | "deci"));
    let problem = match (&report.config_error, is_model) {
        (_, false) => None,
        (Some(e), true) => Some(e.clone()),
        (None, true) => device_runtime::engine::Model::from_gguf(f).err().map(|e| e.to_string()),
    };
    if json {
        let mut j = serde_json::to_value(&report)?;
        j["problem"] = serde_json::json!(problem);
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        print!("{}", report.to_text());
    }
    match problem {
        Some(p) => anyhow::bail!("the engine cannot run this file: {p}"),
        None => Ok(()),
    }
}
