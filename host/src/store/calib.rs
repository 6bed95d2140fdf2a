//! Calibration statistics of a super-network folder: `calib.gguf` beside `supernet.gguf` (docs/SUPERNET.md,
//! "Calibration statistics").
//!
//! What reconstruction needs ([`crate::reconstruct`]) and what ShortGPT's layer ranking needs, gathered by one
//! [`ActivationObserver`] in one pass of the runtime engine over calibration text (FLAP's and DarwinLM's
//! hooks do the same in PyTorch):
//!
//! - `blk.N.ffn_down.in_cov`, F32 `[n_ff, n_ff]`: the second-moment matrix `C = (1/T) sum_t h_t h_tᵀ` of the
//!   input of `ffn_down` (`h = silu(x W_gateᵀ) * (x W_upᵀ)`), over the `T` calibration tokens;
//! - `blk.N.attn_output.in_cov`, F32 `[n_head*head_dim, n_head*head_dim]`: the same for the input of
//!   `attn_output` (the attention output of every query head);
//! - `llamanas.calib.block_influence` (f32 array, one per block): ShortGPT's Block Influence
//!   `BI_l = 1 - mean_t cos(x_l,t, x_{l+1},t)` of the residual stream before and after block `l` (Men et al.
//!   2024, "ShortGPT: Layers in Large Language Models are More Redundant Than You Expect", eq. 1);
//! - `llamanas.calib.tokens` (u64), `llamanas.calib.source` (string): how many tokens of which files;
//! - `llamanas.calib.weights_sha256` (string): SHA-256 of the `supernet.gguf` the statistics belong to. A
//!   fine-tuned folder has other weights: its statistics are recomputed (`llamanas calibrate`), never taken
//!   from the base, and a file whose hash does not match is refused.
//!
//! The matrices are in the super-network's order (import permutes the base's statistics with the importance
//! order), so the first `k` rows and columns are those of the `k` neurons a sub-network keeps. Size for
//! SmolLM2-135M: 30 x (1536² + 576²) x 4 bytes = 323 MB.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use device_runtime::arch::ModelConfig;
use device_runtime::engine::ActivationObserver;
use device_runtime::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use device_runtime::subnet::Provenance;

use crate::importance::BlockDims;

/// File name of the statistics in a super-network folder.
pub const STATS_NAME: &str = "calib.gguf";
/// GGUF key: calibration tokens (u64).
pub const KEY_TOKENS: &str = "llamanas.calib.tokens";
/// GGUF key: calibration files (string, comma-separated file names).
pub const KEY_SOURCE: &str = "llamanas.calib.source";
/// GGUF key: SHA-256 of the `supernet.gguf` the statistics were measured on (string, 64 hex digits).
pub const KEY_WEIGHTS_SHA256: &str = "llamanas.calib.weights_sha256";
/// GGUF key: Block Influence per block (f32 array).
pub const KEY_BLOCK_INFLUENCE: &str = "llamanas.calib.block_influence";

/// Name of the `ffn_down` input statistic of block `l`.
pub fn ffn_cov_name(l: usize) -> String {
    format!("blk.{l}.ffn_down.in_cov")
}

/// Name of the `attn_output` input statistic of block `l`.
pub fn attn_cov_name(l: usize) -> String {
    format!("blk.{l}.attn_output.in_cov")
}

/// Rows per panel of [`add_gram`].
const PANEL: usize = 256;

/// `dst (n x n, row-major) += aᵀ a` on and above the diagonal, for `a` of `rows x n` row-major, with the
/// `gemm` crate in panels of [`PANEL`] rows (about 58% of the full product for n = 1536); the part below the
/// diagonal is left as it is ([`mirror_upper`] completes the matrix).
fn add_gram(dst: &mut [f32], a: &[f32], rows: usize, n: usize) {
    assert_eq!(dst.len(), n * n);
    assert!(a.len() >= rows * n);
    if rows == 0 || n == 0 {
        return;
    }
    for i0 in (0..n).step_by(PANEL) {
        let m = PANEL.min(n - i0);
        let cols = n - i0;
        // SAFETY: dst panel rows i0..i0+m, columns i0..n (row stride n); lhs = aᵀ rows i0..i0+m (element
        // (i, p) at p*n + i0 + i), rhs = a columns i0..n (element (p, j) at p*n + i0 + j); every index is
        // inside the slices checked above.
        unsafe {
            gemm::gemm(
                m,
                cols,
                rows,
                dst.as_mut_ptr().add(i0 * n + i0),
                1,
                n as isize,
                true,
                a.as_ptr().add(i0),
                n as isize,
                1,
                a.as_ptr().add(i0),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
    }
}

/// Copy the part above the diagonal of a square row-major matrix below it.
fn mirror_upper(m: &mut [f32], n: usize) {
    for i in 0..n {
        for j in 0..i {
            m[i * n + j] = m[j * n + i];
        }
    }
}

/// Accumulates the statistics of `calib.gguf` ([`ActivationObserver`]): second moments of the inputs of
/// `ffn_down` and `attn_output`, and Block Influence.
#[derive(Clone, Debug)]
pub struct CovStats {
    dims: Vec<BlockDims>,
    /// Per block, `sum_t h hᵀ` of the `ffn_down` input, `n_ff x n_ff` row-major (empty without FFN), on and
    /// above the diagonal only ([`CovStats::full`] completes it).
    pub ffn: Vec<Vec<f32>>,
    /// Per block, `sum_t o oᵀ` of the `attn_output` input (empty without attention), upper part as `ffn`.
    pub att: Vec<Vec<f32>>,
    /// Tokens seen by each block's FFN / attention.
    pub ffn_tokens: Vec<usize>,
    /// Tokens seen by each block's attention.
    pub att_tokens: Vec<usize>,
    /// Per block, the sum over tokens of `1 - cos(x_l, x_{l+1})`.
    pub bi_sum: Vec<f64>,
    /// Tokens in `bi_sum`.
    pub bi_tokens: Vec<usize>,
    prev: Vec<f32>,
    d: usize,
}

impl CovStats {
    /// Empty statistics for blocks of the given shapes and model width `d_model`.
    pub fn new(dims: Vec<BlockDims>, d_model: usize) -> CovStats {
        let n = dims.len();
        CovStats {
            ffn: dims.iter().map(|b| vec![0.0; b.n_ff * b.n_ff]).collect(),
            att: dims
                .iter()
                .map(|b| {
                    let q = if b.n_head_kv > 0 { b.n_head * b.head_dim } else { 0 };
                    vec![0.0; q * q]
                })
                .collect(),
            ffn_tokens: vec![0; n],
            att_tokens: vec![0; n],
            bi_sum: vec![0.0; n],
            bi_tokens: vec![0; n],
            dims,
            prev: Vec::new(),
            d: d_model,
        }
    }

    /// Complete both matrices of every block from their upper parts (after the last observation).
    pub fn full(&mut self) {
        for (l, b) in self.dims.iter().enumerate() {
            mirror_upper(&mut self.ffn[l], b.n_ff);
            let q = if b.n_head_kv > 0 { b.n_head * b.head_dim } else { 0 };
            mirror_upper(&mut self.att[l], q);
        }
    }

    /// Block Influence per block (0 for a block that saw no token).
    pub fn block_influence(&self) -> Vec<f64> {
        self.bi_sum.iter().zip(&self.bi_tokens).map(|(s, &t)| if t == 0 { 0.0 } else { s / t as f64 }).collect()
    }
}

impl ActivationObserver for CovStats {
    fn attention(&mut self, layer: usize, n_tokens: usize, att: &[f32]) {
        let Some(b) = self.dims.get(layer) else { return };
        let q = b.n_head * b.head_dim;
        if q == 0 || b.n_head_kv == 0 {
            return;
        }
        add_gram(&mut self.att[layer], att, n_tokens, q);
        self.att_tokens[layer] += n_tokens;
    }

    fn ffn_hidden(&mut self, layer: usize, n_tokens: usize, hidden: &[f32]) {
        let Some(b) = self.dims.get(layer) else { return };
        if b.n_ff == 0 {
            return;
        }
        add_gram(&mut self.ffn[layer], hidden, n_tokens, b.n_ff);
        self.ffn_tokens[layer] += n_tokens;
    }

    fn residual(&mut self, layer: usize, n_tokens: usize, x: &[f32]) {
        let d = self.d;
        if layer > 0 && layer <= self.bi_sum.len() && self.prev.len() == n_tokens * d {
            let mut s = 0.0;
            for (a, b) in self.prev.chunks_exact(d).zip(x.chunks_exact(d)) {
                let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
                for (&p, &q) in a.iter().zip(b) {
                    ab += p as f64 * q as f64;
                    aa += p as f64 * p as f64;
                    bb += q as f64 * q as f64;
                }
                let cos = if aa > 0.0 && bb > 0.0 { ab / (aa.sqrt() * bb.sqrt()) } else { 1.0 };
                s += 1.0 - cos;
            }
            self.bi_sum[layer - 1] += s;
            self.bi_tokens[layer - 1] += n_tokens;
        }
        self.prev.clear();
        self.prev.extend_from_slice(&x[..n_tokens * d]);
    }
}

/// Forwards every observation to two observers (importance scores and [`CovStats`] in one pass).
pub struct Both<'a, A: ActivationObserver, B: ActivationObserver>(pub &'a mut A, pub &'a mut B);

impl<A: ActivationObserver, B: ActivationObserver> ActivationObserver for Both<'_, A, B> {
    fn attention(&mut self, layer: usize, n_tokens: usize, att: &[f32]) {
        self.0.attention(layer, n_tokens, att);
        self.1.attention(layer, n_tokens, att);
    }
    fn ffn_hidden(&mut self, layer: usize, n_tokens: usize, hidden: &[f32]) {
        self.0.ffn_hidden(layer, n_tokens, hidden);
        self.1.ffn_hidden(layer, n_tokens, hidden);
    }
    fn residual(&mut self, layer: usize, n_tokens: usize, x: &[f32]) {
        self.0.residual(layer, n_tokens, x);
        self.1.residual(layer, n_tokens, x);
    }
}

/// `m'[i][j] = m[p[i]][p[j]]` for a square row-major `m` of side `p.len()`.
pub fn permute_sym(m: &[f32], p: &[usize]) -> Vec<f32> {
    let n = p.len();
    let mut out = vec![0f32; n * n];
    for (i, &pi) in p.iter().enumerate() {
        let src = &m[pi * n..(pi + 1) * n];
        for (o, &pj) in out[i * n..(i + 1) * n].iter_mut().zip(p) {
            *o = src[pj];
        }
    }
    out
}

/// The column permutation of the attention output when KV groups move by `groups` (new group `i` = old group
/// `groups[i]`, each with `g` query heads of `hd` columns; [`crate::importance`]'s reordering).
pub fn head_columns(groups: &[usize], g: usize, hd: usize) -> Vec<usize> {
    let mut p = Vec::with_capacity(groups.len() * g * hd);
    for &og in groups {
        for r in 0..g {
            for e in 0..hd {
                p.push((og * g + r) * hd + e);
            }
        }
    }
    p
}

/// Write `calib.gguf` to `path` atomically: the means `sum / tokens` of `stats` (already in the super-network's
/// order), Block Influence, the token count, the source and the SHA-256 of the weights they belong to.
///
/// Errors: a block whose statistics saw no token, a non-finite value, I/O (naming the file).
pub fn write_stats(path: &Path, stats: &CovStats, tokens: usize, source: &str, weights_sha256: &str) -> Result<u64> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.type", MetaValue::String("llamanas-calibration".into()));
    w.add_metadata(KEY_TOKENS, MetaValue::U64(tokens as u64));
    w.add_metadata(KEY_SOURCE, MetaValue::String(source.to_owned()));
    w.add_metadata(KEY_WEIGHTS_SHA256, MetaValue::String(weights_sha256.to_owned()));
    let bi: Vec<f32> = stats.block_influence().iter().map(|&x| x as f32).collect();
    w.add_metadata(KEY_BLOCK_INFLUENCE, MetaValue::f32_array(&bi));
    for (l, b) in stats.dims.iter().enumerate() {
        for (name, sum, t, n) in [
            (ffn_cov_name(l), &stats.ffn[l], stats.ffn_tokens[l], b.n_ff),
            (attn_cov_name(l), &stats.att[l], stats.att_tokens[l], if b.n_head_kv > 0 { b.n_head * b.head_dim } else { 0 }),
        ] {
            if n == 0 {
                continue;
            }
            ensure!(t > 0, "{}: statistic {name} saw no calibration token", path.display());
            let inv = 1.0 / t as f64;
            let mut mean: Vec<f32> = sum.iter().map(|&x| (x as f64 * inv) as f32).collect();
            mirror_upper(&mut mean, n);
            if let Some(i) = mean.iter().position(|x| !x.is_finite()) {
                anyhow::bail!("{}: statistic {name}: element {i} is not finite (the calibration pass overflowed)", path.display());
            }
            let bytes: Vec<u8> = mean.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.add_tensor(&name, &[n as u64, n as u64], GgmlType::F32, bytes).with_context(|| format!("{}: {name}", path.display()))?;
        }
    }
    w.write_atomic(path).with_context(|| format!("writing {}", path.display()))
}

/// An opened `calib.gguf` (memory-mapped).
pub struct CalibStats {
    file: GgufFile,
    path: PathBuf,
    /// Calibration tokens.
    pub tokens: u64,
    /// Calibration files.
    pub source: String,
    /// SHA-256 of the weights the statistics belong to.
    pub weights_sha256: String,
    /// Block Influence per block.
    pub block_influence: Vec<f32>,
}

impl CalibStats {
    /// Open `path` and check it against the model `mc`: every block's statistics present with the shapes the
    /// model implies, and the keys above.
    ///
    /// Errors: unreadable file, missing keys or tensors, wrong shapes (naming the file).
    pub fn open(path: &Path, mc: &ModelConfig) -> Result<CalibStats> {
        let file = GgufFile::open(path).with_context(|| format!("opening the calibration statistics {}", path.display()))?;
        let p = path.display();
        let s = |k: &str| -> Result<String> {
            match file.get(k) {
                Some(MetaValue::String(s)) => Ok(s.clone()),
                _ => anyhow::bail!("{p}: missing string key {k} (not a calib.gguf written by llamanas)"),
            }
        };
        let tokens = match file.get(KEY_TOKENS) {
            Some(MetaValue::U64(t)) => *t,
            _ => anyhow::bail!("{p}: missing u64 key {KEY_TOKENS}"),
        };
        let source = s(KEY_SOURCE)?;
        let weights_sha256 = s(KEY_WEIGHTS_SHA256)?;
        let block_influence = match file.get(KEY_BLOCK_INFLUENCE) {
            Some(v) => v.as_f32_vec().with_context(|| format!("{p}: {KEY_BLOCK_INFLUENCE} is not a float array"))?,
            None => anyhow::bail!("{p}: missing key {KEY_BLOCK_INFLUENCE}"),
        };
        ensure!(block_influence.len() == mc.n_layers, "{p}: {} Block Influence values for {} blocks", block_influence.len(), mc.n_layers);
        for l in 0..mc.n_layers {
            let q = if mc.n_kv_heads[l] > 0 { mc.n_heads[l] * mc.head_dim } else { 0 };
            for (name, n) in [(ffn_cov_name(l), mc.ffn[l]), (attn_cov_name(l), q)] {
                if n == 0 {
                    continue;
                }
                let t = file.tensor(&name).with_context(|| format!("{p}: missing tensor {name}"))?;
                ensure!(
                    t.ty == GgmlType::F32 && t.dims == [n as u64, n as u64],
                    "{p}: tensor {name} is {} {:?}, expected F32 [{n}, {n}]",
                    t.ty,
                    t.dims
                );
            }
        }
        Ok(CalibStats { file, path: path.to_path_buf(), tokens, source, weights_sha256, block_influence })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The statistic `name` (`n x n` row-major F32), or `None` when the block has none.
    pub fn matrix(&self, name: &str) -> Option<Vec<f32>> {
        let t = self.file.tensor(name)?;
        Some(self.file.tensor_data(t).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

/// SHA-256 of a file's bytes (memory-mapped), 64 lowercase hex digits.
pub fn file_sha256(path: &Path) -> Result<String> {
    let f = GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Provenance::sha256_hex(f.bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gram_by_hand() {
        // a = [[1, 2], [3, 4], [0, 1]] (3 rows of 2): aᵀa = [[10, 14], [14, 21]].
        let mut c = vec![1.0f32; 4];
        add_gram(&mut c, &[1.0, 2.0, 3.0, 4.0, 0.0, 1.0], 3, 2);
        c[2] = -1.0; // below the diagonal: not guaranteed, mirrored
        mirror_upper(&mut c, 2);
        assert_eq!(c, vec![11.0, 15.0, 15.0, 22.0]);
        // Several panels (n > PANEL): the upper part equals the plain product.
        let (rows, n) = (3, PANEL + 5);
        let a: Vec<f32> = (0..rows * n).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut c = vec![0f32; n * n];
        add_gram(&mut c, &a, rows, n);
        mirror_upper(&mut c, n);
        for (i, j) in [(0, 0), (3, PANEL + 2), (PANEL + 4, PANEL + 1), (PANEL + 1, 2)] {
            let want: f32 = (0..rows).map(|r| a[r * n + i] * a[r * n + j]).sum();
            assert_eq!(c[i * n + j], want, "({i}, {j})");
        }
    }

    #[test]
    #[ignore = "timing probe: cargo test -p host --lib gram_speed -- --ignored --nocapture"]
    fn gram_speed() {
        let (rows, n) = (512, 1536);
        let a: Vec<f32> = (0..rows * n).map(|i| ((i * 7919) % 1000) as f32 * 1e-3).collect();
        let mut c = vec![0f32; n * n];
        let t = std::time::Instant::now();
        for _ in 0..5 {
            add_gram(&mut c, &a, rows, n);
        }
        let s = t.elapsed().as_secs_f64() / 5.0;
        eprintln!("add_gram {rows}x{n}: {:.1} ms, {:.1} GFLOP/s", s * 1e3, 2.0 * (rows * n * n) as f64 / s / 1e9);
    }
}
