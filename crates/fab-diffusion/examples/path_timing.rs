//! Times the pieces of one training iteration of the diffusion sampler on the 25-component
//! mixture at the paper's sizes (B = 300, T = 100, PIS network, hidden 64), on the host path:
//! the sampling walk that records the tape, the loss, the backward pass, the Adam step.
//! `cargo run --release -p fab-diffusion --example path_timing [B] [iterations]`
use std::time::Instant;

use candle_core::{DType, Device};
use fab_core::seeded_rng;
use fab_diffusion::model::{Diffusion, Learner, ModelSpec, OptimSpec, Source, Track};
use fab_diffusion::net::{Arch, NetShape};
use fab_diffusion::objectives::{loss, BatchPart, Objective};
use fab_diffusion::process::Process;
use fab_targets::TargetConfig;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let b = args.first().copied().unwrap_or(300);
    let iters = args.get(1).copied().unwrap_or(10);
    let target = TargetConfig::Gmm25 {}.build(DType::F32, &Device::Cpu).unwrap();
    let spec = ModelSpec {
        process: Process { dim: 2, n_steps: 100, t_scale: 5.0 },
        shape: NetShape { arch: Arch::Pis, dim: 2, hidden: 64, harmonics: 64, flow_head: false },
        learned_variance: false,
        langevin: None,
        clip: Some((100.0, 1e4)),
        forward_looking: false,
        dtype: DType::F32,
    };
    let mut rng = seeded_rng(0, 0);
    let mut learner =
        Learner::new(Diffusion::new(spec, &mut rng).unwrap(), OptimSpec { lr: 1e-3, lr_log_z: 0.1, weight_decay: 0.0, clip: None })
            .unwrap();
    let (mut t_walk, mut t_loss, mut t_back, mut t_step) = (0.0, 0.0, 0.0, 0.0);
    for _ in 0..iters {
        let t0 = Instant::now();
        let paths = learner.model.paths(target.density(), b, Source::Forward { exploration: 0.0 }, Track::Tape, false, &mut rng).unwrap();
        let t1 = Instant::now();
        let l = loss(Objective::Tb, &paths, &paths.log_r, learner.model.log_z_tensor(), None, BatchPart::whole(paths.n)).unwrap();
        let t2 = Instant::now();
        let g = learner.model.gradients_of(&l, &paths).unwrap();
        let t3 = Instant::now();
        learner.apply_gradients(g).unwrap();
        let t4 = Instant::now();
        t_walk += (t1 - t0).as_secs_f64();
        t_loss += (t2 - t1).as_secs_f64();
        t_back += (t3 - t2).as_secs_f64();
        t_step += (t4 - t3).as_secs_f64();
    }
    let k = 1e3 / iters as f64;
    println!(
        "B {b}: walk with tape {:.1} ms, loss {:.1} ms, backward {:.1} ms, Adam {:.1} ms",
        t_walk * k,
        t_loss * k,
        t_back * k,
        t_step * k
    );
}
