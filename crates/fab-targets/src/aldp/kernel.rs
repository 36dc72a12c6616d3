//! The fast energy + force kernel: all five terms of the force field for `L` configurations at
//! once (one per SIMD lane), with the nonbonded and GB pair loops fused and no libm calls.
//!
//! It computes the same formulas as the term-by-term reference in `forcefield.rs` (which is
//! kept as the readable specification and tested against it), with these rearrangements:
//! * distances are computed once per pair and shared by Coulomb/LJ and the GB terms;
//! * torsions use cos φ and sin φ from the dot/cross products and the Chebyshev recurrence for
//!   cos nφ, sin nφ (no atan2, no sin/cos calls);
//! * 1/L and 1/U of the OBC integral share one division, and the Born radii enter through
//!   their reciprocals;
//! * exp, ln, tanh and atan2 are the branch-free versions of [`fab_simd`].
//!
//! Per configuration (22 atoms, 231 pairs) this is 21 bonds, 36 angles, 25 torsion quadruples
//! (32 Fourier terms), 174 Coulomb/LJ pairs, 462 OBC integrals (each with a logarithm), 22
//! Born radii (tanh) and 231 GB pair terms (each with an exponential).

use super::forcefield::{
    AldpForceField, EnergyTerms, ACE_CONSTANT, ACE_PROBE, GB_COULOMB, GB_OFFSET_BORN, GB_OFFSET_ENERGY, GB_SOLUTE_DIELECTRIC,
    GB_SOLVENT_DIELECTRIC, OBC_ALPHA, OBC_GAMMA,
};
use super::vec3::{add3, cross3, dot3, scale3, sub3, V3};
#[cfg(target_arch = "x86_64")]
use fab_simd::X4;
use fab_simd::{atan2_pos, exp, ln2, tanh, Lane, F1};

/// One term of a torsion: periodicity, cos(phase), sin(phase), k.
#[derive(Debug, Clone, Copy)]
struct TorsionTerm {
    n: usize,
    cos_ph: f64,
    sin_ph: f64,
    k: f64,
}

#[derive(Debug, Clone)]
struct TorsionK {
    atoms: [usize; 4],
    /// Sorted by periodicity (the recurrence for cos nφ walks n upwards).
    terms: Vec<TorsionTerm>,
}

/// Parameters of one unordered pair i < j.
#[derive(Debug, Clone, Copy)]
struct PairK {
    i: usize,
    j: usize,
    or_i: f64,
    sr_i: f64,
    or_j: f64,
    sr_j: f64,
    /// −k_GB q_i q_j.
    gb_qq: f64,
    /// Coulomb/LJ: (k_e q_i q_j, σ², 4ε), `None` for excluded pairs.
    nb: Option<(f64, f64, f64)>,
}

/// Per-atom GB constants.
#[derive(Debug, Clone, Copy)]
struct AtomK {
    or: f64,
    inv_or: f64,
    inv_radius_b: f64,
    /// −½ k_GB (1/ε_in − 1/ε_out) q².
    self_c: f64,
    /// 28.3919551 (radius + 0.14)².
    ace_c: f64,
    /// radius = or + offset (energy expressions).
    radius_e: f64,
}

/// The force field flattened for the kernel.
#[derive(Debug, Clone, Default)]
pub(super) struct KernelParams {
    torsions: Vec<TorsionK>,
    pairs: Vec<PairK>,
    atoms: Vec<AtomK>,
}

impl KernelParams {
    pub(super) fn new(ff: &AldpForceField) -> Self {
        let torsions = ff
            .torsions
            .iter()
            .map(|t| {
                let mut terms: Vec<TorsionTerm> = t
                    .terms
                    .iter()
                    .map(|&(n, phase, k)| TorsionTerm { n: n as usize, cos_ph: phase.cos(), sin_ph: phase.sin(), k })
                    .collect();
                terms.sort_by_key(|t| t.n);
                TorsionK { atoms: t.atoms, terms }
            })
            .collect();
        let n = ff.gb_atoms.len();
        let mut nb = vec![None; n * n];
        for p in &ff.nb_pairs {
            nb[p.i * n + p.j] = Some((p.qq, p.sigma * p.sigma, p.eps4));
        }
        let pairs = ff
            .all_pairs
            .iter()
            .zip(&ff.gb_pair_qq)
            .map(|(&(i, j), &gb_qq)| PairK {
                i,
                j,
                or_i: ff.gb_atoms[i].or,
                sr_i: ff.gb_atoms[i].sr,
                or_j: ff.gb_atoms[j].or,
                sr_j: ff.gb_atoms[j].sr,
                gb_qq,
                nb: nb[i * n + j],
            })
            .collect();
        let self_pref = -0.5 * GB_COULOMB * (1.0 / GB_SOLUTE_DIELECTRIC - 1.0 / GB_SOLVENT_DIELECTRIC);
        let atoms = ff
            .gb_atoms
            .iter()
            .map(|a| {
                let radius_e = a.or + GB_OFFSET_ENERGY;
                AtomK {
                    or: a.or,
                    inv_or: 1.0 / a.or,
                    inv_radius_b: 1.0 / (a.or + GB_OFFSET_BORN),
                    self_c: self_pref * a.charge * a.charge,
                    ace_c: ACE_CONSTANT * (radius_e + ACE_PROBE) * (radius_e + ACE_PROBE),
                    radius_e,
                }
            })
            .collect();
        Self { torsions, pairs, atoms }
    }
}

/// Reusable buffers of the kernel for lane type `T`.
#[derive(Debug, Clone)]
pub(super) struct LaneScratch<T: Lane> {
    /// Input coordinates (66 lane vectors).
    pub(super) x: Vec<T>,
    /// Output forces (66 lane vectors).
    pub(super) f: Vec<T>,
    d: Vec<V3<T>>,
    r: Vec<T>,
    inv_r: Vec<T>,
    di_ij: Vec<T>,
    di_ji: Vec<T>,
    radial: Vec<T>,
    integral: Vec<T>,
    born: Vec<T>,
    inv_born: Vec<T>,
    dborn_di: Vec<T>,
    de_dborn: Vec<T>,
}

impl<T: Lane> Default for LaneScratch<T> {
    fn default() -> Self {
        Self {
            x: Vec::new(),
            f: Vec::new(),
            d: Vec::new(),
            r: Vec::new(),
            inv_r: Vec::new(),
            di_ij: Vec::new(),
            di_ji: Vec::new(),
            radial: Vec::new(),
            integral: Vec::new(),
            born: Vec::new(),
            inv_born: Vec::new(),
            dborn_di: Vec::new(),
            de_dborn: Vec::new(),
        }
    }
}

impl<T: Lane> LaneScratch<T> {
    /// Sizes the buffers for `ff` (a no-op after the first call).
    #[inline(always)]
    pub(super) fn prepare(&mut self, ctx: T::Ctx, ff: &AldpForceField) {
        let (n_atoms, n_pairs) = (ff.atoms.len(), ff.kernel.pairs.len());
        if self.x.len() == 3 * n_atoms && self.d.len() == n_pairs {
            return;
        }
        let z = T::splat(ctx, 0.0);
        self.x.resize(3 * n_atoms, z);
        self.f.resize(3 * n_atoms, z);
        self.d.resize(n_pairs, [z; 3]);
        for v in [&mut self.r, &mut self.inv_r, &mut self.di_ij, &mut self.di_ji, &mut self.radial] {
            v.resize(n_pairs, z);
        }
        for v in [&mut self.integral, &mut self.born, &mut self.inv_born, &mut self.dborn_di, &mut self.de_dborn] {
            v.resize(n_atoms, z);
        }
    }
}

#[inline(always)]
fn p3<T: Lane>(x: &[T], a: usize) -> V3<T> {
    [x[3 * a], x[3 * a + 1], x[3 * a + 2]]
}

#[inline(always)]
fn acc<T: Lane>(f: &mut [T], a: usize, v: V3<T>, c: T) {
    f[3 * a] += v[0] * c;
    f[3 * a + 1] += v[1] * c;
    f[3 * a + 2] += v[2] * c;
}

/// U = r + sr2, L = max(or1, |r − sr2|), dL/dr and the step mask r + sr2 ≥ or1 of one order
/// of a pair.
#[inline(always)]
fn obc_setup<T: Lane>(r: T, or1: f64, sr2: f64) -> (T, T, T, T::Mask) {
    let zero = r.c(0.0);
    let u = r + sr2;
    let active = u.ge(r.c(or1));
    let dm = r - sr2;
    let dabs = dm.abs();
    let use_or = r.c(or1).ge(dabs);
    let l = T::select(use_or, r.c(or1), dabs);
    let sign = T::select(dm.ge(zero), r.c(1.0), r.c(-1.0));
    (u, l, T::select(use_or, zero, sign), active)
}

/// I and dI/dr of one order from its setup, 1/(L U) and ln(L/U).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn obc_finish<T: Lane>(r: T, inv_r: T, u: T, l: T, dl: T, inv_lu: T, lg: T, sr2: f64, active: T::Mask) -> (T, T) {
    let zero = r.c(0.0);
    let inv_l = u * inv_lu;
    let inv_u = l * inv_lu;
    let inv_l2 = inv_l * inv_l;
    let inv_u2 = inv_u * inv_u;
    let sr2sq = sr2 * sr2;
    let t = r - inv_r * sr2sq;
    let q = inv_u2 - inv_l2;
    let val = (inv_l - inv_u + t * q * 0.25 + lg * inv_r * 0.5) * 0.5;
    let dt = inv_r * inv_r * sr2sq + 1.0;
    let dq = inv_u2 * inv_u * -2.0 + dl * inv_l2 * inv_l * 2.0;
    let dlg = dl * inv_l - inv_u;
    let der = (inv_u2 - dl * inv_l2 + (dt * q + t * dq) * 0.25 + (dlg - lg * inv_r) * inv_r * 0.5) * 0.5;
    (T::select(active, val, zero), T::select(active, der, zero))
}

/// The OBC integrals I(r; or₁, sr₂) and dI/dr per lane for both orders of a pair,
/// (or_i, sr_j) and (or_j, sr_i) (see `obc_integral` in `forcefield.rs` for the expression);
/// lanes where the step condition r + sr2 ≥ or1 fails give (0, 0). The two integrals share
/// their reciprocals (1/(L U) and the logarithms' divisions). No closures: they would not be
/// reliably inlined into the AVX2 entry point.
#[inline(always)]
fn obc2<T: Lane>(r: T, inv_r: T, a: (f64, f64), b: (f64, f64)) -> ((T, T), (T, T)) {
    let (u1, l1, dl1, act1) = obc_setup(r, a.0, a.1);
    let (u2, l2, dl2, act2) = obc_setup(r, b.0, b.1);
    let (lu1, lu2) = (l1 * u1, l2 * u2);
    let w = (lu1 * lu2).recip();
    let (inv_lu1, inv_lu2) = (lu2 * w, lu1 * w);
    let (lg1, lg2) = ln2(l1 * (l1 * inv_lu1), l2 * (l2 * inv_lu2));
    (obc_finish(r, inv_r, u1, l1, dl1, inv_lu1, lg1, a.1, act1), obc_finish(r, inv_r, u2, l2, dl2, inv_lu2, lg2, b.1, act2))
}

/// Energies and forces of `T::N` configurations (`xs`, `fs`: `[N, 66]` row-major, `out`:
/// `[N]`). Lanes whose coordinates are not all finite get [`EnergyTerms::NAN`] and zero forces.
#[inline(always)]
pub(super) fn eval_lanes<T: Lane>(
    ctx: T::Ctx,
    ff: &AldpForceField,
    xs: &[f64],
    fs: &mut [f64],
    out: &mut [EnergyTerms],
    s: &mut LaneScratch<T>,
) {
    let d = 3 * ff.atoms.len();
    s.prepare(ctx, ff);
    for k in 0..d {
        s.x[k] = T::from_fn(ctx, |l| xs[l * d + k]);
    }
    core_lanes(ctx, ff, s, out);
    for l in 0..T::N {
        for k in 0..d {
            fs[l * d + k] = s.f[k].lane(l);
        }
    }
}

/// The kernel proper on `s.x` (66 lane vectors) → forces in `s.f` and the energies in `out`
/// (`[N]`). Lanes with a non-finite coordinate are evaluated on the reference configuration
/// instead (so that they cannot disturb the others) and get [`EnergyTerms::NAN`] and zero
/// forces.
#[inline(always)]
pub(super) fn core_lanes<T: Lane>(ctx: T::Ctx, ff: &AldpForceField, s: &mut LaneScratch<T>, out: &mut [EnergyTerms]) {
    let kp = &ff.kernel;
    let n = ff.atoms.len();
    let d = 3 * n;
    s.prepare(ctx, ff);
    let mut valid = [true; 8];
    for k in 0..d {
        for (l, v) in valid.iter_mut().enumerate().take(T::N) {
            *v &= s.x[k].lane(l).is_finite();
        }
    }
    if valid[..T::N].iter().any(|v| !v) {
        for k in 0..d {
            let old = s.x[k];
            s.x[k] = T::from_fn(ctx, |l| if valid[l] { old.lane(l) } else { ff.reference_positions[k] });
        }
    }
    let zero = T::splat(ctx, 0.0);
    let one = T::splat(ctx, 1.0);
    for k in 0..d {
        s.f[k] = zero;
    }
    let x = &s.x;
    let f = &mut s.f;

    // Bonds.
    let mut e_bond = zero;
    for b in &ff.bonds {
        let dv = sub3(p3(x, b.j), p3(x, b.i));
        let r = dot3(dv, dv).sqrt();
        let dr = r - b.r0;
        e_bond += dr * dr * (0.5 * b.k);
        let c = dr * b.k / r;
        acc(f, b.i, dv, c);
        acc(f, b.j, dv, -c);
    }

    // Angles: θ = atan2(|u × v|, u·v); ∂θ/∂u = (u × p)/(|u|²|p|), ∂θ/∂v = −(v × p)/(|v|²|p|).
    let mut e_angle = zero;
    for a in &ff.angles {
        let xj = p3(x, a.j);
        let u = sub3(p3(x, a.i), xj);
        let v = sub3(p3(x, a.k), xj);
        let p = cross3(u, v);
        let pn = dot3(p, p).sqrt();
        let theta = atan2_pos(pn, dot3(u, v));
        let dt = theta - a.theta0;
        e_angle += dt * dt * (0.5 * a.k_force);
        let ok = pn.gt(zero);
        let c = T::select(ok, dt * -a.k_force / pn, zero);
        let gu = scale3(cross3(u, p), c / dot3(u, u));
        let gv = scale3(cross3(v, p), -c / dot3(v, v));
        acc(f, a.i, gu, one);
        acc(f, a.k, gv, one);
        acc(f, a.j, add3(gu, gv), -one);
    }

    // Torsions: cos φ = m·n/(|m||n|), sin φ = |b2| b1·n/(|m||n|) (IUPAC sign), cos nφ and
    // sin nφ by recurrence; gradient as in `dihedral_with_grad`.
    let mut e_tors = zero;
    for t in &kp.torsions {
        let [i, j, k, l] = t.atoms;
        let b1 = sub3(p3(x, j), p3(x, i));
        let b2 = sub3(p3(x, k), p3(x, j));
        let b3 = sub3(p3(x, l), p3(x, k));
        let m = cross3(b1, b2);
        let nv = cross3(b2, b3);
        let mm = dot3(m, m);
        let nn = dot3(nv, nv);
        let b22 = dot3(b2, b2);
        let b2n = b22.sqrt();
        let ok = T::and(T::and(mm.gt(zero), nn.gt(zero)), b22.gt(zero));
        let inv_mn = T::select(ok, (mm * nn).sqrt().recip(), zero);
        // Degenerate quadruples: φ = 0 (as atan2(0, 0)) and a zero gradient.
        let cphi = T::select(ok, dot3(m, nv) * inv_mn, one);
        let sphi = b2n * dot3(b1, nv) * inv_mn;
        let (mut cn, mut sn) = (cphi, sphi);
        let mut de_dphi = zero;
        let mut order = 1;
        for term in &t.terms {
            while order < term.n {
                let c2 = cn * cphi - sn * sphi;
                sn = sn * cphi + cn * sphi;
                cn = c2;
                order += 1;
            }
            // cos(nφ − ph) = cos nφ cos ph + sin nφ sin ph.
            e_tors += (cn * term.cos_ph + sn * term.sin_ph + 1.0) * term.k;
            de_dphi += (cn * term.sin_ph - sn * term.cos_ph) * (term.k * term.n as f64);
        }
        let inv_mm = T::select(ok, mm.recip(), zero);
        let inv_nn = T::select(ok, nn.recip(), zero);
        let inv_b22 = T::select(ok, b22.recip(), zero);
        let gi = scale3(m, -b2n * inv_mm);
        let gl = scale3(nv, b2n * inv_nn);
        let pp = dot3(b1, b2) * inv_b22;
        let qq = dot3(b3, b2) * inv_b22;
        let gj = add3(scale3(gi, -(pp + 1.0)), scale3(gl, qq));
        let gk = add3(scale3(gl, -(qq + 1.0)), scale3(gi, pp));
        let c = -de_dphi;
        acc(f, i, gi, c);
        acc(f, j, gj, c);
        acc(f, k, gk, c);
        acc(f, l, gl, c);
    }

    // Pass 1 over pairs: distances, Coulomb + LJ, OBC integrals.
    let mut e_nb = zero;
    for v in s.integral.iter_mut() {
        *v = zero;
    }
    for (p, pk) in kp.pairs.iter().enumerate() {
        let dv = sub3(p3(x, pk.j), p3(x, pk.i));
        let r2 = dot3(dv, dv);
        let r = r2.sqrt();
        let inv_r = r.recip();
        s.d[p] = dv;
        s.r[p] = r;
        s.inv_r[p] = inv_r;
        let mut radial = zero;
        if let Some((qq, sigma2, eps4)) = pk.nb {
            let inv_r2 = inv_r * inv_r;
            let s2 = inv_r2 * sigma2;
            let s6 = s2 * s2 * s2;
            let coul = inv_r * qq;
            e_nb += (s6 * s6 - s6) * eps4 + coul;
            radial = -(coul + (s6 * s6 * 12.0 - s6 * 6.0) * eps4) * inv_r;
        }
        s.radial[p] = radial;
    }
    // The OBC integrals in a loop of their own: a shorter body with two independent chains
    // keeps more iterations in flight (the loop is latency-bound).
    for (p, pk) in kp.pairs.iter().enumerate() {
        let (r, inv_r) = (s.r[p], s.inv_r[p]);
        let ((v_ij, d_ij), (v_ji, d_ji)) = obc2(r, inv_r, (pk.or_i, pk.sr_j), (pk.or_j, pk.sr_i));
        s.integral[pk.i] += v_ij;
        s.integral[pk.j] += v_ji;
        s.di_ij[p] = d_ij;
        s.di_ji[p] = d_ji;
    }

    // Born radii and single-particle GB terms.
    let mut e_gb = zero;
    for (a, ak) in kp.atoms.iter().enumerate() {
        let psi = s.integral[a] * ak.or;
        let psi2 = psi * psi;
        let th = tanh(psi * (psi2 * OBC_GAMMA + OBC_ALPHA));
        let inv_born = th * -ak.inv_radius_b + ak.inv_or;
        let born = inv_born.recip();
        s.dborn_di[a] = born * born * (one - th * th) * (psi2 * (3.0 * OBC_GAMMA) + OBC_ALPHA) * (ak.or * ak.inv_radius_b);
        s.born[a] = born;
        s.inv_born[a] = inv_born;
        let e_self = inv_born * ak.self_c;
        let ratio = inv_born * ak.radius_e;
        let r3 = ratio * ratio * ratio;
        let e_ace = r3 * r3 * ak.ace_c;
        e_gb += e_self + e_ace;
        s.de_dborn[a] = -(e_self + e_ace * 6.0) * inv_born;
    }

    // Pass 2: GB pair terms −k q_i q_j / f, f² = r² + B_i B_j exp(−r²/(4 B_i B_j)).
    for (p, pk) in kp.pairs.iter().enumerate() {
        let r = s.r[p];
        let r2 = r * r;
        let (bi, bj) = (s.born[pk.i], s.born[pk.j]);
        let kb = bi * bj;
        let q = r2 * (s.inv_born[pk.i] * s.inv_born[pk.j]) * 0.25; // r²/(4 B_i B_j)
        let ex = exp(-q);
        let f2 = kb * ex + r2;
        let inv_f = f2.sqrt().recip();
        let ep = inv_f * pk.gb_qq;
        e_gb += ep;
        let de_df2 = ep * inv_f * inv_f * -0.5;
        s.radial[p] += de_df2 * r * (ex * -0.5 + 2.0);
        let de_dk = de_df2 * ex * (q + 1.0);
        s.de_dborn[pk.i] += de_dk * bj;
        s.de_dborn[pk.j] += de_dk * bi;
    }

    // Chain rule through the Born radii, then all radial derivatives into forces.
    for a in 0..n {
        s.de_dborn[a] = s.de_dborn[a] * s.dborn_di[a];
    }
    for (p, pk) in kp.pairs.iter().enumerate() {
        let de_dr = s.radial[p] + s.de_dborn[pk.i] * s.di_ij[p] + s.de_dborn[pk.j] * s.di_ji[p];
        let c = de_dr * s.inv_r[p];
        acc(f, pk.i, s.d[p], c);
        acc(f, pk.j, s.d[p], -c);
    }

    for l in 0..T::N {
        out[l] = if valid[l] {
            EnergyTerms {
                bonds: e_bond.lane(l),
                angles: e_angle.lane(l),
                torsions: e_tors.lane(l),
                nonbonded: e_nb.lane(l),
                gb: e_gb.lane(l),
                total: e_bond.lane(l) + e_angle.lane(l) + e_tors.lane(l) + e_nb.lane(l) + e_gb.lane(l),
            }
        } else {
            EnergyTerms::NAN
        };
    }
    if valid[..T::N].iter().any(|v| !v) {
        for k in 0..d {
            let old = s.f[k];
            s.f[k] = T::from_fn(ctx, |l| if valid[l] { old.lane(l) } else { 0.0 });
        }
    }
}

/// A kernel call as a `pulp` operation. The body lives in an `#[inline(always)]` trait method
/// (not a closure) so that it is reliably inlined into the AVX2 + FMA-enabled entry point of
/// `V3::vectorize`.
struct EvalOp<'a, T: Lane> {
    ctx: T::Ctx,
    ff: &'a AldpForceField,
    xs: &'a [f64],
    fs: &'a mut [f64],
    out: &'a mut [EnergyTerms],
    s: &'a mut LaneScratch<T>,
}

impl<T: Lane> pulp::NullaryFnOnce for EvalOp<'_, T> {
    type Output = ();
    #[inline(always)]
    fn call(self) {
        eval_lanes::<T>(self.ctx, self.ff, self.xs, self.fs, self.out, self.s)
    }
}

/// Four configurations at once (`xs`, `fs`: `[4, 66]`, `out`: `[4]`): one AVX2 + FMA pass
/// when the CPU has them, otherwise four portable one-lane passes.
pub(super) fn eval4(ff: &AldpForceField, xs: &[f64], fs: &mut [f64], out: &mut [EnergyTerms], s: &mut KernelScratch) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        simd.vectorize(EvalOp::<X4> { ctx: simd, ff, xs, fs, out, s: &mut s.x4 });
        return;
    }
    let d = 3 * ff.atoms.len();
    for c in 0..4 {
        eval_lanes::<F1<false>>((), ff, &xs[c * d..(c + 1) * d], &mut fs[c * d..(c + 1) * d], &mut out[c..c + 1], &mut s.f1);
    }
}

/// One configuration (`xs`, `fs`: `[66]`). On AVX2 + FMA CPUs it runs with fused
/// multiply-adds, giving bit-for-bit the result of the configuration's lane in [`eval4`].
pub(super) fn eval1(ff: &AldpForceField, xs: &[f64], fs: &mut [f64], s: &mut KernelScratch) -> EnergyTerms {
    let mut out = [EnergyTerms::NAN];
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        simd.vectorize(EvalOp::<F1<true>> { ctx: (), ff, xs, fs, out: &mut out, s: &mut s.fma1 });
        return out[0];
    }
    eval_lanes::<F1<false>>((), ff, xs, fs, &mut out, &mut s.f1);
    out[0]
}

/// Per-thread buffers of the kernel for each lane type.
#[derive(Debug, Clone, Default)]
pub(crate) struct KernelScratch {
    #[cfg(target_arch = "x86_64")]
    pub(super) x4: LaneScratch<X4>,
    pub(super) fma1: LaneScratch<F1<true>>,
    pub(super) f1: LaneScratch<F1<false>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Configurations around the reference: the minimum and deterministic perturbations of
    /// 0.002–0.02 nm (a fixed linear-congruential sequence, no RNG dependency).
    fn configs(ff: &AldpForceField, n: usize) -> Vec<f64> {
        let x0 = ff.reference_positions();
        let mut state = 12345u64;
        let mut out = Vec::new();
        for c in 0..n {
            for v in x0 {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                out.push(v + u * 0.004 * (1 + c % 5) as f64);
            }
        }
        out
    }

    #[test]
    fn portable_path_matches_the_dispatched_path_and_the_reference() {
        let ff = AldpForceField::amber_implicit();
        let n = 8;
        let xs = configs(&ff, n);
        let d = ff.dim();
        let mut f_fast = vec![0.0; n * d];
        let e_fast = ff.energies_and_forces(&xs, &mut f_fast).unwrap();
        let mut s = LaneScratch::<F1<false>>::default();
        for c in 0..n {
            let x = &xs[c * d..(c + 1) * d];
            let mut f = vec![0.0; d];
            let mut e = [EnergyTerms::NAN];
            eval_lanes::<F1<false>>((), &ff, x, &mut f, &mut e, &mut s);
            let e = e[0];
            let mut f_ref = vec![0.0; d];
            let e_ref = ff.energy_and_forces_reference(x, &mut f_ref).unwrap();
            // Same formulas, different rounding (FMA or not, own vs libm functions): 1e-12
            // relative in energy, 1e-10 relative in force norm.
            for (a, b) in [(e.total, e_fast[c].total), (e.total, e_ref.total), (e.gb, e_ref.gb)] {
                assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "config {c}: {a} vs {b}");
            }
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let diff: Vec<f64> = f.iter().zip(&f_ref).map(|(a, b)| a - b).collect();
            assert!(norm(&diff) <= 1e-10 * norm(&f_ref), "config {c}: forces");
            let diff: Vec<f64> = f.iter().zip(&f_fast[c * d..(c + 1) * d]).map(|(a, b)| a - b).collect();
            assert!(norm(&diff) <= 1e-10 * norm(&f_ref), "config {c}: forces vs dispatched");
        }
    }

    #[test]
    fn non_finite_lane_does_not_disturb_the_others() {
        let ff = AldpForceField::amber_implicit();
        let d = ff.dim();
        let mut xs = configs(&ff, 4);
        let mut f_clean = vec![0.0; 4 * d];
        let e_clean = ff.energies_and_forces(&xs, &mut f_clean).unwrap();
        xs[d + 5] = f64::NAN;
        let mut f = vec![0.0; 4 * d];
        let e = ff.energies_and_forces(&xs, &mut f).unwrap();
        assert!(e[1].total.is_nan() && f[d..2 * d].iter().all(|v| *v == 0.0));
        for c in [0, 2, 3] {
            assert_eq!(e[c], e_clean[c]);
            assert_eq!(f[c * d..(c + 1) * d], f_clean[c * d..(c + 1) * d]);
        }
    }
}

/// Operation counts of the kernels (run with `--nocapture` to print them; the numbers are
/// quoted in docs/ALDP.md).
#[cfg(test)]
mod flop_count {
    use super::super::nerf::{backward_lanes, to_cartesian_lanes, NerfScratch};
    use super::super::InternalCoordinates;
    use super::*;
    use fab_simd::counting::{take, C};

    fn report(name: &str, c: [u64; 6]) -> u64 {
        let flops = c[0] + c[1] + c[2] + c[3] + 2 * c[4];
        eprintln!(
            "{name}: {flops} flop = {} add/sub + {} mul + {} div + {} sqrt + {} fma (x2); {} compare/select/bit ops",
            c[0], c[1], c[2], c[3], c[4], c[5]
        );
        flops
    }

    #[test]
    fn count_operations_per_configuration() {
        let ff = AldpForceField::amber_implicit();
        let ic = InternalCoordinates::alanine_dipeptide();
        let mut s = LaneScratch::<C>::default();
        s.prepare((), &ff);
        for k in 0..ff.dim() {
            s.x[k] = C(ff.reference_positions()[k]);
        }
        let mut out = [EnergyTerms::NAN];
        take();
        core_lanes((), &ff, &mut s, &mut out);
        let e = report("energy + forces", take());
        // The counting lane computes the real values: check it is the real kernel.
        assert!((out[0].total - (-172.67751692548748)).abs() < 1e-9);
        let z = vec![C(0.0); super::super::FLOW_DIM];
        let mut ns = NerfScratch::<C>::default();
        let (ld, _) = to_cartesian_lanes(&ic, &z, &mut s.x, &mut ns);
        let fwd = report("z -> x (+ log det)", take());
        let mut gx = s.f.clone();
        let mut gz = vec![C(0.0); super::super::FLOW_DIM];
        backward_lanes(&ic, &mut gx, &mut gz, &ns);
        let bwd = report("reverse pass x -> z", take());
        assert!((ld.0 - (-245.48211)).abs() < 1e-4);
        eprintln!("flow-space log p + grad: {} flop", e + fwd + bwd);
        // Sanity bounds so that a change of the algorithm is noticed here.
        assert!(e > 10_000 && e < 100_000, "{e}");
    }
}
