//! # fab-train
//!
//! FAB as a sampler family of the fab-rs sampler core ([`fab_sampler`]): the flow trained by
//! annealed importance sampling toward p^α q^{1−α} with the prioritised replay buffer, FAB
//! without buffer, and the flow-only baselines.
//!
//! - [`ExperimentConfig`]: one TOML file per experiment (target, flow, AIS, buffer, training,
//!   evaluation), strict parsing, `key=value` overrides, validation naming the key; it is the
//!   family's [`fab_sampler::FamilyConfig`].
//! - [`FabSampler`]: the [`fab_sampler::Sampler`] — flow, AIS, buffer, optimiser and one
//!   [`Objective`] per loss, composed from the free functions of [`losses`].
//! - The run driver, evaluation, checkpoints and plots are the sampler core's
//!   ([`fab_sampler::run`]); the optimiser is the `fab-optim` crate ([`optim`]).
#![deny(missing_docs)]

pub mod config;
mod error;
mod fab;
pub mod losses;

/// The optimiser (Adam/AdamW, schedules, clipping): the `fab-optim` crate, re-exported so that
/// `fab_train::optim::…` paths keep working.
pub use fab_optim as optim;

pub use config::{EvalConfig, ExperimentConfig, LossKind, Precision, TrainConfig, FAMILY};
pub use error::{Result, TrainError};
pub use fab::{Accumulator, FabParts, FabSampler, FabStats, Objective, TRAIN_STREAM};
pub use fab_sampler::run::EVAL_STREAM;
