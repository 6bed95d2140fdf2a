//! Issue 10: the main job's `--quick` path end to end on the real assets: `scripts/demo.sh --quick --fresh` with
//! the binaries of this build (LLAMANAS_BIN_DIR), then its outputs exist and parse, every exported file loads in
//! the runtime and generates text (greedy, end-of-text ignored: a weak sub-network may answer the demo's chat
//! prompt with an immediate end of turn, which is an answer, not a failure), and the report has a row per model.
//!
//! The binaries `edgerun` and `llamanas` are the ones `cargo test --workspace` builds next to this test's
//! executable (`target/<profile>/`).

use std::path::{Path, PathBuf};
use std::process::Command;

use device_runtime::engine::{Logits, Model, Session, SessionOptions, sampler::argmax};
use device_runtime::gguf::GgufFile;
use device_runtime::tokenizer::Tokenizer;

/// Greedy continuation of `prompt` for `n` tokens (end-of-text not special-cased), detokenized.
fn greedy_text(path: &Path, prompt: &str, n: usize) -> String {
    let model = Model::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tok = Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap();
    let ids = tok.encode(prompt, false, false).unwrap();
    let mut s = Session::new(&model, SessionOptions { n_ctx: 64, threads: 2, ..Default::default() }).unwrap();
    let mut logits = s.prefill(&ids, Logits::Last).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        assert!(logits.iter().all(|x| x.is_finite()), "{}: non-finite logits", path.display());
        let t = argmax(&logits);
        out.push(t);
        logits = s.decode(t).unwrap();
    }
    tok.decode(&out, true).unwrap()
}

fn bin_dir() -> PathBuf {
    // target/<profile>/deps/demo_quick-<hash> -> target/<profile>/
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    for b in ["edgerun", "llamanas"] {
        assert!(dir.join(b).is_file(), "{} is missing: run `cargo test --workspace` (it builds the binaries)", dir.join(b).display());
    }
    dir
}

#[test]
fn demo_quick_runs_end_to_end() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let run = tempfile::tempdir().unwrap();
    let run_dir = run.path().join("demo-quick");
    let o = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .args(["--quick", "--fresh"])
        .env("LLAMANAS_BIN_DIR", bin_dir())
        .env("LLAMANAS_RUN_DIR", &run_dir)
        .env("LLAMANAS_ASSETS", llamanas_tests::assets_dir())
        .current_dir(root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "demo.sh --quick failed:\n{err}");
    for s in 1..=9 {
        assert!(err.contains(&format!("== [{s}/9]")), "stage {s} not shown:\n{err}");
    }
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains("| base (SmolLM2, Q8_0) | 30 |"), "{report}");
    assert!(report.contains("| full network, fine-tuned | 30 |"), "{report}");
    let svg = std::fs::read_to_string(run_dir.join("pareto.svg")).unwrap();
    assert!(svg.contains("<svg"));
    let pareto: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("search/pareto.json")).unwrap()).unwrap();
    let front = pareto["subnets"].as_array().unwrap();
    assert!(!front.is_empty());
    // One exported file per front member, each loads in the runtime and generated text.
    let exported: Vec<PathBuf> = std::fs::read_dir(run_dir.join("export"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    // --quick exports at most 3 front members (spread by size), each named after its id.
    assert!((1..=front.len().min(3)).contains(&exported.len()), "{} files for a front of {}", exported.len(), front.len());
    for p in exported.iter().chain([&run_dir.join("base-q8_0.gguf"), &run_dir.join("full-ft-q8_0.gguf")]) {
        let text = greedy_text(p, "The capital of France is", 8);
        assert!(!text.trim().is_empty(), "{} generated {text:?}", p.display());
        let name = p.file_stem().unwrap().to_str().unwrap();
        assert!(run_dir.join("runs").join(format!("{name}-generate.txt")).is_file(), "{name}: no generate output");
        for (file, task) in [("eval-arc", "arc_easy"), ("eval-piqa", "piqa")] {
            let f = run_dir.join("runs").join(format!("{name}-{file}.json"));
            let ev: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            assert_eq!(ev["tasks"][0]["task"], task, "{}", f.display());
            let acc = ev["tasks"][0]["acc_norm"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc), "{}: acc_norm {acc}", f.display());
        }
        let row = match name {
            "base-q8_0" => "base (SmolLM2, Q8_0)".to_string(),
            "full-ft-q8_0" => "full network, fine-tuned".to_string(),
            _ => front.iter().find(|e| name.contains(e["id"].as_str().unwrap())).map(|e| e["id"].as_str().unwrap().to_string()).unwrap(),
        };
        assert!(report.contains(&format!("| {row} |")), "no row {row} in the report");
    }
}
