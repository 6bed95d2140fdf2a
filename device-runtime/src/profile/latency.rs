//! The latency model: decode ms/token and prefill ms of any sub-network, summed from a profile's tables.
//!
//! ```text
//! decode(s, c)  = overhead(c) + embedding(1) + final_norm + output_head + g_d(c) * Σ_blocks attention(kv_b, c) + ffn(w_b)
//! prefill(s, n) = overhead(n) + embedding(n) + final_norm + output_head + g_p(n) * Σ_blocks attention(kv_b, n) + ffn(w_b, n)
//! g_d(c) = (reference_d(c) - fixed_d(c)) / Σ_{base blocks} (...)      (the same for g_p)
//! ```
//!
//! The calibration factors `g` (schema 3) make the prediction for the base model equal to its end-to-end
//! time measured in the same passes as the parts: on this machine a block inside a real model costs 10-30%
//! less than the sum of its attention and FFN parts measured separately, nearly in proportion (the errors of
//! 30 random sub-networks fit `measured = a + b * predicted` with b = 0.73-0.93 and a close to the fixed
//! costs; docs/PERFORMANCE.md). `g` is clamped to 0.5..=2 ([`CALIBRATION_MIN`], [`CALIBRATION_MAX`]).
//! Schema-2 profiles have no reference and predict with `g = 1`.
//!
//! Tables are interpolated linearly between measured context / prompt lengths (attention is linear in the
//! context, its prefill cost is sampled densely enough for the quadratic term) and between FFN widths (a width
//! below the first measured one is extrapolated from the first two). KV-head counts are measured exactly.
//! A context or prompt length outside the measured range, an FFN width above the model's or more KV heads than
//! it has is an [`ProfileError::OutOfRange`] error, never an extrapolation.

use super::{FfnRow, Profile, ProfileError, RUNTIME_VERSION, Stat};
use crate::arch::{ModelConfig, SubnetConfig};

/// Smallest calibration factor applied: a reference that is noisy next to the fixed costs (a tiny model, a
/// machine that changed speed between the reference and the parts) cannot shrink the blocks below half of the
/// sum of their parts. Measured factors on the reference machine: 0.82-1.04 for decode (docs/PERFORMANCE.md).
pub const CALIBRATION_MIN: f64 = 0.5;
/// Largest calibration factor applied (see [`CALIBRATION_MIN`]).
pub const CALIBRATION_MAX: f64 = 2.0;

/// Predicts latencies from a [`Profile`] for sub-networks of one base model.
#[derive(Clone, Debug)]
pub struct LatencyModel {
    profile: Profile,
    base: ModelConfig,
}

/// Linear interpolation of `ys` over increasing `xs` at `x` (`xs` non-empty; `x` inside `[xs[0], xs[last]]`).
fn interp(xs: &[usize], ys: &[f64], x: f64) -> f64 {
    if xs.len() == 1 {
        return ys[0];
    }
    let i = xs.windows(2).position(|w| x <= w[1] as f64).unwrap_or(xs.len() - 2);
    let (x0, x1) = (xs[i] as f64, xs[i + 1] as f64);
    ys[i] + (ys[i + 1] - ys[i]) * (x - x0) / (x1 - x0)
}

fn medians(v: &[Stat]) -> Vec<f64> {
    v.iter().map(|s| s.median_ms).collect()
}

impl LatencyModel {
    /// A model for sub-networks of `base` quantized to `quant` (`q8_0`, ...), from `profile`.
    ///
    /// Errors: [`ProfileError::Mismatch`] when the profile was made for another quantization, another runtime
    /// version ([`RUNTIME_VERSION`]) or another model family (width, head size, vocabulary, GQA group, tied
    /// head), or does not cover the base model's KV heads and FFN widths; [`ProfileError::Incomplete`] when
    /// its tables are incomplete.
    pub fn new(profile: Profile, base: &ModelConfig, quant: &str) -> Result<LatencyModel, ProfileError> {
        profile.check().map_err(|reason| ProfileError::Incomplete { file: "<profile>".into(), reason })?;
        let mis = |s: String| Err(ProfileError::Mismatch(s));
        if !profile.quant.eq_ignore_ascii_case(quant) {
            return mis(format!("the profile was measured for quantization {}, not {quant}", profile.quant));
        }
        if profile.runtime_version != RUNTIME_VERSION {
            return mis(format!(
                "the profile was measured by runtime version {}, this is {RUNTIME_VERSION}: measure again with `edgerun profile`",
                profile.runtime_version
            ));
        }
        let m = &profile.model;
        let family = if base.arch == "llama" || base.arch == "deci" { "llama" } else { base.arch.as_str() };
        let max_kv = base.n_kv_heads.iter().copied().max().unwrap_or(0);
        let max_ffn = base.ffn.iter().copied().max().unwrap_or(0);
        let groups_ok = (0..base.n_layers).all(|l| base.n_kv_heads[l] == 0 || base.gqa_group(l) == m.gqa_group);
        let facts = [
            ("family", m.family.clone(), family.to_string()),
            ("d_model", m.d_model.to_string(), base.d_model.to_string()),
            ("head_dim", m.head_dim.to_string(), base.head_dim.to_string()),
            ("n_vocab", m.n_vocab.to_string(), base.n_vocab.to_string()),
            ("tied_embeddings", m.tied_embeddings.to_string(), base.tied_embeddings.to_string()),
        ];
        for (what, p, b) in facts {
            if p != b {
                return mis(format!("the profile's model family has {what} {p}, the model has {b}"));
            }
        }
        if !groups_ok {
            return mis(format!("the model's GQA group sizes differ from the profile's {}", m.gqa_group));
        }
        if max_kv > m.max_kv_heads || max_ffn > m.max_ffn {
            return mis(format!(
                "the profile covers up to {} KV heads and FFN {}, the model has {max_kv} and {max_ffn}",
                m.max_kv_heads, m.max_ffn
            ));
        }
        Ok(LatencyModel { profile, base: base.clone() })
    }

    /// [`LatencyModel::new`] for a run on `backend` (`cpu` or `wgpu`): the profile must have been measured on
    /// that backend (a wgpu profile times a GPU, not the CPU engine, and the other way round).
    ///
    /// Errors: [`ProfileError::Mismatch`] naming both backends (and the profile's adapter), then as
    /// [`LatencyModel::new`].
    pub fn for_backend(profile: Profile, base: &ModelConfig, quant: &str, backend: &str) -> Result<LatencyModel, ProfileError> {
        if profile.backend != backend {
            let on = profile.device.adapter.as_ref().map_or(String::new(), |a| format!(" on {}", a.label()));
            return Err(ProfileError::Mismatch(format!(
                "the profile was measured on backend {}{on}, the request is for backend {backend}: measure a profile with `edgerun profile --backend {backend}`",
                profile.backend
            )));
        }
        Self::new(profile, base, quant)
    }

    /// The profile the model predicts from.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn ffn_at(rows: &[FfnRow], point: usize, width: usize, max: usize) -> Result<f64, ProfileError> {
        if width == 0 {
            return Ok(0.0);
        }
        if width > max {
            return Err(ProfileError::OutOfRange(format!("FFN width {width} > the profile's {max}")));
        }
        let ws: Vec<usize> = rows.iter().map(|r| r.width).collect();
        let ys: Vec<f64> = rows.iter().map(|r| r.ms[point].median_ms).collect();
        if ws.len() >= 2 && width < ws[0] {
            // Below the first measured width: the line through the first two.
            let slope = (ys[1] - ys[0]) / (ws[1] - ws[0]) as f64;
            return Ok((ys[0] - slope * (ws[0] - width) as f64).max(0.0));
        }
        Ok(interp(&ws, &ys, width as f64))
    }

    fn check_subnet(&self, s: &SubnetConfig) -> Result<(), ProfileError> {
        s.validate(&self.base)?;
        Ok(())
    }

    fn point(xs: &[usize], x: usize, what: &str) -> Result<(), ProfileError> {
        let (lo, hi) = (xs[0], *xs.last().unwrap());
        if x < lo || x > hi {
            return Err(ProfileError::OutOfRange(format!("{what} {x} outside the measured {lo}..={hi}")));
        }
        Ok(())
    }

    /// Fixed decode costs at context `x`: overhead, embedding lookup, final norm, output head (ms).
    fn decode_fixed(&self, x: f64) -> f64 {
        let t = &self.profile.decode;
        interp(&t.contexts, &medians(&t.overhead), x) + t.embedding.median_ms + t.final_norm.median_ms + t.output_head.median_ms
    }

    /// Sum of the blocks' parts of `s` in decode at context `x` (ms), uncalibrated.
    fn decode_blocks(&self, s: &SubnetConfig, x: f64) -> Result<f64, ProfileError> {
        let t = &self.profile.decode;
        let mut ms = 0.0;
        for (&kv, &w) in s.kv_heads.iter().zip(&s.ffn) {
            if kv > 0 {
                ms += interp(&t.contexts, &medians(&t.attention[kv - 1].ms), x);
            }
            ms += Self::ffn_at(&t.ffn, 0, w, self.profile.model.max_ffn)?;
        }
        Ok(ms)
    }

    /// Fixed prefill costs for a prompt of `x` tokens (ms).
    fn prefill_fixed(&self, x: f64) -> f64 {
        let t = &self.profile.prefill;
        let lens = &t.lengths;
        interp(lens, &medians(&t.overhead), x) + interp(lens, &medians(&t.embedding), x) + t.final_norm.median_ms + t.output_head.median_ms
    }

    /// Sum of the blocks' parts of `s` in prefill of `x` tokens (ms), uncalibrated.
    fn prefill_blocks(&self, s: &SubnetConfig, x: f64) -> Result<f64, ProfileError> {
        let t = &self.profile.prefill;
        let lens = &t.lengths;
        let mut ms = 0.0;
        for (&kv, &w) in s.kv_heads.iter().zip(&s.ffn) {
            if kv > 0 {
                ms += interp(lens, &medians(&t.attention[kv - 1].ms), x);
            }
            // FFN: interpolate over widths at each measured length, then over lengths.
            let per_len: Vec<f64> =
                (0..lens.len()).map(|i| Self::ffn_at(&t.ffn, i, w, self.profile.model.max_ffn)).collect::<Result<_, _>>()?;
            ms += interp(lens, &per_len, x);
        }
        Ok(ms)
    }

    /// Calibration factor of the block sum from the reference time at `x` of a table:
    /// `(reference(x) - fixed) / base_blocks`, clamped to [`CALIBRATION_MIN`]`..=`[`CALIBRATION_MAX`] (1 when
    /// the profile has no reference, schema 2).
    fn calibration(reference: &[Stat], xs: &[usize], fixed: f64, base_blocks: f64, x: f64) -> f64 {
        if reference.is_empty() || base_blocks <= 0.0 {
            return 1.0;
        }
        ((interp(xs, &medians(reference), x) - fixed) / base_blocks).clamp(CALIBRATION_MIN, CALIBRATION_MAX)
    }

    /// The reference model of the profile: `n_layers` blocks at the largest KV-head count and FFN width.
    fn reference_subnet(&self) -> SubnetConfig {
        let m = &self.profile.model;
        SubnetConfig { layers: (0..m.n_layers).collect(), ffn: vec![m.max_ffn; m.n_layers], kv_heads: vec![m.max_kv_heads; m.n_layers] }
    }

    /// Decode at context `x`: (fixed costs, calibration factor of the block sum).
    fn decode_terms(&self, x: f64) -> Result<(f64, f64), ProfileError> {
        let t = &self.profile.decode;
        let fixed = self.decode_fixed(x);
        let base = self.decode_blocks(&self.reference_subnet(), x)?;
        Ok((fixed, Self::calibration(&t.reference, &t.contexts, fixed, base, x)))
    }

    /// Prefill of `x` tokens: (fixed costs, calibration factor of the block sum).
    fn prefill_terms(&self, x: f64) -> Result<(f64, f64), ProfileError> {
        let t = &self.profile.prefill;
        let fixed = self.prefill_fixed(x);
        let base = self.prefill_blocks(&self.reference_subnet(), x)?;
        Ok((fixed, Self::calibration(&t.reference, &t.lengths, fixed, base, x)))
    }

    /// Calibration factors of the block sum, per context of the decode table and per length of the prefill
    /// table (1.0 everywhere for a schema-2 profile). A factor below 1 means that the blocks of the real base
    /// model cost less than the sum of their parts measured in part models.
    pub fn calibration_factors(&self) -> (Vec<f64>, Vec<f64>) {
        let g = |r: Result<(f64, f64), ProfileError>| r.map_or(1.0, |(_, g)| g);
        let dec = self.profile.decode.contexts.iter().map(|&c| g(self.decode_terms(c as f64))).collect();
        let pre = self.profile.prefill.lengths.iter().map(|&n| g(self.prefill_terms(n as f64))).collect();
        (dec, pre)
    }

    /// Predicted time to decode one token, ms, with `context` tokens already in the KV cache:
    /// `fixed(c) + g(c) * Σ_blocks (attention(kv_b, c) + ffn(w_b))`, where `g(c)` scales the sum of the
    /// parts so that the base model's prediction equals its measured reference time (schema 3; `g = 1` for
    /// schema-2 profiles). Interpolated between the profile's contexts.
    ///
    /// Errors: [`ProfileError::Arch`] (sub-network invalid for the base model), [`ProfileError::OutOfRange`]
    /// (context outside the profile's contexts).
    pub fn decode_ms(&self, s: &SubnetConfig, context: usize) -> Result<f64, ProfileError> {
        self.check_subnet(s)?;
        let t = &self.profile.decode;
        Self::point(&t.contexts, context, "context")?;
        let x = context as f64;
        let (fixed, g) = self.decode_terms(x)?;
        Ok(fixed + g * self.decode_blocks(s, x)?)
    }

    /// Predicted time to prefill a prompt of `n_tokens` into an empty KV cache (logits of the last token), ms;
    /// calibrated as [`LatencyModel::decode_ms`].
    ///
    /// Errors: as [`LatencyModel::decode_ms`], for a prompt length outside the profile's lengths.
    pub fn prefill_ms(&self, s: &SubnetConfig, n_tokens: usize) -> Result<f64, ProfileError> {
        self.check_subnet(s)?;
        let t = &self.profile.prefill;
        Self::point(&t.lengths, n_tokens, "prompt length")?;
        let x = n_tokens as f64;
        let (fixed, g) = self.prefill_terms(x)?;
        Ok(fixed + g * self.prefill_blocks(s, x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_by_hand() {
        let xs = [0, 100, 300];
        let ys = [1.0, 2.0, 4.0];
        assert_eq!(interp(&xs, &ys, 0.0), 1.0);
        assert_eq!(interp(&xs, &ys, 50.0), 1.5);
        assert_eq!(interp(&xs, &ys, 200.0), 3.0);
        assert_eq!(interp(&xs, &ys, 300.0), 4.0);
        assert_eq!(interp(&[7], &[2.5], 7.0), 2.5);
    }
}
