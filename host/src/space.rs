//! The search space of a super-network: which layers may be dropped, the FFN widths and KV-group counts each
//! layer may take. One integer gene per choice (LLaMA-NAS, Sarah et al. 2024, sec. 3; DyNAS-T encodes its
//! spaces the same way).

use device_runtime::arch::{ModelConfig, SubnetConfig};
use serde::{Deserialize, Serialize};

/// How layers may be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerMode {
    /// Any subset of the base layers with at least `min_layers` kept (one keep/drop gene per layer).
    AnySubset,
    /// The first k layers, `min_layers <= k <= n_layers` (the paper's simpler option; one gene).
    FirstK,
}

/// A search space over the sub-networks of one base model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpace {
    /// Number of base layers.
    pub n_layers: usize,
    /// How layers are dropped.
    pub layer_mode: LayerMode,
    /// Fewest layers a sub-network keeps.
    pub min_layers: usize,
    /// Allowed FFN widths per base layer (ascending; the largest is the base width).
    pub ffn_choices: Vec<Vec<usize>>,
    /// Allowed KV-head (KV-group) counts per base layer (ascending; query heads move with their group).
    pub kv_choices: Vec<Vec<usize>>,
}

impl SearchSpace {
    /// The default space of a model: any subset of layers keeping at least half of them, FFN widths from 512
    /// (or the base width if smaller) to the base width in steps of 256 (the Q8_0/Q4_0 block size is 32 and
    /// K-quants need 256), KV heads from 1 to the base count.
    pub fn default_for(m: &ModelConfig) -> SearchSpace {
        let ffn_choices = m
            .ffn
            .iter()
            .map(|&f| {
                let mut v: Vec<usize> = (1..).map(|i| i * 256).take_while(|&w| w < f).filter(|&w| w >= 512).collect();
                v.push(f);
                v
            })
            .collect();
        let kv_choices = m.n_kv_heads.iter().map(|&k| (1..=k.max(1)).collect()).collect();
        SearchSpace {
            n_layers: m.n_layers,
            layer_mode: LayerMode::AnySubset,
            min_layers: m.n_layers.div_ceil(2),
            ffn_choices,
            kv_choices,
        }
    }

    /// The largest sub-network (every layer at its largest choices).
    pub fn largest(&self) -> SubnetConfig {
        SubnetConfig {
            layers: (0..self.n_layers).collect(),
            ffn: self.ffn_choices.iter().map(|c| *c.last().unwrap_or(&0)).collect(),
            kv_heads: self.kv_choices.iter().map(|c| *c.last().unwrap_or(&0)).collect(),
        }
    }

    /// The smallest sub-network: the first `min_layers` layers at their smallest choices.
    pub fn smallest(&self) -> SubnetConfig {
        let layers: Vec<usize> = (0..self.min_layers).collect();
        SubnetConfig {
            ffn: layers.iter().map(|&l| *self.ffn_choices[l].first().unwrap_or(&0)).collect(),
            kv_heads: layers.iter().map(|&l| *self.kv_choices[l].first().unwrap_or(&0)).collect(),
            layers,
        }
    }
}
