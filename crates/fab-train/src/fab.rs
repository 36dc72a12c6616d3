//! FAB as a sampler family: a normalizing flow trained by AIS toward p^α q^{1−α}, with or
//! without the prioritised replay buffer, and the flow-only baselines — each an [`Objective`]
//! composed from a loss of [`crate::losses`], the data it needs and the shared optimiser step.

use std::path::Path;
use std::sync::Arc;

use fab_ais::{Ais, AisOutput, AisState};
use fab_buffer::PrioritisedBuffer;
use fab_core::{Counted, FabRng, OnDevice, Proposal};
use fab_flows::FlowModel;
use fab_sampler::observe::ProgressLine;
use fab_sampler::{Draws, EvalSizes, Model, NamedSamples, Sampler, StepReport, StepStats, Target, WeightedSamples, HOST_CHUNK};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::{ExperimentConfig, LossKind};
use crate::losses::{self, LossGrad};
use crate::optim::{Adam, StepOutcome};
use crate::{Result, TrainError};

/// RNG stream of training (AIS, buffer sampling, flow samples for the losses).
pub const TRAIN_STREAM: u64 = 1;

/// FAB's per-iteration statistics (absent fields do not apply to the loss).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FabStats {
    /// ESS fraction of the AIS batch.
    pub ess_ais: Option<f64>,
    /// ESS fraction of the flow samples that started AIS, w.r.t. p.
    pub ess_flow: Option<f64>,
    /// AIS log-normaliser estimate.
    pub log_z_ais: Option<f64>,
    /// AIS acceptance rate at the first and last intermediate distribution.
    pub accept_first_last: Option<(f64, f64)>,
    /// AIS step size at the first and last intermediate distribution.
    pub step_size_first_last: Option<(f64, f64)>,
    /// AIS samples dropped as non-finite.
    pub ais_dropped: Option<usize>,
    /// Buffer ESS fraction.
    pub buffer_ess: Option<f64>,
    /// Share of buffer entries with weight 0.
    pub buffer_dead_fraction: Option<f64>,
    /// Target evaluations (points, value or value and gradient) since the start of training,
    /// the buffer's initial filling included: the budget the families are compared at.
    pub n_target_calls: Option<u64>,
    /// The target's statistics of the iteration's AIS batch ([`Target::batch_stats`]), keys
    /// prefixed `ais_` (alanine dipeptide: `ais_alpha_l_fraction`, `ais_alpha_l_weight`).
    #[serde(flatten)]
    pub target_stats: std::collections::BTreeMap<String, f64>,
}

impl StepStats for FabStats {
    fn progress(&self) -> String {
        self.ess_ais.map(|e| format!("ess_ais {e:.3}")).unwrap_or_default()
    }
}

/// Everything of a FAB sampler but its objective: what objectives draw on.
#[derive(Debug)]
pub struct FabParts {
    config: ExperimentConfig,
    flow: FlowModel,
    target: Arc<dyn Target>,
    ais: Ais,
    buffer: Option<PrioritisedBuffer>,
    optim: Adam,
    rng: FabRng,
    grad_steps: u64,
    /// Target evaluations so far ([`FabStats::n_target_calls`]); unknown (None) for a run
    /// resumed from a checkpoint written before they were counted.
    target_calls: Option<u64>,
}

/// One way of turning data into gradient steps (FAB with/without buffer, a baseline).
pub trait Objective: Send + std::fmt::Debug {
    /// One iteration: draws what the loss needs, applies gradient steps through
    /// [`FabParts::apply`] (which records them in `acc`), and records statistics.
    fn iterate(&mut self, parts: &mut FabParts, report: &mut StepReport<FabStats>, acc: &mut Accumulator) -> Result<()>;
}

/// The state a FAB checkpoint saves beside the flow, optimiser and buffer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FabState {
    version: u32,
    grad_steps: u64,
    ais: AisState,
    rng: FabRng,
    /// Written by `save_model_state`: the directory holds no optimiser and no buffer.
    #[serde(default)]
    model_only: bool,
    /// Target evaluations so far (absent in checkpoints written before they were counted).
    #[serde(default)]
    target_calls: Option<u64>,
}

impl FabParts {
    /// Runs AIS with the training target (p^α q^{1−α}); the target is evaluated beside the flow
    /// when it is device-agnostic (mixtures, Many Well), on the host otherwise.
    fn ais_pass(&mut self) -> Result<AisOutput> {
        let b = self.config.train.batch_size;
        let on_device = OnDevice::for_points_on(self.target.density(), self.flow.device());
        let target = Counted::new(&on_device);
        let out = self.ais.run(&self.flow, &target, b, &mut self.rng)?;
        self.count_target_calls(target.points());
        Ok(out)
    }

    /// Adds `points` target evaluations to the count (when it is known).
    fn count_target_calls(&mut self, points: u64) {
        if let Some(c) = &mut self.target_calls {
            *c += points;
        }
    }

    /// Host copies (x, log w, log q) of AIS samples for the buffer, filtered by the target's
    /// sample filter when `train.filter_chirality` is set and more than 10 % of the batch
    /// passes (the reference's rule).
    fn buffer_entries(&self, out: &AisOutput) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let x = fab_core::to_f64_vec(&out.x)?;
        let lq = fab_core::to_f64_vec(&out.log_q)?;
        let lw = out.log_w_f64.clone();
        let filter = if self.config.train.filter_chirality { self.target.filter() } else { None };
        let Some(filter) = filter else { return Ok((x, lw, lq)) };
        let d = self.target.dim();
        let n = lw.len();
        let keep = filter.keep(&x, d);
        if keep.iter().filter(|&&k| k).count() * 10 <= n {
            return Ok((x, lw, lq));
        }
        let idx: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
        Ok((
            idx.iter().flat_map(|&i| x[i * d..(i + 1) * d].to_vec()).collect(),
            idx.iter().map(|&i| lw[i]).collect(),
            idx.iter().map(|&i| lq[i]).collect(),
        ))
    }

    /// Fills the buffer with AIS passes until it can be sampled; returns the passes made.
    fn fill_buffer(&mut self) -> Result<usize> {
        let mut passes = 0;
        while self.buffer.as_ref().is_some_and(|b| !b.can_sample()) {
            let out = self.ais_pass()?;
            let (x, lw, lq) = self.buffer_entries(&out)?;
            self.buffer.as_mut().expect("checked").add_host(&x, &lw, &lq)?;
            passes += 1;
        }
        Ok(passes)
    }

    /// One optimiser step with the scheduled learning rate; skipped (and counted) when the
    /// loss or the gradient is not finite.
    pub fn apply(&mut self, loss: LossGrad, report: &mut StepReport<FabStats>, acc: &mut Accumulator) -> Result<()> {
        let lr = self.config.train.lr_schedule.lr_at(self.config.train.optimizer.lr, self.grad_steps);
        self.optim.set_learning_rate(lr)?;
        self.grad_steps += 1;
        let outcome = match loss.grads {
            Some(mut g) if loss.value.is_finite() => {
                self.optim.step_clipped(self.flow.params(), &mut g, self.config.train.max_grad_norm)?
            }
            _ => StepOutcome::SkippedNonFiniteLoss { loss: loss.value },
        };
        match outcome {
            StepOutcome::Applied { grad_norm } => {
                acc.losses.push(loss.value);
                acc.norms.push(grad_norm);
            }
            _ => report.skipped_steps += 1,
        }
        Ok(())
    }
}

/// Loss values and gradient norms of an iteration's applied steps.
#[derive(Debug, Default)]
pub struct Accumulator {
    losses: Vec<f64>,
    norms: Vec<f64>,
}

fn record_ais(stats: &mut FabStats, out: &AisOutput, ais: &Ais) {
    stats.ess_ais = Some(out.ess);
    stats.ess_flow = Some(out.ess_base);
    stats.log_z_ais = Some(out.log_z_estimate);
    stats.ais_dropped = Some(out.n_dropped());
    if let (Some(f), Some(l)) = (out.levels.first(), out.levels.last()) {
        stats.accept_first_last = Some((f.acceptance_rate, l.acceptance_rate));
    }
    let n = ais.config().n_intermediate;
    if n > 0 {
        if let (Ok(a), Ok(b)) = (ais.step_size(0), ais.step_size(n - 1)) {
            stats.step_size_first_last = Some((a, b));
        }
    }
}

fn record_batch_stats(stats: &mut FabStats, target: &dyn Target, x: &[f64], log_w: &[f64]) {
    stats.target_stats = target.batch_stats(x, log_w).into_iter().map(|(k, v)| (format!("ais_{k}"), v)).collect();
}

/// FAB with the prioritised buffer: one AIS pass into the buffer, then
/// `train.n_updates_per_ais` gradient steps on buffer batches ([`losses::fab_buffer`]).
#[derive(Debug)]
struct FabWithBuffer;

impl Objective for FabWithBuffer {
    fn iterate(&mut self, p: &mut FabParts, report: &mut StepReport<FabStats>, acc: &mut Accumulator) -> Result<()> {
        let out = p.ais_pass()?;
        record_ais(&mut report.stats, &out, &p.ais);
        let (x, lw, lq) = p.buffer_entries(&out)?;
        record_batch_stats(&mut report.stats, p.target.as_ref(), &x, &lw);
        let (alpha, clip) = (p.config.ais.alpha, p.config.train.w_adjust_max_clip);
        let (b, l) = (p.config.train.batch_size, p.config.train.n_updates_per_ais);
        let (dtype, device) = (p.flow.dtype(), p.flow.device().clone());
        let buffer = p.buffer.as_mut().expect("the buffer objective has a buffer");
        buffer.add_host(&x, &lw, &lq)?;
        let batches = buffer.sample_batches(b, l, dtype, &device, &mut p.rng)?;
        for batch in batches {
            let buffer = p.buffer.as_mut().expect("buffer");
            let loss = losses::fab_buffer(&p.flow, &batch.x, &mut |lq| {
                Ok(buffer.adjust(&batch.indices, lq, alpha, clip).map_err(|e| fab_core::Error::invalid(e.to_string()))?.loss_weights)
            })?;
            p.apply(loss, report, acc)?;
        }
        let buffer = p.buffer.as_ref().expect("buffer");
        report.stats.buffer_ess = Some(buffer.ess());
        report.stats.buffer_dead_fraction = Some(buffer.dead_fraction());
        Ok(())
    }
}

/// FAB without buffer: one gradient step per AIS pass ([`losses::fab_no_buffer`]).
#[derive(Debug)]
struct FabWithoutBuffer;

impl Objective for FabWithoutBuffer {
    fn iterate(&mut self, p: &mut FabParts, report: &mut StepReport<FabStats>, acc: &mut Accumulator) -> Result<()> {
        let out = p.ais_pass()?;
        record_ais(&mut report.stats, &out, &p.ais);
        record_batch_stats(&mut report.stats, p.target.as_ref(), &fab_core::to_f64_vec(&out.x)?, &out.log_w_f64);
        let loss = losses::fab_no_buffer(&p.flow, &out.x, &out.log_w_f64, p.config.ais.alpha)?;
        p.apply(loss, report, acc)?;
        Ok(())
    }
}

/// Maximum likelihood on exact target samples ([`losses::forward_kl`]).
#[derive(Debug)]
struct ForwardKl;

impl Objective for ForwardKl {
    fn iterate(&mut self, p: &mut FabParts, report: &mut StepReport<FabStats>, acc: &mut Accumulator) -> Result<()> {
        let b = p.config.train.batch_size;
        let exact = p
            .target
            .exact()
            .ok_or_else(|| TrainError::Config("train.loss = \"forward_kl\" needs a target with an exact sampler".into()))?;
        let x = exact.sample(b, &mut p.rng)?.to_dtype(p.flow.dtype())?.to_device(p.flow.device())?;
        let loss = losses::forward_kl(&p.flow, &x)?;
        p.apply(loss, report, acc)?;
        Ok(())
    }
}

/// α = 2 with flow samples ([`losses::alpha2_nis`]).
#[derive(Debug)]
struct Alpha2Nis;

impl Objective for Alpha2Nis {
    fn iterate(&mut self, p: &mut FabParts, report: &mut StepReport<FabStats>, acc: &mut Accumulator) -> Result<()> {
        let target = Counted::new(p.target.density());
        let loss = losses::alpha2_nis(&p.flow, &target, p.config.train.batch_size, &mut p.rng)?;
        p.count_target_calls(target.points());
        p.apply(loss, report, acc)?;
        Ok(())
    }
}

/// Reverse KL on reparameterised flow samples ([`losses::reverse_kl`]).
#[derive(Debug)]
struct ReverseKl;

impl Objective for ReverseKl {
    fn iterate(&mut self, p: &mut FabParts, report: &mut StepReport<FabStats>, acc: &mut Accumulator) -> Result<()> {
        let target = Counted::new(p.target.density());
        let loss = losses::reverse_kl(&p.flow, &target, p.config.train.batch_size, &mut p.rng)?;
        p.count_target_calls(target.points());
        p.apply(loss, report, acc)?;
        Ok(())
    }
}

impl Accumulator {
    /// Writes the mean loss and gradient norm of the applied steps into the report.
    fn finish(&self, report: &mut StepReport<FabStats>) {
        report.loss = if self.losses.is_empty() { f64::NAN } else { self.losses.iter().sum::<f64>() / self.losses.len() as f64 };
        report.grad_norm = if self.norms.is_empty() { f64::NAN } else { self.norms.iter().sum::<f64>() / self.norms.len() as f64 };
    }
}

impl LossKind {
    /// The objective that trains with this loss.
    fn objective(self) -> Box<dyn Objective> {
        match self {
            LossKind::FabBuffer => Box::new(FabWithBuffer),
            LossKind::FabNoBuffer => Box::new(FabWithoutBuffer),
            LossKind::ForwardKl => Box::new(ForwardKl),
            LossKind::Alpha2Nis => Box::new(Alpha2Nis),
            LossKind::ReverseKl => Box::new(ReverseKl),
        }
    }
}

/// The FAB sampler family: flow, AIS, optional buffer, optimiser and one objective.
#[derive(Debug)]
pub struct FabSampler {
    parts: FabParts,
    objective: Box<dyn Objective>,
}

impl FabSampler {
    /// Writes `fab.json` (gradient-step count, AIS adaptation, RNG) into `dir`.
    fn write_fab_state(&self, dir: &Path, model_only: bool) -> fab_sampler::Result<()> {
        let p = &self.parts;
        let state = FabState {
            version: 1,
            grad_steps: p.grad_steps,
            ais: p.ais.state(),
            rng: p.rng.clone(),
            model_only,
            target_calls: p.target_calls,
        };
        let path = dir.join("fab.json");
        std::fs::write(&path, serde_json::to_string_pretty(&state)?).map_err(|e| fab_sampler::Error::io(&path, e))
    }

    /// Builds flow, target, AIS, buffer and optimiser from a validated configuration.
    pub fn new(config: ExperimentConfig) -> Result<Self> {
        config.validate()?;
        // On the flow's device: the mixtures and Many Well then evaluate there (candle ops);
        // the alanine-dipeptide force field stays on the host whatever the device.
        let target = config.target.build(config.precision.dtype(), &config.open_device()?)?;
        Self::build(config, target)
    }

    /// FAB on your own target (e.g. a [`fab_sampler::DensityTarget`] around a closure): the
    /// `[target]` section of `config` is ignored, the rest is validated against `target`
    /// (dimension, exact sampler for forward KL, sample filter for `train.filter_chirality`).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use fab_core::FnDensity;
    /// use fab_sampler::{DensityTarget, FamilyConfig, Run};
    /// use fab_train::{ExperimentConfig, FabSampler};
    /// // A banana-shaped 2-D density.
    /// let banana = FnDensity::new(2, |x: &candle_core::Tensor| {
    ///     let a = x.narrow(1, 0, 1)?.squeeze(1)?;
    ///     let b = x.narrow(1, 1, 1)?.squeeze(1)?;
    ///     let bend = (b - (a.sqr()? * 0.5)?)?;
    ///     (a.sqr()? * -0.125)? - (bend.sqr()? * 2.0)?
    /// });
    /// let cfg = ExperimentConfig::parse("", &["train.n_iterations=500".into()])?;
    /// let sampler = FabSampler::with_target(cfg.clone(), Arc::new(DensityTarget::new(Box::new(banana))))?;
    /// let mut run = Run::new(sampler, cfg.run_settings());
    /// while !run.is_finished() {
    ///     run.step()?;
    /// }
    /// let metrics = run.evaluate(true)?.metrics;
    /// # Ok::<(), fab_sampler::Error>(())
    /// ```
    pub fn with_target(config: ExperimentConfig, target: Arc<dyn Target>) -> Result<Self> {
        config.validate_settings()?;
        config.check_target(target.dim(), target.exact().is_some(), target.filter().is_some())?;
        Self::build(config, target)
    }

    fn build(config: ExperimentConfig, target: Arc<dyn Target>) -> Result<Self> {
        let dtype = config.precision.dtype();
        let device = config.open_device()?;
        let flow = config.flow.build(config.seed, dtype, &device)?;
        let ais = Ais::new(config.ais.clone())?;
        let buffer = if config.train.loss == LossKind::FabBuffer { Some(config.buffer.init(target.dim())?) } else { None };
        let optim = Adam::new(flow.params(), config.train.optimizer)?;
        let objective = config.train.loss.objective();
        let rng = fab_core::seeded_rng(config.seed, TRAIN_STREAM);
        Ok(Self { parts: FabParts { config, flow, target, ais, buffer, optim, rng, grad_steps: 0, target_calls: Some(0) }, objective })
    }

    /// The configuration.
    pub fn config(&self) -> &ExperimentConfig {
        &self.parts.config
    }

    /// The flow being trained.
    pub fn flow(&self) -> &FlowModel {
        &self.parts.flow
    }

    /// Chooses the flow's implementation: [`Backend::Candle`](fab_flows::Backend) runs the
    /// device-generic candle path (the one a GPU uses) on the CPU too, e.g. to compare the two.
    pub fn set_flow_backend(&mut self, backend: fab_flows::Backend) {
        self.parts.flow.set_backend(backend);
    }

    /// The replay buffer (FAB with buffer only).
    pub fn buffer(&self) -> Option<&PrioritisedBuffer> {
        self.parts.buffer.as_ref()
    }

    /// The AIS sampler (with its adapted step sizes).
    pub fn ais(&self) -> &Ais {
        &self.parts.ais
    }

    /// Fills the buffer with AIS passes until it can be sampled (done by the first step
    /// otherwise); returns the passes made.
    pub fn fill_buffer(&mut self) -> Result<usize> {
        self.parts.fill_buffer()
    }

    /// Flow samples with log q (host copies), drawn in chunks of [`HOST_CHUNK`].
    fn flow_draws(&self, n: usize, rng: &mut dyn RngCore) -> Result<Draws> {
        let flow = &self.parts.flow;
        let dim = flow.base().dim();
        let mut x = Vec::with_capacity(n * dim);
        let mut log_q = Vec::with_capacity(n);
        let mut left = n;
        let mut progress = ProgressLine::new("flow samples", n);
        while left > 0 {
            let m = left.min(HOST_CHUNK);
            let (xs, l) = flow.sample_and_log_prob(m, rng)?;
            x.extend(fab_core::to_f64_vec(&xs)?);
            log_q.extend(fab_core::to_f64_vec(&l)?);
            left -= m;
            progress.update(n - left);
        }
        Ok(Draws { x, dim, log_q, exact_log_q: true })
    }

    /// AIS toward p in evaluation mode (step sizes frozen) in batches, restoring the training
    /// settings afterwards.
    fn ais_toward_p(&mut self, n: usize, batch: usize, rng: &mut dyn RngCore) -> Result<WeightedSamples> {
        let p = &mut self.parts;
        let (was_p, was_eval) = (p.ais.p_target(), p.ais.eval_mode());
        p.ais.set_p_target(true);
        p.ais.set_eval_mode(true);
        let dim = p.flow.base().dim();
        let mut out = WeightedSamples { dim, ..WeightedSamples::default() };
        let mut left = n;
        let mut failure = None;
        let mut progress = ProgressLine::new("AIS samples", n);
        while left > 0 {
            progress.update(n - left);
            let b = left.min(batch);
            match p.ais.run(&p.flow, &OnDevice::for_points_on(p.target.density(), p.flow.device()), b, rng) {
                Ok(o) => match fab_core::to_f64_vec(&o.x) {
                    Ok(x) => out.extend(WeightedSamples { x, dim, log_w: o.log_w_f64, n_drawn: b }),
                    Err(e) => {
                        failure = Some(TrainError::from(e));
                        break;
                    }
                },
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            }
            left -= b;
        }
        p.ais.set_p_target(was_p);
        p.ais.set_eval_mode(was_eval);
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

impl Model for FabSampler {
    fn dim(&self) -> usize {
        self.parts.flow.base().dim()
    }

    fn dtype(&self) -> candle_core::DType {
        self.parts.flow.dtype()
    }

    fn draw(&mut self, n: usize, rng: &mut dyn RngCore) -> fab_sampler::Result<Draws> {
        Ok(self.flow_draws(n, rng)?)
    }

    fn log_prob(&self, x: &[f64]) -> Option<fab_sampler::Result<Vec<f64>>> {
        let flow = &self.parts.flow;
        Some(fab_sampler::log_prob_host(&OnDevice::new(flow, flow.device().clone()), x, flow.base().dim(), flow.dtype()))
    }
}

impl Sampler for FabSampler {
    type Stats = FabStats;

    fn target(&self) -> Arc<dyn Target> {
        self.parts.target.clone()
    }

    fn step(&mut self) -> fab_sampler::Result<StepReport<FabStats>> {
        if self.parts.buffer.as_ref().is_some_and(|b| !b.can_sample()) {
            self.parts.fill_buffer()?;
        }
        let mut report = StepReport::empty();
        let mut acc = Accumulator::default();
        self.objective.iterate(&mut self.parts, &mut report, &mut acc)?;
        acc.finish(&mut report);
        report.lr = self.parts.optim.learning_rate();
        report.stats.n_target_calls = self.parts.target_calls;
        Ok(report)
    }

    fn own_metrics(&self, metrics: &mut fab_sampler::Metrics) {
        if let Some(c) = self.parts.target_calls {
            metrics.insert("n_target_calls".into(), c as f64);
        }
    }

    /// `"flow"`: flow samples weighted against p; `"ais"` (primary): AIS toward p.
    fn eval_sets(&mut self, sizes: &EvalSizes, rng: &mut dyn RngCore) -> fab_sampler::Result<Vec<NamedSamples>> {
        let dtype = self.parts.flow.dtype();
        let flow = self.flow_draws(sizes.n_samples, rng)?.weigh(self.parts.target.density(), dtype)?;
        let ais = self.ais_toward_p(sizes.n_refined_samples, sizes.refined_batch, rng)?;
        Ok(vec![
            NamedSamples { name: "flow".into(), samples: flow, primary: false },
            NamedSamples { name: "ais".into(), samples: ais, primary: true },
        ])
    }

    fn extra_points(&self, max: usize) -> Vec<(String, Vec<f64>)> {
        match &self.parts.buffer {
            Some(b) => {
                let d = b.dim();
                let n = b.len().min(max);
                vec![("buffer".into(), b.x()[..n * d].to_vec())]
            }
            None => Vec::new(),
        }
    }

    fn save_state(&self, dir: &Path) -> fab_sampler::Result<()> {
        let p = &self.parts;
        p.flow.save(&dir.join("flow.safetensors")).map_err(TrainError::from)?;
        p.optim.save(&dir.join("optimizer.safetensors")).map_err(TrainError::from)?;
        if let Some(b) = &p.buffer {
            b.save(&dir.join("buffer.safetensors")).map_err(TrainError::from)?;
        }
        self.write_fab_state(dir, false)
    }

    fn save_model_state(&self, dir: &Path) -> fab_sampler::Result<()> {
        self.parts.flow.save(&dir.join("flow.safetensors")).map_err(TrainError::from)?;
        self.write_fab_state(dir, true)
    }

    fn load_state(&mut self, dir: &Path) -> fab_sampler::Result<()> {
        let path = dir.join("fab.json");
        let text = std::fs::read_to_string(&path).map_err(|e| fab_sampler::Error::io(&path, e))?;
        let state: FabState = serde_json::from_str(&text)?;
        if state.version != 1 {
            return Err(fab_sampler::Error::Checkpoint(format!("{}: unsupported version {}", path.display(), state.version)));
        }
        let p = &mut self.parts;
        p.flow.load(&dir.join("flow.safetensors")).map_err(TrainError::from)?;
        // An exported model has no optimiser or buffer: they stay as built (fresh), which
        // sampling and evaluation never read; the run driver refuses to resume such a model.
        if !state.model_only {
            p.optim.load(&dir.join("optimizer.safetensors")).map_err(TrainError::from)?;
            if p.buffer.is_some() {
                p.buffer = Some(PrioritisedBuffer::load(&dir.join("buffer.safetensors")).map_err(TrainError::from)?);
            }
        }
        p.ais.load_state(state.ais).map_err(TrainError::from)?;
        p.rng = state.rng;
        p.grad_steps = state.grad_steps;
        p.target_calls = state.target_calls;
        Ok(())
    }
}
