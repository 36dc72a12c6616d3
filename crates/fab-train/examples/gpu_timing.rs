//! Wall-clock timings of the paper-scale workloads on one device, for `scripts/gpu-check.sh`
//! (which runs it once with `cpu` and once with `cuda` and prints the two side by side).
//!
//! `cargo run --release -p fab-train --example gpu_timing [--features cuda] -- DEVICE [case…]`
//! DEVICE: `cpu`, `cuda` or `cuda:N`. Cases (default all): `gmm_iteration` (one FAB + buffer
//! iteration of experiments/gmm/paper.toml), `mw_ais` (one Many Well AIS pass, B = 2048, with the
//! paper's Many Well flow), `aldp_iteration` (experiments/aldp/paper.toml at B = 1024: one AIS
//! pass plus 8 flow gradient steps, timed separately and added), `aldp_transfer` (the host force
//! field on B = 1024 configurations, value and gradient, and the copies to and from the device
//! that each such evaluation costs).
//! Output: one line per case, `TIMING <case> <device> <median ms> <runs>`, plus notes on stderr.

use std::time::Instant;

use candle_core::{DType, Device};
use fab_ais::{Ais, AisConfig};
use fab_core::OnDevice;
use fab_flows::RealNvpConfig;
use fab_sampler::Sampler;
use fab_targets::many_well::ManyWell;
use fab_train::{ExperimentConfig, FabSampler};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Median wall milliseconds of `f` after one warm-up call: at most `max_runs` runs, and no new
/// run once `budget_s` seconds have been spent.
fn time(case: &str, device: &str, max_runs: usize, budget_s: f64, mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    f();
    eprintln!("{case} on {device}: warm-up {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
    let start = Instant::now();
    let mut v = Vec::new();
    while v.len() < max_runs && (v.is_empty() || start.elapsed().as_secs_f64() < budget_s) {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    println!("TIMING {case} {device} {median:.2} {}", v.len());
    median
}

fn config(toml: &str, device: &str, extra: &[&str]) -> ExperimentConfig {
    let mut ov = vec![format!("device=\"{device}\"")];
    ov.extend(extra.iter().map(|s| s.to_string()));
    ExperimentConfig::from_toml_with_overrides(toml, &ov).unwrap_or_else(|e| panic!("config: {e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(device_name) = args.first().cloned() else {
        eprintln!("usage: gpu_timing DEVICE [gmm_iteration|mw_ais|aldp_transfer|aldp_iteration…]");
        std::process::exit(2);
    };
    let cases = &args[1..];
    let want = |c: &str| cases.is_empty() || cases.iter().any(|a| a == c);
    let device =
        config(include_str!("../../../experiments/gmm/paper.toml"), &device_name, &[]).open_device().unwrap_or_else(|e| panic!("{e}"));
    if device.is_cuda() {
        // Fixed seeds; candle's own RNG is not used by fab-rs (all noise is drawn on the host).
        eprintln!("device {device_name}: CUDA");
    }

    if want("gmm_iteration") {
        let cfg = config(include_str!("../../../experiments/gmm/paper.toml"), &device_name, &[]);
        let mut trainer = FabSampler::new(cfg).expect("sampler");
        trainer.fill_buffer().expect("fill");
        for _ in 0..20 {
            trainer.step().expect("step");
        }
        time("gmm_iteration", &device_name, 100, 20.0, || {
            trainer.step().expect("step");
        });
    }

    if want("mw_ais") {
        let flow = RealNvpConfig::many_well().build(0, DType::F64, &device).expect("flow");
        // Small random parameters so that the flow is not the identity.
        let mut rng = fab_core::seeded_rng(1, 99);
        for v in flow.vars() {
            let noise = fab_core::rng::randn(&mut rng, v.shape(), v.dtype(), v.device()).expect("noise");
            v.set(&(v.as_tensor() + (noise * 0.01).expect("scale")).expect("add")).expect("set");
        }
        let target = ManyWell::new(32, DType::F64, &device).expect("target");
        // As in training: Many Well is device-agnostic, so it is evaluated beside the flow.
        let p = OnDevice::for_points_on(&target, &device);
        let mut ais = Ais::new(AisConfig::many_well()).expect("ais");
        let mut rng = fab_core::seeded_rng(0, 1);
        time("mw_ais", &device_name, 5, 30.0, || drop(ais.run(&flow, &p, 2048, &mut rng).expect("ais")));
    }

    if want("aldp_transfer") {
        // The force field stays on the host: per target evaluation of a batch (B = 1024, value
        // and gradient), points [B, 60] go to the host and values [B] and gradients [B, 60] come
        // back. Timed: the evaluation itself, and the copies (on a GPU the two PCIe transfers; on
        // the CPU build the host-side copies into and out of tensors that any device path adds).
        let cfg = config(include_str!("../../../experiments/aldp/paper.toml"), &device_name, &[]);
        let b = cfg.train.batch_size;
        let trainer = FabSampler::new(cfg).expect("sampler");
        let target = trainer.target();
        let mut rng = fab_core::seeded_rng(0, 3);
        let (x_dev, _) = fab_core::Proposal::sample_and_log_prob(trainer.flow(), b, &mut rng).expect("flow samples");
        let x_host = x_dev.to_device(&Device::Cpu).expect("host");
        time("aldp_target_eval", &device_name, 20, 20.0, || drop(target.density().log_prob_and_grad(&x_host).expect("force field")));
        let (v, g) = target.density().log_prob_and_grad(&x_host).expect("force field");
        time("aldp_transfer", &device_name, 200, 10.0, || {
            if device.is_cpu() {
                let copy = |t: &candle_core::Tensor| {
                    let h = fab_core::to_f64_vec(t).expect("to host");
                    candle_core::Tensor::from_vec(h, t.shape(), &Device::Cpu).expect("from host")
                };
                drop((copy(&x_dev), copy(&v), copy(&g)));
            } else {
                let there = x_dev.to_device(&Device::Cpu).expect("to host");
                drop((there, v.to_device(&device).expect("values back"), g.to_device(&device).expect("gradients back")));
            }
        });
    }

    if want("aldp_iteration") {
        // One paper iteration is one AIS pass (B = 1024, 8 levels × 4 leapfrog steps) plus
        // train.n_updates_per_ais = 8 gradient steps on buffer batches of 1024. Timed as those
        // parts (the buffer would need 8 AIS passes to fill before the first real iteration).
        let cfg = config(include_str!("../../../experiments/aldp/paper.toml"), &device_name, &[]);
        let (b, k) = (cfg.train.batch_size, cfg.train.n_updates_per_ais);
        let trainer = FabSampler::new(cfg.clone()).expect("sampler");
        let target = trainer.target();
        let p = OnDevice::new(target.density(), Device::Cpu);
        let mut ais = Ais::new(cfg.ais.clone()).expect("ais");
        let mut rng = fab_core::seeded_rng(0, 2);
        let x = ais.run(trainer.flow(), &p, b, &mut rng).expect("ais").x;
        let coef = vec![-1.0 / x.dim(0).expect("rows") as f64; x.dim(0).expect("rows")];
        let t_ais = time("aldp_ais_pass", &device_name, 3, 60.0, || drop(ais.run(trainer.flow(), &p, b, &mut rng).expect("ais")));
        let t_grad = time("aldp_grad_step", &device_name, 5, 30.0, || drop(trainer.flow().log_prob_backward(&x, &coef).expect("backward")));
        println!("TIMING aldp_iteration {device_name} {:.2} composite", t_ais + k as f64 * t_grad);
    }
}
