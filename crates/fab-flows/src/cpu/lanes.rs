//! Lane arithmetic for the vectorised spline kernels, and branch-free `exp`, `ln`, `log1p`.
//!
//! A [`Lane`] value holds one float64 per element being processed. Two implementations:
//! * [`X4`] (x86-64): four lanes in an AVX2 register with fused multiply-add, operated through
//!   `pulp`'s safe wrappers of the intrinsics; a value can only be made from a
//!   `pulp::x86::V3` token, i.e. after AVX2 + FMA were detected at run time;
//! * [`F1`]: one lane in a plain `f64` (the portable fallback), with a·b + c for
//!   [`Lane::mul_add`] when `FMA` is false and `f64::mul_add` when it is true (a single
//!   instruction in an AVX2 + FMA context, which makes `F1<true>` agree with an [`X4`] lane bit
//!   for bit; the tests use it that way).
//!
//! Every operation acts on each lane independently and is correctly rounded per lane (IEEE
//! add, mul, div, sqrt, fma), so a lane's result does not depend on which lane, group or thread
//! computed it. Data-dependent branches are selects.
//!
//! The elementary functions use classical argument reduction and truncated Taylor series whose
//! truncation error is below 1e-17 relative on the reduced range; the tests compare them with
//! the standard library over wide ranges (a couple of ulp at most).

use std::ops::{Add, Div, Mul, Neg, Sub};

/// 1.5·2⁵²: adding it to |v| < 2⁵¹ rounds v to an integer held in the low mantissa bits.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;
/// ln 2 split into a high part with 21 trailing zero bits (so that k·LN2_HI is exact for
/// |k| < 2²¹) and the remainder ln 2 − LN2_HI.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // 0.693147180369123816…
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // 1.9082149292705877e−10
/// Below this, exp underflows to (at most) a subnormal: [`exp`] returns 0.
const EXP_LO: f64 = -708.39;
/// Above this, 2^round(x/ln 2) leaves the normal range: [`exp`] returns +∞.
#[cfg_attr(not(test), allow(dead_code))] // the kernels use the restricted variants
const EXP_HI: f64 = 709.43;
const MANTISSA_MASK: u64 = (1 << 52) - 1;
/// Bits of √½ (rounded down), and 1.0's bits minus them: adding the latter to the bits of
/// x = m·2^e moves the exponent up by one exactly when m ≥ √2.
const SQRT_HALF_BITS: u64 = 0x3fe6_a09e_667f_3bcd;
const SQRT2_SHIFT: u64 = 0x3ff0_0000_0000_0000 - SQRT_HALF_BITS;
/// 2⁵² as bits: or-ing a biased exponent (< 2¹¹) into it gives 2⁵² + exponent exactly.
const TWO52_BITS: u64 = 0x4330_0000_0000_0000;
const TWO52: f64 = 4_503_599_627_370_496.0;

/// Most lanes of any [`Lane`] type.
pub(crate) const MAX_LANES: usize = 4;

/// `N` float64 lanes with the operations the kernels need.
pub(crate) trait Lane:
    Copy
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + Add<f64, Output = Self>
    + Sub<f64, Output = Self>
    + Mul<f64, Output = Self>
{
    /// What creating values needs (the CPU-feature token for [`X4`]).
    type Ctx: Copy + Send + Sync;
    /// A per-lane boolean.
    type Mask: Copy;
    /// Number of lanes (at most [`MAX_LANES`]).
    const N: usize;
    /// Every lane `v`.
    fn splat(ctx: Self::Ctx, v: f64) -> Self;
    /// Lane `l` is `f(l)`.
    fn from_fn(ctx: Self::Ctx, f: impl FnMut(usize) -> f64) -> Self;
    /// Lane `l` is `a[l]` (`a` has at least `N` entries).
    fn load(ctx: Self::Ctx, a: &[f64]) -> Self;
    /// The context this value was made with.
    fn ctx(self) -> Self::Ctx;
    /// The lanes (entries beyond `N` are 0).
    fn to_array(self) -> [f64; MAX_LANES];
    /// Appends the lanes to `out`.
    #[inline(always)]
    fn push_to(self, out: &mut Vec<f64>) {
        out.extend_from_slice(&self.to_array()[..Self::N]);
    }
    /// self·b + c (fused where the implementation says so).
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// c − self·b (fused where the implementation says so).
    fn neg_mul_add(self, b: Self, c: Self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// |self|.
    fn abs(self) -> Self;
    /// Lane-wise maximum (for non-NaN lanes).
    fn max(self, o: Self) -> Self;
    /// self < o (false for NaN).
    fn lt(self, o: Self) -> Self::Mask;
    /// self ≤ o (false for NaN).
    fn le(self, o: Self) -> Self::Mask;
    /// self ≥ o (false for NaN).
    fn ge(self, o: Self) -> Self::Mask;
    /// self > o (false for NaN).
    #[cfg_attr(not(test), allow(dead_code))]
    fn gt(self, o: Self) -> Self::Mask {
        o.lt(self)
    }
    /// self == o.
    fn eq(self, o: Self) -> Self::Mask;
    /// a ∧ b.
    fn and(a: Self::Mask, b: Self::Mask) -> Self::Mask;
    /// `m ? a : b` per lane.
    fn select(m: Self::Mask, a: Self, b: Self) -> Self;
    /// For t = k + [`ROUND_MAGIC`] (k an integer, −1022 ≤ k ≤ 1023): 2^k.
    fn pow2_of_rounded(t: Self) -> Self;
    /// x = m·2^e with m ∈ [√½, √2) for finite normal x > 0: (m, e).
    fn split_exponent(x: Self) -> (Self, Self);
    /// A constant in this value's context.
    #[inline(always)]
    fn c(self, v: f64) -> Self {
        Self::splat(self.ctx(), v)
    }
}

// ---------------------------------------------------------------------------------------------
// One lane in an f64.

/// One lane; `FMA` selects a fused multiply-add in [`Lane::mul_add`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct F1<const FMA: bool>(pub f64);

macro_rules! f1_binop {
    ($tr:ident, $f:ident, $op:tt) => {
        impl<const FMA: bool> $tr for F1<FMA> {
            type Output = Self;
            #[inline(always)]
            fn $f(self, o: Self) -> Self {
                F1(self.0 $op o.0)
            }
        }
        impl<const FMA: bool> $tr<f64> for F1<FMA> {
            type Output = Self;
            #[inline(always)]
            fn $f(self, o: f64) -> Self {
                F1(self.0 $op o)
            }
        }
    };
}
f1_binop!(Add, add, +);
f1_binop!(Sub, sub, -);
f1_binop!(Mul, mul, *);
f1_binop!(Div, div, /);

impl<const FMA: bool> Neg for F1<FMA> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        F1(-self.0)
    }
}

impl<const FMA: bool> Lane for F1<FMA> {
    type Ctx = ();
    type Mask = bool;
    const N: usize = 1;
    #[inline(always)]
    fn splat(_: (), v: f64) -> Self {
        F1(v)
    }
    #[inline(always)]
    fn from_fn(_: (), mut f: impl FnMut(usize) -> f64) -> Self {
        F1(f(0))
    }
    #[inline(always)]
    fn load(_: (), a: &[f64]) -> Self {
        F1(a[0])
    }
    #[inline(always)]
    fn ctx(self) {}
    #[inline(always)]
    fn to_array(self) -> [f64; MAX_LANES] {
        let mut a = [0.0; MAX_LANES];
        a[0] = self.0;
        a
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        if FMA {
            F1(self.0.mul_add(b.0, c.0))
        } else {
            F1(self.0 * b.0 + c.0)
        }
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        if FMA {
            F1((-self.0).mul_add(b.0, c.0))
        } else {
            F1(c.0 - self.0 * b.0)
        }
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        F1(self.0.sqrt())
    }
    #[inline(always)]
    fn abs(self) -> Self {
        F1(self.0.abs())
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        F1(if self.0 > o.0 { self.0 } else { o.0 })
    }
    #[inline(always)]
    fn lt(self, o: Self) -> bool {
        self.0 < o.0
    }
    #[inline(always)]
    fn le(self, o: Self) -> bool {
        self.0 <= o.0
    }
    #[inline(always)]
    fn ge(self, o: Self) -> bool {
        self.0 >= o.0
    }
    #[inline(always)]
    fn eq(self, o: Self) -> bool {
        self.0 == o.0
    }
    #[inline(always)]
    fn and(a: bool, b: bool) -> bool {
        a & b
    }
    #[inline(always)]
    fn select(m: bool, a: Self, b: Self) -> Self {
        if m {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn pow2_of_rounded(t: Self) -> Self {
        // bits(t) = bits(ROUND_MAGIC) + k, and bits(ROUND_MAGIC) << 52 wraps to 0.
        F1(f64::from_bits(t.0.to_bits().wrapping_add(1023) << 52))
    }
    #[inline(always)]
    fn split_exponent(x: Self) -> (Self, Self) {
        let b = x.0.to_bits().wrapping_add(SQRT2_SHIFT);
        let m = f64::from_bits((b & MANTISSA_MASK) + SQRT_HALF_BITS);
        let e = f64::from_bits((b >> 52) | TWO52_BITS) - (TWO52 + 1023.0);
        (F1(m), F1(e))
    }
}

// ---------------------------------------------------------------------------------------------
// Four lanes in an AVX2 register.

#[cfg(target_arch = "x86_64")]
pub(crate) use x4::X4;

#[cfg(target_arch = "x86_64")]
mod x4 {
    use super::*;
    use core::arch::x86_64::{__m256d, __m256i, _CMP_EQ_OQ, _CMP_GE_OQ, _CMP_LE_OQ, _CMP_LT_OQ};
    use pulp::x86::V3;

    /// Four lanes in an AVX2 register (with FMA), operated through the `V3` token.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct X4 {
        s: V3,
        v: __m256d,
    }

    macro_rules! x4_binop {
        ($tr:ident, $f:ident, $intr:ident) => {
            impl $tr for X4 {
                type Output = Self;
                #[inline(always)]
                fn $f(self, o: Self) -> Self {
                    X4 { s: self.s, v: self.s.avx.$intr(self.v, o.v) }
                }
            }
            impl $tr<f64> for X4 {
                type Output = Self;
                #[inline(always)]
                fn $f(self, o: f64) -> Self {
                    X4 { s: self.s, v: self.s.avx.$intr(self.v, self.s.avx._mm256_set1_pd(o)) }
                }
            }
        };
    }
    x4_binop!(Add, add, _mm256_add_pd);
    x4_binop!(Sub, sub, _mm256_sub_pd);
    x4_binop!(Mul, mul, _mm256_mul_pd);
    x4_binop!(Div, div, _mm256_div_pd);

    impl Neg for X4 {
        type Output = Self;
        #[inline(always)]
        fn neg(self) -> Self {
            let a = self.s.avx;
            X4 { s: self.s, v: a._mm256_xor_pd(self.v, a._mm256_set1_pd(-0.0)) }
        }
    }

    impl X4 {
        #[inline(always)]
        fn w(self, v: __m256d) -> Self {
            X4 { s: self.s, v }
        }
        #[inline(always)]
        fn bits(self) -> __m256i {
            self.s.avx._mm256_castpd_si256(self.v)
        }
        #[inline(always)]
        fn from_bits(s: V3, b: __m256i) -> Self {
            X4 { s, v: s.avx._mm256_castsi256_pd(b) }
        }
        #[inline(always)]
        fn const_bits(s: V3, b: u64) -> __m256i {
            s.avx._mm256_set1_epi64x(b as i64)
        }
    }

    impl Lane for X4 {
        type Ctx = V3;
        type Mask = __m256d;
        const N: usize = 4;
        #[inline(always)]
        fn splat(s: V3, v: f64) -> Self {
            X4 { s, v: s.avx._mm256_set1_pd(v) }
        }
        #[inline(always)]
        fn from_fn(s: V3, mut f: impl FnMut(usize) -> f64) -> Self {
            let (a, b, c, d) = (f(0), f(1), f(2), f(3));
            X4 { s, v: s.avx._mm256_setr_pd(a, b, c, d) }
        }
        #[inline(always)]
        fn load(s: V3, a: &[f64]) -> Self {
            let a: [f64; 4] = a[..4].try_into().expect("four lanes");
            X4 { s, v: pulp::cast(a) }
        }
        #[inline(always)]
        fn ctx(self) -> V3 {
            self.s
        }
        #[inline(always)]
        fn to_array(self) -> [f64; MAX_LANES] {
            let a: [f64; 4] = pulp::cast(self.v);
            let mut o = [0.0; MAX_LANES];
            o[..4].copy_from_slice(&a);
            o
        }
        #[inline(always)]
        fn push_to(self, out: &mut Vec<f64>) {
            let a: [f64; 4] = pulp::cast(self.v);
            out.extend_from_slice(&a);
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            self.w(self.s.fma._mm256_fmadd_pd(self.v, b.v, c.v))
        }
        #[inline(always)]
        fn neg_mul_add(self, b: Self, c: Self) -> Self {
            self.w(self.s.fma._mm256_fnmadd_pd(self.v, b.v, c.v))
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            self.w(self.s.avx._mm256_sqrt_pd(self.v))
        }
        #[inline(always)]
        fn abs(self) -> Self {
            let a = self.s.avx;
            self.w(a._mm256_andnot_pd(a._mm256_set1_pd(-0.0), self.v))
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // maxpd returns its second operand unless the first is greater: as F1::max.
            self.w(self.s.avx._mm256_max_pd(self.v, o.v))
        }
        #[inline(always)]
        fn lt(self, o: Self) -> __m256d {
            self.s.avx._mm256_cmp_pd::<_CMP_LT_OQ>(self.v, o.v)
        }
        #[inline(always)]
        fn le(self, o: Self) -> __m256d {
            self.s.avx._mm256_cmp_pd::<_CMP_LE_OQ>(self.v, o.v)
        }
        #[inline(always)]
        fn ge(self, o: Self) -> __m256d {
            self.s.avx._mm256_cmp_pd::<_CMP_GE_OQ>(self.v, o.v)
        }
        #[inline(always)]
        fn eq(self, o: Self) -> __m256d {
            self.s.avx._mm256_cmp_pd::<_CMP_EQ_OQ>(self.v, o.v)
        }
        #[inline(always)]
        fn and(a: __m256d, b: __m256d) -> __m256d {
            let x: [u64; 4] = pulp::cast(a);
            let y: [u64; 4] = pulp::cast(b);
            pulp::cast([x[0] & y[0], x[1] & y[1], x[2] & y[2], x[3] & y[3]])
        }
        #[inline(always)]
        fn select(m: __m256d, a: Self, b: Self) -> Self {
            a.w(a.s.avx._mm256_blendv_pd(b.v, a.v, m))
        }
        #[inline(always)]
        fn pow2_of_rounded(t: Self) -> Self {
            // bits(t) = bits(ROUND_MAGIC) + k, and bits(ROUND_MAGIC) << 52 wraps to 0.
            let s = t.s;
            let e = s.avx2._mm256_add_epi64(t.bits(), X4::const_bits(s, 1023));
            X4::from_bits(s, s.avx2._mm256_slli_epi64::<52>(e))
        }
        #[inline(always)]
        fn split_exponent(x: Self) -> (Self, Self) {
            let s = x.s;
            let b = s.avx2._mm256_add_epi64(x.bits(), X4::const_bits(s, SQRT2_SHIFT));
            let m = s.avx2._mm256_add_epi64(s.avx2._mm256_and_si256(b, X4::const_bits(s, MANTISSA_MASK)), X4::const_bits(s, SQRT_HALF_BITS));
            let e = s.avx2._mm256_or_si256(s.avx2._mm256_srli_epi64::<52>(b), X4::const_bits(s, TWO52_BITS));
            (X4::from_bits(s, m), X4::from_bits(s, e) - (TWO52 + 1023.0))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Elementary functions.

/// eˣ for x ≤ 709.43 (no overflow check): the shared part of [`exp`] and [`exp_nonpos`].
#[inline(always)]
fn exp_core<L: Lane>(x: L) -> L {
    // x = k ln 2 + r with k = round(x / ln 2), |r| ≤ ln 2 / 2 (+ rounding).
    let t = x.mul_add(x.c(std::f64::consts::LOG2_E), x.c(ROUND_MAGIC));
    let k = t - ROUND_MAGIC;
    // k·LN2_HI is exact and x − k·LN2_HI is exact by Sterbenz's lemma (fused or not).
    let r = k.neg_mul_add(x.c(LN2_HI), x);
    let r = k.neg_mul_add(x.c(LN2_LO), r);
    // e^r = 1 + r·q, q = Σ_{n≥0} rⁿ/(n+1)!, truncated after r¹²/13! (next term < 4.3e−18).
    let mut q = x.c(1.0 / 6_227_020_800.0); // 1/13!
    for d in [479_001_600.0, 39_916_800.0, 3_628_800.0, 362_880.0, 40_320.0, 5_040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0] {
        q = q.mul_add(r, x.c(1.0 / d));
    }
    let y = r.mul_add(q, x.c(1.0)) * L::pow2_of_rounded(t);
    L::select(x.lt(x.c(EXP_LO)), x.c(0.0), y)
}

/// eˣ, accurate to about 1 ulp for x ∈ [−708.39, 709.43]; 0 below that range (where the true
/// value is at most a subnormal 2.3e−308), +∞ above it, NaN for NaN.
#[inline(always)]
#[cfg_attr(not(test), allow(dead_code))] // the kernels use the restricted variants
pub(crate) fn exp<L: Lane>(x: L) -> L {
    L::select(x.gt(x.c(EXP_HI)), x.c(f64::INFINITY), exp_core(x))
}

/// [`exp`] for x ≤ 0 (or NaN).
#[inline(always)]
pub(crate) fn exp_nonpos<L: Lane>(x: L) -> L {
    exp_core(x)
}

/// ln(m·2^e) for m ∈ [√½, √2): e ln 2 + ln m.
#[inline(always)]
fn ln_reduced<L: Lane>(m: L, e: L) -> L {
    // ln m = 2 atanh(s) = 2s + s·R with f = m − 1 (exact), s = f / (2 + f), |s| ≤ 0.1716,
    // R = Σ_{k≥1} 2 s^{2k} / (2k + 1), truncated after k = 10 (next term < 1e−18 relative).
    let f = m - 1.0;
    let s = f / (f + 2.0);
    let z = s * s;
    let mut r = m.c(2.0 / 21.0);
    for d in [19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0] {
        r = r.mul_add(z, m.c(2.0 / d));
    }
    let r = r * z;
    // 2s = f − f²/2 + s·f²/2, so ln m = f − (hfsq − s(hfsq + R)).
    let hfsq = f * f * 0.5;
    e.mul_add(m.c(LN2_HI), -((hfsq - s.mul_add(hfsq + r, e * LN2_LO)) - f))
}

/// ln x, accurate to about 1 ulp for every finite x > 0 (subnormals included); −∞ at 0, +∞ at
/// +∞, NaN for negative or NaN inputs.
#[inline(always)]
#[cfg_attr(not(test), allow(dead_code))] // the kernels use the restricted variants
pub(crate) fn ln<L: Lane>(x: L) -> L {
    let sub = x.lt(x.c(f64::MIN_POSITIVE));
    let xs = L::select(sub, x * 18_014_398_509_481_984.0, x); // 2⁵⁴
    let (m, e) = L::split_exponent(xs);
    let y = ln_reduced(m, L::select(sub, e - 54.0, e));
    // Special values.
    let y = L::select(x.eq(x.c(0.0)), x.c(f64::NEG_INFINITY), y);
    let y = L::select(x.eq(x.c(f64::INFINITY)), x, y);
    L::select(x.ge(x.c(0.0)), y, x.c(f64::NAN))
}

/// [`ln`] for positive normal finite x (accurate to about 1 ulp there), NaN for NaN or negative
/// x; meaningless for 0, subnormals and +∞.
#[inline(always)]
pub(crate) fn ln_normal<L: Lane>(x: L) -> L {
    let (m, e) = L::split_exponent(x);
    L::select(x.ge(x.c(0.0)), ln_reduced(m, e), x.c(f64::NAN))
}

/// ln(1 + x) for x ∈ [0, 1] (the range softplus needs), accurate to about 1 ulp.
#[inline(always)]
pub(crate) fn log1p_unit<L: Lane>(x: L) -> L {
    let u = x + 1.0;
    // u = 1 + x − c exactly (Fast2Sum, 1 ≥ x); ln(1 + x) = ln u + c/u + O(c²), and c/u may be
    // taken as c·(2 − u): where u is far from 1, c/u is below 1e−16 of the result.
    let c = x - (u - 1.0);
    c.mul_add(u.c(2.0) - u, ln_normal(u))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite doubles of the same sign.
    fn ulps(a: f64, b: f64) -> f64 {
        if a == b {
            return 0.0;
        }
        let ulp = f64::EPSILON * b.abs().max(f64::MIN_POSITIVE);
        ((a - b) / ulp).abs()
    }

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Checks `f` (a one-lane function) against `reference` on `xs`; returns the worst ulp error.
    fn worst(xs: &[f64], f: impl Fn(f64) -> f64, reference: impl Fn(f64) -> f64) -> f64 {
        let mut w: f64 = 0.0;
        for &x in xs {
            let (a, b) = (f(x), reference(x));
            if b.is_nan() {
                assert!(a.is_nan(), "x = {x:e}: {a} vs NaN");
            } else if b.is_infinite() || b == 0.0 {
                assert_eq!(a, b, "x = {x:e}");
            } else {
                let u = ulps(a, b);
                assert!(u <= 2.0, "x = {x:e}: {a:e} vs {b:e} ({u} ulp)");
                w = w.max(u);
            }
        }
        w
    }

    fn exp_inputs() -> Vec<f64> {
        let mut s = 1;
        let mut xs: Vec<f64> = (0..200_000).map(|_| -708.0 + 1417.0 * lcg(&mut s)).collect();
        xs.extend((0..100_000).map(|_| -2.0 + 4.0 * lcg(&mut s)));
        xs.extend((0..50_000).map(|_| 1e-12 * (2.0 * lcg(&mut s) - 1.0)));
        for k in -1022..=1023 {
            let x = k as f64 * std::f64::consts::LN_2;
            xs.extend([x, x * (1.0 + 1e-15), x - 0.3465, x + 0.3465]);
        }
        xs.extend([0.0, -0.0, 1.0, -1.0, -708.3, 709.4, -750.0, -1e300, 800.0, f64::NAN, f64::NEG_INFINITY, f64::INFINITY]);
        xs
    }

    fn ln_inputs() -> Vec<f64> {
        let mut s = 2;
        let mut xs: Vec<f64> = (0..200_000).map(|_| (-745.0 + 1454.0 * lcg(&mut s)).exp()).collect();
        xs.extend((0..100_000).map(|_| 0.5 + 1.5 * lcg(&mut s)));
        xs.extend((0..50_000).map(|_| 1.0 + 1e-10 * (2.0 * lcg(&mut s) - 1.0)));
        xs.extend([1.0, std::f64::consts::SQRT_2, std::f64::consts::FRAC_1_SQRT_2, 2.0, 0.5, f64::MIN_POSITIVE, 5e-324, 1e-310, f64::MAX]);
        xs.extend([0.0, -0.0, -1.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN]);
        xs
    }

    #[test]
    fn exp_matches_std() {
        let xs = exp_inputs();
        let w = worst(
            &xs,
            |x| exp(F1::<false>(x)).0,
            |x| {
                let e = x.exp();
                if x < EXP_LO {
                    0.0
                } else if x > EXP_HI {
                    f64::INFINITY
                } else {
                    e
                }
            },
        );
        assert!(w <= 2.0, "{w}");
        let nonpos: Vec<f64> = xs.iter().copied().filter(|x| !(*x > 0.0)).collect();
        for &x in &nonpos {
            let (a, b) = (exp_nonpos(F1::<false>(x)).0, exp(F1::<false>(x)).0);
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{x}");
        }
        // exp(0) = 1 exactly, and the flush-to-zero region is where std gives ≤ 2.3e−308.
        assert_eq!(exp(F1::<false>(0.0)).0, 1.0);
        assert!((EXP_LO - 1e-9).exp() < 2.3e-308);
    }

    #[test]
    fn ln_and_log1p_match_std() {
        let xs = ln_inputs();
        let w = worst(&xs, |x| ln(F1::<false>(x)).0, f64::ln);
        assert!(w <= 2.0, "{w}");
        let normal: Vec<f64> = xs.iter().copied().filter(|x| x.is_nan() || *x < 0.0 || (x.is_normal() && x.is_finite())).collect();
        let w = worst(&normal, |x| ln_normal(F1::<false>(x)).0, f64::ln);
        assert!(w <= 2.0, "{w}");
        assert_eq!(ln(F1::<false>(1.0)).0, 0.0);
        let mut s = 3;
        let mut us: Vec<f64> = (0..200_000).map(|_| lcg(&mut s)).collect();
        us.extend((0..100_000).map(|_| (-700.0 * lcg(&mut s)).exp()));
        us.extend([0.0, 1.0, 1e-300, 5e-324, f64::EPSILON, 0.5]);
        let w = worst(&us, |x| log1p_unit(F1::<false>(x)).0, f64::ln_1p);
        assert!(w <= 2.0, "{w}");
    }

    /// The fused one-lane path and the AVX2 path agree bit for bit (when the CPU has AVX2).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_lanes_match_the_one_lane_path() {
        let Some(simd) = pulp::x86::V3::try_new() else { return };
        struct Op<'a>(pulp::x86::V3, &'a [f64], &'a [f64], &'a mut Vec<[f64; 6]>);
        impl pulp::NullaryFnOnce for Op<'_> {
            type Output = ();
            #[inline(always)]
            fn call(self) {
                let Op(s, xe, xl, out) = self;
                for (ce, cl) in xe.chunks_exact(4).zip(xl.chunks_exact(4)) {
                    let e = exp(X4::from_fn(s, |l| ce[l])).to_array();
                    let g = ln(X4::from_fn(s, |l| cl[l])).to_array();
                    let p = log1p_unit(X4::from_fn(s, |l| cl[l].abs().min(1.0))).to_array();
                    for l in 0..4 {
                        let one = (exp(F1::<true>(ce[l])).0, ln(F1::<true>(cl[l])).0, log1p_unit(F1::<true>(cl[l].abs().min(1.0))).0);
                        out.push([e[l], one.0, g[l], one.1, p[l], one.2]);
                    }
                }
            }
        }
        let mut xe = exp_inputs();
        let mut xl = ln_inputs();
        let n = xe.len().min(xl.len()) / 4 * 4;
        xe.truncate(n);
        xl.truncate(n);
        let mut out = Vec::new();
        simd.vectorize(Op(simd, &xe, &xl, &mut out));
        for (i, r) in out.iter().enumerate() {
            for p in 0..3 {
                let (a, b) = (r[2 * p], r[2 * p + 1]);
                assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "input {i} fn {p}: {a:e} vs {b:e}");
            }
        }
        // And the unfused portable path is within an ulp or two of both.
        for (i, r) in out.iter().enumerate().step_by(7) {
            let a = exp(F1::<false>(xe[i])).0;
            assert!(a == r[0] || ulps(a, r[0]) <= 2.0 || (a.is_nan() && r[0].is_nan()));
        }
    }
}
