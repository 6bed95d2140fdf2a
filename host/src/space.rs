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

/// FFN widths of a space must be multiples of this: the block size (`QK`) of the quantized types export writes
/// (Q8_0, Q4_0, Q4_1; ggml `ggml-common.h`), since `ffn_down` rows are FFN-width long.
pub const FFN_BLOCK: usize = 32;

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

/// Errors of a search space: a bad space file, or a space that does not fit its base model.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    /// The space file cannot be read.
    #[error("{file}: cannot read the search space: {source}")]
    Io {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The space file is not valid JSON/TOML of a [`SearchSpace`].
    #[error("{file}: not a search space ({reason})")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message.
        reason: String,
    },
    /// The space does not fit the base model, or is empty.
    #[error("invalid search space: {0}")]
    Invalid(String),
}

impl SearchSpace {
    /// Read a space file: TOML when the name ends in `.toml`, else JSON (the fields of [`SearchSpace`];
    /// docs/SEARCH.md). The space is not checked against a model here: see [`SearchSpace::check`].
    ///
    /// Errors: [`SpaceError::Io`], [`SpaceError::Parse`].
    pub fn load(path: &std::path::Path) -> Result<SearchSpace, SpaceError> {
        let file = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| SpaceError::Io { file: file.clone(), source: e })?;
        if meta.len() > 16 << 20 {
            return Err(SpaceError::Parse { file, reason: format!("{} bytes is too large for a space file", meta.len()) });
        }
        let text = std::fs::read_to_string(path).map_err(|e| SpaceError::Io { file: file.clone(), source: e })?;
        let is_toml = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        if is_toml {
            toml::from_str(&text).map_err(|e| SpaceError::Parse { file, reason: e.to_string() })
        } else {
            serde_json::from_str(&text).map_err(|e| SpaceError::Parse { file, reason: e.to_string() })
        }
    }

    /// Check the space against its base model: `n_layers` equal, `1 <= min_layers <= n_layers`, one non-empty,
    /// strictly increasing choice list per layer, every FFN width `<=` the base layer's and a multiple of
    /// [`FFN_BLOCK`], and every KV count in `1..=` the base layer's KV heads.
    ///
    /// Errors: [`SpaceError::Invalid`] naming the first problem.
    pub fn check(&self, m: &ModelConfig) -> Result<(), SpaceError> {
        let bad = |s: String| Err(SpaceError::Invalid(s));
        if self.n_layers != m.n_layers {
            return bad(format!("n_layers is {}, the model has {}", self.n_layers, m.n_layers));
        }
        if self.min_layers == 0 || self.min_layers > self.n_layers {
            return bad(format!("min_layers {} is not in 1..={}", self.min_layers, self.n_layers));
        }
        if self.ffn_choices.len() != self.n_layers || self.kv_choices.len() != self.n_layers {
            return bad(format!(
                "{} ffn_choices and {} kv_choices lists for {} layers",
                self.ffn_choices.len(),
                self.kv_choices.len(),
                self.n_layers
            ));
        }
        for l in 0..self.n_layers {
            for (what, c, max, min) in
                [("ffn_choices", &self.ffn_choices[l], m.ffn[l], 0), ("kv_choices", &self.kv_choices[l], m.n_kv_heads[l], 1)]
            {
                if c.is_empty() {
                    return bad(format!("layer {l}: {what} is empty"));
                }
                if c.windows(2).any(|w| w[0] >= w[1]) {
                    return bad(format!("layer {l}: {what} {c:?} is not strictly increasing"));
                }
                if c[0] < min || *c.last().unwrap() > max {
                    return bad(format!("layer {l}: {what} {c:?} must lie in {min}..={max} (base model)"));
                }
            }
            if let Some(w) = self.ffn_choices[l].iter().find(|&&w| w % FFN_BLOCK != 0) {
                return bad(format!(
                    "layer {l}: FFN width {w} is not a multiple of {FFN_BLOCK} (the block size of Q8_0/Q4_0/Q4_1: \
                     ffn_down rows must be whole blocks)"
                ));
            }
        }
        Ok(())
    }

    /// The gene encoding of this space ([`Encoding`]).
    pub fn encoding(&self) -> Encoding {
        Encoding { space: self.clone() }
    }

    /// Number of distinct sub-networks in the space (as f64: it overflows integers quickly). For any-subset
    /// spaces it counts every admissible kept set with the choices of the kept layers only.
    pub fn size(&self) -> f64 {
        let n = self.n_layers;
        let per: Vec<f64> = (0..n).map(|l| (self.ffn_choices[l].len() * self.kv_choices[l].len()) as f64).collect();
        match self.layer_mode {
            // Σ over kept sets of size >= min of Π per-layer choices: dynamic programming over layers.
            LayerMode::AnySubset => {
                let mut dp = vec![0f64; n + 1]; // dp[k]: weighted count of sets of size k among the first layers
                dp[0] = 1.0;
                for p in &per {
                    for k in (1..=n).rev() {
                        dp[k] += dp[k - 1] * p;
                    }
                }
                dp[self.min_layers..].iter().sum()
            }
            LayerMode::FirstK => (self.min_layers..=n).map(|k| per[..k].iter().product::<f64>()).sum(),
        }
    }
}

/// The integer genes of a [`SearchSpace`] and their decoding to a [`SubnetConfig`].
///
/// Layout (docs/SEARCH.md): for [`LayerMode::AnySubset`], `n_layers` keep genes (0 drop, 1 keep), then
/// `n_layers` FFN-choice indices, then `n_layers` KV-choice indices (`3 n` genes); for [`LayerMode::FirstK`],
/// one gene `k - min_layers`, then the FFN and KV indices (`1 + 2 n` genes; those of layers `>= k` are
/// ignored). Gene `i` takes the values `0..cardinality(i)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoding {
    space: SearchSpace,
}

impl Encoding {
    /// The space.
    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    fn layer_genes(&self) -> usize {
        match self.space.layer_mode {
            LayerMode::AnySubset => self.space.n_layers,
            LayerMode::FirstK => 1,
        }
    }

    /// Number of genes.
    pub fn n_genes(&self) -> usize {
        self.layer_genes() + 2 * self.space.n_layers
    }

    /// Number of values of each gene (`gene[i]` in `0..cardinality[i]`).
    pub fn cardinalities(&self) -> Vec<usize> {
        let s = &self.space;
        let mut c = match s.layer_mode {
            LayerMode::AnySubset => vec![2; s.n_layers],
            LayerMode::FirstK => vec![s.n_layers - s.min_layers + 1],
        };
        c.extend(s.ffn_choices.iter().map(|v| v.len()));
        c.extend(s.kv_choices.iter().map(|v| v.len()));
        c
    }

    /// The kept layers of a genotype (before repair: may be fewer than `min_layers`).
    fn kept(&self, g: &[usize]) -> Vec<usize> {
        let n = self.space.n_layers;
        match self.space.layer_mode {
            LayerMode::AnySubset => (0..n).filter(|&l| g[l] != 0).collect(),
            LayerMode::FirstK => (0..(self.space.min_layers + g[0]).min(n)).collect(),
        }
    }

    /// Make a genotype admissible: clamp every gene into its range and, for any-subset spaces with fewer than
    /// `min_layers` kept layers, keep more layers chosen by `pick(n_dropped) -> index among the dropped` (a
    /// random choice in the search; deterministic callers may pass `|_| 0`).
    pub fn repair(&self, g: &mut [usize], mut pick: impl FnMut(usize) -> usize) {
        for (x, c) in g.iter_mut().zip(self.cardinalities()) {
            *x = (*x).min(c - 1);
        }
        if self.space.layer_mode == LayerMode::AnySubset {
            let n = self.space.n_layers;
            while g[..n].iter().filter(|&&x| x != 0).count() < self.space.min_layers {
                let dropped: Vec<usize> = (0..n).filter(|&l| g[l] == 0).collect();
                let i = pick(dropped.len()).min(dropped.len() - 1);
                g[dropped[i]] = 1;
            }
        }
    }

    /// The sub-network of a genotype. Errors ([`SpaceError::Invalid`]) when the genotype has the wrong length,
    /// a gene out of range, or (any-subset) fewer than `min_layers` kept layers: [`Encoding::repair`] first.
    pub fn decode(&self, g: &[usize]) -> Result<SubnetConfig, SpaceError> {
        let s = &self.space;
        if g.len() != self.n_genes() {
            return Err(SpaceError::Invalid(format!("{} genes, the space has {}", g.len(), self.n_genes())));
        }
        if let Some((i, (&x, c))) = g.iter().zip(self.cardinalities()).enumerate().find(|(_, (x, c))| **x >= *c) {
            return Err(SpaceError::Invalid(format!("gene {i} is {x}, must be < {c}")));
        }
        let layers = self.kept(g);
        if layers.len() < s.min_layers {
            return Err(SpaceError::Invalid(format!("{} layers kept, the space needs {}", layers.len(), s.min_layers)));
        }
        let off = self.layer_genes();
        let ffn = layers.iter().map(|&l| s.ffn_choices[l][g[off + l]]).collect();
        let kv_heads = layers.iter().map(|&l| s.kv_choices[l][g[off + s.n_layers + l]]).collect();
        Ok(SubnetConfig { layers, ffn, kv_heads })
    }

    /// The canonical genotype of a sub-network of this space (genes of dropped layers are 0). Errors
    /// ([`SpaceError::Invalid`]) when the sub-network is not in the space.
    pub fn encode(&self, c: &SubnetConfig) -> Result<Vec<usize>, SpaceError> {
        let s = &self.space;
        let bad = |r: String| Err(SpaceError::Invalid(format!("sub-network {} is not in the space: {r}", c.id())));
        if c.layers.len() != c.ffn.len() || c.layers.len() != c.kv_heads.len() {
            return bad("lengths differ".into());
        }
        let mut g = vec![0usize; self.n_genes()];
        match s.layer_mode {
            LayerMode::AnySubset => {
                for &l in &c.layers {
                    if l >= s.n_layers {
                        return bad(format!("layer {l} out of range"));
                    }
                    g[l] = 1;
                }
            }
            LayerMode::FirstK => {
                let k = c.layers.len();
                if c.layers.iter().enumerate().any(|(i, &l)| i != l) || k < s.min_layers || k > s.n_layers {
                    return bad("layers are not the first k".into());
                }
                g[0] = k - s.min_layers;
            }
        }
        let off = self.layer_genes();
        for (i, &l) in c.layers.iter().enumerate() {
            let Some(fi) = s.ffn_choices[l].iter().position(|&w| w == c.ffn[i]) else {
                return bad(format!("layer {l}: ffn {} is not a choice", c.ffn[i]));
            };
            let Some(ki) = s.kv_choices[l].iter().position(|&k| k == c.kv_heads[i]) else {
                return bad(format!("layer {l}: kv_heads {} is not a choice", c.kv_heads[i]));
            };
            g[off + l] = fi;
            g[off + s.n_layers + l] = ki;
        }
        if !matches!(self.decode(&g), Ok(ref d) if d == c) {
            return bad("it does not decode to itself (too few layers?)".into());
        }
        Ok(g)
    }

    /// The canonical form of a genotype: the genotype of its decoded sub-network (genes that do not change
    /// the sub-network set to 0), so that equal sub-networks have equal genotypes.
    pub fn canonical(&self, g: &[usize]) -> Result<Vec<usize>, SpaceError> {
        self.encode(&self.decode(g)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm() -> ModelConfig {
        ModelConfig {
            arch: "llama".into(),
            n_layers: 30,
            d_model: 576,
            n_vocab: 49152,
            n_ctx_train: 8192,
            head_dim: 64,
            rope_dim: 64,
            rope_freq_base: 100000.0,
            rope_neox: false,
            rms_eps: 1e-5,
            ffn: vec![1536; 30],
            n_heads: vec![9; 30],
            n_kv_heads: vec![3; 30],
            tied_embeddings: true,
            name: None,
        }
    }

    #[test]
    fn default_space_of_smollm2() {
        let s = SearchSpace::default_for(&smollm());
        s.check(&smollm()).unwrap();
        assert_eq!(s.ffn_choices[0], vec![512, 768, 1024, 1280, 1536]);
        assert_eq!(s.kv_choices[0], vec![1, 2, 3]);
        assert_eq!(s.min_layers, 15);
        let e = s.encoding();
        assert_eq!(e.n_genes(), 90);
        assert_eq!(e.decode(&e.encode(&s.largest()).unwrap()).unwrap(), s.largest());
        assert_eq!(e.decode(&e.encode(&s.smallest()).unwrap()).unwrap(), s.smallest());
    }

    #[test]
    fn decode_repair_and_errors() {
        let m = ModelConfig { n_layers: 4, ffn: vec![1536; 4], n_heads: vec![9; 4], n_kv_heads: vec![3; 4], ..smollm() };
        let mut s = SearchSpace::default_for(&m);
        s.min_layers = 2;
        let e = s.encoding();
        // keep 0 and 2; ffn idx (4,0,1,2) of [512, 768, 1024, 1280, 1536]; kv idx (2,0,1,0) of [1, 2, 3]
        let g = vec![1, 0, 1, 0, 4, 0, 1, 2, 2, 0, 1, 0];
        let c = e.decode(&g).unwrap();
        assert_eq!(c, SubnetConfig { layers: vec![0, 2], ffn: vec![1536, 768], kv_heads: vec![3, 2] });
        c.validate(&m).unwrap();
        assert_eq!(e.canonical(&g).unwrap(), vec![1, 0, 1, 0, 4, 0, 1, 0, 2, 0, 1, 0]);
        let mut few = vec![0, 0, 1, 0, 4, 0, 1, 2, 2, 0, 1, 0];
        assert!(e.decode(&few).is_err());
        e.repair(&mut few, |_| 1); // keeps the 2nd dropped layer: layer 1
        assert_eq!(&few[..4], &[0, 1, 1, 0]);
        let mut big = vec![9; 12];
        e.repair(&mut big, |_| 0);
        assert_eq!(big, vec![1, 1, 1, 1, 4, 4, 4, 4, 2, 2, 2, 2]);
        assert!(e.decode(&[1, 1]).is_err());
        // Hand count: sets of >= 2 of 4 layers, 15 choices per kept layer: 6*15^2 + 4*15^3 + 15^4.
        assert_eq!(s.size(), 6.0 * 225.0 + 4.0 * 3375.0 + 50625.0);
    }

    #[test]
    fn first_k_and_files() {
        let m = smollm();
        let mut s = SearchSpace::default_for(&m);
        s.layer_mode = LayerMode::FirstK;
        s.min_layers = 20;
        let e = s.encoding();
        assert_eq!(e.n_genes(), 61);
        let mut g = vec![0; 61];
        g[0] = 3;
        let c = e.decode(&g).unwrap();
        assert_eq!(c.layers, (0..23).collect::<Vec<_>>());
        assert_eq!(c.ffn, vec![512; 23]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(SearchSpace::load(&p).unwrap(), s);
        let j = dir.path().join("s.json");
        std::fs::write(&j, "{\"n_layers\": 30").unwrap();
        assert!(matches!(SearchSpace::load(&j), Err(SpaceError::Parse { .. })));
        let mut bad = s.clone();
        bad.ffn_choices[3] = vec![512, 2048];
        assert!(bad.check(&m).unwrap_err().to_string().contains("layer 3"));
        // A width that is not a whole number of Q8_0/Q4_0 blocks is refused up front, not at the first export.
        let mut bad = s.clone();
        bad.ffn_choices[2] = vec![100, 1536];
        assert_eq!(
            bad.check(&m).unwrap_err().to_string(),
            "invalid search space: layer 2: FFN width 100 is not a multiple of 32 (the block size of Q8_0/Q4_0/Q4_1: \
             ffn_down rows must be whole blocks)"
        );
        // Unknown keys are refused, named.
        std::fs::write(&j, serde_json::to_string(&s).unwrap().replacen('{', "{\"min_layer\": 3, ", 1)).unwrap();
        assert!(SearchSpace::load(&j).unwrap_err().to_string().contains("unknown field `min_layer`"));
    }
}
