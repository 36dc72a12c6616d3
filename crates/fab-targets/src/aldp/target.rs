//! Boltzmann densities of alanine dipeptide at 300 K in Cartesian and in flow (internal)
//! coordinates, with the energy regularisation of boltzgen (SPEC §3.1).

use std::sync::Arc;

use candle_core::Tensor;
use fab_core::{check_points, to_f64_vec, LogDensity};
use rayon::prelude::*;

use super::forcefield::{AldpForceField, GbScratch};
use super::internal::{to_tensor, InternalCoordinates, CART_DIM, FLOW_DIM};
use crate::{Result, TargetError};

/// Gas constant used by boltzgen, kJ/mol/K (not the CODATA 8.314462618e-3).
pub const GAS_CONSTANT: f64 = 8.314e-3;
/// Temperature of the FAB benchmark, K.
pub const TEMPERATURE: f64 = 300.0;
/// k_B T at 300 K as boltzgen computes it: 8.314e-3 × 300 = 2.4942 kJ/mol.
pub const KBT: f64 = GAS_CONSTANT * TEMPERATURE;
/// Reduced energies (in k_B T) from this value on are log-compressed.
pub const ENERGY_CUT: f64 = 1e8;
/// Reduced energies are clamped to this value before the compression.
pub const ENERGY_MAX: f64 = 1e20;

/// boltzgen's energy regularisation of a reduced energy u = E/k_BT, with du_reg/du.
///
/// u ← min(u, 1e20); if u ≥ 1e8: u ← ln(u − 1e8 + 1) + 1e8. The derivative is
/// 1/(u − 1e8 + 1) above the cut and 0 where the clamp is active. A non-finite u (NaN, ±∞)
/// gives (NaN, 0): the caller decides (the log-densities here turn it into log p = −∞).
pub fn regularize_energy_with_derivative(u: f64) -> (f64, f64) {
    if !u.is_finite() {
        return (f64::NAN, 0.0);
    }
    let (u, du) = if u > ENERGY_MAX { (ENERGY_MAX, 0.0) } else { (u, 1.0) };
    if u >= ENERGY_CUT {
        let s = u - ENERGY_CUT + 1.0;
        (s.ln() + ENERGY_CUT, du / s)
    } else {
        (u, du)
    }
}

/// boltzgen's energy regularisation of a reduced energy u (k_B T units); see
/// [`regularize_energy_with_derivative`].
pub fn regularize_energy(u: f64) -> f64 {
    regularize_energy_with_derivative(u).0
}

/// log p̃ = −u_reg and the factor ∂log p̃/∂E·(−k_BT) = du_reg/du for one energy in kJ/mol;
/// non-finite energies give (−∞, 0).
#[inline]
fn log_prob_of_energy(e: f64, kbt: f64) -> (f64, f64) {
    let (u, du) = regularize_energy_with_derivative(e / kbt);
    if u.is_finite() {
        (-u, du)
    } else {
        (f64::NEG_INFINITY, 0.0)
    }
}

/// The Boltzmann density of alanine dipeptide in Cartesian coordinates (66-D, nm):
/// log p̃(x) = −u_reg(E(x)/k_BT), gradient = F·du_reg/du / k_BT from the analytic forces.
///
/// Non-finite energies (NaN or infinite coordinates, atoms exactly on top of each other) give
/// log p̃ = −∞ with a zero gradient. The density is invariant under rigid motions, so it is not
/// normalisable in Cartesian space; use [`AldpTarget`] for FAB.
#[derive(Debug, Clone)]
pub struct AldpCartesian {
    ff: Arc<AldpForceField>,
    kbt: f64,
}

impl Default for AldpCartesian {
    fn default() -> Self {
        Self::new(Arc::new(AldpForceField::amber_implicit()))
    }
}

impl AldpCartesian {
    /// The density at 300 K with boltzgen's k_BT = 2.4942 kJ/mol.
    pub fn new(ff: Arc<AldpForceField>) -> Self {
        Self { ff, kbt: KBT }
    }

    /// The density at `temperature` (K), k_BT = 8.314e-3 × T.
    ///
    /// # Errors
    /// [`TargetError::InvalidConfig`] unless the temperature is finite and > 0.
    pub fn with_temperature(ff: Arc<AldpForceField>, temperature: f64) -> Result<Self> {
        Ok(Self { ff, kbt: checked_kbt(temperature)? })
    }

    /// The force field.
    pub fn force_field(&self) -> &AldpForceField {
        &self.ff
    }

    /// k_BT in kJ/mol.
    pub fn kbt(&self) -> f64 {
        self.kbt
    }

    /// Batched log p̃ and gradient on host f64 data (`xs`: `[n, 66]`).
    ///
    /// # Errors
    /// A shape error if `xs.len()` is not a multiple of 66.
    pub fn log_prob_and_grad_f64(&self, xs: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let n = super::internal::batch_len(xs, CART_DIM, "ALDP coordinate batch")?;
        let mut lp = vec![0.0; n];
        let mut g = vec![0.0; xs.len()];
        let kbt = self.kbt;
        lp.par_iter_mut()
            .zip(xs.par_chunks(CART_DIM).zip(g.par_chunks_mut(CART_DIM)))
            .with_min_len(8)
            .for_each_init(GbScratch::default, |s, (lp, (x, g))| {
                let e = self.ff.eval(x, g, s).total;
                let (l, du) = log_prob_of_energy(e, kbt);
                *lp = l;
                if l == f64::NEG_INFINITY {
                    g.fill(0.0); // forces of a non-finite energy are meaningless
                } else {
                    let c = du / kbt;
                    g.iter_mut().for_each(|v| *v *= c);
                }
            });
        Ok((lp, g))
    }
}

impl LogDensity for AldpCartesian {
    fn dim(&self) -> usize {
        CART_DIM
    }
    fn log_prob(&self, x: &Tensor) -> fab_core::Result<Tensor> {
        Ok(self.log_prob_and_grad(x)?.0)
    }
    fn log_prob_and_grad(&self, x: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        let n = check_points(x, CART_DIM)?;
        let (lp, g) = self.log_prob_and_grad_f64(&to_f64_vec(x)?)?;
        Ok((to_tensor(lp, &[n], x)?, to_tensor(g, &[n, CART_DIM], x)?))
    }
}

fn checked_kbt(temperature: f64) -> Result<f64> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(TargetError::InvalidConfig(format!(
            "ALDP temperature must be finite and > 0 K, got {temperature}"
        )));
    }
    Ok(GAS_CONSTANT * temperature)
}

/// The FAB target: alanine dipeptide's Boltzmann density in the 60-D flow coordinates of
/// [`InternalCoordinates`],
///
/// log p(z) = −u_reg(E(x(z))/k_BT) + log|det ∂x/∂z|,
///
/// with the exact gradient ∇_z from the analytic forces and the hand-derived reverse mode of
/// the internal-coordinate transform. Points that are not valid give log p = −∞ and a zero
/// gradient, so AIS drops them: non-finite z, a non-positive bond length, a degenerate
/// reconstruction, or a non-finite energy.
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// use fab_core::LogDensity;
/// use fab_targets::aldp::AldpTarget;
/// let target = AldpTarget::default();
/// let z = Tensor::zeros((1, 60), candle_core::DType::F64, &Device::Cpu).unwrap();
/// let lp = target.log_prob(&z).unwrap().to_vec1::<f64>().unwrap();
/// assert!((lp[0] - (-176.25049)).abs() < 1e-4); // SPEC §3.2
/// ```
#[derive(Debug, Clone)]
pub struct AldpTarget {
    ff: Arc<AldpForceField>,
    ic: Arc<InternalCoordinates>,
    kbt: f64,
}

impl Default for AldpTarget {
    fn default() -> Self {
        let ff = Arc::new(AldpForceField::amber_implicit());
        let ic = InternalCoordinates::with_reference(ff.reference_positions())
            .expect("the embedded reference configuration is valid");
        Self { ff, ic: Arc::new(ic), kbt: KBT }
    }
}

/// Per-thread buffers of the flow-space evaluation.
#[derive(Debug)]
struct FlowScratch {
    x: [f64; CART_DIM],
    f: [f64; CART_DIM],
    gb: GbScratch,
}

impl Default for FlowScratch {
    fn default() -> Self {
        Self { x: [0.0; CART_DIM], f: [0.0; CART_DIM], gb: GbScratch::default() }
    }
}

impl AldpTarget {
    /// The target at 300 K with the given force field and transform.
    pub fn new(ff: Arc<AldpForceField>, ic: Arc<InternalCoordinates>) -> Self {
        Self { ff, ic, kbt: KBT }
    }

    /// The target at `temperature` (K).
    ///
    /// # Errors
    /// [`TargetError::InvalidConfig`] unless the temperature is finite and > 0.
    pub fn with_temperature(
        ff: Arc<AldpForceField>,
        ic: Arc<InternalCoordinates>,
        temperature: f64,
    ) -> Result<Self> {
        Ok(Self { ff, ic, kbt: checked_kbt(temperature)? })
    }

    /// The force field.
    pub fn force_field(&self) -> &AldpForceField {
        &self.ff
    }

    /// The internal-coordinate transform.
    pub fn transform(&self) -> &InternalCoordinates {
        &self.ic
    }

    /// k_BT in kJ/mol.
    pub fn kbt(&self) -> f64 {
        self.kbt
    }

    /// log p(z) of one point, with the gradient written into `grad` if given.
    fn eval_one(&self, z: &[f64], grad: Option<&mut [f64]>, s: &mut FlowScratch) -> f64 {
        let bad = |grad: Option<&mut [f64]>| {
            if let Some(g) = grad {
                g.fill(0.0);
            }
            f64::NEG_INFINITY
        };
        if z.iter().any(|v| !v.is_finite()) {
            return bad(grad);
        }
        let ld = self.ic.to_cartesian_into(z, &mut s.x);
        // Bonds must be positive (the chart of the bijection); NaN log-det also lands here.
        if !ld.is_finite() || s.x.iter().any(|v| !v.is_finite()) {
            return bad(grad);
        }
        let e = self.ff.eval(&s.x, &mut s.f, &mut s.gb).total;
        let (lp_e, du) = log_prob_of_energy(e, self.kbt);
        if lp_e == f64::NEG_INFINITY {
            return bad(grad);
        }
        if let Some(g) = grad {
            // ∂log p/∂x = −∂u_reg/∂x = F · du_reg/du / k_BT.
            let c = du / self.kbt;
            let mut gx = [0.0; CART_DIM];
            for (gxi, fi) in gx.iter_mut().zip(s.f.iter()) {
                *gxi = fi * c;
            }
            self.ic.backward_into(z, &s.x, &mut gx, 1.0, g);
        }
        lp_e + ld
    }

    /// Batched log p(z) on host f64 data (`zs`: `[n, 60]`), in parallel over rows.
    ///
    /// # Errors
    /// A shape error if `zs.len()` is not a multiple of 60.
    pub fn log_prob_f64(&self, zs: &[f64]) -> Result<Vec<f64>> {
        let n = super::internal::batch_len(zs, FLOW_DIM, "ALDP flow-coordinate batch")?;
        let mut lp = vec![0.0; n];
        lp.par_iter_mut()
            .zip(zs.par_chunks(FLOW_DIM))
            .with_min_len(8)
            .for_each_init(FlowScratch::default, |s, (lp, z)| *lp = self.eval_one(z, None, s));
        Ok(lp)
    }

    /// Batched log p(z) and ∇_z log p(z) on host f64 data (`zs`: `[n, 60]`), in parallel over
    /// rows.
    ///
    /// # Errors
    /// A shape error if `zs.len()` is not a multiple of 60.
    pub fn log_prob_and_grad_f64(&self, zs: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let n = super::internal::batch_len(zs, FLOW_DIM, "ALDP flow-coordinate batch")?;
        let mut lp = vec![0.0; n];
        let mut g = vec![0.0; zs.len()];
        lp.par_iter_mut()
            .zip(zs.par_chunks(FLOW_DIM).zip(g.par_chunks_mut(FLOW_DIM)))
            .with_min_len(8)
            .for_each_init(FlowScratch::default, |s, (lp, (z, g))| {
                *lp = self.eval_one(z, Some(g), s)
            });
        Ok((lp, g))
    }
}

impl LogDensity for AldpTarget {
    fn dim(&self) -> usize {
        FLOW_DIM
    }
    fn log_prob(&self, z: &Tensor) -> fab_core::Result<Tensor> {
        let n = check_points(z, FLOW_DIM)?;
        let lp = self.log_prob_f64(&to_f64_vec(z)?)?;
        Ok(to_tensor(lp, &[n], z)?)
    }
    fn log_prob_and_grad(&self, z: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        let n = check_points(z, FLOW_DIM)?;
        let (lp, g) = self.log_prob_and_grad_f64(&to_f64_vec(z)?)?;
        Ok((to_tensor(lp, &[n], z)?, to_tensor(g, &[n, FLOW_DIM], z)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regularisation_rules() {
        assert_eq!(regularize_energy(-5.0), -5.0);
        assert_eq!(regularize_energy(ENERGY_CUT), ENERGY_CUT); // ln(1) + cut
        let (u, du) = regularize_energy_with_derivative(ENERGY_CUT + 99.0);
        assert!((u - (ENERGY_CUT + 100f64.ln())).abs() < 1e-7);
        assert!((du - 0.01).abs() < 1e-15);
        let (u, du) = regularize_energy_with_derivative(1e30);
        assert_eq!(du, 0.0);
        assert!((u - (ENERGY_CUT + (ENERGY_MAX - ENERGY_CUT + 1.0).ln())).abs() < 1e-7);
        assert!(regularize_energy(f64::NAN).is_nan());
        assert!(regularize_energy(f64::INFINITY).is_nan());
        assert_eq!(log_prob_of_energy(f64::INFINITY, KBT), (f64::NEG_INFINITY, 0.0));
    }
}
