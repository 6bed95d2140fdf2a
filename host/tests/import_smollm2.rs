//! `llamanas import` on the real model (SmolLM2-135M-Instruct Q4_1, found via `LLAMANAS_ASSETS`):
//! - reordering by importance leaves the full network's function unchanged (runtime engine logits, F32);
//! - it makes "keep the first k" meaningful: the sub-network with FFN 1024 in odd layers has a much lower
//!   perplexity on GPL-3 text with the order than without (llama.cpp measures 237 without order on the whole
//!   GPL-3 text, 18.4 for the full model; docs/SUPERNET.md);
//! - the folder written by `store::import::run` opens, validates and is refused as an output without --force.
//!
//! Calibration uses a few Alpaca items (the GPL-3 text is the held-out evaluation text).

use std::path::PathBuf;
use std::sync::OnceLock;

use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::engine::{Logits, Model, Session, SessionOptions, perplexity::perplexity};
use device_runtime::gguf::GgufFile;
use device_runtime::subnet::{self, ExportQuant, Provenance};
use device_runtime::tokenizer::Tokenizer;
use llamanas::store::import::{self, ImportOptions};
use llamanas::store::{self, LayerOrder, Supernet, WeightDtype};

const GPL3: &str = "/usr/share/common-licenses/GPL-3";

fn assets_dir() -> PathBuf {
    match std::env::var_os("LLAMANAS_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets"),
    }
}

fn smollm2() -> PathBuf {
    let p = assets_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh (or set LLAMANAS_ASSETS)", p.display());
    p
}

fn alpaca() -> PathBuf {
    let p = assets_dir().join("data/alpaca_en_demo.json");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh (or set LLAMANAS_ASSETS)", p.display());
    p
}

fn gpl3_tokens(tok: &Tokenizer) -> Vec<u32> {
    let text = std::fs::read_to_string(GPL3).expect("GPL-3 text (/usr/share/common-licenses/GPL-3)");
    tok.encode(&text, true, false).unwrap()
}

struct Fixture {
    config: ModelConfig,
    orders: Vec<LayerOrder>,
    /// In-memory supernet.gguf, reordered.
    reordered: GgufFile,
    /// In-memory supernet.gguf, base order.
    identity: GgufFile,
}

/// Calibrate on 1024 Alpaca tokens and build both F32 super-networks in memory (once per test binary).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let t0 = std::time::Instant::now();
        let path = smollm2();
        let base = GgufFile::open(&path).unwrap();
        let config = ModelConfig::from_gguf(&base).unwrap();
        let model = Model::load(&path).unwrap();
        let tok = Tokenizer::from_gguf(&base).unwrap();
        let (tokens, format) = import::calibration_tokens(&[alpaca()], &tok, 1024).unwrap();
        assert_eq!((tokens.len(), format.as_str()), (1024, "alpaca-chat"));
        let stats = import::calibrate(&model, &tokens, 512, 2, |_| {}).unwrap();
        let orders = import::layer_orders(&base, &config, &stats, None).unwrap();
        eprintln!("fixture: calibration on {} tokens done after {:.1} s", tokens.len(), t0.elapsed().as_secs_f64());
        let sha = "0".repeat(64);
        let build = |orders: &[LayerOrder], re: bool| {
            let w = import::build_supernet_gguf(&base, &config, orders, WeightDtype::F32, &sha, "base.gguf", re, |_| {}).unwrap();
            GgufFile::from_bytes(w.to_bytes().unwrap(), if re { "reordered.gguf" } else { "identity.gguf" }).unwrap()
        };
        let reordered = build(&orders, true);
        let identity = build(&import::identity_orders(&config), false);
        eprintln!("fixture: both super-networks built after {:.1} s", t0.elapsed().as_secs_f64());
        Fixture { config, orders, reordered, identity }
    })
}

#[test]
fn importance_orders_are_permutations_with_descending_scores() {
    let f = fixture();
    let mut moved = 0;
    for (l, o) in f.orders.iter().enumerate() {
        assert_eq!(o.ffn.len(), f.config.ffn[l]);
        assert_eq!(o.kv_groups.len(), f.config.n_kv_heads[l]);
        assert!(o.ffn_scores.windows(2).all(|w| w[0] >= w[1]), "layer {l}: FFN scores not descending");
        assert!(o.kv_scores.windows(2).all(|w| w[0] >= w[1]), "layer {l}: KV scores not descending");
        assert!(o.ffn_scores.iter().all(|s| s.is_finite() && *s >= 0.0), "layer {l}: bad FFN score");
        assert!(o.ffn_scores[0] > 0.0);
        moved += o.ffn.iter().enumerate().filter(|(i, p)| i != *p).count();
    }
    // The order is far from the identity (otherwise the next tests would prove nothing).
    assert!(moved > f.config.ffn.iter().sum::<usize>() / 2, "only {moved} FFN neurons moved");
}

#[test]
fn reordering_keeps_the_full_network_logits() {
    let f = fixture();
    let tok = Tokenizer::from_gguf(&f.identity).unwrap();
    let tokens: Vec<u32> = gpl3_tokens(&tok)[..300].to_vec();
    let logits = |g: &GgufFile| {
        let m = Model::from_gguf(GgufFile::from_bytes(g.bytes().to_vec(), g.name()).unwrap()).unwrap();
        let mut s = Session::new(&m, SessionOptions { n_ctx: 512, threads: 2, ..Default::default() }).unwrap();
        s.prefill(&tokens, Logits::All).unwrap()
    };
    let (a, b) = (logits(&f.identity), logits(&f.reordered));
    assert_eq!(a.len(), b.len());
    let nv = f.config.n_vocab;
    let mut worst = 0f32;
    for (ra, rb) in a.chunks(nv).zip(b.chunks(nv)) {
        let scale = ra.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = ra.iter().zip(rb).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        worst = worst.max(diff / scale);
    }
    eprintln!("full network, {} tokens: max |logit difference| / max |logit| = {worst:.2e}", tokens.len());
    assert!(worst < 1e-4, "reordering changed the logits: relative difference {worst:.2e}");
}

fn subnet_ppl(g: &GgufFile, cfg: &SubnetConfig, tokens: &[u32], tag: &str) -> f64 {
    let out = std::env::temp_dir().join(format!("llamanas-import-{tag}-{}.gguf", std::process::id()));
    // Q8_0 keeps the test short (its kernels are faster than F32's); the F32 figures on the whole text are in
    // docs/SUPERNET.md.
    subnet::export_subnet(g, cfg, ExportQuant::Q8_0, &Provenance::for_base(g), &out).unwrap();
    let m = Model::load(&out).unwrap();
    std::fs::remove_file(&out).unwrap(); // the map stays valid
    let mut s = Session::new(&m, SessionOptions { n_ctx: 512, threads: 2, ..Default::default() }).unwrap();
    perplexity(&mut s, tokens, 512, None, 3, |_, _| {}).unwrap().ppl
}

#[test]
fn ordering_lowers_the_perplexity_of_a_narrow_subnet() {
    let f = fixture();
    let tok = Tokenizer::from_gguf(&f.identity).unwrap();
    let tokens = gpl3_tokens(&tok);
    let bos = if tok.metadata().add_bos { tok.bos() } else { None };
    assert_eq!(bos, None, "SmolLM2 adds no BOS (the perplexity call below assumes it)");
    let mut cfg = f.config.full_subnet();
    for (l, w) in cfg.ffn.iter_mut().enumerate() {
        if l % 2 == 1 {
            *w = 1024;
        }
    }
    let unordered = subnet_ppl(&f.identity, &cfg, &tokens, "id");
    let ordered = subnet_ppl(&f.reordered, &cfg, &tokens, "re");
    eprintln!("FFN 1024 in odd layers, GPL-3, 3 chunks of 512, Q8_0: PPL {unordered:.2} without order, {ordered:.2} with order");
    assert!(unordered > 60.0, "without order the sub-network should be badly hurt (llama.cpp: 237 on the whole text), got {unordered:.2}");
    assert!(ordered < unordered / 2.0, "ordering should lower the perplexity clearly: {ordered:.2} vs {unordered:.2}");
}

#[test]
fn import_writes_a_folder_that_opens_and_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sn");
    let mut opts = ImportOptions::new(smollm2(), &out);
    opts.dtype = WeightDtype::F16;
    opts.calib = vec![alpaca()];
    opts.calib_tokens = 256;
    opts.seq_len = 128;
    opts.threads = 2;
    let rep = import::run(&opts).unwrap();
    let sn = Supernet::open(&out).unwrap();
    assert_eq!(sn.meta, rep.meta);
    assert!(sn.meta.reordered);
    let cal = sn.meta.calibration.as_ref().unwrap();
    assert_eq!((cal.tokens, cal.seq_len, cal.format.as_str()), (256, 128, "alpaca-chat"));
    assert_eq!(sn.meta.base.file, "SmolLM2-135M-Instruct.Q4_1.gguf");
    // sha256 of the base file, computed independently of the import code path.
    let py = std::process::Command::new("python3")
        .args(["-c", "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())"])
        .arg(smollm2())
        .output()
        .expect("python3 is needed by this test");
    assert!(py.status.success());
    assert_eq!(sn.meta.base.sha256, String::from_utf8(py.stdout).unwrap().trim());
    assert_eq!(sn.gguf.tensors().len(), 272);
    assert_eq!(llamanas::export::base_gguf(&out).unwrap(), out.join(store::GGUF_NAME));
    // The runtime loads supernet.gguf as a model.
    Model::load(out.join(store::GGUF_NAME)).unwrap();
    // Not again without --force; never into a folder that is not a super-network folder.
    let e = format!("{:#}", import::run(&opts).unwrap_err());
    assert!(e.contains("--force"), "{e}");
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "x").unwrap();
    opts.out = other.clone();
    opts.force = true;
    let e = format!("{:#}", import::run(&opts).unwrap_err());
    assert!(e.contains("not a super-network folder"), "{e}");
    assert_eq!(std::fs::read_to_string(other.join("keep.txt")).unwrap(), "x");
}

#[test]
fn import_refuses_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.gguf");
    std::fs::write(&bogus, b"GGUF but not really").unwrap();
    let e = format!("{:#}", import::run(&ImportOptions::new(&bogus, dir.path().join("a"))).unwrap_err());
    assert!(e.contains("bogus.gguf"), "{e}");
    assert!(!dir.path().join("a").exists(), "nothing is created for a bad input");
    // A calibration file that is not an Alpaca list.
    let calib = dir.path().join("calib.json");
    std::fs::write(&calib, "{\"not\": \"a list\"}").unwrap();
    let mut opts = ImportOptions::new(smollm2(), dir.path().join("b"));
    opts.calib = vec![calib];
    let e = format!("{:#}", import::run(&opts).unwrap_err());
    assert!(e.contains("calib.json") && e.contains("Alpaca"), "{e}");
}
