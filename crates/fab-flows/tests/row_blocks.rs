//! The CPU path splits batches of ≥ 128 rows into two row blocks that run concurrently. Rows are
//! independent, so log q, ∇ₓ log q and samples must equal, bit for bit, those of smaller
//! unsplit batches; parameter gradients are summed block by block in a fixed order, so they
//! (and everything else) must not depend on the number of threads.

mod common;

use candle_core::{DType, Device, Tensor};
use common::perturb;
use fab_core::{rng::seeded_rng, LogDensity, Proposal};
use fab_flows::{CircularNsfConfig, FlowModel, RealNvpConfig};

fn bits(t: &Tensor) -> Vec<u64> {
    fab_core::to_f64_vec(t).unwrap().iter().map(|v| v.to_bits()).collect()
}

fn models() -> Vec<(&'static str, FlowModel)> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        let nsf = CircularNsfConfig { hidden: 24, n_blocks: 3, ..CircularNsfConfig::aldp() }.build(1, dtype, &Device::Cpu).unwrap();
        let nvp =
            RealNvpConfig { layer_nodes_per_dim: 1, n_layers: 3, ..RealNvpConfig::many_well() }.build(2, dtype, &Device::Cpu).unwrap();
        perturb(&nsf, 0.05, 3);
        perturb(&nvp, 0.05, 4);
        let tag = if dtype == DType::F32 { "f32" } else { "f64" };
        out.push((if tag == "f32" { "spline flow f32" } else { "spline flow f64" }, nsf));
        out.push((if tag == "f32" { "realnvp f32" } else { "realnvp f64" }, nvp));
    }
    out
}

/// Everything the CPU path computes for `n` rows, as bits.
fn evaluate(m: &FlowModel, n: usize) -> Vec<Vec<u64>> {
    let mut rng = seeded_rng(7, 0);
    let (x, lq) = m.sample_and_log_prob(n, &mut rng).unwrap();
    let lp = m.log_prob(&x).unwrap();
    let (lp2, gx) = m.log_prob_and_grad(&x).unwrap();
    let coef: Vec<f64> = (0..n).map(|i| -((i % 7) as f64 + 1.0) / n as f64).collect();
    let (lp3, grads) = m.log_prob_backward(&x, &coef).unwrap();
    let mut out = vec![bits(&x), bits(&lq), bits(&lp), bits(&lp2), bits(&gx), bits(&lp3)];
    out.extend(grads.0.iter().map(|g| bits(g.as_ref().unwrap())));
    out
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    for (name, m) in models() {
        let run = |t: usize| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| evaluate(&m, 300));
        let one = run(1);
        assert!(one == run(2), "{name}: 1 vs 2 threads");
        assert!(one == run(3), "{name}: 1 vs 3 threads");
    }
    // At the Many Well size the matrix products themselves go parallel (≥ 2²² multiply-adds).
    let m = RealNvpConfig::many_well().build(5, DType::F64, &Device::Cpu).unwrap();
    perturb(&m, 0.01, 6);
    let run = |t: usize| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| evaluate(&m, 512));
    assert!(run(1) == run(2), "Many Well flow: 1 vs 2 threads");
    // … and a row's log q and ∇ₓ log q do not depend on the batch it is evaluated in.
    let (x, _) = m.sample_and_log_prob(512, &mut seeded_rng(11, 0)).unwrap();
    let (lp, gx) = m.log_prob_and_grad(&x).unwrap();
    let (lp_head, gx_head) = m.log_prob_and_grad(&x.narrow(0, 0, 100).unwrap()).unwrap();
    assert!(bits(&lp)[..100] == bits(&lp_head)[..], "Many Well flow: log q depends on the batch");
    assert!(bits(&gx)[..100 * 32] == bits(&gx_head)[..], "Many Well flow: ∇ₓ log q depends on the batch");
}

#[test]
fn split_batches_give_the_rows_of_unsplit_ones() {
    for (name, m) in models() {
        let n = 300;
        let mut rng = seeded_rng(8, 0);
        let (x, _) = m.sample_and_log_prob(n, &mut rng).unwrap();
        let (lp, gx) = m.log_prob_and_grad(&x).unwrap();
        // Blocks of 100 rows are below the split size: each is one pass.
        let (mut lp_parts, mut gx_parts) = (Vec::new(), Vec::new());
        for k in 0..3 {
            let xk = x.narrow(0, 100 * k, 100).unwrap();
            let (l, g) = m.log_prob_and_grad(&xk).unwrap();
            assert_eq!(bits(&m.log_prob(&xk).unwrap()), bits(&l), "{name}: log_prob vs log_prob_and_grad");
            lp_parts.extend(bits(&l));
            gx_parts.extend(bits(&g));
        }
        assert!(bits(&lp) == lp_parts, "{name}: log q of a split batch differs from its rows'");
        assert!(bits(&gx) == gx_parts, "{name}: ∇ₓ log q of a split batch differs from its rows'");
        // Samples: the same base draws pushed through in one pass or two blocks.
        let (xs, lqs) = m.sample_and_log_prob(n, &mut seeded_rng(9, 0)).unwrap();
        let (lq_eval, _) = m.log_prob_and_grad(&xs).unwrap();
        let err = fab_core::to_f64_vec(&lqs)
            .unwrap()
            .iter()
            .zip(fab_core::to_f64_vec(&lq_eval).unwrap())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let tol = if m.dtype() == DType::F32 { 1e-2 } else { 1e-8 };
        assert!(err < tol, "{name}: sample log q vs density log q differ by {err}");
    }
}

#[test]
fn parameter_gradients_sum_over_the_blocks() {
    // The gradient of Σ cᵢ log q(xᵢ) over 300 rows equals the sum of the gradients of the three
    // 100-row parts (each unsplit), up to rounding.
    for (name, m) in models() {
        let n = 300;
        let (x, _) = m.sample_and_log_prob(n, &mut seeded_rng(10, 0)).unwrap();
        let coef: Vec<f64> = (0..n).map(|i| ((i % 5) as f64 - 2.0) / n as f64).collect();
        let (_, all) = m.log_prob_backward(&x, &coef).unwrap();
        let mut sum: Vec<Vec<f64>> = Vec::new();
        for k in 0..3 {
            let (_, g) = m.log_prob_backward(&x.narrow(0, 100 * k, 100).unwrap(), &coef[100 * k..100 * (k + 1)]).unwrap();
            for (i, g) in g.0.iter().enumerate() {
                let v = fab_core::to_f64_vec(g.as_ref().unwrap()).unwrap();
                if k == 0 {
                    sum.push(v);
                } else {
                    sum[i].iter_mut().zip(v).for_each(|(a, b)| *a += b);
                }
            }
        }
        let tol = if m.dtype() == DType::F32 { 1e-4 } else { 1e-11 };
        for (i, g) in all.0.iter().enumerate() {
            let a = fab_core::to_f64_vec(g.as_ref().unwrap()).unwrap();
            let scale = a.iter().fold(1e-3f64, |s, v| s.max(v.abs()));
            let err = a.iter().zip(&sum[i]).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err <= tol * scale, "{name}: parameter {i}: block sum differs by {err} (scale {scale})");
        }
    }
}
