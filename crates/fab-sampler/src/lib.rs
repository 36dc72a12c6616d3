//! # fab-sampler
//!
//! The sampler core of fab-rs: what every sampler family (FAB, GFlowNets, diffusion samplers,
//! or your own) implements to be trained, evaluated, checkpointed and plotted through one run
//! driver, and what a target must provide.
//!
//! - [`Sampler`] (with [`Model`]): one training iteration at a time ([`StepReport`] with the
//!   family's typed [`StepStats`]), draws with log q, evaluation sample sets, checkpoint state.
//! - [`FamilyConfig`]: a family's TOML configuration, its [`RunSettings`], and how it builds
//!   its sampler. Registering a family with the command line is registering this type.
//! - [`Target`]: a log-density plus optional capabilities (exact sampler, log Z, a
//!   [`SampleFilter`], target-specific metrics and plots).
//! - [`eval`]: metrics on weighted samples [`WeightedSamples`] — one path for exact-density
//!   models, AIS and path-weighted samplers; one log Ẑ ([`log_z_hat`]).
//! - [`memory`]: a lower bound on a run's memory, checked before anything is written.
//! - [`run`]: the driver — run directory, checkpoints and bit-identical resume, evaluation
//!   schedule, [`observe`]rs (metrics JSONL, progress), final evaluation and plots.
//!
//! The path of one iteration and the crate graph: `docs/ARCHITECTURE.md`.
#![deny(missing_docs)]

pub mod config;
mod error;
pub mod eval;
pub mod memory;
pub mod observe;
mod report;
pub mod run;
mod sampler;
mod samples;
mod target;

pub use error::{Error, Result};
pub use eval::{EvalContext, EvalSizes, Evaluation, Metrics, TestSet};
pub use memory::MemoryEstimate;
pub use report::{compare_runs, training_curves};
pub use run::{Run, RunLock, RunOptions, RunOutcome, StopReason, StopSignal};
pub use sampler::{FamilyConfig, KeepCheckpoints, Model, RunSettings, Sampler, StepReport, StepStats};
pub use samples::{log_prob_host, log_z_hat, Draws, NamedSamples, WeightedSamples, HOST_CHUNK};
pub use target::{DensityTarget, PlotContext, SampleFilter, Target};
