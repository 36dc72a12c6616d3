//! AIS configuration (serde/TOML) with the reference's defaults and presets.

use serde::{Deserialize, Serialize};

use crate::{AisError, Result};

/// Spacing of the inverse temperatures β₀ = 0 < β₁ ≤ … ≤ β_{n+1} = 1
/// (docs/ALGORITHMS.md, "Annealed importance sampling").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// β = linspace(0, 1, n + 2) (used in every paper config).
    #[default]
    Linear,
    /// ⌊n/4⌋ intermediate points linearly in [0, 0.01), the rest geometrically from 0.01 to 1.
    Geometric,
}

impl Schedule {
    /// The n + 2 values of β for `n_intermediate` = n intermediate distributions.
    pub fn betas(self, n_intermediate: usize) -> Vec<f64> {
        let n = n_intermediate;
        if n == 0 {
            return vec![0.0, 1.0];
        }
        match self {
            Schedule::Linear => (0..n + 2).map(|i| i as f64 / (n + 1) as f64).collect(),
            Schedule::Geometric => {
                let n_lin = n / 4;
                let n_geom = n - n_lin - 1;
                // linspace(0, 0.01, n_lin + 2) without its last point ...
                let mut b: Vec<f64> = (0..n_lin + 1).map(|i| 0.01 * i as f64 / (n_lin + 1) as f64).collect();
                // ... then geomspace(0.01, 1, n_geom + 2), endpoints exact.
                let k = n_geom + 2;
                b.extend((0..k).map(|i| if i + 1 == k { 1.0 } else { 0.01 * 100f64.powf(i as f64 / (k - 1) as f64) }));
                b
            }
        }
    }
}

/// Settings of the HMC transition (docs/ALGORITHMS.md, "HMC and Metropolis"; defaults = Many Well).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HmcConfig {
    /// Leapfrog steps per trajectory L (Many Well 5, ALDP 4).
    pub n_leapfrog: usize,
    /// Initial step size ε0 (Many Well 1.0, ALDP 0.05).
    pub init_step_size: f64,
    /// Fraction w of ε0 in the shared component: common = ε0·w, per level ε0·(1−w) (0.1; ALDP
    /// 0.05).
    pub common_weight: f64,
    /// Adapt the step sizes toward `target_accept` (true in every paper config).
    pub adapt: bool,
    /// Target acceptance probability (0.65).
    pub target_accept: f64,
    /// Element-wise gradient clamp (1e3).
    pub max_grad: f64,
}

impl Default for HmcConfig {
    fn default() -> Self {
        Self {
            n_leapfrog: 5,
            init_step_size: 1.0,
            common_weight: 0.1,
            adapt: true,
            target_accept: fab_mcmc::TARGET_ACCEPT,
            max_grad: fab_mcmc::DEFAULT_MAX_GRAD,
        }
    }
}

/// Settings of the random-walk Metropolis transition (docs/ALGORITHMS.md, "HMC and Metropolis";
/// defaults = GMM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetropolisConfig {
    /// Proposal standard deviation σ (GMM 5.0).
    pub step_size: f64,
    /// Updates per intermediate distribution (GMM 1).
    pub n_updates: usize,
    /// Adapt σ with ×/÷1.05 toward `target_accept` (false for the GMM).
    pub adapt: bool,
    /// Target acceptance probability (0.65).
    pub target_accept: f64,
}

impl Default for MetropolisConfig {
    fn default() -> Self {
        Self { step_size: 5.0, n_updates: 1, adapt: false, target_accept: fab_mcmc::TARGET_ACCEPT }
    }
}

/// The MCMC transition used at every intermediate distribution.
///
/// TOML: `[transition.hmc]` or `[transition.metropolis]` with the fields of the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TransitionConfig {
    /// Hamiltonian Monte Carlo.
    Hmc(HmcConfig),
    /// Random-walk Metropolis.
    Metropolis(MetropolisConfig),
}

impl Default for TransitionConfig {
    fn default() -> Self {
        TransitionConfig::Metropolis(MetropolisConfig::default())
    }
}

/// Configuration of annealed importance sampling from the flow q toward g = p^α q^{1−α}
/// (training) or g = p (`p_target`, evaluation).
///
/// Defaults are the GMM paper config; see [`AisConfig::many_well`] and [`AisConfig::aldp`].
///
/// ```
/// let cfg: fab_ais::AisConfig = toml::from_str(r#"
///     n_intermediate = 4
///     [transition.hmc]
///     n_leapfrog = 5
///     init_step_size = 1.0
/// "#).unwrap();
/// cfg.validate().unwrap();
/// assert_eq!(cfg, fab_ais::AisConfig::many_well());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AisConfig {
    /// Number of intermediate distributions n (transitions per pass; GMM 1, Many Well 4,
    /// ALDP 8). 0 gives plain importance sampling.
    pub n_intermediate: usize,
    /// β spacing.
    pub schedule: Schedule,
    /// α of the α-divergence (2 in every paper config).
    pub alpha: f64,
    /// The MCMC transition.
    pub transition: TransitionConfig,
    /// AIS toward p instead of p^α q^{1−α}.
    pub p_target: bool,
}

impl Default for AisConfig {
    fn default() -> Self {
        Self::gmm()
    }
}

impl AisConfig {
    /// GMM: 1 intermediate distribution, Metropolis with σ = 5.0, one update, no adaptation.
    pub fn gmm() -> Self {
        Self {
            n_intermediate: 1,
            schedule: Schedule::Linear,
            alpha: 2.0,
            transition: TransitionConfig::Metropolis(MetropolisConfig::default()),
            p_target: false,
        }
    }

    /// Many Well: 4 intermediate distributions, HMC with L = 5, ε0 = 1.0 (0.1 shared), adaptive.
    pub fn many_well() -> Self {
        Self { n_intermediate: 4, transition: TransitionConfig::Hmc(HmcConfig::default()), ..Self::gmm() }
    }

    /// ALDP: 8 intermediate distributions, HMC with L = 4, ε0 = 0.05 and w = 0.05
    /// (0.0025 shared + 0.0475 per level), adaptive.
    pub fn aldp() -> Self {
        Self {
            n_intermediate: 8,
            transition: TransitionConfig::Hmc(HmcConfig {
                n_leapfrog: 4,
                init_step_size: 0.05,
                common_weight: 0.05,
                ..HmcConfig::default()
            }),
            ..Self::gmm()
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`AisError::InvalidConfig`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(AisError::InvalidConfig(m));
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(format!("alpha must be finite and > 0, got {}", self.alpha));
        }
        let target_ok = |t: f64| t > 0.0 && t < 1.0;
        match &self.transition {
            TransitionConfig::Hmc(h) => {
                if h.n_leapfrog == 0 {
                    return bad("transition.hmc.n_leapfrog must be >= 1".into());
                }
                if !(h.init_step_size.is_finite() && h.init_step_size > 0.0) {
                    return bad(format!("transition.hmc.init_step_size must be finite and > 0, got {}", h.init_step_size));
                }
                if !(0.0..1.0).contains(&h.common_weight) {
                    return bad(format!("transition.hmc.common_weight must be in [0, 1), got {}", h.common_weight));
                }
                if !target_ok(h.target_accept) {
                    return bad(format!("transition.hmc.target_accept must be in (0, 1), got {}", h.target_accept));
                }
                if h.max_grad.is_nan() || h.max_grad <= 0.0 {
                    return bad(format!("transition.hmc.max_grad must be > 0, got {}", h.max_grad));
                }
            }
            TransitionConfig::Metropolis(m) => {
                if !(m.step_size.is_finite() && m.step_size > 0.0) {
                    return bad(format!("transition.metropolis.step_size must be finite and > 0, got {}", m.step_size));
                }
                if m.n_updates == 0 {
                    return bad("transition.metropolis.n_updates must be >= 1".into());
                }
                if !target_ok(m.target_accept) {
                    return bad(format!("transition.metropolis.target_accept must be in (0, 1), got {}", m.target_accept));
                }
            }
        }
        Ok(())
    }
}
