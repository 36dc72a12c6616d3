//! A sampler family added as the issue's "one crate that implements the trait and registers its
//! config": adaptive importance sampling with a diagonal Gaussian proposal, moved each iteration
//! toward the self-normalised weighted mean and scale of its own draws. It trains, evaluates,
//! checkpoints, resumes bit-identically and plots through the same driver as FAB, with no code
//! of its own for any of that.

use std::path::Path;
use std::sync::Arc;

use candle_core::DType;
use fab_core::test_utils::{DiagGaussian, ScratchDir};
use fab_core::{FabRng, Proposal};
use fab_sampler::run::{self, RunOptions, RunOutcome};
use fab_sampler::{
    DensityTarget, Draws, EvalSizes, FamilyConfig, KeepCheckpoints, MemoryEstimate, Model, RunSettings, Sampler, StepReport, StepStats,
    Target,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The family's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IsConfig {
    family: String,
    name: String,
    seed: u64,
    n_iterations: usize,
    batch_size: usize,
    /// Step toward the weighted moments, in (0, 1].
    rate: f64,
    checkpoint_every: usize,
    #[serde(default)]
    checkpoint_minutes: Option<f64>,
    #[serde(default)]
    checkpoint_keep_last: usize,
    #[serde(default)]
    checkpoint_keep_every: usize,
    plots: bool,
}

/// The target: N((2, −1), diag(0.5², 1.5²)), normalised, with an exact sampler.
fn target() -> Arc<dyn Target> {
    Arc::new(DensityTarget::with_exact(DiagGaussian::new(vec![2.0, -1.0], vec![0.5, 1.5])))
}

#[derive(Debug, Clone, Default, Serialize)]
struct IsStats {
    ess: f64,
    mean_0: f64,
}

impl StepStats for IsStats {
    fn progress(&self) -> String {
        format!("ess {:.3}", self.ess)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IsState {
    mean: Vec<f64>,
    std: Vec<f64>,
    rng: FabRng,
}

struct AdaptiveIs {
    config: IsConfig,
    target: Arc<dyn Target>,
    proposal: DiagGaussian,
    rng: FabRng,
}

impl Model for AdaptiveIs {
    fn dim(&self) -> usize {
        2
    }

    fn dtype(&self) -> DType {
        DType::F64
    }

    fn draw(&mut self, n: usize, rng: &mut dyn RngCore) -> fab_sampler::Result<Draws> {
        let (x, lq) = self.proposal.sample_and_log_prob(n, rng)?;
        Ok(Draws { x: fab_core::to_f64_vec(&x)?, dim: 2, log_q: fab_core::to_f64_vec(&lq)?, exact_log_q: true })
    }

    fn log_prob(&self, x: &[f64]) -> Option<fab_sampler::Result<Vec<f64>>> {
        Some(fab_sampler::log_prob_host(&self.proposal, x, 2, DType::F64))
    }
}

impl Sampler for AdaptiveIs {
    type Stats = IsStats;

    fn target(&self) -> Arc<dyn Target> {
        self.target.clone()
    }

    fn step(&mut self) -> fab_sampler::Result<StepReport<IsStats>> {
        let mut rng = self.rng.clone();
        let s = self.draw(self.config.batch_size, &mut rng)?.weigh(self.target.density(), DType::F64)?;
        self.rng = rng;
        let w = fab_core::stats::normalized_weights(&s.log_w);
        let (mut mean, mut std) = (self.proposal.mean().to_vec(), self.proposal.std().to_vec());
        for j in 0..2 {
            let m: f64 = w.iter().enumerate().map(|(i, w)| w * s.x[2 * i + j]).sum();
            let v: f64 = w.iter().enumerate().map(|(i, w)| w * (s.x[2 * i + j] - m).powi(2)).sum();
            let r = self.config.rate;
            mean[j] = (1.0 - r) * mean[j] + r * m;
            std[j] = ((1.0 - r) * std[j] + r * v.sqrt()).max(1e-3);
        }
        self.proposal = DiagGaussian::new(mean, std);
        let mut report = StepReport::empty();
        report.stats = IsStats { ess: s.ess(), mean_0: self.proposal.mean()[0] };
        Ok(report)
    }

    fn save_state(&self, dir: &Path) -> fab_sampler::Result<()> {
        let state = IsState { mean: self.proposal.mean().to_vec(), std: self.proposal.std().to_vec(), rng: self.rng.clone() };
        let path = dir.join("is.json");
        std::fs::write(&path, serde_json::to_string(&state)?).map_err(|e| fab_sampler::Error::io(&path, e))
    }

    fn load_state(&mut self, dir: &Path) -> fab_sampler::Result<()> {
        let path = dir.join("is.json");
        let text = std::fs::read_to_string(&path).map_err(|e| fab_sampler::Error::io(&path, e))?;
        let s: IsState = serde_json::from_str(&text)?;
        self.proposal = DiagGaussian::new(s.mean, s.std);
        self.rng = s.rng;
        Ok(())
    }
}

impl FamilyConfig for IsConfig {
    type Sampler = AdaptiveIs;

    fn parse(text: &str, overrides: &[String]) -> fab_sampler::Result<Self> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| fab_sampler::Error::Config(e.message().to_string()))?;
        for o in overrides {
            let (k, v) = o.split_once('=').ok_or_else(|| fab_sampler::Error::Config(format!("override `{o}`")))?;
            let v: toml::Table =
                format!("v = {v}").parse().map_err(|e: toml::de::Error| fab_sampler::Error::Config(e.message().to_string()))?;
            table.insert(k.trim().to_string(), v["v"].clone());
        }
        let c: IsConfig =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| fab_sampler::Error::Config(e.message().to_string()))?;
        if !(c.rate > 0.0 && c.rate <= 1.0) {
            return Err(fab_sampler::Error::Config(format!("rate must be in (0, 1], got {}", c.rate)));
        }
        Ok(c)
    }

    fn to_toml(&self) -> fab_sampler::Result<String> {
        toml::to_string(self).map_err(|e| fab_sampler::Error::Config(e.to_string()))
    }

    fn run_settings(&self) -> RunSettings {
        let sizes = EvalSizes {
            n_samples: 4000,
            n_refined_samples: 0,
            refined_batch: 1,
            n_test: 2000,
            n_mode_samples: 1,
            estimator_repeats: 0,
            n_w2: 0,
        };
        RunSettings {
            name: self.name.clone(),
            seed: self.seed,
            n_iterations: self.n_iterations,
            n_evals: 4,
            checkpoint_every: self.checkpoint_every,
            checkpoint_minutes: self.checkpoint_minutes,
            keep_checkpoints: KeepCheckpoints { last: self.checkpoint_keep_last, every: self.checkpoint_keep_every },
            time_limit_hours: None,
            eval_sizes: sizes,
            final_eval_sizes: sizes,
            plots: self.plots,
        }
    }

    fn build(&self) -> fab_sampler::Result<AdaptiveIs> {
        Ok(AdaptiveIs {
            config: self.clone(),
            target: target(),
            proposal: DiagGaussian::new(vec![0.0, 0.0], vec![3.0, 3.0]),
            rng: fab_core::seeded_rng(self.seed, 1),
        })
    }

    fn memory_estimate(&self) -> MemoryEstimate {
        let mut est = MemoryEstimate::new();
        // Each draw keeps x (2 values), log q and log p.
        est.add(format!("batch_size = {}", self.batch_size), self.batch_size as f64 * 4.0 * 8.0);
        est
    }
}

const CONFIG: &str = r#"
family = "adaptive_is"
name = "is-test"
seed = 4
n_iterations = 40
batch_size = 256
rate = 0.3
checkpoint_every = 10
plots = true
"#;

fn tmp(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("sampler_{name}"))
}

#[test]
fn a_new_family_trains_evaluates_and_plots_through_the_driver() {
    let cfg = IsConfig::parse(CONFIG, &[]).unwrap();
    let mut fresh = fab_sampler::Run::from_config(&cfg).unwrap();
    let before = fresh.evaluate(false).unwrap().metrics;
    let out = tmp("train");
    let RunOutcome::Finished(m) = run::train::<IsConfig>(Some(cfg), &RunOptions::new(&out)).unwrap() else { panic!("stopped") };
    // A proposal N(0, 3²I) against N((2, −1), diag(.25, 2.25)): poor ESS; after 40 moment
    // steps it matches the target closely.
    assert!(before["eval_ess_model"] < 0.5, "{before:?}");
    assert!(m["eval_ess_model"] > 0.9, "{m:?}");
    // Generic metrics from the target's exact sampler and known log Z (= 0).
    assert!(m["kl_forward"].abs() < 0.05 && m["log_z_abs_error"] < 0.05, "{m:?}");
    assert!((m["eubo"] - m["kl_forward"]).abs() < 1e-12, "log Z = 0: {m:?}");
    assert_eq!(m["iteration"], 40.0);
    for f in ["config.toml", "metrics.jsonl", "final_metrics.json", "plots/training.png", "checkpoints/latest"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // The family's typed statistics are in the step lines.
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "train");
    assert!(first["ess"].as_f64().is_some() && first["mean_0"].as_f64().is_some(), "{first}");
    // `fab eval` of the run reproduces the final metrics exactly (same checkpoint, same
    // evaluation stream).
    let again = run::evaluate_run::<IsConfig>(&out, &[]).unwrap();
    for (k, v) in &m {
        assert_eq!(v.to_bits(), again[k].to_bits(), "{k}");
    }
}

#[test]
fn a_new_family_resumes_bit_identically() {
    let cfg = IsConfig::parse(CONFIG, &[]).unwrap();
    let (a, b) = (tmp("resume_a"), tmp("resume_b"));
    let RunOutcome::Finished(ma) = run::train::<IsConfig>(Some(cfg.clone()), &RunOptions::new(&a)).unwrap() else { panic!() };
    let opts = RunOptions { max_iterations_this_run: Some(13), ..RunOptions::new(&b) };
    assert!(matches!(run::train::<IsConfig>(Some(cfg), &opts).unwrap(), RunOutcome::Stopped { iteration: 13, .. }));
    let resume = RunOptions { resume: true, ..RunOptions::new(&b) };
    let RunOutcome::Finished(mb) = run::train::<IsConfig>(None, &resume).unwrap() else { panic!() };
    for (k, v) in &ma {
        if k != "train_seconds" {
            assert_eq!(v.to_bits(), mb[k].to_bits(), "{k}: {v} vs {}", mb[k]);
        }
    }
    let sa = std::fs::read(a.join("checkpoints/iter_00000040/is.json")).unwrap();
    let sb = std::fs::read(b.join("checkpoints/iter_00000040/is.json")).unwrap();
    assert_eq!(sa, sb);
    // A stop signal set before the first iteration stops after it, with a checkpoint.
    let c = tmp("resume_c");
    let stop = fab_sampler::StopSignal::new();
    stop.request();
    let opts = RunOptions { stop, ..RunOptions::new(&c) };
    assert!(matches!(
        run::train::<IsConfig>(Some(IsConfig::parse(CONFIG, &[]).unwrap()), &opts).unwrap(),
        RunOutcome::Stopped { iteration: 1, .. }
    ));
    assert_eq!(run::checkpoints_newest_first(&c).len(), 1);
}

#[test]
fn a_run_that_cannot_fit_in_memory_is_refused_before_anything_is_written() {
    // 2.5·10¹³ draws × 32 bytes = 800 TB: more than any machine this runs on.
    let cfg = IsConfig::parse(CONFIG, &["batch_size=25000000000000".into()]).unwrap();
    let out = tmp("memory");
    let e = run::train::<IsConfig>(Some(cfg), &RunOptions::new(&out)).unwrap_err().to_string();
    assert!(e.contains("batch_size = 25000000000000") && e.contains("memory") && !e.contains('\n'), "{e}");
    assert!(!out.exists(), "the refused run created {}", out.display());
}

#[test]
fn evaluation_refuses_an_empty_test_set() {
    let cfg = IsConfig::parse(CONFIG, &[]).unwrap();
    let mut run = fab_sampler::Run::from_config(&cfg).unwrap();
    let sizes = EvalSizes { n_test: 0, ..cfg.run_settings().eval_sizes };
    let err = fab_sampler::eval::evaluate(run.sampler_mut(), &sizes, &mut fab_core::seeded_rng(0, 0)).unwrap_err();
    assert!(err.to_string().contains("n_test"), "{err}");
}

#[test]
fn a_directory_that_is_not_this_run_is_never_written_into() {
    let cfg = IsConfig::parse(CONFIG, &[]).unwrap();
    // A non-empty directory without a run: refused, its files untouched.
    let d = tmp("foreign");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("metrics.jsonl"), "somebody else's\n").unwrap();
    let err = run::train::<IsConfig>(Some(cfg.clone()), &RunOptions::new(&d)).unwrap_err().to_string();
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read_to_string(d.join("metrics.jsonl")).unwrap(), "somebody else's\n");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    // An existing empty directory is fine.
    let e = tmp("empty");
    std::fs::create_dir_all(&e).unwrap();
    assert!(matches!(run::train::<IsConfig>(Some(cfg), &RunOptions::new(&e)).unwrap(), RunOutcome::Finished(_)));
    assert!(!e.join(fab_sampler::RunLock::FILE).exists(), "the lock is released at the end");
}

#[test]
fn a_run_directory_in_use_is_refused_and_a_stale_lock_is_taken_over() {
    let cfg = IsConfig::parse(CONFIG, &[]).unwrap();
    let d = tmp("locked");
    let opts = RunOptions { max_iterations_this_run: Some(5), ..RunOptions::new(&d) };
    assert!(matches!(
        run::train::<IsConfig>(Some(cfg), &opts).unwrap(),
        RunOutcome::Stopped { iteration: 5, reason: fab_sampler::StopReason::IterationCap }
    ));
    // A live process (this one) holds the directory: resume and eval are refused, nothing changes.
    let lock = d.join(fab_sampler::RunLock::FILE);
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let before = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    let resume = RunOptions { resume: true, ..RunOptions::new(&d) };
    let err = run::train::<IsConfig>(None, &resume).unwrap_err().to_string();
    assert!(err.contains("in use by process"), "{err}");
    assert!(run::evaluate_run::<IsConfig>(&d, &[]).unwrap_err().to_string().contains("in use"));
    assert_eq!(std::fs::read_to_string(d.join("metrics.jsonl")).unwrap(), before);
    // The lock of a process that no longer exists (killed with -9) is stale: taken over.
    std::fs::write(&lock, "4294967294\n").unwrap();
    assert!(matches!(run::train::<IsConfig>(None, &resume).unwrap(), RunOutcome::Finished(_)));
    assert!(!lock.exists());
    // Resuming a directory that holds no run says so and creates nothing.
    let none = tmp("no_run_here");
    let err = run::train::<IsConfig>(None, &RunOptions { resume: true, ..RunOptions::new(&none) }).unwrap_err().to_string();
    assert!(err.contains("no run to resume"), "{err}");
    assert!(!none.exists());
}

#[test]
fn stop_reasons_have_distinct_exit_codes() {
    use fab_sampler::StopReason::*;
    let codes = [Interrupted.exit_code(), TimeLimit.exit_code(), IterationCap.exit_code()];
    assert!(codes.iter().all(|c| *c > 1), "0 is success and 1 an error");
    assert!(codes[0] != codes[1] && codes[1] != codes[2] && codes[0] != codes[2]);
}

/// Final metrics without the wall-clock field.
fn finished(outcome: RunOutcome) -> fab_sampler::Metrics {
    let RunOutcome::Finished(mut m) = outcome else { panic!("expected a finished run") };
    m.remove("train_seconds");
    m
}

#[test]
fn a_damaged_checkpoint_is_detected_named_and_skipped_for_the_previous_one() {
    let cfg = IsConfig::parse(CONFIG, &[]).unwrap();
    let reference_dir = tmp("damage_ref");
    let reference = finished(run::train::<IsConfig>(Some(cfg.clone()), &RunOptions::new(&reference_dir)).unwrap());
    for damage in ["flip", "truncate"] {
        let d = tmp(&format!("damage_{damage}"));
        // Checkpoints after iterations 10 and 20, and at the stop after 25.
        let opts = RunOptions { max_iterations_this_run: Some(25), ..RunOptions::new(&d) };
        assert!(matches!(run::train::<IsConfig>(Some(cfg.clone()), &opts).unwrap(), RunOutcome::Stopped { iteration: 25, .. }));
        let file = d.join("checkpoints/iter_00000025/is.json");
        let mut bytes = std::fs::read(&file).unwrap();
        if damage == "flip" {
            let i = bytes.len() / 2;
            bytes[i] ^= 0x01;
        } else {
            bytes.truncate(bytes.len() / 2);
        }
        std::fs::write(&file, bytes).unwrap();
        // Loading that checkpoint names the file.
        let (cfg2, _) = (cfg.clone(), ());
        let mut probe = fab_sampler::Run::from_config(&cfg2).unwrap();
        let err = probe.load_checkpoint(&d.join("checkpoints/iter_00000025")).unwrap_err().to_string();
        assert!(err.contains("is.json") && err.contains("checksum"), "{damage}: {err}");
        // Resume falls back to iteration 20 and still ends bit-identical to an uninterrupted run.
        let resume = RunOptions { resume: true, ..RunOptions::new(&d) };
        let m = finished(run::train::<IsConfig>(None, &resume).unwrap());
        assert_eq!(m.len(), reference.len());
        for (k, v) in &reference {
            assert_eq!(v.to_bits(), m[k].to_bits(), "{damage}: {k}");
        }
    }
}

#[test]
fn a_run_killed_before_its_first_checkpoint_restarts_on_resume() {
    let cfg = IsConfig::parse(CONFIG, &[]).unwrap();
    let reference_dir = tmp("nockpt_ref");
    let reference = finished(run::train::<IsConfig>(Some(cfg.clone()), &RunOptions::new(&reference_dir)).unwrap());
    // What a kill -9 before the first checkpoint leaves: the config and a few log lines.
    let d = tmp("nockpt");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.toml"), cfg.to_toml().unwrap()).unwrap();
    std::fs::write(d.join("metrics.jsonl"), "{\"kind\":\"train\",\"iteration\":1}\n").unwrap();
    let resume = RunOptions { resume: true, ..RunOptions::new(&d) };
    let m = finished(run::train::<IsConfig>(None, &resume).unwrap());
    for (k, v) in &reference {
        assert_eq!(v.to_bits(), m[k].to_bits(), "{k}");
    }
    // The stale log lines were replaced by the restarted run's.
    let log = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    let train_line_1 = |l: &&str| l.contains("\"kind\":\"train\"") && (l.contains("\"iteration\":1,") || l.contains("\"iteration\":1}"));
    assert_eq!(log.lines().filter(train_line_1).count(), 1, "{log}");
}

#[test]
fn an_earlier_checkpoint_evaluates_as_a_run_stopped_there() {
    // A run stopped at iteration 20, evaluated at its latest checkpoint…
    let stopped = tmp("ckpt_eval_stopped");
    let opts = RunOptions { max_iterations_this_run: Some(20), ..RunOptions::new(&stopped) };
    let cfg = IsConfig::parse(CONFIG, &[]).unwrap();
    assert!(matches!(run::train::<IsConfig>(Some(cfg.clone()), &opts).unwrap(), RunOutcome::Stopped { iteration: 20, .. }));
    let want = run::evaluate_run_into::<IsConfig>(&stopped, Some(&tmp("ckpt_eval_stopped_out")), None, &[]).unwrap();
    // …gives the same bits as the checkpoint of iteration 20 of a run trained to its end.
    let full = tmp("ckpt_eval_full");
    let RunOutcome::Finished(last) = run::train::<IsConfig>(Some(cfg), &RunOptions::new(&full)).unwrap() else { panic!() };
    let before = std::fs::read(full.join("final_metrics.json")).unwrap();
    let out = tmp("ckpt_eval_full_out");
    let got = run::evaluate_checkpoint_into::<IsConfig>(&full, 20, &out, None, &[]).unwrap();
    assert_eq!(want.len(), got.len());
    // Wall-clock keys (`train_seconds`, …) are the two runs' own.
    let timed = |k: &str| k.ends_with("_seconds");
    for (k, v) in want.iter().filter(|(k, _)| !timed(k)) {
        assert_eq!(v.to_bits(), got[k].to_bits(), "{k}");
    }
    let differs = |(k, v): (&String, &f64)| !timed(k) && got.get(k).is_some_and(|g| g.to_bits() != v.to_bits());
    assert!(last.iter().any(differs), "iteration 20 is not the end");
    assert!(out.join("final_metrics.json").exists());
    assert_eq!(std::fs::read(full.join("final_metrics.json")).unwrap(), before, "the run's own results are untouched");
    // Refused: a missing iteration (the error names what is there), the run directory as output,
    // and a non-eval override.
    let e = run::evaluate_checkpoint_into::<IsConfig>(&full, 15, &tmp("ckpt_eval_x"), None, &[]).unwrap_err().to_string();
    assert!(e.contains("iteration 15") && e.contains("from 10 to 40"), "{e}");
    let e = run::evaluate_checkpoint_into::<IsConfig>(&full, 20, &full, None, &[]).unwrap_err().to_string();
    assert!(e.contains("another directory"), "{e}");
    assert_eq!(std::fs::read(full.join("final_metrics.json")).unwrap(), before);
    assert!(run::evaluate_checkpoint_into::<IsConfig>(&full, 20, &tmp("ckpt_eval_y"), None, &["seed=3".into()]).is_err());
}

#[test]
fn checkpoints_are_also_written_by_time() {
    // No iteration interval, a vanishing time interval: every iteration is checkpointed.
    let cfg = IsConfig::parse(CONFIG, &["checkpoint_every=0".into(), "checkpoint_minutes=1e-9".into()]).unwrap();
    let d = tmp("by_time");
    let opts = RunOptions { max_iterations_this_run: Some(6), ..RunOptions::new(&d) };
    assert!(matches!(run::train::<IsConfig>(Some(cfg), &opts).unwrap(), RunOutcome::Stopped { iteration: 6, .. }));
    assert_eq!(run::checkpoints_newest_first(&d).len(), 6);
}

#[test]
fn old_checkpoints_are_pruned_as_configured_and_the_run_still_resumes_bit_identically() {
    let iterations = |d: &Path| {
        let mut v: Vec<usize> = run::checkpoints_newest_first(d)
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().trim_start_matches("iter_").parse().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    let keep = ["checkpoint_every=1".to_string(), "checkpoint_keep_last=2".into(), "checkpoint_keep_every=10".into()];
    let cfg = IsConfig::parse(CONFIG, &keep).unwrap();
    let d = tmp("prune");
    let opts = RunOptions { max_iterations_this_run: Some(23), ..RunOptions::new(&d) };
    assert!(matches!(run::train::<IsConfig>(Some(cfg), &opts).unwrap(), RunOutcome::Stopped { iteration: 23, .. }));
    assert_eq!(iterations(&d), [10, 20, 22, 23]);
    let resume = RunOptions { resume: true, ..RunOptions::new(&d) };
    let RunOutcome::Finished(pruned) = run::train::<IsConfig>(None, &resume).unwrap() else { panic!() };
    assert_eq!(iterations(&d), [10, 20, 30, 39, 40]);
    // Pruning only deletes files: the run is the one that kept everything.
    let all = tmp("prune_none");
    let RunOutcome::Finished(kept) =
        run::train::<IsConfig>(Some(IsConfig::parse(CONFIG, &keep[..1]).unwrap()), &RunOptions::new(&all)).unwrap()
    else {
        panic!()
    };
    assert_eq!(iterations(&all).len(), 40);
    for (k, v) in kept.iter().filter(|(k, _)| !k.ends_with("_seconds")) {
        assert_eq!(v.to_bits(), pruned[k].to_bits(), "{k}");
    }
    // A pruned checkpoint is named as missing when asked for; a kept one evaluates.
    let e = run::evaluate_checkpoint_into::<IsConfig>(&d, 25, &tmp("prune_eval_x"), None, &[]).unwrap_err().to_string();
    assert!(e.contains("iteration 25"), "{e}");
    assert!(run::evaluate_checkpoint_into::<IsConfig>(&d, 20, &tmp("prune_eval"), None, &[]).is_ok());
}

#[test]
fn evaluation_into_another_directory_and_seeded_draws() {
    let cfg = IsConfig::parse(CONFIG, &[]).unwrap();
    let d = tmp("eval_out");
    let RunOutcome::Finished(m) = run::train::<IsConfig>(Some(cfg), &RunOptions::new(&d)).unwrap() else { panic!() };
    let before = std::fs::read(d.join("final_metrics.json")).unwrap();
    // `fab eval DIR --out OTHER`: the same numbers (same checkpoint and stream), written into
    // OTHER with the plots; the run directory is untouched.
    let other = tmp("eval_out_other");
    let again = run::evaluate_run_into::<IsConfig>(&d, Some(&other), None, &[]).unwrap();
    for (k, v) in &m {
        assert_eq!(v.to_bits(), again[k].to_bits(), "{k}");
    }
    assert!(other.join("final_metrics.json").exists() && other.join("plots/training.png").exists());
    assert_eq!(std::fs::read(d.join("final_metrics.json")).unwrap(), before);
    // An output that cannot be written is refused before any work.
    let file = tmp("eval_out_file");
    std::fs::write(&file, "not a directory").unwrap();
    assert!(run::evaluate_run_into::<IsConfig>(&d, Some(&file), None, &[]).is_err());
    // Draws on the checkpoint's stream repeat; a seed gives its own, repeatable stream.
    let draw = |seed: Option<u64>| {
        let mut r = run::load_run::<IsConfig>(&d, &[]).unwrap().1;
        if let Some(s) = seed {
            r.reseed_evaluation(s);
        }
        r.draw(5).unwrap().x
    };
    assert_eq!(draw(None), draw(None));
    assert_eq!(draw(Some(7)), draw(Some(7)));
    assert_ne!(draw(Some(7)), draw(Some(8)));
    assert_ne!(draw(Some(7)), draw(None));
    // `fab eval DIR --out OTHER --seed S`: an independent evaluation set, the same for the same
    // seed (also through the checkpoint of the same iteration), another for another seed or none.
    let timed = |k: &str| k.ends_with("_seconds");
    let same = |x: &fab_sampler::Metrics, y: &fab_sampler::Metrics| {
        x.len() == y.len() && x.iter().filter(|(k, _)| !timed(k)).all(|(k, v)| y.get(k).is_some_and(|w| w.to_bits() == v.to_bits()))
    };
    let a = run::evaluate_run_into::<IsConfig>(&d, Some(&tmp("eval_seed_a")), Some(7), &[]).unwrap();
    let last = m["iteration"] as usize;
    let b = run::evaluate_checkpoint_into::<IsConfig>(&d, last, &tmp("eval_seed_b"), Some(7), &[]).unwrap();
    let c = run::evaluate_run_into::<IsConfig>(&d, Some(&tmp("eval_seed_c")), Some(8), &[]).unwrap();
    assert!(same(&a, &b), "{a:?}\n{b:?}");
    assert!(!same(&a, &c) && !same(&a, &m));
    // Refused into the run directory, whose results stay the checkpoint stream's.
    let e = run::evaluate_run_into::<IsConfig>(&d, None, Some(7), &[]).unwrap_err().to_string();
    assert!(e.contains("--out"), "{e}");
    assert_eq!(std::fs::read(d.join("final_metrics.json")).unwrap(), before);
    // Every invocation is recorded with the version and the command line.
    let inv = std::fs::read_to_string(d.join("invocations.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(inv.lines().next().unwrap()).unwrap();
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));
    assert!(first["command"].as_array().is_some_and(|a| !a.is_empty()) && first["resumed"] == false);
}
