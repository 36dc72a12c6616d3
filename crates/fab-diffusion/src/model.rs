//! The diffusion sampler: drift network (with optional Langevin parametrisation and learned
//! variance), learned log Z, and the one routine that walks paths — sampled forward (with
//! exploration, detached or reparameterised) or given (backward trajectories) — returning every
//! per-step log-probability the objectives need (`docs/DIFFUSION.md`, "The process").

use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use fab_core::{Grads, LogDensity, ParamSet};
use fab_optim::{Adam, AdamConfig, StepOutcome};
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};

use crate::host::{Acts, Chain, ChainGrads, HostFloat, HostNet, ScratchPool};
use crate::net::{DriftNet, LangevinScale, NetOutput, NetShape};
use crate::process::{Process, HALF_LOG_2PI};
use crate::{Error, Result};

/// Everything that fixes a sampler's shape and parametrisation.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The discretisation.
    pub process: Process,
    /// The drift network.
    pub shape: NetShape,
    /// Learned variance: log σ_i² = log σ² + 4·tanh(raw).
    pub learned_variance: bool,
    /// Langevin parametrisation μ = NN₁ + NN₂(t)·∇log R (with the hidden width of NN₂).
    pub langevin: Option<usize>,
    /// Clipping: score to ±`score_clip` (NaN → 0) and drift to ±`drift_clip`; `None`: off.
    pub clip: Option<(f64, f64)>,
    /// Forward-looking flow log F(x_i) = (1−t_i)·log N(x_i; 0, σ² max(1,i)Δt) + t_i·log R(x_i) + NN.
    pub forward_looking: bool,
    /// Precision of the network.
    pub dtype: DType,
}

/// Where the points of a batch of paths come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Sampled forward from 0, with extra increment standard deviation `exploration` (0: the
    /// policy itself). log P_F is always that of the un-noised policy.
    Forward {
        /// Exploration standard deviation e (increment variance σ_i²Δt + e²).
        exploration: f64,
    },
    /// Given step-major points `[(T+1), n, d]` (e.g. backward trajectories from P_B).
    Given(&'a [f64]),
}

/// What the autodiff graph keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Nothing (evaluation).
    None,
    /// Gradients reach the parameters through the policy's outputs at fixed points.
    Params,
    /// Reparameterised: gradients also flow through the sampled points (PIS).
    Path,
    /// As [`Track::Params`], but recorded on the hand-written host path (`crate::host`):
    /// `log_pf` (and `log_f`) are then leaves of the graph, and [`Diffusion::gradients_of`]
    /// carries their gradients on to the parameters by hand. [`Track::Params`] when the host
    /// path is switched off.
    Tape,
    /// As [`Track::Path`], but recorded on the host path for sampled paths without log-flows:
    /// `log_pf`, `log_pb` and `x_last` are leaves of the graph, and
    /// [`Diffusion::gradients_of`] back-propagates through the points by hand. [`Track::Path`]
    /// otherwise.
    PathTape,
}

/// Target terms a forward walk computed at every step (step-major rows).
#[derive(Debug, Clone)]
struct StepTerms {
    /// log R at the state of each (step, path) row, `[T·n]`.
    log_r: Vec<f64>,
    /// The clipped score there, `[T·n, d]` (with the Langevin parametrisation).
    score: Option<Vec<f64>>,
}

/// Target terms already known at the points of paths handed to the batched pass.
#[derive(Debug)]
struct KnownTerms<'a> {
    /// Per-step terms, when the walk computed them.
    steps: Option<StepTerms>,
    /// log R at the end points, `[n]`.
    ends: &'a [f64],
}

/// A batch of paths with the per-step terms of every objective.
#[derive(Debug)]
pub struct Paths {
    /// Number of paths.
    pub n: usize,
    /// Step-major points `[(T+1), n, d]` (host copy).
    pub x: Vec<f64>,
    /// The end points x_T as a tensor (carrying the path graph under [`Track::Path`]).
    pub x_last: Tensor,
    /// log P_F(x_{i+1} | x_i) for steps i = 0..T−1: `[n, T]`.
    pub log_pf: Tensor,
    /// log P_B(x_i | x_{i+1}) for steps i = 0..T−1 (step 0 is zero): `[n, T]`.
    pub log_pb: Tensor,
    /// log F(x_i) for i = 0..T−1, `[n, T]`, when flows were asked for. log F(x_0) is the
    /// learned log Z of DB and SubTB.
    pub log_f: Option<Tensor>,
    /// log R(x_T) (host).
    pub log_r: Vec<f64>,
    /// The host path's record for the backward pass ([`Track::Tape`]); `Some(None)` once
    /// [`Diffusion::gradients_of`] has used it.
    tape: Option<Mutex<Option<Box<dyn TapeBackward>>>>,
}

/// What a recorded host forward pass needs to carry ∂L/∂log P_F (and ∂L/∂log F) on to the
/// parameters.
trait TapeBackward: std::fmt::Debug + Send + Sync {
    /// The `log_pf` leaf.
    fn log_pf(&self) -> &Tensor;
    /// The `log_f` leaf, when the log-flows were recorded.
    fn log_f(&self) -> Option<&Tensor>;
    /// The `log_pb` and `x_last` leaves of reparameterised paths ([`Track::PathTape`]).
    fn path_leaves(&self) -> Option<(&Tensor, &Tensor)>;
    /// The policy's gradients from the loss's gradients at the leaves; the log-flow head's
    /// gradients are written into `flow` (the flow group's, from the loss). `x`: the paths'
    /// points.
    fn backward(&self, model: &Diffusion, up: &Upstream, x: &[f64], flow: &mut Grads) -> Result<Grads>;
    /// Returns the tape's large buffers to the model's pool.
    fn recycle(self: Box<Self>, pool: &ScratchPool);
}

/// ∂L at the leaves of recorded paths (`[n, T]` path-major, `x_last` `[n, d]`).
#[derive(Debug)]
struct Upstream {
    log_pf: Vec<f64>,
    log_f: Option<Vec<f64>>,
    /// For reparameterised paths: ∂L/∂log P_B and ∂L/∂x_T.
    path: Option<(Vec<f64>, Vec<f64>)>,
}

/// What a reparameterised walk keeps for back-propagation through the points (per row and
/// coordinate, `[rows, d]`).
#[derive(Debug)]
struct PathRecord {
    /// The standard normal of each move.
    z: Vec<f64>,
    /// The (clipped) drift.
    mu: Vec<f64>,
    /// 1 where the drift clip did not bind, else 0.
    inside: Vec<f64>,
    /// tanh of the raw log-variance output (learned variance).
    th: Vec<f64>,
    /// The (clipped) score the Langevin parametrisation read, a constant of the graph.
    score: Vec<f64>,
    /// Exploration variance e² added to each move's.
    e2: f64,
}

/// The record of [`Diffusion::host_paths`] (rows step-major: row i·n + k is path k at step i).
#[derive(Debug)]
struct HostTape<T> {
    net: HostNet<T>,
    acts: Acts<T>,
    /// The log-flow head's activations (DB, SubTB).
    flow_acts: Option<Acts<T>>,
    n: usize,
    steps: usize,
    log_pf: Tensor,
    log_f: Option<Tensor>,
    log_pb: Tensor,
    x_last: Tensor,
    /// Reparameterised paths' record.
    path: Option<PathRecord>,
    /// ∂log P_F/∂μ_j per row (0 where the drift was clipped), `[rows, d]`.
    mu_factor: Vec<f64>,
    /// ∂log P_F/∂(raw log-variance output)_j per row with learned variance, `[rows, d]`.
    raw_factor: Vec<f64>,
    /// Σ_j ∂log P_F/∂μ_j · score_j per row with the Langevin parametrisation, `[rows]`.
    score_dot: Vec<f64>,
    /// The time embeddings `[T, hidden]` on the graph, and their host values.
    temb: Tensor,
    temb_host: Vec<T>,
    /// The Langevin scales `[T, 1]` on the graph.
    scale: Option<Tensor>,
}

/// Writes `values` as the gradient of parameter `index` of `vars`.
fn put_grad<T: HostFloat>(grads: &mut Grads, vars: &[Var], index: usize, values: Vec<T>) -> Result<()> {
    grads.0[index] = Some(Tensor::from_vec(values, vars[index].dims(), &Device::Cpu)?);
    Ok(())
}

/// Writes a chain's layer gradients (`hidden`, `out`: (∂W, ∂b) pairs) into `grads` (indexed like
/// `vars`).
type LayerGrads<T> = (Vec<T>, Vec<T>);
fn put_chain_grads<T: HostFloat>(
    grads: &mut Grads,
    vars: &[Var],
    chain: &Chain<T>,
    hidden: Vec<LayerGrads<T>>,
    out: LayerGrads<T>,
) -> Result<()> {
    for (layer, (gw, gb)) in chain.hidden.iter().zip(hidden) {
        put_grad(grads, vars, layer.w_index, gw)?;
        put_grad(grads, vars, layer.b_index, gb)?;
    }
    put_grad(grads, vars, chain.out.w_index, out.0)?;
    put_grad(grads, vars, chain.out.b_index, out.1)
}

impl<T: HostFloat> TapeBackward for HostTape<T> {
    fn log_pf(&self) -> &Tensor {
        &self.log_pf
    }

    fn log_f(&self) -> Option<&Tensor> {
        self.log_f.as_ref()
    }

    fn path_leaves(&self) -> Option<(&Tensor, &Tensor)> {
        self.path.as_ref().map(|_| (&self.log_pb, &self.x_last))
    }

    fn recycle(self: Box<Self>, pool: &ScratchPool) {
        let t = *self;
        t.acts.recycle(pool);
        if let Some(a) = t.flow_acts {
            a.recycle(pool);
        }
        for b in [t.mu_factor, t.raw_factor, t.score_dot] {
            pool.give(b);
        }
        if let Some(r) = t.path {
            for b in [r.z, r.mu, r.inside, r.th, r.score] {
                pool.give(b);
            }
        }
    }

    fn backward(&self, model: &Diffusion, up: &Upstream, x: &[f64], flow: &mut Grads) -> Result<Grads> {
        if let (Some(rec), Some((g_pb, g_x_last))) = (&self.path, &up.path) {
            return self.backward_through_points(model, rec, &up.log_pf, g_pb, g_x_last, x);
        }
        let (g, g_f) = (&up.log_pf[..], up.log_f.as_deref());
        let (n, steps, d) = (self.n, self.steps, model.spec.process.dim);
        let policy = &self.net.policy;
        let od = policy.out.n_out;
        let rows = steps * n;
        let mut g_out = vec![T::zero(); rows * od];
        let mut g_scale = vec![0.0; steps];
        for i in 0..steps {
            for k in 0..n {
                let c = g[k * steps + i];
                let r = i * n + k;
                let row = &mut g_out[r * od..(r + 1) * od];
                for (o, f) in row[..d].iter_mut().zip(&self.mu_factor[r * d..(r + 1) * d]) {
                    *o = T::of(c * f);
                }
                if !self.raw_factor.is_empty() {
                    for (o, f) in row[d..2 * d].iter_mut().zip(&self.raw_factor[r * d..(r + 1) * d]) {
                        *o = T::of(c * f);
                    }
                }
                if !self.score_dot.is_empty() {
                    g_scale[i] += c * self.score_dot[r];
                }
            }
        }
        // The log-flow head first: its input gradient joins the policy chain's at the
        // activation it reads.
        let mut temb_grad = vec![T::zero(); self.temb_host.len()];
        let head = match (&self.net.flow, &self.flow_acts, g_f) {
            (Some((chain, src)), Some(acts), Some(g_f)) => {
                let mut g_lf = vec![T::zero(); rows];
                for i in 0..steps {
                    for k in 0..n {
                        g_lf[i * n + k] = T::of(g_f[k * steps + i]);
                    }
                }
                let cg = chain.backward(acts, &self.acts.inputs[*src], &g_lf, n, &self.temb_host, |_, _| {});
                let ChainGrads { hidden, out, temb, input } = cg;
                for (a, b) in temb_grad.iter_mut().zip(&temb) {
                    *a += *b;
                }
                put_chain_grads(flow, model.flow_params.vars(), chain, hidden, out)?;
                Some((*src, input))
            }
            _ => None,
        };
        let inject = |l: usize, g: &mut [T]| {
            if let Some((src, gi)) = &head {
                if l == *src {
                    for (a, b) in g.iter_mut().zip(gi) {
                        *a += *b;
                    }
                }
            }
        };
        let pg = policy.backward(&self.acts, &self.acts.inputs[0], &g_out, n, &self.temb_host, inject);
        for (a, b) in temb_grad.iter_mut().zip(&pg.temb) {
            *a += *b;
        }
        self.policy_grads(model, pg.hidden, pg.out, temb_grad, g_scale)
    }
}

impl<T: HostFloat> HostTape<T> {
    /// The policy's gradients from its chain's layer gradients and ∂L/∂(time embedding)
    /// (`[T, hidden]`) and ∂L/∂(Langevin scale) (`[T]`), carried on through the small candle
    /// graphs of the T step times: back-propagate Σ temb ⊙ ∂L/∂temb + Σ scale ⊙ ∂L/∂scale.
    fn policy_grads(
        &self,
        model: &Diffusion,
        hidden: Vec<LayerGrads<T>>,
        out: LayerGrads<T>,
        temb_grad: Vec<T>,
        g_scale: Vec<f64>,
    ) -> Result<Grads> {
        let steps = self.steps;
        let vars = model.params.vars();
        let mut grads = Grads::empty(vars.len());
        put_chain_grads(&mut grads, vars, &self.net.policy, hidden, out)?;
        let h = self.temb_host.len() / steps;
        let mut surrogate = (&self.temb * Tensor::from_vec(temb_grad, (steps, h), &Device::Cpu)?)?.sum_all()?;
        if let Some(scale) = &self.scale {
            let gs = Tensor::from_vec(g_scale, (steps, 1), &Device::Cpu)?.to_dtype(scale.dtype())?;
            surrogate = (surrogate + (scale * gs)?.sum_all()?)?;
        }
        let store = surrogate.backward()?;
        for (slot, var) in grads.0.iter_mut().zip(vars) {
            if slot.is_none() {
                *slot = store.get(var.as_tensor()).cloned();
            }
        }
        Ok(grads)
    }

    /// Back-propagation through reparameterised paths (PIS): from ∂L/∂log P_F, ∂L/∂log P_B
    /// (`[n, T]`) and ∂L/∂x_T (`[n, d]`) backward in time. At step i, with the adjoint G of
    /// x_{i+1} complete, the move x_{i+1} = x_i + μΔt + √(σ²Δt + e²)·z and the step's log P_F and
    /// log P_B give ∂L/∂μ, ∂L/∂(log-variance) and the direct part of ∂L/∂x_i; the network's
    /// backward pass for the step's rows adds its parameters' gradients and the rest of
    /// ∂L/∂x_i. The score of the Langevin parametrisation is a constant, as in the candle path.
    fn backward_through_points(
        &self,
        model: &Diffusion,
        rec: &PathRecord,
        g_pf: &[f64],
        g_pb: &[f64],
        g_x_last: &[f64],
        x: &[f64],
    ) -> Result<Grads> {
        let p = model.spec.process;
        let (n, steps, d, dt) = (self.n, self.steps, p.dim, p.dt());
        let block = n * d;
        let policy = &self.net.policy;
        let od = policy.out.n_out;
        let learned = !rec.th.is_empty();
        let ln_t_scale = p.t_scale.ln();
        let mut acc = policy.accumulators(steps);
        let mut g_scale = vec![0.0; steps];
        // ∂L/∂x_{i+1}: its contributions from later steps (and, at i + 1 = T, from x_T itself).
        let mut g_next = g_x_last.to_vec();
        let mut g_out = vec![T::zero(); n * od];
        for i in (0..steps).rev() {
            let bridge = (i >= 1).then(|| p.bridge_coefficients(i));
            let mut g_cur = vec![0.0; block];
            for k in 0..n {
                let cpf = g_pf[k * steps + i];
                let cpb = g_pb[k * steps + i];
                for j in 0..d {
                    let idx = k * d + j;
                    let r = (i * n + k) * d + j;
                    let (xi, xn, mu) = (x[i * block + idx], x[(i + 1) * block + idx], rec.mu[r]);
                    let diff = xn - xi - mu * dt;
                    let (var, th) = if learned {
                        let th = rec.th[r];
                        ((4.0 * th + ln_t_scale).exp(), th)
                    } else {
                        (p.t_scale, 0.0)
                    };
                    // log P_F of the step: ∂/∂x_{i+1} (= −∂/∂x_i), ∂/∂μ, ∂/∂(log-variance).
                    let inv = 1.0 / (var * dt);
                    let (pf_xn, pf_mu, pf_lv) = (-diff * inv, diff * dt * inv, if learned { 0.5 * diff * diff * inv - 0.5 } else { 0.0 });
                    // log P_B of the step: r = x_i − a·x_{i+1}, variance v.
                    let (pb_xi, pb_xn) = match bridge {
                        Some((a, v)) => {
                            let rr = xi - a * xn;
                            (-rr / v, a * rr / v)
                        }
                        None => (0.0, 0.0),
                    };
                    let g = g_next[idx] + cpf * pf_xn + cpb * pb_xn;
                    let sd = (var * dt + rec.e2).sqrt();
                    let g_mu = (g * dt + cpf * pf_mu) * rec.inside[r];
                    g_out[k * od + j] = T::of(g_mu);
                    if learned {
                        let g_lv = g * 0.5 * var * dt * rec.z[r] / sd + cpf * pf_lv;
                        g_out[k * od + d + j] = T::of(g_lv * 4.0 * (1.0 - th * th));
                    }
                    if !rec.score.is_empty() {
                        g_scale[i] += g_mu * rec.score[r];
                    }
                    g_cur[idx] = g - cpf * pf_xn + cpb * pb_xi;
                }
            }
            let rows = i * n..(i + 1) * n;
            let input = &self.acts.inputs[0][rows.start * d..rows.end * d];
            let g_in = policy.backward_rows(&self.acts, input, rows.start, &g_out, n, |_, _| {}, true, &mut acc);
            for (a, b) in g_cur.iter_mut().zip(&g_in) {
                *a += b.f64();
            }
            g_next = g_cur;
        }
        let pg = policy.finish(acc, &self.temb_host, Vec::new());
        self.policy_grads(model, pg.hidden, pg.out, pg.temb, g_scale)
    }
}

impl Paths {
    /// Σ_i log P_F per path (a tensor on the graph).
    pub fn sum_log_pf(&self) -> Result<Tensor> {
        Ok(self.log_pf.sum(1)?)
    }

    /// Σ_i log P_B per path.
    pub fn sum_log_pb(&self) -> Result<Tensor> {
        Ok(self.log_pb.sum(1)?)
    }

    /// Σ log P_F − Σ log P_B per path on the host: the path estimate of log q(x_T).
    pub fn log_q_host(&self) -> Result<Vec<f64>> {
        let d = (self.sum_log_pf()? - self.sum_log_pb()?)?;
        Ok(fab_core::to_f64_vec(&d)?)
    }

    /// The end points `[n, d]` (host).
    pub fn ends(&self, dim: usize) -> &[f64] {
        &self.x[self.x.len() - self.n * dim..]
    }
}

/// A diffusion sampler's parameters and the routine that evaluates paths.
#[derive(Debug)]
pub struct Diffusion {
    spec: ModelSpec,
    net: DriftNet,
    langevin: Option<LangevinScale>,
    params: ParamSet,
    log_z: Var,
    flow_params: ParamSet,
    host_path: bool,
    scratch: ScratchPool,
}

fn to_tensor(v: &[f64], rows: usize, cols: usize, dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, (rows, cols), &Device::Cpu)?.to_dtype(dtype)?)
}

impl Diffusion {
    /// A fresh sampler (network from `rng`, log Z = 0).
    pub fn new(spec: ModelSpec, rng: &mut dyn RngCore) -> Result<Self> {
        let mut params = ParamSet::new();
        let mut flow_params = ParamSet::new();
        let log_z = flow_params.create("log_z", vec![0.0], &[1], spec.dtype, &Device::Cpu)?;
        let net = DriftNet::new(spec.shape, &mut params, &mut flow_params, "drift", spec.dtype, rng)?;
        let langevin = match spec.langevin {
            Some(h) => Some(LangevinScale::new(spec.shape.arch, h, spec.shape.harmonics, &mut params, "langevin", spec.dtype, rng)?),
            None => None,
        };
        Ok(Self { spec, net, langevin, params, log_z, flow_params, host_path: true, scratch: ScratchPool::default() })
    }

    /// Switches the hand-written host path (`crate::host`, the default) off or on. With it off,
    /// every path goes through candle's graph; the two agree to rounding (tests compare them).
    pub fn set_host_path(&mut self, on: bool) {
        self.host_path = on;
    }

    /// The specification.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The discretisation.
    pub fn process(&self) -> &Process {
        &self.spec.process
    }

    /// Policy parameters (drift network and Langevin scale).
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The flow group: the learned log Z and, for DB and SubTB, the log-flow head (trained at
    /// `train.lr_log_z`, like the reference code's flow group).
    pub fn flow_params(&self) -> &ParamSet {
        &self.flow_params
    }

    /// The learned scalar log Z of TB (a tensor `[1]` on the graph). DB and SubTB do not use it:
    /// their log Z is log F(x_0), an output of the log-flow head.
    pub fn log_z_tensor(&self) -> &Tensor {
        self.log_z.as_tensor()
    }

    /// The learned log Z: log F(x_0) for a network with a log-flow head (DB, SubTB), otherwise
    /// the scalar of TB.
    pub fn log_z(&self) -> f64 {
        if self.spec.shape.flow_head {
            self.initial_log_flow().unwrap_or(f64::NAN)
        } else {
            fab_core::to_f64_vec(self.log_z.as_tensor()).map_or(f64::NAN, |v| v[0])
        }
    }

    /// log F(x_0) at x_0 = 0, t = 0 (with the forward-looking part when it is on).
    fn initial_log_flow(&self) -> Result<f64> {
        let (d, dtype) = (self.spec.process.dim, self.spec.dtype);
        let temb = self.net.embed_times(&[0.0], dtype)?;
        let out = self.net.forward(&Tensor::zeros((1, d), dtype, &Device::Cpu)?, &temb, true)?;
        let nn = out.log_flow.map(|t| fab_core::to_f64_vec(&t)).transpose()?.map_or(f64::NAN, |v| v[0]);
        let prior = if self.spec.forward_looking { self.flow_prior(&vec![0.0; d], &[0.0], 0)[0] } else { 0.0 };
        Ok(nn + prior)
    }

    /// log R and (with `grad`) the clipped score ∇log R at host points `[n, d]`.
    fn target_terms(&self, target: &dyn LogDensity, x: &[f64], n: usize, grad: bool) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        let d = self.spec.process.dim;
        let xt = to_tensor(x, n, d, self.spec.dtype)?;
        if !grad {
            return Ok((fab_core::to_f64_vec(&target.log_prob(&xt)?)?, None));
        }
        let (lp, g) = target.log_prob_and_grad(&xt)?;
        let mut g = fab_core::to_f64_vec(&g)?;
        if let Some((score_clip, _)) = self.spec.clip {
            for v in &mut g {
                *v = if v.is_nan() { 0.0 } else { v.clamp(-score_clip, score_clip) };
            }
        }
        Ok((fab_core::to_f64_vec(&lp)?, Some(g)))
    }

    /// Walks `n` paths (or the given ones) through the policy and returns every per-step term.
    /// `flows`: also the log-flows of the intermediate states (DB, SubTB). Randomness: the
    /// forward noise only (n·d standard normals per step, in step order).
    ///
    /// Paths without a graph ([`Track::None`]), with gradients at fixed points ([`Track::Tape`])
    /// and sampled reparameterised ones ([`Track::PathTape`]) are evaluated on the host path, the
    /// network's step-by-step forward pass kept as the tape (`docs/DIFFUSION.md`, "How the paths
    /// are evaluated"). [`Track::Params`] (or any path with the host path switched off) samples
    /// step by step without a graph, then evaluates all T·n (state, time) rows in one batched
    /// pass of candle ops. [`Track::Path`] keeps the step-by-step candle graph.
    pub fn paths(
        &self,
        target: &dyn LogDensity,
        n: usize,
        source: Source<'_>,
        track: Track,
        flows: bool,
        rng: &mut dyn RngCore,
    ) -> Result<Paths> {
        let p = self.spec.process;
        if let Source::Given(xs) = source {
            if xs.len() != (p.n_steps + 1) * n * p.dim {
                return Err(Error::Config(format!(
                    "given paths hold {} values, expected (T+1)·n·d = {}",
                    xs.len(),
                    (p.n_steps + 1) * n * p.dim
                )));
            }
        }
        let host_track = match (track, source) {
            (Track::None | Track::Tape, _) => true,
            // Reparameterised paths only when sampled here (PIS), without log-flows.
            (Track::PathTape, Source::Forward { .. }) => !flows,
            _ => false,
        };
        if self.host_path && host_track {
            match self.spec.dtype {
                DType::F32 => return self.host_paths::<f32>(target, n, source, track, flows, rng),
                DType::F64 => return self.host_paths::<f64>(target, n, source, track, flows, rng),
                _ => {}
            }
        }
        let track = match track {
            Track::Tape => Track::Params,
            Track::PathTape => Track::Path,
            other => other,
        };
        match (source, track) {
            (Source::Forward { exploration }, Track::Path | Track::PathTape | Track::None) => {
                Ok(self.walk(target, n, exploration, track, flows, rng)?.0)
            }
            (Source::Forward { exploration }, Track::Params | Track::Tape) => {
                // The batched pass reuses the target terms the walk computed at the same points
                // (log R at the ends; with LP, log R and the score at every step).
                let (drawn, steps) = self.walk(target, n, exploration, Track::None, false, rng)?;
                self.batched(target, n, &drawn.x, track, flows, Some(KnownTerms { steps, ends: &drawn.log_r }))
            }
            (Source::Given(xs), _) => self.batched(target, n, xs, track, flows, None),
        }
    }

    /// The drift μ and log-variance (None when fixed) from network outputs `out` (`[m, ·]`),
    /// host scores `score` (`[m, d]`) and per-row Langevin scales `scale` (`[m, 1]`).
    fn drift(&self, out: &Tensor, score: Option<&[f64]>, scale: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let spec = &self.spec;
        let d = spec.process.dim;
        let m = out.dim(0)?;
        let mut mu = out.narrow(1, 0, d)?;
        if let (Some(scale), Some(g)) = (scale, score) {
            mu = (mu + to_tensor(g, m, d, spec.dtype)?.broadcast_mul(scale)?)?;
        }
        if let Some((_, drift_clip)) = spec.clip {
            mu = mu.clamp(-drift_clip, drift_clip)?;
        }
        let log_var = if spec.learned_variance { Some(((out.narrow(1, d, d)?.tanh()? * 4.0)? + spec.process.t_scale.ln())?) } else { None };
        Ok((mu, log_var))
    }

    /// log P_F of the moves `x_in → x_next` (`[m, d]`) under drift `mu` and `log_var`: `[m]`.
    fn log_pf_rows(&self, x_in: &Tensor, x_next: &Tensor, mu: &Tensor, log_var: Option<&Tensor>) -> Result<Tensor> {
        let p = self.spec.process;
        let (d, dt) = (p.dim, p.dt());
        let diff = ((x_next - x_in)? - (mu * dt)?)?;
        Ok(match log_var {
            Some(lv) => {
                let quad = ((diff.sqr()? * lv.neg()?.exp()?)? / dt)?;
                (((quad + lv)?.sum(1)? * -0.5)? - d as f64 * (HALF_LOG_2PI + 0.5 * dt.ln()))?
            }
            None => {
                let v = dt * p.t_scale;
                ((diff.sqr()?.sum(1)? * (-0.5 / v))? - d as f64 * (HALF_LOG_2PI + 0.5 * v.ln()))?
            }
        })
    }

    /// The forward-looking part of log F at host points `x` (`[n, d]`) of step i with log R
    /// `log_r`: (1 − t_i)·log N(x; 0, σ² max(1,i)Δt) + t_i·log R (at i = 0 the log R term is
    /// left out, so `log_r` is not read there).
    fn flow_prior(&self, x: &[f64], log_r: &[f64], i: usize) -> Vec<f64> {
        let p = self.spec.process;
        let d = p.dim;
        let t = i as f64 * p.dt();
        let v = p.t_scale * (i.max(1) as f64) * p.dt();
        (0..x.len() / d)
            .map(|k| {
                let q: f64 = x[k * d..(k + 1) * d].iter().map(|x| x * x).sum();
                let reference = (1.0 - t) * (-0.5 * q / v - d as f64 * (HALF_LOG_2PI + 0.5 * v.ln()));
                if i == 0 {
                    reference
                } else {
                    reference + t * log_r[k]
                }
            })
            .collect()
    }

    /// Step-by-step forward sampling with extra increment standard deviation `exploration` (with
    /// the graph through the points under [`Track::Path`]). Also returns the per-step target
    /// terms when it computed them at every step (step-major: log R `[T·n]`, score `[T·n, d]`).
    fn walk(
        &self,
        target: &dyn LogDensity,
        n: usize,
        exploration: f64,
        track: Track,
        flows: bool,
        rng: &mut dyn RngCore,
    ) -> Result<(Paths, Option<StepTerms>)> {
        let spec = &self.spec;
        let p = spec.process;
        let (t_steps, d, dtype) = (p.n_steps, p.dim, spec.dtype);
        let block = n * d;
        let dt = p.dt();
        let times = p.times();
        let detach = |t: Tensor| if track == Track::None { t.detach() } else { t };
        let temb = detach(self.net.embed_times(&times, dtype)?);
        let lp_scale = match &self.langevin {
            Some(l) => Some(detach(l.forward(&times, dtype)?)),
            None => None,
        };
        let mut x_host = vec![0.0; (t_steps + 1) * block];
        let mut x_cur = Tensor::zeros((n, d), dtype, &Device::Cpu)?;
        let (mut log_pf, mut log_pb, mut log_f) = (Vec::with_capacity(t_steps), Vec::with_capacity(t_steps), Vec::new());
        let zero = Tensor::zeros(n, dtype, &Device::Cpu)?;
        let every_step = spec.langevin.is_some();
        let mut steps = StepTerms { log_r: Vec::new(), score: every_step.then(Vec::new) };
        for i in 0..t_steps {
            let xi_host = x_host[i * block..(i + 1) * block].to_vec();
            let x_in = if track == Track::Path { x_cur.clone() } else { x_cur.detach() };
            let fl_now = flows && spec.forward_looking;
            let (log_r_i, score) = if spec.langevin.is_some() || (fl_now && i >= 1) {
                self.target_terms(target, &xi_host, n, spec.langevin.is_some())?
            } else {
                (Vec::new(), None)
            };
            let NetOutput { policy: out, log_flow } = self.net.forward(&x_in, &temb.narrow(0, i, 1)?, flows)?;
            let out = detach(out);
            let scale = match &lp_scale {
                Some(s) => Some(s.narrow(0, i, 1)?),
                None => None,
            };
            let (mu, log_var) = self.drift(&out, score.as_deref(), scale.as_ref())?;
            if every_step {
                steps.log_r.extend_from_slice(&log_r_i);
                if let (Some(all), Some(g)) = (steps.score.as_mut(), score.as_ref()) {
                    all.extend_from_slice(g);
                }
            }
            let noise: Vec<f64> = (0..block).map(|_| StandardNormal.sample(rng)).collect();
            let noise = to_tensor(&noise, n, d, dtype)?;
            let e2 = exploration * exploration;
            let step = match &log_var {
                Some(lv) => {
                    let lv = if track == Track::Path { lv.clone() } else { lv.detach() };
                    ((lv.exp()? * dt)? + e2)?.sqrt()?.mul(&noise)?
                }
                None => (noise * (dt * p.t_scale + e2).sqrt())?,
            };
            let m = if track == Track::Path { mu.clone() } else { mu.detach() };
            let mut x_next = ((&x_in + (m * dt)?)? + step)?;
            if track != Track::Path {
                x_next = x_next.detach();
            }
            x_host[(i + 1) * block..(i + 2) * block].copy_from_slice(&fab_core::to_f64_vec(&x_next)?);
            log_pf.push(self.log_pf_rows(&x_in, &x_next, &mu, log_var.as_ref())?);
            if i == 0 {
                log_pb.push(zero.clone());
            } else {
                let (a, v) = p.bridge_coefficients(i);
                let r = (&x_in - (&x_next * a)?)?;
                log_pb.push(((r.sqr()?.sum(1)? * (-0.5 / v))? - d as f64 * (HALF_LOG_2PI + 0.5 * v.ln()))?);
            }
            if let Some(lf) = log_flow {
                let mut lf = detach(lf);
                if fl_now {
                    lf = (lf + to_tensor(&self.flow_prior(&xi_host, &log_r_i, i), n, 1, dtype)?.squeeze(1)?)?;
                }
                log_f.push(lf);
            }
            x_cur = x_next;
        }
        let log_r = self.target_terms(target, &x_host[t_steps * block..], n, false)?.0;
        let paths = Paths {
            n,
            x: x_host,
            x_last: x_cur,
            log_pf: Tensor::stack(&log_pf, 1)?,
            log_pb: Tensor::stack(&log_pb, 1)?,
            log_f: if flows { Some(Tensor::stack(&log_f, 1)?) } else { None },
            log_r,
            tape: None,
        };
        Ok((paths, every_step.then_some(steps)))
    }

    /// Paths on the hand-written host path (`crate::host`), sampled forward or given, in
    /// precision `T` (the network's dtype); with `record`, the forward pass is kept as the tape
    /// of [`gradients_of`](Self::gradients_of) and `log_pf` is a leaf of the graph. The same
    /// terms and the same randomness (n·d standard normals per step, in step order) as the
    /// candle path; the moves, log P_F and log P_B are computed in f64 from the network's outputs.
    fn host_paths<T: HostFloat>(
        &self,
        target: &dyn LogDensity,
        n: usize,
        source: Source<'_>,
        track: Track,
        flows: bool,
        rng: &mut dyn RngCore,
    ) -> Result<Paths> {
        let record = track != Track::None;
        let reparam = track == Track::PathTape;
        let spec = &self.spec;
        let p = spec.process;
        let (steps, d, dt) = (p.n_steps, p.dim, p.dt());
        let block = n * d;
        let rows = steps * n;
        let times = p.times();
        let net = self.net.host_net::<T>(&self.params, &self.flow_params)?;
        let head = match (flows, &net.flow) {
            (false, _) => None,
            (true, None) => return Err(Error::Config("log-flows asked of a network without a flow head".into())),
            (true, Some((chain, src))) => Some((chain, *src)),
        };
        let keep = |t: Tensor| if record { t } else { t.detach() };
        let temb = keep(self.net.embed_times(&times, spec.dtype)?);
        let temb_host = T::host(&temb)?;
        let extra = net.policy.step_biases(&temb_host, steps);
        let eh = extra.len() / steps;
        let flow_extra = head.map(|(chain, _)| chain.step_biases(&temb_host, steps));
        let scale = match &self.langevin {
            Some(l) => Some(keep(l.forward(&times, spec.dtype)?)),
            None => None,
        };
        let scale_host = scale.as_ref().map(fab_core::to_f64_vec).transpose()?;
        let (mut x, exploration) = match source {
            Source::Forward { exploration } => (vec![0.0; (steps + 1) * block], Some(exploration)),
            Source::Given(xs) => (xs.to_vec(), None),
        };
        let e2 = exploration.map_or(0.0, |e| e * e);
        let acts_rows = if record { rows } else { n };
        let mut acts = net.policy.acts(acts_rows, true, &self.scratch);
        let mut flow_acts = head.map(|(chain, _)| chain.acts(acts_rows, false, &self.scratch));
        let od = net.policy.out.n_out;
        let forward_looking = flows && spec.forward_looking;
        let mut log_f = if flows { vec![0.0; rows] } else { Vec::new() };
        let learned = spec.learned_variance;
        // Per-step terms, step-major rows.
        let mut log_pf = vec![0.0; rows];
        let mut log_pb = vec![0.0; rows];
        // Written for every row before they are read, so pooled buffers serve.
        let mut mu_factor = if record { self.scratch.take(rows * d) } else { Vec::new() };
        let mut raw_factor = if record && learned { self.scratch.take(rows * d) } else { Vec::new() };
        let mut score_dot = if record && scale.is_some() { self.scratch.take(rows) } else { Vec::new() };
        let mut path_rec = reparam.then(|| PathRecord {
            z: self.scratch.take(rows * d),
            mu: self.scratch.take(rows * d),
            inside: self.scratch.take(rows * d),
            th: if learned { self.scratch.take(rows * d) } else { Vec::new() },
            score: if scale.is_some() { self.scratch.take(rows * d) } else { Vec::new() },
            e2,
        });
        let ln_t_scale = p.t_scale.ln();
        let fixed_v = dt * p.t_scale;
        let log_pf_const = if learned { d as f64 * (HALF_LOG_2PI + 0.5 * dt.ln()) } else { d as f64 * (HALF_LOG_2PI + 0.5 * fixed_v.ln()) };
        let mut x_t = vec![T::zero(); block];
        for i in 0..steps {
            let r0 = if record { i * n } else { 0 };
            let (done, rest) = x.split_at_mut((i + 1) * block);
            let xi = &done[i * block..];
            let next = &mut rest[..block];
            let (log_r_i, score) = if scale_host.is_some() || (forward_looking && i >= 1) {
                self.target_terms(target, xi, n, scale_host.is_some())?
            } else {
                (Vec::new(), None)
            };
            for (a, &b) in x_t.iter_mut().zip(xi) {
                *a = T::of(b);
            }
            net.policy.forward(&mut acts, r0, &x_t, &extra[i * eh..(i + 1) * eh]);
            if let (Some((chain, src)), Some(fa), Some(fe)) = (head, flow_acts.as_mut(), flow_extra.as_ref()) {
                let h_src = acts.inputs[src].len() / acts_rows;
                let fe = &fe[i * (fe.len() / steps)..(i + 1) * (fe.len() / steps)];
                chain.forward(fa, r0, &acts.inputs[src][r0 * h_src..(r0 + n) * h_src], fe);
                let prior = if forward_looking { Some(self.flow_prior(xi, &log_r_i, i)) } else { None };
                for k in 0..n {
                    log_f[i * n + k] = fa.out[r0 + k].f64() + prior.as_ref().map_or(0.0, |p| p[k]);
                }
            }
            let out = &acts.out[r0 * od..(r0 + n) * od];
            let lp_scale = scale_host.as_ref().map(|s| s[i]);
            for k in 0..n {
                let o = &out[k * od..(k + 1) * od];
                let (mut quad, mut dot) = (0.0, 0.0);
                for j in 0..d {
                    let idx = k * d + j;
                    let mut mu = o[j].f64();
                    if let (Some(s), Some(g)) = (lp_scale, score.as_ref()) {
                        mu += s * g[idx];
                    }
                    let mut inside = true;
                    if let Some((_, c)) = spec.clip {
                        inside = (-c..=c).contains(&mu);
                        mu = mu.clamp(-c, c);
                    }
                    let (var, lv, th) = if learned {
                        let th = o[d + j].f64().tanh();
                        let lv = 4.0 * th + ln_t_scale;
                        (lv.exp(), lv, th)
                    } else {
                        (p.t_scale, 0.0, 0.0)
                    };
                    let r = (r0 + k) * d + j;
                    if exploration.is_some() {
                        let z: f64 = StandardNormal.sample(rng);
                        next[idx] = xi[idx] + mu * dt + (var * dt + e2).sqrt() * z;
                        if let Some(pr) = path_rec.as_mut() {
                            pr.z[r] = z;
                            pr.mu[r] = mu;
                            pr.inside[r] = if inside { 1.0 } else { 0.0 };
                            if learned {
                                pr.th[r] = th;
                            }
                            if let Some(g) = score.as_ref() {
                                pr.score[r] = g[idx];
                            }
                        }
                    }
                    let diff = next[idx] - xi[idx] - mu * dt;
                    let factor = if learned {
                        let inv = (-lv).exp();
                        let q = diff * diff * inv / dt;
                        quad += q + lv;
                        if record {
                            raw_factor[r] = (0.5 * q - 0.5) * 4.0 * (1.0 - th * th);
                        }
                        diff * inv
                    } else {
                        quad += diff * diff / fixed_v;
                        diff * dt / fixed_v
                    };
                    if record {
                        let f = if inside { factor } else { 0.0 };
                        mu_factor[r] = f;
                        if let Some(g) = score.as_ref() {
                            dot += f * g[idx];
                        }
                    }
                }
                log_pf[i * n + k] = -0.5 * quad - log_pf_const;
                if record && !score_dot.is_empty() {
                    score_dot[r0 + k] = dot;
                }
            }
            if i >= 1 {
                let (a, v) = p.bridge_coefficients(i);
                let c = d as f64 * (HALF_LOG_2PI + 0.5 * v.ln());
                for k in 0..n {
                    let q: f64 = (0..d)
                        .map(|j| {
                            let r = xi[k * d + j] - a * next[k * d + j];
                            r * r
                        })
                        .sum();
                    log_pb[i * n + k] = -0.5 * q / v - c;
                }
            }
        }
        let ends = &x[steps * block..];
        let log_r = self.target_terms(target, ends, n, false)?.0;
        // Path-major [n, T] tensors.
        let path_major = |v: &[f64]| -> Result<Tensor> {
            let mut pm = vec![0.0; rows];
            for i in 0..steps {
                for k in 0..n {
                    pm[k * steps + i] = v[i * n + k];
                }
            }
            Ok(Tensor::from_vec(pm, (n, steps), &Device::Cpu)?.to_dtype(spec.dtype)?)
        };
        let mut log_pf = path_major(&log_pf)?;
        let mut log_pb = path_major(&log_pb)?;
        let leaf = |t: Tensor| -> Result<Tensor> { Ok(Var::from_tensor(&t)?.as_tensor().clone()) };
        let mut x_last = to_tensor(&x[steps * block..], n, d, spec.dtype)?;
        if reparam {
            log_pb = leaf(log_pb)?;
            x_last = leaf(x_last)?;
        }
        let mut log_f = if flows { Some(path_major(&log_f)?) } else { None };
        let tape: Option<Mutex<Option<Box<dyn TapeBackward>>>> = if record {
            log_pf = Var::from_tensor(&log_pf)?.as_tensor().clone();
            log_f = log_f.map(|t| Var::from_tensor(&t).map(|v| v.as_tensor().clone())).transpose()?;
            Some(Mutex::new(Some(Box::new(HostTape {
                net,
                acts,
                flow_acts,
                n,
                steps,
                log_pf: log_pf.clone(),
                log_f: log_f.clone(),
                log_pb: log_pb.clone(),
                x_last: x_last.clone(),
                path: path_rec,
                mu_factor,
                raw_factor,
                score_dot,
                temb,
                temb_host,
                scale,
            }))))
        } else {
            acts.recycle(&self.scratch);
            if let Some(a) = flow_acts {
                a.recycle(&self.scratch);
            }
            None
        };
        Ok(Paths { n, x, x_last, log_pf, log_pb, log_f, log_r, tape })
    }

    /// All T·n (state, time) rows of given paths in one pass; target terms already computed at
    /// these points (`known`) are used instead of evaluating the target again.
    fn batched(
        &self,
        target: &dyn LogDensity,
        n: usize,
        xs: &[f64],
        track: Track,
        flows: bool,
        mut known: Option<KnownTerms<'_>>,
    ) -> Result<Paths> {
        let spec = &self.spec;
        let p = spec.process;
        let (t_steps, d, dtype) = (p.n_steps, p.dim, spec.dtype);
        let block = n * d;
        let rows = t_steps * n;
        let detach = |t: Tensor| if track == Track::None { t.detach() } else { t };
        let times = p.times();
        let x_in = to_tensor(&xs[..t_steps * block], rows, d, dtype)?;
        let x_next = to_tensor(&xs[block..], rows, d, dtype)?;
        // Per-row time embeddings and Langevin scales (step-major rows).
        let temb = self.net.embed_times(&times, dtype)?;
        let scale = match &self.langevin {
            Some(l) => Some(l.forward(&times, dtype)?.unsqueeze(1)?.broadcast_as((t_steps, n, 1))?.reshape((rows, 1))?),
            None => None,
        };
        let need_terms = spec.langevin.is_some() || (flows && spec.forward_looking);
        let known_steps = known.as_mut().and_then(|k| k.steps.take()).filter(|s| s.log_r.len() == rows);
        let (log_r_rows, score) = match known_steps {
            Some(s) if need_terms && (s.score.is_some() || spec.langevin.is_none()) => (s.log_r, s.score),
            _ if need_terms => self.target_terms(target, &xs[..t_steps * block], rows, spec.langevin.is_some())?,
            _ => (Vec::new(), None),
        };
        let NetOutput { policy: out, log_flow } = self.net.forward(&x_in, &temb, flows)?;
        let out = detach(out);
        let (mu, log_var) = self.drift(&out, score.as_deref(), scale.map(detach).as_ref())?;
        let log_pf = self.log_pf_rows(&x_in, &x_next, &mu, log_var.as_ref())?.reshape((t_steps, n))?.t()?.contiguous()?;
        // log P_B: per-row bridge coefficients (zero for step 0, whose move is deterministic).
        let mut a = vec![0.0; rows];
        let mut inv_v = vec![0.0; rows];
        let mut c = vec![0.0; rows];
        for i in 1..t_steps {
            let (ai, vi) = p.bridge_coefficients(i);
            for k in 0..n {
                a[i * n + k] = ai;
                inv_v[i * n + k] = 1.0 / vi;
                c[i * n + k] = d as f64 * (HALF_LOG_2PI + 0.5 * vi.ln());
            }
        }
        let r = (&x_in - x_next.broadcast_mul(&to_tensor(&a, rows, 1, dtype)?)?)?;
        let quad = r.sqr()?.sum(1)?.mul(&to_tensor(&inv_v, rows, 1, dtype)?.squeeze(1)?)?;
        let log_pb = ((quad * -0.5)? - to_tensor(&c, rows, 1, dtype)?.squeeze(1)?)?.reshape((t_steps, n))?.t()?.contiguous()?;
        let log_f = if let Some(lf) = log_flow {
            let mut lf = detach(lf);
            if spec.forward_looking {
                let mut prior = vec![0.0; rows];
                for i in 0..t_steps {
                    let log_r_i = if i == 0 { &[][..] } else { &log_r_rows[i * n..(i + 1) * n] };
                    let v = self.flow_prior(&xs[i * block..(i + 1) * block], log_r_i, i);
                    prior[i * n..(i + 1) * n].copy_from_slice(&v);
                }
                lf = (lf + to_tensor(&prior, rows, 1, dtype)?.squeeze(1)?)?;
            }
            Some(lf.reshape((t_steps, n))?.t()?.contiguous()?)
        } else {
            None
        };
        let ends = &xs[t_steps * block..];
        let log_r = match known {
            Some(k) if k.ends.len() == n => k.ends.to_vec(),
            _ => self.target_terms(target, ends, n, false)?.0,
        };
        Ok(Paths { n, x: xs.to_vec(), x_last: to_tensor(ends, n, d, dtype)?, log_pf, log_pb, log_f, log_r, tape: None })
    }

    /// The loss value and the gradients of `loss` for both parameter groups (none if the loss is
    /// not finite).
    pub fn gradients(&self, loss: &Tensor) -> Result<Gradients> {
        let value = fab_core::to_f64_vec(loss)?[0];
        if !value.is_finite() {
            return Ok(Gradients { loss: value, policy: None, flow: None });
        }
        let store = loss.backward()?;
        Ok(Gradients {
            loss: value,
            policy: Some(self.params.grads_from_store(&store)),
            flow: Some(self.flow_params.grads_from_store(&store)),
        })
    }

    /// [`gradients`](Self::gradients) of a loss of `paths`: for paths recorded on the host path
    /// ([`Track::Tape`], [`Track::PathTape`]) the graph ends at their leaves (`log_pf`, `log_f`;
    /// `log_pb` and `x_last` for reparameterised paths), whose gradients are carried on to the
    /// parameters by hand; for any other paths this is [`gradients`](Self::gradients). A tape
    /// serves one call (its buffers then go back to a pool); a second call is an error.
    pub fn gradients_of(&self, loss: &Tensor, paths: &Paths) -> Result<Gradients> {
        let Some(slot) = &paths.tape else { return self.gradients(loss) };
        let tape = slot
            .lock()
            .map_err(|_| Error::Config("the paths' tape is poisoned".into()))?
            .take()
            .ok_or_else(|| Error::Config("these paths were already differentiated (their tape is used once)".into()))?;
        let value = fab_core::to_f64_vec(loss)?[0];
        if !value.is_finite() {
            tape.recycle(&self.scratch);
            return Ok(Gradients { loss: value, policy: None, flow: None });
        }
        let store = loss.backward()?;
        let grad_of = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(match store.get(t) {
                Some(g) => fab_core::to_f64_vec(g)?,
                None => vec![0.0; t.elem_count()],
            })
        };
        let up = Upstream {
            log_pf: grad_of(tape.log_pf())?,
            log_f: tape.log_f().map(grad_of).transpose()?,
            path: tape.path_leaves().map(|(pb, xl)| Ok::<_, crate::Error>((grad_of(pb)?, grad_of(xl)?))).transpose()?,
        };
        let mut flow = self.flow_params.grads_from_store(&store);
        let policy = tape.backward(self, &up, &paths.x, &mut flow)?;
        tape.recycle(&self.scratch);
        Ok(Gradients { loss: value, policy: Some(policy), flow: Some(flow) })
    }

    /// Saves parameters under `prefix` into `dir` (the flow group keeps the file name
    /// `{prefix}_log_z.safetensors` it had when it held log Z alone).
    pub fn save(&self, dir: &Path, prefix: &str) -> Result<()> {
        self.params.save(&dir.join(format!("{prefix}_policy.safetensors")))?;
        self.flow_params.save(&dir.join(format!("{prefix}_log_z.safetensors")))?;
        Ok(())
    }

    /// Loads what [`save`](Self::save) wrote.
    pub fn load(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        self.params.load(&dir.join(format!("{prefix}_policy.safetensors")))?;
        self.flow_params.load(&dir.join(format!("{prefix}_log_z.safetensors")))?;
        Ok(())
    }
}

/// Optimiser settings of one sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimSpec {
    /// Policy learning rate.
    pub lr: f64,
    /// Learning rate of the flow group (log Z and the log-flow head).
    pub lr_log_z: f64,
    /// L2 weight decay of the policy parameters.
    pub weight_decay: f64,
    /// Global gradient-norm clip of the policy (None: off).
    pub clip: Option<f64>,
}

/// A sampler with its Adam optimisers (policy and flow groups).
#[derive(Debug)]
pub struct Learner {
    /// The sampler.
    pub model: Diffusion,
    adam: Adam,
    adam_flow: Adam,
    optim: OptimSpec,
}

/// A loss value with the gradients of a sampler's two parameter groups (`None` when the loss
/// was not finite and nothing was back-propagated).
#[derive(Debug, Clone)]
pub struct Gradients {
    /// The loss value.
    pub loss: f64,
    /// Gradients of the policy parameters.
    pub policy: Option<Grads>,
    /// Gradients of the flow group (log Z and the log-flow head).
    pub flow: Option<Grads>,
}

impl Gradients {
    /// Adds the loss and gradients of another chunk of the same batch.
    pub fn accumulate(&mut self, other: &Gradients) -> Result<()> {
        self.loss += other.loss;
        match (&mut self.policy, &other.policy, &mut self.flow, &other.flow) {
            (Some(g), Some(h), Some(gz), Some(hz)) => {
                g.accumulate(h)?;
                gz.accumulate(hz)?;
            }
            _ => {
                self.policy = None;
                self.flow = None;
            }
        }
        Ok(())
    }
}

/// What one gradient step did.
#[derive(Debug, Clone, Copy)]
pub struct StepResult {
    /// The loss value.
    pub loss: f64,
    /// Pre-clip gradient norm of the policy (NaN when skipped before backward).
    pub grad_norm: f64,
    /// Whether the step was skipped (non-finite loss or gradient).
    pub skipped: bool,
}

impl Learner {
    /// Optimisers over `model`'s parameters.
    pub fn new(model: Diffusion, optim: OptimSpec) -> Result<Self> {
        let adam = Adam::new(model.params(), AdamConfig { lr: optim.lr, weight_decay: optim.weight_decay, ..Default::default() })
            .map_err(Error::family)?;
        let adam_flow = Adam::new(model.flow_params(), AdamConfig { lr: optim.lr_log_z, ..Default::default() }).map_err(Error::family)?;
        Ok(Self { model, adam, adam_flow, optim })
    }

    /// Multiplies both learning rates' base values by `factor` (a multi-step schedule).
    pub fn set_lr_factor(&mut self, factor: f64) -> Result<()> {
        self.adam.set_learning_rate(self.optim.lr * factor).map_err(Error::family)?;
        self.adam_flow.set_learning_rate(self.optim.lr_log_z * factor).map_err(Error::family)?;
        Ok(())
    }

    /// The policy learning rate in force.
    pub fn lr(&self) -> f64 {
        self.adam.learning_rate()
    }

    /// Back-propagates `loss` and applies one Adam step to both groups (skipped, with nothing
    /// changed, if the loss or the gradient norm is not finite).
    pub fn apply(&mut self, loss: &Tensor) -> Result<StepResult> {
        let g = self.model.gradients(loss)?;
        self.apply_gradients(g)
    }

    /// One Adam step to both groups from gradients (summed over the chunks of a batch, for
    /// instance); skipped, with nothing changed, if the loss or the gradient norm is not finite.
    pub fn apply_gradients(&mut self, g: Gradients) -> Result<StepResult> {
        let Gradients { loss: value, policy: g, flow: gz } = g;
        let (Some(mut g), Some(mut gz)) = (g, gz) else {
            return Ok(StepResult { loss: value, grad_norm: f64::NAN, skipped: true });
        };
        let norm = g.global_norm()?;
        let norm_z = gz.global_norm()?;
        if !norm.is_finite() || !norm_z.is_finite() {
            return Ok(StepResult { loss: value, grad_norm: norm, skipped: true });
        }
        let outcome = self.adam.step_clipped(&self.model.params, &mut g, self.optim.clip).map_err(Error::family)?;
        if gz.0.iter().any(Option::is_some) {
            self.adam_flow.step_clipped(&self.model.flow_params, &mut gz, None).map_err(Error::family)?;
        }
        let grad_norm = match outcome {
            StepOutcome::Applied { grad_norm } => grad_norm,
            _ => norm,
        };
        Ok(StepResult { loss: value, grad_norm, skipped: false })
    }

    /// Saves parameters and optimiser moments under `prefix`.
    pub fn save(&self, dir: &Path, prefix: &str) -> Result<()> {
        self.model.save(dir, prefix)?;
        self.adam.save(&dir.join(format!("{prefix}_adam.safetensors"))).map_err(Error::family)?;
        self.adam_flow.save(&dir.join(format!("{prefix}_adam_log_z.safetensors"))).map_err(Error::family)?;
        Ok(())
    }

    /// Loads what [`save`](Self::save) wrote.
    pub fn load(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        self.model.load(dir, prefix)?;
        self.adam.load(&dir.join(format!("{prefix}_adam.safetensors"))).map_err(Error::family)?;
        self.adam_flow.load(&dir.join(format!("{prefix}_adam_log_z.safetensors"))).map_err(Error::family)?;
        Ok(())
    }
}
