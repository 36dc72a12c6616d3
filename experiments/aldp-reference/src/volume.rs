//! The Cartesian volume element of the flow coordinates, log|det ∂x/∂z|, as a log-density.
//!
//! Used as the *untempered reference* of replica exchange in flow coordinates: with
//! log p̃(z) = −E(x(z))/k_BT₀ + log|det ∂x/∂z| and r(z) = |det ∂x/∂z|, the tempered density
//! β(log p̃ − log r) + log r = −E/(k_B T₀/β) + log|det ∂x/∂z| is the molecule at the physical
//! temperature T₀/β.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use fab_core::{check_points, to_f64_vec, LogDensity};
use fab_targets::aldp::{InternalCoordinates, FLOW_DIM};

/// log r(z) = log|det ∂x/∂z| of [`InternalCoordinates`], in closed form:
/// ln b₂ + Σ_rows [2 ln b + ln|sin θ|] + Σ ln std, with b₂ the seed C–CA bond and (b, θ) the
/// bond and angle of every z-matrix row (the same expression as
/// [`InternalCoordinates::to_cartesian`]'s log-determinant; checked in the tests). It does not
/// depend on any dihedral. Non-positive bonds or a zero sin θ give −∞ with a zero gradient.
#[derive(Debug, Clone)]
pub struct CartesianVolume {
    ic: Arc<InternalCoordinates>,
    log_std_sum: f64,
}

impl CartesianVolume {
    /// The volume element of `ic`.
    pub fn new(ic: Arc<InternalCoordinates>) -> Self {
        let log_std_sum = ic.stds().iter().map(|s| s.ln()).sum();
        Self { ic, log_std_sum }
    }

    /// log r and ∇log r of one configuration (`z`: 60 values); `g` receives the gradient.
    pub fn eval_one(&self, z: &[f64], g: &mut [f64]) -> f64 {
        let (m, s) = (self.ic.means(), self.ic.stds());
        g.fill(0.0);
        let b2 = z[1] * s[1] + m[1];
        if b2.is_nan() || b2 <= 0.0 {
            return f64::NEG_INFINITY;
        }
        let mut lr = b2.ln() + self.log_std_sum;
        g[1] = s[1] / b2;
        for row in 0..19 {
            let (ib, ia) = (3 * row + 3, 3 * row + 4);
            let b = z[ib] * s[ib] + m[ib];
            let th = z[ia] * s[ia] + m[ia];
            let sn = th.sin();
            if b.is_nan() || b <= 0.0 || sn == 0.0 || !sn.is_finite() {
                g.fill(0.0);
                return f64::NEG_INFINITY;
            }
            lr += 2.0 * b.ln() + sn.abs().ln();
            g[ib] = 2.0 * s[ib] / b;
            g[ia] = s[ia] * th.cos() / sn;
        }
        lr
    }
}

impl LogDensity for CartesianVolume {
    fn dim(&self) -> usize {
        FLOW_DIM
    }
    fn log_prob(&self, z: &Tensor) -> fab_core::Result<Tensor> {
        Ok(self.log_prob_and_grad(z)?.0)
    }
    fn log_prob_and_grad(&self, z: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        let n = check_points(z, FLOW_DIM)?;
        let v = to_f64_vec(z)?;
        let mut lr = Vec::with_capacity(n);
        let mut g = vec![0.0; n * FLOW_DIM];
        for (zi, gi) in v.chunks(FLOW_DIM).zip(g.chunks_mut(FLOW_DIM)) {
            lr.push(self.eval_one(zi, gi));
        }
        let lr = Tensor::from_vec(lr, n, &Device::Cpu)?.to_dtype(z.dtype())?;
        let g = Tensor::from_vec(g, (n, FLOW_DIM), &Device::Cpu)?.to_dtype(z.dtype())?;
        Ok((lr, g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fab_core::rng::normal_vec;

    #[test]
    fn matches_the_transform_log_det_and_finite_differences() {
        let ic = Arc::new(InternalCoordinates::alanine_dipeptide());
        let vol = CartesianVolume::new(ic.clone());
        let mut rng = fab_core::seeded_rng(3, 0);
        let mut g = vec![0.0; FLOW_DIM];
        for _ in 0..20 {
            let z: Vec<f64> = normal_vec(&mut rng, FLOW_DIM).iter().map(|v| 0.8 * v).collect();
            let lr = vol.eval_one(&z, &mut g);
            let (_, ld) = ic.to_cartesian(&z).unwrap();
            assert!((lr - ld).abs() < 1e-10 * ld.abs().max(1.0), "{lr} vs {ld}");
            // Central differences, h = 1e-6: truncation O(h²·|f'''|) ≈ 1e-11, rounding
            // O(1e-16·|f|/h) ≈ 3e-8; tolerance 1e-6 absolute.
            for i in 0..FLOW_DIM {
                let h = 1e-6;
                let (mut zp, mut zm) = (z.clone(), z.clone());
                zp[i] += h;
                zm[i] -= h;
                let mut t = vec![0.0; FLOW_DIM];
                let fd = (vol.eval_one(&zp, &mut t) - vol.eval_one(&zm, &mut t)) / (2.0 * h);
                assert!((fd - g[i]).abs() < 1e-6, "coordinate {i}: fd {fd} vs {}", g[i]);
            }
        }
        // A negative bond is outside the chart.
        let mut z = vec![0.0; FLOW_DIM];
        z[6] = -1e3;
        assert_eq!(vol.eval_one(&z, &mut g), f64::NEG_INFINITY);
        assert!(g.iter().all(|v| *v == 0.0));
    }
}
