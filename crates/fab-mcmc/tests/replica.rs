//! Replica exchange: known answers by quadrature, swap mechanics and configuration checks.
//!
//! Statistical checks compare an estimate with a quadrature value using a standard error taken
//! from the spread of *independent* chains (or independent samplers), never from correlated
//! samples of one chain. Tolerances are z-values with the false-positive rate stated next to
//! them; seeds are fixed, so each outcome is deterministic.

use candle_core::{DType, Device, Tensor};
use fab_core::{seeded_rng, to_f64_vec, LogDensity};
use fab_mcmc::{
    betas_from_temperatures, geometric_temperatures, linear_temperatures, swap_log_acceptance, McmcError, ReplicaExchange,
    ReplicaExchangeConfig,
};

/// 1-D tilted double well, log p̃(x) = −[h(x² − 1)² + c·x], with an analytic gradient. The
/// barrier at x = 0 is ≈ h above both minima; c > 0 makes the left well (x < 0) heavier.
#[derive(Debug)]
struct DoubleWell {
    h: f64,
    c: f64,
}

impl DoubleWell {
    fn lp(&self, x: f64) -> f64 {
        -(self.h * (x * x - 1.0).powi(2) + self.c * x)
    }
}

impl LogDensity for DoubleWell {
    fn dim(&self) -> usize {
        1
    }
    fn log_prob(&self, x: &Tensor) -> fab_core::Result<Tensor> {
        Ok(self.log_prob_and_grad(x)?.0)
    }
    fn log_prob_and_grad(&self, x: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        let v = to_f64_vec(x)?;
        let n = v.len();
        let lp: Vec<f64> = v.iter().map(|&x| self.lp(x)).collect();
        let g: Vec<f64> = v.iter().map(|&x| -(4.0 * self.h * x * (x * x - 1.0) + self.c)).collect();
        Ok((Tensor::from_vec(lp, n, &Device::Cpu)?, Tensor::from_vec(g, (n, 1), &Device::Cpu)?))
    }
}

/// Unnormalised 1-D Gaussian log r(x) = −x²/(2s²), used as the untempered reference.
#[derive(Debug)]
struct Gauss {
    s: f64,
}

impl LogDensity for Gauss {
    fn dim(&self) -> usize {
        1
    }
    fn log_prob(&self, x: &Tensor) -> fab_core::Result<Tensor> {
        Ok(self.log_prob_and_grad(x)?.0)
    }
    fn log_prob_and_grad(&self, x: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        let v = to_f64_vec(x)?;
        let n = v.len();
        let s2 = self.s * self.s;
        let lp: Vec<f64> = v.iter().map(|x| -x * x / (2.0 * s2)).collect();
        let g: Vec<f64> = v.iter().map(|x| -x / s2).collect();
        Ok((Tensor::from_vec(lp, n, &Device::Cpu)?, Tensor::from_vec(g, (n, 1), &Device::Cpu)?))
    }
}

/// Composite Simpson rule of f on [a, b] with `m` (even) intervals.
fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, m: usize) -> f64 {
    let h = (b - a) / m as f64;
    let mut s = f(a) + f(b);
    for i in 1..m {
        s += f(a + h * i as f64) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0
}

/// Mass of x < 0 under π_β ∝ exp(β(log p̃ − log r) + log r), by quadrature. The integrand is
/// below e^{-500} outside [−4, 4] for the wells used here, so the truncation error is nil; the
/// Simpson error with 40 000 intervals is far below 1e-10.
fn left_mass(dw: &DoubleWell, r_s: Option<f64>, beta: f64) -> f64 {
    let f = |x: f64| {
        let lr = r_s.map_or(0.0, |s| -x * x / (2.0 * s * s));
        (beta * (dw.lp(x) - lr) + lr).exp()
    };
    simpson(f, -4.0, 0.0, 40_000) / simpson(f, -4.0, 4.0, 80_000)
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

/// Per chain and replica: fraction of production sweeps in which `pred(x)` holds, all replicas
/// started at `x_start`. Returns `[replica][chain]` fractions and the final statistics.
#[allow(clippy::too_many_arguments)]
fn fractions(
    target: &dyn LogDensity,
    reference: Option<&Gauss>,
    cfg: ReplicaExchangeConfig,
    n_chains: usize,
    x_start: f64,
    burn: usize,
    sweeps: usize,
    seed: u64,
    pred: impl Fn(f64) -> bool,
) -> (Vec<Vec<f64>>, fab_mcmc::ReplicaStats) {
    let k = cfg.n_replicas();
    let x0 = Tensor::full(x_start, (n_chains * k, 1), &Device::Cpu).unwrap();
    let mut re = ReplicaExchange::new(target, reference.map(|r| r as &dyn LogDensity), cfg, &x0).unwrap();
    let mut rng = seeded_rng(seed, 0);
    re.burn_in(burn, &mut rng).unwrap();
    let mut counts = vec![vec![0.0; n_chains]; k];
    re.run(sweeps, 1, &mut rng, |_, re| {
        let x = re.all_positions();
        for c in 0..n_chains {
            for (rep, cnt) in counts.iter_mut().enumerate() {
                if pred(x[c * k + rep]) {
                    cnt[c] += 1.0;
                }
            }
        }
        Ok(())
    })
    .unwrap();
    for cnt in &mut counts {
        cnt.iter_mut().for_each(|v| *v /= sweeps as f64);
    }
    (counts, re.stats().clone())
}

/// A 1-D two-Gaussian mixture, log p̃(x) = log[w·e^{−(x+μ)²/2s²} + (1−w)·e^{−(x−μ)²/2s²}], with
/// an analytic gradient. Its curvature is bounded by 1/s² (unlike a quartic double well, whose
/// stiff outer walls let an HMC step adapted to 0.65 acceptance go unstable and hop across the
/// barrier), and the barrier is ≈ μ²/(2s²) above the minima.
#[derive(Debug)]
struct Mixture {
    w: f64,
    mu: f64,
    s: f64,
}

impl Mixture {
    fn parts(&self, x: f64) -> (f64, f64) {
        let s2 = self.s * self.s;
        let a = self.w.ln() - (x + self.mu).powi(2) / (2.0 * s2);
        let b = (1.0 - self.w).ln() - (x - self.mu).powi(2) / (2.0 * s2);
        let m = a.max(b);
        let lp = m + ((a - m).exp() + (b - m).exp()).ln();
        let (ra, rb) = ((a - lp).exp(), (b - lp).exp());
        (lp, -(ra * (x + self.mu) + rb * (x - self.mu)) / s2)
    }
    fn lp(&self, x: f64) -> f64 {
        self.parts(x).0
    }
    /// Exact mass of x < 0 at β = 1: w·Φ(μ/s) + (1−w)·Φ(−μ/s).
    fn left_mass_exact(&self) -> f64 {
        let phi = |t: f64| fab_core::test_utils::normal_cdf(t);
        self.w * phi(self.mu / self.s) + (1.0 - self.w) * phi(-self.mu / self.s)
    }
}

impl LogDensity for Mixture {
    fn dim(&self) -> usize {
        1
    }
    fn log_prob(&self, x: &Tensor) -> fab_core::Result<Tensor> {
        Ok(self.log_prob_and_grad(x)?.0)
    }
    fn log_prob_and_grad(&self, x: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        let v = to_f64_vec(x)?;
        let n = v.len();
        let (lp, g): (Vec<f64>, Vec<f64>) = v.iter().map(|&x| self.parts(x)).unzip();
        Ok((Tensor::from_vec(lp, n, &Device::Cpu)?, Tensor::from_vec(g, (n, 1), &Device::Cpu)?))
    }
}

/// Replica exchange on a two-well target with a barrier of ≈ 22 k_BT at β = 1 (μ = 2, s = 0.3):
/// every replica's mass of the left well matches quadrature of its own tempered density, so
/// replica 0 matches the target (whose left mass, 0.7, is also known in closed form). The
/// reference r (a broad Gaussian) is untempered, which also checks that
/// log π_k = β_k(log p̃ − log r) + log r is what each replica samples.
///
/// Plain single-temperature HMC with the same number of trajectories, started in the same
/// (light) well, is visibly wrong: it does not cross a 22 k_BT barrier.
#[test]
fn replica_exchange_recovers_two_well_mode_masses() {
    let mix = Mixture { w: 0.7, mu: 2.0, s: 0.3 };
    let r = Gauss { s: 3.0 };
    let left = |beta: f64| {
        let f = |x: f64| {
            let lr = -x * x / (2.0 * 9.0);
            (beta * (mix.lp(x) - lr) + lr).exp()
        };
        // Integrand < e^-100 outside [−8, 8] for every β ≥ 1/30 used here; Simpson error with
        // 80 000 intervals is far below 1e-10.
        simpson(f, -8.0, 0.0, 80_000) / simpson(f, -8.0, 8.0, 160_000)
    };
    assert!((left(1.0) - mix.left_mass_exact()).abs() < 1e-9, "quadrature self-check");

    let temps = geometric_temperatures(1.0, 30.0, 12);
    let betas = betas_from_temperatures(&temps).unwrap();
    // Target acceptance 0.9: in 1-D the acceptance stays high even when ε approaches the
    // leapfrog stability limit 2s, and near that limit leapfrog positions overshoot ~2.5× the
    // true oscillation and hop the barrier (exact, but it would make plain HMC look good);
    // at 0.9, εω ≈ 1.3 and no such hops occur.
    let cfg = ReplicaExchangeConfig { betas: betas.clone(), n_leapfrog: 5, init_step_size: 0.1, target_accept: 0.9, ..Default::default() };
    let n_chains = 64;
    let is_left = |x: f64| x < 0.0;
    // Every replica of every chain starts in the light (right) well.
    let (fr, stats) = fractions(&mix, Some(&r), cfg, n_chains, 2.0, 500, 4000, 11, is_left);

    for (k, beta) in betas.iter().enumerate() {
        let truth = left(*beta);
        let (m, sd) = mean_sd(&fr[k]);
        let se = sd / (n_chains as f64).sqrt();
        // 64 independent chains: (m − truth)/se ~ t with 63 d.o.f.; P(|t| > 4.5) ≈ 3e-5 per
        // replica, ≈ 3.6e-4 for all 12 replicas together.
        assert!((m - truth).abs() < 4.5 * se, "replica {k} (β = {beta:.4}): left mass {m:.4} ± {se:.4}, quadrature {truth:.4}");
        if k == 0 {
            // The test is only meaningful if the error bar is small against the answer.
            assert!(se < 0.02, "standard error {se} too large to test anything");
        }
    }
    // The ladder mixes: all swap rates are substantial and configurations travel end to end.
    for (i, s) in stats.swap_rates().iter().enumerate() {
        assert!(*s > 0.2 && *s < 1.0, "swap rate of pair {i}: {s}");
    }
    assert!(stats.round_trips > 100, "only {} round trips", stats.round_trips);
    for a in stats.acceptance_rates() {
        assert!(a > 0.4, "HMC acceptance {a}");
    }
    assert!(stats.hmc_non_finite.iter().all(|n| *n == 0));

    // Plain HMC at β = 1, same number of trajectories per chain (12 replicas × 4500 sweeps).
    let plain = ReplicaExchangeConfig { betas: vec![1.0], n_leapfrog: 5, init_step_size: 0.1, target_accept: 0.9, ..Default::default() };
    let (pf, _) = fractions(&mix, Some(&r), plain, n_chains, 2.0, 500, 12 * 4500 - 500, 12, is_left);
    let (pm, _) = mean_sd(&pf[0]);
    // Crossing a 22 k_BT barrier needs a momentum beyond 6.6 standard deviations (p ≈ 4e-11
    // per trajectory), so plain HMC stays in the right well and estimates ≈ 0 instead of 0.7.
    assert!(left(1.0) - pm > 0.5, "plain HMC was not worse: {pm:.3} vs {:.3}", left(1.0));
}

/// Without a reference, replica k samples p̃^β_k: its left mass matches quadrature of p̃^β_k.
#[test]
fn replica_exchange_without_reference_samples_powers_of_the_target() {
    let dw = DoubleWell { h: 6.0, c: 1.0 };
    let betas = vec![1.0, 0.6, 0.35, 0.2];
    let cfg = ReplicaExchangeConfig { betas: betas.clone(), n_leapfrog: 5, ..Default::default() };
    let n_chains = 48;
    let (fr, stats) = fractions(&dw, None, cfg, n_chains, 1.0, 300, 3000, 21, |x| x < 0.0);
    for (k, beta) in betas.iter().enumerate() {
        let truth = left_mass(&dw, None, *beta);
        let (m, sd) = mean_sd(&fr[k]);
        let se = sd / (n_chains as f64).sqrt();
        // 48 independent chains, t with 47 d.o.f.: P(|t| > 4.5) ≈ 4e-5 per replica, ≈ 2e-4 for 4.
        assert!((m - truth).abs() < 4.5 * se, "replica {k}: {m:.4} ± {se:.4} vs {truth:.4}");
        assert!(se < 0.03, "standard error {se} too large to test anything");
    }
    assert!(stats.round_trips > 50);
}

/// Gauss-Legendre-free 2-D expectation by the midpoint rule: E[min(1, exp(Δβ(u(x1) − u(x0))))]
/// with x0 ~ N(0, 1/β0), x1 ~ N(0, 1/β1) and u = −x²/2 (standard-normal target).
fn expected_swap_prob(b0: f64, b1: f64) -> f64 {
    let (s0, s1) = (1.0 / b0.sqrt(), 1.0 / b1.sqrt());
    let m = 1600;
    let (l0, l1) = (9.0 * s0, 9.0 * s1);
    let (h0, h1) = (2.0 * l0 / m as f64, 2.0 * l1 / m as f64);
    let pdf = |x: f64, s: f64| (-(x * x) / (2.0 * s * s)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt());
    let mut e = 0.0;
    for i in 0..m {
        let x0 = -l0 + (i as f64 + 0.5) * h0;
        let p0 = pdf(x0, s0);
        for j in 0..m {
            let x1 = -l1 + (j as f64 + 0.5) * h1;
            let la = swap_log_acceptance(b0, b1, -x0 * x0 / 2.0, -x1 * x1 / 2.0);
            e += p0 * pdf(x1, s1) * la.exp();
        }
    }
    e * h0 * h1
}

/// At stationarity the pair (replica 0, replica 1) is distributed as the product of the tempered
/// marginals, so the mean swap acceptance probability must equal its quadrature value. Chains
/// start from exact samples of each replica's marginal (no burn-in bias); the standard error
/// comes from 40 independent samplers.
#[test]
fn swap_rate_matches_quadrature_for_gaussian_replicas() {
    let target = fab_core::FnDensity::new(1, |x: &Tensor| (x.sqr()? * -0.5)?.squeeze(1));
    let betas = vec![1.0, 0.3];
    let truth = expected_swap_prob(betas[0], betas[1]);
    let n_chains = 16;
    let mut rates = Vec::new();
    let mut rng = seeded_rng(5, 0);
    for s in 0..40 {
        let z = fab_core::rng::normal_vec(&mut rng, 2 * n_chains);
        let x0: Vec<f64> = z.iter().enumerate().map(|(i, v)| v / betas[i % 2].sqrt()).collect();
        let x0 = Tensor::from_vec(x0, (2 * n_chains, 1), &Device::Cpu).unwrap();
        let cfg = ReplicaExchangeConfig { betas: betas.clone(), n_leapfrog: 3, init_step_size: 0.8, ..Default::default() };
        let mut re = ReplicaExchange::new(&target, None, cfg, &x0).unwrap();
        let mut srng = seeded_rng(100 + s, 1);
        re.run(400, 1, &mut srng, |_, _| Ok(())).unwrap();
        rates.push(re.stats().mean_swap_accept_probs()[0]);
        assert_eq!(re.stats().swap_attempts[0], 200 * n_chains as u64, "pair 0 is tried on even sweeps only");
    }
    let (m, sd) = mean_sd(&rates);
    let se = sd / (rates.len() as f64).sqrt();
    // 40 independent samplers: t with 39 d.o.f., P(|t| > 4) ≈ 3e-4.
    assert!((m - truth).abs() < 4.0 * se, "swap prob {m:.4} ± {se:.4}, quadrature {truth:.4}");
    assert!(se < 0.01 && truth > 0.3 && truth < 0.9, "se {se}, truth {truth}");
}

/// The swap rule on hand-computed values: log α = min(0, (β_i − β_j)(u_j − u_i)).
#[test]
fn swap_acceptance_hand_values() {
    // (1 − 0.5)(−8 − (−10)) = +1 ⇒ accept surely.
    assert_eq!(swap_log_acceptance(1.0, 0.5, -10.0, -8.0), 0.0);
    // (1 − 0.5)(−10 − (−8)) = −1.
    assert!((swap_log_acceptance(1.0, 0.5, -8.0, -10.0) + 1.0).abs() < 1e-15);
    // (0.8 − 0.2)(−3 − 2) = −3; symmetric in exchanging both pairs of arguments.
    assert!((swap_log_acceptance(0.8, 0.2, 2.0, -3.0) + 3.0).abs() < 1e-15);
    assert!((swap_log_acceptance(0.2, 0.8, -3.0, 2.0) + 3.0).abs() < 1e-15);
    // Equal temperatures: always accept.
    assert_eq!(swap_log_acceptance(0.5, 0.5, 1.0, 100.0), 0.0);
    // An invalid configuration in the hotter replica is never moved to the colder one.
    assert_eq!(swap_log_acceptance(1.0, 0.5, -1.0, f64::NEG_INFINITY), f64::NEG_INFINITY);
    assert_eq!(swap_log_acceptance(1.0, 0.5, f64::NAN, 0.0), f64::NEG_INFINITY);
    assert_eq!(swap_log_acceptance(1.0, 0.5, f64::NEG_INFINITY, f64::NEG_INFINITY), f64::NEG_INFINITY);
}

/// Swap mechanics: with tiny HMC steps the positions barely move, and a swap whose acceptance
/// probability is 1 must exchange the configurations (and their cached values) of exactly the
/// pairs of the sweep's parity.
#[test]
fn swaps_exchange_configurations_of_the_right_pairs() {
    let target = fab_core::FnDensity::new(1, |x: &Tensor| (x.sqr()? * -0.5)?.squeeze(1));
    // Replica 0 holds x = 3 (u = −4.5), replica 1 x = 0 (u = 0), replica 2 x = 0.5.
    // Sweep 0 (even): pair (0,1) has log α = (1 − 0.5)(0 + 4.5) > 0 ⇒ swap.
    // Sweep 1 (odd): pair (1,2): replica 1 now holds x = 3, replica 2 x = 0.5:
    // (0.5 − 0.25)(−0.125 + 4.5) > 0 ⇒ swap. Pair (0,1) is not attempted.
    let x0 = Tensor::new(&[[3.0f64], [0.0], [0.5]], &Device::Cpu).unwrap();
    let cfg =
        ReplicaExchangeConfig { betas: vec![1.0, 0.5, 0.25], n_leapfrog: 1, init_step_size: 1e-12, step_jitter: 0.0, ..Default::default() };
    let mut re = ReplicaExchange::new(&target, None, cfg, &x0).unwrap();
    let mut rng = seeded_rng(0, 0);
    let info = re.sweep(false, &mut rng).unwrap();
    assert_eq!(info.swaps_accepted, vec![1, 0]);
    let pos = |re: &ReplicaExchange, k| re.positions(k).unwrap()[0];
    assert!((pos(&re, 0) - 0.0).abs() < 1e-9 && (pos(&re, 1) - 3.0).abs() < 1e-9);
    assert!((re.log_target(1).unwrap()[0] + 4.5).abs() < 1e-8, "cached values move with x");
    let info = re.sweep(false, &mut rng).unwrap();
    assert_eq!(info.swaps_accepted, vec![0, 1]);
    assert!((pos(&re, 1) - 0.5).abs() < 1e-9 && (pos(&re, 2) - 3.0).abs() < 1e-9);
    assert_eq!(re.stats().swap_attempts, vec![1, 1]);
    assert_eq!(re.stats().n_sweeps, 2);
    // 2 sweeps × 1 leapfrog step × 3 rows, plus the 3 start rows.
    assert_eq!(re.stats().n_evaluations, 9);
}

#[test]
fn ladders_and_invalid_settings() {
    let t = linear_temperatures(300.0, 50.0, 21);
    assert_eq!(t.len(), 21);
    assert!((t[20] - 1300.0).abs() < 1e-12);
    let b = betas_from_temperatures(&t).unwrap();
    assert_eq!(b[0], 1.0);
    assert!((b[20] - 300.0 / 1300.0).abs() < 1e-15);
    let g = geometric_temperatures(300.0, 1200.0, 3);
    assert!((g[1] - 600.0).abs() < 1e-9 && (g[2] - 1200.0).abs() < 1e-9);
    assert!(betas_from_temperatures(&[300.0, 300.0]).is_err());
    assert!(betas_from_temperatures(&[]).is_err());

    let ok = ReplicaExchangeConfig { betas: vec![1.0, 0.5], ..Default::default() };
    assert!(ok.validate().is_ok());
    for bad in [
        ReplicaExchangeConfig { betas: vec![0.9, 0.5], ..ok.clone() },
        ReplicaExchangeConfig { betas: vec![1.0, 1.5], ..ok.clone() },
        ReplicaExchangeConfig { betas: vec![1.0, 0.0], ..ok.clone() },
        ReplicaExchangeConfig { betas: vec![], ..ok.clone() },
        ReplicaExchangeConfig { n_leapfrog: 0, ..ok.clone() },
        ReplicaExchangeConfig { init_step_size: -1.0, ..ok.clone() },
        ReplicaExchangeConfig { step_jitter: 1.0, ..ok.clone() },
        ReplicaExchangeConfig { target_accept: 1.0, ..ok.clone() },
        ReplicaExchangeConfig { adapt_factor: 1.0, ..ok.clone() },
        ReplicaExchangeConfig { max_grad: f64::NAN, ..ok.clone() },
    ] {
        assert!(bad.validate().is_err(), "{bad:?} accepted");
    }

    let target = fab_core::FnDensity::new(1, |x: &Tensor| {
        // −∞ for x > 10, a standard normal elsewhere.
        let lp = (x.sqr()? * -0.5)?.squeeze(1)?;
        let inf = Tensor::full(f64::NEG_INFINITY, lp.shape(), lp.device())?;
        x.squeeze(1)?.gt(10.0)?.where_cond(&inf, &lp)
    });
    let x3 = Tensor::zeros((3, 1), DType::F64, &Device::Cpu).unwrap();
    assert!(matches!(ReplicaExchange::new(&target, None, ok.clone(), &x3), Err(McmcError::InvalidConfig(_))));
    let xbad = Tensor::new(&[[0.0f64], [11.0]], &Device::Cpu).unwrap();
    assert!(matches!(ReplicaExchange::new(&target, None, ok.clone(), &xbad), Err(McmcError::NonFiniteStart { row: 1 })));
    let two_d = fab_core::FnDensity::new(2, |x: &Tensor| x.sum(1));
    let x2 = Tensor::zeros((2, 1), DType::F64, &Device::Cpu).unwrap();
    assert!(ReplicaExchange::new(&target, Some(&two_d), ok.clone(), &x2).is_err());
    let mut re = ReplicaExchange::new(&target, None, ok, &x2).unwrap();
    assert!(re.positions(2).is_err());
    assert!(re.set_step_sizes(&[0.1]).is_err());
    assert!(re.set_step_sizes(&[0.1, f64::INFINITY]).is_err());
    let mut rng = seeded_rng(0, 0);
    assert!(re.run(3, 0, &mut rng, |_, _| Ok(())).is_err());
}

/// Same seed ⇒ same trajectory; production sweeps keep the step sizes frozen; burn-in adapts
/// them and clears the statistics.
#[test]
fn reproducible_and_adaptation_only_in_burn_in() {
    let dw = DoubleWell { h: 3.0, c: 0.0 };
    let cfg = ReplicaExchangeConfig { betas: vec![1.0, 0.5], init_step_size: 0.6, ..Default::default() };
    let x0 = Tensor::new(&[[1.0f64], [1.0], [-1.0], [-1.0]], &Device::Cpu).unwrap();
    let go = |seed| {
        let mut re = ReplicaExchange::new(&dw, None, cfg.clone(), &x0).unwrap();
        let mut rng = seeded_rng(seed, 0);
        re.burn_in(150, &mut rng).unwrap();
        assert_eq!(re.stats().n_sweeps, 0, "burn-in statistics are cleared");
        let eps = re.step_sizes();
        // The well at x = ±1 has curvature 8h = 24 (σ ≈ 0.2): 0.6 is too large for 5 steps.
        assert!(eps[0] < 0.6, "an oversized step must shrink during burn-in: {eps:?}");
        let out = re.sample_cold(30, 2, &mut rng).unwrap();
        assert_eq!(re.step_sizes(), eps, "production sweeps must not adapt");
        assert_eq!(out.len(), 30 * 2);
        assert_eq!(re.stats().n_sweeps, 60);
        assert!(re.stats().acceptance_rates()[0] > 0.3, "{:?}", re.stats().acceptance_rates());
        out
    };
    assert_eq!(go(3), go(3));
    assert_ne!(go(3), go(4));
}

/// Alanine dipeptide in flow coordinates: a short run from the minimum-energy configuration
/// stays finite, accepts moves at every temperature and keeps the configuration L-form.
#[test]
fn aldp_flow_target_smoke() {
    use fab_targets::aldp::{is_l_form, AldpTarget, FLOW_DIM};
    let target = AldpTarget::default();
    let temps = linear_temperatures(300.0, 150.0, 3);
    let cfg = ReplicaExchangeConfig {
        betas: betas_from_temperatures(&temps).unwrap(),
        n_leapfrog: 5,
        init_step_size: 0.05,
        ..Default::default()
    };
    let x0 = Tensor::zeros((2 * 3, FLOW_DIM), DType::F64, &Device::Cpu).unwrap();
    let mut re = ReplicaExchange::new(&target, None, cfg, &x0).unwrap();
    let mut rng = seeded_rng(1, 0);
    re.burn_in(20, &mut rng).unwrap();
    re.run(20, 1, &mut rng, |_, _| Ok(())).unwrap();
    let st = re.stats();
    assert!(st.acceptance_rates().iter().all(|a| *a > 0.2), "{:?}", st.acceptance_rates());
    assert!(re.log_target(0).unwrap().iter().all(|v| v.is_finite()));
    for z in re.positions(0).unwrap().chunks(FLOW_DIM) {
        assert!(is_l_form(z).unwrap());
    }
}
