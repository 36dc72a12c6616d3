//! # fab-diffusion
//!
//! Diffusion samplers trained as GFlowNets (Sendera et al. 2024; the diffusion part of the
//! Adaptive Teachers, Kim et al. 2025), on the fab-rs sampler core: a time-discretised
//! stochastic process from 0 with a learned Gaussian drift (optionally Langevin-parametrised,
//! optionally with learned variance), the fixed Brownian-bridge backward policy, and the
//! objectives TB (on- and off-policy), VarGrad, DB, SubTB(λ) with the forward-looking flow, and
//! PIS. Off-policy machinery: exploration noise, MALA local search, rank-prioritised replay
//! (`fab-buffer`) and the Adaptive Teacher. The mathematics: `docs/DIFFUSION.md`.
#![deny(missing_docs)]

pub mod config;
pub mod host;
pub mod model;
pub mod net;
pub mod objectives;
pub mod ops;
pub mod process;
pub mod sampler;

pub use config::{DiffusionConfig, FAMILY};
pub use fab_sampler::{Error, Result};
pub use model::{Diffusion, Learner, ModelSpec, OptimSpec, Paths, Source, Track};
pub use net::{Arch, NetShape};
pub use objectives::Objective;
pub use process::Process;
pub use sampler::DiffusionSampler;
