//! # fab-train
//!
//! FAB losses, baselines, the optimiser, evaluation, checkpoints and the training loop.
//!
//! - [`ExperimentConfig`]: one TOML file per experiment (target, flow, AIS, buffer, training,
//!   evaluation), strict parsing, `key=value` overrides, validation naming the key;
//! - [`Trainer`]: FAB with the prioritised buffer (Algorithm 1/2), FAB without buffer, and the
//!   baselines (reverse KL, forward KL, α=2 with flow samples), checkpoint/resume;
//! - [`eval`]: the reference's metrics;
//! - [`run`]: the experiment driver used by the `fab` command line (output directory, metrics
//!   files, progress, plots);
//! - [`optim`] and [`plot`]: the `fab-optim` and `fab-plot` crates, re-exported.
#![deny(missing_docs)]

pub mod aldp_eval;
pub mod config;
mod error;
pub mod eval;
mod report;
pub mod run;
pub mod target;
mod trainer;

/// The optimiser (Adam/AdamW, schedules, clipping): the `fab-optim` crate, re-exported so that
/// `fab_train::optim::…` paths keep working.
pub use fab_optim as optim;
/// The PNG figures: the `fab-plot` crate, re-exported so that `fab_train::plot::…` paths keep
/// working.
pub use fab_plot as plot;

pub use config::{EvalConfig, ExperimentConfig, LossKind, Precision, TrainConfig};
pub use error::{Result, TrainError};
pub use target::{Target, TargetConfig};
pub use trainer::{IterInfo, Trainer, EVAL_STREAM, TRAIN_STREAM};
