//! Grid worlds: the deceptive gridworld of the Adaptive Teacher paper and the standard hypergrid
//! (`docs/GFLOWNETS.md`, "Grid worlds").

use crate::env::{DiscreteEnv, Enumeration};

/// How trajectories end at the grid's far edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeRule {
    /// A state with a coordinate at H−1 is terminal by itself (the deceptive gridworld): no
    /// non-terminal state touches the edge, every action is legal in every non-terminal state,
    /// and terminal objects are the states with fewer than two coordinates at H−1.
    Forced,
    /// Increments of coordinates at H−1 are illegal and only STOP ends a trajectory (the standard
    /// hypergrid): every state of {0..H−1}^d is a terminal object.
    Masked,
}

/// The reward of a grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GridReward {
    /// The deceptive reward: with xᵢ = sᵢ/(H−1)·2 − 1 (computed in f64 in this order) and
    /// aᵢ = |xᵢ|, R = (−0.1·∏1[aᵢ > 0.2] + 2·∏1[0.6 < aᵢ < 0.8] + 0.1 + 1e-5)^β.
    Deceptive {
        /// Exponent β.
        beta: f64,
    },
    /// The standard hypergrid reward: with aᵢ = |sᵢ/(H−1) − 0.5|,
    /// R = R0 + R1·∏1[0.25 < aᵢ ≤ 0.5] + R2·∏1[0.3 < aᵢ < 0.4].
    Standard {
        /// Base reward R0.
        r0: f64,
        /// Outer-band reward R1.
        r1: f64,
        /// Inner-band reward R2.
        r2: f64,
    },
}

/// A d-dimensional grid {0..H−1}^d walked from the origin by unit increments.
///
/// Actions: `a < d` increments coordinate `a`; `a = d` is STOP. Backward action `b` decrements
/// coordinate `b`. The network input is the concatenation of d one-hot vectors of length H.
#[derive(Debug, Clone)]
pub struct Grid {
    ndim: usize,
    horizon: usize,
    edge: EdgeRule,
    reward: GridReward,
}

impl Grid {
    /// A grid; `ndim ≥ 1` and `horizon ≥ 2` are checked by the configuration.
    pub fn new(ndim: usize, horizon: usize, edge: EdgeRule, reward: GridReward) -> Self {
        assert!(ndim >= 1 && horizon >= 2, "grid needs ndim ≥ 1 and horizon ≥ 2");
        Self { ndim, horizon, edge, reward }
    }

    /// The deceptive gridworld (forced termination at H−1, deceptive reward with exponent β).
    pub fn deceptive(ndim: usize, horizon: usize, beta: f64) -> Self {
        Self::new(ndim, horizon, EdgeRule::Forced, GridReward::Deceptive { beta })
    }

    /// The standard hypergrid (STOP-only termination) with R1 = 0.5, R2 = 2 and the given R0.
    pub fn hypergrid(ndim: usize, horizon: usize, r0: f64) -> Self {
        Self::new(ndim, horizon, EdgeRule::Masked, GridReward::Standard { r0, r1: 0.5, r2: 2.0 })
    }

    /// Dimension d.
    pub fn ndim(&self) -> usize {
        self.ndim
    }

    /// Side length H.
    pub fn horizon(&self) -> usize {
        self.horizon
    }

    /// The edge rule.
    pub fn edge(&self) -> EdgeRule {
        self.edge
    }

    fn edge_count(&self, s: &[i32]) -> usize {
        let top = self.horizon as i32 - 1;
        s.iter().filter(|&&v| v == top).count()
    }

    /// Radix of non-terminal coordinates (H−1 with forced termination, H otherwise).
    fn nonterminal_radix(&self) -> usize {
        match self.edge {
            EdgeRule::Forced => self.horizon - 1,
            EdgeRule::Masked => self.horizon,
        }
    }

    /// (deceptive) whether every |xᵢ| lies in the mode band (0.6, 0.8), by the float rule.
    fn in_band(&self, s: &[i32]) -> bool {
        match self.reward {
            GridReward::Deceptive { .. } => s.iter().all(|&v| {
                let a = self.deceptive_coord(v).abs();
                0.6 < a && a < 0.8
            }),
            GridReward::Standard { .. } => s.iter().all(|&v| {
                let a = self.standard_coord(v);
                0.3 < a && a < 0.4
            }),
        }
    }

    fn deceptive_coord(&self, v: i32) -> f64 {
        v as f64 / (self.horizon - 1) as f64 * 2.0 - 1.0
    }

    fn standard_coord(&self, v: i32) -> f64 {
        (v as f64 / (self.horizon - 1) as f64 - 0.5).abs()
    }

    /// R(x) (not its log).
    pub fn reward(&self, x: &[i32]) -> f64 {
        match self.reward {
            GridReward::Deceptive { beta } => {
                let outer = x.iter().all(|&v| self.deceptive_coord(v).abs() > 0.2);
                let band = self.in_band(x);
                let r = -0.1 * f64::from(u8::from(outer)) + 2.0 * f64::from(u8::from(band)) + 0.1 + 1e-5;
                r.powf(beta)
            }
            GridReward::Standard { r0, r1, r2 } => {
                let outer = x.iter().all(|&v| {
                    let a = self.standard_coord(v);
                    0.25 < a && a <= 0.5
                });
                let band = self.in_band(x);
                r0 + r1 * f64::from(u8::from(outer)) + r2 * f64::from(u8::from(band))
            }
        }
    }

    fn dense_index(&self, s: &[i32], radix: usize) -> usize {
        s.iter().fold(0usize, |acc, &v| acc * radix + v as usize)
    }

    fn dense_state(&self, mut i: usize, radix: usize, s: &mut [i32]) {
        for k in (0..self.ndim).rev() {
            s[k] = (i % radix) as i32;
            i /= radix;
        }
    }
}

impl DiscreteEnv for Grid {
    fn name(&self) -> String {
        match self.reward {
            GridReward::Deceptive { .. } => format!("deceptive grid d={} H={}", self.ndim, self.horizon),
            GridReward::Standard { r0, .. } => format!("hypergrid d={} H={} R0={r0}", self.ndim, self.horizon),
        }
    }

    fn state_len(&self) -> usize {
        self.ndim
    }

    fn n_actions(&self) -> usize {
        self.ndim + 1
    }

    fn has_stop(&self) -> bool {
        true
    }

    fn obs_len(&self) -> usize {
        self.ndim * self.horizon
    }

    fn initial_state(&self, s: &mut [i32]) {
        s.fill(0);
    }

    fn observe(&self, s: &[i32], obs: &mut [f32]) {
        obs.fill(0.0);
        for (i, &v) in s.iter().enumerate() {
            obs[i * self.horizon + v as usize] = 1.0;
        }
    }

    fn forward_mask(&self, s: &[i32], mask: &mut [bool]) {
        let top = self.horizon as i32 - 1;
        for (m, &v) in mask.iter_mut().zip(s) {
            *m = v < top;
        }
        mask[self.ndim] = true;
    }

    fn step(&self, s: &mut [i32], a: usize) {
        s[a] += 1;
    }

    fn is_forced_terminal(&self, s: &[i32]) -> bool {
        self.edge == EdgeRule::Forced && self.edge_count(s) > 0
    }

    fn backward_mask(&self, s: &[i32], strict: bool, mask: &mut [bool]) {
        let top = self.horizon as i32 - 1;
        let at_edge = if self.edge == EdgeRule::Forced { self.edge_count(s) } else { 0 };
        for (i, m) in mask.iter_mut().enumerate() {
            // A parent must be non-terminal: with forced termination it may not keep a
            // coordinate at H−1, so only the edge coordinate can be undone.
            *m = s[i] > 0 && (!strict || at_edge == 0 || (at_edge == 1 && s[i] == top));
        }
    }

    fn backward_step(&self, s: &mut [i32], b: usize) {
        s[b] -= 1;
    }

    fn is_initial(&self, s: &[i32]) -> bool {
        s.iter().all(|&v| v == 0)
    }

    fn log_reward(&self, x: &[i32]) -> f64 {
        self.reward(x).ln()
    }

    fn is_mode(&self, x: &[i32]) -> bool {
        self.in_band(x)
    }

    fn enumeration(&self) -> Option<&dyn Enumeration> {
        Some(self)
    }
}

impl Enumeration for Grid {
    fn n_nonterminal(&self) -> usize {
        self.nonterminal_radix().pow(self.ndim as u32)
    }

    fn nonterminal(&self, i: usize, s: &mut [i32]) {
        self.dense_state(i, self.nonterminal_radix(), s);
    }

    fn nonterminal_index(&self, s: &[i32]) -> usize {
        self.dense_index(s, self.nonterminal_radix())
    }

    fn n_terminal(&self) -> usize {
        match self.edge {
            // (H−1)^d + d·(H−1)^(d−1)
            EdgeRule::Forced => {
                let h1 = self.horizon - 1;
                h1.pow(self.ndim as u32) + self.ndim * h1.pow(self.ndim as u32 - 1)
            }
            EdgeRule::Masked => self.horizon.pow(self.ndim as u32),
        }
    }

    fn terminal(&self, i: usize, x: &mut [i32]) {
        match self.edge {
            EdgeRule::Masked => self.dense_state(i, self.horizon, x),
            EdgeRule::Forced => forced_terminal_unrank(i, self.horizon, x),
        }
    }

    fn terminal_index(&self, x: &[i32]) -> usize {
        match self.edge {
            EdgeRule::Masked => self.dense_index(x, self.horizon),
            EdgeRule::Forced => forced_terminal_rank(x, self.horizon),
        }
    }

    fn n_states(&self) -> usize {
        self.horizon.pow(self.ndim as u32)
    }

    fn state_index(&self, s: &[i32]) -> usize {
        self.dense_index(s, self.horizon)
    }
}

/// Rank of `x` among the states of {0..H−1}^d with fewer than two coordinates at H−1, in dense
/// (mixed-radix, first coordinate most significant) order, without a table: counts the valid
/// states that precede `x` digit by digit.
fn forced_terminal_rank(x: &[i32], horizon: usize) -> usize {
    let d = x.len();
    let h1 = horizon - 1;
    let valid = |k: usize, e: usize| suffixes_with_edges_at_most(k, e, h1);
    let mut rank = 0;
    let mut edges_used = 0;
    for (pos, &v) in x.iter().enumerate() {
        let rest = d - pos - 1;
        for smaller in 0..v as usize {
            let e = edges_used + usize::from(smaller == h1);
            if e <= 1 {
                rank += valid(rest, 1 - e);
            }
        }
        edges_used += usize::from(v as usize == h1);
    }
    rank
}

/// Number of length-`k` coordinate suffixes with at most `e ∈ {0, 1}` coordinates at H−1
/// (`h1` = H−1).
fn suffixes_with_edges_at_most(k: usize, e: usize, h1: usize) -> usize {
    let none = h1.pow(k as u32);
    if e == 0 {
        none
    } else {
        none + k * h1.pow(k.saturating_sub(1) as u32)
    }
}

/// Inverse of [`forced_terminal_rank`].
fn forced_terminal_unrank(mut i: usize, horizon: usize, x: &mut [i32]) {
    let d = x.len();
    let h1 = horizon - 1;
    let mut edges_used = 0;
    for pos in 0..d {
        let rest = d - pos - 1;
        for v in 0..horizon {
            let e = edges_used + usize::from(v == h1);
            let count = if e <= 1 { suffixes_with_edges_at_most(rest, 1 - e, h1) } else { 0 };
            if i < count {
                x[pos] = v as i32;
                edges_used = e;
                break;
            }
            i -= count;
        }
    }
}
