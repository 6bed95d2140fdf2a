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
