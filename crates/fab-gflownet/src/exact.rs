//! Exact evaluation on enumerable environments: the terminal distribution of a policy by dynamic
//! programming over the DAG (no sampling noise), distances to the target, and fast sampling from
//! a tabulated policy (`docs/GFLOWNETS.md`, "Evaluation").

use rand::RngCore;

use crate::env::{DiscreteEnv, ExactTarget};
use crate::net::Network;
use crate::policy::masked_softmax;
use crate::traj::{draw_categorical, fresh_prefixes, rollout, Trajectories};

/// States evaluated per network call when tabulating a policy.
const CHUNK: usize = 4096;

/// The forward policy (ε = 0) of `net` at every non-terminal state of an enumerable `env`,
/// `[n_nonterminal, n_actions]`.
pub fn policy_table(env: &dyn DiscreteEnv, net: &dyn Network) -> Option<Vec<f64>> {
    let en = env.enumeration()?;
    let (sl, na, n_out) = (env.state_len(), env.n_actions(), net.n_outputs());
    let n = en.n_nonterminal();
    let mut table = vec![0.0; n * na];
    let mut states = Vec::with_capacity(CHUNK * sl);
    let mut mask = vec![false; na];
    let mut s = vec![0; sl];
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        states.clear();
        for i in start..end {
            en.nonterminal(i, &mut s);
            states.extend_from_slice(&s);
        }
        let out = net.forward(&states, false).out;
        for (r, i) in (start..end).enumerate() {
            env.forward_mask(&states[r * sl..(r + 1) * sl], &mut mask);
            masked_softmax(&out[r * n_out..r * n_out + na], &mask, &mut table[i * na..(i + 1) * na]);
        }
    }
    Some(table)
}

/// The exact distribution over terminal objects induced by the tabulated forward policy
/// (`policy_table`), by pushing probability mass through the DAG in topological order.
pub fn terminal_distribution(env: &dyn DiscreteEnv, table: &[f64]) -> Vec<f64> {
    let en = env.enumeration().expect("terminal_distribution needs an enumerable environment");
    let (sl, na) = (env.state_len(), env.n_actions());
    let stop = env.has_stop().then(|| na - 1);
    let mut reach = vec![0.0; en.n_nonterminal()];
    let mut q = vec![0.0; en.n_terminal()];
    reach[0] = 1.0;
    let (mut s, mut next) = (vec![0; sl], vec![0; sl]);
    for i in 0..en.n_nonterminal() {
        let m = reach[i];
        if m == 0.0 {
            continue;
        }
        en.nonterminal(i, &mut s);
        for a in 0..na {
            let p = table[i * na + a];
            if p == 0.0 {
                continue;
            }
            if Some(a) == stop {
                q[en.terminal_index(&s)] += m * p;
                continue;
            }
            next.copy_from_slice(&s);
            env.step(&mut next, a);
            if env.is_forced_terminal(&next) {
                q[en.terminal_index(&next)] += m * p;
            } else {
                reach[en.nonterminal_index(&next)] += m * p;
            }
        }
    }
    q
}

/// `n` trajectories from the tabulated policy (identical in distribution to sampling the
/// network at ε = 0, at a fraction of the cost).
pub fn sample_from_table(env: &dyn DiscreteEnv, table: &[f64], n: usize, rng: &mut dyn RngCore) -> Trajectories {
    let en = env.enumeration().expect("sample_from_table needs an enumerable environment");
    let (sl, na) = (env.state_len(), env.n_actions());
    let mut probs = |states: &[i32]| -> Vec<f64> {
        let mut p = Vec::with_capacity(states.len() / sl * na);
        for s in states.chunks_exact(sl) {
            let i = en.nonterminal_index(s);
            p.extend_from_slice(&table[i * na..(i + 1) * na]);
        }
        p
    };
    rollout(env, fresh_prefixes(env, n), &mut probs, rng)
}

/// Terminal objects only, sampled from the tabulated policy: faster than
/// [`sample_from_table`] for large evaluation sets (no trajectory storage).
pub fn sample_terminal_indices(env: &dyn DiscreteEnv, table: &[f64], n: usize, rng: &mut dyn RngCore) -> Vec<usize> {
    let en = env.enumeration().expect("sample_terminal_indices needs an enumerable environment");
    let (sl, na) = (env.state_len(), env.n_actions());
    let stop = env.has_stop().then(|| na - 1);
    let mut s0 = vec![0; sl];
    env.initial_state(&mut s0);
    let mut s = vec![0; sl];
    (0..n)
        .map(|_| {
            s.copy_from_slice(&s0);
            loop {
                let i = en.nonterminal_index(&s);
                let a = draw_categorical(&table[i * na..(i + 1) * na], rng);
                if Some(a) == stop {
                    return en.terminal_index(&s);
                }
                env.step(&mut s, a);
                if env.is_forced_terminal(&s) {
                    return en.terminal_index(&s);
                }
            }
        })
        .collect()
}

/// Distances between a model distribution `q` and the target `p` over terminal objects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distances {
    /// Mean over terminal objects of |q − p| (the reference's L1 convention).
    pub l1_mean: f64,
    /// Σ |q − p| (torchgfn's convention; twice the total variation).
    pub l1_sum: f64,
    /// Total variation ½ Σ |q − p|.
    pub tv: f64,
    /// KL(p ‖ q).
    pub kl_pq: f64,
    /// KL(q ‖ p).
    pub kl_qp: f64,
    /// Jensen–Shannon divergence (natural log).
    pub jsd: f64,
    /// Mass q puts on modes.
    pub mode_mass: f64,
    /// Mean over terminal objects of |q − p|·R(x) (the reference's reward-weighted L1).
    pub w_l1_mean: f64,
}

/// Distances of `q` to the exact target.
pub fn distances(target: &ExactTarget, q: &[f64]) -> Distances {
    let n = q.len() as f64;
    let (mut l1, mut w_l1, mut kl_pq, mut kl_qp, mut jsd, mut mode_mass) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, (&qi, &pi)) in q.iter().zip(&target.p).enumerate() {
        let d = (qi - pi).abs();
        l1 += d;
        w_l1 += d * target.log_reward[i].exp();
        if pi > 0.0 {
            kl_pq += pi * (pi / qi).ln();
        }
        if qi > 0.0 {
            kl_qp += qi * (qi / pi).ln();
        }
        let m = 0.5 * (pi + qi);
        if pi > 0.0 {
            jsd += 0.5 * pi * (pi / m).ln();
        }
        if qi > 0.0 {
            jsd += 0.5 * qi * (qi / m).ln();
        }
        if target.is_mode[i] {
            mode_mass += qi;
        }
    }
    Distances { l1_mean: l1 / n, l1_sum: l1, tv: 0.5 * l1, kl_pq, kl_qp, jsd, mode_mass, w_l1_mean: w_l1 / n }
}

/// The normalised histogram of terminal indices (`n_terminal` bins).
pub fn empirical(indices: impl IntoIterator<Item = usize>, n_terminal: usize) -> Vec<f64> {
    let mut h = vec![0.0; n_terminal];
    let mut count = 0usize;
    for i in indices {
        h[i] += 1.0;
        count += 1;
    }
    if count > 0 {
        for v in &mut h {
            *v /= count as f64;
        }
    }
    h
}
