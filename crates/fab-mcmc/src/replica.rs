//! Replica exchange (parallel tempering) with HMC moves, for producing reference samples of
//! multimodal targets such as alanine dipeptide.
//!
//! Replica k samples the tempered density
//!
//! log π_k(x) = β_k·[log p̃(x) − log r(x)] + log r(x),  1 = β_0 > β_1 > … > β_{K−1} > 0,
//!
//! where p̃ is the target and r an optional *untempered reference* density (r ≡ 1 if none is
//! given, which gives the usual π_k ∝ p̃^β_k). The reference exists for targets written in
//! transformed coordinates: for a Boltzmann density in internal coordinates,
//! p̃(z) = exp(−E(x(z))/k_BT_0)·|det ∂x/∂z|, and with r = |det ∂x/∂z| replica k is the same
//! molecule at the physical temperature T_0/β_k (only the energy is tempered, not the volume
//! element). Replica 0 always samples p̃ exactly.
//!
//! One *sweep* is
//! 1. one HMC trajectory (unit mass, `n_leapfrog` leapfrog steps, one Metropolis test) for every
//!    replica of every chain, with a per-replica step size ε_k (optionally jittered by a factor
//!    U(1 − j, 1 + j) drawn per replica and sweep, independently of the state);
//! 2. one round of neighbour swaps: on even sweeps the pairs (0,1), (2,3), …, on odd sweeps
//!    (1,2), (3,4), … Swapping the configurations of replicas i and j is accepted with
//!    probability min(1, exp((β_i − β_j)(u(x_j) − u(x_i)))), u = log p̃ − log r
//!    ([`swap_log_acceptance`]).
//!
//! All replicas of all independent chains form **one batch** `[n_chains·K, d]` for each density
//! call (row c·K + k holds replica k of chain c), so a cheap batched target (ALDP: a few µs per
//! configuration) is evaluated with one call per leapfrog step.
//!
//! Step sizes are adapted per replica with FAB's multiplicative rule ([`StepSizeAdapter`],
//! factor `adapt_factor` toward `target_accept`, from the mean over chains of min(1, α)) **only
//! in sweeps run with `adapt = true`** ([`ReplicaExchange::burn_in`]); production sweeps
//! ([`ReplicaExchange::run`]) use frozen step sizes, so the production chain is a homogeneous
//! Markov chain that leaves ∏_k π_k invariant.
//!
//! The sampler works on host f64 data and calls the densities with f64 CPU tensors.

use candle_core::{Device, Tensor};
use fab_core::{rng::normal_vec, to_f64_vec, LogDensity};
use rand::{Rng, RngCore};
use rand_distr::{Distribution, Exp1};
use serde::{Deserialize, Serialize};

use crate::{McmcError, Result, StepSizeAdapter};

/// Log acceptance probability of swapping the configurations of two replicas:
/// log min(1, exp((β_i − β_j)(u_j − u_i))), where u_i = log p̃(x_i) − log r(x_i) is the tempered
/// part of the configuration currently held by replica i (inverse temperature β_i).
///
/// The reference part r cancels. A NaN result (e.g. both u infinite) is returned as −∞ (reject).
///
/// ```
/// use fab_mcmc::swap_log_acceptance;
/// // The colder replica (β = 1) holds the higher-energy configuration: always swap.
/// assert_eq!(swap_log_acceptance(1.0, 0.5, -10.0, -8.0), 0.0);
/// assert!((swap_log_acceptance(1.0, 0.5, -8.0, -10.0) - (-1.0)).abs() < 1e-15);
/// ```
pub fn swap_log_acceptance(beta_i: f64, beta_j: f64, u_i: f64, u_j: f64) -> f64 {
    let a = (beta_i - beta_j) * (u_j - u_i);
    if a.is_nan() {
        f64::NEG_INFINITY
    } else {
        a.min(0.0)
    }
}

/// Temperatures `t0, t0 + dt, …` (`n` values): the paper's ALDP ladder is
/// `linear_temperatures(300.0, 50.0, 21)` = 300, 350, …, 1300 K.
pub fn linear_temperatures(t0: f64, dt: f64, n: usize) -> Vec<f64> {
    (0..n).map(|k| t0 + dt * k as f64).collect()
}

/// `n` temperatures from `t_min` to `t_max` in geometric progression (constant ratio), the
/// usual choice for roughly uniform swap rates when the heat capacity is constant.
pub fn geometric_temperatures(t_min: f64, t_max: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![t_min],
        _ => {
            let r = (t_max / t_min).ln() / (n - 1) as f64;
            (0..n).map(|k| t_min * (r * k as f64).exp()).collect()
        }
    }
}

/// Inverse temperatures relative to the first one, β_k = T_0/T_k.
///
/// # Errors
/// [`McmcError::InvalidConfig`] unless the temperatures are finite, positive and strictly
/// increasing (so that the βs are valid for [`ReplicaExchangeConfig`]).
pub fn betas_from_temperatures(temperatures: &[f64]) -> Result<Vec<f64>> {
    let t0 = *temperatures.first().ok_or_else(|| McmcError::InvalidConfig("the temperature ladder is empty".into()))?;
    if !temperatures.iter().all(|t| t.is_finite() && *t > 0.0) || temperatures.windows(2).any(|w| w[1] <= w[0]) {
        return Err(McmcError::InvalidConfig(format!("temperatures must be finite, > 0 and strictly increasing, got {temperatures:?}")));
    }
    Ok(temperatures.iter().map(|t| t0 / t).collect())
}

/// Settings of [`ReplicaExchange`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaExchangeConfig {
    /// Inverse temperatures relative to the target: β_0 = 1 > β_1 > … > 0.
    pub betas: Vec<f64>,
    /// Leapfrog steps per HMC trajectory.
    pub n_leapfrog: usize,
    /// Initial step size of replica 0; replica k starts at ε_0/√β_k (a distribution that is
    /// 1/√β wider for a quadratic well) and is then adapted during burn-in.
    pub init_step_size: f64,
    /// Step-size jitter j ∈ [0, 1): each sweep, replica k uses ε_k·U(1 − j, 1 + j) (avoids
    /// periodic trajectories; independent of the state, so detailed balance holds).
    pub step_jitter: f64,
    /// Target mean acceptance probability of the burn-in adaptation.
    pub target_accept: f64,
    /// Multiplicative adaptation factor (> 1) per burn-in sweep.
    pub adapt_factor: f64,
    /// Element-wise clamp of ∇log π_k (∞ = none); non-finite gradient entries are set to 0.
    /// Any clamp keeps HMC exact (the kicks stay volume-preserving and reversible), it only
    /// lowers acceptance where it is active.
    pub max_grad: f64,
}

impl Default for ReplicaExchangeConfig {
    /// A single replica (plain HMC) with 10 leapfrog steps of 0.1, jitter 0.2, target 0.65,
    /// factor 1.02, no gradient clamp.
    fn default() -> Self {
        Self {
            betas: vec![1.0],
            n_leapfrog: 10,
            init_step_size: 0.1,
            step_jitter: 0.2,
            target_accept: 0.65,
            adapt_factor: 1.02,
            max_grad: f64::INFINITY,
        }
    }
}

impl ReplicaExchangeConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] (naming the field) or [`McmcError::InvalidStepSize`].
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(McmcError::InvalidConfig(m));
        if self.betas.first() != Some(&1.0) {
            return bad(format!("betas must start with 1.0 (the target), got {:?}", self.betas));
        }
        if !self.betas.iter().all(|b| b.is_finite() && *b > 0.0) || self.betas.windows(2).any(|w| w[1] >= w[0]) {
            return bad(format!("betas must be finite, > 0 and strictly decreasing, got {:?}", self.betas));
        }
        if self.n_leapfrog == 0 {
            return bad("n_leapfrog must be >= 1".into());
        }
        if !(self.init_step_size.is_finite() && self.init_step_size > 0.0) {
            return Err(McmcError::InvalidStepSize(self.init_step_size));
        }
        if !(0.0..1.0).contains(&self.step_jitter) {
            return bad(format!("step_jitter must be in [0, 1), got {}", self.step_jitter));
        }
        if self.max_grad.is_nan() || self.max_grad <= 0.0 {
            return bad(format!("max_grad must be > 0, got {}", self.max_grad));
        }
        StepSizeAdapter::new(self.init_step_size, self.adapt_factor, self.target_accept)?;
        Ok(())
    }

    /// Number of replicas K.
    pub fn n_replicas(&self) -> usize {
        self.betas.len()
    }
}

/// Cumulative statistics of a [`ReplicaExchange`] since construction or the last
/// [`ReplicaExchange::reset_stats`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReplicaStats {
    /// Sweeps counted.
    pub n_sweeps: u64,
    /// Density evaluations (rows) made, for throughput figures.
    pub n_evaluations: u64,
    /// Per replica: HMC proposals.
    pub hmc_proposals: Vec<u64>,
    /// Per replica: accepted HMC proposals.
    pub hmc_accepts: Vec<u64>,
    /// Per replica: sum over proposals of min(1, α) (non-finite α counted as 0).
    pub hmc_accept_prob_sum: Vec<f64>,
    /// Per replica: proposals rejected because log α was not finite.
    pub hmc_non_finite: Vec<u64>,
    /// Per neighbour pair (k, k+1): swap attempts.
    pub swap_attempts: Vec<u64>,
    /// Per neighbour pair (k, k+1): accepted swaps.
    pub swap_accepts: Vec<u64>,
    /// Per neighbour pair: sum over attempts of min(1, exp(log α)).
    pub swap_accept_prob_sum: Vec<f64>,
    /// Completed round trips (a configuration travelling replica 0 → K−1 → 0), all chains.
    pub round_trips: u64,
}

impl ReplicaStats {
    fn new(k: usize) -> Self {
        let p = k.saturating_sub(1);
        Self {
            hmc_proposals: vec![0; k],
            hmc_accepts: vec![0; k],
            hmc_accept_prob_sum: vec![0.0; k],
            hmc_non_finite: vec![0; k],
            swap_attempts: vec![0; p],
            swap_accepts: vec![0; p],
            swap_accept_prob_sum: vec![0.0; p],
            ..Default::default()
        }
    }

    /// Per replica: fraction of HMC proposals accepted (NaN before any proposal).
    pub fn acceptance_rates(&self) -> Vec<f64> {
        ratio(&self.hmc_accepts, &self.hmc_proposals)
    }

    /// Per neighbour pair (k, k+1): fraction of swap attempts accepted (NaN before any attempt).
    pub fn swap_rates(&self) -> Vec<f64> {
        ratio(&self.swap_accepts, &self.swap_attempts)
    }

    /// Per neighbour pair: mean swap acceptance probability (a lower-variance estimate of the
    /// swap rate).
    pub fn mean_swap_accept_probs(&self) -> Vec<f64> {
        self.swap_accept_prob_sum.iter().zip(&self.swap_attempts).map(|(s, n)| if *n == 0 { f64::NAN } else { s / *n as f64 }).collect()
    }
}

fn ratio(a: &[u64], b: &[u64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| if *b == 0 { f64::NAN } else { *a as f64 / *b as f64 }).collect()
}

/// What one sweep did, per replica and per pair.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SweepInfo {
    /// Per replica: fraction of chains whose HMC proposal was accepted.
    pub acceptance: Vec<f64>,
    /// Per replica: mean over chains of min(1, α).
    pub mean_accept_prob: Vec<f64>,
    /// Per replica: the step size used (before jitter).
    pub step_sizes: Vec<f64>,
    /// Per pair: accepted swaps in this sweep (summed over chains; 0 for pairs not attempted).
    pub swaps_accepted: Vec<u64>,
}

/// Cached evaluation of a batch: u = log p̃ − log r, log r, and their gradients (`log_r` and
/// `grad_r` are empty without a reference density).
#[derive(Debug, Clone, Default)]
struct Parts {
    u: Vec<f64>,
    grad_u: Vec<f64>,
    log_r: Vec<f64>,
    grad_r: Vec<f64>,
}

impl Parts {
    /// log r at `row` (0 without a reference).
    fn log_r(&self, row: usize) -> f64 {
        self.log_r.get(row).copied().unwrap_or(0.0)
    }
}

/// Replica-exchange (parallel-tempering) sampler over any [`LogDensity`].
///
/// Replica k samples log π_k(x) = β_k·[log p̃(x) − log r(x)] + log r(x) with β_0 = 1 > β_1 >
/// … > 0, where r is an optional untempered reference (r ≡ 1 if `None`; for a Boltzmann density
/// written in internal coordinates, r = |det ∂x/∂z| makes replica k the molecule at the physical
/// temperature T_0/β_k). Replica 0 samples p̃ exactly.
///
/// One [`sweep`](Self::sweep) = one HMC trajectory (unit mass, `n_leapfrog` steps, per-replica
/// step size, optional jitter) for every replica of every chain, evaluated as **one batch**
/// `[n_chains·K, d]` per leapfrog step (row c·K + k = replica k of chain c), then one round of
/// neighbour swaps (pairs (0,1), (2,3), … on even sweeps, (1,2), (3,4), … on odd sweeps) accepted
/// with probability min(1, exp((β_i − β_j)(u(x_j) − u(x_i)))), u = log p̃ − log r
/// ([`swap_log_acceptance`]).
///
/// Step sizes (replica k starts at `init_step_size`/√β_k) are adapted per replica with the
/// multiplicative rule of [`StepSizeAdapter`] only in [`burn_in`](Self::burn_in) (or
/// `sweep(true, ..)`); [`run`](Self::run) and [`sample_cold`](Self::sample_cold) use frozen step
/// sizes, so production sweeps form a homogeneous Markov chain leaving ∏_k π_k invariant.
/// The sampler works on host f64 data and calls the densities with f64 CPU tensors.
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// use fab_core::{seeded_rng, FnDensity};
/// use fab_mcmc::{ReplicaExchange, ReplicaExchangeConfig};
/// let target = FnDensity::new(1, |x: &Tensor| Ok((x.sqr()? * -0.5)?.squeeze(1)?));
/// let cfg = ReplicaExchangeConfig { betas: vec![1.0, 0.5, 0.25], ..Default::default() };
/// let x0 = Tensor::zeros((2 * 3, 1), candle_core::DType::F64, &Device::Cpu).unwrap(); // 2 chains
/// let mut re = ReplicaExchange::new(&target, None, cfg, &x0).unwrap();
/// let mut rng = seeded_rng(0, 0);
/// re.burn_in(20, &mut rng).unwrap();
/// let cold = re.sample_cold(10, 1, &mut rng).unwrap(); // [10·2, 1] samples of N(0, 1)
/// assert_eq!(cold.len(), 20);
/// ```
pub struct ReplicaExchange<'a> {
    target: &'a dyn LogDensity,
    reference: Option<&'a dyn LogDensity>,
    config: ReplicaExchangeConfig,
    n_chains: usize,
    dim: usize,
    x: Vec<f64>,
    parts: Parts,
    steps: Vec<StepSizeAdapter>,
    /// Identity of the configuration in each slot (moves with swaps).
    walker: Vec<usize>,
    /// Per walker: 0 = not yet at replica 0, 1 = last end visited is replica 0, 2 = replica K−1.
    walker_dir: Vec<u8>,
    sweep_index: u64,
    stats: ReplicaStats,
}

impl std::fmt::Debug for ReplicaExchange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaExchange")
            .field("config", &self.config)
            .field("n_chains", &self.n_chains)
            .field("dim", &self.dim)
            .field("has_reference", &self.reference.is_some())
            .field("sweep_index", &self.sweep_index)
            .finish_non_exhaustive()
    }
}

impl<'a> ReplicaExchange<'a> {
    /// A sampler for `target` (tempered relative to `reference`, if given) started from
    /// `x0: [n_chains·K, d]` (row c·K + k = replica k of chain c).
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] for an invalid config, a reference of another dimension, a
    /// row count that is not a positive multiple of K; [`McmcError::NonFiniteStart`] if a start
    /// row has a non-finite tempered log-density; shape and density faults.
    pub fn new(
        target: &'a dyn LogDensity,
        reference: Option<&'a dyn LogDensity>,
        config: ReplicaExchangeConfig,
        x0: &Tensor,
    ) -> Result<Self> {
        config.validate()?;
        let dim = target.dim();
        if let Some(r) = reference {
            if r.dim() != dim {
                return Err(McmcError::InvalidConfig(format!("reference has dim {} but target has dim {dim}", r.dim())));
            }
        }
        let n = fab_core::check_points(x0, dim)?;
        let k = config.n_replicas();
        if n == 0 || n % k != 0 {
            return Err(McmcError::InvalidConfig(format!("x0 must have n_chains·K rows with n_chains >= 1 and K = {k}, got {n} rows")));
        }
        let x = to_f64_vec(x0)?;
        let steps = config
            .betas
            .iter()
            .map(|b| StepSizeAdapter::new(config.init_step_size / b.sqrt(), config.adapt_factor, config.target_accept))
            .collect::<Result<Vec<_>>>()?;
        let mut re = Self {
            target,
            reference,
            n_chains: n / k,
            dim,
            parts: Parts::default(),
            steps,
            walker: (0..n).collect(),
            walker_dir: (0..n).map(|i| u8::from(i % k == 0)).collect(),
            sweep_index: 0,
            stats: ReplicaStats::new(k),
            config,
            x,
        };
        re.parts = re.evaluate(&re.x.clone())?;
        if let Some(row) = (0..n).find(|&r| !re.log_pi(r, &re.parts).is_finite()) {
            return Err(McmcError::NonFiniteStart { row });
        }
        Ok(re)
    }

    /// The settings.
    pub fn config(&self) -> &ReplicaExchangeConfig {
        &self.config
    }

    /// Number of replicas K.
    pub fn n_replicas(&self) -> usize {
        self.config.n_replicas()
    }

    /// Number of independent chains.
    pub fn n_chains(&self) -> usize {
        self.n_chains
    }

    /// Dimension d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Current step size of every replica.
    pub fn step_sizes(&self) -> Vec<f64> {
        self.steps.iter().map(StepSizeAdapter::current).collect()
    }

    /// Replaces the step sizes (e.g. from an earlier run's burn-in).
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] for a wrong count, [`McmcError::InvalidStepSize`] for a
    /// non-positive or non-finite value.
    pub fn set_step_sizes(&mut self, eps: &[f64]) -> Result<()> {
        if eps.len() != self.n_replicas() {
            return Err(McmcError::InvalidConfig(format!("{} step sizes for {} replicas", eps.len(), self.n_replicas())));
        }
        for (s, e) in self.steps.iter_mut().zip(eps) {
            if !(e.is_finite() && *e > 0.0) {
                return Err(McmcError::InvalidStepSize(*e));
            }
            s.value = *e;
        }
        Ok(())
    }

    /// Cumulative statistics.
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// Clears the statistics (e.g. after burn-in); positions and step sizes are kept.
    pub fn reset_stats(&mut self) {
        self.stats = ReplicaStats::new(self.n_replicas());
    }

    /// Sweeps done since construction.
    pub fn n_sweeps_done(&self) -> u64 {
        self.sweep_index
    }

    fn row(&self, chain: usize, replica: usize) -> usize {
        chain * self.n_replicas() + replica
    }

    /// Positions of replica `replica` of every chain, `[n_chains, d]` row-major.
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] for a replica index ≥ K.
    pub fn positions(&self, replica: usize) -> Result<Vec<f64>> {
        self.check_replica(replica)?;
        let d = self.dim;
        let mut out = Vec::with_capacity(self.n_chains * d);
        for c in 0..self.n_chains {
            let r = self.row(c, replica);
            out.extend_from_slice(&self.x[r * d..(r + 1) * d]);
        }
        Ok(out)
    }

    /// All positions, `[n_chains·K, d]` (row c·K + k).
    pub fn all_positions(&self) -> &[f64] {
        &self.x
    }

    /// log p̃ (the untempered target) of replica `replica`'s configuration in every chain.
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] for a replica index ≥ K.
    pub fn log_target(&self, replica: usize) -> Result<Vec<f64>> {
        self.check_replica(replica)?;
        Ok((0..self.n_chains)
            .map(|c| {
                let r = self.row(c, replica);
                self.parts.u[r] + self.parts.log_r(r)
            })
            .collect())
    }

    fn check_replica(&self, replica: usize) -> Result<()> {
        if replica >= self.n_replicas() {
            return Err(McmcError::InvalidConfig(format!("replica {replica} out of range: there are {} replicas", self.n_replicas())));
        }
        Ok(())
    }

    /// Evaluates u = log p̃ − log r, log r and the gradients at host rows `x`.
    fn evaluate(&mut self, x: &[f64]) -> Result<Parts> {
        let d = self.dim;
        let n = x.len() / d;
        let t = Tensor::from_slice(x, (n, d), &Device::Cpu)?;
        let (lp, gp) = self.target.log_prob_and_grad(&t)?;
        let (mut u, mut grad_u) = (to_f64_vec(&lp)?, to_f64_vec(&gp)?);
        if u.len() != n || grad_u.len() != n * d {
            return Err(McmcError::InvalidConfig(format!(
                "the target returned {} values and {} gradient entries for {n} points of dim {d}",
                u.len(),
                grad_u.len()
            )));
        }
        let (mut log_r, mut grad_r) = (Vec::new(), Vec::new());
        if let Some(r) = self.reference {
            let (lr, gr) = r.log_prob_and_grad(&t)?;
            log_r = to_f64_vec(&lr)?;
            grad_r = to_f64_vec(&gr)?;
            if log_r.len() != n || grad_r.len() != n * d {
                return Err(McmcError::InvalidConfig(format!(
                    "the reference returned {} values and {} gradient entries for {n} points",
                    log_r.len(),
                    grad_r.len()
                )));
            }
            for (a, b) in u.iter_mut().zip(&log_r) {
                // A non-finite reference makes the point invalid (u = NaN ⇒ rejected).
                *a = if b.is_finite() { *a - b } else { f64::NAN };
            }
            for (a, b) in grad_u.iter_mut().zip(&grad_r) {
                *a -= b;
            }
        }
        self.stats.n_evaluations += n as u64;
        Ok(Parts { u, grad_u, log_r, grad_r })
    }

    /// log π_k at `row` of `parts` (k = row mod K).
    fn log_pi(&self, row: usize, parts: &Parts) -> f64 {
        let beta = self.config.betas[row % self.n_replicas()];
        beta * parts.u[row] + parts.log_r(row)
    }

    /// ∇log π_k at `row`, cleaned (non-finite → 0) and clamped, into `out`.
    fn grad_pi(&self, row: usize, parts: &Parts, out: &mut [f64]) {
        let d = self.dim;
        let beta = self.config.betas[row % self.n_replicas()];
        let m = self.config.max_grad;
        let gu = &parts.grad_u[row * d..(row + 1) * d];
        for (j, o) in out.iter_mut().enumerate() {
            let gr = if parts.grad_r.is_empty() { 0.0 } else { parts.grad_r[row * d + j] };
            let g = beta * gu[j] + gr;
            *o = if g.is_finite() { g.clamp(-m, m) } else { 0.0 };
        }
    }

    /// One HMC trajectory for every row. Returns the per-replica (acceptance, mean accept prob).
    fn hmc_move(&mut self, adapt: bool, rng: &mut dyn RngCore) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let (d, k, n) = (self.dim, self.n_replicas(), self.x.len() / self.dim);
        let j = self.config.step_jitter;
        let base: Vec<f64> = self.step_sizes();
        let eps: Vec<f64> = base.iter().map(|e| if j > 0.0 { e * (1.0 - j + 2.0 * j * rng.random::<f64>()) } else { *e }).collect();
        let mom0 = normal_vec(rng, n * d);
        let row_eps = |r: usize| eps[r % k];

        let mut g = vec![0.0; d];
        let mut mom = mom0.clone();
        let mut x1 = self.x.clone();
        for r in 0..n {
            self.grad_pi(r, &self.parts, &mut g);
            let e = row_eps(r);
            for (m, gj) in mom[r * d..(r + 1) * d].iter_mut().zip(&g) {
                *m += 0.5 * e * gj;
            }
        }
        let mut parts1 = Parts::default();
        let n_leap = self.config.n_leapfrog;
        for l in 0..n_leap {
            for r in 0..n {
                let e = row_eps(r);
                for (xv, m) in x1[r * d..(r + 1) * d].iter_mut().zip(&mom[r * d..(r + 1) * d]) {
                    *xv += e * m;
                }
            }
            parts1 = self.evaluate(&x1)?;
            let half = l + 1 == n_leap;
            for r in 0..n {
                self.grad_pi(r, &parts1, &mut g);
                let e = if half { 0.5 * row_eps(r) } else { row_eps(r) };
                for (m, gj) in mom[r * d..(r + 1) * d].iter_mut().zip(&g) {
                    *m += e * gj;
                }
            }
        }

        let mut acc = vec![0u64; k];
        let mut psum = vec![0.0; k];
        for r in 0..n {
            let kin = |p: &[f64]| 0.5 * p.iter().map(|v| v * v).sum::<f64>();
            let h0 = self.log_pi(r, &self.parts) - kin(&mom0[r * d..(r + 1) * d]);
            let h1 = self.log_pi(r, &parts1) - kin(&mom[r * d..(r + 1) * d]);
            let log_alpha = h1 - h0;
            let e1: f64 = Exp1.sample(rng);
            let rep = r % k;
            self.stats.hmc_proposals[rep] += 1;
            if !log_alpha.is_finite() || !parts1.u[r].is_finite() {
                self.stats.hmc_non_finite[rep] += 1;
                continue;
            }
            let p = log_alpha.min(0.0).exp();
            psum[rep] += p;
            if log_alpha > -e1 {
                acc[rep] += 1;
                self.x[r * d..(r + 1) * d].copy_from_slice(&x1[r * d..(r + 1) * d]);
                self.parts.u[r] = parts1.u[r];
                self.parts.grad_u[r * d..(r + 1) * d].copy_from_slice(&parts1.grad_u[r * d..(r + 1) * d]);
                if !self.parts.log_r.is_empty() {
                    self.parts.log_r[r] = parts1.log_r[r];
                    self.parts.grad_r[r * d..(r + 1) * d].copy_from_slice(&parts1.grad_r[r * d..(r + 1) * d]);
                }
            }
        }
        let nc = self.n_chains as f64;
        let mut acceptance = vec![0.0; k];
        let mut mean_p = vec![0.0; k];
        for rep in 0..k {
            self.stats.hmc_accepts[rep] += acc[rep];
            self.stats.hmc_accept_prob_sum[rep] += psum[rep];
            acceptance[rep] = acc[rep] as f64 / nc;
            mean_p[rep] = psum[rep] / nc;
            if adapt {
                self.steps[rep].advance(mean_p[rep]);
            }
        }
        Ok((acceptance, mean_p, base))
    }

    /// Swaps the full cached state of rows `a` and `b`.
    fn swap_rows(&mut self, a: usize, b: usize) {
        let d = self.dim;
        let (lo, hi) = (a.min(b), a.max(b));
        let swap_block = |v: &mut Vec<f64>| {
            let (l, h) = v.split_at_mut(hi * d);
            l[lo * d..(lo + 1) * d].swap_with_slice(&mut h[..d]);
        };
        swap_block(&mut self.x);
        swap_block(&mut self.parts.grad_u);
        self.parts.u.swap(lo, hi);
        if !self.parts.log_r.is_empty() {
            swap_block(&mut self.parts.grad_r);
            self.parts.log_r.swap(lo, hi);
        }
        self.walker.swap(lo, hi);
    }

    /// One round of neighbour swaps (even pairs on even sweeps, odd pairs on odd sweeps).
    fn swap_round(&mut self, rng: &mut dyn RngCore) -> Vec<u64> {
        let k = self.n_replicas();
        let mut accepted = vec![0u64; k.saturating_sub(1)];
        if k < 2 {
            return accepted;
        }
        let parity = (self.sweep_index % 2) as usize;
        for c in 0..self.n_chains {
            let mut i = parity;
            while i + 1 < k {
                let (ra, rb) = (self.row(c, i), self.row(c, i + 1));
                let la = swap_log_acceptance(self.config.betas[i], self.config.betas[i + 1], self.parts.u[ra], self.parts.u[rb]);
                let uni: f64 = rng.random::<f64>();
                self.stats.swap_attempts[i] += 1;
                self.stats.swap_accept_prob_sum[i] += la.exp();
                if la == 0.0 || uni.ln() < la {
                    self.stats.swap_accepts[i] += 1;
                    accepted[i] += 1;
                    self.swap_rows(ra, rb);
                }
                i += 2;
            }
            // Round trips: a configuration arriving at replica 0 after visiting K−1.
            let (bottom, top) = (self.walker[self.row(c, 0)], self.walker[self.row(c, k - 1)]);
            if self.walker_dir[top] == 1 {
                self.walker_dir[top] = 2;
            }
            if self.walker_dir[bottom] == 2 {
                self.stats.round_trips += 1;
            }
            self.walker_dir[bottom] = 1;
        }
        accepted
    }

    /// One sweep: an HMC move of every replica, then a round of neighbour swaps. Step sizes are
    /// adapted iff `adapt`.
    ///
    /// Randomness per sweep, in order: K uniforms (step jitter, if `step_jitter > 0`),
    /// `n_chains·K·d` standard normals (momenta), `n_chains·K` Exp(1) (HMC acceptance), then one
    /// uniform per attempted swap (chain-major, pairs ascending).
    ///
    /// # Errors
    /// Density or shape faults (bad points are rejected, not errors).
    pub fn sweep(&mut self, adapt: bool, rng: &mut dyn RngCore) -> Result<SweepInfo> {
        let (acceptance, mean_accept_prob, step_sizes) = self.hmc_move(adapt, rng)?;
        let swaps_accepted = self.swap_round(rng);
        self.sweep_index += 1;
        self.stats.n_sweeps += 1;
        Ok(SweepInfo { acceptance, mean_accept_prob, step_sizes, swaps_accepted })
    }

    /// `n_sweeps` sweeps with step-size adaptation, then [`reset_stats`](Self::reset_stats).
    ///
    /// # Errors
    /// As [`sweep`](Self::sweep).
    pub fn burn_in(&mut self, n_sweeps: usize, rng: &mut dyn RngCore) -> Result<()> {
        for _ in 0..n_sweeps {
            self.sweep(true, rng)?;
        }
        self.reset_stats();
        Ok(())
    }

    /// `n_sweeps` production sweeps with frozen step sizes; after every `every`-th sweep
    /// (`every` ≥ 1) calls `observe(sweeps_done_in_this_call, &self)`, e.g. to record the
    /// replica-0 configurations with [`positions`](Self::positions)`(0)`.
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] for `every == 0`; errors of [`sweep`](Self::sweep) or of
    /// `observe`.
    pub fn run<F>(&mut self, n_sweeps: usize, every: usize, rng: &mut dyn RngCore, mut observe: F) -> Result<()>
    where
        F: FnMut(usize, &Self) -> Result<()>,
    {
        if every == 0 {
            return Err(McmcError::InvalidConfig("output interval `every` must be >= 1".into()));
        }
        for s in 1..=n_sweeps {
            self.sweep(false, rng)?;
            if s % every == 0 {
                observe(s, self)?;
            }
        }
        Ok(())
    }

    /// Runs `n_outputs·every` production sweeps and returns the replica-0 configurations of all
    /// chains after every `every`-th sweep: `[n_outputs·n_chains, d]`, output-major
    /// (output t, chain c at row t·n_chains + c).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn sample_cold(&mut self, n_outputs: usize, every: usize, rng: &mut dyn RngCore) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(n_outputs * self.n_chains * self.dim);
        self.run(n_outputs * every, every, rng, |_, re| {
            out.extend(re.positions(0)?);
            Ok(())
        })?;
        Ok(out)
    }
}
