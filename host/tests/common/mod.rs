//! Helpers shared by the host's integration tests.

use std::path::{Path, PathBuf};

/// The real SmolLM2-135M-Instruct (Q4_1) in `$LLAMANAS_ASSETS`, else `assets/` at the workspace root (the
/// `tests` crate's rule); panics when missing: real-asset tests fail, never skip.
pub fn smollm2() -> PathBuf {
    let dir = std::env::var_os("LLAMANAS_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets"));
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh (or set LLAMANAS_ASSETS)", p.display());
    p
}

/// The sub-network of the elastic tests: layers 3 and 17 dropped, FFN 1024 in odd base layers, 2 KV heads
/// (of 3) in base layers that are multiples of 4, one layer (base 10) without attention.
#[allow(dead_code)] // not every test crate that includes this module uses it
pub fn subnet(mc: &device_runtime::arch::ModelConfig) -> device_runtime::arch::SubnetConfig {
    let layers: Vec<usize> = (0..mc.n_layers).filter(|&l| l != 3 && l != 17).collect();
    let ffn = layers.iter().map(|&l| if l % 2 == 1 { 1024 } else { mc.ffn[l] }).collect();
    let kv_heads = layers
        .iter()
        .map(|&l| match l {
            10 => 0,
            l if l % 4 == 0 => 2,
            l => mc.n_kv_heads[l],
        })
        .collect();
    device_runtime::arch::SubnetConfig { layers, ffn, kv_heads }
}

/// The GPL-3 text of Debian's `common-licenses`, the held-out text of the elastic tests.
#[allow(dead_code)]
pub const GPL3: &str = "/usr/share/common-licenses/GPL-3";

/// The GPL-3 text as tokens of `base`'s vocabulary (with BOS when the vocabulary adds it), and that BOS.
#[allow(dead_code)]
pub fn gpl3_tokens(base: &device_runtime::gguf::GgufFile) -> (Vec<u32>, Option<u32>) {
    let tok = device_runtime::tokenizer::Tokenizer::from_gguf(base).unwrap();
    let text = std::fs::read_to_string(GPL3).expect("GPL-3 text (/usr/share/common-licenses/GPL-3)");
    let bos = if tok.metadata().add_bos { tok.bos() } else { None };
    (tok.encode(&text, true, false).unwrap(), bos)
}

/// `max |a - b| / max |b|`.
#[allow(dead_code)]
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}
