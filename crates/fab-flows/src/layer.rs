//! The [`Layer`] trait: one invertible layer of a [`crate::FlowModel`], with a candle path and
//! an optional fast CPU path.

use candle_core::{Tensor, Var};
use fab_core::ParamSet;

use crate::cpu::CpuLayer;
use crate::Result;

/// One invertible layer of a flow model.
///
/// `forward_t` is the sampling direction (base → data), `inverse_t` the density direction.
/// `track` says whether the layer's parameters enter candle's autodiff graph (needed for
/// parameter gradients through candle; off for sampling, HMC gradients w.r.t. x, evaluation).
/// Layers with a hand-written CPU implementation return it from `cpu_f64` / `cpu_f32`; the
/// model uses it whenever the data lives on the CPU.
pub trait Layer: Send + Sync + std::fmt::Debug {
    /// Dimension of the layer's input and output.
    fn dim(&self) -> usize;
    /// Trainable parameters, named relative to the layer.
    fn params(&self) -> &ParamSet;
    /// Fixed (non-trainable) state that a checkpoint must agree on: permutations, masks, shifts.
    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// z → (y, log|det ∂y/∂z|) with candle ops.
    fn forward_t(&self, z: &Tensor, track: bool) -> Result<(Tensor, Tensor)>;
    /// y → (z, log|det ∂z/∂y|) with candle ops.
    fn inverse_t(&self, y: &Tensor, track: bool) -> Result<(Tensor, Tensor)>;
    /// The f64 CPU implementation, if any.
    fn cpu_f64(&self) -> Option<&dyn CpuLayer<f64>> {
        None
    }
    /// The f32 CPU implementation, if any.
    fn cpu_f32(&self) -> Option<&dyn CpuLayer<f32>> {
        None
    }
}

/// A parameter as a tensor, inside (`track`) or outside candle's autodiff graph.
pub(crate) fn param(v: &Var, track: bool) -> Tensor {
    if track {
        v.as_tensor().clone()
    } else {
        v.as_tensor().detach()
    }
}

/// Implements [`fab_core::Flow`] for a [`Layer`] type through its tracked candle path.
macro_rules! impl_flow_via_layer {
    ($($t:ty),*) => {$(
        impl fab_core::Flow for $t {
            fn forward(&self, z: &candle_core::Tensor) -> fab_core::Result<(candle_core::Tensor, candle_core::Tensor)> {
                Ok($crate::Layer::forward_t(self, z, true)?)
            }
            fn inverse(&self, y: &candle_core::Tensor) -> fab_core::Result<(candle_core::Tensor, candle_core::Tensor)> {
                Ok($crate::Layer::inverse_t(self, y, true)?)
            }
        }
    )*};
}
pub(crate) use impl_flow_via_layer;
