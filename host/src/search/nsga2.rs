//! NSGA-II (Deb, Pratap, Agarwal, Meyarivan 2002, "A fast and elitist multiobjective genetic algorithm:
//! NSGA-II", IEEE TEVC 6(2)): fast non-dominated sorting, crowding distance, binary tournament on the crowded
//! comparison, simulated binary crossover (SBX, Deb & Agrawal 1995) and polynomial mutation (Deb & Goyal 1996)
//! with the bounded variants of Deb's reference code (`nsga2-gnuplot-v1.1.6`, `realcross` / `realmutate`), as
//! pymoo implements them. Integer variables are varied on `[lower - 0.5, upper + 0.5)` and rounded (pymoo's
//! rounding repair); duplicate offspring are eliminated. All objectives are minimized.
//!
//! The algorithm is ask/tell ([`Nsga2::offspring`] / [`Nsga2::survive`]) so that the caller owns evaluation
//! (real evaluations with a budget and a cache, or predictor-only evaluations); [`minimize`] runs it on a
//! function.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Variable bounds: `lower[i] <= x[i] <= upper[i]`; `integer` rounds every variable.
#[derive(Clone, Debug, PartialEq)]
pub struct Bounds {
    /// Lower bounds.
    pub lower: Vec<f64>,
    /// Upper bounds (`>= lower`).
    pub upper: Vec<f64>,
    /// Integer variables (every variable).
    pub integer: bool,
}

impl Bounds {
    /// Integer genes `0..card[i]` (cardinalities `>= 1`).
    pub fn integer(card: &[usize]) -> Bounds {
        Bounds { lower: vec![0.0; card.len()], upper: card.iter().map(|&c| (c.max(1) - 1) as f64).collect(), integer: true }
    }

    /// Continuous variables in `[lo, hi]^n`.
    pub fn real(n: usize, lo: f64, hi: f64) -> Bounds {
        Bounds { lower: vec![lo; n], upper: vec![hi; n], integer: false }
    }

    /// Number of variables.
    pub fn n_var(&self) -> usize {
        self.lower.len()
    }

    /// The bounds variation works in: integer variables get half a unit on each side so that rounding gives
    /// every value an equal share.
    fn varied(&self, i: usize) -> (f64, f64) {
        if self.integer { (self.lower[i] - 0.5, self.upper[i] + 0.5 - 1e-9) } else { (self.lower[i], self.upper[i]) }
    }

    fn fix(&self, x: &mut [f64]) {
        for (i, v) in x.iter_mut().enumerate() {
            if self.integer {
                *v = v.round();
            }
            *v = v.clamp(self.lower[i], self.upper[i]);
        }
    }

    /// A uniformly random point.
    pub fn sample(&self, rng: &mut StdRng) -> Vec<f64> {
        (0..self.n_var())
            .map(|i| {
                if self.integer {
                    rng.gen_range(self.lower[i] as i64..=self.upper[i] as i64) as f64
                } else {
                    rng.gen_range(self.lower[i]..=self.upper[i])
                }
            })
            .collect()
    }
}

/// Parameters of [`Nsga2`] (defaults: pymoo's NSGA-II, Deb's reference code).
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Population size `N`.
    pub pop_size: usize,
    /// Probability that a pair of parents is crossed over (0.9).
    pub p_crossover: f64,
    /// SBX distribution index eta_c (15).
    pub eta_c: f64,
    /// Probability that a variable is mutated; `None`: `1 / n_var`.
    pub p_mutation: Option<f64>,
    /// Polynomial-mutation distribution index eta_m (20).
    pub eta_m: f64,
}

impl Params {
    /// Defaults with population `pop_size`.
    pub fn new(pop_size: usize) -> Params {
        Params { pop_size, p_crossover: 0.9, eta_c: 15.0, p_mutation: None, eta_m: 20.0 }
    }
}

/// `a` dominates `b` (minimization): no worse in every objective and better in one.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        if x < y {
            better = true;
        }
    }
    better
}

/// Fast non-dominated sort (Deb et al. 2002, sec. III-A): the indices of `f` grouped into fronts, best first,
/// each front in increasing index order. O(M N^2).
pub fn non_dominated_sort(f: &[Vec<f64>]) -> Vec<Vec<usize>> {
    let n = f.len();
    let mut dominated_by: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut count = vec![0usize; n];
    for p in 0..n {
        for q in p + 1..n {
            if dominates(&f[p], &f[q]) {
                dominated_by[p].push(q);
                count[q] += 1;
            } else if dominates(&f[q], &f[p]) {
                dominated_by[q].push(p);
                count[p] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut cur: Vec<usize> = (0..n).filter(|&i| count[i] == 0).collect();
    while !cur.is_empty() {
        let mut next = Vec::new();
        for &p in &cur {
            for &q in &dominated_by[p] {
                count[q] -= 1;
                if count[q] == 0 {
                    next.push(q);
                }
            }
        }
        next.sort_unstable();
        fronts.push(cur);
        cur = next;
    }
    fronts
}

/// Crowding distance of the members of one front (Deb et al. 2002, sec. III-B), in the order of `front`:
/// boundary points get infinity; inner points the sum over objectives of the normalized gap between their
/// neighbours.
pub fn crowding_distance(f: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let n = front.len();
    let mut d = vec![0f64; n];
    if n <= 2 {
        return vec![f64::INFINITY; n];
    }
    let m = f[front[0]].len();
    for k in 0..m {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| f[front[a]][k].total_cmp(&f[front[b]][k]).then(a.cmp(&b)));
        let (lo, hi) = (f[front[order[0]]][k], f[front[order[n - 1]]][k]);
        d[order[0]] = f64::INFINITY;
        d[order[n - 1]] = f64::INFINITY;
        if hi - lo <= 0.0 {
            continue;
        }
        for w in 1..n - 1 {
            d[order[w]] += (f[front[order[w + 1]]][k] - f[front[order[w - 1]]][k]) / (hi - lo);
        }
    }
    d
}

/// A member of the population: variables, objectives, non-domination rank (0 best) and crowding distance.
#[derive(Clone, Debug, PartialEq)]
pub struct Individual {
    /// Variables.
    pub x: Vec<f64>,
    /// Objectives (minimized).
    pub f: Vec<f64>,
    /// Front index.
    pub rank: usize,
    /// Crowding distance within its front.
    pub crowding: f64,
}

/// NSGA-II state: the population and the random generator.
pub struct Nsga2 {
    params: Params,
    bounds: Bounds,
    pop: Vec<Individual>,
    rng: StdRng,
}

/// Select the best `n` of `cands` by rank, then crowding distance (Deb et al. 2002, sec. III-C), setting their
/// rank and crowding.
fn select(mut cands: Vec<Individual>, n: usize) -> Vec<Individual> {
    let f: Vec<Vec<f64>> = cands.iter().map(|c| c.f.clone()).collect();
    let fronts = non_dominated_sort(&f);
    let mut keep = Vec::with_capacity(n);
    for (r, front) in fronts.iter().enumerate() {
        let cd = crowding_distance(&f, front);
        let mut members: Vec<(usize, f64)> = front.iter().copied().zip(cd).collect();
        for &(i, c) in &members {
            cands[i].rank = r;
            cands[i].crowding = c;
        }
        if keep.len() + members.len() > n {
            members.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            members.truncate(n - keep.len());
            members.sort_by_key(|m| m.0);
        }
        keep.extend(members.iter().map(|m| m.0));
        if keep.len() >= n {
            break;
        }
    }
    let mut slots: Vec<Option<Individual>> = cands.into_iter().map(Some).collect();
    keep.iter().map(|&i| slots[i].take().expect("selected once")).collect()
}

impl Nsga2 {
    /// A new run; `seed` fixes every random choice.
    pub fn new(bounds: Bounds, params: Params, seed: u64) -> Nsga2 {
        Nsga2 { params, bounds, pop: Vec::new(), rng: StdRng::seed_from_u64(seed) }
    }

    /// The random generator (for the caller's initial sampling, so one seed fixes the whole run).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// The bounds.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// Set the (evaluated) initial population: the best `pop_size` of `members` by rank and crowding.
    pub fn init(&mut self, members: Vec<(Vec<f64>, Vec<f64>)>) {
        let cands = members.into_iter().map(|(x, f)| Individual { x, f, rank: 0, crowding: 0.0 }).collect();
        self.pop = select(cands, self.params.pop_size);
    }

    /// The current population (after [`Nsga2::init`] / [`Nsga2::survive`]), ranks and crowding set.
    pub fn population(&self) -> &[Individual] {
        &self.pop
    }

    /// The first front of the population.
    pub fn front(&self) -> Vec<&Individual> {
        self.pop.iter().filter(|i| i.rank == 0).collect()
    }

    fn tournament(&mut self) -> usize {
        let n = self.pop.len();
        let a = self.rng.gen_range(0..n);
        let b = self.rng.gen_range(0..n);
        let (pa, pb) = (&self.pop[a], &self.pop[b]);
        if pa.rank != pb.rank {
            return if pa.rank < pb.rank { a } else { b };
        }
        if pa.crowding != pb.crowding {
            return if pa.crowding > pb.crowding { a } else { b };
        }
        if self.rng.r#gen::<bool>() { a } else { b }
    }

    /// Bounded SBX of one variable (Deb's `realcross`), in place on `(c1, c2)`.
    fn sbx_var(&mut self, i: usize, c1: &mut f64, c2: &mut f64) {
        let (yl, yu) = self.bounds.varied(i);
        let eta = self.params.eta_c;
        if self.rng.r#gen::<f64>() > 0.5 || (*c1 - *c2).abs() <= 1e-14 {
            return;
        }
        let (y1, y2) = if c1 < c2 { (*c1, *c2) } else { (*c2, *c1) };
        let rand: f64 = self.rng.r#gen();
        let child = |beta: f64| {
            let alpha = 2.0 - beta.powf(-(eta + 1.0));
            if rand <= 1.0 / alpha {
                (rand * alpha).powf(1.0 / (eta + 1.0))
            } else {
                (1.0 / (2.0 - rand * alpha)).powf(1.0 / (eta + 1.0))
            }
        };
        let betaq = child(1.0 + 2.0 * (y1 - yl) / (y2 - y1));
        let mut a = 0.5 * ((y1 + y2) - betaq * (y2 - y1));
        let betaq = child(1.0 + 2.0 * (yu - y2) / (y2 - y1));
        let mut b = 0.5 * ((y1 + y2) + betaq * (y2 - y1));
        a = a.clamp(yl, yu);
        b = b.clamp(yl, yu);
        if self.rng.r#gen::<bool>() {
            std::mem::swap(&mut a, &mut b);
        }
        *c1 = a;
        *c2 = b;
    }

    /// Bounded polynomial mutation (Deb's `realmutate`), in place.
    fn mutate(&mut self, x: &mut [f64]) {
        let n = x.len();
        let pm = self.params.p_mutation.unwrap_or(1.0 / n.max(1) as f64);
        let eta = self.params.eta_m;
        for (i, xi) in x.iter_mut().enumerate() {
            if self.rng.r#gen::<f64>() >= pm {
                continue;
            }
            let (yl, yu) = self.bounds.varied(i);
            if yu <= yl {
                continue;
            }
            let y = xi.clamp(yl, yu);
            let (d1, d2) = ((y - yl) / (yu - yl), (yu - y) / (yu - yl));
            let r: f64 = self.rng.r#gen();
            let mpow = 1.0 / (eta + 1.0);
            let dq = if r <= 0.5 {
                let v = 2.0 * r + (1.0 - 2.0 * r) * (1.0 - d1).powf(eta + 1.0);
                v.powf(mpow) - 1.0
            } else {
                let v = 2.0 * (1.0 - r) + 2.0 * (r - 0.5) * (1.0 - d2).powf(eta + 1.0);
                1.0 - v.powf(mpow)
            };
            *xi = (y + dq * (yu - yl)).clamp(yl, yu);
        }
    }

    /// Ask: up to `pop_size` new offspring (binary tournament, SBX, polynomial mutation, rounding, `repair`),
    /// none equal to a population member, to another offspring, or rejected by `is_known` (e.g. already
    /// evaluated). `repair` maps a varied point to an admissible one (identity when all points are). Fewer than
    /// `pop_size` are returned only when 100 rounds of mating find no more new points (a nearly exhausted space).
    pub fn offspring(&mut self, mut repair: impl FnMut(&mut Vec<f64>, &mut StdRng), is_known: impl Fn(&[f64]) -> bool) -> Vec<Vec<f64>> {
        let n = self.params.pop_size;
        let mut out: Vec<Vec<f64>> = Vec::with_capacity(n);
        if self.pop.is_empty() {
            return out;
        }
        let mut seen: std::collections::HashSet<Vec<u64>> =
            self.pop.iter().map(|i| i.x.iter().map(|v| v.to_bits()).collect()).collect();
        let key = |x: &[f64]| -> Vec<u64> { x.iter().map(|v| (*v + 0.0).to_bits()).collect() };
        let mut rounds = 0;
        while out.len() < n && rounds < 100 * n.div_ceil(2) {
            rounds += 1;
            let (a, b) = (self.tournament(), self.tournament());
            let mut c1 = self.pop[a].x.clone();
            let mut c2 = self.pop[b].x.clone();
            if self.rng.r#gen::<f64>() < self.params.p_crossover {
                for i in 0..c1.len() {
                    let (mut u, mut v) = (c1[i], c2[i]);
                    self.sbx_var(i, &mut u, &mut v);
                    c1[i] = u;
                    c2[i] = v;
                }
            }
            for mut c in [c1, c2] {
                self.mutate(&mut c);
                self.bounds.fix(&mut c);
                repair(&mut c, &mut self.rng);
                let k = key(&c);
                if out.len() < n && !seen.contains(&k) && !is_known(&c) {
                    seen.insert(k);
                    out.push(c);
                }
            }
        }
        out
    }

    /// Tell: the evaluated offspring join the population and the best `pop_size` survive.
    pub fn survive(&mut self, offspring: Vec<(Vec<f64>, Vec<f64>)>) {
        let mut cands = std::mem::take(&mut self.pop);
        cands.extend(offspring.into_iter().map(|(x, f)| Individual { x, f, rank: 0, crowding: 0.0 }));
        self.pop = select(cands, self.params.pop_size);
    }
}

/// Run NSGA-II for `generations` on `eval` (a batch of points to their objectives), from a random initial
/// population, and return the final state.
pub fn minimize(
    bounds: Bounds,
    params: Params,
    generations: usize,
    seed: u64,
    mut eval: impl FnMut(&[Vec<f64>]) -> Vec<Vec<f64>>,
) -> Nsga2 {
    let mut g = Nsga2::new(bounds, params, seed);
    let n = g.params.pop_size;
    let xs: Vec<Vec<f64>> = (0..n).map(|_| g.bounds.clone().sample(&mut g.rng)).collect();
    let fs = eval(&xs);
    g.init(xs.into_iter().zip(fs).collect());
    for _ in 0..generations {
        let off = g.offspring(|_, _| {}, |_| false);
        if off.is_empty() {
            break;
        }
        let fs = eval(&off);
        g.survive(off.into_iter().zip(fs).collect());
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::hv::hypervolume;

    fn zdt(x: &[f64], second: bool) -> Vec<f64> {
        let f1 = x[0];
        let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
        let f2 = if second { g * (1.0 - (f1 / g).powi(2)) } else { g * (1.0 - (f1 / g).sqrt()) };
        vec![f1, f2]
    }

    fn run_zdt(second: bool, bounds: Bounds, scale: f64) -> f64 {
        let g = minimize(bounds, Params::new(200), 300, 1, |xs| {
            xs.iter().map(|x| zdt(&x.iter().map(|v| v / scale).collect::<Vec<_>>(), second)).collect()
        });
        let front: Vec<Vec<f64>> = g.front().iter().map(|i| i.f.clone()).collect();
        hypervolume(&front, &[1.0, 1.0])
    }

    // True fronts (Zitzler, Deb, Thiele 2000): ZDT1 f2 = 1 - sqrt(f1), ZDT2 f2 = 1 - f1^2, f1 in [0,1].
    // Hypervolume to (1,1) = ∫0^1 (1 - f2(f1)) df1: ZDT1 ∫ sqrt(t) dt = 2/3; ZDT2 ∫ t^2 dt = 1/3.
    #[test]
    fn zdt1_real_reaches_the_optimal_hypervolume() {
        let hv = run_zdt(false, Bounds::real(30, 0.0, 1.0), 1.0);
        assert!(hv >= 0.99 * (2.0 / 3.0), "ZDT1 hypervolume {hv}");
    }

    #[test]
    fn zdt2_real_reaches_the_optimal_hypervolume() {
        let hv = run_zdt(true, Bounds::real(30, 0.0, 1.0), 1.0);
        assert!(hv >= 0.99 * (1.0 / 3.0), "ZDT2 hypervolume {hv}");
    }

    #[test]
    fn zdt1_on_integer_genes() {
        // 30 integer genes 0..=1000, x = gene / 1000: the discretization the search's integer genes use.
        let hv = run_zdt(false, Bounds::integer(&[1001; 30]), 1000.0);
        assert!(hv >= 0.99 * (2.0 / 3.0), "ZDT1 (integer) hypervolume {hv}");
    }

    #[test]
    fn sort_and_crowding_by_hand() {
        let f = vec![vec![1.0, 5.0], vec![2.0, 3.0], vec![3.0, 4.0], vec![4.0, 1.0], vec![5.0, 5.0]];
        assert_eq!(non_dominated_sort(&f), vec![vec![0, 1, 3], vec![2], vec![4]]);
        let cd = crowding_distance(&f, &[0, 1, 3]);
        // middle point: (4-1)/(4-1) + (5-1)/(5-1) = 2
        assert_eq!(cd, vec![f64::INFINITY, 2.0, f64::INFINITY]);
        assert!(dominates(&[1.0, 1.0], &[1.0, 2.0]) && !dominates(&[1.0, 2.0], &[1.0, 2.0]));
    }

    #[test]
    fn offspring_are_integer_new_and_unique() {
        let mut g = Nsga2::new(Bounds::integer(&[2, 3, 5]), Params::new(6), 7);
        let xs: Vec<Vec<f64>> = (0..6).map(|_| g.bounds.clone().sample(&mut g.rng)).collect();
        let fs: Vec<Vec<f64>> = xs.iter().map(|x| vec![x[0] + x[1], x[2] - x[1]]).collect();
        g.init(xs.iter().cloned().zip(fs).collect());
        let off = g.offspring(|_, _| {}, |x| x[0] == 0.0);
        assert!(!off.is_empty());
        for (i, o) in off.iter().enumerate() {
            assert!(o.iter().all(|v| v.fract() == 0.0) && o[0] == 1.0 && o[1] <= 2.0 && o[2] <= 4.0);
            assert!(!xs.contains(o) && !off[..i].contains(o));
        }
    }
}
