//! Shared helpers of the end-to-end tests: where the real assets are.

use std::path::PathBuf;

/// The assets folder: `$LLAMANAS_ASSETS`, else `assets/` at the workspace root.
pub fn assets_dir() -> PathBuf {
    match std::env::var_os("LLAMANAS_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets"),
    }
}

/// The real model, `SmolLM2-135M-Instruct.Q4_1.gguf`, fetched by `scripts/fetch-assets.sh`.
///
/// Panics with the command to run when it is missing: tests on real assets must not skip silently.
pub fn smollm2_path() -> PathBuf {
    let p = assets_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-assets.sh (or set LLAMANAS_ASSETS)", p.display());
    p
}
