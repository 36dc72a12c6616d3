//! The kernel interface shared by HMC and Metropolis, and the typed statistics they report.

use candle_core::{DType, Tensor};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::point::{Coeffs, PartsDensity, Point, TargetOnly};
use crate::{McmcError, Result};
use fab_core::LogDensity;

/// Statistics of one kernel application to a batch of chains.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TransitionInfo {
    /// Number of chains (rows) in the batch.
    pub n_chains: usize,
    /// Fraction of proposals accepted.
    pub acceptance_rate: f64,
    /// Mean over proposals of min(1, α), with non-finite α counted as 0: the statistic that
    /// drives step-size adaptation (p̄ in docs/ALGORITHMS.md, "HMC and Metropolis").
    pub mean_accept_prob: f64,
    /// Mean over chains of ‖x′ − x‖ (0 for rejected proposals).
    pub mean_displacement: f64,
    /// Proposals rejected because their acceptance ratio was not finite (NaN/±∞ log-density,
    /// non-finite start point, ...).
    pub n_non_finite: usize,
    /// The step size that was used.
    pub step_size: f64,
}

impl TransitionInfo {
    /// Combines the statistics of consecutive updates of the same batch: rates and
    /// displacements are averaged, non-finite counts summed, the last step size kept.
    pub fn merge(infos: &[TransitionInfo]) -> TransitionInfo {
        let Some(last) = infos.last() else {
            return TransitionInfo::default();
        };
        let k = infos.len() as f64;
        TransitionInfo {
            n_chains: last.n_chains,
            acceptance_rate: infos.iter().map(|i| i.acceptance_rate).sum::<f64>() / k,
            mean_accept_prob: infos.iter().map(|i| i.mean_accept_prob).sum::<f64>() / k,
            mean_displacement: infos.iter().map(|i| i.mean_displacement).sum::<f64>() / k,
            n_non_finite: infos.iter().map(|i| i.n_non_finite).sum(),
            step_size: last.step_size,
        }
    }
}

/// A Markov kernel on batches (one chain per row) leaving the annealed density
/// log f = `coeffs.q`·log q + `coeffs.p`·log p invariant.
///
/// Kernels are stateless (`&self`); tunables such as the step size are passed per call and
/// adapted outside (see [`StepSizes`](crate::StepSizes)). Random numbers are drawn on the host
/// from `rng` (f64) and uploaded in the points' dtype.
pub trait TransitionKernel: Send + Sync + std::fmt::Debug {
    /// Whether [`step`](Self::step) needs gradients cached in the point.
    fn uses_grad(&self) -> bool;

    /// Evaluations of the density per [`step`](Self::step) call (leapfrog steps or updates).
    fn evaluations_per_step(&self) -> usize;

    /// Moves every chain once. Rejected rows keep their old cached values.
    ///
    /// # Errors
    /// [`McmcError::InvalidStepSize`], [`McmcError::MissingGradient`], shape or tensor faults.
    /// Never for non-finite points: those are rejected and counted.
    fn step(
        &self,
        density: &dyn PartsDensity,
        coeffs: Coeffs,
        point: Point,
        step_size: f64,
        rng: &mut dyn RngCore,
    ) -> Result<(Point, TransitionInfo)>;
}

pub(crate) fn check_step_size(eps: f64) -> Result<()> {
    if eps.is_finite() && eps > 0.0 {
        Ok(())
    } else {
        Err(McmcError::InvalidStepSize(eps))
    }
}

pub(crate) fn check_point(point: &Point, dim: usize) -> Result<usize> {
    Ok(fab_core::check_points(&point.x, dim)?)
}

/// Accept/reject decisions from host log acceptance ratios and Exp(1) draws: accept iff
/// log α is finite and log α > −E (≡ U < α). Returns (u8 mask, info without step size and
/// displacement).
pub(crate) fn decide(log_alpha: &[f64], exp1: &[f64]) -> (Vec<u8>, TransitionInfo) {
    let n = log_alpha.len();
    let mut mask = Vec::with_capacity(n);
    let (mut n_acc, mut n_bad, mut sum_p) = (0usize, 0usize, 0.0f64);
    for (la, e) in log_alpha.iter().zip(exp1) {
        if !la.is_finite() {
            n_bad += 1;
            mask.push(0u8);
            continue;
        }
        sum_p += la.min(0.0).exp();
        let acc = *la > -e;
        n_acc += usize::from(acc);
        mask.push(u8::from(acc));
    }
    let nf = n.max(1) as f64;
    let info = TransitionInfo {
        n_chains: n,
        acceptance_rate: n_acc as f64 / nf,
        mean_accept_prob: sum_p / nf,
        mean_displacement: 0.0,
        n_non_finite: n_bad,
        step_size: 0.0,
    };
    (mask, info)
}

/// Mean over rows of ‖a − b‖ for rows with `mask` set (0 for the others).
pub(crate) fn mean_displacement(a: &Tensor, b: &Tensor, mask: &[u8]) -> Result<f64> {
    let d = (a - b)?.sqr()?.sum(1)?.sqrt()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let s: f64 = d.iter().zip(mask).filter(|(_, m)| **m != 0).map(|(v, _)| *v).sum();
    Ok(s / mask.len().max(1) as f64)
}

/// Runs `n_steps` applications of `kernel` on a plain target from the points `x`, with a fixed
/// step size. Returns the final points and every step's statistics.
///
/// # Errors
/// As [`TransitionKernel::step`]; shape errors for `x`.
pub fn run_chain(
    kernel: &dyn TransitionKernel,
    target: &dyn LogDensity,
    x: &Tensor,
    n_steps: usize,
    step_size: f64,
    rng: &mut dyn RngCore,
) -> Result<(Tensor, Vec<TransitionInfo>)> {
    check_step_size(step_size)?;
    let density = TargetOnly(target);
    let mut point = density.evaluate(x, kernel.uses_grad())?;
    let mut infos = Vec::with_capacity(n_steps);
    for _ in 0..n_steps {
        let (p, info) = kernel.step(&density, Coeffs::TARGET, point, step_size, rng)?;
        point = p;
        infos.push(info);
    }
    Ok((point.x, infos))
}
