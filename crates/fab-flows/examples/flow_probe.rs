//! Probe: time one flow operation repeatedly (for perf profiling).
//! `flow_probe <gmm|mw|aldp> <backward|grad_x|sample> <f64|f32> <batch> <reps>`
use std::time::Instant;

use candle_core::{DType, Device};
use fab_core::{LogDensity, Proposal};
use fab_flows::{CircularNsfConfig, RealNvpConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let dtype = if a[3] == "f32" { DType::F32 } else { DType::F64 };
    let b: usize = a[4].parse().unwrap();
    let reps: usize = a[5].parse().unwrap();
    let model = match a[1].as_str() {
        "gmm" => RealNvpConfig::gmm().build(0, dtype, &Device::Cpu).unwrap(),
        "mw" => RealNvpConfig::many_well().build(0, dtype, &Device::Cpu).unwrap(),
        _ => CircularNsfConfig::aldp().build(0, dtype, &Device::Cpu).unwrap(),
    };
    let d = model.base().dim();
    let mut rng = fab_core::seeded_rng(1, 0);
    let x = fab_core::rng::randn(&mut rng, (b, d), dtype, &Device::Cpu).unwrap();
    let coef = vec![-1.0 / b as f64; b];
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        match a[2].as_str() {
            "backward" => drop(model.log_prob_backward(&x, &coef).unwrap()),
            "grad_x" => drop(model.log_prob_and_grad(&x).unwrap()),
            _ => drop(model.sample_and_log_prob(b, &mut rng).unwrap()),
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!("{} {} {} B={b}: median {:.2} ms (min {:.2})", a[1], a[2], a[3], 1e3 * times[times.len() / 2], 1e3 * times[0]);
}
