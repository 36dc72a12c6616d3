//! Spline couplings, periodic layers and the alanine-dipeptide flow: invertibility,
//! log-determinants against numerical Jacobians, CPU path against candle autodiff.

mod common;

use std::f64::consts::PI;

use candle_core::{DType, Device, Tensor};
use common::*;
use fab_core::{rng::seeded_rng, Flow, LogDensity, Proposal};
use fab_flows::{
    Backend, BaseDistribution, CircularNsfConfig, FlowConfig, FlowModel, Layer, PeriodicShift, PeriodicWrap, SplineCoupling,
    SplineCouplingOptions,
};

const DIM: usize = 7;
const CIRC: [usize; 3] = [1, 4, 6];

fn circular() -> Vec<bool> {
    (0..DIM).map(|i| CIRC.contains(&i)).collect()
}

/// Points with circular coordinates in [−π, π) and real ones spread beyond the tail bound 2.
fn mixed_points(n: usize, seed: u64) -> Tensor {
    let p = flat(&points(n, DIM, 1.5, seed));
    let v: Vec<f64> =
        p.iter().enumerate().map(|(k, &x)| if CIRC.contains(&(k % DIM)) { fab_flows::wrap(2.0 * x, PI) } else { x }).collect();
    Tensor::from_vec(v, (n, DIM), &Device::Cpu).unwrap()
}

fn random_coupling(mask: &[bool], seed: u64) -> SplineCoupling {
    let opts = SplineCouplingOptions { bins: 5, hidden: 12, num_blocks: 1, tail_bound: 2.0, identity_init: false };
    let mut rng = seeded_rng(seed, 0);
    SplineCoupling::new(mask, &circular(), &opts, &mut rng, DType::F64, &Device::Cpu).unwrap()
}

fn random_model(seed: u64) -> FlowModel {
    let masks = [[true, false, true, false, true, false, false], [false, true, false, true, false, true, true]];
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(random_coupling(&masks[0], seed)),
        Box::new(random_coupling(&masks[1], seed + 1)),
        Box::new(PeriodicShift::new(DIM, CIRC.to_vec(), PI, 0.7 * PI).unwrap()),
        Box::new(random_coupling(&masks[0], seed + 2)),
        Box::new(PeriodicWrap::new(DIM, CIRC.to_vec(), PI).unwrap()),
    ];
    let base = BaseDistribution::uniform_gaussian(DIM, &CIRC).unwrap();
    FlowModel::new(base, layers, DType::F64, Device::Cpu).unwrap()
}

#[test]
fn spline_coupling_inverts_and_matches_numerical_jacobian() {
    for (k, mask) in [[true, true, false, false, true, false, true], [false, false, true, true, false, true, false]].iter().enumerate() {
        let layer = random_coupling(mask, 10 + k as u64);
        let x = mixed_points(12, 3 + k as u64);
        // Some real coordinates lie beyond the bound 2 (identity there), some circular ones near ±π.
        assert!(flat(&x).iter().enumerate().any(|(i, v)| !CIRC.contains(&(i % DIM)) && v.abs() > 2.0));
        check_bijection(&layer, &x, 4, 1e-9, 1e-5);
        let (z, _) = layer.inverse(&x).unwrap();
        assert!(max_abs_diff(&flat(&z), &flat(&x)) > 1e-2, "random coupling must not be the identity");
    }
}

#[test]
fn out_of_bound_real_coordinates_pass_through_unchanged() {
    let mask = [true, false, true, false, false, true, false];
    let layer = random_coupling(&mask, 3);
    // Transformed real coordinates 0 and 2 at ±3 (> bound 2): identity with zero log-det.
    let xv = vec![3.0f64, 0.5, -3.0, 0.2, 0.1, 1.0, -2.0];
    let x = Tensor::from_vec(xv.clone(), (1, DIM), &Device::Cpu).unwrap();
    let (z, _) = layer.inverse(&x).unwrap();
    let z_candle = flat(&z);
    let mut ld = vec![0.0];
    let (z_cpu, _) = layer.cpu_f64().unwrap().inverse(xv, 1, &mut ld, false).unwrap();
    for z in [z_candle, z_cpu] {
        assert_eq!((z[0], z[2]), (3.0, -3.0));
    }
}

#[test]
fn periodic_layers() {
    let shift = PeriodicShift::new(DIM, CIRC.to_vec(), PI, 1.3 * PI).unwrap();
    let x = mixed_points(9, 4);
    check_bijection(&shift, &x, 2, 1e-12, 1e-6);
    let (y, _) = shift.forward(&x).unwrap();
    let ys = flat(&y);
    for (i, v) in ys.iter().enumerate() {
        if CIRC.contains(&(i % DIM)) {
            assert!((-PI..PI).contains(v));
        }
    }
    let wrap = PeriodicWrap::new(DIM, CIRC.to_vec(), PI).unwrap();
    let far = (&x + 4.0 * PI).unwrap();
    let (z, ld) = wrap.inverse(&far).unwrap();
    let zs = flat(&z);
    let xs = flat(&x);
    for i in 0..zs.len() {
        let want = if CIRC.contains(&(i % DIM)) { xs[i] } else { xs[i] + 4.0 * PI };
        assert!((zs[i] - want).abs() < 1e-12);
    }
    assert!(flat(&ld).iter().all(|v| *v == 0.0));
}

#[test]
fn model_cpu_path_matches_candle_autodiff() {
    let mut m = random_model(20);
    let x = mixed_points(17, 21);
    let coef: Vec<f64> = (0..17).map(|i| 0.2 - 0.03 * i as f64).collect();
    m.set_backend(Backend::Auto);
    let lq = flat(&m.log_prob(&x).unwrap());
    let (_, gx) = m.log_prob_and_grad(&x).unwrap();
    let (_, pg) = m.log_prob_backward(&x, &coef).unwrap();
    let mut rng = seeded_rng(1, 1);
    let (xs, ls) = m.sample_and_log_prob(25, &mut rng).unwrap();
    m.set_backend(Backend::Candle);
    let lq_c = flat(&m.log_prob(&x).unwrap());
    let (_, gx_c) = m.log_prob_and_grad(&x).unwrap();
    let (_, pg_c) = m.log_prob_backward(&x, &coef).unwrap();
    let mut rng = seeded_rng(1, 1);
    let (xs_c, ls_c) = m.sample_and_log_prob(25, &mut rng).unwrap();
    assert!(max_abs_diff(&lq, &lq_c) < 1e-9, "log q {}", max_abs_diff(&lq, &lq_c));
    assert!(max_abs_diff(&flat(&gx), &flat(&gx_c)) < 1e-8, "grad x {}", max_abs_diff(&flat(&gx), &flat(&gx_c)));
    assert!(max_abs_diff(&flat(&xs), &flat(&xs_c)) < 1e-9);
    assert!(max_abs_diff(&flat(&ls), &flat(&ls_c)) < 1e-8);
    for ((name, _), (a, b)) in m.params().iter().zip(pg.0.iter().zip(&pg_c.0)) {
        let a = flat(a.as_ref().unwrap());
        let b = b.as_ref().map(flat).unwrap_or_else(|| vec![0.0; a.len()]);
        let scale = b.iter().map(|v| v.abs()).fold(1e-3, f64::max);
        assert!(max_abs_diff(&a, &b) / scale < 1e-8, "{name}: {}", max_abs_diff(&a, &b));
    }
    // The gradient w.r.t. x also matches central differences.
    let fd = fab_core::test_utils::finite_difference_grad(&m, &flat(&x), 17, 1e-6);
    assert!(max_abs_diff(&flat(&gx), &fd) < 1e-6, "{}", max_abs_diff(&flat(&gx), &fd));
}

#[test]
fn model_samples_are_consistent_and_periodic() {
    let m = random_model(30);
    let mut rng = seeded_rng(2, 0);
    let (x, lq) = m.sample_and_log_prob(50, &mut rng).unwrap();
    assert!(max_abs_diff(&flat(&lq), &flat(&m.log_prob(&x).unwrap())) < 1e-8);
    // The density is 2π-periodic in the circular coordinates.
    let mut shifted = flat(&x);
    for (i, v) in shifted.iter_mut().enumerate() {
        if i % DIM == 4 {
            *v += 2.0 * PI;
        }
    }
    let shifted = Tensor::from_vec(shifted, (50, DIM), &Device::Cpu).unwrap();
    assert!(max_abs_diff(&flat(&m.log_prob(&shifted).unwrap()), &flat(&lq)) < 1e-8);
}

#[test]
fn aldp_flow_matches_the_reference_architecture_and_starts_at_its_base() {
    let cfg = CircularNsfConfig::aldp();
    let m = cfg.build(0, DType::F64, &Device::Cpu).unwrap();
    // docs/ALGORITHMS.md, "Normalizing flows": 3 996 384 parameters (12 blocks, hidden 256, 8
    // bins, periodic features).
    assert_eq!(m.params().num_scalars(), 3_996_384);
    // The size-only count of memory estimates is within 10 % of it.
    let approx = fab_flows::FlowConfig::CircularNsf(cfg.clone()).approx_parameters();
    assert!((approx / 3_996_384.0 - 1.0).abs() < 0.1, "{approx}");
    // 12 couplings, 5 shifts, 1 wrap.
    assert_eq!(m.layers().len(), 18);
    for mask in cfg.masks(0) {
        assert_eq!(mask.iter().filter(|&&b| b).count(), 30);
    }
    // Identity initialisation: q equals the uniform × Gaussian base.
    let mut rng = seeded_rng(3, 0);
    let (x, lq) = m.sample_and_log_prob(8, &mut rng).unwrap();
    let base = m.base().log_prob_t(&x, false).unwrap();
    assert!(max_abs_diff(&flat(&lq), &flat(&base)) < 1e-9);
    assert!(max_abs_diff(&flat(&m.log_prob(&x).unwrap()), &flat(&base)) < 1e-9);
}

#[test]
fn small_circular_nsf_config_round_trips_in_f32_and_through_toml() {
    let text = "type = \"circular_nsf\"\ndim = 6\ncircular_dims = [0, 3]\nn_blocks = 4\nhidden = 16\nbins = 6\n";
    let cfg: FlowConfig = toml::from_str(text).unwrap();
    let m = cfg.build(5, DType::F32, &Device::Cpu).unwrap();
    let mut rng = seeded_rng(1, 0);
    let (x, lq) = m.sample_and_log_prob(10, &mut rng).unwrap();
    assert_eq!(x.dtype(), DType::F32);
    assert!(max_abs_diff(&flat(&lq), &flat(&m.log_prob(&x).unwrap())) < 1e-4);
    let bad: FlowConfig = toml::from_str("type = \"circular_nsf\"\ndim = 6\ncircular_dims = [7]\n").unwrap();
    assert!(bad.validate().unwrap_err().to_string().contains("circular_dims"));
}
