//! Parity of `device_runtime::quant` with gguf-py 0.19 (`gguf.quants.dequantize` / `quantize`), byte for byte.
//!
//! The reference outputs come from `scripts/ref/quant_ref.py`, run with `python3`; the tests fail (never skip)
//! when python3, numpy, gguf-py or the real model (`$LLAMANAS_ASSETS`) are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use device_runtime::gguf::{GgmlType, GgufFile};
use device_runtime::quant::{dequantize, dequantize_to_vec, quantize};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The real model, found like `llamanas_tests::smollm2_path()`: `$LLAMANAS_ASSETS`, else `<root>/assets`.
fn smollm2_path() -> PathBuf {
    let dir = std::env::var_os("LLAMANAS_ASSETS").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("assets"));
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh (or set LLAMANAS_ASSETS)", p.display());
    p
}

/// Run `python3 scripts/ref/quant_ref.py ARGS`; panics with its stderr when it fails.
fn run_ref(args: &[&std::ffi::OsStr]) {
    let script = workspace_root().join("scripts/ref/quant_ref.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (needed for the gguf-py reference): {e}"));
    assert!(
        out.status.success(),
        "{} {:?} failed ({}): {}\n(needs: pip install gguf==0.19.0 numpy)",
        script.display(),
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// One job for `quant_ref.py jobs`: input written now, output read after the run.
struct Job {
    op: &'static str,
    ty: GgmlType,
    label: String,
    input: Vec<u8>,
}

/// Run the jobs through gguf-py; returns each job's output bytes.
fn run_jobs(dir: &Path, jobs: &[Job]) -> Vec<Vec<u8>> {
    let mut manifest = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        let input = format!("{i}.in");
        std::fs::write(dir.join(&input), &j.input).unwrap();
        manifest.push(serde_json::json!({"op": j.op, "type": j.ty.name(), "input": input, "output": format!("{i}.out")}));
    }
    std::fs::write(dir.join("jobs.json"), serde_json::to_vec(&manifest).unwrap()).unwrap();
    run_ref(&["jobs".as_ref(), dir.as_os_str()]);
    (0..jobs.len()).map(|i| std::fs::read(dir.join(format!("{i}.out"))).unwrap()).collect()
}

/// Index and values of the first difference, for a readable failure.
fn first_diff(a: &[u8], b: &[u8], unit: usize) -> String {
    if a.len() != b.len() {
        return format!("lengths differ: {} vs {}", a.len(), b.len());
    }
    let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap();
    let k = i / unit * unit;
    format!("first difference at byte {i} (unit {}): ours {:02x?}, gguf-py {:02x?}", i / unit, &a[k..k + unit], &b[k..k + unit])
}

/// Every tensor of the real SmolLM2 file (210 Q4_1, 61 F32, 1 Q8_0) dequantizes to the same bytes as gguf-py.
#[test]
fn real_file_dequantize_matches_gguf_py() {
    let path = smollm2_path();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ref.json");
    run_ref(&["gguf".as_ref(), path.as_os_str(), json.as_os_str()]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(rows.len(), 272);
    let gguf = GgufFile::open(&path).unwrap();
    assert_eq!(gguf.tensors().len(), rows.len());
    let mut counts = std::collections::BTreeMap::new();
    for (t, r) in gguf.tensors().iter().zip(&rows) {
        // The two readers agree on what the tensor is and where its data lies.
        let name = t.name.as_str();
        let ty = t.ty;
        assert_eq!(name, r["name"].as_str().unwrap());
        assert_eq!(ty.name(), r["type"].as_str().unwrap(), "{name}");
        assert_eq!(gguf.data_offset() + t.offset, r["offset"].as_u64().unwrap(), "{name}");
        assert_eq!(t.n_bytes(), r["n_bytes"].as_u64().unwrap(), "{name}");
        let data = gguf.tensor_data(t);
        let v = dequantize_to_vec(ty, data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.len() as u64, r["n_elements"].as_u64().unwrap(), "{name}");
        let mut h = Sha256::new();
        for chunk in v.chunks(1 << 16) {
            h.update(f32_bytes(chunk));
        }
        let ours: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(ours, r["sha256"].as_str().unwrap(), "{name} ({ty}): sha256 of dequantized f32 differs");
        *counts.entry(ty.name()).or_insert(0) += 1;
    }
    assert_eq!(counts, [("F32", 61), ("Q4_1", 210), ("Q8_0", 1)].into_iter().collect());
}

/// Random f16 bits that are finite (no NaN/Inf), with some zeros, subnormals, large and negative values.
fn finite_f16(rng: &mut StdRng) -> u16 {
    match rng.gen_range(0..10) {
        0 => 0x0000,
        1 => 0x8000,
        2 => rng.gen_range(1..0x0400) | if rng.r#gen() { 0x8000 } else { 0 }, // subnormal
        3 => 0x7BFF,                                                      // 65504
        _ => {
            // exponent 1..=30 around 2^-10 .. 2^5 mostly
            let e: u16 = rng.gen_range(1..=30);
            (e << 10) | rng.gen_range(0..0x0400) | if rng.r#gen() { 0x8000 } else { 0 }
        }
    }
}

/// Byte offsets of the f16 scales in one block of each type (ggml-common.h).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// Every dequantizer on random blocks (random bytes with finite f16 scales) and, for F16 / BF16, on all 65536
/// bit patterns (NaN payloads included); compared byte for byte with gguf-py.
#[test]
fn random_blocks_dequantize_match_gguf_py() {
    use GgmlType::*;
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let mut jobs = Vec::new();
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K] {
        let n_blocks = 2048 * 32 / ty.block_elems();
        let mut data = vec![0u8; n_blocks * ty.block_bytes()];
        rng.fill(&mut data[..]);
        for b in data.chunks_exact_mut(ty.block_bytes()) {
            for &o in f16_fields(ty) {
                b[o..o + 2].copy_from_slice(&finite_f16(&mut rng).to_le_bytes());
            }
        }
        jobs.push(Job { op: "dequantize", ty, label: format!("random {ty}"), input: data });
    }
    let all16: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    jobs.push(Job { op: "dequantize", ty: F16, label: "all f16".into(), input: all16.clone() });
    jobs.push(Job { op: "dequantize", ty: BF16, label: "all bf16".into(), input: all16 });
    let mut f32s = vec![0u8; 4 * 4096];
    rng.fill(&mut f32s[..]);
    jobs.push(Job { op: "dequantize", ty: F32, label: "random f32 bits".into(), input: f32s });

    let dir = tempfile::tempdir().unwrap();
    let refs = run_jobs(dir.path(), &jobs);
    for (j, r) in jobs.iter().zip(&refs) {
        let mut ours = vec![0f32; j.input.len() / j.ty.block_bytes() * j.ty.block_elems()];
        dequantize(j.ty, &j.input, &mut ours).unwrap();
        let ours = f32_bytes(&ours);
        assert!(ours == *r, "{}: {}", j.label, first_diff(&ours, r, 4));
    }
}

/// Blocks of 32 values (a multiple of every quantized block) that exercise the edge cases.
fn edge_blocks(rng: &mut StdRng) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = Vec::new();
    let uni = |rng: &mut StdRng, s: f32| -> Vec<f32> { (0..32).map(|_| rng.gen_range(-1.0f32..1.0) * s).collect() };
    v.push(("all zero".into(), vec![0.0; 32]));
    v.push(("all -0.0".into(), vec![-0.0; 32]));
    v.push(("all equal".into(), vec![0.75; 32]));
    // Mixed +0.0 / -0.0: the sign of a zero max / min (Q4_1, Q5_1 store min and max - min).
    for k in 0..24 {
        let zeros: Vec<f32> = (0..32).map(|_| if rng.r#gen() { 0.0 } else { -0.0 }).collect();
        let b = match k % 3 {
            0 => zeros,
            1 => zeros.iter().map(|&z| if rng.gen_range(0..3) == 0 { rng.gen_range(0.1f32..1.0) } else { z }).collect(),
            _ => zeros.iter().map(|&z| if rng.gen_range(0..3) == 0 { rng.gen_range(-1.0f32..-0.1) } else { z }).collect(),
        };
        v.push((format!("mixed signed zeros {k}"), b));
    }
    v.push(("all equal negative".into(), vec![-3.0; 32]));
    for (name, big) in [("huge +", 1e30f32), ("huge -", -1e30), ("max f32", f32::MAX), ("-max f32", -f32::MAX),
        ("f16 overflow", 70000.0), ("inf", f32::INFINITY), ("-inf", f32::NEG_INFINITY), ("NaN", f32::NAN)] {
        let mut b = uni(rng, 1.0);
        b[rng.gen_range(0..32)] = big;
        v.push((format!("one {name} value"), b));
    }
    let mut b = uni(rng, 1.0);
    b[0] = -f32::NAN;
    b[9] = f32::NAN;
    b[30] = -f32::NAN;
    v.push(("several quiet NaNs of both signs".into(), b));
    let mut b = uni(rng, 1.0);
    b[28] = -f32::NAN;
    b[30] = f32::NAN;
    v.push(("quiet NaNs in the last 7".into(), b));
    for (i, j) in [(3, 27), (27, 3), (26, 30)] {
        let mut b = uni(rng, 1.0);
        b[i] = f32::from_bits(0x7F80_0001); // signalling NaN
        b[j] = f32::from_bits(0xFFC1_2345); // negative quiet NaN with a payload
        v.push((format!("NaN payloads at {i}, {j}"), b));
    }
    let mut b = uni(rng, 1.0);
    b[7] = -5.0; // negative max
    v.push(("negative max".into(), b));
    let mut b: Vec<f32> = (0..32).map(|_| rng.gen_range(-1.0f32..0.0)).collect();
    b[3] = -2.0;
    v.push(("all negative".into(), b));
    let mut b = uni(rng, 1.0);
    b[2] = 4.0;
    b[20] = -4.0; // equal magnitude, opposite signs: first index wins for Q4_0/Q5_0
    v.push(("tie of |max|".into(), b));
    v.push(("-tie of |max|".into(), { let mut c = uni(rng, 1.0); c[2] = -4.0; c[20] = 4.0; c }));
    for s in [1e-38f32, 1e-40, 1e-42, 1e-45, 2e-38] {
        v.push((format!("subnormal scale {s:e}"), uni(rng, s)));
    }
    v.push(("smallest subnormals".into(), (0..32).map(|i| f32::from_bits(i % 3) * if i % 2 == 0 { 1.0 } else { -1.0 }).collect()));
    for s in [1e-30f32, 1e-8, 1e-5, 6e-5, 1.0, 1e3, 65504.0, 1e6, 1e20, 1e37] {
        v.push((format!("uniform scale {s:e}"), uni(rng, s)));
    }
    // Ties at .5 after scaling: Q8_0 (amax 127 -> d = 1, id = 1), Q4_0 (max -8), Q5_0 (max -16),
    // Q4_1 (min 0, max 15), Q5_1 (min 0, max 31).
    v.push(("Q8_0 ties".into(), (0..32).map(|i| if i == 0 { 127.0 } else { i as f32 - 16.5 }).collect()));
    v.push(("Q8_0 ties neg".into(), (0..32).map(|i| if i == 0 { -127.0 } else { 16.5 - i as f32 }).collect()));
    v.push(("Q4_0 ties".into(), (0..32).map(|i| if i == 0 { -8.0 } else { (i % 16) as f32 / 2.0 - 7.5 }).collect()));
    v.push(("Q5_0 ties".into(), (0..32).map(|i| if i == 0 { -16.0 } else { i as f32 - 16.5 }).collect()));
    v.push(("Q4_1 ties".into(), (0..32).map(|i| if i == 0 { 0.0 } else if i == 1 { 15.0 } else { (i % 15) as f32 + 0.5 }).collect()));
    v.push(("Q5_1 ties".into(), (0..32).map(|i| if i == 0 { 0.0 } else if i == 1 { 31.0 } else { i as f32 - 0.5 }).collect()));
    v.push(("f16 ties".into(), (0..32).map(|i| 1.0 + (2 * i + 1) as f32 * 2f32.powi(-11)).collect()));
    v.push(("bf16 ties".into(), (0..32).map(|i| 1.0 + (2 * i + 1) as f32 * 2f32.powi(-8)).collect()));
    v
}

/// Every quantizer on random data (1024 blocks at scales from 1e-3 to 1e3), the edge-case blocks, random f32
/// bit patterns (F16 / BF16) and real weights of SmolLM2; compared byte for byte with gguf-py.
#[test]
fn quantize_matches_gguf_py() {
    use GgmlType::*;
    let dir = tempfile::tempdir().unwrap();
    // Real data: the first rows of a few tensors of the real file, dequantized by our dequantizer (whose
    // parity with gguf-py is `real_file_dequantize_matches_gguf_py`); only the quantizers are compared here.
    let gguf = GgufFile::open(smollm2_path()).unwrap();
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    let mut inputs: Vec<(String, Vec<f32>)> = Vec::new();
    for (name, rows) in [("blk.0.attn_q.weight", 64), ("blk.7.ffn_down.weight", 64), ("token_embd.weight", 64),
        ("blk.3.attn_norm.weight", 1), ("output_norm.weight", 1)]
    {
        let t = gguf.tensor(name).unwrap_or_else(|| panic!("{name} not in the real file"));
        let row_bytes = t.row_bytes() as usize;
        let v = dequantize_to_vec(t.ty, &gguf.tensor_data(t)[..rows * row_bytes]).unwrap();
        assert!(v.len() >= 576 && v.iter().any(|&x| x != 0.0), "{name}: no data");
        inputs.push((format!("real {name}"), v));
    }
    let random: Vec<f32> = (0..1024)
        .flat_map(|b| {
            let s = 10f32.powi(b % 7 - 3);
            (0..32).map(|_| rng.gen_range(-1.0f32..1.0) * s).collect::<Vec<_>>()
        })
        .collect();
    inputs.push(("random".into(), random));
    let edges = edge_blocks(&mut rng);
    let edge_all: Vec<f32> = edges.iter().flat_map(|(_, b)| b.clone()).collect();
    inputs.push(("edge blocks".into(), edge_all));
    // Random f32 bit patterns (all exponents; NaN included) for the plain conversions only.
    let bits: Vec<f32> = (0..65536).map(|_| f32::from_bits(rng.r#gen())).collect();

    let mut jobs = Vec::new();
    for ty in [F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1] {
        for (label, x) in &inputs {
            jobs.push(Job { op: "quantize", ty, label: format!("{label} -> {ty}"), input: f32_bytes(x) });
        }
        if matches!(ty, F16 | BF16 | F32) {
            jobs.push(Job { op: "quantize", ty, label: format!("random bits -> {ty}"), input: f32_bytes(&bits) });
        }
    }
    let refs = run_jobs(dir.path(), &jobs);
    for (j, r) in jobs.iter().zip(&refs) {
        let x = bytes_f32(&j.input);
        let ours = quantize(j.ty, &x).unwrap();
        if ours != *r {
            // Name the edge case when the failing block is one.
            let i = ours.iter().zip(r.iter()).position(|(a, b)| a != b).unwrap_or(0);
            let block = i / j.ty.block_bytes() * j.ty.block_elems() / 32;
            let case = if j.label.starts_with("edge") { edges.get(block).map(|e| e.0.as_str()).unwrap_or("?") } else { "" };
            panic!("{} [{case}]: {}", j.label, first_diff(&ours, r, j.ty.block_bytes()));
        }
    }
}
