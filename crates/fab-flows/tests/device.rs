//! The flow on a CUDA device against the hand-written CPU path: log q, ∇ₓ log q and the FAB
//! gradient step (parameter gradients of Σᵢ cᵢ log q(xᵢ)).
//!
//! Compiled always; each GPU test prints why it is skipped and passes when no CUDA device can be
//! opened (a build without `--features cuda`, or no GPU). With `FAB_REQUIRE_CUDA=1` a missing
//! device fails instead (scripts/gpu-check.sh sets it). The same comparison also runs without a
//! GPU with candle's CPU backend in place of the device (`Backend::Candle`, the device-generic
//! code a GPU runs), so the harness and its tolerances are exercised everywhere.
//!
//! Errors are normwise relative, ‖a − b‖∞ / ‖b‖∞ with b the CPU value, so that entries near zero
//! (gradients) do not dominate. f64 tolerance 1e-9: both sides are exact float64 arithmetic that
//! differ only in summation order and in the last ulp of exp/log (cuBLAS vs gemm, CUDA's libdevice
//! vs libm); through ~15–30 layers that stays far below 1e-12 relative per op. f32 is checked
//! against the f64 CPU result: the GPU's error may be at most 10× the CPU f32 path's own error
//! (floor 1e-5), i.e. the GPU float32 path must be as accurate as the CPU one, not bit-equal.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use fab_core::{rng::seeded_rng, LogDensity};
use fab_flows::{Backend, CircularNsfConfig, FlowConfig, FlowModel, RealNvpConfig};

/// ‖a − b‖∞ / ‖b‖∞.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    max_abs_diff(a, b) / scale
}

/// The model of `cfg` on `device` in `dtype` running `backend`, with the parameters of
/// `reference` (any device or dtype). The fixed buffers (masks, permutations, shifts) come from
/// the same seed.
fn copy_of(cfg: &FlowConfig, reference: &FlowModel, dtype: DType, device: &Device, backend: Backend) -> FlowModel {
    let mut m = cfg.build(0, dtype, device).unwrap();
    m.set_backend(backend);
    for (dst, src) in m.vars().iter().zip(reference.vars()) {
        dst.set(&src.as_tensor().to_dtype(dtype).unwrap().to_device(device).unwrap()).unwrap();
    }
    m
}

/// A CPU f64 model of `cfg` with random, non-identity parameters.
fn reference_model(cfg: &FlowConfig, std: f64) -> FlowModel {
    let m = cfg.build(0, DType::F64, &Device::Cpu).unwrap();
    perturb(&m, std, 11);
    m
}

/// Fixed FAB-like coefficients cᵢ = −w̄ᵢ/n with log-normal weights.
fn coefficients(n: usize) -> Vec<f64> {
    let mut rng = seeded_rng(5, 1);
    let w: Vec<f64> = fab_core::rng::normal_vec(&mut rng, n).iter().map(|z| z.exp()).collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|v| -v / s).collect()
}

struct Eval {
    lq: Vec<f64>,
    grad_x: Vec<f64>,
    /// Parameter gradients of Σ cᵢ log q(xᵢ), one vector per parameter.
    grads: Vec<Vec<f64>>,
}

fn evaluate(m: &FlowModel, x: &Tensor, coef: &[f64]) -> Eval {
    let x = x.to_dtype(m.dtype()).unwrap().to_device(m.device()).unwrap();
    let lq = flat(&m.log_prob(&x).unwrap());
    let (lq2, gx) = m.log_prob_and_grad(&x).unwrap();
    assert!(max_abs_diff(&flat(&lq2), &lq) <= 1e-6 * lq.iter().fold(1.0f64, |a, v| a.max(v.abs())));
    let (lq3, grads) = m.log_prob_backward(&x, coef).unwrap();
    assert!(max_abs_diff(&flat(&lq3), &lq) <= 1e-6 * lq.iter().fold(1.0f64, |a, v| a.max(v.abs())));
    let grads = grads.0.iter().map(|g| flat(g.as_ref().expect("every parameter gets a gradient"))).collect();
    Eval { lq, grad_x: flat(&gx), grads }
}

/// Worst normwise relative error of `a` against `b` over log q, ∇ₓ log q and every parameter
/// gradient, with a label of where it occurs.
fn worst(a: &Eval, b: &Eval, names: &[String]) -> (f64, String) {
    let mut out = vec![(rel_err(&a.lq, &b.lq), "log q".to_string()), (rel_err(&a.grad_x, &b.grad_x), "grad_x".to_string())];
    // A parameter whose gradient is tiny compared with the largest one is compared on the
    // largest one's scale (it cannot matter for the step).
    let global = b.grads.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for ((ga, gb), name) in a.grads.iter().zip(&b.grads).zip(names) {
        let scale = gb.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6 * global).max(f64::MIN_POSITIVE);
        out.push((max_abs_diff(ga, gb) / scale, format!("d/d {name}")));
    }
    out.into_iter().fold((0.0, String::new()), |acc, e| if e.0 > acc.0 { e } else { acc })
}

/// Compares `cfg` on `gpu` (candle ops; on a CPU device the candle path) with the hand-written
/// CPU path in f64 and f32 at the points `x`.
fn check(test: &str, gpu: &Device, cfg: &FlowConfig, std: f64, x: &Tensor) {
    let n = x.dim(0).unwrap();
    let coef = coefficients(n);
    let reference = reference_model(cfg, std);
    let names = reference.params().names().to_vec();
    let cpu64 = evaluate(&reference, x, &coef);
    assert!(cpu64.lq.iter().all(|v| v.is_finite()));

    let label = if gpu.is_cuda() { "GPU" } else { "candle path on the CPU" };
    let gpu64 = evaluate(&copy_of(cfg, &reference, DType::F64, gpu, Backend::Candle), x, &coef);
    let (err, at) = worst(&gpu64, &cpu64, &names);
    println!("{test}: f64 {label} vs the CPU path: worst relative error {err:.3e} ({at})");
    assert!(err < 1e-9, "{test}: f64 GPU differs from the CPU path by {err:.3e} (relative) in {at}");

    let cpu32 = evaluate(&copy_of(cfg, &reference, DType::F32, &Device::Cpu, Backend::Auto), x, &coef);
    let gpu32 = evaluate(&copy_of(cfg, &reference, DType::F32, gpu, Backend::Candle), x, &coef);
    let (err_cpu, _) = worst(&cpu32, &cpu64, &names);
    let (err_gpu, at) = worst(&gpu32, &cpu64, &names);
    println!("{test}: f32 error vs the f64 CPU result: {label} {err_gpu:.3e} ({at}), CPU path {err_cpu:.3e}");
    let tol = (10.0 * err_cpu).max(1e-5);
    assert!(err_gpu < tol, "{test}: f32 GPU error {err_gpu:.3e} in {at} exceeds {tol:.3e} (10× the CPU f32 error {err_cpu:.3e})");
}

fn gmm_case() -> (FlowConfig, f64, Tensor) {
    (FlowConfig::RealNvp(RealNvpConfig::gmm()), 0.2 / 80f64.sqrt(), points(128, 2, 3.0, 1))
}

fn many_well_case() -> (FlowConfig, f64, Tensor) {
    (FlowConfig::RealNvp(RealNvpConfig::many_well()), 0.3 / 320f64.sqrt(), points(256, 32, 1.5, 2))
}

fn spline_case() -> (FlowConfig, f64, Tensor) {
    let cfg = FlowConfig::CircularNsf(CircularNsfConfig {
        dim: 6,
        circular_dims: vec![1, 4],
        n_blocks: 4,
        hidden: 32,
        bins: 8,
        num_res_blocks: 1,
        tail_bound: 5.0,
        periodic_shifts: true,
    });
    // Inside [−π, π) for the circular and inside the spline interval for the other coordinates.
    let mut rng = seeded_rng(3, 0);
    let x = fab_core::rng::rand_uniform(&mut rng, (128, 6), -3.0, 3.0, DType::F64, &Device::Cpu).unwrap();
    (cfg, 0.3 / 32f64.sqrt(), x)
}

fn on_gpu(test: &str, case: fn() -> (FlowConfig, f64, Tensor)) {
    let Some(gpu) = fab_core::test_utils::cuda_device_or_skip(test) else { return };
    let (cfg, std, x) = case();
    check(test, &gpu, &cfg, std, &x);
}

#[test]
fn gmm_realnvp_on_gpu_matches_cpu() {
    on_gpu("gmm_realnvp_on_gpu_matches_cpu", gmm_case);
}

#[test]
fn many_well_realnvp_on_gpu_matches_cpu() {
    on_gpu("many_well_realnvp_on_gpu_matches_cpu", many_well_case);
}

#[test]
fn circular_spline_flow_on_gpu_matches_cpu() {
    on_gpu("circular_spline_flow_on_gpu_matches_cpu", spline_case);
}

#[test]
fn harness_on_cpu_candle_path_gmm() {
    let (cfg, std, x) = gmm_case();
    check("harness_on_cpu_candle_path_gmm", &Device::Cpu, &cfg, std, &x);
}

#[test]
fn harness_on_cpu_candle_path_spline() {
    let (cfg, std, x) = spline_case();
    check("harness_on_cpu_candle_path_spline", &Device::Cpu, &cfg, std, &x);
}

#[test]
fn harness_detects_a_parameter_difference() {
    // The comparison is not vacuous: a model that differs from the reference in one parameter
    // by 1e-6 (relative) fails the f64 tolerance.
    let (cfg, std, x) = gmm_case();
    let coef = coefficients(x.dim(0).unwrap());
    let reference = reference_model(&cfg, std);
    let other = copy_of(&cfg, &reference, DType::F64, &Device::Cpu, Backend::Candle);
    let v = &other.vars()[3];
    v.set(&(v.as_tensor() * (1.0 + 1e-6)).unwrap()).unwrap();
    let (err, at) = worst(&evaluate(&other, &x, &coef), &evaluate(&reference, &x, &coef), reference.params().names());
    assert!(err > 1e-9, "a 1e-6 parameter change went unnoticed ({err:.3e} at {at})");
}

#[test]
fn skip_message_names_the_reason() {
    // Runs everywhere: without a device the helper returns None (and says why), with one it
    // returns a CUDA device.
    match fab_core::test_utils::cuda_device_or_skip("skip_message_names_the_reason") {
        Some(d) => assert!(d.is_cuda()),
        None => assert!(Device::new_cuda(0).is_err()),
    }
}
