//! The traits a sampler family implements to be trained, evaluated, checkpointed and plotted by
//! the run driver.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use candle_core::DType;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::eval::{EvalSizes, Metrics};
use crate::memory::MemoryEstimate;
use crate::samples::{Draws, NamedSamples, WeightedSamples};
use crate::target::{PlotContext, Target};
use crate::Result;

/// The evaluation-facing side of a sampler: draw points with log q, and (optionally) the exact
/// model density.
pub trait Model {
    /// Dimension of a point.
    fn dim(&self) -> usize;

    /// Precision the sampler computes in (targets are evaluated in it too).
    fn dtype(&self) -> DType;

    /// `n` draws from the sampler as it is used for evaluation (no exploration noise), with
    /// log q. Consumes randomness from `rng` only.
    fn draw(&mut self, n: usize, rng: &mut dyn RngCore) -> Result<Draws>;

    /// The exact log-density of the model at host rows `[n, dim]`, if the family has one
    /// (flows); `None` for families with path-based bounds only.
    fn log_prob(&self, _x: &[f64]) -> Option<Result<Vec<f64>>> {
        None
    }
}

/// Per-step statistics of a family (written as fields of the `"kind": "train"` lines of
/// `metrics.jsonl`).
pub trait StepStats: Serialize + Debug + Clone {
    /// A short text for the progress line, e.g. `"ess_ais 0.41"`.
    fn progress(&self) -> String {
        String::new()
    }
}

impl StepStats for () {}

/// What one training iteration did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport<S> {
    /// Iteration number (1-based; filled in by the run driver).
    pub iteration: usize,
    /// Mean loss over the iteration's applied gradient steps (NaN if none was applied).
    pub loss: f64,
    /// Mean pre-clip gradient norm over applied steps (NaN if none).
    pub grad_norm: f64,
    /// Gradient steps skipped this iteration (non-finite loss or gradient).
    pub skipped_steps: usize,
    /// Learning rate of the last step.
    pub lr: f64,
    /// The family's own statistics.
    #[serde(flatten)]
    pub stats: S,
    /// Wall seconds of the iteration (filled in by the run driver).
    pub seconds: f64,
}

impl<S: Default> StepReport<S> {
    /// A report with no gradient step yet and default statistics.
    pub fn empty() -> Self {
        Self { iteration: 0, loss: f64::NAN, grad_norm: f64::NAN, skipped_steps: 0, lr: f64::NAN, stats: S::default(), seconds: 0.0 }
    }
}

/// A sampler family: one training iteration at a time, evaluation sample sets, and its whole
/// state for checkpoints. The run driver knows nothing else about it.
pub trait Sampler: Model {
    /// The family's per-step statistics.
    type Stats: StepStats;

    /// The target the sampler learns.
    fn target(&self) -> Arc<dyn Target>;

    /// One training iteration (the driver times it and numbers it).
    fn step(&mut self) -> Result<StepReport<Self::Stats>>;

    /// `n` draws with importance log-weights against the target, log w = log p̃ − log q.
    fn sample_weighted(&mut self, n: usize, rng: &mut dyn RngCore) -> Result<WeightedSamples> {
        let dtype = self.dtype();
        let target = self.target();
        self.draw(n, rng)?.weigh(target.density(), dtype)
    }

    /// The weighted sample sets an evaluation reports on. The default is one set, `"model"`,
    /// of `sizes.n_samples` draws weighted against the target. Families add refined sets (FAB:
    /// AIS toward p as `"ais"`).
    fn eval_sets(&mut self, sizes: &EvalSizes, rng: &mut dyn RngCore) -> Result<Vec<NamedSamples>> {
        let samples = self.sample_weighted(sizes.n_samples, rng)?;
        Ok(vec![NamedSamples { name: "model".into(), samples, primary: true }])
    }

    /// Metrics of the sampler itself added to every evaluation (e.g. a learned log Z).
    fn own_metrics(&self, _metrics: &mut Metrics) {}

    /// Why metrics the sampler computes itself are absent from the last evaluation (key →
    /// reason), e.g. a W2 the assignment solver refused.
    fn own_notes(&self, _notes: &mut BTreeMap<String, String>) {}

    /// Point sets worth plotting besides the evaluation samples (e.g. the replay buffer),
    /// row-major, at most `max` points each.
    fn extra_points(&self, _max: usize) -> Vec<(String, Vec<f64>)> {
        Vec::new()
    }

    /// Writes the sampler's own plots (e.g. distributions a family computes exactly) into
    /// `ctx.dir`, after the target's plots.
    fn plots(&self, _ctx: &PlotContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Writes the whole state (parameters, optimiser, buffers, adapted step sizes, RNG
    /// streams) into the existing directory `dir`.
    fn save_state(&self, dir: &Path) -> Result<()>;

    /// Restores what [`save_state`](Sampler::save_state) or
    /// [`save_model_state`](Sampler::save_model_state) wrote.
    fn load_state(&mut self, dir: &Path) -> Result<()>;

    /// Writes what drawing samples and evaluating need, for an exported model
    /// (`fab export`): families leave out what only training uses (FAB: the optimiser moments
    /// and the replay buffer). The default writes the whole state.
    fn save_model_state(&self, dir: &Path) -> Result<()> {
        self.save_state(dir)
    }
}

/// Run-level settings every family's configuration provides to the driver.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// Label of the run.
    pub name: String,
    /// Seed of every random stream.
    pub seed: u64,
    /// Total training iterations.
    pub n_iterations: usize,
    /// Evaluations during training, spaced as `linspace(1, n_iterations, n_evals)`.
    pub n_evals: usize,
    /// Checkpoint every this many iterations (0: only at stops and the end).
    pub checkpoint_every: usize,
    /// Also checkpoint when this many minutes of wall time passed since the last one (a run
    /// killed by the out-of-memory killer or `kill -9` loses at most this much).
    pub checkpoint_minutes: Option<f64>,
    /// Which older checkpoints a run keeps on disk.
    pub keep_checkpoints: KeepCheckpoints,
    /// Stop (with a checkpoint) after this many hours of training time.
    pub time_limit_hours: Option<f64>,
    /// Sizes of the training-time evaluations.
    pub eval_sizes: EvalSizes,
    /// Sizes of the final evaluation.
    pub final_eval_sizes: EvalSizes,
    /// Write PNG plots after the final evaluation.
    pub plots: bool,
}

/// Which checkpoints a run keeps as it writes new ones (`train.checkpoint_keep_last`,
/// `train.checkpoint_keep_every`). The newest complete checkpoint is always kept, so a run can
/// be resumed; the default keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepCheckpoints {
    /// Keep this many newest checkpoints (0: keep all).
    pub last: usize,
    /// Also keep every checkpoint whose iteration is a multiple of this (0: none beyond `last`),
    /// for evaluating the run part-way (`fab eval --iteration N`).
    pub every: usize,
}

impl KeepCheckpoints {
    /// Whether the checkpoint of `iteration`, the `rank`-th newest (0: newest), is kept.
    pub fn keeps(&self, iteration: usize, rank: usize) -> bool {
        self.last == 0 || rank < self.last || (self.every > 0 && iteration.is_multiple_of(self.every))
    }
}

/// The configuration of a sampler family: parsed from TOML with `key=value` overrides,
/// validated, written into the run directory, and able to build its sampler.
pub trait FamilyConfig: Clone + Debug + Serialize + DeserializeOwned {
    /// The sampler this configuration builds.
    type Sampler: Sampler;

    /// Parses TOML text with `key=value` overrides and validates; errors name the key.
    fn parse(text: &str, overrides: &[String]) -> Result<Self>;

    /// The resolved configuration as TOML.
    fn to_toml(&self) -> Result<String>;

    /// Run-level settings.
    fn run_settings(&self) -> RunSettings;

    /// Builds the target and the sampler, ready for step 1.
    fn build(&self) -> Result<Self::Sampler>;

    /// A lower bound on the memory the run needs (samples, activations kept for the backward
    /// pass, buffers, evaluation sets), each part named by the key that sets its size. The driver
    /// refuses a run that cannot fit before it builds anything or writes a file.
    fn memory_estimate(&self) -> MemoryEstimate;

    /// Keys that `fab train --resume DIR --set key=value` may change: those that do not alter
    /// what the checkpoint was trained with (e.g. a time limit). Others are refused by name.
    fn resume_safe_keys() -> &'static [&'static str] {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::KeepCheckpoints;

    #[test]
    fn which_checkpoints_are_kept() {
        let all = KeepCheckpoints::default();
        assert!((0..50).all(|rank| all.keeps(7, rank)));
        let keep = KeepCheckpoints { last: 2, every: 500 };
        assert!(keep.keeps(1234, 0) && keep.keeps(1233, 1));
        assert!(!keep.keeps(1232, 2) && keep.keeps(1000, 2) && keep.keeps(500, 40));
        let last_only = KeepCheckpoints { last: 1, every: 0 };
        assert!(last_only.keeps(1000, 0) && !last_only.keeps(1000, 1));
    }
}
