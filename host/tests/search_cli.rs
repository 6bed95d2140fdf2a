//! `llamanas search` end to end on the real SmolLM2-135M with the committed CPU profile and a tiny budget:
//! outputs exist and parse, sizes agree with the files `llamanas export` writes, `--resume` re-measures
//! nothing, a second run in the same folder is refused, bad input gives clear errors.

mod common;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use llamanas::export::ParetoFile;
use llamanas::search::linas::Evaluation;

fn profile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/amd-epyc-2c-24g-t2-q8_0.json")
}

fn llamanas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llamanas")).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "llamanas failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn fails(o: &Output, needle: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure containing {needle:?}");
    assert!(e.contains(needle), "stderr lacks {needle:?}: {e}");
}

#[test]
fn search_on_the_real_model_with_a_tiny_budget() {
    let model = common::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (m, p, o) = (model.to_str().unwrap(), profile(), out.to_str().unwrap().to_string());
    let args = [
        "search", m, "--task", "ppl:/usr/share/common-licenses/GPL-3", "--limit", "1", "--profile", p.to_str().unwrap(),
        "--objectives", "accuracy,latency,size", "--algo", "linas", "--evals", "4", "--population", "2",
        "--inner-evals", "200", "--seed", "1", "--threads", "2", "--quiet", "--out", &o,
    ];
    ok(&llamanas(&args));
    for f in ["run.json", "evaluations.jsonl", "evaluations.csv", "hypervolume.csv", "pareto.json", "pareto.svg", "report.md"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let evals: Vec<Evaluation> = std::fs::read_to_string(out.join("evaluations.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(evals.len(), 4);
    // The first evaluation is the base model: 30 layers, full widths.
    assert_eq!(evals[0].config.layers.len(), 30);
    for e in &evals {
        let a = e.accuracy.unwrap();
        assert!(a > 0.0 && a < 1.0, "1/perplexity {a}");
        assert!(e.latency_ms.unwrap() > 0.0);
    }
    // llama.cpp measures PPL 18.4 for this model on this text (ctx 512); chunks of 128 tokens score less
    // context, so the PPL is higher but the same order: 1/PPL between 1/60 and 1/10.
    let a0 = evals[0].accuracy.unwrap();
    assert!(a0 > 1.0 / 60.0 && a0 < 1.0 / 10.0, "base 1/PPL {a0}");
    let pareto: ParetoFile = serde_json::from_str(&std::fs::read_to_string(out.join("pareto.json")).unwrap()).unwrap();
    assert!(!pareto.subnets.is_empty());
    let svg = std::fs::read_to_string(out.join("pareto.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("circle"));
    assert_eq!(std::fs::read_to_string(out.join("evaluations.csv")).unwrap().lines().count(), 5);
    // The size objective equals the file `llamanas export --subnet` writes (no search provenance keys;
    // docs/EXPORT.md), whose layout is checked against gguf-py.
    let e = &pareto.subnets[pareto.subnets.len() - 1];
    let gguf = dir.path().join("x.gguf");
    let cfg = dir.path().join("cfg.json");
    std::fs::write(&cfg, serde_json::to_string(&e.config).unwrap()).unwrap();
    ok(&llamanas(&["export", m, "--subnet", cfg.to_str().unwrap(), "--quant", "q8_0", "--out", gguf.to_str().unwrap()]));
    assert_eq!(std::fs::metadata(&gguf).unwrap().len(), e.objectives["size_bytes"].as_u64().unwrap());
    // Again in the same folder: refused without --resume; with it nothing is measured again.
    fails(&llamanas(&args), "--resume");
    let mut resumed: Vec<&str> = args.to_vec();
    resumed.push("--resume");
    let log = ok(&llamanas(&resumed));
    assert!(log.contains("resuming: 4 finished evaluations"), "{log}");
    let again: Vec<Evaluation> = std::fs::read_to_string(out.join("evaluations.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Resume re-used every evaluation unchanged (same seconds too). Floats are compared to 1e-12 relative:
    // serde_json's default float parser may be one ulp off on the JSONL round trip (1.548220423136644e-7 was
    // read back as 1.5482204231366438e-7), and its exact `float_roundtrip` feature would rebuild burn.
    assert_eq!(again.len(), evals.len());
    let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
        (None, None) => true,
        _ => false,
    };
    for (a, b) in again.iter().zip(&evals) {
        assert_eq!((a.index, a.batch, &a.id, &a.genes, &a.config, a.size_bytes), (b.index, b.batch, &b.id, &b.genes, &b.config, b.size_bytes));
        assert!(
            close(a.accuracy, b.accuracy) && close(a.latency_ms, b.latency_ms) && close(Some(a.seconds), Some(b.seconds)),
            "resumed {a:?} differs from {b:?}"
        );
    }
    // Other settings with --resume: refused.
    let mut other = resumed.clone();
    let i = other.iter().position(|a| *a == "--seed").unwrap() + 1;
    other[i] = "2";
    fails(&llamanas(&other), "other settings");
}

#[test]
fn bad_input_is_refused_clearly() {
    let model = common::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let m = model.to_str().unwrap();
    let out = dir.path().join("r");
    let o = out.to_str().unwrap();
    fails(&llamanas(&["search", m, "--objectives", "accuracy", "--out", o, "--task", "ppl:/usr/share/common-licenses/GPL-3"]), "2 or 3");
    fails(&llamanas(&["search", m, "--objectives", "accuracy,latency", "--out", o, "--task", "ppl:/x"]), "--profile");
    let space = dir.path().join("s.json");
    std::fs::write(&space, r#"{"n_layers": 12, "layer_mode": "first_k", "min_layers": 6, "ffn_choices": [], "kv_choices": []}"#).unwrap();
    fails(
        &llamanas(&["search", m, "--objectives", "size,accuracy", "--space", space.to_str().unwrap(), "--out", o]),
        "n_layers is 12, the model has 30",
    );
    // FFN widths that are not whole Q8_0 blocks: refused before the first evaluation (also by --dry-run).
    let mut sp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smollm2-135m-recon.space.json"),
    ).unwrap()).unwrap();
    sp["ffn_choices"][0] = serde_json::json!([100, 1536]);
    std::fs::write(&space, sp.to_string()).unwrap();
    fails(&llamanas(&["search", m, "--space", space.to_str().unwrap(), "--dry-run", "--out", o]), "layer 0: FFN width 100 is not a multiple of 32");
    fails(&llamanas(&["search", m, "--limit", "0", "--out", o]), "must be at least 1");
    // `prune --kv-heads` outside 1..=3 (0 would keep no attention, more would be clamped silently).
    for k in ["0", "18446744073709551615"] {
        let p = profile();
        fails(&llamanas(&["prune", m, "--method", "uniform-width", "--target-speedup", "1.2", "--profile", p.to_str().unwrap(),
            "--kv-heads", k, "--out", dir.path().join("p.json").to_str().unwrap()]), "must be in 1..=3");
    }
    fails(&llamanas(&["search", m, "--evals", "4", "--population", "4294967296", "--out", o, "--task", "ppl:/usr/share/common-licenses/GPL-3"]),
        "population 4294967296 is larger than the budget of 4 evaluations");
    std::fs::write(&space, "{").unwrap();
    fails(&llamanas(&["search", m, "--space", space.to_str().unwrap(), "--out", o]), "not a search space");
    let bad_profile = dir.path().join("p.json");
    std::fs::write(&bad_profile, "{\"schema_version\": 1}").unwrap();
    fails(&llamanas(&["search", m, "--profile", bad_profile.to_str().unwrap(), "--out", o]), "p.json");
}

#[test]
fn dry_run_prints_the_space_and_the_budget() {
    let model = common::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("d");
    let log = ok(&llamanas(&[
        "search", model.to_str().unwrap(), "--dry-run", "--task", "ppl:/usr/share/common-licenses/GPL-3", "--limit", "1",
        "--profile", profile().to_str().unwrap(), "--evals", "120", "--out", o.to_str().unwrap(),
    ]));
    // Hand count of the default space: Σ_{k>=15} C(30,k) 15^k = 1.329e36 (python: math.comb).
    assert!(log.contains("90 genes, 1.329e36 sub-networks"), "{log}");
    assert!(log.contains("budget: 120 evaluations"), "{log}");
    assert!(!o.exists(), "--dry-run writes nothing");
}

#[test]
fn fast_size_of_the_inner_loop_is_within_0_05_percent_of_the_exact_size() {
    use device_runtime::arch::SubnetConfig;
    use device_runtime::gguf::GgufFile;
    use device_runtime::subnet::ExportQuant;
    use llamanas::search::linas::CostModel;
    use llamanas::search::objectives::ExactCosts;
    let base = GgufFile::open(common::smollm2()).unwrap();
    let mut c = ExactCosts::new(base, ExportQuant::Q8_0, None, 512);
    let cfgs = [
        SubnetConfig { layers: (0..30).collect(), ffn: vec![1536; 30], kv_heads: vec![3; 30] },
        SubnetConfig { layers: (0..15).collect(), ffn: vec![512; 15], kv_heads: vec![1; 15] },
        SubnetConfig {
            layers: (0..30).filter(|l| l % 3 != 1).collect(),
            ffn: (0..20).map(|i| [512, 768, 1024, 1280, 1536][i % 5]).collect(),
            kv_heads: (0..20).map(|i| 1 + i % 3).collect(),
        },
    ];
    for cfg in &cfgs {
        let fast = c.size_bytes_fast(cfg).unwrap();
        let exact = c.size_bytes(cfg).unwrap();
        // Measured: 0 bytes off for the full model, 8256 of 50.7 MB (0.016%) for the 15-layer one.
        assert!(fast.abs_diff(exact) as f64 <= 5e-4 * exact as f64, "{}: fast {fast} exact {exact}", cfg.id());
    }
}
