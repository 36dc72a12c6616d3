//! Monotone rational-quadratic splines (Durkan et al., 2019, "Neural Spline Flows") on
//! [−B, B], with linear tails (identity outside the interval, boundary derivatives 1) or
//! circular tails (last knot derivative equal to the first, for periodic coordinates).
//!
//! Each transformed scalar has `3K + 1` raw parameters: K bin widths, K bin heights and K + 1
//! knot derivatives. Widths and heights are `min + (1 − K·min)·softmax(raw · raw_scale)`,
//! derivatives `min + softplus(raw)`. With linear tails the first and last raw derivative are
//! unused (the boundary derivatives are fixed to 1); with circular tails the last one is unused
//! (it copies the first). Inputs outside [−B, B] are passed through unchanged with log-det 0
//! (the reference maps them to 0; that quirk is deliberately not reproduced); "inside" counts B
//! as rounded to the stored type where that widens it (π in f32; [`storage_bound`]).
//!
//! This module has two implementations: scalar CPU kernels with a hand-derived reverse pass
//! (the reference that the tests compare the vectorised kernels of the CPU path,
//! `cpu::spline_lanes`, against), and candle ops (autodiff, any device).

// The scalar kernels are the reference implementation that the tests compare the vectorised
// kernels of `cpu::spline_lanes` (the CPU path) against.
#![cfg_attr(not(test), allow(dead_code))]

use candle_core::{DType, Device, Tensor, D};

use crate::cpu::Real;
use crate::Result;

/// Smallest bin width and height, as fractions of the interval.
pub const MIN_BIN_WIDTH: f64 = 1e-3;
/// Smallest bin height.
pub const MIN_BIN_HEIGHT: f64 = 1e-3;
/// Smallest knot derivative.
pub const MIN_DERIVATIVE: f64 = 1e-3;
/// Largest number of bins supported by the CPU kernels.
pub const MAX_BINS: usize = 32;

/// The raw derivative value that gives knot derivative 1 (identity initialisation):
/// ln(e^{1 − min} − 1).
pub fn identity_derivative_raw() -> f64 {
    ((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln()
}

/// What a spline does at and beyond its interval's ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tail {
    /// Identity outside [−B, B]; boundary derivatives 1.
    Linear,
    /// Periodic coordinate on [−B, B]: last knot derivative = first.
    Circular,
}

/// The shape of one scalar spline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplineSpec {
    /// Number of bins K.
    pub bins: usize,
    /// Half-width B of the interval [−B, B].
    pub bound: f64,
    /// Tail behaviour.
    pub tail: Tail,
    /// Factor applied to raw widths and heights before the softmax (1/√hidden for
    /// conditioner outputs, 1 for unconditional splines).
    pub raw_scale: f64,
}

impl SplineSpec {
    /// Raw parameters per scalar: 3K + 1.
    pub fn n_params(&self) -> usize {
        3 * self.bins + 1
    }
}

fn softplus(u: f64) -> f64 {
    u.max(0.0) + (-u.abs()).exp().ln_1p()
}

fn sigmoid(u: f64) -> f64 {
    if u >= 0.0 {
        1.0 / (1.0 + (-u).exp())
    } else {
        let e = u.exp();
        e / (1.0 + e)
    }
}

/// Knot positions of one spline (computed in f64); knot derivatives are computed on demand,
/// since an evaluation only needs the two at the ends of its bin. Splines whose parameters are
/// shared by every row (the unconditional ones) prepare their knots once per batch.
#[derive(Debug, Clone)]
pub(crate) struct Knots {
    k: usize,
    tail: Tail,
    cw: [f64; MAX_BINS + 1],
    ch: [f64; MAX_BINS + 1],
    /// softmax of the scaled raw widths / heights (for the backward pass).
    sw: [f64; MAX_BINS],
    sh: [f64; MAX_BINS],
    /// Raw derivative parameters (K + 1).
    rd: [f64; MAX_BINS + 1],
}

fn softmax_into(raw: &[f64], scale: f64, out: &mut [f64]) {
    let m = raw.iter().map(|r| r * scale).fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for (o, r) in out.iter_mut().zip(raw) {
        *o = (r * scale - m).exp();
        s += *o;
    }
    for o in out.iter_mut() {
        *o /= s;
    }
}

fn cumulative(soft: &[f64], bound: f64, min: f64, out: &mut [f64]) {
    let k = soft.len();
    let a = 1.0 - min * k as f64;
    let mut acc = 0.0;
    out[0] = -bound;
    for j in 1..k {
        acc += min + a * soft[j - 1];
        out[j] = 2.0 * bound * acc - bound;
    }
    out[k] = bound;
}

impl Knots {
    /// Knots of the spline with raw parameters `raw` (`3K + 1` values).
    pub(crate) fn new(spec: &SplineSpec, raw: &[f64]) -> Self {
        let k = spec.bins;
        let mut kn = Knots {
            k,
            tail: spec.tail,
            cw: [0.0; MAX_BINS + 1],
            ch: [0.0; MAX_BINS + 1],
            sw: [0.0; MAX_BINS],
            sh: [0.0; MAX_BINS],
            rd: [0.0; MAX_BINS + 1],
        };
        kn.rd[..=k].copy_from_slice(&raw[2 * k..3 * k + 1]);
        softmax_into(&raw[..k], spec.raw_scale, &mut kn.sw[..k]);
        softmax_into(&raw[k..2 * k], spec.raw_scale, &mut kn.sh[..k]);
        cumulative(&kn.sw[..k], spec.bound, MIN_BIN_WIDTH, &mut kn.cw[..=k]);
        cumulative(&kn.sh[..k], spec.bound, MIN_BIN_HEIGHT, &mut kn.ch[..=k]);
        kn
    }

    /// Knot position j (tests).
    #[cfg(test)]
    pub(crate) fn knot(&self, j: usize) -> f64 {
        self.cw[j]
    }

    /// Knot height j (tests).
    #[cfg(test)]
    pub(crate) fn height_knot(&self, j: usize) -> f64 {
        self.ch[j]
    }

    /// The raw parameter behind knot derivative `j`, or `None` if the tail fixes it to 1.
    fn deriv_source(&self, j: usize) -> Option<usize> {
        match self.tail {
            Tail::Linear if j == 0 || j == self.k => None,
            Tail::Circular if j == self.k => Some(0),
            _ => Some(j),
        }
    }

    /// Knot derivative j: 1 at linear-tail ends, the first one again at a circular end,
    /// `min + softplus(raw)` otherwise.
    fn deriv(&self, j: usize) -> f64 {
        match self.deriv_source(j) {
            None => 1.0,
            Some(r) => MIN_DERIVATIVE + softplus(self.rd[r]),
        }
    }

    /// Bin index of `v` among the knots `locs` (searchsorted with the last knot nudged up).
    fn bin(&self, locs: &[f64], v: f64) -> usize {
        let k = self.k;
        let mut idx = 0;
        for (j, &l) in locs[..=k].iter().enumerate() {
            let l = if j == k { l + 1e-6 } else { l };
            if v >= l {
                idx = j;
            }
        }
        idx.min(k - 1)
    }
}

/// Local quantities of bin k at parameter θ.
struct Local {
    k: usize,
    w: f64,
    h: f64,
    s: f64,
    d0: f64,
    d1: f64,
    theta: f64,
}

impl Local {
    fn t(&self) -> f64 {
        self.theta * (1.0 - self.theta)
    }
    fn den(&self) -> f64 {
        self.s + (self.d0 + self.d1 - 2.0 * self.s) * self.t()
    }
    fn num(&self) -> f64 {
        self.h * (self.s * self.theta * self.theta + self.d0 * self.t())
    }
    fn n2(&self) -> f64 {
        let th = self.theta;
        self.d1 * th * th + 2.0 * self.s * self.t() + self.d0 * (1.0 - th) * (1.0 - th)
    }
    /// log dy/dx.
    fn log_deriv(&self) -> f64 {
        2.0 * self.s.ln() + self.n2().ln() - 2.0 * self.den().ln()
    }
    /// Partial derivatives of y (θ, s, H explicit, d0, d1) and of ℓ = log dy/dx (θ, s, d0, d1).
    fn partials(&self) -> Partials {
        let (th, s, h, d0, d1) = (self.theta, self.s, self.h, self.d0, self.d1);
        let t = self.t();
        let den = self.den();
        let num = self.num();
        let n2 = self.n2();
        let den2 = den * den;
        let c = d0 + d1 - 2.0 * s;
        Partials {
            y_theta: (h * (2.0 * s * th + d0 * (1.0 - 2.0 * th)) * den - num * c * (1.0 - 2.0 * th)) / den2,
            y_s: (h * th * th * den - num * (1.0 - 2.0 * t)) / den2,
            y_h: (s * th * th + d0 * t) / den,
            y_d0: t * (h * den - num) / den2,
            y_d1: -num * t / den2,
            l_theta: (2.0 * d1 * th + 2.0 * s * (1.0 - 2.0 * th) - 2.0 * d0 * (1.0 - th)) / n2 - 2.0 * c * (1.0 - 2.0 * th) / den,
            l_s: 2.0 / s + 2.0 * t / n2 - 2.0 * (1.0 - 2.0 * t) / den,
            l_d0: (1.0 - th) * (1.0 - th) / n2 - 2.0 * t / den,
            l_d1: th * th / n2 - 2.0 * t / den,
        }
    }
}

struct Partials {
    y_theta: f64,
    y_s: f64,
    y_h: f64,
    y_d0: f64,
    y_d1: f64,
    l_theta: f64,
    l_s: f64,
    l_d0: f64,
    l_d1: f64,
}

/// The half-width the inside test of a spline on values stored as `T` uses: the bound B, or B
/// rounded to `T` where that rounding moves it outward. A periodic coordinate is wrapped into
/// [−B, B) and then stored as `T`; in f32 that can round it onto 3.1415927 > π, which must
/// still be mapped by the spline (whose derivative is the same at both ends), not passed
/// through as if it were outside (log-det 0 instead of the boundary derivative's log: a wrong
/// log q by up to several nats at rare points; docs/ALGORITHMS.md, "Circular splines at the seam").
pub(crate) fn storage_bound<T: Real>(bound: f64) -> f64 {
    bound.max(T::from_f64(bound).as_f64())
}

fn inside<T: Real>(spec: &SplineSpec, v: f64) -> bool {
    let b = storage_bound::<T>(spec.bound);
    v >= -b && v <= b
}

fn local_forward(kn: &Knots, x: f64) -> Local {
    let k = kn.bin(&kn.cw, x);
    let w = kn.cw[k + 1] - kn.cw[k];
    let h = kn.ch[k + 1] - kn.ch[k];
    Local { k, w, h, s: h / w, d0: kn.deriv(k), d1: kn.deriv(k + 1), theta: (x - kn.cw[k]) / w }
}

fn local_inverse(kn: &Knots, y: f64) -> Local {
    let k = kn.bin(&kn.ch, y);
    let w = kn.cw[k + 1] - kn.cw[k];
    let h = kn.ch[k + 1] - kn.ch[k];
    let (s, d0, d1) = (h / w, kn.deriv(k), kn.deriv(k + 1));
    let dy = y - kn.ch[k];
    let c2 = d0 + d1 - 2.0 * s;
    let a = dy * c2 + h * (s - d0);
    let b = h * d0 - dy * c2;
    let c = -s * dy;
    let disc = (b * b - 4.0 * a * c).max(0.0);
    let theta = (2.0 * c) / (-b - disc.sqrt());
    Local { k, w, h, s, d0, d1, theta }
}

fn raw_f64<T: Real>(spec: &SplineSpec, raw: &[T]) -> [f64; 3 * MAX_BINS + 1] {
    let mut r = [0.0f64; 3 * MAX_BINS + 1];
    for (a, b) in r.iter_mut().zip(&raw[..spec.n_params()]) {
        *a = b.as_f64();
    }
    r
}

/// Knots of a spline from raw parameters of any float type.
pub(crate) fn knots<T: Real>(spec: &SplineSpec, raw: &[T]) -> Knots {
    Knots::new(spec, &raw_f64(spec, raw)[..spec.n_params()])
}

/// Applies one scalar spline: `x → (y, log|dy/dx|)`, or with `inverse`, `y → (x, log|dx/dy|)`.
pub(crate) fn apply<T: Real>(spec: &SplineSpec, raw: &[T], v: T, inverse: bool) -> (T, T) {
    if !inside::<T>(spec, v.as_f64()) {
        return (v, T::zero());
    }
    apply_knots(spec, &knots(spec, raw), v, inverse)
}

/// [`apply`] with prepared knots.
pub(crate) fn apply_knots<T: Real>(spec: &SplineSpec, kn: &Knots, v: T, inverse: bool) -> (T, T) {
    let v = v.as_f64();
    if !inside::<T>(spec, v) {
        return (T::from_f64(v), T::zero());
    }
    let v = v.clamp(-spec.bound, spec.bound);
    if inverse {
        let loc = local_inverse(kn, v);
        let x = kn.cw[loc.k] + loc.theta * loc.w;
        (T::from_f64(x), T::from_f64(-loc.log_deriv()))
    } else {
        let loc = local_forward(kn, v);
        let y = kn.ch[loc.k] + loc.num() / loc.den();
        (T::from_f64(y), T::from_f64(loc.log_deriv()))
    }
}

/// Reverse pass of [`apply`]: given the input `v`, ∂L/∂out (`g_out`) and ∂L/∂logdet (`g_ld`),
/// returns ∂L/∂v and, if `g_raw` is given, *adds* ∂L/∂raw to it.
pub(crate) fn apply_backward<T: Real>(spec: &SplineSpec, raw: &[T], v: T, inverse: bool, g_out: T, g_ld: T, g_raw: Option<&mut [T]>) -> T {
    if !inside::<T>(spec, v.as_f64()) {
        return g_out;
    }
    apply_backward_knots(spec, &knots(spec, raw), v, inverse, g_out, g_ld, g_raw)
}

/// [`apply_backward`] with prepared knots.
pub(crate) fn apply_backward_knots<T: Real>(
    spec: &SplineSpec,
    kn: &Knots,
    v: T,
    inverse: bool,
    g_out: T,
    g_ld: T,
    g_raw: Option<&mut [T]>,
) -> T {
    let vf = v.as_f64();
    if !inside::<T>(spec, vf) {
        return g_out;
    }
    let vf = vf.clamp(-spec.bound, spec.bound);
    let kk = spec.bins;
    let (gy, gl) = (g_out.as_f64(), g_ld.as_f64());
    // Gradients w.r.t. the local bin quantities.
    let (g_in, g_cw, mut g_w, g_ch, mut g_h, g_s, g_d0, g_d1, loc);
    if inverse {
        let l = local_inverse(kn, vf);
        let p = l.partials();
        // x = cw + θ·W ; ℓ_inv = −ℓ(θ, s, d0, d1) ; θ solves ch + num/den = y.
        let g_theta = gy * l.w - gl * p.l_theta;
        let lambda = g_theta / p.y_theta;
        g_in = lambda;
        g_ch = -lambda;
        g_h = -lambda * p.y_h;
        g_s = -lambda * p.y_s - gl * p.l_s;
        g_d0 = -lambda * p.y_d0 - gl * p.l_d0;
        g_d1 = -lambda * p.y_d1 - gl * p.l_d1;
        g_cw = gy;
        g_w = gy * l.theta;
        loc = l;
    } else {
        let l = local_forward(kn, vf);
        let p = l.partials();
        let g_theta = gy * p.y_theta + gl * p.l_theta;
        g_in = g_theta / l.w;
        g_cw = -g_theta / l.w;
        g_w = -g_theta * l.theta / l.w;
        g_ch = gy;
        g_h = gy * p.y_h;
        g_s = gy * p.y_s + gl * p.l_s;
        g_d0 = gy * p.y_d0 + gl * p.l_d0;
        g_d1 = gy * p.y_d1 + gl * p.l_d1;
        loc = l;
    }
    if let Some(graw) = g_raw {
        // s = H/W.
        g_h += g_s / loc.w;
        g_w -= g_s * loc.s / loc.w;
        let k = loc.k;
        // Knot gradients: W = cw[k+1] − cw[k], H = ch[k+1] − ch[k].
        let mut gcw = [0.0f64; MAX_BINS + 1];
        let mut gch = [0.0f64; MAX_BINS + 1];
        gcw[k] += g_cw - g_w;
        gcw[k + 1] += g_w;
        gch[k] += g_ch - g_h;
        gch[k + 1] += g_h;
        knots_to_raw(&gcw[..=kk], &kn.sw[..kk], spec.bound, MIN_BIN_WIDTH, spec.raw_scale, &mut graw[..kk]);
        knots_to_raw(&gch[..=kk], &kn.sh[..kk], spec.bound, MIN_BIN_HEIGHT, spec.raw_scale, &mut graw[kk..2 * kk]);
        // Derivatives: d_j = min + softplus(raw_j), with tail overrides.
        for (j, gj) in [(k, g_d0), (k + 1, g_d1)] {
            if let Some(src) = kn.deriv_source(j) {
                let rj = kn.rd[src];
                graw[2 * kk + src] += T::from_f64(gj * sigmoid(rj));
            }
        }
    }
    T::from_f64(g_in)
}

/// Back-propagates knot-position gradients through cumsum and softmax to the raw parameters.
pub(crate) fn knots_to_raw<T: Real>(gknot: &[f64], soft: &[f64], bound: f64, min: f64, scale: f64, graw: &mut [T]) {
    let k = soft.len();
    // knot_j = −B + 2B Σ_{i<j} w_i for 1 ≤ j ≤ K−1 (knots 0 and K are constants).
    let mut gw = [0.0f64; MAX_BINS];
    let mut acc = 0.0;
    for i in (0..k).rev() {
        if i < k - 1 {
            acc += gknot[i + 1];
        }
        gw[i] = 2.0 * bound * acc;
    }
    let a = 1.0 - min * k as f64;
    let dot: f64 = (0..k).map(|i| soft[i] * a * gw[i]).sum();
    for i in 0..k {
        let gs = a * gw[i];
        graw[i] += T::from_f64(scale * soft[i] * (gs - dot));
    }
}

/// Candle-ops rational-quadratic spline over `[n, F]` inputs with raw parameters `[n, F, 3K+1]`
/// (or `[F, 3K+1]`, broadcast over rows). `bounds[f]` and `circular[f]` give each feature's
/// interval half-width and tail. Returns `(outputs [n, F], log|det| [n, F])`.
pub(crate) fn apply_t(
    x: &Tensor,
    raw: &Tensor,
    bins: usize,
    raw_scale: f64,
    bounds: &[f64],
    circular: &[bool],
    inverse: bool,
) -> Result<(Tensor, Tensor)> {
    let (n, f) = x.dims2()?;
    let k = bins;
    let dt = x.dtype();
    let dev = x.device();
    let raw = if raw.rank() == 2 { raw.unsqueeze(0)?.broadcast_as((n, f, 3 * k + 1))? } else { raw.clone() };
    let host =
        |v: Vec<f64>, shape: &[usize]| -> Result<Tensor> { Ok(Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dt)?.to_device(dev)?) };
    let b = host(bounds.to_vec(), &[1, f])?;
    let b3 = b.unsqueeze(2)?;
    let inside = x.broadcast_ge(&b.neg()?)?.mul(&x.broadcast_le(&b)?)?;
    let zero = x.zeros_like()?;
    // Evaluate the spline at a safe in-range point where the input is outside the interval, so
    // that no NaN arises in the discarded branch (it would poison the gradients).
    let xin = inside.where_cond(x, &zero)?;

    let knots = |raw_part: &Tensor, min: f64| -> Result<(Tensor, Tensor)> {
        let soft = candle_nn::ops::softmax(&(raw_part * raw_scale)?, D::Minus1)?;
        let w = ((soft * (1.0 - min * k as f64))? + min)?;
        let cum = w.cumsum(D::Minus1)?.narrow(2, 0, k - 1)?;
        let lead = Tensor::zeros((n, f, 1), dt, dev)?;
        let inner = Tensor::cat(&[&lead, &cum], 2)?;
        let inner = inner.broadcast_mul(&(&b3 * 2.0)?)?.broadcast_sub(&b3)?;
        let last = b3.broadcast_as((n, f, 1))?;
        let locs = Tensor::cat(&[&inner, &last], 2)?;
        let widths = (locs.narrow(2, 1, k)? - locs.narrow(2, 0, k)?)?;
        Ok((locs, widths))
    };
    let (cw, ww) = knots(&raw.narrow(2, 0, k)?, MIN_BIN_WIDTH)?;
    let (ch, hh) = knots(&raw.narrow(2, k, k)?, MIN_BIN_HEIGHT)?;
    let ud = raw.narrow(2, 2 * k, k + 1)?;
    let sp = (ud.relu()? + ud.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    let d = (sp + MIN_DERIVATIVE)?;
    // Tail overrides: linear → d₀ = d_K = 1; circular → d_K = d₀.
    let mut keep = vec![1.0; f * (k + 1)];
    let mut ones = vec![0.0; f * (k + 1)];
    let mut copy_first = vec![0.0; f * (k + 1)];
    for (j, &c) in circular.iter().enumerate() {
        let row = j * (k + 1);
        if c {
            keep[row + k] = 0.0;
            copy_first[row + k] = 1.0;
        } else {
            keep[row] = 0.0;
            keep[row + k] = 0.0;
            ones[row] = 1.0;
            ones[row + k] = 1.0;
        }
    }
    let keep = host(keep, &[1, f, k + 1])?;
    let ones = host(ones, &[1, f, k + 1])?;
    let copy_first = host(copy_first, &[1, f, k + 1])?;
    let d0 = d.narrow(2, 0, 1)?;
    let d = (d.broadcast_mul(&keep)?.broadcast_add(&ones)? + copy_first.broadcast_mul(&d0)?)?;

    let locs = if inverse { &ch } else { &cw };
    let mut nudge = vec![0.0; k + 1];
    nudge[k] = 1e-6;
    let nudged = locs.broadcast_add(&host(nudge, &[1, 1, k + 1])?)?;
    let count = xin.unsqueeze(2)?.broadcast_ge(&nudged)?.to_dtype(DType::U32)?.sum(D::Minus1)?;
    // idx = clamp(count − 1, 0, K − 1), computed in f64 and cast back (count ≥ 1 inside).
    let idx = count.to_dtype(DType::F64)?.affine(1.0, -1.0)?.clamp(0.0, (k - 1) as f64)?.to_dtype(DType::U32)?.unsqueeze(2)?;
    let pick = |t: &Tensor| -> Result<Tensor> { Ok(t.contiguous()?.gather(&idx, 2)?.squeeze(2)?) };
    let cwk = pick(&cw)?;
    let wk = pick(&ww)?;
    let chk = pick(&ch)?;
    let hk = pick(&hh)?;
    let d0k = pick(&d)?;
    let d1k = pick(&d.narrow(2, 1, k)?)?;
    let s = (&hk / &wk)?;
    let c2 = ((&d0k + &d1k)? - (&s * 2.0)?)?;
    let (out, theta) = if inverse {
        let dy = (&xin - &chk)?;
        let a = ((&dy * &c2)? + (&hk * (&s - &d0k)?)?)?;
        let bq = ((&hk * &d0k)? - (&dy * &c2)?)?;
        let c = (s.neg()? * &dy)?;
        let disc = ((bq.sqr()? - ((&a * &c)? * 4.0)?)?).relu()?;
        let theta = ((&c * 2.0)? / (bq.neg()? - disc.sqrt()?)?)?;
        ((&cwk + (&theta * &wk)?)?, theta)
    } else {
        let theta = ((&xin - &cwk)? / &wk)?;
        let t = (&theta * (1.0 - &theta)?)?;
        let num = (&hk * ((&s * theta.sqr()?)? + (&d0k * &t)?)?)?;
        let den = (&s + (&c2 * &t)?)?;
        ((&chk + (num / den)?)?, theta)
    };
    let t = (&theta * (1.0 - &theta)?)?;
    let den = (&s + (&c2 * &t)?)?;
    let n2 = (((&d1k * theta.sqr()?)? + ((&s * &t)? * 2.0)?)? + (&d0k * (1.0 - &theta)?.sqr()?)?)?;
    let ld = (((s.log()? * 2.0)? + n2.log()?)? - (den.log()? * 2.0)?)?;
    let ld = if inverse { ld.neg()? } else { ld };
    let out = inside.where_cond(&out, x)?;
    let ld = inside.where_cond(&ld, &zero)?;
    Ok((out, ld))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_raw(k: usize, seed: u64) -> Vec<f64> {
        let mut rng = fab_core::seeded_rng(seed, 0);
        fab_core::rng::normal_vec(&mut rng, 3 * k + 1).iter().map(|v| 1.5 * v).collect()
    }

    fn specs() -> Vec<SplineSpec> {
        vec![
            SplineSpec { bins: 8, bound: 5.0, tail: Tail::Linear, raw_scale: 1.0 },
            SplineSpec { bins: 8, bound: std::f64::consts::PI, tail: Tail::Circular, raw_scale: 1.0 / 16.0 },
            SplineSpec { bins: 3, bound: 1.0, tail: Tail::Linear, raw_scale: 0.7 },
        ]
    }

    /// Inputs covering bin interiors, knots, the bounds and beyond.
    fn inputs(spec: &SplineSpec, raw: &[f64]) -> Vec<f64> {
        let kn = Knots::new(spec, raw);
        let b = spec.bound;
        let mut v: Vec<f64> = (0..41).map(|i| -b + 2.0 * b * i as f64 / 40.0).collect();
        for j in 1..spec.bins {
            v.push(kn.cw[j] + 1e-9);
            v.push(kn.cw[j] - 1e-9);
            v.push(kn.cw[j]);
        }
        v.extend([b, -b, b + 0.5, -b - 2.0, 1e-12]);
        v
    }

    #[test]
    fn identity_initialisation_is_identity() {
        for spec in specs() {
            let mut raw = vec![0.0; spec.n_params()];
            for r in raw[2 * spec.bins..].iter_mut() {
                *r = identity_derivative_raw();
            }
            for x in inputs(&spec, &raw) {
                let (y, ld) = apply::<f64>(&spec, &raw, x, false);
                assert!((y - x).abs() < 1e-12 && ld.abs() < 1e-12, "{x} → {y}, {ld}");
            }
        }
    }

    #[test]
    fn round_trip_and_log_dets_cancel() {
        for (si, spec) in specs().into_iter().enumerate() {
            let raw = random_raw(spec.bins, si as u64);
            for x in inputs(&spec, &raw) {
                let (y, ld) = apply::<f64>(&spec, &raw, x, false);
                let (x2, ld2) = apply::<f64>(&spec, &raw, y, true);
                // The inverse solves a quadratic; near-degenerate roots lose a few digits.
                assert!((x2 - x).abs() < 1e-10, "{x} → {y} → {x2}");
                assert!((ld + ld2).abs() < 1e-9, "{ld} {ld2}");
                if x.abs() > spec.bound {
                    assert_eq!((y, ld), (x, 0.0), "outside the bound is the identity");
                }
            }
        }
    }

    #[test]
    fn log_det_matches_numerical_derivative() {
        for (si, spec) in specs().into_iter().enumerate() {
            let raw = random_raw(spec.bins, 10 + si as u64);
            let kn = Knots::new(&spec, &raw);
            let h = 1e-7;
            for x in inputs(&spec, &raw) {
                // Keep the difference quotient inside one bin and inside the interval.
                let near_knot = kn.cw[..=spec.bins].iter().any(|c| (c - x).abs() < 2.0 * h);
                if near_knot || (x.abs() - spec.bound).abs() < 2.0 * h {
                    continue;
                }
                for inverse in [false, true] {
                    let (_, ld) = apply::<f64>(&spec, &raw, x, inverse);
                    let num = (apply::<f64>(&spec, &raw, x + h, inverse).0 - apply::<f64>(&spec, &raw, x - h, inverse).0) / (2.0 * h);
                    // Central differences at h = 1e-7: ~1e-7 relative error from rounding.
                    assert!((num.ln() - ld).abs() < 1e-6, "x={x} inv={inverse}: {ld} vs {}", num.ln());
                }
            }
        }
    }

    #[test]
    fn circular_spline_is_smooth_across_the_wrap() {
        let spec = specs()[1];
        let raw = random_raw(8, 3);
        let b = spec.bound;
        // Derivative at −B equals derivative at +B, and the end points are fixed.
        let (_, l_lo) = apply::<f64>(&spec, &raw, -b, false);
        let (_, l_hi) = apply::<f64>(&spec, &raw, b - 1e-12, false);
        assert!((l_lo - l_hi).abs() < 1e-8, "{l_lo} vs {l_hi}");
        assert!((apply::<f64>(&spec, &raw, -b, false).0 + b).abs() < 1e-12);
        assert!((apply::<f64>(&spec, &raw, b, false).0 - b).abs() < 1e-9);
    }

    #[test]
    fn minimum_bin_sizes_and_derivatives_are_respected() {
        // Extreme raw values drive widths/heights to the minimum and derivatives to ~min.
        let spec = SplineSpec { bins: 4, bound: 2.0, tail: Tail::Linear, raw_scale: 1.0 };
        let mut raw = vec![0.0; spec.n_params()];
        raw[0] = 60.0; // one huge width: the other three hit the minimum
        raw[5] = 60.0;
        for r in raw[8..].iter_mut() {
            *r = -40.0; // interior derivatives ≈ MIN_DERIVATIVE
        }
        let kn = Knots::new(&spec, &raw);
        for j in 0..4 {
            let w = kn.cw[j + 1] - kn.cw[j];
            assert!(w >= 2.0 * 2.0 * MIN_BIN_WIDTH * (1.0 - 1e-9));
        }
        for x in [-1.999, -0.5, 0.0, 0.3, 1.0, 1.9995] {
            let (y, ld) = apply::<f64>(&spec, &raw, x, false);
            let (x2, ld2) = apply::<f64>(&spec, &raw, y, true);
            assert!(ld.is_finite() && (x2 - x).abs() < 1e-7 && (ld + ld2).abs() < 1e-6, "{x} {y} {x2} {ld} {ld2}");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (si, spec) in specs().into_iter().enumerate() {
            let raw = random_raw(spec.bins, 20 + si as u64);
            let kn = Knots::new(&spec, &raw);
            let (gy, gl) = (0.7, -1.3);
            for inverse in [false, true] {
                for &v in &[-0.9 * spec.bound, -0.33, 0.1, 0.61 * spec.bound] {
                    let locs = if inverse { &kn.ch } else { &kn.cw };
                    if locs[..=spec.bins].iter().any(|c| (c - v).abs() < 1e-4) {
                        continue;
                    }
                    let obj = |r: &[f64], v: f64| {
                        let (o, l) = apply::<f64>(&spec, r, v, inverse);
                        gy * o + gl * l
                    };
                    let mut graw = vec![0.0; raw.len()];
                    let gv = apply_backward::<f64>(&spec, &raw, v, inverse, gy, gl, Some(&mut graw));
                    let h = 1e-6;
                    let num_v = (obj(&raw, v + h) - obj(&raw, v - h)) / (2.0 * h);
                    assert!((gv - num_v).abs() < 1e-6 * (1.0 + num_v.abs()), "dv: {gv} vs {num_v}");
                    for j in 0..raw.len() {
                        let mut rp = raw.clone();
                        rp[j] += h;
                        let mut rm = raw.clone();
                        rm[j] -= h;
                        let num = (obj(&rp, v) - obj(&rm, v)) / (2.0 * h);
                        assert!((graw[j] - num).abs() < 1e-6 * (1.0 + num.abs()), "spec {si} inv {inverse} raw[{j}]: {} vs {num}", graw[j]);
                    }
                }
            }
        }
    }

    #[test]
    fn candle_path_matches_scalar_kernels() {
        let bins = 8;
        let bounds = [5.0, std::f64::consts::PI, 5.0];
        let circular = [false, true, false];
        let n = 6;
        let f = 3;
        let mut rng = fab_core::seeded_rng(7, 0);
        let raw: Vec<f64> = fab_core::rng::normal_vec(&mut rng, n * f * (3 * bins + 1));
        let xs: Vec<f64> = vec![-4.0, 3.0, 6.0, 0.5, -3.0, -5.5, 4.9, 0.0, 1.0, -0.2, 3.1, 2.0, 1.1, -1.0, 0.7, 5.0, 1.5, -4.99];
        let xt = Tensor::from_vec(xs.clone(), (n, f), &Device::Cpu).unwrap();
        let rt = Tensor::from_vec(raw.clone(), (n, f, 3 * bins + 1), &Device::Cpu).unwrap();
        for inverse in [false, true] {
            let (y, ld) = apply_t(&xt, &rt, bins, 0.25, &bounds, &circular, inverse).unwrap();
            let y = y.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let ld = ld.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for i in 0..n {
                for j in 0..f {
                    let spec = SplineSpec {
                        bins,
                        bound: bounds[j],
                        tail: if circular[j] { Tail::Circular } else { Tail::Linear },
                        raw_scale: 0.25,
                    };
                    let p = &raw[(i * f + j) * (3 * bins + 1)..(i * f + j + 1) * (3 * bins + 1)];
                    let (ys, ls) = apply::<f64>(&spec, p, xs[i * f + j], inverse);
                    assert!(
                        (ys - y[i * f + j]).abs() < 1e-10 && (ls - ld[i * f + j]).abs() < 1e-9,
                        "({i},{j}) inv={inverse}: {ys} {} / {ls} {}",
                        y[i * f + j],
                        ld[i * f + j]
                    );
                }
            }
        }
    }
}
