//! Small numerically careful statistics on host vectors (log-sum-exp, effective sample size,
//! quantiles).

/// log Σ exp(vᵢ), ignoring `-inf` entries; `-inf` for an empty or all-`-inf` slice.
///
/// NaN entries propagate (the caller should drop them first).
pub fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    if m == f64::INFINITY {
        return f64::INFINITY;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Arithmetic mean (0 for an empty slice; NaN and ±∞ propagate).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Self-normalised weights softmax(log_w) over the finite entries; a non-finite entry (−∞, +∞,
/// NaN) gets weight 0, and all weights are 0 if no entry is finite. The project's one log-weight
/// normalisation (losses, importance-weighted metrics, weighted histograms).
pub fn normalized_weights(log_w: &[f64]) -> Vec<f64> {
    let finite: Vec<f64> = log_w.iter().copied().filter(|v| v.is_finite()).collect();
    let lse = log_sum_exp(&finite);
    log_w.iter().map(|l| if l.is_finite() && lse.is_finite() { (l - lse).exp() } else { 0.0 }).collect()
}

/// Effective sample size as a fraction of N: 1 / (N Σ w̄ᵢ²) with w̄ = softmax(log w).
///
/// Non-finite log-weights are removed first (N shrinks), as in the FAB reference. Returns 0 when
/// no finite weight remains.
pub fn effective_sample_size(log_w: &[f64]) -> f64 {
    let finite: Vec<f64> = log_w.iter().copied().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        return 0.0;
    }
    let w = normalized_weights(&finite);
    let s2: f64 = w.iter().map(|x| x * x).sum();
    1.0 / (finite.len() as f64 * s2)
}

/// log Ẑ = log mean exp(log w) over the finite entries (−∞ if none).
pub fn log_mean_exp(log_w: &[f64]) -> f64 {
    let finite: Vec<f64> = log_w.iter().copied().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        return f64::NEG_INFINITY;
    }
    log_sum_exp(&finite) - (finite.len() as f64).ln()
}

/// The q-quantile of the finite values, interpolated linearly between order statistics (numpy's
/// default rule); −∞ when no value is finite. `q` is clamped to [0, 1].
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NEG_INFINITY;
    }
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_numpy_linear_interpolation() {
        // numpy.quantile([3, 1, 4, 1, 5], q) for q = 0, 0.25, 0.5, 0.9, 1: 1, 1, 3, 4.6, 5.
        let v = [3.0, 1.0, 4.0, 1.0, 5.0, f64::NAN, f64::NEG_INFINITY];
        for (q, want) in [(0.0, 1.0), (0.25, 1.0), (0.5, 3.0), (0.9, 4.6), (1.0, 5.0)] {
            assert!((quantile(&v, q) - want).abs() < 1e-12, "q {q}: {}", quantile(&v, q));
        }
        assert_eq!(quantile(&[f64::NAN], 0.5), f64::NEG_INFINITY);
    }

    #[test]
    fn lse_is_stable_and_handles_infinities() {
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY]), f64::NEG_INFINITY);
        assert!((log_sum_exp(&[0.0, f64::NEG_INFINITY]) - 0.0).abs() < 1e-15);
    }

    #[test]
    fn normalized_weights_drop_non_finite_entries() {
        let w = normalized_weights(&[0.0, 2f64.ln(), f64::NAN, f64::NEG_INFINITY, f64::INFINITY]);
        assert!((w[0] - 1.0 / 3.0).abs() < 1e-15 && (w[1] - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(&w[2..], &[0.0, 0.0, 0.0]);
        assert_eq!(normalized_weights(&[f64::NAN]), vec![0.0]);
        // Large log-weights do not overflow (log-sum-exp near 1000 is exact to its ulp, 1.1e-13).
        let w = normalized_weights(&[1000.0, 1000.0]);
        assert!(w.iter().all(|v| (v - 0.5).abs() < 1e-12), "{w:?}");
    }

    #[test]
    fn ess_extremes() {
        // Equal weights: ESS = 1; one dominant weight: ESS = 1/N.
        assert!((effective_sample_size(&[0.3; 10]) - 1.0).abs() < 1e-12);
        let mut lw = vec![-1e3; 10];
        lw[3] = 0.0;
        assert!((effective_sample_size(&lw) - 0.1).abs() < 1e-12);
        // Non-finite entries are dropped.
        assert!((effective_sample_size(&[0.0, f64::NAN, 0.0, f64::NEG_INFINITY]) - 1.0).abs() < 1e-12);
        assert_eq!(effective_sample_size(&[f64::NAN]), 0.0);
    }
}
