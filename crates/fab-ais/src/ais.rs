//! The AIS driver: one pass from flow samples through the intermediate distributions.

use candle_core::{DType, Tensor};
use fab_core::stats::{effective_sample_size, log_sum_exp};
use fab_core::{LogDensity, Proposal};
use fab_mcmc::{Annealed, Coeffs, Hmc, Metropolis, PartsDensity, Point, StepSizes, TransitionInfo, TransitionKernel};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::{AisConfig, TransitionConfig};
use crate::{AisError, Result};

/// The adaptive state of an [`Ais`] sampler, saved in checkpoints so that resume is exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AisState {
    /// Per-level step sizes (and the shared HMC component).
    pub step_sizes: StepSizes,
}

/// The result of one AIS pass. All tensors are detached, in the flow's dtype and device, and
/// hold only the rows that stayed valid (the batch may have shrunk).
#[derive(Debug, Clone)]
pub struct AisOutput {
    /// Final points `[m, d]`.
    pub x: Tensor,
    /// Log importance weights `[m]` (in the points' dtype).
    pub log_w: Tensor,
    /// The same log weights in f64 on the host.
    pub log_w_f64: Vec<f64>,
    /// log q at the final points `[m]` (cached, not re-evaluated).
    pub log_q: Tensor,
    /// log p at the final points `[m]` (cached, not re-evaluated).
    pub log_p: Tensor,
    /// log Ẑ = logsumexp(log w) − ln B with B the *requested* batch size (dropped samples count
    /// as zero weight, as in the reference). With the p^α q^{1−α} target it estimates
    /// log ∫ p^α q^{1−α}; with p it estimates log Z_p.
    pub log_z_estimate: f64,
    /// ESS of the AIS weights as a fraction of the surviving samples, 1/(m Σ w̄²).
    pub ess: f64,
    /// log p − log q of the initial flow samples that were valid (flow importance weights
    /// w.r.t. p, in f64).
    pub base_log_w: Vec<f64>,
    /// ESS of `base_log_w` (the flow's ESS w.r.t. p, `ess_base` in the reference).
    pub ess_base: f64,
    /// Samples dropped at the start (non-finite log q or log p of the flow samples).
    pub n_dropped_start: usize,
    /// Samples dropped at the end (non-finite log q, log p or log w).
    pub n_dropped_end: usize,
    /// The statistics of every intermediate level's transition, in order.
    pub levels: Vec<TransitionInfo>,
}

impl AisOutput {
    /// Total number of dropped samples.
    pub fn n_dropped(&self) -> usize {
        self.n_dropped_start + self.n_dropped_end
    }

    /// Number of returned samples.
    pub fn len(&self) -> usize {
        self.log_w_f64.len()
    }

    /// Whether no sample was returned (never the case for a successful pass).
    pub fn is_empty(&self) -> bool {
        self.log_w_f64.is_empty()
    }
}

/// Annealed importance sampling from the flow q toward g = p^α q^{1−α} (training) or g = p
/// (evaluation), with per-level adaptive step sizes (docs/ALGORITHMS.md, "Annealed importance
/// sampling").
///
/// One pass: x ~ q; log w = log f_{β₁}(x) − log q(x); for j = 1..n: x ← T_j(x) leaving f_{β_j}
/// invariant, log w += log f_{β_{j+1}}(x) − log f_{β_j}(x); β_{n+1} = 1 has no transition.
/// Samples with non-finite log q or log p are dropped at the start, and with non-finite log q,
/// log p or log w at the end.
///
/// Cost per pass: one `sample_and_log_prob(B)` of q, then with HMC exactly 1 + n·L evaluations of
/// q and p (value and gradient), with Metropolis one evaluation of p and n·n_updates evaluations
/// of q and p (values). Intermediate log f_β are recombined from cached log q and log p, never
/// re-evaluated. No gradient flows through AIS: every returned tensor is detached.
#[derive(Debug)]
pub struct Ais {
    config: AisConfig,
    betas: Vec<f64>,
    kernel: Box<dyn TransitionKernel>,
    step_sizes: StepSizes,
    adapt: bool,
    eval_mode: bool,
}

impl Ais {
    /// A sampler with fresh step sizes from the configuration.
    ///
    /// # Errors
    /// [`AisError::InvalidConfig`] if `config.validate()` fails.
    pub fn new(config: AisConfig) -> Result<Self> {
        config.validate()?;
        let n = config.n_intermediate;
        let (kernel, step_sizes, adapt): (Box<dyn TransitionKernel>, StepSizes, bool) = match &config.transition {
            TransitionConfig::Hmc(h) => (
                Box::new(Hmc::new(h.n_leapfrog)?.with_max_grad(h.max_grad)?),
                StepSizes::hmc(n, h.init_step_size, h.common_weight, h.target_accept)?,
                h.adapt,
            ),
            TransitionConfig::Metropolis(m) => {
                (Box::new(Metropolis::new(m.n_updates)?), StepSizes::metropolis(n, m.step_size, m.target_accept)?, m.adapt)
            }
        };
        Ok(Self { betas: config.schedule.betas(n), config, kernel, step_sizes, adapt, eval_mode: false })
    }

    /// The configuration.
    pub fn config(&self) -> &AisConfig {
        &self.config
    }

    /// The n + 2 inverse temperatures β₀ = 0, …, β_{n+1} = 1.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// Coefficients (c_q, c_p) of log f_{β_j} = c_q·log q + c_p·log p for the current target,
    /// j = 0..=n+1 (`None` beyond).
    pub fn level_coeffs(&self, j: usize) -> Option<Coeffs> {
        self.betas.get(j).map(|b| self.coeffs_at_beta(*b))
    }

    fn coeffs_at_beta(&self, beta: f64) -> Coeffs {
        if self.config.p_target {
            Coeffs::p_target(beta)
        } else {
            Coeffs::alpha_target(beta, self.config.alpha)
        }
    }

    /// Freezes (true) or resumes (false) step-size adaptation, e.g. during evaluation.
    pub fn set_eval_mode(&mut self, eval_mode: bool) {
        self.eval_mode = eval_mode;
    }

    /// Whether adaptation is frozen.
    pub fn eval_mode(&self) -> bool {
        self.eval_mode
    }

    /// Switches the AIS target between p (true) and p^α q^{1−α} (false). Step sizes are shared
    /// by both targets, as in the reference.
    pub fn set_p_target(&mut self, p_target: bool) {
        self.config.p_target = p_target;
    }

    /// Whether the AIS target is p.
    pub fn p_target(&self) -> bool {
        self.config.p_target
    }

    /// The current step sizes.
    pub fn step_sizes(&self) -> &StepSizes {
        &self.step_sizes
    }

    /// The step size of transition `i` = 0..n (0-based: transition i leaves f_{β_{i+1}}
    /// invariant), as the next pass will use it.
    ///
    /// # Errors
    /// [`AisError::Mcmc`] for `i >= n_intermediate`.
    pub fn step_size(&self, i: usize) -> Result<f64> {
        Ok(self.step_sizes.step_size(i)?)
    }

    /// The adaptive state, for checkpoints.
    pub fn state(&self) -> AisState {
        AisState { step_sizes: self.step_sizes.clone() }
    }

    /// Restores a state saved by [`state`](Self::state).
    ///
    /// # Errors
    /// [`AisError::StateMismatch`] if the number of levels or the presence of a shared
    /// component differs from this sampler's, or a step size is not finite and ≥ 0.
    pub fn load_state(&mut self, state: AisState) -> Result<()> {
        let s = &state.step_sizes;
        if s.n_levels() != self.step_sizes.n_levels() {
            return Err(AisError::StateMismatch(format!("{} levels saved, {} configured", s.n_levels(), self.step_sizes.n_levels())));
        }
        if s.common.is_some() != self.step_sizes.common.is_some() {
            return Err(AisError::StateMismatch("saved for a different transition kernel".into()));
        }
        let all = s.levels.iter().chain(s.common.iter());
        if all.clone().any(|a| !(a.value.is_finite() && a.value >= 0.0)) {
            return Err(AisError::StateMismatch("a saved step size is not finite and >= 0".into()));
        }
        self.step_sizes = state.step_sizes;
        Ok(())
    }

    /// One AIS pass with `batch` flow samples. See the type's documentation for the algorithm.
    ///
    /// # Errors
    /// [`AisError::NoValidSamples`] if every sample is invalid at the start or the end;
    /// [`AisError::DimensionMismatch`]; [`AisError::InvalidConfig`] for `batch == 0`; errors of
    /// the flow, the target or the kernel.
    pub fn run(&mut self, q: &dyn Proposal, p: &dyn LogDensity, batch: usize, rng: &mut dyn RngCore) -> Result<AisOutput> {
        if q.dim() != p.dim() {
            return Err(AisError::DimensionMismatch { q: q.dim(), p: p.dim() });
        }
        if batch == 0 {
            return Err(AisError::InvalidConfig("batch size must be >= 1".into()));
        }
        let n_int = self.config.n_intermediate;
        let parts = Annealed { base: q, target: p };

        // 1. Flow samples and their cached parts.
        let (x, log_q0) = q.sample_and_log_prob(batch, rng)?;
        let x = x.detach();
        let mut point = if self.kernel.uses_grad() && n_int > 0 {
            // The gradient of log q is needed; log q is recomputed together with it.
            parts.evaluate(&x, true)?
        } else {
            let log_p = p.log_prob(&x)?.detach().to_dtype(x.dtype())?;
            Point { log_q: log_q0.detach().to_dtype(x.dtype())?, log_p, grad_log_q: None, grad_log_p: None, x }
        };

        // 2.–3. Drop invalid samples; initial weights.
        let (mut lq, mut lp) = (host(&point.log_q)?, host(&point.log_p)?);
        let valid: Vec<bool> = lq.iter().zip(&lp).map(|(a, b)| a.is_finite() && b.is_finite()).collect();
        let n_dropped_start = valid.iter().filter(|v| !**v).count();
        if n_dropped_start == batch {
            return Err(AisError::NoValidSamples { stage: "chain start", batch });
        }
        if n_dropped_start > 0 {
            point = keep_rows(&point, &valid)?;
            lq = filter(&lq, &valid);
            lp = filter(&lp, &valid);
        }
        let base_log_w: Vec<f64> = lp.iter().zip(&lq).map(|(a, b)| a - b).collect();
        let ess_base = effective_sample_size(&base_log_w);
        let coeffs: Vec<Coeffs> = self.betas.iter().map(|b| self.coeffs_at_beta(*b)).collect();
        let mut log_w = coeffs[0].log_ratio_host(&coeffs[1], &lq, &lp);

        // 4. Transitions and weight increments.
        let adapt = self.adapt && !self.eval_mode;
        let mut levels = Vec::with_capacity(n_int);
        for j in 1..=n_int {
            let level = coeffs[j];
            let eps = self.step_sizes.step_size(j - 1)?;
            let (next, info) = self.kernel.step(&parts, level, point, eps, rng)?;
            point = next;
            if adapt {
                self.step_sizes.advance(j - 1, info.mean_accept_prob)?;
            }
            levels.push(info);
            if self.betas[j + 1] != self.betas[j] {
                let (lq, lp) = (host(&point.log_q)?, host(&point.log_p)?);
                let inc = level.log_ratio_host(&coeffs[j + 1], &lq, &lp);
                log_w.iter_mut().zip(&inc).for_each(|(w, d)| *w += d);
            }
        }

        // 5. Drop samples that became invalid.
        let (lq, lp) = if n_int > 0 { (host(&point.log_q)?, host(&point.log_p)?) } else { (lq, lp) };
        let valid: Vec<bool> = (0..log_w.len()).map(|i| lq[i].is_finite() && lp[i].is_finite() && log_w[i].is_finite()).collect();
        let n_dropped_end = valid.iter().filter(|v| !**v).count();
        if n_dropped_end == log_w.len() {
            return Err(AisError::NoValidSamples { stage: "chain end", batch: log_w.len() });
        }
        if n_dropped_end > 0 {
            point = keep_rows(&point, &valid)?;
            log_w = filter(&log_w, &valid);
        }

        let log_z_estimate = log_sum_exp(&log_w) - (batch as f64).ln();
        let ess = effective_sample_size(&log_w);
        let m = log_w.len();
        let log_w_t = Tensor::from_slice(&log_w, m, &candle_core::Device::Cpu)?.to_dtype(point.x.dtype())?.to_device(point.x.device())?;
        let point = point.detach();
        Ok(AisOutput {
            x: point.x,
            log_w: log_w_t,
            log_w_f64: log_w,
            log_q: point.log_q,
            log_p: point.log_p,
            log_z_estimate,
            ess,
            base_log_w,
            ess_base,
            n_dropped_start,
            n_dropped_end,
            levels,
        })
    }
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

fn filter(v: &[f64], keep: &[bool]) -> Vec<f64> {
    v.iter().zip(keep).filter(|(_, k)| **k).map(|(a, _)| *a).collect()
}

fn keep_rows(point: &Point, keep: &[bool]) -> Result<Point> {
    let idx: Vec<u32> = keep.iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| i as u32).collect();
    let n = idx.len();
    let idx = Tensor::from_vec(idx, n, point.x.device())?;
    Ok(point.index_select(&idx)?)
}
