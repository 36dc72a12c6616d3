//! Back-and-forth local search (`docs/GFLOWNETS.md`, "Training step"): destroy the end of a
//! trajectory by walking backward from its terminal object, rebuild it with the forward policy,
//! and keep the candidate if it scores strictly higher.

use rand::RngCore;

use crate::env::DiscreteEnv;
use crate::gfn::GflowNet;
use crate::traj::{backward_path, Trajectories};

/// Local-search settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalSearch {
    /// Rounds, each starting from the accepted batch.
    pub rounds: usize,
    /// Share of a trajectory's states (s₀ and a STOP duplicate included) that is destroyed.
    pub back_ratio: f64,
}

/// Runs `rounds` of back-and-forth search on `batch`, reconstructing with `policy` (ε = 0) and
/// accepting a candidate when `score` (higher is better, e.g. log R) strictly improves. Returns
/// the accepted batch and the number of accepted candidates.
pub fn local_search(
    env: &dyn DiscreteEnv,
    policy: &GflowNet,
    batch: &Trajectories,
    score: &mut dyn FnMut(&Trajectories) -> Vec<f64>,
    ls: LocalSearch,
    rng: &mut dyn RngCore,
) -> (Trajectories, usize) {
    let sl = env.state_len();
    let mut current = batch.clone();
    let mut current_score = score(&current);
    let mut accepted = 0;
    for _ in 0..ls.rounds {
        let mut prefixes = Vec::with_capacity(current.len());
        for k in 0..current.len() {
            let n = current.range(k).len();
            let n_back = (ls.back_ratio * n as f64).floor() as usize;
            let (states, actions) = backward_path(env, current.last(k), rng);
            let keep = n.saturating_sub(n_back).clamp(1, actions.len());
            prefixes.push((states[..keep * sl].to_vec(), actions[..keep - 1].to_vec()));
        }
        let candidates = policy.continue_from(prefixes, 0.0, rng);
        let cand_score = score(&candidates);
        let mut next = Trajectories::new(sl);
        for k in 0..current.len() {
            let (src, s) = if cand_score[k] > current_score[k] {
                accepted += 1;
                (&candidates, cand_score[k])
            } else {
                (&current, current_score[k])
            };
            let r = src.range(k);
            next.push(&src.states[r.start * sl..r.end * sl], &src.actions[r.start..r.end - 1], true, src.log_reward[k]);
            current_score[k] = s;
        }
        current = next;
    }
    (current, accepted)
}
