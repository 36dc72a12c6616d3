//! The hand-written CPU path: fused forward and backward kernels on row-major host buffers.
//!
//! candle's autodiff allocates and zero-fills a buffer per op and per gradient accumulation,
//! which dominates at FAB's sizes (see `docs/PERFORMANCE.md`). On the CPU, [`crate::FlowModel`]
//! therefore runs each layer through its [`CpuLayer`] implementation: one pass that keeps only
//! the activations the backward pass needs, and a backward pass that computes input and
//! parameter gradients together, with matrix products from the `gemm` crate. The candle path
//! remains the reference (and the GPU path); tests check the two against each other.

pub(crate) mod spline_lanes;

pub(crate) use fab_core::gemm::{column_sums_into, matmul};

use std::any::Any;

use candle_core::{Storage, Var};
use num_traits::Float;

use crate::Result;

/// The float types of the CPU path (f32 and f64).
pub trait Real: candle_core::WithDType + fab_core::gemm::GemmFloat + Float + Default + std::fmt::Debug + std::iter::Sum {
    /// This type's CPU implementation of `layer`, if it has one.
    fn cpu_layer(layer: &dyn crate::Layer) -> Option<&dyn CpuLayer<Self>>;
    /// Lossless-as-possible conversion to f64.
    fn as_f64(self) -> f64 {
        <Self as candle_core::WithDType>::to_f64(self)
    }
}

impl Real for f32 {
    fn cpu_layer(layer: &dyn crate::Layer) -> Option<&dyn CpuLayer<f32>> {
        layer.cpu_f32()
    }
}

impl Real for f64 {
    fn cpu_layer(layer: &dyn crate::Layer) -> Option<&dyn CpuLayer<f64>> {
        layer.cpu_f64()
    }
}

/// Activations a layer keeps from its density pass for the backward pass.
pub type Tape = Box<dyn Any + Send>;

/// A layer's CPU implementation on row-major `[n, d]` buffers.
///
/// The density direction (data → base) is the one FAB differentiates: [`inverse`](Self::inverse)
/// optionally records a [`Tape`], and [`inverse_backward`](Self::inverse_backward) turns ∂L/∂z and
/// ∂L/∂(log-det) into ∂L/∂x, accumulating parameter gradients if asked.
pub trait CpuLayer<T: Real>: Send + Sync {
    /// x → z in place of `x`; adds log|det ∂z/∂x| of every row to `ld`. With `record`, returns
    /// the tape for [`inverse_backward`](Self::inverse_backward).
    fn inverse(&self, x: Vec<T>, n: usize, ld: &mut [T], record: bool) -> Result<(Vec<T>, Option<Tape>)>;

    /// Backward of [`inverse`](Self::inverse): given ∂L/∂z (`gz`) and ∂L/∂ld per row (`gld`),
    /// returns ∂L/∂x. When `pgrads` is given (one buffer per parameter of the layer, in
    /// [`crate::Layer::params`] order), parameter gradients are *added* to it.
    fn inverse_backward(&self, tape: Tape, gz: Vec<T>, gld: &[T], n: usize, pgrads: Option<&mut [Vec<T>]>) -> Result<Vec<T>>;

    /// z → x (sampling direction) in place of `z`; adds log|det ∂x/∂z| to `ld`.
    fn forward(&self, z: Vec<T>, n: usize, ld: &mut [T]) -> Result<Vec<T>>;
}

/// Runs `f` on the host slices of `vars` (which must be contiguous CPU tensors of type `T`).
pub(crate) fn with_slices<T: Real, R>(vars: &[&Var], f: impl FnOnce(&[&[T]]) -> Result<R>) -> Result<R> {
    let guards: Vec<_> = vars.iter().map(|v| v.storage_and_layout()).collect();
    let mut slices: Vec<&[T]> = Vec::with_capacity(vars.len());
    for (g, v) in guards.iter().zip(vars) {
        let layout = g.1;
        match &*g.0 {
            Storage::Cpu(s) => {
                let all = s.as_slice::<T>()?;
                if !layout.is_contiguous() {
                    return Err(candle_core::Error::Msg("cpu path needs contiguous parameters".into()).into());
                }
                let start = layout.start_offset();
                slices.push(&all[start..start + v.elem_count()]);
            }
            _ => return Err(candle_core::Error::Msg("cpu path called on a non-CPU parameter".into()).into()),
        }
    }
    f(&slices)
}

/// Whether an `n × width` elementwise job is worth splitting across rayon threads.
pub(crate) fn parallel_rows(n: usize, width: usize) -> bool {
    n * width >= 1 << 15 && rayon::current_num_threads() > 1
}

/// Extracts the columns `cols` of a row-major `[n, d]` buffer into a new `[n, cols.len()]` one.
pub(crate) fn gather_cols<T: Real>(x: &[T], n: usize, d: usize, cols: &[usize]) -> Vec<T> {
    let k = cols.len();
    let mut out = vec![T::zero(); n * k];
    for (orow, irow) in out.chunks_exact_mut(k.max(1)).zip(x.chunks_exact(d)).take(n) {
        for (o, &c) in orow.iter_mut().zip(cols) {
            *o = irow[c];
        }
    }
    out
}

/// `c = op(a)·op(b)` on row-major buffers (exposed for benchmarks and probes).
#[allow(clippy::too_many_arguments)]
#[doc(hidden)]
pub fn bench_matmul<T: Real>(c: &mut [T], a: &[T], ta: bool, b: &[T], tb: bool, m: usize, k: usize, n: usize) {
    matmul(c, a, ta, b, tb, m, k, n, false)
}
