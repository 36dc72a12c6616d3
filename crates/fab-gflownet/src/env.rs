//! The discrete-environment seam: what a GFlowNet needs to know about a space built by
//! sequences of actions (see `docs/GFLOWNETS.md`, "Environments").
//!
//! A state is a fixed-length vector of `i32`. Trajectories start at the initial state and apply
//! forward actions until they terminate, either by the STOP action (if the environment has one:
//! always the last forward action, which leaves the state unchanged) or because the state reached
//! is terminal by itself ("forced" termination). The terminal object `x` is the final state; a
//! state reached by STOP and a forced-terminal state must therefore never coincide.
//!
//! Backward actions undo forward actions: backward action `b` removes what forward action
//! [`forward_of(b)`](DiscreteEnv::forward_of) added. STOP has no backward action (P_B(STOP) = 1).

use std::fmt::Debug;

/// A discrete space built by forward actions, with a reward on its terminal objects.
pub trait DiscreteEnv: Send + Sync + Debug {
    /// A short name for messages and plots.
    fn name(&self) -> String;

    /// Integers per state.
    fn state_len(&self) -> usize;

    /// Forward actions, STOP included (as the last one) when [`has_stop`](Self::has_stop).
    fn n_actions(&self) -> usize;

    /// Whether the last forward action is STOP.
    fn has_stop(&self) -> bool;

    /// Backward actions (the forward actions other than STOP).
    fn n_back_actions(&self) -> usize {
        self.n_actions() - usize::from(self.has_stop())
    }

    /// Length of the network input of a state.
    fn obs_len(&self) -> usize;

    /// Writes the initial state s₀ into `s`.
    fn initial_state(&self, s: &mut [i32]);

    /// Writes the network input of `s` into `obs` (every entry is overwritten).
    fn observe(&self, s: &[i32], obs: &mut [f32]);

    /// The legal forward actions at the non-terminal state `s`.
    fn forward_mask(&self, s: &[i32], mask: &mut [bool]);

    /// Applies the legal non-STOP forward action `a` to `s` in place (whether the new state is
    /// terminal is [`is_forced_terminal`](Self::is_forced_terminal)).
    fn step(&self, s: &mut [i32], a: usize);

    /// Whether `s`, reached by a non-STOP action, is terminal by itself.
    fn is_forced_terminal(&self, s: &[i32]) -> bool;

    /// The backward actions at `s` whose parent is a valid non-terminal state. With
    /// `strict = false` an environment may allow structurally possible backward actions whose
    /// parent is not a valid state (the reference's fixed backward policy on forced-terminal
    /// grid states, `docs/GFLOWNETS.md`, "The backward-policy quirk"); environments without such a
    /// distinction ignore the flag.
    fn backward_mask(&self, s: &[i32], strict: bool, mask: &mut [bool]);

    /// Applies backward action `b` to `s` in place (s becomes the parent).
    fn backward_step(&self, s: &mut [i32], b: usize);

    /// The forward action that backward action `b` undoes.
    fn forward_of(&self, b: usize) -> usize {
        b
    }

    /// The backward action undoing the non-STOP forward action `a`.
    fn backward_of(&self, a: usize) -> usize {
        a
    }

    /// Whether `s` is the initial state.
    fn is_initial(&self, s: &[i32]) -> bool;

    /// log R(x) of a terminal object.
    fn log_reward(&self, x: &[i32]) -> f64;

    /// Whether the terminal object `x` is a mode ("goal") of the reward.
    fn is_mode(&self, _x: &[i32]) -> bool {
        false
    }

    /// The exact enumeration of the space, if it is small enough to have one.
    fn enumeration(&self) -> Option<&dyn Enumeration> {
        None
    }
}

/// Exact enumeration of a finite environment: every non-terminal state in an order where parents
/// come before children, every terminal object, and dense indices for both.
pub trait Enumeration: Send + Sync {
    /// Number of non-terminal states.
    fn n_nonterminal(&self) -> usize;

    /// Writes the `i`-th non-terminal state into `s` (index order is a topological order: a
    /// child always has a larger index than its parent; index 0 is s₀).
    fn nonterminal(&self, i: usize, s: &mut [i32]);

    /// Index of a non-terminal state (inverse of [`nonterminal`](Self::nonterminal)).
    fn nonterminal_index(&self, s: &[i32]) -> usize;

    /// Number of terminal objects.
    fn n_terminal(&self) -> usize;

    /// Writes the `i`-th terminal object into `x`.
    fn terminal(&self, i: usize, x: &mut [i32]);

    /// Index of a terminal object.
    fn terminal_index(&self, x: &[i32]) -> usize;

    /// Number of states that can appear in a trajectory (non-terminal and forced-terminal), for
    /// tabular parameterisations.
    fn n_states(&self) -> usize;

    /// Index in `0..n_states()` of any state that can appear in a trajectory.
    fn state_index(&self, s: &[i32]) -> usize;
}

/// The exact target over terminal objects, p(x) = R(x)/Z, with log Z and the modes.
#[derive(Debug, Clone)]
pub struct ExactTarget {
    /// log R(x) per terminal index.
    pub log_reward: Vec<f64>,
    /// p(x) per terminal index.
    pub p: Vec<f64>,
    /// log Z = log Σ R(x).
    pub log_z: f64,
    /// Whether each terminal object is a mode.
    pub is_mode: Vec<bool>,
}

impl ExactTarget {
    /// Enumerates the terminal objects of `env` (`None` without an enumeration).
    pub fn of(env: &dyn DiscreteEnv) -> Option<Self> {
        let en = env.enumeration()?;
        let n = en.n_terminal();
        let mut x = vec![0; env.state_len()];
        let mut log_reward = Vec::with_capacity(n);
        let mut is_mode = Vec::with_capacity(n);
        for i in 0..n {
            en.terminal(i, &mut x);
            log_reward.push(env.log_reward(&x));
            is_mode.push(env.is_mode(&x));
        }
        let log_z = fab_core::stats::log_sum_exp(&log_reward);
        let p = log_reward.iter().map(|l| (l - log_z).exp()).collect();
        Some(Self { log_reward, p, log_z, is_mode })
    }

    /// Number of modes.
    pub fn n_modes(&self) -> usize {
        self.is_mode.iter().filter(|m| **m).count()
    }
}
