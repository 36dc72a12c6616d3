//! Layers on periodic coordinates: a fixed circular shift and the wrap into [−B, B).

use candle_core::{Device, Tensor};
use fab_core::ParamSet;

use crate::cpu::{CpuLayer, Real, Tape};
use crate::layer::{impl_flow_via_layer, Layer};
use crate::Result;

/// Wraps v into [−B, B).
pub fn wrap(v: f64, bound: f64) -> f64 {
    (v + bound).rem_euclid(2.0 * bound) - bound
}

fn mask_tensor(dim: usize, circular: &[usize], like: &Tensor) -> Result<Tensor> {
    let mut m = vec![0.0; dim];
    for &c in circular {
        m[c] = 1.0;
    }
    Ok(Tensor::from_vec(m, (1, dim), &Device::Cpu)?.to_dtype(like.dtype())?.to_device(like.device())?)
}

/// `v − 2B·floor((v + B)/2B)` on the masked columns, with gradient 1 (the offset is constant).
fn wrap_t(v: &Tensor, mask: &Tensor, bound: f64) -> Result<Tensor> {
    let offset = ((v + bound)? / (2.0 * bound))?.floor()?.detach();
    let offset = (offset * (2.0 * bound))?.broadcast_mul(mask)?;
    Ok((v - offset)?)
}

fn check_dims(dim: usize, circular: &[usize]) -> Result<()> {
    if let Some(c) = circular.iter().find(|&&c| c >= dim) {
        return Err(crate::FlowError::InvalidConfig(format!("circular dimension {c} ≥ dim {dim}")));
    }
    Ok(())
}

/// Adds a fixed `shift` to the circular coordinates and wraps them into [−B, B) (sampling
/// direction); subtracts it in the density direction. Volume preserving.
#[derive(Debug, Clone)]
pub struct PeriodicShift {
    dim: usize,
    circular: Vec<usize>,
    bound: f64,
    shift: f64,
    params: ParamSet,
}

impl PeriodicShift {
    /// A shift of `shift` on `circular` coordinates of period 2·`bound`.
    pub fn new(dim: usize, circular: Vec<usize>, bound: f64, shift: f64) -> Result<Self> {
        check_dims(dim, &circular)?;
        Ok(Self { dim, circular, bound, shift, params: ParamSet::new() })
    }

    fn apply<T: Real>(&self, mut v: Vec<T>, n: usize, delta: f64) -> Vec<T> {
        for i in 0..n {
            for &c in &self.circular {
                let x = &mut v[i * self.dim + c];
                *x = T::from_f64(wrap(x.as_f64() + delta, self.bound));
            }
        }
        v
    }
}

impl Layer for PeriodicShift {
    fn dim(&self) -> usize {
        self.dim
    }
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![("shift".into(), Tensor::new(&[self.shift], &Device::Cpu).expect("shift"))]
    }
    fn forward_t(&self, z: &Tensor, _track: bool) -> Result<(Tensor, Tensor)> {
        let m = mask_tensor(self.dim, &self.circular, z)?;
        let y = wrap_t(&z.broadcast_add(&(&m * self.shift)?)?, &m, self.bound)?;
        Ok((y, Tensor::zeros(z.dim(0)?, z.dtype(), z.device())?))
    }
    fn inverse_t(&self, y: &Tensor, _track: bool) -> Result<(Tensor, Tensor)> {
        let m = mask_tensor(self.dim, &self.circular, y)?;
        let z = wrap_t(&y.broadcast_sub(&(&m * self.shift)?)?, &m, self.bound)?;
        Ok((z, Tensor::zeros(y.dim(0)?, y.dtype(), y.device())?))
    }
    fn cpu_f64(&self) -> Option<&dyn CpuLayer<f64>> {
        Some(self)
    }
    fn cpu_f32(&self) -> Option<&dyn CpuLayer<f32>> {
        Some(self)
    }
}
impl_flow_via_layer!(PeriodicShift);

impl<T: Real> CpuLayer<T> for PeriodicShift {
    fn inverse(&self, x: Vec<T>, n: usize, _ld: &mut [T], record: bool) -> Result<(Vec<T>, Option<Tape>)> {
        Ok((self.apply(x, n, -self.shift), record.then(|| Box::new(()) as Tape)))
    }
    fn inverse_backward(&self, _tape: Tape, gz: Vec<T>, _gld: &[T], _n: usize, _pgrads: Option<&mut [Vec<T>]>) -> Result<Vec<T>> {
        Ok(gz)
    }
    fn forward(&self, z: Vec<T>, n: usize, _ld: &mut [T]) -> Result<Vec<T>> {
        Ok(self.apply(z, n, self.shift))
    }
}

/// Wraps the circular coordinates into [−B, B) in the density direction; the identity in the
/// sampling direction. Placed last in a flow, it makes the density periodic in those
/// coordinates (points moved outside the box by MCMC get the density of their image inside).
#[derive(Debug, Clone)]
pub struct PeriodicWrap {
    dim: usize,
    circular: Vec<usize>,
    bound: f64,
    params: ParamSet,
}

impl PeriodicWrap {
    /// A wrap of `circular` coordinates of period 2·`bound`.
    pub fn new(dim: usize, circular: Vec<usize>, bound: f64) -> Result<Self> {
        check_dims(dim, &circular)?;
        Ok(Self { dim, circular, bound, params: ParamSet::new() })
    }
}

impl Layer for PeriodicWrap {
    fn dim(&self) -> usize {
        self.dim
    }
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn forward_t(&self, z: &Tensor, _track: bool) -> Result<(Tensor, Tensor)> {
        Ok((z.clone(), Tensor::zeros(z.dim(0)?, z.dtype(), z.device())?))
    }
    fn inverse_t(&self, y: &Tensor, _track: bool) -> Result<(Tensor, Tensor)> {
        let m = mask_tensor(self.dim, &self.circular, y)?;
        Ok((wrap_t(y, &m, self.bound)?, Tensor::zeros(y.dim(0)?, y.dtype(), y.device())?))
    }
    fn cpu_f64(&self) -> Option<&dyn CpuLayer<f64>> {
        Some(self)
    }
    fn cpu_f32(&self) -> Option<&dyn CpuLayer<f32>> {
        Some(self)
    }
}
impl_flow_via_layer!(PeriodicWrap);

impl<T: Real> CpuLayer<T> for PeriodicWrap {
    fn inverse(&self, mut x: Vec<T>, n: usize, _ld: &mut [T], record: bool) -> Result<(Vec<T>, Option<Tape>)> {
        for i in 0..n {
            for &c in &self.circular {
                let v = &mut x[i * self.dim + c];
                *v = T::from_f64(wrap(v.as_f64(), self.bound));
            }
        }
        Ok((x, record.then(|| Box::new(()) as Tape)))
    }
    fn inverse_backward(&self, _tape: Tape, gz: Vec<T>, _gld: &[T], _n: usize, _pgrads: Option<&mut [Vec<T>]>) -> Result<Vec<T>> {
        Ok(gz)
    }
    fn forward(&self, z: Vec<T>, _n: usize, _ld: &mut [T]) -> Result<Vec<T>> {
        Ok(z)
    }
}
