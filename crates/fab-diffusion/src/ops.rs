//! Fused host ops of the drift network with exact backward passes (`docs/PERFORMANCE.md`,
//! "Diffusion samplers"): GELU, and the addition of per-group rows (a layer's bias, or the
//! time embedding of each step's block of rows) whose gradient is a per-group column sum.
//! candle composes both from several passes and allocations, and reduces the broadcast
//! gradient with a strided fold; here each is one pass over the activations.
//!
//! The f32 GELU is vectorised (run-time AVX2 / AVX-512 dispatch through `pulp`). It computes
//! Φ(x) from erfc(|x|/√2) = t·exp(−z² + P(t)), t = 1/(1 + z/2), with the Chebyshev polynomial P
//! of Numerical Recipes (fractional error below 1.2·10⁻⁷ for all z ≥ 0), and exp by
//! range reduction and a degree-7 Taylor polynomial. The f64 GELU uses libm's erf. Every
//! element is computed by the same sequence of IEEE operations whatever the lane width, so
//! results do not depend on the CPU's vector extensions.

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use crate::Result;

/// GELU with the exact erf, 0.5·x·(1 + erf(x/√2)), as one fused op with the exact derivative
/// Φ(x) + x·φ(x). candle's own `gelu_erf` back-propagates through an approximate erf
/// (derivative errors up to ~2·10⁻⁷ absolute, enough to fail a finite-difference check), and
/// composing it from `erf` and products costs five passes and allocations forward and more
/// backward over the largest activations of an iteration.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Gelu { derivative: false })?)
}

/// `x + b` where `x` is `[m, k]` and `b` holds `g` rows of `k` (`[g, k]` or, for g = 1, `[k]`):
/// row r of `x` gets row ⌊r·g/m⌋ of `b` (m must be a multiple of g). With g = 1 this is a bias;
/// with g = T and step-major rows it adds each step's time embedding to its block of rows.
/// The gradient of `b` is the column sum of each block.
pub fn add_grouped(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op2(&b.contiguous()?, AddGrouped)?)
}

const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// GELU (or, with `derivative`, its derivative) on the host.
#[derive(Debug, Clone, Copy)]
struct Gelu {
    derivative: bool,
}

pub(crate) fn gelu_f64(x: f64, derivative: bool) -> f64 {
    let cdf = 0.5 * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2));
    if derivative {
        cdf + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
    } else {
        x * cdf
    }
}

/// e^y for y ≤ 0 in f32, and exactly 0 for y < −87 (e^−87 ≈ 1.6·10⁻³⁸ is near the smallest
/// normal f32): y = n·ln 2 + r with |r| ≤ ln2/2 (two-part ln 2), e^r by its Taylor polynomial
/// to r⁷ (truncation < 6·10⁻⁹ relative), 2ⁿ from the exponent bits. Branch-free (the cut-off
/// is a select) so that loops over it vectorise.
///
/// The exact 0 matters for speed: clamping instead at e^−87 would leave every strongly negative
/// GELU input with an output of about −2·10⁻³⁸ rather than 0, and the matrix products that
/// take such activations (and the gradients they scale) produce subnormal numbers, which
/// x86 cores handle many times slower (a 25GMM run slowed from about 8 to under 3 iterations
/// per second as its units saturated; `docs/PERFORMANCE.md`, "saturated GELU units").
#[inline(always)]
fn exp_nonpos_f32(y: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds |v| < 2²² to an integer
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let underflows = y < -87.0;
    let y = y.max(-87.0);
    let shifted = y * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // The low mantissa bits of `shifted` hold n in two's complement: 2ⁿ from integer ops only
    // (a float-to-int cast would not vectorise).
    let biased = shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    let e = p * f32::from_bits(biased << 23);
    if underflows {
        0.0
    } else {
        e
    }
}

/// Φ(x), the standard normal distribution function, in f32 (see the module documentation).
#[inline(always)]
#[allow(clippy::excessive_precision)] // the published coefficients, as written
fn normal_cdf_f32(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = 0.170_872_77f32;
    let p = p * t - 0.822_152_23;
    let p = p * t + 1.488_515_87;
    let p = p * t - 1.135_203_98;
    let p = p * t + 0.278_868_07;
    let p = p * t - 0.186_288_06;
    let p = p * t + 0.096_784_18;
    let p = p * t + 0.374_091_96;
    let p = p * t + 1.000_023_68;
    let p = p * t - 1.265_512_23;
    // P(X > |x|) for a standard normal X.
    let upper = 0.5 * t * exp_nonpos_f32(p - z * z);
    if x >= 0.0 {
        1.0 - upper
    } else {
        upper
    }
}

/// `v`, or 0 where `v` is subnormal (only in the narrow band where the true value leaves f32's
/// normal range), for the speed reason given at `exp_nonpos_f32`.
#[inline(always)]
fn flush_subnormal(v: f32) -> f32 {
    if v.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        v
    }
}

/// The GELU's derivative Φ(x) + x·φ(x) from Φ(x).
#[inline(always)]
fn gelu_derivative_from_cdf_f32(x: f32, cdf: f32) -> f32 {
    flush_subnormal(cdf + x * (INV_SQRT_2PI as f32) * exp_nonpos_f32(-0.5 * x * x))
}

/// GELU or its derivative in f32 (see the module documentation).
#[inline(always)]
pub(crate) fn gelu_f32(x: f32, derivative: bool) -> f32 {
    let cdf = normal_cdf_f32(x);
    if derivative {
        gelu_derivative_from_cdf_f32(x, cdf)
    } else {
        flush_subnormal(x * cdf)
    }
}

/// In place, `y ← GELU(y)`, and `deriv ← GELU′(y)` at the old values: one evaluation of Φ for
/// both (the same values as [`gelu`] and its backward pass, bit for bit in f32).
pub fn gelu_with_derivative<T: crate::host::HostFloat>(y: &mut [T], deriv: &mut [T]) {
    T::gelu_pair(y, deriv);
}

/// [`gelu_with_derivative`] in f32.
pub(crate) fn gelu_pair_f32(y: &mut [f32], deriv: &mut [f32]) {
    pulp::Arch::new().dispatch(GeluPairKernel { y, deriv });
}

/// [`gelu_with_derivative`] in f64 (libm's erf).
pub(crate) fn gelu_pair_f64(y: &mut [f64], deriv: &mut [f64]) {
    for (v, d) in y.iter_mut().zip(deriv.iter_mut()) {
        *d = gelu_f64(*v, true);
        *v = gelu_f64(*v, false);
    }
}

/// The loop of [`gelu_pair_f32`], compiled for each instruction set `pulp` dispatches to.
struct GeluPairKernel<'a> {
    y: &'a mut [f32],
    deriv: &'a mut [f32],
}

impl pulp::WithSimd for GeluPairKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (v, d) in self.y.iter_mut().zip(self.deriv.iter_mut()) {
            let x = *v;
            let cdf = normal_cdf_f32(x);
            *d = gelu_derivative_from_cdf_f32(x, cdf);
            *v = flush_subnormal(x * cdf);
        }
    }
}

fn gelu_f32_slice(x: &[f32], derivative: bool) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    pulp::Arch::new().dispatch(GeluKernel { x, out: &mut out, derivative });
    out
}

/// The GELU loop, compiled for each instruction set `pulp` dispatches to.
struct GeluKernel<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
    derivative: bool,
}

impl pulp::WithSimd for GeluKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        // Two loops so that each vectorises without a branch on `derivative`.
        if self.derivative {
            for (o, &v) in self.out.iter_mut().zip(self.x) {
                *o = gelu_f32(v, true);
            }
        } else {
            for (o, &v) in self.out.iter_mut().zip(self.x) {
                *o = gelu_f32(v, false);
            }
        }
    }
}

impl candle_core::CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        if self.derivative {
            "gelu-exact-derivative"
        } else {
            "gelu-exact"
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("gelu: the input must be contiguous".into()))?;
        let dv = self.derivative;
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(gelu_f32_slice(&v[a..b], dv)),
            CpuStorage::F64(v) => CpuStorage::F64(v[a..b].iter().map(|&x| gelu_f64(x, dv)).collect()),
            _ => return Err(candle_core::Error::Msg("gelu: f32 or f64 only".into())),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if self.derivative {
            return Err(candle_core::Error::BackwardNotSupported { op: "gelu-exact-derivative" });
        }
        let d = arg.contiguous()?.apply_op1_no_bwd(&Gelu { derivative: true })?;
        Ok(Some(grad_res.mul(&d)?))
    }
}

/// [`add_grouped`].
#[derive(Debug, Clone, Copy)]
struct AddGrouped;

/// (m, k, g) of an `[m, k]` input and `g·k` group values, checked.
fn grouped_dims(x: &Layout, b: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (m, k) = x.shape().dims2().map_err(|_| candle_core::Error::Msg(format!("add_grouped: x must be [m, k], got {:?}", x.shape())))?;
    let nb = b.shape().elem_count();
    if k == 0 || nb == 0 || !nb.is_multiple_of(k) || !m.is_multiple_of(nb / k) {
        return Err(candle_core::Error::Msg(format!("add_grouped: {:?} groups do not fit x {:?}", b.shape(), x.shape())));
    }
    Ok((m, k, nb / k))
}

fn add_grouped_slice<T: Copy + std::ops::Add<Output = T>>(x: &[T], b: &[T], m: usize, k: usize, g: usize) -> Vec<T> {
    let rows_per_group = m / g;
    let mut out = Vec::with_capacity(m * k);
    for (r, row) in x.chunks_exact(k).enumerate() {
        let bias = &b[(r / rows_per_group) * k..][..k];
        out.extend(row.iter().zip(bias).map(|(&a, &c)| a + c));
    }
    out
}

impl candle_core::CustomOp2 for AddGrouped {
    fn name(&self) -> &'static str {
        "add-grouped"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k, g) = grouped_dims(l1, l2)?;
        let msg = || candle_core::Error::Msg("add_grouped: the inputs must be contiguous".into());
        let (a1, b1) = l1.contiguous_offsets().ok_or_else(msg)?;
        let (a2, b2) = l2.contiguous_offsets().ok_or_else(msg)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(b)) => CpuStorage::F32(add_grouped_slice(&x[a1..b1], &b[a2..b2], m, k, g)),
            (CpuStorage::F64(x), CpuStorage::F64(b)) => CpuStorage::F64(add_grouped_slice(&x[a1..b1], &b[a2..b2], m, k, g)),
            _ => return Err(candle_core::Error::Msg("add_grouped: two f32 or two f64 inputs only".into())),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, b: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let k = grad_res.dim(1)?;
        let g = b.elem_count() / k.max(1);
        let sums = grad_res.contiguous()?.apply_op1_no_bwd(&GroupSum { groups: g })?;
        Ok((Some(grad_res.clone()), Some(sums.reshape(b.shape())?)))
    }
}

/// Column sums of each of `groups` equal blocks of rows of an `[m, k]` input: `[groups, k]`.
/// Sums are accumulated in f64 in row order.
#[derive(Debug, Clone, Copy)]
struct GroupSum {
    groups: usize,
}

fn group_sums<T: Copy + Into<f64>>(x: &[T], m: usize, k: usize, g: usize) -> Vec<f64> {
    let rows_per_group = m / g;
    let mut out = vec![0.0; g * k];
    for (r, row) in x.chunks_exact(k).enumerate() {
        let acc = &mut out[(r / rows_per_group) * k..][..k];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v.into();
        }
    }
    out
}

impl candle_core::CustomOp1 for GroupSum {
    fn name(&self) -> &'static str {
        "group-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = layout.shape().dims2()?;
        let g = self.groups;
        if g == 0 || !m.is_multiple_of(g) {
            return Err(candle_core::Error::Msg(format!("group_sum: {g} groups do not divide {m} rows")));
        }
        let (a, b) =
            layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("group_sum: the input must be contiguous".into()))?;
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(group_sums(&v[a..b], m, k, g).into_iter().map(|x| x as f32).collect()),
            CpuStorage::F64(v) => CpuStorage::F64(group_sums(&v[a..b], m, k, g)),
            _ => return Err(candle_core::Error::Msg("group_sum: f32 or f64 only".into())),
        };
        Ok((out, Shape::from((g, k))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The f32 GELU and its derivative agree with the exact erf (f64) to f32 resolution, over
    /// the range activations take and in the far tails.
    #[test]
    fn f32_gelu_matches_the_f64_one() {
        let (mut worst, mut worst_d) = (0.0f64, 0.0f64);
        for k in -20000..=20000 {
            let x = k as f64 * 0.0007;
            let xf = x as f32;
            let x = f64::from(xf);
            let (v, dv) = (gelu_f64(x, false), gelu_f64(x, true));
            worst = worst.max((f64::from(gelu_f32(xf, false)) - v).abs() / (1.0 + v.abs()));
            worst_d = worst_d.max((f64::from(gelu_f32(xf, true)) - dv).abs());
        }
        assert!(worst < 3e-7 && worst_d < 3e-7, "worst errors {worst}, {worst_d}");
        for x in [-1e30f32, -200.0, -30.0, 30.0, 200.0, 1e30] {
            let (v, dv) = (gelu_f64(f64::from(x), false), gelu_f64(f64::from(x), true));
            assert!((f64::from(gelu_f32(x, false)) - v).abs() <= 1e-6 * (1.0 + v.abs()), "gelu({x})");
            assert!((f64::from(gelu_f32(x, true)) - dv).abs() <= 1e-6, "gelu'({x})");
        }
        assert!(gelu_f32(f32::NAN, false).is_nan() && gelu_f32(f32::NAN, true).is_nan());
    }

    /// Where the exact GELU and its derivative fall below f32's normal range (x ≤ −14: both are
    /// below 10⁻⁴¹ there) they are exactly 0, and no input gives a subnormal output: a plateau
    /// of tiny values instead of 0 makes the products that consume saturated units produce
    /// subnormals, which slows x86 cores many times over.
    #[test]
    fn f32_gelu_is_zero_in_the_far_negative_tail_and_never_subnormal() {
        for k in 0..=20000 {
            let x = -14.0 - k as f32 * 0.01;
            assert_eq!(gelu_f32(x, false), 0.0, "gelu({x})");
            assert_eq!(gelu_f32(x, true), 0.0, "gelu'({x})");
            assert!(gelu_f64(f64::from(x), false).abs() < 1e-41);
        }
        for k in -400_000..=400_000 {
            let x = k as f32 * 1e-4;
            for dv in [false, true] {
                let v = gelu_f32(x, dv);
                assert!(v == 0.0 || v.is_normal(), "gelu{}({x}) = {v:e}", if dv { "'" } else { "" });
            }
        }
    }

    /// The vectorised slice path gives the scalar function's values bit for bit.
    #[test]
    fn gelu_slice_equals_the_scalar_function() {
        let x: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.013).collect();
        for dv in [false, true] {
            let s = gelu_f32_slice(&x, dv);
            for (a, &v) in s.iter().zip(&x) {
                assert_eq!(a.to_bits(), gelu_f32(v, dv).to_bits(), "x = {v}");
            }
        }
    }

    /// add_grouped adds the right row of b to each block, and its gradients are those of the
    /// broadcast sum it replaces (f64, so the comparison is exact up to summation order).
    #[test]
    fn add_grouped_matches_the_broadcast_sum() -> Result<()> {
        let dev = Device::Cpu;
        let (g, n, k) = (3usize, 4usize, 5usize);
        let xv: Vec<f64> = (0..g * n * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let bv: Vec<f64> = (0..g * k).map(|i| (i as f64 * 0.71).cos()).collect();
        let wv: Vec<f64> = (0..g * n * k).map(|i| 1.0 + (i as f64 * 0.13).cos()).collect();
        let w = Tensor::from_vec(wv, (g * n, k), &dev)?;
        let run = |fused: bool| -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
            let x = Var::from_tensor(&Tensor::from_vec(xv.clone(), (g * n, k), &dev)?)?;
            let b = Var::from_tensor(&Tensor::from_vec(bv.clone(), (g, k), &dev)?)?;
            let y = if fused {
                add_grouped(x.as_tensor(), b.as_tensor())?
            } else {
                let bb = b.as_tensor().unsqueeze(1)?.broadcast_as((g, n, k))?.reshape((g * n, k))?;
                (x.as_tensor() + bb)?
            };
            let loss = (y.sqr()? * &w)?.sum_all()?;
            let grads = loss.backward()?;
            let flat = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f64>());
            Ok((flat(&y)?, flat(grads.get(x.as_tensor()).unwrap())?, flat(grads.get(b.as_tensor()).unwrap())?))
        };
        let (y0, gx0, gb0) = run(false)?;
        let (y1, gx1, gb1) = run(true)?;
        assert_eq!(y0, y1);
        assert_eq!(gx0, gx1);
        for (a, b) in gb0.iter().zip(&gb1) {
            assert!((a - b).abs() <= 1e-12 * (1.0 + a.abs()), "{a} vs {b}");
        }
        // A bias ([k], one group) in f32.
        let x = Tensor::from_vec((0..12).map(|i| i as f32).collect::<Vec<_>>(), (4, 3), &dev)?;
        let b = Var::from_tensor(&Tensor::from_vec(vec![1.0f32, 2.0, 3.0], 3, &dev)?)?;
        let y = add_grouped(&x, b.as_tensor())?;
        assert_eq!(y.to_vec2::<f32>()?[3], vec![10.0, 12.0, 14.0]);
        let gb = y.sum_all()?.backward()?.get(b.as_tensor()).unwrap().to_vec1::<f32>()?;
        assert_eq!(gb, vec![4.0, 4.0, 4.0]);
        assert_eq!(y.dtype(), DType::F32);
        // Groups that do not divide the rows are refused.
        assert!(add_grouped(&x, &Tensor::zeros((3, 3), DType::F32, &dev)?).is_err());
        Ok(())
    }
}
