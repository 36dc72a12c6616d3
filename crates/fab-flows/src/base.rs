//! Base distributions of the flows.

use std::f64::consts::PI;

use candle_core::{DType, Device, Tensor, Var};
use fab_core::ParamSet;
use rand::{Rng, RngCore};

use crate::cpu::{with_slices, Real};
use crate::layer::param;
use crate::Result;

const LN_2PI: f64 = 1.8378770664093453;

/// The base distribution of a [`crate::FlowModel`].
#[derive(Debug, Clone)]
pub enum BaseDistribution {
    /// N(loc, diag(exp(log_scale))²) with trainable `loc` and `log_scale` (both 0 at start):
    /// the base of the RealNVP flows.
    DiagGaussian {
        /// Dimension.
        dim: usize,
        /// Location, `[dim]`.
        loc: Var,
        /// Log standard deviation, `[dim]`.
        log_scale: Var,
        /// The two parameters as a set (`loc`, `log_scale`).
        params: ParamSet,
    },
    /// Uniform on [−π, π) in the `circular` coordinates and N(0, 1) in the others (no
    /// parameters): the base of the alanine-dipeptide flow.
    UniformGaussian {
        /// Dimension.
        dim: usize,
        /// Whether each coordinate is circular.
        circular: Vec<bool>,
        /// Empty parameter set.
        params: ParamSet,
    },
}

impl BaseDistribution {
    /// A trainable diagonal Gaussian initialised at N(0, I).
    pub fn diag_gaussian(dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        let mut params = ParamSet::new();
        let loc = params.create("loc", vec![0.0; dim], &[dim], dtype, device)?;
        let log_scale = params.create("log_scale", vec![0.0; dim], &[dim], dtype, device)?;
        Ok(Self::DiagGaussian { dim, loc, log_scale, params })
    }

    /// Uniform on [−π, π) for the coordinates in `circular_dims`, standard normal elsewhere.
    pub fn uniform_gaussian(dim: usize, circular_dims: &[usize]) -> Result<Self> {
        let mut circular = vec![false; dim];
        for &i in circular_dims {
            if i >= dim {
                return Err(crate::FlowError::InvalidConfig(format!("circular dimension {i} ≥ dim {dim}")));
            }
            circular[i] = true;
        }
        Ok(Self::UniformGaussian { dim, circular, params: ParamSet::new() })
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        match self {
            Self::DiagGaussian { dim, .. } | Self::UniformGaussian { dim, .. } => *dim,
        }
    }

    /// Trainable parameters.
    pub fn params(&self) -> &ParamSet {
        match self {
            Self::DiagGaussian { params, .. } | Self::UniformGaussian { params, .. } => params,
        }
    }

    fn circular_mask(&self, like: &Tensor) -> Result<Option<Tensor>> {
        match self {
            Self::UniformGaussian { circular, dim, .. } => {
                let m: Vec<f64> = circular.iter().map(|&c| if c { 1.0 } else { 0.0 }).collect();
                Ok(Some(Tensor::from_vec(m, (1, *dim), &Device::Cpu)?.to_dtype(like.dtype())?.to_device(like.device())?))
            }
            _ => Ok(None),
        }
    }

    /// log density of the rows of `z` with candle ops.
    pub fn log_prob_t(&self, z: &Tensor, track: bool) -> Result<Tensor> {
        match self {
            Self::DiagGaussian { dim, loc, log_scale, .. } => {
                let ls = param(log_scale, track);
                let e = z.broadcast_sub(&param(loc, track))?.broadcast_mul(&ls.neg()?.exp()?)?;
                let q = (e.sqr()?.sum(1)? * -0.5)?;
                Ok(((q - ls.sum_all()?.to_dtype(z.dtype())?.broadcast_as(z.dim(0)?)?)? - 0.5 * LN_2PI * *dim as f64)?)
            }
            Self::UniformGaussian { circular, .. } => {
                let mask = self.circular_mask(z)?.expect("uniform-gaussian mask");
                let gauss = (z.sqr()?.broadcast_mul(&(1.0 - &mask)?)?.sum(1)? * -0.5)?;
                let nc = circular.iter().filter(|&&c| c).count() as f64;
                let ng = circular.len() as f64 - nc;
                Ok((gauss - (nc * (2.0 * PI).ln() + ng * 0.5 * LN_2PI))?)
            }
        }
    }

    /// Draws `n` points with their log density (reparameterised through the parameters when
    /// `track`).
    pub fn sample_t(&self, n: usize, rng: &mut dyn RngCore, dtype: DType, device: &Device, track: bool) -> Result<(Tensor, Tensor)> {
        let d = self.dim();
        match self {
            Self::DiagGaussian { loc, log_scale, .. } => {
                let eps = fab_core::rng::randn(rng, (n, d), dtype, device)?;
                let ls = param(log_scale, track);
                let z = eps.broadcast_mul(&ls.exp()?)?.broadcast_add(&param(loc, track))?;
                let lp = ((eps.sqr()?.sum(1)? * -0.5)? - 0.5 * LN_2PI * d as f64)?;
                let lp = lp.broadcast_sub(&ls.sum_all()?)?;
                Ok((z, lp))
            }
            Self::UniformGaussian { circular, .. } => {
                let mut v = vec![0.0; n * d];
                for i in 0..n {
                    for j in 0..d {
                        v[i * d + j] = if circular[j] {
                            rng.random_range(-PI..PI)
                        } else {
                            rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, rng)
                        };
                    }
                }
                let z = Tensor::from_vec(v, (n, d), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?;
                let lp = self.log_prob_t(&z, false)?;
                Ok((z, lp))
            }
        }
    }

    /// Host version: log density of each row into `lp`; with `coef`, returns ∂(Σ cᵢ log p(zᵢ))/∂z
    /// and adds parameter gradients to `pgrads` (`[loc, log_scale]`) if given.
    pub(crate) fn cpu_log_prob<T: Real>(
        &self,
        z: &[T],
        n: usize,
        lp: &mut [T],
        coef: Option<&[T]>,
        pgrads: Option<&mut [Vec<T>]>,
    ) -> Result<Option<Vec<T>>> {
        let d = self.dim();
        match self {
            Self::DiagGaussian { loc, log_scale, .. } => with_slices::<T, _>(&[loc, log_scale], |p| {
                let (loc, ls) = (p[0], p[1]);
                let inv: Vec<T> = ls.iter().map(|s| (-*s).exp()).collect();
                let c0 = T::from_f64(-0.5 * LN_2PI * d as f64) - ls.iter().copied().sum::<T>();
                for i in 0..n {
                    let mut acc = T::zero();
                    for j in 0..d {
                        let e = (z[i * d + j] - loc[j]) * inv[j];
                        acc += e * e;
                    }
                    lp[i] = c0 - T::from_f64(0.5) * acc;
                }
                let Some(c) = coef else { return Ok(None) };
                let mut gz = vec![T::zero(); n * d];
                let mut gloc = vec![T::zero(); d];
                let mut gls = vec![T::zero(); d];
                for i in 0..n {
                    for j in 0..d {
                        let e = (z[i * d + j] - loc[j]) * inv[j];
                        let g = -e * inv[j];
                        gz[i * d + j] = c[i] * g;
                        gloc[j] -= c[i] * g;
                        gls[j] += c[i] * (e * e - T::one());
                    }
                }
                if let Some(pg) = pgrads {
                    for j in 0..d {
                        pg[0][j] += gloc[j];
                        pg[1][j] += gls[j];
                    }
                }
                Ok(Some(gz))
            }),
            Self::UniformGaussian { circular, .. } => {
                let nc = circular.iter().filter(|&&c| c).count() as f64;
                let c0 = T::from_f64(-(nc * (2.0 * PI).ln() + (d as f64 - nc) * 0.5 * LN_2PI));
                for i in 0..n {
                    let mut acc = T::zero();
                    for j in 0..d {
                        if !circular[j] {
                            acc += z[i * d + j] * z[i * d + j];
                        }
                    }
                    lp[i] = c0 - T::from_f64(0.5) * acc;
                }
                let Some(c) = coef else { return Ok(None) };
                let mut gz = vec![T::zero(); n * d];
                for i in 0..n {
                    for j in 0..d {
                        if !circular[j] {
                            gz[i * d + j] = -c[i] * z[i * d + j];
                        }
                    }
                }
                Ok(Some(gz))
            }
        }
    }
}
