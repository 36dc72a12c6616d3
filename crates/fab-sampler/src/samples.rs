//! Samples with importance log-weights: what every sampler family hands to evaluation.
//!
//! A sampler draws points x with a log proposal density log q(x) — exact for a flow, a
//! path-based estimate log P_F(τ) − log P_B(τ | x) for a diffusion sampler or a GFlowNet, the
//! AIS log-weight correction for AIS — and the importance log-weight against the unnormalised
//! target is log w = log p̃(x) − log q(x). One code path evaluates all of them
//! (`docs/ALGORITHMS.md`, "Evaluation metrics").

use candle_core::{DType, Device, Tensor};
use fab_core::LogDensity;

use crate::Result;

/// Points per call of a target or model inside evaluation (bounds memory).
pub const HOST_CHUNK: usize = 8192;

/// Points drawn by a sampler, with their log proposal density.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draws {
    /// Row-major points `[n, dim]`.
    pub x: Vec<f64>,
    /// Dimension of one point.
    pub dim: usize,
    /// log q of each point (exact or a path estimate; see [`Draws::exact_log_q`]).
    pub log_q: Vec<f64>,
    /// Whether `log_q` is the exact marginal density of the sampler (flows) rather than a
    /// path-based estimate whose expectation bounds it (diffusion samplers, GFlowNets).
    pub exact_log_q: bool,
}

impl Draws {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.log_q.len()
    }

    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.log_q.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }

    /// Weights the draws against `density` (evaluated in `dtype` on the host):
    /// log w = log p̃(x) − log q(x).
    pub fn weigh(self, density: &dyn LogDensity, dtype: DType) -> Result<WeightedSamples> {
        let log_p = log_prob_host(density, &self.x, self.dim, dtype)?;
        let log_w = log_p.iter().zip(&self.log_q).map(|(p, q)| p - q).collect();
        let n_drawn = self.len();
        Ok(WeightedSamples { x: self.x, dim: self.dim, log_w, n_drawn })
    }
}

/// Points with importance log-weights against the (unnormalised) target.
///
/// `n_drawn` counts every draw, including draws that were discarded (e.g. AIS chains that hit a
/// non-finite density): a discarded draw has weight zero, so the log-normaliser estimate divides
/// by `n_drawn`, not by the number of points kept (see [`log_z_hat`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightedSamples {
    /// Row-major points `[len, dim]`.
    pub x: Vec<f64>,
    /// Dimension of one point.
    pub dim: usize,
    /// Importance log-weights log p̃ − log q (may hold −∞ or NaN for points outside the support).
    pub log_w: Vec<f64>,
    /// Draws made to obtain these points (≥ `log_w.len()`).
    pub n_drawn: usize,
}

impl WeightedSamples {
    /// Number of points kept.
    pub fn len(&self) -> usize {
        self.log_w.len()
    }

    /// Whether no point was kept.
    pub fn is_empty(&self) -> bool {
        self.log_w.is_empty()
    }

    /// Appends another batch of the same dimension.
    pub fn extend(&mut self, other: WeightedSamples) {
        if self.dim == 0 {
            self.dim = other.dim;
        }
        self.x.extend(other.x);
        self.log_w.extend(other.log_w);
        self.n_drawn += other.n_drawn;
    }

    /// The importance-sampling estimate of log Z from these weights ([`log_z_hat`]).
    pub fn log_z_hat(&self) -> f64 {
        log_z_hat(&self.log_w, self.n_drawn)
    }

    /// Effective sample size as a fraction of the finite weights
    /// ([`fab_core::stats::effective_sample_size`]).
    pub fn ess(&self) -> f64 {
        fab_core::stats::effective_sample_size(&self.log_w)
    }

    /// Share of the draws that were kept with a finite weight.
    pub fn fraction_finite(&self) -> f64 {
        self.log_w.iter().filter(|v| v.is_finite()).count() as f64 / self.n_drawn.max(1) as f64
    }
}

/// The project's one estimator of log Z from importance log-weights:
/// log Ẑ = log( (1/N) Σᵢ wᵢ ) with N = `n_drawn`, where non-finite weights (and draws that were
/// discarded before they got a weight) count as wᵢ = 0. This is the unbiased estimator of Z; it
/// differs from a log-mean over the finite weights only when draws were lost.
pub fn log_z_hat(log_w: &[f64], n_drawn: usize) -> f64 {
    let finite: Vec<f64> = log_w.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() || n_drawn == 0 {
        return f64::NEG_INFINITY;
    }
    fab_core::stats::log_sum_exp(&finite) - (n_drawn as f64).ln()
}

/// A set of weighted samples with the name its metrics are reported under (`"flow"`, `"ais"`).
#[derive(Debug, Clone, Default)]
pub struct NamedSamples {
    /// Name used in metric keys (`eval_ess_<name>`, `<name>_log_z_estimate`, …).
    pub name: String,
    /// The samples.
    pub samples: WeightedSamples,
    /// Whether this set is the sampler's best estimate of the target (AIS for FAB); its log Z
    /// error is also reported under the plain key `log_z_abs_error`.
    pub primary: bool,
}

/// log-density of host rows `[n, dim]`, evaluated in `dtype` in chunks of [`HOST_CHUNK`].
pub fn log_prob_host(density: &dyn LogDensity, xs: &[f64], dim: usize, dtype: DType) -> Result<Vec<f64>> {
    let d = dim.max(1);
    let mut out = Vec::with_capacity(xs.len() / d);
    for chunk in xs.chunks(HOST_CHUNK * d) {
        let t = Tensor::from_slice(chunk, (chunk.len() / d, d), &Device::Cpu)?.to_dtype(dtype)?;
        out.extend(fab_core::to_f64_vec(&density.log_prob(&t)?)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_z_hat_divides_by_every_draw() {
        // Four draws of weight 1 each: Ẑ = 1.
        assert!(log_z_hat(&[0.0; 4], 4).abs() < 1e-15);
        // The same four weights after two further draws were discarded: Ẑ = 4/6.
        assert!((log_z_hat(&[0.0; 4], 6) - (4.0f64 / 6.0).ln()).abs() < 1e-15);
        // A non-finite weight counts as zero, not as a missing draw.
        let lw = [0.0, f64::NEG_INFINITY, f64::NAN, 0.0];
        assert!((log_z_hat(&lw, 4) - 0.5f64.ln()).abs() < 1e-15);
        assert_eq!(log_z_hat(&[], 0), f64::NEG_INFINITY);
        assert_eq!(log_z_hat(&[f64::NAN], 1), f64::NEG_INFINITY);
    }

    #[test]
    fn log_z_hat_is_unbiased_when_draws_are_lost() {
        // Target: uniform on [0, 1] (Z = 1) with p̃ = 1; proposal uniform on [0, 2]: half the
        // draws fall outside the support and are discarded. Dividing by the kept draws would
        // estimate Z = 2; dividing by all draws gives 1.
        use rand::Rng;
        let mut rng = fab_core::seeded_rng(7, 0);
        let n = 100_000;
        let mut kept = Vec::new();
        for _ in 0..n {
            let x: f64 = rng.random::<f64>() * 2.0;
            if x <= 1.0 {
                kept.push(0.0 - 0.5f64.ln()); // log p̃ − log q = 0 − log(1/2)
            }
        }
        let z = log_z_hat(&kept, n).exp();
        // Binomial standard error of the kept share: sqrt(0.25/n)·2 ≈ 0.0032; 5σ.
        assert!((z - 1.0).abs() < 0.016, "Ẑ = {z}");
        let z_kept = log_z_hat(&kept, kept.len()).exp();
        assert!((z_kept - 2.0).abs() < 1e-12);
    }
}
