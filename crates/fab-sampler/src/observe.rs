//! Observers of a training run: the driver tells them what happens; they log, draw progress or
//! print. None of them can change the run.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::eval::Metrics;
use crate::run::{metrics_json, summary};
use crate::{Error, Result};

/// Something that happened in a run.
#[derive(Debug)]
pub enum Event<'a> {
    /// Training starts (or resumes) at `iteration`.
    Start {
        /// Completed iterations.
        iteration: usize,
        /// Total iterations.
        n_iterations: usize,
        /// Whether this continues an earlier run.
        resumed: bool,
        /// The run directory.
        out: &'a Path,
    },
    /// An iteration finished.
    Step {
        /// Its number.
        iteration: usize,
        /// Total iterations.
        n_iterations: usize,
        /// The step report as JSON.
        json: &'a Value,
        /// Whether this step belongs in the metrics log (the log is thinned to ~500 lines).
        log: bool,
        /// A short text for a progress display.
        progress: &'a str,
    },
    /// A training-time evaluation finished.
    Eval {
        /// The iteration it evaluated.
        iteration: usize,
        /// Total iterations.
        n_iterations: usize,
        /// Its metrics.
        metrics: &'a Metrics,
    },
    /// The run stopped early with a checkpoint.
    Stopped {
        /// Completed iterations.
        iteration: usize,
        /// Why.
        reason: crate::run::StopReason,
        /// The run directory.
        out: &'a Path,
    },
    /// Training finished; the final evaluation follows.
    Done {
        /// Total iterations.
        n_iterations: usize,
        /// Training time over all segments.
        train_seconds: f64,
        /// Wall time of this invocation.
        this_invocation_seconds: f64,
    },
}

/// Receives the events of a run.
pub trait Observer {
    /// Handles one event.
    fn observe(&mut self, event: &Event<'_>) -> Result<()>;
}

/// Appends step and evaluation lines to `metrics.jsonl` (flushed after every event).
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `path` for appending.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    fn line(&mut self, v: &Value) -> Result<()> {
        writeln!(self.file, "{v}").and_then(|_| self.file.flush()).map_err(|e| Error::io(&self.path, e))
    }
}

impl Observer for MetricsLog {
    fn observe(&mut self, event: &Event<'_>) -> Result<()> {
        match event {
            Event::Step { json, log: true, .. } => self.line(json),
            Event::Eval { metrics, .. } => self.line(&metrics_json("eval", metrics)),
            _ => Ok(()),
        }
    }
}

/// A progress bar on standard error with the latest step and evaluation, plus the lines a user
/// should see (resume, evaluations, stop, done).
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    draw_bar: bool,
    last_eval: String,
}

impl Progress {
    /// A progress display; with `draw_bar` a bar is drawn on standard error (indicatif hides it
    /// when that is not a terminal); the event lines are printed either way.
    pub fn new(draw_bar: bool) -> Self {
        Self { bar: ProgressBar::hidden(), draw_bar, last_eval: String::new() }
    }

    fn print(&self, line: String) {
        self.bar.suspend(|| eprintln!("{line}"));
    }
}

impl Observer for Progress {
    fn observe(&mut self, event: &Event<'_>) -> Result<()> {
        match event {
            Event::Start { iteration, n_iterations, resumed, out } => {
                if *resumed {
                    eprintln!("resuming {} at iteration {iteration}/{n_iterations}", out.display());
                }
                if self.draw_bar {
                    self.bar = ProgressBar::with_draw_target(Some(*n_iterations as u64), ProgressDrawTarget::stderr());
                    self.bar.set_style(
                        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}")
                            .expect("valid template")
                            .progress_chars("=> "),
                    );
                    self.bar.set_position(*iteration as u64);
                }
            }
            Event::Step { iteration, progress, .. } => {
                self.bar.set_position(*iteration as u64);
                let sep = if self.last_eval.is_empty() { "" } else { " | " };
                self.bar.set_message(format!("{progress}{sep}{}", self.last_eval));
            }
            Event::Eval { iteration, n_iterations, metrics } => {
                let ess = metrics.get("eval_ess_flow").or_else(|| metrics.get("eval_ess_model")).copied().unwrap_or(f64::NAN);
                self.last_eval = format!("ESS {ess:.3}");
                self.print(format!("[eval {iteration}/{n_iterations}] {}", summary(metrics)));
            }
            Event::Stopped { iteration, reason, out } => {
                self.bar.finish_and_clear();
                eprintln!("stopped at iteration {iteration} ({reason}); continue with `fab train --resume {}`", out.display());
            }
            Event::Done { n_iterations, train_seconds, this_invocation_seconds } => {
                self.bar.finish_and_clear();
                eprintln!("training done: {n_iterations} iterations in {train_seconds:.1} s ({this_invocation_seconds:.1} s this invocation); final evaluation…");
            }
        }
        Ok(())
    }
}
