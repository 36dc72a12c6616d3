//! The experiment driver behind `fab train`, `fab eval` and `fab sample`: output directory,
//! resolved config, `metrics.jsonl`, `final_metrics.json`, checkpoints, progress and plots.
//!
//! Layout of an output directory:
//! ```text
//! OUT/config.toml            resolved configuration (written before step 1)
//! OUT/metrics.jsonl          one JSON object per logged iteration ("kind": "train") or evaluation ("kind": "eval")
//! OUT/final_metrics.json     final evaluation (paper-size)
//! OUT/checkpoints/iter_N/    flow, optimiser, buffer, AIS step sizes, RNG state
//! OUT/checkpoints/latest     name of the newest complete checkpoint
//! OUT/plots/*.png            samples over target contours, training curves
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::eval::{EvalSamples, Metrics};
use crate::{ExperimentConfig, IterInfo, Result, Trainer, TrainError};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks a running experiment to stop after the current iteration (with a checkpoint).
pub fn request_stop() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// How an experiment ended.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    /// All iterations done; the final evaluation's metrics.
    Finished(Metrics),
    /// Stopped early (interrupt or time limit) after a checkpoint at this iteration.
    Stopped {
        /// Completed iterations.
        iteration: usize,
        /// Why it stopped.
        reason: String,
    },
}

/// Options of [`run_experiment`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output directory.
    pub out: PathBuf,
    /// Continue the run in `out` from its latest checkpoint.
    pub resume: bool,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Stop after this many iterations of this invocation (tests of interruption).
    pub max_iterations_this_run: Option<usize>,
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| TrainError::io(path, e))
}

/// The latest complete checkpoint of a run directory.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>> {
    let latest = out.join("checkpoints").join("latest");
    if !latest.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest).map_err(|e| TrainError::io(&latest, e))?;
    let dir = out.join("checkpoints").join(name.trim());
    if !dir.join("state.json").exists() {
        return Err(TrainError::Checkpoint(format!("{} names {} which is incomplete", latest.display(), dir.display())));
    }
    Ok(Some(dir))
}

fn save_checkpoint(trainer: &Trainer, out: &Path) -> Result<PathBuf> {
    let dir = Trainer::checkpoint_dir(out, trainer.iteration());
    trainer.save_checkpoint(&dir)?;
    let name = dir.file_name().expect("checkpoint dir name").to_string_lossy().to_string();
    let latest = out.join("checkpoints").join("latest");
    let tmp = latest.with_extension("tmp");
    write_file(&tmp, &name)?;
    std::fs::rename(&tmp, &latest).map_err(|e| TrainError::io(&latest, e))?;
    Ok(dir)
}

/// Loads the configuration of a run directory.
pub fn load_run_config(out: &Path) -> Result<ExperimentConfig> {
    load_run_config_with(out, &[])
}

/// The configuration of a run directory with `key=value` overrides applied.
fn load_run_config_with(out: &Path, overrides: &[String]) -> Result<ExperimentConfig> {
    let path = out.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    ExperimentConfig::from_toml_with_overrides(&text, overrides)
}

/// Rebuilds the trainer of a run directory at its latest checkpoint.
pub fn load_trainer(out: &Path) -> Result<Trainer> {
    load_trainer_with(out, &[])
}

/// [`load_trainer`] with `key=value` overrides of the run's `[eval]` section (other keys would
/// change what the checkpoint was trained with, so they are refused).
pub fn load_trainer_with(out: &Path, eval_overrides: &[String]) -> Result<Trainer> {
    if let Some(bad) = eval_overrides.iter().find(|o| !o.trim_start().starts_with("eval.")) {
        return Err(TrainError::Config(format!("only eval.* keys can be overridden when evaluating a run, not `{bad}`")));
    }
    let mut trainer = Trainer::new(load_run_config_with(out, eval_overrides)?)?;
    match latest_checkpoint(out)? {
        Some(dir) => trainer.load_checkpoint(&dir)?,
        None => return Err(TrainError::Checkpoint(format!("{} has no checkpoint", out.display()))),
    }
    Ok(trainer)
}

/// Keeps only the lines of `metrics.jsonl` up to `iteration` (after a resume, the lines the
/// interrupted segment wrote past its last checkpoint are replayed exactly).
fn truncate_metrics(path: &Path, iteration: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).ok().and_then(|v| v["iteration"].as_f64()).is_some_and(|it| it <= iteration as f64))
        .collect();
    let mut s = kept.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    write_file(path, &s)
}

fn metrics_json(kind: &str, m: &Metrics) -> Value {
    let mut v = serde_json::Map::new();
    v.insert("kind".into(), json!(kind));
    for (k, x) in m {
        v.insert(k.clone(), if x.is_finite() { json!(x) } else { Value::Null });
    }
    Value::Object(v)
}

fn info_json(info: &IterInfo) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.insert("kind".into(), json!("train"));
        for val in o.values_mut() {
            if val.as_f64().is_some_and(|f| !f.is_finite()) {
                *val = Value::Null;
            }
        }
    }
    v
}

fn summary(m: &Metrics) -> String {
    let keys = [
        "eval_ess_flow",
        "eval_ess_ais",
        "test_set_mean_log_prob",
        "test_set_modes_mean_log_prob",
        "kl_forward",
        "modes_covered",
        "log_z_abs_error",
    ];
    keys.iter()
        .filter_map(|k| m.get(*k).map(|v| format!("{k}={v:.4}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Trains (or resumes) an experiment, writing everything into `opts.out`.
///
/// # Errors
/// [`TrainError::Checkpoint`] if `out` already holds a run and `resume` is false (or holds none
/// and `resume` is true); configuration, I/O and numerical errors otherwise.
pub fn run_experiment(config: Option<ExperimentConfig>, opts: &RunOptions) -> Result<RunOutcome> {
    let out = &opts.out;
    let (mut trainer, resumed) = if opts.resume {
        let t = load_trainer(out)?;
        (t, true)
    } else {
        let config = config.ok_or_else(|| TrainError::Config("no configuration given".into()))?;
        if out.join("config.toml").exists() {
            return Err(TrainError::Checkpoint(format!(
                "{} already contains a run; use --resume to continue it or choose another --out",
                out.display()
            )));
        }
        let trainer = Trainer::new(config)?;
        std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
        write_file(&out.join("config.toml"), &trainer.config().to_toml()?)?;
        (trainer, false)
    };
    let metrics_path = out.join("metrics.jsonl");
    if resumed {
        truncate_metrics(&metrics_path, trainer.iteration())?;
    }
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path).map_err(|e| TrainError::io(&metrics_path, e))?;
    let n_iter = trainer.n_iterations();
    let evals = trainer.eval_iterations();
    let ckpt_every = trainer.config().train.checkpoint_every;
    let log_every = (n_iter / 500).max(1);
    let time_limit = trainer.config().train.time_limit_hours.map(|h| h * 3600.0);
    let bar = if opts.progress {
        let b = ProgressBar::with_draw_target(Some(n_iter as u64), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_position(trainer.iteration() as u64);
        b
    } else {
        ProgressBar::hidden()
    };
    if resumed {
        eprintln!("resuming {} at iteration {}/{}", out.display(), trainer.iteration(), n_iter);
    }
    let started = Instant::now();
    let mut this_run = 0usize;
    let mut last_eval = String::new();
    while !trainer.is_finished() {
        let info = trainer.step()?;
        let it = info.iteration;
        this_run += 1;
        if it % log_every == 0 || it == 1 {
            writeln!(log, "{}", info_json(&info)).map_err(|e| TrainError::io(&metrics_path, e))?;
        }
        bar.set_position(it as u64);
        bar.set_message(format!(
            "loss {:.3} ess_ais {:.3}{}",
            info.loss,
            info.ess_ais.unwrap_or(f64::NAN),
            if last_eval.is_empty() { String::new() } else { format!(" | {last_eval}") }
        ));
        if evals.contains(&it) {
            let (m, _) = trainer.evaluate(false)?;
            writeln!(log, "{}", metrics_json("eval", &m)).map_err(|e| TrainError::io(&metrics_path, e))?;
            last_eval = format!("ESS flow {:.3}", m.get("eval_ess_flow").copied().unwrap_or(f64::NAN));
            bar.suspend(|| eprintln!("[eval {it}/{n_iter}] {}", summary(&m)));
        }
        log.flush().map_err(|e| TrainError::io(&metrics_path, e))?;
        if ckpt_every > 0 && it % ckpt_every == 0 && it < n_iter {
            save_checkpoint(&trainer, out)?;
        }
        let over_time = time_limit.is_some_and(|t| trainer.elapsed_seconds() >= t);
        let over_count = opts.max_iterations_this_run.is_some_and(|m| this_run >= m);
        if (stop_requested() || over_time || over_count) && !trainer.is_finished() {
            save_checkpoint(&trainer, out)?;
            bar.finish_and_clear();
            let reason = if stop_requested() {
                "interrupted"
            } else if over_time {
                "time limit"
            } else {
                "iteration limit of this invocation"
            };
            eprintln!("stopped at iteration {it} ({reason}); continue with `fab train --resume {}`", out.display());
            return Ok(RunOutcome::Stopped { iteration: it, reason: reason.into() });
        }
    }
    bar.finish_and_clear();
    save_checkpoint(&trainer, out)?;
    eprintln!(
        "training done: {n_iter} iterations in {:.1} s ({:.1} s this invocation); final evaluation…",
        trainer.elapsed_seconds(),
        started.elapsed().as_secs_f64()
    );
    let metrics = final_evaluation(&mut trainer, out)?;
    Ok(RunOutcome::Finished(metrics))
}

/// Runs the final (paper-size) evaluation of a trainer and writes `final_metrics.json` and the
/// plots into `out`.
pub fn final_evaluation(trainer: &mut Trainer, out: &Path) -> Result<Metrics> {
    let (m, samples) = trainer.evaluate(true)?;
    let path = out.join("final_metrics.json");
    write_file(&path, &serde_json::to_string_pretty(&metrics_json("final", &m))?)?;
    eprintln!("final: {}", summary(&m));
    if trainer.config().eval.plots {
        crate::report::write_plots(trainer, &samples, out)?;
    }
    Ok(m)
}

/// `fab eval DIR`: re-evaluates the latest checkpoint of a run.
pub fn evaluate_run(out: &Path) -> Result<Metrics> {
    evaluate_run_with(out, &[])
}

/// `fab eval DIR --set eval.key=value …`: re-evaluates the latest checkpoint with other
/// evaluation sizes (e.g. more flow samples for histogram metrics).
pub fn evaluate_run_with(out: &Path, eval_overrides: &[String]) -> Result<Metrics> {
    let mut trainer = load_trainer_with(out, eval_overrides)?;
    final_evaluation(&mut trainer, out)
}

/// Samples kept for plots.
pub type PlotSamples = EvalSamples;
