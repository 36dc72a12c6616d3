//! Fixed-width "lane" arithmetic for evaluating several configurations at once, and the
//! branch-free elementary functions (exp, ln, tanh, atan2, sin/cos) the fast kernels need.
//!
//! A [`V<L>`] holds one float64 per configuration. Every operation is element-wise over the
//! lanes, written as plain loops that LLVM turns into SIMD instructions (SSE2 at the baseline,
//! AVX2 inside the `avx2` entry points); data-dependent branches are replaced by selects, so
//! all lanes follow the same control flow. No fused multiply-add is used, so results are
//! bit-identical whatever the instruction set and whatever the lane count.
//!
//! The elementary functions use classical argument reduction plus truncated Taylor series whose
//! truncation error is below 1e-17 relative on the reduced range (stated at each function);
//! their accuracy (a few ulp) is tested against the standard library.

use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};

/// `L` float64 lanes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct V<const L: usize>(pub [f64; L]);

/// A lane mask: all bits set (true) or clear (false) per lane, as SIMD compares produce.
pub(crate) type M<const L: usize> = [u64; L];

/// Lane-wise AND of two masks.
#[inline(always)]
pub(crate) fn and_mask<const L: usize>(a: M<L>, b: M<L>) -> M<L> {
    let mut r = a;
    for l in 0..L {
        r[l] &= b[l];
    }
    r
}

macro_rules! binop {
    ($tr:ident, $f:ident, $op:tt) => {
        impl<const L: usize> $tr for V<L> {
            type Output = Self;
            #[inline(always)]
            fn $f(self, o: Self) -> Self {
                let mut r = self.0;
                for l in 0..L {
                    r[l] = r[l] $op o.0[l];
                }
                V(r)
            }
        }
        impl<const L: usize> $tr<f64> for V<L> {
            type Output = Self;
            #[inline(always)]
            fn $f(self, o: f64) -> Self {
                let mut r = self.0;
                for l in 0..L {
                    r[l] = r[l] $op o;
                }
                V(r)
            }
        }
        impl<const L: usize> $tr<V<L>> for f64 {
            type Output = V<L>;
            #[inline(always)]
            fn $f(self, o: V<L>) -> V<L> {
                let mut r = o.0;
                for l in 0..L {
                    r[l] = self $op r[l];
                }
                V(r)
            }
        }
    };
}
binop!(Add, add, +);
binop!(Sub, sub, -);
binop!(Mul, mul, *);
binop!(Div, div, /);

impl<const L: usize> Neg for V<L> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        let mut r = self.0;
        for v in r.iter_mut() {
            *v = -*v;
        }
        V(r)
    }
}
impl<const L: usize> AddAssign for V<L> {
    #[inline(always)]
    fn add_assign(&mut self, o: Self) {
        *self = *self + o;
    }
}
impl<const L: usize> SubAssign for V<L> {
    #[inline(always)]
    fn sub_assign(&mut self, o: Self) {
        *self = *self - o;
    }
}

impl<const L: usize> V<L> {
    #[inline(always)]
    pub fn splat(v: f64) -> Self {
        V([v; L])
    }
    #[inline(always)]
    pub fn zero() -> Self {
        V([0.0; L])
    }
    #[inline(always)]
    fn map(self, f: impl Fn(f64) -> f64) -> Self {
        let mut r = self.0;
        for v in r.iter_mut() {
            *v = f(*v);
        }
        V(r)
    }
    #[inline(always)]
    pub fn sqrt(self) -> Self {
        self.map(f64::sqrt)
    }
    #[inline(always)]
    pub fn abs(self) -> Self {
        self.map(f64::abs)
    }
    #[inline(always)]
    pub fn lt(self, o: Self) -> M<L> {
        let mut m = [0u64; L];
        for l in 0..L {
            m[l] = if self.0[l] < o.0[l] { u64::MAX } else { 0 };
        }
        m
    }
    #[inline(always)]
    pub fn gt(self, o: Self) -> M<L> {
        o.lt(self)
    }
    #[inline(always)]
    pub fn ge(self, o: Self) -> M<L> {
        let mut m = [0u64; L];
        for l in 0..L {
            m[l] = if self.0[l] >= o.0[l] { u64::MAX } else { 0 };
        }
        m
    }
    /// `m ? a : b` per lane, by bit operations.
    #[inline(always)]
    pub fn select(m: M<L>, a: Self, b: Self) -> Self {
        let (ab, bb) = (a.to_bits(), b.to_bits());
        let mut r = [0u64; L];
        for l in 0..L {
            r[l] = (ab[l] & m[l]) | (bb[l] & !m[l]);
        }
        V::from_bits(r)
    }
    #[inline(always)]
    fn to_bits(self) -> [u64; L] {
        let mut r = [0u64; L];
        for l in 0..L {
            r[l] = self.0[l].to_bits();
        }
        r
    }
    #[inline(always)]
    fn from_bits(b: [u64; L]) -> Self {
        let mut r = [0.0; L];
        for l in 0..L {
            r[l] = f64::from_bits(b[l]);
        }
        V(r)
    }
}

/// 3-vectors of lanes.
pub(crate) type V3<const L: usize> = [V<L>; 3];

#[inline(always)]
pub(crate) fn sub3<const L: usize>(a: V3<L>, b: V3<L>) -> V3<L> {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
#[inline(always)]
pub(crate) fn add3<const L: usize>(a: V3<L>, b: V3<L>) -> V3<L> {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
#[inline(always)]
pub(crate) fn scale3<const L: usize>(a: V3<L>, c: V<L>) -> V3<L> {
    [a[0] * c, a[1] * c, a[2] * c]
}
#[inline(always)]
pub(crate) fn dot3<const L: usize>(a: V3<L>, b: V3<L>) -> V<L> {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
#[inline(always)]
pub(crate) fn cross3<const L: usize>(a: V3<L>, b: V3<L>) -> V3<L> {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

/// n! for n = 0..=20 (exact in float64 up to 18!, correctly rounded beyond).
const FACTORIALS: [f64; 21] = {
    let mut f = [1.0f64; 21];
    let mut i = 1;
    while i < 21 {
        f[i] = f[i - 1] * i as f64;
        i += 1;
    }
    f
};

const LN2_HI: f64 = 6.931_471_803_691_238_164_9e-1; // upper 32 bits of ln 2
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10; // ln 2 − LN2_HI
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5·2^52: adding it rounds to an integer
const TWO52: f64 = 4_503_599_627_370_496.0;

/// e^x per lane, for x clamped to [−700, 700] (the GB exponent is ≤ 0; e^−700 ≈ 1e-304 stands
/// in for anything smaller, a relative change below 1e-290 of the terms it enters).
///
/// x = k ln 2 + r with |r| ≤ ln2/2 (Cody–Waite two-part ln 2), e^r by its Taylor series to
/// r¹³/13! (truncation 0.347¹⁴/14! < 5e-18), 2^k assembled in the exponent bits.
#[inline(always)]
pub(crate) fn exp<const L: usize>(x: V<L>) -> V<L> {
    let mut xc = x;
    for v in xc.0.iter_mut() {
        *v = v.clamp(-700.0, 700.0);
    }
    let t = xc * std::f64::consts::LOG2_E + ROUND_MAGIC;
    let k = t - ROUND_MAGIC;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    // Horner for Σ_{n≤13} rⁿ/n!.
    let mut p = V::splat(1.0 / 6_227_020_800.0);
    for inv_fact in [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + inv_fact;
    }
    let tb = t.to_bits();
    let mut sb = [0u64; L];
    for l in 0..L {
        // Low mantissa bits of t hold k + 2^51; rebuild the biased exponent k + 1023.
        sb[l] = tb[l].wrapping_sub(ROUND_MAGIC.to_bits()).wrapping_add(1023) << 52;
    }
    p * V::from_bits(sb)
}

/// ln x per lane for finite x > 0 (normal numbers).
///
/// x = 2^e·m with m ∈ [√½, √2), f = m − 1, s = f/(2 + f), ln(1 + f) = 2 atanh s =
/// 2s Σ s²ᵏ/(2k + 1) to k = 11 (|s| ≤ 0.1716: truncation 0.0295¹²/25 < 1e-19).
#[inline(always)]
pub(crate) fn ln<const L: usize>(x: V<L>) -> V<L> {
    let b = x.to_bits();
    let mut mb = [0u64; L];
    let mut eb = [0u64; L];
    for l in 0..L {
        mb[l] = (b[l] & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000;
        eb[l] = ((b[l] >> 52) & 0x7ff) | 0x4330_0000_0000_0000;
    }
    let m = V::from_bits(mb); // [1, 2)
    let e = V::from_bits(eb) - (TWO52 + 1023.0);
    let big = m.gt(V::splat(std::f64::consts::SQRT_2));
    let m = V::select(big, m * 0.5, m);
    let e = V::select(big, e + 1.0, e);
    let f = m - 1.0;
    let s = f / (f + 2.0);
    let z = s * s;
    let mut p = V::splat(1.0 / 23.0);
    for c in [
        1.0 / 21.0,
        1.0 / 19.0,
        1.0 / 17.0,
        1.0 / 15.0,
        1.0 / 13.0,
        1.0 / 11.0,
        1.0 / 9.0,
        1.0 / 7.0,
        1.0 / 5.0,
        1.0 / 3.0,
        1.0,
    ] {
        p = p * z + c;
    }
    e * LN2_HI + (s * p * 2.0 + e * LN2_LO)
}

/// tanh per lane: sign(t)·(1 − e)/(1 + e) with e = exp(−2|t|). The absolute error is a few
/// ulp of 1 (all the Born-radius formula needs: tanh enters as 1/or − tanh/radius).
#[inline(always)]
pub(crate) fn tanh<const L: usize>(t: V<L>) -> V<L> {
    let e = exp(t.abs() * -2.0);
    let a = (1.0 - e) / (1.0 + e);
    V::select(t.lt(V::zero()), -a, a)
}

/// atan2(y, x) for y ≥ 0 (so the result is in [0, π]): the angle between two vectors from
/// |u × v| and u·v. atan2(0, 0) = 0.
///
/// a = min(y,|x|)/max(y,|x|) ∈ [0, 1]; above tan(π/8), atan a = π/4 + atan((a − 1)/(a + 1));
/// on |t| ≤ tan(π/8) atan t = Σ (−1)ᵏ t²ᵏ⁺¹/(2k + 1) to k = 21 (truncation 0.1716²²/45 < 2e-19).
#[inline(always)]
pub(crate) fn atan2_pos<const L: usize>(y: V<L>, x: V<L>) -> V<L> {
    use std::f64::consts::{FRAC_PI_2, FRAC_PI_4, PI};
    let ax = x.abs();
    let swap = y.gt(ax);
    let num = V::select(swap, ax, y);
    let den = V::select(swap, y, ax);
    let den_ok = den.gt(V::zero());
    let a = num / V::select(den_ok, den, V::splat(1.0));
    let big = a.gt(V::splat(0.414_213_562_373_095_1));
    let t = V::select(big, (a - 1.0) / (a + 1.0), a);
    let z = t * t;
    let mut p = V::splat(-1.0 / 43.0);
    for k in (0..21).rev() {
        let c = if k % 2 == 0 { 1.0 / (2 * k + 1) as f64 } else { -1.0 / (2 * k + 1) as f64 };
        p = p * z + c;
    }
    let at = V::select(big, t * p + FRAC_PI_4, t * p);
    let at = V::select(swap, FRAC_PI_2 - at, at);
    V::select(x.lt(V::zero()), PI - at, at)
}

/// (sin x, cos x) per lane for |x| ≲ 1e5 (flow coordinates; beyond that the reduction loses
/// digits gracefully but stays finite).
///
/// x = k π/2 + r with |r| ≤ π/4 (three-part π/2), sin r and cos r by Taylor series to r¹⁹/19!
/// and r²⁰/20! (truncation (π/4)²¹/21! < 3e-22), then the quadrant k mod 4 picks the signs.
#[inline(always)]
pub(crate) fn sin_cos<const L: usize>(x: V<L>) -> (V<L>, V<L>) {
    const PIO2_1: f64 = 1.570_796_326_734_125_614_17; // first 33 bits of π/2
    const PIO2_2: f64 = 6.077_100_506_303_965_976_6e-11; // next 33 bits
    const PIO2_3: f64 = 2.022_266_248_795_950_732_4e-21; // remainder
    let t = x * std::f64::consts::FRAC_2_PI + ROUND_MAGIC;
    let k = t - ROUND_MAGIC;
    let r = ((x - k * PIO2_1) - k * PIO2_2) - k * PIO2_3;
    let z = r * r;
    // sin r = r Σ (−1)ⁿ z^n/(2n+1)!, cos r = Σ (−1)ⁿ zⁿ/(2n)!, n ≤ 9 and 10.
    let fact = &FACTORIALS;
    let mut ps = V::splat(-1.0 / fact[19]);
    for n in (0..9).rev() {
        let c = if n % 2 == 0 { 1.0 / fact[2 * n + 1] } else { -1.0 / fact[2 * n + 1] };
        ps = ps * z + c;
    }
    let mut pc = V::splat(1.0 / fact[20]);
    for n in (0..10).rev() {
        let c = if n % 2 == 0 { 1.0 / fact[2 * n] } else { -1.0 / fact[2 * n] };
        pc = pc * z + c;
    }
    let s = r * ps;
    let c = pc;
    let tb = t.to_bits();
    let mut q1 = [0u64; L];
    let mut q2 = [0u64; L];
    for l in 0..L {
        let q = tb[l].wrapping_sub(ROUND_MAGIC.to_bits());
        q1[l] = (q & 1).wrapping_neg(); // odd quadrant: swap sin and cos
        q2[l] = ((q >> 1) & 1).wrapping_neg(); // quadrants 2, 3: negate
    }
    let sin_r = V::select(q1, c, s);
    let cos_r = V::select(q1, -s, c);
    (V::select(q2, -sin_r, sin_r), V::select(q2, -cos_r, cos_r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f64, b: f64) -> f64 {
        (a - b).abs() / (b.abs() * f64::EPSILON).max(f64::MIN_POSITIVE)
    }

    #[test]
    fn elementary_functions_match_std_to_a_few_ulp() {
        // Deterministic sweep; std's libm is correctly rounded or within 1 ulp, so agreement
        // within 4 ulp (relative, or absolute ulps of 1 for tanh/sin/cos near zero crossings)
        // means ours are within ~5 ulp of the true values.
        let mut worst = [0.0f64; 5];
        for i in 0..20_000 {
            let u = (i as f64 + 0.5) / 20_000.0;
            let xe = -700.0 * u + 50.0 * (1.0 - u); // exp arguments in [-700, 50]
            let e = exp(V([xe])).0[0];
            worst[0] = worst[0].max(ulps(e, xe.exp()));
            let xl = (1e-8f64).powf(1.0 - u) * 1e3f64.powf(u); // ln on [1e-8, 1e3]
            let l = ln(V([xl])).0[0];
            worst[1] = worst[1].max((l - xl.ln()).abs() / (xl.ln().abs().max(1.0) * f64::EPSILON));
            let xt = -6.0 + 12.0 * u;
            worst[2] = worst[2].max((tanh(V([xt])).0[0] - xt.tanh()).abs() / f64::EPSILON);
            let (y, x) = ((3.0 * u).sin().abs() * 2.0, (7.0 * u).cos() * 1.5);
            worst[3] = worst[3].max((atan2_pos(V([y]), V([x])).0[0] - y.atan2(x)).abs() / f64::EPSILON);
            let xs = -40.0 + 80.0 * u;
            let (s, c) = sin_cos(V([xs]));
            let err = (s.0[0] - xs.sin()).abs().max((c.0[0] - xs.cos()).abs());
            worst[4] = worst[4].max(err / f64::EPSILON);
        }
        assert!(worst.iter().all(|w| *w <= 4.0), "worst errors in ulp [exp, ln, tanh, atan2, sincos]: {worst:?}");
        assert_eq!(atan2_pos(V([0.0]), V([0.0])).0[0], 0.0);
        assert_eq!(atan2_pos(V([0.0]), V([-1.0])).0[0], std::f64::consts::PI);
        assert!(exp(V([-1e9])).0[0] < 1e-300);
    }

    #[test]
    fn lanes_are_independent() {
        let x = V([0.5, -3.0, 1e-7, 200.0]);
        let e = exp(x);
        for l in 0..4 {
            assert_eq!(e.0[l], exp(V([x.0[l]])).0[0]);
        }
    }
}
