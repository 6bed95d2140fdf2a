//! Token sampling: greedy, temperature, top-k, top-p (nucleus), seeded.
//!
//! Order as llama.cpp's default chain restricted to these samplers: top-k, then temperature softmax, then
//! top-p, then a draw. A temperature `<= 0` means greedy (argmax; ties go to the lowest id).

/// Sampling settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; `<= 0` selects greedy decoding.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1.0 = all).
    pub top_p: f32,
    /// Seed of the random draws (same seed, same logits: same tokens).
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// Greedy.
    fn default() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

/// A sampler: [`SamplerConfig`] plus the state of its random generator (splitmix64).
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    state: u64,
}

impl Sampler {
    /// A sampler with settings `cfg`.
    pub fn new(cfg: SamplerConfig) -> Self {
        Sampler { cfg, state: cfg.seed }
    }

    /// A greedy sampler.
    pub fn greedy() -> Self {
        Self::new(SamplerConfig::default())
    }

    fn next_f64(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Choose the next token id from `logits` (one value per vocabulary entry, length > 0).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature <= 0.0 || self.cfg.top_k == 1 {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, v)| (i as u32, *v)).collect();
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.cfg.top_k > 0 && self.cfg.top_k < cand.len() {
            cand.truncate(self.cfg.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|c| (((c.1 - max) / self.cfg.temperature) as f64).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.cfg.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= self.cfg.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let s: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= s);
        }
        let r = self.next_f64();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if r < acc {
                return cand[i].0;
            }
        }
        cand[probs.len() - 1].0
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_top_p_and_seed() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        assert_eq!(Sampler::greedy().sample(&logits), 1);
        // top_k = 2 keeps ids 1 and 3 only.
        let mut s = Sampler::new(SamplerConfig { temperature: 1.0, top_k: 2, top_p: 1.0, seed: 7 });
        for _ in 0..100 {
            assert!(matches!(s.sample(&logits), 1 | 3));
        }
        // top_p tiny keeps only the most likely token.
        let mut s = Sampler::new(SamplerConfig { temperature: 1.0, top_k: 0, top_p: 0.01, seed: 7 });
        assert_eq!(s.sample(&[0.0, 5.0, 1.0]), 1);
        // same seed, same draws
        let cfg = SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 3 };
        let (mut a, mut b) = (Sampler::new(cfg), Sampler::new(cfg));
        let xs: Vec<u32> = (0..20).map(|_| a.sample(&logits)).collect();
        let ys: Vec<u32> = (0..20).map(|_| b.sample(&logits)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().any(|&t| t != xs[0]), "temperature 1 draws vary");
    }
}
