//! The Many Well target (docs/ALGORITHMS.md, "Targets"): `dim/2` independent copies of a 2-D
//! double well on the coordinate pairs (x_{2i}, x_{2i+1}).
//!
//! log p̃(x) = Σ_i [ 0.5·x_{2i} + 6·x_{2i}² − x_{2i}⁴ − 0.5·x_{2i+1}² ]   (unnormalised)
//!
//! i.e. the 2-D energy E(x₁, x₂) = −0.5x₁ − 6x₁² + x₁⁴ + ½x₂². Each pair has a deep well at
//! x₁ ≈ +1.75 (probability ≈ 0.844) and a shallow one at x₁ ≈ −1.71, so the 32-D target has
//! 2¹⁶ = 65 536 modes. log Z = dim/2 · [ln Z₁ + ½ ln 2π] with Z₁ = 11784.50927 (the reference's
//! hard-coded value; quadrature gives 11784.509265), i.e. 164.6956753197969 for dim = 32.

use candle_core::{DType, Device, Tensor};
use fab_core::{check_points, rng, ExactSample, LogDensity};
use rand::{Rng, RngCore};
use rand_distr::{Distribution, StandardNormal};

use crate::gmm::neg_inf_like;
use crate::two_paths::TwoPaths;
use crate::{Result, TargetError};

/// Z₁ = ∫ exp(−x⁴ + 6x² + 0.5x) dx, the reference's hard-coded value.
pub const Z1: f64 = 11784.50927;

/// log Z of one 2-D double well: ln Z₁ + ½ ln 2π = 10.293479707487306.
pub fn log_z_2d() -> f64 {
    Z1.ln() + 0.5 * (2.0 * std::f64::consts::PI).ln()
}

/// Stationary point of the 1-D part: bottom of the shallow (left) well.
pub const SHALLOW_WELL_X1: f64 = -1.71083;
/// Stationary point of the 1-D part: the barrier between the wells, the exact basin boundary
/// used by [`ManyWell::well_pattern`].
pub const BARRIER_X1: f64 = -0.04169;
/// Stationary point of the 1-D part: bottom of the deep (right) well.
pub const DEEP_WELL_X1: f64 = 1.75252;
/// The |x₁| of the mode test set's points (the reference's `centre`).
pub const MODE_CENTRE: f64 = 1.7;

/// Unnormalised log-density of the x₁ part of one double well, −x⁴ + 6x² + 0.5x.
pub fn log_p_x1(x: f64) -> f64 {
    -x.powi(4) + 6.0 * x * x + 0.5 * x
}

/// The Many Well target in `dim` (even) dimensions on a fixed dtype and device.
#[derive(Debug, Clone)]
pub struct ManyWell {
    dim: usize,
    /// `[1, dim]` coefficients of x, x², x⁴ (alternating pair entries).
    c1: Tensor,
    c2: Tensor,
    c4: Tensor,
    dtype: DType,
    device: Device,
}

impl ManyWell {
    /// `dim/2` double wells; `dim` must be even and ≥ 2 (32 in the paper).
    ///
    /// # Errors
    /// [`TargetError::InvalidConfig`] for an odd or zero dimension or a non-float dtype.
    pub fn new(dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        if dim == 0 || !dim.is_multiple_of(2) {
            return Err(TargetError::InvalidConfig(format!("Many Well: dim must be even and >= 2 (pairs of coordinates), got {dim}")));
        }
        if !dtype.is_float() {
            return Err(TargetError::InvalidConfig(format!("Many Well: dtype must be a float type, got {dtype:?}")));
        }
        let alt = |a: f64, b: f64| -> Result<Tensor> {
            let v: Vec<f64> = (0..dim).map(|j| if j % 2 == 0 { a } else { b }).collect();
            Ok(Tensor::from_vec(v, (1, dim), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)
        };
        Ok(Self { dim, c1: alt(0.5, 0.0)?, c2: alt(6.0, -0.5)?, c4: alt(-1.0, 0.0)?, dtype, device: device.clone() })
    }

    /// The paper's 32-D target.
    ///
    /// # Errors
    /// Tensor allocation failures.
    pub fn paper(dtype: DType, device: &Device) -> Result<Self> {
        Self::new(32, dtype, device)
    }

    /// Number of double wells, dim/2.
    pub fn n_wells(&self) -> usize {
        self.dim / 2
    }

    /// The dtype of samples.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of samples.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn value(&self, x: &Tensor) -> Result<Tensor> {
        let x2 = x.sqr()?;
        let t = (x.broadcast_mul(&self.c1)? + x2.broadcast_mul(&self.c2)?)?;
        let t = (t + x2.sqr()?.broadcast_mul(&self.c4)?)?;
        Ok(t.sum(1)?)
    }

    /// Exact samples of x₁ of one double well by rejection sampling
    /// (docs/ALGORITHMS.md, "Targets"): proposal 0.2·N(−1.7, 0.5²) + 0.8·N(1.7, 0.5²),
    /// envelope 3·Z₁ times the proposal density, 10·m proposals per round for a shortfall of m,
    /// keeping the first accepted ones.
    ///
    /// Randomness per proposal, in order: a uniform (component), a standard normal, a uniform
    /// (acceptance).
    pub fn sample_x1(n: usize, rng: &mut dyn RngCore) -> Vec<f64> {
        let k = 3.0 * Z1;
        let norm = 1.0 / (0.5 * (2.0 * std::f64::consts::PI).sqrt());
        let pdf = |z: f64| {
            let a = (z + 1.7) / 0.5;
            let b = (z - 1.7) / 0.5;
            norm * (0.2 * (-0.5 * a * a).exp() + 0.8 * (-0.5 * b * b).exp())
        };
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let m = n - out.len();
            for _ in 0..10 * m {
                let left = rng.random::<f64>() < 0.2;
                let e: f64 = StandardNormal.sample(rng);
                let z = if left { -1.7 } else { 1.7 } + 0.5 * e;
                let u = rng.random::<f64>() * k * pdf(z);
                if log_p_x1(z).exp() > u && out.len() < n {
                    out.push(z);
                }
            }
        }
        out
    }

    /// The mode test set: for `dim < 40` all 2^{dim/2} points with x_{2i} ∈ {−1.7, +1.7} and
    /// x_{2i+1} = 0 in meshgrid order (the last pair varies fastest, −1.7 first), for `dim ≥ 40`
    /// 10 000 random sign patterns drawn from `rng` (unused otherwise).
    ///
    /// Point k's pair i is +1.7 iff bit (dim/2 − 1 − i) of k is set, matching
    /// [`well_index`](Self::well_index).
    ///
    /// # Errors
    /// Tensor allocation failures.
    pub fn mode_test_set(&self, rng: &mut dyn RngCore) -> Result<Tensor> {
        let m = self.n_wells();
        let (n, signs): (usize, Vec<bool>) = if self.dim < 40 {
            let n = 1usize << m;
            let s = (0..n).flat_map(|k| (0..m).map(move |i| (k >> (m - 1 - i)) & 1 == 1)).collect();
            (n, s)
        } else {
            let n = 10_000;
            (n, (0..n * m).map(|_| rng.random::<bool>()).collect())
        };
        let mut v = vec![0.0f64; n * self.dim];
        for (idx, s) in signs.iter().enumerate() {
            let (r, i) = (idx / m, idx % m);
            v[r * self.dim + 2 * i] = if *s { MODE_CENTRE } else { -MODE_CENTRE };
        }
        Ok(Tensor::from_vec(v, (n, self.dim), &Device::Cpu)?.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    /// For every row, which well it lies in: `pattern[i]` is true iff x_{2i} is on the deep
    /// side of the barrier (x_{2i} > [`BARRIER_X1`]); `None` for rows with non-finite entries.
    ///
    /// # Errors
    /// Shape errors.
    pub fn well_pattern(&self, x: &Tensor) -> Result<Vec<Option<Vec<bool>>>> {
        let n = check_points(x, self.dim)?;
        let xs = fab_core::to_f64_vec(x)?;
        Ok((0..n)
            .map(|r| {
                let row = &xs[r * self.dim..(r + 1) * self.dim];
                row.iter().all(|v| v.is_finite()).then(|| (0..self.n_wells()).map(|i| row[2 * i] > BARRIER_X1).collect())
            })
            .collect())
    }

    /// The well of every row as an integer in the order of [`mode_test_set`](Self::mode_test_set)
    /// (pair 0 is the most significant bit, deep side = 1); `None` for non-finite rows.
    ///
    /// # Errors
    /// [`TargetError::InvalidConfig`] if dim/2 > 64; shape errors.
    pub fn well_index(&self, x: &Tensor) -> Result<Vec<Option<u64>>> {
        let m = self.n_wells();
        if m > 64 {
            return Err(TargetError::InvalidConfig(format!("well_index needs dim/2 <= 64 wells, got {m}; use well_pattern")));
        }
        Ok(self.well_pattern(x)?.into_iter().map(|p| p.map(|p| p.iter().fold(0u64, |acc, b| (acc << 1) | u64::from(*b)))).collect())
    }

    /// Fraction of the 2^{dim/2} wells holding at least one of the rows of `x` (non-finite rows
    /// are ignored).
    ///
    /// # Errors
    /// Shape errors.
    pub fn populated_well_fraction(&self, x: &Tensor) -> Result<f64> {
        let mut seen: Vec<Vec<bool>> = self.well_pattern(x)?.into_iter().flatten().collect();
        seen.sort();
        seen.dedup();
        Ok(seen.len() as f64 / 2f64.powi(self.n_wells() as i32))
    }
}

impl TwoPaths for ManyWell {
    fn point_dim(&self) -> usize {
        self.dim
    }

    /// Value (and gradient) with candle ops, for any device.
    fn eval_candle(&self, x: &Tensor, grad: bool) -> Result<(Tensor, Option<Tensor>)> {
        let xd = x.to_dtype(self.dtype)?;
        let lp = self.value(&xd)?;
        // Finite rows give finite values; NaN (from NaN or ±inf inputs) becomes −∞.
        let ok = lp.eq(&lp)?;
        let lp = ok.where_cond(&lp, &neg_inf_like(&lp)?)?.to_dtype(x.dtype())?;
        if !grad {
            return Ok((lp, None));
        }
        let x2 = xd.sqr()?;
        let g = (self.c1.broadcast_as(xd.shape())?.contiguous()? + (xd.broadcast_mul(&self.c2)? * 2.0)?)?;
        let g = (g + (x2.broadcast_mul(&xd)?.broadcast_mul(&self.c4)? * 4.0)?)?;
        // |g| < ∞ is false exactly for NaN and ±∞ entries.
        let finite = g.abs()?.lt(f64::INFINITY)?;
        let g = finite.where_cond(&g, &g.zeros_like()?)?;
        Ok((lp, Some(g.to_dtype(x.dtype())?)))
    }

    /// The same on the host in f64 in one pass (the CPU path: ~10× fewer memory passes than
    /// the ~25 candle ops).
    fn host_rows(&self, xs: &[f64], n: usize, grad: bool) -> (Vec<f64>, Vec<f64>) {
        let mut lp = vec![0.0f64; n];
        let mut g = if grad { vec![0.0f64; n * self.dim] } else { Vec::new() };
        for (r, out) in lp.iter_mut().enumerate() {
            let row = &xs[r * self.dim..(r + 1) * self.dim];
            let mut acc = 0.0;
            for (i, pair) in row.chunks_exact(2).enumerate() {
                let (a, b) = (pair[0], pair[1]);
                let a2 = a * a;
                acc += 0.5 * a + 6.0 * a2 - a2 * a2 - 0.5 * b * b;
                if grad {
                    let ga = 0.5 + 12.0 * a - 4.0 * a2 * a;
                    let gb = -b;
                    g[r * self.dim + 2 * i] = if ga.is_finite() { ga } else { 0.0 };
                    g[r * self.dim + 2 * i + 1] = if gb.is_finite() { gb } else { 0.0 };
                }
            }
            *out = if acc.is_nan() { f64::NEG_INFINITY } else { acc };
        }
        (lp, g)
    }
}

impl LogDensity for ManyWell {
    fn dim(&self) -> usize {
        self.dim
    }

    /// log p̃(x), `[n]`; rows with non-finite coordinates give −∞.
    fn log_prob(&self, x: &Tensor) -> fab_core::Result<Tensor> {
        Ok(self.eval(x, false)?.0)
    }

    /// Analytic gradient: ∂/∂x_{2i} = 0.5 + 12x − 4x³, ∂/∂x_{2i+1} = −x. Non-finite entries of the
    /// gradient are set to 0.
    fn log_prob_and_grad(&self, x: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        let (lp, g) = self.eval(x, true)?;
        let g = g.ok_or_else(|| fab_core::Error::invalid("Many Well: gradient missing"))?;
        Ok((lp, g))
    }

    /// dim/2 · (ln Z₁ + ½ ln 2π); 164.6956753197969 for dim = 32.
    fn log_normalizer(&self) -> Option<f64> {
        Some(self.n_wells() as f64 * log_z_2d())
    }

    /// Both paths exist: f64 on the host for CPU points, candle ops on any other device.
    fn device_agnostic(&self) -> bool {
        true
    }
}

impl ExactSample for ManyWell {
    /// Exact samples: the n·dim/2 values of x₁ by [`ManyWell::sample_x1`] (row-major over
    /// (sample, pair)), then n·dim/2 standard normals for x₂.
    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> fab_core::Result<Tensor> {
        let m = self.n_wells();
        let x1 = Self::sample_x1(n * m, rng);
        let x2 = rng::normal_vec(rng, n * m);
        let mut v = vec![0.0f64; n * self.dim];
        for idx in 0..n * m {
            let (r, i) = (idx / m, idx % m);
            v[r * self.dim + 2 * i] = x1[idx];
            v[r * self.dim + 2 * i + 1] = x2[idx];
        }
        Ok(Tensor::from_vec(v, (n, self.dim), &Device::Cpu)?.to_dtype(self.dtype)?.to_device(&self.device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_candle_paths_agree() {
        let t = ManyWell::new(6, DType::F64, &Device::Cpu).unwrap();
        let mut rng = fab_core::seeded_rng(3, 0);
        let mut v: Vec<f64> = rng::normal_vec(&mut rng, 6 * 50).iter().map(|z| 3.0 * z).collect();
        v[0] = f64::NAN;
        v[7] = f64::INFINITY;
        v[14] = f64::NEG_INFINITY;
        v[18] = 1e200;
        let x = Tensor::from_vec(v, (50, 6), &Device::Cpu).unwrap();
        let (a, ga) = t.eval_host(&x, true).unwrap();
        let (b, gb) = t.eval_candle(&x, true).unwrap();
        let (a, b) = (a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap());
        for (u, w) in a.iter().zip(&b) {
            assert!(u == w || (u - w).abs() < 1e-12 * (1.0 + w.abs()), "{u} vs {w}");
        }
        let ga = fab_core::to_f64_vec(&ga.unwrap()).unwrap();
        let gb = fab_core::to_f64_vec(&gb.unwrap()).unwrap();
        for (u, w) in ga.iter().zip(&gb) {
            assert!(u == w || (u - w).abs() < 1e-12 * (1.0 + w.abs()), "{u} vs {w}");
        }
        assert!(a[..4].iter().all(|v| *v == f64::NEG_INFINITY));
    }
}
