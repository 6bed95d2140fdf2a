//! The search loop: LINAS (Cummings et al. 2022, "Accelerating neural architecture exploration across
//! modalities using genetic algorithms", GECCO; Intel DyNAS-T `dynast/search/search_tactic.py`, class `LINAS`),
//! plain NSGA-II on real evaluations, and random search, all behind one [`Search`] that owns the evaluations.
//!
//! LINAS: a first batch of random sub-networks (plus the base model) is evaluated for real; then each loop
//! fits one predictor per measured objective (accuracy) on all real evaluations so far ([`predictor::select`]),
//! runs NSGA-II for `inner_evals` predictor-only evaluations (cheap exact objectives, latency and size, are
//! computed, never predicted), and evaluates the final population's new members for real as the next batch.
//!
//! Objectives are minimized internally as `1 - accuracy`, `latency / latency(base)`, `size / size(base)`; the
//! hypervolume uses the reference point `(1, 1[, 1])` in that space (docs/SEARCH.md).
//!
//! Determinism: one seed fixes every choice, and a finished evaluation given back through
//! [`Search::with_cache`] is reused instead of measured again, so a resumed run replays the same sequence and
//! measures only what the killed run had not finished.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use device_runtime::arch::SubnetConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::hv::hypervolume;
use super::nsga2::{self, Bounds, Nsga2, Params};
use super::predictor::{self, Kind};
use crate::space::{Encoding, SpaceError};

/// A boxed error from an objective's implementation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the search.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The space or a genotype is invalid.
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// The accuracy oracle failed on a sub-network.
    #[error("measuring the accuracy of sub-network {id}: {source}")]
    Accuracy {
        /// Sub-network id.
        id: String,
        /// The oracle's error.
        source: BoxError,
    },
    /// Latency or size could not be computed.
    #[error("computing the {what} of sub-network {id}: {source}")]
    Cost {
        /// `latency` or `size`.
        what: &'static str,
        /// Sub-network id.
        id: String,
        /// The error.
        source: BoxError,
    },
    /// The observer (persistence, progress) failed.
    #[error("{0}")]
    Observer(BoxError),
    /// Bad settings.
    #[error("invalid search settings: {0}")]
    Settings(String),
}

/// A search objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Accuracy on a task (a fraction, maximized), measured by an [`AccuracyOracle`].
    Accuracy,
    /// Decode latency, ms/token (minimized), from a device profile.
    Latency,
    /// GGUF size in bytes at the export quantization (minimized), exact.
    Size,
}

impl Objective {
    /// The key in `pareto.json` objectives and the CSV header: `accuracy`, `latency_ms`, `size_bytes`.
    pub fn key(self) -> &'static str {
        match self {
            Objective::Accuracy => "accuracy",
            Objective::Latency => "latency_ms",
            Objective::Size => "size_bytes",
        }
    }
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "accuracy" | "acc" => Ok(Objective::Accuracy),
            "latency" | "latency_ms" => Ok(Objective::Latency),
            "size" | "size_bytes" => Ok(Objective::Size),
            o => Err(format!("unknown objective {o:?} (accuracy, latency, size)")),
        }
    }
}

/// The search algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Algo {
    /// LINAS: NSGA-II on predictors between batches of real evaluations.
    Linas,
    /// NSGA-II on real evaluations only.
    Nsga2,
    /// Uniform random sub-networks.
    Random,
}

/// Measures the accuracy of a sub-network (the expensive objective).
pub trait AccuracyOracle {
    /// What is measured, e.g. `arc_easy acc_norm, 200 items`.
    fn describe(&self) -> String;
    /// The accuracy of `cfg`, a fraction in `[0, 1]`.
    fn accuracy(&mut self, cfg: &SubnetConfig) -> Result<f64, BoxError>;
}

/// Computes the cheap exact objectives.
pub trait CostModel {
    /// Decode latency in ms/token.
    fn latency_ms(&mut self, cfg: &SubnetConfig) -> Result<f64, BoxError>;
    /// Size in bytes of the exported GGUF.
    fn size_bytes(&mut self, cfg: &SubnetConfig) -> Result<u64, BoxError>;
    /// The size for LINAS's predictor-only loop, where thousands of candidates are scored: may trade exactness
    /// in the last bytes for speed (default: [`CostModel::size_bytes`]).
    fn size_bytes_fast(&mut self, cfg: &SubnetConfig) -> Result<u64, BoxError> {
        self.size_bytes(cfg)
    }
}

/// One real evaluation (a line of `evaluations.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Order in the run, from 0.
    pub index: usize,
    /// Batch (loop) in which it was evaluated, from 0.
    pub batch: usize,
    /// [`SubnetConfig::id`].
    pub id: String,
    /// Canonical genotype.
    pub genes: Vec<usize>,
    /// The sub-network.
    pub config: SubnetConfig,
    /// Accuracy (fraction), when an objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Decode latency ms/token, when an objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// GGUF size in bytes, when an objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Seconds the evaluation took (accuracy measurement included).
    pub seconds: f64,
}

/// Hypervolume after a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HvPoint {
    /// Batch index.
    pub batch: usize,
    /// Real evaluations so far.
    pub evals: usize,
    /// Hypervolume of all evaluations so far (normalized objectives, reference `(1, ..., 1)`).
    pub hypervolume: f64,
}

/// What a search reports while it runs.
pub enum Event<'e> {
    /// A real evaluation finished (`fresh`: measured now; else taken from the cache of a resumed run).
    Evaluated {
        /// The evaluation.
        eval: &'e Evaluation,
        /// Measured now.
        fresh: bool,
    },
    /// A batch finished.
    Batch(&'e HvPoint),
    /// LINAS fitted its accuracy predictor: the chosen kind and its CV MAPE (%).
    Predictor {
        /// Batch index.
        batch: usize,
        /// The chosen predictor.
        kind: Kind,
        /// CV MAPE %.
        mape: f64,
    },
}

/// Settings of a search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Algorithm.
    pub algo: Algo,
    /// Two or three objectives.
    pub objectives: Vec<Objective>,
    /// Budget of real evaluations.
    pub evals: usize,
    /// Batch / population size.
    pub population: usize,
    /// Seed.
    pub seed: u64,
    /// Predictor-only evaluations per LINAS loop (DyNAS-T's default: 5000).
    pub inner_evals: usize,
    /// Sub-networks evaluated in the first batch next to the full network (warm start; e.g. the
    /// `llamanas prune` baselines, so that the front is at least as good as them on the search's objectives).
    /// Each must lie in the space; the rest of the first batch is random.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initial: Vec<SubnetConfig>,
}

impl Settings {
    /// Check the settings: 2 or 3 distinct objectives, 2 <= population <= budget, budget >= 1.
    pub fn check(&self) -> Result<(), SearchError> {
        let d: HashSet<_> = self.objectives.iter().collect();
        if !(2..=3).contains(&self.objectives.len()) || d.len() != self.objectives.len() {
            return Err(SearchError::Settings(format!("choose 2 or 3 distinct objectives, got {:?}", self.objectives)));
        }
        if self.population < 2 {
            return Err(SearchError::Settings(format!("population {} is too small (at least 2)", self.population)));
        }
        if self.evals == 0 {
            return Err(SearchError::Settings("the budget of evaluations is 0".into()));
        }
        if self.population > self.evals {
            return Err(SearchError::Settings(format!(
                "population {} is larger than the budget of {} evaluations",
                self.population, self.evals
            )));
        }
        Ok(())
    }
}

/// The outcome of [`Search::run`].
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Every real evaluation of the run, in order.
    pub evaluations: Vec<Evaluation>,
    /// Hypervolume after each batch.
    pub history: Vec<HvPoint>,
    /// Indices (into `evaluations`) of the non-dominated evaluations.
    pub front: Vec<usize>,
    /// Normalization: latency and size of the base (largest) sub-network.
    pub reference: Reference,
}

/// Latency and size of the largest sub-network, the normalization of the cost objectives.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// ms/token (when latency is an objective).
    pub latency_ms: Option<f64>,
    /// bytes (when size is an objective).
    pub size_bytes: Option<u64>,
}

/// Minimized, normalized objective vector of an evaluation (see the module docs).
pub fn normalized(e: &Evaluation, objectives: &[Objective], r: &Reference) -> Vec<f64> {
    objectives
        .iter()
        .map(|o| match o {
            Objective::Accuracy => 1.0 - e.accuracy.unwrap_or(0.0),
            Objective::Latency => e.latency_ms.unwrap_or(f64::INFINITY) / r.latency_ms.unwrap_or(1.0),
            Objective::Size => e.size_bytes.map_or(f64::INFINITY, |s| s as f64) / r.size_bytes.unwrap_or(1) as f64,
        })
        .collect()
}

/// Indices of the non-dominated evaluations (duplicates in objective space all kept).
pub fn front_of(evals: &[Evaluation], objectives: &[Objective], r: &Reference) -> Vec<usize> {
    let f: Vec<Vec<f64>> = evals.iter().map(|e| normalized(e, objectives, r)).collect();
    nsga2::non_dominated_sort(&f).into_iter().next().unwrap_or_default()
}

/// A search run: the space, the objectives' implementations, the evaluations.
pub struct Search<'a> {
    enc: Encoding,
    card: Vec<usize>,
    s: Settings,
    oracle: &'a mut dyn AccuracyOracle,
    cost: &'a mut dyn CostModel,
    cache: HashMap<String, Evaluation>,
    exact: HashMap<Vec<usize>, (Option<f64>, Option<u64>)>,
    fast: HashMap<Vec<usize>, (Option<f64>, Option<u64>)>,
    evals: Vec<Evaluation>,
    done: HashSet<Vec<usize>>,
    history: Vec<HvPoint>,
    reference: Reference,
    rng: StdRng,
    observer: Box<dyn FnMut(Event) -> Result<(), BoxError> + 'a>,
}

impl<'a> Search<'a> {
    /// A search over `enc` with `settings`.
    ///
    /// Errors: [`SearchError::Settings`]; errors computing the base model's latency/size.
    pub fn new(
        enc: Encoding,
        settings: Settings,
        oracle: &'a mut dyn AccuracyOracle,
        cost: &'a mut dyn CostModel,
    ) -> Result<Search<'a>, SearchError> {
        settings.check()?;
        let card = enc.cardinalities();
        let rng = StdRng::seed_from_u64(settings.seed);
        let mut s = Search {
            enc,
            card,
            s: settings,
            oracle,
            cost,
            cache: HashMap::new(),
            exact: HashMap::new(),
            fast: HashMap::new(),
            evals: Vec::new(),
            done: HashSet::new(),
            history: Vec::new(),
            reference: Reference { latency_ms: None, size_bytes: None },
            rng,
            observer: Box::new(|_| Ok(())),
        };
        for (i, c) in s.s.initial.iter().enumerate() {
            s.enc.encode(c).map_err(|e| SearchError::Settings(format!("initial sub-network {i} ({}): {e}", c.id())))?;
        }
        let base = s.enc.space().largest();
        let g = s.enc.encode(&base)?;
        let (l, z) = s.exact_of(&g, &base)?;
        s.reference = Reference { latency_ms: l, size_bytes: z };
        Ok(s)
    }

    /// Evaluations of an earlier run of the same settings, reused by id instead of measured again.
    pub fn with_cache(mut self, earlier: impl IntoIterator<Item = Evaluation>) -> Self {
        self.cache.extend(earlier.into_iter().map(|e| (e.id.clone(), e)));
        self
    }

    /// Called on every [`Event`]; an error stops the search.
    pub fn with_observer(mut self, f: impl FnMut(Event) -> Result<(), BoxError> + 'a) -> Self {
        self.observer = Box::new(f);
        self
    }

    /// The normalization reference (base model's latency and size).
    pub fn reference(&self) -> Reference {
        self.reference
    }

    fn has(&self, o: Objective) -> bool {
        self.s.objectives.contains(&o)
    }

    /// Latency and size for the predictor-only loop: exact values when known, else the fast size.
    fn inner_costs(&mut self, g: &[usize], cfg: &SubnetConfig) -> Result<(Option<f64>, Option<u64>), SearchError> {
        if let Some(v) = self.exact.get(g) {
            return Ok(*v);
        }
        if let Some(v) = self.fast.get(g) {
            return Ok(*v);
        }
        let v = self.compute_costs(cfg, true)?;
        self.fast.insert(g.to_vec(), v);
        Ok(v)
    }

    /// Latency and size of `cfg` for the chosen objectives (`None` for the others); `fast` uses the fast size.
    fn compute_costs(&mut self, cfg: &SubnetConfig, fast: bool) -> Result<(Option<f64>, Option<u64>), SearchError> {
        let lat = if self.has(Objective::Latency) {
            Some(self.cost.latency_ms(cfg).map_err(|e| SearchError::Cost { what: "latency", id: cfg.id(), source: e })?)
        } else {
            None
        };
        let size = if self.has(Objective::Size) {
            let s = if fast { self.cost.size_bytes_fast(cfg) } else { self.cost.size_bytes(cfg) };
            Some(s.map_err(|e| SearchError::Cost { what: "size", id: cfg.id(), source: e })?)
        } else {
            None
        };
        Ok((lat, size))
    }

    fn exact_of(&mut self, g: &[usize], cfg: &SubnetConfig) -> Result<(Option<f64>, Option<u64>), SearchError> {
        if let Some(v) = self.exact.get(g) {
            return Ok(*v);
        }
        let v = self.compute_costs(cfg, false)?;
        self.exact.insert(g.to_vec(), v);
        Ok(v)
    }

    /// A random admissible canonical genotype.
    fn random_genes(&mut self) -> Result<Vec<usize>, SearchError> {
        let mut g: Vec<usize> = self.card.iter().map(|&c| self.rng.gen_range(0..c)).collect();
        let rng = &mut self.rng;
        self.enc.repair(&mut g, |n| rng.gen_range(0..n));
        Ok(self.enc.canonical(&g)?)
    }

    /// Up to `n` random genotypes not evaluated yet and not in `avoid` (fewer if the space runs out).
    fn random_batch(&mut self, n: usize, avoid: &HashSet<Vec<usize>>) -> Result<Vec<Vec<usize>>, SearchError> {
        let mut out: Vec<Vec<usize>> = Vec::with_capacity(n);
        let mut tries = 0;
        while out.len() < n && tries < 1000 * n.max(1) {
            tries += 1;
            let g = self.random_genes()?;
            if !self.done.contains(&g) && !avoid.contains(&g) && !out.contains(&g) {
                out.push(g);
            }
        }
        Ok(out)
    }

    fn remaining(&self) -> usize {
        self.s.evals.saturating_sub(self.evals.len())
    }

    /// Evaluate a batch for real (at most the remaining budget; genotypes already evaluated are skipped), then
    /// record the hypervolume.
    fn evaluate_batch(&mut self, batch: &[Vec<usize>]) -> Result<(), SearchError> {
        let b = self.history.len();
        for g in batch {
            if self.remaining() == 0 {
                break;
            }
            if self.done.contains(g) {
                continue;
            }
            let cfg = self.enc.decode(g)?;
            let id = cfg.id();
            let (ev, fresh) = match self.cache.get(&id) {
                Some(e) if e.genes == *g => (Evaluation { index: self.evals.len(), batch: b, ..e.clone() }, false),
                _ => {
                    let t0 = Instant::now();
                    let acc = if self.has(Objective::Accuracy) {
                        let a = self.oracle.accuracy(&cfg).map_err(|e| SearchError::Accuracy { id: id.clone(), source: e })?;
                        Some(a)
                    } else {
                        None
                    };
                    let (lat, size) = self.exact_of(g, &cfg)?;
                    let ev = Evaluation {
                        index: self.evals.len(),
                        batch: b,
                        id,
                        genes: g.clone(),
                        config: cfg,
                        accuracy: acc,
                        latency_ms: lat,
                        size_bytes: size,
                        seconds: t0.elapsed().as_secs_f64(),
                    };
                    (ev, true)
                }
            };
            (self.observer)(Event::Evaluated { eval: &ev, fresh }).map_err(SearchError::Observer)?;
            self.done.insert(g.clone());
            self.evals.push(ev);
        }
        let hv = self.hypervolume();
        let p = HvPoint { batch: b, evals: self.evals.len(), hypervolume: hv };
        (self.observer)(Event::Batch(&p)).map_err(SearchError::Observer)?;
        self.history.push(p);
        Ok(())
    }

    /// Hypervolume of all real evaluations so far.
    pub fn hypervolume(&self) -> f64 {
        let pts: Vec<Vec<f64>> = self.evals.iter().map(|e| normalized(e, &self.s.objectives, &self.reference)).collect();
        hypervolume(&pts, &vec![1.0; self.s.objectives.len()])
    }

    fn to_f(g: &[usize]) -> Vec<f64> {
        g.iter().map(|&v| v as f64).collect()
    }

    fn to_g(x: &[f64]) -> Vec<usize> {
        x.iter().map(|&v| v.max(0.0).round() as usize).collect()
    }

    /// The repair NSGA-II applies to every offspring: admissible, canonical genotype.
    fn repair_fn(enc: &Encoding) -> impl FnMut(&mut Vec<f64>, &mut StdRng) + '_ {
        move |x, rng| {
            let mut g = Self::to_g(x);
            enc.repair(&mut g, |n| rng.gen_range(0..n));
            if let Ok(c) = enc.canonical(&g) {
                g = c;
            }
            *x = Self::to_f(&g);
        }
    }

    /// Run the search to its budget.
    pub fn run(mut self) -> Result<Outcome, SearchError> {
        let base = self.enc.encode(&self.enc.space().largest())?;
        let mut first = vec![base.clone()];
        for c in &self.s.initial {
            let g = self.enc.encode(c)?;
            if !first.contains(&g) {
                first.push(g);
            }
        }
        let avoid: HashSet<Vec<usize>> = first.iter().cloned().collect();
        first.extend(self.random_batch(self.s.population.saturating_sub(first.len()), &avoid)?);
        self.evaluate_batch(&first)?;
        let bounds = Bounds::integer(&self.card);
        let params = Params::new(self.s.population);
        match self.s.algo {
            Algo::Random => {
                while self.remaining() > 0 {
                    let b = self.random_batch(self.s.population, &HashSet::new())?;
                    if b.is_empty() {
                        break;
                    }
                    self.evaluate_batch(&b)?;
                }
            }
            Algo::Nsga2 => {
                let seed = self.rng.r#gen();
                let mut ga = Nsga2::new(bounds, params, seed);
                let objs = self.s.objectives.clone();
                ga.init(self.evals.iter().map(|e| (Self::to_f(&e.genes), normalized(e, &objs, &self.reference))).collect());
                while self.remaining() > 0 {
                    let done = &self.done;
                    let off = ga.offspring(Self::repair_fn(&self.enc), |x| done.contains(&Self::to_g(x)));
                    if off.is_empty() {
                        break;
                    }
                    let start = self.evals.len();
                    let gs: Vec<Vec<usize>> = off.iter().map(|x| Self::to_g(x)).collect();
                    self.evaluate_batch(&gs)?;
                    let new: Vec<(Vec<f64>, Vec<f64>)> = self.evals[start..]
                        .iter()
                        .map(|e| (Self::to_f(&e.genes), normalized(e, &objs, &self.reference)))
                        .collect();
                    ga.survive(new);
                }
            }
            Algo::Linas => {
                while self.remaining() > 0 {
                    let batch = self.linas_batch()?;
                    if batch.is_empty() {
                        break;
                    }
                    self.evaluate_batch(&batch)?;
                }
            }
        }
        let front = front_of(&self.evals, &self.s.objectives, &self.reference);
        Ok(Outcome { evaluations: self.evals, history: self.history, front, reference: self.reference })
    }

    /// One LINAS loop before the real evaluations: fit the accuracy predictor, run NSGA-II on predicted and
    /// exact objectives, return the final population's members not evaluated yet (topped up with random ones).
    fn linas_batch(&mut self) -> Result<Vec<Vec<usize>>, SearchError> {
        let objs = self.s.objectives.clone();
        let predictor = if self.has(Objective::Accuracy) {
            let x: Vec<Vec<f64>> = self.evals.iter().map(|e| predictor::one_hot(&e.genes, &self.card)).collect();
            let y: Vec<f64> = self.evals.iter().map(|e| e.accuracy.unwrap_or(0.0)).collect();
            let sel = predictor::select(&predictor::default_candidates(), &x, &y, 5, self.s.seed);
            let ev = Event::Predictor { batch: self.history.len(), kind: sel.predictor.kind(), mape: sel.mape };
            (self.observer)(ev).map_err(SearchError::Observer)?;
            Some(sel.predictor)
        } else {
            None
        };
        let seed = self.rng.r#gen();
        let p = self.s.population;
        let mut ga = Nsga2::new(Bounds::integer(&self.card), Params::new(p), seed);
        // Warm start: the real evaluations, best first by rank and crowding (with predicted accuracy, so that
        // measured and predicted points compare on one scale).
        let predicted = |s: &mut Self, g: &[usize]| -> Result<Vec<f64>, SearchError> {
            let cfg = s.enc.decode(g)?;
            let (lat, size) = s.inner_costs(g, &cfg)?;
            let acc = predictor.as_ref().map(|m| m.predict(&predictor::one_hot(g, &s.card)).clamp(0.0, 1.0));
            let e = Evaluation {
                index: 0,
                batch: 0,
                id: String::new(),
                genes: Vec::new(),
                config: cfg,
                accuracy: acc,
                latency_ms: lat,
                size_bytes: size,
                seconds: 0.0,
            };
            Ok(normalized(&e, &objs, &s.reference))
        };
        let mut init = Vec::with_capacity(self.evals.len());
        let gs: Vec<Vec<usize>> = self.evals.iter().map(|e| e.genes.clone()).collect();
        for g in &gs {
            init.push((Self::to_f(g), predicted(self, g)?));
        }
        ga.init(init);
        let generations = (self.s.inner_evals / p).max(1);
        for _ in 0..generations {
            let off = ga.offspring(Self::repair_fn(&self.enc), |_| false);
            if off.is_empty() {
                break;
            }
            let mut scored = Vec::with_capacity(off.len());
            for x in off {
                let f = predicted(self, &Self::to_g(&x))?;
                scored.push((x, f));
            }
            ga.survive(scored);
        }
        let mut batch: Vec<Vec<usize>> = Vec::new();
        for ind in ga.population() {
            let g = Self::to_g(&ind.x);
            if !self.done.contains(&g) && !batch.contains(&g) {
                batch.push(g);
            }
        }
        batch.truncate(p.min(self.remaining()));
        if batch.len() < p.min(self.remaining()) {
            let avoid: HashSet<Vec<usize>> = batch.iter().cloned().collect();
            let more = self.random_batch(p.min(self.remaining()) - batch.len(), &avoid)?;
            batch.extend(more);
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{LayerMode, SearchSpace};

    /// A synthetic space: 10 layers, FFN widths 256..1024 in 4 steps, 1..3 KV heads, at least 5 layers.
    fn space() -> SearchSpace {
        SearchSpace {
            n_layers: 10,
            layer_mode: LayerMode::AnySubset,
            min_layers: 5,
            ffn_choices: vec![vec![256, 512, 768, 1024]; 10],
            kv_choices: vec![vec![1, 2, 3]; 10],
        }
    }

    /// Known accuracy: saturating in a capacity where early layers matter more (as in LLMs).
    struct Synthetic {
        calls: usize,
    }

    fn capacity(c: &SubnetConfig) -> f64 {
        c.layers
            .iter()
            .zip(&c.ffn)
            .zip(&c.kv_heads)
            .map(|((&l, &f), &k)| (1.0 / (1.0 + 0.3 * l as f64)) * (0.6 * f as f64 / 1024.0 + 0.4 * k as f64 / 3.0))
            .sum()
    }

    impl AccuracyOracle for Synthetic {
        fn describe(&self) -> String {
            "synthetic".into()
        }
        fn accuracy(&mut self, c: &SubnetConfig) -> Result<f64, BoxError> {
            self.calls += 1;
            Ok(0.25 + 0.5 * (1.0 - (-capacity(c) / 1.5).exp()))
        }
    }

    struct Costs;

    impl CostModel for Costs {
        fn latency_ms(&mut self, c: &SubnetConfig) -> Result<f64, BoxError> {
            Ok(1.0 + c.ffn.iter().zip(&c.kv_heads).map(|(&f, &k)| 0.2 + 0.5 * f as f64 / 1024.0 + 0.1 * k as f64).sum::<f64>())
        }
        fn size_bytes(&mut self, c: &SubnetConfig) -> Result<u64, BoxError> {
            Ok(1000 + c.ffn.iter().zip(&c.kv_heads).map(|(&f, &k)| (3 * f + 200 * k) as u64).sum::<u64>())
        }
    }

    fn settings(algo: Algo, seed: u64) -> Settings {
        Settings {
            algo,
            objectives: vec![Objective::Accuracy, Objective::Latency],
            evals: 60,
            population: 10,
            seed,
            inner_evals: 2000,
            initial: Vec::new(),
        }
    }

    fn run(algo: Algo, seed: u64) -> Outcome {
        let (mut o, mut c) = (Synthetic { calls: 0 }, Costs);
        Search::new(space().encoding(), settings(algo, seed), &mut o, &mut c).unwrap().run().unwrap()
    }

    #[test]
    fn linas_beats_random_search_at_equal_budget() {
        let mut lines = Vec::new();
        let (mut lin, mut rnd) = (0.0, 0.0);
        for seed in 0..3 {
            let (l, r) = (run(Algo::Linas, seed), run(Algo::Random, seed));
            assert_eq!((l.evaluations.len(), r.evaluations.len()), (60, 60));
            let (hl, hr) = (l.history.last().unwrap().hypervolume, r.history.last().unwrap().hypervolume);
            lines.push(format!("seed {seed}: linas {hl:.4} random {hr:.4}"));
            assert!(hl > hr, "{}", lines.join("; "));
            lin += hl;
            rnd += hr;
        }
        eprintln!("{}; mean linas {:.4} random {:.4}", lines.join("; "), lin / 3.0, rnd / 3.0);
    }

    #[test]
    fn initial_subnets_are_evaluated_first_and_must_lie_in_the_space() {
        let sp = space();
        let mut st = settings(Algo::Linas, 1);
        st.initial = vec![sp.smallest(), sp.largest()];
        let (mut o, mut c) = (Synthetic { calls: 0 }, Costs);
        let out = Search::new(sp.encoding(), st.clone(), &mut o, &mut c).unwrap().run().unwrap();
        // The full network first, then the warm start (the full network once), then random members.
        assert_eq!(out.evaluations[0].config, sp.largest());
        assert_eq!(out.evaluations[1].config, sp.smallest());
        assert_eq!(out.evaluations.iter().filter(|e| e.batch == 0).count(), st.population);
        st.initial = vec![SubnetConfig { layers: vec![0], ffn: vec![999], kv_heads: vec![1] }];
        let (mut o, mut c) = (Synthetic { calls: 0 }, Costs);
        let e = Search::new(sp.encoding(), st, &mut o, &mut c).err().expect("a sub-network outside the space");
        assert!(matches!(e, SearchError::Settings(_)) && e.to_string().contains("initial sub-network 0"), "{e}");
    }

    #[test]
    fn nsga2_runs_to_budget_without_duplicates() {
        let o = run(Algo::Nsga2, 5);
        assert_eq!(o.evaluations.len(), 60);
        let ids: HashSet<&str> = o.evaluations.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), 60);
        // the base model is the first evaluation and is on the front (highest accuracy)
        assert_eq!(o.evaluations[0].config, space().largest());
        assert!(o.front.contains(&0));
        // hypervolume never decreases
        assert!(o.history.windows(2).all(|w| w[1].hypervolume >= w[0].hypervolume));
    }

    #[test]
    fn same_seed_same_run_and_resume_loses_nothing() {
        let full = run(Algo::Linas, 3);
        let key = |o: &Outcome| -> Vec<(String, Option<f64>, Option<f64>)> {
            o.evaluations.iter().map(|e| (e.id.clone(), e.accuracy, e.latency_ms)).collect()
        };
        assert_eq!(key(&run(Algo::Linas, 3)), key(&full), "same seed, same run (timings aside)");
        // Interrupted run: the observer fails after 23 fresh evaluations (a kill); what it saw is kept.
        let mut kept: Vec<Evaluation> = Vec::new();
        {
            let (mut o, mut c) = (Synthetic { calls: 0 }, Costs);
            let r = Search::new(space().encoding(), settings(Algo::Linas, 3), &mut o, &mut c)
                .unwrap()
                .with_observer(|ev| {
                    if let Event::Evaluated { eval, .. } = ev {
                        if kept.len() == 23 {
                            return Err("killed".into());
                        }
                        kept.push(eval.clone());
                    }
                    Ok(())
                })
                .run();
            assert!(r.is_err());
        }
        assert_eq!(kept.len(), 23);
        let (mut o, mut c) = (Synthetic { calls: 0 }, Costs);
        let resumed = Search::new(space().encoding(), settings(Algo::Linas, 3), &mut o, &mut c)
            .unwrap()
            .with_cache(kept)
            .run()
            .unwrap();
        assert_eq!(o.calls, 60 - 23, "only the unfinished evaluations are measured again");
        assert_eq!(resumed.evaluations.len(), full.evaluations.len());
        for (a, b) in resumed.evaluations.iter().zip(&full.evaluations) {
            assert_eq!((&a.id, a.accuracy, a.latency_ms), (&b.id, b.accuracy, b.latency_ms));
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let (mut o, mut c) = (Synthetic { calls: 0 }, Costs);
        let mut s = settings(Algo::Linas, 0);
        s.objectives = vec![Objective::Accuracy];
        assert!(matches!(Search::new(space().encoding(), s, &mut o, &mut c), Err(SearchError::Settings(_))));
        assert!("speed".parse::<Objective>().is_err());
        assert_eq!("latency".parse::<Objective>(), Ok(Objective::Latency));
    }
}
