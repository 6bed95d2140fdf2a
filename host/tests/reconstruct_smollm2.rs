//! Calibration reconstruction (issue 20):
//! - the refit equals an independent ridge least-squares solution computed by numpy from the activations
//!   themselves (`numpy.linalg.lstsq` on the stacked system, not the closed form the code uses);
//! - on the real model (SmolLM2-135M-Instruct imported with statistics of 8192 tokens of c4/wiki text): a
//!   uniform FFN-1280 sub-network's GPL-3 perplexity (4 chunks of 512) drops with reconstruction, the identity
//!   sub-network is bit-exact, the exported file records the reconstruction, and statistics that are missing
//!   or belong to other weights are refused with a clear error.

use std::path::PathBuf;
use std::sync::OnceLock;

use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::engine::{Session, SessionOptions, perplexity::perplexity};
use device_runtime::gguf::GgufFile;
use device_runtime::subnet::{ExportQuant, KEY_RECONSTRUCTION, Provenance};
use device_runtime::tokenizer::Tokenizer;
use llamanas::reconstruct::{self, Mode, Reconstructor};
use llamanas::store::import::{self, ImportOptions};

const GPL3: &str = "/usr/share/common-licenses/GPL-3";

mod common;
use common::smollm2;

/// The assets folder (the model's folder; `common::smollm2` resolves it).
fn assets_dir() -> PathBuf {
    smollm2().parent().expect("the model lies in the assets folder").to_path_buf()
}

/// Deterministic values in [-1, 1) (a 64-bit LCG; no dependency on the code under test).
fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn refit_equals_numpy_ridge_least_squares() {
    let (t, n, d, k, damp) = (300usize, 24usize, 5usize, 16usize, 0.05f64);
    // Correlated activations: h = A z with a fixed mixing A, so that the dropped inputs are partly predictable.
    let z = lcg(1, t * n);
    let a = lcg(2, n * n);
    let mut h = vec![0f32; t * n];
    for r in 0..t {
        for i in 0..n {
            h[r * n + i] = (0..n).map(|j| a[i * n + j] * z[r * n + j]).sum::<f32>() + if i % 3 == 0 { 0.5 } else { 0.0 };
        }
    }
    let w = lcg(3, d * n);
    let mut c = vec![0f32; n * n];
    for r in 0..t {
        for i in 0..n {
            for j in 0..n {
                c[i * n + j] += h[r * n + i] * h[r * n + j] / t as f32;
            }
        }
    }
    let ours = reconstruct::refit_columns(&w, d, n, &c, k, damp).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dump = |name: &str, v: &[f32]| {
        let p = dir.path().join(name);
        std::fs::write(&p, v.iter().map(|x| format!("{x:e}")).collect::<Vec<_>>().join("\n")).unwrap();
        p
    };
    let (hp, wp) = (dump("h.txt", &h), dump("w.txt", &w));
    // min_V ||H Wᵀ - H_S Vᵀ||² / T + lambda ||V - W_S||²  <=>  lstsq([H_S; sqrt(lambda T) I] Vᵀ = [H Wᵀ; sqrt(lambda T) W_Sᵀ]).
    let script = format!(
        "import numpy as np\nh=np.loadtxt('{}',dtype=np.float64).reshape({t},{n})\nw=np.loadtxt('{}',dtype=np.float64).reshape({d},{n})\n\
         c=h.T@h/{t}\nlam={damp}*np.mean(np.diag(c))\nA=np.vstack([h[:,:{k}],np.sqrt(lam*{t})*np.eye({k})])\n\
         B=np.vstack([h@w.T,np.sqrt(lam*{t})*w[:,:{k}].T])\nv=np.linalg.lstsq(A,B,rcond=None)[0].T\nprint(' '.join(repr(float(x)) for x in v.ravel()))",
        hp.display(),
        wp.display()
    );
    let out = std::process::Command::new("python3").args(["-c", &script]).output().expect("python3 with numpy is needed by this test");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let np: Vec<f64> = String::from_utf8(out.stdout).unwrap().split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(np.len(), d * k);
    let scale = np.iter().fold(0f64, |m, x| m.max(x.abs()));
    for (i, (a, b)) in ours.iter().zip(&np).enumerate() {
        assert!((*a as f64 - b).abs() <= 2e-4 * scale, "element {i}: ours {a}, numpy {b}");
    }
    // The refit differs from plain slicing (the dropped inputs are correlated with the kept ones).
    assert!((0..d).any(|r| (ours[r * k] - w[r * n]).abs() > 1e-3));
}

struct Fixture {
    _dir: tempfile::TempDir,
    folder: PathBuf,
}

/// Import SmolLM2 with statistics of 8192 calibration tokens (4096 of c4_demo.jsonl, 4096 of wiki_demo.txt).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("sn");
        let mut opts = ImportOptions::new(smollm2(), &folder);
        opts.calib = vec![assets_dir().join("data/c4_demo.jsonl"), assets_dir().join("data/wiki_demo.txt")];
        opts.calib_tokens = 8192;
        opts.threads = 2;
        let t0 = std::time::Instant::now();
        let rep = import::run(&opts).unwrap();
        eprintln!("fixture: import with statistics in {:.1} s", t0.elapsed().as_secs_f64());
        let cal = rep.meta.calibration.unwrap();
        assert_eq!((cal.tokens, cal.format.as_str(), cal.stats.as_deref()), (8192, "jsonl-text,text", Some("calib.gguf")));
        assert_eq!(cal.block_influence.len(), 30);
        Fixture { _dir: dir, folder }
    })
}

fn gpl3_ppl(model: &device_runtime::engine::Model, tok: &Tokenizer) -> f64 {
    let text = std::fs::read_to_string(GPL3).expect("GPL-3 text (/usr/share/common-licenses/GPL-3)");
    let tokens = tok.encode(&text, true, false).unwrap();
    let mut s = Session::new(model, SessionOptions { n_ctx: 512, threads: 2, n_batch: 512, ..Default::default() }).unwrap();
    perplexity(&mut s, &tokens, 512, None, 4, |_, _| {}).unwrap().ppl
}

#[test]
fn reconstruction_lowers_perplexity_and_keeps_the_identity() {
    let f = fixture();
    let gguf = f.folder.join("supernet.gguf");
    let base = GgufFile::open(&gguf).unwrap();
    let mc = ModelConfig::from_gguf(&base).unwrap();
    let tok = Tokenizer::from_gguf(&base).unwrap();
    let recon = Reconstructor::for_mode(&gguf, Mode::Auto).unwrap().expect("the folder has calib.gguf");
    let prov = Provenance { base_sha256: "0".repeat(64), run: None, objectives: None };

    // Identity: nothing is refit, the built tensors are byte for byte the sliced ones.
    let full = mc.full_subnet();
    assert!(recon.reconstruction(&full).unwrap().tensors.is_empty());
    let a = reconstruct::plan(&base, &full, ExportQuant::Q8_0, &prov, Some(&recon)).unwrap();
    let b = reconstruct::plan(&base, &full, ExportQuant::Q8_0, &prov, None).unwrap();
    assert!(!a.is_reconstructed());
    assert!(a.build_tensors().unwrap() == b.build_tensors().unwrap());

    // Uniform FFN 1280: reconstruction refits every ffn_down (30 tensors of 576 x 1280) and lowers the perplexity.
    let cfg = SubnetConfig { layers: (0..30).collect(), ffn: vec![1280; 30], kv_heads: vec![3; 30] };
    let rec = recon.reconstruction(&cfg).unwrap();
    assert_eq!(rec.tensors.len(), 30);
    assert_eq!(rec.tensors["blk.7.ffn_down.weight"].len(), 1280 * 576);
    let t0 = std::time::Instant::now();
    let plain = reconstruct::plan(&base, &cfg, ExportQuant::Q8_0, &prov, None).unwrap().build_model().unwrap();
    let refit = reconstruct::plan(&base, &cfg, ExportQuant::Q8_0, &prov, Some(&recon)).unwrap().build_model().unwrap();
    eprintln!("built both sub-networks in {:.1} s", t0.elapsed().as_secs_f64());
    let (p_plain, p_refit) = (gpl3_ppl(&plain, &tok), gpl3_ppl(&refit, &tok));
    eprintln!("GPL-3 perplexity, 4 chunks of 512, FFN 1280: sliced {p_plain:.2}, reconstructed {p_refit:.2}");
    assert!(p_refit < p_plain, "reconstruction should lower the perplexity: {p_refit:.2} vs {p_plain:.2}");

    // Fewer KV heads in some layers: attn_output is refit for those layers only.
    let mut kv = cfg.clone();
    kv.kv_heads[3] = 1;
    kv.ffn[3] = 1536;
    let rec = recon.reconstruction(&kv).unwrap();
    assert!(rec.tensors.contains_key("blk.3.attn_output.weight") && !rec.tensors.contains_key("blk.3.ffn_down.weight"));
    assert_eq!(rec.tensors["blk.3.attn_output.weight"].len(), 3 * 64 * 576);

    // The exported file says it was reconstructed.
    let out = f.folder.join("sub.gguf");
    let plan = reconstruct::plan(&base, &cfg, ExportQuant::Q8_0, &prov, Some(&recon)).unwrap();
    let rep = plan.write(&out).unwrap();
    assert!(rep.reconstructed);
    assert_eq!(rep.size_bytes, rep.predicted_bytes);
    let g = GgufFile::open(&out).unwrap();
    let m = g.get(KEY_RECONSTRUCTION).and_then(|v| v.as_str()).unwrap();
    assert!(m.contains("least-squares") && m.contains("8192 tokens"), "{m}");
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn statistics_missing_or_of_other_weights_are_refused() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    // A folder whose supernet.gguf has no calib.gguf beside it: Auto slices, On refuses with the remedy.
    let lone = dir.path().join("lone");
    std::fs::create_dir(&lone).unwrap();
    let w = lone.join("supernet.gguf");
    std::os::unix::fs::symlink(smollm2(), &w).unwrap();
    assert!(Reconstructor::for_mode(&w, Mode::Auto).unwrap().is_none());
    let e = format!("{:#}", Reconstructor::for_mode(&w, Mode::On).err().unwrap());
    assert!(e.contains("no calibration statistics") && e.contains("llamanas calibrate"), "{e}");
    // Statistics measured on other weights (the imported super-network's) next to the base model's file.
    std::os::unix::fs::symlink(f.folder.join("calib.gguf"), lone.join("calib.gguf")).unwrap();
    let e = format!("{:#}", Reconstructor::for_mode(&w, Mode::Auto).err().unwrap());
    assert!(e.contains("measured on other weights") && e.contains("--no-reconstruct"), "{e}");
    assert!(Reconstructor::for_mode(&w, Mode::Off).unwrap().is_none());
}
