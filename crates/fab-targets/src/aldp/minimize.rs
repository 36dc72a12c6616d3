//! Energy minimisation with L-BFGS (for `fab minimize --system aldp`).

use serde::{Deserialize, Serialize};

use super::forcefield::{AldpForceField, BatchScratch, EnergyTerms};
use super::internal::check_len;
use crate::{Result, TargetError};

/// Settings of [`AldpForceField::minimize`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MinimizeOptions {
    /// Stop when the largest force component is below this value (kJ/mol/nm).
    pub force_tolerance: f64,
    /// Maximum number of L-BFGS iterations.
    pub max_iterations: usize,
    /// Number of correction pairs kept by L-BFGS.
    pub history: usize,
    /// Largest displacement of any coordinate in one step (nm); keeps the first steps from
    /// jumping into atom overlaps.
    pub max_step_nm: f64,
}

impl Default for MinimizeOptions {
    fn default() -> Self {
        Self { force_tolerance: 1e-3, max_iterations: 20_000, history: 10, max_step_nm: 0.02 }
    }
}

/// Outcome of a minimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinimizeResult {
    /// Final positions, `[66]` nm.
    pub positions: Vec<f64>,
    /// Energy terms at the final positions, kJ/mol.
    pub energy: EnergyTerms,
    /// L-BFGS iterations performed.
    pub iterations: usize,
    /// Energy + force evaluations performed.
    pub evaluations: usize,
    /// Largest force component at the end, kJ/mol/nm.
    pub max_force: f64,
    /// Whether `max_force` reached the tolerance.
    pub converged: bool,
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

fn dotv(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl AldpForceField {
    /// Minimises the energy from `x0` (`[66]` nm) with L-BFGS and a backtracking (Armijo) line
    /// search, until the largest force component is below `opts.force_tolerance`.
    ///
    /// # Errors
    /// A shape error for the wrong length; [`TargetError::InvalidConfig`] for invalid options or
    /// a start point with a non-finite energy.
    pub fn minimize(&self, x0: &[f64], opts: &MinimizeOptions) -> Result<MinimizeResult> {
        check_len(x0, self.dim(), "ALDP start coordinates")?;
        if !(opts.force_tolerance > 0.0 && opts.max_step_nm > 0.0 && opts.history > 0) {
            return Err(TargetError::InvalidConfig(format!("invalid minimiser options {opts:?}")));
        }
        let d = self.dim();
        let mut s = BatchScratch::default();
        let mut x = x0.to_vec();
        let mut g = vec![0.0; d]; // gradient = −forces
        let mut e = self.eval(&x, &mut g, &mut s);
        g.iter_mut().for_each(|v| *v = -*v);
        if !e.is_finite() {
            return Err(TargetError::InvalidConfig("minimisation start point has a non-finite energy".into()));
        }
        let mut evaluations = 1;
        let mut hist_s: Vec<Vec<f64>> = Vec::new();
        let mut hist_y: Vec<Vec<f64>> = Vec::new();
        let mut iterations = 0;
        let mut x_new = vec![0.0; d];
        let mut g_new = vec![0.0; d];
        while iterations < opts.max_iterations && max_abs(&g) > opts.force_tolerance {
            iterations += 1;
            // Two-loop recursion: direction = −H g.
            let mut q = g.clone();
            let m = hist_s.len();
            let mut alpha = vec![0.0; m];
            for k in (0..m).rev() {
                let rho = 1.0 / dotv(&hist_y[k], &hist_s[k]);
                alpha[k] = rho * dotv(&hist_s[k], &q);
                q.iter_mut().zip(&hist_y[k]).for_each(|(qi, yi)| *qi -= alpha[k] * yi);
            }
            if m > 0 {
                let gamma = dotv(&hist_s[m - 1], &hist_y[m - 1]) / dotv(&hist_y[m - 1], &hist_y[m - 1]);
                q.iter_mut().for_each(|v| *v *= gamma);
            }
            for k in 0..m {
                let rho = 1.0 / dotv(&hist_y[k], &hist_s[k]);
                let beta = rho * dotv(&hist_y[k], &q);
                q.iter_mut().zip(&hist_s[k]).for_each(|(qi, si)| *qi += (alpha[k] - beta) * si);
            }
            let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
            let mut slope = dotv(&dir, &g);
            if slope.is_nan() || slope >= 0.0 {
                // Not a descent direction: restart from steepest descent.
                hist_s.clear();
                hist_y.clear();
                dir = g.iter().map(|v| -v).collect();
                slope = dotv(&dir, &g);
            }
            let mut step = (opts.max_step_nm / max_abs(&dir)).min(1.0);
            let mut accepted = false;
            let mut e_new = e;
            for _ in 0..60 {
                for i in 0..d {
                    x_new[i] = x[i] + step * dir[i];
                }
                e_new = self.eval(&x_new, &mut g_new, &mut s);
                evaluations += 1;
                if e_new.total.is_finite() && e_new.total <= e.total + 1e-4 * step * slope {
                    accepted = true;
                    break;
                }
                step *= 0.5;
            }
            if !accepted {
                if hist_s.is_empty() {
                    break; // no progress possible even along −g (at machine precision)
                }
                hist_s.clear();
                hist_y.clear();
                continue;
            }
            g_new.iter_mut().for_each(|v| *v = -*v);
            let sv: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
            let yv: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
            if dotv(&sv, &yv) > 1e-12 * dotv(&yv, &yv).sqrt() * dotv(&sv, &sv).sqrt() {
                if hist_s.len() == opts.history {
                    hist_s.remove(0);
                    hist_y.remove(0);
                }
                hist_s.push(sv);
                hist_y.push(yv);
            }
            std::mem::swap(&mut x, &mut x_new);
            std::mem::swap(&mut g, &mut g_new);
            e = e_new;
        }
        let max_force = max_abs(&g);
        Ok(MinimizeResult { positions: x, energy: e, iterations, evaluations, max_force, converged: max_force <= opts.force_tolerance })
    }
}
