//! The fab-rs side of `benches/vs-torch/run.sh`: times one row of the side-by-side table
//! against the PyTorch reference (fab-torch), with the models built from the paper configs
//! `experiments/gmm/paper.toml` and `experiments/many_well/paper.toml`.
//!
//! `vs_torch ROW [--warmup W] [--reps R]`, run with `RAYON_NUM_THREADS=1` on one pinned core.
//!
//! Rows (the Python side, `benches/vs-torch/torch_side.py`, has the same names and work):
//! * `gmm_backward`  GMM flow (2-D, 15 layers, hidden 80), B = 128: log q + backward of −mean log q
//! * `gmm_iteration` one FAB + prioritised-buffer iteration of the paper GMM config (B = 128, L = 4)
//! * `mw_backward`   Many Well flow (32-D, 10 layers, hidden 320), B = 2048: log q + backward
//! * `mw_sample`     Many Well flow: sample + log q, B = 2048
//! * `mw_grad_x`     Many Well flow: log q + ∇ₓ log q, B = 2048
//! * `mw_ais`        one AIS pass toward p²/q, B = 2048, 4 intermediate distributions, HMC L = 5
//! * `mw_iteration`  one FAB + buffer iteration of the paper Many Well config (AIS + 8 steps)
//!
//! Flow-operation and AIS rows use the initial flow with every parameter perturbed by
//! 0.01·N(0, 1) (so that no coupling is the identity, as `perf_probe` does); the iteration rows
//! train from the initial flow. `W` untimed calls come first, then `R` timed ones. Output: one line
//! `row ROW wall_ms <median> cpu_ms <median> n R` (cpu = CPU time of the whole process,
//! `CLOCK_PROCESS_CPUTIME_ID`), plus `#` lines with details.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use fab_ais::Ais;
use fab_core::{LogDensity, Proposal};
use fab_flows::FlowModel;
use fab_sampler::Sampler;
use fab_train::{ExperimentConfig, FabSampler};

mod common;
use common::process_cpu_ns;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GMM_TOML: &str = include_str!("../../../experiments/gmm/paper.toml");
const MW_TOML: &str = include_str!("../../../experiments/many_well/paper.toml");

/// Buffer minimum length for `mw_iteration`: the paper's 65 536 would take 32 AIS passes to fill
/// before the first timed iteration; B·L = 2048·8 = 16 384 is the least that one iteration's
/// draw (16 384 distinct entries) needs. The torch side uses the same value.
const MW_ITER_MIN_LEN: usize = 16_384;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// `warmup` untimed calls, then `reps` timed ones; prints the row line.
fn time(row: &str, warmup: usize, reps: usize, mut f: impl FnMut()) {
    for _ in 0..warmup {
        f();
    }
    let (mut wall, mut cpu) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for _ in 0..reps {
        let c0 = process_cpu_ns();
        let t = Instant::now();
        f();
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push((process_cpu_ns() - c0) as f64 * 1e-6);
    }
    println!("# {row} wall_ms_all {:?}", wall.iter().map(|v| (v * 1e3).round() / 1e3).collect::<Vec<_>>());
    println!("row {row} wall_ms {:.4} cpu_ms {:.4} n {reps}", median(wall), median(cpu));
}

fn config(toml: &str, overrides: &[&str]) -> ExperimentConfig {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    ExperimentConfig::from_toml_with_overrides(toml, &o).expect("paper config")
}

/// The config's initial flow with every parameter perturbed by 0.01·N(0, 1).
fn perturbed_flow(cfg: &ExperimentConfig) -> FlowModel {
    common::perturb(cfg.flow.build(cfg.seed, cfg.precision.dtype(), &Device::Cpu).expect("flow"))
}

fn n_params(m: &FlowModel) -> usize {
    m.vars().iter().map(|v| v.elem_count()).sum()
}

fn standard_normal(b: usize, d: usize, dtype: DType) -> Tensor {
    let mut rng = fab_core::seeded_rng(2, 0);
    fab_core::rng::randn(&mut rng, (b, d), dtype, &Device::Cpu).expect("x")
}

fn main() {
    common::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: vs_torch ROW [--warmup W] [--reps R]; ROW: gmm_backward gmm_iteration mw_backward mw_sample mw_grad_x mw_ais mw_iteration";
    let Some(row) = args.first().cloned() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mut warmup: Option<usize> = None;
    let mut reps: Option<usize> = None;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let v = it.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--warmup", Some(v)) => warmup = Some(v),
            ("--reps", Some(v)) => reps = Some(v),
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
    }
    let (warmup, reps) = (warmup.unwrap_or(1), reps.unwrap_or(5).max(1));
    println!("# fab-rs avx512f detected: {}", std::arch::is_x86_feature_detected!("avx512f"));

    match row.as_str() {
        "gmm_backward" | "mw_backward" | "mw_sample" | "mw_grad_x" => {
            let (cfg, b) = if row == "gmm_backward" { (config(GMM_TOML, &[]), 128) } else { (config(MW_TOML, &[]), 2048) };
            let flow = perturbed_flow(&cfg);
            let d = flow.base().dim();
            println!("# flow dim {d}, {} parameters, dtype {:?}, batch {b}", n_params(&flow), flow.dtype());
            let x = standard_normal(b, d, flow.dtype());
            let coef = vec![-1.0 / b as f64; b];
            let mut rng = fab_core::seeded_rng(3, 0);
            match row.as_str() {
                "mw_sample" => time(&row, warmup, reps, || drop(flow.sample_and_log_prob(b, &mut rng).expect("sample"))),
                "mw_grad_x" => time(&row, warmup, reps, || drop(flow.log_prob_and_grad(&x).expect("grad x"))),
                _ => time(&row, warmup, reps, || drop(flow.log_prob_backward(&x, &coef).expect("backward"))),
            }
        }
        "mw_ais" => {
            let cfg = config(MW_TOML, &[]);
            let flow = perturbed_flow(&cfg);
            let target = cfg.target.build(cfg.precision.dtype(), &Device::Cpu).expect("target");
            let mut ais = Ais::new(cfg.ais.clone()).expect("ais");
            let b = cfg.train.batch_size;
            println!("# AIS: {:?}, batch {b}, flow {} parameters", cfg.ais, n_params(&flow));
            let mut rng = fab_core::seeded_rng(0, 1);
            time(&row, warmup, reps, || drop(ais.run(&flow, target.density(), b, &mut rng).expect("ais")));
        }
        "gmm_iteration" | "mw_iteration" => {
            let min_len = format!("buffer.min_len={MW_ITER_MIN_LEN}");
            let cfg = if row == "gmm_iteration" { config(GMM_TOML, &[]) } else { config(MW_TOML, &[&min_len]) };
            println!(
                "# config {}: batch {}, L {}, buffer min {} max {}",
                cfg.name, cfg.train.batch_size, cfg.train.n_updates_per_ais, cfg.buffer.min_len, cfg.buffer.max_len
            );
            let mut trainer = FabSampler::new(cfg).expect("sampler");
            let t = Instant::now();
            let passes = trainer.fill_buffer().expect("fill");
            println!("# buffer filled with {passes} AIS passes in {:.1} s (untimed)", t.elapsed().as_secs_f64());
            time(&row, warmup, reps, || {
                trainer.step().expect("step");
            });
        }
        _ => {
            eprintln!("unknown row '{row}'\n{usage}");
            std::process::exit(2);
        }
    }
}
