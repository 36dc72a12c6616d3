//! The configuration of a GFlowNet run (family `"gflownet"`): environment, agent, network,
//! training, buffer, local search, teacher and evaluation sections. Unset sizes follow the
//! reference's rules (`docs/GFLOWNETS.md`, "Configurations").

use std::sync::Arc;

use fab_sampler::{EvalSizes, FamilyConfig, MemoryEstimate, RunSettings};
use serde::{Deserialize, Serialize};

use crate::bits::BitSequence;
use crate::env::DiscreteEnv;
use crate::gfn::TeacherReward;
use crate::grid::Grid;
use crate::sampler::GflowSampler;
use crate::{Error, Result};

/// The value of `family` in GFlowNet configurations.
pub const FAMILY: &str = "gflownet";

fn err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

/// `[env]`: which discrete space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    /// `"deceptive_grid"`, `"hypergrid"` or `"bits"`.
    pub kind: String,
    /// Grid dimension d.
    pub ndim: usize,
    /// Grid side H.
    pub horizon: usize,
    /// Reward exponent β (deceptive grid) or Hamming-kernel sharpness (bits).
    pub beta: f64,
    /// Hypergrid base reward R0.
    pub r0: f64,
    /// Bit-sequence length L.
    pub length: usize,
    /// Number of bit-sequence modes.
    pub n_modes: usize,
    /// Seed of the bit-sequence modes.
    pub modes_seed: u64,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self { kind: "deceptive_grid".into(), ndim: 2, horizon: 64, beta: 1.0, r0: 0.001, length: 10, n_modes: 4, modes_seed: 0 }
    }
}

impl EnvConfig {
    fn validate(&self) -> Result<()> {
        match self.kind.as_str() {
            "deceptive_grid" | "hypergrid" => {
                if self.ndim < 1 {
                    return Err(err(format!("env.ndim = {}: a grid needs ndim ≥ 1", self.ndim)));
                }
                if self.horizon < 2 {
                    return Err(err(format!("env.horizon = {}: a grid needs horizon ≥ 2", self.horizon)));
                }
                if (self.horizon as f64).powi(self.ndim as i32) > 4e9 {
                    return Err(err(format!(
                        "env.ndim = {}, env.horizon = {}: H^d above 4·10⁹ states is not supported",
                        self.ndim, self.horizon
                    )));
                }
                if self.kind == "deceptive_grid" && !(self.beta > 0.0 && self.beta.is_finite()) {
                    return Err(err(format!("env.beta = {}: must be a positive number", self.beta)));
                }
                if self.kind == "hypergrid" && !(self.r0 > 0.0 && self.r0.is_finite()) {
                    return Err(err(format!("env.r0 = {}: must be a positive number", self.r0)));
                }
            }
            "bits" => {
                if !(1..=30).contains(&self.length) {
                    return Err(err(format!("env.length = {}: bit sequences need 1 ≤ length ≤ 30", self.length)));
                }
                if self.n_modes < 1 || (self.length < 20 && self.n_modes > 1 << self.length) {
                    return Err(err(format!("env.n_modes = {}: need 1 ≤ n_modes ≤ 2^length", self.n_modes)));
                }
                if !(self.beta > 0.0 && self.beta.is_finite()) {
                    return Err(err(format!("env.beta = {}: must be a positive number", self.beta)));
                }
            }
            other => return Err(err(format!("env.kind = \"{other}\": expected \"deceptive_grid\", \"hypergrid\" or \"bits\""))),
        }
        Ok(())
    }

    /// Builds the environment.
    pub fn build(&self) -> Arc<dyn DiscreteEnv> {
        match self.kind.as_str() {
            "hypergrid" => Arc::new(Grid::hypergrid(self.ndim, self.horizon, self.r0)),
            "bits" => Arc::new(BitSequence::with_random_modes(self.length, self.beta, self.n_modes, self.modes_seed)),
            _ => Arc::new(Grid::deceptive(self.ndim, self.horizon, self.beta)),
        }
    }

    fn is_grid(&self) -> bool {
        self.kind != "bits"
    }
}

/// `[agent]`: the training algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `"tb"`, `"db"`, `"subtb"`, `"fm"`, `"gafntb"`, `"teacher"` or `"teacher_db"`.
    pub kind: String,
    /// ε of the behaviour policy (1−ε)·π + ε·uniform.
    pub epsilon: f64,
    /// Learn P_B (softmax of the backward logits) instead of the uniform one.
    pub learn_pb: bool,
    /// Only valid (non-terminal) parents get backward probability: the correct P_B. `false`
    /// reproduces the reference's fixed P_B on forced-terminal grid states.
    pub pb_mask_terminal_parents: bool,
    /// λ of sub-trajectory balance.
    pub subtb_lambda: f64,
    /// Added to R before the log in the training reward, log(R + ε_R) (the reference's 1e-8).
    pub reward_epsilon: f64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self { kind: "tb".into(), epsilon: 0.0, learn_pb: false, pb_mask_terminal_parents: true, subtb_lambda: 0.9, reward_epsilon: 1e-8 }
    }
}

impl AgentConfig {
    /// Whether the agent's student learns by detailed balance (and so replays transitions).
    pub fn is_db(&self) -> bool {
        matches!(self.kind.as_str(), "db" | "teacher_db")
    }

    /// Whether the agent trains a teacher.
    pub fn has_teacher(&self) -> bool {
        self.kind.starts_with("teacher")
    }
}

/// `[net]`: the policy network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// LeakyReLU negative slope.
    pub leaky_slope: f64,
    /// Exact tabular parameterisation instead of the MLP (enumerable spaces only).
    pub tabular: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self { hidden: vec![256, 256], leaky_slope: 0.01, tabular: false }
    }
}

/// `[train]`: the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Iterations (0: the reference's rule from d, H, buffer and local search).
    pub n_iterations: usize,
    /// Trajectories per iteration.
    pub batch_size: usize,
    /// Network learning rate.
    pub lr: f64,
    /// log Z learning rate.
    pub lr_log_z: f64,
    /// Global gradient-norm clip (≤ 0: none).
    pub clip_grad_norm: f64,
    /// Terminal states in the training-sample L1 window (0: the reference's rule).
    pub empirical_window: usize,
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

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            n_iterations: 0,
            batch_size: 16,
            lr: 1e-3,
            lr_log_z: 0.1,
            clip_grad_norm: 1.0,
            empirical_window: 0,
            checkpoint_every: 0,
            checkpoint_minutes: Some(10.0),
            checkpoint_keep_last: 0,
            checkpoint_keep_every: 0,
            time_limit_hours: None,
        }
    }
}

/// `[buffer]`: the terminal-state replay buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferSection {
    /// Use a replay buffer.
    pub enabled: bool,
    /// `"none"` (uniform), `"reward"` (PRT), `"loss"` (δ²) or `"teacher_reward"` (PER).
    pub priority: String,
    /// Capacity (0: ⌊0.1·(H−1+d)·(H−1)^(d−1)⌋ on grids, 1000 otherwise).
    pub capacity: usize,
    /// k of the rank weights 1/(k·N + rank).
    pub rank_k: f64,
    /// Capacity of the transition buffer that detailed-balance agents (`db`, `teacher_db`) replay
    /// from instead of terminal states (0: 1000).
    pub transition_capacity: usize,
}

impl Default for BufferSection {
    fn default() -> Self {
        Self { enabled: false, priority: "none".into(), capacity: 0, rank_k: 0.01, transition_capacity: 0 }
    }
}

/// `[local_search]`: back-and-forth search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSearchSection {
    /// Use local search.
    pub enabled: bool,
    /// Rounds per search.
    pub rounds: usize,
    /// Share of each trajectory destroyed.
    pub back_ratio: f64,
}

impl Default for LocalSearchSection {
    fn default() -> Self {
        Self { enabled: false, rounds: 4, back_ratio: 0.5 }
    }
}

/// `[gafn]`: GAFN's random-network-distillation intrinsic rewards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GafnSection {
    /// Scale of the intrinsic reward ‖pred − target‖₂.
    pub ri_scale: f64,
    /// Hidden widths of the RND networks.
    pub rnd_hidden: Vec<usize>,
    /// Output width of the RND networks.
    pub rnd_latent: usize,
    /// Learning rate of the RND predictor.
    pub rnd_lr: f64,
}

impl Default for GafnSection {
    fn default() -> Self {
        Self { ri_scale: 0.01, rnd_hidden: vec![256, 256], rnd_latent: 128, rnd_lr: 1e-3 }
    }
}

/// `[eval]`: evaluation sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Evaluations during training (at linspace(1, n_iterations, n_evals)).
    pub n_evals: usize,
    /// Student samples (ε = 0) for `eval_empirical_l1` and the log Z bounds.
    pub n_samples: usize,
    /// Skip the exact distribution above this many non-terminal states.
    pub exact_max_states: usize,
    /// Write PNG plots after the final evaluation.
    pub plots: bool,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self { n_evals: 6, n_samples: 100_000, exact_max_states: 2_000_000, plots: true }
    }
}

/// A GFlowNet run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GflowConfig {
    /// Always `"gflownet"`.
    pub family: String,
    /// Run label.
    #[serde(default = "default_name")]
    pub name: String,
    /// Seed of every random stream.
    #[serde(default)]
    pub seed: u64,
    /// Environment.
    #[serde(default)]
    pub env: EnvConfig,
    /// Agent.
    #[serde(default)]
    pub agent: AgentConfig,
    /// Network.
    #[serde(default)]
    pub net: NetConfig,
    /// Training loop.
    #[serde(default)]
    pub train: TrainConfig,
    /// Replay buffer.
    #[serde(default)]
    pub buffer: BufferSection,
    /// Local search.
    #[serde(default)]
    pub local_search: LocalSearchSection,
    /// Teacher reward (teacher agents; also PER priorities).
    #[serde(default)]
    pub teacher: TeacherReward,
    /// GAFN (agent `gafntb`).
    #[serde(default)]
    pub gafn: GafnSection,
    /// Evaluation.
    #[serde(default)]
    pub eval: EvalSection,
}

fn default_name() -> String {
    "gflownet".into()
}

const AGENTS: [&str; 7] = ["tb", "db", "subtb", "fm", "gafntb", "teacher", "teacher_db"];
const PRIORITIES: [&str; 4] = ["none", "reward", "loss", "teacher_reward"];

impl GflowConfig {
    /// Checks every key; errors name it.
    pub fn validate(&self) -> Result<()> {
        if self.family != FAMILY {
            return Err(err(format!("family = \"{}\": this configuration type is the \"{FAMILY}\" family", self.family)));
        }
        self.env.validate()?;
        let a = &self.agent;
        if !AGENTS.contains(&a.kind.as_str()) {
            return Err(err(format!("agent.kind = \"{}\": expected one of {}", a.kind, AGENTS.join(", "))));
        }
        if !(0.0..=1.0).contains(&a.epsilon) {
            return Err(err(format!("agent.epsilon = {}: must be in [0, 1]", a.epsilon)));
        }
        if !(a.subtb_lambda > 0.0 && a.subtb_lambda.is_finite()) {
            return Err(err(format!("agent.subtb_lambda = {}: must be a positive number", a.subtb_lambda)));
        }
        if !(a.reward_epsilon >= 0.0 && a.reward_epsilon.is_finite()) {
            return Err(err(format!("agent.reward_epsilon = {}: must be ≥ 0", a.reward_epsilon)));
        }
        if self.net.hidden.contains(&0) {
            return Err(err("net.hidden: every width must be ≥ 1"));
        }
        if !(self.net.leaky_slope >= 0.0 && self.net.leaky_slope.is_finite()) {
            return Err(err(format!("net.leaky_slope = {}: must be ≥ 0", self.net.leaky_slope)));
        }
        let t = &self.train;
        if t.batch_size == 0 {
            return Err(err("train.batch_size = 0: must be ≥ 1"));
        }
        for (key, v) in [("train.lr", t.lr), ("train.lr_log_z", t.lr_log_z)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(err(format!("{key} = {v}: must be a positive number")));
            }
        }
        if t.clip_grad_norm.is_nan() {
            return Err(err("train.clip_grad_norm = nan: must be a number (≤ 0 disables clipping)"));
        }
        fab_sampler::config::check_run_limits(t.checkpoint_minutes, t.time_limit_hours)?;
        fab_sampler::config::check_keep_checkpoints(fab_sampler::KeepCheckpoints {
            last: t.checkpoint_keep_last,
            every: t.checkpoint_keep_every,
        })?;
        let b = &self.buffer;
        if !PRIORITIES.contains(&b.priority.as_str()) {
            return Err(err(format!("buffer.priority = \"{}\": expected one of {}", b.priority, PRIORITIES.join(", "))));
        }
        if !(b.rank_k > 0.0 && b.rank_k.is_finite()) {
            return Err(err(format!("buffer.rank_k = {}: must be a positive number", b.rank_k)));
        }
        if !b.enabled && (b.priority != "none" || b.capacity != 0 || b.transition_capacity != 0) {
            return Err(err("buffer.priority / buffer.capacity are set but buffer.enabled = false"));
        }
        if b.enabled && a.kind == "gafntb" {
            return Err(err("buffer.enabled = true: agent \"gafntb\" has no replay buffer"));
        }
        let g = &self.gafn;
        if !(g.ri_scale >= 0.0 && g.ri_scale.is_finite() && g.rnd_lr > 0.0 && g.rnd_lr.is_finite()) {
            return Err(err(format!("gafn.ri_scale = {}, gafn.rnd_lr = {}: need ri_scale ≥ 0 and rnd_lr > 0", g.ri_scale, g.rnd_lr)));
        }
        if g.rnd_latent == 0 || g.rnd_hidden.contains(&0) {
            return Err(err("gafn.rnd_latent and gafn.rnd_hidden widths must be ≥ 1"));
        }
        if a.kind == "gafntb" && self.net.tabular {
            return Err(err("net.tabular = true: agent \"gafntb\" needs the MLP (its flow output divides the intrinsic reward)"));
        }
        let ls = &self.local_search;
        if ls.enabled {
            if !matches!(a.kind.as_str(), "tb" | "teacher") {
                return Err(err(format!("local_search.enabled = true: agent \"{}\" has no local search (tb and teacher do)", a.kind)));
            }
            if ls.rounds == 0 {
                return Err(err("local_search.rounds = 0: must be ≥ 1"));
            }
            if !(ls.back_ratio > 0.0 && ls.back_ratio < 1.0) {
                return Err(err(format!("local_search.back_ratio = {}: must be in (0, 1)", ls.back_ratio)));
            }
        }
        let tr = &self.teacher;
        for (key, v) in [("teacher.c", tr.c), ("teacher.alpha", tr.alpha), ("teacher.beta", tr.beta)] {
            if !v.is_finite() {
                return Err(err(format!("{key} = {v}: must be a finite number")));
            }
        }
        if tr.c < 0.0 {
            return Err(err(format!("teacher.c = {}: must be ≥ 0", tr.c)));
        }
        if self.net.tabular && self.env.build().enumeration().is_none() {
            return Err(err("net.tabular = true needs an enumerable environment"));
        }
        let e = &self.eval;
        if e.n_evals == 0 || e.n_samples == 0 {
            return Err(err("eval.n_evals and eval.n_samples must be ≥ 1"));
        }
        Ok(())
    }

    /// Fills the sizes left at 0 by the reference's rules.
    fn resolve(&mut self) {
        let (d, h) = (self.env.ndim, self.env.horizon);
        let small = (d == 2 && h <= 256) || (d == 4 && h <= 16);
        if self.train.n_iterations == 0 {
            let base = match (self.env.is_grid(), d) {
                (true, 2) if h > 256 => 8000.0,
                (true, 4) if h > 16 => 16000.0,
                _ => 4000.0,
            };
            let ls = if self.local_search.enabled { 1.0 } else { 1.5 };
            let buf = if self.buffer.enabled { 2.0 } else { 1.0 };
            self.train.n_iterations = (base * ls * buf) as usize;
        }
        if self.train.empirical_window == 0 {
            self.train.empirical_window = if small || !self.env.is_grid() { 10_000 } else { 20_000 };
        }
        if self.buffer.enabled && self.buffer.transition_capacity == 0 {
            self.buffer.transition_capacity = 1000;
        }
        if self.buffer.enabled && self.buffer.capacity == 0 {
            self.buffer.capacity = if self.env.is_grid() {
                let h1 = (h - 1) as f64;
                ((0.1 * (h1 + d as f64) * h1.powi(d as i32 - 1)).floor() as usize).max(1)
            } else {
                1000
            };
        }
    }
}

impl FamilyConfig for GflowConfig {
    type Sampler = GflowSampler;

    fn parse(text: &str, overrides: &[String]) -> Result<Self> {
        let mut cfg: GflowConfig = fab_sampler::config::parse_with_overrides(text, overrides)?;
        cfg.validate()?;
        cfg.resolve();
        Ok(cfg)
    }

    fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| err(format!("cannot serialise config: {e}")))
    }

    fn run_settings(&self) -> RunSettings {
        let sizes = EvalSizes {
            n_samples: self.eval.n_samples,
            n_refined_samples: 0,
            refined_batch: 1,
            n_test: 1,
            n_mode_samples: 0,
            estimator_repeats: 0,
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
            eval_sizes: sizes,
            final_eval_sizes: sizes,
            plots: self.eval.plots,
        }
    }

    fn build(&self) -> Result<GflowSampler> {
        GflowSampler::new(self.clone())
    }

    /// The networks (student, and teacher for teacher agents) with gradients and Adam moments;
    /// one batch of trajectories' activations; the replay buffers; the evaluation samples and
    /// the exact distribution over the enumerated states.
    fn memory_estimate(&self) -> MemoryEstimate {
        let e = &self.env;
        // (network input, forward actions, states per trajectory, enumerated states)
        let (obs, actions, traj, states, state_len) = if e.is_grid() {
            let (d, h) = (e.ndim as f64, e.horizon as f64);
            (d * h, d + 1.0, d * (h - 1.0) + 2.0, h.powf(d), d)
        } else {
            let l = e.length as f64;
            (2.0 * l, 2.0, l + 1.0, 2f64.powf(l + 1.0), l)
        };
        let outputs = 2.0 * actions + 1.0;
        let nets = if self.agent.kind.starts_with("teacher") { 2.0 } else { 1.0 };
        let widths: Vec<f64> =
            std::iter::once(obs).chain(self.net.hidden.iter().map(|&w| w as f64)).chain(std::iter::once(outputs)).collect();
        let params = if self.net.tabular { states * outputs } else { widths.windows(2).map(|w| (w[0] + 1.0) * w[1]).sum() };
        let per_state: f64 = widths.iter().skip(1).sum::<f64>() + obs;
        let mut est = MemoryEstimate::new();
        let what = if self.net.tabular { "net.tabular = true (a table over every state" } else { "net.hidden (parameters" };
        est.add(format!("{what}, gradients and Adam moments)"), nets * 4.0 * params * 4.0);
        let b = self.train.batch_size as f64;
        est.add(
            format!("train.batch_size = {} (trajectories' states and activations)", self.train.batch_size),
            nets * 2.0 * b * traj * per_state * 4.0,
        );
        if self.buffer.enabled {
            est.add(format!("buffer.capacity = {}", self.buffer.capacity), self.buffer.capacity as f64 * (state_len * 4.0 + 16.0));
        }
        let exact = states.min(self.eval.exact_max_states as f64);
        est.add(
            format!("eval.n_samples = {} and eval.exact_max_states = {}", self.eval.n_samples, self.eval.exact_max_states),
            self.eval.n_samples as f64 * (state_len + 2.0) * 8.0 + exact * (outputs + 2.0) * 8.0,
        );
        est
    }

    /// The length (no schedule depends on it), the time limit, the checkpoint intervals and
    /// whether to plot.
    fn resume_safe_keys() -> &'static [&'static str] {
        fab_sampler::config::RESUME_SAFE_RUN_KEYS
    }
}
