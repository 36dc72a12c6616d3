//! The time-discretised process (`docs/DIFFUSION.md`, "The process"): T steps of length
//! Δt = 1/T from x₀ = 0, Gaussian forward transitions with a learned drift, and the fixed
//! backward policy — the discretised Brownian bridge to 0 with variance σ² per unit time.

use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// ½ log 2π.
pub const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_8;

/// The discretisation and the fixed variance scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Process {
    /// Dimension d.
    pub dim: usize,
    /// Number of steps T.
    pub n_steps: usize,
    /// σ² (`t_scale`): variance of the Brownian motion per unit time.
    pub t_scale: f64,
}

impl Process {
    /// Δt = 1/T.
    pub fn dt(&self) -> f64 {
        1.0 / self.n_steps as f64
    }

    /// The step times t_i = iΔt, i = 0..T−1 (the times at which the drift is evaluated).
    pub fn times(&self) -> Vec<f64> {
        (0..self.n_steps).map(|i| i as f64 * self.dt()).collect()
    }

    /// Mean factor a_i = i/(i+1) and variance v_i = σ²Δt·i/(i+1) of the backward step
    /// P_B(x_i | x_{i+1}) = N(a_i x_{i+1}, v_i I), for 1 ≤ i < T (step 0 is deterministic).
    pub fn bridge_coefficients(&self, i: usize) -> (f64, f64) {
        let a = i as f64 / (i as f64 + 1.0);
        (a, self.t_scale * self.dt() * a)
    }

    /// Backward paths from the end points `x_end` (`[n, d]`) to 0, sampled from P_B: a
    /// step-major array `[(T+1), n, d]` whose block T is `x_end` and block 0 is zeros.
    pub fn bridge_paths(&self, x_end: &[f64], rng: &mut dyn RngCore) -> Vec<f64> {
        let (t, d) = (self.n_steps, self.dim);
        let n = x_end.len() / d;
        let block = n * d;
        let mut x = vec![0.0; (t + 1) * block];
        x[t * block..].copy_from_slice(x_end);
        for i in (1..t).rev() {
            let (a, v) = self.bridge_coefficients(i);
            let s = v.sqrt();
            for j in 0..block {
                let z: f64 = StandardNormal.sample(rng);
                x[i * block + j] = a * x[(i + 1) * block + j] + s * z;
            }
        }
        x
    }

    /// log P_B(x_i | x_{i+1}) of step i for each of the paths whose states `x_i` and `x_next`
    /// (`[n, d]` each) are given, added to `out` (`[n]`); nothing at step 0, whose move is
    /// deterministic.
    pub fn add_log_pb_step(&self, i: usize, x_i: &[f64], x_next: &[f64], out: &mut [f64]) {
        if i == 0 {
            return;
        }
        let d = self.dim;
        let (a, v) = self.bridge_coefficients(i);
        let c = d as f64 * (HALF_LOG_2PI + 0.5 * v.ln());
        for ((o, xi), xn) in out.iter_mut().zip(x_i.chunks_exact(d)).zip(x_next.chunks_exact(d)) {
            let mut s = 0.0;
            for (u, w) in xi.iter().zip(xn) {
                let r = u - a * w;
                s += r * r / v;
            }
            *o += -0.5 * s - c;
        }
    }

    /// Σ_i log P_B(x_i | x_{i+1}) of each path of a step-major `[(T+1), n, d]` array (host, f64).
    pub fn log_pb_host(&self, x: &[f64], n: usize) -> Vec<f64> {
        let block = n * self.dim;
        let mut out = vec![0.0; n];
        for i in 1..self.n_steps {
            self.add_log_pb_step(i, &x[i * block..(i + 1) * block], &x[(i + 1) * block..(i + 2) * block], &mut out);
        }
        out
    }
}
