//! Metropolis-adjusted Langevin (MALA) with a shared, adapted step, as the local search of the
//! diffusion samplers (docs/DIFFUSION.md, "Local search").
//!
//! Proposal x′ = x + η∇log p̃(x) + √(2η)ξ, accepted with probability
//! min(1, p̃(x′)q(x | x′) / (p̃(x)q(x′ | x))), log q(b | a) = −‖b − a − η∇log p̃(a)‖² / (4η).
//! One step η for the whole batch, adapted after every iteration toward the acceptance rate
//! `target_accept` by one of two schedules ([`MalaSchedule`]). Accepted proposals after the
//! burn-in are collected (they are what a replay buffer receives).

use candle_core::{DType, Device, Tensor};
use fab_core::LogDensity;
use rand::{Rng, RngCore};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::{McmcError, Result};

/// How the step η adapts after each iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalaSchedule {
    /// The reference code: η ×1.01 if the acceptance rate over the last 5 iterations exceeds
    /// the target, else ×0.99.
    Code,
    /// The paper's text: η ×1.1 if this iteration's acceptance rate exceeds the target, else ×0.9.
    Paper,
}

/// Settings of one local search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MalaConfig {
    /// Iterations K.
    pub n_iterations: usize,
    /// Iterations before accepted proposals are collected.
    pub burn_in: usize,
    /// Initial step η₀.
    pub step: f64,
    /// Acceptance rate the step adapts toward (0.574 is optimal for MALA).
    pub target_accept: f64,
    /// Adaptation schedule.
    pub schedule: MalaSchedule,
}

impl MalaConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        if self.n_iterations == 0 || self.burn_in >= self.n_iterations {
            return Err(McmcError::InvalidConfig(format!(
                "MALA needs n_iterations ≥ 1 and burn_in < n_iterations, got {} and {}",
                self.n_iterations, self.burn_in
            )));
        }
        if !(self.step > 0.0 && self.step.is_finite()) {
            return Err(McmcError::InvalidConfig(format!("MALA step must be a positive number, got {}", self.step)));
        }
        if !(self.target_accept > 0.0 && self.target_accept < 1.0) {
            return Err(McmcError::InvalidConfig(format!("MALA target_accept must be in (0, 1), got {}", self.target_accept)));
        }
        Ok(())
    }
}

/// What a local search returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MalaOutput {
    /// Accepted proposals after the burn-in, row-major.
    pub collected: Vec<f64>,
    /// log p̃ of the collected points.
    pub collected_log_p: Vec<f64>,
    /// The chains' final points, row-major.
    pub x: Vec<f64>,
    /// Mean acceptance rate over all iterations.
    pub acceptance: f64,
    /// The step after the last adaptation.
    pub final_step: f64,
}

fn eval(density: &dyn LogDensity, x: &[f64], n: usize, d: usize, dtype: DType) -> Result<(Vec<f64>, Vec<f64>)> {
    let t = Tensor::from_slice(x, (n, d), &Device::Cpu)?.to_dtype(dtype)?;
    let (lp, g) = density.log_prob_and_grad(&t)?;
    Ok((fab_core::to_f64_vec(&lp)?, fab_core::to_f64_vec(&g)?))
}

/// Runs MALA from the rows of `x0` (`[n, d]`) on `density`, evaluated in `dtype`.
/// Randomness: per iteration n·d standard normals, then n uniforms. Non-finite proposals are
/// rejected; non-finite gradients count as zero.
///
/// # Errors
/// Invalid settings or shapes; density errors.
pub fn mala(density: &dyn LogDensity, x0: &[f64], config: &MalaConfig, dtype: DType, rng: &mut dyn RngCore) -> Result<MalaOutput> {
    config.validate()?;
    let d = density.dim();
    if d == 0 || !x0.len().is_multiple_of(d) {
        return Err(McmcError::InvalidConfig(format!("MALA start points: {} values are not rows of dimension {d}", x0.len())));
    }
    let n = x0.len() / d;
    let finite_grad = |g: Vec<f64>| g.into_iter().map(|v| if v.is_finite() { v } else { 0.0 }).collect::<Vec<_>>();
    let mut x = x0.to_vec();
    let (mut lp, g) = eval(density, &x, n, d, dtype)?;
    let mut g = finite_grad(g);
    let mut step = config.step;
    let mut out = MalaOutput::default();
    let mut recent: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let mut accepted_total = 0usize;
    let mut prop = vec![0.0; n * d];
    for it in 0..config.n_iterations {
        let s = (2.0 * step).sqrt();
        for j in 0..n * d {
            let z: f64 = StandardNormal.sample(rng);
            prop[j] = x[j] + step * g[j] + s * z;
        }
        let (lp_new, g_new) = eval(density, &prop, n, d, dtype)?;
        let g_new = finite_grad(g_new);
        let mut accepted = 0usize;
        for k in 0..n {
            let r = k * d..(k + 1) * d;
            let (xa, xb, ga, gb) = (&x[r.clone()], &prop[r.clone()], &g[r.clone()], &g_new[r.clone()]);
            // log q(x | x′) − log q(x′ | x).
            let mut fwd = 0.0;
            let mut bwd = 0.0;
            for j in 0..d {
                let f = xb[j] - xa[j] - step * ga[j];
                let b = xa[j] - xb[j] - step * gb[j];
                fwd += f * f;
                bwd += b * b;
            }
            let log_alpha = lp_new[k] - lp[k] + (fwd - bwd) / (4.0 * step);
            let u: f64 = rng.random();
            if lp_new[k].is_finite() && log_alpha.is_finite() && u.ln() < log_alpha {
                accepted += 1;
                x[r.clone()].copy_from_slice(&prop[r.clone()]);
                g[r.clone()].copy_from_slice(&g_new[r.clone()]);
                lp[k] = lp_new[k];
                if it >= config.burn_in {
                    out.collected.extend_from_slice(&prop[r]);
                    out.collected_log_p.push(lp_new[k]);
                }
            }
        }
        accepted_total += accepted;
        let rate = accepted as f64 / n.max(1) as f64;
        let up = match config.schedule {
            MalaSchedule::Paper => rate > config.target_accept,
            MalaSchedule::Code => {
                recent.push_back(rate);
                if recent.len() > 5 {
                    recent.pop_front();
                }
                recent.iter().sum::<f64>() / recent.len() as f64 > config.target_accept
            }
        };
        let (grow, shrink) = match config.schedule {
            MalaSchedule::Code => (1.01, 0.99),
            MalaSchedule::Paper => (1.1, 0.9),
        };
        step *= if up { grow } else { shrink };
    }
    out.acceptance = accepted_total as f64 / (n * config.n_iterations).max(1) as f64;
    out.final_step = step;
    out.x = x;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fab_core::{seeded_rng, FnDensity};

    /// MALA leaves a 1-D standard normal invariant: chains started exactly from it keep mean 0
    /// and variance 1 (4000 chains × 50 iterations; tolerances ~5 standard errors).
    #[test]
    fn mala_keeps_a_gaussian_invariant() {
        let target = FnDensity::new(1, |x: &Tensor| x.sqr()?.sum(1)? * -0.5);
        let mut rng = seeded_rng(3, 0);
        let n = 4000;
        let x0: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        let cfg = MalaConfig { n_iterations: 50, burn_in: 10, step: 0.5, target_accept: 0.574, schedule: MalaSchedule::Code };
        let out = mala(&target, &x0, &cfg, DType::F64, &mut rng).unwrap();
        let m = out.x.iter().sum::<f64>() / n as f64;
        let v = out.x.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 5.0 * (1.0 / n as f64).sqrt(), "mean {m}");
        assert!((v - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt(), "variance {v}");
        assert!(out.acceptance > 0.3 && out.acceptance < 0.95, "acceptance {}", out.acceptance);
        assert_eq!(out.collected.len(), out.collected_log_p.len());
    }

    /// The adaptation moves the step toward the target acceptance: from a far too large step
    /// on a narrow Gaussian the step shrinks and acceptance rises.
    #[test]
    fn step_adapts_down_from_a_large_step() {
        let target = FnDensity::new(2, |x: &Tensor| x.sqr()?.sum(1)? * -50.0);
        let mut rng = seeded_rng(4, 0);
        let x0 = vec![0.0; 2 * 200];
        for schedule in [MalaSchedule::Code, MalaSchedule::Paper] {
            let cfg = MalaConfig { n_iterations: 300, burn_in: 100, step: 1.0, target_accept: 0.574, schedule };
            let out = mala(&target, &x0, &cfg, DType::F64, &mut rng).unwrap();
            assert!(out.final_step < 0.05, "{schedule:?}: step {}", out.final_step);
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let target = FnDensity::new(1, |x: &Tensor| x.sqr()?.sum(1)? * -0.5);
        let mut rng = seeded_rng(0, 0);
        let cfg = MalaConfig { n_iterations: 10, burn_in: 10, step: 0.1, target_accept: 0.574, schedule: MalaSchedule::Code };
        assert!(mala(&target, &[0.0], &cfg, DType::F64, &mut rng).is_err());
        let cfg = MalaConfig { burn_in: 0, step: -1.0, ..cfg };
        assert!(mala(&target, &[0.0], &cfg, DType::F64, &mut rng).is_err());
    }
}
