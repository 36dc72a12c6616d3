//! The drift networks of the diffusion sampler (`docs/DIFFUSION.md`, "Networks"), in candle so
//! that every objective — including PIS, whose gradient flows through the sampled path — is
//! differentiated by the same autodiff.
//!
//! Two architectures, both with a zero-initialised output layer (the untrained policy is
//! Brownian motion):
//! - [`Arch::Pis`] (the PIS architecture of Sendera et al.'s runs): sin/cos time features with
//!   fixed frequencies linspace(0.1, 100, H) and a learnable phase → Linear GELU Linear; state
//!   Linear; joint on the **sum**: GELU, 2×[Linear GELU], Linear.
//! - [`Arch::At`] (the Adaptive-Teachers default): time features sin/cos(2πk t), k = 1..H →
//!   2×[Linear GELU]; state 2×[Linear GELU]; joint on the **concatenation**: 2×[Linear GELU],
//!   Linear.
//!
//! Outputs per row: `[drift (d) | raw log-variance (d)]`. DB and SubTB add a log-flow head: a
//! separate small network on the same state and time encodings (for the PIS shape GELU,
//! 2×[Linear GELU], Linear to 1 on their sum; for the AT shape Linear GELU Linear GELU Linear to 1
//! on their concatenation), whose own parameters train in the flow group at `train.lr_log_z`
//! (`docs/DIFFUSION.md`, "Networks"). The Langevin scale NN₂ ([`LangevinScale`]) is a separate
//! network of time only whose output layer starts at weight 0, bias 0.01.

use candle_core::{DType, Device, Tensor, Var};
use fab_core::ParamSet;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::host::{Chain, HostFloat, HostLayer, HostNet};
use crate::ops::{add_grouped, gelu};
use crate::Result;

/// Which network shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// PIS architecture (sum of encodings), the Sendera et al. runs.
    Pis,
    /// Adaptive-Teachers architecture (concatenated encodings).
    At,
}

/// How a layer starts.
#[derive(Debug, Clone, Copy)]
enum Init {
    /// PyTorch's `nn.Linear`: weights and biases U(±1/√fan_in).
    Torch,
    /// All zeros.
    Zero,
    /// Weight 0, bias `b`.
    Bias(f64),
}

/// A dense layer y = x W + b with W stored `[in, out]`.
#[derive(Debug, Clone)]
struct Linear {
    w: Var,
    b: Var,
}

impl Linear {
    fn new(
        params: &mut ParamSet,
        name: &str,
        fan_in: usize,
        fan_out: usize,
        init: Init,
        dtype: DType,
        rng: &mut dyn RngCore,
    ) -> Result<Self> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let (w, b) = match init {
            Init::Torch => (draw(fan_in * fan_out), draw(fan_out)),
            Init::Zero => (vec![0.0; fan_in * fan_out], vec![0.0; fan_out]),
            Init::Bias(v) => (vec![0.0; fan_in * fan_out], vec![v; fan_out]),
        };
        let w = params.create(format!("{name}.weight"), w, &[fan_in, fan_out], dtype, &Device::Cpu)?;
        let b = params.create(format!("{name}.bias"), b, &[fan_out], dtype, &Device::Cpu)?;
        Ok(Self { w, b })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        add_grouped(&x.matmul(self.w.as_tensor())?, self.b.as_tensor())
    }
}

/// Sin/cos features of time: `[sin(f_k t + φ_k), cos(f_k t + φ_k)]`.
#[derive(Debug, Clone)]
struct TimeFeatures {
    freqs: Tensor,
    phase: Option<Var>,
}

impl TimeFeatures {
    fn new(arch: Arch, harmonics: usize, params: &mut ParamSet, name: &str, dtype: DType) -> Result<Self> {
        let freqs: Vec<f64> = match arch {
            Arch::Pis => {
                (0..harmonics).map(|k| if harmonics == 1 { 0.1 } else { 0.1 + (100.0 - 0.1) * k as f64 / (harmonics - 1) as f64 }).collect()
            }
            Arch::At => (1..=harmonics).map(|k| 2.0 * std::f64::consts::PI * k as f64).collect(),
        };
        let freqs = Tensor::from_vec(freqs, (1, harmonics), &Device::Cpu)?.to_dtype(dtype)?;
        let phase = match arch {
            Arch::Pis => Some(params.create(format!("{name}.phase"), vec![0.0; harmonics], &[1, harmonics], dtype, &Device::Cpu)?),
            Arch::At => None,
        };
        Ok(Self { freqs, phase })
    }

    /// `t: [m, 1]` → `[m, 2H]`.
    fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let mut arg = t.broadcast_mul(&self.freqs)?;
        if let Some(p) = &self.phase {
            arg = arg.broadcast_add(p.as_tensor())?;
        }
        Ok(Tensor::cat(&[arg.sin()?, arg.cos()?], 1)?)
    }
}

/// Shape of a drift network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetShape {
    /// Architecture.
    pub arch: Arch,
    /// Dimension d of the state.
    pub dim: usize,
    /// Hidden width (64 in the PIS runs, 256 in the Adaptive-Teachers default).
    pub hidden: usize,
    /// Number of time harmonics H (features 2H).
    pub harmonics: usize,
    /// Whether a log-flow head is added (DB and SubTB).
    pub flow_head: bool,
}

/// What the drift network computes at a batch of (state, time) rows.
#[derive(Debug, Clone)]
pub struct NetOutput {
    /// `[m, 2d]`: drift and raw log-variance.
    pub policy: Tensor,
    /// `[m]`: the network part of log F, when asked for.
    pub log_flow: Option<Tensor>,
}

/// The drift network (μ, raw log-variance and optionally log F of (x, t)).
#[derive(Debug, Clone)]
pub struct DriftNet {
    shape: NetShape,
    time_features: TimeFeatures,
    time_layers: Vec<Linear>,
    state_layers: Vec<Linear>,
    joint_layers: Vec<Linear>,
    out: Linear,
    flow_layers: Vec<Linear>,
}

impl DriftNet {
    /// A freshly initialised network: the policy's parameters are added to `params` and the
    /// log-flow head's (if any) to `flow_params`, both under `prefix`.
    pub fn new(
        shape: NetShape,
        params: &mut ParamSet,
        flow_params: &mut ParamSet,
        prefix: &str,
        dtype: DType,
        rng: &mut dyn RngCore,
    ) -> Result<Self> {
        let (h, d, f) = (shape.hidden, shape.dim, 2 * shape.harmonics);
        let time_features = TimeFeatures::new(shape.arch, shape.harmonics, params, &format!("{prefix}.time"), dtype)?;
        let mut lin = |name: &str, i: usize, o: usize, init: Init| Linear::new(params, &format!("{prefix}.{name}"), i, o, init, dtype, rng);
        let time_layers = vec![lin("time.0", f, h, Init::Torch)?, lin("time.1", h, h, Init::Torch)?];
        let (state_layers, joint_layers) = match shape.arch {
            Arch::Pis => {
                (vec![lin("state.0", d, h, Init::Torch)?], vec![lin("joint.0", h, h, Init::Torch)?, lin("joint.1", h, h, Init::Torch)?])
            }
            Arch::At => (
                vec![lin("state.0", d, h, Init::Torch)?, lin("state.1", h, h, Init::Torch)?],
                vec![lin("joint.0", 2 * h, h, Init::Torch)?, lin("joint.1", h, h, Init::Torch)?],
            ),
        };
        let out = lin("out", h, 2 * d, Init::Zero)?;
        let mut flow_layers = Vec::new();
        if shape.flow_head {
            let mut lin =
                |name: &str, i: usize, o: usize| Linear::new(flow_params, &format!("{prefix}.flow.{name}"), i, o, Init::Torch, dtype, rng);
            let first_in = match shape.arch {
                Arch::Pis => h,
                Arch::At => 2 * h,
            };
            flow_layers = vec![lin("0", first_in, h)?, lin("1", h, h)?, lin("out", h, 1)?];
        }
        Ok(Self { shape, time_features, time_layers, state_layers, joint_layers, out, flow_layers })
    }

    /// The shape.
    pub fn shape(&self) -> &NetShape {
        &self.shape
    }

    /// A host snapshot of the layers after the time embedding (`crate::host`): the policy
    /// chain with each weight's and bias's index in `params`, and the log-flow head (if any)
    /// with indices in `flow_params` (the sets the network was created in).
    pub fn host_net<T: HostFloat>(&self, params: &ParamSet, flow_params: &ParamSet) -> Result<HostNet<T>> {
        let index = |set: &ParamSet, v: &Var| {
            set.vars()
                .iter()
                .position(|p| p.as_tensor().id() == v.as_tensor().id())
                .ok_or_else(|| crate::Error::Config("host_net: a layer of the drift network is not in the given parameter set".into()))
        };
        // A layer; `split`: keep only its first `split` weight rows, returning the others.
        let layer = |set: &ParamSet, l: &Linear, split: Option<usize>| -> Result<(HostLayer<T>, Option<Vec<T>>)> {
            let (n_in, n_out) = l.w.as_tensor().dims2()?;
            let mut w = T::host(l.w.as_tensor())?;
            let (n_in, rest) = match split {
                Some(rows) => (rows, Some(w.split_off(rows * n_out))),
                None => (n_in, None),
            };
            let b = T::host(l.b.as_tensor())?;
            Ok((HostLayer { w, b, n_in, n_out, w_index: index(set, &l.w)?, b_index: index(set, &l.b)? }, rest))
        };
        let h = self.shape.hidden;
        let at = self.shape.arch == Arch::At;
        let mut hidden = Vec::new();
        let mut time_rows = None;
        for l in &self.state_layers {
            hidden.push(layer(params, l, None)?.0);
        }
        for (k, l) in self.joint_layers.iter().enumerate() {
            let (hl, rest) = layer(params, l, (at && k == 0).then_some(h))?;
            if rest.is_some() {
                time_rows = rest;
            }
            hidden.push(hl);
        }
        // PIS: the embedding is added before the first GELU; AT: it is the second half of the
        // first joint layer's input.
        let time_layer = if at { self.state_layers.len() } else { 0 };
        let policy = Chain { hidden, time_layer: Some(time_layer), time_rows, out: layer(params, &self.out, None)?.0 };
        let flow = match self.flow_layers.split_last() {
            None => None,
            Some((last, inner)) => {
                let mut hidden = Vec::new();
                let mut time_rows = None;
                for (k, l) in inner.iter().enumerate() {
                    let (hl, rest) = layer(flow_params, l, (at && k == 0).then_some(h))?;
                    if rest.is_some() {
                        time_rows = rest;
                    }
                    hidden.push(hl);
                }
                let chain = Chain { hidden, time_layer: at.then_some(0), time_rows, out: layer(flow_params, last, None)?.0 };
                // The head reads the joint input: GELU(state + time) (PIS, the first hidden
                // output) or the state encoding beside the embedding (AT).
                Some((chain, if at { time_layer } else { 1 }))
            }
        };
        Ok(HostNet { policy, flow })
    }

    /// Time embeddings of the times `ts` (`[len(ts), hidden]`), computed once per rollout.
    pub fn embed_times(&self, ts: &[f64], dtype: DType) -> Result<Tensor> {
        let t = Tensor::from_slice(ts, (ts.len(), 1), &Device::Cpu)?.to_dtype(dtype)?;
        let z = self.time_features.forward(&t)?;
        let z = gelu(&self.time_layers[0].forward(&z)?)?;
        let z = self.time_layers[1].forward(&z)?;
        Ok(match self.shape.arch {
            Arch::Pis => z,
            Arch::At => gelu(&z)?,
        })
    }

    /// Outputs at states `x: [m, d]` and time embeddings `temb: [g, hidden]` for g equal blocks
    /// of rows (g = 1: one time for all rows; g = T: step-major rows); `with_flow`: also the
    /// log-flow head (an error for a network without one).
    pub fn forward(&self, x: &Tensor, temb: &Tensor, with_flow: bool) -> Result<NetOutput> {
        let m = x.dim(0)?;
        // The joint input: the sum (PIS) or concatenation (AT) of the two encodings, which the
        // flow head reads too.
        let joint_in = match self.shape.arch {
            Arch::Pis => {
                let s = self.state_layers[0].forward(x)?;
                gelu(&add_grouped(&s, temb)?)?
            }
            Arch::At => {
                let mut s = x.clone();
                for l in &self.state_layers {
                    s = gelu(&l.forward(&s)?)?;
                }
                let (g, h) = temb.dims2()?;
                let t = temb.unsqueeze(1)?.broadcast_as((g, m / g, h))?.reshape((m, h))?;
                Tensor::cat(&[&s, &t], 1)?
            }
        };
        let mut z = joint_in.clone();
        for l in &self.joint_layers {
            z = gelu(&l.forward(&z)?)?;
        }
        let policy = self.out.forward(&z)?;
        let log_flow = match (with_flow, self.flow_layers.split_last()) {
            (false, _) => None,
            (true, None) => return Err(crate::Error::Config("log-flows asked of a network without a flow head".into())),
            (true, Some((last, hidden))) => {
                let mut f = joint_in;
                for l in hidden {
                    f = gelu(&l.forward(&f)?)?;
                }
                Some(last.forward(&f)?.squeeze(1)?)
            }
        };
        Ok(NetOutput { policy, log_flow })
    }
}

/// NN₂ of the Langevin parametrisation: a scalar of time multiplying the score.
#[derive(Debug, Clone)]
pub struct LangevinScale {
    time_features: TimeFeatures,
    layers: Vec<Linear>,
}

impl LangevinScale {
    /// A fresh network (output layer weight 0, bias 0.01) with parameters under `prefix`.
    pub fn new(
        arch: Arch,
        hidden: usize,
        harmonics: usize,
        params: &mut ParamSet,
        prefix: &str,
        dtype: DType,
        rng: &mut dyn RngCore,
    ) -> Result<Self> {
        let time_features = TimeFeatures::new(arch, harmonics, params, &format!("{prefix}.time"), dtype)?;
        let mut lin = |name: &str, i: usize, o: usize, init: Init| Linear::new(params, &format!("{prefix}.{name}"), i, o, init, dtype, rng);
        let layers = vec![
            lin("0", 2 * harmonics, hidden, Init::Torch)?,
            lin("1", hidden, hidden, Init::Torch)?,
            lin("2", hidden, hidden, Init::Torch)?,
            lin("out", hidden, 1, Init::Bias(0.01))?,
        ];
        Ok(Self { time_features, layers })
    }

    /// Scales at the times `ts`: `[len(ts), 1]`.
    pub fn forward(&self, ts: &[f64], dtype: DType) -> Result<Tensor> {
        let t = Tensor::from_slice(ts, (ts.len(), 1), &Device::Cpu)?.to_dtype(dtype)?;
        let mut z = self.layers[0].forward(&self.time_features.forward(&t)?)?;
        for l in &self.layers[1..] {
            z = l.forward(&gelu(&z)?)?;
        }
        Ok(z)
    }
}
