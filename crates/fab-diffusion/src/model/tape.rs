//! The host path's record of a batch of paths and its backward pass (`crate::host`;
//! `docs/DIFFUSION.md`, "How the paths are evaluated"): [`Diffusion::host_paths`] walks or
//! evaluates paths on host buffers and keeps the tape, [`Diffusion::gradients_of`] carries the
//! loss's gradients at the tape's leaves on to the parameters.

use std::sync::Mutex;

use candle_core::{Device, Tensor, Var};
use fab_core::{Grads, LogDensity};
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};

use super::{to_tensor, Diffusion, Gradients, Paths, Source, Track};
use crate::host::{Acts, Chain, ChainGrads, HostFloat, HostNet, ScratchPool};
use crate::process::HALF_LOG_2PI;
use crate::{Error, Result};

/// What a recorded host forward pass needs to carry ∂L/∂log P_F (and ∂L/∂log F) on to the
/// parameters.
pub(super) trait TapeBackward: std::fmt::Debug + Send + Sync {
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
pub(super) struct Upstream {
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

/// (∂W, ∂b) of one layer.
type LayerGrads<T> = (Vec<T>, Vec<T>);

/// Writes a chain's layer gradients (`hidden`, `out`) into `grads` (indexed like `vars`).
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

impl Diffusion {
    /// Paths on the hand-written host path (`crate::host`), sampled forward or given, in
    /// precision `T` (the network's dtype); with `record`, the forward pass is kept as the tape
    /// of [`gradients_of`](Self::gradients_of) and `log_pf` is a leaf of the graph. The same
    /// terms and the same randomness (n·d standard normals per step, in step order) as the
    /// candle path; the moves, log P_F and log P_B are computed in f64 from the network's outputs.
    pub(super) fn host_paths<T: HostFloat>(
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
        // The fixed-point factors of `gradients_of`; reparameterised paths use their own record.
        let factors = record && !reparam;
        let mut mu_factor = if factors { self.scratch.take(rows * d) } else { Vec::new() };
        let mut raw_factor = if factors && learned { self.scratch.take(rows * d) } else { Vec::new() };
        let mut score_dot = if factors && scale.is_some() { self.scratch.take(rows) } else { Vec::new() };
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
                        if factors {
                            raw_factor[r] = (0.5 * q - 0.5) * 4.0 * (1.0 - th * th);
                        }
                        diff * inv
                    } else {
                        quad += diff * diff / fixed_v;
                        diff * dt / fixed_v
                    };
                    if factors {
                        let f = if inside { factor } else { 0.0 };
                        mu_factor[r] = f;
                        if let Some(g) = score.as_ref() {
                            dot += f * g[idx];
                        }
                    }
                }
                log_pf[i * n + k] = -0.5 * quad - log_pf_const;
                if !score_dot.is_empty() {
                    score_dot[r0 + k] = dot;
                }
            }
            p.add_log_pb_step(i, xi, next, &mut log_pb[i * n..(i + 1) * n]);
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
}
