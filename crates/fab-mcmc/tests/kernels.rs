//! Deterministic tests of the kernels: exact arithmetic against a replay of the random draws,
//! gradient clamping, non-finite inputs, errors, evaluation counts, value stability and
//! step-size adaptation.

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use fab_core::test_utils::DiagGaussian;
use fab_core::{seeded_rng, ExactSample, FnDensity, LogDensity};
use fab_mcmc::{run_chain, Coeffs, Hmc, McmcError, Metropolis, PartsDensity, StepSizes, TargetOnly, TransitionKernel, TARGET_ACCEPT};
use rand_distr::{Distribution, Exp1};

fn t2(v: &[f64], d: usize) -> Tensor {
    Tensor::from_slice(v, (v.len() / d, d), &Device::Cpu).unwrap()
}

/// A density with a chosen value and gradient function, counting its evaluations.
struct Custom<F: Fn(f64) -> (f64, f64) + Send + Sync> {
    f: F,
    calls: AtomicUsize,
}

impl<F: Fn(f64) -> (f64, f64) + Send + Sync> Custom<F> {
    fn new(f: F) -> Self {
        Self { f, calls: AtomicUsize::new(0) }
    }
    fn eval(&self, x: &Tensor) -> (Vec<f64>, Vec<f64>) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let xs = fab_core::to_f64_vec(x).unwrap();
        xs.iter().map(|v| (self.f)(*v)).unzip()
    }
}

impl<F: Fn(f64) -> (f64, f64) + Send + Sync> LogDensity for Custom<F> {
    fn dim(&self) -> usize {
        1
    }
    fn log_prob(&self, x: &Tensor) -> fab_core::Result<Tensor> {
        let (v, _) = self.eval(x);
        let n = v.len();
        Ok(Tensor::from_vec(v, n, &Device::Cpu)?)
    }
    fn log_prob_and_grad(&self, x: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        let (v, g) = self.eval(x);
        let n = v.len();
        Ok((Tensor::from_vec(v, n, &Device::Cpu)?, Tensor::from_vec(g, (n, 1), &Device::Cpu)?))
    }
}

#[test]
fn hmc_with_nan_gradient_moves_freely_and_replays_exactly() {
    // Flat log f = 0 with NaN gradient: NaN → 0, so x′ = x + L·ε·p0, K unchanged, log α = 0,
    // always accepted.
    let dens = Custom::new(|_| (0.0, f64::NAN));
    let x0 = [0.5, -1.0, 2.0];
    let (eps, l) = (0.3, 4);
    let mut rng = seeded_rng(9, 0);
    let (x, infos) = run_chain(&Hmc::new(l).unwrap(), &dens, &t2(&x0, 1), 1, eps, &mut rng).unwrap();
    let mut replay = seeded_rng(9, 0);
    let p0 = fab_core::rng::normal_vec(&mut replay, 3);
    let x = fab_core::to_f64_vec(&x).unwrap();
    for i in 0..3 {
        let want = x0[i] + l as f64 * eps * p0[i];
        assert!((x[i] - want).abs() < 1e-12, "{} vs {want}", x[i]);
    }
    assert_eq!(infos[0].acceptance_rate, 1.0);
    assert!((infos[0].mean_accept_prob - 1.0).abs() < 1e-15);
    // 1 initial evaluation (run_chain) + L leapfrog evaluations.
    assert_eq!(dens.calls.load(Ordering::SeqCst), 1 + l);
}

#[test]
fn hmc_clamps_large_gradients() {
    // log f = 1e4·x: the gradient 1e4 is clamped to 1e3. One leapfrog step:
    // x′ = x + ε(p0 + ε/2·1e3); log α = 1e4(x′−x) − [K(p0 + ε·1e3) − K(p0)] > 0 unless p0 < −5.
    let dens = Custom::new(|x| (1e4 * x, 1e4));
    let eps = 0.01;
    let x0 = [0.0, 1.0];
    let mut rng = seeded_rng(10, 0);
    let (x, infos) = run_chain(&Hmc::new(1).unwrap(), &dens, &t2(&x0, 1), 1, eps, &mut rng).unwrap();
    let mut replay = seeded_rng(10, 0);
    let p0 = fab_core::rng::normal_vec(&mut replay, 2);
    let x = fab_core::to_f64_vec(&x).unwrap();
    for i in 0..2 {
        let want = x0[i] + eps * (p0[i] + 0.5 * eps * 1e3);
        assert!((x[i] - want).abs() < 1e-12, "{} vs {want}", x[i]);
    }
    assert_eq!(infos[0].acceptance_rate, 1.0);
    // A larger clamp changes the trajectory.
    let mut rng = seeded_rng(10, 0);
    let hmc = Hmc::new(1).unwrap().with_max_grad(f64::INFINITY).unwrap();
    let (x2, _) = run_chain(&hmc, &dens, &t2(&x0, 1), 1, eps, &mut rng).unwrap();
    let x2 = fab_core::to_f64_vec(&x2).unwrap();
    assert!((x2[0] - eps * (p0[0] + 0.5 * eps * 1e4)).abs() < 1e-12);
}

#[test]
fn hmc_acceptance_matches_closed_form_on_a_gaussian() {
    // Standard normal, one leapfrog step from x with momentum p: x′ = x + ε(p − εx/2),
    // p′ = p − ε/2·(x + x′); log α = −(x′² + p′²)/2 + (x² + p²)/2. Replay the draws and check
    // every accept/reject decision and the reported mean min(1, α).
    let target = DiagGaussian::standard(1);
    let x0: Vec<f64> = (0..200).map(|i| -3.0 + 0.03 * i as f64).collect();
    let eps = 1.3;
    let mut rng = seeded_rng(12, 0);
    let (x, infos) = run_chain(&Hmc::new(1).unwrap(), &target, &t2(&x0, 1), 1, eps, &mut rng).unwrap();
    let x = fab_core::to_f64_vec(&x).unwrap();
    let mut replay = seeded_rng(12, 0);
    let p = fab_core::rng::normal_vec(&mut replay, 200);
    let e: Vec<f64> = (0..200).map(|_| Exp1.sample(&mut replay)).collect();
    let (mut n_acc, mut sum_a) = (0, 0.0);
    for i in 0..200 {
        let xn = x0[i] + eps * (p[i] - 0.5 * eps * x0[i]);
        let pn = p[i] - 0.5 * eps * (x0[i] + xn);
        let la = -(xn * xn + pn * pn) / 2.0 + (x0[i] * x0[i] + p[i] * p[i]) / 2.0;
        let acc = la > -e[i];
        n_acc += usize::from(acc);
        sum_a += la.min(0.0).exp();
        let want = if acc { xn } else { x0[i] };
        assert!((x[i] - want).abs() < 1e-12, "row {i}: {} vs {want}", x[i]);
    }
    assert!((infos[0].acceptance_rate - n_acc as f64 / 200.0).abs() < 1e-15);
    assert!((infos[0].mean_accept_prob - sum_a / 200.0).abs() < 1e-12);
    assert!(n_acc > 20 && n_acc < 180, "both branches exercised: {n_acc}");
}

#[test]
fn metropolis_replays_exactly() {
    // Standard normal: x′ = x + σ·z, accept iff −x′²/2 + x²/2 > −E.
    let target = DiagGaussian::standard(1);
    let x0: Vec<f64> = (0..100).map(|i| -2.0 + 0.04 * i as f64).collect();
    let sigma = 2.0;
    let mut rng = seeded_rng(13, 0);
    let (x, infos) = run_chain(&Metropolis::new(1).unwrap(), &target, &t2(&x0, 1), 1, sigma, &mut rng).unwrap();
    let x = fab_core::to_f64_vec(&x).unwrap();
    let mut replay = seeded_rng(13, 0);
    let z = fab_core::rng::normal_vec(&mut replay, 100);
    let e: Vec<f64> = (0..100).map(|_| Exp1.sample(&mut replay)).collect();
    let mut n_acc = 0;
    for i in 0..100 {
        let xn = x0[i] + sigma * z[i];
        let acc = -xn * xn / 2.0 + x0[i] * x0[i] / 2.0 > -e[i];
        n_acc += usize::from(acc);
        let want = if acc { xn } else { x0[i] };
        assert!((x[i] - want).abs() < 1e-12);
    }
    assert!((infos[0].acceptance_rate - n_acc as f64 / 100.0).abs() < 1e-15);
    assert!(n_acc > 10 && n_acc < 90);
}

#[test]
fn non_finite_points_are_rejected_and_counted_never_panic() {
    // Support x > 0 only (−inf outside), NaN at x > 10, and gradient NaN everywhere outside.
    let dens = Custom::new(|x| {
        if x.is_nan() || x > 10.0 {
            (f64::NAN, f64::NAN)
        } else if x <= 0.0 {
            (f64::NEG_INFINITY, f64::INFINITY)
        } else {
            (-0.5 * (x - 3.0) * (x - 3.0), -(x - 3.0))
        }
    });
    let x0 = [f64::NAN, f64::INFINITY, -1.0, 3.0, 3.5, 9.9];
    for kernel in [&Hmc::new(3).unwrap() as &dyn TransitionKernel, &Metropolis::new(2).unwrap()] {
        let mut rng = seeded_rng(14, 0);
        let (x, infos) = run_chain(kernel, &dens, &t2(&x0, 1), 5, 1.0, &mut rng).unwrap();
        let x = fab_core::to_f64_vec(&x).unwrap();
        // Rows starting outside the support can never leave it: every proposal has a non-finite
        // log α and is rejected.
        assert!(x[0].is_nan() && x[1] == f64::INFINITY && x[2] == -1.0, "{x:?}");
        assert!(x[3..].iter().all(|v| *v > 0.0 && *v <= 10.0), "{x:?}");
        assert!(infos.iter().all(|i| i.n_non_finite >= 3), "{infos:?}");
        assert!(infos.iter().all(|i| i.mean_displacement.is_finite()));
        assert!(infos.iter().all(|i| i.mean_accept_prob.is_finite()));
    }
}

#[test]
fn errors_for_bad_arguments() {
    let target = DiagGaussian::standard(2);
    let x = Tensor::zeros((3, 2), DType::F64, &Device::Cpu).unwrap();
    let mut rng = seeded_rng(0, 0);
    let hmc = Hmc::new(2).unwrap();
    for eps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(run_chain(&hmc, &target, &x, 1, eps, &mut rng), Err(McmcError::InvalidStepSize(_))));
    }
    assert!(Hmc::new(0).is_err());
    assert!(Metropolis::new(0).is_err());
    assert!(Hmc::new(1).unwrap().with_max_grad(0.0).is_err());
    // HMC needs gradients in the point.
    let density = TargetOnly(&target);
    let point = density.evaluate(&x, false).unwrap();
    assert!(matches!(hmc.step(&density, Coeffs::TARGET, point, 0.1, &mut rng), Err(McmcError::MissingGradient)));
    // Wrong shape.
    let bad = Tensor::zeros((3, 5), DType::F64, &Device::Cpu).unwrap();
    assert!(run_chain(&hmc, &target, &bad, 1, 0.1, &mut rng).is_err());
    // An empty batch is a no-op, not an error.
    let empty = Tensor::zeros((0, 2), DType::F64, &Device::Cpu).unwrap();
    let (out, infos) = run_chain(&hmc, &target, &empty, 2, 0.1, &mut rng).unwrap();
    assert_eq!(out.dims(), &[0, 2]);
    assert_eq!(infos[0].n_chains, 0);
}

#[test]
fn f32_points_stay_f32() {
    let target = FnDensity::new(2, |x: &Tensor| x.sqr()?.sum(1)? * -0.5);
    let x = Tensor::zeros((8, 2), DType::F32, &Device::Cpu).unwrap();
    let mut rng = seeded_rng(0, 0);
    for kernel in [&Hmc::new(2).unwrap() as &dyn TransitionKernel, &Metropolis::new(1).unwrap()] {
        let (out, infos) = run_chain(kernel, &target, &x, 3, 0.5, &mut rng).unwrap();
        assert_eq!(out.dtype(), DType::F32);
        assert!(infos[2].acceptance_rate > 0.0);
    }
}

#[test]
fn value_stability() {
    // Fixed seed ⇒ fixed first outputs (recorded from this implementation); a change means the
    // random-number consumption or the arithmetic changed.
    let target = DiagGaussian::new(vec![1.0, -1.0], vec![1.0, 2.0]);
    let x0 = t2(&[0.0, 0.0, 1.0, 1.0], 2);
    let mut rng = seeded_rng(42, 3);
    let (x, _) = run_chain(&Hmc::new(5).unwrap(), &target, &x0, 2, 0.5, &mut rng).unwrap();
    let got = fab_core::to_f64_vec(&x).unwrap();
    let mut rng = seeded_rng(42, 3);
    let (y, _) = run_chain(&Metropolis::new(1).unwrap(), &target, &x0, 2, 1.0, &mut rng).unwrap();
    let got_m = fab_core::to_f64_vec(&y).unwrap();
    for (a, b) in got.iter().zip(HMC_EXPECTED.iter()).chain(got_m.iter().zip(MH_EXPECTED.iter())) {
        assert!((a - b).abs() < 1e-12, "HMC {got:?} MH {got_m:?}");
    }
}
const HMC_EXPECTED: [f64; 4] = [0.049105226091904874, -1.9242630347898104, 1.5048261171890447, -0.13050436608193658];
// The first chain's two Metropolis proposals were both rejected.
const MH_EXPECTED: [f64; 4] = [0.0, 0.0, 1.5078505446745114, 0.9996503437793117];

/// Runs `iters` adaptation rounds of `kernel` on a 2-D standard normal with a batch of 256
/// chains started from exact samples, adapting one level; returns (step sizes, mean accept probs).
fn adapt_run(kernel: &dyn TransitionKernel, mut sizes: StepSizes, iters: usize) -> (Vec<f64>, Vec<f64>) {
    let target = DiagGaussian::standard(2);
    let mut rng = seeded_rng(21, 0);
    let density = TargetOnly(&target);
    let mut point = density.evaluate(&target.sample(256, &mut rng).unwrap(), kernel.uses_grad()).unwrap();
    let (mut eps, mut acc) = (vec![], vec![]);
    for _ in 0..iters {
        let e = sizes.step_size(0).unwrap();
        let (p, info) = kernel.step(&density, Coeffs::TARGET, point, e, &mut rng).unwrap();
        point = p;
        sizes.advance(0, info.mean_accept_prob).unwrap();
        eps.push(e);
        acc.push(info.mean_accept_prob);
    }
    (eps, acc)
}

#[test]
fn step_size_adaptation_moves_toward_target_acceptance() {
    let hmc = Hmc::new(5).unwrap();
    let mh = Metropolis::new(1).unwrap();
    let cases: [(&dyn TransitionKernel, StepSizes); 4] = [
        (&hmc, StepSizes::hmc(1, 0.01, 0.1, TARGET_ACCEPT).unwrap()),
        (&hmc, StepSizes::hmc(1, 20.0, 0.1, TARGET_ACCEPT).unwrap()),
        (&mh, StepSizes::metropolis(1, 0.01, TARGET_ACCEPT).unwrap()),
        (&mh, StepSizes::metropolis(1, 100.0, TARGET_ACCEPT).unwrap()),
    ];
    for (kernel, sizes) in cases {
        let (eps, acc) = adapt_run(kernel, sizes, 300);
        let too_small = acc[0] > TARGET_ACCEPT;
        // The start is on the wrong side by a wide margin.
        assert!(if too_small { acc[0] > 0.95 } else { acc[0] < 0.3 }, "start {}", acc[0]);
        // While the acceptance stays on the start's side, every update moves ε the right way.
        for w in 0..eps.len() - 1 {
            if (acc[w] > TARGET_ACCEPT) != too_small {
                break;
            }
            assert!(if too_small { eps[w + 1] > eps[w] } else { eps[w + 1] < eps[w] });
        }
        // The acceptance reaches the other side of the target.
        let crossed = acc.iter().position(|a| (*a > TARGET_ACCEPT) != too_small);
        assert!(crossed.is_some_and(|k| k < 200), "never crossed 0.65: {kernel:?}");
        // Afterwards the rule settles: over the last 100 rounds ε stays within a narrow band (no
        // drift) and the ups (p̄ > 0.65) and downs balance. The rule equilibrates where the
        // *median* of p̄ is 0.65; on a Gaussian, HMC's acceptance falls off a cliff near
        // ε·ω = 2, so the *mean* p̄ can sit below 0.65 and is not asserted.
        let tail_eps = &eps[200..];
        let lo = tail_eps.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = tail_eps.iter().copied().fold(0.0, f64::max);
        assert!(hi / lo < 1.5, "{kernel:?}: ε still drifting in [{lo}, {hi}]");
        let ups = acc[200..].iter().filter(|a| **a > TARGET_ACCEPT).count();
        // With ε confined to a band of ratio < 1.5, #ups − #downs is bounded by
        // ln 1.5 / ln 1.05 ≈ 8 plus the two ends: the up fraction is 0.5 ± 0.1.
        assert!((30..=70).contains(&ups), "{kernel:?}: {ups} of 100 rounds above target");
    }
}
