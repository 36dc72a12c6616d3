//! A one-lane type that counts the floating-point operations it performs, to state the FLOP
//! count of a kernel by operation count rather than by estimate (feature `counting`; meant for
//! tests).

use crate::lane::{pow2_of_rounded_f64, quadrant_masks_f64, split_exponent_f64, Lane, MAX_LANES};
use std::cell::Cell;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};

thread_local! {
    /// [add/sub, mul, div, sqrt, fma, compare/select/abs/bit].
    static COUNTS: Cell<[u64; 6]> = const { Cell::new([0; 6]) };
}

fn bump(k: usize) {
    COUNTS.with(|c| {
        let mut v = c.get();
        v[k] += 1;
        c.set(v);
    });
}

fn bump_n(k: usize, n: u64) {
    COUNTS.with(|c| {
        let mut v = c.get();
        v[k] += n;
        c.set(v);
    });
}

/// Resets this thread's counters and returns the previous values: [add/sub, mul, div, sqrt,
/// fma, compare/select/abs/bit operations].
pub fn take() -> [u64; 6] {
    COUNTS.with(|c| c.replace([0; 6]))
}

/// An f64 that counts the operations done on it (fused multiply-add, as [`crate::F1`]`<true>`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct C(pub f64);

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
    fn load(_: (), a: &[f64]) -> Self {
        C(a[0])
    }
    fn ctx(self) {}
    fn lane(self, _: usize) -> f64 {
        self.0
    }
    fn to_array(self) -> [f64; MAX_LANES] {
        let mut a = [0.0; MAX_LANES];
        a[0] = self.0;
        a
    }
    fn mul_add(self, b: Self, c: Self) -> Self {
        bump(4);
        C(self.0.mul_add(b.0, c.0))
    }
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        bump(4);
        C((-self.0).mul_add(b.0, c.0))
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
    fn max(self, o: Self) -> Self {
        bump(5);
        C(if self.0 > o.0 { self.0 } else { o.0 })
    }
    fn clamp(self, lo: f64, hi: f64) -> Self {
        bump_n(5, 2);
        C(self.0.clamp(lo, hi))
    }
    fn lt(self, o: Self) -> bool {
        bump(5);
        self.0 < o.0
    }
    fn le(self, o: Self) -> bool {
        bump(5);
        self.0 <= o.0
    }
    fn ge(self, o: Self) -> bool {
        bump(5);
        self.0 >= o.0
    }
    fn eq(self, o: Self) -> bool {
        bump(5);
        self.0 == o.0
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
        // integer add, shift
        bump_n(5, 2);
        C(pow2_of_rounded_f64(t.0))
    }
    fn split_exponent(x: Self) -> (Self, Self) {
        // integer add, and, add, shift, or, and one float subtraction
        bump_n(5, 5);
        bump(0);
        let (m, e) = split_exponent_f64(x.0);
        (C(m), C(e))
    }
    fn quadrant_masks(t: Self) -> (bool, bool) {
        // integer sub, two and, two compares
        bump_n(5, 5);
        quadrant_masks_f64(t.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_computes_like_the_fused_lane() {
        take();
        let x = C(0.3);
        let y = crate::exp(x);
        let c = take();
        assert_eq!(y.0, crate::exp(crate::F1::<true>(0.3)).0);
        // exp: 1 fma (t), 1 sub (k), 2 fma (r), 1 mul (r²) + 6 pairs and 6 steps = 12 fma (q),
        // 1 fma (1 + r·q), 1 mul (by 2^k); compare + select at each end, 2 bit ops (2^k).
        assert_eq!(c, [1, 2, 0, 0, 16, 6], "{c:?}");
    }
}
