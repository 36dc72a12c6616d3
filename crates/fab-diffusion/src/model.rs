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

use crate::host::ScratchPool;
use crate::net::{DriftNet, LangevinScale, NetOutput, NetShape};
use crate::process::{Process, HALF_LOG_2PI};
use crate::{Error, Result};

mod tape;
use tape::TapeBackward;

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
