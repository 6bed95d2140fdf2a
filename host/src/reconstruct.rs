//! Calibration reconstruction of sub-networks: the tensors that read pruned activations are refit so that
//! each layer's output matches the full super-network's on calibration data (docs/SUPERNET.md,
//! "Reconstruction"; measured in docs/QUALITY.md).
//!
//! For a layer that keeps the first `k` of the `n` inputs of `W` (`ffn_down`: FFN neurons; `attn_output`:
//! the columns of the kept query heads), with `C = E[h hᵀ]` the second-moment matrix of the full layer's input
//! on calibration text ([`crate::store::calib`]), the least-squares refit of the kept columns is
//!
//! ```text
//! W'_S = argmin_V E||W h - V h_S||² + lambda ||V - W_S||²  =  W (C + lambda I)[:, S] (C[S,S] + lambda I)^-1
//! ```
//!
//! with `S = 0..k`. The damping pulls the refit toward the sliced weights `W_S` (plain slicing as
//! `lambda -> inf`) rather than toward zero: with few calibration tokens the plain refit can overfit and lose
//! to slicing, and ridge toward zero shrinks the weights (docs/QUALITY.md measures both).
//!
//! (the "reformation" of Shen et al. 2024, "Search for Efficient Large Language Models"; FLAP's bias
//! compensation keeps only the mean term; SlimGPT / ZipLM's structured OBS reach the same optimum for the kept
//! columns). `lambda = damp * mean(diag C)` (GPTQ's relative damping). Because the kept set is a prefix, one
//! Cholesky factor `L` of `C + lambda I` per layer serves every width: the leading `k x k` block of `L` is the
//! factor of `C[S,S] + lambda I`, and the leading block of `L^-1` is its inverse, so
//! `W'_S = (W (C + lambda I))[:, S] L_k^-ᵀ L_k^-1` costs two `d x k x k` products per layer and width (cached).
//!
//! Reconstruction is parallel: every layer's statistics come from the full network, not from the already
//! pruned earlier layers (sequential refitting measured no better on this model; issue 20). Kept layers at
//! full width and dropped layers are left as they are, so the identity sub-network is bit-exact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, bail, ensure};
use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::gguf::GgufFile;
use device_runtime::quant;
use device_runtime::subnet::{ExportPlan, ExportQuant, Provenance, Reconstruction};
use rayon::prelude::*;

use crate::store::calib::{self, CalibStats};

/// Default relative damping `lambda / mean(diag C)`.
pub const DEFAULT_DAMP: f64 = 0.01;

/// Whether sub-networks are reconstructed: `Auto` when the folder has calibration statistics, `On` (an error
/// without them), `Off` (`--no-reconstruct`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Reconstruct when `calib.gguf` is present.
    #[default]
    Auto,
    /// Reconstruct; refuse a model without statistics.
    On,
    /// Slice only.
    Off,
}

impl Mode {
    /// The mode of the `--reconstruct` / `--no-reconstruct` flags (clap makes them exclusive).
    pub fn from_flags(on: bool, off: bool) -> Mode {
        if off {
            Mode::Off
        } else if on {
            Mode::On
        } else {
            Mode::Auto
        }
    }
}

/// The two kinds of refit tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    FfnDown,
    AttnOutput,
}

/// Per layer and kind: `M = W C` (`d x n`) and `L^-1` (`n x n`, lower triangular), both row-major f32.
struct Prepared {
    m: Vec<f32>,
    linv: Vec<f32>,
    n: usize,
    d: usize,
}

/// Refits sub-networks of one super-network from its `calib.gguf` ([`Reconstructor::reconstruction`]).
/// Thread-safe; per-layer factors and per-(layer, width) results are computed once and cached.
pub struct Reconstructor {
    weights: GgufFile,
    stats: CalibStats,
    mc: ModelConfig,
    damp: f64,
    prepared: HashMap<(usize, Kind), OnceLock<Result<Arc<Prepared>, String>>>,
    cache: Mutex<HashMap<(usize, Kind, usize), Arc<Vec<f32>>>>,
}

/// At most this many refit tensors stay cached (about 3 MB each for SmolLM2).
const CACHE_ENTRIES: usize = 512;

impl Reconstructor {
    /// The reconstructor of the super-network whose weights are `weights_path` (its `calib.gguf` is the file
    /// [`calib::STATS_NAME`] in the same folder), with relative damping `damp`.
    ///
    /// Errors: no statistics file, statistics measured on other weights (the SHA-256 differs: a fine-tuned
    /// folder needs `llamanas calibrate`), shapes that do not match the model, `damp` not positive and finite.
    pub fn open(weights_path: &Path, damp: f64) -> Result<Reconstructor> {
        ensure!(damp.is_finite() && damp > 0.0, "reconstruction damping {damp} must be positive and finite");
        let stats_path = stats_path(weights_path);
        ensure!(
            stats_path.is_file(),
            "{}: no calibration statistics ({} missing): run `llamanas calibrate {}` or pass --no-reconstruct",
            weights_path.display(),
            stats_path.display(),
            weights_path.parent().map_or(".".into(), |p| p.display().to_string())
        );
        let weights = GgufFile::open(weights_path).with_context(|| format!("opening {}", weights_path.display()))?;
        let mc = ModelConfig::from_gguf(&weights).with_context(|| format!("{}: not a LLaMA-family model", weights_path.display()))?;
        let stats = CalibStats::open(&stats_path, &mc)?;
        let sha = Provenance::sha256_hex(weights.bytes());
        ensure!(
            sha == stats.weights_sha256,
            "{}: measured on other weights (SHA-256 {}) than {} ({sha}): run `llamanas calibrate {}` to measure these \
             weights, or pass --no-reconstruct",
            stats_path.display(),
            stats.weights_sha256,
            weights_path.display(),
            weights_path.parent().map_or(".".into(), |p| p.display().to_string())
        );
        let mut prepared = HashMap::new();
        for l in 0..mc.n_layers {
            prepared.insert((l, Kind::FfnDown), OnceLock::new());
            prepared.insert((l, Kind::AttnOutput), OnceLock::new());
        }
        Ok(Reconstructor { weights, stats, mc, damp, prepared, cache: Mutex::new(HashMap::new()) })
    }

    /// `Some` reconstructor for `mode` and the model at `weights_path`: `Auto` gives `None` when there is no
    /// statistics file, `Off` always `None`, `On` an error without one.
    ///
    /// Errors: as [`Reconstructor::open`].
    /// The damping is [`DEFAULT_DAMP`], or `$LLAMANAS_RECON_DAMP` when set (for measurements such as the
    /// damping sweep of docs/QUALITY.md; an unparsable value is an error).
    pub fn for_mode(weights_path: &Path, mode: Mode) -> Result<Option<Reconstructor>> {
        let damp = match std::env::var("LLAMANAS_RECON_DAMP") {
            Ok(v) => v.parse::<f64>().with_context(|| format!("LLAMANAS_RECON_DAMP={v:?} is not a number"))?,
            Err(_) => DEFAULT_DAMP,
        };
        match mode {
            Mode::Off => Ok(None),
            Mode::Auto if !stats_path(weights_path).is_file() => Ok(None),
            _ => Ok(Some(Reconstructor::open(weights_path, damp)?)),
        }
    }

    /// The calibration statistics.
    pub fn stats(&self) -> &CalibStats {
        &self.stats
    }

    /// What is written to the exported file's `llamanas.reconstruction` key.
    pub fn method(&self) -> String {
        format!(
            "least-squares refit of ffn_down and attn_output to the kept inputs, W (C + lambda I)[:,S] (C[S,S] + lambda I)^-1, \
             lambda = {} mean(diag C); calibration: {} tokens of {}",
            self.damp, self.stats.tokens, self.stats.source
        )
    }

    /// The refit tensors of `cfg` (output names, blocks renumbered): `ffn_down` of every kept layer narrower
    /// than the full layer, `attn_output` of every kept layer with fewer KV heads. Empty for the identity.
    ///
    /// Errors: a sub-network outside the model, a statistic that is singular after damping or not finite.
    pub fn reconstruction(&self, cfg: &SubnetConfig) -> Result<Reconstruction> {
        cfg.validate(&self.mc)?;
        let n_heads = cfg.n_heads(&self.mc);
        let mut jobs = Vec::new();
        for (i, &l) in cfg.layers.iter().enumerate() {
            if cfg.ffn[i] > 0 && cfg.ffn[i] < self.mc.ffn[l] {
                jobs.push((format!("blk.{i}.ffn_down.weight"), l, Kind::FfnDown, cfg.ffn[i]));
            }
            if cfg.kv_heads[i] > 0 && cfg.kv_heads[i] < self.mc.n_kv_heads[l] {
                jobs.push((format!("blk.{i}.attn_output.weight"), l, Kind::AttnOutput, n_heads[i] * self.mc.head_dim));
            }
        }
        // Factors of every layer involved, in parallel (each is a Cholesky and a triangular inverse).
        jobs.par_iter().map(|&(_, l, kind, _)| self.prepared(l, kind).map(|_| ())).collect::<Result<Vec<()>>>()?;
        let mut tensors = HashMap::with_capacity(jobs.len());
        for (name, l, kind, k) in jobs {
            tensors.insert(name, self.refit(l, kind, k)?.as_ref().clone());
        }
        Ok(Reconstruction { method: if tensors.is_empty() { String::new() } else { self.method() }, tensors })
    }

    fn prepared(&self, l: usize, kind: Kind) -> Result<Arc<Prepared>> {
        let cell = self.prepared.get(&(l, kind)).expect("every layer has a cell");
        cell.get_or_init(|| self.prepare(l, kind).map(Arc::new).map_err(|e| format!("{e:#}"))).clone().map_err(anyhow::Error::msg)
    }

    fn prepare(&self, l: usize, kind: Kind) -> Result<Prepared> {
        let (wname, sname) = match kind {
            Kind::FfnDown => (format!("blk.{l}.ffn_down.weight"), calib::ffn_cov_name(l)),
            Kind::AttnOutput => (format!("blk.{l}.attn_output.weight"), calib::attn_cov_name(l)),
        };
        let sp = self.stats.path().display();
        let c = self.stats.matrix(&sname).with_context(|| format!("{sp}: no statistic {sname}"))?;
        let t = self.weights.tensor(&wname).with_context(|| format!("{}: missing tensor {wname}", self.weights.name()))?;
        let n = t.dims[0] as usize;
        let d = t.n_rows() as usize;
        ensure!(c.len() == n * n, "{sp}: {sname} has {} elements, {wname} needs {n}x{n}", c.len());
        if let Some(i) = c.iter().position(|x| !x.is_finite()) {
            bail!("{sp}: {sname}: element {i} is not finite");
        }
        let w = quant::dequantize_to_vec(t.ty, self.weights.tensor_data(t)).with_context(|| format!("{}: {wname}", self.weights.name()))?;
        prepare(&w, d, n, &c, self.damp).with_context(|| format!("{sp}: {sname}"))
    }

    /// `W'_S` for the first `k` inputs of layer `l`: `d x k` row-major, i.e. ggml dims `[k, d]`.
    fn refit(&self, l: usize, kind: Kind, k: usize) -> Result<Arc<Vec<f32>>> {
        if let Some(v) = self.cache.lock().expect("cache lock").get(&(l, kind, k)) {
            return Ok(v.clone());
        }
        let p = self.prepared(l, kind)?;
        let out = Arc::new(refit_prepared(&p, k).with_context(|| format!("layer {l}"))?);
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert((l, kind, k), out.clone());
        Ok(out)
    }
}

/// `M = W (C + lambda I)` and `L^-1` of `C + lambda I`, `lambda = damp mean(diag C)`, for `w` (`d x n`
/// row-major) and `c` (`n x n`).
fn prepare(w: &[f32], d: usize, n: usize, c: &[f32], damp: f64) -> Result<Prepared> {
    ensure!(w.len() == d * n && c.len() == n * n, "weights {} / statistic {} elements for d {d}, n {n}", w.len(), c.len());
    let (linv, lambda) = damped_cholesky_inverse(c, n, damp)?;
    let mut m = vec![0f32; d * n];
    matmul(d, n, n, &mut m, n, w, n, c, n, false);
    let lambda = lambda as f32;
    m.iter_mut().zip(w).for_each(|(m, &w)| *m += lambda * w);
    Ok(Prepared { m, linv, n, d })
}

/// `W'_S = M[:, :k] L_k^-ᵀ L_k^-1`, `d x k` row-major.
fn refit_prepared(p: &Prepared, k: usize) -> Result<Vec<f32>> {
    ensure!(k > 0 && k <= p.n, "{k} kept inputs of {}", p.n);
    // T = M[:, :k] L_k^-T  (rhs element (q, j) = Linv[j][q]); W' = T L_k^-1 (rhs element (q, j) = Linv[q][j]).
    let mut tmat = vec![0f32; p.d * k];
    matmul(p.d, k, k, &mut tmat, k, &p.m, p.n, &p.linv, p.n, true);
    let mut out = vec![0f32; p.d * k];
    matmul(p.d, k, k, &mut out, k, &tmat, k, &p.linv, p.n, false);
    if let Some(i) = out.iter().position(|x| !x.is_finite()) {
        bail!("the refit weight {i} is not finite (statistics ill-conditioned)");
    }
    Ok(out)
}

/// The damped least-squares refit `W'_S = W (C + lambda I)[:, S] (C[S,S] + lambda I)^-1`, `S = 0..k`,
/// `lambda = damp * mean(diag C)`, of `w` (`d x n` row-major: ggml dims `[n, d]`) from the second-moment
/// matrix `c` (`n x n` row-major): `d x k` row-major (ggml dims `[k, d]`). It minimizes
/// `E||W h - V h_S||² + lambda ||V - W_S||²`: the damping pulls the refit toward the sliced weights `W_S`
/// (plain slicing as `lambda -> inf`), not toward zero. What [`Reconstructor`] computes (and caches) per layer
/// and width.
///
/// Errors: wrong lengths, `k` outside `1..=n`, a singular or non-finite statistic.
pub fn refit_columns(w: &[f32], d: usize, n: usize, c: &[f32], k: usize, damp: f64) -> Result<Vec<f32>> {
    refit_prepared(&prepare(w, d, n, c, damp)?, k)
}

/// `calib.gguf` beside `weights_path`.
pub fn stats_path(weights_path: &Path) -> PathBuf {
    weights_path.parent().unwrap_or(Path::new(".")).join(calib::STATS_NAME)
}

/// The export plan of `cfg` of `base` at `quant`, reconstructed when `recon` is given: the one way the
/// toolkit builds a sub-network (scoring, search, export and the baselines all call it), so that what is
/// scored is byte for byte what is exported.
///
/// Errors: those of [`ExportPlan::new`], [`Reconstructor::reconstruction`], [`ExportPlan::with_reconstruction`].
pub fn plan<'f>(
    base: &'f GgufFile,
    cfg: &SubnetConfig,
    quant: ExportQuant,
    provenance: &Provenance,
    recon: Option<&Reconstructor>,
) -> Result<ExportPlan<'f>> {
    let plan = ExportPlan::new(base, cfg, quant, provenance)
        .with_context(|| format!("{}: cannot build sub-network {}", base.name(), cfg.id()))?;
    match recon {
        None => Ok(plan),
        Some(r) => {
            let rec = r.reconstruction(cfg).with_context(|| format!("reconstructing sub-network {}", cfg.id()))?;
            Ok(plan.with_reconstruction(rec)?)
        }
    }
}

/// `dst[i*ldd + j] = sum_q a[i*lda + q] * B(q, j)` for `i < m, j < n, q < k`, with `B(q, j) = b[q*ldb + j]`,
/// or `b[j*ldb + q]` when `b_transposed` (the `gemm` crate, all threads of the current rayon pool).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], ldd: usize, a: &[f32], lda: usize, b: &[f32], ldb: usize, b_transposed: bool) {
    assert!(m == 0 || dst.len() >= (m - 1) * ldd + n);
    assert!(m == 0 || k == 0 || a.len() >= (m - 1) * lda + k);
    if b_transposed {
        assert!(n == 0 || k == 0 || b.len() >= (n - 1) * ldb + k);
    } else {
        assert!(k == 0 || n == 0 || b.len() >= (k - 1) * ldb + n);
    }
    if m == 0 || n == 0 {
        return;
    }
    let (rhs_cs, rhs_rs) = if b_transposed { (ldb as isize, 1) } else { (1, ldb as isize) };
    // SAFETY: the asserts above bound every element the strides address.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ldd as isize,
            false,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

/// `L^-1` (row-major `n x n`, lower triangular, f32) for the Cholesky factor `L` of `C + lambda I`,
/// `lambda = damp * mean(diag C)`, computed in f64 (Cholesky–Banachiewicz, then forward substitution row by
/// row), and `lambda`.
///
/// Errors: `C` with a non-positive mean diagonal, or a pivot that is not positive after damping.
pub fn damped_cholesky_inverse(c: &[f32], n: usize, damp: f64) -> Result<(Vec<f32>, f64)> {
    ensure!(c.len() == n * n, "{} elements for a {n}x{n} matrix", c.len());
    let mean_diag = (0..n).map(|i| c[i * n + i] as f64).sum::<f64>() / n.max(1) as f64;
    ensure!(mean_diag.is_finite() && mean_diag > 0.0, "singular statistic: mean diagonal {mean_diag} (no activation seen)");
    let lambda = damp * mean_diag;
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let (li, lj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            let s: f64 = li.iter().zip(lj).map(|(a, b)| a * b).sum();
            // Symmetrize: the accumulated statistic's triangles can differ in the last bits.
            let a = 0.5 * (c[i * n + j] as f64 + c[j * n + i] as f64) + if i == j { lambda } else { 0.0 };
            if i == j {
                let p = a - s;
                ensure!(p > 0.0 && p.is_finite(), "singular statistic: pivot {i} is {p} after damping {lambda}");
                l[i * n + i] = p.sqrt();
            } else {
                l[i * n + j] = (a - s) / l[j * n + j];
            }
        }
    }
    // Rows of X = L^-1: X[i] = (e_i - sum_{p<i} L[i][p] X[p]) / L[i][i]; X[p] is zero beyond column p.
    let mut x = vec![0f64; n * n];
    for i in 0..n {
        let (done, rest) = x.split_at_mut(i * n);
        let row = &mut rest[..n];
        row[i] = 1.0;
        for p in 0..i {
            let f = l[i * n + p];
            if f != 0.0 {
                for (r, &xp) in row[..=p].iter_mut().zip(&done[p * n..p * n + p + 1]) {
                    *r -= f * xp;
                }
            }
        }
        let inv = 1.0 / l[i * n + i];
        row[..=i].iter_mut().for_each(|r| *r *= inv);
    }
    Ok((x.into_iter().map(|v| v as f32).collect(), lambda))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3x3 hand calculation: C = [[4,2,0],[2,3,1],[0,1,2]], W = [1 1 1] (d = 1), no damping worth
    /// counting. Keep S = {0, 1}: W' = W C[:,S] C[S,S]^-1. W C[:,S] = [6, 6]; C[S,S]^-1 = [[3,-2],[-2,4]]/8 ->
    /// W' = [6*3 - 6*2, -6*2 + 6*4] / 8 = [0.75, 1.5].
    #[test]
    fn refit_matches_hand_calculation() {
        let c = [4.0f32, 2.0, 0.0, 2.0, 3.0, 1.0, 0.0, 1.0, 2.0];
        let (linv, _) = damped_cholesky_inverse(&c, 3, 1e-9).unwrap();
        let w = [1.0f32, 1.0, 1.0];
        let mut m = vec![0f32; 3];
        matmul(1, 3, 3, &mut m, 3, &w, 3, &c, 3, false);
        assert_eq!(m, vec![6.0, 6.0, 3.0]);
        let k = 2;
        let mut t = vec![0f32; k];
        matmul(1, k, k, &mut t, k, &m, 3, &linv, 3, true);
        let mut out = vec![0f32; k];
        matmul(1, k, k, &mut out, k, &t, k, &linv, 3, false);
        assert!((out[0] - 0.75).abs() < 1e-5 && (out[1] - 1.5).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn singular_statistic_is_an_error() {
        let e = damped_cholesky_inverse(&[0.0; 4], 2, 0.01).unwrap_err().to_string();
        assert!(e.contains("singular"), "{e}");
        let e = damped_cholesky_inverse(&[1.0, 0.0, 0.0, f32::NAN], 2, 0.01).unwrap_err().to_string();
        assert!(e.contains("singular") || e.contains("pivot"), "{e}");
    }
}
