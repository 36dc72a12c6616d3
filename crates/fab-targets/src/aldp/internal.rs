//! The complete internal-coordinate transform of fab-torch/boltzgen for alanine dipeptide
//! (docs/ALGORITHMS.md, "Targets"): 66 Cartesian coordinates ↔ 60 normalised flow coordinates.
//!
//! * Seed triangle CA(8), N(6), C(14) → b1 = |N − CA|, b2 = |C − CA|, angle N–CA–C; the six
//!   rigid-body degrees of freedom are dropped. Reconstruction frame: CA at the origin, N on +x,
//!   C in the xy-plane with y > 0.
//! * 19 z-matrix rows (atom, bond partner, angle partner, dihedral partner) give bond, angle and
//!   dihedral; the dihedral is **minus** the IUPAC dihedral of (dihedral, angle, bond partner,
//!   atom), as in boltzgen.
//! * Normalisation z = (ic − mean)/std with the means taken at the reference (minimum-energy)
//!   configuration and the fixed default stds (bond 0.005 nm, angle 0.15 rad, dihedral 0.2 rad,
//!   circular dihedral 1.0); dihedral differences are wrapped to [−π, π) before the division.
//! * log|det ∂z/∂x| = −Σ_rows [2 ln bond + ln|sin angle|] − ln b2 − Σ ln std (boltzgen's
//!   convention; it is the exact log-determinant of the map restricted to the 60 coordinates
//!   that are not fixed by the reconstruction frame).
//!
//! The map is a bijection between flow space and Cartesian space **modulo rigid motions**
//! (translations and rotations; reflections change the dihedrals and are not removed), on the
//! chart bonds > 0, angles in (0, π).

use rayon::prelude::*;

use super::forcefield::{add, cross, dihedral, dot, norm, pos, scale, sub, V3};
use crate::{Result, TargetError};

/// Number of atoms of alanine dipeptide.
pub const N_ATOMS: usize = 22;
/// Cartesian dimension (22 atoms × 3), nm.
pub const CART_DIM: usize = 3 * N_ATOMS;
/// Flow-space dimension: 3 seed internal coordinates + 19 × (bond, angle, dihedral).
pub const FLOW_DIM: usize = 60;

/// Z-matrix rows `[atom, bond partner, angle partner, dihedral partner]` in the written order
/// of fab-torch, which defines the flow layout (row k → flow indices 3k+3, 3k+4, 3k+5).
pub const Z_MATRIX: [[usize; 4]; 19] = [
    [0, 1, 4, 6],
    [1, 4, 6, 8],
    [2, 1, 4, 0],
    [3, 1, 4, 0],
    [4, 6, 8, 14],
    [5, 4, 6, 8],
    [7, 6, 8, 4],
    [9, 8, 6, 4],
    [10, 8, 6, 4],
    [11, 10, 8, 6],
    [12, 10, 8, 11],
    [13, 10, 8, 11],
    [15, 14, 8, 16],
    [16, 14, 8, 6],
    [17, 16, 14, 15],
    [18, 16, 14, 8],
    [19, 18, 16, 14],
    [20, 18, 16, 19],
    [21, 18, 16, 19],
];

/// The seed atoms [CA, N, C] = [8, 6, 14].
pub const SEED_ATOMS: [usize; 3] = [8, 6, 14];

/// Rows of [`Z_MATRIX`] in the topologically sorted build order of boltzgen (atoms 4, 5, 7, 9,
/// 10, 11, 12, 13, 16, 18, 19, 20, 21, 1, 15, 17, 0, 2, 3).
pub(super) const BUILD_ORDER: [usize; 19] = [4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 16, 17, 18, 1, 12, 14, 0, 2, 3];

/// Flow indices of the 12 circular dihedrals (std 1, range [−π, π)), ascending.
pub const CIRCULAR_INDICES: [usize; 12] = [5, 8, 17, 20, 23, 26, 29, 32, 44, 47, 50, 53];

/// Default normalisation scales of boltzgen when a single reference configuration is given.
pub const STD_BOND: f64 = 0.005;
/// Default angle scale (rad).
pub const STD_ANGLE: f64 = 0.15;
/// Default scale of the non-circular dihedrals (rad).
pub const STD_DIHEDRAL: f64 = 0.2;
/// Scale of the circular dihedrals.
pub const STD_CIRCULAR: f64 = 1.0;

const TWO_PI: f64 = 2.0 * std::f64::consts::PI;

/// Wraps an angle difference to [−π, π) as `(d + π) mod 2π − π`.
#[inline]
pub fn wrap_angle(d: f64) -> f64 {
    (d + std::f64::consts::PI).rem_euclid(TWO_PI) - std::f64::consts::PI
}

/// Kind of each flow coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bond,
    Angle,
    Dihedral,
}

fn kind(idx: usize) -> Kind {
    match idx {
        0 | 1 => Kind::Bond,
        2 => Kind::Angle,
        _ => match (idx - 3) % 3 {
            0 => Kind::Bond,
            1 => Kind::Angle,
            _ => Kind::Dihedral,
        },
    }
}

/// The internal-coordinate transform of alanine dipeptide, with its normalisation
/// (docs/ALGORITHMS.md, "Targets").
///
/// `forward`/[`to_cartesian`](Self::to_cartesian) is z (60) → x (66, nm) and
/// `inverse`/[`to_internal`](Self::to_internal) is x → z, as in fab-torch's
/// `coordinate_transform`. The [`fab_core::Flow`] implementation works on batches `[n, 60]` ↔
/// `[n, 66]` (note the different widths).
///
/// # Example
/// ```
/// use fab_targets::aldp::{AldpForceField, InternalCoordinates};
/// let ic = InternalCoordinates::alanine_dipeptide();
/// let x_ref = AldpForceField::amber_implicit().reference_positions().to_vec();
/// let (z, _) = ic.to_internal(&x_ref).unwrap();
/// assert!(z.iter().all(|v| v.abs() < 1e-12)); // the reference maps to z = 0
/// ```
#[derive(Debug, Clone)]
pub struct InternalCoordinates {
    pub(super) mean: [f64; FLOW_DIM],
    pub(super) std: [f64; FLOW_DIM],
    circular: [bool; FLOW_DIM],
    pub(super) log_std_sum: f64,
}

impl Default for InternalCoordinates {
    fn default() -> Self {
        Self::alanine_dipeptide()
    }
}

impl InternalCoordinates {
    /// The transform of the FAB paper: means at fab-torch's `position_min_energy.pt`
    /// configuration and the default stds.
    pub fn alanine_dipeptide() -> Self {
        let ff = super::AldpForceField::amber_implicit();
        Self::with_reference(ff.reference_positions()).expect("the embedded reference configuration is valid")
    }

    /// The transform with means taken at the configuration `x_ref` (`[66]`, nm) and the default
    /// stds (a single configuration, as in the paper).
    ///
    /// # Errors
    /// A shape error for the wrong length, [`TargetError::InvalidConfig`] if `x_ref` is not
    /// finite or degenerate (a zero bond or a straight angle).
    pub fn with_reference(x_ref: &[f64]) -> Result<Self> {
        check_len(x_ref, CART_DIM, "ALDP reference coordinates")?;
        let mut circular = [false; FLOW_DIM];
        for &c in &CIRCULAR_INDICES {
            circular[c] = true;
        }
        let mut std = [0.0; FLOW_DIM];
        for (i, s) in std.iter_mut().enumerate() {
            *s = match kind(i) {
                Kind::Bond => STD_BOND,
                Kind::Angle => STD_ANGLE,
                Kind::Dihedral if circular[i] => STD_CIRCULAR,
                Kind::Dihedral => STD_DIHEDRAL,
            };
        }
        let mut mean = [0.0; FLOW_DIM];
        raw_internal(x_ref, &mut mean);
        if mean.iter().any(|v| !v.is_finite())
            || (0..FLOW_DIM).any(|i| match kind(i) {
                Kind::Bond => mean[i] <= 0.0,
                Kind::Angle => mean[i] <= 0.0 || mean[i] >= std::f64::consts::PI,
                Kind::Dihedral => false,
            })
        {
            return Err(TargetError::InvalidConfig("ALDP reference configuration is not finite or is degenerate".into()));
        }
        let log_std_sum = std.iter().map(|s| s.ln()).sum();
        Ok(Self { mean, std, circular, log_std_sum })
    }

    /// Means of the 60 raw internal coordinates (nm, rad; dihedrals in boltzgen's sign).
    pub fn means(&self) -> &[f64; FLOW_DIM] {
        &self.mean
    }

    /// Normalisation scales of the 60 coordinates.
    pub fn stds(&self) -> &[f64; FLOW_DIM] {
        &self.std
    }

    /// Whether flow coordinate `i` is a circular dihedral (range [−π, π)).
    pub fn is_circular(&self, i: usize) -> bool {
        i < FLOW_DIM && self.circular[i]
    }

    /// Flow indices of the circular dihedrals, ascending ([`CIRCULAR_INDICES`]).
    pub fn circular_indices(&self) -> &'static [usize] {
        &CIRCULAR_INDICES
    }

    /// x → (z, log|det ∂z/∂x|) for one configuration (`x`: `[66]` nm → `z`: `[60]`).
    ///
    /// # Errors
    /// A shape error if `x` does not have 66 entries.
    pub fn to_internal(&self, x: &[f64]) -> Result<(Vec<f64>, f64)> {
        check_len(x, CART_DIM, "ALDP coordinates")?;
        let mut z = vec![0.0; FLOW_DIM];
        let ld = self.to_internal_into(x, &mut z);
        Ok((z, ld))
    }

    /// z → (x, log|det ∂x/∂z|) for one configuration (`z`: `[60]` → `x`: `[66]` nm, in the
    /// reconstruction frame). Non-positive bonds give log|det| = NaN (outside the chart).
    ///
    /// # Errors
    /// A shape error if `z` does not have 60 entries.
    pub fn to_cartesian(&self, z: &[f64]) -> Result<(Vec<f64>, f64)> {
        check_len(z, FLOW_DIM, "ALDP flow coordinates")?;
        let mut x = vec![0.0; CART_DIM];
        let ld = self.to_cartesian_into(z, &mut x);
        Ok((x, ld))
    }

    /// Slice version of [`to_internal`](Self::to_internal): writes z and returns
    /// log|det ∂z/∂x|. Lengths must be 66 and 60 (checked by the public wrappers).
    pub(crate) fn to_internal_into(&self, x: &[f64], z: &mut [f64]) -> f64 {
        let ld_raw = raw_internal(x, z);
        for (i, zi) in z.iter_mut().enumerate() {
            let d = *zi - self.mean[i];
            let d = if kind(i) == Kind::Dihedral { wrap_angle(d) } else { d };
            *zi = d / self.std[i];
        }
        ld_raw - self.log_std_sum
    }

    /// Slice version of [`to_cartesian`](Self::to_cartesian).
    pub(crate) fn to_cartesian_into(&self, z: &[f64], x: &mut [f64]) -> f64 {
        let ic = |i: usize| z[i] * self.std[i] + self.mean[i];
        let (b1, b2, a) = (ic(0), ic(1), ic(2));
        x.fill(0.0);
        // CA (8) at the origin, N (6) on +x, C (14) in the xy-plane.
        set(x, SEED_ATOMS[1], [b1, 0.0, 0.0]);
        set(x, SEED_ATOMS[2], [b2 * a.cos(), b2 * a.sin(), 0.0]);
        let mut ld = b2.ln() + self.log_std_sum;
        for &row in &BUILD_ORDER {
            let [atom, r1, r2, r3] = Z_MATRIX[row];
            let (b, theta, dih) = (ic(3 * row + 3), ic(3 * row + 4), ic(3 * row + 5));
            let p = nerf(pos(x, r3), pos(x, r2), pos(x, r1), b, theta, -dih);
            set(x, atom, p);
            ld += 2.0 * b.ln() + theta.sin().abs().ln();
        }
        ld
    }

    /// Reverse-mode derivative of z ↦ L(x(z), log|det ∂x/∂z|(z)).
    ///
    /// Given `x = x(z)` (from [`to_cartesian`](Self::to_cartesian)), `grad_x` = ∂L/∂x (`[66]`)
    /// and `grad_logdet` = ∂L/∂log|det ∂x/∂z|, writes ∂L/∂z (`[60]`) into `grad_z`. Derived by
    /// hand: the NeRF placement of every atom is differentiated with respect to its internal
    /// coordinates and its three reference atoms, and the adjoints are propagated in reverse
    /// build order. The seed atom CA is fixed at the origin, so its adjoint is dropped.
    ///
    /// # Errors
    /// A shape error if a slice has the wrong length.
    pub fn to_cartesian_backward(&self, z: &[f64], x: &[f64], grad_x: &[f64], grad_logdet: f64, grad_z: &mut [f64]) -> Result<()> {
        check_len(z, FLOW_DIM, "ALDP flow coordinates")?;
        check_len(x, CART_DIM, "ALDP coordinates")?;
        check_len(grad_x, CART_DIM, "ALDP coordinate gradient")?;
        check_len(grad_z, FLOW_DIM, "ALDP flow gradient")?;
        let mut gx = [0.0; CART_DIM];
        gx.copy_from_slice(grad_x);
        self.backward_into(z, x, &mut gx, grad_logdet, grad_z);
        Ok(())
    }

    /// Unchecked backward; `gx` is consumed as scratch.
    pub(crate) fn backward_into(&self, z: &[f64], x: &[f64], gx: &mut [f64; CART_DIM], g_ld: f64, gz: &mut [f64]) {
        let ic = |i: usize| z[i] * self.std[i] + self.mean[i];
        for &row in BUILD_ORDER.iter().rev() {
            let [atom, r1, r2, r3] = Z_MATRIX[row];
            let (b, theta, dih) = (ic(3 * row + 3), ic(3 * row + 4), ic(3 * row + 5));
            let g_d = pos(gx, atom);
            let g = nerf_backward(pos(x, r3), pos(x, r2), pos(x, r1), b, theta, -dih, g_d);
            add_to(gx, r1, g.gc);
            add_to(gx, r2, g.gb);
            add_to(gx, r3, g.ga);
            // log|det| += 2 ln b + ln|sin θ|: ∂/∂b = 2/b, ∂/∂θ = cot θ.
            let g_b = g.g_bond + g_ld * 2.0 / b;
            let g_theta = g.g_angle + g_ld * theta.cos() / theta.sin();
            let g_dih = -g.g_dihedral;
            gz[3 * row + 3] = g_b * self.std[3 * row + 3];
            gz[3 * row + 4] = g_theta * self.std[3 * row + 4];
            gz[3 * row + 5] = g_dih * self.std[3 * row + 5];
        }
        // Seed: N = (b1, 0, 0), C = (b2 cos a, b2 sin a, 0); log|det| += ln b2.
        let (b2, a) = (ic(1), ic(2));
        let g_n = pos(gx, SEED_ATOMS[1]);
        let g_c = pos(gx, SEED_ATOMS[2]);
        let (ca, sa) = (a.cos(), a.sin());
        gz[0] = g_n[0] * self.std[0];
        gz[1] = (g_c[0] * ca + g_c[1] * sa + g_ld / b2) * self.std[1];
        gz[2] = (b2 * (-g_c[0] * sa + g_c[1] * ca)) * self.std[2];
    }

    /// Batched x → z: `xs` is `[n, 66]`, returns (`[n, 60]`, log|det ∂z/∂x| `[n]`), in
    /// parallel over rows.
    ///
    /// # Errors
    /// A shape error if `xs.len()` is not a multiple of 66.
    pub fn to_internal_batch(&self, xs: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let n = batch_len(xs, CART_DIM, "ALDP coordinate batch")?;
        let mut z = vec![0.0; n * FLOW_DIM];
        let mut ld = vec![0.0; n];
        z.par_chunks_mut(FLOW_DIM)
            .zip(xs.par_chunks(CART_DIM))
            .zip(ld.par_iter_mut())
            .with_min_len(64)
            .for_each(|((z, x), l)| *l = self.to_internal_into(x, z));
        Ok((z, ld))
    }

    /// Batched z → x: `zs` is `[n, 60]`, returns (`[n, 66]`, log|det ∂x/∂z| `[n]`), in parallel
    /// over rows.
    ///
    /// # Errors
    /// A shape error if `zs.len()` is not a multiple of 60.
    pub fn to_cartesian_batch(&self, zs: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let n = batch_len(zs, FLOW_DIM, "ALDP flow-coordinate batch")?;
        let mut x = vec![0.0; n * CART_DIM];
        let mut ld = vec![0.0; n];
        x.par_chunks_mut(CART_DIM)
            .zip(zs.par_chunks(FLOW_DIM))
            .zip(ld.par_iter_mut())
            .with_min_len(64)
            .for_each(|((x, z), l)| *l = self.to_cartesian_into(z, x));
        Ok((x, ld))
    }
}

impl fab_core::Flow for InternalCoordinates {
    /// z `[n, 60]` → (x `[n, 66]` nm, log|det ∂x/∂z| `[n]`), in z's dtype and device.
    fn forward(&self, z: &candle_core::Tensor) -> fab_core::Result<(candle_core::Tensor, candle_core::Tensor)> {
        let n = fab_core::check_points(z, FLOW_DIM)?;
        let (x, ld) = self.to_cartesian_batch(&fab_core::to_f64_vec(z)?)?;
        Ok((to_tensor(x, &[n, CART_DIM], z)?, to_tensor(ld, &[n], z)?))
    }

    /// x `[n, 66]` nm → (z `[n, 60]`, log|det ∂z/∂x| `[n]`), in x's dtype and device.
    fn inverse(&self, x: &candle_core::Tensor) -> fab_core::Result<(candle_core::Tensor, candle_core::Tensor)> {
        let n = fab_core::check_points(x, CART_DIM)?;
        let (z, ld) = self.to_internal_batch(&fab_core::to_f64_vec(x)?)?;
        Ok((to_tensor(z, &[n, FLOW_DIM], x)?, to_tensor(ld, &[n], x)?))
    }
}

/// Builds a tensor of `shape` from f64 host data in the dtype and device of `like`.
pub(crate) fn to_tensor(v: Vec<f64>, shape: &[usize], like: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu)?.to_dtype(like.dtype())?.to_device(like.device())
}

pub(crate) fn check_len(v: &[f64], len: usize, what: &'static str) -> Result<()> {
    if v.len() != len {
        return Err(TargetError::Core(fab_core::Error::Shape { what, expected: format!("[{len}]"), got: vec![v.len()] }));
    }
    Ok(())
}

pub(crate) fn batch_len(v: &[f64], width: usize, what: &'static str) -> Result<usize> {
    if !v.len().is_multiple_of(width) {
        return Err(TargetError::Core(fab_core::Error::Shape { what, expected: format!("[n * {width}]"), got: vec![v.len()] }));
    }
    Ok(v.len() / width)
}

#[inline(always)]
fn set(x: &mut [f64], a: usize, p: V3) {
    x[3 * a] = p[0];
    x[3 * a + 1] = p[1];
    x[3 * a + 2] = p[2];
}

#[inline(always)]
fn add_to(x: &mut [f64], a: usize, p: V3) {
    x[3 * a] += p[0];
    x[3 * a + 1] += p[1];
    x[3 * a + 2] += p[2];
}

/// Angle at vertex `v` between `a` and `b`, via atan2(|u×w|, u·w) (accurate near 0 and π).
#[inline]
pub(crate) fn angle(a: V3, v: V3, b: V3) -> f64 {
    let u = sub(a, v);
    let w = sub(b, v);
    norm(cross(u, w)).atan2(dot(u, w))
}

/// Raw (unnormalised) internal coordinates in flow layout; returns −Σ[2 ln b + ln|sin θ|] − ln b2.
fn raw_internal(x: &[f64], ic: &mut [f64]) -> f64 {
    let ca = pos(x, SEED_ATOMS[0]);
    let n = pos(x, SEED_ATOMS[1]);
    let c = pos(x, SEED_ATOMS[2]);
    ic[0] = norm(sub(n, ca));
    ic[1] = norm(sub(c, ca));
    ic[2] = angle(n, ca, c);
    let mut ld = -ic[1].ln();
    for (k, &[atom, r1, r2, r3]) in Z_MATRIX.iter().enumerate() {
        let xa = pos(x, atom);
        let b = norm(sub(xa, pos(x, r1)));
        let th = angle(xa, pos(x, r1), pos(x, r2));
        ic[3 * k + 3] = b;
        ic[3 * k + 4] = th;
        ic[3 * k + 5] = -dihedral(pos(x, r3), pos(x, r2), pos(x, r1), xa);
        ld -= 2.0 * b.ln() + th.sin().abs().ln();
    }
    ld
}

/// NeRF placement: the point D with |D − C| = b, ∠(D, C, B) = θ and IUPAC dihedral
/// (A, B, C, D) = φ.
#[inline]
fn nerf(a: V3, b_: V3, c: V3, b: f64, theta: f64, phi: f64) -> V3 {
    let u1 = sub(c, b_);
    let bc = scale(u1, 1.0 / norm(u1));
    let nv = cross(sub(b_, a), bc);
    let nrm = scale(nv, 1.0 / norm(nv));
    let m = cross(nrm, bc);
    let (st, ct) = theta.sin_cos();
    let (sp, cp) = phi.sin_cos();
    let d0 = -b * ct;
    let d1 = b * st * cp;
    let d2 = b * st * sp;
    add(c, add(add(scale(bc, d0), scale(m, d1)), scale(nrm, d2)))
}

/// Adjoints of one NeRF placement.
struct NerfGrad {
    ga: V3,
    gb: V3,
    gc: V3,
    g_bond: f64,
    g_angle: f64,
    g_dihedral: f64,
}

/// Reverse mode of [`nerf`] for the output adjoint `g_d` (cross products: for c = p × q,
/// ḡ_p = q × ḡ_c and ḡ_q = ḡ_c × p; normalisation v/|v|: ḡ_v = (ḡ − v̂(v̂·ḡ))/|v|).
#[inline]
fn nerf_backward(a: V3, b_: V3, c: V3, b: f64, theta: f64, phi: f64, g_d: V3) -> NerfGrad {
    // Recompute the frame.
    let u1 = sub(c, b_);
    let l1 = norm(u1);
    let bc = scale(u1, 1.0 / l1);
    let u2 = sub(b_, a);
    let nv = cross(u2, bc);
    let ln = norm(nv);
    let nrm = scale(nv, 1.0 / ln);
    let m = cross(nrm, bc);
    let (st, ct) = theta.sin_cos();
    let (sp, cp) = phi.sin_cos();
    let d0 = -b * ct;
    let d1 = b * st * cp;
    let d2 = b * st * sp;
    // D = C + d0 bc + d1 m + d2 nrm.
    let g_d0 = dot(g_d, bc);
    let g_d1 = dot(g_d, m);
    let g_d2 = dot(g_d, nrm);
    let mut g_bc = scale(g_d, d0);
    let g_m = scale(g_d, d1);
    let mut g_nrm = scale(g_d, d2);
    // m = nrm × bc.
    g_nrm = add(g_nrm, cross(bc, g_m));
    g_bc = add(g_bc, cross(g_m, nrm));
    // nrm = nv/|nv|.
    let g_nv = scale(sub(g_nrm, scale(nrm, dot(nrm, g_nrm))), 1.0 / ln);
    // nv = u2 × bc.
    let g_u2 = cross(bc, g_nv);
    g_bc = add(g_bc, cross(g_nv, u2));
    // bc = u1/|u1|.
    let g_u1 = scale(sub(g_bc, scale(bc, dot(bc, g_bc))), 1.0 / l1);
    // u1 = C − B, u2 = B − A.
    let gc = add(g_d, g_u1);
    let gb = sub(g_u2, g_u1);
    let ga = scale(g_u2, -1.0);
    NerfGrad {
        ga,
        gb,
        gc,
        g_bond: -g_d0 * ct + g_d1 * st * cp + g_d2 * st * sp,
        g_angle: b * (g_d0 * st + g_d1 * ct * cp + g_d2 * ct * sp),
        g_dihedral: b * st * (-g_d1 * sp + g_d2 * cp),
    }
}

/// Ramachandran angles (φ, ψ) of one configuration (`[66]` nm), in radians in (−π, π]:
/// φ = IUPAC dihedral (4, 6, 8, 14), ψ = dihedral (6, 8, 14, 16), as mdtraj's
/// `compute_phi`/`compute_psi`.
///
/// # Errors
/// A shape error if `x` does not have 66 entries.
pub fn phi_psi(x: &[f64]) -> Result<(f64, f64)> {
    check_len(x, CART_DIM, "ALDP coordinates")?;
    let p = |a| pos(x, a);
    Ok((dihedral(p(4), p(6), p(8), p(14)), dihedral(p(6), p(8), p(14), p(16))))
}

/// Flow indices used by the chirality filter: the normalised dihedrals of atoms 4 (C of ACE,
/// −φ) and 9 (HA).
pub const CHIRALITY_INDICES: [usize; 2] = [17, 26];
/// Expected difference z17 − z26 of the L-form (fab-torch `mean_diff`).
pub const CHIRALITY_MEAN_DIFF: f64 = -0.043;
/// Half-width of the accepted window (fab-torch `threshold`).
pub const CHIRALITY_THRESHOLD: f64 = 0.8;

/// Whether a flow-space configuration (`[60]`) is the L-enantiomer (fab-torch
/// `filter_chirality`; docs/ALGORITHMS.md, "Targets"): d = z17 − z26 taken modulo 2π to the
/// representative of smallest magnitude, L-form iff |d − (−0.043)| < 0.8. Non-finite input gives
/// `false`.
///
/// # Errors
/// A shape error if `z` does not have 60 entries.
pub fn is_l_form(z: &[f64]) -> Result<bool> {
    check_len(z, FLOW_DIM, "ALDP flow coordinates")?;
    let d0 = z[CHIRALITY_INDICES[0]] - z[CHIRALITY_INDICES[1]];
    let mut d = d0;
    for c in [d0 + TWO_PI, d0 - TWO_PI] {
        if c.abs() < d.abs() {
            d = c;
        }
    }
    Ok((d - CHIRALITY_MEAN_DIFF).abs() < CHIRALITY_THRESHOLD)
}

/// [`is_l_form`] for every row of a batch `[n, 60]`.
///
/// # Errors
/// A shape error if `zs.len()` is not a multiple of 60.
pub fn l_form_mask(zs: &[f64]) -> Result<Vec<bool>> {
    batch_len(zs, FLOW_DIM, "ALDP flow-coordinate batch")?;
    zs.chunks(FLOW_DIM).map(is_l_form).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_order_is_topological_and_complete() {
        let mut placed = [false; N_ATOMS];
        for s in SEED_ATOMS {
            placed[s] = true;
        }
        for &row in &BUILD_ORDER {
            let [a, r1, r2, r3] = Z_MATRIX[row];
            assert!(placed[r1] && placed[r2] && placed[r3], "row {row} built before its references");
            assert!(!placed[a]);
            placed[a] = true;
        }
        assert!(placed.iter().all(|p| *p));
    }

    #[test]
    fn nerf_places_the_requested_internal_coordinates() {
        let (a, b, c) = ([0.1, -0.2, 0.05], [0.0, 0.0, 0.0], [0.15, 0.02, -0.03]);
        let d = nerf(a, b, c, 0.123, 1.9, -2.7);
        // Exact geometry up to rounding (~1e-15 relative).
        assert!((norm(sub(d, c)) - 0.123).abs() < 1e-14);
        assert!((angle(d, c, b) - 1.9).abs() < 1e-13);
        assert!((dihedral(a, b, c, d) - (-2.7)).abs() < 1e-13);
    }

    #[test]
    fn wrap_angle_range() {
        use std::f64::consts::PI;
        assert_eq!(wrap_angle(PI), -PI);
        assert!((wrap_angle(3.0 * PI + 0.1) - (-PI + 0.1)).abs() < 1e-12);
        assert!((wrap_angle(-0.5) + 0.5).abs() < 1e-15);
    }
}
