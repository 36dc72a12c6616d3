//! Times training iterations of the grid agents for the side-by-side harness
//! `benches/gflownet-vs-reference/run.sh`: a fresh initialisation, `--warmup` untimed iterations,
//! then `--iterations` timed ones; prints `ms_per_iteration <median>` and the mean number of
//! actions per trajectory (the workload, which grows as the policy learns).
//!
//! `cargo run --release -p fab-gflownet --example iteration_timing -- --agent tb --ndim 2 --horizon 64 --iterations 200 --warmup 50`

use std::time::Instant;

// The allocator of the `fab` binary, so the timing is what `fab train` does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use fab_gflownet::GflowConfig;
use fab_sampler::{FamilyConfig, Sampler};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str, default: &str| -> String {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
    };
    let agent = get("--agent", "tb");
    let (ndim, horizon) = (get("--ndim", "2"), get("--horizon", "64"));
    let iterations: usize = get("--iterations", "200").parse().expect("--iterations N");
    let warmup: usize = get("--warmup", "50").parse().expect("--warmup N");
    let seed = get("--seed", "0");
    let overrides = vec![
        format!("agent.kind=\"{agent}\""),
        format!("env.ndim={ndim}"),
        format!("env.horizon={horizon}"),
        format!("seed={seed}"),
        format!("train.n_iterations={}", warmup + iterations),
    ];
    let cfg = match GflowConfig::parse("family = \"gflownet\"", &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let mut s = cfg.build().expect("build");
    for _ in 0..warmup {
        s.step().expect("step");
    }
    let mut times = Vec::with_capacity(iterations);
    let mut actions = 0usize;
    let mut trajs = 0usize;
    for _ in 0..iterations {
        let t0 = Instant::now();
        s.step().expect("step");
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        let last = s.last_batch_shape();
        actions += last.0;
        trajs += last.1;
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!("ms_per_iteration {median:.4}");
    println!("mean_ms {mean:.4} min_ms {:.4} max_ms {:.4}", times[0], times[times.len() - 1]);
    println!("mean_actions_per_trajectory {:.2}", actions as f64 / trajs.max(1) as f64);
    println!("agent {agent} ndim {ndim} horizon {horizon} warmup {warmup} iterations {iterations} (median over iterations)");
}
