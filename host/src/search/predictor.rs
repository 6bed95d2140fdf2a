//! Objective predictors of LINAS (Cummings et al. 2022; DyNAS-T `dynast/predictors`): ridge regression and
//! RBF-kernel epsilon-SVR on one-hot features of the integer genes, chosen (with their hyper-parameters) by
//! k-fold cross-validated mean absolute percentage error (MAPE).
//!
//! - Ridge: `min ||y - Xw - b||² + λ||w||²`, solved in its dual (kernel) form on centred features,
//!   `(X_c X_cᵀ + λI) a = y_c`, `f(x) = (x - x̄)·X_cᵀ a + ȳ` (Hastie, Tibshirani, Friedman, ESL sec. 3.4.1).
//! - epsilon-SVR (Vapnik 1995; Smola & Schölkopf 2004) with the RBF kernel `k(x, z) = exp(-γ||x - z||²)` and the
//!   bias folded into the kernel (`k + 1`), which removes the equality constraint of the dual:
//!   `min_β ½ βᵀKβ - yᵀβ + ε||β||₁, -C <= β_i <= C`, solved by exact coordinate descent (each step a
//!   soft-threshold then a clip; Ho & Lin 2012, "Large-scale linear support vector regression", sec. 3, with a
//!   kernel). Targets are standardized; `f(x) = ȳ + s Σ β_i (k(x_i, x) + 1)`.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// One-hot features of integer genes with the given cardinalities: `Σ card` features, one 1 per gene.
pub fn one_hot(genes: &[usize], card: &[usize]) -> Vec<f64> {
    let mut v = vec![0.0; card.iter().sum()];
    let mut off = 0;
    for (&g, &c) in genes.iter().zip(card) {
        if g < c {
            v[off + g] = 1.0;
        }
        off += c;
    }
    v
}

/// Mean absolute percentage error, % (`100/n Σ |p - y| / |y|`, `|y|` floored at 1e-12).
pub fn mape(pred: &[f64], y: &[f64]) -> f64 {
    let n = y.len().max(1) as f64;
    100.0 * pred.iter().zip(y).map(|(p, t)| (p - t).abs() / t.abs().max(1e-12)).sum::<f64>() / n
}

/// A predictor kind and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Ridge regression with penalty λ.
    Ridge {
        /// λ.
        lambda: f64,
    },
    /// RBF epsilon-SVR: box `c`, kernel width `gamma` as a multiple of `1 / (n_features · var(X))` (the
    /// scikit-learn "scale" default), tube `epsilon` in standardized target units.
    Svr {
        /// C.
        c: f64,
        /// γ factor.
        gamma: f64,
        /// ε.
        epsilon: f64,
    },
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Ridge { lambda } => write!(f, "ridge(lambda={lambda})"),
            Kind::Svr { c, gamma, epsilon } => write!(f, "svr-rbf(C={c}, gamma={gamma}xscale, eps={epsilon})"),
        }
    }
}

/// The default candidates: ridge with λ in {0.01, 0.1, 1, 10}, SVR with C in {1, 10, 100} and γ factor in
/// {0.5, 1, 2}, ε = 0.05.
pub fn default_candidates() -> Vec<Kind> {
    let mut v: Vec<Kind> = [0.01, 0.1, 1.0, 10.0].iter().map(|&lambda| Kind::Ridge { lambda }).collect();
    for c in [1.0, 10.0, 100.0] {
        for gamma in [0.5, 1.0, 2.0] {
            v.push(Kind::Svr { c, gamma, epsilon: 0.05 });
        }
    }
    v
}

/// A fitted predictor.
#[derive(Clone, Debug)]
pub struct Predictor {
    kind: Kind,
    xs: Vec<Vec<f64>>,
    coef: Vec<f64>,
    x_mean: Vec<f64>,
    y_mean: f64,
    y_scale: f64,
    gamma: f64,
}

fn sqdist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Solve `A x = b` for symmetric positive definite `A` (n x n, row-major) by Cholesky; `None` if not SPD.
fn cholesky_solve(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[i * n + j] - (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum::<f64>();
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i * n + k] * y[k]).sum::<f64>()) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k * n + i] * x[k]).sum::<f64>()) / l[i * n + i];
    }
    Some(x)
}

impl Predictor {
    /// Fit `kind` to features `x` (n rows of equal length) and targets `y` (n values, n >= 1).
    pub fn fit(kind: Kind, x: &[Vec<f64>], y: &[f64]) -> Predictor {
        let n = x.len();
        let p = x.first().map_or(0, |r| r.len());
        let y_mean = y.iter().sum::<f64>() / n.max(1) as f64;
        match kind {
            Kind::Ridge { lambda } => {
                let x_mean: Vec<f64> = (0..p).map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64).collect();
                let xc: Vec<Vec<f64>> = x.iter().map(|r| r.iter().zip(&x_mean).map(|(a, m)| a - m).collect()).collect();
                let mut k = vec![0.0; n * n];
                for i in 0..n {
                    for j in 0..=i {
                        let d: f64 = xc[i].iter().zip(&xc[j]).map(|(a, b)| a * b).sum();
                        k[i * n + j] = d;
                        k[j * n + i] = d;
                    }
                    k[i * n + i] += lambda.max(1e-9);
                }
                let yc: Vec<f64> = y.iter().map(|v| v - y_mean).collect();
                let coef = cholesky_solve(&k, &yc, n).unwrap_or_else(|| vec![0.0; n]);
                Predictor { kind, xs: xc, coef, x_mean, y_mean, y_scale: 1.0, gamma: 0.0 }
            }
            Kind::Svr { c, gamma, epsilon } => {
                let var_y = y.iter().map(|v| (v - y_mean).powi(2)).sum::<f64>() / n.max(1) as f64;
                let y_scale = if var_y > 0.0 { var_y.sqrt() } else { 1.0 };
                let ys: Vec<f64> = y.iter().map(|v| (v - y_mean) / y_scale).collect();
                // scikit-learn's gamma="scale": 1 / (n_features * X.var()) over all entries.
                let all = (n * p).max(1) as f64;
                let m = x.iter().flatten().sum::<f64>() / all;
                let var_x = x.iter().flatten().map(|v| (v - m).powi(2)).sum::<f64>() / all;
                let g = gamma / (p.max(1) as f64 * if var_x > 0.0 { var_x } else { 1.0 });
                let mut k = vec![0.0; n * n];
                for i in 0..n {
                    for j in 0..=i {
                        let v = (-g * sqdist(&x[i], &x[j])).exp() + 1.0;
                        k[i * n + j] = v;
                        k[j * n + i] = v;
                    }
                }
                let mut beta = vec![0.0; n];
                let mut kb = vec![0.0; n]; // K beta
                for _epoch in 0..2000 {
                    let mut max_step: f64 = 0.0;
                    for i in 0..n {
                        let kii = k[i * n + i];
                        let gi = kb[i] - ys[i];
                        let u = kii * beta[i] - gi;
                        let nb = (u.signum() * (u.abs() - epsilon).max(0.0) / kii).clamp(-c, c);
                        let d = nb - beta[i];
                        if d != 0.0 {
                            for j in 0..n {
                                kb[j] += d * k[j * n + i];
                            }
                            beta[i] = nb;
                            max_step = max_step.max(d.abs());
                        }
                    }
                    if max_step < 1e-7 {
                        break;
                    }
                }
                Predictor { kind, xs: x.to_vec(), coef: beta, x_mean: Vec::new(), y_mean, y_scale, gamma: g }
            }
        }
    }

    /// The kind and hyper-parameters.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Predict the target of features `x`.
    pub fn predict(&self, x: &[f64]) -> f64 {
        match self.kind {
            Kind::Ridge { .. } => {
                let xc: Vec<f64> = x.iter().zip(&self.x_mean).map(|(a, m)| a - m).collect();
                self.y_mean
                    + self.xs.iter().zip(&self.coef).map(|(r, a)| a * r.iter().zip(&xc).map(|(u, v)| u * v).sum::<f64>()).sum::<f64>()
            }
            Kind::Svr { .. } => {
                let s: f64 = self
                    .xs
                    .iter()
                    .zip(&self.coef)
                    .filter(|(_, b)| **b != 0.0)
                    .map(|(r, b)| b * ((-self.gamma * sqdist(r, x)).exp() + 1.0))
                    .sum();
                self.y_mean + self.y_scale * s
            }
        }
    }
}

/// Cross-validated MAPE (%) of `kind` with `k` folds (rows shuffled with `seed`).
pub fn cv_mape(kind: Kind, x: &[Vec<f64>], y: &[f64], k: usize, seed: u64) -> f64 {
    let n = x.len();
    let k = k.clamp(2, n.max(2));
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed));
    let (mut pred, mut truth) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for f in 0..k {
        let test: Vec<usize> = idx.iter().enumerate().filter(|(i, _)| i % k == f).map(|(_, &j)| j).collect();
        let train: Vec<usize> = idx.iter().enumerate().filter(|(i, _)| i % k != f).map(|(_, &j)| j).collect();
        if test.is_empty() || train.is_empty() {
            continue;
        }
        let tx: Vec<Vec<f64>> = train.iter().map(|&i| x[i].clone()).collect();
        let ty: Vec<f64> = train.iter().map(|&i| y[i]).collect();
        let m = Predictor::fit(kind, &tx, &ty);
        for &i in &test {
            pred.push(m.predict(&x[i]));
            truth.push(y[i]);
        }
    }
    mape(&pred, &truth)
}

/// The result of [`select`]: the chosen predictor fitted on all data, and every candidate's CV MAPE.
#[derive(Clone, Debug)]
pub struct Selection {
    /// Fitted on all rows.
    pub predictor: Predictor,
    /// `(candidate, CV MAPE %)` in candidate order.
    pub scores: Vec<(Kind, f64)>,
    /// CV MAPE of the chosen one, % (NaN when too few rows to cross-validate).
    pub mape: f64,
}

/// Choose among `candidates` by `k`-fold CV MAPE (ties: the earlier candidate) and fit it on all rows. With
/// fewer than 4 rows there is nothing to validate: the first candidate is fitted.
pub fn select(candidates: &[Kind], x: &[Vec<f64>], y: &[f64], k: usize, seed: u64) -> Selection {
    let first = candidates.first().copied().unwrap_or(Kind::Ridge { lambda: 1.0 });
    if x.len() < 4 {
        return Selection { predictor: Predictor::fit(first, x, y), scores: Vec::new(), mape: f64::NAN };
    }
    let scores: Vec<(Kind, f64)> = candidates.iter().map(|&c| (c, cv_mape(c, x, y, k, seed))).collect();
    let (best, m) = scores.iter().fold((first, f64::INFINITY), |acc, &(c, s)| if s < acc.1 { (c, s) } else { acc });
    Selection { predictor: Predictor::fit(best, x, y), scores, mape: m }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn data(n: usize, seed: u64, f: impl Fn(&[usize]) -> f64) -> (Vec<Vec<f64>>, Vec<f64>, Vec<usize>) {
        let card = vec![2, 3, 4, 5, 3, 2, 4, 5];
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let g: Vec<usize> = card.iter().map(|&c| rng.gen_range(0..c)).collect();
            x.push(one_hot(&g, &card));
            y.push(f(&g));
        }
        (x, y, card)
    }

    fn additive(g: &[usize]) -> f64 {
        // a known additive function of the genes: 10 + Σ (i+1) * 0.3 * g_i
        10.0 + g.iter().enumerate().map(|(i, &v)| (i + 1) as f64 * 0.3 * v as f64).sum::<f64>()
    }

    fn interacting(g: &[usize]) -> f64 {
        // smooth with interactions: 5 + exp(-(g0 + g1 + g2 - 4)^2 / 4) * (1 + g3) + 0.1 g4 g6
        let s = (g[0] + g[1] + g[2]) as f64 - 4.0;
        5.0 + (-(s * s) / 4.0).exp() * (1.0 + g[3] as f64) + 0.1 * (g[4] * g[6]) as f64
    }

    #[test]
    fn one_hot_layout() {
        assert_eq!(one_hot(&[1, 0, 2], &[2, 2, 3]), vec![0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        assert!((mape(&[110.0, 90.0], &[100.0, 100.0]) - 10.0).abs() < 1e-12);
    }

    #[test]
    fn ridge_recovers_an_additive_function() {
        let (x, y, _) = data(120, 1, additive);
        let (tx, ty, _) = data(200, 2, additive);
        let m = Predictor::fit(Kind::Ridge { lambda: 0.01 }, &x, &y);
        let pred: Vec<f64> = tx.iter().map(|r| m.predict(r)).collect();
        assert!(mape(&pred, &ty) < 0.5, "ridge MAPE {}", mape(&pred, &ty));
        // selection picks a ridge for an additive target
        let s = select(&default_candidates(), &x, &y, 5, 0);
        assert!(matches!(s.predictor.kind(), Kind::Ridge { .. }), "{}", s.predictor.kind());
    }

    #[test]
    fn svr_fits_interactions_better_than_ridge() {
        let (x, y, _) = data(150, 3, interacting);
        let (tx, ty, _) = data(300, 4, interacting);
        let svr = Predictor::fit(Kind::Svr { c: 10.0, gamma: 1.0, epsilon: 0.05 }, &x, &y);
        let ridge = Predictor::fit(Kind::Ridge { lambda: 0.1 }, &x, &y);
        let e_svr = mape(&tx.iter().map(|r| svr.predict(r)).collect::<Vec<_>>(), &ty);
        let e_ridge = mape(&tx.iter().map(|r| ridge.predict(r)).collect::<Vec<_>>(), &ty);
        assert!(e_svr < 0.8 * e_ridge, "SVR {e_svr}% vs ridge {e_ridge}%");
        let s = select(&default_candidates(), &x, &y, 5, 0);
        assert!(matches!(s.predictor.kind(), Kind::Svr { .. }), "{}", s.predictor.kind());
    }

    #[test]
    fn svr_on_a_constant_and_tiny_sets() {
        let x = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        let m = select(&default_candidates(), &x, &[3.0, 3.0], 5, 0);
        assert!((m.predictor.predict(&[0.0, 1.0]) - 3.0).abs() < 1e-9);
        let s = Predictor::fit(Kind::Svr { c: 1.0, gamma: 1.0, epsilon: 0.0 }, &x, &[3.0, 3.0]);
        assert!((s.predict(&[1.0, 0.0]) - 3.0).abs() < 1e-9);
    }
}
