//! Times whole training iterations of a diffusion-sampler configuration through the sampler
//! core's `step` (the loop `fab train` runs, without its periodic evaluation), for the
//! side-by-side harness `benches/diffusion-vs-reference/run.sh`.
//!
//! ```text
//! cargo run --release -p fab-diffusion --example diffusion_iteration_timing -- \
//!     [--config FILE.toml] [--set key=value]... [--iterations N] [--warmup W] [--threads K]
//! ```
//!
//! Without `--config` it times the harness's row: `experiments/diffusion/manywell-tb.toml`
//! (Many Well 32-D, B = 300, T = 100, PIS network of width 64, forward TB, f32) with the
//! Langevin parametrisation switched on. Prints `ms_per_iteration <median>`, then the mean and
//! the loss of the last iteration.
use std::time::Instant;

use fab_diffusion::{DiffusionConfig, DiffusionSampler};
use fab_sampler::{FamilyConfig, Sampler};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG: &str = include_str!("../../../experiments/diffusion/manywell-tb.toml");

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    // As `fab train` does (`fab_core::alloc::keep_freed_memory`).
    fab_core::alloc::keep_freed_memory();
    let mut config_text = None;
    let mut sets = Vec::new();
    let (mut iterations, mut warmup, mut threads) = (20usize, 3usize, 0usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--config" => {
                let path = value("--config")?;
                config_text = Some(std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?);
            }
            "--set" => sets.push(value("--set")?),
            "--iterations" => iterations = value("--iterations")?.parse().map_err(|e| format!("--iterations: {e}"))?,
            "--warmup" => warmup = value("--warmup")?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--threads" => threads = value("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if iterations == 0 {
        return Err("--iterations must be ≥ 1".into());
    }
    let text = match config_text {
        Some(t) => t,
        None => {
            sets.insert(0, "process.langevin=true".into());
            DEFAULT_CONFIG.to_string()
        }
    };
    let config = DiffusionConfig::parse(&text, &sets).map_err(|e| e.to_string())?;
    // A pool of its own (0: rayon's global one) for the chunks of `train.path_chunks`.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
    pool.install(|| time(config, iterations, warmup))
}

fn time(config: DiffusionConfig, iterations: usize, warmup: usize) -> Result<(), String> {
    let mut sampler = DiffusionSampler::new(config).map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(iterations);
    let mut last_loss = f64::NAN;
    for i in 0..warmup + iterations {
        let t0 = Instant::now();
        let report = sampler.step().map_err(|e| e.to_string())?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        last_loss = report.loss;
        if i >= warmup {
            times.push(ms);
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 { times[n / 2] } else { 0.5 * (times[n / 2 - 1] + times[n / 2]) };
    println!("ms_per_iteration {median:.3}");
    println!("mean_ms {mean:.3}");
    println!("final_loss {last_loss:.4}");
    Ok(())
}
