//! Alanine dipeptide target benchmarks (single thread): energy + analytic forces per
//! configuration at batch 1 and 1024, and the full flow-space log p(z) + ∇_z at batch 1 and
//! 1024.
//!
//! Inputs are physical configurations: z ~ 0.3·N(0, 1) in all 60 flow coordinates around the
//! minimum-energy reference, mapped to Cartesians (fixed seed).
//!
//! The `*_cputime` groups measure the CPU time of the process (all threads, from
//! `/proc/self/task/*/schedstat`) instead of wall-clock time, which is what an uncontended core
//! gives on a shared machine (the figure OpenMM's numbers in THROUGHPUT.md are quoted in).
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench -p fab-benches --bench aldp`

use std::sync::Arc;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fab_core::LogDensity;
use fab_targets::aldp::{AldpForceField, AldpTarget, InternalCoordinates, CART_DIM, FLOW_DIM};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn flow_points(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = fab_core::seeded_rng(seed, 0);
    let t = fab_core::rng::randn(&mut rng, (n, FLOW_DIM), candle_core::DType::F64, &Device::Cpu).expect("randn");
    fab_core::to_f64_vec(&t).expect("f64").iter().map(|v| 0.3 * v).collect()
}

/// CPU time consumed so far by all threads of this process (Linux); `None` elsewhere.
fn process_cpu_time() -> Option<Duration> {
    let mut ns = 0u64;
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let text = std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok()?;
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// Times `f` by process CPU time (falls back to wall time without /proc).
fn cpu_time_of(iters: u64, mut f: impl FnMut()) -> Duration {
    let (w0, c0) = (std::time::Instant::now(), process_cpu_time());
    for _ in 0..iters {
        f();
    }
    match (c0, process_cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => w0.elapsed(),
    }
}

fn aldp(c: &mut Criterion) {
    let ff = Arc::new(AldpForceField::amber_implicit());
    let ic = Arc::new(InternalCoordinates::with_reference(ff.reference_positions()).expect("ic"));
    let target = AldpTarget::new(ff.clone(), ic.clone());

    let mut group = c.benchmark_group("aldp_energy_forces");
    for batch in [1usize, 1024] {
        let zs = flow_points(batch, 1);
        let (xs, _) = ic.to_cartesian_batch(&zs).expect("x");
        let mut forces = vec![0.0; batch * CART_DIM];
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("cpu_f64", batch), &xs, |b, xs| {
            b.iter(|| ff.energies_and_forces(xs, &mut forces).expect("energy"))
        });
        if batch == 1 {
            // The term-by-term reference implementation (scalar, libm), for comparison.
            group.bench_with_input(BenchmarkId::new("cpu_f64_reference", batch), &xs, |b, xs| {
                b.iter(|| ff.energy_and_forces_reference(xs, &mut forces).expect("energy"))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("aldp_flow_log_prob_grad");
    for batch in [1usize, 1024] {
        let zs = flow_points(batch, 2);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("cpu_f64_slices", batch), &zs, |b, zs| {
            b.iter(|| target.log_prob_and_grad_f64(zs).expect("log p"))
        });
        if batch == 1024 {
            let t = Tensor::from_vec(zs.clone(), (batch, FLOW_DIM), &Device::Cpu).expect("tensor");
            group.bench_with_input(BenchmarkId::new("cpu_f64_tensor", batch), &t, |b, t| {
                b.iter(|| target.log_prob_and_grad(t).expect("log p"))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("aldp_cputime");
    let batch = 1024;
    group.throughput(Throughput::Elements(batch as u64));
    let zs = flow_points(batch, 1);
    let (xs, _) = ic.to_cartesian_batch(&zs).expect("x");
    let mut forces = vec![0.0; batch * CART_DIM];
    group.bench_function(BenchmarkId::new("energy_forces", batch), |b| {
        b.iter_custom(|iters| cpu_time_of(iters, || drop(ff.energies_and_forces(&xs, &mut forces))))
    });
    let zs = flow_points(batch, 2);
    group.bench_function(BenchmarkId::new("flow_log_prob_grad", batch), |b| {
        b.iter_custom(|iters| cpu_time_of(iters, || drop(target.log_prob_and_grad_f64(&zs))))
    });
    group.finish();
}

criterion_group!(benches, aldp);
criterion_main!(benches);
