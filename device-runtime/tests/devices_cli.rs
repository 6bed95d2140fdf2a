//! `edgerun devices`: the device list and finding a committed profile measured on this machine.

use std::path::Path;
use std::process::Command;

fn edgerun(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgerun")).args(args).output().unwrap()
}

#[test]
fn devices_json_lists_the_cpu() {
    let o = edgerun(&["devices", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cpu"]["logical_cpus"].as_u64().unwrap() as usize, std::thread::available_parallelism().unwrap().get());
    assert_eq!(v["cpu"]["arch"], std::env::consts::ARCH);
    assert_eq!(v["backends"], serde_json::json!(device_runtime::backend::available()));
    // With the wgpu feature: the adapters as a list (possibly empty), else why there is none.
    assert_eq!(v["wgpu"].is_array(), cfg!(feature = "wgpu"), "{}", v["wgpu"]);
}

#[test]
fn find_profile_matches_this_machine_only() {
    // A committed profile, re-labelled with this machine's facts, must be found; the same with another CPU must not.
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/amd-epyc-2c-24g-t2-q8_0.json");
    let mut p: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&committed).unwrap()).unwrap();
    let o = edgerun(&["devices", "--json"]);
    let here: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    p["device"] = here["cpu"].clone();
    p["runtime_version"] = env!("CARGO_PKG_VERSION").into();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("here-t2-q8_0.json");
    std::fs::write(&good, serde_json::to_string(&p).unwrap()).unwrap();
    let d = dir.path().to_str().unwrap();
    let o = edgerun(&["devices", "--find-profile", d, "--threads", "2", "--quant", "q8_0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), good.to_str().unwrap());
    // Asking for another quantization finds nothing and says why.
    let o = edgerun(&["devices", "--find-profile", d, "--threads", "2", "--quant", "q4_0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("quantization q8_0 (wanted q4_0)"));
    // Another CPU is refused.
    p["device"]["cpu_brand"] = "Some Other CPU".into();
    std::fs::write(&good, serde_json::to_string(&p).unwrap()).unwrap();
    let o = edgerun(&["devices", "--find-profile", d, "--threads", "2", "--quant", "q8_0"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another device: CPU:") && err.contains("\"Some Other CPU\" in the profile"), "{err}");
}
