//! Many Well as a [`Target`]: exact samples, log Z, and its own metrics (mode-set
//! log-likelihood, the reference's grouped log Z errors, wells populated) and plots (pairwise
//! marginals of the first four coordinates). Definitions: `docs/ALGORITHMS.md`, "Evaluation
//! metrics".

use candle_core::{Device, Tensor};
use fab_core::stats::mean;
use fab_core::{ExactSample, LogDensity};
use fab_plot::PairwiseOptions;
use fab_sampler::{EvalContext, PlotContext, Target};

use crate::many_well::{log_p_x1, ManyWell};

/// The reference's interleaved-group estimator of Z: with N log-weights truncated to 50·⌊N/50⌋,
/// group j holds elements j, j+50, …; returns (mean_j |Ẑ_j/Z − 1|, mean_j |log Ẑ_j − log Z|).
pub fn grouped_z_errors(log_w: &[f64], log_z: f64) -> (f64, f64) {
    let g = 50;
    let n = (log_w.len() / g) * g;
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let (mut rel, mut abs) = (0.0, 0.0);
    for j in 0..g {
        let group: Vec<f64> = (j..n).step_by(g).map(|i| log_w[i]).collect();
        let lse = fab_core::stats::log_sum_exp(&group) - (group.len() as f64).ln();
        rel += ((lse - log_z).exp() - 1.0).abs();
        abs += (lse - log_z).abs();
    }
    (rel / g as f64, abs / g as f64)
}

/// Probability that one coordinate of a Many Well double well is positive, by quadrature.
fn p_positive() -> f64 {
    let (a, b, n) = (-4.0f64, 4.0f64, 80_000usize);
    let h = (b - a) / n as f64;
    let (mut pos, mut tot) = (0.0, 0.0);
    for i in 0..n {
        let x = a + (i as f64 + 0.5) * h;
        let p = log_p_x1(x).exp();
        tot += p;
        if x > 0.0 {
            pos += p;
        }
    }
    pos / tot
}

/// Expected number of distinct wells hit by `n` exact Many Well samples in `n_wells` double
/// wells: Σ_k C(W, k)·(1 − (1 − a^k (1−a)^{W−k})^n) with a = P(x > 0).
pub fn expected_wells_populated(n_wells: usize, n: usize) -> f64 {
    let a = p_positive();
    let mut total = 0.0;
    let mut binom = 1.0f64;
    for k in 0..=n_wells {
        if k > 0 {
            binom *= (n_wells - k + 1) as f64 / k as f64;
        }
        let pi = a.powi(k as i32) * (1.0 - a).powi((n_wells - k) as i32);
        total += binom * (1.0 - (1.0 - pi).powf(n as f64));
    }
    total
}

impl Target for ManyWell {
    fn density(&self) -> &dyn LogDensity {
        self
    }

    fn exact(&self) -> Option<&dyn ExactSample> {
        Some(self)
    }

    /// `test_set_exact_mean_log_prob` and `forward_kl` (the paper's names for the generic
    /// test-set metrics), `test_set_modes_mean_log_prob` (exact model density only), the
    /// grouped Z errors of every sample set (`relative_MSE_Z_estimate`, `abs_MSE_log_Z_estimate`
    /// for the model's own samples, prefixed by the set name for the others) and the share of
    /// the 2^(d/2) wells the model's samples populate, with its expectation under exact sampling.
    fn metrics(&self, ctx: &mut EvalContext<'_>) -> fab_sampler::Result<()> {
        let dtype = ctx.model.dtype();
        if let Some(test) = ctx.test {
            let lq = mean(&test.log_q);
            ctx.insert("test_set_exact_mean_log_prob", lq);
            if let Some(kl) = ctx.metrics.get("kl_forward").copied() {
                ctx.insert("forward_kl", kl);
            }
        }
        let modes = fab_core::to_f64_vec(&self.mode_test_set(ctx.rng).map_err(fab_sampler::Error::family)?)?;
        match ctx.model.log_prob(&modes) {
            Some(lq) => {
                let lq = lq?;
                ctx.insert("test_set_modes_mean_log_prob", mean(&lq));
            }
            None => ctx.note("test_set_modes_mean_log_prob", "the sampler has no exact density"),
        }
        let log_z = self.log_normalizer().unwrap_or(0.0);
        let first = ctx.sets.first().map(|s| s.name.clone());
        let sets: Vec<(String, Vec<f64>)> = ctx.sets.iter().map(|s| (s.name.clone(), s.samples.log_w.clone())).collect();
        for (name, lw) in sets {
            let prefix = if Some(&name) == first.as_ref() { String::new() } else { format!("{name}_") };
            let (rel, abs) = grouped_z_errors(&lw, log_z);
            ctx.insert(format!("{prefix}relative_MSE_Z_estimate"), rel);
            ctx.insert(format!("{prefix}abs_MSE_log_Z_estimate"), abs);
        }
        if let Some(s) = ctx.model_samples() {
            let n = s.len();
            let d = LogDensity::dim(self);
            let t = Tensor::from_slice(&s.x, (n, d), &Device::Cpu)?.to_dtype(dtype)?;
            let n_wells_total = 2f64.powi(self.n_wells() as i32);
            let frac = self.populated_well_fraction(&t).map_err(fab_sampler::Error::family)?;
            ctx.insert("wells_populated_fraction", frac);
            ctx.insert("wells_populated_fraction_expected", expected_wells_populated(self.n_wells(), n) / n_wells_total);
        }
        Ok(())
    }

    /// `<set>_marginals.png`: pairwise 2-D marginals of coordinates 1–4 of every sample set over
    /// the target's marginals (as the paper's Figure 11).
    fn plots(&self, ctx: &PlotContext<'_>) -> fab_sampler::Result<()> {
        let d = LogDensity::dim(self);
        if d < 4 {
            return Ok(());
        }
        // A pair (2i, 2i+1) is one double well; coordinates of different wells are
        // independent, so a 2-D marginal is the sum of 1-D log-marginals.
        let one_d = |k: usize, v: f64| -> f64 {
            if k.is_multiple_of(2) {
                log_p_x1(v)
            } else {
                -0.5 * v * v
            }
        };
        let marginal = |i: usize, j: usize, xi: f64, xj: f64| one_d(i, xi) + one_d(j, xj);
        for set in ctx.sets {
            let pts: Vec<Vec<f64>> = set.samples.x.chunks_exact(d).take(fab_sampler::run::MAX_PLOT_POINTS).map(<[f64]>::to_vec).collect();
            let label = if set.name == "ais" { "AIS".to_string() } else { set.name.clone() };
            fab_plot::pairwise_marginals(
                ctx.dir.join(format!("{}_marginals.png", set.name)),
                &format!("{}: {label} samples, coordinates 1–4", ctx.title),
                &marginal,
                [-3.0, 3.0],
                &pts,
                &[0, 1, 2, 3],
                &PairwiseOptions::default(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_estimator_is_exact_for_exact_weights() {
        let lw = vec![3.0; 1000];
        let (rel, abs) = grouped_z_errors(&lw, 3.0);
        assert!(rel.abs() < 1e-12 && abs.abs() < 1e-12);
        let (rel, abs) = grouped_z_errors(&lw, 3.0 + 2f64.ln());
        assert!((rel - 0.5).abs() < 1e-12 && (abs - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn expected_wells_for_one_sample_and_many() {
        // One sample populates exactly one well; infinitely many populate all of them.
        assert!((expected_wells_populated(16, 1) - 1.0).abs() < 1e-9);
        assert!((expected_wells_populated(2, 1_000_000) - 4.0).abs() < 1e-6);
        // P(x₁ > 0) = 0.845 (0.84514 measured on 50 000 exact samples, ±0.0016).
        assert!((p_positive() - 0.845).abs() < 0.002);
    }
}
