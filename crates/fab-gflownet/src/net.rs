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
use fab_core::ParamSet;
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
    fn forward(&self, states: &[i32], keep: bool) -> Forward;

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

    fn forward(&self, states: &[i32], keep: bool) -> Forward {
        let sl = self.env.state_len();
        let n = states.len() / sl;
        let h0 = self.sizes[1];
        // Layer 0 on the sparse input: h = b + Σ_j obs_j W[j, :].
        let mut obs = vec![0f32; self.env.obs_len()];
        let mut sparse = Vec::new();
        let mut z = vec![0f32; n * h0];
        let (w0, b0) = (&self.host[0], &self.host[1]);
        for r in 0..n {
            self.env.observe(&states[r * sl..(r + 1) * sl], &mut obs);
            let row = &mut z[r * h0..(r + 1) * h0];
            row.copy_from_slice(b0);
            for (j, &v) in obs.iter().enumerate() {
                if v != 0.0 {
                    let wj = &w0[j * h0..(j + 1) * h0];
                    for (o, w) in row.iter_mut().zip(wj) {
                        *o += v * w;
                    }
                    if keep {
                        sparse.push((r as u32, j as u32, v));
                    }
                }
            }
        }
        let mut pre = Vec::new();
        let mut act = Vec::new();
        for l in 1..self.n_layers() {
            let a = leaky(&z, self.slope);
            let (fin, fout) = (self.sizes[l], self.sizes[l + 1]);
            let mut next = vec![0f32; n * fout];
            for row in next.chunks_exact_mut(fout) {
                row.copy_from_slice(&self.host[2 * l + 1]);
            }
            matmul(&mut next, &a, false, &self.host[2 * l], false, n, fin, fout, true);
            if keep {
                pre.push(std::mem::take(&mut z));
                act.push(a);
            }
            z = next;
        }
        Forward { out: z, n, tape: keep.then_some(Tape::Mlp { sparse, pre, act }) }
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
            for (gv, zv) in gin.iter_mut().zip(&pre[l - 1]) {
                if *zv < 0.0 {
                    *gv *= self.slope;
                }
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

fn leaky(z: &[f32], slope: f32) -> Vec<f32> {
    z.iter().map(|&v| if v < 0.0 { v * slope } else { v }).collect()
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

    fn forward(&self, states: &[i32], keep: bool) -> Forward {
        let sl = self.env.state_len();
        let en = self.env.enumeration().expect("checked at construction");
        let k = self.n_outputs;
        let rows: Vec<usize> = states.chunks_exact(sl).map(|s| en.state_index(s)).collect();
        let mut out = Vec::with_capacity(rows.len() * k);
        for &r in &rows {
            out.extend_from_slice(&self.host[r * k..(r + 1) * k]);
        }
        let n = rows.len();
        Forward { out, n, tape: keep.then_some(Tape::Table { rows }) }
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
