//! # fab-core
//!
//! The small shared vocabulary of fab-rs: batched log-densities ([`LogDensity`]), exact samplers
//! ([`ExactSample`]), sampling proposals such as the flow ([`Proposal`]), invertible maps
//! ([`Flow`]), seeded portable randomness ([`rng`]), a few numerically careful statistics
//! ([`stats`]) and sample-comparison metrics between point clouds (exact optimal transport and
//! MMD, [`transport`]).
//!
//! Every trait here is object safe, takes tensors of shape `[n, d]` and returns `Result`.
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
pub mod alloc;
pub mod density;
mod error;
pub mod float_env;
pub mod flow;
pub mod gemm;
pub mod linalg;
pub mod npy;
pub mod params;
mod precision;
pub mod rng;
pub mod stats;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod transport;

pub use density::{autodiff_log_prob_and_grad, check_points, Counted, ExactSample, FnDensity, LogDensity, OnDevice, Proposal};
pub use error::{Error, Result};
pub use flow::{Chain, Flow, Inverted};
pub use params::{Grads, ParamSet};
pub use precision::Precision;
pub use rng::{seeded_rng, FabRng};

/// Copies a tensor of any float dtype into a flat host `Vec<f64>` (row-major).
pub fn to_f64_vec(t: &candle_core::Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?)
}
