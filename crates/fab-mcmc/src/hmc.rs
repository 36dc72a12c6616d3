//! Hamiltonian Monte Carlo with unit mass, L leapfrog steps and one Metropolis test per
//! trajectory (docs/ALGORITHMS.md, "HMC and Metropolis").

use candle_core::Tensor;
use fab_core::rng;
use rand::RngCore;
use rand_distr::{Distribution, Exp1};

use crate::kernel::{check_point, check_step_size, decide, mean_displacement};
use crate::point::{host, Coeffs, PartsDensity, Point};
use crate::{McmcError, Result, TransitionInfo, TransitionKernel};

/// The reference's gradient clamp (`max_grad = 1e3`).
pub const DEFAULT_MAX_GRAD: f64 = 1e3;

/// HMC kernel: momentum p ~ N(0, I), K(p) = Σp²/2, `n_leapfrog` leapfrog steps with the gradient
/// of log f clamped to ±`max_grad` element-wise (NaN/±∞ entries set to 0), then
/// log α = [log f(x′) − K(p′)] − [log f(x) − K(p)]; accept iff log α is finite and
/// log α > −E with E ~ Exp(1) (≡ U < α).
///
/// Density evaluations per step: exactly `n_leapfrog` (value and gradient); the start point's
/// values come from the cache.
///
/// Randomness per step, in order: `n·d` standard normals (momenta, row-major), then `n` Exp(1)
/// draws (acceptance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hmc {
    n_leapfrog: usize,
    max_grad: f64,
}

impl Hmc {
    /// `n_leapfrog` ≥ 1 leapfrog steps per trajectory (5 for Many Well, 4 for ALDP).
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] for zero leapfrog steps.
    pub fn new(n_leapfrog: usize) -> Result<Self> {
        if n_leapfrog == 0 {
            return Err(McmcError::InvalidConfig("HMC needs n_leapfrog >= 1".into()));
        }
        Ok(Self { n_leapfrog, max_grad: DEFAULT_MAX_GRAD })
    }

    /// Replaces the gradient clamp (default 1e3).
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] unless `max_grad` is positive (∞ disables clamping).
    pub fn with_max_grad(mut self, max_grad: f64) -> Result<Self> {
        if max_grad.is_nan() || max_grad <= 0.0 {
            return Err(McmcError::InvalidConfig(format!("max_grad must be > 0, got {max_grad}")));
        }
        self.max_grad = max_grad;
        Ok(self)
    }

    /// Number of leapfrog steps L.
    pub fn n_leapfrog(&self) -> usize {
        self.n_leapfrog
    }

    /// The gradient clamp.
    pub fn max_grad(&self) -> f64 {
        self.max_grad
    }

    /// ∇log f with non-finite entries set to 0, then clamped to ±max_grad.
    fn clean_grad(&self, coeffs: &Coeffs, point: &Point) -> Result<Tensor> {
        let g = coeffs.grad_log_f(point)?;
        // |g| < ∞ is false exactly for NaN and ±∞ entries.
        let finite = g.abs()?.lt(f64::INFINITY)?;
        let g = if self.max_grad.is_finite() { g.clamp(-self.max_grad, self.max_grad)? } else { g };
        Ok(finite.where_cond(&g, &g.zeros_like()?)?)
    }
}

impl TransitionKernel for Hmc {
    fn uses_grad(&self) -> bool {
        true
    }

    fn evaluations_per_step(&self) -> usize {
        self.n_leapfrog
    }

    fn step(
        &self,
        density: &dyn PartsDensity,
        coeffs: Coeffs,
        point: Point,
        step_size: f64,
        rng: &mut dyn RngCore,
    ) -> Result<(Point, TransitionInfo)> {
        check_step_size(step_size)?;
        let n = check_point(&point, density.dim())?;
        if n == 0 {
            return Ok((point, TransitionInfo { step_size, ..Default::default() }));
        }
        let x0 = &point.x;
        let (dtype, device) = (x0.dtype(), x0.device().clone());
        let log_f0 = coeffs.log_f(&point)?;
        let grad0 = self.clean_grad(&coeffs, &point)?;

        let mom0 = rng::randn(rng, x0.shape(), dtype, &device)?;
        let k0 = (mom0.sqr()?.sum(1)? * 0.5)?;

        // Leapfrog with the inner half-kicks fused into full kicks (same arithmetic as
        // alternating half steps).
        let mut mom = (&mom0 + (grad0 * (0.5 * step_size))?)?;
        let mut x = x0.clone();
        let mut cur = point.clone();
        for l in 0..self.n_leapfrog {
            x = (&x + (&mom * step_size)?)?;
            cur = density.evaluate(&x, true)?;
            let g = self.clean_grad(&coeffs, &cur)?;
            let kick = if l + 1 == self.n_leapfrog { 0.5 * step_size } else { step_size };
            mom = (&mom + (g * kick)?)?;
        }
        let k1 = (mom.sqr()?.sum(1)? * 0.5)?;
        let log_f1 = coeffs.log_f(&cur)?;
        let log_alpha = ((log_f1 - k1)? - (log_f0 - k0)?)?;
        let log_alpha = host(&log_alpha)?;

        let exp1: Vec<f64> = (0..n).map(|_| Exp1.sample(rng)).collect();
        let (mask, mut info) = decide(&log_alpha, &exp1);
        info.step_size = step_size;
        info.mean_displacement = mean_displacement(&cur.x, x0, &mask)?;
        let mask_t = Tensor::from_vec(mask, n, &device)?;
        let new = cur.select(&mask_t, &point)?;
        Ok((new, info))
    }
}
