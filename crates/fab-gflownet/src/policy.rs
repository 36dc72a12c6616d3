//! From network outputs to log P_F, log P_B and log F along a batch of trajectories, and back
//! (`docs/GFLOWNETS.md`, "Policies").

use crate::env::DiscreteEnv;
use crate::traj::{Trajectories, NO_ACTION};

/// How the backward policy is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackwardPolicy {
    /// Learned (softmax of the backward logits over valid parents) instead of uniform.
    pub learned: bool,
    /// Only parents that are valid non-terminal states count (the correct P_B). `false`
    /// reproduces the reference's fixed P_B on forced-terminal grid states.
    pub strict: bool,
}

/// log P_F, log P_B and log F along a batch, with what the chain rule needs.
#[derive(Debug, Clone)]
pub struct BatchLogProbs {
    /// log P_F(a_t | s_t) at each state slot t (0 at a trajectory's last state).
    pub log_pf: Vec<f64>,
    /// log P_B(s_t | s_{t+1}) at slot t (0 for STOP and at the last state).
    pub log_pb: Vec<f64>,
    /// log F(s_t) (the network's flow output) at every state.
    pub log_f: Vec<f64>,
    /// Masked forward probabilities per state `[n_states, n_actions]` (0 where illegal).
    pf_probs: Vec<f64>,
    /// Masked learned backward probabilities at s_{t+1}, stored at slot t (learned P_B only).
    pb_probs: Vec<f64>,
}

/// Masked softmax of `logits` into `probs`; returns log Σ exp over legal entries.
pub fn masked_softmax(logits: &[f32], mask: &[bool], probs: &mut [f64]) -> f64 {
    let mut max = f64::NEG_INFINITY;
    for (&l, &m) in logits.iter().zip(mask) {
        if m {
            max = max.max(f64::from(l));
        }
    }
    let mut sum = 0.0;
    for ((p, &l), &m) in probs.iter_mut().zip(logits).zip(mask) {
        *p = if m { (f64::from(l) - max).exp() } else { 0.0 };
        sum += *p;
    }
    for p in probs.iter_mut() {
        *p /= sum;
    }
    max + sum.ln()
}

/// Evaluates the policies of `out` (`[n_states, n_outputs]`, the layout of [`crate::net`]) along
/// `batch`.
pub fn log_probs(env: &dyn DiscreteEnv, batch: &Trajectories, out: &[f32], n_out: usize, pb: BackwardPolicy) -> BatchLogProbs {
    let na = env.n_actions();
    let nb = env.n_back_actions();
    let stop = env.has_stop().then(|| na - 1);
    let ns = batch.n_states();
    let mut log_pf = vec![0.0; ns];
    let mut log_pb = vec![0.0; ns];
    let mut log_f = vec![0.0; ns];
    let mut pf_probs = vec![0.0; ns * na];
    let mut pb_probs = if pb.learned { vec![0.0; ns * nb] } else { Vec::new() };
    let mut fmask = vec![false; na];
    let mut bmask = vec![false; nb];
    for t in 0..ns {
        let row = &out[t * n_out..(t + 1) * n_out];
        log_f[t] = f64::from(row[na + nb]);
        let a = batch.actions[t];
        if a == NO_ACTION {
            continue;
        }
        env.forward_mask(batch.state(t), &mut fmask);
        let lse = masked_softmax(&row[..na], &fmask, &mut pf_probs[t * na..(t + 1) * na]);
        log_pf[t] = f64::from(row[a]) - lse;
        if Some(a) == stop {
            continue;
        }
        let next = batch.state(t + 1);
        env.backward_mask(next, pb.strict, &mut bmask);
        let b = env.backward_of(a);
        if pb.learned {
            let nrow = &out[(t + 1) * n_out..(t + 2) * n_out];
            let lse = masked_softmax(&nrow[na..na + nb], &bmask, &mut pb_probs[t * nb..(t + 1) * nb]);
            log_pb[t] = f64::from(nrow[na + b]) - lse;
        } else {
            let k = bmask.iter().filter(|m| **m).count();
            log_pb[t] = -(k as f64).ln();
        }
    }
    BatchLogProbs { log_pf, log_pb, log_f, pf_probs, pb_probs }
}

/// Gradients of the loss with respect to the quantities of [`BatchLogProbs`], per state slot.
#[derive(Debug, Clone)]
pub struct LogProbGrads {
    /// ∂L/∂log P_F at each slot.
    pub d_log_pf: Vec<f64>,
    /// ∂L/∂log P_B at each slot.
    pub d_log_pb: Vec<f64>,
    /// ∂L/∂log F at each state.
    pub d_log_f: Vec<f64>,
}

impl LogProbGrads {
    /// Zero gradients for `n` state slots.
    pub fn zeros(n: usize) -> Self {
        Self { d_log_pf: vec![0.0; n], d_log_pb: vec![0.0; n], d_log_f: vec![0.0; n] }
    }
}

/// Chain rule from [`LogProbGrads`] to ∂L/∂outputs (`[n_states, n_outputs]`, f32).
pub fn backprop(
    env: &dyn DiscreteEnv,
    batch: &Trajectories,
    lp: &BatchLogProbs,
    g: &LogProbGrads,
    n_out: usize,
    pb: BackwardPolicy,
) -> Vec<f32> {
    let na = env.n_actions();
    let nb = env.n_back_actions();
    let stop = env.has_stop().then(|| na - 1);
    let ns = batch.n_states();
    let mut grad = vec![0f32; ns * n_out];
    for t in 0..ns {
        grad[t * n_out + na + nb] += g.d_log_f[t] as f32;
        let a = batch.actions[t];
        if a == NO_ACTION {
            continue;
        }
        let gpf = g.d_log_pf[t];
        if gpf != 0.0 {
            let probs = &lp.pf_probs[t * na..(t + 1) * na];
            let row = &mut grad[t * n_out..t * n_out + na];
            for (j, (o, p)) in row.iter_mut().zip(probs).enumerate() {
                let ind = if j == a { 1.0 } else { 0.0 };
                *o += (gpf * (ind - p)) as f32;
            }
        }
        if pb.learned && Some(a) != stop {
            let gpb = g.d_log_pb[t];
            if gpb != 0.0 {
                let b = env.backward_of(a);
                let probs = &lp.pb_probs[t * nb..(t + 1) * nb];
                let row = &mut grad[(t + 1) * n_out + na..(t + 1) * n_out + na + nb];
                for (j, (o, p)) in row.iter_mut().zip(probs).enumerate() {
                    let ind = if j == b { 1.0 } else { 0.0 };
                    *o += (gpb * (ind - p)) as f32;
                }
            }
        }
    }
    grad
}
