//! `llamanas prune`: the training-free pruning baselines a user would try instead of the search, picked to
//! match a decode speed-up predicted by a device profile (docs/QUALITY.md compares them with LINAS).
//!
//! - **ShortGPT** (Men et al. 2024, "ShortGPT: Layers in Large Language Models are More Redundant Than You
//!   Expect"): drop whole layers in ascending order of Block Influence `BI_l = 1 - mean_t cos(x_l, x_{l+1})`
//!   measured on calibration text ([`crate::store::calib`]), until the speed-up is reached.
//! - **Uniform width** (Minitron / FLAP style width pruning with one width for every layer): the widest FFN
//!   width, a multiple of the block size (32), whose uniform sub-network reaches the speed-up; the neurons kept
//!   are the first ones of the super-network's importance order (Minitron's activation-based importance), and
//!   `--kv-heads` optionally narrows every layer's attention too.
//!
//! The result is a `SubnetConfig` JSON that `llamanas export --subnet` (with `--any-subnet`, the baselines lie
//! outside the search space) and `llamanas eval --subnet` take; both reconstruct it like any sub-network
//! unless `--no-reconstruct` is given.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use device_runtime::arch::{ModelConfig, SubnetConfig};
use device_runtime::gguf::GgufFile;
use device_runtime::profile::{LatencyModel, Profile};

use crate::store::{SupernetMeta, calib};

/// A baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Drop the layers of lowest Block Influence.
    Shortgpt,
    /// One FFN width for every layer.
    UniformWidth,
}

/// Options of `llamanas prune`.
#[derive(Clone, Debug)]
pub struct PruneArgs {
    /// The super-network folder.
    pub input: PathBuf,
    /// The baseline.
    pub method: Method,
    /// Predicted decode speed-up to reach (> 1).
    pub target_speedup: f64,
    /// Device profile giving the latencies.
    pub profile: PathBuf,
    /// Decode context (tokens in the KV cache) of the latency.
    pub context: usize,
    /// KV heads of every layer for `uniform-width` (`None`: the base's).
    pub kv_heads: Option<usize>,
    /// Where to write the sub-network JSON.
    pub out: PathBuf,
}

/// What `llamanas prune` chose.
#[derive(Clone, Debug, PartialEq)]
pub struct PruneReport {
    /// The sub-network.
    pub config: SubnetConfig,
    /// Predicted decode latency of the base and the sub-network, ms/token.
    pub base_ms: f64,
    /// Predicted decode latency of the sub-network, ms/token.
    pub subnet_ms: f64,
}

/// Block Influence of every layer of the super-network `dir`: from `calib.gguf` (the statistics of its own
/// weights) when present, else from `supernet.json`'s calibration.
///
/// Errors: neither has it (import with calibration statistics, or `llamanas calibrate`).
pub fn block_influence(dir: &Path, mc: &ModelConfig) -> Result<Vec<f64>> {
    let stats = dir.join(calib::STATS_NAME);
    if stats.is_file() {
        return Ok(calib::CalibStats::open(&stats, mc)?.block_influence.iter().map(|&x| x as f64).collect());
    }
    let meta = SupernetMeta::read(&dir.join(crate::store::JSON_NAME))?;
    match meta.calibration {
        Some(c) if c.block_influence.len() == mc.n_layers => Ok(c.block_influence.iter().map(|&x| x as f64).collect()),
        _ => bail!(
            "{}: no Block Influence (neither {} nor a calibration with block_influence in supernet.json): import again, or run \
             `llamanas calibrate {}`",
            dir.display(),
            calib::STATS_NAME,
            dir.display()
        ),
    }
}

/// ShortGPT: remove layers in ascending order of `bi` from `full` until `speedup(cfg) >= target`.
///
/// Errors: the target cannot be reached keeping at least one layer.
pub fn shortgpt(full: &SubnetConfig, bi: &[f64], target: f64, speedup: &mut dyn FnMut(&SubnetConfig) -> Result<f64>) -> Result<SubnetConfig> {
    let mut order: Vec<usize> = (0..full.layers.len()).collect();
    order.sort_by(|&a, &b| bi[full.layers[a]].total_cmp(&bi[full.layers[b]]).then(a.cmp(&b)));
    let mut keep = vec![true; full.layers.len()];
    for &i in &order {
        let cfg = subset(full, &keep);
        if speedup(&cfg)? >= target {
            return Ok(cfg);
        }
        keep[i] = false;
        if !keep.iter().any(|&k| k) {
            break;
        }
    }
    let cfg = subset(full, &keep);
    if keep.iter().any(|&k| k) && speedup(&cfg)? >= target {
        return Ok(cfg);
    }
    bail!("ShortGPT cannot reach a decode speed-up of {target} keeping at least one layer")
}

fn subset(full: &SubnetConfig, keep: &[bool]) -> SubnetConfig {
    let pick = |v: &[usize]| v.iter().zip(keep).filter(|(_, k)| **k).map(|(x, _)| *x).collect::<Vec<_>>();
    SubnetConfig { layers: pick(&full.layers), ffn: pick(&full.ffn), kv_heads: pick(&full.kv_heads) }
}

/// Uniform width: the widest FFN width `w` (a multiple of `step`, at most every layer's width) with every
/// layer at `w` (and `kv` KV heads, when given) such that `speedup(cfg) >= target`.
///
/// Errors: no width reaches the target.
pub fn uniform_width(
    mc: &ModelConfig,
    kv: Option<usize>,
    step: usize,
    target: f64,
    speedup: &mut dyn FnMut(&SubnetConfig) -> Result<f64>,
) -> Result<SubnetConfig> {
    let max = *mc.ffn.iter().min().context("a model without layers")?;
    let mut w = max / step * step;
    while w >= step {
        let cfg = SubnetConfig {
            layers: (0..mc.n_layers).collect(),
            ffn: vec![w; mc.n_layers],
            kv_heads: (0..mc.n_layers).map(|l| kv.unwrap_or(mc.n_kv_heads[l]).min(mc.n_kv_heads[l])).collect(),
        };
        if speedup(&cfg)? >= target {
            return Ok(cfg);
        }
        w -= step;
    }
    bail!("no uniform FFN width (multiple of {step}) reaches a decode speed-up of {target}")
}

/// Run `llamanas prune`: choose the sub-network, write it to `args.out` (atomically) and return it.
///
/// Errors: a target not above 1, a profile for another model, no Block Influence for ShortGPT, an
/// unreachable target, I/O.
pub fn run(args: &PruneArgs) -> Result<PruneReport> {
    ensure!(args.target_speedup.is_finite() && args.target_speedup > 1.0, "--target-speedup {} must be a number above 1", args.target_speedup);
    let gguf = crate::export::base_gguf(&args.input)?;
    let base = GgufFile::open(&gguf).with_context(|| format!("opening {}", gguf.display()))?;
    let mc = ModelConfig::from_gguf(&base).with_context(|| format!("{}: not a LLaMA-family model", gguf.display()))?;
    let prof = Profile::load(&args.profile).with_context(|| format!("reading the profile {}", args.profile.display()))?;
    let quant = prof.quant.clone();
    let lm = LatencyModel::new(prof, &mc, &quant).with_context(|| format!("{}: cannot predict latencies", args.profile.display()))?;
    let full = mc.full_subnet();
    let base_ms = lm.decode_ms(&full, args.context)?;
    let mut speedup = |c: &SubnetConfig| -> Result<f64> { Ok(base_ms / lm.decode_ms(c, args.context)?) };
    let config = match args.method {
        Method::Shortgpt => {
            ensure!(args.kv_heads.is_none(), "--kv-heads is for uniform-width");
            ensure!(args.input.is_dir(), "{}: ShortGPT needs a super-network folder (its Block Influence)", args.input.display());
            let bi = block_influence(&args.input, &mc)?;
            shortgpt(&full, &bi, args.target_speedup, &mut speedup)?
        }
        Method::UniformWidth => {
            if let Some(k) = args.kv_heads {
                let max = mc.n_kv_heads.iter().copied().min().unwrap_or(0);
                ensure!((1..=max).contains(&k), "--kv-heads {k}: must be in 1..={max} (the base's KV heads per layer)");
            }
            uniform_width(&mc, args.kv_heads, crate::space::FFN_BLOCK, args.target_speedup, &mut speedup)?
        }
    };
    let subnet_ms = lm.decode_ms(&config, args.context)?;
    crate::store::write_atomic(&args.out, (serde_json::to_string(&config)? + "\n").as_bytes())?;
    Ok(PruneReport { config, base_ms, subnet_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Latency proportional to the kept layers' FFN widths plus a fixed head cost of 100.
    fn toy_speedup(c: &SubnetConfig) -> Result<f64> {
        let full = 100.0 + 4.0 * 1000.0;
        Ok(full / (100.0 + c.ffn.iter().sum::<usize>() as f64))
    }

    #[test]
    fn shortgpt_drops_lowest_influence_first() {
        let full = SubnetConfig { layers: vec![0, 1, 2, 3], ffn: vec![1000; 4], kv_heads: vec![3; 4] };
        // Speed-up 4100/3100 = 1.32 after one layer, 4100/2100 = 1.95 after two.
        let c = shortgpt(&full, &[0.5, 0.1, 0.3, 0.2], 1.3, &mut toy_speedup).unwrap();
        assert_eq!(c.layers, vec![0, 2, 3]);
        let c = shortgpt(&full, &[0.5, 0.1, 0.3, 0.2], 1.5, &mut toy_speedup).unwrap();
        assert_eq!(c.layers, vec![0, 2]);
        assert!(shortgpt(&full, &[0.5, 0.1, 0.3, 0.2], 100.0, &mut toy_speedup).is_err());
    }
}
