//! # fab-flows
//!
//! Normalizing flows for FAB, in float32 or float64:
//! - [`AffineCoupling`] (RealNVP, channel split, zero-initialised MLP ⇒ identity at start) and
//!   [`LuLinear`] (learnable LU-parametrised mixing) — the GMM and Many Well flows;
//! - base distributions ([`BaseDistribution`]): trainable diagonal Gaussian, uniform-on-circle ×
//!   Gaussian;
//! - [`FlowModel`]: sampling, log-density, gradients w.r.t. inputs (for HMC) and w.r.t.
//!   parameters (for the losses), safetensors checkpoints;
//! - [`FlowConfig`]: the paper's architectures from a TOML/serde config.
//!
//! Every layer has two implementations: candle ops (any device, autodiff) and a hand-written
//! CPU path ([`cpu`]) that the model uses on the CPU; the tests check one against the other and
//! both against numerical Jacobians.
#![deny(missing_docs)]

mod affine;
mod base;
pub mod config;
pub mod cpu;
mod error;
mod layer;
mod lu;
mod model;
pub mod nets;
mod periodic;
pub mod spline;
mod spline_coupling;

pub use affine::AffineCoupling;
pub use base::BaseDistribution;
pub use config::{CircularNsfConfig, FlowConfig, RealNvpConfig};
pub use error::{FlowError, Result};
pub use layer::Layer;
pub use lu::LuLinear;
pub use model::{Backend, FlowModel};
pub use periodic::{wrap, PeriodicShift, PeriodicWrap};
pub use spline_coupling::{SplineCoupling, SplineCouplingOptions};
