//! `llamanas export` end to end on the real SmolLM2 model: config and pareto.json inputs, super-network
//! folders, output naming, provenance, and bad input refused before anything is written.

mod common;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::gguf::GgufFile;
use device_runtime::subnet::{self, ExportQuant};
use serde_json::{Value, json};

fn llamanas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llamanas")).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "llamanas failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn fails(o: &Output, needle: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure containing {needle:?}");
    assert!(e.contains(needle), "stderr lacks {needle:?}: {e}");
}

fn files(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        }
        Err(_) => vec![],
    }
}

fn write(path: &Path, v: &Value) -> String {
    std::fs::write(path, v.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

fn entry(cfg: &SubnetConfig, acc: f64) -> Value {
    json!({"id": cfg.id(), "config": cfg, "objectives": {"accuracy": acc, "latency_ms": 12.5}})
}

#[test]
fn pareto_pick_all_and_one() {
    let base = common::smollm2();
    let tmp = tempfile::tempdir().unwrap();
    let a = SubnetConfig { layers: (0..30).collect(), ffn: vec![512; 30], kv_heads: vec![1; 30] };
    let b = SubnetConfig { layers: vec![0, 4, 29], ffn: vec![1536, 256, 0], kv_heads: vec![3, 1, 2] };
    let pareto = write(&tmp.path().join("pareto.json"), &json!({"run": "demo", "subnets": [entry(&a, 0.4), entry(&b, 0.3)]}));
    let out = tmp.path().join("out");
    let o = llamanas(&["export", base.to_str().unwrap(), "--pareto", &pareto, "--pick", "all", "--quant", "q4_1",
        "--out", out.to_str().unwrap(), "--json"]);
    let stdout = ok(&o);
    let names = files(&out);
    assert_eq!(
        names,
        vec![format!("SmolLM2-135M-Instruct.Q4_1-{}-q4_1.gguf", b.id()), format!("SmolLM2-135M-Instruct.Q4_1-{}-q4_1.gguf", a.id())]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    let reports: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        let path = PathBuf::from(r["path"].as_str().unwrap());
        assert_eq!(r["size_bytes"], r["predicted_bytes"]);
        assert_eq!(r["size_bytes"].as_u64().unwrap(), std::fs::metadata(&path).unwrap().len());
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.get_str(subnet::KEY_RUN).unwrap(), "demo");
        let obj: Value = serde_json::from_str(f.get_str(subnet::KEY_OBJECTIVES).unwrap()).unwrap();
        assert_eq!(obj["latency_ms"], json!(12.5));
        ModelConfig::from_gguf(&f).unwrap();
    }
    assert_eq!(reports[0]["arch"], json!("llama"));
    assert_eq!(reports[1]["arch"], json!("deci"));

    // One pick to a file name.
    let file = tmp.path().join("one.gguf");
    let o = llamanas(&["export", base.to_str().unwrap(), "--pareto", &pareto, "--pick", &b.id(), "--quant", "q8_0",
        "--out", file.to_str().unwrap()]);
    let text = ok(&o);
    assert!(text.contains("(equal)") && text.contains(&b.id()), "{text}");
    let f = GgufFile::open(&file).unwrap();
    assert_eq!(f.get_str(subnet::KEY_SUBNET).unwrap(), b.canonical_json());
    // Without search provenance keys the plain prediction is exact; with them it is the plan's.
    let g = GgufFile::open(&base).unwrap();
    assert!(subnet::predicted_gguf_size(&g, &b, ExportQuant::Q8_0).unwrap() < std::fs::metadata(&file).unwrap().len());
}

#[test]
fn subnet_config_and_supernet_folder() {
    let base = common::smollm2();
    let tmp = tempfile::tempdir().unwrap();
    let sn = tmp.path().join("supernet");
    std::fs::create_dir(&sn).unwrap();
    std::os::unix::fs::symlink(&base, sn.join("supernet.gguf")).unwrap();
    let cfg = SubnetConfig { layers: vec![1, 2], ffn: vec![1024, 1024], kv_heads: vec![3, 3] };
    let c = write(&tmp.path().join("c.json"), &serde_json::to_value(&cfg).unwrap());
    let out = tmp.path().join("o");
    ok(&llamanas(&["export", sn.to_str().unwrap(), "--subnet", &c, "--quant", "f16", "--out", out.to_str().unwrap()]));
    let name = format!("subnet-{}-f16.gguf", cfg.id());
    assert_eq!(files(&out), vec![name.clone()]);
    let f = GgufFile::open(out.join(&name)).unwrap();
    let g = GgufFile::open(&base).unwrap();
    assert_eq!(f.file_size(), subnet::predicted_gguf_size(&g, &cfg, ExportQuant::F16).unwrap());
    assert_eq!(f.get_u32("general.file_type").unwrap(), 1);
    drop(f);
    // An existing output is not overwritten without --force (as import and search ask), even by another
    // sub-network exported to the same .gguf path.
    let file = out.join(&name);
    let before = std::fs::read(&file).unwrap();
    let other = write(&tmp.path().join("d.json"), &json!({"layers": [1], "ffn": [512], "kv_heads": [1]}));
    fails(&llamanas(&["export", sn.to_str().unwrap(), "--subnet", &other, "--quant", "f16", "--any-subnet", "--out", file.to_str().unwrap()]),
        "exists: pass --force to overwrite it");
    assert_eq!(std::fs::read(&file).unwrap(), before, "the existing file was changed");
    ok(&llamanas(&["export", sn.to_str().unwrap(), "--subnet", &other, "--quant", "f16", "--any-subnet", "--force", "--out", file.to_str().unwrap()]));
    assert_ne!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn bad_input_writes_nothing() {
    let base = common::smollm2();
    let b = base.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let cfg = |v: Value| write(&tmp.path().join("c.json"), &v);

    let c = cfg(json!({"layers": [0, 30], "ffn": [1536, 1536], "kv_heads": [3, 3]}));
    fails(&llamanas(&["export", b, "--subnet", &c, "--out", o]), "layer 30 is out of range (base has 30 layers)");
    let c = cfg(json!({"layers": [0, 1], "ffn": [1536, 100], "kv_heads": [3, 3]}));
    fails(&llamanas(&["export", b, "--subnet", &c, "--quant", "q4_0", "--out", o]),
        "layer 1: FFN width 100 is not a multiple of the Q4_0 block size 32");
    let c = cfg(json!({"layers": [5], "ffn": [0], "kv_heads": [0]}));
    fails(&llamanas(&["export", b, "--subnet", &c, "--out", o]), "layer 5 is kept with 0 KV heads and FFN 0");
    let c = cfg(json!({"layers": [5], "ffn": [64], "kv_heads": [4]}));
    fails(&llamanas(&["export", b, "--subnet", &c, "--out", o]), "kv_heads 4 > base 3");
    let c = cfg(json!({"layers": [5], "ffn": [64]}));
    fails(&llamanas(&["export", b, "--subnet", &c, "--out", o]), "not a sub-network config");
    // An unknown key is refused, named (a "quant" here would otherwise be silently ignored).
    let c = cfg(json!({"layers": [5], "ffn": [64], "kv_heads": [1], "quant": "q4_0"}));
    fails(&llamanas(&["export", b, "--subnet", &c, "--out", o]), "unknown field `quant`");
    fails(&llamanas(&["export", b, "--subnet", &c, "--quant", "q6_k", "--out", o]), "unknown quantization \"q6_k\"");

    // pareto.json: a bad entry among good ones stops everything before the first file is written.
    let good = SubnetConfig { layers: vec![0], ffn: vec![256], kv_heads: vec![1] };
    let bad = SubnetConfig { layers: vec![0], ffn: vec![250], kv_heads: vec![1] };
    let p = write(&tmp.path().join("p.json"), &json!({"run": "r", "subnets": [entry(&good, 0.1), entry(&bad, 0.2)]}));
    fails(&llamanas(&["export", b, "--pareto", &p, "--pick", "all", "--out", o]), "FFN width 250");
    fails(&llamanas(&["export", b, "--pareto", &p, "--pick", "nope", "--out", o]), "no sub-network \"nope\"");
    fails(&llamanas(&["export", b, "--pareto", &p, "--pick", "all", "--quant", "f32", "--out", &format!("{o}/x.gguf")]),
        "2 sub-networks need an output folder");
    let mut wrong = entry(&good, 0.1);
    wrong["id"] = json!("000000000000");
    let p = write(&tmp.path().join("p2.json"), &json!({"run": "r", "subnets": [wrong]}));
    fails(&llamanas(&["export", b, "--pareto", &p, "--pick", "all", "--out", o]), "is not the id of its config");
    fails(&llamanas(&["export", tmp.path().to_str().unwrap(), "--pareto", &p, "--pick", "all", "--out", o]),
        "must contain supernet.gguf");
    fails(&llamanas(&["export", b, "--pick", "all", "--out", o]), "--pareto");
    assert!(files(&out).is_empty(), "files written on bad input: {:?}", files(&out));
}

#[test]
fn supernet_folder_refuses_a_subnet_outside_its_search_space() {
    // A super-network folder made by `llamanas import` (no reordering: fast), whose default space has FFN
    // widths 512..1536 in steps of 256 and keeps at least 15 of 30 layers.
    let dir = tempfile::tempdir().unwrap();
    let sn = dir.path().join("sn");
    ok(&llamanas(&["import", common::smollm2().to_str().unwrap(), "--out", sn.to_str().unwrap(), "--no-reorder", "--dtype", "f16"]));
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    // FFN 1000 is within the base width (and a multiple of the F16 block size 1) but not a choice of the space.
    let cfg = SubnetConfig { layers: (0..30).collect(), ffn: [vec![1024], vec![1536; 29]].concat(), kv_heads: vec![3; 30] };
    let mut bad = cfg.clone();
    bad.ffn[0] = 1000;
    let c = write(&dir.path().join("bad.json"), &serde_json::to_value(&bad).unwrap());
    fails(&llamanas(&["export", sn.to_str().unwrap(), "--subnet", &c, "--quant", "f16", "--out", o]), "layer 0: ffn 1000 is not a choice");
    // Too few layers (10 < 15).
    let few = SubnetConfig { layers: (0..10).collect(), ffn: vec![1536; 10], kv_heads: vec![3; 10] };
    let c = write(&dir.path().join("few.json"), &serde_json::to_value(&few).unwrap());
    fails(&llamanas(&["export", sn.to_str().unwrap(), "--subnet", &c, "--quant", "f16", "--out", o]), "is not in the space");
    // --any-subnet accepts it (the pruning baselines lie outside the space); --no-reorder wrote no calibration
    // statistics, so --reconstruct is refused with the remedy, before anything is written.
    fails(
        &llamanas(&["export", sn.to_str().unwrap(), "--subnet", &c, "--quant", "f16", "--any-subnet", "--reconstruct", "--out", o]),
        "no calibration statistics",
    );
    assert!(files(&out).is_empty(), "nothing may be written: {:?}", files(&out));
    // In the space: exported (sliced: the folder has no calib.gguf).
    let c = write(&dir.path().join("good.json"), &serde_json::to_value(&cfg).unwrap());
    ok(&llamanas(&["export", sn.to_str().unwrap(), "--subnet", &c, "--quant", "f16", "--out", o]));
    assert_eq!(files(&out).len(), 1);
}

#[test]
fn import_space_is_stored_and_enforced_by_export() {
    // `llamanas import --space` with the demo space (>= 20 of 30 layers, FFN 768..1536, KV 1..3): the space is in
    // supernet.json, and export refuses a 16-layer sub-network that the default space would allow.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let space = root.join("configs/smollm2-135m-demo.space.json");
    let dir = tempfile::tempdir().unwrap();
    let sn = dir.path().join("sn");
    let m = common::smollm2();
    ok(&llamanas(&["import", m.to_str().unwrap(), "--out", sn.to_str().unwrap(), "--no-reorder", "--dtype", "f16", "--space", space.to_str().unwrap()]));
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sn.join("supernet.json")).unwrap()).unwrap();
    assert_eq!(meta["search_space"]["min_layers"], 20);
    assert_eq!(meta["search_space"]["ffn_choices"][0], serde_json::json!([768, 1024, 1280, 1536]));
    let out = dir.path().join("out");
    let few = SubnetConfig { layers: (0..16).collect(), ffn: vec![1536; 16], kv_heads: vec![3; 16] };
    let c = write(&dir.path().join("few.json"), &serde_json::to_value(&few).unwrap());
    fails(&llamanas(&["export", sn.to_str().unwrap(), "--subnet", &c, "--quant", "f16", "--out", out.to_str().unwrap()]), "is not in the space");
    // A space that does not fit the model is refused before anything is written.
    let bad = write(&dir.path().join("bad-space.json"), &serde_json::json!({"n_layers": 12, "layer_mode": "first_k", "min_layers": 6, "ffn_choices": [], "kv_choices": []}));
    let sn2 = dir.path().join("sn2");
    fails(&llamanas(&["import", m.to_str().unwrap(), "--out", sn2.to_str().unwrap(), "--no-reorder", "--space", &bad]), "n_layers is 12");
    assert!(!sn2.exists());
    // A file whose tensor shapes contradict its metadata is refused by the engine's checks, also without
    // calibration (--no-reorder), before anything is written.
    let f = GgufFile::open(&m).unwrap();
    let mut w = device_runtime::gguf::GgufWriter::from_file(&f).unwrap();
    w.add_metadata("llama.feed_forward_length", device_runtime::gguf::MetaValue::U32(1024));
    let shape = dir.path().join("shape.gguf");
    w.write_atomic(&shape).unwrap();
    let sn3 = dir.path().join("sn3");
    fails(&llamanas(&["import", shape.to_str().unwrap(), "--out", sn3.to_str().unwrap(), "--no-reorder"]), "shape [576, 1536], expected [576, 1024]");
    assert!(!sn3.exists());
}
