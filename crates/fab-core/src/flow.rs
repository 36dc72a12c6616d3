//! Invertible maps with tractable log-determinants, and their composition.

use candle_core::Tensor;
use std::sync::Arc;

use crate::Result;

/// A bijection y = f(z) on `[n, d]` batches, with the log-determinant of its Jacobian.
///
/// Convention: `forward` is the *sampling* direction (base → data) and `inverse` the *density*
/// direction (data → base). `forward(inverse(x)) = x` and the two log-determinants of a point sum
/// to zero.
///
/// # Shapes
/// Input `[n, d]` → `(output [n, d], log|det J| [n])`, in the input's dtype and device.
pub trait Flow: Send + Sync {
    /// z → (y, log|det ∂y/∂z|).
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)>;
    /// y → (z, log|det ∂z/∂y|).
    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)>;
}

macro_rules! forward_flow {
    ($($ty:ty),*) => {$(
        impl<T: Flow + ?Sized> Flow for $ty {
            fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> { (**self).forward(z) }
            fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> { (**self).inverse(y) }
        }
    )*};
}
forward_flow!(&T, Box<T>, Arc<T>);

/// Composition f_k ∘ … ∘ f_1 of flows: `forward` applies them in order, `inverse` in reverse.
#[derive(Default)]
pub struct Chain {
    flows: Vec<Box<dyn Flow>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").field("len", &self.flows.len()).finish()
    }
}

impl Chain {
    /// An empty chain (the identity).
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a flow applied after the existing ones in the forward direction.
    pub fn push(mut self, flow: impl Flow + 'static) -> Self {
        self.flows.push(Box::new(flow));
        self
    }
    /// Number of flows in the chain.
    pub fn len(&self) -> usize {
        self.flows.len()
    }
    /// Whether the chain is the identity.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

fn zeros_like_batch(x: &Tensor) -> Result<Tensor> {
    Ok(Tensor::zeros(x.dim(0)?, x.dtype(), x.device())?)
}

impl Flow for Chain {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut ld = zeros_like_batch(z)?;
        let mut y = z.clone();
        for f in &self.flows {
            let (y2, l) = f.forward(&y)?;
            y = y2;
            ld = (ld + l)?;
        }
        Ok((y, ld))
    }
    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut ld = zeros_like_batch(y)?;
        let mut z = y.clone();
        for f in self.flows.iter().rev() {
            let (z2, l) = f.inverse(&z)?;
            z = z2;
            ld = (ld + l)?;
        }
        Ok((z, ld))
    }
}

/// The inverse of a flow: swaps `forward` and `inverse`.
#[derive(Debug, Clone)]
pub struct Inverted<F>(pub F);

impl<F: Flow> Flow for Inverted<F> {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.0.inverse(z)
    }
    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        self.0.forward(y)
    }
}
