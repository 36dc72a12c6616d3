//! Lane arithmetic for evaluating several configurations at once, and the branch-free
//! elementary functions (exp, ln, tanh, atan2, sin/cos) of the fast kernels.
//!
//! A [`Lane`] value holds one float64 per configuration. Two implementations:
//! * [`X4`]: four lanes in an AVX2 register, with fused multiply-add, through `pulp`'s safe
//!   wrappers of the x86 intrinsics (constructible only with a `pulp::x86::V3` token, i.e.
//!   after AVX2 + FMA were detected at run time);
//! * [`F1`]: one lane in a plain `f64`; `F1<true>` uses `f64::mul_add` (a single instruction
//!   inside the AVX2 + FMA context, so its results equal an [`X4`] lane bit for bit) and
//!   `F1<false>` uses a·b + c (the portable fallback).
//!
//! Data-dependent branches are selects, so all lanes follow the same control flow. The
//! elementary functions use classical argument reduction plus truncated Taylor series whose
//! truncation error is below 1e-17 relative on the reduced range (stated at each function);
//! their accuracy (a few ulp) is tested against the standard library.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};

/// `N` float64 lanes with the operations the kernels need.
pub(crate) trait Lane:
    Copy
    + Debug
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
    + AddAssign
    + SubAssign
{
    /// What is needed to create values (the CPU-feature token for [`X4`]).
    type Ctx: Copy + Debug + Send + Sync;
    /// A per-lane boolean.
    type Mask: Copy;
    /// Number of lanes.
    const N: usize;
    fn splat(ctx: Self::Ctx, v: f64) -> Self;
    fn from_fn(ctx: Self::Ctx, f: impl FnMut(usize) -> f64) -> Self;
    fn ctx(self) -> Self::Ctx;
    fn lane(self, l: usize) -> f64;
    /// self·b + c (fused where the implementation says so).
    fn mul_add(self, b: Self, c: Self) -> Self;
    fn recip(self) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    /// Clamp to [lo, hi], NaN stays NaN.
    fn clamp(self, lo: f64, hi: f64) -> Self;
    fn lt(self, o: Self) -> Self::Mask;
    fn ge(self, o: Self) -> Self::Mask;
    fn gt(self, o: Self) -> Self::Mask {
        o.lt(self)
    }
    fn and(a: Self::Mask, b: Self::Mask) -> Self::Mask;
    fn mask_lane(m: Self::Mask, l: usize) -> bool;
    /// `m ? a : b` per lane.
    fn select(m: Self::Mask, a: Self, b: Self) -> Self;
    /// For t = k + 1.5·2⁵² (k an integer, |k| < 1022) the value 2^k.
    fn pow2_of_rounded(t: Self) -> Self;
    /// x = m·2^e with m ∈ [1, 2) for finite normal x > 0: returns (m, e).
    fn split_exponent(x: Self) -> (Self, Self);
    /// For t = k + 1.5·2⁵²: (k odd, k mod 4 ≥ 2).
    fn quadrant_masks(t: Self) -> (Self::Mask, Self::Mask);
    #[inline(always)]
    fn c(self, v: f64) -> Self {
        Self::splat(self.ctx(), v)
    }
}

// ---------------------------------------------------------------------------------------------
// One lane in an f64.

/// One lane; `FMA` selects fused multiply-add in [`Lane::mul_add`].
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
impl<const FMA: bool> AddAssign for F1<FMA> {
    #[inline(always)]
    fn add_assign(&mut self, o: Self) {
        self.0 += o.0;
    }
}
impl<const FMA: bool> SubAssign for F1<FMA> {
    #[inline(always)]
    fn sub_assign(&mut self, o: Self) {
        self.0 -= o.0;
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
    fn ctx(self) {}
    #[inline(always)]
    fn lane(self, _: usize) -> f64 {
        self.0
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
    fn recip(self) -> Self {
        F1(1.0 / self.0)
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
    fn clamp(self, lo: f64, hi: f64) -> Self {
        F1(self.0.clamp(lo, hi))
    }
    #[inline(always)]
    fn lt(self, o: Self) -> bool {
        self.0 < o.0
    }
    #[inline(always)]
    fn ge(self, o: Self) -> bool {
        self.0 >= o.0
    }
    #[inline(always)]
    fn and(a: bool, b: bool) -> bool {
        a & b
    }
    #[inline(always)]
    fn mask_lane(m: bool, _: usize) -> bool {
        m
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
        let k = t.0.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
        F1(f64::from_bits(k.wrapping_add(1023) << 52))
    }
    #[inline(always)]
    fn split_exponent(x: Self) -> (Self, Self) {
        let b = x.0.to_bits();
        let m = f64::from_bits((b & MANTISSA_MASK) | ONE_BITS);
        let e = f64::from_bits(((b >> 52) & 0x7ff) | TWO52_BITS) - (TWO52 + 1023.0);
        (F1(m), F1(e))
    }
    #[inline(always)]
    fn quadrant_masks(t: Self) -> (bool, bool) {
        let q = t.0.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
        (q & 1 == 1, q & 2 == 2)
    }
}

// ---------------------------------------------------------------------------------------------
// Four lanes in an AVX2 register.

#[cfg(target_arch = "x86_64")]
pub(crate) use x4::X4;

#[cfg(target_arch = "x86_64")]
mod x4 {
    use super::*;
    use core::arch::x86_64::{__m256d, _CMP_GE_OQ, _CMP_LT_OQ};
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
            let sign = self.s.avx._mm256_set1_pd(-0.0);
            X4 { s: self.s, v: self.s.avx._mm256_xor_pd(self.v, sign) }
        }
    }
    impl AddAssign for X4 {
        #[inline(always)]
        fn add_assign(&mut self, o: Self) {
            *self = *self + o;
        }
    }
    impl SubAssign for X4 {
        #[inline(always)]
        fn sub_assign(&mut self, o: Self) {
            *self = *self - o;
        }
    }

    impl X4 {
        #[inline(always)]
        fn w(self, v: __m256d) -> Self {
            X4 { s: self.s, v }
        }
        #[inline(always)]
        fn bits(self) -> core::arch::x86_64::__m256i {
            self.s.avx._mm256_castpd_si256(self.v)
        }
        #[inline(always)]
        fn from_bits(s: V3, b: core::arch::x86_64::__m256i) -> Self {
            X4 { s, v: s.avx._mm256_castsi256_pd(b) }
        }
        #[inline(always)]
        fn const_bits(s: V3, b: u64) -> core::arch::x86_64::__m256i {
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
        fn ctx(self) -> V3 {
            self.s
        }
        #[inline(always)]
        fn lane(self, l: usize) -> f64 {
            let a: [f64; 4] = pulp::cast(self.v);
            a[l]
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            self.w(self.s.fma._mm256_fmadd_pd(self.v, b.v, c.v))
        }
        #[inline(always)]
        fn recip(self) -> Self {
            self.w(self.s.avx._mm256_div_pd(self.s.avx._mm256_set1_pd(1.0), self.v))
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            self.w(self.s.avx._mm256_sqrt_pd(self.v))
        }
        #[inline(always)]
        fn abs(self) -> Self {
            self.w(self.s.avx._mm256_andnot_pd(self.s.avx._mm256_set1_pd(-0.0), self.v))
        }
        #[inline(always)]
        fn clamp(self, lo: f64, hi: f64) -> Self {
            // max/min return the second operand when one is NaN: keep x second.
            let a = self.s.avx;
            self.w(a._mm256_min_pd(a._mm256_set1_pd(hi), a._mm256_max_pd(a._mm256_set1_pd(lo), self.v)))
        }
        #[inline(always)]
        fn lt(self, o: Self) -> __m256d {
            self.s.avx._mm256_cmp_pd::<_CMP_LT_OQ>(self.v, o.v)
        }
        #[inline(always)]
        fn ge(self, o: Self) -> __m256d {
            self.s.avx._mm256_cmp_pd::<_CMP_GE_OQ>(self.v, o.v)
        }
        #[inline(always)]
        fn and(a: __m256d, b: __m256d) -> __m256d {
            // Bitwise AND of two masks needs no CPU feature beyond what built them.
            let x: [u64; 4] = pulp::cast(a);
            let y: [u64; 4] = pulp::cast(b);
            pulp::cast([x[0] & y[0], x[1] & y[1], x[2] & y[2], x[3] & y[3]])
        }
        #[inline(always)]
        fn mask_lane(m: __m256d, l: usize) -> bool {
            let x: [u64; 4] = pulp::cast(m);
            x[l] != 0
        }
        #[inline(always)]
        fn select(m: __m256d, a: Self, b: Self) -> Self {
            a.w(a.s.avx._mm256_blendv_pd(b.v, a.v, m))
        }
        #[inline(always)]
        fn pow2_of_rounded(t: Self) -> Self {
            let s = t.s;
            let k = s.avx2._mm256_sub_epi64(t.bits(), X4::const_bits(s, ROUND_MAGIC.to_bits()));
            let e = s.avx2._mm256_add_epi64(k, X4::const_bits(s, 1023));
            X4::from_bits(s, s.avx2._mm256_slli_epi64::<52>(e))
        }
        #[inline(always)]
        fn split_exponent(x: Self) -> (Self, Self) {
            let s = x.s;
            let b = x.bits();
            let m = s.avx2._mm256_or_si256(
                s.avx2._mm256_and_si256(b, X4::const_bits(s, MANTISSA_MASK)),
                X4::const_bits(s, ONE_BITS),
            );
            let e = s.avx2._mm256_or_si256(
                s.avx2._mm256_and_si256(s.avx2._mm256_srli_epi64::<52>(b), X4::const_bits(s, 0x7ff)),
                X4::const_bits(s, TWO52_BITS),
            );
            (X4::from_bits(s, m), X4::from_bits(s, e) - (TWO52 + 1023.0))
        }
        #[inline(always)]
        fn quadrant_masks(t: Self) -> (__m256d, __m256d) {
            let s = t.s;
            let q = s.avx2._mm256_sub_epi64(t.bits(), X4::const_bits(s, ROUND_MAGIC.to_bits()));
            let one = X4::const_bits(s, 1);
            let two = X4::const_bits(s, 2);
            let odd = s.avx2._mm256_cmpeq_epi64(s.avx2._mm256_and_si256(q, one), one);
            let neg = s.avx2._mm256_cmpeq_epi64(s.avx2._mm256_and_si256(q, two), two);
            (s.avx._mm256_castsi256_pd(odd), s.avx._mm256_castsi256_pd(neg))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3-vectors.

/// A 3-vector of lanes.
pub(crate) type V3<T> = [T; 3];

#[inline(always)]
pub(crate) fn sub3<T: Lane>(a: V3<T>, b: V3<T>) -> V3<T> {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
#[inline(always)]
pub(crate) fn add3<T: Lane>(a: V3<T>, b: V3<T>) -> V3<T> {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
#[inline(always)]
pub(crate) fn scale3<T: Lane>(a: V3<T>, c: T) -> V3<T> {
    [a[0] * c, a[1] * c, a[2] * c]
}
#[inline(always)]
pub(crate) fn dot3<T: Lane>(a: V3<T>, b: V3<T>) -> T {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
#[inline(always)]
pub(crate) fn cross3<T: Lane>(a: V3<T>, b: V3<T>) -> V3<T> {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

// ---------------------------------------------------------------------------------------------
// Elementary functions.

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

const LN2_HI: f64 = 6.931_471_803_691_238e-1; // upper 32 bits of ln 2
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10; // ln 2 − LN2_HI
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5·2^52: adding it rounds to an integer
const TWO52: f64 = 4_503_599_627_370_496.0;
const TWO52_BITS: u64 = 0x4330_0000_0000_0000;
const ONE_BITS: u64 = 0x3ff0_0000_0000_0000;
const MANTISSA_MASK: u64 = 0x000f_ffff_ffff_ffff;

/// Polynomial Σ cᵢ xⁱ with the coefficients given from the highest power down.
///
/// Evaluated as a Horner scheme in x² over the pairs (c₂ᵢ₊₁ x + c₂ᵢ), which halves the length
/// of the dependency chain (the kernels are latency-bound) at the cost of one multiplication.
#[inline(always)]
fn horner<T: Lane>(x: T, coeffs_high_to_low: &[f64]) -> T {
    // No closures here: a closure is not reliably inlined into the AVX2 entry point, and an
    // out-of-line closure would call the intrinsics as functions.
    let n = coeffs_high_to_low.len();
    let x2 = x * x;
    // Pair i is c[2i+1]·x + c[2i] where c[k] = coeffs_high_to_low[n − 1 − k].
    let m = n.div_ceil(2);
    let mut i = m - 1;
    let mut p = if 2 * i + 1 < n {
        x.mul_add(x.c(coeffs_high_to_low[n - 2 - 2 * i]), x.c(coeffs_high_to_low[n - 1 - 2 * i]))
    } else {
        x.c(coeffs_high_to_low[n - 1 - 2 * i])
    };
    while i > 0 {
        i -= 1;
        let q = x.mul_add(x.c(coeffs_high_to_low[n - 2 - 2 * i]), x.c(coeffs_high_to_low[n - 1 - 2 * i]));
        p = p.mul_add(x2, q);
    }
    p
}

/// e^x per lane, for x clamped to [−700, 700] (the GB exponent is ≤ 0; e^−700 ≈ 1e-304 stands
/// in for anything smaller, a relative change below 1e-290 of the terms it enters).
///
/// x = k ln 2 + r with |r| ≤ ln2/2 (Cody–Waite two-part ln 2), e^r by its Taylor series to
/// r¹³/13! (truncation 0.347¹⁴/14! < 5e-18), 2^k assembled in the exponent bits.
#[inline(always)]
pub(crate) fn exp<T: Lane>(x: T) -> T {
    const C: [f64; 14] = {
        let mut c = [0.0; 14];
        let mut i = 0;
        while i < 14 {
            c[i] = 1.0 / FACTORIALS[13 - i];
            i += 1;
        }
        c
    };
    let xc = x.clamp(-700.0, 700.0);
    let t = xc * std::f64::consts::LOG2_E + ROUND_MAGIC;
    let k = t - ROUND_MAGIC;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    horner(r, &C) * T::pow2_of_rounded(t)
}

/// ln x per lane for finite x > 0 (normal numbers).
///
/// x = 2^e·m with m ∈ [√½, √2), f = m − 1, s = f/(2 + f), ln(1 + f) = 2 atanh s =
/// 2s Σ s²ᵏ/(2k + 1) to k = 9 (|s| ≤ 0.1716, s² ≤ 0.02944: relative truncation
/// 0.02944¹⁰/21 < 3e-17).
#[inline(always)]
pub(crate) fn ln<T: Lane>(x: T) -> T {
    const C: [f64; 10] = {
        let mut c = [0.0; 10];
        let mut i = 0;
        while i < 10 {
            c[i] = 1.0 / (2 * (9 - i) + 1) as f64;
            i += 1;
        }
        c
    };
    let (m, e) = T::split_exponent(x);
    let big = m.gt(x.c(std::f64::consts::SQRT_2));
    let m = T::select(big, m * 0.5, m);
    let e = T::select(big, e + 1.0, e);
    let f = m - 1.0;
    let s = f / (f + 2.0);
    let p = horner(s * s, &C);
    e.mul_add(x.c(LN2_HI), (s * p * 2.0).mul_add(x.c(1.0), e * LN2_LO))
}

/// ln of two lane values at once, as [`ln`] but with the two divisions s = f/(f + 2) sharing
/// one reciprocal (two extra roundings in s: still within a few ulp).
#[inline(always)]
pub(crate) fn ln2<T: Lane>(x1: T, x2: T) -> (T, T) {
    const C: [f64; 10] = {
        let mut c = [0.0; 10];
        let mut i = 0;
        while i < 10 {
            c[i] = 1.0 / (2 * (9 - i) + 1) as f64;
            i += 1;
        }
        c
    };
    let sqrt2 = x1.c(std::f64::consts::SQRT_2);
    let (m1, e1) = T::split_exponent(x1);
    let (m2, e2) = T::split_exponent(x2);
    let (big1, big2) = (m1.gt(sqrt2), m2.gt(sqrt2));
    let (m1, m2) = (T::select(big1, m1 * 0.5, m1), T::select(big2, m2 * 0.5, m2));
    let (e1, e2) = (T::select(big1, e1 + 1.0, e1), T::select(big2, e2 + 1.0, e2));
    let (f1, f2) = (m1 - 1.0, m2 - 1.0);
    let (d1, d2) = (f1 + 2.0, f2 + 2.0);
    let w = (d1 * d2).recip();
    let (s1, s2) = (f1 * (d2 * w), f2 * (d1 * w));
    let (p1, p2) = (horner(s1 * s1, &C), horner(s2 * s2, &C));
    let one = x1.c(1.0);
    (
        e1.mul_add(x1.c(LN2_HI), (s1 * p1 * 2.0).mul_add(one, e1 * LN2_LO)),
        e2.mul_add(x1.c(LN2_HI), (s2 * p2 * 2.0).mul_add(one, e2 * LN2_LO)),
    )
}

/// tanh per lane: sign(t)·(1 − e)/(1 + e) with e = exp(−2|t|). The absolute error is a few
/// ulp of 1 (all the Born-radius formula needs: tanh enters as 1/or − tanh/radius).
#[inline(always)]
pub(crate) fn tanh<T: Lane>(t: T) -> T {
    let e = exp(t.abs() * -2.0);
    let one = t.c(1.0);
    let a = (one - e) / (one + e);
    T::select(t.lt(t.c(0.0)), -a, a)
}

/// atan2(y, x) for y ≥ 0 (so the result is in [0, π]): the angle between two vectors from
/// |u × v| and u·v. atan2(0, 0) = 0.
///
/// a = min(y,|x|)/max(y,|x|) ∈ [0, 1]; above tan(π/8), atan a = π/4 + atan((a − 1)/(a + 1));
/// on |t| ≤ tan(π/8) atan t = Σ (−1)ᵏ t²ᵏ⁺¹/(2k + 1) to k = 21 (truncation 0.1716²²/45 < 2e-19).
#[inline(always)]
pub(crate) fn atan2_pos<T: Lane>(y: T, x: T) -> T {
    use std::f64::consts::{FRAC_PI_2, FRAC_PI_4, PI};
    const C: [f64; 22] = {
        let mut c = [0.0; 22];
        let mut i = 0;
        while i < 22 {
            let k = 21 - i;
            c[i] = if k % 2 == 0 { 1.0 } else { -1.0 } / (2 * k + 1) as f64;
            i += 1;
        }
        c
    };
    let zero = x.c(0.0);
    let ax = x.abs();
    let swap = y.gt(ax);
    let num = T::select(swap, ax, y);
    let den = T::select(swap, y, ax);
    let den_ok = den.gt(zero);
    let a = num / T::select(den_ok, den, x.c(1.0));
    let big = a.gt(x.c(0.414_213_562_373_095_1));
    let t = T::select(big, (a - 1.0) / (a + 1.0), a);
    let p = horner(t * t, &C);
    let tp = t * p;
    let at = T::select(big, tp + FRAC_PI_4, tp);
    let at = T::select(swap, -at + FRAC_PI_2, at);
    T::select(x.lt(zero), -at + PI, at)
}

/// (sin x, cos x) per lane for |x| ≲ 1e5 (flow coordinates; beyond that the reduction loses
/// digits but stays finite up to |x| ~ 1e15, and non-finite beyond, which the callers treat as
/// an invalid point).
///
/// x = k π/2 + r with |r| ≤ π/4 (three-part π/2), sin r and cos r by Taylor series to r¹⁹/19!
/// and r²⁰/20! (truncation (π/4)²¹/21! < 3e-22), then the quadrant k mod 4 picks the signs.
#[inline(always)]
pub(crate) fn sin_cos<T: Lane>(x: T) -> (T, T) {
    const PIO2_1: f64 = 1.570_796_326_734_125_6; // first 33 bits of π/2
    const PIO2_2: f64 = 6.077_100_506_303_966e-11; // next 33 bits
    const PIO2_3: f64 = 2.022_266_248_795_950_6e-21; // remainder
    const S: [f64; 10] = {
        let mut c = [0.0; 10];
        let mut i = 0;
        while i < 10 {
            let n = 9 - i;
            c[i] = if n % 2 == 0 { 1.0 } else { -1.0 } / FACTORIALS[2 * n + 1];
            i += 1;
        }
        c
    };
    const C: [f64; 11] = {
        let mut c = [0.0; 11];
        let mut i = 0;
        while i < 11 {
            let n = 10 - i;
            c[i] = if n % 2 == 0 { 1.0 } else { -1.0 } / FACTORIALS[2 * n];
            i += 1;
        }
        c
    };
    let t = x * std::f64::consts::FRAC_2_PI + ROUND_MAGIC;
    let k = t - ROUND_MAGIC;
    let r = ((x - k * PIO2_1) - k * PIO2_2) - k * PIO2_3;
    let z = r * r;
    let s = r * horner(z, &S);
    let c = horner(z, &C);
    let (odd, neg) = T::quadrant_masks(t);
    let sin_r = T::select(odd, c, s);
    let cos_r = T::select(odd, -s, c);
    (T::select(neg, -sin_r, sin_r), T::select(neg, -cos_r, cos_r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f64, b: f64) -> f64 {
        (a - b).abs() / (b.abs() * f64::EPSILON).max(f64::MIN_POSITIVE)
    }

    fn check<T: Lane>(ctx: T::Ctx) -> [f64; 5] {
        // Deterministic sweep; std's libm is within 1 ulp, so agreement within 4 ulp (relative,
        // or ulps of 1 for tanh/atan2/sin/cos, whose callers need absolute accuracy) means
        // ours are within ~5 ulp of the true values.
        let mut worst = [0.0f64; 5];
        let n = 20_000;
        for i in 0..n / T::N {
            let u = |l: usize| ((i * T::N + l) as f64 + 0.5) / n as f64;
            let xe = T::from_fn(ctx, |l| -700.0 * u(l) + 50.0 * (1.0 - u(l)));
            let xl = T::from_fn(ctx, |l| (1e-8f64).powf(1.0 - u(l)) * 1e3f64.powf(u(l)));
            let xt = T::from_fn(ctx, |l| -6.0 + 12.0 * u(l));
            let ya = T::from_fn(ctx, |l| (3.0 * u(l)).sin().abs() * 2.0);
            let xa = T::from_fn(ctx, |l| (7.0 * u(l)).cos() * 1.5);
            let xs = T::from_fn(ctx, |l| -40.0 + 80.0 * u(l));
            let (e, lg, th, at, (s, c)) = (exp(xe), ln(xl), tanh(xt), atan2_pos(ya, xa), sin_cos(xs));
            let (lg2a, lg2b) = ln2(xl, xe.abs() + 1e-3);
            for l in 0..T::N {
                worst[0] = worst[0].max(ulps(e.lane(l), xe.lane(l).exp()));
                let r = xl.lane(l).ln();
                worst[1] = worst[1].max((lg.lane(l) - r).abs() / (r.abs().max(1.0) * f64::EPSILON));
                worst[1] = worst[1].max((lg2a.lane(l) - r).abs() / (r.abs().max(1.0) * f64::EPSILON));
                let r2 = (xe.lane(l).abs() + 1e-3).ln();
                worst[1] = worst[1].max((lg2b.lane(l) - r2).abs() / (r2.abs().max(1.0) * f64::EPSILON));
                worst[2] = worst[2].max((th.lane(l) - xt.lane(l).tanh()).abs() / f64::EPSILON);
                worst[3] = worst[3].max((at.lane(l) - ya.lane(l).atan2(xa.lane(l))).abs() / f64::EPSILON);
                let err = (s.lane(l) - xs.lane(l).sin()).abs().max((c.lane(l) - xs.lane(l).cos()).abs());
                worst[4] = worst[4].max(err / f64::EPSILON);
            }
        }
        worst
    }

    #[test]
    fn elementary_functions_match_std_to_a_few_ulp() {
        let w = check::<F1<false>>(());
        assert!(w.iter().all(|w| *w <= 4.0), "F1 worst errors in ulp [exp, ln, tanh, atan2, sincos]: {w:?}");
        let w = check::<F1<true>>(());
        assert!(w.iter().all(|w| *w <= 4.0), "F1<fma> worst errors in ulp: {w:?}");
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            let w = simd.vectorize(|| check::<X4>(simd));
            assert!(w.iter().all(|w| *w <= 4.0), "X4 worst errors in ulp: {w:?}");
        }
        let z = F1::<false>(0.0);
        assert_eq!(atan2_pos(z, z).0, 0.0);
        assert_eq!(atan2_pos(z, F1(-1.0)).0, std::f64::consts::PI);
        assert!(exp(F1::<false>(-1e9)).0 < 1e-300);
        assert!(exp(F1::<false>(f64::NAN)).0.is_nan());
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn x4_lanes_equal_fused_scalar_lanes() {
        // With FMA on both sides the 4-lane and 1-lane versions perform identical IEEE
        // operations, so the results are bit-identical.
        let Some(simd) = pulp::x86::V3::try_new() else { return };
        let xs = [0.5, -3.0, 1e-7, 200.0];
        let v = simd.vectorize(|| exp(X4::from_fn(simd, |l| xs[l])));
        for (l, x) in xs.iter().enumerate() {
            let s = simd.vectorize(|| exp(F1::<true>(*x)).0);
            assert_eq!(v.lane(l).to_bits(), s.to_bits());
        }
    }
}

/// A one-lane type that counts the floating-point operations it performs (tests only), to
/// state the FLOP count of the kernels by operation count rather than by estimate.
#[cfg(test)]
pub(crate) mod counting {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// [add/sub, mul, div, sqrt, fma, compare/select/abs/bit].
        pub(crate) static COUNTS: Cell<[u64; 6]> = const { Cell::new([0; 6]) };
    }

    fn bump(k: usize) {
        COUNTS.with(|c| {
            let mut v = c.get();
            v[k] += 1;
            c.set(v);
        });
    }

    /// Resets the counters and returns the previous values.
    pub(crate) fn take() -> [u64; 6] {
        COUNTS.with(|c| c.replace([0; 6]))
    }

    /// An f64 that counts.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub(crate) struct C(pub f64);

    macro_rules! cbinop {
        ($tr:ident, $f:ident, $op:tt, $k:expr) => {
            impl $tr for C {
                type Output = Self;
                fn $f(self, o: Self) -> Self {
                    bump($k);
                    C(self.0 $op o.0)
                }
            }
            impl $tr<f64> for C {
                type Output = Self;
                fn $f(self, o: f64) -> Self {
                    bump($k);
                    C(self.0 $op o)
                }
            }
        };
    }
    cbinop!(Add, add, +, 0);
    cbinop!(Sub, sub, -, 0);
    cbinop!(Mul, mul, *, 1);
    cbinop!(Div, div, /, 2);
    impl Neg for C {
        type Output = Self;
        fn neg(self) -> Self {
            bump(5);
            C(-self.0)
        }
    }
    impl AddAssign for C {
        fn add_assign(&mut self, o: Self) {
            *self = *self + o;
        }
    }
    impl SubAssign for C {
        fn sub_assign(&mut self, o: Self) {
            *self = *self - o;
        }
    }

    impl Lane for C {
        type Ctx = ();
        type Mask = bool;
        const N: usize = 1;
        fn splat(_: (), v: f64) -> Self {
            C(v)
        }
        fn from_fn(_: (), mut f: impl FnMut(usize) -> f64) -> Self {
            C(f(0))
        }
        fn ctx(self) {}
        fn lane(self, _: usize) -> f64 {
            self.0
        }
        fn mul_add(self, b: Self, c: Self) -> Self {
            bump(4);
            C(self.0.mul_add(b.0, c.0))
        }
        fn recip(self) -> Self {
            bump(2);
            C(1.0 / self.0)
        }
        fn sqrt(self) -> Self {
            bump(3);
            C(self.0.sqrt())
        }
        fn abs(self) -> Self {
            bump(5);
            C(self.0.abs())
        }
        fn clamp(self, lo: f64, hi: f64) -> Self {
            bump(5);
            bump(5);
            C(self.0.clamp(lo, hi))
        }
        fn lt(self, o: Self) -> bool {
            bump(5);
            self.0 < o.0
        }
        fn ge(self, o: Self) -> bool {
            bump(5);
            self.0 >= o.0
        }
        fn and(a: bool, b: bool) -> bool {
            bump(5);
            a & b
        }
        fn mask_lane(m: bool, _: usize) -> bool {
            m
        }
        fn select(m: bool, a: Self, b: Self) -> Self {
            bump(5);
            if m {
                a
            } else {
                b
            }
        }
        fn pow2_of_rounded(t: Self) -> Self {
            // integer sub, add, shift
            for _ in 0..3 {
                bump(5);
            }
            C(F1::<true>::pow2_of_rounded(F1(t.0)).0)
        }
        fn split_exponent(x: Self) -> (Self, Self) {
            // and, or, shift, and, or (bit ops) and one float subtraction
            for _ in 0..5 {
                bump(5);
            }
            bump(0);
            let (m, e) = F1::<true>::split_exponent(F1(x.0));
            (C(m.0), C(e.0))
        }
        fn quadrant_masks(t: Self) -> (bool, bool) {
            for _ in 0..5 {
                bump(5);
            }
            F1::<true>::quadrant_masks(F1(t.0))
        }
    }
}
