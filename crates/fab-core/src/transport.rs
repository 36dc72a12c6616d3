//! Sample-comparison metrics between point clouds: exact optimal transport (W1, W2) through an
//! exact linear-assignment solver, and the multi-bandwidth RBF maximum mean discrepancy.
//!
//! A cloud is `&[f64]` holding rows of `dim` coordinates, row-major.

use rayon::prelude::*;

use crate::{Error, Result};

/// The default bandwidths of [`mmd_rbf`].
pub const MMD_SIGMAS: [f64; 5] = [0.01, 0.1, 1.0, 10.0, 100.0];

const NONE: usize = usize::MAX;

/// Exact minimum-cost perfect matching of the dense `n`×`n` row-major `cost` matrix: entry `i` of
/// the result is the column assigned to row `i`. O(n³) worst case; `n = 0` gives an empty vector.
pub fn linear_assignment(cost: &[f64], n: usize) -> Result<Vec<usize>> {
    let len = n.checked_mul(n).ok_or_else(|| Error::invalid(format!("linear_assignment: n = {n} is too large")))?;
    if cost.len() != len {
        return Err(Error::invalid(format!("linear_assignment: cost has {} entries, expected n*n = {len}", cost.len())));
    }
    let mut max_abs = 0.0f64;
    for (k, &c) in cost.iter().enumerate() {
        if !c.is_finite() {
            return Err(Error::invalid(format!("linear_assignment: cost[{}, {}] = {c} is not finite", k / n, k % n)));
        }
        max_abs = max_abs.max(c.abs());
    }
    check_magnitude("linear_assignment", max_abs, n)?;
    solve(n, |i| {
        let row = &cost[i * n..(i + 1) * n];
        move |j: usize| row[j]
    })
}

/// Exact 2-Wasserstein distance between the uniform empirical measures of two clouds of equal
/// size: √((1/n) Σᵢ ‖xᵢ − y_σ(i)‖²) for the optimal matching σ.
pub fn wasserstein2(x: &[f64], y: &[f64], dim: usize) -> Result<f64> {
    let total = matched_cost("wasserstein2", x, y, dim, true)?;
    Ok((total / (x.len() / dim) as f64).sqrt())
}

/// Exact 1-Wasserstein distance between the uniform empirical measures of two clouds of equal
/// size: (1/n) Σᵢ ‖xᵢ − y_σ(i)‖ for the optimal matching σ.
pub fn wasserstein1(x: &[f64], y: &[f64], dim: usize) -> Result<f64> {
    let total = matched_cost("wasserstein1", x, y, dim, false)?;
    Ok(total / (x.len() / dim) as f64)
}

/// Biased squared MMD with k(a, b) = Σₛ exp(−‖a − b‖² / (2s²)) over `sigmas`: mean k(x, x′) +
/// mean k(y, y′) − 2 mean k(x, y) over all pairs, i = j included (clamped at 0 against rounding).
/// The clouds may differ in size. Bit-identical for any number of rayon threads.
pub fn mmd_rbf(x: &[f64], y: &[f64], dim: usize, sigmas: &[f64]) -> Result<f64> {
    check_cloud("mmd_rbf", "x", x, dim)?;
    check_cloud("mmd_rbf", "y", y, dim)?;
    if sigmas.is_empty() {
        return Err(Error::invalid("mmd_rbf: sigmas is empty"));
    }
    let mut inv = Vec::with_capacity(sigmas.len());
    for &s in sigmas {
        let two_s2 = 2.0 * s * s;
        if !(s > 0.0) || !two_s2.is_normal() {
            return Err(Error::invalid(format!("mmd_rbf: bandwidth {s} must be positive with 2s² a finite nonzero f64")));
        }
        inv.push(1.0 / two_s2);
    }
    let (kxx, kyy, kxy) = (mean_kernel(x, x, dim, &inv), mean_kernel(y, y, dim, &inv), mean_kernel(x, y, dim, &inv));
    Ok((kxx + kyy - 2.0 * kxy).max(0.0))
}

/// Mean kernel value over all pairs (row of `a`, row of `b`): per-row sums in parallel, added in row order.
fn mean_kernel(a: &[f64], b: &[f64], dim: usize, inv: &[f64]) -> f64 {
    let rows: Vec<f64> = a
        .par_chunks_exact(dim)
        .map(|p| b.chunks_exact(dim).map(|q| inv.iter().map(|g| (-sq_dist(p, q) * g).exp()).sum::<f64>()).sum::<f64>())
        .collect();
    rows.iter().sum::<f64>() / ((a.len() / dim) as f64 * (b.len() / dim) as f64)
}

/// ‖p − q‖².
fn sq_dist(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum()
}

/// Validates a cloud (dim > 0, whole non-empty rows, finite coordinates).
fn check_cloud(func: &str, name: &str, pts: &[f64], dim: usize) -> Result<()> {
    if dim == 0 {
        return Err(Error::invalid(format!("{func}: dim must be positive")));
    }
    if pts.is_empty() || !pts.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!("{func}: {name} has {} values, expected a positive multiple of dim = {dim}", pts.len())));
    }
    if let Some(k) = pts.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!("{func}: {name}[{}, {}] = {} is not finite", k / dim, k % dim, pts[k])));
    }
    Ok(())
}

/// Refuses costs so large that the solver's potentials and path lengths (alternating sums of at
/// most 2n + 1 costs, plus a few potentials) could overflow f64.
fn check_magnitude(func: &str, max_abs: f64, n: usize) -> Result<()> {
    if !(max_abs * 16.0 * (n as f64 + 1.0)).is_finite() {
        return Err(Error::invalid(format!("{func}: costs up to {max_abs:e} are too large for exact f64 assignment with n = {n}")));
    }
    Ok(())
}

/// Σᵢ c(xᵢ, y_σ(i)) for the optimal σ, with c the squared (`squared`) or plain Euclidean distance.
fn matched_cost(func: &str, x: &[f64], y: &[f64], dim: usize, squared: bool) -> Result<f64> {
    check_cloud(func, "x", x, dim)?;
    check_cloud(func, "y", y, dim)?;
    if x.len() != y.len() {
        return Err(Error::invalid(format!("{func}: x has {} points but y has {}", x.len() / dim, y.len() / dim)));
    }
    let n = x.len() / dim;
    // Largest possible cost: the squared diagonal of the bounding box of both clouds.
    let diag2: f64 = (0..dim)
        .map(|d| {
            let coords = x.iter().chain(y).skip(d).step_by(dim);
            let (lo, hi) = coords.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            (hi - lo) * (hi - lo)
        })
        .sum();
    check_magnitude(func, if squared { diag2 } else { diag2.sqrt() }, n)?;
    let cost_row = |i: usize| {
        let p = &x[i * dim..(i + 1) * dim];
        move |j: usize| {
            let d2 = sq_dist(p, &y[j * dim..(j + 1) * dim]);
            if squared {
                d2
            } else {
                d2.sqrt()
            }
        }
    };
    let sigma = solve(n, cost_row)?;
    Ok(sigma.iter().enumerate().map(|(i, &j)| cost_row(i)(j)).sum())
}

/// Shortest augmenting paths with dual potentials (Jonker–Volgenant's augmentation, started from
/// the column reduction v_j = minᵢ c(i, j) alone).
///
/// Invariant: with column potentials v and, for a matched row i, u_i = c(i, col(i)) − v(col(i)),
/// every reduced cost c(i, j) − u_i − v_j of a matched row is ≥ 0 and 0 on its matched edge.
/// Each phase adds row r: Dijkstra over the reduced costs from r (u_r taken as 0) until it
/// reaches a free column at distance μ; lowering v_k by μ − d_k for every column k settled on the
/// way keeps the invariant and makes the whole path tight, and flipping the path matches r.
fn solve<R: Fn(usize) -> f64>(n: usize, cost_row: impl Fn(usize) -> R) -> Result<Vec<usize>> {
    let mut v = vec![0.0f64; n];
    let mut row_of = vec![NONE; n];
    let mut col_of = vec![NONE; n];
    let mut dist = vec![0.0f64; n];
    let mut pred = vec![0usize; n];
    // Columns; in a phase, order[..done] are settled and order[done..] are not.
    let mut order: Vec<usize> = (0..n).collect();
    for i in 0..n {
        let c = cost_row(i);
        for (j, vj) in v.iter_mut().enumerate() {
            *vj = if i == 0 { c(j) } else { vj.min(c(j)) };
        }
    }
    for r in 0..n {
        let mut best = NONE;
        let mut best_d = f64::INFINITY;
        let cost_r = cost_row(r);
        for (t, &j) in order.iter().enumerate() {
            dist[j] = cost_r(j) - v[j];
            pred[j] = r;
            if dist[j] < best_d {
                (best, best_d) = (t, dist[j]);
            }
        }
        let mut done = 0;
        let (sink, mu) = loop {
            if best == NONE {
                return Err(Error::invalid("linear_assignment: no finite augmenting path (numerical overflow)"));
            }
            order.swap(done, best);
            let j = order[done];
            let d = best_d;
            done += 1;
            let i = row_of[j];
            if i == NONE {
                break (j, d);
            }
            // Row i is reached at distance d through its tight edge (i, j): relax its other edges.
            let cost_i = cost_row(i);
            let offset = d - (cost_i(j) - v[j]);
            (best, best_d) = (NONE, f64::INFINITY);
            for (t, &k) in order.iter().enumerate().skip(done) {
                let nd = offset + cost_i(k) - v[k];
                if nd < dist[k] {
                    dist[k] = nd;
                    pred[k] = i;
                }
                if dist[k] < best_d {
                    (best, best_d) = (t, dist[k]);
                }
            }
        };
        for &k in &order[..done] {
            v[k] -= mu - dist[k];
        }
        let mut j = sink;
        loop {
            let i = pred[j];
            row_of[j] = i;
            let next = col_of[i];
            col_of[i] = j;
            if i == r {
                break;
            }
            j = next;
        }
    }
    Ok(col_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{normal_vec, seeded_rng};
    use rand::Rng;

    /// Minimum of Σ c(i, σ(i)) over all permutations σ (by recursion).
    fn brute_force(cost: &[f64], n: usize) -> f64 {
        fn go(cost: &[f64], n: usize, row: usize, used: &mut [bool], acc: f64) -> f64 {
            if row == n {
                return acc;
            }
            let mut best = f64::INFINITY;
            for j in 0..n {
                if !used[j] {
                    used[j] = true;
                    best = best.min(go(cost, n, row + 1, used, acc + cost[row * n + j]));
                    used[j] = false;
                }
            }
            best
        }
        go(cost, n, 0, &mut vec![false; n], 0.0)
    }

    fn is_permutation(p: &[usize]) -> bool {
        let mut seen = vec![false; p.len()];
        p.iter().all(|&j| j < p.len() && !std::mem::replace(&mut seen[j], true))
    }

    #[test]
    fn transport_assignment_matches_brute_force() {
        let mut rng = seeded_rng(11, 0);
        assert!(linear_assignment(&[], 0).unwrap().is_empty());
        for trial in 0..600 {
            let n = 1 + trial % 7;
            let cost: Vec<f64> = match trial % 3 {
                0 => (0..n * n).map(|_| rng.random_range(-5.0..5.0)).collect(),
                1 => (0..n * n).map(|_| rng.random_range(-3i32..=3) as f64).collect(), // many ties, negatives
                _ => (0..n * n).map(|_| rng.random_range(0i32..2) as f64 * 1e6 - 5e5).collect(),
            };
            let p = linear_assignment(&cost, n).unwrap();
            assert!(is_permutation(&p), "trial {trial}: {p:?}");
            let got: f64 = p.iter().enumerate().map(|(i, &j)| cost[i * n + j]).sum();
            let want = brute_force(&cost, n);
            assert!((got - want).abs() <= 1e-9 * (1.0 + want.abs()), "trial {trial} n {n}: {got} vs {want}");
        }
    }

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_by(f64::total_cmp);
        v
    }

    #[test]
    fn transport_1d_equals_sorted_matching() {
        let mut rng = seeded_rng(5, 1);
        let x = normal_vec(&mut rng, 500);
        let y: Vec<f64> = normal_vec(&mut rng, 500).iter().map(|v| 0.7 * v * v - 0.3).collect();
        let (xs, ys) = (sorted(x.clone()), sorted(y.clone()));
        let w2 = (xs.iter().zip(&ys).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / 500.0).sqrt();
        let w1 = xs.iter().zip(&ys).map(|(a, b)| (a - b).abs()).sum::<f64>() / 500.0;
        assert!((wasserstein2(&x, &y, 1).unwrap() - w2).abs() < 1e-12 * (1.0 + w2), "{w2}");
        assert!((wasserstein1(&x, &y, 1).unwrap() - w1).abs() < 1e-12 * (1.0 + w1), "{w1}");
    }

    #[test]
    fn transport_w2_of_translate_is_shift_norm() {
        let mut rng = seeded_rng(6, 2);
        let x = normal_vec(&mut rng, 2 * 300);
        let c = [0.3, -0.4];
        let y: Vec<f64> = x.iter().enumerate().map(|(k, v)| v + c[k % 2]).collect();
        assert!((wasserstein2(&x, &y, 2).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn transport_w2_zero_for_identical_and_permutation_invariant() {
        let mut rng = seeded_rng(7, 3);
        let (x, y) = (normal_vec(&mut rng, 3 * 200), normal_vec(&mut rng, 3 * 200));
        assert_eq!(wasserstein2(&x, &x, 3).unwrap(), 0.0);
        let mut rows: Vec<&[f64]> = y.chunks(3).collect();
        rows.reverse();
        rows.swap(3, 50);
        let y_perm: Vec<f64> = rows.concat();
        let (a, b) = (wasserstein2(&x, &y, 3).unwrap(), wasserstein2(&x, &y_perm, 3).unwrap());
        assert!(a > 0.1 && (a - b).abs() < 1e-12, "{a} vs {b}");
        // The matching must beat the identity pairing of two independent clouds.
        let identity = (x.iter().zip(&y).map(|(p, q)| (p - q) * (p - q)).sum::<f64>() / 200.0).sqrt();
        assert!(a < identity, "{a} vs {identity}");
    }

    fn naive_mmd(x: &[f64], y: &[f64], dim: usize, sigmas: &[f64]) -> f64 {
        let k = |a: &[f64], b: &[f64]| sigmas.iter().map(|s| (-sq_dist(a, b) / (2.0 * s * s)).exp()).sum::<f64>();
        let mean = |a: &[f64], b: &[f64]| {
            let mut s = 0.0;
            for p in a.chunks(dim) {
                for q in b.chunks(dim) {
                    s += k(p, q);
                }
            }
            s / ((a.len() / dim) * (b.len() / dim)) as f64
        };
        mean(x, x) + mean(y, y) - 2.0 * mean(x, y)
    }

    #[test]
    fn transport_mmd_properties() {
        let mut rng = seeded_rng(8, 4);
        let x = normal_vec(&mut rng, 3 * 7);
        let y: Vec<f64> = normal_vec(&mut rng, 3 * 5).iter().map(|v| 0.5 * v + 0.8).collect();
        assert_eq!(mmd_rbf(&x, &x, 3, &MMD_SIGMAS).unwrap(), 0.0);
        let (xy, yx) = (mmd_rbf(&x, &y, 3, &MMD_SIGMAS).unwrap(), mmd_rbf(&y, &x, 3, &MMD_SIGMAS).unwrap());
        let naive = naive_mmd(&x, &y, 3, &MMD_SIGMAS);
        assert!(xy > 0.05 && (xy - yx).abs() < 1e-12 && (xy - naive).abs() < 1e-12, "{xy} {yx} {naive}");
        let one = mmd_rbf(&x, &y, 3, &[1.0]).unwrap();
        assert!((one - naive_mmd(&x, &y, 3, &[1.0])).abs() < 1e-12 && one < xy);
        // Deterministic whatever the thread count.
        let (big_x, big_y) = (normal_vec(&mut rng, 2 * 400), normal_vec(&mut rng, 2 * 300));
        let run = |t: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            pool.install(|| mmd_rbf(&big_x, &big_y, 2, &MMD_SIGMAS).unwrap())
        };
        assert_eq!(run(1).to_bits(), run(3).to_bits());
    }

    #[test]
    fn transport_errors_are_clear() {
        let msg = |r: Result<f64>| r.unwrap_err().to_string();
        let e = linear_assignment(&[1.0, f64::NAN, 0.0, 2.0], 2).unwrap_err().to_string();
        assert!(e.contains("cost[0, 1]") && e.contains("not finite"), "{e}");
        assert!(linear_assignment(&[1.0; 5], 2).unwrap_err().to_string().contains("expected n*n = 4"));
        assert!(linear_assignment(&[1e307, 0.0, 0.0, 1.0], 2).unwrap_err().to_string().contains("too large"));
        assert!(msg(wasserstein2(&[0.0; 4], &[0.0; 6], 2)).contains("x has 2 points but y has 3"));
        assert!(msg(wasserstein2(&[0.0; 4], &[0.0; 4], 0)).contains("dim must be positive"));
        assert!(msg(wasserstein1(&[0.0; 5], &[0.0; 5], 2)).contains("multiple of dim"));
        assert!(msg(wasserstein1(&[], &[], 2)).contains("positive multiple"));
        assert!(msg(wasserstein2(&[0.0, 1.0], &[f64::INFINITY, 0.0], 1)).contains("y[0, 0] = inf is not finite"));
        assert!(msg(wasserstein2(&[0.0, 1e200], &[0.0, 0.0], 1)).contains("too large"));
        assert!(msg(mmd_rbf(&[0.0; 4], &[f64::NAN; 2], 2, &MMD_SIGMAS)).contains("not finite"));
        assert!(msg(mmd_rbf(&[0.0; 4], &[0.0; 2], 2, &[1.0, -1.0])).contains("bandwidth -1"));
        assert!(msg(mmd_rbf(&[0.0; 4], &[0.0; 2], 2, &[1e-200])).contains("bandwidth"));
        assert!(msg(mmd_rbf(&[0.0; 4], &[0.0; 2], 2, &[])).contains("sigmas is empty"));
    }
}
