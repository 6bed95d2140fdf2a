//! Repeatable randomness, the learning-rate schedule and the choice of sub-networks trained at each step.

use device_runtime::arch::SubnetConfig;
use serde::{Deserialize, Serialize};

use crate::space::{LayerMode, SearchSpace};

/// SplitMix64 (Steele, Lea and Flood 2014; the generator `java.util.SplittableRandom` uses): a tiny, fast,
/// seedable generator. Streams for different purposes and steps are derived with [`SplitMix64::fork`], so the
/// randomness of step `s` depends only on `(seed, s)` and a resumed run repeats it exactly.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// An independent generator for stream `k` of this one (does not advance `self`).
    pub fn fork(&self, k: u64) -> SplitMix64 {
        let mut g = SplitMix64::new(self.state ^ k.wrapping_mul(0xd1b5_4a32_d192_ed03));
        g.next_u64();
        SplitMix64::new(g.next_u64())
    }

    /// A uniform integer in `0..n` (n > 0; Lemire's multiply-shift, bias below 2^-32 for the small n used here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }

    /// A uniform float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total`: linear warm-up from `lr/warmup` to `lr` over
/// the first `warmup` steps, then cosine decay from `lr` to `min_lr` at the last step (as in Loshchilov and
/// Hutter 2017, SGDR, without restarts; the schedule of HF transformers' `get_cosine_schedule_with_warmup`
/// with a floor).
pub fn learning_rate(step: u64, total: u64, warmup: u64, lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
    min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// A uniformly random sub-network of `space`: the number of kept layers uniform in `min_layers..=n_layers`,
/// then (AnySubset) a uniform subset of that size or (FirstK) the first ones; per kept layer an FFN width and
/// a KV-head count uniform over the layer's choices.
pub fn random_subnet(space: &SearchSpace, rng: &mut SplitMix64) -> SubnetConfig {
    let n = space.n_layers;
    let lo = space.min_layers.clamp(1, n.max(1));
    let k = lo + rng.below((n - lo + 1) as u64) as usize;
    let layers: Vec<usize> = match space.layer_mode {
        LayerMode::FirstK => (0..k).collect(),
        LayerMode::AnySubset => {
            let mut all: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = i + rng.below((n - i) as u64) as usize;
                all.swap(i, j);
            }
            let mut v = all[..k].to_vec();
            v.sort_unstable();
            v
        }
    };
    let pick = |c: &Vec<usize>, rng: &mut SplitMix64| c[rng.below(c.len().max(1) as u64) as usize % c.len().max(1)];
    let ffn = layers.iter().map(|&l| pick(&space.ffn_choices[l], rng)).collect();
    let kv_heads = layers.iter().map(|&l| pick(&space.kv_choices[l], rng)).collect();
    SubnetConfig { layers, ffn, kv_heads }
}

/// Which sub-networks each step trains (their gradients are summed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubnetPlan {
    /// Train the largest sub-network (the full network).
    pub largest: bool,
    /// Train the smallest sub-network.
    pub smallest: bool,
    /// Number of random sub-networks.
    pub random: usize,
}

impl SubnetPlan {
    /// The sandwich rule (Yu and Huang 2019, "Universally Slimmable Networks"; InstaTune, Sridhar et al.
    /// 2023): largest + smallest + `k` random.
    pub fn sandwich(k: usize) -> SubnetPlan {
        SubnetPlan { largest: true, smallest: true, random: k }
    }

    /// LLaMA-NAS's modified InstaTune (Sarah et al. 2024, sec. 3): the full network and one random
    /// sub-network per step, no distillation.
    pub fn llama_nas() -> SubnetPlan {
        SubnetPlan { largest: true, smallest: false, random: 1 }
    }

    /// The sub-networks of step `step`, the largest first; the random ones come from the stream `(seed, step)`.
    pub fn subnets(&self, space: &SearchSpace, seed: u64, step: u64) -> Vec<SubnetConfig> {
        let mut v = Vec::new();
        if self.largest {
            v.push(space.largest());
        }
        if self.smallest {
            v.push(space.smallest());
        }
        let mut rng = SplitMix64::new(seed ^ 0x5ab_0e75).fork(step);
        for _ in 0..self.random {
            v.push(random_subnet(space, &mut rng));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use device_runtime::arch::ModelConfig;

    fn space() -> SearchSpace {
        let m = ModelConfig {
            arch: "llama".into(),
            n_layers: 6,
            d_model: 64,
            n_vocab: 100,
            n_ctx_train: 128,
            head_dim: 16,
            rope_dim: 16,
            rope_freq_base: 10000.0,
            rope_neox: false,
            rms_eps: 1e-5,
            ffn: vec![1024; 6],
            n_heads: vec![4; 6],
            n_kv_heads: vec![2; 6],
            tied_embeddings: true,
            name: None,
        };
        SearchSpace::default_for(&m)
    }

    #[test]
    fn schedule_matches_hand_values() {
        // Warm-up 10 steps to 1e-3: step 0 -> 1e-4, step 9 -> 1e-3.
        assert!((learning_rate(0, 110, 10, 1e-3, 0.0) - 1e-4).abs() < 1e-12);
        assert!((learning_rate(9, 110, 10, 1e-3, 0.0) - 1e-3).abs() < 1e-12);
        // Half-way through the decay: cos(pi/2) = 0 -> (lr + min)/2.
        assert!((learning_rate(60, 110, 10, 1e-3, 1e-4) - 5.5e-4).abs() < 1e-12);
        // End: min_lr.
        assert!((learning_rate(110, 110, 10, 1e-3, 1e-4) - 1e-4).abs() < 1e-12);
    }

    #[test]
    fn random_subnets_are_valid_and_repeatable() {
        let s = space();
        let plan = SubnetPlan::sandwich(3);
        for step in 0..50 {
            let v = plan.subnets(&s, 42, step);
            assert_eq!(v, plan.subnets(&s, 42, step));
            assert_eq!(v.len(), 5);
            assert_eq!(v[0], s.largest());
            assert_eq!(v[1], s.smallest());
            for c in &v {
                assert!(c.layers.len() >= s.min_layers && c.layers.len() <= 6);
                assert!(c.layers.windows(2).all(|w| w[0] < w[1]));
                for (i, &l) in c.layers.iter().enumerate() {
                    assert!(s.ffn_choices[l].contains(&c.ffn[i]));
                    assert!(s.kv_choices[l].contains(&c.kv_heads[i]));
                }
            }
        }
        assert_ne!(plan.subnets(&s, 42, 0)[2..], plan.subnets(&s, 42, 1)[2..]);
        assert_eq!(SubnetPlan::llama_nas().subnets(&s, 1, 0).len(), 2);
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (reference: the C code of Vigna's splitmix64.c).
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xe220a8397b1dcdaf);
        assert_eq!(g.next_u64(), 0x6e789e6aa1b965f4);
    }
}
