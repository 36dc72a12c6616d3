//! The built-in targets as a configuration section (`[target]` of an experiment TOML).

use std::sync::Arc;

use candle_core::{DType, Device};
use fab_sampler::Target;
use serde::{Deserialize, Serialize};

use crate::aldp::{AldpEvalTarget, AldpForceField, AldpTarget, InternalCoordinates};
use crate::gmm::{Gmm, GmmConfig};
use crate::many_well::ManyWell;
use crate::{Result, TargetError};

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
    /// The 25-component mixture of the diffusion-sampler benchmarks (`GmmConfig::grid25`).
    Gmm25 {},
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
        Self { temperature: crate::aldp::TEMPERATURE }
    }
}

impl TargetConfig {
    /// Dimension of the target.
    pub fn dim(&self) -> usize {
        match self {
            TargetConfig::Gmm { mixture } => mixture.as_ref().map_or(2, |m| m.dim),
            TargetConfig::Gmm25 {} => 2,
            TargetConfig::ManyWell { dim } => *dim,
            TargetConfig::Aldp(_) => crate::aldp::FLOW_DIM,
        }
    }

    /// Whether exact samples can be drawn (needed for forward-KL training and test-set metrics).
    pub fn has_exact_sampler(&self) -> bool {
        !matches!(self, TargetConfig::Aldp(_))
    }

    /// Whether the target has a sample filter (the alanine-dipeptide chirality check).
    pub fn has_filter(&self) -> bool {
        matches!(self, TargetConfig::Aldp(_))
    }

    /// Checks the section; the error names the key.
    pub fn validate(&self) -> Result<()> {
        match self {
            TargetConfig::Gmm { mixture: Some(m) } => m.validate().map_err(|e| TargetError::InvalidConfig(format!("target.mixture: {e}"))),
            TargetConfig::Gmm { mixture: None } | TargetConfig::Gmm25 {} => Ok(()),
            TargetConfig::ManyWell { dim } => {
                if *dim < 2 || dim % 2 != 0 {
                    Err(TargetError::InvalidConfig(format!("target.dim must be even and ≥ 2 for many_well, got {dim}")))
                } else {
                    Ok(())
                }
            }
            TargetConfig::Aldp(a) => {
                if !(a.temperature > 0.0 && a.temperature.is_finite()) {
                    Err(TargetError::InvalidConfig(format!("target.temperature must be > 0, got {}", a.temperature)))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Builds the target for `dtype` on `device` (alanine dipeptide also loads the shipped
    /// replica-exchange reference for its metrics; without it those metrics are skipped with a
    /// note).
    pub fn build(&self, dtype: DType, device: &Device) -> Result<Arc<dyn Target>> {
        self.validate()?;
        Ok(match self {
            TargetConfig::Gmm { mixture: None } => Arc::new(Gmm::fab40(dtype, device)?),
            TargetConfig::Gmm { mixture: Some(m) } => Arc::new(Gmm::from_config(m, dtype, device)?),
            TargetConfig::Gmm25 {} => Arc::new(Gmm::from_config(&crate::gmm::GmmConfig::grid25(), dtype, device)?),
            TargetConfig::ManyWell { dim } => Arc::new(ManyWell::new(*dim, dtype, device)?),
            TargetConfig::Aldp(a) => {
                let ff = Arc::new(AldpForceField::amber_implicit());
                let ic = Arc::new(InternalCoordinates::alanine_dipeptide());
                Arc::new(AldpEvalTarget::with_shipped_reference(AldpTarget::with_temperature(ff, ic, a.temperature)?))
            }
        })
    }
}
