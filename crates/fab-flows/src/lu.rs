//! The learnable LU-parametrised invertible linear mixing layer.

use candle_core::{DType, Device, Tensor, Var};
use fab_core::{linalg, ParamSet};
use rand::RngCore;

use crate::cpu::{matmul, with_slices, CpuLayer, Real, Tape};
use crate::layer::{impl_flow_via_layer, param, Layer};
use crate::Result;

/// An invertible linear map W = P·L·(U + diag(sign·exp(log_s))) acting on row vectors, with P a
/// fixed permutation, L unit lower-triangular and U strictly upper-triangular (learnable), and
/// log|det W| = Σ log_s.
///
/// Density direction: z = x·W (log-det +Σ log_s); sampling direction: y = z·W⁻¹. Initialised
/// from the LU decomposition of a random orthogonal matrix (|det| = 1).
#[derive(Debug, Clone)]
pub struct LuLinear {
    dim: usize,
    lower: Var,
    upper: Var,
    log_s: Var,
    /// `P[perm[i], i] = 1`.
    perm: Vec<usize>,
    sign_s: Vec<f64>,
    params: ParamSet,
}

impl LuLinear {
    /// A layer initialised at the LU factors of a random orthogonal matrix (QR of a Gaussian
    /// matrix drawn from `rng`).
    pub fn new(dim: usize, rng: &mut dyn RngCore, dtype: DType, device: &Device) -> Result<Self> {
        let g = fab_core::rng::normal_vec(rng, dim * dim);
        let q = linalg::qr_q(&g, dim);
        let f = linalg::lu(&q, dim);
        let mut upper = vec![0.0; dim * dim];
        let mut log_s = vec![0.0; dim];
        let mut sign_s = vec![0.0; dim];
        for i in 0..dim {
            for j in i + 1..dim {
                upper[i * dim + j] = f.u[i * dim + j];
            }
            let s = f.u[i * dim + i];
            log_s[i] = s.abs().ln();
            sign_s[i] = if s < 0.0 { -1.0 } else { 1.0 };
        }
        let perm = (0..dim).map(|i| (0..dim).find(|&r| f.p[r * dim + i] == 1.0).expect("permutation matrix")).collect();
        Self::from_parts(dim, f.l, upper, log_s, perm, sign_s, dtype, device)
    }

    /// A layer from explicit factors (row-major `dim×dim` L and U; only the strict triangles
    /// are used).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        dim: usize,
        lower: Vec<f64>,
        upper: Vec<f64>,
        log_s: Vec<f64>,
        perm: Vec<usize>,
        sign_s: Vec<f64>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut params = ParamSet::new();
        let lower = params.create("lower", lower, &[dim, dim], dtype, device)?;
        let upper = params.create("upper", upper, &[dim, dim], dtype, device)?;
        let log_s = params.create("log_s", log_s, &[dim], dtype, device)?;
        Ok(Self { dim, lower, upper, log_s, perm, sign_s, params })
    }

    /// W and W⁻¹ in f64 on the host, from the current parameter values.
    fn host_w<T: Real>(&self, inverse: bool) -> Result<Vec<f64>> {
        let d = self.dim;
        with_slices::<T, _>(&[&self.lower, &self.upper, &self.log_s], |p| {
            let (l, u) = self.host_lu(p[0], p[1], p[2]);
            let pl = self.p_times(&l);
            let w = linalg::matmul(&pl, &u, d, d, d);
            if inverse {
                linalg::inverse(&w, d).ok_or_else(|| crate::FlowError::InvalidConfig("LU layer became singular".into()))
            } else {
                Ok(w)
            }
        })
    }

    /// (L with unit diagonal, U' = U_strict + diag(sign·e^{log_s})) as f64 row-major matrices.
    fn host_lu<T: Real>(&self, lower: &[T], upper: &[T], log_s: &[T]) -> (Vec<f64>, Vec<f64>) {
        let d = self.dim;
        let mut l = vec![0.0; d * d];
        let mut u = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                if j < i {
                    l[i * d + j] = lower[i * d + j].as_f64();
                } else if j > i {
                    u[i * d + j] = upper[i * d + j].as_f64();
                }
            }
            l[i * d + i] = 1.0;
            u[i * d + i] = self.sign_s[i] * log_s[i].as_f64().exp();
        }
        (l, u)
    }

    /// P·M for a row-major d×d matrix M (row perm[i] of the result is row i of M).
    fn p_times(&self, m: &[f64]) -> Vec<f64> {
        let d = self.dim;
        let mut out = vec![0.0; d * d];
        for (i, &r) in self.perm.iter().enumerate() {
            out[r * d..(r + 1) * d].copy_from_slice(&m[i * d..(i + 1) * d]);
        }
        out
    }

    fn w_tensor(&self, track: bool, like: &Tensor) -> Result<Tensor> {
        let d = self.dim;
        let dev = like.device();
        let dt = like.dtype();
        let mut ml = vec![0.0; d * d];
        let mut mu = vec![0.0; d * d];
        let mut p = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                if j < i {
                    ml[i * d + j] = 1.0;
                } else if j > i {
                    mu[i * d + j] = 1.0;
                }
            }
            p[self.perm[i] * d + i] = 1.0;
        }
        let c = |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(v, (d, d), &Device::Cpu)?.to_dtype(dt)?.to_device(dev)?) };
        let eye = Tensor::eye(d, dt, dev)?;
        let sign = Tensor::from_vec(self.sign_s.clone(), (1, d), &Device::Cpu)?.to_dtype(dt)?.to_device(dev)?;
        let l = (param(&self.lower, track).mul(&c(ml)?)? + &eye)?;
        let diag = eye.broadcast_mul(&param(&self.log_s, track).exp()?.unsqueeze(0)?.mul(&sign)?)?;
        let u = (param(&self.upper, track).mul(&c(mu)?)? + diag)?;
        Ok(c(p)?.matmul(&l)?.matmul(&u)?)
    }

    /// y = z·W⁻¹ by two triangular solves on candle tensors (differentiable).
    fn solve_t(&self, z: &Tensor) -> Result<Tensor> {
        let d = self.dim;
        let dt = z.dtype();
        let dev = z.device();
        let lower = param(&self.lower, true);
        let upper = param(&self.upper, true);
        let sign = Tensor::from_vec(self.sign_s.clone(), d, &Device::Cpu)?.to_dtype(dt)?.to_device(dev)?;
        let diag = param(&self.log_s, true).exp()?.mul(&sign)?;
        // a·U' = z, column by column.
        let mut a: Vec<Tensor> = Vec::with_capacity(d);
        for j in 0..d {
            let mut num = z.narrow(1, j, 1)?;
            if j > 0 {
                let prev = Tensor::cat(&a, 1)?;
                let ucol = upper.narrow(1, j, 1)?.narrow(0, 0, j)?;
                num = (num - prev.matmul(&ucol)?)?;
            }
            a.push(num.broadcast_div(&diag.narrow(0, j, 1)?.unsqueeze(0)?)?);
        }
        // b·L = a, from the last column down (L has a unit diagonal).
        let mut b: Vec<Option<Tensor>> = vec![None; d];
        for j in (0..d).rev() {
            let mut v = a[j].clone();
            if j + 1 < d {
                let later: Vec<Tensor> = (j + 1..d).map(|k| b[k].clone().expect("solved")).collect();
                let later = Tensor::cat(&later, 1)?;
                let lcol = lower.narrow(1, j, 1)?.narrow(0, j + 1, d - j - 1)?;
                v = (v - later.matmul(&lcol)?)?;
            }
            b[j] = Some(v);
        }
        // y = b·Pᵀ: y[perm[c]] = b[c].
        let mut cols: Vec<Option<Tensor>> = vec![None; d];
        for (c, bc) in b.into_iter().enumerate() {
            cols[self.perm[c]] = bc;
        }
        let cols: Vec<Tensor> = cols.into_iter().map(|c| c.expect("permutation")).collect();
        Ok(Tensor::cat(&cols, 1)?)
    }

    fn log_det_t(&self, n: usize, track: bool) -> Result<Tensor> {
        Ok(param(&self.log_s, track).sum_all()?.broadcast_as(n)?.contiguous()?)
    }
}

impl Layer for LuLinear {
    fn dim(&self) -> usize {
        self.dim
    }
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        let perm: Vec<f64> = self.perm.iter().map(|&p| p as f64).collect();
        vec![
            ("perm".into(), Tensor::from_vec(perm, self.dim, &Device::Cpu).expect("perm tensor")),
            ("sign_s".into(), Tensor::from_vec(self.sign_s.clone(), self.dim, &Device::Cpu).expect("sign tensor")),
        ]
    }
    fn forward_t(&self, z: &Tensor, track: bool) -> Result<(Tensor, Tensor)> {
        let n = z.dim(0)?;
        let y = if track {
            self.solve_t(z)?
        } else {
            let winv = match z.dtype() {
                DType::F32 => self.host_w::<f32>(true)?,
                _ => self.host_w::<f64>(true)?,
            };
            let winv = Tensor::from_vec(winv, (self.dim, self.dim), &Device::Cpu)?.to_dtype(z.dtype())?.to_device(z.device())?;
            z.matmul(&winv)?
        };
        Ok((y, self.log_det_t(n, track)?.neg()?))
    }
    fn inverse_t(&self, y: &Tensor, track: bool) -> Result<(Tensor, Tensor)> {
        let n = y.dim(0)?;
        let w = self.w_tensor(track, y)?;
        Ok((y.matmul(&w)?, self.log_det_t(n, track)?))
    }
    fn cpu_f64(&self) -> Option<&dyn CpuLayer<f64>> {
        Some(self)
    }
    fn cpu_f32(&self) -> Option<&dyn CpuLayer<f32>> {
        Some(self)
    }
}
impl_flow_via_layer!(LuLinear);

impl<T: Real> CpuLayer<T> for LuLinear {
    fn inverse(&self, x: Vec<T>, n: usize, ld: &mut [T], record: bool) -> Result<(Vec<T>, Option<Tape>)> {
        let d = self.dim;
        let w: Vec<T> = self.host_w::<T>(false)?.into_iter().map(T::from_f64).collect();
        let mut z = vec![T::zero(); n * d];
        matmul(&mut z, &x, false, &w, false, n, d, d, false);
        let s: T = with_slices::<T, _>(&[&self.log_s], |p| Ok(p[0].iter().copied().sum()))?;
        for l in ld.iter_mut() {
            *l += s;
        }
        Ok((z, record.then(|| Box::new((x, w)) as Tape)))
    }

    fn inverse_backward(&self, tape: Tape, gz: Vec<T>, gld: &[T], n: usize, pgrads: Option<&mut [Vec<T>]>) -> Result<Vec<T>> {
        let (x, w) = *tape.downcast::<(Vec<T>, Vec<T>)>().map_err(|_| candle_core::Error::Msg("LU layer: wrong tape".into()))?;
        let d = self.dim;
        let mut gx = vec![T::zero(); n * d];
        matmul(&mut gx, &gz, false, &w, true, n, d, d, false);
        if let Some(pg) = pgrads {
            let mut gw = vec![T::zero(); d * d];
            matmul(&mut gw, &x, true, &gz, false, d, n, d, false);
            let gw: Vec<f64> = gw.iter().map(|v| v.as_f64()).collect();
            with_slices::<T, _>(&[&self.lower, &self.upper, &self.log_s], |p| {
                let (l, u) = self.host_lu(p[0], p[1], p[2]);
                // W = P L U':  ∂/∂L = Pᵀ G U'ᵀ,  ∂/∂U' = Lᵀ Pᵀ G.
                let mut ptg = vec![0.0; d * d];
                for (i, &r) in self.perm.iter().enumerate() {
                    ptg[i * d..(i + 1) * d].copy_from_slice(&gw[r * d..(r + 1) * d]);
                }
                let mut ut = vec![0.0; d * d];
                let mut lt = vec![0.0; d * d];
                for i in 0..d {
                    for j in 0..d {
                        ut[i * d + j] = u[j * d + i];
                        lt[i * d + j] = l[j * d + i];
                    }
                }
                let gl = linalg::matmul(&ptg, &ut, d, d, d);
                let gu = linalg::matmul(&lt, &ptg, d, d, d);
                let sld: f64 = gld.iter().map(|v| v.as_f64()).sum();
                for i in 0..d {
                    for j in 0..d {
                        if j < i {
                            pg[0][i * d + j] += T::from_f64(gl[i * d + j]);
                        } else if j > i {
                            pg[1][i * d + j] += T::from_f64(gu[i * d + j]);
                        }
                    }
                    let g = gu[i * d + i] * u[i * d + i] + sld;
                    pg[2][i] += T::from_f64(g);
                }
                Ok(())
            })?;
        }
        Ok(gx)
    }

    fn forward(&self, z: Vec<T>, n: usize, ld: &mut [T]) -> Result<Vec<T>> {
        let d = self.dim;
        let winv: Vec<T> = self.host_w::<T>(true)?.into_iter().map(T::from_f64).collect();
        let mut y = vec![T::zero(); n * d];
        matmul(&mut y, &z, false, &winv, false, n, d, d, false);
        let s: T = with_slices::<T, _>(&[&self.log_s], |p| Ok(p[0].iter().copied().sum()))?;
        for l in ld.iter_mut() {
            *l -= s;
        }
        Ok(y)
    }
}
