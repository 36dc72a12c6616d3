//! # fab-ais
//!
//! Annealed importance sampling (AIS) from a normalizing flow q toward g = p^α q^{1−α} (FAB
//! training, α = 2 in the paper) or g = p (evaluation), exactly as in
//! docs/ALGORITHMS.md, "Annealed importance sampling":
//! log f_β = [(1−β) + β(1−α)]·log q + βα·log p (or (1−β)·log q + β·log p), linear or geometric
//! β schedules, HMC or Metropolis transitions from [`fab_mcmc`] with per-level adaptive step
//! sizes, and removal of samples with non-finite log q / log p.
//!
//! ```
//! use fab_ais::{Ais, AisConfig};
//! use fab_core::{seeded_rng, test_utils::DiagGaussian};
//! // q = N(0, 2²), target p = N(1, 1) scaled by e³ (log Z = 3).
//! let q = DiagGaussian::new(vec![0.0], vec![2.0]);
//! let p = DiagGaussian::new(vec![1.0], vec![1.0]).with_log_z(3.0);
//! let mut ais = Ais::new(AisConfig { p_target: true, n_intermediate: 4, ..AisConfig::gmm() }).unwrap();
//! let out = ais.run(&q, &p, 2000, &mut seeded_rng(0, 0)).unwrap();
//! assert!((out.log_z_estimate - 3.0).abs() < 0.1);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod ais;
mod config;
mod error;

pub use ais::{Ais, AisOutput, AisState};
pub use config::{AisConfig, HmcConfig, MetropolisConfig, Schedule, TransitionConfig};
pub use error::{AisError, Result};
