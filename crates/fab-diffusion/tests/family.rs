//! The family through the sampler core: every schedule (on-policy, Sendera's forward/backward
//! with local search, PER, the teacher) and objective checkpoints and resumes bit-identically;
//! the evaluation's bounds are ordered (ELBO ≤ log Z ≤ EUBO) and training tightens the ELBO.

use fab_diffusion::DiffusionConfig;
use fab_sampler::eval::{EvalSizes, Metrics};
use fab_sampler::{FamilyConfig, Sampler};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SMALL: [&str; 6] =
    ["process.n_steps=8", "net.hidden=16", "net.harmonics=4", "net.langevin_hidden=8", "train.batch_size=16", "buffer.capacity=500"];

fn build(overrides: &[&str]) -> fab_diffusion::DiffusionSampler {
    let o: Vec<String> = SMALL.iter().chain(overrides).map(|s| s.to_string()).collect();
    DiffusionConfig::parse("family = \"diffusion\"", &o).unwrap_or_else(|e| panic!("{o:?}: {e}")).build().unwrap()
}

fn evaluate(s: &mut fab_diffusion::DiffusionSampler, n: usize) -> Metrics {
    let sizes =
        EvalSizes { n_samples: n, n_refined_samples: 0, refined_batch: 1, n_test: n, n_mode_samples: n, estimator_repeats: 0, n_w2: 0 };
    let mut rng = fab_core::seeded_rng(0, 99);
    s.eval_sets(&sizes, &mut rng).unwrap();
    let mut m = Metrics::new();
    s.own_metrics(&mut m);
    m
}

#[test]
fn every_schedule_resumes_bit_identically() {
    let ls = ["local_search.enabled=true", "local_search.every=3", "local_search.n_iterations=6", "local_search.burn_in=2"];
    let variants: Vec<Vec<&str>> = vec![
        vec!["objective.kind=\"tb\"", "train.exploration=0.2"],
        [vec!["train.schedule=\"sendera\"", "train.exploration=0.1"], ls.to_vec()].concat(),
        [vec!["train.schedule=\"sendera\"", "objective.kind=\"vargrad\"", "process.langevin=true"], ls.to_vec()].concat(),
        [vec!["train.schedule=\"per\""], ls.to_vec()].concat(),
        vec!["train.schedule=\"teacher\"", "teacher.adv_freq=1", "train.lr_milestones=[5, 15]"],
        vec!["objective.kind=\"subtb\"", "process.langevin=true", "process.learned_variance=true"],
        vec!["objective.kind=\"db\"", "net.arch=\"at\""],
        vec!["objective.kind=\"pis\"", "target.type=\"many_well\"", "target.dim=4"],
        [vec!["train.schedule=\"sendera\"", "objective.kind=\"vargrad\"", "train.path_chunks=3"], ls.to_vec()].concat(),
    ];
    for (k, v) in variants.iter().enumerate() {
        let mut a = build(v);
        for _ in 0..12 {
            a.step().unwrap();
        }
        let dir = fab_core::test_utils::ScratchDir::create(&format!("diffusion_resume_{k}"));
        a.save_state(&dir).unwrap();
        let mut b = build(v);
        b.load_state(&dir).unwrap();
        for _ in 0..12 {
            let (ra, rb) = (a.step().unwrap(), b.step().unwrap());
            assert!(ra.loss.is_finite(), "{v:?}: loss {}", ra.loss);
            assert_eq!(ra.loss.to_bits(), rb.loss.to_bits(), "{v:?}");
            assert_eq!(ra.stats.log_z.to_bits(), rb.stats.log_z.to_bits(), "{v:?}");
            assert_eq!(ra.stats.buffer_len, rb.stats.buffer_len, "{v:?}");
            assert_eq!(ra.stats.n_target_calls, rb.stats.n_target_calls, "{v:?}");
            assert_eq!(ra.stats.teacher_loss.to_bits(), rb.stats.teacher_loss.to_bits(), "{v:?}");
        }
    }
}

/// Checkpoints written before the replay buffers moved to `.npy` files kept them inline in
/// `diffusion_state.json`; such a checkpoint still resumes, onto the same steps as the `.npy` one.
#[test]
fn checkpoints_with_inline_json_buffers_still_resume() {
    let v = [
        "train.schedule=\"sendera\"",
        "train.exploration=0.1",
        "local_search.enabled=true",
        "local_search.every=3",
        "local_search.n_iterations=6",
        "local_search.burn_in=2",
    ];
    let mut a = build(&v);
    for _ in 0..12 {
        a.step().unwrap();
    }
    let dir = fab_core::test_utils::ScratchDir::create("diffusion_json_buffers");
    a.save_state(&dir).unwrap();
    // Rewrite the checkpoint in the older layout: each buffer inline, no `.npy`, no capacity key.
    let state_path = dir.join("diffusion_state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let mut rewritten = 0;
    for name in ["buffer", "ls_buffer"] {
        let npy = dir.join(format!("{name}.npy"));
        if !npy.exists() {
            continue;
        }
        let cap = state[format!("{name}_capacity")].as_u64().unwrap() as usize;
        let (rows, shape) = fab_core::npy::read_f64(&npy).unwrap();
        let mut old = fab_buffer::RankedBuffer::<u64, Vec<f64>>::new(cap).unwrap();
        for r in rows.chunks_exact(shape[1]) {
            old.insert(r[0] as u64, r[2..].to_vec(), r[1]).unwrap();
        }
        assert!(!old.is_empty(), "{name} is empty after 12 steps");
        state[name] = serde_json::to_value(&old).unwrap();
        state.as_object_mut().unwrap().remove(&format!("{name}_capacity"));
        std::fs::remove_file(&npy).unwrap();
        rewritten += 1;
    }
    assert_eq!(rewritten, 2, "both the replay and the local-search buffer are checkpointed");
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let mut b = build(&v);
    b.load_state(&dir).unwrap();
    for _ in 0..12 {
        let (ra, rb) = (a.step().unwrap(), b.step().unwrap());
        assert_eq!(ra.loss.to_bits(), rb.loss.to_bits());
        assert_eq!(ra.stats.buffer_len, rb.stats.buffer_len);
        assert_eq!(ra.stats.n_target_calls, rb.stats.n_target_calls);
    }
}

/// ELBO ≤ log Z ≤ EUBO hold for any sampler (up to Monte-Carlo error, far smaller than the gaps
/// of an untrained one); a short training run narrows the ELBO gap. (It need not lower W2: short
/// on-policy TB on the 25-mode mixture concentrates on a few modes, the failure the off-policy
/// schedules exist for.)
#[test]
fn bounds_are_ordered_and_training_tightens_them() {
    let mut s = build(&["process.n_steps=20", "train.batch_size=64", "train.lr=3e-3"]);
    let before = evaluate(&mut s, 800);
    for key in ["elbo", "eubo", "log_z_rw", "w2", "mmd", "mean_log_likelihood", "delta_log_z", "delta_log_z_rw", "log_z_learned"] {
        assert!(before.get(key).is_some_and(|v| v.is_finite()), "{key} missing: {before:?}");
    }
    assert!(before["elbo"] < -0.5 && before["eubo"] > 0.5, "{before:?}");
    for _ in 0..150 {
        s.step().unwrap();
    }
    let after = evaluate(&mut s, 800);
    assert!(after["elbo"] < 0.02 && after["eubo"] > -0.02, "{after:?}");
    assert!(after["delta_log_z"] < before["delta_log_z"] - 0.5, "ELBO gap {} → {}", before["delta_log_z"], after["delta_log_z"]);
    // With an ELBO gap of a few hundredths the log-weights vary by about 0.2, so the
    // importance-weight ESS, a fraction of the 800 paths, is above 0.9.
    assert!(after["ess"] > 0.8 && after["ess"] <= 1.0, "ESS fraction {}", after["ess"]);
    assert!(before["ess"] > 0.0 && before["ess"] < after["ess"], "ESS fraction {} → {}", before["ess"], after["ess"]);
}

/// An untrained sampler with σ² = 10³⁰⁶ ends about 10¹⁵³ from the origin: finite draws whose
/// squared distances are too large for the exact assignment. The evaluation still completes,
/// with W2 replaced by a note saying why and the other metrics in place.
#[test]
fn a_w2_the_assignment_refuses_becomes_a_note() {
    let mut s = build(&["dtype=\"f64\"", "process.t_scale=1e306", "eval.n_w2=50", "eval.n_likelihood_points=0"]);
    let sizes =
        EvalSizes { n_samples: 50, n_refined_samples: 0, refined_batch: 1, n_test: 50, n_mode_samples: 50, estimator_repeats: 0, n_w2: 0 };
    let ev = fab_sampler::eval::evaluate(&mut s, &sizes, &mut fab_core::seeded_rng(0, 7)).unwrap();
    assert!(!ev.metrics.contains_key("w2"), "{:?}", ev.metrics);
    assert!(ev.notes.get("w2").is_some_and(|n| n.contains("too large")), "{:?}", ev.notes);
    assert!(ev.metrics["mmd"].is_finite() && ev.metrics["w2_points"] == 50.0, "{:?}", ev.metrics);

    // The same sampler at σ² = 1 gives W2 and no note.
    let mut s = build(&["dtype=\"f64\"", "eval.n_w2=50", "eval.n_likelihood_points=0"]);
    let ev = fab_sampler::eval::evaluate(&mut s, &sizes, &mut fab_core::seeded_rng(0, 7)).unwrap();
    assert!(ev.metrics["w2"].is_finite() && !ev.notes.contains_key("w2"), "{:?} {:?}", ev.metrics, ev.notes);
}

#[test]
fn bad_settings_are_refused_with_the_key() {
    for (ov, key) in [
        ("train.schedule=\"nope\"", "train.schedule"),
        ("objective.kind=\"pis\"", "pis"),
        ("process.t_scale=-1", "process.t_scale"),
        ("local_search.enabled=true", "local_search.enabled"),
        ("eval.n_w2=100000", "eval.n_w2"),
        ("target.type=\"aldp\"", "aldp"),
        ("train.path_chunks=0", "train.path_chunks"),
        ("train.path_chunks=301", "train.path_chunks"),
        ("process.n_steps=0", "process.n_steps"),
        ("objective.kind=\"kl\"", "objective.kind"),
        ("teacher.threshold_quantile=1.0", "teacher.threshold_quantile"),
        ("teacher.threshold_quantile=0", "teacher.threshold_quantile"),
    ] {
        let extra = if key == "pis" { vec![ov, "train.schedule=\"sendera\""] } else { vec![ov] };
        let o: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let e = DiffusionConfig::parse("family = \"diffusion\"", &o).unwrap_err().to_string();
        assert!(e.contains(key) && !e.contains('\n'), "{ov}: {e}");
    }
}

/// With the batch split into chunks, the numbers depend on `train.path_chunks` only, never on
/// the number of threads that run the chunks.
#[test]
fn chunked_batches_give_the_same_numbers_on_any_thread_count() {
    let variants: Vec<Vec<&str>> = vec![
        vec!["train.schedule=\"sendera\"", "objective.kind=\"vargrad\"", "process.langevin=true", "train.path_chunks=3"],
        vec!["train.schedule=\"teacher\"", "teacher.adv_freq=1", "train.path_chunks=2"],
        vec!["objective.kind=\"subtb\"", "train.path_chunks=4"],
        vec!["objective.kind=\"pis\"", "target.type=\"many_well\"", "target.dim=4", "train.path_chunks=2"],
    ];
    for v in &variants {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut s = build(v);
                (0..8)
                    .map(|_| {
                        let r = s.step().unwrap();
                        assert!(r.loss.is_finite(), "{v:?}: loss {}", r.loss);
                        (r.loss.to_bits(), r.stats.log_z.to_bits(), r.grad_norm.to_bits(), r.stats.n_target_calls)
                    })
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(run(1), run(3), "{v:?}");
    }
}

/// Training budgets count every point at which log R or its gradient was evaluated: the end
/// point of each path, and with the Langevin parametrisation the score at every step too.
#[test]
fn target_evaluations_count_end_points_and_langevin_scores() {
    // 8 steps, batch 16, on-policy.
    for (overrides, per_iteration) in
        [(vec!["objective.kind=\"tb\""], 16), (vec!["objective.kind=\"tb\"", "process.langevin=true"], 16 * (8 + 1))]
    {
        let mut s = build(&overrides);
        for i in 1..=3u64 {
            let r = s.step().unwrap();
            assert_eq!(r.stats.n_target_calls, i * per_iteration, "{overrides:?}, iteration {i}");
        }
        assert_eq!(evaluate(&mut s, 50)["n_target_calls"], (3 * per_iteration) as f64, "{overrides:?}");
    }
}

/// The Langevin parametrisation and local search read ∇log R: a target whose log-density is
/// computed outside candle's differentiable operations (so that it has no gradient) is refused
/// with the key, instead of training on a silent zero score.
#[test]
fn gradient_methods_on_a_target_without_gradients_are_refused() {
    use fab_core::FnDensity;
    use fab_sampler::DensityTarget;
    use std::sync::Arc;
    // −½‖x‖², computed on host copies: the value is right, the graph does not reach x.
    let host_only = || {
        FnDensity::new(2, |x: &candle_core::Tensor| {
            let rows = x.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
            let v: Vec<f64> = rows.iter().map(|r| -0.5 * r.iter().map(|a| a * a).sum::<f64>()).collect();
            candle_core::Tensor::from_vec(v, rows.len(), x.device())?.to_dtype(x.dtype())
        })
    };
    let base = ["process.n_steps=4", "train.batch_size=8"];
    for (extra, key) in [
        (vec!["process.langevin=true"], "process.langevin"),
        (vec!["train.schedule=\"sendera\"", "local_search.enabled=true"], "local_search.enabled"),
    ] {
        let o: Vec<String> = base.iter().chain(&extra).map(|s| s.to_string()).collect();
        let cfg = DiffusionConfig::parse("family = \"diffusion\"", &o).unwrap();
        let target = Arc::new(DensityTarget::new(Box::new(host_only())));
        let e = fab_diffusion::DiffusionSampler::with_target(cfg, target).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("no gradient") && !e.contains('\n'), "{e}");
        // Without the gradient methods the same target trains.
        let o: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        let cfg = DiffusionConfig::parse("family = \"diffusion\"", &o).unwrap();
        let mut s = fab_diffusion::DiffusionSampler::with_target(cfg, Arc::new(DensityTarget::new(Box::new(host_only())))).unwrap();
        assert!(s.step().unwrap().loss.is_finite());
    }
}
