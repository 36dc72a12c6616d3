//! Vectorised rational-quadratic spline kernels: the per-element spline work of
//! [`crate::SplineCoupling`]'s CPU path, several elements at a time (four f64 lanes with AVX2 +
//! FMA, one otherwise).
//!
//! The mathematics is that of the scalar reference kernels in [`crate::spline`] (which the tests
//! compare against): softmax widths and heights, cumulative knots, bin search, the
//! rational-quadratic map and its log-derivative, and the hand-derived reverse pass, with the
//! same floating-point expressions except that
//! * `exp`, `ln` and `log1p` are the branch-free lane versions of [`super::lanes`];
//! * the log-derivative is ln(s²·n₂/den²) (one logarithm instead of three);
//! * gradients of parameters shared by every row (the unconditional splines) are summed over
//!   the rows as knot-position and knot-derivative gradients, then mapped through the cumsum,
//!   softmax and softplus once (the map is linear).
//!
//! All computation is in f64 whatever the storage type. Each row is processed in groups of
//! [`Lane::N`] consecutive features (the last group padded with copies of the last feature,
//! whose results are discarded). Every lane operation is correctly rounded per lane, rows are
//! independent, and sums over rows (shared-parameter gradients) run over fixed blocks of rows
//! combined in order, so results are bitwise independent of the number of threads.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::lanes::X4;
use super::lanes::{self, Lane, F1};
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

#[cfg(test)]
thread_local! {
    /// Tests: force the portable one-lane path on this thread.
    static FORCE_PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `op` with four AVX2 lanes when the CPU has AVX2 + FMA, one portable lane otherwise.
fn dispatch<Op: LaneOp>(op: Op) -> Op::Output {
    #[cfg(test)]
    if FORCE_PORTABLE.with(|f| f.get()) {
        return op.run::<F1<false>>(());
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        return simd.vectorize(WithX4(op, simd));
    }
    op.run::<F1<false>>(())
}

// ---------------------------------------------------------------------------------------------
// Lane building blocks.

/// Per-lane constants of a group of features.
#[derive(Clone, Copy)]
struct Group<L: Lane> {
    /// First feature and number of valid lanes.
    f0: usize,
    nl: usize,
    /// Feature index of each lane (padding lanes repeat the last feature).
    feat: [usize; 4],
    bound: L,
    scale: L,
    /// Lanes with linear tails.
    linear: L::Mask,
    /// Lanes that are not padding.
    valid: L::Mask,
    /// Per lane: circular tail.
    circ: [bool; 4],
}

fn groups<L: Lane>(ctx: L::Ctx, set: &SplineSet<'_>) -> Vec<Group<L>> {
    let f = set.f();
    (0..f.div_ceil(L::N))
        .map(|gi| {
            let f0 = gi * L::N;
            let nl = L::N.min(f - f0);
            let mut feat = [f0; 4];
            for (l, ft) in feat.iter_mut().enumerate().take(L::N) {
                *ft = (f0 + l).min(f - 1);
            }
            let spec = |l: usize| &set.specs[feat[l]];
            let lin = L::from_fn(ctx, |l| if spec(l).tail == Tail::Linear { 1.0 } else { 0.0 });
            let mut circ = [false; 4];
            for (l, c) in circ.iter_mut().enumerate().take(L::N) {
                *c = spec(l).tail == Tail::Circular;
            }
            Group {
                f0,
                nl,
                feat,
                bound: L::from_fn(ctx, |l| spec(l).bound),
                scale: L::from_fn(ctx, |l| spec(l).raw_scale),
                linear: lin.eq(L::splat(ctx, 1.0)),
                valid: L::from_fn(ctx, |l| l as f64).lt(L::splat(ctx, nl as f64)),
                circ,
            }
        })
        .collect()
}

/// Knots of one group's splines: positions `cw`, `ch` (K + 1), softmax values `sw`, `sh` (K)
/// and, for shared parameters, knot derivatives `d` and the sigmoids `sig` of their raw
/// parameters (K + 1, tail overrides applied; `sig` is 0 where a tail fixes the derivative).
struct Knots<L: Lane> {
    k: usize,
    v: Vec<L>,
}

impl<L: Lane> Knots<L> {
    fn new(ctx: L::Ctx, k: usize) -> Self {
        Knots { k, v: vec![L::splat(ctx, 0.0); 6 * (k + 1)] }
    }
    #[inline(always)]
    fn part(&self, i: usize) -> &[L] {
        &self.v[i * (self.k + 1)..(i + 1) * (self.k + 1)]
    }
    #[inline(always)]
    fn cw(&self) -> &[L] {
        self.part(0)
    }
    #[inline(always)]
    fn ch(&self) -> &[L] {
        self.part(1)
    }
    #[inline(always)]
    fn sw(&self) -> &[L] {
        &self.part(2)[..self.k]
    }
    #[inline(always)]
    fn sh(&self) -> &[L] {
        &self.part(3)[..self.k]
    }
    #[inline(always)]
    fn d(&self) -> &[L] {
        self.part(4)
    }

    /// Softmax and cumulative knots from raw parameters (`raw(p)`: parameter p of every lane).
    #[inline(always)]
    fn compute(&mut self, g: &Group<L>, raw: &impl Fn(usize) -> L) {
        let k = self.k;
        let kp = k + 1;
        let (cw, rest) = self.v.split_at_mut(kp);
        let (ch, rest) = rest.split_at_mut(kp);
        let (sw, rest) = rest.split_at_mut(kp);
        let sh = &mut rest[..kp];
        softmax(g.scale, k, raw, &mut sw[..k]);
        softmax(g.scale, k, |i| raw(k + i), &mut sh[..k]);
        cumulative(g.bound, MIN_BIN_WIDTH, &sw[..k], cw);
        cumulative(g.bound, MIN_BIN_HEIGHT, &sh[..k], ch);
    }
}

/// `out = softmax(raw · scale)` as in the reference (max-shifted, sequential sum, division).
#[inline(always)]
fn softmax<L: Lane>(scale: L, k: usize, raw: impl Fn(usize) -> L, out: &mut [L]) {
    let mut m = scale.c(f64::NEG_INFINITY);
    for (i, o) in out.iter_mut().enumerate().take(k) {
        *o = raw(i) * scale;
        m = o.max(m);
    }
    let mut s = scale.c(0.0);
    for o in out.iter_mut() {
        *o = lanes::exp(*o - m);
        s = s + *o;
    }
    for o in out.iter_mut() {
        *o = *o / s;
    }
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
        acc = acc + ((soft[j - 1] * a) + min);
        out[j] = two_b * acc - bound;
    }
    out[k] = bound;
}

/// softplus(u) and sigmoid(u), sharing e^{−|u|}.
#[inline(always)]
fn softplus_sigmoid<L: Lane>(u: L) -> (L, L) {
    let zero = u.c(0.0);
    let e = lanes::exp(-u.abs());
    let sp = u.max(zero) + lanes::log1p_unit(e);
    let pos = u.ge(zero);
    let one_pe = e + 1.0;
    let sig = L::select(pos, u.c(1.0) / one_pe, e / one_pe);
    (sp, sig)
}

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

/// Bin search of `v` among `cw` (or `ch` with `inverse`): the number of interior knots ≤ v,
/// which equals the reference's searchsorted for v ∈ [−B, B]. With `with_d`, also picks the
/// knot derivatives from `kn.d()`.
#[inline(always)]
fn search<L: Lane>(kn: &Knots<L>, v: L, inverse: bool, with_d: bool) -> Bin<L> {
    let (cw, ch) = (kn.cw(), kn.ch());
    let locs = if inverse { ch } else { cw };
    let d = kn.d();
    let mut b = Bin { idx: v.c(0.0), x0: cw[0], x1: cw[1], y0: ch[0], y1: ch[1], d0: d[0], d1: d[1] };
    for j in 1..kn.k {
        let m = v.ge(locs[j]);
        b.idx = L::select(m, v.c(j as f64), b.idx);
        b.x0 = L::select(m, cw[j], b.x0);
        b.x1 = L::select(m, cw[j + 1], b.x1);
        b.y0 = L::select(m, ch[j], b.y0);
        b.y1 = L::select(m, ch[j + 1], b.y1);
        if with_d {
            b.d0 = L::select(m, d[j], b.d0);
            b.d1 = L::select(m, d[j + 1], b.d1);
        }
    }
    b
}

/// Per-lane bin index as usize.
#[inline(always)]
fn lane_idx<L: Lane>(idx: L) -> [usize; 4] {
    let a = idx.to_array();
    [a[0] as usize, a[1] as usize, a[2] as usize, a[3] as usize]
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
fn per_row_derivs<L: Lane>(k: usize, g: &Group<L>, b: &mut Bin<L>, raw_at: impl Fn(usize, usize) -> f64) -> (L, L, [DerivSources; 4]) {
    let ctx = b.idx.ctx();
    let idx = lane_idx(b.idx);
    let mut src = [(None, None); 4];
    for l in 0..L::N {
        src[l] = deriv_sources(k, idx[l], g.circ[l]);
    }
    let r0 = L::from_fn(ctx, |l| raw_at(l, 2 * k + src[l].0.unwrap_or(0)));
    let r1 = L::from_fn(ctx, |l| raw_at(l, 2 * k + src[l].1.unwrap_or(0)));
    let (sp0, s0) = softplus_sigmoid(r0);
    let (sp1, s1) = softplus_sigmoid(r1);
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
    let w = b.x1 - b.x0;
    let h = b.y1 - b.y0;
    let s = h / w;
    let th = (x - b.x0) / w;
    let one = x.c(1.0);
    let t = th * (one - th);
    let den = s + (b.d0 + b.d1 - s * 2.0) * t;
    let num = h * (s * th * th + b.d0 * t);
    let y = b.y0 + num / den;
    let n2 = b.d1 * th * th + s * 2.0 * t + b.d0 * (one - th) * (one - th);
    (y, lanes::ln(s * s * n2 / (den * den)))
}

/// Inverse map of the bin: (x, log dx/dy).
#[inline(always)]
fn rq_inverse<L: Lane>(b: &Bin<L>, y: L) -> (L, L) {
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
    let one = y.c(1.0);
    let t = th * (one - th);
    let den = s + c2 * t;
    let n2 = d1 * th * th + s * 2.0 * t + d0 * (one - th) * (one - th);
    (x, -lanes::ln(s * s * n2 / (den * den)))
}

/// Lanes inside [−B, B].
#[inline(always)]
fn inside<L: Lane>(g: &Group<L>, v: L) -> L::Mask {
    L::and(v.ge(-g.bound), v.le(g.bound))
}

// ---------------------------------------------------------------------------------------------
// Shared parameters: knots once per call.

/// Shared splines' knots, derivatives and sigmoids per feature, in f64 (`[F, 6, K + 1]`).
struct SharedKnots {
    k: usize,
    v: Vec<f64>,
}

impl SharedKnots {
    fn new<T: Real>(set: &SplineSet<'_>, raw: &[T]) -> Self {
        struct Op<'a, T> {
            set: &'a SplineSet<'a>,
            raw: &'a [T],
        }
        impl<T: Real> LaneOp for Op<'_, T> {
            type Output = Vec<f64>;
            #[inline(always)]
            fn run<L: Lane>(self, ctx: L::Ctx) -> Vec<f64> {
                let (set, raw) = (self.set, self.raw);
                let (k, np) = (set.k(), set.np());
                let kp = k + 1;
                let mut out = vec![0.0; set.f() * 6 * kp];
                let mut kn = Knots::<L>::new(ctx, k);
                for g in groups::<L>(ctx, set) {
                    let at = |l: usize, p: usize| raw[g.feat[l] * np + p].as_f64();
                    kn.compute(&g, &|p| L::from_fn(ctx, |l| at(l, p)));
                    // Derivative and sigmoid of every knot, with the tail overrides.
                    let mut d = vec![L::splat(ctx, 0.0); kp];
                    let mut sig = vec![L::splat(ctx, 0.0); kp];
                    for j in 0..kp {
                        let src = |l: usize| if j == k { if g.circ[l] { Some(0) } else { None } } else if j == 0 && !g.circ[l] { None } else { Some(j) };
                        let r = L::from_fn(ctx, |l| at(l, 2 * k + src(l).unwrap_or(0)));
                        let (sp, sg) = softplus_sigmoid(r);
                        let fixed = L::from_fn(ctx, |l| if src(l).is_none() { 1.0 } else { 0.0 }).eq(r.c(1.0));
                        d[j] = L::select(fixed, r.c(1.0), sp + MIN_DERIVATIVE);
                        sig[j] = L::select(fixed, r.c(0.0), sg);
                    }
                    let parts: [&[L]; 6] = [kn.cw(), kn.ch(), kn.part(2), kn.part(3), &d, &sig];
                    for (pi, part) in parts.iter().enumerate() {
                        for (j, v) in part.iter().enumerate().take(kp) {
                            let a = v.to_array();
                            for l in 0..g.nl {
                                out[((g.f0 + l) * 6 + pi) * kp + j] = a[l];
                            }
                        }
                    }
                }
                out
            }
        }
        SharedKnots { k: set.k(), v: dispatch(Op { set, raw }) }
    }

    /// Part `pi` of feature `f`.
    fn part(&self, f: usize, pi: usize) -> &[f64] {
        let kp = self.k + 1;
        &self.v[(f * 6 + pi) * kp..(f * 6 + pi + 1) * kp]
    }

    /// The lane knots of every group.
    #[inline(always)]
    fn lanes<L: Lane>(&self, ctx: L::Ctx, gs: &[Group<L>]) -> Vec<Knots<L>> {
        gs.iter()
            .map(|g| {
                let mut kn = Knots::new(ctx, self.k);
                let kp = self.k + 1;
                for pi in 0..6 {
                    for j in 0..kp {
                        kn.v[pi * kp + j] = L::from_fn(ctx, |l| self.part(g.feat[l], pi)[j]);
                    }
                }
                kn
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Values.

/// Applies the splines of `set` to the columns `set.cols` of `x` (`[n, stride]`) in place and
/// adds each row's log-determinant to `ld` (density direction, or with `inverse` the sampling
/// direction).
pub(crate) fn apply_rows<T: Real>(set: &SplineSet<'_>, x: &mut [T], params: Params<'_, T>, ld: &mut [T], inverse: bool) {
    let n = ld.len();
    if n == 0 || set.f() == 0 {
        return;
    }
    let shared = match params {
        Params::Shared(raw) => Some(SharedKnots::new(set, raw)),
        Params::PerRow(_) => None,
    };
    let rb = ROW_BLOCK;
    let fnp = set.f() * set.np();
    let block = |(bi, (xb, lb)): (usize, (&mut [T], &mut [T]))| {
        let raw = match params {
            Params::PerRow(raw) => Some(&raw[bi * rb * fnp..(bi * rb + lb.len()) * fnp]),
            Params::Shared(_) => None,
        };
        dispatch(ValueOp { set, x: xb, raw, shared: shared.as_ref(), ld: lb, inverse });
    };
    if super::parallel_rows(n, set.f() * 40) {
        x.par_chunks_mut(rb * set.stride).zip(ld.par_chunks_mut(rb)).enumerate().for_each(block);
    } else {
        x.chunks_mut(rb * set.stride).zip(ld.chunks_mut(rb)).enumerate().for_each(block);
    }
}

struct ValueOp<'a, T> {
    set: &'a SplineSet<'a>,
    x: &'a mut [T],
    /// Per-row parameters of this block's rows.
    raw: Option<&'a [T]>,
    shared: Option<&'a SharedKnots>,
    ld: &'a mut [T],
    inverse: bool,
}

impl<T: Real> LaneOp for ValueOp<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lane>(self, ctx: L::Ctx) {
        let ValueOp { set, x, raw, shared, ld, inverse } = self;
        let (k, np, f, stride) = (set.k(), set.np(), set.f(), set.stride);
        let gs = groups::<L>(ctx, set);
        let shared_kn = shared.map(|s| s.lanes::<L>(ctx, &gs));
        let mut kn = Knots::<L>::new(ctx, k);
        for (i, (xr, l)) in x.chunks_exact_mut(stride).zip(ld.iter_mut()).enumerate() {
            let mut acc = L::splat(ctx, 0.0);
            for (gi, g) in gs.iter().enumerate() {
                let v = L::from_fn(ctx, |l| xr[set.cols[g.feat[l]]].as_f64());
                let ins = inside(g, v);
                let vin = L::select(ins, v, v.c(0.0));
                let (out, dl) = match (shared_kn.as_ref(), raw) {
                    (Some(skn), _) => {
                        let b = search(&skn[gi], vin, inverse, true);
                        if inverse {
                            rq_inverse(&b, vin)
                        } else {
                            rq_forward(&b, vin)
                        }
                    }
                    (None, Some(raw)) => {
                        let at = |l: usize, p: usize| raw[(i * f + g.feat[l]) * np + p].as_f64();
                        kn.compute(g, &|p| L::from_fn(ctx, |l| at(l, p)));
                        let mut b = search(&kn, vin, inverse, false);
                        per_row_derivs(k, g, &mut b, at);
                        if inverse {
                            rq_inverse(&b, vin)
                        } else {
                            rq_forward(&b, vin)
                        }
                    }
                    (None, None) => unreachable!("parameters are per row or shared"),
                };
                let out = L::select(ins, out, v).to_array();
                let dl = L::select(L::and(ins, g.valid), dl, v.c(0.0));
                for (lane, o) in out.iter().enumerate().take(g.nl) {
                    xr[set.cols[g.f0 + lane]] = T::from_f64(*o);
                }
                acc = acc + dl;
            }
            let a = acc.to_array();
            let mut s = a[0];
            for v in a.iter().take(L::N).skip(1) {
                s += v;
            }
            *l = *l + T::from_f64(s);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reverse pass (density direction).

/// Reverse of [`apply_rows`] (without `inverse`) on the original inputs `x`: reads ∂L/∂out from
/// the columns `set.cols` of `g` (`[n, stride]`) and overwrites them with ∂L/∂in; `gld` is
/// ∂L/∂(log-det) per row. Parameter gradients go to `grads`.
pub(crate) fn backward_rows<T: Real>(set: &SplineSet<'_>, x: &[T], params: Params<'_, T>, g: &mut [T], gld: &[T], grads: ParamGrads<'_, T>) {
    let n = gld.len();
    if n == 0 || set.f() == 0 {
        return;
    }
    let (k, np, f) = (set.k(), set.np(), set.f());
    let kp = k + 1;
    let shared = match params {
        Params::Shared(raw) => Some(SharedKnots::new(set, raw)),
        Params::PerRow(_) => None,
    };
    let rb = ROW_BLOCK;
    let fnp = f * np;
    let want_shared = matches!(grads, ParamGrads::Shared(_));
    let acc_len = if want_shared { f * 3 * kp } else { 0 };
    let run = |bi: usize, gb: &mut [T], graw: Option<&mut [T]>| -> Vec<f64> {
        let rows = gb.len() / set.stride;
        let r0 = bi * rb;
        let raw = match params {
            Params::PerRow(raw) => Some(&raw[r0 * fnp..(r0 + rows) * fnp]),
            Params::Shared(_) => None,
        };
        let mut acc = vec![0.0; acc_len];
        dispatch(BackwardOp {
            set,
            x: &x[r0 * set.stride..(r0 + rows) * set.stride],
            raw,
            shared: shared.as_ref(),
            g: gb,
            gld: &gld[r0..r0 + rows],
            graw,
            acc: want_shared.then_some(&mut acc[..]),
        });
        acc
    };
    let par = super::parallel_rows(n, f * 80);
    let stride = set.stride;
    let (graw_rows, graw_shared) = match grads {
        ParamGrads::PerRow(g) => (Some(g), None),
        ParamGrads::Shared(g) => (None, Some(g)),
        ParamGrads::None => (None, None),
    };
    let partials: Vec<Vec<f64>> = match graw_rows {
        Some(graw) => {
            if par {
                g.par_chunks_mut(rb * stride).zip(graw.par_chunks_mut(rb * fnp)).enumerate().map(|(bi, (gb, gr))| run(bi, gb, Some(gr))).collect()
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
    if let (Some(graw), Some(skn)) = (graw_shared, shared.as_ref()) {
        // Sum the blocks' knot gradients in order, then map them to the raw parameters.
        let mut tot = vec![0.0; acc_len];
        for p in &partials {
            for (a, b) in tot.iter_mut().zip(p) {
                *a += b;
            }
        }
        finish_shared(set, skn, &tot, graw);
    }
}

/// Maps summed knot-position and knot-derivative gradients (`tot`: `[F, 3, K + 1]`) of shared
/// splines to their raw parameters and adds them to `grads`.
fn finish_shared<T: Real>(set: &SplineSet<'_>, skn: &SharedKnots, tot: &[f64], graw: &mut [T]) {
    let (k, np) = (set.k(), set.np());
    let kp = k + 1;
    for (fi, spec) in set.specs.iter().enumerate() {
        let gr = &mut graw[fi * np..(fi + 1) * np];
        let t = &tot[fi * 3 * kp..(fi + 1) * 3 * kp];
        crate::spline::knots_to_raw(&t[..kp], &skn.part(fi, 2)[..k], spec.bound, MIN_BIN_WIDTH, spec.raw_scale, &mut gr[..k]);
        crate::spline::knots_to_raw(&t[kp..2 * kp], &skn.part(fi, 3)[..k], spec.bound, MIN_BIN_HEIGHT, spec.raw_scale, &mut gr[k..2 * k]);
        let sig = skn.part(fi, 5);
        for j in 0..kp {
            let src = match spec.tail {
                Tail::Linear if j == 0 || j == k => None,
                Tail::Circular if j == k => Some(0),
                _ => Some(j),
            };
            if let Some(s) = src {
                gr[2 * k + s] = gr[2 * k + s] + T::from_f64(t[2 * kp + j] * sig[j]);
            }
        }
    }
}

struct BackwardOp<'a, T> {
    set: &'a SplineSet<'a>,
    x: &'a [T],
    raw: Option<&'a [T]>,
    shared: Option<&'a SharedKnots>,
    g: &'a mut [T],
    gld: &'a [T],
    /// Per-row parameter gradients of this block's rows (written).
    graw: Option<&'a mut [T]>,
    /// Shared parameters: knot gradients summed over this block's rows, `[F, 3, K + 1]`.
    acc: Option<&'a mut [f64]>,
}

impl<T: Real> LaneOp for BackwardOp<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lane>(self, ctx: L::Ctx) {
        let BackwardOp { set, x, raw, shared, g, gld, mut graw, mut acc } = self;
        let (k, np, f, stride) = (set.k(), set.np(), set.f(), set.stride);
        let kp = k + 1;
        let gs = groups::<L>(ctx, set);
        let shared_kn = shared.map(|s| s.lanes::<L>(ctx, &gs));
        let mut kn = Knots::<L>::new(ctx, k);
        let want_raw = graw.is_some() || acc.is_some();
        let zero = L::splat(ctx, 0.0);
        let one = L::splat(ctx, 1.0);
        for (i, (gr, xr)) in g.chunks_exact_mut(stride).zip(x.chunks_exact(stride)).enumerate() {
            let gl = L::splat(ctx, gld[i].as_f64());
            for (gi, grp) in gs.iter().enumerate() {
                let v = L::from_fn(ctx, |l| xr[set.cols[grp.feat[l]]].as_f64());
                let gy = L::from_fn(ctx, |l| gr[set.cols[grp.feat[l]]].as_f64());
                let ins = inside(grp, v);
                let vin = L::select(ins, v, zero);
                let at = |l: usize, p: usize| raw.map_or(0.0, |r| r[(i * f + grp.feat[l]) * np + p].as_f64());
                let (knr, b, s0, s1, src) = match shared_kn.as_ref() {
                    Some(skn) => {
                        let b = search(&skn[gi], vin, false, true);
                        (&skn[gi], b, zero, zero, [(None, None); 4])
                    }
                    None => {
                        kn.compute(grp, &|p| L::from_fn(ctx, |l| at(l, p)));
                        let mut b = search(&kn, vin, false, false);
                        let (s0, s1, src) = per_row_derivs(k, grp, &mut b, at);
                        (&kn, b, s0, s1, src)
                    }
                };
                // Local quantities and partial derivatives (as `spline::Local::partials`).
                let (d0, d1) = (b.d0, b.d1);
                let w = b.x1 - b.x0;
                let h = b.y1 - b.y0;
                let s = h / w;
                let th = (vin - b.x0) / w;
                let t = th * (one - th);
                let den = s + (d0 + d1 - s * 2.0) * t;
                let num = h * (s * th * th + d0 * t);
                let n2 = d1 * th * th + s * 2.0 * t + d0 * (one - th) * (one - th);
                let den2 = den * den;
                let c = d0 + d1 - s * 2.0;
                let omt = one - th * 2.0;
                let y_theta = (h * (s * 2.0 * th + d0 * omt) * den - num * c * omt) / den2;
                let l_theta = (d1 * 2.0 * th + s * 2.0 * omt - d0 * 2.0 * (one - th)) / n2 - c * 2.0 * omt / den;
                let g_theta = gy * y_theta + gl * l_theta;
                let g_in = L::select(ins, g_theta / w, gy).to_array();
                for (lane, v) in g_in.iter().enumerate().take(grp.nl) {
                    gr[set.cols[grp.f0 + lane]] = T::from_f64(*v);
                }
                if !want_raw {
                    continue;
                }
                let y_s = (h * th * th * den - num * (one - t * 2.0)) / den2;
                let y_h = (s * th * th + d0 * t) / den;
                let y_d0 = t * (h * den - num) / den2;
                let y_d1 = -num * t / den2;
                let l_s = one * 2.0 / s + t * 2.0 / n2 - (one - t * 2.0) * 2.0 / den;
                let l_d0 = (one - th) * (one - th) / n2 - t * 2.0 / den;
                let l_d1 = th * th / n2 - t * 2.0 / den;
                let g_cw = -g_theta / w;
                let mut g_w = -g_theta * th / w;
                let g_ch = gy;
                let mut g_h = gy * y_h;
                let g_s = gy * y_s + gl * l_s;
                let g_d0 = gy * y_d0 + gl * l_d0;
                let g_d1 = gy * y_d1 + gl * l_d1;
                g_h = g_h + g_s / w;
                g_w = g_w - g_s * s / w;
                // Knot gradients at the bin's ends (zero outside the interval).
                let gcw0 = L::select(ins, g_cw - g_w, zero);
                let gcw1 = L::select(ins, g_w, zero);
                let gch0 = L::select(ins, g_ch - g_h, zero);
                let gch1 = L::select(ins, g_h, zero);
                let gd0 = L::select(ins, g_d0, zero);
                let gd1 = L::select(ins, g_d1, zero);
                if let Some(acc) = acc.as_deref_mut() {
                    let idx = lane_idx(b.idx);
                    let vals = [gcw0, gcw1, gch0, gch1, gd0, gd1].map(|v| v.to_array());
                    for lane in 0..grp.nl {
                        let base = (grp.f0 + lane) * 3 * kp + idx[lane];
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
                for (part, (gk0, gk1, soft, min)) in [(gcw0, gcw1, knr.sw(), MIN_BIN_WIDTH), (gch0, gch1, knr.sh(), MIN_BIN_HEIGHT)].into_iter().enumerate() {
                    let bv = L::select(has_hi, gk1, zero);
                    let below = L::select(has_lo, bv + gk0, bv);
                    let a = 1.0 - min * k as f64;
                    let two_b = grp.bound * 2.0;
                    // gw_i = 2B·(Σ_{j=i+1}^{K−1} gknot_j): `below` for i < idx, `bv` at idx, 0 above.
                    let gw_at = |ii: usize| {
                        let iv = one.c(ii as f64);
                        two_b * L::select(iv.lt(b.idx), below, L::select(iv.eq(b.idx), bv, zero))
                    };
                    let mut dot = zero;
                    for (ii, sv) in soft.iter().enumerate() {
                        dot = dot + *sv * a * gw_at(ii);
                    }
                    for (ii, sv) in soft.iter().enumerate() {
                        let val = grp.scale * *sv * (gw_at(ii) * a - dot);
                        let arr = val.to_array();
                        for lane in 0..grp.nl {
                            row[(grp.f0 + lane) * np + part * k + ii] = T::from_f64(arr[lane]);
                        }
                    }
                }
                // Knot derivatives: d = min + softplus(raw), d' = sigmoid(raw).
                let gr0 = (gd0 * s0).to_array();
                let gr1 = (gd1 * s1).to_array();
                for lane in 0..grp.nl {
                    let base = (grp.f0 + lane) * np + 2 * k;
                    row[base..base + kp].fill(T::zero());
                    if let Some(sl) = src[lane].0 {
                        row[base + sl] = row[base + sl] + T::from_f64(gr0[lane]);
                    }
                    if let Some(sh) = src[lane].1 {
                        row[base + sh] = row[base + sh] + T::from_f64(gr1[lane]);
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
        FORCE_PORTABLE.with(|p| p.set(portable));
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
                    apply_rows(&c.set(), &mut y, params, &mut ld, inverse);
                    for i in 0..rows {
                        let mut lsum = 0.25;
                        for j in 0..f {
                            let p = if shared { &raw[j * np..(j + 1) * np] } else { &raw[(i * f + j) * np..(i * f + j + 1) * np] };
                            let col = i * c.stride + c.cols[j];
                            let (yr, lr) = spline::apply::<f64>(&c.specs[j], p, x[col], inverse);
                            assert!(close(y[col], yr, 1e-12), "f{f} k{k} sh{shared} inv{inverse} ({i},{j}) x={}: {} vs {yr}", x[col], y[col]);
                            lsum += lr;
                        }
                        assert!(close(ld[i], lsum, 1e-11), "f{f} k{k} sh{shared} inv{inverse} row {i}: ld {} vs {lsum}", ld[i]);
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
        FORCE_PORTABLE.with(|p| p.set(false));
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
        FORCE_PORTABLE.with(|p| p.set(portable));
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
                for i in 0..rows {
                    for j in 0..f {
                        let po = if shared { j * np } else { (i * f + j) * np };
                        let col = i * c.stride + c.cols[j];
                        g_ref[col] = spline::apply_backward::<f64>(&c.specs[j], &raw[po..po + np], x[col], false, gout[col], gld[i], Some(&mut graw_ref[po..po + np]));
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
        FORCE_PORTABLE.with(|p| p.set(false));
    }

    #[test]
    fn backward_kernels_match_the_scalar_reference() {
        check_backward(false);
    }

    #[test]
    fn portable_backward_kernels_match_the_scalar_reference() {
        check_backward(true);
    }

    #[test]
    fn f32_storage_matches_f64_to_f32_precision() {
        let (f, k) = (7, 8);
        let c = case(f, k, 0.25);
        let rows = 20;
        let raw = raw_params(rows, f, k, 5);
        let x = inputs(&c, &raw, rows, false, 6, true);
        let mut y64 = x.clone();
        let mut ld64 = vec![0.0; rows];
        apply_rows(&c.set(), &mut y64, Params::PerRow(&raw[..]), &mut ld64, false);
        let raw32: Vec<f32> = to_t(&raw);
        let mut y32: Vec<f32> = to_t(&x);
        let mut ld32 = vec![0.0f32; rows];
        apply_rows(&c.set(), &mut y32, Params::PerRow(&raw32[..]), &mut ld32, false);
        for (a, b) in y32.iter().zip(&y64) {
            assert!((*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        for (a, b) in ld32.iter().zip(&ld64) {
            assert!((*a as f64 - b).abs() < 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
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
            apply_rows(&c.set(), &mut y, Params::PerRow(&raw[..]), &mut ld, false);
            apply_rows(&c.set(), &mut y, Params::Shared(&shared_raw[..]), &mut ld, true);
            let mut g = gout.clone();
            let mut graw = vec![0.0; raw.len()];
            backward_rows(&c.set(), &x, Params::PerRow(&raw[..]), &mut g, &gld, ParamGrads::PerRow(&mut graw));
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
        apply_rows(&c.set(), &mut y, Params::PerRow(&raw[..5 * f * (3 * k + 1)]), &mut ld, false);
        apply_rows(&c.set(), &mut y, Params::Shared(&shared_raw[..]), &mut ld, true);
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
        let reps = 40;
        let time = |name: &str, mut work: Box<dyn FnMut() + '_>| {
            let mut ts = Vec::new();
            for _ in 0..reps {
                let t0 = thread_cpu_ns();
                work();
                ts.push(thread_cpu_ns() - t0);
            }
            ts.sort_unstable();
            println!("{name}: median {:.1} µs/call, {:.1} ns/element", ts[reps / 2] as f64 * 1e-3, ts[reps / 2] as f64 / (rows * f) as f64);
        };
        rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| {
            time("per-row forward", Box::new(|| {
                let mut y = x.clone();
                let mut ld = vec![0.0f32; rows];
                apply_rows(&c.set(), &mut y, Params::PerRow(&raw[..]), &mut ld, false);
            }));
            time("per-row inverse", Box::new(|| {
                let mut y = x.clone();
                let mut ld = vec![0.0f32; rows];
                apply_rows(&c.set(), &mut y, Params::PerRow(&raw[..]), &mut ld, true);
            }));
            time("shared forward", Box::new(|| {
                let mut y = x.clone();
                let mut ld = vec![0.0f32; rows];
                apply_rows(&c.set(), &mut y, Params::Shared(&shared_raw[..]), &mut ld, false);
            }));
            time("per-row backward", Box::new(|| {
                let mut g = gout.clone();
                let mut graw = vec![0.0f32; raw.len()];
                backward_rows(&c.set(), &x, Params::PerRow(&raw[..]), &mut g, &gld, ParamGrads::PerRow(&mut graw));
            }));
            time("shared backward (input grads)", Box::new(|| {
                let mut g = gout.clone();
                backward_rows(&c.set(), &x, Params::Shared(&shared_raw[..]), &mut g, &gld, ParamGrads::None);
            }));
            time("shared backward (with param grads)", Box::new(|| {
                let mut g = gout.clone();
                let mut gs = vec![0.0f32; shared_raw.len()];
                backward_rows(&c.set(), &x, Params::Shared(&shared_raw[..]), &mut g, &gld, ParamGrads::Shared(&mut gs));
            }));
        });
    }
}
