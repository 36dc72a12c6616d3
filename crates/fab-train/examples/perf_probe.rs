//! The timings of `docs/PERFORMANCE.md`, measured as *process CPU time* (the time all of the
//! process's threads spent on a core, `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`) as well as
//! wall time. CPU time is what a dedicated core would take; it is robust to other
//! jobs sharing the machine, which wall time is not.
//!
//! `RAYON_NUM_THREADS=1 cargo run --release -p fab-train --example perf_probe [case…]`
//! Cases: gmm_flow mw_flow mw_flow_f32 mw_flow_candle gmm_flow_candle mw_ais mw_ais_f32 gmm_iteration aldp_flow aldp_flow_b512
//! aldp_iteration (`aldp-cpu`) aldp_iteration_b256 (`aldp-cpu` until 2026-12-06) mw_iteration all. Thread scaling: run a case with `RAYON_NUM_THREADS=1` and `=2` and compare the wall medians.

use std::time::Instant;

use candle_core::{DType, Device};
use fab_ais::{Ais, AisConfig};
use fab_core::{LogDensity, Proposal};
use fab_flows::{Backend, CircularNsfConfig, FlowModel, RealNvpConfig};
use fab_sampler::Sampler;
use fab_targets::many_well::ManyWell;
use fab_train::{ExperimentConfig, FabSampler};

mod common;
use common::process_cpu_ns;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Median wall and CPU milliseconds of `reps` calls of `f` (after one warm-up call); the
/// environment variable `PROBE_REPS` overrides `reps`.
fn time(name: &str, reps: usize, mut f: impl FnMut()) {
    let reps = std::env::var("PROBE_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(reps);
    f();
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let c0 = process_cpu_ns();
        let t = Instant::now();
        f();
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push((process_cpu_ns() - c0) as f64 * 1e-6);
    }
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    println!("{name:<48} cpu median {:>10.2} ms   wall median {:>10.2} ms   (n = {reps})", cpu[reps / 2], wall[reps / 2]);
}

fn perturbed(cfg: RealNvpConfig, dtype: DType) -> FlowModel {
    common::perturb(cfg.build(0, dtype, &Device::Cpu).expect("flow"))
}

fn flow_ops(label: &str, model: &FlowModel, b: usize, reps: usize) {
    let d = model.base().dim();
    let mut rng = fab_core::seeded_rng(2, 0);
    let x = fab_core::rng::randn(&mut rng, (b, d), model.dtype(), &Device::Cpu).expect("x");
    let coef = vec![-1.0 / b as f64; b];
    time(&format!("{label} log q + backward (B={b})"), reps, || drop(model.log_prob_backward(&x, &coef).expect("bwd")));
    time(&format!("{label} sample + log q (B={b})"), reps, || drop(model.sample_and_log_prob(b, &mut rng).expect("sample")));
    time(&format!("{label} log q + grad x (B={b})"), reps, || drop(model.log_prob_and_grad(&x).expect("grad")));
}

fn main() {
    common::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = args.is_empty() || args.iter().any(|a| a == "all");
    let want = |c: &str| all || args.iter().any(|a| a == c);
    if want("gmm_flow") {
        flow_ops("GMM flow f64", &perturbed(RealNvpConfig::gmm(), DType::F64), 128, 30);
    }
    if want("gmm_flow_candle") {
        let mut m = perturbed(RealNvpConfig::gmm(), DType::F64);
        m.set_backend(Backend::Candle);
        flow_ops("GMM flow f64, candle autodiff", &m, 128, 30);
    }
    if want("mw_flow") {
        flow_ops("Many Well flow f64", &perturbed(RealNvpConfig::many_well(), DType::F64), 2048, 5);
    }
    if want("mw_flow_f32") {
        flow_ops("Many Well flow f32", &perturbed(RealNvpConfig::many_well(), DType::F32), 2048, 5);
    }
    if want("mw_flow_candle") {
        let mut m = perturbed(RealNvpConfig::many_well(), DType::F64);
        m.set_backend(Backend::Candle);
        flow_ops("Many Well flow f64, candle autodiff", &m, 2048, 3);
    }
    for (case, dtype) in [("mw_ais", DType::F64), ("mw_ais_f32", DType::F32)] {
        if want(case) {
            let flow = perturbed(RealNvpConfig::many_well(), dtype);
            let target = ManyWell::new(32, dtype, &Device::Cpu).expect("target");
            let mut ais = Ais::new(AisConfig::many_well()).expect("ais");
            let mut rng = fab_core::seeded_rng(0, 1);
            time(&format!("Many Well AIS pass {dtype:?} (B=2048, 4 levels, HMC L=5)"), 3, || {
                drop(ais.run(&flow, &target, 2048, &mut rng).expect("ais"))
            });
        }
    }
    if want("gmm_iteration") {
        let cfg = ExperimentConfig::from_toml_with_overrides(include_str!("../../../experiments/gmm/paper.toml"), &[]).expect("config");
        let mut trainer = FabSampler::new(cfg).expect("sampler");
        trainer.fill_buffer().expect("fill");
        for _ in 0..200 {
            trainer.step().expect("step");
        }
        time("GMM FAB+buffer iteration f64 (B=128, L=4)", 200, || {
            trainer.step().expect("step");
        });
    }
    if want("aldp_iteration") {
        fab_iteration("ALDP", include_str!("../../../experiments/aldp/cpu.toml"));
    }
    if want("aldp_iteration_b256") {
        fab_iteration("ALDP (B=256, 16 steps)", include_str!("../../../experiments/aldp/cpu-b256.toml"));
    }
    if want("mw_iteration") {
        fab_iteration("Many Well", include_str!("../../../experiments/many_well/cpu.toml"));
    }
    if want("aldp_flow") {
        let m = CircularNsfConfig::aldp().build(0, DType::F64, &Device::Cpu).expect("flow");
        flow_ops("ALDP flow f64 (hidden 256)", &m, 256, 3);
        let m = CircularNsfConfig { hidden: 128, ..CircularNsfConfig::aldp() }.build(0, DType::F32, &Device::Cpu).expect("flow");
        flow_ops("ALDP flow f32 (hidden 128)", &m, 256, 3);
    }
    if want("aldp_flow_b512") {
        // The flow of `aldp-cpu` at its batch (parameters perturbed off the identity start).
        let m = CircularNsfConfig { hidden: 128, ..CircularNsfConfig::aldp() }.build(0, DType::F32, &Device::Cpu).expect("flow");
        flow_ops("ALDP flow f32 (hidden 128)", &common::perturb(m), 512, 15);
    }
}

/// One iteration of a CPU FAB configuration (`aldp-cpu` or `many-well-cpu`) and its parts at
/// the same settings: the AIS pass, the target's log p + ∇ and the flow's log q + ∇ₓ that each
/// leapfrog step evaluates, and one of the iteration's gradient steps' log q + backward. The
/// iteration is timed after filling the buffer and three warm-up iterations.
fn fab_iteration(label: &str, config_toml: &str) {
    let cfg = ExperimentConfig::from_toml_with_overrides(config_toml, &[]).expect("config");
    let (batch, updates) = (cfg.train.batch_size, cfg.train.n_updates_per_ais);
    let mut sampler = FabSampler::new(cfg).expect("sampler");
    sampler.fill_buffer().expect("fill");
    for _ in 0..3 {
        sampler.step().expect("step");
    }
    time(&format!("{label} FAB iteration (B={batch}, {updates} gradient steps)"), 7, || {
        sampler.step().expect("step");
    });
    let flow = sampler.flow();
    let target = sampler.target();
    let p = target.density();
    let mut ais = Ais::new(sampler.ais().config().clone()).expect("ais");
    let mut rng = fab_core::seeded_rng(0, 1);
    time(&format!("  AIS pass (B={batch})"), 7, || drop(ais.run(flow, p, batch, &mut rng).expect("ais")));
    let x = flow.sample_and_log_prob(batch, &mut rng).expect("x").0;
    time(&format!("    target log p + grad (B={batch})"), 15, || drop(p.log_prob_and_grad(&x).expect("p")));
    time(&format!("    flow log q + grad x (B={batch})"), 15, || drop(flow.log_prob_and_grad(&x).expect("q")));
    let coef = vec![-1.0 / batch as f64; batch];
    time(&format!("  one gradient step's log q + backward (B={batch})"), 15, || drop(flow.log_prob_backward(&x, &coef).expect("bwd")));
}
