//! Time-series diagnostics for the reference runs: integrated autocorrelation times, batch-means
//! standard errors and a χ² consistency test across independent runs.

/// Mean of a slice (NaN for an empty one).
pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Integrated autocorrelation time τ = 1 + 2Σ_{t=1}^{M} ρ(t) in units of the series' spacing,
/// with Sokal's automatic window: the smallest M with M ≥ c·τ(M), c = 5 (capped at N/4).
/// Returns (τ, M). A constant series gives τ = 1.
pub fn tau_int(x: &[f64]) -> (f64, usize) {
    let n = x.len();
    if n < 8 {
        return (f64::NAN, 0);
    }
    let m = mean(x);
    let d: Vec<f64> = x.iter().map(|v| v - m).collect();
    let c0 = d.iter().map(|v| v * v).sum::<f64>() / n as f64;
    if c0 == 0.0 {
        return (1.0, 0);
    }
    let mut tau = 1.0;
    let cap = n / 4;
    for t in 1..=cap {
        let ct = d[..n - t].iter().zip(&d[t..]).map(|(a, b)| a * b).sum::<f64>() / n as f64;
        tau += 2.0 * ct / c0;
        if t as f64 >= 5.0 * tau {
            return (tau, t);
        }
    }
    (tau, cap)
}

/// Standard error of the mean of a correlated series by non-overlapping batch means
/// (`n_batches` equal batches; the remainder at the end is dropped): sd(batch means)/√B.
pub fn batch_means_se(x: &[f64], n_batches: usize) -> f64 {
    let b = x.len() / n_batches.max(1);
    if n_batches < 2 || b == 0 {
        return f64::NAN;
    }
    let means: Vec<f64> = (0..n_batches).map(|i| mean(&x[i * b..(i + 1) * b])).collect();
    let mm = mean(&means);
    let var = means.iter().map(|v| (v - mm).powi(2)).sum::<f64>() / (n_batches - 1) as f64;
    (var / n_batches as f64).sqrt()
}

/// χ² = Σ_r (p_r − p̄)²/se_r² with p̄ the inverse-variance weighted mean; returns (χ², d.o.f.,
/// upper-tail p-value). Runs with se = 0 are skipped.
pub fn chi2_consistency(values: &[f64], ses: &[f64]) -> (f64, usize, f64) {
    let pairs: Vec<(f64, f64)> = values.iter().zip(ses).filter(|(_, s)| **s > 0.0).map(|(v, s)| (*v, *s)).collect();
    if pairs.len() < 2 {
        return (0.0, 0, 1.0);
    }
    let wsum: f64 = pairs.iter().map(|(_, s)| 1.0 / (s * s)).sum();
    let pbar = pairs.iter().map(|(v, s)| v / (s * s)).sum::<f64>() / wsum;
    let chi2: f64 = pairs.iter().map(|(v, s)| ((v - pbar) / s).powi(2)).sum();
    let dof = pairs.len() - 1;
    (chi2, dof, chi2_sf(chi2, dof))
}

/// Upper tail P(χ²_k > x) for integer k ≥ 1, from the closed forms
/// Q = e^{−x/2} Σ_{i<k/2} (x/2)^i/i! (k even) and Q = erfc(√(x/2)) + e^{−x/2} Σ_{i=1}^{(k−1)/2}
/// (x/2)^{i−1/2}/Γ(i+1/2) (k odd).
pub fn chi2_sf(x: f64, k: usize) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let h = x / 2.0;
    if k.is_multiple_of(2) {
        let mut term = 1.0;
        let mut s = 1.0;
        for i in 1..k / 2 {
            term *= h / i as f64;
            s += term;
        }
        (-h).exp() * s
    } else {
        // Γ(3/2) = √π/2; Γ(i + 1/2) = (i − 1/2)·Γ(i − 1/2).
        let mut s = 0.0;
        let mut gamma = std::f64::consts::PI.sqrt() / 2.0;
        for i in 1..=(k - 1) / 2 {
            if i > 1 {
                gamma *= i as f64 - 0.5;
            }
            s += h.powf(i as f64 - 0.5) / gamma;
        }
        erfc(h.sqrt()) + (-h).exp() * s
    }
}

/// Complementary error function (W. J. Cody's rational Chebyshev-free approximation via the
/// continued fraction for large x and the series for small x; |relative error| < 1e-13 in the
/// range used here).
pub fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf series: erf x = 2/√π Σ (−1)^n x^{2n+1}/(n!(2n+1)).
        let mut sum = 0.0f64;
        let mut term = x;
        let mut n = 0usize;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3 {
            sum += term / (2 * n + 1) as f64;
            n += 1;
            term *= -x * x / n as f64;
            if n > 200 {
                break;
            }
        }
        1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // Continued fraction erfc x = e^{−x²}/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …)))).
        let mut f = x;
        for k in (1..60).rev() {
            f = x + (k as f64 / 2.0) / f;
        }
        (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_and_chi2_tail_values() {
        // Reference values: erfc(0.5) = 0.4795001221869535, erfc(3) = 2.209049699858544e-5.
        assert!((erfc(0.5) - 0.4795001221869535).abs() < 1e-13);
        assert!((erfc(3.0) / 2.209049699858544e-5 - 1.0).abs() < 1e-10);
        // χ²₂ tail = e^{−x/2}; χ²₁ tail at 3.841458820694124 = 0.05; χ²₃ at 7.814727903251178 = 0.05.
        assert!((chi2_sf(3.0, 2) - (-1.5f64).exp()).abs() < 1e-15);
        assert!((chi2_sf(3.841458820694124, 1) - 0.05).abs() < 1e-10);
        assert!((chi2_sf(7.814727903251178, 3) - 0.05).abs() < 1e-10);
        assert!((chi2_sf(9.487729036781154, 4) - 0.05).abs() < 1e-10);
    }

    #[test]
    fn tau_of_an_ar1_series() {
        // AR(1) with coefficient a has τ = (1 + a)/(1 − a) = 9 for a = 0.8.
        let mut rng = fab_core::seeded_rng(1, 0);
        let e = fab_core::rng::normal_vec(&mut rng, 200_000);
        let mut x = vec![0.0; e.len()];
        for i in 1..x.len() {
            x[i] = 0.8 * x[i - 1] + e[i];
        }
        let (tau, _) = tau_int(&x);
        // The windowed estimator's relative standard error is ≈ √(2(2M+1)/N) ≈ 2.4 % here.
        assert!((tau - 9.0).abs() < 0.9, "{tau}");
        // Batch means agree with √(var·τ/N): var = 1/(1 − a²) = 2.78.
        let se = batch_means_se(&x, 20);
        let expect = (2.78 * 9.0 / 200_000.0f64).sqrt();
        // 20 batches: the SE estimate itself has ≈ 16 % relative error; allow 50 %.
        assert!((se / expect - 1.0).abs() < 0.5, "{se} vs {expect}");
    }
}
