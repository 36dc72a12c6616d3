//! The z → x reconstruction and its reverse-mode derivative for `L` configurations at once
//! (one per SIMD lane): the same mathematics as `to_cartesian_into` / `backward_into` in
//! `internal.rs`, with the NeRF frames and the sines/cosines cached by the forward pass for the
//! backward pass, and the branch-free ln and sin/cos of [`fab_simd`].

use super::internal::{InternalCoordinates, BUILD_ORDER, CART_DIM, FLOW_DIM, SEED_ATOMS, Z_MATRIX};
use super::vec3::{add3, cross3, dot3, scale3, sub3, V3};
use fab_simd::{ln_normal, sin_cos, Lane};

/// What the forward pass keeps of one z-matrix row for the backward pass.
#[derive(Debug, Clone, Copy)]
struct RowCache<T: Lane> {
    bc: V3<T>,
    nrm: V3<T>,
    m: V3<T>,
    u2: V3<T>,
    inv_l1: T,
    inv_ln: T,
    b: T,
    st: T,
    ct: T,
    sp: T,
    cp: T,
}

/// Buffers of the lane transform.
#[derive(Debug, Clone)]
pub(super) struct NerfScratch<T: Lane> {
    rows: Vec<RowCache<T>>,
    seed: Vec<T>, // b2, cos a, sin a
}

impl<T: Lane> Default for NerfScratch<T> {
    fn default() -> Self {
        Self { rows: Vec::new(), seed: Vec::new() }
    }
}

#[inline(always)]
fn p3<T: Lane>(x: &[T], a: usize) -> V3<T> {
    [x[3 * a], x[3 * a + 1], x[3 * a + 2]]
}

/// Raw internal coordinate i from the normalised z (no closure: see `kernel.rs`).
#[inline(always)]
fn icv<T: Lane>(ic: &InternalCoordinates, z: &[T], i: usize) -> T {
    z[i] * ic.std[i] + ic.mean[i]
}

#[inline(always)]
fn set3<T: Lane>(x: &mut [T], a: usize, v: V3<T>) {
    x[3 * a] = v[0];
    x[3 * a + 1] = v[1];
    x[3 * a + 2] = v[2];
}

#[inline(always)]
fn add_to3<T: Lane>(x: &mut [T], a: usize, v: V3<T>) {
    x[3 * a] += v[0];
    x[3 * a + 1] += v[1];
    x[3 * a + 2] += v[2];
}

/// z (60 lane vectors) → x (66), returning log|det ∂x/∂z| per lane and a mask of the lanes
/// inside the chart (all bonds in (1e-20, 1e20) nm, all |sin θ| > 1e-20); the log-det of the
/// other lanes is meaningless.
#[inline(always)]
pub(super) fn to_cartesian_lanes<T: Lane>(ic: &InternalCoordinates, z: &[T], x: &mut [T], s: &mut NerfScratch<T>) -> (T, T::Mask) {
    debug_assert!(z.len() == FLOW_DIM && x.len() == CART_DIM);

    // Chart with margins: bonds in (1e-20, 1e20) nm and |sin θ| > 1e-20, so that products of
    // four rows of b²|sin θ| stay within (1e-240, 1e160) and never under- or overflow.
    let z0 = z[0].c(0.0);
    let one = z0.c(1.0);
    let tiny = z0.c(1e-20);
    let huge = z0.c(1e20);
    let (b1, b2, a) = (icv(ic, z, 0), icv(ic, z, 1), icv(ic, z, 2));
    let (sa, ca) = sin_cos(a);
    for v in x.iter_mut() {
        *v = z0;
    }
    set3(x, SEED_ATOMS[1], [b1, z0, z0]);
    set3(x, SEED_ATOMS[2], [b2 * ca, b2 * sa, z0]);
    s.seed.clear();
    s.seed.extend([b2, ca, sa]);
    s.rows.resize(
        Z_MATRIX.len(),
        RowCache { bc: [z0; 3], nrm: [z0; 3], m: [z0; 3], u2: [z0; 3], inv_l1: z0, inv_ln: z0, b: z0, st: z0, ct: z0, sp: z0, cp: z0 },
    );
    let mut ok = T::and(T::and(b1.gt(tiny), b2.gt(tiny)), T::and(b1.lt(huge), b2.lt(huge)));
    // Σ 2 ln b + ln|sin θ| as ln of products, a few rows at a time (no overflow/underflow for
    // bonds and sines in (1e-300, 1e300)).
    let mut ld = ln_normal(T::select(ok, b2, one)) + ic.log_std_sum;
    let mut prod = one;
    for (k, &row) in BUILD_ORDER.iter().enumerate() {
        let [atom, r1, r2, r3] = Z_MATRIX[row];
        let (b, theta, dih) = (icv(ic, z, 3 * row + 3), icv(ic, z, 3 * row + 4), icv(ic, z, 3 * row + 5));
        let (st, ct) = sin_cos(theta);
        let (sp, cp) = sin_cos(-dih);
        let (pa, pb, pc) = (p3(x, r3), p3(x, r2), p3(x, r1));
        let u1 = sub3(pc, pb);
        let inv_l1 = dot3(u1, u1).sqrt().recip();
        let bc = scale3(u1, inv_l1);
        let u2 = sub3(pb, pa);
        let nv = cross3(u2, bc);
        let inv_ln = dot3(nv, nv).sqrt().recip();
        let nrm = scale3(nv, inv_ln);
        let m = cross3(nrm, bc);
        let d0 = -b * ct;
        let bst = b * st;
        let d1 = bst * cp;
        let d2 = bst * sp;
        set3(x, atom, add3(pc, add3(add3(scale3(bc, d0), scale3(m, d1)), scale3(nrm, d2))));
        s.rows[row] = RowCache { bc, nrm, m, u2, inv_l1, inv_ln, b, st, ct, sp, cp };
        let sabs = st.abs();
        ok = T::and(ok, T::and(T::and(b.gt(tiny), b.lt(huge)), sabs.gt(tiny)));
        prod = prod * T::select(ok, b * b * sabs, one);
        if k % 4 == 3 || k + 1 == BUILD_ORDER.len() {
            ld += ln_normal(prod);
            prod = one;
        }
    }
    (ld, ok)
}

/// Reverse mode of [`to_cartesian_lanes`] with ∂L/∂log|det| = 1: `gx` (∂L/∂x, consumed) → `gz`.
/// Uses the frames cached by the forward pass on the same `s`.
#[inline(always)]
pub(super) fn backward_lanes<T: Lane>(ic: &InternalCoordinates, gx: &mut [T], gz: &mut [T], s: &NerfScratch<T>) {
    for &row in BUILD_ORDER.iter().rev() {
        let [atom, r1, r2, r3] = Z_MATRIX[row];
        let c = &s.rows[row];
        let g_d = p3(gx, atom);
        let d0 = -c.b * c.ct;
        let bst = c.b * c.st;
        let d1 = bst * c.cp;
        let d2 = bst * c.sp;
        let g_d0 = dot3(g_d, c.bc);
        let g_d1 = dot3(g_d, c.m);
        let g_d2 = dot3(g_d, c.nrm);
        // D = C + d0 bc + d1 m + d2 nrm, m = nrm × bc, nrm = nv/|nv|, nv = u2 × bc, bc = u1/|u1|.
        let g_m = scale3(g_d, d1);
        let g_nrm = add3(scale3(g_d, d2), cross3(c.bc, g_m));
        let mut g_bc = add3(scale3(g_d, d0), cross3(g_m, c.nrm));
        let g_nv = scale3(sub3(g_nrm, scale3(c.nrm, dot3(c.nrm, g_nrm))), c.inv_ln);
        let g_u2 = cross3(c.bc, g_nv);
        g_bc = add3(g_bc, cross3(g_nv, c.u2));
        let g_u1 = scale3(sub3(g_bc, scale3(c.bc, dot3(c.bc, g_bc))), c.inv_l1);
        add_to3(gx, r1, add3(g_d, g_u1));
        add_to3(gx, r2, sub3(g_u2, g_u1));
        add_to3(gx, r3, [-g_u2[0], -g_u2[1], -g_u2[2]]);
        // Internal coordinates, plus the log-det terms 2 ln b and ln|sin θ|.
        let g_b = -g_d0 * c.ct + (g_d1 * c.cp + g_d2 * c.sp) * c.st + c.b.recip() * 2.0;
        let g_theta = (g_d0 * c.st + (g_d1 * c.cp + g_d2 * c.sp) * c.ct) * c.b + c.ct / c.st;
        let g_phi = (g_d2 * c.cp - g_d1 * c.sp) * bst;
        gz[3 * row + 3] = g_b * ic.std[3 * row + 3];
        gz[3 * row + 4] = g_theta * ic.std[3 * row + 4];
        gz[3 * row + 5] = -g_phi * ic.std[3 * row + 5];
    }
    let (b2, ca, sa) = (s.seed[0], s.seed[1], s.seed[2]);
    let g_n = p3(gx, SEED_ATOMS[1]);
    let g_c = p3(gx, SEED_ATOMS[2]);
    gz[0] = g_n[0] * ic.std[0];
    gz[1] = (g_c[0] * ca + g_c[1] * sa + b2.recip()) * ic.std[1];
    gz[2] = (g_c[1] * ca - g_c[0] * sa) * b2 * ic.std[2];
}
