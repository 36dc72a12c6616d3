//! Batches of trajectories, forward sampling with ε-exploration, and backward reconstruction of
//! trajectories from terminal objects (`docs/GFLOWNETS.md`, "Environments").

use rand::{Rng, RngCore};

use crate::env::DiscreteEnv;

/// Marks the slot of a trajectory's last state, which has no outgoing action.
pub const NO_ACTION: usize = usize::MAX;

/// A batch of (possibly partial) trajectories s₀ → … → sₙ, stored flat.
///
/// A trajectory terminated by STOP ends with a duplicate of its last non-terminal state (the
/// terminal object), reached by the STOP action. Partial trajectories (single stored transitions
/// for detailed-balance replay) do not start at s₀ and may end at a non-terminal state.
#[derive(Debug, Clone, Default)]
pub struct Trajectories {
    /// Integers per state.
    pub state_len: usize,
    /// All states, trajectory after trajectory, `[n_states, state_len]`.
    pub states: Vec<i32>,
    /// Start of each trajectory in states; `n_traj + 1` entries.
    pub offsets: Vec<usize>,
    /// Action taken at each state (`NO_ACTION` at the last state of each trajectory).
    pub actions: Vec<usize>,
    /// Whether each trajectory ends at a terminal object (all sampled ones do).
    pub complete: Vec<bool>,
    /// log R of the final state of each complete trajectory (NaN for incomplete ones).
    pub log_reward: Vec<f64>,
}

impl Trajectories {
    /// An empty batch.
    pub fn new(state_len: usize) -> Self {
        Self { state_len, states: Vec::new(), offsets: vec![0], actions: Vec::new(), complete: Vec::new(), log_reward: Vec::new() }
    }

    /// Number of trajectories.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total number of states.
    pub fn n_states(&self) -> usize {
        self.actions.len()
    }

    /// State `i` of the flat list.
    pub fn state(&self, i: usize) -> &[i32] {
        &self.states[i * self.state_len..(i + 1) * self.state_len]
    }

    /// Range of flat state indices of trajectory `k`.
    pub fn range(&self, k: usize) -> std::ops::Range<usize> {
        self.offsets[k]..self.offsets[k + 1]
    }

    /// The final state of trajectory `k`.
    pub fn last(&self, k: usize) -> &[i32] {
        self.state(self.offsets[k + 1] - 1)
    }

    /// Appends a trajectory given its states (flat) and the actions between them.
    pub fn push(&mut self, states: &[i32], actions: &[usize], complete: bool, log_reward: f64) {
        debug_assert_eq!(states.len(), (actions.len() + 1) * self.state_len);
        self.states.extend_from_slice(states);
        self.actions.extend_from_slice(actions);
        self.actions.push(NO_ACTION);
        self.offsets.push(self.actions.len());
        self.complete.push(complete);
        self.log_reward.push(log_reward);
    }

    /// Appends every trajectory of `other`.
    pub fn extend(&mut self, other: &Trajectories) {
        for k in 0..other.len() {
            let r = other.range(k);
            let acts = &other.actions[r.start..r.end - 1];
            self.push(&other.states[r.start * self.state_len..r.end * self.state_len], acts, other.complete[k], other.log_reward[k]);
        }
    }

    /// Final states of every trajectory, `[n_traj, state_len]`.
    pub fn terminals(&self) -> Vec<i32> {
        (0..self.len()).flat_map(|k| self.last(k).to_vec()).collect()
    }
}

/// Draws an action index from probabilities `p` (which sum to one up to rounding).
pub fn draw_categorical(p: &[f64], rng: &mut dyn RngCore) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &pi) in p.iter().enumerate() {
        if pi > 0.0 {
            acc += pi;
            last = i;
            if u < acc {
                return i;
            }
        }
    }
    last
}

/// Forward sampling of `n` trajectories from s₀ (or from given start prefixes), with the action
/// probabilities of a batch of states supplied by `probs` (`[m, n_actions]`, already masked and
/// normalised; exploration is mixed in by the caller's closure).
pub fn rollout(
    env: &dyn DiscreteEnv,
    prefixes: Vec<(Vec<i32>, Vec<usize>)>,
    probs: &mut dyn FnMut(&[i32]) -> Vec<f64>,
    rng: &mut dyn RngCore,
) -> Trajectories {
    rollout_with_rows(env, prefixes, probs, rng).0
}

/// [`rollout`], also returning for every state slot of the result the index of that state among
/// all rows passed to `probs` (in call order), or [`NO_ACTION`] for states never passed (prefix
/// states and final states): lets a caller reuse the network pass of sampling for training.
pub fn rollout_with_rows(
    env: &dyn DiscreteEnv,
    prefixes: Vec<(Vec<i32>, Vec<usize>)>,
    probs: &mut dyn FnMut(&[i32]) -> Vec<f64>,
    rng: &mut dyn RngCore,
) -> (Trajectories, Vec<usize>) {
    let sl = env.state_len();
    let na = env.n_actions();
    let stop = env.has_stop().then(|| na - 1);
    let n = prefixes.len();
    let mut states: Vec<Vec<i32>> = Vec::with_capacity(n);
    let mut actions: Vec<Vec<usize>> = Vec::with_capacity(n);
    let mut rows: Vec<Vec<usize>> = Vec::with_capacity(n);
    for (s, a) in prefixes {
        rows.push(vec![NO_ACTION; s.len() / sl]);
        states.push(s);
        actions.push(a);
    }
    let mut next_row = 0usize;
    let mut active: Vec<usize> = (0..n).collect();
    let mut batch = Vec::with_capacity(n * sl);
    while !active.is_empty() {
        batch.clear();
        for &k in &active {
            let s = &states[k];
            batch.extend_from_slice(&s[s.len() - sl..]);
        }
        let p = probs(&batch);
        let mut still = Vec::with_capacity(active.len());
        for (r, &k) in active.iter().enumerate() {
            *rows[k].last_mut().expect("a current state") = next_row + r;
            let a = draw_categorical(&p[r * na..(r + 1) * na], rng);
            let cur = states[k][states[k].len() - sl..].to_vec();
            let mut next = cur;
            let done = if Some(a) == stop {
                true
            } else {
                env.step(&mut next, a);
                env.is_forced_terminal(&next)
            };
            states[k].extend_from_slice(&next);
            actions[k].push(a);
            rows[k].push(NO_ACTION);
            if !done {
                still.push(k);
            }
        }
        next_row += active.len();
        active = still;
    }
    let mut out = Trajectories::new(sl);
    for k in 0..n {
        let x = &states[k][states[k].len() - sl..];
        let lr = env.log_reward(x);
        out.push(&states[k], &actions[k], true, lr);
    }
    (out, rows.concat())
}

/// The start prefixes of `n` fresh trajectories (s₀ only).
pub fn fresh_prefixes(env: &dyn DiscreteEnv, n: usize) -> Vec<(Vec<i32>, Vec<usize>)> {
    let mut s0 = vec![0; env.state_len()];
    env.initial_state(&mut s0);
    (0..n).map(|_| (s0.clone(), Vec::new())).collect()
}

/// Whether the trajectory ending at `x` was terminated by STOP (the final state is not
/// terminal by itself).
pub fn ends_with_stop(env: &dyn DiscreteEnv, x: &[i32]) -> bool {
    env.has_stop() && !env.is_forced_terminal(x)
}

/// A trajectory s₀ → x drawn backward from the terminal object `x`, choosing a uniformly random
/// valid parent at each step (STOP appended when `x` is not terminal by itself). Returns the
/// states (flat, forward order) and actions.
pub fn backward_path(env: &dyn DiscreteEnv, x: &[i32], rng: &mut dyn RngCore) -> (Vec<i32>, Vec<usize>) {
    let sl = env.state_len();
    let nb = env.n_back_actions();
    let mut rev_states: Vec<i32> = Vec::new();
    let mut rev_actions: Vec<usize> = Vec::new();
    let mut s = x.to_vec();
    if ends_with_stop(env, x) {
        rev_states.extend_from_slice(&s);
        rev_actions.push(env.n_actions() - 1);
    }
    let mut mask = vec![false; nb];
    while !env.is_initial(&s) {
        rev_states.extend_from_slice(&s);
        env.backward_mask(&s, true, &mut mask);
        let valid: Vec<usize> = (0..nb).filter(|&b| mask[b]).collect();
        assert!(!valid.is_empty(), "a non-initial state without a valid parent in {}", env.name());
        let b = valid[rng.random_range(0..valid.len())];
        env.backward_step(&mut s, b);
        rev_actions.push(env.forward_of(b));
    }
    rev_states.extend_from_slice(&s);
    let mut states = Vec::with_capacity(rev_states.len());
    for chunk in rev_states.chunks_exact(sl).rev() {
        states.extend_from_slice(chunk);
    }
    rev_actions.reverse();
    (states, rev_actions)
}

/// Backward trajectories (uniform valid parents) for each terminal object of `xs`.
pub fn backward_trajectories(env: &dyn DiscreteEnv, xs: &[i32], rng: &mut dyn RngCore) -> Trajectories {
    let sl = env.state_len();
    let mut out = Trajectories::new(sl);
    for x in xs.chunks_exact(sl) {
        let (s, a) = backward_path(env, x, rng);
        out.push(&s, &a, true, env.log_reward(x));
    }
    out
}
