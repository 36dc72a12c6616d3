//! Flow architectures from configuration (serde/TOML), with the paper's presets.

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use rand::seq::index::sample;
use rand::Rng;

use crate::{
    AffineCoupling, BaseDistribution, FlowError, FlowModel, Layer, LuLinear, PeriodicShift, PeriodicWrap, Result, SplineCoupling,
    SplineCouplingOptions,
};

/// RNG stream used for parameter initialisation (other streams serve sampling, AIS, buffer).
pub const INIT_STREAM: u64 = 0x1417;
/// RNG stream for the random coupling masks (seeded with `seed + block`).
pub const MASK_STREAM: u64 = 0x1418;
/// RNG stream for the periodic shifts (seeded with `seed + block`).
pub const SHIFT_STREAM: u64 = 0x1419;

/// The 12 circular (periodic) coordinates of the alanine-dipeptide internal coordinates, in the
/// 60-D flow layout (docs/ALGORITHMS.md, "Targets").
pub const ALDP_CIRCULAR_DIMS: [usize; 12] = [5, 8, 17, 20, 23, 26, 29, 32, 44, 47, 50, 53];

/// A flow architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FlowConfig {
    /// RealNVP affine couplings with LU mixing (GMM, Many Well).
    RealNvp(RealNvpConfig),
    /// Rational-quadratic spline couplings with circular splines (alanine dipeptide).
    CircularNsf(CircularNsfConfig),
}

impl FlowConfig {
    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<()> {
        match self {
            FlowConfig::RealNvp(c) => c.validate(),
            FlowConfig::CircularNsf(c) => c.validate(),
        }
    }

    /// Dimension of the modelled space.
    pub fn dim(&self) -> usize {
        match self {
            FlowConfig::RealNvp(c) => c.dim,
            FlowConfig::CircularNsf(c) => c.dim,
        }
    }

    /// About how many parameters the flow has (from the sizes alone, as `f64` so that absurd
    /// sizes cannot overflow): for memory estimates before anything is built.
    pub fn approx_parameters(&self) -> f64 {
        match self {
            FlowConfig::RealNvp(c) => {
                let (d, h, k) = (c.dim as f64, c.hidden() as f64, c.n_hidden_layers as f64);
                // Conditioner: d/2 → h, (k−1)·(h → h), h → d (scale and shift of d/2), plus the LU.
                let mlp = (d / 2.0 + 1.0) * h + (k - 1.0).max(0.0) * (h + 1.0) * h + (h + 1.0) * d;
                c.n_layers as f64 * (mlp + if c.lu_mixing { d * d + d } else { 0.0 })
            }
            FlowConfig::CircularNsf(c) => {
                let (d, h) = (c.dim as f64, c.hidden as f64);
                // Conditioner on half the coordinates (circular ones as sin/cos), spline
                // parameters (widths, heights, derivatives) for the other half.
                let out = d / 2.0 * (3.0 * c.bins as f64 + 1.0);
                c.n_blocks as f64 * ((d / 2.0 + 1.0) * h + 2.0 * c.num_res_blocks as f64 * (h + 1.0) * h + (h + 1.0) * out)
            }
        }
    }

    /// Values per sample alive at once in a forward pass without gradients (one layer's
    /// activations): a chunk's working memory during sampling is at least this × chunk size.
    pub fn layer_values_per_sample(&self) -> f64 {
        match self {
            FlowConfig::RealNvp(c) => c.n_hidden_layers as f64 * c.hidden() as f64 + 3.0 * c.dim as f64,
            FlowConfig::CircularNsf(c) => {
                (2.0 * c.num_res_blocks as f64 + 1.0) * c.hidden as f64 + c.dim as f64 * (3.0 * c.bins as f64 + 2.0)
            }
        }
    }

    /// Values per sample that a forward pass keeps for its backward pass (every conditioner's
    /// hidden activations and each layer's outputs): a batch's activation memory is at least
    /// this × batch size × the size of one value.
    pub fn activations_per_sample(&self) -> f64 {
        match self {
            FlowConfig::RealNvp(c) => {
                let (d, h) = (c.dim as f64, c.hidden() as f64);
                c.n_layers as f64 * (c.n_hidden_layers as f64 * h + 3.0 * d + if c.lu_mixing { d } else { 0.0 })
            }
            FlowConfig::CircularNsf(c) => {
                let (d, h) = (c.dim as f64, c.hidden as f64);
                c.n_blocks as f64 * ((2.0 * c.num_res_blocks as f64 + 1.0) * h + d * (3.0 * c.bins as f64 + 2.0))
            }
        }
    }

    /// Builds the model with parameters initialised from `seed` (same seed ⇒ same model).
    pub fn build(&self, seed: u64, dtype: DType, device: &Device) -> Result<FlowModel> {
        self.validate()?;
        match self {
            FlowConfig::RealNvp(c) => c.build(seed, dtype, device),
            FlowConfig::CircularNsf(c) => c.build(seed, dtype, device),
        }
    }
}

/// The RealNVP flow of docs/ALGORITHMS.md, "Normalizing flows": per layer an [`AffineCoupling`]
/// (MLP with two hidden layers of width `dim·layer_nodes_per_dim`) followed by an [`LuLinear`]
/// mixing; trainable diagonal Gaussian base.
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

/// The neural-spline flow of docs/ALGORITHMS.md, "Normalizing flows": `n_blocks`
/// [`SplineCoupling`]s with random balanced masks (block i even: a fresh mask from `seed + i`;
/// odd: its complement), a [`PeriodicShift`] by s·π (s ~ U[0.5, 1.5) from `seed + i`) after
/// every odd block but the last, and a final [`PeriodicWrap`]; uniform-on-circle × Gaussian base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircularNsfConfig {
    /// Dimension.
    pub dim: usize,
    /// Periodic coordinates (on [−π, π)).
    pub circular_dims: Vec<usize>,
    /// Number of coupling blocks.
    pub n_blocks: usize,
    /// Hidden width of the residual-net conditioners.
    pub hidden: usize,
    /// Spline bins.
    pub bins: usize,
    /// Residual blocks per conditioner.
    pub num_res_blocks: usize,
    /// Spline interval half-width for the non-circular coordinates.
    pub tail_bound: f64,
    /// Whether to insert the periodic shifts.
    pub periodic_shifts: bool,
}

impl Default for CircularNsfConfig {
    fn default() -> Self {
        Self::aldp()
    }
}

impl CircularNsfConfig {
    /// The paper's alanine-dipeptide flow: 60-D, 12 blocks, hidden 256, 8 bins.
    pub fn aldp() -> Self {
        Self {
            dim: 60,
            circular_dims: ALDP_CIRCULAR_DIMS.to_vec(),
            n_blocks: 12,
            hidden: 256,
            bins: 8,
            num_res_blocks: 1,
            tail_bound: 5.0,
            periodic_shifts: true,
        }
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<()> {
        if self.dim < 2 {
            return Err(FlowError::InvalidConfig(format!("flow.dim must be ≥ 2, got {}", self.dim)));
        }
        if self.n_blocks == 0 || self.hidden == 0 {
            return Err(FlowError::InvalidConfig("flow.n_blocks and flow.hidden must be ≥ 1".into()));
        }
        if self.bins == 0 || self.bins > crate::spline::MAX_BINS {
            return Err(FlowError::InvalidConfig(format!("flow.bins must be in 1..={}, got {}", crate::spline::MAX_BINS, self.bins)));
        }
        if !(self.tail_bound > 0.0 && self.tail_bound.is_finite()) {
            return Err(FlowError::InvalidConfig(format!("flow.tail_bound must be finite and > 0, got {}", self.tail_bound)));
        }
        if let Some(c) = self.circular_dims.iter().find(|&&c| c >= self.dim) {
            return Err(FlowError::InvalidConfig(format!("flow.circular_dims contains {c} ≥ dim {}", self.dim)));
        }
        Ok(())
    }

    /// The coupling mask of every block (true = transformed).
    pub fn masks(&self, seed: u64) -> Vec<Vec<bool>> {
        let mut masks: Vec<Vec<bool>> = Vec::with_capacity(self.n_blocks);
        for i in 0..self.n_blocks {
            if i % 2 == 0 {
                let mut rng = fab_core::seeded_rng(seed.wrapping_add(i as u64), MASK_STREAM);
                let mut m = vec![false; self.dim];
                for j in sample(&mut rng, self.dim, self.dim / 2) {
                    m[j] = true;
                }
                masks.push(m);
            } else {
                let prev = &masks[i - 1];
                masks.push(prev.iter().map(|b| !b).collect());
            }
        }
        masks
    }

    /// Builds the model (see [`FlowConfig::build`]).
    pub fn build(&self, seed: u64, dtype: DType, device: &Device) -> Result<FlowModel> {
        self.validate()?;
        let mut rng = fab_core::seeded_rng(seed, INIT_STREAM);
        let mut circular = vec![false; self.dim];
        for &c in &self.circular_dims {
            circular[c] = true;
        }
        let opts = SplineCouplingOptions {
            bins: self.bins,
            hidden: self.hidden,
            num_blocks: self.num_res_blocks,
            tail_bound: self.tail_bound,
            identity_init: true,
        };
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        let has_circ = !self.circular_dims.is_empty();
        for (i, mask) in self.masks(seed).iter().enumerate() {
            layers.push(Box::new(SplineCoupling::new(mask, &circular, &opts, &mut rng, dtype, device)?));
            if self.periodic_shifts && has_circ && i % 2 == 1 && i + 1 < self.n_blocks {
                let mut srng = fab_core::seeded_rng(seed.wrapping_add(i as u64), SHIFT_STREAM);
                let s: f64 = srng.random::<f64>() + 0.5;
                layers.push(Box::new(PeriodicShift::new(
                    self.dim,
                    self.circular_dims.clone(),
                    std::f64::consts::PI,
                    s * std::f64::consts::PI,
                )?));
            }
        }
        if has_circ {
            layers.push(Box::new(PeriodicWrap::new(self.dim, self.circular_dims.clone(), std::f64::consts::PI)?));
        }
        let base = BaseDistribution::uniform_gaussian(self.dim, &self.circular_dims)?;
        FlowModel::new(base, layers, dtype, device.clone())
    }
}
