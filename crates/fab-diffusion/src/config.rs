//! The configuration of a diffusion-sampler run (family `"diffusion"`): target, process,
//! network, objective, training loop, buffer, local search, teacher and evaluation sections
//! (`docs/DIFFUSION.md`, "Configurations").

use candle_core::DType;
use fab_mcmc::{MalaConfig, MalaSchedule};
use fab_sampler::{EvalSizes, FamilyConfig, MemoryEstimate, RunSettings};
use fab_targets::TargetConfig;
use serde::{Deserialize, Serialize};

use crate::model::{ModelSpec, OptimSpec};
use crate::net::{Arch, NetShape};
use crate::objectives::Objective;
use crate::process::Process;
use crate::sampler::DiffusionSampler;
use crate::{Error, Result};

/// The value of `family` in diffusion-sampler configurations.
pub const FAMILY: &str = "diffusion";

fn err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

fn positive(key: &str, v: f64) -> Result<()> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(err(format!("{key} = {v}: must be a positive number")))
    }
}

fn non_negative(key: &str, v: f64) -> Result<()> {
    if v >= 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(err(format!("{key} = {v}: must be a number ≥ 0")))
    }
}

/// `[process]`: the discretisation and the policy's parametrisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessSection {
    /// Steps T.
    pub n_steps: usize,
    /// σ² per unit time (`t_scale`).
    pub t_scale: f64,
    /// Learned variance log σ_i² = log σ² + 4·tanh(raw).
    pub learned_variance: bool,
    /// Langevin parametrisation of the drift.
    pub langevin: bool,
    /// Clip the score (NaN → 0) and the drift.
    pub clipping: bool,
    /// Score clip (with `clipping`).
    pub score_clip: f64,
    /// Drift clip (with `clipping`).
    pub drift_clip: f64,
}

impl Default for ProcessSection {
    fn default() -> Self {
        Self { n_steps: 100, t_scale: 1.0, learned_variance: false, langevin: false, clipping: true, score_clip: 100.0, drift_clip: 1e4 }
    }
}

/// `[net]`: the drift network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetSection {
    /// `"pis"` (Sendera et al.'s runs) or `"at"` (the Adaptive-Teachers default).
    pub arch: Arch,
    /// Hidden width.
    pub hidden: usize,
    /// Time harmonics H.
    pub harmonics: usize,
    /// Hidden width of the Langevin scale network.
    pub langevin_hidden: usize,
}

impl Default for NetSection {
    fn default() -> Self {
        Self { arch: Arch::Pis, hidden: 64, harmonics: 64, langevin_hidden: 64 }
    }
}

/// `[objective]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveSection {
    /// `"tb"`, `"vargrad"`, `"db"`, `"subtb"` or `"pis"`.
    pub kind: String,
    /// λ of SubTB.
    pub subtb_lambda: f64,
    /// Forward-looking log-flows (DB, SubTB).
    pub forward_looking: bool,
}

impl Default for ObjectiveSection {
    fn default() -> Self {
        Self { kind: "tb".into(), subtb_lambda: 2.0, forward_looking: true }
    }
}

impl ObjectiveSection {
    /// The objective.
    pub fn objective(&self) -> Result<Objective> {
        Ok(match self.kind.as_str() {
            "tb" => Objective::Tb,
            "vargrad" => Objective::VarGrad,
            "db" => Objective::Db,
            "subtb" => Objective::SubTb { lambda: self.subtb_lambda },
            "pis" => Objective::Pis,
            other => return Err(err(format!("objective.kind = \"{other}\": expected one of tb, vargrad, db, subtb, pis"))),
        })
    }
}

/// `[train]`: the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// `"on_policy"`, `"sendera"` (forward + backward from the buffer, with local search),
    /// `"per"` (Adaptive-Teachers prioritised replay) or `"teacher"`.
    pub schedule: String,
    /// Iterations (each one gradient step of the sampler).
    pub n_iterations: usize,
    /// Paths per iteration.
    pub batch_size: usize,
    /// The batch's paths are split into this many chunks, each walked and differentiated on its
    /// own thread when the thread pool has one free; their gradients are summed. The numbers
    /// depend on this key (1: one graph for the whole batch), never on the thread count. A
    /// program using this crate with k > 1 should set `RAYON_NUM_THREADS=1` once its pool is
    /// built, as `fab` does: candle's matrix product otherwise nests its own threads inside the
    /// chunks, which was slower than one thread (`docs/DIFFUSION.md`, "Two threads").
    pub path_chunks: usize,
    /// Policy learning rate.
    pub lr: f64,
    /// Learning rate of the flow group: log Z and, for DB and SubTB, the log-flow head (the
    /// reference code's `lr_flow`).
    pub lr_log_z: f64,
    /// L2 weight decay of the policy.
    pub weight_decay: f64,
    /// Global gradient-norm clip of the policy (≤ 0: none).
    pub clip_grad_norm: f64,
    /// Iterations at which every learning rate is multiplied by `lr_gamma`.
    pub lr_milestones: Vec<usize>,
    /// Factor of the multi-step schedule.
    pub lr_gamma: f64,
    /// Exploration standard deviation e at iteration 0 (0: none).
    pub exploration: f64,
    /// e decays linearly to 0 at this iteration.
    pub exploration_decay_iterations: usize,
    /// Checkpoint every this many iterations (0: only at stops and the end).
    pub checkpoint_every: usize,
    /// Also checkpoint after this many minutes.
    pub checkpoint_minutes: Option<f64>,
    /// Keep this many newest checkpoints and delete older ones (0: keep all; the newest is always
    /// kept, so the run can be resumed).
    pub checkpoint_keep_last: usize,
    /// With `checkpoint_keep_last`, also keep every checkpoint whose iteration is a multiple of
    /// this (0: none), for `fab eval --iteration N` part-way.
    pub checkpoint_keep_every: usize,
    /// Stop with a checkpoint after this many hours of training time (the iterations' own time
    /// over all resumed segments; evaluations and checkpoints do not count).
    pub time_limit_hours: Option<f64>,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            schedule: "on_policy".into(),
            n_iterations: 25_000,
            batch_size: 300,
            path_chunks: 1,
            lr: 1e-3,
            lr_log_z: 0.1,
            weight_decay: 0.0,
            clip_grad_norm: 0.0,
            lr_milestones: Vec::new(),
            lr_gamma: 0.1,
            exploration: 0.0,
            exploration_decay_iterations: 5000,
            checkpoint_every: 0,
            checkpoint_minutes: Some(10.0),
            checkpoint_keep_last: 0,
            checkpoint_keep_every: 0,
            time_limit_hours: None,
        }
    }
}

/// `[buffer]`: the replay buffer of the off-policy schedules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferSection {
    /// Capacity (FIFO eviction).
    pub capacity: usize,
    /// k of the rank weights 1/(k·N + rank).
    pub rank_k: f64,
}

impl Default for BufferSection {
    fn default() -> Self {
        Self { capacity: 600_000, rank_k: 0.01 }
    }
}

/// `[local_search]`: MALA on buffer points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSearchSection {
    /// Run local search (schedules `sendera` and `per`).
    pub enabled: bool,
    /// Every this many iterations (at iterations ≡ 1 mod `every`).
    pub every: usize,
    /// MALA iterations K.
    pub n_iterations: usize,
    /// Burn-in before accepted points are collected.
    pub burn_in: usize,
    /// Initial step η₀.
    pub step: f64,
    /// Target acceptance rate.
    pub target_accept: f64,
    /// `"code"` (×1.01/×0.99 on the last 5 iterations' rate) or `"paper"` (×1.1/×0.9).
    pub schedule: MalaSchedule,
}

impl Default for LocalSearchSection {
    fn default() -> Self {
        Self {
            enabled: false,
            every: 100,
            n_iterations: 200,
            burn_in: 100,
            step: 0.001,
            target_accept: 0.574,
            schedule: MalaSchedule::Code,
        }
    }
}

impl LocalSearchSection {
    /// The MALA settings.
    pub fn mala(&self) -> MalaConfig {
        MalaConfig {
            n_iterations: self.n_iterations,
            burn_in: self.burn_in,
            step: self.step,
            target_accept: self.target_accept,
            schedule: self.schedule,
        }
    }
}

/// `[teacher]`: the Adaptive Teacher (schedule `teacher`; its reward also gives the PER
/// priorities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherSection {
    /// Teacher policy learning rate.
    pub lr: f64,
    /// Teacher log Z learning rate.
    pub lr_log_z: f64,
    /// Teacher gradient-norm clip (≤ 0: none).
    pub clip_grad_norm: f64,
    /// C of log(C + w·½δ²).
    pub c: f64,
    /// w when the student under-estimates (δ = −Δ > 0).
    pub weight_positive: f64,
    /// w otherwise.
    pub weight_negative: f64,
    /// Weight α of log R mixed into the teacher's log-reward.
    pub alpha: f64,
    /// Quantile of the initial student samples' log R below which the teacher's reward is
    /// floored (and below which PER does not insert).
    pub threshold_quantile: f64,
    /// Teacher samples enter the buffer at iterations ≡ 1 mod (2·adv_freq).
    pub adv_freq: usize,
}

impl Default for TeacherSection {
    fn default() -> Self {
        Self {
            lr: 5e-3,
            lr_log_z: 0.1,
            clip_grad_norm: 0.1,
            c: 1.001,
            weight_positive: 20.0,
            weight_negative: 1.0,
            alpha: 0.5,
            threshold_quantile: 0.9,
            adv_freq: 2,
        }
    }
}

/// `[eval]`: evaluation sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Evaluations during training.
    pub n_evals: usize,
    /// Model paths per training-time evaluation (log Ẑ, log Ẑ^RW, ESS, W2, MMD).
    pub n_samples: usize,
    /// Model paths in the final evaluation.
    pub final_n_samples: usize,
    /// Exact samples for EUBO and W2/MMD (capped by the model sample count for W2).
    pub n_exact: usize,
    /// Exact points for the mean log-likelihood bound.
    pub n_likelihood_points: usize,
    /// Backward paths per point for the mean log-likelihood bound.
    pub likelihood_paths: usize,
    /// Points in the exact W2 assignment (O(n³)).
    pub n_w2: usize,
    /// Write PNG plots after the final evaluation.
    pub plots: bool,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            n_evals: 10,
            n_samples: 2000,
            final_n_samples: 10_000,
            n_exact: 2000,
            n_likelihood_points: 500,
            likelihood_paths: 10,
            n_w2: 2000,
            plots: true,
        }
    }
}

/// Precision of the networks and paths (`dtype = "f32"`, the default of this family, or `"f64"`).
pub use fab_core::Precision;

/// A diffusion-sampler run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionConfig {
    /// Always `"diffusion"`.
    pub family: String,
    /// Run label.
    #[serde(default = "default_name")]
    pub name: String,
    /// Seed of every random stream.
    #[serde(default)]
    pub seed: u64,
    /// Precision of the networks and target evaluations.
    #[serde(default = "default_precision")]
    pub dtype: Precision,
    /// Target.
    #[serde(default = "default_target")]
    pub target: TargetConfig,
    /// Process.
    #[serde(default)]
    pub process: ProcessSection,
    /// Network.
    #[serde(default)]
    pub net: NetSection,
    /// Objective.
    #[serde(default)]
    pub objective: ObjectiveSection,
    /// Training loop.
    #[serde(default)]
    pub train: TrainSection,
    /// Replay buffer.
    #[serde(default)]
    pub buffer: BufferSection,
    /// Local search.
    #[serde(default)]
    pub local_search: LocalSearchSection,
    /// Teacher.
    #[serde(default)]
    pub teacher: TeacherSection,
    /// Evaluation.
    #[serde(default)]
    pub eval: EvalSection,
}

fn default_name() -> String {
    "diffusion".into()
}

fn default_precision() -> Precision {
    Precision::F32
}

fn default_target() -> TargetConfig {
    TargetConfig::Gmm25 {}
}

const SCHEDULES: [&str; 4] = ["on_policy", "sendera", "per", "teacher"];

impl DiffusionConfig {
    /// The candle dtype.
    pub fn dtype(&self) -> DType {
        self.dtype.dtype()
    }

    /// The student's model specification.
    pub fn model_spec(&self) -> Result<ModelSpec> {
        let p = &self.process;
        let objective = self.objective.objective()?;
        Ok(ModelSpec {
            process: Process { dim: self.target.dim(), n_steps: p.n_steps, t_scale: p.t_scale },
            shape: NetShape {
                arch: self.net.arch,
                dim: self.target.dim(),
                hidden: self.net.hidden,
                harmonics: self.net.harmonics,
                flow_head: objective.needs_flows(),
            },
            learned_variance: p.learned_variance,
            langevin: p.langevin.then_some(self.net.langevin_hidden),
            clip: p.clipping.then_some((p.score_clip, p.drift_clip)),
            forward_looking: self.objective.forward_looking,
            dtype: self.dtype(),
        })
    }

    /// The student's optimiser settings.
    pub fn optim_spec(&self) -> OptimSpec {
        let t = &self.train;
        OptimSpec {
            lr: t.lr,
            lr_log_z: t.lr_log_z,
            weight_decay: t.weight_decay,
            clip: (t.clip_grad_norm > 0.0).then_some(t.clip_grad_norm),
        }
    }

    /// The multi-step learning-rate factor at iteration `it` (0-based).
    pub fn lr_factor(&self, it: usize) -> f64 {
        let k = self.train.lr_milestones.iter().filter(|&&m| it >= m).count();
        self.train.lr_gamma.powi(k as i32)
    }

    /// The exploration standard deviation at iteration `it` (0-based).
    pub fn exploration_at(&self, it: usize) -> f64 {
        let t = &self.train;
        if t.exploration == 0.0 || t.exploration_decay_iterations == 0 {
            return t.exploration;
        }
        t.exploration * (1.0 - it as f64 / t.exploration_decay_iterations as f64).max(0.0)
    }

    /// Checks every key; errors name it.
    pub fn validate(&self) -> Result<()> {
        if self.family != FAMILY {
            return Err(err(format!("family = \"{}\": this configuration type is the \"{FAMILY}\" family", self.family)));
        }
        self.target.validate().map_err(|e| err(e.to_string()))?;
        if matches!(self.target, TargetConfig::Aldp(_)) {
            return Err(err(
                "target.type = \"aldp\": the diffusion samplers are not set up for alanine dipeptide (no exact samples for the metrics)",
            ));
        }
        let p = &self.process;
        if p.n_steps == 0 || p.n_steps > 10_000 {
            return Err(err(format!("process.n_steps = {}: must be in 1..=10000", p.n_steps)));
        }
        positive("process.t_scale", p.t_scale)?;
        positive("process.score_clip", p.score_clip)?;
        positive("process.drift_clip", p.drift_clip)?;
        let n = &self.net;
        if n.hidden == 0 || n.harmonics == 0 || n.langevin_hidden == 0 {
            return Err(err("net.hidden, net.harmonics and net.langevin_hidden must be ≥ 1"));
        }
        if n.hidden > 8192 || n.harmonics > 8192 {
            return Err(err("net.hidden and net.harmonics must be ≤ 8192"));
        }
        let objective = self.objective.objective()?;
        positive("objective.subtb_lambda", self.objective.subtb_lambda)?;
        let t = &self.train;
        if !SCHEDULES.contains(&t.schedule.as_str()) {
            return Err(err(format!("train.schedule = \"{}\": expected one of {}", t.schedule, SCHEDULES.join(", "))));
        }
        if t.batch_size == 0 || t.batch_size > 1_000_000 {
            return Err(err(format!("train.batch_size = {}: must be in 1..=1000000", t.batch_size)));
        }
        if t.path_chunks == 0 || t.path_chunks > t.batch_size {
            return Err(err(format!("train.path_chunks = {}: must be in 1..=train.batch_size ({})", t.path_chunks, t.batch_size)));
        }
        // Memory of one batch of paths: (T+1)·B·d values on the host, ~hidden·B·T on the graph.
        let graph = (p.n_steps as f64) * (t.batch_size as f64) * (n.hidden as f64) * 16.0 * 8.0;
        if graph > 64e9 {
            return Err(err(format!(
                "train.batch_size = {} with process.n_steps = {} and net.hidden = {}: the autodiff graph would need ~{:.0} GB",
                t.batch_size,
                p.n_steps,
                n.hidden,
                graph / 1e9
            )));
        }
        positive("train.lr", t.lr)?;
        positive("train.lr_log_z", t.lr_log_z)?;
        non_negative("train.weight_decay", t.weight_decay)?;
        if t.clip_grad_norm.is_nan() {
            return Err(err("train.clip_grad_norm = nan: must be a number (≤ 0 disables clipping)"));
        }
        positive("train.lr_gamma", t.lr_gamma)?;
        non_negative("train.exploration", t.exploration)?;
        fab_sampler::config::check_run_limits(t.checkpoint_minutes, t.time_limit_hours)?;
        fab_sampler::config::check_keep_checkpoints(fab_sampler::KeepCheckpoints {
            last: t.checkpoint_keep_last,
            every: t.checkpoint_keep_every,
        })?;
        if t.n_iterations == 0 {
            return Err(err("train.n_iterations = 0: must be ≥ 1"));
        }
        if objective == Objective::Pis && t.schedule != "on_policy" {
            return Err(err(format!(
                "objective.kind = \"pis\" trains on its own reparameterised paths: train.schedule must be \"on_policy\", got \"{}\"",
                t.schedule
            )));
        }
        if objective == Objective::Pis && t.exploration > 0.0 {
            return Err(err("objective.kind = \"pis\" with train.exploration > 0: PIS differentiates through the policy's own paths"));
        }
        if t.schedule == "teacher" && objective != Objective::Tb {
            return Err(err(
                "train.schedule = \"teacher\" needs objective.kind = \"tb\" (the teacher's reward is the student's TB residual)",
            ));
        }
        let b = &self.buffer;
        if b.capacity == 0 {
            return Err(err("buffer.capacity = 0: must be ≥ 1"));
        }
        positive("buffer.rank_k", b.rank_k)?;
        let ls = &self.local_search;
        if ls.enabled {
            if !matches!(t.schedule.as_str(), "sendera" | "per") {
                return Err(err(format!(
                    "local_search.enabled = true: train.schedule \"{}\" has no local search (sendera and per do)",
                    t.schedule
                )));
            }
            if ls.every == 0 {
                return Err(err("local_search.every = 0: must be ≥ 1"));
            }
            ls.mala().validate().map_err(|e| err(format!("local_search: {e}")))?;
        }
        let tr = &self.teacher;
        positive("teacher.lr", tr.lr)?;
        positive("teacher.lr_log_z", tr.lr_log_z)?;
        positive("teacher.c", tr.c)?;
        non_negative("teacher.weight_positive", tr.weight_positive)?;
        non_negative("teacher.weight_negative", tr.weight_negative)?;
        if !tr.alpha.is_finite() || tr.clip_grad_norm.is_nan() {
            return Err(err("teacher.alpha and teacher.clip_grad_norm must be numbers"));
        }
        if !(tr.threshold_quantile > 0.0 && tr.threshold_quantile < 1.0) {
            return Err(err(format!("teacher.threshold_quantile = {}: must be in (0, 1)", tr.threshold_quantile)));
        }
        if tr.adv_freq == 0 {
            return Err(err("teacher.adv_freq = 0: must be ≥ 1"));
        }
        let e = &self.eval;
        if e.n_evals == 0 || e.n_samples < 2 || e.final_n_samples < 2 || e.n_exact < 2 {
            return Err(err("eval.n_evals must be ≥ 1 and eval.n_samples, eval.final_n_samples, eval.n_exact ≥ 2"));
        }
        if e.likelihood_paths == 0 {
            return Err(err("eval.likelihood_paths = 0: must be ≥ 1"));
        }
        for (key, v) in [("eval.n_samples", e.n_samples), ("eval.final_n_samples", e.final_n_samples), ("eval.n_exact", e.n_exact)] {
            if v > 10_000_000 {
                return Err(err(format!("{key} = {v}: must be ≤ 10⁷")));
            }
        }
        if e.n_w2 > 20_000 {
            return Err(err(format!("eval.n_w2 = {}: the exact assignment is O(n³); use ≤ 20000", e.n_w2)));
        }
        Ok(())
    }
}

impl FamilyConfig for DiffusionConfig {
    type Sampler = DiffusionSampler;

    fn parse(text: &str, overrides: &[String]) -> Result<Self> {
        let cfg: DiffusionConfig = fab_sampler::config::parse_with_overrides(text, overrides)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| err(format!("cannot serialise config: {e}")))
    }

    fn run_settings(&self) -> RunSettings {
        let sizes = |n: usize| EvalSizes {
            n_samples: n,
            n_refined_samples: 0,
            refined_batch: 1,
            n_test: self.eval.n_exact,
            n_mode_samples: n,
            estimator_repeats: 0,
            // W2 and MMD come from the sampler's path metrics (on the exact points its EUBO uses).
            n_w2: 0,
        };
        RunSettings {
            name: self.name.clone(),
            seed: self.seed,
            n_iterations: self.train.n_iterations,
            n_evals: self.eval.n_evals,
            checkpoint_every: self.train.checkpoint_every,
            checkpoint_minutes: self.train.checkpoint_minutes,
            keep_checkpoints: fab_sampler::KeepCheckpoints {
                last: self.train.checkpoint_keep_last,
                every: self.train.checkpoint_keep_every,
            },
            time_limit_hours: self.train.time_limit_hours,
            eval_sizes: sizes(self.eval.n_samples),
            final_eval_sizes: sizes(self.eval.final_n_samples),
            plots: self.eval.plots,
        }
    }

    fn build(&self) -> Result<DiffusionSampler> {
        DiffusionSampler::new(self.clone())
    }

    /// The drift networks (student, and teacher for the teacher schedule) with gradients and
    /// Adam moments; one batched pass over a batch of T-step paths; the replay buffers; and the
    /// evaluation's paths, exact samples and W2 cost matrix.
    fn memory_estimate(&self) -> MemoryEstimate {
        let value = self.dtype().size_in_bytes() as f64;
        let d = self.target.dim() as f64;
        let t = self.process.n_steps as f64;
        let (h, lh, harm) = (self.net.hidden as f64, self.net.langevin_hidden as f64, self.net.harmonics as f64);
        let nets = if self.train.schedule == "teacher" { 2.0 } else { 1.0 };
        let params = 6.0 * (h + 1.0) * h
            + (2.0 * harm + d + 1.0) * h
            + (h + 1.0) * 2.0 * d
            + if self.process.langevin { 3.0 * lh * lh } else { 0.0 };
        // Values per (path, step) row that the backward pass keeps.
        let per_row = 8.0 * h + 2.0 * harm + 4.0 * d + if self.process.langevin { 3.0 * lh + 2.0 * d } else { 0.0 };
        let mut est = MemoryEstimate::new();
        est.add("net.hidden (parameters, gradients and Adam moments)", nets * 4.0 * params * value);
        let b = self.train.batch_size as f64;
        est.add(
            format!(
                "train.batch_size = {} (paths × process.n_steps = {} rows of activations)",
                self.train.batch_size, self.process.n_steps
            ),
            nets * b * t * per_row * value,
        );
        let buffers = if self.local_search.enabled { 2.0 } else { 1.0 };
        est.add(format!("buffer.capacity = {}", self.buffer.capacity), buffers * self.buffer.capacity as f64 * (d + 2.0) * 8.0);
        let ev = &self.eval;
        let n = ev.n_samples.max(ev.final_n_samples) as f64;
        est.add(
            format!("eval.final_n_samples = {} (end points, and one chunk's path log-probabilities)", ev.final_n_samples),
            n * (d + 2.0) * 8.0 + n.min(crate::sampler::DRAW_CHUNK as f64) * 2.0 * t * 8.0,
        );
        est.add(format!("eval.n_exact = {}", ev.n_exact), ev.n_exact as f64 * (d + 2.0 * t) * 8.0);
        let w2 = ev.n_w2.min(ev.n_exact).min(ev.final_n_samples.max(ev.n_samples)) as f64;
        // The assignment solver computes costs on the fly: five vectors of n_w2, no n² matrix.
        est.add(format!("eval.n_w2 = {} (assignment solver)", ev.n_w2), 5.0 * w2 * 8.0);
        est.add(
            format!("eval.n_likelihood_points = {} × eval.likelihood_paths = {}", ev.n_likelihood_points, ev.likelihood_paths),
            ev.n_likelihood_points as f64 * ev.likelihood_paths as f64 * 2.0 * 8.0,
        );
        est
    }

    /// The length (learning-rate milestones and the exploration decay are absolute iterations),
    /// the time limit, the checkpoint intervals and whether to plot.
    fn resume_safe_keys() -> &'static [&'static str] {
        fab_sampler::config::RESUME_SAFE_RUN_KEYS
    }
}
