//! Statistical tests: HMC and Metropolis leave known distributions invariant.
//!
//! Each test starts every chain (row) from an exact sample of the target and runs the kernel; an
//! invariant kernel keeps every row exactly distributed and the rows independent, so a KS test of
//! the final rows against the exact distribution (or an independent exact sample) must pass. All
//! KS tests use the 0.001 level (a correct kernel fails 1 time in 1000; seeds are fixed, so the
//! outcome is deterministic). Each test also checks that the chains actually moved, otherwise the
//! test would be vacuous.

use candle_core::{DType, Device, Tensor};
use fab_core::test_utils::{ks_critical_001, ks_statistic, ks_two_sample, normal_cdf, DiagGaussian};
use fab_core::{seeded_rng, ExactSample, FnDensity, LogDensity};
use fab_mcmc::{run_chain, Annealed, Coeffs, Hmc, Metropolis, PartsDensity, TransitionKernel};
use fab_targets::many_well::ManyWell;

fn col(x: &Tensor, j: usize) -> Vec<f64> {
    let d = x.dims()[1];
    fab_core::to_f64_vec(x).unwrap().into_iter().skip(j).step_by(d).collect()
}

/// Two-sample KS critical value at level 0.001: 1.95·√((n+m)/(nm)).
fn ks2_critical_001(n: usize, m: usize) -> f64 {
    1.95 * (((n + m) as f64) / ((n * m) as f64)).sqrt()
}

fn check_moved(infos: &[fab_mcmc::TransitionInfo]) {
    let acc = infos.iter().map(|i| i.acceptance_rate).sum::<f64>() / infos.len() as f64;
    let disp = infos.iter().map(|i| i.mean_displacement).sum::<f64>() / infos.len() as f64;
    assert!(acc > 0.2 && disp > 0.1, "chains barely moved: acceptance {acc}, displacement {disp}");
    assert!(infos.iter().all(|i| i.n_non_finite == 0));
}

fn gaussian_1d_invariance(kernel: &dyn TransitionKernel, step: f64, seed: u64) {
    let target = DiagGaussian::new(vec![1.0], vec![2.0]);
    let mut rng = seeded_rng(seed, 0);
    let n = 5000;
    let x0 = target.sample(n, &mut rng).unwrap();
    let (x, infos) = run_chain(kernel, &target, &x0, 10, step, &mut rng).unwrap();
    check_moved(&infos);
    let d = ks_statistic(&col(&x, 0), &|v| normal_cdf((v - 1.0) / 2.0));
    assert!(d < ks_critical_001(n), "KS {d}");
}

#[test]
fn hmc_leaves_1d_gaussian_invariant() {
    gaussian_1d_invariance(&Hmc::new(5).unwrap(), 1.5, 1);
}

#[test]
fn metropolis_leaves_1d_gaussian_invariant() {
    gaussian_1d_invariance(&Metropolis::new(1).unwrap(), 4.0, 2);
    gaussian_1d_invariance(&Metropolis::new(3).unwrap(), 2.0, 3);
}

/// A correlated 2-D Gaussian (ρ = 0.8, unit variances) through a closure, so the kernels also use
/// the autodiff gradient. Exact samples: x₁ = z₁, x₂ = ρz₁ + √(1−ρ²)z₂.
fn correlated_2d(kernel: &dyn TransitionKernel, step: f64, seed: u64) {
    let rho: f64 = 0.8;
    let c = 1.0 / (1.0 - rho * rho);
    let target = FnDensity::new(2, move |x: &Tensor| {
        let a = x.narrow(1, 0, 1)?.squeeze(1)?;
        let b = x.narrow(1, 1, 1)?.squeeze(1)?;
        let q = ((a.sqr()? + b.sqr()?)? - ((a * b)? * (2.0 * rho))?)?;
        q * (-0.5 * c)
    });
    let mut rng = seeded_rng(seed, 0);
    let n = 4000;
    let z = fab_core::rng::normal_vec(&mut rng, 2 * n);
    let v: Vec<f64> = (0..n).flat_map(|i| [z[2 * i], rho * z[2 * i] + (1.0 - rho * rho).sqrt() * z[2 * i + 1]]).collect();
    let x0 = Tensor::from_vec(v, (n, 2), &Device::Cpu).unwrap();
    let (x, infos) = run_chain(kernel, &target, &x0, 10, step, &mut rng).unwrap();
    check_moved(&infos);
    let (a, b) = (col(&x, 0), col(&x, 1));
    // Marginals N(0,1); sum ~ N(0, 2(1+ρ)), difference ~ N(0, 2(1−ρ)). Four KS tests at 0.001 each.
    let s_sum = (2.0 * (1.0 + rho)).sqrt();
    let s_dif = (2.0 * (1.0 - rho)).sqrt();
    let sum: Vec<f64> = a.iter().zip(&b).map(|(p, q)| p + q).collect();
    let dif: Vec<f64> = a.iter().zip(&b).map(|(p, q)| p - q).collect();
    for (vals, sd) in [(&a, 1.0), (&b, 1.0), (&sum, s_sum), (&dif, s_dif)] {
        let d = ks_statistic(vals, &|t| normal_cdf(t / sd));
        assert!(d < ks_critical_001(n), "KS {d}");
    }
}

#[test]
fn hmc_leaves_correlated_2d_gaussian_invariant() {
    correlated_2d(&Hmc::new(5).unwrap(), 0.4, 4);
}

#[test]
fn metropolis_leaves_correlated_2d_gaussian_invariant() {
    correlated_2d(&Metropolis::new(2).unwrap(), 1.2, 5);
}

fn many_well_invariance(kernel: &dyn TransitionKernel, step: f64, n_steps: usize, seed: u64) {
    // One double well (dim 2): x₁ is the bimodal marginal; compare to independent exact samples.
    let target = ManyWell::new(2, DType::F64, &Device::Cpu).unwrap();
    let mut rng = seeded_rng(seed, 0);
    let n = 5000;
    let x0 = target.sample(n, &mut rng).unwrap();
    let reference = target.sample(n, &mut rng).unwrap();
    let (x, infos) = run_chain(kernel, &target, &x0, n_steps, step, &mut rng).unwrap();
    check_moved(&infos);
    let d = ks_two_sample(&col(&x, 0), &col(&reference, 0));
    assert!(d < ks2_critical_001(n, n), "two-sample KS on x1: {d}");
    // x₂ is N(0, 1) exactly.
    let d2 = ks_statistic(&col(&x, 1), &normal_cdf);
    assert!(d2 < ks_critical_001(n), "KS on x2: {d2}");
    // The mass of the deep well is 0.84431 (quadrature; see fab-targets' tests). Binomial SE
    // √(p(1−p)/n) = 0.0051; 4 SE.
    let frac = col(&x, 0).iter().filter(|v| **v > 0.0).count() as f64 / n as f64;
    assert!((frac - 0.84431).abs() < 4.0 * 0.0051, "P(x1 > 0) = {frac}");
}

#[test]
fn hmc_leaves_many_well_invariant() {
    many_well_invariance(&Hmc::new(5).unwrap(), 0.3, 10, 6);
}

#[test]
fn metropolis_leaves_many_well_invariant() {
    many_well_invariance(&Metropolis::new(1).unwrap(), 0.8, 10, 7);
}

#[test]
fn hmc_leaves_annealed_alpha_target_invariant() {
    // f = q^a p^b with q = N(0, 1), p = N(2, 0.5²), the FAB α = 2 level at β = 0.3:
    // a = (1−β) + β(1−α) = 0.4, b = αβ = 0.6. A product of Gaussian powers is Gaussian with
    // precision a/1 + b/0.25 = 2.8 and mean (0·a + 2·b/0.25)/2.8 = 4.8/2.8.
    let q = DiagGaussian::new(vec![0.0], vec![1.0]);
    let p = DiagGaussian::new(vec![2.0], vec![0.5]).with_log_z(3.0);
    let coeffs = Coeffs::alpha_target(0.3, 2.0);
    assert!((coeffs.q - 0.4).abs() < 1e-15 && (coeffs.p - 0.6).abs() < 1e-15);
    let (mean, sd) = (4.8 / 2.8, (1.0f64 / 2.8).sqrt());
    let exact = DiagGaussian::new(vec![mean], vec![sd]);
    let density = Annealed::new(&q, &p).unwrap();
    let mut rng = seeded_rng(8, 0);
    let n = 5000;
    let x0 = exact.sample(n, &mut rng).unwrap();
    let hmc = Hmc::new(5).unwrap();
    let mut point = density.evaluate(&x0, true).unwrap();
    let mut infos = vec![];
    for _ in 0..10 {
        let (pt, info) = hmc.step(&density, coeffs, point, 0.5, &mut rng).unwrap();
        point = pt;
        infos.push(info);
    }
    check_moved(&infos);
    let d = ks_statistic(&col(&point.x, 0), &|t| normal_cdf((t - mean) / sd));
    assert!(d < ks_critical_001(n), "KS {d}");
    // The cache is consistent with the final positions.
    let fresh = density.evaluate(&point.x, true).unwrap();
    let a = fab_core::to_f64_vec(&point.log_p).unwrap();
    let b = fab_core::to_f64_vec(&fresh.log_p).unwrap();
    assert!(a.iter().zip(&b).all(|(u, v)| u == v));
    let ga = fab_core::to_f64_vec(point.grad_log_q.as_ref().unwrap()).unwrap();
    let gb = fab_core::to_f64_vec(fresh.grad_log_q.as_ref().unwrap()).unwrap();
    assert_eq!(ga, gb);
    // Sanity of the target: its log Z is not 0, so the test would catch a normalisation mix-up
    // in the weights elsewhere; here only the shape matters.
    assert_eq!(p.log_normalizer(), Some(3.0));
}
