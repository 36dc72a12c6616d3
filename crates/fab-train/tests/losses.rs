//! Every loss's gradient equals a central finite-difference gradient of the objective it claims
//! to minimise, on a tiny f64 RealNVP flow with random (non-identity) parameters. The loss code
//! runs the fused CPU backward pass; the objectives are evaluated through the flow's density,
//! so a wrong sign, a missing 1/n, a weight applied twice or a broken backward pass fails.

use candle_core::{DType, Device, Tensor};
use fab_core::{Grads, LogDensity, Proposal};
use fab_flows::{FlowConfig, FlowModel, RealNvpConfig};
use fab_targets::gmm::{Gmm, GmmConfig, GmmScales};
use fab_train::losses;
use rand::Rng;

fn tiny_flow() -> FlowModel {
    let cfg = FlowConfig::RealNvp(RealNvpConfig { dim: 2, n_layers: 2, layer_nodes_per_dim: 3, n_hidden_layers: 1, lu_mixing: true });
    let flow = cfg.build(5, DType::F64, &Device::Cpu).unwrap();
    // Move every parameter off its (partly zero) initialisation so that no gradient is
    // trivially zero.
    let mut rng = fab_core::seeded_rng(11, 0);
    for v in flow.params().vars() {
        let t = v.as_tensor();
        let vals: Vec<f64> = fab_core::to_f64_vec(t).unwrap().iter().map(|x| x + 0.15 * (rng.random::<f64>() - 0.5)).collect();
        v.set(&Tensor::from_vec(vals, t.shape(), &Device::Cpu).unwrap()).unwrap();
    }
    flow
}

/// A 2-D target close to the flow's base (so α = 2 weights stay moderate).
fn target() -> Gmm {
    let cfg = GmmConfig {
        dim: 2,
        means: vec![vec![0.3, -0.2], vec![-0.4, 0.5]],
        scales: GmmScales::Shared(1.1),
        weights: None,
        log_prob_floor: f64::NEG_INFINITY,
    };
    Gmm::from_config(&cfg, DType::F64, &Device::Cpu).unwrap()
}

fn log_q(flow: &FlowModel, x: &Tensor) -> Vec<f64> {
    fab_core::to_f64_vec(&flow.log_prob(x).unwrap()).unwrap()
}

/// Central differences of `objective` over every parameter scalar, compared with `grads`.
fn check_gradient(name: &str, flow: &FlowModel, grads: &Grads, objective: &dyn Fn(&FlowModel) -> f64) {
    let h = 1e-5;
    let mut checked = 0;
    let mut largest = 0.0f64;
    for (k, v) in flow.params().vars().iter().enumerate() {
        let t0 = v.as_tensor().clone();
        let base: Vec<f64> = fab_core::to_f64_vec(&t0).unwrap();
        let g: Vec<f64> = match &grads.0[k] {
            Some(g) => fab_core::to_f64_vec(g).unwrap(),
            None => vec![0.0; base.len()],
        };
        for i in 0..base.len() {
            let eval_at = |delta: f64| {
                let mut p = base.clone();
                p[i] += delta;
                v.set(&Tensor::from_vec(p, t0.shape(), &Device::Cpu).unwrap()).unwrap();
                objective(flow)
            };
            let fd = (eval_at(h) - eval_at(-h)) / (2.0 * h);
            v.set(&Tensor::from_vec(base.clone(), t0.shape(), &Device::Cpu).unwrap()).unwrap();
            // Truncation error O(h²) and round-off O(ε/h) are both < 1e-8 here.
            let tol = 1e-6 + 1e-5 * fd.abs();
            assert!(
                (fd - g[i]).abs() < tol,
                "{name}: parameter {} [{i}]: analytic {} vs finite difference {fd}",
                flow.params().names()[k],
                g[i]
            );
            largest = largest.max(fd.abs());
            checked += 1;
        }
    }
    assert!(checked > 50 && largest > 1e-3, "{name}: {checked} scalars, largest |∂| {largest}");
}

fn points(n: usize, seed: u64) -> Tensor {
    let mut rng = fab_core::seeded_rng(seed, 0);
    let v: Vec<f64> = (0..2 * n).map(|_| 1.5 * (rng.random::<f64>() - 0.5)).collect();
    Tensor::from_vec(v, (n, 2), &Device::Cpu).unwrap()
}

#[test]
fn fab_buffer_gradient_is_that_of_the_weighted_log_likelihood() {
    let flow = tiny_flow();
    let x = points(16, 1);
    let w: Vec<f64> = (0..16).map(|i| 0.2 + 0.1 * i as f64).collect();
    let out = losses::fab_buffer(&flow, &x, &mut |_| Ok(w.clone())).unwrap();
    let objective = |f: &FlowModel| -> f64 { -log_q(f, &x).iter().zip(&w).map(|(q, w)| w * q).sum::<f64>() / 16.0 };
    assert!((out.value - objective(&flow)).abs() < 1e-12);
    check_gradient("fab_buffer", &flow, out.grads.as_ref().unwrap(), &objective);
}

#[test]
fn fab_buffer_skips_the_backward_pass_of_a_non_finite_loss() {
    let flow = tiny_flow();
    let x = points(4, 2);
    let out = losses::fab_buffer(&flow, &x, &mut |_| Ok(vec![1.0, f64::INFINITY, 1.0, 1.0])).unwrap();
    assert!(!out.value.is_finite() && out.grads.is_none());
}

#[test]
fn fab_no_buffer_gradient_uses_self_normalised_weights_and_the_sign_of_alpha() {
    let flow = tiny_flow();
    let x = points(16, 3);
    let log_w: Vec<f64> = (0..16).map(|i| (i as f64 * 0.37).sin() * 2.0).collect();
    let wbar = fab_core::stats::normalized_weights(&log_w);
    for alpha in [2.0, -1.0] {
        let out = losses::fab_no_buffer(&flow, &x, &log_w, alpha).unwrap();
        let objective =
            |f: &FlowModel| -> f64 { -f64::signum(alpha) * log_q(f, &x).iter().zip(&wbar).map(|(q, w)| w * q).sum::<f64>() / 16.0 };
        assert!((out.value - objective(&flow)).abs() < 1e-12);
        check_gradient("fab_no_buffer", &flow, out.grads.as_ref().unwrap(), &objective);
    }
}

#[test]
fn forward_kl_gradient_is_that_of_the_negative_mean_log_likelihood() {
    let flow = tiny_flow();
    let x = points(16, 4);
    let out = losses::forward_kl(&flow, &x).unwrap();
    let objective = |f: &FlowModel| -> f64 { -log_q(f, &x).iter().sum::<f64>() / 16.0 };
    assert!((out.value - objective(&flow)).abs() < 1e-12);
    check_gradient("forward_kl", &flow, out.grads.as_ref().unwrap(), &objective);
}

#[test]
fn reverse_kl_gradient_is_that_of_the_reparameterised_objective() {
    let flow = tiny_flow();
    let p = target();
    let rng = fab_core::seeded_rng(9, 1);
    let out = losses::reverse_kl(&flow, &p, 16, &mut rng.clone()).unwrap();
    // The same base noise z at every θ: J(θ) = mean(log q_θ(f_θ(z)) − log p(f_θ(z))).
    let objective = |f: &FlowModel| -> f64 {
        let (x, lq) = f.sample_t(16, &mut rng.clone(), false).unwrap();
        let lp = fab_core::to_f64_vec(&p.log_prob(&x).unwrap()).unwrap();
        fab_core::to_f64_vec(&lq).unwrap().iter().zip(&lp).map(|(q, p)| q - p).sum::<f64>() / 16.0
    };
    assert!((out.value - objective(&flow)).abs() < 1e-10);
    check_gradient("reverse_kl", &flow, out.grads.as_ref().unwrap(), &objective);
}

#[test]
fn alpha2_nis_gradient_is_that_of_the_importance_sampled_alpha2_divergence() {
    let flow = tiny_flow();
    let p = target();
    let rng = fab_core::seeded_rng(9, 2);
    let out = losses::alpha2_nis(&flow, &p, 16, &mut rng.clone()).unwrap();
    // The same samples x ~ q_θ₀: D̂(θ) = mean(p̃(x)² / (q_θ(x) q_θ₀(x))).
    let (x, lq0) = flow.sample_and_log_prob(16, &mut rng.clone()).unwrap();
    let lq0 = fab_core::to_f64_vec(&lq0).unwrap();
    let lp = fab_core::to_f64_vec(&p.log_prob(&x).unwrap()).unwrap();
    let objective =
        |f: &FlowModel| -> f64 { log_q(f, &x).iter().zip(&lq0).zip(&lp).map(|((q, q0), p)| (2.0 * p - q - q0).exp()).sum::<f64>() / 16.0 };
    check_gradient("alpha2_nis", &flow, out.grads.as_ref().unwrap(), &objective);
}
