//! One GFlowNet: a network, a learned log Z where the objective has one (TB, GAFN-TB), their
//! optimisers, an objective and a backward policy. The student and the teacher are two of these
//! (`docs/GFLOWNETS.md`, "Training step").

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use fab_core::ParamSet;
use fab_optim::{Adam, AdamConfig};
use rand::RngCore;

use crate::env::DiscreteEnv;
use crate::net::{grads_from_host, Forward, Network};
use crate::objectives::{augmented_trajectory_balance, detailed_balance, flow_matching, subtrajectory_balance, trajectory_balance};
use crate::policy::{backprop, log_probs, masked_softmax, BackwardPolicy};
use crate::traj::{fresh_prefixes, rollout, rollout_with_rows, Trajectories, NO_ACTION};
use crate::{Error, Result};

/// The training objective of a GFlowNet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Trajectory balance (learned log Z).
    Tb,
    /// Detailed balance (learned log F).
    Db,
    /// Sub-trajectory balance with geometric weight λ.
    SubTb {
        /// λ.
        lambda: f64,
    },
    /// Flow matching on edge flows.
    Fm,
    /// GAFN's trajectory balance augmented with intrinsic rewards (needs them per state).
    GafnTb,
}

impl Objective {
    /// Whether the objective learns a scalar log Z (TB, GAFN-TB); the others learn state or
    /// edge flows, whose value at s₀ is their log Z.
    pub fn learns_log_z(self) -> bool {
        matches!(self, Objective::Tb | Objective::GafnTb)
    }
}

/// The network pass of a sampled batch, kept for its training step.
#[derive(Debug)]
pub struct KeptForward {
    fwd: Forward,
    rows: Vec<usize>,
}

/// What one gradient step did.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Loss before the update.
    pub loss: f64,
    /// Pre-clip global gradient norm (network and log Z).
    pub grad_norm: f64,
    /// Whether the update was applied (finite loss and norm).
    pub applied: bool,
    /// Per-trajectory residuals before the update (TB: δ; others: see the objective).
    pub residuals: Vec<f64>,
    /// DB: δ_t per state slot (oriented like TB's δ: positive = under-sampled); empty otherwise.
    pub transition_residuals: Vec<f64>,
}

/// Optimiser settings of a GFlowNet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GfnOptim {
    /// Network learning rate.
    pub lr: f64,
    /// log Z learning rate.
    pub lr_log_z: f64,
    /// Global gradient-norm clip over network and log Z (`None`: no clipping).
    pub clip: Option<f64>,
}

/// A network, a scalar log Z for the objectives that learn one, Adam optimisers, an objective
/// and a backward policy.
#[derive(Debug)]
pub struct GflowNet {
    env: Arc<dyn DiscreteEnv>,
    net: Box<dyn Network>,
    /// TB and GAFN-TB's learned log Z and its optimiser; `None` for DB, SubTB and FM, whose
    /// estimate of log Z is the network's flow at s₀ ([`GflowNet::log_z`]).
    log_z: Option<(ParamSet, Adam)>,
    adam_net: Adam,
    objective: Objective,
    pb: BackwardPolicy,
    optim: GfnOptim,
    /// A used forward accumulator, recycled by the next batch (steady state without fresh
    /// allocations).
    spare: std::sync::Mutex<Option<Forward>>,
}

impl GflowNet {
    /// Wraps `net` (a learned log Z, where the objective has one, starts at 0).
    pub fn new(
        env: Arc<dyn DiscreteEnv>,
        net: Box<dyn Network>,
        objective: Objective,
        pb: BackwardPolicy,
        optim: GfnOptim,
    ) -> Result<Self> {
        let adam = |params: &ParamSet, lr: f64| -> Result<Adam> {
            let mut a = Adam::new(params, AdamConfig { lr, ..Default::default() }).map_err(Error::family)?;
            a.set_update_path(fab_optim::UpdatePath::Fused);
            Ok(a)
        };
        let adam_net = adam(net.params(), optim.lr)?;
        let log_z = if objective.learns_log_z() {
            let mut p = ParamSet::new();
            p.create("log_z", vec![0.0], &[1], DType::F32, &Device::Cpu)?;
            let a = adam(&p, optim.lr_log_z)?;
            Some((p, a))
        } else {
            None
        };
        Ok(Self { env, net, log_z, adam_net, objective, pb, optim, spare: std::sync::Mutex::new(None) })
    }

    /// The network.
    pub fn net(&self) -> &dyn Network {
        self.net.as_ref()
    }

    /// The objective.
    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// The backward policy.
    pub fn backward_policy(&self) -> BackwardPolicy {
        self.pb
    }

    /// The model's estimate of log Z = log Σ_x R(x): the learned scalar for TB and GAFN-TB; the
    /// learned state flow log F(s₀) for DB and SubTB; for FM the log of the total edge flow out
    /// of s₀. Each equals log Z at its objective's optimum (`docs/GFLOWNETS.md`, "Objectives").
    pub fn log_z(&self) -> f64 {
        if let Some((p, _)) = &self.log_z {
            return p.vars()[0].as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>()).map(|v| f64::from(v[0])).unwrap_or(f64::NAN);
        }
        let (na, nb) = (self.env.n_actions(), self.env.n_back_actions());
        let s0 = &fresh_prefixes(self.env.as_ref(), 1)[0].0;
        let out = self.net.forward(s0, false).out;
        if self.objective == Objective::Fm {
            let mut mask = vec![false; na];
            self.env.forward_mask(s0, &mut mask);
            let mut probs = vec![0.0; na];
            masked_softmax(&out[..na], &mask, &mut probs)
        } else {
            f64::from(out[na + nb])
        }
    }

    /// Masked forward probabilities of a batch of non-terminal states, mixed with ε-uniform
    /// exploration over the legal actions.
    pub fn action_probs(&self, states: &[i32], epsilon: f64) -> Vec<f64> {
        let out = self.net.forward(states, false).out;
        let mut mask = vec![false; self.env.n_actions()];
        self.probs_from_outputs(states, &out, epsilon, &mut mask)
    }

    fn probs_from_outputs(&self, states: &[i32], out: &[f32], epsilon: f64, mask: &mut [bool]) -> Vec<f64> {
        let (sl, na) = (self.env.state_len(), self.env.n_actions());
        let n_out = self.net.n_outputs();
        let n = states.len() / sl;
        let mut p = vec![0.0; n * na];
        for r in 0..n {
            self.env.forward_mask(&states[r * sl..(r + 1) * sl], mask);
            let row = &mut p[r * na..(r + 1) * na];
            masked_softmax(&out[r * n_out..r * n_out + na], mask, row);
            if epsilon > 0.0 {
                let legal = mask.iter().filter(|m| **m).count() as f64;
                for (v, &m) in row.iter_mut().zip(mask.iter()) {
                    *v = (1.0 - epsilon) * *v + if m { epsilon / legal } else { 0.0 };
                }
            }
        }
        p
    }

    /// `n` fresh trajectories from s₀ with exploration ε.
    pub fn sample(&self, n: usize, epsilon: f64, rng: &mut dyn RngCore) -> Trajectories {
        self.continue_from(fresh_prefixes(self.env.as_ref(), n), epsilon, rng)
    }

    /// [`sample`](Self::sample), keeping the network pass of sampling for the training step on
    /// this batch ([`train_step_with`](Self::train_step_with)): saves one forward pass.
    pub fn sample_kept(&self, n: usize, epsilon: f64, rng: &mut dyn RngCore) -> (Trajectories, KeptForward) {
        let mut acc = self.recycled();
        let na = self.env.n_actions();
        let n_out = self.net.n_outputs();
        let mut mask = vec![false; na];
        let mut probs = |states: &[i32]| {
            let r = self.net.forward_append(states, &mut acc);
            let out = &acc.out[r.start * n_out..r.end * n_out];
            self.probs_from_outputs(states, out, epsilon, &mut mask)
        };
        let (batch, rows) = rollout_with_rows(self.env.as_ref(), fresh_prefixes(self.env.as_ref(), n), &mut probs, rng);
        debug_assert_eq!(rows.len(), batch.n_states());
        (batch, KeptForward { fwd: acc, rows })
    }

    /// Completes the given prefixes (states flat, actions) with the forward policy.
    pub fn continue_from(&self, prefixes: Vec<(Vec<i32>, Vec<usize>)>, epsilon: f64, rng: &mut dyn RngCore) -> Trajectories {
        let mut probs = |s: &[i32]| self.action_probs(s, epsilon);
        rollout(self.env.as_ref(), prefixes, &mut probs, rng)
    }

    /// Per-trajectory TB residuals δ of a batch under the current parameters (no update).
    pub fn tb_residuals(&self, batch: &Trajectories, log_r: &[f64]) -> Vec<f64> {
        let fwd = self.net.forward(&batch.states, false);
        let lp = log_probs(self.env.as_ref(), batch, &fwd.out, self.net.n_outputs(), self.pb);
        trajectory_balance(batch, &lp, self.log_z(), log_r).residuals
    }

    /// Σ log P_F − Σ log P_B of each trajectory (for importance weights and bounds).
    pub fn path_log_ratio(&self, batch: &Trajectories) -> Vec<f64> {
        let fwd = self.net.forward(&batch.states, false);
        let lp = log_probs(self.env.as_ref(), batch, &fwd.out, self.net.n_outputs(), self.pb);
        (0..batch.len())
            .map(|k| {
                let r = batch.range(k);
                lp.log_pf[r.clone()].iter().sum::<f64>() - lp.log_pb[r].iter().sum::<f64>()
            })
            .collect()
    }

    /// One gradient step of the objective on `batch` with training log-rewards `log_r`.
    pub fn train_step(&mut self, batch: &Trajectories, log_r: &[f64]) -> Result<TrainOutcome> {
        self.train_step_intrinsic(batch, log_r, None)
    }

    /// As [`train_step`](Self::train_step), with intrinsic rewards per state for
    /// [`Objective::GafnTb`] (`log_r` is then the raw log R).
    pub fn train_step_intrinsic(&mut self, batch: &Trajectories, log_r: &[f64], intrinsic: Option<&[f64]>) -> Result<TrainOutcome> {
        self.train_step_with(batch, log_r, intrinsic, None)
    }

    /// The training step, optionally reusing the network pass kept while sampling this batch
    /// with this network's current parameters ([`sample_kept`](Self::sample_kept)).
    pub fn train_step_with(
        &mut self,
        batch: &Trajectories,
        log_r: &[f64],
        intrinsic: Option<&[f64]>,
        kept: Option<KeptForward>,
    ) -> Result<TrainOutcome> {
        let env = self.env.clone();
        let n_out = self.net.n_outputs();
        let (loss, grads, d_log_z, residuals, transition_residuals) = match self.objective {
            Objective::Fm => {
                let (loss, grads) = flow_matching(env.as_ref(), self.net.as_ref(), batch, log_r);
                (loss, grads, 0.0, Vec::new(), Vec::new())
            }
            objective => {
                let (fwd, rows) = self.batch_forward(batch, kept);
                let slot_out: Vec<f32> = match &rows {
                    None => fwd.out.clone(),
                    Some(rows) => rows.iter().flat_map(|&r| fwd.out[r * n_out..(r + 1) * n_out].iter().copied()).collect(),
                };
                let lp = log_probs(env.as_ref(), batch, &slot_out, n_out, self.pb);
                let (out, tr) = match objective {
                    Objective::Tb => (trajectory_balance(batch, &lp, self.log_z(), log_r), Vec::new()),
                    Objective::Db => {
                        let (o, d) = detailed_balance(batch, &lp, log_r);
                        (o, d.into_iter().map(|v| -v).collect())
                    }
                    Objective::SubTb { lambda } => (subtrajectory_balance(batch, &lp, log_r, lambda), Vec::new()),
                    Objective::GafnTb => {
                        let ri = intrinsic.ok_or_else(|| Error::Config("the GAFN objective needs intrinsic rewards".into()))?;
                        (augmented_trajectory_balance(env.as_ref(), batch, &lp, self.log_z(), log_r, ri), Vec::new())
                    }
                    Objective::Fm => unreachable!("handled above"),
                };
                let g = backprop(env.as_ref(), batch, &lp, &out.grads, n_out, self.pb);
                let g = match &rows {
                    None => g,
                    Some(rows) => {
                        let mut gr = vec![0f32; fwd.n * n_out];
                        for (slot, &r) in rows.iter().enumerate() {
                            for (d, v) in gr[r * n_out..(r + 1) * n_out].iter_mut().zip(&g[slot * n_out..(slot + 1) * n_out]) {
                                *d += v;
                            }
                        }
                        gr
                    }
                };
                let grads = self.net.backward(&fwd, &g);
                *self.spare.lock().expect("spare accumulator") = Some(fwd);
                (out.loss, grads, out.d_log_z, out.residuals, tr)
            }
        };
        let norm_sq: f64 = grads.iter().flatten().map(|&g| f64::from(g) * f64::from(g)).sum::<f64>() + d_log_z * d_log_z;
        let grad_norm = norm_sq.sqrt();
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Ok(TrainOutcome { loss, grad_norm, applied: false, residuals, transition_residuals });
        }
        // torch's clip_grad_norm_: scale by max/(norm + 1e-6) when that is below one.
        let coef = match self.optim.clip {
            Some(max) if max / (grad_norm + 1e-6) < 1.0 => max / (grad_norm + 1e-6),
            _ => 1.0,
        };
        let scaled = |gs: Vec<Vec<f32>>| -> Vec<Vec<f32>> {
            if coef == 1.0 {
                gs
            } else {
                gs.into_iter().map(|g| g.iter().map(|x| (f64::from(*x) * coef) as f32).collect()).collect()
            }
        };
        let g_net = grads_from_host(self.net.params(), scaled(grads))?;
        self.adam_net.step(self.net.params(), &g_net).map_err(Error::family)?;
        if let Some((p, adam_z)) = &mut self.log_z {
            let g_z = grads_from_host(p, scaled(vec![vec![d_log_z as f32]]))?;
            adam_z.step(p, &g_z).map_err(Error::family)?;
        }
        self.net.refresh()?;
        Ok(TrainOutcome { loss, grad_norm, applied: true, residuals, transition_residuals })
    }

    /// An empty forward accumulator, reusing the last one's memory.
    fn recycled(&self) -> Forward {
        let mut f = self.spare.lock().expect("spare accumulator").take().unwrap_or_else(Forward::empty);
        f.clear();
        f
    }

    /// The kept network pass for `batch` (completed with the states sampling never evaluated:
    /// final states), with the row of every state slot; or a fresh pass (rows = slots).
    fn batch_forward(&self, batch: &Trajectories, kept: Option<KeptForward>) -> (Forward, Option<Vec<usize>>) {
        let Some(KeptForward { mut fwd, mut rows }) = kept.filter(|k| k.fwd.is_kept() && k.rows.len() == batch.n_states()) else {
            let mut acc = self.recycled();
            self.net.forward_append(&batch.states, &mut acc);
            return (acc, None);
        };
        let missing: Vec<usize> = (0..rows.len()).filter(|&t| rows[t] == NO_ACTION).collect();
        if !missing.is_empty() {
            let states: Vec<i32> = missing.iter().flat_map(|&t| batch.state(t).iter().copied()).collect();
            let r = self.net.forward_append(&states, &mut fwd);
            for (&t, row) in missing.iter().zip(r) {
                rows[t] = row;
            }
        }
        (fwd, Some(rows))
    }

    /// Saves parameters and optimiser states as `<prefix>_*.safetensors` in `dir` (the
    /// `_log_z` and `_adam_log_z` files only for the objectives that learn a log Z).
    pub fn save(&self, dir: &Path, prefix: &str) -> Result<()> {
        self.net.params().save(&dir.join(format!("{prefix}_net.safetensors")))?;
        self.adam_net.save(&dir.join(format!("{prefix}_adam_net.safetensors"))).map_err(Error::family)?;
        if let Some((p, adam_z)) = &self.log_z {
            p.save(&dir.join(format!("{prefix}_log_z.safetensors")))?;
            adam_z.save(&dir.join(format!("{prefix}_adam_log_z.safetensors"))).map_err(Error::family)?;
        }
        Ok(())
    }

    /// Restores what [`save`](Self::save) wrote (log Z files that an objective without one
    /// finds, as checkpoints before 2026-12-07 hold, are ignored).
    pub fn load(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        self.net.params().load(&dir.join(format!("{prefix}_net.safetensors")))?;
        self.adam_net.load(&dir.join(format!("{prefix}_adam_net.safetensors"))).map_err(Error::family)?;
        if let Some((p, adam_z)) = &mut self.log_z {
            p.load(&dir.join(format!("{prefix}_log_z.safetensors")))?;
            adam_z.load(&dir.join(format!("{prefix}_adam_log_z.safetensors"))).map_err(Error::family)?;
        }
        self.net.refresh()
    }
}

/// The Adaptive Teacher's reward settings (`docs/GFLOWNETS.md`, "The teacher").
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherReward {
    /// Extra weight C on under-sampled objects (δ > 0).
    pub c: f64,
    /// Exponent α of the student's reward.
    pub alpha: f64,
    /// Log form log(1 + 10⁻³ + w·δ²) instead of w·δ².
    pub log: bool,
    /// Exponent β_T of the teacher's log-reward.
    pub beta: f64,
}

impl Default for TeacherReward {
    fn default() -> Self {
        Self { c: 19.0, alpha: 0.0, log: true, beta: 1.0 }
    }
}

impl TeacherReward {
    /// R_T for a student residual δ at an object with log-reward `log_r`:
    /// log(1 + 10⁻³ + (1 + C·1[δ>0])·δ²)·R^α (or the same without the log).
    pub fn reward(&self, delta: f64, log_r: f64) -> f64 {
        let w = 1.0 + if delta > 0.0 { self.c } else { 0.0 };
        let base = if self.log { (1.0 + 1e-3 + w * delta * delta).ln() } else { w * delta * delta };
        base * (self.alpha * log_r).exp()
    }

    /// R_T of every trajectory from its residual and log-reward.
    pub fn rewards(&self, residuals: &[f64], log_r: &[f64]) -> Vec<f64> {
        residuals.iter().zip(log_r).map(|(&d, &l)| self.reward(d, l)).collect()
    }

    /// Per-transition form (detailed balance): log(1.001 + w·δ_t²)·r_t^α, r_t = 1 except R(x) on
    /// the last transition.
    pub fn transition_reward(&self, delta: f64, log_r_last: Option<f64>) -> f64 {
        self.reward(delta, log_r_last.unwrap_or(0.0))
    }

    /// The teacher's training log-reward β_T·log(R_T + 1e-8).
    pub fn log_reward(&self, r_t: f64) -> f64 {
        self.beta * (r_t + 1e-8).ln()
    }
}
