//! The GFlowNet objectives as functions of log-probabilities: trajectory balance, detailed
//! balance, sub-trajectory balance (λ) and flow matching (`docs/GFLOWNETS.md`, "Objectives").
//!
//! Each returns the batch loss and its gradient with respect to its inputs, so the same code
//! serves the MLP, the tabular parameterisation and the finite-difference tests. `log_r` is the
//! training log-reward of each trajectory's final state (e.g. log(R + 1e-8), or the teacher's
//! reward), ignored for incomplete trajectories.

use crate::env::DiscreteEnv;
use crate::net::Network;
use crate::policy::{masked_softmax, BatchLogProbs, LogProbGrads};
use crate::traj::{Trajectories, NO_ACTION};

/// A batch loss with its gradients.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The loss.
    pub loss: f64,
    /// Gradients with respect to log P_F, log P_B, log F.
    pub grads: LogProbGrads,
    /// ∂L/∂log Z (0 for objectives without log Z).
    pub d_log_z: f64,
    /// Per-trajectory residuals (TB: δ; DB: the root of the trajectory's Σδ², signed by the
    /// sum of δ), for teacher rewards and loss priorities.
    pub residuals: Vec<f64>,
}

/// Trajectory balance: δ = log R(x) + Σ log P_B − log Z − Σ log P_F, loss = mean δ² (no ½, as the
/// reference). δ > 0 means x is under-sampled.
pub fn trajectory_balance(batch: &Trajectories, lp: &BatchLogProbs, log_z: f64, log_r: &[f64]) -> LossOutput {
    let n = batch.len();
    let mut grads = LogProbGrads::zeros(batch.n_states());
    let mut residuals = Vec::with_capacity(n);
    let (mut loss, mut d_log_z) = (0.0, 0.0);
    for k in 0..n {
        let r = batch.range(k);
        let sum_pf: f64 = lp.log_pf[r.clone()].iter().sum();
        let sum_pb: f64 = lp.log_pb[r.clone()].iter().sum();
        let delta = log_r[k] + sum_pb - log_z - sum_pf;
        residuals.push(delta);
        loss += delta * delta / n as f64;
        let g = 2.0 * delta / n as f64;
        d_log_z -= g;
        for t in r.start..r.end - 1 {
            grads.d_log_pf[t] -= g;
            grads.d_log_pb[t] += g;
        }
    }
    LossOutput { loss, grads, d_log_z, residuals }
}

/// Detailed balance: δ_t = log F(s_t) + log P_F(a_t|s_t) − log F(s_{t+1}) − log P_B(s_t|s_{t+1}),
/// with log F at a terminal object replaced by its log-reward; per-trajectory loss Σ_t δ_t²,
/// averaged over the batch. Also returns every δ_t (per state slot) for transition-level teacher
/// rewards.
pub fn detailed_balance(batch: &Trajectories, lp: &BatchLogProbs, log_r: &[f64]) -> (LossOutput, Vec<f64>) {
    let n = batch.len();
    let mut grads = LogProbGrads::zeros(batch.n_states());
    let mut residuals = Vec::with_capacity(n);
    let mut deltas = vec![0.0; batch.n_states()];
    let mut loss = 0.0;
    for k in 0..n {
        let r = batch.range(k);
        let last = r.end - 1;
        let (mut sq, mut signed) = (0.0, 0.0);
        for t in r.start..last {
            let terminal_next = t + 1 == last && batch.complete[k];
            let next_f = if terminal_next { log_r[k] } else { lp.log_f[t + 1] };
            let delta = lp.log_f[t] + lp.log_pf[t] - next_f - lp.log_pb[t];
            deltas[t] = delta;
            sq += delta * delta;
            signed += delta;
            let g = 2.0 * delta / n as f64;
            grads.d_log_f[t] += g;
            grads.d_log_pf[t] += g;
            grads.d_log_pb[t] -= g;
            if !terminal_next {
                grads.d_log_f[t + 1] -= g;
            }
        }
        loss += sq / n as f64;
        // DB's δ_t has the opposite orientation to TB's δ (positive = over-flow at s_t).
        residuals.push(-signed.signum() * sq.sqrt());
    }
    (LossOutput { loss, grads, d_log_z: 0.0, residuals }, deltas)
}

/// Sub-trajectory balance with geometric weights λ^{j−i} normalised per trajectory: for every
/// pair i < j of a trajectory, r_ij = log F(s_i) + Σ_{k=i}^{j−1}(log P_F − log P_B)_k − log F(s_j)
/// (log F at a terminal object = its log-reward); loss = Σ_ij w_ij r_ij², averaged over the batch.
pub fn subtrajectory_balance(batch: &Trajectories, lp: &BatchLogProbs, log_r: &[f64], lambda: f64) -> LossOutput {
    let n = batch.len();
    let mut grads = LogProbGrads::zeros(batch.n_states());
    let mut residuals = Vec::with_capacity(n);
    let mut loss = 0.0;
    for k in 0..n {
        let r = batch.range(k);
        let m = r.len(); // states s_0..s_{m−1}
        let terminal = batch.complete[k];
        let log_f = |j: usize| if j == m - 1 && terminal { log_r[k] } else { lp.log_f[r.start + j] };
        // c[j] = Σ_{t<j} (log P_F − log P_B)_t
        let mut c = vec![0.0; m];
        for j in 1..m {
            c[j] = c[j - 1] + lp.log_pf[r.start + j - 1] - lp.log_pb[r.start + j - 1];
        }
        let mut total_w = 0.0;
        for i in 0..m {
            for j in i + 1..m {
                total_w += lambda.powi((j - i) as i32);
            }
        }
        let mut dc = vec![0.0; m];
        let mut traj_loss = 0.0;
        for i in 0..m {
            for j in i + 1..m {
                let w = lambda.powi((j - i) as i32) / total_w;
                let res = log_f(i) + c[j] - c[i] - log_f(j);
                traj_loss += w * res * res;
                let g = 2.0 * w * res / n as f64;
                grads.d_log_f[r.start + i] += g;
                if !(j == m - 1 && terminal) {
                    grads.d_log_f[r.start + j] -= g;
                }
                dc[j] += g;
                dc[i] -= g;
            }
        }
        // ∂c[j]/∂(lpf_t − lpb_t) = 1 for t < j.
        let mut acc = 0.0;
        for t in (0..m - 1).rev() {
            acc += dc[t + 1];
            grads.d_log_pf[r.start + t] += acc;
            grads.d_log_pb[r.start + t] -= acc;
        }
        loss += traj_loss / n as f64;
        residuals.push(traj_loss.sqrt());
    }
    LossOutput { loss, grads, d_log_z: 0.0, residuals }
}

/// GAFN's augmented trajectory balance (Pan et al. 2022): with intrinsic rewards r_i at every
/// state (`intrinsic`, per state slot, treated as constants) and F(s) = exp(log F),
/// u = log Z + Σ log P_F − log(R(x) + r_i(x) + 10⁻⁸) − Σ_t b_t, where b_t = log(P_B + r_i(s_{t+1})/F(s_{t+1}))
/// for transitions into non-terminal states, plain log P_B into a forced-terminal x, and 0 for
/// STOP; loss = mean u². `log_r` is the raw log R. Residuals are returned oriented like TB's δ
/// (−u).
pub fn augmented_trajectory_balance(
    env: &dyn DiscreteEnv,
    batch: &Trajectories,
    lp: &BatchLogProbs,
    log_z: f64,
    log_r: &[f64],
    intrinsic: &[f64],
) -> LossOutput {
    let n = batch.len();
    let stop = env.has_stop().then(|| env.n_actions() - 1);
    let mut grads = LogProbGrads::zeros(batch.n_states());
    let mut residuals = Vec::with_capacity(n);
    let (mut loss, mut d_log_z) = (0.0, 0.0);
    for k in 0..n {
        let r = batch.range(k);
        let last = r.end - 1;
        let target = (log_r[k].exp() + intrinsic[last] + 1e-8).ln();
        let mut b_sum = 0.0;
        // (slot, ∂b/∂log P_B, ∂b/∂log F(s_{t+1}))
        let mut parts = Vec::with_capacity(r.len());
        for t in r.start..last {
            if Some(batch.actions[t]) == stop {
                continue;
            }
            let into_terminal = t + 1 == last && batch.complete[k];
            if into_terminal {
                b_sum += lp.log_pb[t];
                parts.push((t, 1.0, 0.0));
            } else {
                let pb = lp.log_pb[t].exp();
                let extra = intrinsic[t + 1] * (-lp.log_f[t + 1]).exp();
                b_sum += (pb + extra).ln();
                parts.push((t, pb / (pb + extra), -extra / (pb + extra)));
            }
        }
        let sum_pf: f64 = lp.log_pf[r.start..last].iter().sum();
        let u = log_z + sum_pf - target - b_sum;
        residuals.push(-u);
        loss += u * u / n as f64;
        let g = 2.0 * u / n as f64;
        d_log_z += g;
        for t in r.start..last {
            grads.d_log_pf[t] += g;
        }
        for (t, dpb, dlf) in parts {
            grads.d_log_pb[t] -= g * dpb;
            grads.d_log_f[t + 1] -= g * dlf;
        }
    }
    LossOutput { loss, grads, d_log_z, residuals }
}

/// One transition target of flow matching: its in-edges (row, action), the row whose outflow is
/// evaluated (non-terminal targets) and the log-reward (terminal targets).
type FmItem = (Vec<(usize, usize)>, Option<usize>, f64);

/// Flow matching with edge flows read from the forward-logit outputs (log F(s→s′) = output of
/// the action from s): for every transition target s′ of the batch, inflow = log Σ over parent
/// edges of F(p→s′) (the single STOP edge for a STOP-terminated x) and outflow = log R(s′) at a
/// terminal object, else log Σ of the legal outgoing edge flows of s′; loss = mean (in − out)²
/// over all transitions. Runs its own forward pass over the parents and targets; returns the
/// loss and the parameter gradients of `net`.
pub fn flow_matching(env: &dyn DiscreteEnv, net: &dyn Network, batch: &Trajectories, log_r: &[f64]) -> (f64, Vec<Vec<f32>>) {
    let sl = env.state_len();
    let na = env.n_actions();
    let nb = env.n_back_actions();
    let stop = env.has_stop().then(|| na - 1);
    // Rows to evaluate: parents (with the edge's action) and non-terminal targets.
    let mut rows: Vec<i32> = Vec::new();
    // Per transition: (list of (row, action) in-edges, Option<row> for the outflow, log R if terminal)
    let mut items: Vec<FmItem> = Vec::new();
    let push_row = |rows: &mut Vec<i32>, s: &[i32]| {
        rows.extend_from_slice(s);
        rows.len() / sl - 1
    };
    let mut bmask = vec![false; nb];
    for k in 0..batch.len() {
        let r = batch.range(k);
        for t in r.start..r.end - 1 {
            let a = batch.actions[t];
            debug_assert_ne!(a, NO_ACTION);
            let target = batch.state(t + 1).to_vec();
            let terminal = t + 1 == r.end - 1 && batch.complete[k];
            let mut edges = Vec::new();
            if Some(a) == stop {
                let row = push_row(&mut rows, batch.state(t));
                edges.push((row, a));
            } else {
                env.backward_mask(&target, true, &mut bmask);
                for b in 0..nb {
                    if bmask[b] {
                        let mut p = target.clone();
                        env.backward_step(&mut p, b);
                        let row = push_row(&mut rows, &p);
                        edges.push((row, env.forward_of(b)));
                    }
                }
            }
            let out_row = (!terminal).then(|| push_row(&mut rows, &target));
            items.push((edges, out_row, if terminal { log_r[k] } else { f64::NAN }));
        }
    }
    let fwd = net.forward(&rows, true);
    let n_out = net.n_outputs();
    let out = &fwd.out;
    let mut grad = vec![0f32; out.len()];
    let m = items.len() as f64;
    let mut loss = 0.0;
    let mut fmask = vec![false; na];
    let mut probs = vec![0.0; na];
    let mut w = Vec::new();
    for (edges, out_row, lr) in &items {
        w.clear();
        w.extend(edges.iter().map(|&(row, a)| f64::from(out[row * n_out + a])));
        let inflow = fab_core::stats::log_sum_exp(&w);
        let outflow = match out_row {
            Some(row) => {
                env.forward_mask(&rows[row * sl..(row + 1) * sl], &mut fmask);
                masked_softmax(&out[row * n_out..row * n_out + na], &fmask, &mut probs)
            }
            None => *lr,
        };
        let res = inflow - outflow;
        loss += res * res / m;
        let g = 2.0 * res / m;
        for (&(row, a), &wi) in edges.iter().zip(&w) {
            grad[row * n_out + a] += (g * (wi - inflow).exp()) as f32;
        }
        if let Some(row) = out_row {
            for j in 0..na {
                grad[row * n_out + j] -= (g * probs[j]) as f32;
            }
        }
    }
    (loss, net.backward(&fwd, &grad))
}
