//! Random-walk Metropolis with Gaussian proposals (docs/ALGORITHMS.md, "HMC and Metropolis").

use candle_core::Tensor;
use fab_core::rng;
use rand::RngCore;
use rand_distr::{Distribution, Exp1};

use crate::kernel::{check_point, check_step_size, decide, mean_displacement};
use crate::point::{host, Coeffs, PartsDensity, Point};
use crate::{McmcError, Result, TransitionInfo, TransitionKernel};

/// Random-walk Metropolis: `n_updates` times, x′ = x + σ·N(0, I) and accept iff
/// Δ = log f(x′) − log f(x) is finite and Δ > −E, E ~ Exp(1) (≡ U < exp(Δ)).
///
/// As in the reference, a non-finite Δ (NaN, ±∞) rejects. Unlike the reference, which
/// compares `nan_to_num(exp(Δ))` to U and so maps an *overflowing* exp(Δ) (finite Δ > ~709 in
/// f64) to 0 and rejects, a finite Δ of any size is compared exactly; the "previous" log f is
/// refreshed after each update (the reference's stale value only matters for n_updates > 1).
///
/// Density evaluations per step: `n_updates` (values only, unless the point carries gradients,
/// which are then kept up to date). Randomness per update, in order: `n·d` standard normals, then
/// `n` Exp(1) draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metropolis {
    n_updates: usize,
}

impl Metropolis {
    /// `n_updates` ≥ 1 proposals per step (1 for the GMM).
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] for zero updates.
    pub fn new(n_updates: usize) -> Result<Self> {
        if n_updates == 0 {
            return Err(McmcError::InvalidConfig("Metropolis needs n_updates >= 1".into()));
        }
        Ok(Self { n_updates })
    }

    /// Number of updates per step.
    pub fn n_updates(&self) -> usize {
        self.n_updates
    }
}

impl TransitionKernel for Metropolis {
    fn uses_grad(&self) -> bool {
        false
    }

    fn evaluations_per_step(&self) -> usize {
        self.n_updates
    }

    fn step(
        &self,
        density: &dyn PartsDensity,
        coeffs: Coeffs,
        mut point: Point,
        step_size: f64,
        rng: &mut dyn RngCore,
    ) -> Result<(Point, TransitionInfo)> {
        check_step_size(step_size)?;
        let n = check_point(&point, density.dim())?;
        if n == 0 {
            return Ok((point, TransitionInfo { step_size, ..Default::default() }));
        }
        let with_grad = point.has_grad();
        let device = point.x.device().clone();
        let mut infos = Vec::with_capacity(self.n_updates);
        for _ in 0..self.n_updates {
            let noise = rng::randn(rng, point.x.shape(), point.x.dtype(), &device)?;
            let x_new = (&point.x + (noise * step_size)?)?;
            let cur = density.evaluate(&x_new, with_grad)?;
            let delta = (coeffs.log_f(&cur)? - coeffs.log_f(&point)?)?;
            let delta = host(&delta)?;
            let exp1: Vec<f64> = (0..n).map(|_| Exp1.sample(rng)).collect();
            let (mask, mut info) = decide(&delta, &exp1);
            info.step_size = step_size;
            info.mean_displacement = mean_displacement(&cur.x, &point.x, &mask)?;
            let mask_t = Tensor::from_vec(mask, n, &device)?;
            point = cur.select(&mask_t, &point)?;
            infos.push(info);
        }
        Ok((point, TransitionInfo::merge(&infos)))
    }
}
