//! Shared helpers for the flow tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use fab_core::{rng::seeded_rng, Flow};
use fab_flows::FlowModel;

/// Adds N(0, std²) noise to every parameter so that no layer is the identity.
pub fn perturb(model: &FlowModel, std: f64, seed: u64) {
    let mut rng = seeded_rng(seed, 99);
    for v in model.vars() {
        let noise = fab_core::rng::randn(&mut rng, v.shape(), v.dtype(), v.device()).unwrap();
        v.set(&(v.as_tensor() + (noise * std).unwrap()).unwrap()).unwrap();
    }
}

/// `[n, d]` f64 points ~ N(0, scale²).
pub fn points(n: usize, d: usize, scale: f64, seed: u64) -> Tensor {
    let mut rng = seeded_rng(seed, 5);
    (fab_core::rng::randn(&mut rng, (n, d), DType::F64, &Device::Cpu).unwrap() * scale).unwrap()
}

pub fn flat(t: &Tensor) -> Vec<f64> {
    fab_core::to_f64_vec(t).unwrap()
}

pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Checks forward∘inverse = id and that the log-dets cancel, then compares the forward log-det
/// with log|det J| of a central-difference Jacobian at each of the first `n_jac` points.
pub fn check_bijection(flow: &dyn Flow, x: &Tensor, n_jac: usize, tol_roundtrip: f64, tol_jac: f64) {
    let d = x.dim(1).unwrap();
    let (z, ld_inv) = flow.inverse(x).unwrap();
    let (x2, ld_fwd) = flow.forward(&z).unwrap();
    let err = max_abs_diff(&flat(&x2), &flat(x));
    assert!(err < tol_roundtrip, "round trip error {err}");
    let s: Vec<f64> = flat(&ld_inv).iter().zip(flat(&ld_fwd)).map(|(a, b)| a + b).collect();
    assert!(s.iter().all(|v| v.abs() < tol_roundtrip), "log-dets do not cancel: {s:?}");
    let zs = flat(&z);
    let lds = flat(&ld_fwd);
    for i in 0..n_jac {
        let zi = zs[i * d..(i + 1) * d].to_vec();
        let f = |v: &[f64]| -> Vec<f64> {
            let t = Tensor::from_slice(v, (1, d), &Device::Cpu).unwrap();
            flat(&flow.forward(&t).unwrap().0)
        };
        let jac = fab_core::test_utils::numerical_jacobian(&f, &zi, 1e-6);
        let num = fab_core::test_utils::log_abs_det_rows(&jac);
        assert!((num - lds[i]).abs() < tol_jac, "log-det {} vs numerical {num} at point {i}", lds[i]);
    }
}
