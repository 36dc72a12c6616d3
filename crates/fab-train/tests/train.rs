//! End-to-end training tests: every loss runs, bad configs are refused before anything is
//! written, an interrupted-and-resumed run ends bit-identical to an uninterrupted one, and FAB
//! finds every mode of a well-separated mixture.

use std::path::Path;

use std::sync::Arc;

use fab_core::test_utils::ScratchDir;
use fab_sampler::run::{self, RunOptions, RunOutcome};
use fab_sampler::{DensityTarget, FamilyConfig, Run};
use fab_train::{ExperimentConfig, FabSampler, LossKind};

/// A FAB run of `cfg` (iteration 0).
fn new_run(cfg: ExperimentConfig) -> Run<FabSampler> {
    Run::from_config(&cfg).unwrap()
}

fn run_experiment(cfg: Option<ExperimentConfig>, opts: &RunOptions) -> fab_sampler::Result<RunOutcome> {
    run::train::<ExperimentConfig>(cfg, opts)
}

/// A small but complete FAB-with-buffer config on a 6-mode mixture (a ring of radius 8).
fn small_config(loss: &str, n_iter: usize) -> ExperimentConfig {
    let text = format!(
        r#"
name = "test"
seed = 3
[target]
type = "gmm"
mixture = {{ dim = 2, means = [[8.0, 0.0], [4.0, 6.93], [-4.0, 6.93], [-8.0, 0.0], [-4.0, -6.93], [4.0, -6.93]], scales = 0.7 }}
[flow]
type = "real_nvp"
dim = 2
n_layers = 6
layer_nodes_per_dim = 16
[ais]
n_intermediate = 1
[ais.transition.metropolis]
step_size = 3.0
[buffer]
min_len = 256
max_len = 2560
[train]
loss = "{loss}"
n_iterations = {n_iter}
batch_size = 64
n_updates_per_ais = 4
checkpoint_every = 10
[train.optimizer]
lr = 1e-3
[eval]
n_evals = 3
batch_size = 256
inner_batch_size = 128
n_test = 256
final_batch_size = 1000
n_mode_samples = 1000
mae_repeats = 0
plots = false
"#
    );
    ExperimentConfig::from_toml_with_overrides(&text, &[]).unwrap()
}

fn tmp(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("train_{name}"))
}

fn opts(out: &Path, resume: bool, limit: Option<usize>) -> RunOptions {
    RunOptions { resume, max_iterations_this_run: limit, ..RunOptions::new(out) }
}

#[test]
fn every_loss_trains_without_error() {
    for loss in ["fab_buffer", "fab_no_buffer", "reverse_kl", "forward_kl", "alpha2_nis"] {
        let mut t = new_run(small_config(loss, 5));
        for _ in 0..5 {
            let info = t.step().unwrap();
            assert!(info.loss.is_finite() || info.skipped_steps > 0, "{loss}: {info:?}");
        }
        assert_eq!(t.iteration(), 5);
        let m = t.evaluate(false).unwrap().metrics;
        assert!(m["eval_ess_flow"] > 0.0 && m["eval_ess_flow"] <= 1.0, "{loss}: {m:?}");
    }
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let cfg = small_config("fab_buffer", 30);
    let a = tmp("resume_a");
    let b = tmp("resume_b");
    let RunOutcome::Finished(ma) = run_experiment(Some(cfg.clone()), &opts(&a, false, None)).unwrap() else { panic!("a stopped") };
    // Interrupt after 13 iterations (between checkpoints), then resume twice more.
    match run_experiment(Some(cfg), &opts(&b, false, Some(13))).unwrap() {
        RunOutcome::Stopped { iteration, .. } => assert_eq!(iteration, 13),
        other => panic!("expected a stop, got {other:?}"),
    }
    assert!(matches!(run_experiment(None, &opts(&b, true, Some(9))).unwrap(), RunOutcome::Stopped { iteration: 22, .. }));
    let RunOutcome::Finished(mb) = run_experiment(None, &opts(&b, true, None)).unwrap() else { panic!("b stopped") };
    let fa = std::fs::read(a.join("checkpoints/iter_00000030/flow.safetensors")).unwrap();
    let fb = std::fs::read(b.join("checkpoints/iter_00000030/flow.safetensors")).unwrap();
    assert_eq!(fa, fb, "final parameters differ");
    let oa = std::fs::read(a.join("checkpoints/iter_00000030/optimizer.safetensors")).unwrap();
    let ob = std::fs::read(b.join("checkpoints/iter_00000030/optimizer.safetensors")).unwrap();
    assert_eq!(oa, ob, "optimiser state differs");
    for (k, v) in &ma {
        if k != "train_seconds" {
            assert!(v.to_bits() == mb[k].to_bits() || (v.is_nan() && mb[k].is_nan()), "{k}: {v} vs {}", mb[k]);
        }
    }
    // The metric logs agree line by line, apart from wall-clock fields.
    let strip = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("seconds");
                o.remove("train_seconds");
                v.to_string()
            })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));
    // `fab eval DIR --set eval.…`: the final evaluation again with other sample counts (the
    // AIS count follows its own key); training keys are refused.
    let m =
        run::evaluate_run::<ExperimentConfig>(&a, &["eval.final_batch_size=300".into(), "eval.final_ais_batch_size=200".into()]).unwrap();
    assert_eq!(m["iteration"], 30.0);
    assert!(m["eval_ess_flow"] > 0.0 && m["eval_ess_ais"] > 0.0, "{m:?}");
    assert_ne!(m["eval_ess_flow"].to_bits(), ma["eval_ess_flow"].to_bits(), "the override had no effect");
    let err = run::evaluate_run::<ExperimentConfig>(&a, &["train.batch_size=8".into()]).unwrap_err().to_string();
    assert!(err.contains("train.batch_size"), "{err}");
    // A finished run refuses to be overwritten.
    let err = run_experiment(Some(small_config("fab_buffer", 30)), &opts(&a, false, None)).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
}

#[test]
fn bad_configs_name_the_key_and_write_nothing() {
    let cases = [
        ("train.bogus=1", "bogus"),
        ("train.batch_size=\"many\"", "train.batch_size"),
        ("train.batch_size=-4", "train.batch_size"),
        ("train.batch_size=0", "train.batch_size"),
        ("ais.alpha=0.0", "ais.alpha"),
        ("buffer.min_len=100000", "buffer"),
        ("flow.dim=3", "flow.dim"),
        ("device=\"gpu\"", "device"),
        ("device=\"cuda:x\"", "device"),
    ];
    let base = small_config("fab_buffer", 5).to_toml().unwrap();
    for (ov, key) in cases {
        let e = ExperimentConfig::from_toml_with_overrides(&base, &[ov.to_string()]).unwrap_err().to_string();
        assert!(e.contains(key), "{ov}: {e}");
        assert!(!e.contains('\n'), "{ov}: multi-line error {e}");
    }
    let out = tmp("never_written");
    // Validation happens before the output directory is created.
    let mut cfg = small_config("fab_buffer", 5);
    cfg.train.batch_size = 0;
    assert!(run_experiment(Some(cfg), &opts(&out, false, None)).is_err());
    assert!(!out.exists());
    // A CUDA device in a CPU-only build is a clear error, not a panic, and nothing is written.
    if !cfg!(feature = "cuda") {
        let mut cfg = small_config("fab_buffer", 5);
        cfg.device = "cuda:0".into();
        let e = FabSampler::new(cfg.clone()).unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
        assert!(run_experiment(Some(cfg), &opts(&out, false, None)).is_err());
        assert!(!out.exists());
    }
    let _ = LossKind::FabBuffer;
}

#[test]
fn fab_with_buffer_finds_every_mode_of_a_ring_mixture() {
    // 6 modes 8 apart (σ = 0.7): a flow started at N(0, I) must discover all of them via AIS.
    let mut t = new_run(small_config("fab_buffer", 600));
    let m0 = t.evaluate(true).unwrap().metrics;
    // The initial N(0, I) flow puts essentially nothing within 3.7σ of any mode (radius 8/0.7σ).
    assert_eq!(m0["modes_covered"], 0.0, "{m0:?}");
    while !t.is_finished() {
        t.step().unwrap();
    }
    let m = t.evaluate(true).unwrap().metrics;
    // 1000 flow samples on 6 equal modes: a mode with < 1 sample has mass < ~0.5 %; a fitted
    // flow puts ~167 samples in each.
    assert_eq!(m["modes_covered"], 6.0, "{m:?}");
    // Mass is shared fairly among the modes: each mode's share of the mode-assigned samples is
    // within a factor 1.5 of 1/6 (~140 samples per mode: the binomial sd of a share is ≈ 0.015,
    // i.e. ±9 % relative, so the band is > 5 sd wide for a correct flow), and most of the mass
    // sits on the modes rather than between them.
    assert!(m["mode_mass_ratio_min"] > 0.5 && m["mode_mass_ratio_max"] < 1.5, "{m:?}");
    assert!(m["mode_unassigned_fraction"] < 0.25, "{m:?}");
    // A flow that covers every mode with roughly the right mass has a substantial importance
    // ESS (the untrained flow's is ≈ 0). Measured after 600–1200 iterations over seeds and with
    // the 256- and 512-bit matrix kernels (whose rounding differs): 0.31–0.55, so the bar sits
    // below that spread; mode coverage and fairness above are the sharp checks.
    assert!(m["eval_ess_flow"] > 0.25, "{m:?}");
}

#[test]
fn reverse_kl_drops_modes_where_fab_does_not() {
    // The mode-seeking baseline collapses onto few modes of the same ring (the paper's point).
    let mut t = new_run(small_config("reverse_kl", 400));
    while !t.is_finished() {
        t.step().unwrap();
    }
    let m = t.evaluate(true).unwrap().metrics;
    assert!(m["modes_covered"] < 6.0, "{m:?}");
}

#[test]
fn every_shipped_experiment_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut n = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "toml") && f.file_name().is_some_and(|n| n != "Cargo.toml") {
                let text = std::fs::read_to_string(&f).unwrap();
                // Other families' configurations are checked by their own crates.
                let family = text.parse::<toml::Table>().unwrap().get("family").and_then(|v| v.as_str().map(str::to_string));
                if family.is_some_and(|f| f != fab_train::FAMILY) {
                    continue;
                }
                let cfg = ExperimentConfig::from_toml_with_overrides(&text, &[]).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                assert!(cfg.n_iterations() > 0);
                n += 1;
            }
        }
    }
    assert!(n >= 5, "found only {n} configs");
}

#[test]
fn fab_trains_on_a_user_supplied_density() {
    // Two well-separated 2-D Gaussian bumps (σ = 0.5 at (±4, 0)), unnormalised, written inline.
    let two_bumps = fab_core::FnDensity::new(2, |x: &candle_core::Tensor| {
        let a = x.narrow(1, 0, 1)?.squeeze(1)?;
        let b = x.narrow(1, 1, 1)?.squeeze(1)?;
        let l = ((((&a - 4.0)?.sqr()? + b.sqr()?)? * -2.0)?).exp()?;
        let r = ((((&a + 4.0)?.sqr()? + b.sqr()?)? * -2.0)?).exp()?;
        (l + r)?.log()
    });
    let mut cfg = small_config("fab_buffer", 300);
    cfg.ais.transition = fab_ais::TransitionConfig::Metropolis(fab_ais::MetropolisConfig { step_size: 2.0, ..Default::default() });
    let sampler = FabSampler::with_target(cfg.clone(), Arc::new(DensityTarget::new(Box::new(two_bumps)))).unwrap();
    let mut t = Run::new(sampler, cfg.run_settings());
    while !t.is_finished() {
        t.step().unwrap();
    }
    let x = t.draw(2000).unwrap().x;
    // Both bumps get a substantial share of the flow's samples (each has half the mass).
    let right = x.chunks(2).filter(|p| p[0] > 0.0).count() as f64 / 2000.0;
    assert!((0.3..0.7).contains(&right), "share on the right bump: {right}");
    let e = t.evaluate(false).unwrap();
    let m = &e.metrics;
    assert!(m["eval_ess_flow"] > 0.3, "{m:?}");
    // A user's density gets every generic metric; without an exact sampler the test-set
    // metrics are absent with a reason.
    assert!(m.contains_key("ais_log_z_estimate") && m.contains_key("flow_fraction_finite"), "{m:?}");
    assert!(!m.contains_key("kl_forward"));
    // A forward-KL loss cannot be used without exact samples.
    let bad = small_config("forward_kl", 5);
    let err = FabSampler::with_target(
        bad,
        Arc::new(DensityTarget::new(Box::new(fab_core::FnDensity::new(2, |x: &candle_core::Tensor| x.sum(1))))),
    )
    .unwrap_err();
    assert!(err.to_string().contains("forward_kl"), "{err}");
}

/// The device-generic candle path (what `device = "cuda"` runs) trains like the hand-written
/// CPU path: the same seed gives the same losses and final parameters to rounding for every
/// loss. The flows' tests check single passes of the two paths to 1e-9; over 8 iterations of
/// Adam the differences stay at float64 rounding amplified by a few hundred steps, hence 1e-6.
#[test]
fn candle_path_trains_like_the_cpu_path() {
    for loss in ["fab_buffer", "fab_no_buffer", "reverse_kl", "forward_kl", "alpha2_nis"] {
        let mut a = new_run(small_config(loss, 8));
        let mut b = new_run(small_config(loss, 8));
        b.sampler_mut().set_flow_backend(fab_flows::Backend::Candle);
        for _ in 0..8 {
            let (ia, ib) = (a.step().unwrap(), b.step().unwrap());
            assert!(
                (ia.loss - ib.loss).abs() <= 1e-6 * (1.0 + ia.loss.abs()) || (ia.loss.is_nan() && ib.loss.is_nan()),
                "{loss}: {} vs {}",
                ia.loss,
                ib.loss
            );
        }
        for ((name, pa), (_, pb)) in a.sampler().flow().params().iter().zip(b.sampler().flow().params().iter()) {
            let (va, vb) = (fab_core::to_f64_vec(pa.as_tensor()).unwrap(), fab_core::to_f64_vec(pb.as_tensor()).unwrap());
            let diff = va.iter().zip(&vb).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(diff < 1e-6, "{loss}: parameter {name} differs by {diff}");
        }
    }
}

/// A run stopped by its time limit continues with a larger limit given on resume (before, the
/// restored training time was already past the limit, so every resume did one iteration); keys
/// that would change training are refused by name, and an edited config.toml is reported.
#[test]
fn resume_after_a_time_limit_takes_safe_overrides_and_refuses_the_rest() {
    let reference = {
        let dir = tmp("tl_ref");
        let RunOutcome::Finished(m) = run_experiment(Some(small_config("fab_buffer", 12)), &opts(&dir, false, None)).unwrap() else {
            panic!("stopped")
        };
        m
    };
    let d = tmp("tl");
    let mut cfg = small_config("fab_buffer", 12);
    cfg.train.time_limit_hours = Some(1e-12);
    let stopped = run_experiment(Some(cfg), &opts(&d, false, None)).unwrap();
    assert!(matches!(stopped, RunOutcome::Stopped { iteration: 1, reason: fab_sampler::StopReason::TimeLimit }), "{stopped:?}");
    let with = |ov: &[&str]| RunOptions { resume_overrides: ov.iter().map(|s| s.to_string()).collect(), ..opts(&d, true, None) };
    // Without a new limit: one more iteration, then the same stop.
    assert!(matches!(run_experiment(None, &with(&[])).unwrap(), RunOutcome::Stopped { iteration: 2, .. }));
    // A key that changes training is refused by name, and nothing changes.
    let before = std::fs::read_to_string(d.join("config.toml")).unwrap();
    let err = run_experiment(None, &with(&["train.batch_size=8"])).unwrap_err().to_string();
    assert!(err.contains("train.batch_size") && err.contains("train.time_limit_hours"), "{err}");
    assert_eq!(std::fs::read_to_string(d.join("config.toml")).unwrap(), before);
    // An edited config.toml is reported, not silently used.
    std::fs::write(d.join("config.toml"), before.replace("n_updates_per_ais = 4", "n_updates_per_ais = 3")).unwrap();
    let err = run_experiment(None, &with(&[])).unwrap_err().to_string();
    assert!(err.contains("edited"), "{err}");
    std::fs::write(d.join("config.toml"), &before).unwrap();
    // A larger limit: the run finishes, bit-identical to one without a limit.
    let RunOutcome::Finished(m) = run_experiment(None, &with(&["train.time_limit_hours=100"])).unwrap() else { panic!("stopped") };
    assert!(std::fs::read_to_string(d.join("config.toml")).unwrap().contains("time_limit_hours = 100"));
    for (k, v) in &reference {
        if k != "train_seconds" {
            assert!(v.to_bits() == m[k].to_bits() || (v.is_nan() && m[k].is_nan()), "{k}: {v} vs {}", m[k]);
        }
    }
}

#[test]
fn a_finished_run_is_extended_by_resuming_with_more_iterations() {
    let reference = tmp("extend_ref");
    assert!(matches!(
        run_experiment(Some(small_config("fab_buffer", 12)), &opts(&reference, false, None)).unwrap(),
        RunOutcome::Finished(_)
    ));
    let d = tmp("extend");
    assert!(matches!(run_experiment(Some(small_config("fab_buffer", 6)), &opts(&d, false, None)).unwrap(), RunOutcome::Finished(_)));
    let with = |ov: &[&str]| RunOptions { resume_overrides: ov.iter().map(|s| s.to_string()).collect(), ..opts(&d, true, None) };
    // Shortening below the iterations already trained is refused by name.
    let err = run_experiment(None, &with(&["train.n_iterations=3"])).unwrap_err().to_string();
    assert!(err.contains("train.n_iterations") && err.contains("iteration 6"), "{err}");
    // Extending continues from iteration 6 to 12 and trains exactly what a 12-iteration run
    // trains (the learning-rate schedule counts absolute iterations): same training lines, same
    // final flow parameters.
    let RunOutcome::Finished(m) = run_experiment(None, &with(&["train.n_iterations=12"])).unwrap() else { panic!("stopped") };
    assert_eq!(m["iteration"], 12.0);
    let train_lines = |dir: &Path| -> Vec<String> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"kind\":\"train\""))
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("seconds");
                v.to_string()
            })
            .collect()
    };
    assert_eq!(train_lines(&d), train_lines(&reference));
    let flow = |dir: &Path| std::fs::read(dir.join("checkpoints/iter_00000012/flow.safetensors")).unwrap();
    assert_eq!(flow(&d), flow(&reference));
}

#[test]
fn target_evaluations_are_counted_as_each_loss_makes_them() {
    // small_config: batch 64, AIS with one intermediate distribution and one Metropolis proposal
    // (log p at the flow sample and at the proposal: 2 per chain), buffer filled to 256 first.
    let k = 3u64;
    for (loss, per_iteration, before) in [
        ("fab_buffer", 64 * 2, (256 / 64) * 64 * 2),
        ("fab_no_buffer", 64 * 2, 0),
        ("reverse_kl", 64, 0),
        ("alpha2_nis", 64, 0),
        ("forward_kl", 0, 0),
    ] {
        let mut t = new_run(small_config(loss, k as usize));
        for i in 1..=k {
            let info = t.step().unwrap();
            assert_eq!(info.stats.n_target_calls, Some(before + i * per_iteration), "{loss}, iteration {i}");
        }
        // Evaluations report the training budget, not their own evaluations.
        let m = t.evaluate(false).unwrap().metrics;
        assert_eq!(m["n_target_calls"], (before + k * per_iteration) as f64, "{loss}");
    }
}
