//! Observers of a training run: the driver tells them what happens; they log, draw progress or
//! print. None of them can change the run.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
        /// Training time of the earlier segments, in seconds.
        train_seconds: f64,
        /// `train.time_limit_hours` in seconds (of training time), if set.
        time_limit_seconds: Option<f64>,
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
        /// Training time so far (all segments, this iteration included), in seconds.
        train_seconds: f64,
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
    /// Print a line every [`PROGRESS_LINE_SECONDS`] (no bar is visible: not a terminal, or
    /// `--no-progress`).
    lines: bool,
    last_line: Instant,
    pace: Pace,
    time_limit_seconds: Option<f64>,
    /// Where the time limit will stop the run, if before its end (empty otherwise).
    limit_note: String,
}

impl Progress {
    /// A progress display; with `draw_bar` a bar is drawn on standard error (indicatif hides it
    /// when that is not a terminal); the event lines are printed either way.
    pub fn new(draw_bar: bool) -> Self {
        let lines = !(draw_bar && std::io::stderr().is_terminal());
        Self {
            bar: ProgressBar::hidden(),
            draw_bar,
            last_eval: String::new(),
            lines,
            last_line: Instant::now(),
            pace: Pace::default(),
            time_limit_seconds: None,
            limit_note: String::new(),
        }
    }

    fn print(&self, line: String) {
        self.bar.suspend(|| eprintln!("{line}"));
    }
}

impl Observer for Progress {
    fn observe(&mut self, event: &Event<'_>) -> Result<()> {
        match event {
            Event::Start { iteration, n_iterations, resumed, out, train_seconds, time_limit_seconds } => {
                self.pace.start(Instant::now(), *iteration, *train_seconds);
                self.time_limit_seconds = *time_limit_seconds;
                self.limit_note.clear();
                self.last_line = Instant::now();
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
            Event::Step { iteration, n_iterations, progress, train_seconds, .. } => {
                if !self.pace.started() {
                    self.pace.start(Instant::now(), *iteration, *train_seconds);
                }
                let sep = if self.last_eval.is_empty() { "" } else { " | " };
                if self.last_line.elapsed().as_secs_f64() >= PROGRESS_LINE_SECONDS {
                    self.last_line = Instant::now();
                    let rate = self.pace.rate(self.last_line, *iteration, *train_seconds);
                    self.limit_note = self
                        .time_limit_seconds
                        .and_then(|l| self.pace.stop_iteration(l, *n_iterations).map(|stop| (l, stop)))
                        .map(|(l, stop)| format!("the {} time limit stops it near iteration {stop}", duration_text(l)))
                        .unwrap_or_default();
                    if self.lines {
                        let eta = (n_iterations - iteration) as f64 / rate.max(1e-12);
                        let limit = if self.limit_note.is_empty() { String::new() } else { format!("; {}", self.limit_note) };
                        eprintln!(
                            "[iteration {iteration}/{n_iterations}, {:.1} %, {rate:.2} it/s, eta {}{limit}] {progress}{sep}{}",
                            100.0 * *iteration as f64 / *n_iterations as f64,
                            duration_text(eta),
                            self.last_eval
                        );
                    }
                }
                self.bar.set_position(*iteration as u64);
                let limit = if self.limit_note.is_empty() { String::new() } else { format!(" | {}", self.limit_note) };
                self.bar.set_message(format!("{progress}{sep}{}{limit}", self.last_eval));
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

/// The window of [`Pace`]'s rate, in seconds.
pub const PACE_WINDOW_SECONDS: f64 = 600.0;

/// Iterations per second over about the last [`PACE_WINDOW_SECONDS`] (over the whole invocation
/// while it is shorter), from the marks of the progress lines. The rate since the start carries
/// a slow start for the rest of the run: `aldp-cpu`'s first iteration fills the buffer and is
/// evaluated (about a minute, some 35 ordinary iterations), and with the training-time
/// evaluations on top that rate still said 0.48 it/s and 3.4 h left at iteration 400 of a run
/// whose iterations took 1.7 s (0.6 it/s, 2.9 h for the 6 250).
///
/// The marks also carry the run's training time (what `train.time_limit_hours` counts: the
/// iterations, not the evaluations or checkpoints between them), from which
/// [`stop_iteration`](Pace::stop_iteration) says where a time limit will stop the run.
#[derive(Debug, Default)]
struct Pace {
    /// (time, completed iterations, training seconds), oldest first.
    marks: VecDeque<(Instant, usize, f64)>,
}

impl Pace {
    fn start(&mut self, at: Instant, iteration: usize, train_seconds: f64) {
        self.marks.clear();
        self.marks.push_back((at, iteration, train_seconds));
    }

    fn started(&self) -> bool {
        !self.marks.is_empty()
    }

    /// Marks `iteration` completed at `at` after `train_seconds` of training; the rate from the
    /// oldest mark kept, which is the newest one at least the window before `at` (or the first).
    fn rate(&mut self, at: Instant, iteration: usize, train_seconds: f64) -> f64 {
        self.marks.push_back((at, iteration, train_seconds));
        while self.marks.len() > 2 && at.saturating_duration_since(self.marks[1].0).as_secs_f64() >= PACE_WINDOW_SECONDS {
            self.marks.pop_front();
        }
        let (t0, i0, _) = self.marks[0];
        iteration.saturating_sub(i0) as f64 / at.saturating_duration_since(t0).as_secs_f64().max(1e-9)
    }

    /// The iteration after which a limit of `limit_seconds` of training time stops the run, at
    /// the window's training seconds per iteration, if that comes before `n_iterations` (the
    /// driver stops after the first iteration that reaches the limit). `None` without two marks.
    fn stop_iteration(&self, limit_seconds: f64, n_iterations: usize) -> Option<usize> {
        let (&(_, i0, s0), &(_, i1, s1)) = (self.marks.front()?, self.marks.back()?);
        if i1 <= i0 || s1 <= s0 {
            return None;
        }
        let per_iteration = (s1 - s0) / (i1 - i0) as f64;
        let left = ((limit_seconds - s1) / per_iteration).ceil().max(0.0);
        let stop = i1.saturating_add(left as usize);
        (stop < n_iterations).then_some(stop)
    }
}

/// Seconds between progress lines where no bar is drawn (training without a terminal, the long
/// loops of an evaluation).
pub const PROGRESS_LINE_SECONDS: f64 = 10.0;

/// `42 s`, `12.5 min`, `3.2 h`.
pub fn duration_text(seconds: f64) -> String {
    if !seconds.is_finite() {
        "?".into()
    } else if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// A progress line on standard error for long work outside the training loop (evaluation
/// sample sets, metrics over many samples): printed at most every [`PROGRESS_LINE_SECONDS`] and
/// never for work that ends sooner, so that the log of a non-interactive run shows the work goes
/// on without being flooded.
#[derive(Debug)]
pub struct ProgressLine {
    what: String,
    total: usize,
    started: Instant,
    last: Instant,
}

impl ProgressLine {
    /// Progress of `total` units of `what` (e.g. "flow samples").
    pub fn new(what: impl Into<String>, total: usize) -> Self {
        let now = Instant::now();
        Self { what: what.into(), total, started: now, last: now }
    }

    /// `done` units are finished: prints a line if the last one is old enough.
    pub fn update(&mut self, done: usize) {
        if self.last.elapsed().as_secs_f64() < PROGRESS_LINE_SECONDS {
            return;
        }
        self.last = Instant::now();
        let t = self.started.elapsed().as_secs_f64();
        let frac = done as f64 / self.total.max(1) as f64;
        let eta = if frac > 0.0 { t * (1.0 - frac) / frac } else { f64::INFINITY };
        eprintln!(
            "  {}: {done}/{} ({:.1} %, {} so far, eta {})",
            self.what,
            self.total,
            100.0 * frac,
            duration_text(t),
            duration_text(eta)
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_pace_forgets_a_slow_start_after_its_window() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut pace = Pace::default();
        assert!(!pace.started());
        pace.start(t0, 0, 0.0);
        // A first iteration of 60 s, then 1 iteration per 2 s, a mark every 10 s.
        assert!((pace.rate(at(60.0), 1, 60.0) - 1.0 / 60.0).abs() < 1e-12);
        let mut rate = 0.0;
        let mut t = 60.0;
        let mut it = 1;
        while t < 60.0 + 2.0 * PACE_WINDOW_SECONDS {
            t += 10.0;
            it += 5;
            rate = pace.rate(at(t), it, t);
            if t < PACE_WINDOW_SECONDS {
                // Within the window the slow start still counts: the rate since the start.
                assert!((rate - it as f64 / t).abs() < 1e-12, "t {t}");
            }
        }
        assert!((rate - 0.5).abs() < 1e-12, "rate {rate}");
        // The window holds between one window and one window plus a mark interval.
        let span = at(t).duration_since(pace.marks[0].0).as_secs_f64();
        assert!((PACE_WINDOW_SECONDS..PACE_WINDOW_SECONDS + 10.0 + 1e-9).contains(&span), "span {span}");
    }

    #[test]
    fn a_resumed_run_counts_from_its_resume_iteration() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        pace.start(t0, 4000, 7000.0);
        let rate = pace.rate(t0 + Duration::from_secs(100), 4050, 7100.0);
        assert!((rate - 0.5).abs() < 1e-12);
    }

    #[test]
    fn the_time_limit_is_projected_on_training_time_not_wall_time() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        assert_eq!(pace.stop_iteration(100.0, 10), None);
        pace.start(t0, 0, 0.0);
        assert_eq!(pace.stop_iteration(100.0, 10), None, "one mark has no rate");
        // 2 s of training per iteration, and after every 50 iterations an evaluation of 60 s
        // (wall time only); a mark every 5 iterations.
        let (mut wall, mut train) = (0.0, 0.0);
        for it in 1..=400 {
            wall += 2.0;
            train += 2.0;
            if it % 50 == 0 {
                wall += 60.0;
            }
            if it % 5 == 0 {
                pace.rate(t0 + Duration::from_secs_f64(wall), it, train);
            }
        }
        // 800 s of training so far; 1 000 s stop it after 100 more iterations, whatever the
        // evaluations cost in wall time.
        assert_eq!(pace.stop_iteration(1000.0, 6250), Some(500));
        assert_eq!(pace.stop_iteration(1001.0, 6250), Some(501), "the iteration that reaches the limit is the last");
        assert_eq!(pace.stop_iteration(1000.0, 500), None, "the run ends first");
        assert_eq!(pace.stop_iteration(1000.0, 501), Some(500));
        assert_eq!(pace.stop_iteration(500.0, 6250), Some(400), "a limit already passed stops it now");
    }
}
