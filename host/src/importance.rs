//! Importance of FFN neurons and KV groups measured on calibration text, and the reordering that puts the
//! most important ones first (so that a sub-network keeping "the first k" keeps the best k).
//!
//! Scores (docs/SUPERNET.md, "Importance"):
//! - FFN neuron `j` of a layer: `mean_t |h_tj| * ||W_down[:, j]||_2`, where `h = silu(x W_gateᵀ) * (x W_upᵀ)` is
//!   the input of `ffn_down` and `t` runs over the calibration tokens. The activation term is Minitron's
//!   activation-based neuron importance (Muralidharan et al. 2024, "Compact Language Models via Pruning and
//!   Knowledge Distillation"), aggregated as the mean of `|h|` over all tokens; multiplying by the norm of
//!   the weights the neuron feeds makes it the magnitude of the neuron's contribution to the residual stream,
//!   as Wanda scores weights by `|W| * ||X||` (Sun et al. 2023, "A Simple and Effective Pruning Approach for
//!   Large Language Models").
//! - KV group `g` (KV head `g` with its `n_head/n_kv` query heads): `mean_t ||o_tg||_2 * ||W_o[:, g]||_F`,
//!   where `o_tg` is the group's attention output (the columns of its query heads, before `attn_output`) and
//!   `W_o[:, g]` the `attn_output` columns it feeds: the same two factors at the granularity of a head group
//!   (Minitron scores heads by the L2 norm of their attention output).
//!
//! Reordering (ggml order, `dims[0]` = row length; permutation `p`: new index `i` holds old index `p[i]`):
//! `ffn_gate`, `ffn_up` `[d, ffn]` rows; `ffn_down` `[ffn, d]` columns; `attn_k`, `attn_v` `[d, n_kv*hd]`
//! blocks of `hd` rows per KV head; `attn_q` `[d, n_head*hd]` blocks of `hd` rows per query head, query head
//! `i*g + r` (g = n_head/n_kv) taking old head `p[i]*g + r`; `attn_output` `[n_head*hd, d]` the same blocks of
//! columns. GQA pairs query head `j` with KV head `j / g` (llama.cpp), so moving each KV head with its `g`
//! query heads keeps the pairing, and RoPE acts within a head (llama.cpp's converter permutes `attn_q`/`attn_k`
//! rows only within each head), so the full network computes the same function.

use device_runtime::engine::ActivationObserver;

/// Definition of the FFN score, as recorded in `supernet.json`.
pub const FFN_SCORE: &str = "mean_t |silu(gate)*up|_j * ||ffn_down[:, j]||_2 (Minitron activation x weight norm)";
/// Definition of the FFN order with `--order obs`, as recorded in `supernet.json` (the scores are removal costs).
pub const FFN_OBS_SCORE: &str =
    "greedy structured OBS: removal cost ||W_down[:, j]||^2 / [(C + 0.01 mean(diag C) I)^-1]_jj with least-squares refit of the rest";
/// Definition of the KV-group score, as recorded in `supernet.json`.
pub const KV_SCORE: &str = "mean_t ||attn_out_t[group g]||_2 * ||attn_output[:, group g]||_F";

/// Shapes of one block as the observer needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockDims {
    /// FFN width (0: no FFN).
    pub n_ff: usize,
    /// Query heads (0: no attention).
    pub n_head: usize,
    /// KV heads.
    pub n_head_kv: usize,
    /// Head dimension.
    pub head_dim: usize,
}

/// Activation statistics of one block, summed over the tokens seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockStats {
    /// Per FFN neuron: sum over tokens of `|h_tj|`.
    pub ffn_abs_sum: Vec<f64>,
    /// Tokens counted in `ffn_abs_sum`.
    pub ffn_tokens: usize,
    /// Per KV group: sum over tokens of the L2 norm of the group's attention output.
    pub kv_norm_sum: Vec<f64>,
    /// Tokens counted in `kv_norm_sum`.
    pub kv_tokens: usize,
}

/// An [`ActivationObserver`] that accumulates [`BlockStats`] for every block.
#[derive(Clone, Debug)]
pub struct ActivationStats {
    dims: Vec<BlockDims>,
    /// One entry per block.
    pub blocks: Vec<BlockStats>,
}

impl ActivationStats {
    /// Empty statistics for blocks of the given shapes.
    pub fn new(dims: Vec<BlockDims>) -> ActivationStats {
        let blocks = dims
            .iter()
            .map(|d| BlockStats {
                ffn_abs_sum: vec![0.0; d.n_ff],
                kv_norm_sum: vec![0.0; if d.n_head > 0 { d.n_head_kv } else { 0 }],
                ..Default::default()
            })
            .collect();
        ActivationStats { dims, blocks }
    }

    /// Mean `|h_j|` per FFN neuron of block `layer` (zeros when no token was seen).
    pub fn ffn_mean_abs(&self, layer: usize) -> Vec<f64> {
        let b = &self.blocks[layer];
        b.ffn_abs_sum.iter().map(|s| s / b.ffn_tokens.max(1) as f64).collect()
    }

    /// Mean L2 norm of each KV group's attention output in block `layer`.
    pub fn kv_mean_norm(&self, layer: usize) -> Vec<f64> {
        let b = &self.blocks[layer];
        b.kv_norm_sum.iter().map(|s| s / b.kv_tokens.max(1) as f64).collect()
    }
}

impl ActivationObserver for ActivationStats {
    fn attention(&mut self, layer: usize, n_tokens: usize, att: &[f32]) {
        let (Some(d), Some(b)) = (self.dims.get(layer), self.blocks.get_mut(layer)) else { return };
        if d.n_head == 0 || d.n_head_kv == 0 {
            return;
        }
        let width = d.n_head / d.n_head_kv * d.head_dim;
        let row_len = d.n_head * d.head_dim;
        for row in att.chunks_exact(row_len).take(n_tokens) {
            for (g, s) in row.chunks_exact(width).zip(b.kv_norm_sum.iter_mut()) {
                *s += g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
            }
        }
        b.kv_tokens += n_tokens;
    }

    fn ffn_hidden(&mut self, layer: usize, n_tokens: usize, hidden: &[f32]) {
        let (Some(d), Some(b)) = (self.dims.get(layer), self.blocks.get_mut(layer)) else { return };
        if d.n_ff == 0 {
            return;
        }
        for row in hidden.chunks_exact(d.n_ff).take(n_tokens) {
            for (s, &x) in b.ffn_abs_sum.iter_mut().zip(row) {
                *s += x.abs() as f64;
            }
        }
        b.ffn_tokens += n_tokens;
    }
}

/// L2 norm of each column of a row-major matrix `[rows, cols]` (`data.len() == rows * cols`), grouped in
/// blocks of `block` consecutive columns (`block = 1`: per column): `out[c] = sqrt(sum over rows and the
/// block's columns of x^2)`, `cols / block` entries.
pub fn column_block_norms(data: &[f32], cols: usize, block: usize) -> Vec<f64> {
    let mut acc = vec![0f64; cols / block.max(1)];
    if cols == 0 || block == 0 {
        return acc;
    }
    for row in data.chunks_exact(cols) {
        for (c, &x) in row.iter().enumerate() {
            acc[c / block] += (x as f64) * (x as f64);
        }
    }
    acc.iter_mut().for_each(|a| *a = a.sqrt());
    acc
}

/// FFN neuron scores of one block: `mean_abs[j] * ||W_down[:, j]||_2`, with `ffn_down` given as its ggml data
/// (`[n_ff, d]` in ggml order: `d` rows of `n_ff` f32).
pub fn ffn_scores(mean_abs: &[f64], ffn_down: &[f32], n_ff: usize) -> Vec<f32> {
    let norms = column_block_norms(ffn_down, n_ff, 1);
    mean_abs.iter().zip(&norms).map(|(a, w)| (a * w) as f32).collect()
}

/// KV-group scores of one block: `mean_norm[g] * ||W_o[:, g]||_F`, with `attn_output` given as its ggml data
/// (`[n_head*hd, d]`: `d` rows of `n_head*hd` f32) and `group_cols = (n_head/n_kv) * hd` columns per group.
pub fn kv_scores(mean_norm: &[f64], attn_output: &[f32], n_head_hd: usize, group_cols: usize) -> Vec<f32> {
    let norms = column_block_norms(attn_output, n_head_hd, group_cols);
    mean_norm.iter().zip(&norms).map(|(a, w)| (a * w) as f32).collect()
}

/// The permutation that sorts `scores` in descending order (ties keep the lower index first; NaN last):
/// `p[i]` is the old index of the `i`-th most important unit.
pub fn descending_order(scores: &[f32]) -> Vec<usize> {
    let mut p: Vec<usize> = (0..scores.len()).collect();
    let key = |i: usize| if scores[i].is_nan() { f32::NEG_INFINITY } else { scores[i] };
    p.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    p
}

/// Reconstruction-aware FFN neuron order by greedy structured OBS (the column-removal rule of Optimal Brain
/// Surgeon / OBC as ZipLM and SlimGPT use it for structured pruning; Frantar & Alistarh 2022, "Optimal Brain
/// Compression", eq. 3-4): starting from all `n` neurons, repeatedly remove the neuron `j` whose removal, with the
/// remaining columns of `ffn_down` refit by least squares, raises the layer's output error the least,
/// `cost_j = ||W[:, j]||² / [H]_jj` with `H = (C + lambda I)^-1` restricted to the neurons still kept, then
/// update `W -= W[:, j] H[j, :] / H_jj` and `H -= H[:, j] H[j, :] / H_jj`. The neurons in reverse order of
/// removal: every prefix is the greedy choice for the reconstruction [`crate::reconstruct`] then applies.
///
/// `w`: `ffn_down` as `d` rows of `n` f32 (ggml `[n, d]`); `c`: the second-moment matrix of its input
/// (`n x n` row-major, base order); `damp`: relative damping (`lambda = damp * mean(diag C)`). Returns the
/// permutation (new index -> old neuron) and, per new index, the cost at which that neuron was removed (the
/// most important neuron, never removed, gets `f32::MAX`, as JSON has no infinity). Cost `O(n³ + d n²)` in f64.
///
/// Errors: a statistic that is singular after damping (message from the Cholesky factorization).
pub fn obs_ffn_order(w: &[f32], d: usize, n: usize, c: &[f32], damp: f64) -> Result<(Vec<usize>, Vec<f32>), String> {
    assert_eq!(w.len(), d * n, "obs_ffn_order: weights");
    assert_eq!(c.len(), n * n, "obs_ffn_order: statistic");
    // H = (C + lambda I)^-1 = L^-T L^-1 from the damped Cholesky inverse.
    let (linv, _) = crate::reconstruct::damped_cholesky_inverse(c, n, damp).map_err(|e| format!("{e:#}"))?;
    let mut h = vec![0f64; n * n];
    // H[i][j] = sum_k Linv[k][i] Linv[k][j], k >= max(i, j).
    for k in 0..n {
        let row = &linv[k * n..k * n + k + 1];
        for i in 0..=k {
            let a = row[i] as f64;
            if a == 0.0 {
                continue;
            }
            let hi = &mut h[i * n..i * n + k + 1];
            for (x, &b) in hi.iter_mut().zip(row) {
                *x += a * b as f64;
            }
        }
    }
    let mut wt: Vec<f64> = vec![0.0; n * d]; // column-major W: wt[j*d + r] = W[r][j]
    for r in 0..d {
        for j in 0..n {
            wt[j * d + r] = w[r * n + j] as f64;
        }
    }
    let mut alive = vec![true; n];
    let mut removed = Vec::with_capacity(n);
    let mut costs = Vec::with_capacity(n);
    for _ in 0..n.saturating_sub(1) {
        let mut best = (f64::INFINITY, usize::MAX);
        for j in 0..n {
            if !alive[j] {
                continue;
            }
            let hjj = h[j * n + j];
            let norm: f64 = wt[j * d..(j + 1) * d].iter().map(|x| x * x).sum();
            let cost = if hjj > 0.0 { norm / hjj } else { f64::INFINITY };
            if cost < best.0 || best.1 == usize::MAX {
                best = (cost, j);
            }
        }
        let (cost, j) = best;
        let hjj = h[j * n + j];
        if hjj > 0.0 {
            let hj: Vec<f64> = h[j * n..(j + 1) * n].to_vec();
            let wj: Vec<f64> = wt[j * d..(j + 1) * d].to_vec();
            for k in 0..n {
                if !alive[k] || hj[k] == 0.0 {
                    continue;
                }
                let f = hj[k] / hjj;
                for (x, &y) in wt[k * d..(k + 1) * d].iter_mut().zip(&wj) {
                    *x -= f * y;
                }
                for (x, &y) in h[k * n..(k + 1) * n].iter_mut().zip(&hj) {
                    *x -= f * y;
                }
            }
        }
        alive[j] = false;
        removed.push(j);
        costs.push((cost as f32).min(f32::MAX));
    }
    if let Some(last) = (0..n).find(|&j| alive[j]) {
        removed.push(last);
        costs.push(f32::MAX);
    }
    removed.reverse();
    costs.reverse();
    Ok((removed, costs))
}

/// The query-head permutation that moves each query head with its KV group: with `g` query heads per group,
/// new head `i*g + r` is old head `kv_perm[i]*g + r`.
pub fn query_head_order(kv_perm: &[usize], g: usize) -> Vec<usize> {
    kv_perm.iter().flat_map(|&k| (0..g).map(move |r| k * g + r)).collect()
}

/// Reorder the rows of a row-major matrix (`row_len` f32 per row) in blocks of `block` rows: new block `i`
/// is old block `perm[i]`. `data.len()` must be `perm.len() * block * row_len`.
pub fn permute_rows(data: &[f32], row_len: usize, block: usize, perm: &[usize]) -> Vec<f32> {
    let chunk = row_len * block;
    assert_eq!(data.len(), perm.len() * chunk, "permute_rows: data does not match the permutation");
    let mut out = Vec::with_capacity(data.len());
    for &p in perm {
        out.extend_from_slice(&data[p * chunk..(p + 1) * chunk]);
    }
    out
}

/// Reorder the columns of every row of a row-major matrix in blocks of `block` columns: in each row, new
/// block `i` is old block `perm[i]`. `data.len()` must be a multiple of `perm.len() * block`.
pub fn permute_cols(data: &[f32], block: usize, perm: &[usize]) -> Vec<f32> {
    let row_len = perm.len() * block;
    assert!(row_len > 0 && data.len() % row_len == 0, "permute_cols: data does not match the permutation");
    let mut out = Vec::with_capacity(data.len());
    for row in data.chunks_exact(row_len) {
        for &p in perm {
            out.extend_from_slice(&row[p * block..(p + 1) * block]);
        }
    }
    out
}

/// Apply one layer's order to tensor `kind` of that block (`ffn_gate`, `ffn_up`, `ffn_down`, `attn_q`,
/// `attn_k`, `attn_v`, `attn_output`; ggml data as f32, shapes as in the module doc). Other kinds (norms)
/// are returned unchanged. `ffn_perm` / `kv_perm` as in `supernet.json`; `g` query heads per KV group.
///
/// Panics if the data does not match the permutation (the caller checked the shapes).
pub fn reorder_tensor(kind: &str, data: Vec<f32>, ffn_perm: &[usize], kv_perm: &[usize], g: usize, hd: usize) -> Vec<f32> {
    let identity = |p: &[usize]| p.iter().enumerate().all(|(i, &x)| i == x);
    match kind {
        "ffn_gate" | "ffn_up" if !identity(ffn_perm) => {
            let row_len = data.len() / ffn_perm.len();
            permute_rows(&data, row_len, 1, ffn_perm)
        }
        "ffn_down" if !identity(ffn_perm) => permute_cols(&data, 1, ffn_perm),
        "attn_k" | "attn_v" if !identity(kv_perm) => {
            let row_len = data.len() / (kv_perm.len() * hd);
            permute_rows(&data, row_len, hd, kv_perm)
        }
        "attn_q" if !identity(kv_perm) => {
            let q = query_head_order(kv_perm, g);
            let row_len = data.len() / (q.len() * hd);
            permute_rows(&data, row_len, hd, &q)
        }
        "attn_output" if !identity(kv_perm) => permute_cols(&data, hd, &query_head_order(kv_perm, g)),
        _ => data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descending_order_by_hand() {
        assert_eq!(descending_order(&[0.5, 2.0, 1.0, 2.0]), vec![1, 3, 2, 0]);
        assert_eq!(descending_order(&[f32::NAN, 1.0, 0.0]), vec![1, 2, 0]);
        assert_eq!(descending_order(&[]), Vec::<usize>::new());
    }

    #[test]
    fn query_heads_move_with_their_group() {
        // 3 KV groups of 3 query heads (SmolLM2-135M: 9 heads, 3 KV heads).
        assert_eq!(query_head_order(&[2, 0, 1], 3), vec![6, 7, 8, 0, 1, 2, 3, 4, 5]);
        assert_eq!(query_head_order(&[1, 0], 1), vec![1, 0]);
    }

    #[test]
    fn permutations_by_hand() {
        // 3 rows of 2: [[0,1],[2,3],[4,5]].
        let m = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(permute_rows(&m, 2, 1, &[2, 0, 1]), vec![4.0, 5.0, 0.0, 1.0, 2.0, 3.0]);
        assert_eq!(permute_cols(&m, 1, &[1, 0]), vec![1.0, 0.0, 3.0, 2.0, 5.0, 4.0]);
        // 2 rows of 4 columns in blocks of 2.
        let m = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        assert_eq!(permute_cols(&m, 2, &[1, 0]), vec![2.0, 3.0, 0.0, 1.0, 6.0, 7.0, 4.0, 5.0]);
        assert_eq!(permute_rows(&m, 2, 2, &[1, 0]), vec![4.0, 5.0, 6.0, 7.0, 0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn scores_by_hand() {
        // ffn_down [n_ff=2, d=2] ggml: rows (d) of n_ff: [[3, 0], [4, 1]] -> column norms 5 and 1.
        let s = ffn_scores(&[0.5, 2.0], &[3.0, 0.0, 4.0, 1.0], 2);
        assert_eq!(s, vec![2.5, 2.0]);
        // attn_output with 2 groups of 2 columns, 1 row: [1, 2, 2, 0] -> group norms 3*... sqrt(5), 2.
        let s = kv_scores(&[1.0, 3.0], &[1.0, 2.0, 2.0, 0.0], 4, 2);
        assert!((s[0] - 5f32.sqrt()).abs() < 1e-6 && s[1] == 6.0, "{s:?}");
    }

    /// Three neurons, one output: h2 = h0 exactly (C singular but for the damping), W = [1, 0.1, 1]. Removing
    /// neuron 0 costs almost nothing (neuron 2 takes its weight: 2), so it goes first although |W| is largest
    /// (ties go to the lower index); then neuron 1 (weight 0.1, uncorrelated, cost 0.01) before neuron 2.
    #[test]
    fn obs_order_by_hand() {
        let c = [1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let (order, costs) = obs_ffn_order(&[1.0, 0.1, 1.0], 1, 3, &c, 1e-6).unwrap();
        assert_eq!(order, vec![2, 1, 0]);
        assert!(costs[2] < 1e-3 && (costs[1] - 0.01).abs() < 1e-3 && costs[0] == f32::MAX, "{costs:?}");
        // Magnitude-based scores would drop neuron 1 first and keep 0 and 2 (no refit could save the 0.1).
        let (order, _) = obs_ffn_order(&[1.0, 0.1, 1.0], 1, 3, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], 1e-6).unwrap();
        assert_eq!(order[2], 1);
    }

    #[test]
    fn observer_accumulates() {
        let mut st = ActivationStats::new(vec![BlockDims { n_ff: 2, n_head: 2, n_head_kv: 1, head_dim: 1 }]);
        st.ffn_hidden(0, 2, &[1.0, -2.0, 3.0, 0.0]);
        assert_eq!(st.ffn_mean_abs(0), vec![2.0, 1.0]);
        // One group of 2 query heads (hd 1): rows [3, 4] and [0, 0] -> norms 5 and 0.
        st.attention(0, 2, &[3.0, 4.0, 0.0, 0.0]);
        assert_eq!(st.kv_mean_norm(0), vec![2.5]);
        // An out-of-range layer is ignored.
        st.ffn_hidden(5, 1, &[1.0]);
    }

    /// A tiny attention block computed by hand with and without a KV-group permutation gives the same
    /// output: o = W_o · concat_j(v_{j/g}) with one token (softmax weight 1), so only head pairing matters.
    #[test]
    fn reordering_keeps_a_gqa_block_function() {
        let (d, hd, n_kv, g) = (2usize, 2usize, 2usize, 2usize);
        let nh = n_kv * g;
        let x = [0.3f32, -1.2];
        let wv: Vec<f32> = (0..n_kv * hd * d).map(|i| (i as f32 * 0.37).sin()).collect(); // [d, n_kv*hd]
        let wo: Vec<f32> = (0..d * nh * hd).map(|i| (i as f32 * 0.71).cos()).collect(); // [nh*hd, d]
        let out = |wv: &[f32], wo: &[f32]| -> Vec<f32> {
            let v: Vec<f32> = (0..n_kv * hd).map(|r| (0..d).map(|c| wv[r * d + c] * x[c]).sum()).collect();
            let att: Vec<f32> = (0..nh * hd).map(|i| v[(i / hd) / g * hd + i % hd]).collect();
            (0..d).map(|r| (0..nh * hd).map(|c| wo[r * nh * hd + c] * att[c]).sum()).collect()
        };
        let perm = [1usize, 0];
        let wv2 = reorder_tensor("attn_v", wv.clone(), &[], &perm, g, hd);
        let wo2 = reorder_tensor("attn_output", wo.clone(), &[], &perm, g, hd);
        assert_ne!(wv, wv2);
        let (a, b) = (out(&wv, &wo), out(&wv2, &wo2));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }
}
