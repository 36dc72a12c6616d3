//! Tiny dense linear algebra on row-major `f64` matrices (d ≤ a few hundred): LU with partial
//! pivoting, Householder QR, log|det|. Used for flow initialisation and for Jacobian tests.

/// LU decomposition with partial pivoting of a square row-major matrix: `A = P · L · U`.
#[derive(Debug, Clone)]
pub struct Lu {
    /// Dimension d.
    pub n: usize,
    /// Permutation matrix P (row-major, d×d).
    pub p: Vec<f64>,
    /// Unit lower-triangular L (row-major, d×d, ones on the diagonal).
    pub l: Vec<f64>,
    /// Upper-triangular U (row-major, d×d).
    pub u: Vec<f64>,
}

/// Computes `A = P L U` with partial pivoting (the convention of `torch.lu` + `lu_unpack`).
///
/// # Panics
/// If `a.len() != n * n`.
pub fn lu(a: &[f64], n: usize) -> Lu {
    assert_eq!(a.len(), n * n, "lu: matrix must be n×n");
    let mut m = a.to_vec();
    // perm[i] = original row now at position i.
    let mut perm: Vec<usize> = (0..n).collect();
    let mut l = vec![0.0; n * n];
    for k in 0..n {
        let piv = (k..n).max_by(|&i, &j| m[i * n + k].abs().total_cmp(&m[j * n + k].abs())).unwrap_or(k);
        if piv != k {
            for c in 0..n {
                m.swap(k * n + c, piv * n + c);
                l.swap(k * n + c, piv * n + c);
            }
            perm.swap(k, piv);
        }
        let d = m[k * n + k];
        for i in k + 1..n {
            let f = if d != 0.0 { m[i * n + k] / d } else { 0.0 };
            l[i * n + k] = f;
            for c in k..n {
                m[i * n + c] -= f * m[k * n + c];
            }
        }
    }
    for i in 0..n {
        l[i * n + i] = 1.0;
        for c in 0..i {
            m[i * n + c] = 0.0;
        }
    }
    // (P L U)[r] = row perm^{-1}... : row i of (L U) is original row perm[i], so A = P (L U)
    // with P[perm[i], i] = 1.
    let mut p = vec![0.0; n * n];
    for (i, &r) in perm.iter().enumerate() {
        p[r * n + i] = 1.0;
    }
    Lu { n, p, l, u: m }
}

/// log|det A| of a square row-major matrix (−∞ if singular).
pub fn log_abs_det(a: &[f64], n: usize) -> f64 {
    let f = lu(a, n);
    (0..n).map(|i| f.u[i * n + i].abs().ln()).sum()
}

/// Householder QR of a square row-major matrix; returns Q (row-major, orthogonal) such that
/// `A = Q R` with R upper triangular and `R_ii ≥ 0`... up to the sign convention of LAPACK
/// (diag of R may be negative, as in `torch.linalg.qr`).
pub fn qr_q(a: &[f64], n: usize) -> Vec<f64> {
    assert_eq!(a.len(), n * n, "qr: matrix must be n×n");
    let mut r = a.to_vec();
    let mut q = vec![0.0; n * n];
    for i in 0..n {
        q[i * n + i] = 1.0;
    }
    for k in 0..n.saturating_sub(1) {
        let norm: f64 = (k..n).map(|i| r[i * n + k].powi(2)).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        let alpha = if r[k * n + k] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = (k..n).map(|i| r[i * n + k]).collect();
        v[0] -= alpha;
        let vn: f64 = v.iter().map(|x| x * x).sum();
        if vn == 0.0 {
            continue;
        }
        // R ← (I − 2 v vᵀ / vᵀv) R
        for c in 0..n {
            let dot: f64 = (k..n).map(|i| v[i - k] * r[i * n + c]).sum();
            let f = 2.0 * dot / vn;
            for i in k..n {
                r[i * n + c] -= f * v[i - k];
            }
        }
        // Q ← Q (I − 2 v vᵀ / vᵀv)
        for row in 0..n {
            let dot: f64 = (k..n).map(|i| q[row * n + i] * v[i - k]).sum();
            let f = 2.0 * dot / vn;
            for i in k..n {
                q[row * n + i] -= f * v[i - k];
            }
        }
    }
    q
}

/// Row-major product of an (m×k) and a (k×n) matrix.
pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let aip = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += aip * b[p * n + j];
            }
        }
    }
    c
}

/// Inverse of a square row-major matrix by Gauss–Jordan with partial pivoting (`None` if
/// singular).
pub fn inverse(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut m = a.to_vec();
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for k in 0..n {
        let piv = (k..n).max_by(|&i, &j| m[i * n + k].abs().total_cmp(&m[j * n + k].abs()))?;
        if m[piv * n + k] == 0.0 {
            return None;
        }
        for c in 0..n {
            m.swap(k * n + c, piv * n + c);
            inv.swap(k * n + c, piv * n + c);
        }
        let d = m[k * n + k];
        for c in 0..n {
            m[k * n + c] /= d;
            inv[k * n + c] /= d;
        }
        for i in 0..n {
            if i != k {
                let f = m[i * n + k];
                if f != 0.0 {
                    for c in 0..n {
                        m[i * n + c] -= f * m[k * n + c];
                        inv[i * n + c] -= f * inv[k * n + c];
                    }
                }
            }
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [f64; 9] = [2.0, -1.0, 0.5, 4.0, 3.0, -2.0, -1.0, 0.25, 5.0];

    #[test]
    fn lu_reconstructs_and_pivots() {
        let f = lu(&A, 3);
        let plu = matmul(&matmul(&f.p, &f.l, 3, 3, 3), &f.u, 3, 3, 3);
        for (x, y) in plu.iter().zip(A.iter()) {
            assert!((x - y).abs() < 1e-12);
        }
        // Partial pivoting: |L_ij| ≤ 1.
        assert!(f.l.iter().all(|x| x.abs() <= 1.0 + 1e-15));
        // det A = 2(15+0.5) +1(20-2) +0.5(1+3) = 31 + 18 + 2 = 51.
        assert!((log_abs_det(&A, 3) - 51f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn qr_gives_orthogonal_q_and_inverse_works() {
        let q = qr_q(&A, 3);
        let mut qt = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                qt[j * 3 + i] = q[i * 3 + j];
            }
        }
        let qtq = matmul(&qt, &q, 3, 3, 3);
        for i in 0..3 {
            for j in 0..3 {
                let e = if i == j { 1.0 } else { 0.0 };
                assert!((qtq[i * 3 + j] - e).abs() < 1e-12);
            }
        }
        // R = Qᵀ A must be upper triangular.
        let r = matmul(&qt, &A, 3, 3, 3);
        assert!(r[3].abs() < 1e-12 && r[6].abs() < 1e-12 && r[7].abs() < 1e-12);
        let inv = inverse(&A, 3).unwrap();
        let id = matmul(&A, &inv, 3, 3, 3);
        for i in 0..3 {
            for j in 0..3 {
                let e = if i == j { 1.0 } else { 0.0 };
                assert!((id[i * 3 + j] - e).abs() < 1e-12);
            }
        }
    }
}
