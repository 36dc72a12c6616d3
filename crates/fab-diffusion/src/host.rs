//! The drift network's layers after the time embedding on host buffers, forward with a tape
//! and backward by hand (`docs/DIFFUSION.md`, "How the paths are evaluated";
//! `docs/PERFORMANCE.md`, "Diffusion sampler against gfn-diffusion on an Intel Xeon"): the path
//! of every objective — those whose gradient reaches the parameters through log P_F and log F
//! at fixed points (TB, VarGrad, DB, SubTB; on- and off-policy), and PIS, whose gradient also
//! runs back through the sampled points (step by step, [`Chain::backward_rows`]). candle builds
//! the same computation from one operation per tensor, each with its own zero-filled buffer, and
//! re-evaluates the network over all T·n rows after the walk has already evaluated it step by
//! step; here the walk's own forward pass is kept as the tape, each layer is one matrix product
//! into a buffer that starts at the bias, and the GELU's derivative comes out of its forward
//! evaluation.
//!
//! A [`Chain`] is a snapshot of dense layers with GELU, one of which may take a per-step extra
//! bias from the time embedding (added to the state encoding in the PIS shape; multiplied by its
//! rows of the first joint layer in the AT shape), and a linear output layer. A [`HostNet`] is
//! the policy's chain and, for DB and SubTB, the log-flow head's, which reads one of the policy
//! chain's activations. The time embedding and the Langevin scale stay candle tensors: the
//! caller back-propagates the per-step gradients this module returns through them.

use std::sync::Mutex;

use candle_core::{DType, Tensor};
use fab_core::gemm::{column_sums_into, matmul, GemmFloat};

use crate::ops::gelu_with_derivative;
use crate::Result;

/// Element types of the host path: f32 and f64.
pub trait HostFloat: GemmFloat + std::ops::MulAssign + candle_core::WithDType + std::fmt::Debug {
    /// The candle dtype.
    const DTYPE: DType;
    /// From f64 (rounded to nearest).
    fn of(x: f64) -> Self;
    /// To f64.
    fn f64(self) -> f64;
    /// The values of a tensor of this dtype, flattened.
    fn host(t: &Tensor) -> Result<Vec<Self>>;
    /// In place `y ← GELU(y)`, with `deriv ← GELU′` at the old values.
    fn gelu_pair(y: &mut [Self], deriv: &mut [Self]);
    /// The pool's buffers of this type.
    fn pool(pool: &ScratchPool) -> &Mutex<Vec<Vec<Self>>>;
}

/// Large host buffers of earlier tapes, handed out again to a tape of the same size: an
/// iteration's activations are tens of megabytes that every iteration would otherwise
/// zero-fill afresh. A buffer handed out keeps its old contents, so it may only serve one that
/// is written before it is read (the tape's activations and per-row factors are).
#[derive(Default)]
pub struct ScratchPool {
    f32: Mutex<Vec<Vec<f32>>>,
    f64: Mutex<Vec<Vec<f64>>>,
}

/// Buffers kept per element type, at most.
const POOL_BUFFERS: usize = 64;

impl std::fmt::Debug for ScratchPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |m: &Mutex<Vec<Vec<f32>>>| m.lock().map_or(0, |v| v.len());
        let count64 = |m: &Mutex<Vec<Vec<f64>>>| m.lock().map_or(0, |v| v.len());
        f.debug_struct("ScratchPool").field("f32_buffers", &count(&self.f32)).field("f64_buffers", &count64(&self.f64)).finish()
    }
}

impl ScratchPool {
    /// A buffer of exactly `len` elements: a pooled one with whatever it held, or zeros.
    pub fn take<T: HostFloat>(&self, len: usize) -> Vec<T> {
        if let Ok(mut v) = T::pool(self).lock() {
            if let Some(i) = v.iter().position(|b| b.len() == len) {
                return v.swap_remove(i);
            }
        }
        vec![T::zero(); len]
    }

    /// Returns a buffer to the pool.
    pub fn give<T: HostFloat>(&self, buffer: Vec<T>) {
        if buffer.is_empty() {
            return;
        }
        if let Ok(mut v) = T::pool(self).lock() {
            if v.len() < POOL_BUFFERS {
                v.push(buffer);
            }
        }
    }
}

impl HostFloat for f32 {
    const DTYPE: DType = DType::F32;
    fn of(x: f64) -> Self {
        x as f32
    }
    fn f64(self) -> f64 {
        f64::from(self)
    }
    fn host(t: &Tensor) -> Result<Vec<Self>> {
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }
    fn gelu_pair(y: &mut [Self], deriv: &mut [Self]) {
        crate::ops::gelu_pair_f32(y, deriv);
    }
    fn pool(pool: &ScratchPool) -> &Mutex<Vec<Vec<Self>>> {
        &pool.f32
    }
}

impl HostFloat for f64 {
    const DTYPE: DType = DType::F64;
    fn of(x: f64) -> Self {
        x
    }
    fn f64(self) -> f64 {
        self
    }
    fn host(t: &Tensor) -> Result<Vec<Self>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    }
    fn gelu_pair(y: &mut [Self], deriv: &mut [Self]) {
        crate::ops::gelu_pair_f64(y, deriv);
    }
    fn pool(pool: &ScratchPool) -> &Mutex<Vec<Vec<Self>>> {
        &pool.f64
    }
}

/// One dense layer `y = x W + b` (W stored `[in, out]`), with the indices of its weight and
/// bias in its parameter set (the policy's, or the flow group's for the log-flow head).
#[derive(Debug, Clone)]
pub struct HostLayer<T> {
    /// Weight `[in, out]`, row-major.
    pub w: Vec<T>,
    /// Bias `[out]`.
    pub b: Vec<T>,
    /// Input width.
    pub n_in: usize,
    /// Output width.
    pub n_out: usize,
    /// Index of the weight in the parameter set.
    pub w_index: usize,
    /// Index of the bias in the parameter set.
    pub b_index: usize,
}

/// Dense layers with GELU and a linear output layer, one of whose hidden layers may take a
/// per-step extra bias from the time embedding.
#[derive(Debug, Clone)]
pub struct Chain<T> {
    /// Hidden layers in order (each followed by GELU).
    pub hidden: Vec<HostLayer<T>>,
    /// Which hidden layer takes the per-step extra bias, if any.
    pub time_layer: Option<usize>,
    /// The rows of the time layer's weight that multiply the time embedding (`[hidden,
    /// hidden]`, the AT shape's concatenated input; the layer's own `w` holds the rows of its
    /// other input). `None`: the embedding itself is the extra bias (the PIS shape's sum).
    pub time_rows: Option<Vec<T>>,
    /// The output layer (no activation).
    pub out: HostLayer<T>,
}

/// The drift network after its time embedding: the policy chain (state → `[drift | raw
/// log-variance]`) and, for DB and SubTB, the log-flow head reading one of its activations.
#[derive(Debug, Clone)]
pub struct HostNet<T> {
    /// The policy chain; its time layer takes the time embedding.
    pub policy: Chain<T>,
    /// The log-flow head (its weights indexed in the flow group) and which input of the
    /// policy chain it reads (index into [`Acts::inputs`]).
    pub flow: Option<(Chain<T>, usize)>,
}

/// Activations of a batch of rows: the tape of the backward pass.
#[derive(Debug)]
pub struct Acts<T> {
    /// Input of every hidden layer and of the output layer: the chain's input (`[rows, in]`,
    /// only for a chain that owns it), then each hidden layer's output (`[rows, width]`).
    pub inputs: Vec<Vec<T>>,
    /// GELU′ at every hidden layer's pre-activation.
    pub derivs: Vec<Vec<T>>,
    /// Output layer values `[rows, out]`.
    pub out: Vec<T>,
}

impl<T: HostFloat> Acts<T> {
    /// Returns the buffers to `pool`.
    pub fn recycle(self, pool: &ScratchPool) {
        for b in self.inputs.into_iter().chain(self.derivs).chain([self.out]) {
            pool.give(b);
        }
    }
}

/// A chain's gradients summed over several [`Chain::backward_rows`] calls.
#[derive(Debug)]
pub struct ChainAcc<T> {
    /// (∂W, ∂b) of each hidden layer (the time layer's own rows only).
    pub hidden: Vec<(Vec<T>, Vec<T>)>,
    /// (∂W, ∂b) of the output layer.
    pub out: (Vec<T>, Vec<T>),
    /// Per-step column sums of ∂L/∂(time layer pre-activation), `[T, hidden]`.
    pub per_step: Vec<T>,
}

/// Gradients of a chain for one backward pass.
#[derive(Debug)]
pub struct ChainGrads<T> {
    /// (∂W, ∂b) of each hidden layer, the time layer's ∂W including the time rows' part below
    /// its own rows when it has them (`[2·hidden, hidden]`).
    pub hidden: Vec<(Vec<T>, Vec<T>)>,
    /// (∂W, ∂b) of the output layer.
    pub out: (Vec<T>, Vec<T>),
    /// ∂L/∂(time embedding) per step, `[T, hidden]` (empty without a time layer).
    pub temb: Vec<T>,
    /// ∂L/∂(chain input) `[rows, in]`, when asked for.
    pub input: Vec<T>,
}

/// Fills every row of `y` (`[m, w]`) with `b`, then adds `extra` (if any) to it.
fn fill_rows<T: HostFloat>(y: &mut [T], b: &[T], extra: Option<&[T]>) {
    let w = b.len();
    match extra {
        Some(e) => {
            let row: Vec<T> = b.iter().zip(e).map(|(&p, &q)| p + q).collect();
            y.chunks_exact_mut(w).for_each(|r| r.copy_from_slice(&row));
        }
        None => y.chunks_exact_mut(w).for_each(|r| r.copy_from_slice(b)),
    }
}

impl<T: HostFloat> Chain<T> {
    /// Width of the input.
    pub fn dim_in(&self) -> usize {
        self.hidden[0].n_in
    }

    /// The per-step extra bias of the time layer from the time embeddings `temb` (`[T, k]`):
    /// the embeddings themselves, or `temb · time_rows`; empty for a chain without a time layer.
    pub fn step_biases(&self, temb: &[T], steps: usize) -> Vec<T> {
        match (&self.time_rows, self.time_layer) {
            (_, None) => Vec::new(),
            (None, Some(_)) => temb.to_vec(),
            (Some(rows), Some(l)) => {
                let h = self.hidden[l].n_out;
                let k = temb.len() / steps;
                let mut e = vec![T::zero(); steps * h];
                matmul(&mut e, temb, false, rows, false, steps, k, h, false);
                e
            }
        }
    }

    /// Buffers for `rows` rows (from `pool`, contents unspecified: the forward pass writes
    /// every row it reads); with `own_input`, also for the chain's input.
    pub fn acts(&self, rows: usize, own_input: bool, pool: &ScratchPool) -> Acts<T> {
        let mut inputs = vec![if own_input { pool.take(rows * self.dim_in()) } else { Vec::new() }];
        let mut derivs = Vec::with_capacity(self.hidden.len());
        for l in &self.hidden {
            inputs.push(pool.take(rows * l.n_out));
            derivs.push(pool.take(rows * l.n_out));
        }
        Acts { inputs, derivs, out: pool.take(rows * self.out.n_out) }
    }

    /// Forward pass of the `m` rows `x` (`[m, in]`) into rows `r0..r0 + m` of `acts` (which
    /// keeps a copy of `x` if it owns its input), with the time layer's extra bias `extra`
    /// (one row; ignored without a time layer).
    pub fn forward(&self, acts: &mut Acts<T>, r0: usize, x: &[T], extra: &[T]) {
        let d = self.dim_in();
        let m = x.len() / d;
        if !acts.inputs[0].is_empty() {
            acts.inputs[0][r0 * d..(r0 + m) * d].copy_from_slice(x);
        }
        for (l, layer) in self.hidden.iter().enumerate() {
            let (below, above) = acts.inputs.split_at_mut(l + 1);
            let input = if l == 0 { x } else { &below[l][r0 * layer.n_in..(r0 + m) * layer.n_in] };
            let y = &mut above[0][r0 * layer.n_out..(r0 + m) * layer.n_out];
            fill_rows(y, &layer.b, (self.time_layer == Some(l)).then_some(extra));
            matmul(y, input, false, &layer.w, false, m, layer.n_in, layer.n_out, true);
            gelu_with_derivative(y, &mut acts.derivs[l][r0 * layer.n_out..(r0 + m) * layer.n_out]);
        }
        let last = acts.inputs.last().expect("a hidden layer");
        let o = &self.out;
        let y = &mut acts.out[r0 * o.n_out..(r0 + m) * o.n_out];
        fill_rows(y, &o.b, None);
        matmul(y, &last[r0 * o.n_in..(r0 + m) * o.n_in], false, &o.w, false, m, o.n_in, o.n_out, true);
    }

    /// Zeroed gradient accumulators for `steps` steps.
    pub fn accumulators(&self, steps: usize) -> ChainAcc<T> {
        let hidden = self.hidden.iter().map(|l| (vec![T::zero(); l.n_in * l.n_out], vec![T::zero(); l.n_out])).collect();
        let o = &self.out;
        let per_step = match self.time_layer {
            Some(l) => vec![T::zero(); steps * self.hidden[l].n_out],
            None => Vec::new(),
        };
        ChainAcc { hidden, out: (vec![T::zero(); o.n_in * o.n_out], vec![T::zero(); o.n_out]), per_step }
    }

    /// Backward pass of rows `r0..r0 + m` of `acts` (whole steps of `n` rows each) from ∂L/∂out
    /// `g_out` (`[m, out]`), adding the parameters' gradients to `acc`. `input` is the chain's
    /// input for these rows as the forward pass read it; `inject(l, g)` may add to ∂L/∂(input
    /// of hidden layer l) before it is used (another chain reading that activation). Returns
    /// ∂L/∂input (`[m, in]`) when `want_input`, else an empty vector.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_rows(
        &self,
        acts: &Acts<T>,
        input: &[T],
        r0: usize,
        g_out: &[T],
        n: usize,
        mut inject: impl FnMut(usize, &mut [T]),
        want_input: bool,
        acc: &mut ChainAcc<T>,
    ) -> Vec<T> {
        let o = &self.out;
        let m = g_out.len() / o.n_out;
        let rows_of = |l: usize, w: usize| if l == 0 { input } else { &acts.inputs[l][r0 * w..(r0 + m) * w] };
        matmul(&mut acc.out.0, rows_of(self.hidden.len(), o.n_in), true, g_out, false, o.n_in, m, o.n_out, true);
        column_sums_into(&mut acc.out.1, g_out);
        // ∂L/∂(output of the layer being processed).
        let mut g = vec![T::zero(); m * o.n_in];
        matmul(&mut g, g_out, false, &o.w, true, m, o.n_out, o.n_in, false);
        for (l, layer) in self.hidden.iter().enumerate().rev() {
            inject(l + 1, &mut g);
            // Through the GELU: ∂L/∂(pre-activation).
            for (gi, di) in g.iter_mut().zip(&acts.derivs[l][r0 * layer.n_out..(r0 + m) * layer.n_out]) {
                *gi *= *di;
            }
            let (gw, gb) = &mut acc.hidden[l];
            matmul(gw, rows_of(l, layer.n_in), true, &g, false, layer.n_in, m, layer.n_out, true);
            column_sums_into(gb, &g);
            if self.time_layer == Some(l) {
                // Per-step column sums: the gradient of each step's extra bias.
                let h = layer.n_out;
                for (k, block) in g.chunks_exact(n * h).enumerate() {
                    let i = r0 / n + k;
                    column_sums_into(&mut acc.per_step[i * h..(i + 1) * h], block);
                }
            }
            if l > 0 || want_input {
                let mut g_in = vec![T::zero(); m * layer.n_in];
                matmul(&mut g_in, &g, false, &layer.w, true, m, layer.n_out, layer.n_in, false);
                g = g_in;
            }
        }
        if want_input {
            g
        } else {
            Vec::new()
        }
    }

    /// The gradients accumulated in `acc`, with the time layer's per-step sums carried on to
    /// the time embedding `temb` (`[T, k]`) and, in the AT shape, to the time rows of its weight.
    pub fn finish(&self, acc: ChainAcc<T>, temb: &[T], input: Vec<T>) -> ChainGrads<T> {
        let ChainAcc { mut hidden, out, per_step } = acc;
        let mut temb_grad = Vec::new();
        if let Some(l) = self.time_layer {
            let h = self.hidden[l].n_out;
            let steps = per_step.len() / h;
            match &self.time_rows {
                None => temb_grad = per_step,
                Some(rows_w) => {
                    let k = temb.len() / steps;
                    let mut g_rows = vec![T::zero(); k * h];
                    matmul(&mut g_rows, temb, true, &per_step, false, k, steps, h, false);
                    hidden[l].0.extend_from_slice(&g_rows);
                    temb_grad = vec![T::zero(); steps * k];
                    matmul(&mut temb_grad, &per_step, false, rows_w, true, steps, h, k, false);
                }
            }
        }
        ChainGrads { hidden, out, temb: temb_grad, input }
    }

    /// Backward pass of all rows of `acts` (step-major blocks of `n` rows, one block per step)
    /// from ∂L/∂out `g_out` (`[rows, out]`): [`backward_rows`](Self::backward_rows) over every
    /// row, then [`finish`](Self::finish). For a chain that reads another's activation (whose
    /// `acts` do not own their input), ∂L/∂input is returned too.
    pub fn backward(
        &self,
        acts: &Acts<T>,
        input: &[T],
        g_out: &[T],
        n: usize,
        temb: &[T],
        inject: impl FnMut(usize, &mut [T]),
    ) -> ChainGrads<T> {
        let rows = g_out.len() / self.out.n_out;
        let mut acc = self.accumulators(rows / n);
        let want_input = acts.inputs[0].is_empty();
        let g_in = self.backward_rows(acts, input, 0, g_out, n, inject, want_input, &mut acc);
        self.finish(acc, temb, g_in)
    }
}
