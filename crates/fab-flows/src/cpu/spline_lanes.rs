//! Vectorised rational-quadratic spline kernels: the per-element spline work of
//! [`crate::SplineCoupling`]'s CPU path, several elements at a time (eight f64 lanes with
//! AVX-512, four with AVX2 + FMA, one otherwise; eight and four give bitwise the same results).
//!
//! The mathematics is that of the scalar reference kernels in [`crate::spline`] (which the tests
//! compare against): softmax widths and heights, cumulative knots, bin search, the
//! rational-quadratic map and its log-derivative, and the hand-derived reverse pass, except that
//! * `exp`, `ln` and `log1p` are the branch-free lane versions of [`fab_simd`];
//! * divisions by a common denominator are multiplications by its reciprocal, and the
//!   log-derivative is ln(s²·n₂/den²) (one logarithm instead of three), so results differ from
//!   the reference by a few ulp;
//! * gradients of parameters shared by every row (the unconditional splines) are summed over
//!   the rows as knot-position and knot-derivative gradients, then mapped through the cumsum,
//!   softmax and softplus once (the map is linear).
//!
//! All computation is in f64 whatever the storage type. Each row is processed in groups of
//! [`Lane::N`] features (the last group padded with copies of the last feature, whose results
//! are discarded). Every lane operation is correctly rounded per lane, rows are independent,
//! and sums over rows (shared-parameter gradients) run over fixed blocks of rows combined in
//! order, so results are bitwise independent of the number of threads.

use fab_simd::{Lane, F1, MAX_LANES};
#[cfg(target_arch = "x86_64")]
use fab_simd::{X4, X8};
use rayon::prelude::*;

use super::Real;
use crate::spline::{SplineSpec, Tail, MIN_BIN_HEIGHT, MIN_BIN_WIDTH, MIN_DERIVATIVE};

/// Rows per block of work (the unit of parallel splitting and of shared-gradient partial sums).
const ROW_BLOCK: usize = 16;

/// The splines of one call: one spec per feature, all with the same number of bins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SplineSet<'a> {
    /// One spec per feature.
    pub specs: &'a [SplineSpec],
    /// Column of each feature within a row.
    pub cols: &'a [usize],
    /// Row length (stride) of the data buffers.
    pub stride: usize,
}

impl SplineSet<'_> {
    fn f(&self) -> usize {
        self.specs.len()
    }
    fn k(&self) -> usize {
        self.specs[0].bins
    }
    fn np(&self) -> usize {
        3 * self.k() + 1
    }
}

/// Where a call's spline parameters come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Params<'a, T> {
    /// Per row: `[n, F·(3K+1)]`.
    PerRow(&'a [T]),
    /// One set for every row: `[F·(3K+1)]`.
    Shared(&'a [T]),
    /// Per row, as recorded by [`apply_rows`] for [`backward_rows`] (backward only).
    Recorded(&'a SplineCache),
}

/// What the backward pass of per-row splines needs from the forward pass, so that it does not
/// recompute the softmaxes and softplus: per row, for each group of features the softmax widths
/// and heights (`[groups, 2K, width]`), then for each group the knot derivatives at the ends of
/// each element's bin and the sigmoids of their raw parameters (`[groups, 4, width]`), in f64;
/// one buffer per block of [`ROW_BLOCK`] rows (written by appending, so never zero-filled).
#[derive(Debug)]
pub(crate) struct SplineCache {
    width: usize,
    blocks: Vec<Vec<f64>>,
}

/// Cached vectors per group and row.
fn cache_items(k: usize) -> usize {
    2 * k + 4
}

/// Where the backward pass puts parameter gradients.
#[derive(Debug)]
pub(crate) enum ParamGrads<'a, T> {
    /// Not wanted.
    None,
    /// Per row, `[n, F·(3K+1)]`, *written* (not accumulated).
    PerRow(&'a mut [T]),
    /// Shared parameters, `[F·(3K+1)]`, summed over the rows and *added*.
    Shared(&'a mut [T]),
}

// ---------------------------------------------------------------------------------------------
// Dispatch.

/// A computation generic over the lane type.
trait LaneOp {
    type Output;
    fn run<L: Lane>(self, ctx: L::Ctx) -> Self::Output;
}

#[cfg(target_arch = "x86_64")]
struct WithX4<Op>(Op, pulp::x86::V3);

#[cfg(target_arch = "x86_64")]
impl<Op: LaneOp> pulp::NullaryFnOnce for WithX4<Op> {
    type Output = Op::Output;
    #[inline(always)]
    fn call(self) -> Op::Output {
        self.0.run::<X4>(self.1)
    }
}

#[cfg(target_arch = "x86_64")]
struct WithX8<Op>(Op, pulp::x86::V4);

#[cfg(target_arch = "x86_64")]
impl<Op: LaneOp> pulp::NullaryFnOnce for WithX8<Op> {
    type Output = Op::Output;
    #[inline(always)]
    fn call(self) -> Op::Output {
        self.0.run::<X8>(self.1)
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: the lane width for calls made from this thread (None: the CPU's widest).
    static FORCE_WIDTH: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Lanes per group: 8 when the CPU has AVX-512 (F, BW, CD, DQ, VL), 4 with AVX2 + FMA, 1
/// otherwise. Decided once per call (on the calling thread) and passed to [`dispatch`]. Widths 4
/// and 8 give bitwise the same results (the lanes run the same IEEE operations and the one
/// cross-lane sum, the log-determinant's, is ordered by feature).
fn lane_width() -> usize {
    #[cfg(test)]
    if let Some(w) = FORCE_WIDTH.with(|f| f.get()) {
        return w;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if pulp::x86::V4::try_new().is_some() {
            return 8;
        }
        if pulp::x86::V3::try_new().is_some() {
            return 4;
        }
    }
    1
}

/// Runs `op` with `width` (from [`lane_width`]) lanes.
fn dispatch<Op: LaneOp>(width: usize, op: Op) -> Op::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if width == 8 {
            let simd = pulp::x86::V4::try_new().expect("eight lanes need AVX-512");
            return simd.vectorize(WithX8(op, simd));
        }
        if width == 4 {
            let simd = pulp::x86::V3::try_new().expect("four lanes need AVX2 + FMA");
            return simd.vectorize(WithX4(op, simd));
        }
    }
    assert_eq!(width, 1, "unsupported lane width");
    op.run::<F1<false>>(())
}

// ---------------------------------------------------------------------------------------------
// Groups of features.

/// A group of up to four features processed together, as plain per-lane data.
#[derive(Debug, Clone, Copy)]
struct GroupData {
    /// First feature and number of real lanes.
    f0: usize,
    nl: usize,
    /// Feature and column of each lane (padding lanes repeat the last feature).
    feat: [usize; MAX_LANES],
    col: [usize; MAX_LANES],
    bound: [f64; MAX_LANES],
    /// The bound of the inside test (`spline::storage_bound` for the stored type).
    edge: [f64; MAX_LANES],
    scale: [f64; MAX_LANES],
    /// 1 for linear tails, 0 for circular ones.
    linear: [f64; MAX_LANES],
    /// 1 for real lanes, 0 for padding.
    valid: [f64; MAX_LANES],
    circ: [bool; MAX_LANES],
}

fn group_data<T: Real>(set: &SplineSet<'_>, width: usize) -> Vec<GroupData> {
    let f = set.f();
    (0..f.div_ceil(width))
        .map(|gi| {
            let f0 = gi * width;
            let nl = width.min(f - f0);
            let mut gd = GroupData {
                f0,
                nl,
                feat: [0; MAX_LANES],
                col: [0; MAX_LANES],
                bound: [0.0; MAX_LANES],
                edge: [0.0; MAX_LANES],
                scale: [0.0; MAX_LANES],
                linear: [0.0; MAX_LANES],
                valid: [0.0; MAX_LANES],
                circ: [false; MAX_LANES],
            };
            for l in 0..MAX_LANES {
                let ft = (f0 + l).min(f0 + nl - 1);
                let spec = &set.specs[ft];
                gd.feat[l] = ft;
                gd.col[l] = set.cols[ft];
                gd.bound[l] = spec.bound;
                gd.edge[l] = crate::spline::storage_bound::<T>(spec.bound);
                gd.scale[l] = spec.raw_scale;
                gd.circ[l] = spec.tail == Tail::Circular;
                gd.linear[l] = if gd.circ[l] { 0.0 } else { 1.0 };
                gd.valid[l] = if l < nl { 1.0 } else { 0.0 };
            }
            gd
        })
        .collect()
}

/// A group's per-lane constants as lanes.
#[derive(Clone, Copy)]
struct Group<L: Lane> {
    bound: L,
    edge: L,
    scale: L,
    linear: L::Mask,
    valid: L::Mask,
}

impl<L: Lane> Group<L> {
    #[inline(always)]
    fn load(ctx: L::Ctx, gd: &GroupData) -> Self {
        let one = L::splat(ctx, 1.0);
        Group {
            bound: L::load(ctx, &gd.bound),
            edge: L::load(ctx, &gd.edge),
            scale: L::load(ctx, &gd.scale),
            linear: L::load(ctx, &gd.linear).eq(one),
            valid: L::load(ctx, &gd.valid).eq(one),
        }
    }

    /// Lanes inside [−B, B] (B as rounded to the stored type where that widens it).
    #[inline(always)]
    fn inside(&self, v: L) -> L::Mask {
        L::and(v.ge(-self.edge), v.le(self.edge))
    }

    /// The point the spline is evaluated at: `v` moved onto [−B, B] where it is inside (a no-op
    /// but for values that rounding put just past ±B), 0 where it is outside (a safe point
    /// whose result is discarded).
    #[inline(always)]
    fn eval_point(&self, v: L, ins: L::Mask) -> L {
        let v = L::select(v.gt(self.bound), self.bound, v);
        let v = L::select(v.lt(-self.bound), -self.bound, v);
        L::select(ins, v, v.c(0.0))
    }
}

// ---------------------------------------------------------------------------------------------
// Knots.

/// What the bin search reads: knot positions and (for shared parameters) knot derivatives.
trait KnotLanes<L: Lane> {
    fn cw(&self, j: usize) -> L;
    fn ch(&self, j: usize) -> L;
    fn d(&self, j: usize) -> L;
}

/// Per-row knots of one group: positions `cw`, `ch` (K + 1) and softmax values `sw`, `sh` (K).
struct Knots<L: Lane> {
    k: usize,
    v: Vec<L>,
}

impl<L: Lane> Knots<L> {
    fn new(ctx: L::Ctx, k: usize) -> Self {
        Knots { k, v: vec![L::splat(ctx, 0.0); 4 * (k + 1)] }
    }
    #[inline(always)]
    fn part(&self, i: usize) -> &[L] {
        &self.v[i * (self.k + 1)..(i + 1) * (self.k + 1)]
    }
    #[inline(always)]
    fn sw(&self) -> &[L] {
        &self.part(2)[..self.k]
    }
    #[inline(always)]
    fn sh(&self) -> &[L] {
        &self.part(3)[..self.k]
    }

    /// Cumulative knots from recorded softmax values (`soft(j)`: widths for j < K, then heights).
    #[inline(always)]
    fn load_soft(&mut self, g: &Group<L>, soft: impl Fn(usize) -> L) {
        let k = self.k;
        let kp = k + 1;
        let (cw, rest) = self.v.split_at_mut(kp);
        let (ch, rest) = rest.split_at_mut(kp);
        let (sw, sh) = rest.split_at_mut(kp);
        for j in 0..k {
            sw[j] = soft(j);
            sh[j] = soft(k + j);
        }
        cumulative(g.bound, MIN_BIN_WIDTH, &sw[..k], cw);
        cumulative(g.bound, MIN_BIN_HEIGHT, &sh[..k], ch);
    }

    /// Softmax and cumulative knots from raw parameters (`raw(p)`: parameter p of every lane).
    #[inline(always)]
    fn compute(&mut self, g: &Group<L>, raw: impl Fn(usize) -> L) {
        let k = self.k;
        Self::softmax_knots(k, &mut self.v[..4 * (k + 1)], g, raw);
    }

    #[inline(always)]
    fn softmax_knots(k: usize, v: &mut [L], g: &Group<L>, raw: impl Fn(usize) -> L) {
        let kp = k + 1;
        let (cw, rest) = v.split_at_mut(kp);
        let (ch, rest) = rest.split_at_mut(kp);
        let (sw, sh) = rest.split_at_mut(kp);
        // softmax(raw · scale), max-shifted, for widths and heights (one reciprocal for both).
        let (sw, sh) = (&mut sw[..k], &mut sh[..k]);
        let sum_w = exp_shifted(g.scale, &raw, sw);
        let sum_h = exp_shifted(g.scale, |i| raw(k + i), sh);
        let r = g.scale.c(1.0) / (sum_w * sum_h);
        let (rw, rh) = (sum_h * r, sum_w * r);
        for (a, b) in sw.iter_mut().zip(sh.iter_mut()) {
            *a = *a * rw;
            *b = *b * rh;
        }
        cumulative(g.bound, MIN_BIN_WIDTH, sw, cw);
        cumulative(g.bound, MIN_BIN_HEIGHT, sh, ch);
    }
}

impl<L: Lane> KnotLanes<L> for Knots<L> {
    #[inline(always)]
    fn cw(&self, j: usize) -> L {
        self.v[j]
    }
    #[inline(always)]
    fn ch(&self, j: usize) -> L {
        self.v[self.k + 1 + j]
    }
    #[inline(always)]
    fn d(&self, _: usize) -> L {
        unreachable!("per-row knots have no derivatives")
    }
}

/// `out_i = exp(raw_i · scale − max_j raw_j · scale)`; returns Σ out_i.
#[inline(always)]
fn exp_shifted<L: Lane>(scale: L, raw: impl Fn(usize) -> L, out: &mut [L]) -> L {
    let mut m = scale.c(f64::NEG_INFINITY);
    for (i, o) in out.iter_mut().enumerate() {
        *o = raw(i) * scale;
        m = o.max(m);
    }
    let mut s = scale.c(0.0);
    for o in out.iter_mut() {
        *o = fab_simd::exp_nonpos(*o - m);
        s += *o;
    }
    s
}

/// Knot positions −B, −B + 2B·Σ_{i<j}(min + a·soft_i), …, B.
#[inline(always)]
fn cumulative<L: Lane>(bound: L, min: f64, soft: &[L], out: &mut [L]) {
    let k = soft.len();
    let a = 1.0 - min * k as f64;
    let two_b = bound * 2.0;
    let mut acc = bound.c(0.0);
    out[0] = -bound;
    for j in 1..k {
        acc += (soft[j - 1] * a) + min;
        out[j] = two_b * acc - bound;
    }
    out[k] = bound;
}

/// softplus and sigmoid of `u0` and `u1`, sharing e^{−|u|} and one reciprocal.
#[inline(always)]
fn softplus_sigmoid2<L: Lane>(u0: L, u1: L) -> [(L, L); 2] {
    let zero = u0.c(0.0);
    let (e0, e1) = (fab_simd::exp_nonpos(-u0.abs()), fab_simd::exp_nonpos(-u1.abs()));
    let (p0, p1) = (e0 + 1.0, e1 + 1.0);
    let r = u0.c(1.0) / (p0 * p1);
    let (r0, r1) = (p1 * r, p0 * r);
    [
        (u0.max(zero) + fab_simd::log1p_unit(e0), L::select(u0.ge(zero), r0, e0 * r0)),
        (u1.max(zero) + fab_simd::log1p_unit(e1), L::select(u1.ge(zero), r1, e1 * r1)),
    ]
}

/// Knots, knot derivatives and sigmoids of shared splines, once per call, lane-ready:
/// `[group][part][j]` with parts cw, ch, sw, sh, d, sig (K + 1 entries each; `d` and `sig` with
/// the tail overrides applied, `sig` 0 where a tail fixes the derivative).
struct SharedKnots {
    k: usize,
    v: Vec<[f64; MAX_LANES]>,
}

const SHARED_PARTS: usize = 6;

impl SharedKnots {
    fn new<T: Real>(set: &SplineSet<'_>, raw: &[T], gds: &[GroupData], width: usize) -> Self {
        struct Op<'a, T> {
            k: usize,
            gds: &'a [GroupData],
            raw: &'a [T],
        }
        impl<T: Real> LaneOp for Op<'_, T> {
            type Output = Vec<[f64; MAX_LANES]>;
            #[inline(always)]
            fn run<L: Lane>(self, ctx: L::Ctx) -> Vec<[f64; MAX_LANES]> {
                let (k, raw) = (self.k, self.raw);
                let (kp, np) = (k + 1, 3 * k + 1);
                let mut out = vec![[0.0; MAX_LANES]; self.gds.len() * SHARED_PARTS * kp];
                let mut kn = Knots::<L>::new(ctx, k);
                for (gi, gd) in self.gds.iter().enumerate() {
                    let g = Group::load(ctx, gd);
                    let at = |l: usize, p: usize| raw[gd.feat[l] * np + p].as_f64();
                    kn.compute(&g, |p| L::from_fn(ctx, |l| at(l, p)));
                    let o = &mut out[gi * SHARED_PARTS * kp..(gi + 1) * SHARED_PARTS * kp];
                    for (j, v) in kn.v.iter().enumerate() {
                        o[j] = v.to_array();
                    }
                    // Derivative and sigmoid of every knot, with the tail overrides.
                    for j in 0..kp {
                        let src = |l: usize| {
                            if j == k {
                                gd.circ[l].then_some(0)
                            } else {
                                (j > 0 || gd.circ[l]).then_some(j)
                            }
                        };
                        let r = L::from_fn(ctx, |l| at(l, 2 * k + src(l).unwrap_or(0)));
                        let [(sp, sg), _] = softplus_sigmoid2(r, r);
                        let fixed = L::from_fn(ctx, |l| if src(l).is_none() { 1.0 } else { 0.0 }).eq(r.c(1.0));
                        o[4 * kp + j] = L::select(fixed, r.c(1.0), sp + MIN_DERIVATIVE).to_array();
                        o[5 * kp + j] = L::select(fixed, r.c(0.0), sg).to_array();
                    }
                }
                out
            }
        }
        SharedKnots { k: set.k(), v: dispatch(width, Op { k: set.k(), gds, raw }) }
    }

    /// Part `pi` of group `gi`, lane `l`.
    fn lane_part(&self, gi: usize, pi: usize, l: usize) -> impl Iterator<Item = f64> + '_ {
        let kp = self.k + 1;
        self.v[(gi * SHARED_PARTS + pi) * kp..(gi * SHARED_PARTS + pi + 1) * kp].iter().map(move |a| a[l])
    }

    #[inline(always)]
    fn view<L: Lane>(&self, ctx: L::Ctx, gi: usize) -> SharedView<'_, L> {
        let n = SHARED_PARTS * (self.k + 1);
        SharedView { ctx, kp: self.k + 1, v: &self.v[gi * n..(gi + 1) * n] }
    }
}

/// One group's shared knots as lanes.
struct SharedView<'a, L: Lane> {
    ctx: L::Ctx,
    kp: usize,
    v: &'a [[f64; MAX_LANES]],
}

impl<L: Lane> KnotLanes<L> for SharedView<'_, L> {
    #[inline(always)]
    fn cw(&self, j: usize) -> L {
        L::load(self.ctx, &self.v[j])
    }
    #[inline(always)]
    fn ch(&self, j: usize) -> L {
        L::load(self.ctx, &self.v[self.kp + j])
    }
    #[inline(always)]
    fn d(&self, j: usize) -> L {
        L::load(self.ctx, &self.v[4 * self.kp + j])
    }
}

// ---------------------------------------------------------------------------------------------
// One bin.

/// The bin of every lane and the quantities at its ends.
#[derive(Clone, Copy)]
struct Bin<L: Lane> {
    /// Bin index (as a float).
    idx: L,
    x0: L,
    x1: L,
    y0: L,
    y1: L,
    d0: L,
    d1: L,
}

/// Bin search of `v` among the knots `cw` (or `ch` with `inverse`): the number of interior
/// knots ≤ v, which equals the reference's searchsorted for v ∈ [−B, B]. With `with_d`, also
/// picks the knot derivatives.
#[inline(always)]
fn search<L: Lane>(kn: &impl KnotLanes<L>, k: usize, v: L, inverse: bool, with_d: bool) -> Bin<L> {
    let zero = v.c(0.0);
    let mut b = Bin { idx: zero, x0: kn.cw(0), x1: kn.cw(1), y0: kn.ch(0), y1: kn.ch(1), d0: zero, d1: zero };
    if with_d {
        b.d0 = kn.d(0);
        b.d1 = kn.d(1);
    }
    for j in 1..k {
        let (cw1, ch1) = (kn.cw(j + 1), kn.ch(j + 1));
        let m = v.ge(if inverse { b.y1 } else { b.x1 });
        b.idx = L::select(m, v.c(j as f64), b.idx);
        b.x0 = L::select(m, b.x1, b.x0);
        b.y0 = L::select(m, b.y1, b.y0);
        b.x1 = L::select(m, cw1, b.x1);
        b.y1 = L::select(m, ch1, b.y1);
        if with_d {
            b.d0 = L::select(m, b.d1, b.d0);
            b.d1 = L::select(m, kn.d(j + 1), b.d1);
        }
    }
    b
}

/// Per-lane bin index as usize.
#[inline(always)]
fn lane_idx<L: Lane>(idx: L) -> [usize; MAX_LANES] {
    idx.to_array().map(|v| v as usize)
}

/// Sources of the derivatives at a bin's two ends (see [`deriv_sources`]).
type DerivSources = (Option<usize>, Option<usize>);

/// Raw-parameter index (within the derivative block) of the derivatives at the two ends of
/// bin `idx`, or `None` where a linear tail fixes it to 1 (circular: the last copies the first).
#[inline(always)]
fn deriv_sources(k: usize, idx: usize, circ: bool) -> DerivSources {
    let lo = if idx == 0 && !circ { None } else { Some(idx) };
    let hi = if idx + 1 == k {
        if circ {
            Some(0)
        } else {
            None
        }
    } else {
        Some(idx + 1)
    };
    (lo, hi)
}

/// Per-row parameters: knot derivatives (and sigmoids of their raw values) at the ends of the
/// bins `b.idx`, loaded from `raw_at(lane, p)`.
#[inline(always)]
fn per_row_derivs<L: Lane>(
    k: usize,
    gd: &GroupData,
    g: &Group<L>,
    b: &mut Bin<L>,
    raw_at: impl Fn(usize, usize) -> f64,
) -> (L, L, [DerivSources; MAX_LANES]) {
    let ctx = b.idx.ctx();
    let idx = lane_idx(b.idx);
    let mut src = [(None, None); MAX_LANES];
    for l in 0..L::N {
        src[l] = deriv_sources(k, idx[l], gd.circ[l]);
    }
    let r0 = L::from_fn(ctx, |l| raw_at(l, 2 * k + src[l].0.unwrap_or(0)));
    let r1 = L::from_fn(ctx, |l| raw_at(l, 2 * k + src[l].1.unwrap_or(0)));
    let [(sp0, s0), (sp1, s1)] = softplus_sigmoid2(r0, r1);
    let one = r0.c(1.0);
    let first = L::and(g.linear, b.idx.eq(r0.c(0.0)));
    let last = L::and(g.linear, b.idx.eq(r0.c((k - 1) as f64)));
    b.d0 = L::select(first, one, sp0 + MIN_DERIVATIVE);
    b.d1 = L::select(last, one, sp1 + MIN_DERIVATIVE);
    (s0, s1, src)
}

/// Forward map of the bin: (y, log dy/dx).
#[inline(always)]
fn rq_forward<L: Lane>(b: &Bin<L>, x: L) -> (L, L) {
    let one = x.c(1.0);
    let w = b.x1 - b.x0;
    let h = b.y1 - b.y0;
    let inv_w = one / w;
    let s = h * inv_w;
    let th = (x - b.x0) * inv_w;
    let t = th * (one - th);
    let den = s + (b.d0 + b.d1 - s * 2.0) * t;
    let inv_den = one / den;
    let num = h * (s * th * th + b.d0 * t);
    let y = b.y0 + num * inv_den;
    let n2 = b.d1 * th * th + s * 2.0 * t + b.d0 * (one - th) * (one - th);
    let sd = s * inv_den;
    (y, fab_simd::ln_normal(sd * sd * n2))
}

/// Inverse map of the bin: (x, log dx/dy).
#[inline(always)]
fn rq_inverse<L: Lane>(b: &Bin<L>, y: L) -> (L, L) {
    let one = y.c(1.0);
    let w = b.x1 - b.x0;
    let h = b.y1 - b.y0;
    let s = h / w;
    let (d0, d1) = (b.d0, b.d1);
    let dy = y - b.y0;
    let c2 = d0 + d1 - s * 2.0;
    let a = dy * c2 + h * (s - d0);
    let bq = h * d0 - dy * c2;
    let c = -s * dy;
    let disc = (bq * bq - a * 4.0 * c).max(y.c(0.0));
    let th = (c * 2.0) / (-bq - disc.sqrt());
    let x = b.x0 + th * w;
    let t = th * (one - th);
    let den = s + c2 * t;
    let n2 = d1 * th * th + s * 2.0 * t + d0 * (one - th) * (one - th);
    let ds = den / s;
    (x, fab_simd::ln_normal(ds * ds / n2))
}

// ---------------------------------------------------------------------------------------------
// Values.

/// Applies the splines of `set` to the columns `set.cols` of `x` (`[n, stride]`) in place and
/// adds each row's log-determinant to `ld` (density direction, or with `inverse` the sampling
/// direction). With `record` (per-row parameters, density direction), also returns what
/// [`backward_rows`] needs instead of the parameters.
pub(crate) fn apply_rows<T: Real>(
    set: &SplineSet<'_>,
    x: &mut [T],
    params: Params<'_, T>,
    ld: &mut [T],
    inverse: bool,
    record: bool,
) -> Option<SplineCache> {
    let n = ld.len();
    let width = lane_width();
    let gds = group_data::<T>(set, width);
    let k = set.specs.first().map_or(0, |s| s.bins);
    let per_row = gds.len() * cache_items(k) * width;
    let rb = ROW_BLOCK;
    let mut cache = (record && matches!(params, Params::PerRow(_)) && !inverse)
        .then(|| SplineCache { width, blocks: (0..n.div_ceil(rb)).map(|bi| Vec::with_capacity(rb.min(n - bi * rb) * per_row)).collect() });
    if n == 0 || set.f() == 0 {
        return cache;
    }
    let shared = match params {
        Params::Shared(raw) => Some(SharedKnots::new(set, raw, &gds, width)),
        Params::PerRow(_) => None,
        Params::Recorded(_) => panic!("recorded parameters are for the backward pass"),
    };
    let fnp = set.f() * set.np();
    let block = |bi: usize, xb: &mut [T], lb: &mut [T], cb: Option<&mut Vec<f64>>| {
        let raw = match params {
            Params::PerRow(raw) => Some(&raw[bi * rb * fnp..(bi * rb + lb.len()) * fnp]),
            _ => None,
        };
        dispatch(width, ValueOp { set, gds: &gds, x: xb, raw, shared: shared.as_ref(), ld: lb, inverse, cache: cb });
    };
    let par = super::parallel_rows(n, set.f() * 40);
    match cache.as_mut() {
        Some(c) if par => x
            .par_chunks_mut(rb * set.stride)
            .zip(ld.par_chunks_mut(rb))
            .zip(c.blocks.par_iter_mut())
            .enumerate()
            .for_each(|(bi, ((xb, lb), cb))| block(bi, xb, lb, Some(cb))),
        Some(c) => x
            .chunks_mut(rb * set.stride)
            .zip(ld.chunks_mut(rb))
            .zip(c.blocks.iter_mut())
            .enumerate()
            .for_each(|(bi, ((xb, lb), cb))| block(bi, xb, lb, Some(cb))),
        None if par => {
            x.par_chunks_mut(rb * set.stride).zip(ld.par_chunks_mut(rb)).enumerate().for_each(|(bi, (xb, lb))| block(bi, xb, lb, None))
        }
        None => x.chunks_mut(rb * set.stride).zip(ld.chunks_mut(rb)).enumerate().for_each(|(bi, (xb, lb))| block(bi, xb, lb, None)),
    }
    cache
}

struct ValueOp<'a, T> {
    set: &'a SplineSet<'a>,
    gds: &'a [GroupData],
    x: &'a mut [T],
    /// Per-row parameters of this block's rows.
    raw: Option<&'a [T]>,
    shared: Option<&'a SharedKnots>,
    ld: &'a mut [T],
    inverse: bool,
    /// Where to record this block's softmaxes and derivatives (per-row parameters; appended).
    cache: Option<&'a mut Vec<f64>>,
}

impl<T: Real> LaneOp for ValueOp<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lane>(self, ctx: L::Ctx) {
        let ValueOp { set, gds, x, raw, shared, ld, inverse, mut cache } = self;
        let (k, np, f, stride) = (set.k(), set.np(), set.f(), set.stride);
        let mut kn = Knots::<L>::new(ctx, k);
        let zero = L::splat(ctx, 0.0);
        // Per-row parameters run in two phases over the row's groups (knots and bins, then
        // derivatives and the map), so that consecutive groups' work can overlap.
        let mut bins = vec![(Bin { idx: zero, x0: zero, x1: zero, y0: zero, y1: zero, d0: zero, d1: zero }, zero); gds.len()];
        for (i, (xr, l)) in x.chunks_exact_mut(stride).zip(ld.iter_mut()).enumerate() {
            // The log-determinant as four partial sums, of the features ≡ 0, 1, 2, 3 (mod 4) in
            // feature order, added at the end: the same order of additions at every lane width
            // (so four and eight lanes agree bit for bit).
            let mut acc = [0.0f64; 4];
            if let (None, Some(raw)) = (shared, raw) {
                for (gi, gd) in gds.iter().enumerate() {
                    let g = Group::<L>::load(ctx, gd);
                    let v = L::from_fn(ctx, |l| xr[gd.col[l]].as_f64());
                    let vin = g.eval_point(v, g.inside(v));
                    let base = gd.feat.map(|ft| (i * f + ft) * np);
                    kn.compute(&g, |p| L::from_fn(ctx, |l| raw[base[l] + p].as_f64()));
                    bins[gi] = (search(&kn, k, vin, inverse, false), v);
                    if let Some(c) = cache.as_deref_mut() {
                        for v in kn.sw().iter().chain(kn.sh()) {
                            v.push_to(c);
                        }
                    }
                }
            }
            for (gi, gd) in gds.iter().enumerate() {
                let g = Group::<L>::load(ctx, gd);
                let (b, v) = match (shared, raw) {
                    (Some(sk), _) => {
                        let v = L::from_fn(ctx, |l| xr[gd.col[l]].as_f64());
                        let vin = g.eval_point(v, g.inside(v));
                        (search(&sk.view::<L>(ctx, gi), k, vin, inverse, true), v)
                    }
                    (None, Some(raw)) => {
                        let (mut b, v) = bins[gi];
                        let base = gd.feat.map(|ft| (i * f + ft) * np);
                        let at = |l: usize, p: usize| raw[base[l] + p].as_f64();
                        let (s0, s1, _) = per_row_derivs(k, gd, &g, &mut b, at);
                        if let Some(c) = cache.as_deref_mut() {
                            for v in [b.d0, b.d1, s0, s1] {
                                v.push_to(c);
                            }
                        }
                        (b, v)
                    }
                    (None, None) => unreachable!("parameters are per row or shared"),
                };
                let ins = g.inside(v);
                let vin = g.eval_point(v, ins);
                let (out, dl) = if inverse { rq_inverse(&b, vin) } else { rq_forward(&b, vin) };
                let out = L::select(ins, out, v).to_array();
                for lane in 0..gd.nl {
                    xr[gd.col[lane]] = T::from_f64(out[lane]);
                }
                let d = L::select(L::and(ins, g.valid), dl, zero).to_array();
                for (lane, dv) in d.iter().enumerate().take(L::N) {
                    acc[(gd.f0 + lane) % 4] += dv;
                }
            }
            *l += T::from_f64(((acc[0] + acc[1]) + acc[2]) + acc[3]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reverse pass (density direction).

/// Reverse of [`apply_rows`] (without `inverse`) on the original inputs `x`: reads ∂L/∂out from
/// the columns `set.cols` of `g` (`[n, stride]`) and overwrites them with ∂L/∂in; `gld` is
/// ∂L/∂(log-det) per row. Parameter gradients go to `grads`.
pub(crate) fn backward_rows<T: Real>(
    set: &SplineSet<'_>,
    x: &[T],
    params: Params<'_, T>,
    g: &mut [T],
    gld: &[T],
    grads: ParamGrads<'_, T>,
) {
    let n = gld.len();
    if n == 0 || set.f() == 0 {
        return;
    }
    let (k, np, f) = (set.k(), set.np(), set.f());
    let kp = k + 1;
    let width = match params {
        Params::Recorded(c) => c.width,
        _ => lane_width(),
    };
    let gds = group_data::<T>(set, width);
    let shared = match params {
        Params::Shared(raw) => Some(SharedKnots::new(set, raw, &gds, width)),
        _ => None,
    };
    let rb = ROW_BLOCK;
    let fnp = f * np;
    let (graw_rows, graw_shared) = match grads {
        ParamGrads::PerRow(g) => (Some(g), None),
        ParamGrads::Shared(g) => (None, Some(g)),
        ParamGrads::None => (None, None),
    };
    let want_shared = graw_shared.is_some();
    let acc_len = if want_shared { f * 3 * kp } else { 0 };
    let stride = set.stride;
    let run = |bi: usize, gb: &mut [T], graw: Option<&mut [T]>| -> Vec<f64> {
        let rows = gb.len() / stride;
        let r0 = bi * rb;
        let raw = match params {
            Params::PerRow(raw) => Some(&raw[r0 * fnp..(r0 + rows) * fnp]),
            _ => None,
        };
        let cache = match params {
            Params::Recorded(c) => Some(&c.blocks[bi][..]),
            _ => None,
        };
        let mut acc = vec![0.0; acc_len];
        dispatch(
            width,
            BackwardOp {
                set,
                gds: &gds,
                x: &x[r0 * stride..(r0 + rows) * stride],
                raw,
                shared: shared.as_ref(),
                g: gb,
                gld: &gld[r0..r0 + rows],
                graw,
                acc: want_shared.then_some(&mut acc[..]),
                cache,
            },
        );
        acc
    };
    let par = super::parallel_rows(n, f * 80);
    let partials: Vec<Vec<f64>> = match graw_rows {
        Some(graw) => {
            if par {
                g.par_chunks_mut(rb * stride)
                    .zip(graw.par_chunks_mut(rb * fnp))
                    .enumerate()
                    .map(|(bi, (gb, gr))| run(bi, gb, Some(gr)))
                    .collect()
            } else {
                g.chunks_mut(rb * stride).zip(graw.chunks_mut(rb * fnp)).enumerate().map(|(bi, (gb, gr))| run(bi, gb, Some(gr))).collect()
            }
        }
        None => {
            if par {
                g.par_chunks_mut(rb * stride).enumerate().map(|(bi, gb)| run(bi, gb, None)).collect()
            } else {
                g.chunks_mut(rb * stride).enumerate().map(|(bi, gb)| run(bi, gb, None)).collect()
            }
        }
    };
    if let (Some(graw), Some(sk)) = (graw_shared, shared.as_ref()) {
        // Sum the blocks' knot gradients in order, then map them to the raw parameters.
        let mut tot = vec![0.0; acc_len];
        for p in &partials {
            for (a, b) in tot.iter_mut().zip(p) {
                *a += b;
            }
        }
        finish_shared(set, &gds, sk, &tot, graw);
    }
}

/// Maps summed knot-position and knot-derivative gradients (`tot`: `[F, 3, K + 1]`) of shared
/// splines to their raw parameters and adds them to `graw`.
fn finish_shared<T: Real>(set: &SplineSet<'_>, gds: &[GroupData], sk: &SharedKnots, tot: &[f64], graw: &mut [T]) {
    let (k, np) = (set.k(), set.np());
    let kp = k + 1;
    for (gi, gd) in gds.iter().enumerate() {
        for lane in 0..gd.nl {
            let fi = gd.f0 + lane;
            let spec = &set.specs[fi];
            let gr = &mut graw[fi * np..(fi + 1) * np];
            let t = &tot[fi * 3 * kp..(fi + 1) * 3 * kp];
            let sw: Vec<f64> = sk.lane_part(gi, 2, lane).take(k).collect();
            let sh: Vec<f64> = sk.lane_part(gi, 3, lane).take(k).collect();
            crate::spline::knots_to_raw(&t[..kp], &sw, spec.bound, MIN_BIN_WIDTH, spec.raw_scale, &mut gr[..k]);
            crate::spline::knots_to_raw(&t[kp..2 * kp], &sh, spec.bound, MIN_BIN_HEIGHT, spec.raw_scale, &mut gr[k..2 * k]);
            for (j, sig) in sk.lane_part(gi, 5, lane).enumerate() {
                let src = match spec.tail {
                    Tail::Linear if j == 0 || j == k => None,
                    Tail::Circular if j == k => Some(0),
                    _ => Some(j),
                };
                if let Some(s) = src {
                    gr[2 * k + s] += T::from_f64(t[2 * kp + j] * sig);
                }
            }
        }
    }
}

struct BackwardOp<'a, T> {
    set: &'a SplineSet<'a>,
    gds: &'a [GroupData],
    x: &'a [T],
    raw: Option<&'a [T]>,
    shared: Option<&'a SharedKnots>,
    g: &'a mut [T],
    gld: &'a [T],
    /// Per-row parameter gradients of this block's rows (written).
    graw: Option<&'a mut [T]>,
    /// Shared parameters: knot gradients summed over this block's rows, `[F, 3, K + 1]`.
    acc: Option<&'a mut [f64]>,
    /// Per-row parameters: what the forward pass recorded for this block's rows.
    cache: Option<&'a [f64]>,
}

impl<T: Real> LaneOp for BackwardOp<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lane>(self, ctx: L::Ctx) {
        let BackwardOp { set, gds, x, raw, shared, g, gld, mut graw, mut acc, cache } = self;
        let (k, np, f, stride) = (set.k(), set.np(), set.f(), set.stride);
        let kp = k + 1;
        let (w, nci, ng) = (L::N, cache_items(k), gds.len());
        let mut kn = Knots::<L>::new(ctx, k);
        let want_raw = graw.is_some() || acc.is_some();
        let zero = L::splat(ctx, 0.0);
        let one = L::splat(ctx, 1.0);
        for (i, (gr, xr)) in g.chunks_exact_mut(stride).zip(x.chunks_exact(stride)).enumerate() {
            let gl = L::splat(ctx, gld[i].as_f64());
            for (gi, gd) in gds.iter().enumerate() {
                let grp = Group::<L>::load(ctx, gd);
                let v = L::from_fn(ctx, |l| xr[gd.col[l]].as_f64());
                let gy = L::from_fn(ctx, |l| gr[gd.col[l]].as_f64());
                let ins = grp.inside(v);
                let vin = grp.eval_point(v, ins);
                let base = gd.feat.map(|ft| (i * f + ft) * np);
                let at = |l: usize, p: usize| raw.map_or(0.0, |r| r[base[l] + p].as_f64());
                let (b, s0, s1, src) = match (shared, cache) {
                    (Some(sk), _) => (search(&sk.view::<L>(ctx, gi), k, vin, false, true), zero, zero, [(None, None); MAX_LANES]),
                    (None, Some(c)) => {
                        // Layout of `SplineCache`: the row's softmaxes, then its derivatives.
                        let row = &c[i * nci * w * ng..(i + 1) * nci * w * ng];
                        let soft = &row[gi * 2 * k * w..(gi + 1) * 2 * k * w];
                        kn.load_soft(&grp, |j| L::load(ctx, &soft[j * w..]));
                        let mut b = search(&kn, k, vin, false, false);
                        let ders = &row[(ng * 2 * k + gi * 4) * w..(ng * 2 * k + gi * 4 + 4) * w];
                        let item = |j: usize| L::load(ctx, &ders[j * w..]);
                        (b.d0, b.d1) = (item(0), item(1));
                        let idx = lane_idx(b.idx);
                        let mut src = [(None, None); MAX_LANES];
                        for l in 0..L::N {
                            src[l] = deriv_sources(k, idx[l], gd.circ[l]);
                        }
                        (b, item(2), item(3), src)
                    }
                    (None, None) => {
                        kn.compute(&grp, |p| L::from_fn(ctx, |l| at(l, p)));
                        let mut b = search(&kn, k, vin, false, false);
                        let (s0, s1, src) = per_row_derivs(k, gd, &grp, &mut b, at);
                        (b, s0, s1, src)
                    }
                };
                // Local quantities and partial derivatives (as `spline::Local::partials`).
                let (d0, d1) = (b.d0, b.d1);
                let w = b.x1 - b.x0;
                let h = b.y1 - b.y0;
                let inv_w = one / w;
                let s = h * inv_w;
                let th = (vin - b.x0) * inv_w;
                let t = th * (one - th);
                let c = d0 + d1 - s * 2.0;
                let den = s + c * t;
                let num = h * (s * th * th + d0 * t);
                let n2 = d1 * th * th + s * 2.0 * t + d0 * (one - th) * (one - th);
                let inv_den = one / den;
                let inv_den2 = inv_den * inv_den;
                let inv_n2 = one / n2;
                let omt = one - th * 2.0;
                let y_theta = (h * (s * 2.0 * th + d0 * omt) * den - num * c * omt) * inv_den2;
                let l_theta = (d1 * 2.0 * th + s * 2.0 * omt - d0 * 2.0 * (one - th)) * inv_n2 - c * 2.0 * omt * inv_den;
                let g_theta = gy * y_theta + gl * l_theta;
                let g_in = L::select(ins, g_theta * inv_w, gy).to_array();
                for lane in 0..gd.nl {
                    gr[gd.col[lane]] = T::from_f64(g_in[lane]);
                }
                if !want_raw {
                    continue;
                }
                let y_s = (h * th * th * den - num * (one - t * 2.0)) * inv_den2;
                let y_h = (s * th * th + d0 * t) * inv_den;
                let y_d0 = t * (h * den - num) * inv_den2;
                let y_d1 = -num * t * inv_den2;
                let two_t_den = t * 2.0 * inv_den;
                let l_s = w * 2.0 / h + t * 2.0 * inv_n2 - (one - t * 2.0) * 2.0 * inv_den;
                let l_d0 = (one - th) * (one - th) * inv_n2 - two_t_den;
                let l_d1 = th * th * inv_n2 - two_t_den;
                let g_cw = -g_theta * inv_w;
                let g_s = gy * y_s + gl * l_s;
                let g_w = -g_theta * th * inv_w - g_s * s * inv_w;
                let g_h = gy * y_h + g_s * inv_w;
                let g_d0 = gy * y_d0 + gl * l_d0;
                let g_d1 = gy * y_d1 + gl * l_d1;
                // Knot gradients at the bin's ends (zero outside the interval).
                let gcw0 = L::select(ins, g_cw - g_w, zero);
                let gcw1 = L::select(ins, g_w, zero);
                let gch0 = L::select(ins, gy - g_h, zero);
                let gch1 = L::select(ins, g_h, zero);
                let gd0 = L::select(ins, g_d0, zero);
                let gd1 = L::select(ins, g_d1, zero);
                if let Some(acc) = acc.as_deref_mut() {
                    let idx = lane_idx(b.idx);
                    let vals = [gcw0, gcw1, gch0, gch1, gd0, gd1].map(|v| v.to_array());
                    for lane in 0..gd.nl {
                        let base = (gd.f0 + lane) * 3 * kp + idx[lane];
                        acc[base] += vals[0][lane];
                        acc[base + 1] += vals[1][lane];
                        acc[base + kp] += vals[2][lane];
                        acc[base + kp + 1] += vals[3][lane];
                        acc[base + 2 * kp] += vals[4][lane];
                        acc[base + 2 * kp + 1] += vals[5][lane];
                    }
                    continue;
                }
                let Some(graw) = graw.as_deref_mut() else { continue };
                // Per-row parameters: through cumsum and softmax (`spline::knots_to_raw` with
                // the knot gradient nonzero only at idx and idx + 1).
                let row = &mut graw[i * f * np..(i + 1) * f * np];
                let has_lo = b.idx.ge(one); // knot idx is interior
                let has_hi = b.idx.lt(one.c((k - 1) as f64)); // knot idx + 1 is interior
                let two_b = grp.bound * 2.0;
                for (part, (gk0, gk1, soft, min)) in
                    [(gcw0, gcw1, kn.sw(), MIN_BIN_WIDTH), (gch0, gch1, kn.sh(), MIN_BIN_HEIGHT)].into_iter().enumerate()
                {
                    // gw_i = 2B·Σ_{j=i+1}^{K−1} gknot_j: `below` for i < idx, `at_idx` for i = idx,
                    // 0 above.
                    let at_idx = two_b * L::select(has_hi, gk1, zero);
                    let below = L::select(has_lo, two_b * (L::select(has_hi, gk1, zero) + gk0), at_idx);
                    let a = 1.0 - min * k as f64;
                    let gw_at = |ii: usize| {
                        let iv = one.c(ii as f64);
                        L::select(iv.lt(b.idx), below, L::select(iv.eq(b.idx), at_idx, zero))
                    };
                    let mut dot = zero;
                    for (ii, sv) in soft.iter().enumerate() {
                        dot += *sv * a * gw_at(ii);
                    }
                    let sc = grp.scale;
                    for (ii, sv) in soft.iter().enumerate() {
                        let val = (sc * *sv * (gw_at(ii) * a - dot)).to_array();
                        for lane in 0..gd.nl {
                            row[(gd.f0 + lane) * np + part * k + ii] = T::from_f64(val[lane]);
                        }
                    }
                }
                // Knot derivatives: d = min + softplus(raw), d' = sigmoid(raw).
                let gr0 = (gd0 * s0).to_array();
                let gr1 = (gd1 * s1).to_array();
                for lane in 0..gd.nl {
                    let base = (gd.f0 + lane) * np + 2 * k;
                    row[base..base + kp].fill(T::zero());
                    if let Some(sl) = src[lane].0 {
                        row[base + sl] += T::from_f64(gr0[lane]);
                    }
                    if let Some(sh) = src[lane].1 {
                        row[base + sh] += T::from_f64(gr1[lane]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spline;

    struct Case {
        specs: Vec<SplineSpec>,
        cols: Vec<usize>,
        stride: usize,
    }

    impl Case {
        fn set(&self) -> SplineSet<'_> {
            SplineSet { specs: &self.specs, cols: &self.cols, stride: self.stride }
        }
    }

    /// F features (linear with bound 2.5 or 5, or circular) scattered over rows of `stride`.
    fn case(f: usize, k: usize, scale: f64) -> Case {
        let stride = f + 3;
        let specs = (0..f)
            .map(|j| match j % 3 {
                0 => SplineSpec { bins: k, bound: 5.0, tail: Tail::Linear, raw_scale: scale },
                1 => SplineSpec { bins: k, bound: std::f64::consts::PI, tail: Tail::Circular, raw_scale: scale },
                _ => SplineSpec { bins: k, bound: 2.5, tail: Tail::Linear, raw_scale: scale },
            })
            .collect();
        // Columns in a shuffled order, skipping a few.
        let gcd = |mut a: usize, mut b: usize| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let m = [3, 5, 7, 11].into_iter().find(|&m| gcd(m, stride) == 1).unwrap();
        let cols = (0..f).map(|j| (j * m + 2) % stride).collect::<Vec<_>>();
        let mut seen = cols.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), f);
        Case { specs, cols, stride }
    }

    /// Raw parameters `[rows, F·(3K+1)]`: normal ×1.5, with some extreme rows (one huge width
    /// and height: the others at the minimum; derivatives at ~min; large derivatives).
    fn raw_params(rows: usize, f: usize, k: usize, seed: u64) -> Vec<f64> {
        let np = 3 * k + 1;
        let mut rng = fab_core::seeded_rng(seed, 0);
        let mut raw: Vec<f64> = fab_core::rng::normal_vec(&mut rng, rows * f * np).iter().map(|v| 1.5 * v).collect();
        for r in (0..rows).step_by(4) {
            let j = r % f;
            let p = &mut raw[(r * f + j) * np..(r * f + j + 1) * np];
            p[0] = 60.0;
            p[k] = 60.0;
            for v in p[2 * k..].iter_mut() {
                *v = if r % 8 == 0 { -40.0 } else { 30.0 };
            }
        }
        raw
    }

    /// Inputs: for each row and feature, a point chosen from bin interiors, the reference knots
    /// (exact and ±1 ulp), ±bound, beyond the bound, tiny values.
    fn inputs(c: &Case, raw: &[f64], rows: usize, shared: bool, seed: u64, avoid_knots: bool) -> Vec<f64> {
        let f = c.specs.len();
        let np = c.specs[0].n_params();
        let mut rng = fab_core::seeded_rng(seed, 1);
        let u = fab_core::rng::normal_vec(&mut rng, rows * c.stride);
        let mut x = vec![0.0; rows * c.stride];
        for i in 0..rows {
            for j in 0..f {
                let spec = &c.specs[j];
                let p = if shared { &raw[j * np..(j + 1) * np] } else { &raw[(i * f + j) * np..(i * f + j + 1) * np] };
                let kn = spline::Knots::new(spec, p);
                let b = spec.bound;
                let r = u[i * c.stride + j];
                let which = (i * 7 + j * 3) % 12;
                let knot = kn.knot(1 + (i + j) % spec.bins.max(1)).min(b);
                let v = match which {
                    0 if !avoid_knots => knot,
                    1 if !avoid_knots => f64::from_bits(knot.to_bits() + 1),
                    2 if !avoid_knots => b,
                    3 if !avoid_knots => -b,
                    4 => b * (1.0 + 0.3 * r.abs()) * r.signum(),
                    5 => 1e-13 * r,
                    _ => (0.6 * b * r).clamp(-0.999 * b, 0.999 * b),
                };
                let near = avoid_knots && (0..=spec.bins).any(|q| (kn.knot(q) - v).abs() < 1e-7);
                x[i * c.stride + c.cols[j]] = if near { v + 3e-7 } else { v };
            }
        }
        x
    }

    fn to_t<T: Real>(v: &[f64]) -> Vec<T> {
        v.iter().map(|&a| T::from_f64(a)).collect()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    /// Value kernels against `spline::apply`, per-row and shared, both directions.
    fn check_values(portable: bool) {
        FORCE_WIDTH.with(|p| p.set(portable.then_some(1)));
        for (f, k, scale) in [(7, 8, 0.25), (4, 3, 1.0), (5, 1, 1.0), (9, 5, 1.0 / 16.0)] {
            let c = case(f, k, scale);
            let rows = 37;
            let np = 3 * k + 1;
            for shared in [false, true] {
                let raw = raw_params(if shared { 1 } else { rows }, f, k, (f * 10 + k) as u64);
                for inverse in [false, true] {
                    let x = inputs(&c, &raw, rows, shared, k as u64, false);
                    let mut y = x.clone();
                    let mut ld = vec![0.25; rows];
                    let params = if shared { Params::Shared(&raw[..]) } else { Params::PerRow(&raw[..]) };
                    apply_rows(&c.set(), &mut y, params, &mut ld, inverse, false);
                    for i in 0..rows {
                        let (mut lsum, mut tol) = (0.25, 0.0);
                        for j in 0..f {
                            let p = if shared { &raw[j * np..(j + 1) * np] } else { &raw[(i * f + j) * np..(i * f + j + 1) * np] };
                            let col = i * c.stride + c.cols[j];
                            let (yr, lr) = spline::apply::<f64>(&c.specs[j], p, x[col], inverse);
                            assert!(
                                close(y[col], yr, 1e-12),
                                "f{f} k{k} sh{shared} inv{inverse} ({i},{j}) x={}: {} vs {yr}",
                                x[col],
                                y[col]
                            );
                            lsum += lr;
                            // Within a few ulp of a knot, ulp-level differences between the two
                            // implementations' knot positions move θ by up to ~1e−13, and the
                            // log-derivative's slope in θ reaches ~1e3 with derivatives at the
                            // minimum: allow 1e−9 there.
                            let kn = spline::Knots::new(&c.specs[j], p);
                            let near = (0..=k).any(|q| (if inverse { kn.height_knot(q) } else { kn.knot(q) } - x[col]).abs() < 1e-12);
                            tol += if near { 1e-9 } else { 1e-12 } * (1.0 + lr.abs());
                        }
                        assert!((ld[i] - lsum).abs() <= tol, "f{f} k{k} sh{shared} inv{inverse} row {i}: ld {} vs {lsum}", ld[i]);
                        // Columns not in the set are untouched.
                        for col in 0..c.stride {
                            if !c.cols.contains(&col) {
                                assert_eq!(y[i * c.stride + col], x[i * c.stride + col]);
                            }
                        }
                    }
                }
            }
        }
        FORCE_WIDTH.with(|p| p.set(None));
    }

    #[test]
    fn value_kernels_match_the_scalar_reference() {
        check_values(false);
    }

    #[test]
    fn portable_value_kernels_match_the_scalar_reference() {
        check_values(true);
    }

    /// Backward kernels against `spline::apply_backward`, per-row and shared.
    fn check_backward(portable: bool) {
        FORCE_WIDTH.with(|p| p.set(portable.then_some(1)));
        for (f, k, scale) in [(7, 8, 0.25), (4, 3, 1.0), (5, 1, 1.0), (9, 5, 1.0 / 16.0)] {
            let c = case(f, k, scale);
            let rows = 37;
            let np = 3 * k + 1;
            let mut rng = fab_core::seeded_rng(k as u64, 3);
            let gout = fab_core::rng::normal_vec(&mut rng, rows * c.stride);
            let gld = fab_core::rng::normal_vec(&mut rng, rows);
            for shared in [false, true] {
                let raw = raw_params(if shared { 1 } else { rows }, f, k, (f * 10 + k + 1) as u64);
                let x = inputs(&c, &raw, rows, shared, k as u64 + 1, true);
                let params = if shared { Params::Shared(&raw[..]) } else { Params::PerRow(&raw[..]) };
                // Reference.
                let mut g_ref = gout.clone();
                let mut graw_ref = vec![0.0; raw.len()];
                for (i, &gl) in gld.iter().enumerate().take(rows) {
                    for j in 0..f {
                        let po = if shared { j * np } else { (i * f + j) * np };
                        let col = i * c.stride + c.cols[j];
                        g_ref[col] = spline::apply_backward::<f64>(
                            &c.specs[j],
                            &raw[po..po + np],
                            x[col],
                            false,
                            gout[col],
                            gl,
                            Some(&mut graw_ref[po..po + np]),
                        );
                    }
                }
                // Kernel, with and without parameter gradients.
                let mut g = gout.clone();
                let mut graw = vec![if shared { 0.5 } else { f64::NAN }; raw.len()];
                let grads = if shared { ParamGrads::Shared(&mut graw[..]) } else { ParamGrads::PerRow(&mut graw[..]) };
                backward_rows(&c.set(), &x, params, &mut g, &gld, grads);
                let mut g2 = gout.clone();
                backward_rows(&c.set(), &x, params, &mut g2, &gld, ParamGrads::None);
                assert_eq!(g, g2, "input gradients do not depend on whether parameter gradients are wanted");
                if !shared {
                    // From what the forward pass recorded: bitwise the same as recomputing.
                    let mut y = x.clone();
                    let mut ld = vec![0.0; rows];
                    let rec = apply_rows(&c.set(), &mut y, params, &mut ld, false, true).expect("recorded");
                    let mut g3 = gout.clone();
                    let mut graw3 = vec![f64::NAN; raw.len()];
                    backward_rows(&c.set(), &x, Params::Recorded(&rec), &mut g3, &gld, ParamGrads::PerRow(&mut graw3));
                    assert!(g3.iter().zip(&g).all(|(a, b)| a.to_bits() == b.to_bits()));
                    assert!(graw3.iter().zip(&graw).all(|(a, b)| a.to_bits() == b.to_bits()));
                }
                for idx in 0..g.len() {
                    assert!(close(g[idx], g_ref[idx], 1e-10), "f{f} k{k} sh{shared} elem {idx}: {} vs {}", g[idx], g_ref[idx]);
                }
                let scale = graw_ref.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (p, (a, b)) in graw.iter().zip(&graw_ref).enumerate() {
                    let a = if shared { a - 0.5 } else { *a };
                    assert!((a - b).abs() <= 1e-10 * scale, "f{f} k{k} sh{shared} raw[{p}]: {a} vs {b}");
                }
            }
        }
        FORCE_WIDTH.with(|p| p.set(None));
    }

    #[test]
    fn backward_kernels_match_the_scalar_reference() {
        check_backward(false);
    }

    #[test]
    fn portable_backward_kernels_match_the_scalar_reference() {
        check_backward(true);
    }

    /// Per-row parameters `raw` and inputs `x` stored as `T`, through the value kernels:
    /// (outputs, log-determinants).
    fn apply_as<T: Real>(c: &Case, raw: &[f64], x: &[f64], inverse: bool) -> (Vec<T>, Vec<T>) {
        let raw: Vec<T> = to_t(raw);
        let mut y: Vec<T> = to_t(x);
        let mut ld = vec![T::zero(); x.len() / c.stride];
        apply_rows(&c.set(), &mut y, Params::PerRow(&raw[..]), &mut ld, inverse, false);
        (y, ld)
    }

    #[test]
    fn f32_storage_matches_f64_to_f32_precision() {
        let (f, k) = (7, 8);
        let c = case(f, k, 0.25);
        let rows = 20;
        let raw = raw_params(rows, f, k, 5);
        let x = inputs(&c, &raw, rows, false, 6, true);
        let ((y64, ld64), (y32, ld32)) = (apply_as::<f64>(&c, &raw, &x, false), apply_as::<f32>(&c, &raw, &x, false));
        for (a, b) in y32.iter().zip(&y64) {
            assert!((*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        for (a, b) in ld32.iter().zip(&ld64) {
            assert!((*a as f64 - b).abs() < 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    /// In f32, π rounds up to 3.1415927 > π, so a periodic coordinate wrapped into [−π, π) in
    /// f64 and stored as f32 can sit just past the bound. The spline must still map it (with
    /// the boundary derivative, the same at both ends of a circular spline) rather than pass it
    /// through as outside: the f32 kernels there agree with f64 at exactly ±π, in both
    /// directions, with the scalar reference, and +π and −π give the same log-determinant.
    #[test]
    fn f32_values_rounded_onto_the_circular_seam_are_mapped_by_the_spline() {
        let (f, k) = (7, 8);
        let c = case(f, k, 0.25);
        let rows = 6;
        let raw = raw_params(rows, f, k, 9);
        let raw32: Vec<f32> = to_t(&raw);
        let np = 3 * k + 1;
        let pi = std::f64::consts::PI;
        assert!(pi as f32 as f64 > pi, "the case this test is about");
        for inverse in [false, true] {
            let mut lds = Vec::new();
            for sign in [1.0, -1.0] {
                // Every feature at its bound (the linear ones are exact in f32 too).
                let mut x = vec![0.0; rows * c.stride];
                for i in 0..rows {
                    for j in 0..f {
                        x[i * c.stride + c.cols[j]] = sign * c.specs[j].bound;
                    }
                }
                let ((_, ld64), (y32, ld32)) = (apply_as::<f64>(&c, &raw, &x, inverse), apply_as::<f32>(&c, &raw, &x, inverse));
                for i in 0..rows {
                    assert!(
                        (ld32[i] as f64 - ld64[i]).abs() < 1e-3 * (1.0 + ld64[i].abs()),
                        "inv{inverse} ±{sign} row {i}: f32 {} vs f64 {}",
                        ld32[i],
                        ld64[i]
                    );
                    for j in 0..f {
                        let col = i * c.stride + c.cols[j];
                        let b = c.specs[j].bound;
                        assert!((y32[col] as f64).abs() <= b as f32 as f64, "output {} past the bound {b}", y32[col]);
                        let p = &raw32[(i * f + j) * np..(i * f + j + 1) * np];
                        let (yr, lr) = spline::apply::<f32>(&c.specs[j], p, (sign * b) as f32, inverse);
                        let (_, l64) = spline::apply::<f64>(&c.specs[j], &raw[(i * f + j) * np..(i * f + j + 1) * np], sign * b, inverse);
                        assert!((lr as f64 - l64).abs() < 1e-3 * (1.0 + l64.abs()), "scalar f32 {lr} vs f64 {l64} (feature {j})");
                        assert!((yr - y32[col]).abs() <= 1e-5 * (1.0 + b as f32), "scalar {yr} vs lanes {}", y32[col]);
                    }
                }
                lds.push(ld64);
            }
            // Circular features contribute the same at +π and −π; linear ones are at ±B where
            // their boundary derivative is 1 (log 0) at both ends.
            for (i, (a, b)) in lds[0].iter().zip(&lds[1]).enumerate() {
                assert!((a - b).abs() < 1e-9 * (1.0 + a.abs()), "row {i}: +B {a} vs −B {b}");
            }
        }
    }

    /// Every output of the kernels (values, log-determinants, input gradients, per-row and
    /// shared parameter gradients, from recomputation and from a recorded forward pass) at lane
    /// width `width`, as bits.
    fn all_outputs(width: usize, f: usize, k: usize) -> Vec<u64> {
        FORCE_WIDTH.with(|p| p.set(Some(width)));
        let c = case(f, k, 1.0 / 16.0);
        let rows = 41;
        let mut out = Vec::new();
        for shared in [false, true] {
            let raw = raw_params(if shared { 1 } else { rows }, f, k, (f + k) as u64);
            let params = if shared { Params::Shared(&raw[..]) } else { Params::PerRow(&raw[..]) };
            let x = inputs(&c, &raw, rows, shared, 3, false);
            for inverse in [false, true] {
                let mut y = x.clone();
                let mut ld = vec![0.5; rows];
                let rec = apply_rows(&c.set(), &mut y, params, &mut ld, inverse, !shared && !inverse);
                out.extend(y.iter().chain(&ld).map(|v| v.to_bits()));
                let mut rng = fab_core::seeded_rng(11, 4);
                let gout = fab_core::rng::normal_vec(&mut rng, rows * c.stride);
                let gld = fab_core::rng::normal_vec(&mut rng, rows);
                if inverse {
                    continue;
                }
                let mut g = gout.clone();
                let mut graw = vec![0.25; raw.len()];
                let grads = if shared { ParamGrads::Shared(&mut graw[..]) } else { ParamGrads::PerRow(&mut graw[..]) };
                backward_rows(&c.set(), &x, params, &mut g, &gld, grads);
                out.extend(g.iter().chain(&graw).map(|v| v.to_bits()));
                if let Some(rec) = rec {
                    let mut g = gout.clone();
                    let mut graw = vec![0.0; raw.len()];
                    backward_rows(&c.set(), &x, Params::Recorded(&rec), &mut g, &gld, ParamGrads::PerRow(&mut graw[..]));
                    out.extend(g.iter().chain(&graw).map(|v| v.to_bits()));
                }
            }
        }
        FORCE_WIDTH.with(|p| p.set(None));
        out
    }

    /// Eight lanes (AVX-512) and four (AVX2) give bitwise the same results, for feature counts
    /// that fill the groups or leave padding in one width or both.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn eight_and_four_lanes_agree_bit_for_bit() {
        if pulp::x86::V4::try_new().is_none() || pulp::x86::V3::try_new().is_none() {
            return;
        }
        for (f, k) in [(30, 8), (16, 5), (12, 3), (5, 8), (1, 4), (9, 1)] {
            let (a, b) = (all_outputs(4, f, k), all_outputs(8, f, k));
            assert_eq!(a.len(), b.len());
            let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            assert_eq!(differ, 0, "f{f} k{k}: {differ} of {} outputs differ", a.len());
        }
    }

    /// Bitwise the same results on 1 and 2 threads, and when rows are processed in another
    /// split (rows are independent; shared gradients are summed over fixed row blocks).
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (f, k) = (30, 8);
        let c = case(f, k, 1.0 / 16.0);
        let rows = 300;
        let raw = raw_params(rows, f, k, 9);
        let shared_raw = raw_params(1, f, k, 10);
        let x = inputs(&c, &raw, rows, false, 11, false);
        let mut rng = fab_core::seeded_rng(12, 0);
        let gout = fab_core::rng::normal_vec(&mut rng, rows * c.stride);
        let gld = fab_core::rng::normal_vec(&mut rng, rows);
        let run = || {
            let mut y = x.clone();
            let mut ld = vec![0.0; rows];
            apply_rows(&c.set(), &mut y, Params::PerRow(&raw[..]), &mut ld, false, false);
            apply_rows(&c.set(), &mut y, Params::Shared(&shared_raw[..]), &mut ld, true, false);
            let rec = apply_rows(&c.set(), &mut x.clone(), Params::PerRow(&raw[..]), &mut vec![0.0; rows], false, true).expect("recorded");
            let mut g = gout.clone();
            let mut graw = vec![0.0; raw.len()];
            backward_rows(&c.set(), &x, Params::Recorded(&rec), &mut g, &gld, ParamGrads::PerRow(&mut graw));
            let mut gs = vec![0.0; shared_raw.len()];
            backward_rows(&c.set(), &x, Params::Shared(&shared_raw[..]), &mut g, &gld, ParamGrads::Shared(&mut gs));
            [y, ld, g, graw, gs].map(|v| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>())
        };
        let pool = |t: usize| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
        let one = pool(1).install(run);
        let two = pool(2).install(run);
        let three = pool(3).install(run);
        assert!(one == two && one == three);
        // The first rows alone give the same values as within the batch.
        let mut y = x[..5 * c.stride].to_vec();
        let mut ld = vec![0.0; 5];
        apply_rows(&c.set(), &mut y, Params::PerRow(&raw[..5 * f * (3 * k + 1)]), &mut ld, false, false);
        apply_rows(&c.set(), &mut y, Params::Shared(&shared_raw[..]), &mut ld, true, false);
        assert!(y.iter().zip(&one[0]).all(|(a, b)| a.to_bits() == *b));
        assert!(ld.iter().zip(&one[1]).all(|(a, b)| a.to_bits() == *b));
    }

    fn thread_cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    }

    /// Timing of the kernels at the alanine-dipeptide flow's sizes (B = 256, F = 30, K = 8, f32):
    /// `cargo test --release -p fab-flows kernel_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn kernel_timing() {
        let (f, k, rows) = (30, 8, 256);
        let c = Case { specs: case(f, k, 1.0 / 16.0).specs, cols: (0..f).map(|j| 2 * j + 1).collect(), stride: 2 * f };
        let raw: Vec<f32> = to_t(&raw_params(rows, f, k, 1));
        let shared_raw: Vec<f32> = to_t(&raw_params(1, f, k, 2));
        let x: Vec<f32> = to_t(&inputs(&c, &raw_params(rows, f, k, 1), rows, false, 3, false));
        let gout = vec![0.3f32; rows * c.stride];
        let gld = vec![-1.0f32; rows];
        // The thread's CPU time advances in scheduler ticks: time batches of calls.
        let (reps, batch) = (11, 100);
        let time = |name: &str, mut work: Box<dyn FnMut() + '_>| {
            let mut ts = Vec::new();
            for _ in 0..reps {
                let t0 = thread_cpu_ns();
                for _ in 0..batch {
                    work();
                }
                ts.push((thread_cpu_ns() - t0) as f64 / batch as f64);
            }
            ts.sort_by(f64::total_cmp);
            println!("{name}: median {:.1} µs/call, {:.1} ns/element", ts[reps / 2] * 1e-3, ts[reps / 2] / (rows * f) as f64);
        };
        rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| {
            time(
                "per-row forward",
                Box::new(|| {
                    let mut y = x.clone();
                    let mut ld = vec![0.0f32; rows];
                    apply_rows(&c.set(), &mut y, Params::PerRow(&raw[..]), &mut ld, false, false);
                }),
            );
            time(
                "per-row inverse",
                Box::new(|| {
                    let mut y = x.clone();
                    let mut ld = vec![0.0f32; rows];
                    apply_rows(&c.set(), &mut y, Params::PerRow(&raw[..]), &mut ld, true, false);
                }),
            );
            time(
                "shared forward",
                Box::new(|| {
                    let mut y = x.clone();
                    let mut ld = vec![0.0f32; rows];
                    apply_rows(&c.set(), &mut y, Params::Shared(&shared_raw[..]), &mut ld, false, false);
                }),
            );
            time(
                "per-row forward, recording",
                Box::new(|| {
                    let mut y = x.clone();
                    let mut ld = vec![0.0f32; rows];
                    std::hint::black_box(apply_rows(&c.set(), &mut y, Params::PerRow(&raw[..]), &mut ld, false, true));
                }),
            );
            let rec = apply_rows(&c.set(), &mut x.clone(), Params::PerRow(&raw[..]), &mut vec![0.0f32; rows], false, true).unwrap();
            time(
                "per-row backward, recorded",
                Box::new(|| {
                    let mut g = gout.clone();
                    let mut graw = vec![0.0f32; raw.len()];
                    backward_rows(&c.set(), &x, Params::Recorded(&rec), &mut g, &gld, ParamGrads::PerRow(&mut graw));
                }),
            );
            time(
                "per-row backward",
                Box::new(|| {
                    let mut g = gout.clone();
                    let mut graw = vec![0.0f32; raw.len()];
                    backward_rows(&c.set(), &x, Params::PerRow(&raw[..]), &mut g, &gld, ParamGrads::PerRow(&mut graw));
                }),
            );
            time(
                "shared backward (input grads)",
                Box::new(|| {
                    let mut g = gout.clone();
                    backward_rows(&c.set(), &x, Params::Shared(&shared_raw[..]), &mut g, &gld, ParamGrads::None);
                }),
            );
            time(
                "shared backward (with param grads)",
                Box::new(|| {
                    let mut g = gout.clone();
                    let mut gs = vec![0.0f32; shared_raw.len()];
                    backward_rows(&c.set(), &x, Params::Shared(&shared_raw[..]), &mut g, &gld, ParamGrads::Shared(&mut gs));
                }),
            );
        });
    }
}
