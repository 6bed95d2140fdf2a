//! `edgerun generate | perplexity | bench`: the engine's subcommands.

use anyhow::{bail, Context, Result};
use clap::Args;
use device_runtime::backend::{Backend, BackendKind};
use device_runtime::chat::{apply_model_chat_template, ChatMessage};
use device_runtime::engine::{perplexity::perplexity, Logits, Model, Sampler, SamplerConfig, SessionOptions};
use device_runtime::quant::dot::KernelPath;
use device_runtime::tokenizer::Tokenizer;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `edgerun generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The GGUF model (llama or deci).
    pub model: PathBuf,
    /// The prompt (with --chat: the user message).
    #[arg(short, long)]
    pub prompt: String,
    /// Tokens to generate (at most; generation stops at an end-of-generation token).
    #[arg(short = 'n', long, default_value_t = 64)]
    pub n_predict: usize,
    /// Apply the model's chat template (tokenizer.chat_template) to the prompt as one user message.
    #[arg(long)]
    pub chat: bool,
    /// Tokenize control tokens written in the prompt (`<|im_start|>`) as plain text instead of as the control
    /// token (the default parses them, as llama.cpp does; with --chat the template's own are always parsed).
    #[arg(long)]
    pub no_parse_special: bool,
    /// System message for --chat.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    /// Top-k (0: off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (1: off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Worker threads (0: all CPUs).
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    /// Context size in tokens (0: prompt + n, capped by the training context).
    #[arg(short, long, default_value_t = 0)]
    pub ctx: usize,
    /// Use the portable scalar kernels instead of the SIMD ones.
    #[arg(long)]
    pub scalar: bool,
    /// Compute backend: cpu, or wgpu (a GPU through Vulkan/Metal/DX12/OpenGL; needs the `wgpu` cargo feature).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// With --backend wgpu: the adapter whose name contains this text (see `edgerun devices`); default: the
    /// best one (discrete, integrated, then software).
    #[arg(long)]
    pub adapter: Option<String>,
}

fn kernels(scalar: bool) -> KernelPath {
    if scalar { KernelPath::Scalar } else { KernelPath::Best }
}

/// Parse --backend/--adapter and prepare the model for it (wgpu: upload the weights).
fn backend(name: &str, adapter: Option<&str>, m: &Model) -> Result<Backend> {
    let kind = BackendKind::parse(name, adapter)?;
    let b = Backend::open(&kind, m).with_context(|| format!("--backend {name}"))?;
    if let Some(a) = b.adapter() {
        eprintln!("wgpu adapter: {} (vendor {}, driver {} {})", a.label(), a.vendor, a.driver, a.driver_info);
    }
    Ok(b)
}

/// Load the model and its tokenizer. Errors name the file once (the engine's and the GGUF reader's errors
/// already start with it).
fn load(path: &Path) -> Result<(Model, Tokenizer)> {
    let m = Model::load(path)?;
    let g = m.gguf().with_context(|| format!("{}: no GGUF metadata", path.display()))?;
    let tok = Tokenizer::from_gguf(g)?;
    Ok((m, tok))
}

/// Check a sampling option: finite, and within `[min, max]` (`(0, max]` when `min` is the smallest positive).
fn check_range(name: &str, v: f32, min: f32, max: f32) -> Result<()> {
    if !(v.is_finite() && v >= min && v <= max) {
        let lo = if min == f32::MIN_POSITIVE { "(0".to_string() } else { format!("[{min}") };
        bail!("{name} {v} is out of range: it must be a number in {lo}, {max}]");
    }
    Ok(())
}

/// Largest text file `perplexity` and `tokenize` read (tokenizing takes ~150 bytes of memory per byte of text).
const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Read a UTF-8 text file of at most [`MAX_TEXT_BYTES`] (a device or pipe is read up to the limit, never past).
fn read_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        bail!("{}: is a directory, not a text file", path.display());
    }
    let mut bytes = Vec::new();
    f.take(MAX_TEXT_BYTES + 1).read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        bail!("{}: more than {} MiB of text (split it)", path.display(), MAX_TEXT_BYTES >> 20);
    }
    String::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{}: not UTF-8 text ({e})", path.display()))
}

/// `edgerun generate`: prompt in, continuation out (stdout), speed on stderr.
pub fn generate(a: GenerateArgs) -> Result<()> {
    check_range("--temp", a.temp, 0.0, 100.0)?;
    check_range("--top-p", a.top_p, f32::MIN_POSITIVE, 1.0)?;
    let (m, tok) = load(&a.model)?;
    let text = if a.chat {
        let mut msgs = vec![];
        if let Some(s) = &a.system {
            msgs.push(ChatMessage::new("system", s.clone()));
        }
        msgs.push(ChatMessage::new("user", a.prompt.clone()));
        apply_model_chat_template(&tok, &msgs, true).with_context(|| format!("{}: chat template", a.model.display()))?
    } else {
        a.prompt.clone()
    };
    let prompt = tok.encode(&text, true, a.chat || !a.no_parse_special).context("tokenizing the prompt")?;
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    // The KV cache holds what this run can use: the prompt and the tokens to generate, at most --ctx (default:
    // the training context). Its size is checked against the memory available before it is allocated.
    let limit = if a.ctx > 0 { a.ctx } else { m.config.n_ctx_train };
    if prompt.len() > limit {
        let which = if a.ctx > 0 { "--ctx" } else { "the model's training context" };
        bail!("the prompt has {} tokens, more than the context of {limit} tokens ({which})", prompt.len());
    }
    let n_ctx = prompt.len().saturating_add(a.n_predict).min(limit);
    let be = backend(&a.backend, a.adapter.as_deref(), &m)?;
    let mut s = be.session(&m, SessionOptions { n_ctx, threads: a.threads, kernels: kernels(a.scalar), ..Default::default() })?;
    let mut sampler = Sampler::new(SamplerConfig { temperature: a.temp, top_k: a.top_k, top_p: a.top_p, seed: a.seed });
    let t0 = Instant::now();
    let mut logits = s.prefill(&prompt, Logits::Last)?;
    let t_prefill = t0.elapsed().as_secs_f64();
    // The last generated token needs no KV slot: a context of n_ctx holds n_ctx - prompt + 1 generated tokens.
    if n_ctx < prompt.len().saturating_add(a.n_predict).saturating_sub(1) {
        eprintln!("[-n {} with a prompt of {} tokens exceeds the context: at most {} tokens]", a.n_predict, prompt.len(), n_ctx - prompt.len() + 1);
    }
    let mut out = std::io::stdout().lock();
    if !a.chat {
        write!(out, "{}", a.prompt)?;
    }
    let t1 = Instant::now();
    let mut generated: Vec<u32> = vec![];
    let mut printed = 0usize; // bytes of the decoded text already printed (pieces may split UTF-8 chars)
    for _ in 0..a.n_predict {
        let t = sampler.sample(&logits);
        if tok.is_eog(t) {
            break;
        }
        generated.push(t);
        let text = tok.decode(&generated, true)?;
        let stable = text.trim_end_matches('\u{FFFD}');
        if stable.len() > printed && stable.is_char_boundary(printed) {
            write!(out, "{}", &stable[printed..])?;
            out.flush()?;
            printed = stable.len();
        }
        if s.pos() >= s.n_ctx() {
            eprintln!("\n[context of {} tokens is full]", s.n_ctx());
            break;
        }
        logits = s.decode(t)?;
    }
    writeln!(out)?;
    let t_decode = t1.elapsed().as_secs_f64();
    eprintln!(
        "prompt {} tokens: {:.1} tokens/s; generated {} tokens: {:.1} tokens/s; {}",
        prompt.len(),
        prompt.len() as f64 / t_prefill,
        generated.len(),
        generated.len() as f64 / t_decode.max(1e-9),
        if s.threads() > 0 { format!("{} threads", s.threads()) } else { be.label() }
    );
    Ok(())
}

/// Arguments of `edgerun perplexity`.
#[derive(Args, Debug)]
pub struct PerplexityArgs {
    /// The GGUF model.
    pub model: PathBuf,
    /// The text file to score.
    #[arg(short, long)]
    pub file: PathBuf,
    /// Chunk size in tokens (llama-perplexity -c).
    #[arg(short, long, default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many chunks (0: all).
    #[arg(long, default_value_t = 0)]
    pub chunks: usize,
    /// Worker threads (0: all CPUs).
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Use the portable scalar kernels.
    #[arg(long)]
    pub scalar: bool,
    /// Compute backend: cpu, or wgpu (a GPU through Vulkan/Metal/DX12/OpenGL; needs the `wgpu` cargo feature).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// With --backend wgpu: the adapter whose name contains this text (see `edgerun devices`); default: the
    /// best one (discrete, integrated, then software).
    #[arg(long)]
    pub adapter: Option<String>,
}

/// `edgerun perplexity`: llama-perplexity's method (non-overlapping chunks, second half scored).
pub fn perplexity_cmd(a: PerplexityArgs) -> Result<()> {
    let (m, tok) = load(&a.model)?;
    let text = read_text(&a.file)?;
    let tokens = tok.encode(&text, true, false).context("tokenizing")?;
    let bos = if tok.metadata().add_bos { tok.bos() } else { None };
    // Refuse a chunk larger than the text before a KV cache of that size exists.
    device_runtime::engine::perplexity::n_chunks(tokens.len(), a.ctx, a.chunks)
        .with_context(|| format!("{}: {} tokens", a.file.display(), tokens.len()))?;
    let be = backend(&a.backend, a.adapter.as_deref(), &m)?;
    let mut s = be.session(&m, SessionOptions { n_ctx: a.ctx, threads: a.threads, n_batch: a.ctx, kernels: kernels(a.scalar) })?;
    let t0 = Instant::now();
    let p = perplexity(&mut s, &tokens, a.ctx, bos, a.chunks, |c, p| {
        if !a.json {
            eprint!("[{}]{p:.4} ", c + 1);
        }
    })
    .with_context(|| format!("{}: {} tokens", a.file.display(), tokens.len()))?;
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let j = serde_json::json!({
            "model": a.model.display().to_string(), "file": a.file.display().to_string(), "ctx": a.ctx,
            "tokens": tokens.len(), "chunks": p.n_chunks, "scored": p.count, "ppl": p.ppl, "nll": p.nll,
            "running": p.running, "seconds": secs, "threads": s.threads(), "backend": be.kind().name(),
            "adapter": be.adapter(),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        eprintln!();
        println!(
            "{}: {} tokens, {} chunks of {}, {} scored: PPL = {:.4} ({:.1} s, {:.1} tokens/s)",
            a.file.display(),
            tokens.len(),
            p.n_chunks,
            a.ctx,
            p.count,
            p.ppl,
            secs,
            (p.n_chunks * a.ctx) as f64 / secs
        );
    }
    Ok(())
}

/// Arguments of `edgerun bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The GGUF model.
    pub model: PathBuf,
    /// Prompt tokens (prefill test, logits of the last token only, as llama-bench); 0 skips.
    #[arg(short = 'p', long, default_value_t = 128)]
    pub n_prompt: usize,
    /// Generated tokens (decode test, one token at a time from an empty cache, as llama-bench); 0 skips.
    #[arg(short = 'n', long, default_value_t = 64)]
    pub n_gen: usize,
    /// Thread counts, comma-separated.
    #[arg(short, long, default_value = "1,2", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Repetitions per test (after one warm-up run).
    #[arg(short, long, default_value_t = 3)]
    pub reps: usize,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Use the portable scalar kernels.
    #[arg(long)]
    pub scalar: bool,
    /// Compute backend: cpu, or wgpu (a GPU through Vulkan/Metal/DX12/OpenGL; needs the `wgpu` cargo feature).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// With --backend wgpu: the adapter whose name contains this text (see `edgerun devices`); default: the
    /// best one (discrete, integrated, then software).
    #[arg(long)]
    pub adapter: Option<String>,
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = if x.len() > 1 { x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, v.sqrt())
}

/// Peak resident set size of this process (`VmHWM` of /proc/self/status), bytes; None where unavailable.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `edgerun bench`: prefill and decode tokens/s like llama-bench (mean ± standard deviation).
pub fn bench(a: BenchArgs) -> Result<()> {
    let m = Model::load(&a.model)?;
    let be = backend(&a.backend, a.adapter.as_deref(), &m)?;
    // Thread counts do not apply to a GPU: one row per test.
    let thread_list = if be.adapter().is_some() { vec![0] } else { a.threads.clone() };
    if a.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if a.n_prompt == 0 && a.n_gen == 0 {
        bail!("-p 0 and -n 0: nothing to measure (give a prompt length, a generation length, or both)");
    }
    if a.threads.is_empty() {
        bail!("--threads: give at least one thread count");
    }
    let n_ctx = (a.n_prompt.max(a.n_gen)).max(1);
    if m.config.n_ctx_train > 0 && n_ctx > m.config.n_ctx_train {
        bail!("-p {} / -n {}: more tokens than the model's training context {}", a.n_prompt, a.n_gen, m.config.n_ctx_train);
    }
    let file_size = std::fs::metadata(&a.model)?.len();
    let ty = m.model_config().map(|_| ()).map_or("?".to_string(), |_| {
        // Most common matrix type: the type of blk.0.ffn_down (what llama-bench's file type reports).
        m.gguf().and_then(|g| g.tensor("blk.0.ffn_down.weight").map(|t| t.ty.to_string())).unwrap_or_default()
    });
    let name = format!("{} {} {}", m.config.arch, a.model.file_stem().and_then(|s| s.to_str()).unwrap_or(""), ty);
    let mut rows = vec![];
    // Pseudo-random token ids (llama-bench also uses random tokens).
    let mut seed = 1234u64;
    let mut rnd_tok = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) % m.config.n_vocab as u64) as u32
    };
    let prompt: Vec<u32> = (0..a.n_prompt).map(|_| rnd_tok()).collect();
    let first = rnd_tok();
    let mut kv_bytes = 0;
    for &threads in &thread_list {
        let mut s = be.session(&m, SessionOptions { n_ctx, threads, n_batch: a.n_prompt.max(1), kernels: kernels(a.scalar) })?;
        kv_bytes = s.kv_cache_bytes();
        let mut tests: Vec<(String, usize, Vec<f64>)> = vec![];
        if a.n_prompt > 0 {
            let mut v = vec![];
            for r in 0..=a.reps {
                s.reset();
                let t = Instant::now();
                s.prefill(&prompt, Logits::Last)?;
                if r > 0 {
                    v.push(a.n_prompt as f64 / t.elapsed().as_secs_f64());
                }
            }
            tests.push((format!("pp{}", a.n_prompt), a.n_prompt, v));
        }
        if a.n_gen > 0 {
            let mut v = vec![];
            for r in 0..=a.reps {
                s.reset();
                let t = Instant::now();
                let mut tok = first;
                for _ in 0..a.n_gen {
                    let l = s.decode(tok)?;
                    tok = device_runtime::engine::sampler::argmax(&l);
                }
                if r > 0 {
                    v.push(a.n_gen as f64 / t.elapsed().as_secs_f64());
                }
            }
            tests.push((format!("tg{}", a.n_gen), a.n_gen, v));
        }
        for (test, n, v) in tests {
            let (mean, sd) = mean_sd(&v);
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            rows.push(serde_json::json!({
                "model": name, "file_size": file_size, "backend": be.label(), "threads": s.threads(), "test": test, "n_tokens": n,
                "tokens_per_s": v, "mean": mean, "stddev": sd, "median": median,
            }));
        }
    }
    let rss = peak_rss_bytes();
    if a.json {
        let j = serde_json::json!({
            "model": a.model.display().to_string(), "file_size": file_size, "weight_bytes": m.weight_bytes,
            "kv_cache_bytes": kv_bytes, "peak_rss_bytes": rss, "backend": be.kind().name(), "adapter": be.adapter(), "kernels": if a.scalar { "scalar" } else if device_runtime::quant::dot::has_avx2() { "avx2" } else { "scalar" },
            "results": rows,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!("| model | size | backend | threads | test | t/s |");
        println!("| --- | ---: | --- | ---: | ---: | ---: |");
        for r in &rows {
            println!(
                "| {} | {:.2} MiB | {} | {} | {} | {:.2} ± {:.2} |",
                r["model"].as_str().unwrap(),
                mib(file_size),
                r["backend"].as_str().unwrap(),
                r["threads"],
                r["test"].as_str().unwrap(),
                r["mean"].as_f64().unwrap(),
                r["stddev"].as_f64().unwrap()
            );
        }
        if let Some(rss) = rss {
            println!(
                "\npeak RSS {:.1} MiB (file {:.1} MiB + KV cache {:.1} MiB + {:.1} MiB)",
                mib(rss),
                mib(file_size),
                mib(kv_bytes as u64),
                mib(rss) - mib(file_size) - mib(kv_bytes as u64)
            );
        }
    }
    Ok(())
}

/// Arguments of `edgerun tokenize`.
#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// The GGUF model whose tokenizer is used.
    pub model: PathBuf,
    /// The text to tokenize.
    #[arg(short, long, conflicts_with = "file", required_unless_present = "file")]
    pub prompt: Option<String>,
    /// Read the text from this file instead.
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// Do not add the BOS token (added only where the vocabulary asks for it, `tokenizer.ggml.add_bos_token`).
    #[arg(long)]
    pub no_bos: bool,
    /// Tokenize control tokens written in the text (`<|im_start|>`) as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
    /// Print JSON: `{"count", "ids", "tokens", "pieces"}` (`tokens`: the vocabulary's strings, as HF
    /// `tokenizers` `Encoding.tokens`; `pieces`: the text each stands for, invalid UTF-8 as U+FFFD).
    #[arg(long)]
    pub json: bool,
}

/// `edgerun tokenize`: token ids and pieces of a text (llama.cpp's `llama-tokenize`). Loads only the tokenizer.
pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let g = device_runtime::gguf::GgufFile::open(&a.model)?;
    let tok = Tokenizer::from_gguf(&g)?;
    let text = match (&a.prompt, &a.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => read_text(f)?,
        (None, None) => bail!("give the text with --prompt or --file"),
    };
    let ids = tok.encode(&text, !a.no_bos, !a.no_parse_special)?;
    let tokens: Vec<&str> = ids.iter().map(|&i| tok.token_text(i).unwrap_or("")).collect();
    let pieces = ids
        .iter()
        .map(|&i| tok.token_to_piece(i).map(|b| String::from_utf8_lossy(&b).into_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    if a.json {
        let j = serde_json::json!({ "model": a.model.display().to_string(), "count": ids.len(), "ids": ids, "tokens": tokens, "pieces": pieces });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        let mut out = std::io::stdout().lock();
        for (id, p) in ids.iter().zip(&pieces) {
            writeln!(out, "{id:>6} -> {p:?}")?;
        }
        writeln!(out, "{} tokens", ids.len())?;
    }
    Ok(())
}
