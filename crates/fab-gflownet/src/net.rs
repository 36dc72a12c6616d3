//! Parameterisations of the per-state outputs: an MLP with hand-written forward and backward
//! passes (one-hot inputs are used sparsely) and an exact tabular one for tests.
//!
//! Output layout of every network (`docs/GFLOWNETS.md`, "Policies"): `[n_actions` forward
//! logits (increments…, STOP) `| n_back_actions` backward logits `| 1` log-flow `log F(s)]`.
//! Parameters live in a [`ParamSet`] (f32, CPU) so that the project's Adam, gradient clipping
//! and safetensors checkpoints apply unchanged; the forward pass reads a host copy refreshed
//! after every optimiser step ([`Network::refresh`]).

use std::fmt::Debug;
use std::sync::Arc;

use candle_core::{DType, Device};
use fab_core::gemm::{column_sums_into, matmul};
use fab_core::{Grads, ParamSet};
use rand::{Rng, RngCore};

use crate::env::DiscreteEnv;
use crate::{Error, Result};

/// Outputs of a batch of states, and what the backward pass needs.
#[derive(Debug)]
pub struct Forward {
    /// `[n, n_outputs]` row-major.
    pub out: Vec<f32>,
    /// Number of states.
    pub n: usize,
    tape: Option<Tape>,
}

impl Forward {
    /// No rows yet (an accumulator for [`Network::forward_append`]).
    pub fn empty() -> Self {
        Self { out: Vec::new(), n: 0, tape: None }
    }

    /// Whether the backward pass can run on it.
    pub fn is_kept(&self) -> bool {
        self.tape.is_some()
    }

    /// Removes every row but keeps the allocations, so that a recycled accumulator does not
    /// page-fault fresh memory in steady state.
    pub fn clear(&mut self) {
        self.out.clear();
        self.n = 0;
        match &mut self.tape {
            Some(Tape::Mlp { sparse, pre, act }) => {
                sparse.clear();
                pre.iter_mut().for_each(Vec::clear);
                act.iter_mut().for_each(Vec::clear);
            }
            Some(Tape::Table { rows }) => rows.clear(),
            None => {}
        }
    }
}

#[derive(Debug)]
enum Tape {
    /// Sparse first-layer input, per-layer pre-activations (hidden layers) and activations.
    Mlp { sparse: Vec<(u32, u32, f32)>, pre: Vec<Vec<f32>>, act: Vec<Vec<f32>> },
    /// Table rows used.
    Table { rows: Vec<usize> },
}

/// A map from states to the output layout above, differentiable by hand.
pub trait Network: Send + Sync + Debug {
    /// Outputs per state.
    fn n_outputs(&self) -> usize;

    /// The trainable parameters (f32, CPU).
    fn params(&self) -> &ParamSet;

    /// Re-reads the parameters after they changed (optimiser step, checkpoint load).
    fn refresh(&mut self) -> Result<()>;

    /// Outputs of `n` states (`states`: `[n, state_len]`), with a tape when `keep`.
    fn forward(&self, states: &[i32], keep: bool) -> Forward {
        let mut acc = Forward::empty();
        self.forward_append(states, &mut acc);
        if !keep {
            acc.tape = None;
        }
        acc
    }

    /// Appends the outputs of `states` (with their tape) to `acc`, which must hold only rows of
    /// this network with tapes; returns the new rows' indices. Several calls build one batch for
    /// one backward pass (e.g. the steps of a rollout).
    fn forward_append(&self, states: &[i32], acc: &mut Forward) -> std::ops::Range<usize>;

    /// Parameter gradients (aligned with [`params`](Self::params), flattened) of
    /// Σ grad_out · out for the batch of `fwd` (which must have been kept).
    fn backward(&self, fwd: &Forward, grad_out: &[f32]) -> Vec<Vec<f32>>;
}

/// Multi-layer perceptron `obs → hidden… → n_outputs` with LeakyReLU between layers and no output
/// activation. Weights are stored `[in, out]`; initialisation as PyTorch's `nn.Linear`
/// (U(±1/√fan_in) for weights and biases).
#[derive(Debug)]
pub struct Mlp {
    env: Arc<dyn DiscreteEnv>,
    sizes: Vec<usize>,
    slope: f32,
    params: ParamSet,
    host: Vec<Vec<f32>>,
}

impl Mlp {
    /// An MLP with `hidden` layer widths (e.g. `[256, 256]`), LeakyReLU `slope`, `n_outputs`
    /// outputs, initialised from `rng`.
    pub fn new(env: Arc<dyn DiscreteEnv>, hidden: &[usize], n_outputs: usize, slope: f64, rng: &mut dyn RngCore) -> Result<Self> {
        let mut sizes = vec![env.obs_len()];
        sizes.extend_from_slice(hidden);
        sizes.push(n_outputs);
        let mut params = ParamSet::new();
        for l in 0..sizes.len() - 1 {
            let (fan_in, fan_out) = (sizes[l], sizes[l + 1]);
            let bound = 1.0 / (fan_in as f64).sqrt();
            let w: Vec<f64> = (0..fan_in * fan_out).map(|_| rng.random_range(-bound..bound)).collect();
            let b: Vec<f64> = (0..fan_out).map(|_| rng.random_range(-bound..bound)).collect();
            params.create(format!("l{l}.weight"), w, &[fan_in, fan_out], DType::F32, &Device::Cpu)?;
            params.create(format!("l{l}.bias"), b, &[fan_out], DType::F32, &Device::Cpu)?;
        }
        let mut mlp = Self { env, sizes, slope: slope as f32, params, host: Vec::new() };
        mlp.refresh()?;
        Ok(mlp)
    }

    /// Sets every parameter of the last layer to zero (outputs 0 for every state).
    pub fn zero_last_layer(&mut self) -> Result<()> {
        let l = self.sizes.len() - 2;
        for name in [format!("l{l}.weight"), format!("l{l}.bias")] {
            let var = self.params.get(&name).expect("last layer exists");
            var.set(&var.as_tensor().zeros_like()?)?;
        }
        self.refresh()
    }

    fn n_layers(&self) -> usize {
        self.sizes.len() - 1
    }
}

fn host_vec(var: &candle_core::Var) -> Result<Vec<f32>> {
    Ok(var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

/// Host gradients (flattened, aligned with `params`, as [`Network::backward`] returns them) as the
/// [`Grads`] the optimiser takes.
pub fn grads_from_host(params: &ParamSet, grads: Vec<Vec<f32>>) -> Result<Grads> {
    let ts = params
        .vars()
        .iter()
        .zip(grads)
        .map(|(v, g)| Ok(Some(candle_core::Tensor::from_vec(g, v.shape().clone(), &Device::Cpu)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Grads(ts))
}

impl Network for Mlp {
    fn n_outputs(&self) -> usize {
        *self.sizes.last().expect("sizes")
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn refresh(&mut self) -> Result<()> {
        self.host = self.params.vars().iter().map(host_vec).collect::<Result<_>>()?;
        Ok(())
    }

    fn forward_append(&self, states: &[i32], acc: &mut Forward) -> std::ops::Range<usize> {
        let sl = self.env.state_len();
        let n = states.len() / sl;
        let r0 = acc.n;
        let nl = self.n_layers();
        let n_out = self.n_outputs();
        let tape =
            acc.tape.get_or_insert_with(|| Tape::Mlp { sparse: Vec::new(), pre: vec![Vec::new(); nl - 1], act: vec![Vec::new(); nl - 1] });
        let Tape::Mlp { sparse, pre, act } = tape else {
            panic!("Mlp::forward_append onto another network's tape");
        };
        // Layer 0 on the sparse input: z = b + Σ_j obs_j W[j, :], written after the rows kept so far.
        let h0 = self.sizes[1];
        let mut obs = vec![0f32; self.env.obs_len()];
        let (w0, b0) = (&self.host[0], &self.host[1]);
        let z0 = if nl == 1 { &mut acc.out } else { &mut pre[0] };
        let start = z0.len();
        z0.resize(start + n * h0, 0.0);
        for r in 0..n {
            self.env.observe(&states[r * sl..(r + 1) * sl], &mut obs);
            let row = &mut z0[start + r * h0..start + (r + 1) * h0];
            row.copy_from_slice(b0);
            for (j, &v) in obs.iter().enumerate() {
                if v != 0.0 {
                    let wj = &w0[j * h0..(j + 1) * h0];
                    for (o, w) in row.iter_mut().zip(wj) {
                        *o += v * w;
                    }
                    sparse.push(((r0 + r) as u32, j as u32, v));
                }
            }
        }
        let slope = self.slope;
        for l in 1..nl {
            let (fin, fout) = (self.sizes[l], self.sizes[l + 1]);
            // act[l−1] = LeakyReLU(pre[l−1]) for the new rows.
            let a_start = act[l - 1].len();
            act[l - 1].extend(pre[l - 1][a_start..].iter().map(|&v| v * if v < 0.0 { slope } else { 1.0 }));
            let after = &mut pre[l..];
            let dst: &mut Vec<f32> = if l + 1 == nl { &mut acc.out } else { &mut after[0] };
            let d_start = dst.len();
            for _ in 0..n {
                dst.extend_from_slice(&self.host[2 * l + 1]);
            }
            debug_assert_eq!(fout, self.host[2 * l + 1].len());
            matmul(&mut dst[d_start..], &act[l - 1][a_start..], false, &self.host[2 * l], false, n, fin, fout, true);
        }
        debug_assert_eq!(acc.out.len(), (r0 + n) * n_out);
        acc.n = r0 + n;
        r0..r0 + n
    }

    fn backward(&self, fwd: &Forward, grad_out: &[f32]) -> Vec<Vec<f32>> {
        let Some(Tape::Mlp { sparse, pre, act }) = &fwd.tape else {
            panic!("Mlp::backward needs a forward pass kept for backward");
        };
        let n = fwd.n;
        let nl = self.n_layers();
        let mut grads: Vec<Vec<f32>> = self.host.iter().map(|p| vec![0f32; p.len()]).collect();
        let mut g = grad_out.to_vec();
        for l in (1..nl).rev() {
            let (fin, fout) = (self.sizes[l], self.sizes[l + 1]);
            let a = &act[l - 1];
            matmul(&mut grads[2 * l], a, true, &g, false, fin, n, fout, false);
            column_sums_into(&mut grads[2 * l + 1], &g);
            let mut gin = vec![0f32; n * fin];
            matmul(&mut gin, &g, false, &self.host[2 * l], true, n, fout, fin, false);
            // Branch-free so that it vectorises (the signs are random).
            let slope = self.slope;
            for (gv, zv) in gin.iter_mut().zip(&pre[l - 1]) {
                *gv *= if *zv < 0.0 { slope } else { 1.0 };
            }
            g = gin;
        }
        let h0 = self.sizes[1];
        column_sums_into(&mut grads[1], &g);
        let gw0 = &mut grads[0];
        for &(r, j, v) in sparse {
            let gr = &g[r as usize * h0..(r as usize + 1) * h0];
            let dst = &mut gw0[j as usize * h0..(j as usize + 1) * h0];
            for (d, x) in dst.iter_mut().zip(gr) {
                *d += v * x;
            }
        }
        grads
    }
}

/// One free output vector per state (an exact parameterisation): needs an environment with an
/// enumeration. Initialised to zero (uniform policies, log F = 0).
#[derive(Debug)]
pub struct Tabular {
    env: Arc<dyn DiscreteEnv>,
    n_outputs: usize,
    params: ParamSet,
    host: Vec<f32>,
}

impl Tabular {
    /// A zero table for every state of `env`.
    pub fn new(env: Arc<dyn DiscreteEnv>, n_outputs: usize) -> Result<Self> {
        let n_states = env
            .enumeration()
            .ok_or_else(|| Error::Config(format!("a tabular parameterisation needs an enumerable environment; {} is not", env.name())))?
            .n_states();
        let mut params = ParamSet::new();
        params.create("table", vec![0.0; n_states * n_outputs], &[n_states, n_outputs], DType::F32, &Device::Cpu)?;
        let host = vec![0f32; n_states * n_outputs];
        Ok(Self { env, n_outputs, params, host })
    }
}

impl Network for Tabular {
    fn n_outputs(&self) -> usize {
        self.n_outputs
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn refresh(&mut self) -> Result<()> {
        self.host = host_vec(&self.params.vars()[0])?;
        Ok(())
    }

    fn forward_append(&self, states: &[i32], acc: &mut Forward) -> std::ops::Range<usize> {
        let sl = self.env.state_len();
        let en = self.env.enumeration().expect("checked at construction");
        let k = self.n_outputs;
        let Tape::Table { rows } = acc.tape.get_or_insert_with(|| Tape::Table { rows: Vec::new() }) else {
            panic!("Tabular::forward_append onto another network's tape");
        };
        let r0 = acc.n;
        for s in states.chunks_exact(sl) {
            let r = en.state_index(s);
            rows.push(r);
            acc.out.extend_from_slice(&self.host[r * k..(r + 1) * k]);
        }
        acc.n = rows.len();
        r0..acc.n
    }

    fn backward(&self, fwd: &Forward, grad_out: &[f32]) -> Vec<Vec<f32>> {
        let Some(Tape::Table { rows }) = &fwd.tape else {
            panic!("Tabular::backward needs a forward pass kept for backward");
        };
        let k = self.n_outputs;
        let mut g = vec![0f32; self.host.len()];
        for (i, &r) in rows.iter().enumerate() {
            for (d, v) in g[r * k..(r + 1) * k].iter_mut().zip(&grad_out[i * k..(i + 1) * k]) {
                *d += v;
            }
        }
        vec![g]
    }
}
