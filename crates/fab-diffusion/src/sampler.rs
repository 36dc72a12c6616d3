//! The diffusion-sampler family on the sampler core: one training iteration of the configured
//! schedule (on-policy, Sendera's forward/backward with local search, prioritised replay, the
//! Adaptive Teacher), evaluation with path-based bounds and sample metrics, and checkpoints
//! (`docs/DIFFUSION.md`, "Training schedules" and "Metrics").

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use fab_buffer::{Prioritisation, RankedBuffer};
use fab_core::rng::{seeded_rng, FabRng};
use fab_core::stats::{log_mean_exp, mean};
use fab_core::Counted;
use fab_sampler::eval::{EvalSizes, Metrics};
use fab_sampler::observe::ProgressLine;
use fab_sampler::{Draws, Model, NamedSamples, Sampler, StepReport, StepStats, Target};
use rand::RngCore;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::DiffusionConfig;
use crate::model::{Diffusion, Gradients, Learner, OptimSpec, Paths, Source, Track};
use crate::objectives::{loss, tb_residuals, BatchPart, Objective};
use crate::{Error, Result};

/// Random stream of training (paths, replay, local search).
const TRAIN_STREAM: u64 = 21;
/// Random stream of network initialisation.
const INIT_STREAM: u64 = 22;
/// Paths per chunk when drawing many (bounds memory).
pub(crate) const DRAW_CHUNK: usize = 2000;

/// Points in a replay buffer (keyed by insertion serial; the priority is log R or the teacher's
/// advantage).
type PointBuffer = RankedBuffer<u64, Vec<f64>>;

/// Writes a point buffer as one `.npy` array `[N, 2 + d]` with rows (key, priority, x), oldest
/// first: a binary checkpoint, bit-exact (±∞ priorities included) and about 40 % of the JSON
/// text's size. Keys are insertion serials, exact in f64 below 2⁵³.
fn save_points(b: &PointBuffer, d: usize, path: &Path) -> Result<()> {
    let mut rows = Vec::with_capacity(b.len() * (d + 2));
    for (&key, x, priority) in b.iter() {
        if key >= 1 << 53 {
            return Err(Error::Checkpoint(format!("{}: buffer key {key} is not exact in f64", path.display())));
        }
        rows.push(key as f64);
        rows.push(priority);
        rows.extend_from_slice(x);
    }
    fab_core::npy::write_f64(path, &rows, &[b.len(), d + 2]).map_err(Error::from)
}

/// Reads what [`save_points`] wrote into a buffer of `capacity` (same order, keys and priorities,
/// so every later draw is the same).
fn load_points(path: &Path, capacity: usize, d: usize) -> Result<PointBuffer> {
    let (rows, shape) = fab_core::npy::read_f64(path).map_err(Error::from)?;
    if shape.len() != 2 || shape[1] != d + 2 {
        return Err(Error::Checkpoint(format!("{}: shape {shape:?}, expected [N, {}]", path.display(), d + 2)));
    }
    let mut b = PointBuffer::new(capacity).map_err(Error::family)?;
    for r in rows.chunks_exact(d + 2) {
        b.insert(r[0] as u64, r[2..].to_vec(), r[1]).map_err(Error::family)?;
    }
    Ok(b)
}

/// Per-iteration statistics (fields of the `"train"` lines of `metrics.jsonl`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffusionStats {
    /// Where the batch came from: 0 forward (policy with exploration), 1 replay buffer.
    pub source: u8,
    /// The student's learned log Z.
    pub log_z: f64,
    /// Exploration standard deviation used.
    pub exploration: f64,
    /// Mean log R of the batch's end points.
    pub mean_log_r: f64,
    /// Points in the replay buffer.
    pub buffer_len: u64,
    /// Points in the local-search buffer.
    pub ls_buffer_len: u64,
    /// Acceptance rate of the last local search (NaN if none ran this iteration).
    pub ls_acceptance: f64,
    /// Teacher loss (NaN without a teacher step).
    pub teacher_loss: f64,
    /// Target evaluations so far: every point at which training evaluated log R or its
    /// gradient (end points, Langevin-parametrised drifts at every step, local search, teacher
    /// and student paths), counted by `fab_core::Counted`.
    pub n_target_calls: u64,
}

impl StepStats for DiffusionStats {
    fn progress(&self) -> String {
        format!("log Z {:.3} mean log R {:.2} buffer {}", self.log_z, self.mean_log_r, self.buffer_len)
    }
}

/// What a checkpoint must carry besides parameters and buffers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    iteration: usize,
    next_key: u64,
    threshold: Option<f64>,
    n_target_calls: u64,
    rng: FabRng,
}

/// A diffusion-sampler run: student, optional teacher, buffers and counters.
#[derive(Debug)]
pub struct DiffusionSampler {
    config: DiffusionConfig,
    target: Arc<dyn Target>,
    objective: Objective,
    student: Learner,
    teacher: Option<Learner>,
    buffer: Option<PointBuffer>,
    ls_buffer: Option<PointBuffer>,
    state: TrainState,
    pending: Metrics,
    /// Why metrics of the last evaluation are missing from `pending` (key → reason).
    pending_notes: BTreeMap<String, String>,
}

/// The teacher's reward settings, applied to student residuals.
#[derive(Debug, Clone, Copy)]
struct Advantage {
    c: f64,
    w_pos: f64,
    w_neg: f64,
    threshold: f64,
}

impl Advantage {
    /// adv = log(C + w·½Δ²), w = w₊ if the student under-estimates (δ = −Δ > 0) else w₋;
    /// log(C + 10⁻¹²) below the threshold.
    fn of(&self, residual: f64, log_r: f64) -> f64 {
        if log_r < self.threshold || !residual.is_finite() {
            return (self.c + 1e-12).ln();
        }
        let w = if -residual > 0.0 { self.w_pos } else { self.w_neg };
        (self.c + w * 0.5 * residual * residual).ln()
    }

    /// adv of every (residual, log R) pair: the PER and teacher buffer priorities.
    fn priorities(&self, residuals: &[f64], log_r: &[f64]) -> Vec<f64> {
        residuals.iter().zip(log_r).map(|(&r, &l)| self.of(r, l)).collect()
    }
}

/// One training batch after its gradient step: end points `[n, d]`, their log R and the
/// pre-step TB residuals (under the training log-rewards).
struct Batch {
    ends: Vec<f64>,
    log_r: Vec<f64>,
    residuals: Vec<f64>,
}

/// The paths of one chunk of a training batch, with what its loss needs.
struct Chunk {
    paths: Paths,
    /// Training log-rewards of these paths.
    train_r: Vec<f64>,
    /// ∇log R at the end points (PIS only; non-finite entries zeroed).
    score: Option<Vec<f64>>,
}

impl Chunk {
    /// Walks (or evaluates the given) `n` paths of `model` for `objective`.
    fn walk(
        model: &Diffusion,
        target: &dyn fab_core::LogDensity,
        objective: Objective,
        source: Source<'_>,
        log_r: Option<&[f64]>,
        n: usize,
        rng: &mut dyn RngCore,
    ) -> Result<Self> {
        let track = if objective.reparameterised() { Track::PathTape } else { Track::Tape };
        let paths = model.paths(target, n, source, track, objective.needs_flows(), rng)?;
        let train_r: Vec<f64> = log_r.map_or_else(|| paths.log_r.clone(), <[f64]>::to_vec);
        let score = if objective.reparameterised() {
            let d = target.dim();
            let t = Tensor::from_slice(paths.ends(d), (n, d), &Device::Cpu)?.to_dtype(model.spec().dtype)?;
            let g = fab_core::to_f64_vec(&target.log_prob_and_grad(&t)?.1)?;
            Some(g.into_iter().map(|v| if v.is_finite() { v } else { 0.0 }).collect())
        } else {
            None
        };
        Ok(Self { paths, train_r, score })
    }
}

/// Rows `lo..hi` of every step of a step-major `[t1, n, d]` array, as a step-major `[t1, hi − lo, d]` one.
fn step_major_rows(x: &[f64], t1: usize, n: usize, d: usize, lo: usize, hi: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(t1 * (hi - lo) * d);
    for i in 0..t1 {
        out.extend_from_slice(&x[(i * n + lo) * d..(i * n + hi) * d]);
    }
    out
}

impl DiffusionSampler {
    /// Builds the target, the networks and the buffers of a validated configuration.
    pub fn new(config: DiffusionConfig) -> Result<Self> {
        let target = config.target.build(config.dtype(), &Device::Cpu).map_err(Error::family)?;
        Self::with_target(config, target)
    }

    /// A sampler of any target — a user's density wrapped in [`fab_sampler::DensityTarget`]
    /// included — with the settings of `config` (whose `[target]` section is then ignored except
    /// for its dimension, which must match).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use fab_core::FnDensity;
    /// use fab_diffusion::{DiffusionConfig, DiffusionSampler};
    /// use fab_sampler::{DensityTarget, FamilyConfig, Sampler};
    ///
    /// // A 2-D banana, known up to its constant.
    /// let banana = FnDensity::new(2, |x: &candle_core::Tensor| {
    ///     let a = x.narrow(1, 0, 1)?.squeeze(1)?;
    ///     let b = x.narrow(1, 1, 1)?.squeeze(1)?;
    ///     let bend = (b - (a.sqr()? * 0.5)?)?;
    ///     (a.sqr()? * -0.125)? - (bend.sqr()? * 2.0)?
    /// });
    /// let overrides = ["process.n_steps=10", "train.batch_size=32", "process.t_scale=2.0"].map(String::from);
    /// let cfg = DiffusionConfig::parse("family = \"diffusion\"", &overrides)?;
    /// let target = Arc::new(DensityTarget::new(Box::new(banana)));
    /// let mut sampler = DiffusionSampler::with_target(cfg, target)?;
    /// for _ in 0..5 {
    ///     let report = sampler.step()?;
    ///     assert!(report.loss.is_finite());
    /// }
    /// # Ok::<(), fab_sampler::Error>(())
    /// ```
    pub fn with_target(config: DiffusionConfig, target: Arc<dyn Target>) -> Result<Self> {
        if target.dim() != config.target.dim() {
            return Err(Error::Config(format!(
                "the target has dimension {} but the configuration's [target] section has {}",
                target.dim(),
                config.target.dim()
            )));
        }
        let objective = config.objective.objective()?;
        // Methods that read ∇log R are refused, before anything is written, for a target
        // that has none (a user's density computed outside candle's differentiable ops).
        let needs_gradient = [("process.langevin", config.process.langevin), ("local_search.enabled", config.local_search.enabled)];
        if let Some((key, _)) = needs_gradient.iter().find(|(_, on)| *on) {
            let probe = Tensor::zeros((1, target.dim()), config.dtype(), &Device::Cpu)?;
            if let Err(e) = target.density().log_prob_and_grad(&probe) {
                return Err(Error::Config(format!("{key} = true needs ∇log R of the target: {e}")));
            }
        }
        let mut init = seeded_rng(config.seed, INIT_STREAM);
        let spec = config.model_spec()?;
        let student = Learner::new(Diffusion::new(spec.clone(), &mut init)?, config.optim_spec())?;
        let schedule_name = config.train.schedule.clone();
        let schedule = schedule_name.as_str();
        let teacher = if schedule == "teacher" {
            // The teacher is a sampler of the same class without the Langevin parametrisation,
            // trained by TB on its own reward.
            let mut tspec = spec.clone();
            tspec.langevin = None;
            tspec.shape.flow_head = false;
            let t = &config.teacher;
            let optim = OptimSpec {
                lr: t.lr,
                lr_log_z: t.lr_log_z,
                weight_decay: config.train.weight_decay,
                clip: (t.clip_grad_norm > 0.0).then_some(t.clip_grad_norm),
            };
            Some(Learner::new(Diffusion::new(tspec, &mut init)?, optim)?)
        } else {
            None
        };
        let cap = config.buffer.capacity;
        let buffer = if schedule != "on_policy" { Some(RankedBuffer::new(cap).map_err(Error::family)?) } else { None };
        let ls_buffer =
            if schedule == "sendera" && config.local_search.enabled { Some(RankedBuffer::new(cap).map_err(Error::family)?) } else { None };
        let state =
            TrainState { iteration: 0, next_key: 0, threshold: None, n_target_calls: 0, rng: seeded_rng(config.seed, TRAIN_STREAM) };
        let mut s = Self {
            config,
            target,
            objective,
            student,
            teacher,
            buffer,
            ls_buffer,
            state,
            pending: Metrics::new(),
            pending_notes: BTreeMap::new(),
        };
        if matches!(schedule, "per" | "teacher") {
            // The reward threshold: a quantile of the untrained student's samples' log R, fixed.
            let b = s.config.train.batch_size;
            let target = s.target.clone();
            let counted = Counted::new(target.density());
            let p = s.student.model.paths(&counted, b, Source::Forward { exploration: 0.0 }, Track::None, false, &mut s.state.rng)?;
            s.state.n_target_calls += counted.points();
            s.state.threshold = Some(fab_core::stats::quantile(&p.log_r, s.config.teacher.threshold_quantile));
        }
        Ok(s)
    }

    /// The student.
    pub fn student(&self) -> &Diffusion {
        &self.student.model
    }

    /// The teacher, with schedule `teacher`.
    pub fn teacher(&self) -> Option<&Diffusion> {
        self.teacher.as_ref().map(|t| &t.model)
    }

    /// The fixed reward threshold of the `per` and `teacher` schedules.
    pub fn threshold(&self) -> Option<f64> {
        self.state.threshold
    }

    fn advantage(&self) -> Advantage {
        let t = &self.config.teacher;
        Advantage {
            c: t.c,
            w_pos: t.weight_positive,
            w_neg: t.weight_negative,
            threshold: self.state.threshold.unwrap_or(f64::NEG_INFINITY),
        }
    }

    /// One gradient step of `who` (student or teacher) on paths from `source`, with training
    /// log-rewards `log_r` (None: log R of the end points). Returns the step and the batch's end
    /// points, log R and pre-step TB residuals.
    ///
    /// With `train.path_chunks` = k > 1 the batch is split into k chunks of consecutive paths,
    /// each walked with its own generator (seeded in chunk order from the training stream) and
    /// differentiated on its own graph, in parallel on the thread pool; the chunk gradients are
    /// summed in chunk order, so the result does not depend on the number of threads.
    fn train_on(&mut self, teacher: bool, source: Source<'_>, log_r: Option<&[f64]>) -> Result<(crate::model::StepResult, Batch)> {
        let d = self.target.dim();
        let t1 = self.config.process.n_steps + 1;
        let b = match source {
            Source::Given(x) => x.len() / (t1 * d),
            Source::Forward { .. } => self.config.train.batch_size,
        };
        let k = self.config.train.path_chunks.clamp(1, b.max(1));
        let objective = if teacher { Objective::Tb } else { self.objective };
        let target = self.target.clone();
        let counted = Counted::new(target.density());
        let learner = if teacher { self.teacher.as_mut().expect("a teacher") } else { &mut self.student };
        let model = &learner.model;
        // Phase 1: the paths of every chunk (on the graph).
        let chunks: Vec<Chunk> = if k == 1 {
            vec![Chunk::walk(model, &counted, objective, source, log_r, b, &mut self.state.rng)?]
        } else {
            // Per chunk: its rows, its points when given, and its generator (seeded in chunk order).
            let jobs: Vec<(usize, usize, Option<Vec<f64>>, FabRng)> = (0..k)
                .map(|c| {
                    let (lo, hi) = (c * b / k, (c + 1) * b / k);
                    let given = match source {
                        Source::Given(x) => Some(step_major_rows(x, t1, b, d, lo, hi)),
                        Source::Forward { .. } => None,
                    };
                    (lo, hi, given, <FabRng as rand::SeedableRng>::seed_from_u64(self.state.rng.next_u64()))
                })
                .collect();
            jobs.into_par_iter()
                .map(|(lo, hi, given, mut rng)| {
                    let src = given.as_deref().map_or(source, Source::Given);
                    Chunk::walk(model, &counted, objective, src, log_r.map(|r| &r[lo..hi]), hi - lo, &mut rng)
                })
                .collect::<Result<Vec<_>>>()?
        };
        // Each chunk's path estimates of log q (detached), for VarGrad's centre and the residuals.
        let log_qs: Vec<Vec<f64>> = chunks.iter().map(|c| c.paths.log_q_host()).collect::<Result<_>>()?;
        // VarGrad's centre over the whole batch, when the batch is split.
        let center = if k > 1 && objective == Objective::VarGrad {
            let mut all = Vec::with_capacity(b);
            for (c, lq) in chunks.iter().zip(&log_qs) {
                all.extend(lq.iter().zip(&c.train_r).map(|(q, r)| q - r));
            }
            Some(mean(&all))
        } else {
            None
        };
        let part = BatchPart { batch: b, center };
        // Phase 2: loss and gradients of every chunk, summed in chunk order.
        let grads_of = |c: &Chunk| -> Result<Gradients> {
            let l = loss(objective, &c.paths, &c.train_r, model.log_z_tensor(), c.score.as_deref(), part)?;
            model.gradients_of(&l, &c.paths)
        };
        let grads: Vec<Gradients> =
            if k == 1 { vec![grads_of(&chunks[0])?] } else { chunks.par_iter().map(grads_of).collect::<Result<Vec<_>>>()? };
        let mut grads = grads.into_iter();
        let mut total = grads.next().expect("at least one chunk");
        for g in grads {
            total.accumulate(&g)?;
        }
        let log_z = model.log_z();
        let mut batch = Batch { ends: Vec::with_capacity(b * d), log_r: Vec::with_capacity(b), residuals: Vec::with_capacity(b) };
        for (c, lq) in chunks.iter().zip(&log_qs) {
            batch.ends.extend_from_slice(c.paths.ends(d));
            batch.log_r.extend_from_slice(&c.paths.log_r);
            batch.residuals.extend(tb_residuals(lq, &c.train_r, log_z));
        }
        drop(chunks);
        let step = learner.apply_gradients(total)?;
        self.state.n_target_calls += counted.points();
        Ok((step, batch))
    }

    /// `n` points drawn from the buffer (or the local-search buffer), rank-prioritised; None
    /// while it is empty.
    fn replay(&mut self, ls: bool, n: usize) -> Result<Option<Vec<f64>>> {
        let k = self.config.buffer.rank_k;
        let buf = if ls { self.ls_buffer.as_ref() } else { self.buffer.as_ref() };
        let Some(buf) = buf.filter(|b| !b.is_empty()) else { return Ok(None) };
        let idx = buf.sample(n, Prioritisation::Rank { k }, &mut self.state.rng).map_err(Error::family)?;
        let d = self.target.dim();
        let mut x = Vec::with_capacity(n * d);
        for i in idx {
            x.extend_from_slice(buf.get(i).expect("a sampled position").1);
        }
        Ok(Some(x))
    }

    /// Inserts the rows `k` of `x` with `keep(k)`, a finite priority and finite coordinates.
    fn insert(&mut self, ls: bool, x: &[f64], priority: &[f64], keep: impl Fn(usize) -> bool) -> Result<()> {
        let d = self.target.dim();
        let buf = if ls { self.ls_buffer.as_mut() } else { self.buffer.as_mut() };
        let Some(buf) = buf else { return Ok(()) };
        for k in 0..priority.len() {
            if keep(k) && priority[k].is_finite() && x[k * d..(k + 1) * d].iter().all(|v| v.is_finite()) {
                buf.insert(self.state.next_key, x[k * d..(k + 1) * d].to_vec(), priority[k]).map_err(Error::family)?;
                self.state.next_key += 1;
            }
        }
        Ok(())
    }

    /// MALA from `batch_size` replayed points (None while the buffer is empty).
    fn local_search(&mut self) -> Result<Option<fab_mcmc::MalaOutput>> {
        let b = self.config.train.batch_size;
        let Some(x0) = self.replay(false, b)? else { return Ok(None) };
        let cfg = self.config.local_search.mala();
        let target = self.target.clone();
        let counted = Counted::new(target.density());
        let out = fab_mcmc::mala(&counted, &x0, &cfg, self.config.dtype(), &mut self.state.rng).map_err(Error::family)?;
        self.state.n_target_calls += counted.points();
        Ok(Some(out))
    }

    /// A teacher TB step on bridges to the student's batch end points above the threshold,
    /// rewarded by log(adv) + α·log R.
    fn teacher_step(&mut self, ends: &[f64], log_r: &[f64], residuals: &[f64]) -> Result<f64> {
        let adv = self.advantage();
        let thr = self.state.threshold.unwrap_or(f64::NEG_INFINITY);
        let d = self.target.dim();
        let mut x = Vec::new();
        let mut r = Vec::new();
        for k in 0..log_r.len() {
            if log_r[k] > thr && log_r[k].is_finite() {
                x.extend_from_slice(&ends[k * d..(k + 1) * d]);
                r.push(adv.of(residuals[k], log_r[k]).ln() + self.config.teacher.alpha * log_r[k]);
            }
        }
        if r.is_empty() {
            return Ok(f64::NAN);
        }
        let bridges = self.student.model.process().bridge_paths(&x, &mut self.state.rng);
        let (step, _) = self.train_on(true, Source::Given(&bridges), Some(&r))?;
        Ok(step.loss)
    }

    fn draw_paths(&mut self, n: usize, rng: &mut dyn RngCore) -> Result<(Vec<f64>, Vec<f64>)> {
        let d = self.target.dim();
        let mut x = Vec::with_capacity(n * d);
        let mut lq = Vec::with_capacity(n);
        let mut left = n;
        let mut progress = ProgressLine::new("model paths", n);
        while left > 0 {
            let m = left.min(DRAW_CHUNK);
            let p = self.student.model.paths(self.target.density(), m, Source::Forward { exploration: 0.0 }, Track::None, false, rng)?;
            x.extend_from_slice(p.ends(d));
            lq.extend(p.log_q_host()?);
            left -= m;
            progress.update(n - left);
        }
        Ok((x, lq))
    }

    /// Σlog P_F − Σlog P_B of `k` backward paths to each of the points `x`, grouped by point.
    fn backward_log_q(&self, x: &[f64], k: usize, rng: &mut dyn RngCore) -> Result<Vec<f64>> {
        let d = self.target.dim();
        let n = x.len() / d;
        let mut rep = Vec::with_capacity(n * k * d);
        for i in 0..n {
            for _ in 0..k {
                rep.extend_from_slice(&x[i * d..(i + 1) * d]);
            }
        }
        let mut out = Vec::with_capacity(n * k);
        let mut progress = ProgressLine::new("backward paths", n * k);
        for chunk in rep.chunks(DRAW_CHUNK * d) {
            let m = chunk.len() / d;
            let bridges = self.student.model.process().bridge_paths(chunk, rng);
            let p = self.student.model.paths(self.target.density(), m, Source::Given(&bridges), Track::None, false, rng)?;
            out.extend(p.log_q_host()?);
            progress.update(out.len());
        }
        Ok(out)
    }

    /// The path-based bounds and sample metrics of one evaluation (into `pending`).
    fn path_metrics(&mut self, samples: &fab_sampler::WeightedSamples, sizes: &EvalSizes, rng: &mut dyn RngCore) -> Result<()> {
        let mut m = Metrics::new();
        let mut notes = BTreeMap::new();
        let log_z = self.target.log_z();
        let elbo = mean(&samples.log_w);
        m.insert("elbo".into(), elbo);
        let rw = samples.log_z_hat();
        m.insert("log_z_rw".into(), rw);
        m.insert("ess".into(), samples.ess()); // already a fraction of the sample count
        if let Some(z) = log_z {
            m.insert("delta_log_z".into(), (z - elbo).abs());
            m.insert("delta_log_z_rw".into(), (z - rw).abs());
        }
        m.insert("log_z_learned".into(), self.student.model.log_z());
        if let Some(exact) = self.target.exact() {
            let d = self.target.dim();
            let n_exact = sizes.n_test;
            let xe = fab_core::to_f64_vec(&exact.sample(n_exact, rng)?)?;
            // EUBO: E_p[log R(x) + Σlog P_B − Σlog P_F] over one backward path per exact point.
            let lq = self.backward_log_q(&xe, 1, rng)?;
            let lp = fab_sampler::log_prob_host(self.target.density(), &xe, d, self.config.dtype())?;
            m.insert("eubo".into(), mean(&lp.iter().zip(&lq).map(|(p, q)| p - q).collect::<Vec<_>>()));
            if let Some(z) = log_z {
                m.insert("delta_log_z_eubo".into(), (m["eubo"] - z).abs());
            }
            // Mean log-likelihood bound: log of the mean path ratio over k backward paths.
            let k = self.config.eval.likelihood_paths;
            let n_ll = self.config.eval.n_likelihood_points.min(n_exact);
            if n_ll > 0 {
                let lq = self.backward_log_q(&xe[..n_ll * d], k, rng)?;
                let per_point: Vec<f64> = lq.chunks(k).map(log_mean_exp).collect();
                m.insert("mean_log_likelihood".into(), mean(&per_point));
            }
            // W2 by exact assignment and RBF-MMD² between equally many model and exact samples
            // (a W2 the solver refuses becomes a note, like FAB's).
            if self.config.eval.n_w2 > 0 {
                fab_sampler::eval::distance_metrics(&mut m, &mut notes, &samples.x, &xe, d, self.config.eval.n_w2)?;
            }
        }
        self.pending = m;
        self.pending_notes = notes;
        Ok(())
    }
}

impl Model for DiffusionSampler {
    fn dim(&self) -> usize {
        self.target.dim()
    }

    fn dtype(&self) -> DType {
        self.config.dtype()
    }

    fn draw(&mut self, n: usize, rng: &mut dyn RngCore) -> fab_sampler::Result<Draws> {
        let (x, log_q) = self.draw_paths(n, rng)?;
        Ok(Draws { x, dim: self.target.dim(), log_q, exact_log_q: false })
    }
}

impl Sampler for DiffusionSampler {
    type Stats = DiffusionStats;

    fn target(&self) -> Arc<dyn Target> {
        self.target.clone()
    }

    fn step(&mut self) -> fab_sampler::Result<StepReport<DiffusionStats>> {
        let it = self.state.iteration;
        let factor = self.config.lr_factor(it);
        self.student.set_lr_factor(factor)?;
        if let Some(t) = self.teacher.as_mut() {
            t.set_lr_factor(factor)?;
        }
        let b = self.config.train.batch_size;
        let expl = self.config.exploration_at(it);
        let schedule = self.config.train.schedule.clone();
        let mut stats = DiffusionStats { exploration: expl, ls_acceptance: f64::NAN, teacher_loss: f64::NAN, ..Default::default() };
        let d = self.target.dim();
        let forward = match schedule.as_str() {
            "on_policy" => true,
            _ => it.is_multiple_of(2),
        };
        let (step, ends, log_r, residuals) = if forward {
            let (step, batch) = self.train_on(false, Source::Forward { exploration: expl }, None)?;
            let Batch { ends, log_r, residuals: res } = batch;
            match schedule.as_str() {
                "sendera" => self.insert(false, &ends, &log_r, |_| true)?,
                // PER inserts the points above the threshold (everything at iteration 0); the
                // teacher schedule seeds its buffer at iteration 0 only.
                "per" | "teacher" if schedule == "per" || it == 0 => {
                    let pr = self.advantage().priorities(&res, &log_r);
                    let thr = self.state.threshold.unwrap_or(f64::NEG_INFINITY);
                    let lr = &log_r;
                    self.insert(false, &ends, &pr, |k| it == 0 || lr[k] > thr)?;
                }
                _ => {}
            }
            (step, ends, log_r, res)
        } else {
            stats.source = 1;
            let ls_due = self.config.local_search.enabled && it % self.config.local_search.every == 1 % self.config.local_search.every;
            if ls_due {
                if let Some(out) = self.local_search()? {
                    stats.ls_acceptance = out.acceptance;
                    let to_ls = self.ls_buffer.is_some();
                    self.insert(to_ls, &out.collected, &out.collected_log_p, |_| true)?;
                }
            }
            if schedule == "teacher" && it % (2 * self.config.teacher.adv_freq) == 1 {
                // Teacher samples above the threshold enter the buffer with their advantage
                // under the student.
                let teacher = self.teacher.as_ref().expect("a teacher");
                let target = self.target.clone();
                let counted = Counted::new(target.density());
                let tp = teacher.model.paths(&counted, b, Source::Forward { exploration: 0.0 }, Track::None, false, &mut self.state.rng)?;
                let tx = tp.ends(d).to_vec();
                let bridges = self.student.model.process().bridge_paths(&tx, &mut self.state.rng);
                let sp = self.student.model.paths(&counted, b, Source::Given(&bridges), Track::None, false, &mut self.state.rng)?;
                self.state.n_target_calls += counted.points();
                let res = tb_residuals(&sp.log_q_host()?, &tp.log_r, self.student.model.log_z());
                let pr = self.advantage().priorities(&res, &tp.log_r);
                let thr = self.state.threshold.unwrap_or(f64::NEG_INFINITY);
                let lr = &tp.log_r;
                self.insert(false, &tx, &pr, |k| lr[k] > thr)?;
            }
            let from_ls = self.ls_buffer.as_ref().is_some_and(|bf| !bf.is_empty());
            match self.replay(from_ls, b)? {
                Some(x) => {
                    let bridges = self.student.model.process().bridge_paths(&x, &mut self.state.rng);
                    let (step, batch) = self.train_on(false, Source::Given(&bridges), None)?;
                    (step, x, batch.log_r, batch.residuals)
                }
                None => {
                    // Nothing to replay yet: a forward step instead.
                    stats.source = 0;
                    let (step, batch) = self.train_on(false, Source::Forward { exploration: expl }, None)?;
                    (step, batch.ends, batch.log_r, batch.residuals)
                }
            }
        };
        if self.teacher.is_some() {
            stats.teacher_loss = self.teacher_step(&ends, &log_r, &residuals)?;
        }
        self.state.iteration += 1;
        stats.log_z = self.student.model.log_z();
        stats.mean_log_r = mean(&log_r);
        stats.buffer_len = self.buffer.as_ref().map_or(0, |b| b.len() as u64);
        stats.ls_buffer_len = self.ls_buffer.as_ref().map_or(0, |b| b.len() as u64);
        stats.n_target_calls = self.state.n_target_calls;
        Ok(StepReport {
            iteration: 0,
            loss: if step.skipped { f64::NAN } else { step.loss },
            grad_norm: step.grad_norm,
            skipped_steps: usize::from(step.skipped),
            lr: self.student.lr(),
            stats,
            seconds: 0.0,
        })
    }

    fn eval_sets(&mut self, sizes: &EvalSizes, rng: &mut dyn RngCore) -> fab_sampler::Result<Vec<NamedSamples>> {
        let samples = self.sample_weighted(sizes.n_samples, rng)?;
        self.path_metrics(&samples, sizes, rng)?;
        Ok(vec![NamedSamples { name: "model".into(), samples, primary: true }])
    }

    fn own_notes(&self, notes: &mut BTreeMap<String, String>) {
        notes.extend(self.pending_notes.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    fn own_metrics(&self, metrics: &mut Metrics) {
        metrics.extend(self.pending.iter().map(|(k, v)| (k.clone(), *v)));
        // The training budget in target evaluations, as FAB reports it (`fab compare --x n_target_calls`).
        metrics.insert("n_target_calls".into(), self.state.n_target_calls as f64);
    }

    fn extra_points(&self, max: usize) -> Vec<(String, Vec<f64>)> {
        let mut out = Vec::new();
        for (name, buf) in [("buffer", &self.buffer), ("local-search buffer", &self.ls_buffer)] {
            if let Some(b) = buf.as_ref().filter(|b| !b.is_empty()) {
                // The newest points (the buffer is FIFO).
                let skip = b.len().saturating_sub(max);
                out.push((name.to_string(), b.iter().skip(skip).flat_map(|(_, x, _)| x.clone()).collect()));
            }
        }
        out
    }

    fn save_state(&self, dir: &Path) -> fab_sampler::Result<()> {
        self.student.save(dir, "student")?;
        if let Some(t) = &self.teacher {
            t.save(dir, "teacher")?;
        }
        let mut v = serde_json::json!({ "state": &self.state });
        for (name, b) in [("buffer", &self.buffer), ("ls_buffer", &self.ls_buffer)] {
            if let Some(b) = b {
                save_points(b, self.target.dim(), &dir.join(format!("{name}.npy")))?;
                v[format!("{name}_capacity")] = b.capacity().into();
            }
        }
        let path = dir.join("diffusion_state.json");
        std::fs::write(&path, serde_json::to_vec(&v)?).map_err(|e| Error::io(&path, e))?;
        Ok(())
    }

    fn load_state(&mut self, dir: &Path) -> fab_sampler::Result<()> {
        self.student.load(dir, "student")?;
        if let Some(t) = self.teacher.as_mut() {
            t.load(dir, "teacher")?;
        }
        let path = dir.join("diffusion_state.json");
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let mut v: serde_json::Value = serde_json::from_slice(&text)?;
        self.state = serde_json::from_value(v["state"].take())?;
        let d = self.target.dim();
        for (name, b) in [("buffer", &mut self.buffer), ("ls_buffer", &mut self.ls_buffer)] {
            if b.is_none() {
                continue;
            }
            *b = Some(if v.get(name).is_some() {
                // Checkpoints written before the buffers moved to .npy.
                serde_json::from_value(v[name].take())?
            } else {
                let cap = v[format!("{name}_capacity")]
                    .as_u64()
                    .ok_or_else(|| Error::Checkpoint(format!("{}: no {name}_capacity", path.display())))?;
                load_points(&dir.join(format!("{name}.npy")), cap as usize, d)?
            });
        }
        Ok(())
    }
}
