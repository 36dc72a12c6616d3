//! Which target a run trains on, from configuration.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use fab_core::{ExactSample, LogDensity};
use fab_targets::aldp::{AldpForceField, AldpTarget, InternalCoordinates};
use fab_targets::gmm::{Gmm, GmmConfig};
use fab_targets::many_well::ManyWell;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// The target section of an experiment.
///
/// ```toml
/// [target]
/// type = "gmm"            # the FAB 40-mode mixture; or give a mixture:
/// # mixture = { dim = 2, means = [[0.0, 0.0], [5.0, 5.0]], scales = 1.0 }
///
/// [target]
/// type = "many_well"
/// dim = 32
///
/// [target]
/// type = "aldp"           # alanine dipeptide in internal coordinates (60-D)
/// temperature = 300.0
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetConfig {
    /// A Gaussian mixture (the FAB 40-component one unless `mixture` is given).
    Gmm {
        /// A user-defined mixture; `None` means the paper's 40-component mixture.
        #[serde(default)]
        mixture: Option<GmmConfig>,
    },
    /// Many Well: dim/2 independent double wells.
    ManyWell {
        /// Even dimension (32 in the paper).
        dim: usize,
    },
    /// Alanine dipeptide in implicit solvent, in the 60-D internal (flow) coordinates.
    Aldp(AldpConfig),
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig::Gmm { mixture: None }
    }
}

/// Alanine-dipeptide target options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AldpConfig {
    /// Temperature in kelvin (300 in the paper).
    pub temperature: f64,
}

impl Default for AldpConfig {
    fn default() -> Self {
        Self { temperature: fab_targets::aldp::TEMPERATURE }
    }
}

impl TargetConfig {
    /// Dimension of the target.
    pub fn dim(&self) -> usize {
        match self {
            TargetConfig::Gmm { mixture } => mixture.as_ref().map_or(2, |m| m.dim),
            TargetConfig::ManyWell { dim } => *dim,
            TargetConfig::Aldp(_) => fab_targets::aldp::FLOW_DIM,
        }
    }

    /// Whether exact samples can be drawn (needed for forward-KL training and test-set metrics).
    pub fn has_exact_sampler(&self) -> bool {
        !matches!(self, TargetConfig::Aldp(_))
    }

    /// Checks the section.
    pub fn validate(&self) -> Result<()> {
        match self {
            TargetConfig::Gmm { mixture: Some(m) } => m.validate().map_err(|e| TrainError::Config(format!("target.mixture: {e}"))),
            TargetConfig::Gmm { mixture: None } => Ok(()),
            TargetConfig::ManyWell { dim } => {
                if *dim < 2 || dim % 2 != 0 {
                    Err(TrainError::Config(format!("target.dim must be even and ≥ 2 for many_well, got {dim}")))
                } else {
                    Ok(())
                }
            }
            TargetConfig::Aldp(a) => {
                if !(a.temperature > 0.0 && a.temperature.is_finite()) {
                    Err(TrainError::Config(format!("target.temperature must be > 0, got {}", a.temperature)))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Builds the target for `dtype` on `device`.
    pub fn build(&self, dtype: DType, device: &Device) -> Result<Target> {
        self.validate()?;
        Ok(match self {
            TargetConfig::Gmm { mixture: None } => Target::Gmm(Gmm::fab40(dtype, device)?),
            TargetConfig::Gmm { mixture: Some(m) } => Target::Gmm(Gmm::from_config(m, dtype, device)?),
            TargetConfig::ManyWell { dim } => Target::ManyWell(ManyWell::new(*dim, dtype, device)?),
            TargetConfig::Aldp(a) => {
                let ff = Arc::new(AldpForceField::amber_implicit());
                let ic = Arc::new(InternalCoordinates::alanine_dipeptide());
                Target::Aldp(Box::new(AldpTarget::with_temperature(ff, ic, a.temperature)?))
            }
        })
    }
}

/// A built target.
pub enum Target {
    /// Gaussian mixture.
    Gmm(Gmm),
    /// Many Well.
    ManyWell(ManyWell),
    /// Alanine dipeptide (flow coordinates).
    Aldp(Box<AldpTarget>),
    /// A user-supplied density (see [`crate::Trainer::with_target`]); evaluated with the
    /// target-independent metrics (ESS, log Z).
    Custom(Box<dyn LogDensity>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Gmm(g) => f.debug_tuple("Gmm").field(g).finish(),
            Target::ManyWell(m) => f.debug_tuple("ManyWell").field(m).finish(),
            Target::Aldp(_) => f.write_str("Aldp"),
            Target::Custom(d) => f.debug_struct("Custom").field("dim", &d.dim()).finish(),
        }
    }
}

impl Target {
    /// The (unnormalised) log-density.
    pub fn density(&self) -> &dyn LogDensity {
        match self {
            Target::Gmm(t) => t,
            Target::ManyWell(t) => t,
            Target::Aldp(t) => t.as_ref(),
            Target::Custom(d) => d.as_ref(),
        }
    }

    /// The exact sampler, if the target has one.
    pub fn exact(&self) -> Option<&dyn ExactSample> {
        match self {
            Target::Gmm(t) => Some(t),
            Target::ManyWell(t) => Some(t),
            Target::Aldp(_) | Target::Custom(_) => None,
        }
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.density().dim()
    }

    /// `n` exact samples (error for targets without an exact sampler).
    pub fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Result<Tensor> {
        match self.exact() {
            Some(s) => Ok(s.sample(n, rng)?),
            None => Err(TrainError::Config("this target has no exact sampler".into())),
        }
    }
}
