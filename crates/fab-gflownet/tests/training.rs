//! Whole agents: the teacher finds every goal of a small grid, a tree-shaped space trains to its
//! closed-form log Z, and every agent variant (replay, local search, DB teacher) checkpoints and
//! resumes bit-identically.

use fab_gflownet::GflowConfig;
use fab_sampler::eval::{EvalSizes, Metrics};
use fab_sampler::{FamilyConfig, Sampler};

fn sizes() -> EvalSizes {
    EvalSizes { n_samples: 2000, n_refined_samples: 0, refined_batch: 1, n_test: 1, n_mode_samples: 0, estimator_repeats: 0, n_w2: 0 }
}

fn evaluate(s: &mut fab_gflownet::GflowSampler) -> Metrics {
    let mut rng = fab_core::seeded_rng(0, 99);
    s.eval_sets(&sizes(), &mut rng).unwrap();
    let mut m = Metrics::new();
    s.own_metrics(&mut m);
    m
}

fn build(overrides: &[&str]) -> fab_gflownet::GflowSampler {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    GflowConfig::parse("family = \"gflownet\"", &o).unwrap().build().unwrap()
}

#[test]
fn teacher_finds_every_goal_of_a_small_grid_and_l1_falls() {
    let mut s = build(&["agent.kind=\"teacher\"", "env.ndim=2", "env.horizon=8", "net.hidden=[64, 64]", "train.n_iterations=2000"]);
    let before = evaluate(&mut s)["exact_l1"];
    for _ in 0..2000 {
        s.step().unwrap();
    }
    let m = evaluate(&mut s);
    assert_eq!(m["n_goals_found"], m["n_goals"]);
    assert!(m["exact_l1"] < 0.5 * before, "exact L1 {} → {}", before, m["exact_l1"]);
    assert!(m["elbo_log_z"] <= m["log_z_true"] + 1e-9 && m["eubo_log_z"] >= m["log_z_true"] - 1e-9, "{m:?}");
}

#[test]
fn bit_sequences_train_to_their_closed_form() {
    let mut s = build(&[
        "env.kind=\"bits\"",
        "env.length=6",
        "env.n_modes=3",
        "env.beta=1.0",
        "net.tabular=true",
        "agent.reward_epsilon=0.0",
        "agent.epsilon=0.2",
        "train.lr=0.05",
        "train.clip_grad_norm=0.0",
        "train.batch_size=32",
    ]);
    for _ in 0..1000 {
        s.step().unwrap();
    }
    let m = evaluate(&mut s);
    let bits = fab_gflownet::bits::BitSequence::with_random_modes(6, 1.0, 3, 0);
    assert!((m["log_z_true"] - bits.log_z()).abs() < 1e-12);
    assert!(m["exact_tv"] < 1e-3, "TV {}", m["exact_tv"]);
    assert!((m["log_z_learned"] - bits.log_z()).abs() < 1e-2, "log Z {} vs {}", m["log_z_learned"], bits.log_z());
}

#[test]
fn every_variant_resumes_bit_identically() {
    let base = ["env.ndim=2", "env.horizon=8", "net.hidden=[32]", "train.batch_size=8"];
    let variants: [&[&str]; 7] = [
        &["agent.kind=\"gafntb\"", "gafn.rnd_hidden=[16]", "gafn.rnd_latent=8"],
        &["agent.kind=\"teacher\"", "buffer.enabled=true", "buffer.priority=\"teacher_reward\"", "local_search.enabled=true"],
        &["agent.kind=\"tb\"", "buffer.enabled=true", "buffer.priority=\"reward\"", "local_search.enabled=true", "agent.epsilon=0.1"],
        &["agent.kind=\"teacher_db\"", "buffer.enabled=true", "buffer.priority=\"loss\""],
        &["agent.kind=\"subtb\"", "agent.learn_pb=true"],
        &["agent.kind=\"fm\""],
        &["agent.kind=\"db\"", "buffer.enabled=true"],
    ];
    for (k, v) in variants.iter().enumerate() {
        let o: Vec<&str> = base.iter().chain(v.iter()).copied().collect();
        let mut a = build(&o);
        for _ in 0..40 {
            a.step().unwrap();
        }
        let dir = fab_core::test_utils::ScratchDir::create(&format!("gfn_resume_{k}"));
        a.save_state(&dir).unwrap();
        let mut b = build(&o);
        b.load_state(&dir).unwrap();
        for _ in 0..40 {
            let (ra, rb) = (a.step().unwrap(), b.step().unwrap());
            assert_eq!(ra.loss.to_bits(), rb.loss.to_bits(), "{v:?}");
            assert_eq!(ra.stats.n_reward_calls, rb.stats.n_reward_calls, "{v:?}");
        }
    }
}

#[test]
fn rnd_intrinsic_reward_falls_on_visited_states_only() {
    use std::sync::Arc;
    let env: Arc<dyn fab_gflownet::DiscreteEnv> = Arc::new(fab_gflownet::grid::Grid::deceptive(2, 16, 1.0));
    let mut rng = fab_core::seeded_rng(1, 0);
    let mut rnd = fab_gflownet::rnd::Rnd::new(env, &[64, 64], 16, 0.01, 1e-3, 0.01, &mut rng).unwrap();
    let seen: Vec<i32> = (0..8).flat_map(|i| [i, 2 * i % 15]).collect();
    let unseen: Vec<i32> = (0..8).flat_map(|i| [14 - i, 13]).collect();
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let (s0, u0) = (mean(rnd.intrinsic(&seen)), mean(rnd.intrinsic(&unseen)));
    for _ in 0..300 {
        rnd.train_step(&seen).unwrap();
    }
    let (s1, u1) = (mean(rnd.intrinsic(&seen)), mean(rnd.intrinsic(&unseen)));
    assert!(s1 < 0.2 * s0, "visited states: {s0} → {s1}");
    assert!(u1 > 2.0 * s1, "unvisited states keep a larger reward: {u1} vs {s1} (before {u0})");
}

#[test]
fn training_on_the_kept_sampling_pass_equals_a_fresh_pass() {
    use fab_gflownet::gfn::{GflowNet, GfnOptim, Objective};
    use fab_gflownet::net::Mlp;
    use fab_gflownet::policy::BackwardPolicy;
    use std::sync::Arc;
    let env: Arc<dyn fab_gflownet::DiscreteEnv> = Arc::new(fab_gflownet::grid::Grid::deceptive(2, 12, 1.0));
    let n_out = env.n_actions() + env.n_back_actions() + 1;
    let make = || {
        let mut rng = fab_core::seeded_rng(5, 1);
        let net = Mlp::new(env.clone(), &[32, 32], n_out, 0.01, &mut rng).unwrap();
        let pb = BackwardPolicy { learned: true, strict: true };
        GflowNet::new(env.clone(), Box::new(net), Objective::Tb, pb, GfnOptim { lr: 1e-2, lr_log_z: 0.1, clip: Some(1.0) }).unwrap()
    };
    let (mut a, mut b) = (make(), make());
    let mut rng = fab_core::seeded_rng(5, 2);
    for _ in 0..5 {
        let (batch, kept) = a.sample_kept(8, 0.1, &mut rng);
        let oa = a.train_step_with(&batch, &batch.log_reward, None, Some(kept)).unwrap();
        let ob = b.train_step(&batch, &batch.log_reward).unwrap();
        assert!((oa.loss - ob.loss).abs() <= 1e-5 * ob.loss.abs().max(1.0), "{} vs {}", oa.loss, ob.loss);
        assert!((oa.grad_norm - ob.grad_norm).abs() <= 1e-4 * ob.grad_norm.max(1.0), "{} vs {}", oa.grad_norm, ob.grad_norm);
        assert!((a.log_z() - b.log_z()).abs() < 1e-5);
    }
}
