//! # fab-gflownet
//!
//! Generative flow networks on discrete spaces, trained through the fab-rs sampler core:
//! trajectory balance, detailed balance, sub-trajectory balance (λ) and flow matching; ε-greedy
//! exploration, learned or fixed backward policies, replay buffers with reward, loss or teacher
//! priorities, back-and-forth local search, GAFN intrinsic rewards, and the Adaptive Teacher
//! (Kim et al., ICLR 2025). Evaluation on enumerable spaces is exact: the policy's terminal
//! distribution is computed by dynamic programming over the DAG. The mathematics is in
//! `docs/GFLOWNETS.md`.
#![deny(missing_docs)]
// The numerical code walks several parallel arrays (states, actions, residuals) by one index;
// iterator chains over four zipped slices would hide that more than they help.
#![allow(clippy::needless_range_loop)]

pub mod bits;
pub mod config;
pub mod env;
pub mod exact;
pub mod gfn;
pub mod grid;
pub mod local_search;
pub mod net;
pub mod objectives;
pub mod policy;
pub mod rnd;
pub mod sampler;
pub mod target;
pub mod traj;

pub use config::{GflowConfig, FAMILY};
pub use env::{DiscreteEnv, Enumeration, ExactTarget};
pub use fab_sampler::{Error, Result};
pub use sampler::GflowSampler;
