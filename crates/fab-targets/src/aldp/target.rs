//! Boltzmann densities of alanine dipeptide at 300 K in Cartesian and in flow (internal)
//! coordinates, with the energy regularisation of boltzgen (docs/ALGORITHMS.md, "Targets").

use std::sync::Arc;

use candle_core::Tensor;
use fab_core::{check_points, to_f64_vec, LogDensity};
#[cfg(target_arch = "x86_64")]
use fab_simd::X4;
use fab_simd::{Lane, F1};
use rayon::prelude::*;

use super::forcefield::{with_kernel_scratch, AldpForceField, EnergyTerms};
use super::internal::{to_tensor, InternalCoordinates, CART_DIM, FLOW_DIM};
use super::kernel::{core_lanes, LaneScratch};
use super::nerf::{backward_lanes, to_cartesian_lanes, NerfScratch};
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
        lp.par_chunks_mut(4).zip(xs.par_chunks(4 * CART_DIM).zip(g.par_chunks_mut(4 * CART_DIM))).with_min_len(2).for_each(
            |(lp, (x, g))| {
                let mut es = [EnergyTerms::default(); 4];
                let es = &mut es[..lp.len()];
                with_kernel_scratch(|s| self.ff.eval_group(x, g, es, s));
                for (c, e) in es.iter().enumerate() {
                    let g = &mut g[c * CART_DIM..(c + 1) * CART_DIM];
                    let (l, du) = log_prob_of_energy(e.total, kbt);
                    lp[c] = l;
                    if l == f64::NEG_INFINITY {
                        g.fill(0.0); // forces of a non-finite energy are meaningless
                    } else {
                        let c = du / kbt;
                        g.iter_mut().for_each(|v| *v *= c);
                    }
                }
            },
        );
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
        return Err(TargetError::InvalidConfig(format!("ALDP temperature must be finite and > 0 K, got {temperature}")));
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
/// assert!((lp[0] - (-176.25049)).abs() < 1e-4); // docs/ALGORITHMS.md, "Targets"
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
        let ic = InternalCoordinates::with_reference(ff.reference_positions()).expect("the embedded reference configuration is valid");
        Self { ff, ic: Arc::new(ic), kbt: KBT }
    }
}

/// Buffers of the flow-space evaluation of `T::N` points at once.
#[derive(Debug)]
struct FlowLanes<T: Lane> {
    z: Vec<T>,
    gz: Vec<T>,
    kernel: LaneScratch<T>,
    nerf: NerfScratch<T>,
}

impl<T: Lane> Default for FlowLanes<T> {
    fn default() -> Self {
        Self { z: Vec::new(), gz: Vec::new(), kernel: LaneScratch::default(), nerf: NerfScratch::default() }
    }
}

/// Per-thread buffers for each lane type.
#[derive(Debug, Default)]
struct FlowScratch {
    #[cfg(target_arch = "x86_64")]
    x4: FlowLanes<X4>,
    fma1: FlowLanes<F1<true>>,
    f1: FlowLanes<F1<false>>,
}

thread_local! {
    static FLOW_SCRATCH: std::cell::RefCell<FlowScratch> = std::cell::RefCell::new(FlowScratch::default());
}

/// Runs `f` with this thread's flow buffers (allocated once per thread); a fresh set if they
/// are already in use.
fn with_flow_scratch<R>(f: impl FnOnce(&mut FlowScratch) -> R) -> R {
    FLOW_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut FlowScratch::default()),
    })
}

/// A [`flow_lanes`] call as a `pulp` operation (see `EvalOp` in `kernel.rs` for why it is not
/// a closure).
struct FlowOp<'a, T: Lane> {
    ctx: T::Ctx,
    t: &'a AldpTarget,
    zs: &'a [f64],
    lp: &'a mut [f64],
    grad: Option<&'a mut [f64]>,
    s: &'a mut FlowLanes<T>,
}

impl<T: Lane> pulp::NullaryFnOnce for FlowOp<'_, T> {
    type Output = ();
    #[inline(always)]
    fn call(self) {
        flow_lanes::<T>(self.ctx, self.t, self.zs, self.lp, self.grad, self.s)
    }
}

/// log p(z) (and ∇_z log p if `grad` is given) of `T::N` points (`zs`: `[N, 60]`, `lp`: `[N]`,
/// `grad`: `[N, 60]`): reconstruction, energy kernel and reverse pass, all lane-parallel.
#[inline(always)]
fn flow_lanes<T: Lane>(ctx: T::Ctx, t: &AldpTarget, zs: &[f64], lp: &mut [f64], grad: Option<&mut [f64]>, s: &mut FlowLanes<T>) {
    let mut zok = [true; 8];
    for (l, ok) in zok.iter_mut().enumerate().take(T::N) {
        *ok = zs[l * FLOW_DIM..(l + 1) * FLOW_DIM].iter().all(|v| v.is_finite());
    }
    let zero = T::splat(ctx, 0.0);
    s.z.resize(FLOW_DIM, zero);
    s.gz.resize(FLOW_DIM, zero);
    for k in 0..FLOW_DIM {
        // Non-finite points are evaluated at z = 0 and reported as −∞ below.
        s.z[k] = T::from_fn(ctx, |l| if zok[l] { zs[l * FLOW_DIM + k] } else { 0.0 });
    }
    s.kernel.prepare(ctx, &t.ff);
    let (ld, chart) = to_cartesian_lanes(&t.ic, &s.z, &mut s.kernel.x, &mut s.nerf);
    let mut es = [EnergyTerms::NAN; 8];
    core_lanes(ctx, &t.ff, &mut s.kernel, &mut es[..T::N]);
    let mut scale = [0.0; 8];
    for l in 0..T::N {
        let (lp_e, du) = log_prob_of_energy(es[l].total, t.kbt);
        let ldl = ld.lane(l);
        let valid = zok[l] && T::mask_lane(chart, l) && lp_e > f64::NEG_INFINITY && ldl.is_finite();
        lp[l] = if valid { lp_e + ldl } else { f64::NEG_INFINITY };
        // ∂log p/∂x = −∂u_reg/∂x = F · du_reg/du / k_BT.
        scale[l] = if valid { du / t.kbt } else { 0.0 };
    }
    if let Some(g) = grad {
        let sv = T::from_fn(ctx, |l| scale[l]);
        for v in s.kernel.f.iter_mut() {
            *v = *v * sv;
        }
        backward_lanes(&t.ic, &mut s.kernel.f, &mut s.gz, &s.nerf);
        for l in 0..T::N {
            let valid = lp[l] > f64::NEG_INFINITY;
            for k in 0..FLOW_DIM {
                g[l * FLOW_DIM + k] = if valid { s.gz[k].lane(l) } else { 0.0 };
            }
        }
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
    pub fn with_temperature(ff: Arc<AldpForceField>, ic: Arc<InternalCoordinates>, temperature: f64) -> Result<Self> {
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

    /// log p(z) of up to four points (`zs`: `[k, 60]`, `lp`: `[k]`), with the gradients written
    /// into `grad` (`[k, 60]`) if given. On AVX2 + FMA CPUs a point gets bit-for-bit the same
    /// result in a group of four as alone.
    fn eval_group(&self, zs: &[f64], lp: &mut [f64], mut grad: Option<&mut [f64]>, s: &mut FlowScratch) {
        let k = lp.len();
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            if k == 4 {
                simd.vectorize(FlowOp::<X4> { ctx: simd, t: self, zs, lp, grad, s: &mut s.x4 });
            } else {
                for c in 0..k {
                    let g = grad.as_deref_mut().map(|g| &mut g[c * FLOW_DIM..(c + 1) * FLOW_DIM]);
                    simd.vectorize(FlowOp::<F1<true>> {
                        ctx: (),
                        t: self,
                        zs: &zs[c * FLOW_DIM..(c + 1) * FLOW_DIM],
                        lp: &mut lp[c..c + 1],
                        grad: g,
                        s: &mut s.fma1,
                    });
                }
            }
            return;
        }
        for c in 0..k {
            let g = grad.as_deref_mut().map(|g| &mut g[c * FLOW_DIM..(c + 1) * FLOW_DIM]);
            flow_lanes::<F1<false>>((), self, &zs[c * FLOW_DIM..(c + 1) * FLOW_DIM], &mut lp[c..c + 1], g, &mut s.f1);
        }
    }

    /// Batched log p(z) on host f64 data (`zs`: `[n, 60]`), in parallel over groups of rows.
    ///
    /// # Errors
    /// A shape error if `zs.len()` is not a multiple of 60.
    pub fn log_prob_f64(&self, zs: &[f64]) -> Result<Vec<f64>> {
        let n = super::internal::batch_len(zs, FLOW_DIM, "ALDP flow-coordinate batch")?;
        let mut lp = vec![0.0; n];
        lp.par_chunks_mut(4)
            .zip(zs.par_chunks(4 * FLOW_DIM))
            .with_min_len(2)
            .for_each(|(lp, z)| with_flow_scratch(|s| self.eval_group(z, lp, None, s)));
        Ok(lp)
    }

    /// Batched log p(z) and ∇_z log p(z) on host f64 data (`zs`: `[n, 60]`), in parallel over
    /// groups of rows.
    ///
    /// # Errors
    /// A shape error if `zs.len()` is not a multiple of 60.
    pub fn log_prob_and_grad_f64(&self, zs: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let n = super::internal::batch_len(zs, FLOW_DIM, "ALDP flow-coordinate batch")?;
        let mut lp = vec![0.0; n];
        let mut g = vec![0.0; zs.len()];
        lp.par_chunks_mut(4)
            .zip(zs.par_chunks(4 * FLOW_DIM).zip(g.par_chunks_mut(4 * FLOW_DIM)))
            .with_min_len(2)
            .for_each(|(lp, (z, g))| with_flow_scratch(|s| self.eval_group(z, lp, Some(g), s)));
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
    fn portable_flow_path_matches_the_dispatched_path() {
        let t = AldpTarget::default();
        // Deterministic points 0.3·(uniform-ish in [−1, 1)) around z = 0.
        let mut state = 7u64;
        let zs: Vec<f64> = (0..4 * FLOW_DIM)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                0.6 * ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
            })
            .collect();
        let (lp, g) = t.log_prob_and_grad_f64(&zs).unwrap();
        let mut s = FlowLanes::<F1<false>>::default();
        for c in 0..4 {
            let mut l = [0.0];
            let mut gc = vec![0.0; FLOW_DIM];
            flow_lanes::<F1<false>>((), &t, &zs[c * FLOW_DIM..(c + 1) * FLOW_DIM], &mut l, Some(&mut gc), &mut s);
            // Different rounding only (FMA vs none): 1e-11 relative.
            assert!((l[0] - lp[c]).abs() <= 1e-11 * lp[c].abs(), "{} vs {}", l[0], lp[c]);
            for k in 0..FLOW_DIM {
                let r = g[c * FLOW_DIM + k];
                assert!((gc[k] - r).abs() <= 1e-9 * (1.0 + r.abs()), "dim {k}: {} vs {r}", gc[k]);
            }
        }
    }

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
