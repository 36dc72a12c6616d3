//! [`FlowModel`]: a base distribution pushed through a list of layers, with the fast CPU path.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use fab_core::{check_points, Grads, LogDensity, ParamSet, Proposal};
use rand::RngCore;

use crate::base::BaseDistribution;
use crate::cpu::{CpuLayer, Real, Tape};
use crate::{FlowError, Layer, Result};

/// Which implementation a [`FlowModel`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The hand-written CPU kernels when the model lives on the CPU and every layer has them,
    /// candle ops otherwise.
    #[default]
    Auto,
    /// Always candle ops and candle's autodiff (any device; the reference the CPU path is
    /// tested against).
    Candle,
}

/// Weights of a weighted log-likelihood computed from the (detached) log q values; `None` skips
/// the backward pass (see [`FlowModel::log_prob_backward_with`]).
pub type CoefFn<'a> = dyn FnMut(&[f64]) -> fab_core::Result<Option<Vec<f64>>> + 'a;

/// What the CPU density pass returns: the base-space points, the accumulated log-determinants
/// and one backward tape per layer.
type DensityPass<T> = (Vec<T>, Vec<T>, Vec<Option<Tape>>);

/// Batches of at least this many rows are processed by the CPU path as two row blocks, run
/// concurrently when rayon has more than one thread. The split does not depend on the number of
/// threads, so neither do the results.
const MIN_SPLIT_ROWS: usize = 128;

/// Rows of the first block of an `n`-row CPU pass (`n` when the batch is not split).
fn split_row(n: usize) -> usize {
    if n >= MIN_SPLIT_ROWS {
        n.div_ceil(2)
    } else {
        n
    }
}

/// Runs `first`, and `second` if `split`, concurrently through `rayon::join`.
fn join_blocks<A: Send, B: Send>(split: bool, first: impl FnOnce() -> A + Send, second: impl FnOnce() -> B + Send) -> (A, Option<B>) {
    if split {
        let (a, b) = rayon::join(first, second);
        (a, Some(b))
    } else {
        (first(), None)
    }
}

/// Runs `f` on the row blocks of the row-major `[n, d]` buffer `x` (see [`split_row`]): on all
/// rows (`x` moved in, no copy), or on the first `h` and the remaining rows concurrently (only
/// the second block is copied out). Returns the results and `h`.
fn on_row_blocks<T: Send, R: Send>(mut x: Vec<T>, n: usize, d: usize, f: impl Fn(Vec<T>, usize) -> R + Sync) -> (R, Option<R>, usize) {
    let h = split_row(n);
    if h == n {
        return (f(x, n), None, h);
    }
    let tail = x.split_off(h * d);
    let (a, b) = rayon::join(|| f(x, h), || f(tail, n - h));
    (a, Some(b), h)
}

/// A normalizing flow q(x): base distribution → layers → data space.
///
/// Sampling runs the layers' forward (sampling) direction in order; the density runs their
/// inverse in reverse order: log q(x) = log p_base(z) + Σ log|det ∂zₖ/∂zₖ₊₁|.
///
/// Besides [`LogDensity`] and [`Proposal`] (both gradient-free w.r.t. parameters), the model
/// offers [`log_prob_backward`](Self::log_prob_backward), the one differentiation every FAB loss
/// needs: parameter gradients of Σᵢ cᵢ log q(xᵢ) for constant weights cᵢ.
#[derive(Debug)]
pub struct FlowModel {
    base: BaseDistribution,
    layers: Vec<Box<dyn Layer>>,
    params: ParamSet,
    /// For every layer, the index of its first parameter in `params`.
    offsets: Vec<usize>,
    dtype: DType,
    device: Device,
    backend: Backend,
}

impl FlowModel {
    /// Assembles a model; parameter names become `base.*` and `layers.{i}.*`.
    ///
    /// # Errors
    /// If a layer's dimension differs from the base's.
    pub fn new(base: BaseDistribution, layers: Vec<Box<dyn Layer>>, dtype: DType, device: Device) -> Result<Self> {
        let dim = base.dim();
        let mut params = ParamSet::new();
        params.extend_prefixed("base", base.params())?;
        let mut offsets = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            if l.dim() != dim {
                return Err(FlowError::InvalidConfig(format!("layer {i} has dimension {} but the base has {dim}", l.dim())));
            }
            offsets.push(params.len());
            params.extend_prefixed(&format!("layers.{i}"), l.params())?;
        }
        Ok(Self { base, layers, params, offsets, dtype, device, backend: Backend::Auto })
    }

    /// Chooses the implementation (default [`Backend::Auto`]).
    pub fn set_backend(&mut self, backend: Backend) {
        self.backend = backend;
    }

    /// The trainable parameters, in a fixed order.
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The layers in sampling order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The base distribution.
    pub fn base(&self) -> &BaseDistribution {
        &self.base
    }

    /// The parameters' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The parameters' device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn use_cpu(&self) -> bool {
        self.backend == Backend::Auto
            && self.device.is_cpu()
            && match self.dtype {
                DType::F64 => self.layers.iter().all(|l| l.cpu_f64().is_some()),
                DType::F32 => self.layers.iter().all(|l| l.cpu_f32().is_some()),
                _ => false,
            }
    }

    fn check(&self, x: &Tensor) -> Result<usize> {
        let n = check_points(x, self.base.dim())?;
        Ok(n)
    }

    /// log q(x) with candle ops; with `track`, the result is differentiable w.r.t. the
    /// parameters (and w.r.t. `x` if it is a `Var`).
    pub fn log_prob_t(&self, x: &Tensor, track: bool) -> Result<Tensor> {
        self.check(x)?;
        let x = x.to_dtype(self.dtype)?;
        let mut z = x;
        let mut ld = Tensor::zeros(z.dim(0)?, self.dtype, z.device())?;
        for l in self.layers.iter().rev() {
            let (z2, l) = l.inverse_t(&z, track)?;
            z = z2;
            ld = (ld + l)?;
        }
        Ok((self.base.log_prob_t(&z, track)? + ld)?)
    }

    /// Draws `n` samples with log q, with candle ops; with `track`, both are differentiable
    /// w.r.t. the parameters (reparameterisation, for the reverse-KL baseline).
    pub fn sample_t(&self, n: usize, rng: &mut dyn RngCore, track: bool) -> Result<(Tensor, Tensor)> {
        let (mut z, mut lq) = self.base.sample_t(n, rng, self.dtype, &self.device, track)?;
        for l in &self.layers {
            let (z2, ld) = l.forward_t(&z, track)?;
            z = z2;
            lq = (lq - ld)?;
        }
        Ok((z, lq))
    }

    /// log q(x) and the parameter gradients of Σᵢ cᵢ log q(xᵢ), with `coef = c` (`[n]`).
    ///
    /// This is the gradient of every FAB loss (cᵢ = −w̄ᵢ/B with the self-normalised AIS or
    /// buffer weights) and of maximum likelihood (cᵢ = −1/B).
    pub fn log_prob_backward(&self, x: &Tensor, coef: &[f64]) -> Result<(Tensor, Grads)> {
        let n = self.check(x)?;
        if coef.len() != n {
            return Err(fab_core::Error::invalid(format!("{} weights for {n} points", coef.len())).into());
        }
        let (lp, grads) = self.log_prob_backward_with(x, &mut |_| Ok(Some(coef.to_vec())))?;
        Ok((lp, grads.expect("coefficients given")))
    }

    /// As [`log_prob_backward`](Self::log_prob_backward), but the weights are computed from
    /// the (detached) log q values by `coef_fn` — e.g. FAB's buffer weight correction
    /// exp((1−α)(log q − log q_old)), which needs log q before the backward pass. If `coef_fn`
    /// returns `None` the backward pass is skipped (e.g. a non-finite loss) and no gradients
    /// are returned. One forward and at most one backward pass.
    pub fn log_prob_backward_with(&self, x: &Tensor, coef_fn: &mut CoefFn<'_>) -> Result<(Tensor, Option<Grads>)> {
        let n = self.check(x)?;
        if self.use_cpu() {
            return match self.dtype {
                DType::F64 => self.cpu_backward::<f64>(x, coef_fn),
                _ => self.cpu_backward::<f32>(x, coef_fn),
            };
        }
        let lp = self.log_prob_t(x, true)?;
        let Some(coef) = coef_fn(&fab_core::to_f64_vec(&lp)?)? else { return Ok((lp.detach(), None)) };
        if coef.len() != n {
            return Err(fab_core::Error::invalid(format!("{} weights for {n} points", coef.len())).into());
        }
        let c = Tensor::from_slice(&coef, n, &Device::Cpu)?.to_dtype(self.dtype)?.to_device(x.device())?;
        let store = (&lp * c)?.sum_all()?.backward()?;
        Ok((lp.detach(), Some(self.params.grads_from_store(&store))))
    }

    fn host<T: Real>(&self, x: &Tensor) -> Result<Vec<T>> {
        Ok(x.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1::<T>()?)
    }

    /// Density pass on the host: log q, and the tapes if `record`.
    fn cpu_density<T: Real>(&self, x: Vec<T>, n: usize, record: bool) -> Result<DensityPass<T>> {
        let mut ld = vec![T::zero(); n];
        let mut tapes = Vec::with_capacity(self.layers.len());
        let mut z = x;
        for l in self.layers.iter().rev() {
            let cpu: &dyn CpuLayer<T> = T::cpu_layer(l.as_ref()).expect("checked by use_cpu");
            let (z2, tape) = cpu.inverse(z, n, &mut ld, record)?;
            z = z2;
            tapes.push(tape);
        }
        Ok((z, ld, tapes))
    }

    /// Backward through the layers (tapes in density order) from ∂L/∂z of the base.
    fn cpu_layers_backward<T: Real>(
        &self,
        mut tapes: Vec<Option<Tape>>,
        mut g: Vec<T>,
        gld: &[T],
        n: usize,
        mut pgrads: Option<&mut Vec<Vec<T>>>,
    ) -> Result<Vec<T>> {
        // Density order is layers reversed; backward goes layer 0 → last.
        for (i, l) in self.layers.iter().enumerate() {
            let tape = tapes.pop().flatten().expect("recorded tape");
            let cpu: &dyn CpuLayer<T> = T::cpu_layer(l.as_ref()).expect("checked by use_cpu");
            let lo = self.offsets[i];
            let hi = self.offsets.get(i + 1).copied().unwrap_or(self.params.len());
            let pg = pgrads.as_deref_mut().map(|p| &mut p[lo..hi]);
            g = cpu.inverse_backward(tape, g, gld, n, pg)?;
        }
        Ok(g)
    }

    fn cpu_backward<T: Real>(&self, x: &Tensor, coef_fn: &mut CoefFn<'_>) -> Result<(Tensor, Option<Grads>)> {
        let n = x.dim(0)?;
        let d = self.base.dim();
        // Density passes of the two row blocks (concurrently when threads allow).
        let (a, b, h) = on_row_blocks(self.host::<T>(x)?, n, d, |rows, m| self.cpu_density::<T>(rows, m, true));
        let (a, b) = (a?, b.transpose()?);
        let mut lp = vec![T::zero(); n];
        for ((z, ld, _), lp) in std::iter::once(&a).chain(&b).zip(lp.chunks_mut(h.max(1))) {
            let m = ld.len();
            self.base.cpu_log_prob(z, m, lp, None, None)?;
            for (l, d) in lp.iter_mut().zip(ld) {
                *l += *d;
            }
        }
        let lp_f64: Vec<f64> = lp.iter().map(|v| v.as_f64()).collect();
        let lp_t = Tensor::from_vec(lp, n, &Device::Cpu)?;
        let Some(coef) = coef_fn(&lp_f64)? else { return Ok((lp_t, None)) };
        if coef.len() != n {
            return Err(fab_core::Error::invalid(format!("{} weights for {n} points", coef.len())).into());
        }
        let c: Vec<T> = coef.iter().map(|&v| T::from_f64(v)).collect();
        // Backward passes of the blocks, each into its own gradient buffers; the block sums are
        // added in block order, so the result does not depend on the number of threads.
        let block_grads = |(z, _, tapes): DensityPass<T>, c: &[T]| -> Result<Vec<Vec<T>>> {
            let m = c.len();
            let mut pgrads: Vec<Vec<T>> = self.params.vars().iter().map(|v| vec![T::zero(); v.elem_count()]).collect();
            let nb = self.base.params().len();
            let mut scratch = vec![T::zero(); m];
            let gz = self.base.cpu_log_prob(&z, m, &mut scratch, Some(c), Some(&mut pgrads[..nb]))?.expect("coef given");
            self.cpu_layers_backward(tapes, gz, c, m, Some(&mut pgrads))?;
            Ok(pgrads)
        };
        let (ga, gb) = join_blocks(b.is_some(), || block_grads(a, &c[..h]), || block_grads(b.expect("second block"), &c[h..]));
        let (ga, gb) = (ga?, gb.transpose()?);
        let mut pgrads = ga;
        if let Some(gb) = gb {
            for (a, b) in pgrads.iter_mut().zip(&gb) {
                for (u, v) in a.iter_mut().zip(b) {
                    *u += *v;
                }
            }
        }
        let grads = pgrads
            .into_iter()
            .zip(self.params.vars())
            .map(|(g, v)| Ok(Some(Tensor::from_vec(g, v.shape(), &Device::Cpu)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((lp_t, Some(Grads(grads))))
    }

    fn cpu_log_prob<T: Real>(&self, x: &Tensor, with_grad: bool) -> Result<(Tensor, Option<Tensor>)> {
        let n = x.dim(0)?;
        let d = self.base.dim();
        // Rows are independent here: the blocks give bit-for-bit the rows of one pass.
        let (a, b, _) = on_row_blocks(self.host::<T>(x)?, n, d, |rows, m| self.cpu_log_prob_rows::<T>(rows, m, with_grad));
        let (mut lp, mut g) = a?;
        if let Some(b) = b {
            let (lp_b, g_b) = b?;
            lp.extend_from_slice(&lp_b);
            if let (Some(g), Some(g_b)) = (g.as_mut(), g_b) {
                g.extend_from_slice(&g_b);
            }
        }
        let dev = x.device();
        let lp = Tensor::from_vec(lp, n, &Device::Cpu)?.to_dtype(x.dtype())?.to_device(dev)?;
        let g = match g {
            Some(g) => Some(Tensor::from_vec(g, (n, d), &Device::Cpu)?.to_dtype(x.dtype())?.to_device(dev)?),
            None => None,
        };
        Ok((lp, g))
    }

    /// log q of `n` host rows, and ∂/∂x of Σ log q if `with_grad`.
    fn cpu_log_prob_rows<T: Real>(&self, x: Vec<T>, n: usize, with_grad: bool) -> Result<(Vec<T>, Option<Vec<T>>)> {
        let (z, ld, tapes) = self.cpu_density::<T>(x, n, with_grad)?;
        let mut lp = vec![T::zero(); n];
        let ones = vec![T::one(); n];
        let gz = self.base.cpu_log_prob(&z, n, &mut lp, with_grad.then_some(&ones[..]), None)?;
        for (l, dd) in lp.iter_mut().zip(&ld) {
            *l += *dd;
        }
        let g = match gz {
            Some(gz) => Some(self.cpu_layers_backward(tapes, gz, &ones, n, None)?),
            None => None,
        };
        Ok((lp, g))
    }

    fn cpu_sample<T: Real>(&self, n: usize, rng: &mut dyn RngCore) -> Result<(Tensor, Tensor)> {
        let d = self.base.dim();
        let (z, lq) = self.base.sample_t(n, rng, self.dtype, &self.device, false)?;
        let z = self.host::<T>(&z)?;
        let mut lq = self.host::<T>(&lq)?;
        let forward_rows = |mut z: Vec<T>, m: usize| -> Result<(Vec<T>, Vec<T>)> {
            let mut ld = vec![T::zero(); m];
            for l in &self.layers {
                let cpu: &dyn CpuLayer<T> = T::cpu_layer(l.as_ref()).expect("checked by use_cpu");
                z = cpu.forward(z, m, &mut ld)?;
            }
            Ok((z, ld))
        };
        let (a, b, _) = on_row_blocks(z, n, d, forward_rows);
        let (mut x, mut ld) = a?;
        if let Some(b) = b {
            let (x_b, ld_b) = b?;
            x.extend_from_slice(&x_b);
            ld.extend_from_slice(&ld_b);
        }
        for (q, l) in lq.iter_mut().zip(&ld) {
            *q -= *l;
        }
        Ok((Tensor::from_vec(x, (n, d), &Device::Cpu)?, Tensor::from_vec(lq, n, &Device::Cpu)?))
    }

    /// Every layer's fixed buffers, named `layers.{i}.{name}`.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.buffers().into_iter().map(move |(n, t)| (format!("layers.{i}.{n}"), t)))
            .collect()
    }

    /// Saves parameters and buffers to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map = self.params.to_tensors()?;
        for (n, t) in self.buffers() {
            map.insert(format!("buffer.{n}"), t.to_dtype(DType::F64)?);
        }
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Loads parameters saved by [`save`](Self::save) into this model.
    ///
    /// # Errors
    /// [`FlowError::Checkpoint`] if a parameter is missing or mis-shaped, or if the fixed buffers
    /// (permutations, masks, shifts) differ — i.e. the model was built from another
    /// configuration or seed.
    pub fn load(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu)?;
        for (n, t) in self.buffers() {
            let key = format!("buffer.{n}");
            let saved = map.get(&key).ok_or_else(|| FlowError::Checkpoint(format!("{} has no {key}", path.display())))?;
            let a = fab_core::to_f64_vec(saved)?;
            let b = fab_core::to_f64_vec(&t)?;
            if a != b {
                return Err(FlowError::Checkpoint(format!(
                    "{key} differs: the checkpoint was made with another flow configuration or seed"
                )));
            }
        }
        self.params.load_tensors(&map).map_err(|e| FlowError::Checkpoint(e.to_string()))
    }

    /// A detached copy of every parameter (for tests and "before/after" comparisons).
    pub fn snapshot(&self) -> Result<Vec<Tensor>> {
        self.params.vars().iter().map(|v| Ok(v.as_tensor().copy()?)).collect()
    }

    /// Restores parameters from a [`snapshot`](Self::snapshot).
    pub fn restore(&self, snap: &[Tensor]) -> Result<()> {
        for (v, t) in self.params.vars().iter().zip(snap) {
            v.set(t)?;
        }
        Ok(())
    }

    /// All parameter variables (shorthand for `params().vars()`).
    pub fn vars(&self) -> &[Var] {
        self.params.vars()
    }
}

impl LogDensity for FlowModel {
    fn dim(&self) -> usize {
        self.base.dim()
    }

    fn log_prob(&self, x: &Tensor) -> fab_core::Result<Tensor> {
        self.check(x)?;
        if self.use_cpu() {
            let (lp, _) = match self.dtype {
                DType::F64 => self.cpu_log_prob::<f64>(x, false)?,
                _ => self.cpu_log_prob::<f32>(x, false)?,
            };
            return Ok(lp);
        }
        Ok(self.log_prob_t(x, false)?.to_dtype(x.dtype())?)
    }

    fn log_prob_and_grad(&self, x: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        self.check(x)?;
        if self.use_cpu() {
            let (lp, g) = match self.dtype {
                DType::F64 => self.cpu_log_prob::<f64>(x, true)?,
                _ => self.cpu_log_prob::<f32>(x, true)?,
            };
            return Ok((lp, g.expect("gradient requested")));
        }
        let xv = Var::from_tensor(&x.detach().to_dtype(self.dtype)?)?;
        let lp = self.log_prob_t(xv.as_tensor(), false)?;
        let store = lp.sum_all()?.backward()?;
        let g = store.get(xv.as_tensor()).cloned().unwrap_or(xv.as_tensor().zeros_like()?);
        Ok((lp.detach().to_dtype(x.dtype())?, g.to_dtype(x.dtype())?))
    }

    fn log_normalizer(&self) -> Option<f64> {
        Some(0.0)
    }
}

impl Proposal for FlowModel {
    fn sample_and_log_prob(&self, n: usize, rng: &mut dyn RngCore) -> fab_core::Result<(Tensor, Tensor)> {
        if self.use_cpu() {
            return Ok(match self.dtype {
                DType::F64 => self.cpu_sample::<f64>(n, rng)?,
                _ => self.cpu_sample::<f32>(n, rng)?,
            });
        }
        let (x, lq) = self.sample_t(n, rng, false)?;
        Ok((x.detach(), lq.detach()))
    }
}
