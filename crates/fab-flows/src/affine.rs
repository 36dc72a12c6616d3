//! The RealNVP affine coupling layer with a channel split and an interleaved MLP output.

use candle_core::{DType, Device, Tensor, D};
use fab_core::ParamSet;
use rand::RngCore;

use crate::cpu::{CpuLayer, Real, Tape};
use crate::layer::{impl_flow_via_layer, Layer};
use crate::nets::{LinearInit, Mlp, MlpTape};
use crate::Result;

/// Affine coupling (Dinh et al., RealNVP) with a channel split:
/// the first d₁ = ⌈d/2⌉ coordinates pass through and condition an MLP whose output is read
/// interleaved as (shift₀, log-scale₀, shift₁, log-scale₁, …); in the sampling direction
/// y₂ = z₂ · exp(s) + t, log|det| = Σ s.
///
/// The last MLP layer is zero-initialised, so the layer is the identity at initialisation.
#[derive(Debug, Clone)]
pub struct AffineCoupling {
    dim: usize,
    d1: usize,
    mlp: Mlp,
    params: ParamSet,
}

impl AffineCoupling {
    /// A coupling on `dim` coordinates with an MLP of `n_hidden_layers` hidden layers of width
    /// `hidden` (the FAB GMM/Many Well flows use 2 hidden layers).
    pub fn new(dim: usize, hidden: usize, n_hidden_layers: usize, rng: &mut dyn RngCore, dtype: DType, device: &Device) -> Result<Self> {
        Self::with_last_init(dim, hidden, n_hidden_layers, LinearInit::Constant { weight: 0.0, bias: 0.0 }, rng, dtype, device)
    }

    /// As [`new`](Self::new) but with a chosen initialisation of the MLP's last layer (tests use
    /// a random one to get a non-identity layer).
    pub fn with_last_init(
        dim: usize,
        hidden: usize,
        n_hidden_layers: usize,
        last_init: LinearInit,
        rng: &mut dyn RngCore,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if dim < 2 {
            return Err(crate::FlowError::InvalidConfig(format!("affine coupling needs dim ≥ 2, got {dim}")));
        }
        let d1 = dim.div_ceil(2);
        let mut widths = vec![d1];
        widths.extend(std::iter::repeat_n(hidden, n_hidden_layers));
        widths.push(2 * (dim - d1));
        let mut params = ParamSet::new();
        let mlp = Mlp::new(&mut params, "mlp", &widths, last_init, rng, dtype, device)?;
        Ok(Self { dim, d1, mlp, params })
    }

    fn shift_and_log_scale(&self, p: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = p.dim(0)?;
        let p = p.reshape((n, self.dim - self.d1, 2))?;
        Ok((p.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?, p.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?))
    }
}

impl Layer for AffineCoupling {
    fn dim(&self) -> usize {
        self.dim
    }
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn forward_t(&self, z: &Tensor, track: bool) -> Result<(Tensor, Tensor)> {
        let z1 = z.narrow(1, 0, self.d1)?;
        let z2 = z.narrow(1, self.d1, self.dim - self.d1)?;
        let (t, s) = self.shift_and_log_scale(&self.mlp.forward_t(&z1, track)?)?;
        let y2 = (z2 * s.exp()?)?.add(&t)?;
        Ok((Tensor::cat(&[&z1, &y2], 1)?, s.sum(1)?))
    }
    fn inverse_t(&self, y: &Tensor, track: bool) -> Result<(Tensor, Tensor)> {
        let y1 = y.narrow(1, 0, self.d1)?;
        let y2 = y.narrow(1, self.d1, self.dim - self.d1)?;
        let (t, s) = self.shift_and_log_scale(&self.mlp.forward_t(&y1, track)?)?;
        let z2 = (y2 - t)?.mul(&s.neg()?.exp()?)?;
        Ok((Tensor::cat(&[&y1, &z2], 1)?, s.sum(1)?.neg()?))
    }
    fn cpu_f64(&self) -> Option<&dyn CpuLayer<f64>> {
        Some(self)
    }
    fn cpu_f32(&self) -> Option<&dyn CpuLayer<f32>> {
        Some(self)
    }
}
impl_flow_via_layer!(AffineCoupling);

struct AffineTape<T> {
    mlp: MlpTape<T>,
    /// exp(−s), `[n, d₂]`.
    inv_scale: Vec<T>,
    /// The transformed half of the output, `[n, d₂]`.
    z2: Vec<T>,
}

impl<T: Real> CpuLayer<T> for AffineCoupling {
    fn inverse(&self, mut x: Vec<T>, n: usize, ld: &mut [T], record: bool) -> Result<(Vec<T>, Option<Tape>)> {
        let (d, d1) = (self.dim, self.d1);
        let d2 = d - d1;
        let x1 = crate::cpu::gather_cols(&x, n, d, &(0..d1).collect::<Vec<_>>());
        let (p, mlp_tape) = self.mlp.cpu_forward(x1, n, record)?;
        let mut inv_scale = if record { vec![T::zero(); n * d2] } else { Vec::new() };
        let mut z2 = if record { vec![T::zero(); n * d2] } else { Vec::new() };
        for i in 0..n {
            let row = &mut x[i * d + d1..(i + 1) * d];
            let prow = &p[i * 2 * d2..(i + 1) * 2 * d2];
            let mut acc = T::zero();
            for j in 0..d2 {
                let (t, s) = (prow[2 * j], prow[2 * j + 1]);
                let e = (-s).exp();
                row[j] = (row[j] - t) * e;
                acc += s;
                if record {
                    inv_scale[i * d2 + j] = e;
                    z2[i * d2 + j] = row[j];
                }
            }
            ld[i] -= acc;
        }
        let tape = mlp_tape.map(|mlp| Box::new(AffineTape { mlp, inv_scale, z2 }) as Tape);
        Ok((x, tape))
    }

    fn inverse_backward(&self, tape: Tape, mut gz: Vec<T>, gld: &[T], n: usize, pgrads: Option<&mut [Vec<T>]>) -> Result<Vec<T>> {
        let tape = *tape.downcast::<AffineTape<T>>().map_err(|_| candle_core::Error::Msg("affine coupling: wrong tape".into()))?;
        let (d, d1) = (self.dim, self.d1);
        let d2 = d - d1;
        // z₂ = (x₂ − t)·e^{−s}, ld −= Σ s:
        // ∂/∂x₂ = g·e^{−s};  ∂/∂t = −g·e^{−s};  ∂/∂s = −g·z₂ − g_ld.
        let mut gp = vec![T::zero(); n * 2 * d2];
        for i in 0..n {
            for j in 0..d2 {
                let g = gz[i * d + d1 + j];
                let e = tape.inv_scale[i * d2 + j];
                let gx2 = g * e;
                gz[i * d + d1 + j] = gx2;
                gp[i * 2 * d2 + 2 * j] = -gx2;
                gp[i * 2 * d2 + 2 * j + 1] = -g * tape.z2[i * d2 + j] - gld[i];
            }
        }
        let gx1 = self.mlp.cpu_backward(tape.mlp, gp, n, pgrads, true)?.expect("input grad requested");
        for i in 0..n {
            for j in 0..d1 {
                gz[i * d + j] += gx1[i * d1 + j];
            }
        }
        Ok(gz)
    }

    fn forward(&self, mut z: Vec<T>, n: usize, ld: &mut [T]) -> Result<Vec<T>> {
        let (d, d1) = (self.dim, self.d1);
        let d2 = d - d1;
        let z1 = crate::cpu::gather_cols(&z, n, d, &(0..d1).collect::<Vec<_>>());
        let (p, _) = self.mlp.cpu_forward(z1, n, false)?;
        for i in 0..n {
            let row = &mut z[i * d + d1..(i + 1) * d];
            let prow = &p[i * 2 * d2..(i + 1) * 2 * d2];
            let mut acc = T::zero();
            for j in 0..d2 {
                let (t, s) = (prow[2 * j], prow[2 * j + 1]);
                row[j] = row[j] * s.exp() + t;
                acc += s;
            }
            ld[i] += acc;
        }
        Ok(z)
    }
}
