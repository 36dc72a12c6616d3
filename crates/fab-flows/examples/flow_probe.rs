//! Probe: time one flow operation repeatedly (for perf profiling).
//! `flow_probe <gmm|mw|aldp|aldp128> <backward|grad_x|sample> <f64|f32> <batch> <reps>`
//!
//! Prints the median wall time and the median on-CPU time of the calling thread (from
//! /proc/thread-self/schedstat), which is robust to other processes sharing the cores when the
//! probe runs single-threaded (RAYON_NUM_THREADS=1).
use std::time::Instant;

use candle_core::{DType, Device};
use fab_core::{LogDensity, Proposal};
use fab_flows::{CircularNsfConfig, RealNvpConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let parsed = (a.len() == 6).then(|| (a[4].parse::<usize>().ok(), a[5].parse::<usize>().ok()));
    if !matches!(parsed, Some((Some(_), Some(_)))) {
        eprintln!("usage: flow_probe <gmm|mw|aldp|aldp128> <backward|grad_x|sample> <f64|f32> <batch> <reps>");
        std::process::exit(2);
    }
    let dtype = if a[3] == "f32" { DType::F32 } else { DType::F64 };
    let b: usize = a[4].parse().unwrap();
    let reps: usize = a[5].parse().unwrap();
    let model = match a[1].as_str() {
        "gmm" => RealNvpConfig::gmm().build(0, dtype, &Device::Cpu).unwrap(),
        "mw" => RealNvpConfig::many_well().build(0, dtype, &Device::Cpu).unwrap(),
        "aldp128" => CircularNsfConfig { hidden: 128, ..CircularNsfConfig::aldp() }.build(0, dtype, &Device::Cpu).unwrap(),
        _ => CircularNsfConfig::aldp().build(0, dtype, &Device::Cpu).unwrap(),
    };
    let d = model.base().dim();
    let mut rng = fab_core::seeded_rng(1, 0);
    let x = fab_core::rng::randn(&mut rng, (b, d), dtype, &Device::Cpu).unwrap();
    let coef = vec![-1.0 / b as f64; b];
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..reps {
        let c0 = thread_cpu_ns();
        let t = Instant::now();
        match a[2].as_str() {
            "backward" => drop(model.log_prob_backward(&x, &coef).unwrap()),
            "grad_x" => drop(model.log_prob_and_grad(&x).unwrap()),
            _ => drop(model.sample_and_log_prob(b, &mut rng).unwrap()),
        }
        times.push(t.elapsed().as_secs_f64());
        cpu.push((thread_cpu_ns() - c0) as f64 * 1e-9);
    }
    times.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    println!(
        "{} {} {} B={b}: wall median {:.2} ms (min {:.2}); thread CPU median {:.2} ms",
        a[1],
        a[2],
        a[3],
        1e3 * times[times.len() / 2],
        1e3 * times[0],
        1e3 * cpu[cpu.len() / 2]
    );
}

/// Nanoseconds this thread has spent on a CPU (Linux).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
