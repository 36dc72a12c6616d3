//! One AIS pass with the proposal on a CUDA device against the same pass on the CPU.
//!
//! The comparison is independent of any device RNG: every random number of a pass (the
//! proposal's samples, HMC momenta, accept/reject uniforms) is drawn on the host from the seeded
//! stream and copied to the points' device, so both passes see identical noise and identical
//! starting points (checked below). What differs is only float64 arithmetic on the device.
//!
//! Compiled always; the tests print why they are skipped and pass when no CUDA device can be
//! opened. With `FAB_REQUIRE_CUDA=1` a missing device fails instead.

use candle_core::{DType, Device, Tensor};
use fab_ais::{Ais, AisConfig, AisOutput, HmcConfig, TransitionConfig};
use fab_core::test_utils::DiagGaussian;
use fab_core::{seeded_rng, LogDensity, OnDevice, Proposal};
use fab_targets::many_well::ManyWell;
use rand::RngCore;

/// A diagonal Gaussian proposal whose samples live on `device` (its density is evaluated with
/// candle ops on whatever device the points are on).
struct GaussianOn {
    inner: DiagGaussian,
    device: Device,
}

impl LogDensity for GaussianOn {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn log_prob(&self, x: &Tensor) -> fab_core::Result<Tensor> {
        self.inner.log_prob(x)
    }
    fn log_prob_and_grad(&self, x: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        self.inner.log_prob_and_grad(x)
    }
}

impl Proposal for GaussianOn {
    fn sample_and_log_prob(&self, n: usize, rng: &mut dyn RngCore) -> fab_core::Result<(Tensor, Tensor)> {
        let (x, lq) = self.inner.sample_and_log_prob(n, rng)?;
        Ok((x.to_device(&self.device)?, lq.to_device(&self.device)?))
    }
}

fn flat(t: &Tensor) -> Vec<f64> {
    fab_core::to_f64_vec(t).unwrap()
}

/// ‖a − b‖∞ / ‖b‖∞.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "different numbers of surviving samples");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

const DIM: usize = 8;
const BATCH: usize = 256;

/// The Many Well AIS settings (4 levels, HMC with L = 5, adaptive step sizes) with a smaller
/// initial step (0.1 instead of 1.0), so that this single pass of a fresh sampler accepts a good
/// share of its proposals and the points really move.
fn config() -> AisConfig {
    AisConfig { transition: TransitionConfig::Hmc(HmcConfig { init_step_size: 0.1, ..HmcConfig::default() }), ..AisConfig::many_well() }
}

/// One Many Well AIS pass (see [`config`]) with the proposal on `q_device` and the target
/// evaluated on `p_device`.
fn pass(q_device: &Device, p_device: &Device) -> (AisOutput, Vec<f64>, Tensor) {
    let q = GaussianOn { inner: DiagGaussian::new(vec![0.0; DIM], vec![2.0; DIM]), device: q_device.clone() };
    let target = ManyWell::new(DIM, DType::F64, p_device).unwrap();
    let p = OnDevice::new(&target, p_device.clone());
    // The starting points this seed gives (the pass draws them first from the same stream).
    let x0 = q.sample_and_log_prob(BATCH, &mut seeded_rng(7, 3)).unwrap().0;
    let mut ais = Ais::new(config()).unwrap();
    let out = ais.run(&q, &p, BATCH, &mut seeded_rng(7, 3)).unwrap();
    let steps = (0..config().n_intermediate).map(|i| ais.step_size(i).unwrap()).collect();
    (out, steps, x0)
}

/// Compares a pass with the proposal on `gpu` (and the target there too if `p_on_gpu`) with the
/// all-CPU pass.
fn compare(test: &str, gpu: &Device, p_on_gpu: bool) {
    let (cpu_out, cpu_steps, cpu_x0) = pass(&Device::Cpu, &Device::Cpu);
    let p_dev = if p_on_gpu { gpu.clone() } else { Device::Cpu };
    let (gpu_out, gpu_steps, gpu_x0) = pass(gpu, &p_dev);
    assert_eq!(gpu_out.x.device().is_cuda(), gpu.is_cuda(), "the pass did not run on the device");
    // Identical starting points: the noise is the host stream's.
    assert_eq!(flat(&gpu_x0), flat(&cpu_x0));
    assert_eq!(gpu_out.n_dropped(), cpu_out.n_dropped());

    // f64 end to end; differences are ulps of device arithmetic, grown by at most a few orders
    // of magnitude over 4 × 5 leapfrog steps. 1e-9 relative leaves ample room and still
    // catches any real divergence (a flipped accept decision moves a point by O(1)).
    let errs = [
        ("x", rel_err(&flat(&gpu_out.x), &flat(&cpu_out.x))),
        ("log w", rel_err(&gpu_out.log_w_f64, &cpu_out.log_w_f64)),
        ("log q", rel_err(&flat(&gpu_out.log_q), &flat(&cpu_out.log_q))),
        ("log p", rel_err(&flat(&gpu_out.log_p), &flat(&cpu_out.log_p))),
        ("step sizes", rel_err(&gpu_steps, &cpu_steps)),
    ];
    let acc: Vec<(f64, f64)> = gpu_out.levels.iter().zip(&cpu_out.levels).map(|(g, c)| (g.mean_accept_prob, c.mean_accept_prob)).collect();
    println!("{test}: relative errors {errs:?}; accept (GPU, CPU) per level {acc:?}");
    // The points moved: most levels accept a fair share of the proposals.
    assert!(acc.iter().all(|(_, c)| *c > 0.2), "too few HMC proposals accepted for a meaningful comparison: {acc:?}");
    for (what, e) in errs {
        assert!(e < 1e-9, "{test}: {what} differs between GPU and CPU by {e:.3e} (relative)");
    }
    assert!((gpu_out.log_z_estimate - cpu_out.log_z_estimate).abs() < 1e-9 * cpu_out.log_z_estimate.abs().max(1.0));
}

#[test]
fn many_well_ais_pass_on_gpu_matches_cpu_with_target_on_host() {
    // The trainer's arrangement: flow and AIS on the device, target on the host.
    let test = "many_well_ais_pass_on_gpu_matches_cpu_with_target_on_host";
    if let Some(gpu) = fab_core::test_utils::cuda_device_or_skip(test) {
        compare(test, &gpu, false);
    }
}

#[test]
fn many_well_ais_pass_on_gpu_matches_cpu_with_target_on_gpu() {
    let test = "many_well_ais_pass_on_gpu_matches_cpu_with_target_on_gpu";
    if let Some(gpu) = fab_core::test_utils::cuda_device_or_skip(test) {
        compare(test, &gpu, true);
    }
}

#[test]
fn harness_on_cpu() {
    // Without a GPU the comparison runs CPU against CPU (equal by construction), which checks
    // that the harness itself works and that a pass is a deterministic function of the seed.
    compare("harness_on_cpu", &Device::Cpu, true);
}
