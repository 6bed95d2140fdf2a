//! `edgerun profile`: measure a device profile (latency tables) and validate the latency model.

use anyhow::{Context, Result, bail};
use clap::Args;
use device_runtime::gguf::GgufFile;
use device_runtime::arch::ModelConfig;
use device_runtime::profile::{LatencyModel, Profile, ProfileError, ProfileOptions, ValidationOptions, profile_model, validate_profile};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `edgerun profile`.
#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// The base model (GGUF) whose block shapes and weights are measured.
    pub model: PathBuf,
    /// Engine worker threads (0: all logical CPUs).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Quantization of the sub-networks: q8_0 (default), q4_0, q4_1, f16, f32. With --from it must be the
    /// profile's own (a profile measured for one quantization does not describe another).
    #[arg(long)]
    pub quant: Option<String>,
    /// Compute backend: cpu, or wgpu (a GPU adapter; needs the `wgpu` cargo feature).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// With --backend wgpu: the adapter whose name contains this text (see `edgerun devices`).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Output profile (JSON). Default: profiles/<cpu>-<cpus>c-<mem>g-t<threads>-<quant>.json
    /// (wgpu: profiles/<adapter>-wgpu-<quant>.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Wall-time bound for the measurements, seconds (fewer repeated runs when short; an error if exceeded).
    #[arg(long, default_value_t = 600.0)]
    pub budget: f64,
    /// Decode context lengths (tokens in the KV cache), comma-separated, increasing.
    #[arg(long, value_delimiter = ',', default_value = "0,256,512,1024,2048")]
    pub contexts: Vec<usize>,
    /// Prefill prompt lengths, comma-separated, increasing, at most 512.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,128,256,512")]
    pub lengths: Vec<usize>,
    /// Untimed warm-up runs per measurement.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Fewest timed runs per measurement.
    #[arg(long, default_value_t = 3)]
    pub min_runs: usize,
    /// Most timed runs per measurement.
    #[arg(long, default_value_t = 9)]
    pub max_runs: usize,
    /// Blocks per part model in decode measurements (0: as many as MODEL has).
    #[arg(long, default_value_t = 0)]
    pub decode_layers: usize,
    /// Blocks per part model in prefill measurements.
    #[arg(long, default_value_t = 4)]
    pub prefill_layers: usize,
    /// MiB read before each timed run to evict the caches (0: no flush; see docs/PROFILES.md).
    #[arg(long, default_value_t = 0)]
    pub flush_mib: usize,
    /// Passes over the whole table; each entry keeps the median of its passes (robust to slow phases of a
    /// shared machine).
    #[arg(long, default_value_t = 5)]
    pub passes: usize,
    /// Validate on K random sub-networks of MODEL (predicted vs. measured end to end).
    #[arg(long, value_name = "K")]
    pub validate: Option<usize>,
    /// Do not measure: read this profile and validate it (with --validate K).
    #[arg(long, value_name = "PROFILE")]
    pub from: Option<PathBuf>,
    /// Seed of the random sub-networks.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Context length of the validation's decode measurements.
    #[arg(long, default_value_t = 256)]
    pub validate_context: usize,
    /// Prompt length of the validation's prefill measurements.
    #[arg(long, default_value_t = 128)]
    pub validate_length: usize,
    /// Rounds of the validation: each round times every sub-network once (prefill, then decodes), and each
    /// sub-network keeps the median of its rounds.
    #[arg(long, default_value_t = 9)]
    pub validate_runs: usize,
    /// Write the validation rows (one per sub-network) to this CSV file.
    #[arg(long)]
    pub validation_csv: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn write_atomic(path: &std::path::Path, text: &str) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(text.as_bytes()).with_context(|| format!("writing {}", tmp.0.display()))?;
    drop(tmp.1);
    std::fs::rename(&tmp.0, path).with_context(|| format!("renaming {} to {}", tmp.0.display(), path.display()))
}

fn tempfile_in(dir: &std::path::Path) -> Result<(PathBuf, std::fs::File)> {
    let p = dir.join(format!(".edgerun-{}.tmp", std::process::id()));
    let f = std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok((p, f))
}

/// Arguments of `edgerun devices`.
#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print the path of a profile in this folder measured on this machine (same CPU, cores, memory, SIMD
    /// features; see `DeviceFacts::same_device`) by this runtime version, for --threads and --quant; exit 1
    /// when there is none, with the reason for each file.
    #[arg(long, value_name = "DIR")]
    pub find_profile: Option<PathBuf>,
    /// Threads of the profile to find (0: all logical CPUs).
    #[arg(long, default_value_t = 0, requires = "find_profile")]
    pub threads: usize,
    /// Quantization of the profile to find.
    #[arg(long, default_value = "q8_0", requires = "find_profile")]
    pub quant: String,
}

/// Run `edgerun devices`.
pub fn devices(a: DevicesArgs) -> Result<()> {
    use device_runtime::profile::DeviceFacts;
    let here = DeviceFacts::detect();
    if let Some(dir) = &a.find_profile {
        let threads = if a.threads == 0 { here.logical_cpus } else { a.threads };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading the profile folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        entries.sort();
        for p in &entries {
            let why = match Profile::load(p) {
                Err(e) => format!("{e}"),
                Ok(prof) => {
                    if prof.runtime_version != device_runtime::profile::RUNTIME_VERSION {
                        format!("runtime version {} (this is {})", prof.runtime_version, device_runtime::profile::RUNTIME_VERSION)
                    } else if prof.backend != "cpu" {
                        format!("backend {}", prof.backend)
                    } else if prof.threads != threads {
                        format!("{} threads (wanted {threads})", prof.threads)
                    } else if prof.quant != a.quant {
                        format!("quantization {} (wanted {})", prof.quant, a.quant)
                    } else if let Err(e) = here.same_device(&prof.device) {
                        format!("another device: {e}")
                    } else {
                        println!("{}", p.display());
                        return Ok(());
                    }
                }
            };
            eprintln!("{}: not used: {why}", p.display());
        }
        eprintln!("no profile in {} matches this machine ({} threads, {})", dir.display(), threads, a.quant);
        std::process::exit(1);
    }
    if a.json {
        let v = serde_json::json!({ "cpu": here, "backends": device_runtime::backend::available(), "wgpu": wgpu_json() });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mem = here.memory_bytes as f64 / (1u64 << 30) as f64;
        println!("cpu   {} ({}), {} logical CPUs, {} MHz, {mem:.1} GiB, {} {}, features: {}", here.cpu_brand, here.cpu_vendor,
            here.logical_cpus, here.cpu_mhz, here.os, here.arch, here.cpu_features.join(","));
        print_wgpu();
    }
    Ok(())
}

/// The wgpu adapters for `devices --json`: a list, or why there is none.
#[cfg(feature = "wgpu")]
fn wgpu_json() -> serde_json::Value {
    serde_json::json!(device_runtime::gpu::list_adapters())
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_json() -> serde_json::Value {
    serde_json::json!("not built (cargo feature wgpu)")
}

/// The wgpu adapters, one line each: name, vendor, device type, backend, driver.
#[cfg(feature = "wgpu")]
fn print_wgpu() {
    let list = device_runtime::gpu::list_adapters();
    if list.is_empty() {
        println!("wgpu  no adapter found (no GPU driver; Mesa's lavapipe gives a software one: mesa-vulkan-drivers)");
    }
    for a in list {
        println!("wgpu  {} (vendor {}, device {}), {}, {}, driver {} {}", a.name, a.vendor, a.device, a.device_type, a.backend, a.driver, a.driver_info);
    }
}

#[cfg(not(feature = "wgpu"))]
fn print_wgpu() {
    println!("wgpu  not built (cargo feature wgpu)");
}

/// Run `edgerun profile`.
pub fn run(a: ProfileArgs) -> Result<()> {
    if !(a.budget.is_finite() && a.budget > 0.0) {
        bail!("--budget {} must be a positive number of seconds", a.budget);
    }
    if a.flush_mib > 1 << 16 {
        bail!("--flush-mib {} is more than 64 GiB", a.flush_mib);
    }
    if a.min_runs == 0 || a.max_runs < a.min_runs || a.passes == 0 {
        bail!("--min-runs {} / --max-runs {} / --passes {}: need 1 <= min-runs <= max-runs and passes >= 1", a.min_runs, a.max_runs, a.passes);
    }
    if a.validate.is_some_and(|k| k > 10_000) {
        bail!("--validate {}: at most 10000 sub-networks", a.validate.unwrap_or(0));
    }
    let base = GgufFile::open(&a.model).with_context(|| format!("opening the model {}", a.model.display()))?;
    let mut profile = match &a.from {
        Some(p) => {
            let prof = Profile::load(p)?;
            if let Some(q) = &a.quant
                && !q.eq_ignore_ascii_case(&prof.quant)
            {
                bail!("{}: the profile was measured for {}, not --quant {q}: measure one for {q} (without --from)", p.display(), prof.quant);
            }
            prof
        }
        None => {
            let o = ProfileOptions {
                threads: a.threads,
                quant: a.quant.clone().unwrap_or_else(|| "q8_0".into()),
                backend: a.backend.clone(),
                adapter: a.adapter.clone(),
                contexts: a.contexts.clone(),
                lengths: a.lengths.clone(),
                warmup: a.warmup,
                min_runs: a.min_runs,
                max_runs: a.max_runs,
                decode_layers: a.decode_layers,
                prefill_layers: a.prefill_layers,
                cache_flush_bytes: a.flush_mib << 20,
                passes: a.passes,
                budget_s: a.budget,
                progress: !a.quiet,
            };
            let p = profile_model(&base, &o).with_context(|| format!("profiling {}", a.model.display()))?;
            print_profile(&p);
            if let Ok(lm) = ModelConfig::from_gguf(&base).map_err(ProfileError::from).and_then(|c| LatencyModel::new(p.clone(), &c, &p.quant)) {
                let (d, f) = lm.calibration_factors();
                let fmt = |v: &[f64]| v.iter().map(|g| format!("{g:.3}")).collect::<Vec<_>>().join(", ");
                println!("calibration of the block sums (base model / sum of its parts): decode {}; prefill {}", fmt(&d), fmt(&f));
            }
            p
        }
    };
    let out = a.out.clone().or_else(|| a.from.clone()).unwrap_or_else(|| PathBuf::from("profiles").join(profile.file_name()));
    if let Some(k) = a.validate {
        if k == 0 {
            bail!("--validate needs K >= 1");
        }
        let o = ValidationOptions {
            k,
            seed: a.seed,
            decode_context: a.validate_context,
            prefill_length: a.validate_length,
            runs: a.validate_runs,
            progress: !a.quiet,
        };
        let r = validate_profile(&base, &profile, &o).with_context(|| format!("validating on {}", a.model.display()))?;
        println!("validation: {k} random sub-networks of {}, decode at context {}, prefill of {} tokens", a.model.display(), o.decode_context, o.prefill_length);
        println!("{:>14} {:>6} {:>10} {:>10} {:>7} {:>10} {:>10} {:>7}", "subnet", "layers", "dec pred", "dec meas", "err%", "pre pred", "pre meas", "err%");
        let mut csv = String::from(
            "subnet_id,subnet,decode_pred_ms,decode_meas_ms,decode_err_pct,prefill_pred_ms,prefill_meas_ms,prefill_err_pct,decode_norm_ms,decode_norm_err_pct,prefill_norm_ms,prefill_norm_err_pct\n",
        );
        for row in &r.rows {
            println!(
                "{:>14} {:>6} {:>10.3} {:>10.3} {:>+7.2} {:>10.2} {:>10.2} {:>+7.2}",
                row.subnet.id(),
                row.subnet.layers.len(),
                row.decode_pred_ms,
                row.decode_meas_ms,
                row.decode_err_pct(),
                row.prefill_pred_ms,
                row.prefill_meas_ms,
                row.prefill_err_pct()
            );
            csv.push_str(&format!(
                "{},\"{}\",{:.4},{:.4},{:.3},{:.4},{:.4},{:.3},{:.4},{:.3},{:.4},{:.3}\n",
                row.subnet.id(),
                row.subnet.canonical_json().replace('"', "\"\""),
                row.decode_pred_ms,
                row.decode_meas_ms,
                row.decode_err_pct(),
                row.prefill_pred_ms,
                row.prefill_meas_ms,
                row.prefill_err_pct(),
                row.decode_norm_ms,
                row.decode_norm_err_pct(),
                row.prefill_norm_ms,
                row.prefill_norm_err_pct()
            ));
        }
        let s = &r.summary;
        println!(
            "decode:  MAPE {:.2}%, within +-10%: {:.1}%, largest error {:+.2}%",
            s.decode_mape_pct, s.decode_within_10_pct, s.decode_max_err_pct
        );
        println!(
            "prefill: MAPE {:.2}%, within +-10%: {:.1}%, largest error {:+.2}%",
            s.prefill_mape_pct, s.prefill_within_10_pct, s.prefill_max_err_pct
        );
        if let (Some(dd), Some(pd)) = (s.decode_drift_pct, s.prefill_drift_pct) {
            println!("drift: the base model ran {dd:+.2}% (decode) / {pd:+.2}% (prefill) against its prediction; with every prediction scaled by it:");
            let f = |x: Option<f64>| x.unwrap_or(f64::NAN);
            println!(
                "decode:  MAPE {:.2}%, within +-10%: {:.1}%, largest error {:+.2}%  (drift-normalized)",
                f(s.decode_mape_normalized_pct), f(s.decode_within_10_normalized_pct), f(s.decode_max_err_normalized_pct)
            );
            println!(
                "prefill: MAPE {:.2}%, within +-10%: {:.1}%, largest error {:+.2}%  (drift-normalized)",
                f(s.prefill_mape_normalized_pct), f(s.prefill_within_10_normalized_pct), f(s.prefill_max_err_normalized_pct)
            );
        }
        if let Some(p) = &a.validation_csv {
            write_atomic(p, &csv)?;
        }
        profile.validation = Some(r.summary);
    }
    if a.from.is_some() && a.validate.is_none() && a.out.is_none() {
        // Nothing was measured: the profile is read, not rewritten.
        println!("{}: read (nothing measured; --validate K validates it)", out.display());
        return Ok(());
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    profile.save(&out).with_context(|| format!("writing the profile {}", out.display()))?;
    println!("profile written to {}", out.display());
    Ok(())
}

fn print_profile(p: &Profile) {
    let d = &p.device;
    println!(
        "device: {} ({} logical CPUs, {} MHz, {:.1} GiB, {} {}), {} threads, {} ({}; head {})",
        d.cpu_brand,
        d.logical_cpus,
        d.cpu_mhz,
        d.memory_bytes as f64 / (1u64 << 30) as f64,
        d.os,
        d.os_version,
        p.threads,
        p.quant,
        p.weight_type,
        p.head_type
    );
    if let Some(a) = &d.adapter {
        println!("backend {}: adapter {} (vendor {}, driver {} {})", p.backend, a.label(), a.vendor, a.driver, a.driver_info);
    }
    let t = &p.decode;
    println!(
        "decode, ms: overhead {:.4}, embedding {:.4}, final norm {:.4}, output head {:.3}",
        t.overhead[0].median_ms, t.embedding.median_ms, t.final_norm.median_ms, t.output_head.median_ms
    );
    for r in &t.attention {
        let v: Vec<String> = r.ms.iter().zip(&t.contexts).map(|(s, c)| format!("{c}: {:.4}", s.median_ms)).collect();
        println!("  attention kv {} per block, by context: {}", r.kv_heads, v.join(", "));
    }
    let v: Vec<String> = t.ffn.iter().map(|r| format!("{}: {:.4}", r.width, r.ms[0].median_ms)).collect();
    println!("  ffn per block, by width: {}", v.join(", "));
    let t = &p.prefill;
    for r in &t.attention {
        let v: Vec<String> = r.ms.iter().zip(&t.lengths).map(|(s, n)| format!("{n}: {:.3}", s.median_ms)).collect();
        println!("prefill attention kv {} per block, by length: {}", r.kv_heads, v.join(", "));
    }
    if let Some(r) = t.ffn.last() {
        let v: Vec<String> = r.ms.iter().zip(&t.lengths).map(|(s, n)| format!("{n}: {:.3}", s.median_ms)).collect();
        println!("prefill ffn {} per block, by length: {}", r.width, v.join(", "));
    }
    if !p.decode.reference.is_empty() {
        let v: Vec<String> = p.decode.reference.iter().zip(&p.decode.contexts).map(|(s, c)| format!("{c}: {:.3}", s.median_ms)).collect();
        println!("base model decode, by context: {}", v.join(", "));
        let v: Vec<String> = p.prefill.reference.iter().zip(&p.prefill.lengths).map(|(s, n)| format!("{n}: {:.2}", s.median_ms)).collect();
        println!("base model prefill, by length: {}", v.join(", "));
    }
    println!("measured in {:.1} s", p.method.elapsed_s);
}
