//! SIMD lanes and vectorised elementary functions for the CPU kernels of fab-rs (the
//! rational-quadratic spline kernels of `fab-flows` and the alanine-dipeptide force field of
//! `fab-targets`).
//!
//! A [`Lane`] value holds one float64 per element being processed (a feature of a spline
//! layer, a configuration of the force field). Three implementations:
//! * [`X4`] (x86-64): four lanes in an AVX2 register with fused multiply-add, operated through
//!   `pulp`'s safe wrappers of the intrinsics; a value can only be made from a
//!   `pulp::x86::V3` token, i.e. after AVX2 + FMA were detected at run time;
//! * [`X8`] (x86-64): eight lanes in an AVX-512 register, made from a `pulp::x86::V4` token,
//!   with the same per-lane operations as [`X4`];
//! * [`F1`]: one lane in a plain `f64` (the portable fallback), with a·b + c for
//!   [`Lane::mul_add`] when `FMA` is false and `f64::mul_add` when it is true (a single
//!   instruction in an AVX2 + FMA context, which makes `F1<true>` agree with an [`X4`] lane bit
//!   for bit; the tests check it).
//!
//! Every operation acts on each lane independently and is correctly rounded per lane (IEEE
//! add, mul, div, sqrt, fma), so a lane's result does not depend on which lane, group or thread
//! computed it. Data-dependent branches are selects, so all lanes follow the same control flow.
//!
//! The elementary functions ([`exp`], [`ln`], [`ln2`], [`log1p_unit`], [`tanh`],
//! [`atan2_pos`], [`sin_cos`]) use classical argument reduction and truncated Taylor series
//! whose truncation error is below 1e-17 relative on the reduced range (stated at each
//! function); the tests compare them with the standard library over wide ranges.

mod lane;
mod math;

#[cfg(feature = "counting")]
pub mod counting;

pub use lane::{Lane, F1, MAX_LANES, ROUND_MAGIC};
#[cfg(target_arch = "x86_64")]
pub use lane::{X4, X8};
pub use math::{atan2_pos, exp, exp_nonpos, ln, ln2, ln_normal, log1p_unit, sin_cos, tanh};
