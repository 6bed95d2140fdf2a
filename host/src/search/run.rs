//! `llamanas search`: reads the super-network (or a GGUF), the space, the profile; runs the search; writes
//! `runs/<name>/` (docs/SEARCH.md): `run.json`, `evaluations.jsonl` (appended after each real evaluation),
//! `evaluations.csv`, `hypervolume.csv`, `pareto.json` ([`crate::export::ParetoFile`]), `pareto.svg`,
//! `report.md`. `--resume` reuses every finished evaluation of a killed run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::gguf::GgufFile;
use device_runtime::profile::{LatencyModel, Profile};
use device_runtime::subnet::ExportQuant;
use serde::{Deserialize, Serialize};

use super::linas::{AccuracyOracle, Event, Evaluation, HvPoint, Objective, Outcome, Reference, Search, Settings};
use super::objectives::{BenchmarkOracle, ExactCosts, PerplexityOracle};
use crate::export::{ParetoEntry, ParetoFile, base_gguf};
use crate::reconstruct::Reconstructor;
use crate::space::SearchSpace;

/// Options of `llamanas search`.
#[derive(Clone, Debug)]
pub struct SearchArgs {
    /// Super-network folder (`supernet.gguf` [+ `supernet.json`]) or a GGUF file.
    pub input: PathBuf,
    /// Accuracy task: a benchmark name (`arc_easy`, ...) or `ppl:FILE` (1/perplexity of a text).
    pub task: String,
    /// Items of the task (benchmark) or chunks of the text (`ppl:`).
    pub limit: Option<usize>,
    /// Device profile (latency; its quantization is the export quantization).
    pub profile: Option<PathBuf>,
    /// Export quantization when no profile is given (default q8_0).
    pub quant: Option<ExportQuant>,
    /// Decode context (tokens already in the KV cache) of the latency objective.
    pub context: usize,
    /// Settings.
    pub settings: Settings,
    /// Space file (JSON or TOML); default: the super-network's, else the model's default.
    pub space: Option<PathBuf>,
    /// Output folder.
    pub out: PathBuf,
    /// Continue a killed run.
    pub resume: bool,
    /// Print the space size and the time the budget takes, and stop.
    pub dry_run: bool,
    /// Scoring threads (0: all).
    pub threads: usize,
    /// Show a progress bar.
    pub progress: bool,
    /// Reconstruction of the scored sub-networks ([`crate::reconstruct::Mode`]).
    pub reconstruct: crate::reconstruct::Mode,
}

/// `run.json`: what a run was started with; `--resume` refuses a different one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunFile {
    /// The input path.
    pub input: String,
    /// The accuracy task.
    pub task: String,
    /// `--limit`.
    pub limit: Option<usize>,
    /// Profile path.
    pub profile: Option<String>,
    /// Export quantization.
    pub quant: String,
    /// Decode context.
    pub context: usize,
    /// The settings.
    pub settings: Settings,
    /// The space searched.
    pub space: SearchSpace,
    /// How the scored sub-networks were reconstructed (`None`: sliced only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconstruction: Option<String>,
}

/// Write `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Read `evaluations.jsonl`. A last line cut short by a kill is dropped (the bool says so); any other bad
/// line is an error naming the line.
pub fn read_evaluations(path: &Path) -> Result<(Vec<Evaluation>, bool)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    let mut dropped = false;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Evaluation>(line) {
            Ok(e) => out.push(e),
            Err(_) if i + 1 == lines.len() => dropped = true, // no final newline: an unfinished write
            Err(e) => bail!("{}: line {}: not an evaluation ({e})", path.display(), i + 1),
        }
    }
    Ok((out, dropped))
}

/// The search space of `input`: `--space`, else `supernet.json`'s `search_space` (written by `llamanas import`),
/// else [`SearchSpace::default_for`].
fn load_space(args: &SearchArgs, mc: &ModelConfig) -> Result<SearchSpace> {
    let space = if let Some(p) = &args.space {
        SearchSpace::load(p)?
    } else if args.input.is_dir() && args.input.join("supernet.json").is_file() {
        crate::store::SupernetMeta::read(&args.input.join("supernet.json"))?.search_space
    } else {
        SearchSpace::default_for(mc)
    };
    space.check(mc).with_context(|| format!("the search space does not fit {}", args.input.display()))?;
    Ok(space)
}

fn make_oracle(args: &SearchArgs, base: &Path, quant: ExportQuant, recon: Option<Reconstructor>) -> Result<Box<dyn AccuracyOracle>> {
    if let Some(file) = args.task.strip_prefix("ppl:") {
        let o = PerplexityOracle::new(base, Path::new(file), quant, 128, args.limit.unwrap_or(4), args.threads, recon)
            .map_err(|e| anyhow::anyhow!("--task {}: {e}", args.task))?;
        return Ok(Box::new(o));
    }
    let o = BenchmarkOracle::new(base, &args.task, args.limit, 0, args.threads, quant, recon)
        .map_err(|e| anyhow::anyhow!("--task {}: {e}", args.task))?;
    Ok(Box::new(o))
}


/// Run `llamanas search`.
pub fn run(args: &SearchArgs) -> Result<Outcome> {
    let base_path = base_gguf(&args.input)?;
    let base = GgufFile::open(&base_path).with_context(|| format!("opening {}", base_path.display()))?;
    let mc = ModelConfig::from_gguf(&base).with_context(|| format!("{}: not a LLaMA-family model", base_path.display()))?;
    let space = load_space(args, &mc)?;
    args.settings.check()?;
    let objectives = &args.settings.objectives;
    let wants_latency = objectives.contains(&Objective::Latency);
    let (latency, quant) = match &args.profile {
        Some(p) => {
            let prof = Profile::load(p).with_context(|| format!("reading the profile {}", p.display()))?;
            let q: ExportQuant = prof.quant.parse().map_err(|e| anyhow::anyhow!("{}: quant {:?}: {e}", p.display(), prof.quant))?;
            if let Some(want) = args.quant {
                ensure!(want == q, "--quant {want} differs from the profile's quantization {q} ({})", p.display());
            }
            let lm = LatencyModel::new(prof, &mc, q.name()).with_context(|| format!("{}: cannot predict latencies", p.display()))?;
            (Some(lm), q)
        }
        None => {
            ensure!(!wants_latency, "the latency objective needs --profile profiles/<device>.json");
            (None, args.quant.unwrap_or(ExportQuant::Q8_0))
        }
    };
    // The reconstruction the scored sub-networks get (recorded in run.json: --resume must score the same way).
    let wants_accuracy = objectives.contains(&Objective::Accuracy);
    let recon = if wants_accuracy && !args.dry_run { Reconstructor::for_mode(&base_path, args.reconstruct)? } else { None };
    let run_file = RunFile {
        input: args.input.display().to_string(),
        task: args.task.clone(),
        limit: args.limit,
        profile: args.profile.as_ref().map(|p| p.display().to_string()),
        quant: quant.name().to_string(),
        context: args.context,
        settings: args.settings.clone(),
        space: space.clone(),
        reconstruction: recon.as_ref().map(|r| r.method()),
    };
    let mut costs = ExactCosts::new(base, quant, latency, args.context);
    if args.dry_run {
        return dry_run(args, &space, &base_path, quant, &mut costs);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let jsonl = args.out.join("evaluations.jsonl");
    let run_json = args.out.join("run.json");
    let mut earlier = Vec::new();
    if jsonl.exists() || run_json.exists() {
        ensure!(args.resume, "{}: a run is already there: pass --resume to continue it, or choose another --out", args.out.display());
        let old: RunFile = serde_json::from_str(&std::fs::read_to_string(&run_json).with_context(|| format!("reading {}", run_json.display()))?)
            .with_context(|| format!("{}: not a run file", run_json.display()))?;
        ensure!(old == run_file, "{}: the run was started with other settings; --resume needs the same ones", run_json.display());
        if jsonl.exists() {
            let (e, dropped) = read_evaluations(&jsonl)?;
            if dropped {
                eprintln!("{}: dropped an unfinished last line", jsonl.display());
            }
            let mut text = String::new();
            for ev in &e {
                text.push_str(&serde_json::to_string(ev)?);
                text.push('\n');
            }
            write_atomic(&jsonl, text.as_bytes())?;
            earlier = e;
        }
        eprintln!("resuming: {} finished evaluations", earlier.len());
    } else {
        write_atomic(&run_json, (serde_json::to_string_pretty(&run_file)? + "\n").as_bytes())?;
    }
    let mut oracle: Box<dyn AccuracyOracle> = if wants_accuracy {
        make_oracle(args, &base_path, quant, recon)?
    } else {
        Box::new(NoAccuracy)
    };
    let describe = oracle.describe();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&jsonl).with_context(|| format!("opening {}", jsonl.display()))?;
    let bar = if args.progress { indicatif::ProgressBar::new(args.settings.evals as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} evals, ETA {eta} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut predictors: Vec<String> = Vec::new();
    let t0 = Instant::now();
    let outcome = {
        let bar = &bar;
        let predictors = &mut predictors;
        let search = Search::new(space.encoding(), args.settings.clone(), oracle.as_mut(), &mut costs)?
            .with_cache(earlier)
            .with_observer(move |ev| {
                match ev {
                    Event::Evaluated { eval, fresh } => {
                        if fresh {
                            let mut line = serde_json::to_string(eval)?;
                            line.push('\n');
                            file.write_all(line.as_bytes())?;
                            file.sync_data()?;
                        }
                        bar.inc(1);
                    }
                    Event::Batch(p) => bar.set_message(format!("hypervolume {:.4}", p.hypervolume)),
                    Event::Predictor { batch, kind, mape } => {
                        predictors.push(format!("batch {batch}: {kind}, CV MAPE {mape:.2}%"));
                    }
                }
                Ok(())
            });
        search.run()?
    };
    bar.finish();
    let secs = t0.elapsed().as_secs_f64();
    write_outputs(args, &run_file, &outcome, &describe, &predictors, secs, &mc)?;
    Ok(outcome)
}

/// Objectives without accuracy never call the oracle.
struct NoAccuracy;

impl AccuracyOracle for NoAccuracy {
    fn describe(&self) -> String {
        "none".into()
    }
    fn accuracy(&mut self, _: &SubnetConfig) -> Result<f64, super::linas::BoxError> {
        Err("accuracy is not an objective".into())
    }
}

fn dry_run(args: &SearchArgs, space: &SearchSpace, base: &Path, quant: ExportQuant, costs: &mut ExactCosts) -> Result<Outcome> {
    use super::linas::CostModel;
    println!("space: {} layers ({:?}, at least {}), {} genes, {:.3e} sub-networks", space.n_layers, space.layer_mode, space.min_layers, space.encoding().n_genes(), space.size());
    let big = space.largest();
    let size = costs.size_bytes(&big).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("base model at {quant}: {size} bytes ({:.2} MiB)", size as f64 / 1048576.0);
    if args.settings.objectives.contains(&Objective::Latency) {
        let l = costs.latency_ms(&big).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("base model decode latency at context {}: {l:.3} ms/token ({:.1} tokens/s)", args.context, 1000.0 / l);
    }
    if args.settings.objectives.contains(&Objective::Accuracy) {
        let mut o = make_oracle(args, base, quant, Reconstructor::for_mode(base, args.reconstruct)?)?;
        let t0 = Instant::now();
        let a = o.accuracy(&big).map_err(|e| anyhow::anyhow!("{e}"))?;
        let s = t0.elapsed().as_secs_f64();
        println!("accuracy of the base model ({}): {a:.4}, measured in {s:.1} s", o.describe());
        println!(
            "budget: {} evaluations x <= {s:.1} s = at most {:.1} min (smaller sub-networks are faster)",
            args.settings.evals,
            args.settings.evals as f64 * s / 60.0
        );
    }
    Ok(Outcome { evaluations: Vec::new(), history: Vec::new(), front: Vec::new(), reference: Reference { latency_ms: None, size_bytes: None } })
}

fn objectives_json(e: &Evaluation) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    if let Some(a) = e.accuracy {
        m.insert("accuracy".into(), a.into());
    }
    if let Some(l) = e.latency_ms {
        m.insert("latency_ms".into(), l.into());
    }
    if let Some(s) = e.size_bytes {
        m.insert("size_bytes".into(), s.into());
    }
    m
}

/// A value with 5 significant-looking decimals, or in scientific notation when it is below 0.001 (the 1/PPL
/// stand-in accuracy and its hypervolumes are that small).
fn fmt_small(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 { format!("{v:.3e}") } else { format!("{v:.5}") }
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or(String::new(), |x| x.to_string())
}

fn write_outputs(
    args: &SearchArgs,
    run: &RunFile,
    o: &Outcome,
    describe: &str,
    predictors: &[String],
    secs: f64,
    mc: &ModelConfig,
) -> Result<()> {
    let out = &args.out;
    let name = out.file_name().map_or("search".into(), |n| n.to_string_lossy().into_owned());
    // evaluations.jsonl, consistent with this run (same content as appended, in order).
    let mut jl = String::new();
    for e in &o.evaluations {
        jl.push_str(&serde_json::to_string(e)?);
        jl.push('\n');
    }
    write_atomic(&out.join("evaluations.jsonl"), jl.as_bytes())?;
    // evaluations.csv
    let mut csv = String::from("index,batch,id,n_layers,params,accuracy,latency_ms,size_bytes,seconds,on_front,genes\n");
    for (i, e) in o.evaluations.iter().enumerate() {
        let genes: Vec<String> = e.genes.iter().map(|g| g.to_string()).collect();
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.3},{},{}\n",
            e.index,
            e.batch,
            e.id,
            e.config.layers.len(),
            mc.subnet_params(&e.config),
            fmt_opt(e.accuracy),
            fmt_opt(e.latency_ms),
            fmt_opt(e.size_bytes),
            e.seconds,
            o.front.contains(&i) as u8,
            genes.join(" ")
        ));
    }
    write_atomic(&out.join("evaluations.csv"), csv.as_bytes())?;
    let mut hv = String::from("batch,evals,hypervolume\n");
    for p in &o.history {
        hv.push_str(&format!("{},{},{}\n", p.batch, p.evals, p.hypervolume));
    }
    write_atomic(&out.join("hypervolume.csv"), hv.as_bytes())?;
    // pareto.json: front sorted by the first objective.
    let mut front: Vec<&Evaluation> = o.front.iter().map(|&i| &o.evaluations[i]).collect();
    front.sort_by(|a, b| b.accuracy.unwrap_or(0.0).total_cmp(&a.accuracy.unwrap_or(0.0)).then(a.index.cmp(&b.index)));
    let pf = ParetoFile {
        run: name.clone(),
        subnets: front
            .iter()
            .map(|e| ParetoEntry { id: e.id.clone(), config: e.config.clone(), objectives: objectives_json(e) })
            .collect(),
    };
    write_atomic(&out.join("pareto.json"), (serde_json::to_string_pretty(&pf)? + "\n").as_bytes())?;
    super::plot::pareto_svg(&out.join("pareto.svg"), &o.evaluations, &o.front, &run.settings.objectives, &run.space.largest())?;
    // report.md
    let mut r = String::new();
    r.push_str(&format!("# Search `{name}`\n\n"));
    r.push_str(&format!(
        "- input: `{}`; export quantization {}; profile: {}; decode context {}\n- algorithm {:?}, objectives {}, {} evaluations (budget {}), population {}, seed {}, inner evaluations {}\n- accuracy: {describe}\n- wall time {:.1} s\n\n",
        run.input,
        run.quant,
        run.profile.as_deref().unwrap_or("none"),
        run.context,
        run.settings.algo,
        run.settings.objectives.iter().map(|o| o.key()).collect::<Vec<_>>().join(", "),
        o.evaluations.len(),
        run.settings.evals,
        run.settings.population,
        run.settings.seed,
        run.settings.inner_evals,
        secs
    ));
    r.push_str("## Pareto front\n\n| id | layers | params (M) | accuracy | latency ms/token | tokens/s | size MiB |\n|---|---|---|---|---|---|---|\n");
    for e in &front {
        r.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} |\n",
            e.id,
            e.config.layers.len(),
            mc.subnet_params(&e.config) as f64 / 1e6,
            e.accuracy.map_or("-".into(), fmt_small),
            e.latency_ms.map_or("-".into(), |l| format!("{l:.3}")),
            e.latency_ms.map_or("-".into(), |l| format!("{:.1}", 1000.0 / l)),
            e.size_bytes.map_or("-".into(), |s| format!("{:.2}", s as f64 / 1048576.0)),
        ));
    }
    r.push_str("\n## Hypervolume after each batch\n\nObjectives normalized as 1 - accuracy, latency / base, size / base; reference point 1 in each.\n\n| batch | evaluations | hypervolume |\n|---|---|---|\n");
    for p in &o.history {
        r.push_str(&format!("| {} | {} | {} |\n", p.batch, p.evals, fmt_small(p.hypervolume)));
    }
    if !predictors.is_empty() {
        r.push_str("\n## Accuracy predictors (LINAS)\n\n");
        for p in predictors {
            r.push_str(&format!("- {p}\n"));
        }
    }
    write_atomic(&out.join("report.md"), r.as_bytes())?;
    let last: Option<&HvPoint> = o.history.last();
    println!(
        "{}: {} evaluations, {} on the front, hypervolume {}; wrote pareto.json, pareto.svg, evaluations.csv, report.md",
        out.display(),
        o.evaluations.len(),
        o.front.len(),
        fmt_small(last.map_or(0.0, |p| p.hypervolume))
    );
    Ok(())
}
