//! # fab-mcmc
//!
//! Batched MCMC transition kernels for FAB's annealed importance sampling (one chain per row):
//! - [`Hmc`]: Hamiltonian Monte Carlo with unit mass, L leapfrog steps and one Metropolis test
//!   per trajectory, gradient clamp ±1e3 (docs/ALGORITHMS.md, "HMC and Metropolis");
//! - [`mala`]: Metropolis-adjusted Langevin with a shared adapted step (the diffusion samplers'
//!   local search, docs/DIFFUSION.md, "Local search");
//! - [`Metropolis`]: random-walk Metropolis with Gaussian proposals
//!   (docs/ALGORITHMS.md, "HMC and Metropolis");
//! - [`StepSizes`]: FAB's per-level (+ shared) multiplicative step-size adaptation toward
//!   acceptance 0.65, serialisable for checkpoints;
//! - [`ReplicaExchange`]: replica exchange (parallel tempering) with HMC moves over any
//!   [`fab_core::LogDensity`], for reference samples of multimodal targets (ALDP).
//!
//! Kernels act on a [`Point`] that caches the two parts of an annealed density
//! log f = c_q·log q + c_p·log p ([`Coeffs`]) and, for HMC, their gradients; a level change only
//! recombines cached values. A plain [`fab_core::LogDensity`] is the special case
//! [`TargetOnly`] + [`Coeffs::TARGET`] (see [`run_chain`]).
//!
//! Kernels never panic on non-finite points: such proposals are rejected and counted in
//! [`TransitionInfo::n_non_finite`]. All randomness comes from the caller's RNG, drawn on the host.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use fab_core::{seeded_rng, FnDensity};
//! use fab_mcmc::{run_chain, Hmc};
//! let target = FnDensity::new(2, |x: &Tensor| Ok((x.sqr()?.sum(1)? * -0.5)?));
//! let x0 = Tensor::zeros((64, 2), candle_core::DType::F64, &Device::Cpu).unwrap();
//! let mut rng = seeded_rng(0, 0);
//! let hmc = Hmc::new(5).unwrap();
//! let (x, infos) = run_chain(&hmc, &target, &x0, 10, 0.3, &mut rng).unwrap();
//! assert_eq!(x.dims(), &[64, 2]);
//! assert!(infos[9].acceptance_rate > 0.5);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod adapt;
mod error;
mod hmc;
mod kernel;
mod mala;
mod metropolis;
mod point;
mod replica;

pub use adapt::{StepSizeAdapter, StepSizes, MAX_STEP_SIZE, MIN_STEP_SIZE, TARGET_ACCEPT};
pub use error::{McmcError, Result};
pub use hmc::{Hmc, DEFAULT_MAX_GRAD};
pub use kernel::{run_chain, TransitionInfo, TransitionKernel};
pub use mala::{mala, MalaConfig, MalaOutput, MalaSchedule};
pub use metropolis::Metropolis;
pub use point::{Annealed, Coeffs, PartsDensity, Point, TargetOnly};
pub use replica::{
    betas_from_temperatures, geometric_temperatures, linear_temperatures, swap_log_acceptance, ReplicaExchange, ReplicaExchangeConfig,
    ReplicaStats, SweepInfo,
};
