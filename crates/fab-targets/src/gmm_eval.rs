//! The Gaussian mixture as a [`Target`]: exact samples, log Z, and its own metrics (quadratic
//! test-function error, mode coverage and per-mode mass) and plots (samples over contours).
//! Definitions: `docs/ALGORITHMS.md`, "Evaluation metrics".

use candle_core::{Device, Tensor};
use fab_core::stats::{mean, normalized_weights};
use fab_core::{ExactSample, LogDensity};
use fab_plot::{Bounds2d, ContourOptions, SamplePanel};
use fab_sampler::{EvalContext, PlotContext, Target, WeightedSamples};

use crate::gmm::{Gmm, QuadraticFunction};

/// The 0.999 quantile of the χ² distribution with `d` degrees of freedom (exact for d = 2,
/// Wilson–Hilferty otherwise, relative error < 1 % for d ≥ 3).
pub fn chi2_quantile_999(d: usize) -> f64 {
    if d == 2 {
        return -2.0 * 1e-3f64.ln();
    }
    let d = d as f64;
    let z = 3.090232306167813;
    let a = 2.0 / (9.0 * d);
    d * (1.0 - a + z * a.sqrt()).powi(3)
}

/// The metric key of component `c`'s mass ratio in a mixture of `k` components:
/// `mode_mass_ratio_07`, zero-padded to at least two digits (and to the width of `k − 1`), so
/// the keys sort in component order.
pub fn mode_mass_ratio_key(c: usize, k: usize) -> String {
    let width = k.saturating_sub(1).to_string().len().max(2);
    format!("mode_mass_ratio_{c:0width$}")
}

impl Gmm {
    /// Samples per component among the host rows `x` (`[n, dim]`): a sample counts for its most
    /// responsible component only if it lies within that component's 99.9 % ellipsoid (squared
    /// Mahalanobis distance at most the χ²_d quantile); samples far from every component count
    /// for none. Without that check an untrained N(0, I) model would "cover" every mode by
    /// nearest-neighbour assignment.
    ///
    /// # Errors
    /// If the component assignment fails (e.g. `x.len()` is not a multiple of the dimension).
    pub fn mode_counts(&self, x: &[f64], dtype: candle_core::DType) -> crate::Result<Vec<usize>> {
        let d = LogDensity::dim(self);
        let n = x.len() / d.max(1);
        let t = Tensor::from_slice(x, (n, d), &Device::Cpu)?.to_dtype(dtype)?;
        let assign = self.component_assignment(&t)?;
        let limit = chi2_quantile_999(d);
        let mut counts = vec![0usize; self.n_components()];
        for (i, a) in assign.iter().enumerate() {
            if let Some(c) = *a {
                let (mu, sd) = (&self.means()[c * d..(c + 1) * d], &self.stds()[c * d..(c + 1) * d]);
                let z2: f64 = (0..d).map(|j| ((x[i * d + j] - mu[j]) / sd[j]).powi(2)).sum();
                if z2 <= limit {
                    counts[c] += 1;
                }
            }
        }
        Ok(counts)
    }

    /// Relative errors (self-normalised importance-weighted, and unweighted over the points
    /// with non-zero weight) of the quadratic test function's expectation from weighted points.
    fn quadratic_bias(&self, f: &QuadraticFunction, truth: f64, s: &WeightedSamples) -> fab_sampler::Result<(f64, f64)> {
        let keep: Vec<usize> = (0..s.len()).filter(|&i| s.log_w[i].is_finite()).collect();
        let pts: Vec<f64> = keep.iter().flat_map(|&i| s.x[2 * i..2 * i + 2].to_vec()).collect();
        let lws: Vec<f64> = keep.iter().map(|&i| s.log_w[i]).collect();
        let t = Tensor::from_vec(pts, (keep.len(), 2), &Device::Cpu)?;
        let fx = f.eval(&t).map_err(fab_sampler::Error::family)?;
        let w = normalized_weights(&lws);
        let weighted: f64 = w.iter().zip(&fx).map(|(a, b)| a * b).sum();
        let nz: Vec<f64> = w.iter().zip(&fx).filter(|(a, _)| **a != 0.0).map(|(_, b)| *b).collect();
        Ok(((weighted - truth) / truth, (mean(&nz) - truth) / truth))
    }
}

impl Target for Gmm {
    fn density(&self) -> &dyn LogDensity {
        self
    }

    fn exact(&self) -> Option<&dyn ExactSample> {
        Some(self)
    }

    /// `mae_quadratic` (+ `_unweighted`, d = 2), `modes_covered`, `n_modes`,
    /// `mode_unassigned_fraction`, `mode_mass_tv`, `mode_mass_ratio_min/max` and each
    /// component's `mode_mass_ratio_NN` (see [`mode_mass_ratio_key`]).
    fn metrics(&self, ctx: &mut EvalContext<'_>) -> fab_sampler::Result<()> {
        let dtype = ctx.model.dtype();
        // Quadratic test function (d = 2 only), analytic expectation in place of the
        // reference's 1e7-sample Monte-Carlo value (1777.886 vs 1777.668: −0.012 % apart).
        if LogDensity::dim(self) == 2 {
            let f = QuadraticFunction::fab_2d();
            let truth = self.quadratic_expectation(&f).map_err(fab_sampler::Error::family)?;
            let repeats = ctx.sizes.estimator_repeats;
            let (mae, mae_u) = if repeats == 0 {
                let s = ctx.model_samples().cloned().unwrap_or_default();
                let (b, u) = self.quadratic_bias(&f, truth, &s)?;
                (b.abs(), u.abs())
            } else {
                let (mut sum, mut sum_u) = (0.0, 0.0);
                for _ in 0..repeats {
                    let s = ctx.model.draw(1000, ctx.rng)?.weigh(self, dtype)?;
                    let (b, u) = self.quadratic_bias(&f, truth, &s)?;
                    sum += b.abs();
                    sum_u += u.abs();
                }
                (sum / repeats as f64, sum_u / repeats as f64)
            };
            ctx.insert("mae_quadratic", mae);
            ctx.insert("mae_quadratic_unweighted", mae_u);
        }
        // Mode coverage and per-mode mass, from fresh model draws.
        let n_mode = ctx.sizes.n_mode_samples;
        let xm = ctx.model.draw(n_mode, ctx.rng)?.x;
        let counts = self.mode_counts(&xm, dtype).map_err(fab_sampler::Error::family)?;
        let k = self.n_components();
        let n = n_mode.max(1) as f64;
        let n_assigned: usize = counts.iter().sum();
        ctx.insert("modes_covered", counts.iter().filter(|&&c| c > 0).count() as f64);
        ctx.insert("n_modes", k as f64);
        ctx.insert("mode_unassigned_fraction", 1.0 - n_assigned as f64 / n);
        // Total variation between the model's per-mode masses (plus the mass near no mode) and
        // the mixture weights.
        let tv =
            0.5 * (counts.iter().zip(self.weights()).map(|(&c, w)| (c as f64 / n - w).abs()).sum::<f64>() + (1.0 - n_assigned as f64 / n));
        ctx.insert("mode_mass_tv", tv);
        // Per mode, (share of the mode-assigned samples) / (mixture weight): 1 for a model whose
        // mass is spread over the modes in the right proportions. Each mode's own key, and the
        // extremes over modes.
        if n_assigned > 0 {
            let ratios: Vec<f64> = counts.iter().zip(self.weights()).map(|(&c, w)| c as f64 / n_assigned as f64 / w).collect();
            for (c, r) in ratios.iter().enumerate() {
                ctx.insert(mode_mass_ratio_key(c, k), *r);
            }
            ctx.insert("mode_mass_ratio_min", ratios.iter().copied().fold(f64::INFINITY, f64::min));
            ctx.insert("mode_mass_ratio_max", ratios.iter().copied().fold(0.0, f64::max));
        } else {
            ctx.note("mode_mass_ratio_min", "no model sample lies within a component's 99.9 % ellipsoid");
        }
        Ok(())
    }

    /// `samples.png`: every sample set and extra point set over the contours of log p (d = 2).
    fn plots(&self, ctx: &PlotContext<'_>) -> fab_sampler::Result<()> {
        if LogDensity::dim(self) != 2 {
            return Ok(());
        }
        let lp = |x: f64, y: f64| -> f64 {
            Tensor::new(&[[x, y]], &Device::Cpu)
                .and_then(|t| t.to_dtype(self.dtype()))
                .ok()
                .and_then(|t| self.log_prob(&t).ok())
                .and_then(|t| fab_core::to_f64_vec(&t).ok())
                .map_or(f64::NAN, |v| v[0])
        };
        let mut panels: Vec<SamplePanel> = ctx.sets.iter().map(|s| SamplePanel::new(set_title(&s.name), points_2d(&s.samples.x))).collect();
        for (name, xs) in ctx.extra_points {
            if !xs.is_empty() {
                panels.push(SamplePanel::new(format!("{name} samples"), points_2d(xs)));
            }
        }
        fab_plot::contour_samples_2d(
            ctx.dir.join("samples.png"),
            &format!("{}: samples over contours of log p", ctx.title),
            &lp,
            plot_bounds(self.means(), self.stds()),
            &panels,
            &ContourOptions::default(),
        )?;
        Ok(())
    }
}

/// The square that holds every component of a 2-D mixture to 4 standard deviations, centred
/// on them (so a user's mixture far from the origin, or much smaller than the FAB GMM's
/// [−40, 40]², fills the panel).
fn plot_bounds(means: &[f64], stds: &[f64]) -> Bounds2d {
    let mut lo = [f64::INFINITY; 2];
    let mut hi = [f64::NEG_INFINITY; 2];
    for (m, s) in means.chunks_exact(2).zip(stds.chunks_exact(2)) {
        for a in 0..2 {
            lo[a] = lo[a].min(m[a] - 4.0 * s[a]);
            hi[a] = hi[a].max(m[a] + 4.0 * s[a]);
        }
    }
    let half = (0..2).map(|a| 0.5 * (hi[a] - lo[a])).fold(0.0f64, f64::max).max(1e-9);
    let centre = |a: usize| 0.5 * (lo[a] + hi[a]);
    Bounds2d { x: [centre(0) - half, centre(0) + half], y: [centre(1) - half, centre(1) + half] }
}

/// The panel title of a sample set.
pub(crate) fn set_title(name: &str) -> String {
    match name {
        "ais" => "AIS samples (target p)".into(),
        other => format!("{other} samples"),
    }
}

fn points_2d(xs: &[f64]) -> Vec<[f64; 2]> {
    xs.chunks_exact(2).take(fab_sampler::run::MAX_PLOT_POINTS).map(|r| [r[0], r[1]]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contour_bounds_follow_the_mixture() {
        // A small mixture far from the origin fills the panel.
        let b = plot_bounds(&[100.0, 100.0, 101.0, 100.0], &[0.1, 0.1, 0.1, 0.2]);
        assert!((b.x[0] - 99.6).abs() < 1e-9 && (b.x[1] - 101.4).abs() < 1e-9, "{b:?}");
        assert!((b.y[0] - 99.1).abs() < 1e-9 && (b.y[1] - 100.9).abs() < 1e-9, "{b:?}");
        // A symmetric mixture in [−40, 40]² with unit scales: [−44, 44]².
        let b = plot_bounds(&[-40.0, -40.0, 40.0, 40.0], &[1.0; 4]);
        assert_eq!(b, Bounds2d::square(-44.0, 44.0));
    }

    /// A model drawing exact 25GMM samples, with every other draw of one component discarded
    /// (so that component holds half its mass), as `Target::metrics` sees it.
    struct ThinnedMixture {
        gmm: Gmm,
        thinned: usize,
    }

    impl fab_sampler::Model for ThinnedMixture {
        fn dim(&self) -> usize {
            2
        }
        fn dtype(&self) -> candle_core::DType {
            candle_core::DType::F64
        }
        fn draw(&mut self, n: usize, rng: &mut dyn rand::RngCore) -> fab_sampler::Result<fab_sampler::Draws> {
            let mut x = Vec::with_capacity(2 * n);
            let mut skip = false;
            while x.len() < 2 * n {
                let (t, comps) = self.gmm.sample_with_components(n, rng).map_err(fab_sampler::Error::family)?;
                let v = fab_core::to_f64_vec(&t)?;
                for (i, &c) in comps.iter().enumerate() {
                    if c == self.thinned {
                        skip = !skip;
                        if skip {
                            continue;
                        }
                    }
                    if x.len() < 2 * n {
                        x.extend_from_slice(&v[2 * i..2 * i + 2]);
                    }
                }
            }
            Ok(fab_sampler::Draws { x, dim: 2, log_q: vec![0.0; n], exact_log_q: false })
        }
    }

    #[test]
    fn per_mode_mass_ratios_find_the_thinned_mode() {
        // Exact 25GMM draws with component 7 (mean (−5, 0)) at half its weight: its share of
        // the draws is 0.02 / 0.98, a ratio of 0.510 to 1/25, and every other mode's is
        // 1/0.98 = 1.020. With 10⁵ draws a ratio's sampling sd is ≈ 0.016 (≈ 0.011 for the
        // thinned mode), so ±0.06 is ≈ 4 sd; a key attached to the wrong component would put
        // 0.51 where 1.02 is expected.
        let gmm = Gmm::from_config(&crate::gmm::GmmConfig::grid25(), candle_core::DType::F64, &Device::Cpu).unwrap();
        let thinned = 7;
        assert_eq!(&gmm.means()[2 * thinned..2 * thinned + 2], &[-5.0, 0.0]);
        let mut model = ThinnedMixture { gmm: gmm.clone(), thinned };
        let sizes = fab_sampler::EvalSizes {
            n_samples: 0,
            n_refined_samples: 0,
            refined_batch: 1,
            n_test: 1,
            n_mode_samples: 100_000,
            estimator_repeats: 0,
            n_w2: 0,
        };
        let mut rng = fab_core::seeded_rng(11, 0);
        let mut metrics = fab_sampler::Metrics::new();
        let mut notes = std::collections::BTreeMap::new();
        let mut ctx = EvalContext {
            model: &mut model,
            sets: &[],
            test: None,
            sizes: &sizes,
            rng: &mut rng,
            metrics: &mut metrics,
            notes: &mut notes,
        };
        gmm.metrics(&mut ctx).unwrap();
        for c in 0..25 {
            let key = mode_mass_ratio_key(c, 25);
            let expected = if c == thinned { 0.5 / 0.98 } else { 1.0 / 0.98 };
            assert!((metrics[&key] - expected).abs() < 0.06, "{key}: {} against {expected}", metrics[&key]);
        }
        assert!((metrics["mode_mass_ratio_min"] - metrics["mode_mass_ratio_07"]).abs() < 1e-12);
        assert_eq!(metrics["modes_covered"], 25.0);
        // 0.1 % of exact draws lie outside their component's 99.9 % ellipsoid.
        assert!(metrics["mode_unassigned_fraction"] < 0.002, "{metrics:?}");
    }

    #[test]
    fn mode_mass_ratio_keys_sort_in_component_order() {
        assert_eq!(mode_mass_ratio_key(7, 25), "mode_mass_ratio_07");
        assert_eq!(mode_mass_ratio_key(39, 40), "mode_mass_ratio_39");
        assert_eq!(mode_mass_ratio_key(7, 150), "mode_mass_ratio_007");
        let keys: Vec<String> = (0..150).map(|c| mode_mass_ratio_key(c, 150)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn chi2_quantiles() {
        // Tabulated χ²_{0.999}: d=2 13.816, d=10 29.588, d=32 62.487.
        assert!((chi2_quantile_999(2) - 13.8155).abs() < 1e-3);
        assert!((chi2_quantile_999(10) / 29.588 - 1.0).abs() < 0.01);
        assert!((chi2_quantile_999(32) / 62.487 - 1.0).abs() < 0.01);
    }
}
