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
//! * exp, ln, tanh and atan2 are the branch-free versions of [`super::lanes`].
//!
//! Per configuration (22 atoms, 231 pairs) this is 21 bonds, 36 angles, 25 torsion quadruples
//! (32 Fourier terms), 174 Coulomb/LJ pairs, 462 OBC integrals (each with a logarithm), 22
//! Born radii (tanh) and 231 GB pair terms (each with an exponential).

use super::forcefield::{
    AldpForceField, EnergyTerms, ACE_CONSTANT, ACE_PROBE, GB_COULOMB, GB_OFFSET_BORN,
    GB_OFFSET_ENERGY, GB_SOLUTE_DIELECTRIC, GB_SOLVENT_DIELECTRIC, OBC_ALPHA, OBC_GAMMA,
};
use super::lanes::{add3, and_mask, atan2_pos, cross3, dot3, exp, ln, scale3, sub3, tanh, V, V3};

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
                    .map(|&(n, phase, k)| TorsionTerm {
                        n: n as usize,
                        cos_ph: phase.cos(),
                        sin_ph: phase.sin(),
                        k,
                    })
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
        let self_pref =
            -0.5 * GB_COULOMB * (1.0 / GB_SOLUTE_DIELECTRIC - 1.0 / GB_SOLVENT_DIELECTRIC);
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

/// Reusable buffers of the kernel for `L` lanes.
#[derive(Debug, Clone)]
pub(super) struct LaneScratch<const L: usize> {
    /// Input coordinates (66 lane vectors).
    pub(super) x: Vec<V<L>>,
    /// Output forces (66 lane vectors).
    pub(super) f: Vec<V<L>>,
    d: Vec<V3<L>>,
    r: Vec<V<L>>,
    inv_r: Vec<V<L>>,
    di_ij: Vec<V<L>>,
    di_ji: Vec<V<L>>,
    radial: Vec<V<L>>,
    integral: Vec<V<L>>,
    born: Vec<V<L>>,
    inv_born: Vec<V<L>>,
    dborn_di: Vec<V<L>>,
    de_dborn: Vec<V<L>>,
}

impl<const L: usize> Default for LaneScratch<L> {
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

impl<const L: usize> LaneScratch<L> {
    /// Sizes the buffers for `ff` (a no-op after the first call).
    pub(super) fn prepare(&mut self, ff: &AldpForceField) {
        self.resize(ff.atoms.len(), ff.kernel.pairs.len());
    }

    fn resize(&mut self, n_atoms: usize, n_pairs: usize) {
        let z = V::zero();
        self.x.resize(3 * n_atoms, z);
        self.f.resize(3 * n_atoms, z);
        self.d.resize(n_pairs, [z; 3]);
        for v in [&mut self.r, &mut self.inv_r, &mut self.di_ij, &mut self.di_ji, &mut self.radial] {
            v.resize(n_pairs, z);
        }
        for v in [
            &mut self.integral,
            &mut self.born,
            &mut self.inv_born,
            &mut self.dborn_di,
            &mut self.de_dborn,
        ] {
            v.resize(n_atoms, z);
        }
    }
}

#[inline(always)]
fn p3<const L: usize>(x: &[V<L>], a: usize) -> V3<L> {
    [x[3 * a], x[3 * a + 1], x[3 * a + 2]]
}

#[inline(always)]
fn acc<const L: usize>(f: &mut [V<L>], a: usize, v: V3<L>, c: V<L>) {
    f[3 * a] += v[0] * c;
    f[3 * a + 1] += v[1] * c;
    f[3 * a + 2] += v[2] * c;
}

/// The OBC integral I(r; or1, sr2) and dI/dr per lane (see `obc_integral` in `forcefield.rs`
/// for the expression); lanes where the step condition r + sr2 ≥ or1 fails give (0, 0).
#[inline(always)]
fn obc<const L: usize>(r: V<L>, inv_r: V<L>, or1: f64, sr2: f64) -> (V<L>, V<L>) {
    let u = r + sr2;
    let active = u.ge(V::splat(or1));
    let dm = r - sr2;
    let dabs = dm.abs();
    let use_or = V::splat(or1).ge(dabs);
    let l = V::select(use_or, V::splat(or1), dabs);
    let sign = V::select(dm.ge(V::zero()), V::splat(1.0), V::splat(-1.0));
    let dl = V::select(use_or, V::zero(), sign);
    let inv_lu = 1.0 / (l * u);
    let inv_l = u * inv_lu;
    let inv_u = l * inv_lu;
    let inv_l2 = inv_l * inv_l;
    let inv_u2 = inv_u * inv_u;
    let sr2sq = sr2 * sr2;
    let t = r - inv_r * sr2sq;
    let q = inv_u2 - inv_l2;
    let lg = ln(l * inv_u);
    let val = (inv_l - inv_u + t * q * 0.25 + lg * inv_r * 0.5) * 0.5;
    let dt = inv_r * inv_r * sr2sq + 1.0;
    let dq = inv_u2 * inv_u * -2.0 + dl * inv_l2 * inv_l * 2.0;
    let dlg = dl * inv_l - inv_u;
    let der = (inv_u2 - dl * inv_l2 + (dt * q + t * dq) * 0.25 + (dlg - lg * inv_r) * inv_r * 0.5) * 0.5;
    (V::select(active, val, V::zero()), V::select(active, der, V::zero()))
}

/// Energies and forces of `L` configurations. `xs` and `fs` are `[L, 66]` row-major; lanes
/// whose coordinates are not all finite get [`EnergyTerms::NAN`] and zero forces (they are
/// evaluated on the reference configuration so that they cannot disturb the other lanes).
#[inline(always)]
pub(super) fn eval_lanes<const L: usize>(
    ff: &AldpForceField,
    xs: &[f64],
    fs: &mut [f64],
    s: &mut LaneScratch<L>,
) -> [EnergyTerms; L] {
    let d = 3 * ff.atoms.len();
    s.resize(ff.atoms.len(), ff.kernel.pairs.len());
    for k in 0..d {
        let mut v = [0.0; L];
        for l in 0..L {
            v[l] = xs[l * d + k];
        }
        s.x[k] = V(v);
    }
    let e = core_lanes(ff, s);
    for l in 0..L {
        for k in 0..d {
            fs[l * d + k] = s.f[k].0[l];
        }
    }
    e
}

/// The kernel proper on `s.x` (lanes of 66 coordinates) → forces in `s.f` and the energies.
/// Lanes with a non-finite coordinate are replaced by the reference configuration, and get
/// [`EnergyTerms::NAN`] and zero forces.
#[inline(always)]
pub(super) fn core_lanes<const L: usize>(ff: &AldpForceField, s: &mut LaneScratch<L>) -> [EnergyTerms; L] {
    let kp = &ff.kernel;
    let n = ff.atoms.len();
    let d = 3 * n;
    s.resize(n, kp.pairs.len());
    let mut valid = [true; L];
    for k in 0..d {
        for l in 0..L {
            valid[l] &= s.x[k].0[l].is_finite();
        }
    }
    if valid.iter().any(|v| !v) {
        for k in 0..d {
            for l in 0..L {
                if !valid[l] {
                    s.x[k].0[l] = ff.reference_positions[k];
                }
            }
        }
    }
    for k in 0..d {
        s.f[k] = V::zero();
    }
    let x = &s.x;
    let f = &mut s.f;

    // Bonds.
    let mut e_bond = V::zero();
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
    let mut e_angle = V::zero();
    for a in &ff.angles {
        let xj = p3(x, a.j);
        let u = sub3(p3(x, a.i), xj);
        let v = sub3(p3(x, a.k), xj);
        let p = cross3(u, v);
        let pn = dot3(p, p).sqrt();
        let theta = atan2_pos(pn, dot3(u, v));
        let dt = theta - a.theta0;
        e_angle += dt * dt * (0.5 * a.k_force);
        let ok = pn.gt(V::zero());
        let c = V::select(ok, dt * -a.k_force / pn, V::zero());
        let gu = scale3(cross3(u, p), c / dot3(u, u));
        let gv = scale3(cross3(v, p), -c / dot3(v, v));
        acc(f, a.i, gu, V::splat(1.0));
        acc(f, a.k, gv, V::splat(1.0));
        acc(f, a.j, add3(gu, gv), V::splat(-1.0));
    }

    // Torsions: cos φ = m·n/(|m||n|), sin φ = |b2| b1·n/(|m||n|) (IUPAC sign), cos nφ and
    // sin nφ by recurrence; gradient as in `dihedral_with_grad`.
    let mut e_tors = V::zero();
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
        let zero = V::zero();
        let ok = and_mask(and_mask(mm.gt(zero), nn.gt(zero)), b22.gt(zero));
        let inv_mn = V::select(ok, 1.0 / (mm * nn).sqrt(), V::zero());
        // Degenerate quadruples: φ = 0 (as atan2(0, 0)) and a zero gradient.
        let cphi = V::select(ok, dot3(m, nv) * inv_mn, V::splat(1.0));
        let sphi = b2n * dot3(b1, nv) * inv_mn;
        let (mut cn, mut sn) = (cphi, sphi);
        let mut de_dphi = V::zero();
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
        let inv_mm = V::select(ok, 1.0 / mm, V::zero());
        let inv_nn = V::select(ok, 1.0 / nn, V::zero());
        let inv_b22 = V::select(ok, 1.0 / b22, V::zero());
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
    let mut e_nb = V::zero();
    for v in s.integral.iter_mut() {
        *v = V::zero();
    }
    for (p, pk) in kp.pairs.iter().enumerate() {
        let dv = sub3(p3(x, pk.j), p3(x, pk.i));
        let r2 = dot3(dv, dv);
        let r = r2.sqrt();
        let inv_r = 1.0 / r;
        s.d[p] = dv;
        s.r[p] = r;
        s.inv_r[p] = inv_r;
        let mut radial = V::zero();
        if let Some((qq, sigma2, eps4)) = pk.nb {
            let inv_r2 = inv_r * inv_r;
            let s2 = inv_r2 * sigma2;
            let s6 = s2 * s2 * s2;
            let coul = inv_r * qq;
            e_nb += (s6 * s6 - s6) * eps4 + coul;
            radial = -(coul + (s6 * s6 * 12.0 - s6 * 6.0) * eps4) * inv_r;
        }
        s.radial[p] = radial;
        let (v_ij, d_ij) = obc(r, inv_r, pk.or_i, pk.sr_j);
        let (v_ji, d_ji) = obc(r, inv_r, pk.or_j, pk.sr_i);
        s.integral[pk.i] += v_ij;
        s.integral[pk.j] += v_ji;
        s.di_ij[p] = d_ij;
        s.di_ji[p] = d_ji;
    }

    // Born radii and single-particle GB terms.
    let mut e_gb = V::zero();
    for (a, ak) in kp.atoms.iter().enumerate() {
        let psi = s.integral[a] * ak.or;
        let psi2 = psi * psi;
        let th = tanh(psi * (psi2 * OBC_GAMMA + OBC_ALPHA));
        let inv_born = ak.inv_or - th * ak.inv_radius_b;
        let born = 1.0 / inv_born;
        s.dborn_di[a] =
            born * born * (1.0 - th * th) * (psi2 * (3.0 * OBC_GAMMA) + OBC_ALPHA) * (ak.or * ak.inv_radius_b);
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
        let inv_f = 1.0 / f2.sqrt();
        let ep = inv_f * pk.gb_qq;
        e_gb += ep;
        let de_df2 = ep * inv_f * inv_f * -0.5;
        s.radial[p] += de_df2 * r * (2.0 - ex * 0.5);
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

    let mut out = [EnergyTerms::NAN; L];
    for l in 0..L {
        if valid[l] {
            out[l] = EnergyTerms {
                bonds: e_bond.0[l],
                angles: e_angle.0[l],
                torsions: e_tors.0[l],
                nonbonded: e_nb.0[l],
                gb: e_gb.0[l],
                total: e_bond.0[l] + e_angle.0[l] + e_tors.0[l] + e_nb.0[l] + e_gb.0[l],
            };
        } else {
            for k in 0..d {
                s.f[k].0[l] = 0.0;
            }
        }
    }
    out
}

/// Whether the AVX2 entry point can be used on this CPU (checked once).
pub(super) fn use_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The 4-lane kernel compiled with AVX2 enabled.
///
/// # Safety
/// The CPU must support AVX2 ([`use_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,avx2")]
unsafe fn eval4_avx2(
    ff: &AldpForceField,
    xs: &[f64],
    fs: &mut [f64],
    s: &mut LaneScratch<4>,
) -> [EnergyTerms; 4] {
    eval_lanes::<4>(ff, xs, fs, s)
}

/// Four configurations at once (`xs`, `fs`: `[4, 66]`), with AVX2 when available. The
/// results are bit-identical to the baseline (SSE2) build: no FMA, same operation order.
pub(super) fn eval4(ff: &AldpForceField, xs: &[f64], fs: &mut [f64], s: &mut LaneScratch<4>) -> [EnergyTerms; 4] {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: AVX2 support was detected at run time just above.
        return unsafe { eval4_avx2(ff, xs, fs, s) };
    }
    eval_lanes::<4>(ff, xs, fs, s)
}

/// One configuration (`xs`, `fs`: `[66]`) through the same kernel with a single lane.
pub(super) fn eval1(ff: &AldpForceField, xs: &[f64], fs: &mut [f64], s: &mut LaneScratch<1>) -> EnergyTerms {
    eval_lanes::<1>(ff, xs, fs, s)[0]
}
