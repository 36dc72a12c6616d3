//! Fixed-length bit sequences built left to right: a tree-shaped space, and the example of how a
//! user plugs in their own discrete space (`docs/GFLOWNETS.md`, "Bit sequences").
//!
//! A state is a vector of `L` entries in {−1 (not yet written), 0, 1}; forward action `b ∈ {0, 1}`
//! writes bit `b` at the first unwritten position; a sequence is terminal once all `L` bits are
//! written (there is no STOP). Every state has exactly one parent, so P_B = 1.
//!
//! Reward: a sum of Hamming kernels around `M` mode strings m₁…m_M,
//! R(x) = Σₖ exp(−β·Hamming(x, mₖ)), so Z = M·(1 + e^{−β})^L in closed form (each mode's
//! kernel sums to (1 + e^{−β})^L over the 2^L strings). The modes are the strings mₖ.

use crate::env::{DiscreteEnv, Enumeration};

/// Bit sequences of length `L` with the Hamming-kernel reward.
#[derive(Debug, Clone)]
pub struct BitSequence {
    len: usize,
    beta: f64,
    modes: Vec<Vec<i32>>,
}

impl BitSequence {
    /// Sequences of `len` bits (1 ≤ len ≤ 30), kernel sharpness `beta` > 0 and the given modes
    /// (each `len` bits of 0/1, distinct).
    pub fn new(len: usize, beta: f64, modes: Vec<Vec<i32>>) -> Self {
        assert!((1..=30).contains(&len), "bit sequences need 1 ≤ len ≤ 30");
        Self { len, beta, modes }
    }

    /// `n_modes` modes drawn deterministically from `seed` (bits of SplitMix64 outputs), distinct.
    pub fn with_random_modes(len: usize, beta: f64, n_modes: usize, seed: u64) -> Self {
        let mut modes: Vec<Vec<i32>> = Vec::new();
        let mut state = seed;
        while modes.len() < n_modes.min(1 << len.min(20)) {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let m: Vec<i32> = (0..len).map(|i| ((z >> i) & 1) as i32).collect();
            if !modes.contains(&m) {
                modes.push(m);
            }
        }
        Self::new(len, beta, modes)
    }

    /// The mode strings.
    pub fn modes(&self) -> &[Vec<i32>] {
        &self.modes
    }

    /// log Z = log M + L·log(1 + e^{−β}).
    pub fn log_z(&self) -> f64 {
        (self.modes.len() as f64).ln() + self.len as f64 * (-self.beta).exp().ln_1p()
    }

    fn written(&self, s: &[i32]) -> usize {
        s.iter().take_while(|&&v| v >= 0).count()
    }
}

impl DiscreteEnv for BitSequence {
    fn name(&self) -> String {
        format!("bit sequences L={} M={}", self.len, self.modes.len())
    }

    fn state_len(&self) -> usize {
        self.len
    }

    fn n_actions(&self) -> usize {
        2
    }

    fn has_stop(&self) -> bool {
        false
    }

    fn obs_len(&self) -> usize {
        2 * self.len
    }

    fn initial_state(&self, s: &mut [i32]) {
        s.fill(-1);
    }

    fn observe(&self, s: &[i32], obs: &mut [f32]) {
        obs.fill(0.0);
        for (i, &v) in s.iter().enumerate() {
            if v >= 0 {
                obs[2 * i + v as usize] = 1.0;
            }
        }
    }

    fn forward_mask(&self, _s: &[i32], mask: &mut [bool]) {
        mask.fill(true);
    }

    fn step(&self, s: &mut [i32], a: usize) {
        let k = self.written(s);
        s[k] = a as i32;
    }

    fn is_forced_terminal(&self, s: &[i32]) -> bool {
        self.written(s) == self.len
    }

    fn backward_mask(&self, s: &[i32], _strict: bool, mask: &mut [bool]) {
        mask.fill(false);
        let k = self.written(s);
        if k > 0 {
            mask[s[k - 1] as usize] = true;
        }
    }

    fn backward_step(&self, s: &mut [i32], _b: usize) {
        let k = self.written(s);
        s[k - 1] = -1;
    }

    fn is_initial(&self, s: &[i32]) -> bool {
        s[0] < 0
    }

    fn log_reward(&self, x: &[i32]) -> f64 {
        let terms: Vec<f64> = self.modes.iter().map(|m| -self.beta * m.iter().zip(x).filter(|(a, b)| a != b).count() as f64).collect();
        fab_core::stats::log_sum_exp(&terms)
    }

    fn is_mode(&self, x: &[i32]) -> bool {
        self.modes.iter().any(|m| m.as_slice() == x)
    }

    fn enumeration(&self) -> Option<&dyn Enumeration> {
        (self.len <= 20).then_some(self as &dyn Enumeration)
    }
}

/// Prefixes are indexed by length, then by value (first bit most significant): the prefix of
/// length ℓ with value v has index 2^ℓ − 1 + v, a topological order.
impl Enumeration for BitSequence {
    fn n_nonterminal(&self) -> usize {
        (1 << self.len) - 1
    }

    fn nonterminal(&self, i: usize, s: &mut [i32]) {
        let l = (usize::BITS - (i + 1).leading_zeros() - 1) as usize;
        let v = i + 1 - (1 << l);
        s.fill(-1);
        for k in 0..l {
            s[k] = ((v >> (l - 1 - k)) & 1) as i32;
        }
    }

    fn nonterminal_index(&self, s: &[i32]) -> usize {
        self.state_index(s)
    }

    fn n_terminal(&self) -> usize {
        1 << self.len
    }

    fn terminal(&self, i: usize, x: &mut [i32]) {
        for k in 0..self.len {
            x[k] = ((i >> (self.len - 1 - k)) & 1) as i32;
        }
    }

    fn terminal_index(&self, x: &[i32]) -> usize {
        x.iter().fold(0, |acc, &b| acc * 2 + b as usize)
    }

    fn n_states(&self) -> usize {
        (1 << (self.len + 1)) - 1
    }

    fn state_index(&self, s: &[i32]) -> usize {
        let l = self.written(s);
        (1 << l) - 1 + s[..l].iter().fold(0, |acc, &b| acc * 2 + b as usize)
    }
}
