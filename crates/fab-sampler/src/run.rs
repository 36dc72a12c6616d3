//! The run driver behind `fab train`, `fab eval` and `fab sample`, generic over the sampler
//! family: output directory, resolved config, checkpoints and resume, the evaluation schedule,
//! observers (metrics JSONL, progress), the final evaluation and plots.
//!
//! Layout of a run directory:
//! ```text
//! OUT/config.toml            resolved configuration (written before step 1)
//! OUT/metrics.jsonl          one JSON object per logged iteration ("kind": "train") or evaluation ("kind": "eval")
//! OUT/final_metrics.json     final evaluation
//! OUT/checkpoints/iter_N/    state.json (driver: iteration, time, evaluation RNG) + the sampler's files
//! OUT/checkpoints/latest     name of the newest complete checkpoint
//!                            (older ones are pruned as `train.checkpoint_keep_last` / `_keep_every` say)
//! OUT/plots/*.png            training curves and the target's plots
//! ```
//!
//! An exported model ([`export_model`]) has the same layout with a [`MODEL_FILE`], one
//! checkpoint without training-only state, and no plots until it is evaluated.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use fab_core::FabRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::eval::{evaluate, EvalSizes, Evaluation, Metrics};
use crate::observe::{Event, MetricsLog, Observer, Progress};
use crate::sampler::{FamilyConfig, KeepCheckpoints, RunSettings, Sampler, StepReport, StepStats};
use crate::target::PlotContext;
use crate::{Error, Result};

/// RNG stream of the evaluations (kept apart from the samplers' training streams so
/// evaluations never change the training path).
pub const EVAL_STREAM: u64 = 2;

/// Version of the driver's `state.json`.
const STATE_VERSION: u32 = 2;

/// A shared flag that asks a running experiment to stop after the current iteration (with a
/// checkpoint). Clone it into a Ctrl-C handler.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// A new, unset signal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests the stop.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How an experiment ended.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    /// All iterations done; the final evaluation's metrics.
    Finished(Metrics),
    /// Stopped early after a checkpoint at this iteration; `fab train --resume` continues it.
    Stopped {
        /// Completed iterations.
        iteration: usize,
        /// Why it stopped.
        reason: StopReason,
    },
}

/// Why a run stopped before its last iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A [`StopSignal`] was set (Ctrl-C).
    Interrupted,
    /// `train.time_limit_hours` of training time was used.
    TimeLimit,
    /// [`RunOptions::max_iterations_this_run`] was reached.
    IterationCap,
}

impl StopReason {
    /// The process exit status the command line uses for this stop (0 is "finished", 1 an
    /// error): 3 interrupted, 4 time limit, 5 iteration cap.
    pub fn exit_code(self) -> u8 {
        match self {
            StopReason::Interrupted => 3,
            StopReason::TimeLimit => 4,
            StopReason::IterationCap => 5,
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Interrupted => "interrupted",
            StopReason::TimeLimit => "time limit",
            StopReason::IterationCap => "iteration limit of this invocation",
        })
    }
}

/// An exclusive claim on a run directory (`OUT/run.lock`, holding the owner's process id),
/// released when dropped. A lock whose process no longer exists (a run killed with `kill -9` or
/// by the out-of-memory killer) is stale: it is reported and taken over.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Name of the lock file inside a run directory.
    pub const FILE: &'static str = "run.lock";

    /// Claims `out` (which must exist).
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the process that holds the directory.
    pub fn acquire(out: &Path) -> Result<Self> {
        let path = out.join(Self::FILE);
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    use std::io::Write;
                    writeln!(f, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let owner = text.trim().parse::<u32>().ok();
                    match owner {
                        Some(pid) if process_alive(pid) => {
                            return Err(Error::Checkpoint(format!(
                                "{} is in use by process {pid} (lock {}); wait for it to finish or stop it",
                                out.display(),
                                path.display()
                            )));
                        }
                        _ => {
                            eprintln!("note: removing the stale lock {} (process {} is gone)", path.display(), text.trim());
                            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                        }
                    }
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::Checkpoint(format!("{}: could not take the lock {}", out.display(), path.display())))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a process with this id exists (Linux: `/proc/<pid>`; elsewhere assumed alive, so a
/// lock is never taken over by mistake).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// Options of [`train`].
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
    /// Set to stop after the current iteration.
    pub stop: StopSignal,
    /// What built the program (e.g. the git commit of the `fab` binary), recorded in
    /// `invocations.jsonl`.
    pub build: Option<String>,
    /// With `resume`: `key=value` changes of keys the family lists as safe
    /// ([`FamilyConfig::resume_safe_keys`]); the run's `config.toml` is rewritten with them.
    pub resume_overrides: Vec<String>,
}

impl RunOptions {
    /// Options for a new run in `out`, without progress bar.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            resume: false,
            progress: false,
            max_iterations_this_run: None,
            stop: StopSignal::new(),
            resume_overrides: Vec::new(),
            build: None,
        }
    }
}

/// The driver's part of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DriverState {
    version: u32,
    iteration: usize,
    skipped_steps: u64,
    elapsed_seconds: f64,
    eval_rng: FabRng,
    /// FNV-1a of the run's `config.toml` when the checkpoint was written (to detect edits).
    #[serde(default)]
    config_hash: Option<String>,
}

/// A sampler with the run-level state the driver keeps: iteration count, training time,
/// skipped steps and the evaluation RNG stream.
#[derive(Debug)]
pub struct Run<S> {
    sampler: S,
    settings: RunSettings,
    iteration: usize,
    skipped_steps: u64,
    elapsed_seconds: f64,
    eval_rng: FabRng,
    config_hash: Option<String>,
}

impl<S: Sampler> Run<S> {
    /// A fresh run of `sampler` (iteration 0).
    pub fn new(sampler: S, settings: RunSettings) -> Self {
        let eval_rng = fab_core::seeded_rng(settings.seed, EVAL_STREAM);
        Self { sampler, settings, iteration: 0, skipped_steps: 0, elapsed_seconds: 0.0, eval_rng, config_hash: None }
    }

    /// Builds a fresh run from a family configuration.
    pub fn from_config<C: FamilyConfig<Sampler = S>>(config: &C) -> Result<Self> {
        Ok(Self::new(config.build()?, config.run_settings()))
    }

    /// The sampler.
    pub fn sampler(&self) -> &S {
        &self.sampler
    }

    /// The sampler, mutably.
    pub fn sampler_mut(&mut self) -> &mut S {
        &mut self.sampler
    }

    /// The run settings.
    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    /// Completed iterations.
    pub fn iteration(&self) -> usize {
        self.iteration
    }

    /// Total iterations.
    pub fn n_iterations(&self) -> usize {
        self.settings.n_iterations
    }

    /// Whether all iterations are done.
    pub fn is_finished(&self) -> bool {
        self.iteration >= self.settings.n_iterations
    }

    /// Training time so far over all resumed segments, in seconds.
    pub fn elapsed_seconds(&self) -> f64 {
        self.elapsed_seconds
    }

    /// Gradient steps skipped so far.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_steps
    }

    /// Iterations (1-based) after which training-time evaluations run: `linspace(1, N, n_evals)`
    /// rounded down.
    pub fn eval_iterations(&self) -> Vec<usize> {
        let (n, k) = (self.settings.n_iterations, self.settings.n_evals);
        let mut v: Vec<usize> = match k {
            0 => Vec::new(),
            1 => vec![n],
            _ => (0..k).map(|i| (1.0 + (n as f64 - 1.0) * i as f64 / (k - 1) as f64).floor() as usize).collect(),
        };
        v.dedup();
        v
    }

    /// One training iteration, numbered and timed.
    pub fn step(&mut self) -> Result<StepReport<S::Stats>> {
        let t0 = Instant::now();
        let mut report = self.sampler.step()?;
        self.iteration += 1;
        self.skipped_steps += report.skipped_steps as u64;
        let dt = t0.elapsed().as_secs_f64();
        self.elapsed_seconds += dt;
        report.iteration = self.iteration;
        report.seconds = dt;
        Ok(report)
    }

    /// Evaluates with the training-time sizes, or the final sizes.
    pub fn evaluate(&mut self, final_eval: bool) -> Result<Evaluation> {
        let sizes: EvalSizes = if final_eval { self.settings.final_eval_sizes } else { self.settings.eval_sizes };
        let mut e = evaluate(&mut self.sampler, &sizes, &mut self.eval_rng)?;
        e.metrics.insert("iteration".into(), self.iteration as f64);
        e.metrics.insert("skipped_steps".into(), self.skipped_steps as f64);
        e.metrics.insert("train_seconds".into(), self.elapsed_seconds);
        Ok(e)
    }

    /// Restarts the evaluation stream from `seed` (e.g. `fab sample --seed`); without it, the
    /// stream continues where the checkpoint left it.
    pub fn reseed_evaluation(&mut self, seed: u64) {
        self.eval_rng = fab_core::seeded_rng(seed, EVAL_STREAM);
    }

    /// `n` draws from the sampler on the evaluation stream (for `fab sample`).
    pub fn draw(&mut self, n: usize) -> Result<crate::Draws> {
        self.sampler.draw(n, &mut self.eval_rng)
    }

    /// Writes a checkpoint into `dir` (written under a temporary name, then renamed).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.write_checkpoint(dir, false)
    }

    /// Writes a checkpoint of what sampling and evaluation need
    /// ([`Sampler::save_model_state`]) into `dir`, for an exported model.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        self.write_checkpoint(dir, true)
    }

    fn write_checkpoint(&self, dir: &Path, model_only: bool) -> Result<()> {
        let tmp = dir.with_extension("partial");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        if model_only {
            self.sampler.save_model_state(&tmp)?;
        } else {
            self.sampler.save_state(&tmp)?;
        }
        let state = DriverState {
            version: STATE_VERSION,
            iteration: self.iteration,
            skipped_steps: self.skipped_steps,
            elapsed_seconds: self.elapsed_seconds,
            eval_rng: self.eval_rng.clone(),
            config_hash: self.config_hash.clone(),
        };
        let path = tmp.join("state.json");
        std::fs::write(&path, serde_json::to_string_pretty(&state)?).map_err(|e| Error::io(&path, e))?;
        write_checksums(&tmp)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        Ok(())
    }

    /// Restores a checkpoint written by [`save_checkpoint`](Self::save_checkpoint), after
    /// verifying the checksum of every file in it.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the damaged or missing file; the run may then be partly
    /// restored and should be rebuilt before another attempt.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        verify_checksums(dir)?;
        let path = dir.join("state.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let version = serde_json::from_str::<Value>(&text)?.get("version").and_then(Value::as_u64);
        if version != Some(u64::from(STATE_VERSION)) {
            return Err(Error::Checkpoint(format!(
                "{}: checkpoint format version {version:?}, this build reads version {STATE_VERSION} (written by an older fab-rs; retrain or use that version)",
                path.display()
            )));
        }
        let state: DriverState = serde_json::from_str(&text)?;
        self.sampler.load_state(dir)?;
        self.iteration = state.iteration;
        self.skipped_steps = state.skipped_steps;
        self.elapsed_seconds = state.elapsed_seconds;
        self.eval_rng = state.eval_rng;
        self.config_hash = state.config_hash;
        Ok(())
    }
}

/// Name of the per-file checksum list in a checkpoint directory.
const CHECKSUMS: &str = "checksums.json";

/// 64-bit FNV-1a of `bytes`: detects truncated files and flipped bytes (not an adversarial hash).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Appends one line to `OUT/invocations.jsonl`: the fab-rs version, the command line, the time
/// and whether it resumed the run.
fn record_invocation(out: &Path, resumed: bool, build: Option<&str>) -> Result<()> {
    use std::io::Write;
    let path = out.join("invocations.jsonl");
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let line = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": build,
        "command": std::env::args().collect::<Vec<_>>(),
        "unix_time": unix,
        "resumed": resumed,
    });
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(&path, e))
}

/// FNV-1a of a configuration text, as stored in checkpoints.
fn text_hash(text: &str) -> String {
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

/// Writes `checksums.json` (file name → FNV-1a hex) for every file in `dir`.
fn write_checksums(dir: &Path) -> Result<()> {
    let mut sums = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            sums.insert(path.file_name().expect("file name").to_string_lossy().to_string(), format!("{:016x}", fnv1a64(&bytes)));
        }
    }
    write_file(&dir.join(CHECKSUMS), &serde_json::to_string_pretty(&sums)?)
}

/// Checks every file listed in `dir/checksums.json`.
fn verify_checksums(dir: &Path) -> Result<()> {
    let list = dir.join(CHECKSUMS);
    let text =
        std::fs::read_to_string(&list).map_err(|_| Error::Checkpoint(format!("{} is missing (incomplete checkpoint)", list.display())))?;
    let sums: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&text).map_err(|e| Error::Checkpoint(format!("{}: {e}", list.display())))?;
    for (name, want) in &sums {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
        if format!("{:016x}", fnv1a64(&bytes)) != *want {
            return Err(Error::Checkpoint(format!("{}: checksum mismatch (the file is damaged or truncated)", path.display())));
        }
    }
    Ok(())
}

/// The checkpoints of a run directory, newest first: the one `checkpoints/latest` names, then
/// every other `iter_N` directory by decreasing N.
pub fn checkpoints_newest_first(out: &Path) -> Vec<PathBuf> {
    let root = out.join("checkpoints");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_dir() && p.extension().is_none() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("iter_"))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    if let Ok(name) = std::fs::read_to_string(root.join("latest")) {
        let named = root.join(name.trim());
        if let Some(i) = dirs.iter().position(|d| *d == named) {
            let d = dirs.remove(i);
            dirs.insert(0, d);
        }
    }
    dirs
}

/// Directory of the checkpoint after `iteration` under `out`.
pub fn checkpoint_dir(out: &Path, iteration: usize) -> PathBuf {
    out.join("checkpoints").join(format!("iter_{iteration:08}"))
}

/// The iteration a checkpoint directory is named after (the inverse of [`checkpoint_dir`]).
fn checkpoint_iteration(dir: &Path) -> Option<usize> {
    dir.file_name()?.to_str()?.strip_prefix("iter_")?.parse().ok()
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn save_checkpoint<S: Sampler>(run: &Run<S>, out: &Path) -> Result<PathBuf> {
    let dir = checkpoint_dir(out, run.iteration());
    run.save_checkpoint(&dir)?;
    let name = dir.file_name().expect("checkpoint dir name").to_string_lossy().to_string();
    let latest = out.join("checkpoints").join("latest");
    let tmp = latest.with_extension("tmp");
    write_file(&tmp, &name)?;
    std::fs::rename(&tmp, &latest).map_err(|e| Error::io(&latest, e))?;
    prune_checkpoints(out, run.settings().keep_checkpoints);
    Ok(dir)
}

/// How many checkpoints a run holds at its end by its iteration schedule: the periodic ones
/// (`every`, 0: none) and the final one, as many as `keep` keeps. Checkpoints written by time
/// come on top while every checkpoint is kept.
fn checkpoints_held_at_end(n_iterations: usize, every: usize, keep: KeepCheckpoints) -> usize {
    let written = n_iterations.saturating_sub(1).checked_div(every).unwrap_or(0) + 1;
    if keep.last == 0 {
        return written;
    }
    let milestones = n_iterations.checked_div(keep.every).unwrap_or(0);
    written.min(keep.last + milestones)
}

/// Prints what a run's checkpoints will take on disk, at the size of the one in `dir`, when that
/// is more than 1 GiB (FAB's hold the whole buffer), with the key that limits it; returns whether
/// it printed (checkpoints grow while a buffer fills, so the driver asks again at the next one).
fn note_checkpoint_disk_use(dir: &Path, settings: &RunSettings) -> bool {
    let bytes: u64 = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0);
    let keep = settings.keep_checkpoints;
    let n = checkpoints_held_at_end(settings.n_iterations, settings.checkpoint_every, keep);
    let total = bytes as f64 * n as f64;
    if total <= 1024.0f64.powi(3) {
        return false;
    }
    eprintln!(
        "note: the checkpoint {} takes {}; the run will hold {} {n} checkpoints at its end ({} at this size){}",
        dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        crate::memory::human_bytes(bytes as f64),
        if keep.last == 0 { "at least" } else { "up to" },
        crate::memory::human_bytes(total),
        if keep.last == 0 { "; train.checkpoint_keep_last = K keeps only the K newest" } else { "" }
    );
    true
}

/// Removes the checkpoints of `out` that `keep` does not keep, after a new one is complete and
/// named by `checkpoints/latest` (which ranks newest and is never removed). A checkpoint that
/// cannot be removed is reported and left; training goes on.
pub fn prune_checkpoints(out: &Path, keep: KeepCheckpoints) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    if keep.last == 0 {
        return removed;
    }
    for (rank, dir) in checkpoints_newest_first(out).into_iter().enumerate() {
        let Some(iteration) = checkpoint_iteration(&dir) else { continue };
        if rank == 0 || keep.keeps(iteration, rank) {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) => eprintln!("warning: could not remove the old checkpoint {}: {e}", dir.display()),
        }
    }
    removed
}

/// The text of a run directory's `config.toml`.
pub fn read_run_config(out: &Path) -> Result<String> {
    let path = out.join("config.toml");
    std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))
}

/// Rebuilds the run of a directory at its latest checkpoint, with `key=value` overrides of the
/// `[eval]` section (other keys would change what the checkpoint was trained with, so they are
/// refused).
pub fn load_run<C: FamilyConfig>(out: &Path, eval_overrides: &[String]) -> Result<(C, Run<C::Sampler>)> {
    let config = run_config_for_evaluation::<C>(out, eval_overrides)?;
    let run = restore(out, &config)?;
    Ok((config, run))
}

/// A run directory's config with `[eval]` overrides (others are refused), checked to fit in
/// memory.
fn run_config_for_evaluation<C: FamilyConfig>(out: &Path, eval_overrides: &[String]) -> Result<C> {
    if let Some(bad) = eval_overrides.iter().find(|o| !o.trim_start().starts_with("eval.")) {
        return Err(Error::Config(format!("only eval.* keys can be overridden when evaluating a run, not `{bad}`")));
    }
    let config = C::parse(&read_run_config(out)?, eval_overrides)?;
    config.memory_estimate().check_here()?;
    Ok(config)
}

/// Rebuilds the run of a directory at its checkpoint of iteration `iteration` (not the latest),
/// with `[eval]` overrides as in [`load_run`]. There is no fallback: a missing or damaged
/// checkpoint is an error naming the iterations the directory holds.
pub fn load_run_at<C: FamilyConfig>(out: &Path, iteration: usize, eval_overrides: &[String]) -> Result<(C, Run<C::Sampler>)> {
    let config = run_config_for_evaluation::<C>(out, eval_overrides)?;
    let dir = checkpoint_dir(out, iteration);
    if !dir.is_dir() {
        let mut held: Vec<usize> = checkpoints_newest_first(out).iter().filter_map(|d| checkpoint_iteration(d)).collect();
        held.sort_unstable();
        let list = match held.as_slice() {
            [] => "none".to_string(),
            [one] => one.to_string(),
            [first, .., last] => format!("{} from {first} to {last}", held.len()),
        };
        return Err(Error::Checkpoint(format!("{} has no checkpoint of iteration {iteration} (checkpoints held: {list})", out.display())));
    }
    let mut run = Run::from_config(&config)?;
    run.load_checkpoint(&dir)?;
    Ok((config, run))
}

/// The run of `config` at the newest intact checkpoint of `out`.
fn restore<C: FamilyConfig>(out: &Path, config: &C) -> Result<Run<C::Sampler>> {
    let candidates = checkpoints_newest_first(out);
    if candidates.is_empty() {
        return Err(Error::Checkpoint(format!("{} has no checkpoint", out.display())));
    }
    let mut skipped = Vec::new();
    for dir in &candidates {
        let mut run = Run::from_config(config)?;
        match run.load_checkpoint(dir) {
            Ok(()) => {
                if !skipped.is_empty() {
                    eprintln!("note: skipped damaged checkpoints: {}", reasons_by_checkpoint(&skipped));
                    eprintln!("note: using the older checkpoint {} (iteration {})", dir.display(), run.iteration());
                }
                return Ok(run);
            }
            Err(e) => {
                let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
                skipped.push((name, e.to_string()));
            }
        }
    }
    Err(Error::Checkpoint(format!("{}: no usable checkpoint ({})", out.display(), reasons_by_checkpoint(&skipped))))
}

/// `(checkpoint, reason)` pairs as one line, each distinct reason once after the checkpoints it
/// applies to (a run written by an incompatible version fails every checkpoint the same way).
fn reasons_by_checkpoint(skipped: &[(String, String)]) -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, why) in skipped {
        match groups.iter_mut().find(|(w, _)| *w == why.as_str()) {
            Some((_, names)) => names.push(name),
            None => groups.push((why, vec![name])),
        }
    }
    groups.iter().map(|(why, names)| format!("{}: {why}", names.join(", "))).collect::<Vec<_>>().join("; ")
}

/// Keeps only the lines of `metrics.jsonl` up to `iteration` (after a resume, the lines the
/// interrupted segment wrote past its last checkpoint are replayed exactly).
fn truncate_metrics(path: &Path, iteration: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).ok().and_then(|v| v["iteration"].as_f64()).is_some_and(|it| it <= iteration as f64))
        .collect();
    let mut s = kept.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    // Atomically: a kill during the rewrite leaves the old file, never a half-written one.
    let tmp = path.with_extension("jsonl.tmp");
    write_file(&tmp, &s)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Metrics as one JSON object with a `kind` field (non-finite values as `null`).
pub fn metrics_json(kind: &str, m: &Metrics) -> Value {
    let mut v = serde_json::Map::new();
    v.insert("kind".into(), json!(kind));
    for (k, x) in m {
        let value = if !x.is_finite() {
            Value::Null
        } else if is_count_key(k) && x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15 {
            json!(*x as i64)
        } else {
            json!(x)
        };
        v.insert(k.clone(), value);
    }
    Value::Object(v)
}

/// Whether a metric is a count (written as a JSON integer when it is integral): `n_*`,
/// `*_count`, `*_steps`, `*_calls`, `iteration`, `modes_covered`, `reward_calls_*`.
pub fn is_count_key(k: &str) -> bool {
    k.starts_with("n_")
        || k.ends_with("_count")
        || k.ends_with("_steps")
        || k.ends_with("_calls")
        || k.starts_with("reward_calls")
        || matches!(k, "iteration" | "modes_covered")
}

/// A step report as one JSON object with `"kind": "train"` (non-finite values as `null`).
pub fn report_json<T: Serialize>(report: &StepReport<T>) -> Value {
    let mut v = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.insert("kind".into(), json!("train"));
    }
    v
}

/// The one-line summary of the headline metrics that exist.
pub fn summary(m: &Metrics) -> String {
    const KEYS: [&str; 8] = [
        "eval_ess_flow",
        "eval_ess_ais",
        "eval_ess_model",
        "test_set_mean_log_prob",
        "test_set_modes_mean_log_prob",
        "kl_forward",
        "modes_covered",
        "log_z_abs_error",
    ];
    KEYS.iter().filter_map(|k| m.get(*k).map(|v| format!("{k}={v:.4}"))).collect::<Vec<_>>().join(" ")
}

/// Trains (or resumes) an experiment of family `C`, writing everything into `opts.out`.
///
/// # Errors
/// [`Error::Checkpoint`] if `out` already holds a run and `resume` is false (or holds none and
/// `resume` is true); configuration, I/O and the family's errors otherwise.
pub fn train<C: FamilyConfig>(config: Option<C>, opts: &RunOptions) -> Result<RunOutcome> {
    let out = &opts.out;
    if opts.resume {
        if !out.join("config.toml").is_file() {
            return Err(Error::Checkpoint(format!("{} holds no run to resume (no config.toml)", out.display())));
        }
        if out.join(MODEL_FILE).exists() {
            return Err(Error::Checkpoint(format!(
                "{} is an exported model ({MODEL_FILE}: no optimiser or buffer state), not a run: sample or evaluate it, or resume the run it came from",
                out.display()
            )));
        }
        let _lock = RunLock::acquire(out)?;
        let text = read_run_config(out)?;
        let safe = C::resume_safe_keys();
        if let Some(key) = opts.resume_overrides.iter().map(|o| crate::config::override_key(o)).find(|k| !safe.contains(k)) {
            return Err(Error::Config(format!(
                "{key} cannot be changed when resuming (the checkpoint was trained with it); keys that can: {}",
                if safe.is_empty() { "none".to_string() } else { safe.join(", ") }
            )));
        }
        let config = C::parse(&text, &opts.resume_overrides)?;
        config.memory_estimate().check_here()?;
        let mut run = if checkpoints_newest_first(out).is_empty() {
            // Killed before its first checkpoint: start over from the run's own config.
            eprintln!("note: {} has no checkpoint; restarting it from iteration 0 with its config.toml", out.display());
            Run::from_config(&config)?
        } else {
            let run = restore(out, &config)?;
            if run.config_hash.as_ref().is_some_and(|h| *h != text_hash(&text)) {
                return Err(Error::Checkpoint(format!(
                    "{} was edited after the checkpoint at iteration {}; restore it, or change a safe key with `--resume {} --set key=value` ({})",
                    out.join("config.toml").display(),
                    run.iteration(),
                    out.display(),
                    if safe.is_empty() { "none".to_string() } else { safe.join(", ") }
                )));
            }
            run
        };
        let n_new = config.run_settings().n_iterations;
        if n_new < run.iteration() {
            return Err(Error::Config(format!(
                "train.n_iterations = {n_new}: the run is already at iteration {}; it can only be extended",
                run.iteration()
            )));
        }
        if !opts.resume_overrides.is_empty() {
            let n_old = C::parse(&text, &[])?.run_settings().n_iterations;
            if n_new != n_old {
                // Learning-rate, exploration and other schedules are in absolute iterations in
                // config.toml and do not move; only the evaluation spacing follows the new length.
                eprintln!(
                    "note: train.n_iterations {n_old} → {n_new}: schedules in config.toml keep their absolute iterations; the remaining evaluations are spaced over the new length"
                );
            }
            let new_text = config.to_toml()?;
            let path = out.join("config.toml");
            let tmp = out.join("config.toml.tmp");
            write_file(&tmp, &new_text)?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
            run.config_hash = Some(text_hash(&new_text));
            if run.iteration() > 0 {
                save_checkpoint(&run, out)?;
            }
            eprintln!("note: resuming with {} (config.toml updated)", opts.resume_overrides.join(" "));
        } else if run.config_hash.is_none() {
            run.config_hash = Some(text_hash(&text));
        }
        record_invocation(out, true, opts.build.as_deref())?;
        return drive(&mut run, opts);
    }
    let config = config.ok_or_else(|| Error::Config("no configuration given".into()))?;
    config.memory_estimate().check_here()?;
    if out.join("config.toml").exists() {
        return Err(Error::Checkpoint(format!(
            "{} already contains a run; use --resume to continue it or choose another --out",
            out.display()
        )));
    }
    // Never write into somebody else's files: an existing directory must be empty.
    if let Ok(mut entries) = std::fs::read_dir(out) {
        if let Some(Ok(first)) = entries.next() {
            return Err(Error::Checkpoint(format!(
                "{} is not empty and holds no run (found {}); choose an empty or new --out",
                out.display(),
                first.file_name().to_string_lossy()
            )));
        }
    } else if out.exists() {
        return Err(Error::Checkpoint(format!("{} exists and is not a directory", out.display())));
    }
    let mut run = Run::from_config(&config)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let _lock = RunLock::acquire(out)?;
    let text = config.to_toml()?;
    write_file(&out.join("config.toml"), &text)?;
    record_invocation(out, false, opts.build.as_deref())?;
    run.config_hash = Some(text_hash(&text));
    drive(&mut run, opts)
}

/// Trains `run` in `opts.out` until it finishes or stops: the loop behind [`train`], usable
/// directly for a sampler built in code (e.g. FAB on your own target). With `opts.resume`,
/// `run` must have been restored from the directory's latest checkpoint and the lines of
/// `metrics.jsonl` past it are dropped. [`train`] holds the directory's [`RunLock`] around this
/// call; hold one yourself when calling it directly.
pub fn drive<S: Sampler>(run: &mut Run<S>, opts: &RunOptions) -> Result<RunOutcome> {
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let metrics_path = out.join("metrics.jsonl");
    if opts.resume {
        truncate_metrics(&metrics_path, run.iteration())?;
    }
    let mut observers: Vec<Box<dyn Observer>> = vec![Box::new(MetricsLog::open(&metrics_path)?), Box::new(Progress::new(opts.progress))];
    let notify = |observers: &mut Vec<Box<dyn Observer>>, event: Event<'_>| -> Result<()> {
        for o in observers.iter_mut() {
            o.observe(&event)?;
        }
        Ok(())
    };
    let n_iter = run.n_iterations();
    let evals = run.eval_iterations();
    let ckpt_every = run.settings().checkpoint_every;
    let ckpt_minutes = run.settings().checkpoint_minutes;
    let mut last_checkpoint = Instant::now();
    let mut disk_noted = false;
    let log_every = (n_iter / 500).max(1);
    let time_limit = run.settings().time_limit_hours.map(|h| h * 3600.0);
    notify(
        &mut observers,
        Event::Start {
            iteration: run.iteration(),
            n_iterations: n_iter,
            resumed: opts.resume,
            out,
            train_seconds: run.elapsed_seconds(),
            time_limit_seconds: time_limit,
        },
    )?;
    let started = Instant::now();
    let mut this_run = 0usize;
    while !run.is_finished() {
        let report = run.step()?;
        let it = report.iteration;
        this_run += 1;
        let line = report_json(&report);
        let progress = format!("loss {:.3} {}", report.loss, report.stats.progress());
        notify(
            &mut observers,
            Event::Step {
                iteration: it,
                n_iterations: n_iter,
                json: &line,
                log: it % log_every == 0 || it == 1,
                progress: &progress,
                train_seconds: run.elapsed_seconds(),
            },
        )?;
        if evals.contains(&it) {
            let e = run.evaluate(false)?;
            notify(&mut observers, Event::Eval { iteration: it, n_iterations: n_iter, metrics: &e.metrics })?;
        }
        let due_by_time = ckpt_minutes.is_some_and(|m| last_checkpoint.elapsed().as_secs_f64() >= m * 60.0);
        if ((ckpt_every > 0 && it % ckpt_every == 0) || due_by_time) && it < n_iter {
            let dir = save_checkpoint(run, out)?;
            last_checkpoint = Instant::now();
            if !disk_noted {
                disk_noted = note_checkpoint_disk_use(&dir, run.settings());
            }
        }
        let over_time = time_limit.is_some_and(|t| run.elapsed_seconds() >= t);
        let over_count = opts.max_iterations_this_run.is_some_and(|m| this_run >= m);
        let interrupted = opts.stop.requested();
        if (interrupted || over_time || over_count) && !run.is_finished() {
            save_checkpoint(run, out)?;
            let reason = if interrupted {
                StopReason::Interrupted
            } else if over_time {
                StopReason::TimeLimit
            } else {
                StopReason::IterationCap
            };
            notify(&mut observers, Event::Stopped { iteration: it, reason, out })?;
            return Ok(RunOutcome::Stopped { iteration: it, reason });
        }
    }
    save_checkpoint(run, out)?;
    notify(
        &mut observers,
        Event::Done {
            n_iterations: n_iter,
            train_seconds: run.elapsed_seconds(),
            this_invocation_seconds: started.elapsed().as_secs_f64(),
        },
    )?;
    drop(observers);
    let metrics = final_evaluation(run, out)?;
    Ok(RunOutcome::Finished(metrics))
}

/// Runs the final evaluation and writes `final_metrics.json` and the plots into `out`
/// (the run directory itself, or another directory for `fab eval --out`).
pub fn final_evaluation<S: Sampler>(run: &mut Run<S>, out: &Path) -> Result<Metrics> {
    final_evaluation_into(run, out, out)
}

/// [`final_evaluation`] of the run in `run_dir` (whose `metrics.jsonl` gives the training
/// curves) with the results written into `out`. `out` is checked for writing before the
/// evaluation starts, and the summary is printed before the files are written.
pub fn final_evaluation_into<S: Sampler>(run: &mut Run<S>, run_dir: &Path, out: &Path) -> Result<Metrics> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let probe = out.join(".fab-write-test");
    std::fs::write(&probe, b"").map_err(|e| Error::io(&probe, e))?;
    let _ = std::fs::remove_file(&probe);
    let sizes = run.settings().final_eval_sizes;
    let started = Instant::now();
    eprintln!(
        "final evaluation: {} model samples{}, {} test points (Ctrl-C twice aborts)",
        sizes.n_samples,
        if sizes.n_refined_samples > 0 { format!(" and {} refined (e.g. AIS) samples", sizes.n_refined_samples) } else { String::new() },
        sizes.n_test
    );
    let e = run.evaluate(true)?;
    eprintln!("final evaluation done in {}", crate::observe::duration_text(started.elapsed().as_secs_f64()));
    eprintln!("final: {}", summary(&e.metrics));
    for (k, why) in &e.notes {
        eprintln!("note: {k} not computed: {why}");
    }
    let mut json = metrics_json("final", &e.metrics);
    if !e.notes.is_empty() {
        json["notes"] = serde_json::to_value(&e.notes)?;
    }
    let path = out.join("final_metrics.json");
    // Atomically: an abort (a second Ctrl-C) never leaves a half-written file.
    let tmp = out.join("final_metrics.json.tmp");
    write_file(&tmp, &serde_json::to_string_pretty(&json)?)?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    if run.settings().plots {
        eprintln!("writing plots into {}", out.join("plots").display());
        write_plots(run, &e, run_dir, out)?;
    }
    Ok(e.metrics)
}

/// Points drawn per scatter panel.
pub const MAX_PLOT_POINTS: usize = 1000;

/// Writes the training curves (from `run_dir/metrics.jsonl`) and the target's plots into
/// `out/plots`.
pub fn write_plots<S: Sampler>(run: &Run<S>, e: &Evaluation, run_dir: &Path, out: &Path) -> Result<()> {
    let dir = out.join("plots");
    std::fs::create_dir_all(&dir).map_err(|err| Error::io(&dir, err))?;
    let name = run.settings().name.clone();
    let extra = run.sampler().extra_points(MAX_PLOT_POINTS);
    let ctx =
        PlotContext { dir: &dir, title: &name, sets: &e.sets, extra_points: &extra, metrics: &e.metrics, dtype: run.sampler().dtype() };
    run.sampler().target().plots(&ctx)?;
    run.sampler().plots(&ctx)?;
    crate::report::training_curves(run_dir, &dir.join("training.png"), &name)
}

/// `fab eval DIR --set eval.key=value …`: the final evaluation of a run's latest checkpoint again
/// (e.g. with more samples), rewriting `final_metrics.json` and the plots.
pub fn evaluate_run<C: FamilyConfig>(out: &Path, eval_overrides: &[String]) -> Result<Metrics> {
    evaluate_run_into::<C>(out, None, None, eval_overrides)
}

/// `fab eval DIR --out OTHER [--seed S]`: as [`evaluate_run`], but the results go into `other`
/// and the run directory is left as it is (no lock is taken: nothing is written there). With
/// `seed`, the evaluation draws from its own stream (as `fab sample --seed`) instead of the
/// checkpoint's: an independent evaluation set, e.g. to see how far a metric scatters.
///
/// # Errors
/// [`Error::Config`] for a seed without `other` (the run's own `final_metrics.json` is the
/// checkpoint's stream's); as [`load_run`] and the evaluation otherwise.
pub fn evaluate_run_into<C: FamilyConfig>(
    run_dir: &Path,
    other: Option<&Path>,
    seed: Option<u64>,
    eval_overrides: &[String],
) -> Result<Metrics> {
    if seed.is_some() && other.is_none() {
        return Err(Error::Config(
            "a seeded evaluation needs --out DIR (the run's own final_metrics.json is its checkpoint's evaluation stream's)".into(),
        ));
    }
    let _lock = match other {
        None => Some(RunLock::acquire(run_dir)?),
        Some(_) => None,
    };
    let (_, run) = load_run::<C>(run_dir, eval_overrides)?;
    evaluate_loaded(run, seed, run_dir, other.unwrap_or(run_dir))
}

/// The final evaluation of a loaded run (from the evaluation stream of `seed` where given, else
/// from its checkpoint's), written into `out`.
fn evaluate_loaded<S: Sampler>(mut run: Run<S>, seed: Option<u64>, run_dir: &Path, out: &Path) -> Result<Metrics> {
    if let Some(s) = seed {
        run.reseed_evaluation(s);
    }
    final_evaluation_into(&mut run, run_dir, out)
}

/// `fab eval DIR --iteration N --out OTHER`: the final evaluation of the run's checkpoint of
/// iteration `iteration`, written into `other` (which must not be the run directory: the run's
/// own `final_metrics.json` belongs to its latest checkpoint). The numbers are those a run stopped
/// at that iteration would have reported (time limit, Ctrl-C), bit for bit: the evaluation
/// stream is saved with each checkpoint. The run directory is only read, so a run still training
/// can be evaluated this way. With `seed`, as in [`evaluate_run_into`].
///
/// # Errors
/// [`Error::Checkpoint`] if `other` is the run directory or that checkpoint is missing or
/// damaged; as [`evaluate_run_into`] otherwise.
pub fn evaluate_checkpoint_into<C: FamilyConfig>(
    run_dir: &Path,
    iteration: usize,
    other: &Path,
    seed: Option<u64>,
    eval_overrides: &[String],
) -> Result<Metrics> {
    let same = match (run_dir.canonicalize(), other.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(Error::Checkpoint(format!(
            "{}: an earlier checkpoint's evaluation must go into another directory (the run's final_metrics.json is its latest checkpoint's)",
            other.display()
        )));
    }
    let (_, run) = load_run_at::<C>(run_dir, iteration, eval_overrides)?;
    evaluate_loaded(run, seed, run_dir, other)
}

/// The file that marks a directory as an exported model (see [`export_model`]).
pub const MODEL_FILE: &str = "model.json";

/// `fab export RUN --out DIR`: writes the run's latest checkpoint as a model directory that
/// `fab sample` and `fab eval` read like a run: `config.toml`, `final_metrics.json` and
/// `metrics.jsonl` (copied when present), one checkpoint holding only what sampling and
/// evaluation need ([`Sampler::save_model_state`]), and [`MODEL_FILE`] with its provenance
/// (source run, iteration, fab-rs version and commit). A model cannot be resumed. `out` must
/// not exist; it is written under a temporary name and renamed at the end. Evaluating the
/// model gives the same numbers as evaluating the run (same weights, adaptation state and
/// evaluation stream).
///
/// # Errors
/// [`Error::Checkpoint`] if `out` exists or the run has no usable checkpoint; I/O errors.
pub fn export_model<C: FamilyConfig>(run_dir: &Path, out: &Path, build: Option<&str>) -> Result<PathBuf> {
    if out.exists() {
        return Err(Error::Checkpoint(format!("{} already exists; choose a new directory for the model", out.display())));
    }
    let (_, run) = load_run::<C>(run_dir, &[])?;
    let tmp = out.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(tmp.join("checkpoints")).map_err(|e| Error::io(&tmp, e))?;
    for name in ["config.toml", "final_metrics.json", "metrics.jsonl"] {
        let from = run_dir.join(name);
        if from.is_file() {
            std::fs::copy(&from, tmp.join(name)).map_err(|e| Error::io(&from, e))?;
        }
    }
    let dir = checkpoint_dir(&tmp, run.iteration());
    run.save_model(&dir)?;
    let name = dir.file_name().expect("checkpoint dir name").to_string_lossy().to_string();
    write_file(&tmp.join("checkpoints").join("latest"), &name)?;
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let source_commit = std::fs::read_to_string(run_dir.join("invocations.jsonl"))
        .ok()
        .and_then(|t| t.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).next_back())
        .and_then(|v| v.get("git_commit").cloned())
        .unwrap_or(Value::Null);
    let info = json!({
        "exported_from": run_dir.display().to_string(),
        "iteration": run.iteration(),
        "train_seconds": run.elapsed_seconds,
        "trained_with_git_commit": source_commit,
        "exported_with_version": env!("CARGO_PKG_VERSION"),
        "exported_with_git_commit": build,
        "unix_time": unix,
        "note": "an exported model: `fab sample` and `fab eval` read it like a run directory; it holds no optimiser or buffer state and cannot be resumed",
    });
    write_file(&tmp.join(MODEL_FILE), &serde_json::to_string_pretty(&info)?)?;
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    Ok(out.join("checkpoints").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_held_at_the_end_of_a_run() {
        let all = KeepCheckpoints::default();
        // aldp-cpu: every 100 of 6 250 iterations (62 periodic, the final one).
        assert_eq!(checkpoints_held_at_end(6250, 100, all), 63);
        assert_eq!(checkpoints_held_at_end(6250, 0, all), 1);
        assert_eq!(checkpoints_held_at_end(6000, 100, all), 60);
        // Keep 3 and every 500th: 12 milestones, at most 15.
        assert_eq!(checkpoints_held_at_end(6250, 100, KeepCheckpoints { last: 3, every: 500 }), 15);
        assert_eq!(checkpoints_held_at_end(10, 100, KeepCheckpoints { last: 3, every: 0 }), 1);
    }

    #[test]
    fn reasons_shared_by_checkpoints_are_given_once() {
        let skipped = [
            ("iter_3".to_string(), "shape differs".to_string()),
            ("iter_2".into(), "checksum".into()),
            ("iter_1".into(), "shape differs".into()),
        ];
        assert_eq!(reasons_by_checkpoint(&skipped), "iter_3, iter_1: shape differs; iter_2: checksum");
        assert_eq!(reasons_by_checkpoint(&[]), "");
    }

    #[test]
    fn counts_are_written_as_integers_and_other_metrics_as_floats() {
        let mut m = Metrics::new();
        m.insert("n_goals_found".into(), 144.0);
        m.insert("n_reward_calls".into(), 96000.0);
        m.insert("iteration".into(), 6000.0);
        m.insert("exact_l1".into(), 2.0);
        m.insert("n_half".into(), 2.5);
        m.insert("eval_ess_model".into(), f64::NAN);
        let text = serde_json::to_string(&metrics_json("final", &m)).unwrap();
        assert!(text.contains("\"n_goals_found\":144,"), "{text}");
        assert!(text.contains("\"n_reward_calls\":96000"), "{text}");
        assert!(text.contains("\"iteration\":6000"), "{text}");
        assert!(text.contains("\"exact_l1\":2.0"), "{text}");
        assert!(text.contains("\"n_half\":2.5"), "{text}");
        assert!(text.contains("\"eval_ess_model\":null"), "{text}");
    }
}
