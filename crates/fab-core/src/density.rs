//! Batched log-densities and the samplers that go with them.

use candle_core::{Device, Tensor, Var};
use rand::RngCore;
use std::sync::Arc;

use crate::{Error, Result};

/// A batched, possibly unnormalised log-density log p̃ over ℝ^d.
///
/// Implementations are object safe (`&dyn LogDensity`) so that MCMC kernels and AIS can hold any
/// target. **Bad points are values, not errors**: a point outside the support returns `-inf`;
/// `Err` is reserved for shape, device or I/O faults.
///
/// # Shapes
/// `x: [n, dim]` → `[n]`; gradients have the shape of `x`. Results use `x`'s dtype and device.
pub trait LogDensity: Send + Sync {
    /// Dimension d of the space.
    fn dim(&self) -> usize;

    /// log p̃(x) for every row of `x`.
    fn log_prob(&self, x: &Tensor) -> Result<Tensor>;

    /// log p̃(x) and ∇ₓ log p̃(x) in one call.
    ///
    /// The provided implementation differentiates [`log_prob`](Self::log_prob) with candle's
    /// autodiff; targets with analytic gradients (forces) override it.
    fn log_prob_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        autodiff_log_prob_and_grad(self, x)
    }

    /// log Z of the density, if it is known (0 for a normalised density).
    fn log_normalizer(&self) -> Option<f64> {
        None
    }

    /// Whether the value and gradient run with candle ops on whatever device the points are on
    /// (the Gaussian mixtures, Many Well). Callers then evaluate it beside a GPU flow with no
    /// host round trip; otherwise ([`OnDevice::for_points_on`]) on the host. `false` unless a
    /// density says so.
    fn device_agnostic(&self) -> bool {
        false
    }
}

/// Evaluates a density on a fixed device, wherever its inputs live: inputs are copied to
/// `device`, results copied back to the input's device (no copy when the devices agree).
///
/// This is how a target computed on the CPU (e.g. the alanine-dipeptide force field) serves
/// AIS running beside a flow on a GPU, and how host data reaches a flow on a GPU.
pub struct OnDevice<'a> {
    inner: &'a dyn LogDensity,
    device: Device,
}

impl<'a> OnDevice<'a> {
    /// Wraps `inner`, whose inputs must be on `device`.
    pub fn new(inner: &'a dyn LogDensity, device: Device) -> Self {
        Self { inner, device }
    }

    /// `inner` for points living on `points`: evaluated there when the density is
    /// [`device_agnostic`](LogDensity::device_agnostic), on the host otherwise (a molecule's
    /// force field), with the copies across the bus that this implies.
    pub fn for_points_on(inner: &'a dyn LogDensity, points: &Device) -> Self {
        let device = if inner.device_agnostic() { points.clone() } else { Device::Cpu };
        Self { inner, device }
    }

    /// The device the density is evaluated on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl std::fmt::Debug for OnDevice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDevice").field("dim", &self.inner.dim()).field("device", &self.device).finish()
    }
}

impl LogDensity for OnDevice<'_> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().same_device(&self.device) {
            return self.inner.log_prob(x);
        }
        Ok(self.inner.log_prob(&x.to_device(&self.device)?)?.to_device(x.device())?)
    }

    fn log_prob_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        if x.device().same_device(&self.device) {
            return self.inner.log_prob_and_grad(x);
        }
        let (v, g) = self.inner.log_prob_and_grad(&x.to_device(&self.device)?)?;
        Ok((v.to_device(x.device())?, g.to_device(x.device())?))
    }

    fn log_normalizer(&self) -> Option<f64> {
        self.inner.log_normalizer()
    }
}

/// A density that counts the points it is evaluated at (value, or value and gradient: one
/// target evaluation each), to report training budgets in target evaluations.
pub struct Counted<'a> {
    inner: &'a dyn LogDensity,
    points: std::sync::atomic::AtomicU64,
}

impl<'a> Counted<'a> {
    /// Wraps `inner` with a count of zero.
    pub fn new(inner: &'a dyn LogDensity) -> Self {
        Self { inner, points: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Points evaluated so far.
    pub fn points(&self) -> u64 {
        self.points.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, x: &Tensor) {
        let n = x.dims().first().copied().unwrap_or(0) as u64;
        self.points.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Counted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted").field("dim", &self.inner.dim()).field("points", &self.points()).finish()
    }
}

impl LogDensity for Counted<'_> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        self.count(x);
        self.inner.log_prob(x)
    }

    fn log_prob_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.count(x);
        self.inner.log_prob_and_grad(x)
    }

    fn log_normalizer(&self) -> Option<f64> {
        self.inner.log_normalizer()
    }

    fn device_agnostic(&self) -> bool {
        self.inner.device_agnostic()
    }
}

/// Value and gradient of `density.log_prob` by candle's reverse-mode autodiff.
///
/// The points are wrapped in a fresh [`Var`], so no gradient reaches any caller's graph. Rows are
/// independent, so differentiating the sum gives every row's gradient at once.
///
/// # Errors
/// [`Error::InvalidArgument`] when the log-density's graph does not reach the points (it was
/// computed outside candle's differentiable operations, e.g. on host copies): it then has no
/// gradient, and HMC, MALA or a Langevin-parametrised drift would silently see a zero one.
pub fn autodiff_log_prob_and_grad<D: LogDensity + ?Sized>(density: &D, x: &Tensor) -> Result<(Tensor, Tensor)> {
    let xv = Var::from_tensor(&x.detach())?;
    let lp = density.log_prob(xv.as_tensor())?;
    let grads = lp.sum_all()?.backward()?;
    let g = grads.get(xv.as_tensor()).cloned().ok_or_else(|| {
        Error::invalid(
            "the log-density has no gradient: its value does not depend on the points through differentiable candle operations \
             (give the target a log_prob_and_grad, or do not use a method that needs ∇log p)",
        )
    })?;
    Ok((lp.detach(), g))
}

/// A target that can draw exact, independent samples (GMM, Many Well; not a molecule).
pub trait ExactSample: LogDensity {
    /// Draws `n` independent samples, `[n, dim]`.
    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Result<Tensor>;
}

/// A normalised density that samples with its own log-density: the flow q in FAB, or any AIS
/// proposal.
pub trait Proposal: LogDensity {
    /// Draws `n` samples and returns `(x: [n, dim], log q(x): [n])`.
    fn sample_and_log_prob(&self, n: usize, rng: &mut dyn RngCore) -> Result<(Tensor, Tensor)>;
}

macro_rules! forward_log_density {
    ($($ty:ty),*) => {$(
        impl<T: LogDensity + ?Sized> LogDensity for $ty {
            fn dim(&self) -> usize { (**self).dim() }
            fn log_prob(&self, x: &Tensor) -> Result<Tensor> { (**self).log_prob(x) }
            fn log_prob_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
                (**self).log_prob_and_grad(x)
            }
            fn log_normalizer(&self) -> Option<f64> { (**self).log_normalizer() }
            fn device_agnostic(&self) -> bool { (**self).device_agnostic() }
        }
        impl<T: ExactSample + ?Sized> ExactSample for $ty {
            fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Result<Tensor> {
                (**self).sample(n, rng)
            }
        }
        impl<T: Proposal + ?Sized> Proposal for $ty {
            fn sample_and_log_prob(&self, n: usize, rng: &mut dyn RngCore)
                -> Result<(Tensor, Tensor)> {
                (**self).sample_and_log_prob(n, rng)
            }
        }
    )*};
}
forward_log_density!(&T, Box<T>, Arc<T>);

/// A log-density given by a closure, for tests and quick experiments.
///
/// ```
/// use fab_core::{FnDensity, LogDensity};
/// use candle_core::{Device, Tensor};
/// // A standard normal in 2-D, unnormalised.
/// let d = FnDensity::new(2, |x: &Tensor| Ok((x.sqr()?.sum(1)? * -0.5)?));
/// let x = Tensor::new(&[[1.0f64, 1.0]], &Device::Cpu).unwrap();
/// let (lp, g) = d.log_prob_and_grad(&x).unwrap();
/// assert_eq!(lp.to_vec1::<f64>().unwrap(), vec![-1.0]);
/// assert_eq!(g.to_vec2::<f64>().unwrap(), vec![vec![-1.0, -1.0]]);
/// ```
pub struct FnDensity<F> {
    dim: usize,
    f: F,
}

impl<F> FnDensity<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync,
{
    /// Wraps `f: [n, dim] -> [n]`.
    pub fn new(dim: usize, f: F) -> Self {
        Self { dim, f }
    }
}

impl<F> std::fmt::Debug for FnDensity<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnDensity").field("dim", &self.dim).finish()
    }
}

impl<F> LogDensity for FnDensity<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync,
{
    fn dim(&self) -> usize {
        self.dim
    }
    fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        check_points(x, self.dim)?;
        Ok((self.f)(x)?)
    }
}

/// Checks that `x` is `[n, dim]` and returns n.
///
/// # Errors
/// [`Error::Shape`] for any other shape.
pub fn check_points(x: &Tensor, dim: usize) -> Result<usize> {
    match x.dims() {
        [n, d] if *d == dim => Ok(*n),
        other => Err(Error::Shape { what: "points", expected: format!("[n, {dim}]"), got: other.to_vec() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_density_computed_off_the_graph_has_no_gradient_and_says_so() {
        let x = Tensor::new(&[[1.0f64, 2.0], [0.0, -1.0]], &Device::Cpu).unwrap();
        // Value right, graph cut: computed from host copies of the points.
        let off = FnDensity::new(2, |x: &Tensor| {
            let v: Vec<f64> = x.to_vec2::<f64>()?.iter().map(|r| -0.5 * r.iter().map(|a| a * a).sum::<f64>()).collect();
            Tensor::new(v, x.device())
        });
        let e = off.log_prob_and_grad(&x).unwrap_err().to_string();
        assert!(e.contains("no gradient") && !e.contains('\n'), "{e}");
        // The same density on the graph: value and gradient −x.
        let on = FnDensity::new(2, |x: &Tensor| x.sqr()?.sum(1)? * -0.5);
        let (v, g) = on.log_prob_and_grad(&x).unwrap();
        assert_eq!(v.to_vec1::<f64>().unwrap(), off.log_prob(&x).unwrap().to_vec1::<f64>().unwrap());
        assert_eq!(g.to_vec2::<f64>().unwrap(), vec![vec![-1.0, -2.0], vec![0.0, 1.0]]);
    }

    #[test]
    fn counted_counts_points_of_values_and_gradients_and_passes_results_through() {
        let d = FnDensity::new(2, |x: &Tensor| x.sqr()?.sum(1)? * -0.5);
        let c = Counted::new(&d);
        let x = Tensor::new(&[[1.0f64, 2.0], [0.0, -1.0], [3.0, 0.5]], &Device::Cpu).unwrap();
        let v = c.log_prob(&x).unwrap();
        assert_eq!(c.points(), 3);
        let (v2, g) = c.log_prob_and_grad(&x.narrow(0, 0, 2).unwrap()).unwrap();
        assert_eq!(c.points(), 5);
        assert_eq!(v.to_vec1::<f64>().unwrap(), vec![-2.5, -0.5, -4.625]);
        assert_eq!(v2.to_vec1::<f64>().unwrap(), vec![-2.5, -0.5]);
        assert_eq!(g.to_vec2::<f64>().unwrap(), vec![vec![-1.0, -2.0], vec![0.0, 1.0]]);
        assert_eq!(c.dim(), 2);
    }
}
