//! Conditioner networks: dense layers, the ReLU MLP of RealNVP and the residual net of the
//! spline couplings, each with a candle path and a fused CPU forward/backward.

use candle_core::{DType, Device, Tensor, Var};
use fab_core::ParamSet;
use rand::{Rng, RngCore};

use crate::cpu::{add_row_bias, column_sums_into, matmul, with_slices, Real};
use crate::layer::param;
use crate::Result;

/// How a dense layer's weights and bias are initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinearInit {
    /// PyTorch's default: weight and bias ~ U(±1/√fan_in).
    TorchDefault,
    /// Weight and bias ~ U(±a) (the residual blocks' last layer uses a = 1e-3).
    Uniform(f64),
    /// Constant weight and bias (zero last layers give identity flows at initialisation).
    Constant {
        /// Every weight.
        weight: f64,
        /// Every bias.
        bias: f64,
    },
}

/// A dense layer y = x Wᵀ + b with W of shape `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Var,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// Creates the layer, registering `{prefix}.weight` and `{prefix}.bias` in `params`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        params: &mut ParamSet,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        init: LinearInit,
        rng: &mut dyn RngCore,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let (w, b): (Vec<f64>, Vec<f64>) = match init {
            LinearInit::TorchDefault | LinearInit::Uniform(_) => {
                let a = match init {
                    LinearInit::Uniform(a) => a,
                    _ => 1.0 / (in_features.max(1) as f64).sqrt(),
                };
                let w = (0..in_features * out_features).map(|_| rng.random_range(-a..a)).collect();
                let b = (0..out_features).map(|_| rng.random_range(-a..a)).collect();
                (w, b)
            }
            LinearInit::Constant { weight, bias } => {
                (vec![weight; in_features * out_features], vec![bias; out_features])
            }
        };
        let weight = params.create(format!("{prefix}.weight"), w, &[out_features, in_features], dtype, device)?;
        let bias = params.create(format!("{prefix}.bias"), b, &[out_features], dtype, device)?;
        Ok(Self { weight, bias, in_features, out_features })
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// x Wᵀ + b with candle ops.
    pub fn forward_t(&self, x: &Tensor, track: bool) -> Result<Tensor> {
        let w = param(&self.weight, track);
        let b = param(&self.bias, track);
        Ok(x.matmul(&w.t()?)?.broadcast_add(&b)?)
    }

    /// x Wᵀ + b on a row-major `[n, in]` host buffer.
    pub(crate) fn cpu_forward<T: Real>(&self, x: &[T], n: usize) -> Result<Vec<T>> {
        with_slices::<T, _>(&[&self.weight, &self.bias], |p| {
            let mut y = vec![T::zero(); n * self.out_features];
            matmul(&mut y, x, false, p[0], true, n, self.in_features, self.out_features, false);
            add_row_bias(&mut y, p[1]);
            Ok(y)
        })
    }

    /// Backward of [`cpu_forward`](Self::cpu_forward): adds ∂L/∂W and ∂L/∂b to `gw`, `gb` (if
    /// given) and returns ∂L/∂x if `want_input_grad`.
    pub(crate) fn cpu_backward<T: Real>(
        &self,
        x: &[T],
        gy: &[T],
        n: usize,
        grads: Option<(&mut [T], &mut [T])>,
        want_input_grad: bool,
    ) -> Result<Option<Vec<T>>> {
        if let Some((gw, gb)) = grads {
            matmul(gw, gy, true, x, false, self.out_features, n, self.in_features, true);
            column_sums_into(gb, gy);
        }
        if !want_input_grad {
            return Ok(None);
        }
        with_slices::<T, _>(&[&self.weight], |p| {
            let mut gx = vec![T::zero(); n * self.in_features];
            matmul(&mut gx, gy, false, p[0], false, n, self.out_features, self.in_features, false);
            Ok(Some(gx))
        })
    }
}

fn relu_inplace<T: Real>(v: &mut [T]) {
    for x in v.iter_mut() {
        if *x < T::zero() {
            *x = T::zero();
        }
    }
}

/// Zeroes `g` where the (post-ReLU) activation `h` is not positive (ReLU'(0) = 0, as torch).
fn relu_backward_inplace<T: Real>(g: &mut [T], h: &[T]) {
    for (gi, hi) in g.iter_mut().zip(h) {
        if *hi <= T::zero() {
            *gi = T::zero();
        }
    }
}

/// A ReLU multi-layer perceptron `Linear → ReLU → … → Linear` (no output activation): the
/// RealNVP conditioner.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
}

/// Activations an [`Mlp`] keeps for its backward pass: the input of every dense layer.
#[derive(Debug)]
pub(crate) struct MlpTape<T> {
    inputs: Vec<Vec<T>>,
}

impl Mlp {
    /// Builds the MLP of `widths` (`[in, h1, …, out]`); hidden layers use PyTorch's default
    /// initialisation, the last layer `last_init`. Parameters are `{prefix}.{i}.weight|bias`.
    pub fn new(
        params: &mut ParamSet,
        prefix: &str,
        widths: &[usize],
        last_init: LinearInit,
        rng: &mut dyn RngCore,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        for i in 0..widths.len() - 1 {
            let init = if i + 2 == widths.len() { last_init } else { LinearInit::TorchDefault };
            layers.push(Linear::new(params, &format!("{prefix}.{i}"), widths[i], widths[i + 1], init, rng, dtype, device)?);
        }
        Ok(Self { layers })
    }

    /// Number of parameter tensors (two per dense layer).
    pub fn num_param_tensors(&self) -> usize {
        2 * self.layers.len()
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.layers.last().map_or(0, Linear::out_features)
    }

    /// Forward pass with candle ops.
    pub fn forward_t(&self, x: &Tensor, track: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward_t(&h, track)?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    /// Forward pass on a host buffer; with `record`, keeps what the backward pass needs.
    pub(crate) fn cpu_forward<T: Real>(&self, x: Vec<T>, n: usize, record: bool) -> Result<(Vec<T>, Option<MlpTape<T>>)> {
        let mut inputs = Vec::new();
        let mut h = x;
        for (i, l) in self.layers.iter().enumerate() {
            let mut y = l.cpu_forward(&h, n)?;
            if i + 1 < self.layers.len() {
                relu_inplace(&mut y);
            }
            if record {
                inputs.push(h);
            }
            h = y;
        }
        Ok((h, record.then_some(MlpTape { inputs })))
    }

    /// Backward pass: given ∂L/∂out, accumulates parameter gradients into `pgrads` (the MLP's
    /// own slice, `[w0, b0, w1, b1, …]`) and returns ∂L/∂in if `want_input_grad`.
    pub(crate) fn cpu_backward<T: Real>(
        &self,
        tape: MlpTape<T>,
        gout: Vec<T>,
        n: usize,
        mut pgrads: Option<&mut [Vec<T>]>,
        want_input_grad: bool,
    ) -> Result<Option<Vec<T>>> {
        let mut g = gout;
        let nl = self.layers.len();
        for i in (0..nl).rev() {
            let x = &tape.inputs[i];
            let grads = pgrads.as_deref_mut().map(|pg| {
                let (w, rest) = pg[2 * i..2 * i + 2].split_at_mut(1);
                (w[0].as_mut_slice(), rest[0].as_mut_slice())
            });
            let need_gx = i > 0 || want_input_grad;
            let gx = self.layers[i].cpu_backward(x, &g, n, grads, need_gx)?;
            match gx {
                Some(mut gx) => {
                    if i > 0 {
                        // x of layer i is the ReLU output of layer i-1.
                        relu_backward_inplace(&mut gx, x);
                    }
                    g = gx;
                }
                None => return Ok(None),
            }
        }
        Ok(Some(g))
    }
}
