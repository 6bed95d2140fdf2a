//! `llamanas export`: a thin wrapper over [`device_runtime::subnet`] that reads the sub-network(s) from a
//! config file or a search run's `pareto.json`, adds search provenance, names the output files and reports
//! sizes. Format and rules: docs/EXPORT.md.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use device_runtime::arch::SubnetConfig;
use device_runtime::gguf::GgufFile;
use device_runtime::subnet::{ExportPlan, ExportQuant, ExportReport, Provenance};
use serde::{Deserialize, Serialize};

/// `runs/<name>/pareto.json`: the Pareto-optimal sub-networks of a search run (docs/EXPORT.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParetoFile {
    /// Name of the search run.
    pub run: String,
    /// The sub-networks on the front.
    pub subnets: Vec<ParetoEntry>,
}

/// One sub-network of a [`ParetoFile`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParetoEntry {
    /// [`SubnetConfig::id`] of `config`.
    pub id: String,
    /// The sub-network.
    pub config: SubnetConfig,
    /// Its objectives (e.g. `{"accuracy":0.41,"latency_ms":12.5,"size_bytes":52000000}`); written to the
    /// exported file as JSON.
    #[serde(default)]
    pub objectives: serde_json::Map<String, serde_json::Value>,
}

/// Where the sub-networks come from.
pub enum Source {
    /// A `SubnetConfig` JSON file.
    Config(PathBuf),
    /// A `pareto.json` and which entry to pick (an id, or `all`).
    Pareto { path: PathBuf, pick: String },
}

/// Options of `llamanas export`.
pub struct ExportArgs {
    /// A GGUF file, or a super-network folder holding `supernet.gguf`.
    pub input: PathBuf,
    /// The sub-network(s).
    pub source: Source,
    /// The quantization.
    pub quant: ExportQuant,
    /// A `.gguf` file (one sub-network) or a folder.
    pub out: PathBuf,
    /// Print one JSON object per exported file instead of text.
    pub json: bool,
    /// Reconstruction ([`crate::reconstruct::Mode`]): by default whenever the super-network folder has
    /// calibration statistics.
    pub reconstruct: crate::reconstruct::Mode,
    /// Accept sub-networks outside the super-network's search space (the pruning baselines).
    pub any_subnet: bool,
    /// Overwrite existing output files (else an existing one is an error before anything is written).
    pub force: bool,
}

/// The base model's GGUF: `input` itself, or `input/supernet.gguf` for a super-network folder.
pub fn base_gguf(input: &Path) -> Result<PathBuf> {
    if input.is_dir() {
        let p = input.join("supernet.gguf");
        ensure!(p.is_file(), "{}: a super-network folder must contain supernet.gguf", input.display());
        Ok(p)
    } else {
        ensure!(input.is_file(), "{}: no such file or folder", input.display());
        Ok(input.to_path_buf())
    }
}

/// Read a `pareto.json`; checks that every entry's id is its config's [`SubnetConfig::id`].
pub fn read_pareto(path: &Path) -> Result<ParetoFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let p: ParetoFile = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a pareto.json ({{\"run\":..., \"subnets\":[...]}})", path.display()))?;
    for (i, e) in p.subnets.iter().enumerate() {
        ensure!(
            e.id == e.config.id(),
            "{}: subnets[{i}]: id {:?} is not the id of its config ({})",
            path.display(),
            e.id,
            e.config.id()
        );
    }
    Ok(p)
}

/// One sub-network to export, with its provenance extras.
struct Job {
    cfg: SubnetConfig,
    run: Option<String>,
    objectives: Option<serde_json::Value>,
}

/// Read a sub-network config file (`{"layers":[...],"ffn":[...],"kv_heads":[...]}`, no other key) as `--subnet`,
/// `--init` and `llamanas prune --out` use it.
///
/// Errors: unreadable file; not such a config (the message names the file and serde's reason).
pub fn read_subnet_config(path: &Path) -> Result<SubnetConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!("{}: not a sub-network config ({{\"layers\":[...],\"ffn\":[...],\"kv_heads\":[...]}})", path.display())
    })
}

fn jobs(source: &Source) -> Result<Vec<Job>> {
    match source {
        Source::Config(path) => Ok(vec![Job { cfg: read_subnet_config(path)?, run: None, objectives: None }]),
        Source::Pareto { path, pick } => {
            let p = read_pareto(path)?;
            let job = |e: &ParetoEntry| Job {
                cfg: e.config.clone(),
                run: Some(p.run.clone()),
                objectives: Some(serde_json::Value::Object(e.objectives.clone())),
            };
            let picked: Vec<Job> = if pick == "all" {
                // A sub-network listed twice is exported once (its file name is its id).
                let mut seen = std::collections::HashSet::new();
                p.subnets.iter().filter(|e| seen.insert(e.id.clone())).map(job).collect()
            } else {
                p.subnets.iter().filter(|e| &e.id == pick).map(job).collect()
            };
            if picked.is_empty() {
                let ids: Vec<&str> = p.subnets.iter().map(|e| e.id.as_str()).collect();
                bail!("{}: no sub-network {pick:?} (ids: {})", path.display(), ids.join(", "));
            }
            Ok(picked)
        }
    }
}

/// With a super-network folder that has `supernet.json`, every sub-network must lie in its search space
/// (`SearchSpace` choices per layer, minimum layer count, layer mode): checked before anything is written.
fn check_in_space(input: &Path, jobs: &[Job]) -> Result<()> {
    let meta_path = input.join(crate::store::JSON_NAME);
    if !input.is_dir() || !meta_path.is_file() {
        return Ok(());
    }
    let meta = crate::store::SupernetMeta::read(&meta_path)?;
    let enc = meta.search_space.encoding();
    for j in jobs {
        enc.encode(&j.cfg).with_context(|| format!("{}: search space of {}", meta_path.display(), input.display()))?;
    }
    Ok(())
}

/// Output path of sub-network `id`: `out` itself when it names a `.gguf` file (one sub-network only), else
/// `out/<base stem>-<id>-<quant>.gguf`.
fn out_path(out: &Path, n_jobs: usize, base: &Path, id: &str, quant: ExportQuant) -> Result<PathBuf> {
    let is_file = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) && !out.is_dir();
    if is_file {
        ensure!(n_jobs == 1, "--out {}: {n_jobs} sub-networks need an output folder, not a .gguf file", out.display());
        return Ok(out.to_path_buf());
    }
    let stem = base.file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let stem = if stem == "supernet" { "subnet".to_owned() } else { stem };
    Ok(out.join(format!("{stem}-{id}-{quant}.gguf")))
}

/// Run `llamanas export`. Every sub-network is planned and checked before any file is written.
pub fn run(args: &ExportArgs) -> Result<Vec<ExportReport>> {
    let base_path = base_gguf(&args.input)?;
    let base = GgufFile::open(&base_path).with_context(|| format!("opening the base model {}", base_path.display()))?;
    let jobs = jobs(&args.source)?;
    if !args.any_subnet {
        check_in_space(&args.input, &jobs)?;
    }
    if !args.force {
        for job in &jobs {
            let path = out_path(&args.out, jobs.len(), &base_path, &job.cfg.id(), args.quant)?;
            ensure!(!path.exists(), "{} exists: pass --force to overwrite it (nothing was written)", path.display());
        }
    }
    let recon = crate::reconstruct::Reconstructor::for_mode(&base_path, args.reconstruct)?;
    let sha = Provenance::sha256_hex(base.bytes());
    let mut plans: Vec<(ExportPlan, PathBuf, String)> = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let prov = Provenance { base_sha256: sha.clone(), run: job.run.clone(), objectives: job.objectives.clone() };
        let plan = crate::reconstruct::plan(&base, &job.cfg, args.quant, &prov, recon.as_ref())
            .with_context(|| format!("{}: cannot export sub-network {}", base_path.display(), job.cfg.id()))?;
        let path = out_path(&args.out, jobs.len(), &base_path, &job.cfg.id(), args.quant)?;
        plans.push((plan, path, job.cfg.id()));
    }
    let mut reports = Vec::with_capacity(plans.len());
    for (plan, path, id) in &plans {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let t0 = Instant::now();
        let rep = plan.write(path).with_context(|| format!("exporting sub-network {id} to {}", path.display()))?;
        let secs = t0.elapsed().as_secs_f64();
        print_report(&rep, args.quant, secs, args.json);
        ensure!(
            rep.size_bytes == rep.predicted_bytes,
            "{}: written {} bytes but predicted {} (bug in the size prediction)",
            path.display(),
            rep.size_bytes,
            rep.predicted_bytes
        );
        reports.push(rep);
    }
    Ok(reports)
}

fn print_report(r: &ExportReport, quant: ExportQuant, secs: f64, json: bool) {
    let types: Vec<String> = r.tensor_types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    if json {
        let v = serde_json::json!({
            "path": r.path, "subnet_id": r.subnet_id, "arch": r.arch, "quant": quant.name(), "reconstructed": r.reconstructed,
            "n_layers": r.n_layers, "params": r.params, "size_bytes": r.size_bytes,
            "predicted_bytes": r.predicted_bytes, "tensor_types": types, "copied_tensors": r.copied_tensors,
            "seconds": secs,
        });
        println!("{v}");
    } else {
        println!(
            "{}: sub-network {} ({}, {} layers, {:.1} M params, {quant}{})\n  size {:.2} MiB ({} bytes), predicted {} bytes{}\n  tensors: {} ({} copied unchanged); {:.1} s",
            r.path.display(),
            r.subnet_id,
            r.arch,
            r.n_layers,
            r.params as f64 / 1e6,
            if r.reconstructed { ", reconstructed" } else { "" },
            r.size_bytes as f64 / (1024.0 * 1024.0),
            r.size_bytes,
            r.predicted_bytes,
            if r.size_bytes == r.predicted_bytes { " (equal)" } else { " (DIFFERENT)" },
            types.join(", "),
            r.copied_tensors,
            secs
        );
    }
}
