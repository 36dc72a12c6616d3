//! The training loop: FAB with and without the prioritised buffer and the baselines, with
//! checkpoints that make an interrupted-and-resumed run end with the same parameters as an
//! uninterrupted one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use fab_ais::{Ais, AisOutput, AisState};
use fab_buffer::PrioritisedBuffer;
use fab_core::stats::normalized_weights;
use fab_core::{FabRng, Grads, LogDensity, OnDevice, Proposal};
use fab_flows::FlowModel;
use serde::{Deserialize, Serialize};

use crate::config::{ExperimentConfig, LossKind};
use crate::eval::{evaluate, EvalSamples, EvalSizes, Metrics};
use crate::optim::{Adam, StepOutcome};
use crate::target::Target;
use crate::{Result, TrainError};

/// RNG stream of the training loop (AIS, buffer sampling, flow samples for the losses).
pub const TRAIN_STREAM: u64 = 1;
/// RNG stream of the evaluations (kept apart so evaluations never change the training path).
pub const EVAL_STREAM: u64 = 2;

/// What one training iteration did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IterInfo {
    /// Iteration number (1-based).
    pub iteration: usize,
    /// Mean loss over the iteration's gradient steps (NaN if all were skipped).
    pub loss: f64,
    /// Mean pre-clip gradient norm over applied steps.
    pub grad_norm: f64,
    /// Gradient steps skipped this iteration (non-finite loss or gradient norm).
    pub skipped_steps: usize,
    /// Learning rate of the last step.
    pub lr: f64,
    /// ESS fraction of the AIS batch (FAB losses).
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
    /// Buffer ESS fraction and share of dead (−∞) entries.
    pub buffer_ess: Option<f64>,
    /// Share of buffer entries with weight 0.
    pub buffer_dead_fraction: Option<f64>,
    /// Wall seconds of this iteration.
    pub seconds: f64,
}

/// Saved alongside parameters, optimiser and buffer in every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    version: u32,
    iteration: usize,
    grad_steps: u64,
    skipped_steps: u64,
    elapsed_seconds: f64,
    ais: AisState,
    rng: FabRng,
    eval_rng: FabRng,
}

/// The training loop of one experiment.
#[derive(Debug)]
pub struct Trainer {
    config: ExperimentConfig,
    flow: FlowModel,
    target: Target,
    ais: Ais,
    buffer: Option<PrioritisedBuffer>,
    optim: Adam,
    rng: FabRng,
    eval_rng: FabRng,
    iteration: usize,
    grad_steps: u64,
    skipped_steps: u64,
    elapsed_seconds: f64,
    n_iterations: usize,
    /// The replica-exchange reference of alanine dipeptide (loaded once, for evaluations).
    aldp_reference: Option<crate::aldp_eval::AldpReference>,
}

impl Trainer {
    /// Builds flow, target, AIS, buffer and optimiser from a validated configuration.
    pub fn new(config: ExperimentConfig) -> Result<Self> {
        config.validate()?;
        let target = config.target.build(config.precision.dtype(), &Device::Cpu)?;
        Self::build(config, target)
    }

    /// Trains on your own (unnormalised) log-density instead of the configured target: the
    /// `[target]` section is ignored, `flow.dim` must equal `density.dim()`, and losses that
    /// need exact samples (forward KL) are refused.
    ///
    /// ```no_run
    /// use fab_core::FnDensity;
    /// use fab_train::{ExperimentConfig, Trainer};
    /// // A banana-shaped 2-D density.
    /// let banana = FnDensity::new(2, |x: &candle_core::Tensor| {
    ///     let a = x.narrow(1, 0, 1)?.squeeze(1)?;
    ///     let b = x.narrow(1, 1, 1)?.squeeze(1)?;
    ///     let bend = (b - (a.sqr()? * 0.5)?)?;
    ///     (a.sqr()? * -0.125)? - (bend.sqr()? * 2.0)?
    /// });
    /// let cfg = ExperimentConfig::from_toml_with_overrides("", &["train.n_iterations=500".into()])?;
    /// let mut trainer = Trainer::with_target(cfg, Box::new(banana))?;
    /// while !trainer.is_finished() {
    ///     trainer.step()?;
    /// }
    /// # Ok::<(), fab_train::TrainError>(())
    /// ```
    pub fn with_target(mut config: ExperimentConfig, density: Box<dyn LogDensity>) -> Result<Self> {
        if config.flow.dim() != density.dim() {
            return Err(TrainError::Config(format!("flow.dim = {} differs from the density's dimension {}", config.flow.dim(), density.dim())));
        }
        if config.train.loss == LossKind::ForwardKl {
            return Err(TrainError::Config("train.loss = \"forward_kl\" needs exact target samples, which a custom density does not provide".into()));
        }
        // Validate everything but the ignored target section, which gets a placeholder of the
        // right dimension.
        let d = config.flow.dim();
        config.target = crate::TargetConfig::Gmm {
            mixture: Some(fab_targets::gmm::GmmConfig {
                dim: d,
                means: vec![vec![0.0; d]],
                scales: fab_targets::gmm::GmmScales::Shared(1.0),
                weights: None,
                log_prob_floor: f64::NEG_INFINITY,
            }),
        };
        config.train.filter_chirality = false;
        config.validate()?;
        Self::build(config, Target::Custom(density))
    }

    fn build(config: ExperimentConfig, target: Target) -> Result<Self> {
        let dtype = config.precision.dtype();
        let device = config.open_device()?;
        let flow = config.flow.build(config.seed, dtype, &device)?;
        let ais = Ais::new(config.ais.clone())?;
        let buffer = if config.train.loss == LossKind::FabBuffer {
            Some(config.buffer.init(target.dim())?)
        } else {
            None
        };
        let optim = Adam::new(flow.params(), config.train.optimizer.clone())?;
        let n_iterations = config.n_iterations();
        let aldp_reference = match &target {
            Target::Aldp(_) => match crate::aldp_eval::load_reference() {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("note: alanine-dipeptide reference not loaded ({e}); KL metrics are skipped");
                    None
                }
            },
            _ => None,
        };
        Ok(Self {
            aldp_reference,
            rng: fab_core::seeded_rng(config.seed, TRAIN_STREAM),
            eval_rng: fab_core::seeded_rng(config.seed, EVAL_STREAM),
            config,
            flow,
            target,
            ais,
            buffer,
            optim,
            iteration: 0,
            grad_steps: 0,
            skipped_steps: 0,
            elapsed_seconds: 0.0,
            n_iterations,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ExperimentConfig {
        &self.config
    }

    /// The flow being trained.
    pub fn flow(&self) -> &FlowModel {
        &self.flow
    }

    /// Chooses the flow's implementation: [`Backend::Candle`](fab_flows::Backend) runs the
    /// device-generic candle path (the one a GPU uses) on the CPU too, e.g. to compare the two.
    pub fn set_flow_backend(&mut self, backend: fab_flows::Backend) {
        self.flow.set_backend(backend);
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The replay buffer (FAB with buffer only).
    pub fn buffer(&self) -> Option<&PrioritisedBuffer> {
        self.buffer.as_ref()
    }

    /// The alanine-dipeptide reference samples, if this run's target is alanine dipeptide and
    /// the shipped reference could be loaded.
    pub fn aldp_reference(&self) -> Option<&crate::aldp_eval::AldpReference> {
        self.aldp_reference.as_ref()
    }

    /// The AIS sampler (with its adapted step sizes).
    pub fn ais(&self) -> &Ais {
        &self.ais
    }

    /// Completed iterations.
    pub fn iteration(&self) -> usize {
        self.iteration
    }

    /// Total iterations of the run.
    pub fn n_iterations(&self) -> usize {
        self.n_iterations
    }

    /// Gradient steps skipped so far (non-finite loss or gradient norm).
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_steps
    }

    /// Training wall time so far, over all resumed segments.
    pub fn elapsed_seconds(&self) -> f64 {
        self.elapsed_seconds
    }

    /// Whether all iterations are done.
    pub fn is_finished(&self) -> bool {
        self.iteration >= self.n_iterations
    }

    /// Iterations (1-based) after which training-time evaluations run: `linspace(1, N, n_evals)`
    /// rounded down, as the reference.
    pub fn eval_iterations(&self) -> Vec<usize> {
        let (n, k) = (self.n_iterations, self.config.eval.n_evals);
        let mut v: Vec<usize> = match k {
            0 => Vec::new(),
            1 => vec![n],
            _ => (0..k).map(|i| (1.0 + (n as f64 - 1.0) * i as f64 / (k - 1) as f64).floor() as usize).collect(),
        };
        v.dedup();
        v
    }

    /// Runs AIS with the training target (p^α q^{1−α}).
    fn ais_pass(&mut self) -> Result<AisOutput> {
        let b = self.config.train.batch_size;
        // Targets are evaluated on the host; AIS runs on the flow's device.
        let target = OnDevice::new(self.target.density(), Device::Cpu);
        Ok(self.ais.run(&self.flow, &target, b, &mut self.rng)?)
    }

    /// AIS samples that go into the buffer, L-form filtered for ALDP when configured.
    fn buffer_entries(&self, out: &AisOutput) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let x = fab_core::to_f64_vec(&out.x)?;
        let lq = fab_core::to_f64_vec(&out.log_q)?;
        let lw = out.log_w_f64.clone();
        if !self.config.train.filter_chirality {
            return Ok((x, lw, lq));
        }
        let d = self.target.dim();
        let n = lw.len();
        let keep: Vec<bool> = (0..n)
            .map(|i| fab_targets::aldp::is_l_form(&x[i * d..(i + 1) * d]).unwrap_or(false))
            .collect();
        // Reference rule: filter only if more than 10 % of the batch is L-form.
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

    /// Fills the buffer with AIS passes until it can be sampled (SPEC §7 "Init").
    pub fn fill_buffer(&mut self) -> Result<usize> {
        let mut passes = 0;
        while self.buffer.as_ref().is_some_and(|b| !b.can_sample()) {
            let out = self.ais_pass()?;
            let (x, lw, lq) = self.buffer_entries(&out)?;
            self.buffer.as_mut().expect("checked").add_host(&x, &lw, &lq)?;
            passes += 1;
        }
        Ok(passes)
    }

    fn optimiser_step(&mut self, grads: Option<Grads>, loss: f64) -> Result<StepOutcome> {
        let lr = self.config.train.lr_schedule.lr_at(self.config.train.optimizer.lr, self.grad_steps);
        self.optim.set_learning_rate(lr)?;
        self.grad_steps += 1;
        let outcome = match grads {
            Some(mut g) if loss.is_finite() => self.optim.step_clipped(self.flow.params(), &mut g, self.config.train.max_grad_norm)?,
            _ => StepOutcome::SkippedNonFiniteLoss { loss },
        };
        if !outcome.applied() {
            self.skipped_steps += 1;
        }
        Ok(outcome)
    }

    /// One training iteration.
    pub fn step(&mut self) -> Result<IterInfo> {
        let t0 = Instant::now();
        if self.buffer.is_some() && !self.buffer.as_ref().expect("some").can_sample() {
            self.fill_buffer()?;
        }
        let mut info = IterInfo { iteration: self.iteration + 1, ..IterInfo::default() };
        let mut losses = Vec::new();
        let mut norms = Vec::new();
        let alpha = self.config.ais.alpha;
        let b = self.config.train.batch_size;
        let dtype = self.flow.dtype();
        let device = self.flow.device().clone();
        match self.config.train.loss {
            LossKind::FabBuffer => {
                let out = self.ais_pass()?;
                record_ais(&mut info, &out, &self.ais);
                let (x, lw, lq) = self.buffer_entries(&out)?;
                let l = self.config.train.n_updates_per_ais;
                let clip = self.config.train.w_adjust_max_clip;
                let buffer = self.buffer.as_mut().expect("buffer loss has a buffer");
                buffer.add_host(&x, &lw, &lq)?;
                let batches = buffer.sample_batches(b, l, dtype, &device, &mut self.rng)?;
                for batch in batches {
                    let mut loss = f64::NAN;
                    let buffer = self.buffer.as_mut().expect("buffer");
                    let (_, grads) = self.flow.log_prob_backward_with(&batch.x, &mut |lq| {
                        let adj = buffer.adjust(&batch.indices, lq, alpha, clip).map_err(|e| fab_core::Error::invalid(e.to_string()))?;
                        let n = lq.len() as f64;
                        let coef: Vec<f64> = adj.loss_weights.iter().map(|w| -w / n).collect();
                        loss = coef.iter().zip(lq).map(|(c, q)| c * q).sum();
                        Ok(loss.is_finite().then_some(coef))
                    })?;
                    let outcome = self.optimiser_step(grads, loss)?;
                    push_outcome(&outcome, loss, &mut losses, &mut norms, &mut info);
                }
                let buffer = self.buffer.as_ref().expect("buffer");
                info.buffer_ess = Some(buffer.ess());
                info.buffer_dead_fraction = Some(buffer.dead_fraction());
            }
            LossKind::FabNoBuffer => {
                let out = self.ais_pass()?;
                record_ais(&mut info, &out, &self.ais);
                let w = normalized_weights(&out.log_w_f64);
                let n = w.len() as f64;
                let coef: Vec<f64> = w.iter().map(|v| -alpha.signum() * v / n).collect();
                let (lq, grads) = self.flow.log_prob_backward(&out.x, &coef)?;
                let loss: f64 = coef.iter().zip(fab_core::to_f64_vec(&lq)?).map(|(c, q)| c * q).sum();
                let outcome = self.optimiser_step(Some(grads), loss)?;
                push_outcome(&outcome, loss, &mut losses, &mut norms, &mut info);
            }
            LossKind::ForwardKl => {
                let x = self.target.sample(b, &mut self.rng)?.to_dtype(dtype)?.to_device(&device)?;
                let coef = vec![-1.0 / b as f64; b];
                let (lq, grads) = self.flow.log_prob_backward(&x, &coef)?;
                let loss = -fab_core::to_f64_vec(&lq)?.iter().sum::<f64>() / b as f64;
                let outcome = self.optimiser_step(Some(grads), loss)?;
                push_outcome(&outcome, loss, &mut losses, &mut norms, &mut info);
            }
            LossKind::Alpha2Nis => {
                // Neural importance sampling: ∇ = −E_q[(p/q)² ∇_θ log q_θ(x)] at fixed samples
                // (the score-function form; see docs/RESULTS.md for how this differs from the
                // reference, which keeps the reparameterisation path of x).
                let (x, lq0) = self.flow.sample_and_log_prob(b, &mut self.rng)?;
                let lp = fab_core::to_f64_vec(&OnDevice::new(self.target.density(), Device::Cpu).log_prob(&x)?)?;
                let lq0 = fab_core::to_f64_vec(&lq0)?;
                let coef: Vec<f64> = lp.iter().zip(&lq0).map(|(p, q)| -(2.0 * (p - q)).exp() / b as f64).collect();
                let (lq, grads) = self.flow.log_prob_backward(&x, &coef)?;
                let loss: f64 = coef.iter().zip(fab_core::to_f64_vec(&lq)?).map(|(c, q)| c * q).sum();
                let outcome = self.optimiser_step(Some(grads), loss)?;
                push_outcome(&outcome, loss, &mut losses, &mut norms, &mut info);
            }
            LossKind::ReverseKl => {
                let (x, lq) = self.flow.sample_t(b, &mut self.rng, true)?;
                let (lp, g) = OnDevice::new(self.target.density(), Device::Cpu).log_prob_and_grad(&x.detach())?;
                let value = fab_core::to_f64_vec(&(&lq - &lp)?)?.iter().sum::<f64>() / b as f64;
                // Surrogate with the gradient of mean(log q − log p): the target enters through
                // its ∇ₓ log p at the reparameterised samples.
                let g = g.to_dtype(x.dtype())?;
                let surrogate = ((lq.sum_all()? - (&x * &g)?.sum_all()?)? / b as f64)?;
                let grads = if value.is_finite() {
                    let store = surrogate.backward()?;
                    Some(self.flow.params().grads_from_store(&store))
                } else {
                    None
                };
                let outcome = self.optimiser_step(grads, value)?;
                push_outcome(&outcome, value, &mut losses, &mut norms, &mut info);
            }
        }
        info.loss = if losses.is_empty() { f64::NAN } else { losses.iter().sum::<f64>() / losses.len() as f64 };
        info.grad_norm = if norms.is_empty() { f64::NAN } else { norms.iter().sum::<f64>() / norms.len() as f64 };
        info.lr = self.optim.learning_rate();
        self.iteration += 1;
        let dt = t0.elapsed().as_secs_f64();
        self.elapsed_seconds += dt;
        info.seconds = dt;
        Ok(info)
    }

    /// Evaluates with the training-time sizes (`final_eval` = the paper's final sizes).
    pub fn evaluate(&mut self, final_eval: bool) -> Result<(Metrics, EvalSamples)> {
        let e = &self.config.eval;
        let sizes = EvalSizes {
            n_samples: if final_eval { e.final_batch_size } else { e.batch_size },
            n_ais_samples: if final_eval { e.final_ais_batch_size.unwrap_or(e.final_batch_size) } else { e.batch_size },
            ais_batch: e.inner_batch_size,
            n_test: e.n_test,
            n_mode_samples: e.n_mode_samples,
            mae_repeats: if final_eval { e.mae_repeats } else { 0 },
        };
        let (mut m, s) = evaluate(&self.flow, &self.target, &mut self.ais, &sizes, self.aldp_reference.as_ref(), &mut self.eval_rng)?;
        m.insert("iteration".into(), self.iteration as f64);
        m.insert("skipped_steps".into(), self.skipped_steps as f64);
        m.insert("train_seconds".into(), self.elapsed_seconds);
        Ok((m, s))
    }

    /// Writes a checkpoint into `dir` (created; written to a temporary name, then renamed).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let tmp = dir.with_extension("partial");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        self.flow.save(&tmp.join("flow.safetensors"))?;
        self.optim.save(&tmp.join("optimizer.safetensors"))?;
        if let Some(b) = &self.buffer {
            b.save(&tmp.join("buffer.safetensors"))?;
        }
        let state = TrainerState {
            version: 1,
            iteration: self.iteration,
            grad_steps: self.grad_steps,
            skipped_steps: self.skipped_steps,
            elapsed_seconds: self.elapsed_seconds,
            ais: self.ais.state(),
            rng: self.rng.clone(),
            eval_rng: self.eval_rng.clone(),
        };
        let path = tmp.join("state.json");
        std::fs::write(&path, serde_json::to_string_pretty(&state)?).map_err(|e| TrainError::io(&path, e))?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))?;
        Ok(())
    }

    /// Restores the state saved by [`save_checkpoint`](Self::save_checkpoint).
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("state.json");
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        let state: TrainerState = serde_json::from_str(&text)?;
        if state.version != 1 {
            return Err(TrainError::Checkpoint(format!("{}: unsupported version {}", path.display(), state.version)));
        }
        self.flow.load(&dir.join("flow.safetensors"))?;
        self.optim.load(&dir.join("optimizer.safetensors"))?;
        if self.buffer.is_some() {
            self.buffer = Some(PrioritisedBuffer::load(&dir.join("buffer.safetensors"))?);
        }
        self.ais.load_state(state.ais)?;
        self.rng = state.rng;
        self.eval_rng = state.eval_rng;
        self.iteration = state.iteration;
        self.grad_steps = state.grad_steps;
        self.skipped_steps = state.skipped_steps;
        self.elapsed_seconds = state.elapsed_seconds;
        Ok(())
    }

    /// Samples the flow (host copies of `[n, d]` points and log q).
    pub fn sample_flow(&mut self, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        crate::eval::flow_samples(&self.flow, n, &mut self.eval_rng)
    }

    /// Host copy of the current buffer contents (points only), for plots.
    pub fn buffer_points(&self, max: usize) -> Vec<f64> {
        match &self.buffer {
            Some(b) => {
                let d = b.dim();
                let n = b.len().min(max);
                b.x()[..n * d].to_vec()
            }
            None => Vec::new(),
        }
    }

    /// Directory of the checkpoint after `iteration` under `out`.
    pub fn checkpoint_dir(out: &Path, iteration: usize) -> PathBuf {
        out.join("checkpoints").join(format!("iter_{iteration:08}"))
    }

    /// A flow sample tensor of `n` points (for `fab sample`).
    pub fn sample_tensor(&mut self, n: usize) -> Result<(Tensor, Tensor)> {
        Ok(self.flow.sample_and_log_prob(n, &mut self.eval_rng)?)
    }
}

fn record_ais(info: &mut IterInfo, out: &AisOutput, ais: &Ais) {
    info.ess_ais = Some(out.ess);
    info.ess_flow = Some(out.ess_base);
    info.log_z_ais = Some(out.log_z_estimate);
    info.ais_dropped = Some(out.n_dropped());
    if let (Some(f), Some(l)) = (out.levels.first(), out.levels.last()) {
        info.accept_first_last = Some((f.acceptance_rate, l.acceptance_rate));
    }
    let n = ais.config().n_intermediate;
    if n > 0 {
        if let (Ok(a), Ok(b)) = (ais.step_size(0), ais.step_size(n - 1)) {
            info.step_size_first_last = Some((a, b));
        }
    }
}

fn push_outcome(outcome: &StepOutcome, loss: f64, losses: &mut Vec<f64>, norms: &mut Vec<f64>, info: &mut IterInfo) {
    match outcome {
        StepOutcome::Applied { grad_norm } => {
            losses.push(loss);
            norms.push(*grad_norm);
        }
        _ => info.skipped_steps += 1,
    }
}
