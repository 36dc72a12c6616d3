//! Open targets: anything with a log-density, plus optional capabilities.

use std::path::Path;

use candle_core::DType;
use fab_core::{ExactSample, LogDensity};

use crate::eval::{EvalContext, Metrics};
use crate::samples::NamedSamples;
use crate::Result;

/// Keeps or rejects sampled points before they are used for training (e.g. the
/// alanine-dipeptide chirality check, which keeps the L-form only).
pub trait SampleFilter: Send + Sync {
    /// For each row of `x` (`[n, dim]`, row-major), whether to keep it.
    fn keep(&self, x: &[f64], dim: usize) -> Vec<bool>;
}

/// A target distribution p = p̃ / Z a sampler learns.
///
/// Only [`density`](Target::density) is required: a user's own density gets every generic metric
/// (ESS, log Ẑ, and — with an exact sampler — test-set log-likelihood, forward KL, EUBO). The
/// optional capabilities add exact samples, a known log Z, a sample filter, and metrics and plots
/// that only make sense for this target.
pub trait Target: Send + Sync + std::fmt::Debug {
    /// The unnormalised log-density log p̃ (with ∇ₓ).
    fn density(&self) -> &dyn LogDensity;

    /// Dimension of a point.
    fn dim(&self) -> usize {
        self.density().dim()
    }

    /// An exact sampler of p, if there is one (test-set metrics, forward-KL training).
    fn exact(&self) -> Option<&dyn ExactSample> {
        None
    }

    /// log Z, if known.
    fn log_z(&self) -> Option<f64> {
        self.density().log_normalizer()
    }

    /// A filter applied to samples before training on them, if the target has one.
    fn filter(&self) -> Option<&dyn SampleFilter> {
        None
    }

    /// Statistics of one batch of training samples (`x` row-major, with their log-weights),
    /// logged with every training line: e.g. the share of a rare basin among the AIS samples
    /// FAB adds to its buffer. None by default.
    fn batch_stats(&self, _x: &[f64], _log_w: &[f64]) -> Vec<(String, f64)> {
        Vec::new()
    }

    /// Adds this target's own metrics (mode coverage, wells, Ramachandran KL, …) to
    /// `ctx.metrics`. The generic metrics are already there.
    fn metrics(&self, _ctx: &mut EvalContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Writes this target's own plots (samples over contours, Ramachandran plots, …).
    fn plots(&self, _ctx: &PlotContext<'_>) -> Result<()> {
        Ok(())
    }
}

/// What a target's plots may draw.
#[derive(Debug)]
pub struct PlotContext<'a> {
    /// Directory the PNG files go into.
    pub dir: &'a Path,
    /// Title prefix (the run's name).
    pub title: &'a str,
    /// The evaluation's sample sets (`"flow"`, `"ais"`, …).
    pub sets: &'a [NamedSamples],
    /// Further point sets the sampler exposes (e.g. the replay buffer), row-major.
    pub extra_points: &'a [(String, Vec<f64>)],
    /// The final evaluation's metrics.
    pub metrics: &'a Metrics,
    /// Precision to evaluate the target in.
    pub dtype: DType,
}

/// A target built from a density alone (and optionally an exact sampler): what a user's closure
/// or an ad-hoc density becomes.
pub struct DensityTarget {
    density: Box<dyn LogDensity>,
    exact: Option<Box<dyn ExactSample>>,
}

impl std::fmt::Debug for DensityTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DensityTarget").field("dim", &self.density.dim()).field("exact", &self.exact.is_some()).finish()
    }
}

impl DensityTarget {
    /// A target with only a log-density.
    pub fn new(density: Box<dyn LogDensity>) -> Self {
        Self { density, exact: None }
    }

    /// A target whose density can also be sampled exactly.
    pub fn with_exact<T: ExactSample + Clone + 'static>(target: T) -> Self {
        Self { density: Box::new(target.clone()), exact: Some(Box::new(target)) }
    }
}

impl Target for DensityTarget {
    fn density(&self) -> &dyn LogDensity {
        self.density.as_ref()
    }

    fn exact(&self) -> Option<&dyn ExactSample> {
        self.exact.as_deref()
    }
}
