//! `llamanas eval` end to end on the real model: JSON output of two tasks on a small --limit, the table,
//! and clear errors for bad input.

use std::process::Command;

fn llamanas() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llamanas"))
}

fn model_path() -> std::path::PathBuf {
    let p = llamanas::data::assets_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh or set LLAMANAS_ASSETS", p.display());
    p
}

#[test]
fn eval_json_and_table() {
    let model = model_path();
    let out = llamanas()
        .args(["eval", model.to_str().unwrap(), "--tasks", "arc_easy,copa", "--limit", "4", "--threads", "2", "--json"])
        .env("LLAMANAS_ASSETS", llamanas::data::assets_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["task"], "arc_easy");
    assert_eq!(tasks[1]["task"], "copa");
    for t in tasks {
        assert_eq!(t["n"], 4);
        let acc = t["acc"].as_f64().unwrap();
        // 4 documents: the accuracy is a multiple of 1/4.
        assert_eq!((acc * 4.0).round(), acc * 4.0);
        assert!(t["tokens"].as_u64().unwrap() > 0);
    }
    let table = llamanas()
        .args(["eval", model.to_str().unwrap(), "--tasks", "copa", "--limit", "2", "--threads", "1"])
        .env("LLAMANAS_ASSETS", llamanas::data::assets_dir())
        .output()
        .unwrap();
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("acc_norm %") && text.contains("copa"), "{text}");
}

#[test]
fn eval_errors_name_the_problem() {
    let model = model_path();
    let out = llamanas().args(["eval", model.to_str().unwrap(), "--tasks", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown task \"nope\""));
    // --limit 0 would score nothing and print 0.00: refused.
    let out = llamanas().args(["eval", model.to_str().unwrap(), "--tasks", "arc_easy", "--limit", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value '0' for '--limit <LIMIT>': must be at least 1"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = llamanas().args(["eval", "/nonexistent.gguf", "--tasks", "copa"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.gguf"));
    let dir = std::env::temp_dir().join(format!("llamanas-eval-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"layers\":[0]}").unwrap();
    let out = llamanas()
        .args(["eval", model.to_str().unwrap(), "--subnet", bad.to_str().unwrap(), "--tasks", "copa", "--limit", "1"])
        .env("LLAMANAS_ASSETS", llamanas::data::assets_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `--cache`: a run killed in the middle continues from its cache file, scores only the missing documents,
/// and gives the same scores as a run without a cache.
#[test]
fn eval_cache_resumes_a_killed_run() {
    let model = model_path();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("arc.jsonl");
    let args = |c: bool| {
        let mut a = vec!["eval", model.to_str().unwrap(), "--tasks", "arc_easy", "--limit", "24", "--threads", "1", "--json"];
        if c {
            a.extend(["--cache", cache.to_str().unwrap()]);
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let docs_in = |p: &std::path::Path| std::fs::read_to_string(p).map(|t| t.lines().count().saturating_sub(1)).unwrap_or(0);
    let mut child = llamanas()
        .args(args(true))
        .env("LLAMANAS_ASSETS", llamanas::data::assets_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut finished = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            finished = true;
            break;
        }
        if docs_in(&cache) >= 3 {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before = docs_in(&cache);
    eprintln!("first run {} after {before} documents", if finished { "finished" } else { "killed" });
    assert!(finished || before < 24, "killed after {before} documents");
    let resumed = llamanas().args(args(true)).env("LLAMANAS_ASSETS", llamanas::data::assets_dir()).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let plain = llamanas().args(args(false)).env("LLAMANAS_ASSETS", llamanas::data::assets_dir()).output().unwrap();
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let r: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    let p: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    let (r, p) = (&r["tasks"][0], &p["tasks"][0]);
    assert_eq!(r["n"], 24);
    assert_eq!(r["resumed"].as_u64().unwrap() as usize, before.min(24));
    assert_eq!(p["resumed"], 0);
    for m in ["acc", "acc_norm", "acc_bytes"] {
        assert_eq!(r[m], p[m], "{m}");
    }
    assert_eq!(docs_in(&cache), 24);
    // Every document is in the cache once.
    let text = std::fs::read_to_string(&cache).unwrap();
    let mut seen: Vec<u64> = text.lines().skip(1).map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["doc"].as_u64().unwrap()).collect();
    seen.sort();
    assert_eq!(seen, (0..24).collect::<Vec<u64>>());
    // Another sub-network / subset must not use this cache.
    let mut other = args(true);
    other[5] = "12".into();
    let out = llamanas().args(other).env("LLAMANAS_ASSETS", llamanas::data::assets_dir()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("arc.jsonl") && err.contains("--limit"), "{err}");
}
