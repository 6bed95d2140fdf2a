//! Hypervolume (the Lebesgue measure of the region dominated by a point set and bounded by a reference
//! point; Zitzler & Thiele 1998), all objectives minimized. Two objectives by a sweep, more by slicing along
//! the last objective (HSO, While et al. 2006) down to the two-objective sweep.

use super::nsga2::dominates;

/// Hypervolume of `points` (each of `reference.len()` objectives, minimized) bounded by `reference`. Points
/// not strictly better than the reference in every objective contribute nothing. Any number of objectives
/// (exact; cost grows as `n^(d-1) log n`: meant for 2 and 3).
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let d = reference.len();
    let mut pts: Vec<Vec<f64>> =
        points.iter().filter(|p| p.len() == d && p.iter().zip(reference).all(|(a, r)| a < r)).cloned().collect();
    // Keep the non-dominated, distinct points.
    pts.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    pts.dedup();
    let nd: Vec<Vec<f64>> =
        pts.iter().filter(|p| !pts.iter().any(|q| dominates(q, p))).cloned().collect();
    hv(nd, reference)
}

fn hv(mut pts: Vec<Vec<f64>>, r: &[f64]) -> f64 {
    let d = r.len();
    if pts.is_empty() {
        return 0.0;
    }
    match d {
        1 => r[0] - pts.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min),
        2 => {
            pts.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
            let (mut area, mut best_y) = (0.0, r[1]);
            for p in &pts {
                if p[1] < best_y {
                    area += (r[0] - p[0]) * (best_y - p[1]);
                    best_y = p[1];
                }
            }
            area
        }
        _ => {
            pts.sort_by(|a, b| a[d - 1].total_cmp(&b[d - 1]));
            let mut vol = 0.0;
            for i in 0..pts.len() {
                let top = if i + 1 < pts.len() { pts[i + 1][d - 1] } else { r[d - 1] };
                let depth = top - pts[i][d - 1];
                if depth <= 0.0 {
                    continue;
                }
                let slice: Vec<Vec<f64>> = pts[..=i].iter().map(|p| p[..d - 1].to_vec()).collect();
                let nd: Vec<Vec<f64>> = slice.iter().filter(|p| !slice.iter().any(|q| dominates(q, p))).cloned().collect();
                vol += hv(nd, &r[..d - 1]) * depth;
            }
            vol
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_objectives_by_hand() {
        // Staircase (1,3), (2,2), (3,1) to (4,4): 3*1 + 2*1 + 1*1 ... = columns: x in [1,2): 1, [2,3): 2, [3,4): 3
        assert_eq!(hypervolume(&[vec![1.0, 3.0], vec![2.0, 2.0], vec![3.0, 1.0]], &[4.0, 4.0]), 6.0);
        // dominated and outside points do not count
        assert_eq!(hypervolume(&[vec![1.0, 1.0], vec![2.0, 2.0], vec![5.0, 0.0]], &[4.0, 4.0]), 9.0);
        assert_eq!(hypervolume(&[], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn three_objectives_by_hand() {
        // One point: a box.
        assert_eq!(hypervolume(&[vec![1.0, 2.0, 3.0]], &[4.0, 4.0, 4.0]), 3.0 * 2.0 * 1.0);
        // Two boxes (0,0,2) and (2,2,0) in [0,4]^3: 4*4*2 + 2*2*4 - overlap 2*2*2 = 32 + 16 - 8 = 40.
        assert_eq!(hypervolume(&[vec![0.0, 0.0, 2.0], vec![2.0, 2.0, 0.0]], &[4.0, 4.0, 4.0]), 40.0);
        // Three unit-corner points of the unit cube's diagonal plane: inclusion-exclusion by hand.
        // (0,1,1),(1,0,1),(1,1,0) with ref (2,2,2): each box 2*1*1 = 2; pairwise overlaps 1*1*1 = 1; triple 1.
        let v = hypervolume(&[vec![0.0, 1.0, 1.0], vec![1.0, 0.0, 1.0], vec![1.0, 1.0, 0.0]], &[2.0, 2.0, 2.0]);
        assert_eq!(v, 3.0 * 2.0 - 3.0 * 1.0 + 1.0);
    }
}
