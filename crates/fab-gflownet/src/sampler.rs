//! The GFlowNet family on the sampler core: one training iteration of the configured agent
//! (behaviour schedule, replay, local search, student and teacher steps), exact evaluation, plots
//! and checkpoints (`docs/GFLOWNETS.md`, "Training step").

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use candle_core::DType;
use fab_buffer::{Prioritisation, RankedBuffer};
use fab_core::rng::{seeded_rng, FabRng};
use fab_sampler::eval::{EvalSizes, Metrics};
use fab_sampler::observe::ProgressLine;
use fab_sampler::{Draws, Model, NamedSamples, PlotContext, Sampler, StepReport, StepStats, Target};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::GflowConfig;
use crate::env::{DiscreteEnv, ExactTarget};
use crate::exact::{distances, empirical, policy_table, sample_terminal_indices, terminal_distribution};
use crate::gfn::{GflowNet, GfnOptim, KeptForward, Objective};
use crate::local_search::{local_search, LocalSearch};
use crate::net::{Mlp, Network, Tabular};
use crate::policy::BackwardPolicy;
use crate::rnd::Rnd;
use crate::target::DiscreteTarget;
use crate::traj::{backward_trajectories, Trajectories};
use crate::{Error, Result};

/// Random stream of training (sampling, replay, local search).
const TRAIN_STREAM: u64 = 11;
/// Random stream of network initialisation.
const INIT_STREAM: u64 = 12;
/// Trajectories drawn with the network for the log Z bounds.
const BOUND_SAMPLES: usize = 2000;
/// Largest number of terminal objects whose exact target is enumerated.
const MAX_EXACT_TERMINAL: usize = 50_000_000;
/// Losses averaged in the reported running loss.
const LOSS_WINDOW: usize = 100;

/// Who produced an iteration's training batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// The student's forward policy (with ε).
    Student,
    /// The teacher's forward policy (with ε).
    Teacher,
    /// Terminal states replayed from the buffer, trajectories rebuilt backward.
    Buffer,
}

/// The behaviour of iteration `i` (0-based): without a buffer S,S,T,T,… (teacher agents) or
/// always S; with a buffer odd iterations replay and even ones alternate S,T (or are S).
pub fn behaviour(i: usize, teacher: bool, buffer: bool) -> Behaviour {
    match (teacher, buffer) {
        (false, false) => Behaviour::Student,
        (false, true) => {
            if i % 2 == 1 {
                Behaviour::Buffer
            } else {
                Behaviour::Student
            }
        }
        (true, false) => {
            if (i / 2).is_multiple_of(2) {
                Behaviour::Student
            } else {
                Behaviour::Teacher
            }
        }
        (true, true) => {
            if i % 2 == 1 {
                Behaviour::Buffer
            } else if (i / 2).is_multiple_of(2) {
                Behaviour::Student
            } else {
                Behaviour::Teacher
            }
        }
    }
}

/// Per-iteration statistics (fields of the `"train"` lines of `metrics.jsonl`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GflowStats {
    /// Who produced the batch (0 student, 1 teacher, 2 buffer).
    pub behaviour: u8,
    /// Student log Z.
    pub log_z: f64,
    /// Teacher loss (NaN without a teacher).
    pub teacher_loss: f64,
    /// Mean student loss over the last 100 iterations.
    pub loss_avg: f64,
    /// Reward evaluations so far.
    pub n_reward_calls: u64,
    /// Distinct modes visited by training samples so far.
    pub n_goals_found: u64,
    /// Actions in this iteration's training batch.
    pub n_actions: u64,
    /// Local-search candidates accepted this iteration.
    pub ls_accepted: u64,
}

impl StepStats for GflowStats {
    fn progress(&self) -> String {
        format!("goals {} calls {} log Z {:.3}", self.n_goals_found, self.n_reward_calls, self.log_z)
    }
}

/// A transition kept for detailed-balance replay: the action, and log R when s′ is terminal.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredTransition {
    action: usize,
    log_reward: Option<f64>,
}

/// Transitions (s, s′) kept for detailed-balance replay.
type TransitionBuffer = RankedBuffer<(Vec<i32>, Vec<i32>), StoredTransition>;

/// The counters and windows a checkpoint must carry besides parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    iteration: usize,
    n_reward_calls: u64,
    n_grad_steps: u64,
    goals: BTreeSet<Vec<i32>>,
    reward_calls_all_goals: Option<u64>,
    window: VecDeque<usize>,
    losses: VecDeque<f64>,
    rng: FabRng,
}

/// A GFlowNet run: student, optional teacher, buffer, counters and the exact target.
#[derive(Debug)]
pub struct GflowSampler {
    config: GflowConfig,
    env: Arc<dyn DiscreteEnv>,
    target: Arc<DiscreteTarget>,
    exact: Option<ExactTarget>,
    student: GflowNet,
    teacher: Option<GflowNet>,
    buffer: Option<RankedBuffer<Vec<i32>, f64>>,
    transitions: Option<TransitionBuffer>,
    rnd: Option<Rnd>,
    state: TrainState,
    /// Metrics computed while drawing the evaluation sets, reported by `own_metrics`.
    pending: Metrics,
    /// Exact distributions of the last evaluation (target, student, teacher) for plots.
    distributions: Vec<(String, Vec<f64>)>,
    /// (actions, trajectories) of the last training batch.
    last_batch: (usize, usize),
}

fn build_gfn(cfg: &GflowConfig, env: &Arc<dyn DiscreteEnv>, rng: &mut FabRng) -> Result<GflowNet> {
    let n_out = env.n_actions() + env.n_back_actions() + 1;
    let net: Box<dyn Network> = if cfg.net.tabular {
        Box::new(Tabular::new(env.clone(), n_out)?)
    } else {
        Box::new(Mlp::new(env.clone(), &cfg.net.hidden, n_out, cfg.net.leaky_slope, rng)?)
    };
    let objective = match cfg.agent.kind.as_str() {
        "db" | "teacher_db" => Objective::Db,
        "subtb" => Objective::SubTb { lambda: cfg.agent.subtb_lambda },
        "fm" => Objective::Fm,
        "gafntb" => Objective::GafnTb,
        _ => Objective::Tb,
    };
    let pb = BackwardPolicy { learned: cfg.agent.learn_pb, strict: cfg.agent.pb_mask_terminal_parents };
    let clip = (cfg.train.clip_grad_norm > 0.0).then_some(cfg.train.clip_grad_norm);
    GflowNet::new(env.clone(), net, objective, pb, GfnOptim { lr: cfg.train.lr, lr_log_z: cfg.train.lr_log_z, clip })
}

impl GflowSampler {
    /// Builds the environment, the networks and the buffer of a validated configuration.
    pub fn new(config: GflowConfig) -> Result<Self> {
        let env = config.env.build();
        // The exact target is enumerated once (log R of every terminal object), up to a size.
        let enumerable = env.enumeration().is_some_and(|en| en.n_terminal() <= MAX_EXACT_TERMINAL);
        let exact = if enumerable { ExactTarget::of(env.as_ref()) } else { None };
        let target = Arc::new(DiscreteTarget::new(env.clone(), exact.as_ref().map(|e| e.log_z)));
        let mut init = seeded_rng(config.seed, INIT_STREAM);
        let student = build_gfn(&config, &env, &mut init)?;
        let teacher = if config.agent.has_teacher() {
            // The teacher always learns by trajectory balance on its own reward.
            let mut tcfg = config.clone();
            tcfg.agent.kind = "teacher".into();
            Some(build_gfn(&tcfg, &env, &mut init)?)
        } else {
            None
        };
        let rnd = if config.agent.kind == "gafntb" {
            let g = &config.gafn;
            Some(Rnd::new(env.clone(), &g.rnd_hidden, g.rnd_latent, config.net.leaky_slope, g.rnd_lr, g.ri_scale, &mut init)?)
        } else {
            None
        };
        let use_transitions = config.buffer.enabled && config.agent.is_db();
        let buffer = if config.buffer.enabled && !use_transitions {
            Some(RankedBuffer::new(config.buffer.capacity).map_err(Error::family)?)
        } else {
            None
        };
        let transitions =
            if use_transitions { Some(RankedBuffer::new(config.buffer.transition_capacity).map_err(Error::family)?) } else { None };
        let state = TrainState {
            iteration: 0,
            n_reward_calls: 0,
            n_grad_steps: 0,
            goals: BTreeSet::new(),
            reward_calls_all_goals: None,
            window: VecDeque::new(),
            losses: VecDeque::new(),
            rng: seeded_rng(config.seed, TRAIN_STREAM),
        };
        Ok(Self {
            config,
            env,
            target,
            exact,
            student,
            teacher,
            buffer,
            transitions,
            rnd,
            state,
            pending: Metrics::new(),
            distributions: Vec::new(),
            last_batch: (0, 0),
        })
    }

    /// (actions, trajectories) of the last training batch (the iteration's workload).
    pub fn last_batch_shape(&self) -> (usize, usize) {
        self.last_batch
    }

    /// The environment.
    pub fn env(&self) -> &Arc<dyn DiscreteEnv> {
        &self.env
    }

    /// The student.
    pub fn student(&self) -> &GflowNet {
        &self.student
    }

    /// The teacher, if the agent has one.
    pub fn teacher(&self) -> Option<&GflowNet> {
        self.teacher.as_ref()
    }

    /// The exact target, on enumerable spaces.
    pub fn exact_target(&self) -> Option<&ExactTarget> {
        self.exact.as_ref()
    }

    fn train_log_r(&self, batch: &Trajectories) -> Vec<f64> {
        training_log_rewards(&batch.log_reward, self.config.agent.reward_epsilon)
    }

    /// Records freshly generated terminal objects: L1 window, goals, reward calls.
    fn record_samples(&mut self, batch: &Trajectories) {
        let window = self.config.train.empirical_window;
        for k in 0..batch.len() {
            let x = batch.last(k);
            if let Some(en) = self.env.enumeration() {
                self.state.window.push_back(en.terminal_index(x));
                if self.state.window.len() > window {
                    self.state.window.pop_front();
                }
            }
            if self.env.is_mode(x) && !self.state.goals.contains(x) {
                self.state.goals.insert(x.to_vec());
            }
        }
        if let Some(e) = &self.exact {
            if self.state.reward_calls_all_goals.is_none() && self.state.goals.len() == e.n_modes() && e.n_modes() > 0 {
                self.state.reward_calls_all_goals = Some(self.state.n_reward_calls);
            }
        }
    }

    /// The iteration's batch, with the sampling network's pass kept for its training step.
    fn draw_batch(&mut self, who: Behaviour) -> (Trajectories, Option<KeptForward>) {
        let b = self.config.train.batch_size;
        let eps = self.config.agent.epsilon;
        let kept = |(t, k): (Trajectories, KeptForward)| (t, Some(k));
        match who {
            Behaviour::Student => kept(self.student.sample_kept(b, eps, &mut self.state.rng)),
            Behaviour::Teacher => {
                kept(self.teacher.as_ref().expect("teacher behaviour needs a teacher").sample_kept(b, eps, &mut self.state.rng))
            }
            Behaviour::Buffer => {
                let how = if self.config.buffer.priority == "none" {
                    Prioritisation::Uniform
                } else {
                    Prioritisation::Rank { k: self.config.buffer.rank_k }
                };
                if let Some(tb) = self.transitions.as_ref() {
                    // Detailed balance replays single transitions: batch·⌊H/2⌋ of them.
                    let half = if self.config.env.kind == "bits" { self.config.env.length / 2 } else { self.config.env.horizon / 2 };
                    let idx = tb.sample(b * half.max(1), how, &mut self.state.rng).expect("a non-empty buffer");
                    let mut out = Trajectories::new(self.env.state_len());
                    for i in idx {
                        let ((s, s2), t, _) = tb.get(i).expect("sampled index");
                        let states: Vec<i32> = s.iter().chain(s2).copied().collect();
                        out.push(&states, &[t.action], t.log_reward.is_some(), t.log_reward.unwrap_or(f64::NAN));
                    }
                    return (out, None);
                }
                let buf = self.buffer.as_ref().expect("buffer behaviour needs a buffer");
                let idx = buf.sample(b, how, &mut self.state.rng).expect("a non-empty buffer");
                let xs: Vec<i32> = idx.iter().flat_map(|&i| buf.get(i).expect("sampled index").0.clone()).collect();
                (backward_trajectories(self.env.as_ref(), &xs, &mut self.state.rng), None)
            }
        }
    }

    fn ls_due(&self, i: usize, who: Behaviour) -> bool {
        if !self.config.local_search.enabled {
            return false;
        }
        match (self.teacher.is_some(), who) {
            (false, Behaviour::Student) => (i / 2) % 8 == 7,
            (true, Behaviour::Teacher) => (i / 4) % 4 == 3,
            _ => false,
        }
    }

    fn run_local_search(&mut self, batch: Trajectories, who: Behaviour) -> (Trajectories, usize) {
        let ls = LocalSearch { rounds: self.config.local_search.rounds, back_ratio: self.config.local_search.back_ratio };
        let eps_r = self.config.agent.reward_epsilon;
        let treward = self.config.teacher;
        let env = self.env.clone();
        let mut rng = self.state.rng.clone();
        let out = match who {
            Behaviour::Teacher => {
                let student = &self.student;
                let mut score = |b: &Trajectories| {
                    let d = student.tb_residuals(b, &training_log_rewards(&b.log_reward, eps_r));
                    treward.rewards(&d, &b.log_reward)
                };
                local_search(env.as_ref(), self.teacher.as_ref().expect("teacher"), &batch, &mut score, ls, &mut rng)
            }
            _ => {
                let mut score = |b: &Trajectories| b.log_reward.clone();
                local_search(env.as_ref(), &self.student, &batch, &mut score, ls, &mut rng)
            }
        };
        self.state.rng = rng;
        self.state.n_reward_calls += (ls.rounds * batch.len()) as u64;
        out
    }

    /// Adds every transition of a fresh batch to the transition buffer, with priorities from the
    /// per-transition residuals (`loss`: δ_t²; `teacher_reward`: the per-transition teacher reward).
    fn insert_transitions(&mut self, batch: &Trajectories, transition_residuals: &[f64]) -> Result<()> {
        let Some(buf) = self.transitions.as_mut() else { return Ok(()) };
        let t = self.config.teacher;
        for k in 0..batch.len() {
            let r = batch.range(k);
            for slot in r.start..r.end - 1 {
                let terminal = slot + 2 == r.end && batch.complete[k];
                let log_reward = terminal.then_some(batch.log_reward[k]);
                let d = transition_residuals.get(slot).copied().unwrap_or(0.0);
                let priority = match self.config.buffer.priority.as_str() {
                    "reward" => log_reward.map_or(0.0, f64::exp),
                    "loss" => d * d,
                    "teacher_reward" => t.transition_reward(d, log_reward),
                    _ => 0.0,
                };
                let key = (batch.state(slot).to_vec(), batch.state(slot + 1).to_vec());
                buf.insert(key, StoredTransition { action: batch.actions[slot], log_reward }, priority).map_err(Error::family)?;
            }
        }
        Ok(())
    }

    fn insert_into_buffer(&mut self, batch: &Trajectories, residuals: &[f64], teacher_r: &[f64]) -> Result<()> {
        let Some(buf) = self.buffer.as_mut() else { return Ok(()) };
        for k in 0..batch.len() {
            let priority = match self.config.buffer.priority.as_str() {
                "reward" => batch.log_reward[k].exp(),
                "loss" => residuals.get(k).map_or(0.0, |d| d * d),
                "teacher_reward" => teacher_r.get(k).copied().unwrap_or(0.0),
                _ => 0.0,
            };
            buf.insert(batch.last(k).to_vec(), batch.log_reward[k], priority).map_err(Error::family)?;
        }
        Ok(())
    }

    /// Empirical L1 (mean and reward-weighted) of the training-sample window.
    fn window_l1(&self) -> Option<(f64, f64)> {
        let e = self.exact.as_ref()?;
        if self.state.window.is_empty() {
            return Some((100.0, 100.0));
        }
        let q = empirical(self.state.window.iter().copied(), e.p.len());
        let d = distances(e, &q);
        Some((d.l1_mean, d.w_l1_mean))
    }

    fn exact_allowed(&self) -> bool {
        self.env.enumeration().is_some_and(|en| en.n_nonterminal() <= self.config.eval.exact_max_states)
    }
}

impl Model for GflowSampler {
    fn dim(&self) -> usize {
        self.env.state_len()
    }

    fn dtype(&self) -> DType {
        DType::F64
    }

    /// Student trajectories at ε = 0; log q is the path estimate Σ log P_F − Σ log P_B.
    fn draw(&mut self, n: usize, rng: &mut dyn RngCore) -> fab_sampler::Result<Draws> {
        let mut x = Vec::with_capacity(n * self.dim());
        let mut log_q = Vec::with_capacity(n);
        let mut left = n;
        let mut progress = ProgressLine::new("student trajectories", n);
        while left > 0 {
            let m = left.min(1024);
            let batch = self.student.sample(m, 0.0, rng);
            log_q.extend(self.student.path_log_ratio(&batch));
            x.extend(batch.terminals().iter().map(|&v| f64::from(v)));
            left -= m;
            progress.update(n - left);
        }
        Ok(Draws { x, dim: self.dim(), log_q, exact_log_q: false })
    }
}

impl Sampler for GflowSampler {
    type Stats = GflowStats;

    fn target(&self) -> Arc<dyn Target> {
        self.target.clone()
    }

    fn step(&mut self) -> fab_sampler::Result<StepReport<GflowStats>> {
        let i = self.state.iteration;
        let has_buffer = self.buffer.as_ref().is_some_and(|b| !b.is_empty()) || self.transitions.as_ref().is_some_and(|b| !b.is_empty());
        let who = behaviour(i, self.teacher.is_some(), self.buffer.is_some() || self.transitions.is_some());
        let who = if who == Behaviour::Buffer && !has_buffer { Behaviour::Student } else { who };
        let (mut batch, mut kept) = self.draw_batch(who);
        let mut ls_accepted = 0;
        if who != Behaviour::Buffer {
            self.state.n_reward_calls += batch.len() as u64;
            if self.ls_due(i, who) {
                let (b, acc) = self.run_local_search(batch, who);
                batch = b;
                ls_accepted = acc;
                kept = None;
            }
            self.record_samples(&batch);
        }
        // The pass kept while sampling serves the training step of the network that sampled.
        let (student_kept, teacher_kept) = match who {
            Behaviour::Student => (kept, None),
            Behaviour::Teacher => (None, kept),
            Behaviour::Buffer => (None, None),
        };
        let out = match self.rnd.as_mut() {
            Some(rnd) => {
                let ri = rnd.intrinsic(&batch.states);
                let out = self.student.train_step_with(&batch, &batch.log_reward, Some(&ri), student_kept)?;
                rnd.train_step(&batch.states)?;
                out
            }
            None => {
                let log_r = self.train_log_r(&batch);
                self.student.train_step_with(&batch, &log_r, None, student_kept)?
            }
        };
        self.state.n_grad_steps += 1;
        // Teacher rewards from the student's pre-update residuals.
        let teacher_r: Vec<f64> = if out.transition_residuals.is_empty() {
            if out.residuals.is_empty() {
                Vec::new()
            } else {
                self.config.teacher.rewards(&out.residuals, &batch.log_reward)
            }
        } else {
            let t = self.config.teacher;
            (0..batch.len())
                .map(|k| {
                    let r = batch.range(k);
                    (r.start..r.end - 1)
                        .map(|s| {
                            let last = (s + 2 == r.end).then_some(batch.log_reward[k]);
                            t.transition_reward(out.transition_residuals[s], last)
                        })
                        .sum()
                })
                .collect()
        };
        let mut teacher_loss = f64::NAN;
        // The teacher learns by TB on complete trajectories (not on replayed single transitions).
        let complete = batch.complete.iter().all(|c| *c);
        if let Some(teacher) = self.teacher.as_mut().filter(|_| complete) {
            let t = self.config.teacher;
            let tlog: Vec<f64> = teacher_r.iter().map(|&r| t.log_reward(r)).collect();
            teacher_loss = teacher.train_step_with(&batch, &tlog, None, teacher_kept)?.loss;
        }
        if who != Behaviour::Buffer {
            self.insert_into_buffer(&batch, &out.residuals, &teacher_r)?;
            self.insert_transitions(&batch, &out.transition_residuals)?;
        }
        if out.loss.is_finite() {
            self.state.losses.push_back(out.loss);
            if self.state.losses.len() > LOSS_WINDOW {
                self.state.losses.pop_front();
            }
        }
        self.state.iteration += 1;
        let stats = GflowStats {
            behaviour: who as u8,
            log_z: self.student.log_z(),
            teacher_loss,
            loss_avg: fab_core::stats::mean(&self.state.losses.iter().copied().collect::<Vec<_>>()),
            n_reward_calls: self.state.n_reward_calls,
            n_goals_found: self.state.goals.len() as u64,
            ls_accepted: ls_accepted as u64,
            n_actions: (batch.n_states() - batch.len()) as u64,
        };
        self.last_batch = (batch.n_states() - batch.len(), batch.len());
        Ok(StepReport {
            iteration: 0,
            loss: out.loss,
            grad_norm: out.grad_norm,
            skipped_steps: usize::from(!out.applied),
            lr: self.config.train.lr,
            stats,
            seconds: 0.0,
        })
    }

    fn eval_sets(&mut self, sizes: &EvalSizes, rng: &mut dyn RngCore) -> fab_sampler::Result<Vec<NamedSamples>> {
        let mut m = Metrics::new();
        self.distributions.clear();
        if let (Some(e), true) = (self.exact.clone(), self.exact_allowed()) {
            let table = policy_table(self.env.as_ref(), self.student.net()).expect("enumerable");
            let q = terminal_distribution(self.env.as_ref(), &table);
            let d = distances(&e, &q);
            m.insert("exact_l1".into(), d.l1_mean);
            m.insert("exact_l1_sum".into(), d.l1_sum);
            m.insert("exact_tv".into(), d.tv);
            m.insert("exact_kl_target_model".into(), d.kl_pq);
            m.insert("exact_kl_model_target".into(), d.kl_qp);
            m.insert("exact_jsd".into(), d.jsd);
            m.insert("exact_mode_mass".into(), d.mode_mass);
            m.insert("target_mode_mass".into(), e.p.iter().zip(&e.is_mode).filter(|(_, m)| **m).map(|(p, _)| p).sum());
            m.insert("exact_w_l1".into(), d.w_l1_mean);
            // The reference's eval_empirical_l1: n student samples (ε = 0), mean convention.
            let idx = sample_terminal_indices(self.env.as_ref(), &table, sizes.n_samples, rng);
            let de = distances(&e, &empirical(idx, e.p.len()));
            m.insert("eval_empirical_l1".into(), de.l1_mean);
            m.insert("eval_empirical_w_l1".into(), de.w_l1_mean);
            self.distributions.push(("target".into(), e.p.clone()));
            self.distributions.push(("student".into(), q));
            if let Some(t) = &self.teacher {
                let tt = policy_table(self.env.as_ref(), t.net()).expect("enumerable");
                let qt = terminal_distribution(self.env.as_ref(), &tt);
                m.insert("teacher_exact_l1".into(), distances(&e, &qt).l1_mean);
                self.distributions.push(("teacher".into(), qt));
            }
            m.insert("n_goals".into(), e.n_modes() as f64);
            m.insert("log_z_true".into(), e.log_z);
            // EUBO with exact target samples and backward trajectories (a bound only when the
            // backward trajectories follow P_B: fixed, strict).
            let pb = self.student.backward_policy();
            if !pb.learned && pb.strict {
                let n = BOUND_SAMPLES.min(sizes.n_samples);
                let xs = sample_target(self.env.as_ref(), &e, n, rng);
                let batch = backward_trajectories(self.env.as_ref(), &xs, rng);
                let ratio = self.student.path_log_ratio(&batch);
                let eubo: Vec<f64> = batch.log_reward.iter().zip(&ratio).map(|(l, r)| l - r).collect();
                m.insert("eubo_log_z".into(), fab_core::stats::mean(&eubo));
            }
        }
        // ELBO and importance-weighted log Z from network trajectories.
        let draws = self.draw(BOUND_SAMPLES.min(sizes.n_samples), rng)?;
        let samples = draws.weigh(self.target.density(), DType::F64)?;
        m.insert("elbo_log_z".into(), fab_core::stats::mean(&samples.log_w));
        if let Some((l1, wl1)) = self.window_l1() {
            m.insert("empirical_l1".into(), l1);
            m.insert("empirical_w_l1".into(), wl1);
        }
        self.pending = m;
        Ok(vec![NamedSamples { name: "model".into(), samples, primary: true }])
    }

    fn own_metrics(&self, metrics: &mut Metrics) {
        metrics.extend(self.pending.iter().map(|(k, v)| (k.clone(), *v)));
        metrics.insert("log_z_learned".into(), self.student.log_z());
        if let Some(t) = &self.teacher {
            metrics.insert("teacher_log_z_learned".into(), t.log_z());
        }
        metrics.insert("n_goals_found".into(), self.state.goals.len() as f64);
        metrics.insert("n_reward_calls".into(), self.state.n_reward_calls as f64);
        metrics.insert("n_grad_steps".into(), self.state.n_grad_steps as f64);
        if let Some(c) = self.state.reward_calls_all_goals {
            metrics.insert("reward_calls_all_goals".into(), c as f64);
        }
        metrics.insert("loss".into(), fab_core::stats::mean(&self.state.losses.iter().copied().collect::<Vec<_>>()));
    }

    fn plots(&self, ctx: &PlotContext<'_>) -> fab_sampler::Result<()> {
        if self.config.env.kind == "bits" || self.config.env.ndim != 2 || self.distributions.is_empty() {
            return Ok(());
        }
        let h = self.config.env.horizon;
        let en = self.env.enumeration().expect("grids are enumerable");
        let panels: Vec<fab_plot::HeatPanel> = self
            .distributions
            .iter()
            .map(|(name, p)| {
                let mut cells = vec![0.0; h * h];
                let mut x = [0i32; 2];
                for (i, &v) in p.iter().enumerate() {
                    en.terminal(i, &mut x);
                    cells[x[0] as usize * h + x[1] as usize] = v;
                }
                fab_plot::HeatPanel::new(name.clone(), h, h, cells)
            })
            .collect();
        let path = ctx.dir.join("distributions.png");
        fab_plot::heatmaps(
            &path,
            &format!("{}: terminal distributions (exact)", ctx.title),
            &panels,
            &fab_plot::HeatmapOptions::default(),
        )?;
        Ok(())
    }

    fn save_state(&self, dir: &Path) -> fab_sampler::Result<()> {
        self.student.save(dir, "student")?;
        if let Some(t) = &self.teacher {
            t.save(dir, "teacher")?;
        }
        if let Some(r) = &self.rnd {
            r.save(dir)?;
        }
        let mut v = serde_json::json!({ "state": &self.state });
        if let Some(b) = &self.buffer {
            v["buffer"] = serde_json::to_value(b)?;
        }
        if let Some(b) = &self.transitions {
            v["transitions"] = serde_json::to_value(b)?;
        }
        let path = dir.join("gflownet_state.json");
        std::fs::write(&path, serde_json::to_vec(&v)?).map_err(|e| Error::io(&path, e))?;
        Ok(())
    }

    fn load_state(&mut self, dir: &Path) -> fab_sampler::Result<()> {
        self.student.load(dir, "student")?;
        if let Some(t) = self.teacher.as_mut() {
            t.load(dir, "teacher")?;
        }
        if let Some(r) = self.rnd.as_mut() {
            r.load(dir)?;
        }
        let path = dir.join("gflownet_state.json");
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let mut v: serde_json::Value = serde_json::from_slice(&text)?;
        self.state = serde_json::from_value(v["state"].take())?;
        if self.buffer.is_some() {
            self.buffer = Some(serde_json::from_value(v["buffer"].take())?);
        }
        if self.transitions.is_some() {
            self.transitions = Some(serde_json::from_value(v["transitions"].take())?);
        }
        Ok(())
    }
}

/// The training log-reward log(R + ε_R) of each log R (log R itself when ε_R = 0).
fn training_log_rewards(log_reward: &[f64], eps: f64) -> Vec<f64> {
    log_reward.iter().map(|&l| if eps > 0.0 { (l.exp() + eps).ln() } else { l }).collect()
}

/// `n` exact target samples (terminal objects, flat) by inverse-CDF over the enumeration.
pub fn sample_target(env: &dyn DiscreteEnv, target: &ExactTarget, n: usize, rng: &mut dyn RngCore) -> Vec<i32> {
    let en = env.enumeration().expect("an enumerable environment");
    let mut x = vec![0; env.state_len()];
    let mut out = Vec::with_capacity(n * env.state_len());
    for _ in 0..n {
        let i = crate::traj::draw_categorical(&target.p, rng);
        en.terminal(i, &mut x);
        out.extend_from_slice(&x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_schedules_match_the_reference() {
        let s = |t, b| (0..8).map(|i| behaviour(i, t, b)).collect::<Vec<_>>();
        use Behaviour::{Buffer as B, Student as S, Teacher as T};
        assert_eq!(s(true, false), vec![S, S, T, T, S, S, T, T]);
        assert_eq!(s(true, true), vec![S, B, T, B, S, B, T, B]);
        assert_eq!(s(false, true), vec![S, B, S, B, S, B, S, B]);
        assert_eq!(s(false, false), vec![S; 8]);
    }
}
