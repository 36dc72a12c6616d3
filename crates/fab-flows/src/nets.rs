//! Conditioner networks: dense layers, the ReLU MLP of RealNVP and the residual net of the
//! spline couplings, each with a candle path and a fused CPU forward/backward.

use candle_core::{DType, Device, Tensor, Var};
use fab_core::ParamSet;
use rand::{Rng, RngCore};

use crate::cpu::{column_sums_into, matmul, with_slices, Real};
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
            LinearInit::Constant { weight, bias } => (vec![weight; in_features * out_features], vec![bias; out_features]),
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
            // Start every row at the bias and accumulate the product into it (no zero fill,
            // no separate bias pass).
            let mut y = Vec::with_capacity(n * self.out_features);
            for _ in 0..n {
                y.extend_from_slice(p[1]);
            }
            matmul(&mut y, x, false, p[0], true, n, self.in_features, self.out_features, true);
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
        if !want_input_grad {
            self.cpu_backward_into(x, gy, n, grads, None)?;
            return Ok(None);
        }
        let mut gx = vec![T::zero(); n * self.in_features];
        self.cpu_backward_into(x, gy, n, grads, Some(&mut gx))?;
        Ok(Some(gx))
    }

    /// [`cpu_backward`](Self::cpu_backward) writing ∂L/∂x (if wanted) into `gx` (`[n, in]`,
    /// overwritten whatever it held).
    pub(crate) fn cpu_backward_into<T: Real>(
        &self,
        x: &[T],
        gy: &[T],
        n: usize,
        grads: Option<(&mut [T], &mut [T])>,
        gx: Option<&mut [T]>,
    ) -> Result<()> {
        if let Some((gw, gb)) = grads {
            self.cpu_param_grads_into(x, gy, n, gw, gb);
        }
        match gx {
            Some(gx) => self.cpu_input_grad_into(gy, n, gx),
            None => Ok(()),
        }
    }

    /// Adds ∂L/∂W = gyᵀ x to `gw` and ∂L/∂b = Σ_rows gy to `gb`.
    pub(crate) fn cpu_param_grads_into<T: Real>(&self, x: &[T], gy: &[T], n: usize, gw: &mut [T], gb: &mut [T]) {
        matmul(gw, gy, true, x, false, self.out_features, n, self.in_features, true);
        column_sums_into(gb, &gy[..n * self.out_features]);
    }

    /// ∂L/∂x = gy W into `gx` (`[n, in]`, overwritten whatever it held).
    pub(crate) fn cpu_input_grad_into<T: Real>(&self, gy: &[T], n: usize, gx: &mut [T]) -> Result<()> {
        with_slices::<T, _>(&[&self.weight], |p| {
            matmul(&mut gx[..n * self.in_features], gy, false, p[0], false, n, self.out_features, self.in_features, false);
            Ok(())
        })
    }

    /// `y += x Wᵀ + b` on row-major buffers (a residual connection without a temporary).
    pub(crate) fn cpu_forward_add<T: Real>(&self, x: &[T], n: usize, y: &mut [T]) -> Result<()> {
        with_slices::<T, _>(&[&self.weight, &self.bias], |p| {
            for row in y.chunks_exact_mut(self.out_features).take(n) {
                for (a, b) in row.iter_mut().zip(p[1]) {
                    *a += *b;
                }
            }
            matmul(y, x, false, p[0], true, n, self.in_features, self.out_features, true);
            Ok(())
        })
    }
}

/// max(v, 0) into a new buffer (NaN stays NaN).
fn relu_of<T: Real>(v: &[T]) -> Vec<T> {
    v.iter().map(|&x| if x < T::zero() { T::zero() } else { x }).collect()
}

fn relu_inplace<T: Real>(v: &mut [T]) {
    // A select rather than a conditional store, so that it vectorises; NaN stays NaN.
    for x in v.iter_mut() {
        *x = if *x < T::zero() { T::zero() } else { *x };
    }
}

/// Zeroes `g` where the (post-ReLU) activation `h` is not positive (ReLU'(0) = 0, as torch).
fn relu_backward_inplace<T: Real>(g: &mut [T], h: &[T]) {
    for (gi, hi) in g.iter_mut().zip(h) {
        *gi = if *hi > T::zero() { *gi } else { T::zero() };
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
        // Buffers no longer needed (the last layer's input, earlier gradients) are reused for
        // the next input gradient, which the product overwrites: no zero-filled allocation
        // beyond the first hidden gradient.
        let mut inputs = tape.inputs;
        let mut spare: Vec<Vec<T>> = Vec::new();
        let mut g = gout;
        for i in (0..self.layers.len()).rev() {
            let layer = &self.layers[i];
            if let Some(pg) = pgrads.as_deref_mut() {
                let (w, rest) = pg[2 * i..2 * i + 2].split_at_mut(1);
                layer.cpu_param_grads_into(&inputs[i], &g, n, &mut w[0], &mut rest[0]);
            }
            if i == 0 && !want_input_grad {
                return Ok(None);
            }
            let len = n * layer.in_features();
            let mut gx = if i == 0 {
                // The MLP's own input is not needed once its weight gradient is taken.
                std::mem::take(&mut inputs[0])
            } else {
                match spare.iter().position(|b| b.len() >= len) {
                    Some(k) => spare.swap_remove(k),
                    None => vec![T::zero(); len],
                }
            };
            gx.truncate(len);
            layer.cpu_input_grad_into(&g, n, &mut gx)?;
            if i > 0 {
                // x of layer i is the ReLU output of layer i-1.
                relu_backward_inplace(&mut gx, &inputs[i]);
                spare.push(std::mem::take(&mut inputs[i]));
            }
            spare.push(std::mem::replace(&mut g, gx));
        }
        Ok(Some(g))
    }
}

/// A residual network `Linear → [ReLU → Linear → ReLU → Linear + skip] × blocks → Linear`
/// (no batch norm, no dropout): the spline-coupling conditioner. The second dense layer of each
/// block starts near zero (U(±1e-3)), so each block starts near the identity.
#[derive(Debug, Clone)]
pub struct ResidualNet {
    initial: Linear,
    blocks: Vec<(Linear, Linear)>,
    last: Linear,
}

/// Activations a [`ResidualNet`] keeps for its backward pass.
#[derive(Debug)]
pub(crate) struct ResNetTape<T> {
    input: Vec<T>,
    /// Per block: (ReLU of the block input, ReLU of the first dense output).
    blocks: Vec<(Vec<T>, Vec<T>)>,
    /// Input of the last dense layer.
    last_in: Vec<T>,
}

impl ResidualNet {
    /// Builds the net; parameters are `{prefix}.initial.*`, `{prefix}.blocks.{b}.{0|1}.*`,
    /// `{prefix}.final.*`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        params: &mut ParamSet,
        prefix: &str,
        in_features: usize,
        hidden: usize,
        out_features: usize,
        num_blocks: usize,
        last_init: LinearInit,
        rng: &mut dyn RngCore,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let initial = Linear::new(params, &format!("{prefix}.initial"), in_features, hidden, LinearInit::TorchDefault, rng, dtype, device)?;
        let mut blocks = Vec::with_capacity(num_blocks);
        for b in 0..num_blocks {
            let l0 = Linear::new(params, &format!("{prefix}.blocks.{b}.0"), hidden, hidden, LinearInit::TorchDefault, rng, dtype, device)?;
            let l1 = Linear::new(params, &format!("{prefix}.blocks.{b}.1"), hidden, hidden, LinearInit::Uniform(1e-3), rng, dtype, device)?;
            blocks.push((l0, l1));
        }
        let last = Linear::new(params, &format!("{prefix}.final"), hidden, out_features, last_init, rng, dtype, device)?;
        Ok(Self { initial, blocks, last })
    }

    /// Number of parameter tensors.
    pub fn num_param_tensors(&self) -> usize {
        4 + 4 * self.blocks.len()
    }

    /// Forward pass with candle ops.
    pub fn forward_t(&self, x: &Tensor, track: bool) -> Result<Tensor> {
        let mut h = self.initial.forward_t(x, track)?;
        for (l0, l1) in &self.blocks {
            let t = l1.forward_t(&l0.forward_t(&h.relu()?, track)?.relu()?, track)?;
            h = (h + t)?;
        }
        self.last.forward_t(&h, track)
    }

    /// Forward pass on a host buffer; with `record`, keeps what the backward pass needs.
    pub(crate) fn cpu_forward<T: Real>(&self, x: Vec<T>, n: usize, record: bool) -> Result<(Vec<T>, Option<ResNetTape<T>>)> {
        let mut h = self.initial.cpu_forward(&x, n)?;
        let mut blocks = Vec::new();
        for (l0, l1) in &self.blocks {
            let a0 = relu_of(&h);
            let mut a1 = l0.cpu_forward(&a0, n)?;
            relu_inplace(&mut a1);
            // h += relu(a1) W₁ᵀ + b₁ (the residual connection, accumulated in place).
            l1.cpu_forward_add(&a1, n, &mut h)?;
            if record {
                blocks.push((a0, a1));
            }
        }
        let out = self.last.cpu_forward(&h, n)?;
        Ok((out, record.then_some(ResNetTape { input: x, blocks, last_in: h })))
    }

    /// Backward pass: accumulates parameter gradients into `pgrads` (this net's slice, in
    /// parameter order) if given, and returns ∂L/∂input.
    pub(crate) fn cpu_backward<T: Real>(
        &self,
        tape: ResNetTape<T>,
        gout: Vec<T>,
        n: usize,
        mut pgrads: Option<&mut [Vec<T>]>,
    ) -> Result<Vec<T>> {
        fn pair<'a, T>(pg: &'a mut Option<&mut [Vec<T>]>, i: usize) -> Option<(&'a mut [T], &'a mut [T])> {
            pg.as_deref_mut().map(|p| {
                let (w, rest) = p[i..i + 2].split_at_mut(1);
                (w[0].as_mut_slice(), rest[0].as_mut_slice())
            })
        }
        let nb = self.blocks.len();
        let last_idx = 2 + 4 * nb;
        let mut gh = self.last.cpu_backward(&tape.last_in, &gout, n, pair(&mut pgrads, last_idx), true)?.expect("input grad");
        drop(gout);
        // Gradient buffers reuse activations that are no longer needed (every product
        // overwrites its output): the last layer's input, then each block's activations once
        // their ReLU masks have been applied.
        let mut spare = tape.last_in;
        for (b, ((l0, l1), (a0, a1))) in self.blocks.iter().zip(tape.blocks).enumerate().rev() {
            let base = 2 + 4 * b;
            let mut g1 = spare;
            l1.cpu_backward_into(&a1, &gh, n, pair(&mut pgrads, base + 2), Some(&mut g1))?;
            relu_backward_inplace(&mut g1, &a1);
            let mut g0 = a1;
            l0.cpu_backward_into(&a0, &g1, n, pair(&mut pgrads, base), Some(&mut g0))?;
            relu_backward_inplace(&mut g0, &a0);
            for (a, b) in gh.iter_mut().zip(&g0) {
                *a += *b;
            }
            spare = g1;
            drop((a0, g0));
        }
        drop(spare);
        Ok(self.initial.cpu_backward(&tape.input, &gh, n, pair(&mut pgrads, 0), true)?.expect("input grad"))
    }
}
