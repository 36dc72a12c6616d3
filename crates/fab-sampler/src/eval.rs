//! Evaluation on weighted samples: one code path for every sampler family.
//!
//! Order of work (and of random draws from the evaluation stream): the sampler's sample sets,
//! then the exact test set if the target has a sampler, then the target's own metrics. Metric
//! keys per set `S`: `eval_ess_S`, `S_log_z_estimate`, `S_fraction_finite`,
//! `S_log_z_abs_error` (known log Z); the primary set's error also as `log_z_abs_error`. With an
//! exact sampler and an exact model density: `kl_forward`, `eubo`, `ess_over_p`,
//! `test_set_mean_log_prob`, `test_set_log_prob_finite_fraction`. Definitions:
//! `docs/ALGORITHMS.md`, "Evaluation metrics".

use std::collections::BTreeMap;

use fab_core::stats::{log_mean_exp, mean};
use rand::RngCore;

use crate::sampler::{Model, Sampler};
use crate::samples::{log_prob_host, NamedSamples, WeightedSamples};
use crate::{Error, Result};

/// Named scalar metrics.
pub type Metrics = BTreeMap<String, f64>;

/// Sizes of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalSizes {
    /// Samples drawn from the model.
    pub n_samples: usize,
    /// Samples of a refined set (FAB: AIS samples).
    pub n_refined_samples: usize,
    /// Batch size for drawing the refined set.
    pub refined_batch: usize,
    /// Exact target samples for the test-set metrics (> 0).
    pub n_test: usize,
    /// Model samples for counting modes (targets with modes).
    pub n_mode_samples: usize,
    /// Repeats of a target's small-sample estimator test (GMM quadratic MAE; 0: one estimate on
    /// the evaluation's own samples).
    pub estimator_repeats: usize,
    /// Points in the exact W2 assignment and the MMD between the model's own draws (the first
    /// set) and exact test points: `w2`, `mmd`, with `w2_points` (0: not computed; at most
    /// `n_test` and the finite draws).
    pub n_w2: usize,
}

/// Exact target samples with the model's and the target's log-densities there.
#[derive(Debug, Clone, Default)]
pub struct TestSet {
    /// Row-major points.
    pub x: Vec<f64>,
    /// Model log q at the points.
    pub log_q: Vec<f64>,
    /// Unnormalised target log p̃ at the points.
    pub log_p: Vec<f64>,
}

/// What a target's metrics see: the model, the evaluation's sample sets, the test set, and the
/// evaluation's random stream.
pub struct EvalContext<'a> {
    /// The model (draws more samples; exact log q where available).
    pub model: &'a mut dyn Model,
    /// The evaluation's sample sets.
    pub sets: &'a [NamedSamples],
    /// The exact test set (targets with a sampler and models with an exact density).
    pub test: Option<&'a TestSet>,
    /// Sizes of this evaluation.
    pub sizes: &'a EvalSizes,
    /// The evaluation's random stream.
    pub rng: &'a mut dyn RngCore,
    /// Where metrics go.
    pub metrics: &'a mut Metrics,
    /// Why an expected metric is absent (key → reason), reported beside the metrics.
    pub notes: &'a mut BTreeMap<String, String>,
}

impl std::fmt::Debug for EvalContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalContext").field("sets", &self.sets.len()).field("sizes", self.sizes).finish()
    }
}

impl EvalContext<'_> {
    /// The sample set called `name`, if the sampler produced one.
    pub fn set(&self, name: &str) -> Option<&WeightedSamples> {
        self.sets.iter().find(|s| s.name == name).map(|s| &s.samples)
    }

    /// The model's own samples (the first set).
    pub fn model_samples(&self) -> Option<&WeightedSamples> {
        self.sets.first().map(|s| &s.samples)
    }

    /// Records a metric.
    pub fn insert(&mut self, key: impl Into<String>, value: f64) {
        self.metrics.insert(key.into(), value);
    }

    /// Records a metric from a fallible computation, or — on error — why it is absent.
    pub fn insert_or_note<E: std::fmt::Display>(&mut self, key: &str, value: std::result::Result<f64, E>) {
        record(self.metrics, self.notes, key, value);
    }

    /// Records why a metric is absent.
    pub fn note(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.notes.insert(key.into(), reason.into());
    }
}

/// Puts `value` under `key` in the metrics, or — on error — why it is absent in the notes.
fn record<E: std::fmt::Display>(m: &mut Metrics, notes: &mut BTreeMap<String, String>, key: &str, value: std::result::Result<f64, E>) {
    match value {
        Ok(v) => {
            m.insert(key.into(), v);
        }
        Err(e) => {
            notes.insert(key.into(), e.to_string());
        }
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// The metrics.
    pub metrics: Metrics,
    /// Metrics that could not be computed, with the reason.
    pub notes: BTreeMap<String, String>,
    /// The sample sets (for plots).
    pub sets: Vec<NamedSamples>,
}

/// Generic metrics of one sample set (see the module documentation for the keys).
pub fn set_metrics(m: &mut Metrics, set: &NamedSamples, log_z: Option<f64>) {
    let s = &set.samples;
    let name = &set.name;
    m.insert(format!("eval_ess_{name}"), s.ess());
    let lz = s.log_z_hat();
    m.insert(format!("{name}_log_z_estimate"), lz);
    m.insert(format!("{name}_fraction_finite"), s.fraction_finite());
    if let Some(z) = log_z {
        m.insert(format!("{name}_log_z_abs_error"), (lz - z).abs());
        if set.primary {
            m.insert("log_z_abs_error".into(), (lz - z).abs());
        }
    }
}

/// Test-set metrics from exact samples: forward KL(p‖q) = E_p[log p − log q] (on one draw),
/// EUBO = E_p[log p̃ − log q] ≥ log Z, ESS over p = 1 / E_p[p/q], the mean log q and the share
/// of test points with a finite log q.
pub fn test_set_metrics(m: &mut Metrics, test: &TestSet, log_z: Option<f64>) {
    let lz = log_z.unwrap_or(0.0);
    let diff: Vec<f64> = test.log_p.iter().zip(&test.log_q).map(|(p, q)| p - lz - q).collect();
    m.insert("kl_forward".into(), mean(&diff));
    let finite = test.log_q.iter().filter(|v| v.is_finite()).count();
    m.insert("test_set_log_prob_finite_fraction".into(), finite as f64 / test.log_q.len().max(1) as f64);
    m.insert("eubo".into(), mean(&diff) + lz);
    m.insert("ess_over_p".into(), (-log_mean_exp(&diff)).exp());
    m.insert("test_set_mean_log_prob".into(), mean(&test.log_q));
}

/// W2 by exact assignment and RBF-MMD² ([`fab_core::transport`]) between the first `n` finite
/// model draws and the first `n` exact points, n = min(`n_w2`, finite draws, exact points), as
/// `w2`, `mmd` and `w2_points` (a note instead when n < 2, and a note for `w2` alone when the
/// draws are too far out for an exact assignment in f64, as from a diverged or barely trained
/// model: the rest of the evaluation still completes).
pub fn distance_metrics(
    m: &mut Metrics,
    notes: &mut BTreeMap<String, String>,
    model: &[f64],
    exact: &[f64],
    dim: usize,
    n_w2: usize,
) -> Result<()> {
    let finite: Vec<f64> = model.chunks(dim).filter(|r| r.iter().all(|v| v.is_finite())).take(n_w2).flatten().copied().collect();
    let n = (finite.len() / dim).min(exact.len() / dim);
    if n < 2 {
        notes.insert("w2".into(), format!("{n} finite model draws or exact points (need 2)"));
        return Ok(());
    }
    let (x, y) = (&finite[..n * dim], &exact[..n * dim]);
    record(m, notes, "w2", fab_core::transport::wasserstein2(x, y, dim));
    m.insert("mmd".into(), fab_core::transport::mmd_rbf(x, y, dim, &fab_core::transport::MMD_SIGMAS).map_err(Error::Core)?);
    m.insert("w2_points".into(), n as f64);
    Ok(())
}

/// Evaluates a sampler: its sample sets, the generic metrics, the test set and the target's own
/// metrics.
pub fn evaluate<S: Sampler>(sampler: &mut S, sizes: &EvalSizes, rng: &mut dyn RngCore) -> Result<Evaluation> {
    if sizes.n_test == 0 {
        return Err(Error::Config("eval.n_test must be > 0 (with no test points the forward KL would read 0)".into()));
    }
    let target = sampler.target();
    let log_z = target.log_z();
    let dtype = sampler.dtype();
    let mut metrics = Metrics::new();
    let mut notes = BTreeMap::new();
    let sets = sampler.eval_sets(sizes, rng)?;
    for set in &sets {
        set_metrics(&mut metrics, set, log_z);
    }
    let test = match target.exact() {
        Some(exact) => {
            let x = fab_core::to_f64_vec(&exact.sample(sizes.n_test, rng)?)?;
            match sampler.log_prob(&x) {
                Some(lq) => {
                    let log_q = lq?;
                    let log_p = log_prob_host(target.density(), &x, target.dim(), dtype)?;
                    Some(TestSet { x, log_q, log_p })
                }
                None => {
                    notes.insert("kl_forward".into(), "the sampler has no exact density".into());
                    None
                }
            }
        }
        None => None,
    };
    if let Some(t) = &test {
        test_set_metrics(&mut metrics, t, log_z);
        if sizes.n_w2 > 0 {
            if let Some(set) = sets.first() {
                distance_metrics(&mut metrics, &mut notes, &set.samples.x, &t.x, target.dim(), sizes.n_w2)?;
            }
        }
    }
    sampler.own_metrics(&mut metrics);
    sampler.own_notes(&mut notes);
    let mut ctx = EvalContext { model: sampler, sets: &sets, test: test.as_ref(), sizes, rng, metrics: &mut metrics, notes: &mut notes };
    target.metrics(&mut ctx)?;
    Ok(Evaluation { metrics, notes, sets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_metrics_match_the_transport_functions() {
        let model = [0.0, 0.0, 1.0, 2.0, -1.0, 0.5, f64::NAN, 0.0];
        let exact = [0.1, 0.0, 1.0, 1.5, -1.2, 0.4, 3.0, 3.0];
        let (mut m, mut notes) = (Metrics::new(), BTreeMap::new());
        distance_metrics(&mut m, &mut notes, &model, &exact, 2, 10).unwrap();
        // The non-finite draw is skipped, so three model points meet the first three exact ones.
        let w2 = fab_core::transport::wasserstein2(&model[..6], &exact[..6], 2).unwrap();
        assert_eq!(m["w2"], w2);
        assert_eq!(m["w2_points"], 3.0);
        assert!(m["mmd"] > 0.0 && notes.is_empty());
    }

    #[test]
    fn draws_too_far_out_for_w2_leave_a_note_and_the_other_metrics() {
        // Finite, but the squared distances overflow f64: the assignment refuses them.
        let model = [1e200, 0.0, 0.0, 1e200, 1.0, 1.0];
        let exact = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let (mut m, mut notes) = (Metrics::new(), BTreeMap::new());
        distance_metrics(&mut m, &mut notes, &model, &exact, 2, 10).unwrap();
        assert!(!m.contains_key("w2"));
        assert!(notes["w2"].contains("too large"), "{notes:?}");
        assert!(m["mmd"].is_finite() && m["w2_points"] == 3.0);
    }
}
