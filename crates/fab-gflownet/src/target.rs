//! The environment's reward as a sampler-core [`Target`]: terminal objects are points of
//! ℤ^state_len stored as f64, log p̃ = log R, and log Z is known on enumerable spaces.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use fab_core::LogDensity;
use fab_sampler::Target;

use crate::env::DiscreteEnv;

/// log R of a discrete environment on integer-valued rows.
#[derive(Debug)]
pub struct RewardDensity {
    env: Arc<dyn DiscreteEnv>,
    log_z: Option<f64>,
}

impl LogDensity for RewardDensity {
    fn dim(&self) -> usize {
        self.env.state_len()
    }

    fn log_prob(&self, x: &Tensor) -> fab_core::Result<Tensor> {
        let rows = x.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let v: Vec<f64> = rows
            .iter()
            .map(|r| {
                let s: Vec<i32> = r.iter().map(|v| v.round() as i32).collect();
                self.env.log_reward(&s)
            })
            .collect();
        Ok(Tensor::from_vec(v, rows.len(), x.device())?.to_dtype(x.dtype())?)
    }

    fn log_prob_and_grad(&self, _x: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        Err(fab_core::Error::InvalidArgument(format!("{} is discrete: log R has no gradient", self.env.name())))
    }

    fn log_normalizer(&self) -> Option<f64> {
        self.log_z
    }
}

/// A discrete environment's reward seen as a target.
#[derive(Debug)]
pub struct DiscreteTarget {
    density: RewardDensity,
}

impl DiscreteTarget {
    /// The target of `env` with its log Z (if known).
    pub fn new(env: Arc<dyn DiscreteEnv>, log_z: Option<f64>) -> Self {
        Self { density: RewardDensity { env, log_z } }
    }
}

impl Target for DiscreteTarget {
    fn density(&self) -> &dyn LogDensity {
        &self.density
    }
}
