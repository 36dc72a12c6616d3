//! Step-size adaptation, kept apart from the (stateless) kernels and serialisable for
//! checkpoints.
//!
//! FAB's rule (docs/ALGORITHMS.md, "HMC and Metropolis"): after each AIS level's transition, with
//! p̄ the mean over the batch of
//! min(1, α) (non-finite α counted as 0), the step size is multiplied by a factor if p̄ > 0.65 and
//! divided by it otherwise. HMC uses ε_i = `eps[i]` + common with factor 1.05 for `eps[i]` and 1.02
//! for the shared `common` (updated once per level); Metropolis uses ×/÷ 1.05 per level.

use serde::{Deserialize, Serialize};

use crate::{McmcError, Result};

/// The reference's target acceptance probability.
pub const TARGET_ACCEPT: f64 = 0.65;

/// Adapted step sizes are kept within [`MIN_STEP_SIZE`, `MAX_STEP_SIZE`] so that a long run on a
/// pathological density can never produce a zero or infinite step (the reference has no bound;
/// a correct run never comes near these values).
pub const MIN_STEP_SIZE: f64 = 1e-12;
/// See [`MIN_STEP_SIZE`].
pub const MAX_STEP_SIZE: f64 = 1e12;

/// One multiplicatively adapted quantity: `value` ×= `factor` when the observed acceptance is
/// above `target_accept`, ÷= otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepSizeAdapter {
    /// Current value.
    pub value: f64,
    /// Multiplicative factor (> 1).
    pub factor: f64,
    /// Target acceptance probability in (0, 1).
    pub target_accept: f64,
}

impl StepSizeAdapter {
    /// A validated adapter. `value` may be 0 (a disabled component) but not negative.
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] for a negative or non-finite value, a factor ≤ 1 or a target
    /// outside (0, 1).
    pub fn new(value: f64, factor: f64, target_accept: f64) -> Result<Self> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(McmcError::InvalidConfig(format!("step size must be finite and >= 0, got {value}")));
        }
        if !(factor.is_finite() && factor > 1.0) {
            return Err(McmcError::InvalidConfig(format!("adaptation factor must be finite and > 1, got {factor}")));
        }
        if !(target_accept > 0.0 && target_accept < 1.0) {
            return Err(McmcError::InvalidConfig(format!("target acceptance must be in (0, 1), got {target_accept}")));
        }
        Ok(Self { value, factor, target_accept })
    }

    /// The current value.
    pub fn current(&self) -> f64 {
        self.value
    }

    /// One adaptation step from the observed mean acceptance probability. A NaN statistic
    /// leaves the value unchanged; the result is clamped to [`MIN_STEP_SIZE`, `MAX_STEP_SIZE`]
    /// (a zero value stays zero).
    pub fn advance(&mut self, mean_accept_prob: f64) {
        if mean_accept_prob.is_nan() || self.value == 0.0 {
            return;
        }
        let v = if mean_accept_prob > self.target_accept { self.value * self.factor } else { self.value / self.factor };
        self.value = v.clamp(MIN_STEP_SIZE, MAX_STEP_SIZE);
    }
}

/// Per-level step sizes plus an optional shared component: ε_i = `levels[i]` + common.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSizes {
    /// The shared component (HMC), updated once per level; `None` for Metropolis.
    pub common: Option<StepSizeAdapter>,
    /// One adapter per AIS intermediate distribution.
    pub levels: Vec<StepSizeAdapter>,
}

impl StepSizes {
    /// FAB's HMC step sizes: common = ε0·w (factor 1.02), `levels[i]` = ε0·(1−w) (factor 1.05),
    /// with w = `common_weight` (0.1 in the reference; ALDP passes ε0 = 0.05, w = 0.05).
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] for ε0 not finite and > 0, w outside [0, 1) or a bad target.
    pub fn hmc(n_levels: usize, init_step_size: f64, common_weight: f64, target_accept: f64) -> Result<Self> {
        if !(init_step_size.is_finite() && init_step_size > 0.0) {
            return Err(McmcError::InvalidConfig(format!("init_step_size must be finite and > 0, got {init_step_size}")));
        }
        if !(0.0..1.0).contains(&common_weight) {
            return Err(McmcError::InvalidConfig(format!("common_weight must be in [0, 1), got {common_weight}")));
        }
        let common = StepSizeAdapter::new(init_step_size * common_weight, 1.02, target_accept)?;
        let level = StepSizeAdapter::new(init_step_size * (1.0 - common_weight), 1.05, target_accept)?;
        Ok(Self { common: Some(common), levels: vec![level; n_levels] })
    }

    /// Metropolis step sizes: `levels[i]` = σ (factor 1.05), no shared component.
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] for σ not finite and > 0 or a bad target.
    pub fn metropolis(n_levels: usize, step_size: f64, target_accept: f64) -> Result<Self> {
        if !(step_size.is_finite() && step_size > 0.0) {
            return Err(McmcError::InvalidConfig(format!("step_size must be finite and > 0, got {step_size}")));
        }
        let level = StepSizeAdapter::new(step_size, 1.05, target_accept)?;
        Ok(Self { common: None, levels: vec![level; n_levels] })
    }

    /// Number of levels.
    pub fn n_levels(&self) -> usize {
        self.levels.len()
    }

    /// ε for level `level` (0-based): `levels[level]` + common.
    ///
    /// # Errors
    /// [`McmcError::LevelOutOfRange`].
    pub fn step_size(&self, level: usize) -> Result<f64> {
        let l = self.levels.get(level).ok_or(McmcError::LevelOutOfRange { level, n_levels: self.levels.len() })?;
        Ok(l.value + self.common.map_or(0.0, |c| c.value))
    }

    /// Adapts level `level` and the shared component from that level's mean acceptance
    /// probability.
    ///
    /// # Errors
    /// [`McmcError::LevelOutOfRange`].
    pub fn advance(&mut self, level: usize, mean_accept_prob: f64) -> Result<()> {
        let n_levels = self.levels.len();
        let l = self.levels.get_mut(level).ok_or(McmcError::LevelOutOfRange { level, n_levels })?;
        l.advance(mean_accept_prob);
        if let Some(c) = self.common.as_mut() {
            c.advance(mean_accept_prob);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmc_init_and_rule() {
        let mut s = StepSizes::hmc(4, 1.0, 0.1, TARGET_ACCEPT).unwrap();
        assert!((s.step_size(2).unwrap() - 1.0).abs() < 1e-15);
        s.advance(2, 0.9).unwrap();
        assert!((s.levels[2].value - 0.9 * 1.05).abs() < 1e-15);
        assert!((s.common.unwrap().value - 0.1 * 1.02).abs() < 1e-15);
        assert!((s.levels[1].value - 0.9).abs() < 1e-15);
        s.advance(1, 0.65).unwrap(); // not above the target ⇒ decrease
        assert!((s.levels[1].value - 0.9 / 1.05).abs() < 1e-15);
        assert!((s.common.unwrap().value - 0.1).abs() < 1e-15);
        assert!(s.step_size(4).is_err());
        assert!(s.advance(9, 0.5).is_err());
        // ALDP: ε0 = 0.05, w = 0.05 ⇒ common 0.0025, per level 0.0475
        // (docs/ALGORITHMS.md, "HMC and Metropolis").
        let a = StepSizes::hmc(8, 0.05, 0.05, TARGET_ACCEPT).unwrap();
        assert!((a.common.unwrap().value - 0.0025).abs() < 1e-15);
        assert!((a.levels[0].value - 0.0475).abs() < 1e-15);
    }

    #[test]
    fn invalid_settings_are_errors_and_state_round_trips() {
        assert!(StepSizes::hmc(2, 0.0, 0.1, 0.65).is_err());
        assert!(StepSizes::hmc(2, 1.0, 1.0, 0.65).is_err());
        assert!(StepSizes::hmc(2, 1.0, 0.1, 1.0).is_err());
        assert!(StepSizes::metropolis(2, f64::NAN, 0.65).is_err());
        assert!(StepSizeAdapter::new(1.0, 1.0, 0.65).is_err());
        let mut m = StepSizes::metropolis(3, 5.0, 0.65).unwrap();
        m.advance(0, 0.1).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        let back: StepSizes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        // Bounds and NaN statistics.
        let mut a = StepSizeAdapter::new(1e-12, 1.05, 0.65).unwrap();
        a.advance(0.0);
        assert_eq!(a.value, MIN_STEP_SIZE);
        a.advance(f64::NAN);
        assert_eq!(a.value, MIN_STEP_SIZE);
    }
}
