//! Validation of a profile: random sub-networks of the real model, measured end to end with the engine,
//! against the latency model's predictions (MAPE, share within +-10%).
//!
//! Each sub-network keeps a random set of blocks (at least a quarter of them), with per block a random FFN
//! width (a multiple of 128 up to the block's width: measured widths and widths between them) and a random
//! KV-head count (`1..=` the block's). It is exported at the profile's quantization with
//! [`crate::subnet::export_subnet`] to a GGUF file in a temporary folder, loaded with [`Model::load`], and
//! timed as a user runs it: prefill of a prompt into an empty cache, then single-token decodes at a context
//! length (consecutive runs, no cache flush). All sub-networks are loaded first and timed in `runs` rounds
//! after one warm-up round (each round: every sub-network once), so that a slow phase of a shared machine
//! is spread over all of them; each keeps the median of its rounds.
//!
//! The base model (all its blocks at full shape), exported in the same way, is timed in the same rounds.
//! Its measured time over the profile's prediction for it is the *drift* of the machine between profiling
//! and validation; the report gives the errors as measured and after scaling every prediction by the drift
//! (the latency model's own error, with the machine's change of speed removed).

use super::measure::{BlockSpec, ExportDir, ModelBuilder, Runner, tokens};
use super::{LatencyModel, Profile, ProfileError, ValidationSummary};
use crate::arch::SubnetConfig;
use crate::backend::{Backend, BackendSession};
use crate::engine::{Logits, Model};
use crate::gguf::GgufFile;
use crate::subnet::{ExportQuant, Provenance};
use std::time::Instant;

/// Settings of [`validate_profile`].
#[derive(Clone, Debug)]
pub struct ValidationOptions {
    /// Number of random sub-networks.
    pub k: usize,
    /// Seed of the random sub-networks.
    pub seed: u64,
    /// Context length of the decode measurements (tokens in the cache).
    pub decode_context: usize,
    /// Prompt length of the prefill measurements.
    pub prefill_length: usize,
    /// Timed rounds (each round times every sub-network once).
    pub runs: usize,
    /// Show a progress bar.
    pub progress: bool,
}

impl Default for ValidationOptions {
    fn default() -> Self {
        ValidationOptions { k: 30, seed: 1, decode_context: 256, prefill_length: 128, runs: 9, progress: false }
    }
}

/// One validated sub-network.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ValidationRow {
    /// The sub-network.
    pub subnet: SubnetConfig,
    /// Predicted decode ms/token.
    pub decode_pred_ms: f64,
    /// Measured decode ms/token (median).
    pub decode_meas_ms: f64,
    /// Predicted prefill ms.
    pub prefill_pred_ms: f64,
    /// Measured prefill ms (median).
    pub prefill_meas_ms: f64,
    /// Decode prediction scaled by the drift (see the module docs).
    pub decode_norm_ms: f64,
    /// Prefill prediction scaled by the drift.
    pub prefill_norm_ms: f64,
}

impl ValidationRow {
    /// Decode error, % of the measurement (positive: over-predicted).
    pub fn decode_err_pct(&self) -> f64 {
        100.0 * (self.decode_pred_ms - self.decode_meas_ms) / self.decode_meas_ms
    }
    /// Prefill error, % of the measurement.
    pub fn prefill_err_pct(&self) -> f64 {
        100.0 * (self.prefill_pred_ms - self.prefill_meas_ms) / self.prefill_meas_ms
    }
    /// Drift-normalized decode error, %.
    pub fn decode_norm_err_pct(&self) -> f64 {
        100.0 * (self.decode_norm_ms - self.decode_meas_ms) / self.decode_meas_ms
    }
    /// Drift-normalized prefill error, %.
    pub fn prefill_norm_err_pct(&self) -> f64 {
        100.0 * (self.prefill_norm_ms - self.prefill_meas_ms) / self.prefill_meas_ms
    }
}

/// Rows and summary of a validation.
#[derive(Clone, Debug)]
pub struct ValidationReport {
    /// One row per sub-network.
    pub rows: Vec<ValidationRow>,
    /// MAPE and shares.
    pub summary: ValidationSummary,
}

/// SplitMix64 (Steele et al. 2014): a small seeded generator, enough for sampling sub-networks.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// `k` random sub-networks of a model with per-layer FFN widths `ffn` and KV heads `kv` (see the module docs).
pub fn random_subnets(ffn: &[usize], kv: &[usize], k: usize, seed: u64) -> Vec<SubnetConfig> {
    let mut r = SplitMix(seed);
    let n = ffn.len();
    (0..k)
        .map(|_| {
            let keep = r.range(n.div_ceil(4).max(1), n);
            let mut idx: Vec<usize> = (0..n).collect();
            for i in 0..keep {
                let j = r.range(i, n - 1);
                idx.swap(i, j);
            }
            let mut layers = idx[..keep].to_vec();
            layers.sort_unstable();
            let ffn_w = layers
                .iter()
                .map(|&l| match ffn[l] / 128 {
                    0 => ffn[l],
                    steps => 128 * r.range(1, steps),
                })
                .collect();
            let kvs = layers.iter().map(|&l| r.range(1, kv[l].max(1))).collect();
            SubnetConfig { layers, ffn: ffn_w, kv_heads: kvs }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Measure `model` end to end: (decode ms at `ctx`, prefill ms of `n` tokens), medians over `runs` rounds
/// after a warm-up round, each round as in [`validate_profile`] (one prefill, then [`DECODES_PER_ROUND`]
/// decodes). On the CPU engine.
pub fn measure_end_to_end(model: &Model, threads: usize, ctx: usize, n: usize, runs: usize) -> Result<(f64, f64), ProfileError> {
    let runner = Runner::Cpu { threads };
    let be = runner.backend(model)?;
    let mut e = EndToEnd::new(model, &be, &runner, ctx, n)?;
    for round in 0..=runs.max(1) {
        e.run(round > 0)?;
    }
    Ok(e.medians())
}

/// Decodes timed per round of [`validate_profile`] (after the round's prefill).
const DECODES_PER_ROUND: usize = 3;

/// End-to-end timing of one model over the rounds of [`validate_profile`]: per round a prefill of `n`
/// tokens into an empty cache, then [`DECODES_PER_ROUND`] single-token decodes at context `ctx`.
struct EndToEnd<'m> {
    session: BackendSession<'m>,
    toks: Vec<u32>,
    ctx: usize,
    n: usize,
    prefill_ms: Vec<f64>,
    decode_ms: Vec<f64>,
}

impl<'m> EndToEnd<'m> {
    fn new(model: &'m Model, be: &'m Backend, runner: &Runner, ctx: usize, n: usize) -> Result<Self, ProfileError> {
        let len = ctx.saturating_add(1).max(n);
        let session = be.session(model, runner.opts(len))?;
        Ok(EndToEnd { session, toks: tokens(len, model.config.n_vocab), ctx, n, prefill_ms: vec![], decode_ms: vec![] })
    }

    /// One round; its times are kept when `keep` (not for the warm-up round).
    fn run(&mut self, keep: bool) -> Result<(), ProfileError> {
        let s = &mut self.session;
        s.reset();
        let t = Instant::now();
        s.prefill(&self.toks[..self.n], Logits::Last)?;
        let pre = t.elapsed().as_secs_f64() * 1e3;
        if s.pos() < self.ctx {
            s.prefill(&self.toks[s.pos()..self.ctx], Logits::Last)?;
        }
        let mut dec = [0f64; DECODES_PER_ROUND];
        for d in dec.iter_mut() {
            s.truncate(self.ctx);
            let t = Instant::now();
            s.decode(self.toks[self.ctx])?;
            *d = t.elapsed().as_secs_f64() * 1e3;
        }
        if keep {
            self.prefill_ms.push(pre);
            self.decode_ms.extend_from_slice(&dec);
        }
        Ok(())
    }

    /// (decode ms, prefill ms): medians over the kept rounds.
    fn medians(&self) -> (f64, f64) {
        (median(self.decode_ms.clone()), median(self.prefill_ms.clone()))
    }
}

/// Build `subnet` of `base` at the profile's quantization in memory (sliced and quantized as the exporter
/// does; see [`ModelBuilder`]).
pub fn build_subnet(b: &ModelBuilder, subnet: &SubnetConfig, n_ctx: usize) -> Result<Model, ProfileError> {
    subnet.validate(&b.config)?;
    let blocks: Vec<BlockSpec> = subnet
        .layers
        .iter()
        .zip(&subnet.ffn)
        .zip(&subnet.kv_heads)
        .map(|((&l, &f), &k)| BlockSpec { base_layer: l, kv_heads: k, ffn: f })
        .collect();
    b.build(&blocks, None, n_ctx)
}

/// Validate `profile` on `k` random sub-networks of `base`: predictions against end-to-end measurements of
/// the sub-networks exported to GGUF (in a temporary folder under `std::env::temp_dir()`, removed afterwards).
///
/// Errors: [`ProfileError::Mismatch`] (profile not for this model), [`ProfileError::OutOfRange`] (the decode
/// context or prompt length outside the profile), [`ProfileError::Subnet`] (export), engine errors.
pub fn validate_profile(base: &GgufFile, profile: &Profile, o: &ValidationOptions) -> Result<ValidationReport, ProfileError> {
    let b = ModelBuilder::new(base, &profile.quant)?;
    let lm = LatencyModel::new(profile.clone(), &b.config, &profile.quant)?;
    let quant: ExportQuant = profile.quant.parse().map_err(ProfileError::Invalid)?;
    let subnets = random_subnets(&b.config.ffn, &b.config.n_kv_heads, o.k, o.seed);
    let dir = ExportDir::new("validate")?;
    let provenance = Provenance::for_base(base);
    let rounds = o.runs.max(1);
    let bar = if o.progress {
        let b = indicatif::ProgressBar::new((o.k + (o.k + 1) * (rounds + 1)) as u64);
        if let Ok(st) = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}") {
            b.set_style(st.progress_chars("=> "));
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    // Export and load every sub-network first, then time them all in rounds.
    let mut models = Vec::with_capacity(o.k);
    for s in &subnets {
        bar.set_message(format!("export {}", s.id()));
        models.push(dir.load(base, s, quant, &provenance)?);
        bar.inc(1);
    }
    // The base model, exported and timed like the sub-networks, last in every round: measures the drift.
    let reference = b.config.full_subnet();
    models.push(dir.load(base, &reference, quant, &provenance)?);
    let (ctx, n) = (o.decode_context, o.prefill_length);
    // The profile's backend: the CPU with its threads, or the wgpu adapter it names.
    let runner = Runner::new(&profile.backend, profile.device.adapter.as_ref().map(|a| a.name.as_str()), profile.threads)?;
    let backends = models.iter().map(|m| runner.backend(m)).collect::<Result<Vec<_>, _>>()?;
    let mut timers = models
        .iter()
        .zip(&backends)
        .map(|(m, be)| EndToEnd::new(m, be, &runner, ctx, n))
        .collect::<Result<Vec<_>, _>>()?;
    for round in 0..=rounds {
        bar.set_message(if round == 0 { "warm-up".to_string() } else { format!("round {round}/{rounds}") });
        for t in timers.iter_mut() {
            t.run(round > 0)?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let (ref_dec, ref_pre) = timers.last().expect("reference timer").medians();
    let decode_drift = ref_dec / lm.decode_ms(&reference, ctx)?;
    let prefill_drift = ref_pre / lm.prefill_ms(&reference, n)?;
    let mut rows = Vec::with_capacity(o.k);
    for (s, t) in subnets.into_iter().zip(&timers) {
        let decode_pred_ms = lm.decode_ms(&s, ctx)?;
        let prefill_pred_ms = lm.prefill_ms(&s, n)?;
        let (decode_meas_ms, prefill_meas_ms) = t.medians();
        rows.push(ValidationRow {
            subnet: s,
            decode_pred_ms,
            decode_meas_ms,
            prefill_pred_ms,
            prefill_meas_ms,
            decode_norm_ms: decode_pred_ms * decode_drift,
            prefill_norm_ms: prefill_pred_ms * prefill_drift,
        });
    }
    let stats = |errs: Vec<f64>| {
        let n = errs.len().max(1) as f64;
        let mape = errs.iter().map(|e| e.abs()).sum::<f64>() / n;
        let within = 100.0 * errs.iter().filter(|e| e.abs() <= 10.0).count() as f64 / n;
        let max = errs.iter().fold(0f64, |m, e| if e.abs() > m.abs() { *e } else { m });
        let r = |x: f64| (x * 1e4).round() / 1e4;
        (r(mape), r(within), r(max))
    };
    let (dm, dw, dx) = stats(rows.iter().map(|r| r.decode_err_pct()).collect());
    let (pm, pw, px) = stats(rows.iter().map(|r| r.prefill_err_pct()).collect());
    let (ndm, ndw, ndx) = stats(rows.iter().map(|r| r.decode_norm_err_pct()).collect());
    let (npm, npw, npx) = stats(rows.iter().map(|r| r.prefill_norm_err_pct()).collect());
    let pct = |f: f64| ((f - 1.0) * 1e6).round() / 1e4;
    let summary = ValidationSummary {
        k: rows.len(),
        seed: o.seed,
        decode_context: o.decode_context,
        prefill_length: o.prefill_length,
        decode_mape_pct: dm,
        decode_within_10_pct: dw,
        decode_max_err_pct: dx,
        prefill_mape_pct: pm,
        prefill_within_10_pct: pw,
        prefill_max_err_pct: px,
        decode_drift_pct: Some(pct(decode_drift)),
        prefill_drift_pct: Some(pct(prefill_drift)),
        decode_mape_normalized_pct: Some(ndm),
        decode_within_10_normalized_pct: Some(ndw),
        decode_max_err_normalized_pct: Some(ndx),
        prefill_mape_normalized_pct: Some(npm),
        prefill_within_10_normalized_pct: Some(npw),
        prefill_max_err_normalized_pct: Some(npx),
    };
    Ok(ValidationReport { rows, summary })
}
