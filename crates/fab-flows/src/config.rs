//! Flow architectures from configuration (serde/TOML), with the paper's presets.

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::{AffineCoupling, BaseDistribution, FlowError, FlowModel, Layer, LuLinear, Result};

/// RNG stream used for parameter initialisation (other streams serve sampling, AIS, buffer).
pub const INIT_STREAM: u64 = 0x1417;

/// A flow architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FlowConfig {
    /// RealNVP affine couplings with LU mixing (GMM, Many Well).
    RealNvp(RealNvpConfig),
}

impl FlowConfig {
    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<()> {
        match self {
            FlowConfig::RealNvp(c) => c.validate(),
        }
    }

    /// Dimension of the modelled space.
    pub fn dim(&self) -> usize {
        match self {
            FlowConfig::RealNvp(c) => c.dim,
        }
    }

    /// Builds the model with parameters initialised from `seed` (same seed ⇒ same model).
    pub fn build(&self, seed: u64, dtype: DType, device: &Device) -> Result<FlowModel> {
        self.validate()?;
        match self {
            FlowConfig::RealNvp(c) => c.build(seed, dtype, device),
        }
    }
}

/// The RealNVP flow of SPEC §4.1: per layer an [`AffineCoupling`] (MLP with two hidden layers
/// of width `dim·layer_nodes_per_dim`) followed by an [`LuLinear`] mixing; trainable diagonal
/// Gaussian base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealNvpConfig {
    /// Dimension (≥ 2).
    pub dim: usize,
    /// Number of (coupling, mixing) layers.
    pub n_layers: usize,
    /// Hidden width per dimension: hidden = dim · layer_nodes_per_dim.
    pub layer_nodes_per_dim: usize,
    /// Hidden layers in each conditioner MLP.
    pub n_hidden_layers: usize,
    /// Whether each coupling is followed by a learnable LU mixing layer.
    pub lu_mixing: bool,
}

impl Default for RealNvpConfig {
    fn default() -> Self {
        Self::gmm()
    }
}

impl RealNvpConfig {
    /// The GMM flow: 2-D, 15 layers, hidden 80 (102 184 parameters).
    pub fn gmm() -> Self {
        Self { dim: 2, n_layers: 15, layer_nodes_per_dim: 40, n_hidden_layers: 2, lu_mixing: true }
    }

    /// The Many Well flow: 32-D, 10 layers, hidden 320 (1 205 184 parameters).
    pub fn many_well() -> Self {
        Self { dim: 32, n_layers: 10, layer_nodes_per_dim: 10, n_hidden_layers: 2, lu_mixing: true }
    }

    /// Hidden width of the conditioners.
    pub fn hidden(&self) -> usize {
        self.dim * self.layer_nodes_per_dim
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.dim < 2 {
            return Err(FlowError::InvalidConfig(format!("flow.dim must be ≥ 2, got {}", self.dim)));
        }
        if self.n_layers == 0 {
            return Err(FlowError::InvalidConfig("flow.n_layers must be ≥ 1".into()));
        }
        if self.layer_nodes_per_dim == 0 {
            return Err(FlowError::InvalidConfig("flow.layer_nodes_per_dim must be ≥ 1".into()));
        }
        Ok(())
    }

    /// Builds the model (see [`FlowConfig::build`]).
    pub fn build(&self, seed: u64, dtype: DType, device: &Device) -> Result<FlowModel> {
        self.validate()?;
        let mut rng = fab_core::seeded_rng(seed, INIT_STREAM);
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        for _ in 0..self.n_layers {
            layers.push(Box::new(AffineCoupling::new(self.dim, self.hidden(), self.n_hidden_layers, &mut rng, dtype, device)?));
            if self.lu_mixing {
                layers.push(Box::new(LuLinear::new(self.dim, &mut rng, dtype, device)?));
            }
        }
        FlowModel::new(BaseDistribution::diag_gaussian(self.dim, dtype, device)?, layers, dtype, device.clone())
    }
}
