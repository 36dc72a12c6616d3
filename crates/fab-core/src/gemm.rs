//! A safe wrapper around the `gemm` crate's matrix product (the one `unsafe` block behind every
//! hand-written CPU layer of fab-rs: the flows' fused path and the GFlowNet networks).
#![allow(unsafe_code)]

use num_traits::Float;

/// Element types [`matmul`] accepts (f32 and f64).
pub trait GemmFloat: Float + std::ops::AddAssign + Send + Sync + 'static {}
impl GemmFloat for f32 {}
impl GemmFloat for f64 {}

/// `c (m×n) = [c +] op(a) · op(b)` on row-major buffers, where `op(a)` is `a` (stored m×k) or,
/// with `ta`, its transpose (stored k×m); likewise `b` (k×n, or stored n×k with `tb`).
///
/// # Panics
/// If a buffer is shorter than its matrix (an internal invariant of the callers).
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: GemmFloat>(c: &mut [T], a: &[T], ta: bool, b: &[T], tb: bool, m: usize, k: usize, n: usize, accumulate: bool) {
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n, "matmul: buffer too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(T::zero());
        }
        return;
    }
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    // Below ~4 M multiply-adds the fork-join cost exceeds the gain (GMM: 128×80×80 ran slower
    // on 2 threads than on 1).
    let par = if m * n * k >= 1 << 22 && rayon::current_num_threads() > 1 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: the assertions above guarantee that every element addressed by the strides lies
    // inside the slices; `c` is borrowed mutably and so cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}

/// `out[j] += Σ_i g[i, j]` for a row-major `[n, w]` buffer (bias gradients).
pub fn column_sums_into<T: GemmFloat>(out: &mut [T], g: &[T]) {
    let w = out.len();
    for row in g.chunks_exact(w) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        crate::linalg::matmul(a, b, m, k, n)
    }

    fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
        let mut t = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = a[i * c + j];
            }
        }
        t
    }

    #[test]
    fn all_transpose_combinations_match_naive() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.91).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let aa = if ta { transpose(&a, m, k) } else { a.clone() };
            let bb = if tb { transpose(&b, k, n) } else { b.clone() };
            let mut c = vec![1.0; m * n];
            matmul(&mut c, &aa, ta, &bb, tb, m, k, n, true);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - 1.0 - y).abs() < 1e-12, "ta={ta} tb={tb}");
            }
            matmul(&mut c, &aa, ta, &bb, tb, m, k, n, false);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-12);
            }
        }
    }
}
