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
