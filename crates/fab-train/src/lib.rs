//! # fab-train
//!
//! FAB losses, baselines, the optimiser, evaluation, checkpoints and the training loop.
#![deny(missing_docs)]

pub mod optim;
