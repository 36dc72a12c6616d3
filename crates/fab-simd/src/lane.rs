//! The [`Lane`] trait and its two implementations, [`F1`] and [`X4`].

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};

/// 1.5·2⁵²: adding it to |v| < 2⁵¹ rounds v to an integer held in the low mantissa bits (the
/// form [`Lane::pow2_of_rounded`] and [`Lane::quadrant_masks`] read).
pub const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;
const MANTISSA_MASK: u64 = (1 << 52) - 1;
/// Bits of √½ (rounded down), and 1.0's bits minus them: adding the latter to the bits of
/// x = m·2^e moves the exponent up by one exactly when m ≥ √2.
const SQRT_HALF_BITS: u64 = 0x3fe6_a09e_667f_3bcd;
const SQRT2_SHIFT: u64 = 0x3ff0_0000_0000_0000 - SQRT_HALF_BITS;
/// 2⁵² as bits: or-ing a biased exponent (< 2¹¹) into it gives 2⁵² + exponent exactly.
const TWO52_BITS: u64 = 0x4330_0000_0000_0000;
const TWO52: f64 = 4_503_599_627_370_496.0;

/// Most lanes of any [`Lane`] type.
pub const MAX_LANES: usize = 8;

/// `N` float64 lanes with the operations the kernels need.
pub trait Lane:
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
    /// What creating values needs (the CPU-feature token for [`X4`]).
    type Ctx: Copy + Debug + Send + Sync;
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
    /// Lane `l` (`l < N`).
    fn lane(self, l: usize) -> f64;
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
    /// 1 / self (a correctly rounded division).
    fn recip(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// |self|.
    fn abs(self) -> Self;
    /// Lane-wise maximum (for non-NaN lanes).
    fn max(self, o: Self) -> Self;
    /// Clamp to [lo, hi]; NaN stays NaN.
    fn clamp(self, lo: f64, hi: f64) -> Self;
    /// self < o (false for NaN).
    fn lt(self, o: Self) -> Self::Mask;
    /// self ≤ o (false for NaN).
    fn le(self, o: Self) -> Self::Mask;
    /// self ≥ o (false for NaN).
    fn ge(self, o: Self) -> Self::Mask;
    /// self > o (false for NaN).
    #[inline(always)]
    fn gt(self, o: Self) -> Self::Mask {
        o.lt(self)
    }
    /// self == o (false for NaN).
    fn eq(self, o: Self) -> Self::Mask;
    /// a ∧ b.
    fn and(a: Self::Mask, b: Self::Mask) -> Self::Mask;
    /// Lane `l` of a mask.
    fn mask_lane(m: Self::Mask, l: usize) -> bool;
    /// `m ? a : b` per lane.
    fn select(m: Self::Mask, a: Self, b: Self) -> Self;
    /// For t = k + [`ROUND_MAGIC`] (k an integer, −1022 ≤ k ≤ 1023): 2^k.
    fn pow2_of_rounded(t: Self) -> Self;
    /// x = m·2^e with m ∈ [√½, √2) for finite normal x > 0: (m, e).
    fn split_exponent(x: Self) -> (Self, Self);
    /// For t = k + [`ROUND_MAGIC`] (k an integer): (k odd, k mod 4 ≥ 2).
    fn quadrant_masks(t: Self) -> (Self::Mask, Self::Mask);
    /// A constant in this value's context.
    #[inline(always)]
    fn c(self, v: f64) -> Self {
        Self::splat(self.ctx(), v)
    }
}

// ---------------------------------------------------------------------------------------------
// One lane in an f64.

/// One lane; `FMA` selects a fused multiply-add in [`Lane::mul_add`] and [`Lane::neg_mul_add`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct F1<const FMA: bool>(pub f64);

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

/// 2^k from t = k + [`ROUND_MAGIC`]: bits(t) = bits(ROUND_MAGIC) + k, and
/// bits(ROUND_MAGIC) << 52 wraps to 0.
#[inline(always)]
pub(crate) fn pow2_of_rounded_f64(t: f64) -> f64 {
    f64::from_bits(t.to_bits().wrapping_add(1023) << 52)
}

/// [`Lane::split_exponent`] of one f64.
#[inline(always)]
pub(crate) fn split_exponent_f64(x: f64) -> (f64, f64) {
    let b = x.to_bits().wrapping_add(SQRT2_SHIFT);
    let m = f64::from_bits((b & MANTISSA_MASK) + SQRT_HALF_BITS);
    let e = f64::from_bits((b >> 52) | TWO52_BITS) - (TWO52 + 1023.0);
    (m, e)
}

/// [`Lane::quadrant_masks`] of one f64.
#[inline(always)]
pub(crate) fn quadrant_masks_f64(t: f64) -> (bool, bool) {
    let q = t.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    (q & 1 == 1, q & 2 == 2)
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
    fn lane(self, _: usize) -> f64 {
        self.0
    }
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
    fn max(self, o: Self) -> Self {
        F1(if self.0 > o.0 { self.0 } else { o.0 })
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
        F1(pow2_of_rounded_f64(t.0))
    }
    #[inline(always)]
    fn split_exponent(x: Self) -> (Self, Self) {
        let (m, e) = split_exponent_f64(x.0);
        (F1(m), F1(e))
    }
    #[inline(always)]
    fn quadrant_masks(t: Self) -> (bool, bool) {
        quadrant_masks_f64(t.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Four lanes in an AVX2 register.

#[cfg(target_arch = "x86_64")]
pub use x4::X4;

#[cfg(target_arch = "x86_64")]
mod x4 {
    use super::*;
    use core::arch::x86_64::{__m256d, __m256i, _CMP_EQ_OQ, _CMP_GE_OQ, _CMP_LE_OQ, _CMP_LT_OQ};
    use pulp::x86::V3;

    /// Four lanes in an AVX2 register (with FMA), operated through the `V3` token.
    #[derive(Clone, Copy, Debug)]
    pub struct X4 {
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
        fn lane(self, l: usize) -> f64 {
            let a: [f64; 4] = pulp::cast(self.v);
            a[l]
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
        fn recip(self) -> Self {
            self.w(self.s.avx._mm256_div_pd(self.s.avx._mm256_set1_pd(1.0), self.v))
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
            // bits(t) = bits(ROUND_MAGIC) + k, and bits(ROUND_MAGIC) << 52 wraps to 0.
            let s = t.s;
            let e = s.avx2._mm256_add_epi64(t.bits(), X4::const_bits(s, 1023));
            X4::from_bits(s, s.avx2._mm256_slli_epi64::<52>(e))
        }
        #[inline(always)]
        fn split_exponent(x: Self) -> (Self, Self) {
            let s = x.s;
            let b = s.avx2._mm256_add_epi64(x.bits(), X4::const_bits(s, SQRT2_SHIFT));
            let m =
                s.avx2._mm256_add_epi64(s.avx2._mm256_and_si256(b, X4::const_bits(s, MANTISSA_MASK)), X4::const_bits(s, SQRT_HALF_BITS));
            let e = s.avx2._mm256_or_si256(s.avx2._mm256_srli_epi64::<52>(b), X4::const_bits(s, TWO52_BITS));
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
// Eight lanes in an AVX-512 register.

#[cfg(target_arch = "x86_64")]
pub use x8::X8;

#[cfg(target_arch = "x86_64")]
mod x8 {
    use super::*;
    use core::arch::x86_64::{__m512d, __m512i, __mmask8, _CMP_EQ_OQ, _CMP_GE_OQ, _CMP_LE_OQ, _CMP_LT_OQ};
    use pulp::x86::V4;

    /// Eight lanes in an AVX-512 register, operated through the `V4` token. Every operation is
    /// the same correctly rounded IEEE operation per lane as in [`super::X4`] (fused
    /// multiply-add included), so a lane's result is the same in either type.
    #[derive(Clone, Copy, Debug)]
    pub struct X8 {
        s: V4,
        v: __m512d,
    }

    macro_rules! x8_binop {
        ($tr:ident, $f:ident, $intr:ident) => {
            impl $tr for X8 {
                type Output = Self;
                #[inline(always)]
                fn $f(self, o: Self) -> Self {
                    X8 { s: self.s, v: self.s.avx512f.$intr(self.v, o.v) }
                }
            }
            impl $tr<f64> for X8 {
                type Output = Self;
                #[inline(always)]
                fn $f(self, o: f64) -> Self {
                    X8 { s: self.s, v: self.s.avx512f.$intr(self.v, self.s.avx512f._mm512_set1_pd(o)) }
                }
            }
        };
    }
    x8_binop!(Add, add, _mm512_add_pd);
    x8_binop!(Sub, sub, _mm512_sub_pd);
    x8_binop!(Mul, mul, _mm512_mul_pd);
    x8_binop!(Div, div, _mm512_div_pd);

    impl Neg for X8 {
        type Output = Self;
        #[inline(always)]
        fn neg(self) -> Self {
            let f = self.s.avx512f;
            X8::from_bits(self.s, f._mm512_xor_si512(self.bits(), X8::const_bits(self.s, 1 << 63)))
        }
    }
    impl AddAssign for X8 {
        #[inline(always)]
        fn add_assign(&mut self, o: Self) {
            *self = *self + o;
        }
    }
    impl SubAssign for X8 {
        #[inline(always)]
        fn sub_assign(&mut self, o: Self) {
            *self = *self - o;
        }
    }

    impl X8 {
        #[inline(always)]
        fn w(self, v: __m512d) -> Self {
            X8 { s: self.s, v }
        }
        #[inline(always)]
        fn bits(self) -> __m512i {
            self.s.avx512f._mm512_castpd_si512(self.v)
        }
        #[inline(always)]
        fn from_bits(s: V4, b: __m512i) -> Self {
            X8 { s, v: s.avx512f._mm512_castsi512_pd(b) }
        }
        #[inline(always)]
        fn const_bits(s: V4, b: u64) -> __m512i {
            s.avx512f._mm512_set1_epi64(b as i64)
        }
    }

    impl Lane for X8 {
        type Ctx = V4;
        type Mask = __mmask8;
        const N: usize = 8;
        #[inline(always)]
        fn splat(s: V4, v: f64) -> Self {
            X8 { s, v: s.avx512f._mm512_set1_pd(v) }
        }
        #[inline(always)]
        fn from_fn(s: V4, f: impl FnMut(usize) -> f64) -> Self {
            let a: [f64; 8] = std::array::from_fn(f);
            X8 { s, v: pulp::cast(a) }
        }
        #[inline(always)]
        fn load(s: V4, a: &[f64]) -> Self {
            let a: [f64; 8] = a[..8].try_into().expect("eight lanes");
            X8 { s, v: pulp::cast(a) }
        }
        #[inline(always)]
        fn ctx(self) -> V4 {
            self.s
        }
        #[inline(always)]
        fn lane(self, l: usize) -> f64 {
            let a: [f64; 8] = pulp::cast(self.v);
            a[l]
        }
        #[inline(always)]
        fn to_array(self) -> [f64; MAX_LANES] {
            pulp::cast(self.v)
        }
        #[inline(always)]
        fn push_to(self, out: &mut Vec<f64>) {
            let a: [f64; 8] = pulp::cast(self.v);
            out.extend_from_slice(&a);
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            self.w(self.s.avx512f._mm512_fmadd_pd(self.v, b.v, c.v))
        }
        #[inline(always)]
        fn neg_mul_add(self, b: Self, c: Self) -> Self {
            self.w(self.s.avx512f._mm512_fnmadd_pd(self.v, b.v, c.v))
        }
        #[inline(always)]
        fn recip(self) -> Self {
            let f = self.s.avx512f;
            self.w(f._mm512_div_pd(f._mm512_set1_pd(1.0), self.v))
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            self.w(self.s.avx512f._mm512_sqrt_pd(self.v))
        }
        #[inline(always)]
        fn abs(self) -> Self {
            let f = self.s.avx512f;
            X8::from_bits(self.s, f._mm512_and_si512(self.bits(), X8::const_bits(self.s, !(1 << 63))))
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // vmaxpd returns its second operand unless the first is greater: as F1::max.
            self.w(self.s.avx512f._mm512_max_pd(self.v, o.v))
        }
        #[inline(always)]
        fn clamp(self, lo: f64, hi: f64) -> Self {
            // max/min return the second operand when one is NaN: keep x second.
            let f = self.s.avx512f;
            self.w(f._mm512_min_pd(f._mm512_set1_pd(hi), f._mm512_max_pd(f._mm512_set1_pd(lo), self.v)))
        }
        #[inline(always)]
        fn lt(self, o: Self) -> __mmask8 {
            self.s.avx512f._mm512_cmp_pd_mask::<_CMP_LT_OQ>(self.v, o.v)
        }
        #[inline(always)]
        fn le(self, o: Self) -> __mmask8 {
            self.s.avx512f._mm512_cmp_pd_mask::<_CMP_LE_OQ>(self.v, o.v)
        }
        #[inline(always)]
        fn ge(self, o: Self) -> __mmask8 {
            self.s.avx512f._mm512_cmp_pd_mask::<_CMP_GE_OQ>(self.v, o.v)
        }
        #[inline(always)]
        fn eq(self, o: Self) -> __mmask8 {
            self.s.avx512f._mm512_cmp_pd_mask::<_CMP_EQ_OQ>(self.v, o.v)
        }
        #[inline(always)]
        fn and(a: __mmask8, b: __mmask8) -> __mmask8 {
            a & b
        }
        #[inline(always)]
        fn mask_lane(m: __mmask8, l: usize) -> bool {
            (m >> l) & 1 == 1
        }
        #[inline(always)]
        fn select(m: __mmask8, a: Self, b: Self) -> Self {
            // mask_blend takes the second operand where the mask bit is set.
            a.w(a.s.avx512f._mm512_mask_blend_pd(m, b.v, a.v))
        }
        #[inline(always)]
        fn pow2_of_rounded(t: Self) -> Self {
            // bits(t) = bits(ROUND_MAGIC) + k, and bits(ROUND_MAGIC) << 52 wraps to 0.
            let s = t.s;
            let f = s.avx512f;
            let e = f._mm512_add_epi64(t.bits(), X8::const_bits(s, 1023));
            X8::from_bits(s, f._mm512_slli_epi64::<52>(e))
        }
        #[inline(always)]
        fn split_exponent(x: Self) -> (Self, Self) {
            let s = x.s;
            let f = s.avx512f;
            let b = f._mm512_add_epi64(x.bits(), X8::const_bits(s, SQRT2_SHIFT));
            let m = f._mm512_add_epi64(f._mm512_and_si512(b, X8::const_bits(s, MANTISSA_MASK)), X8::const_bits(s, SQRT_HALF_BITS));
            let e = f._mm512_or_si512(f._mm512_srli_epi64::<52>(b), X8::const_bits(s, TWO52_BITS));
            (X8::from_bits(s, m), X8::from_bits(s, e) - (TWO52 + 1023.0))
        }
        #[inline(always)]
        fn quadrant_masks(t: Self) -> (__mmask8, __mmask8) {
            let s = t.s;
            let f = s.avx512f;
            let q = f._mm512_sub_epi64(t.bits(), X8::const_bits(s, ROUND_MAGIC.to_bits()));
            let one = X8::const_bits(s, 1);
            let two = X8::const_bits(s, 2);
            let odd = f._mm512_cmpeq_epi64_mask(f._mm512_and_si512(q, one), one);
            let neg = f._mm512_cmpeq_epi64_mask(f._mm512_and_si512(q, two), two);
            (odd, neg)
        }
    }
}
