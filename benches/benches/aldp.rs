//! Alanine dipeptide target benchmarks (single thread): energy + analytic forces per
//! configuration at batch 1 and 1024, and the full flow-space log p(z) + ∇_z at batch 1024.
//!
//! Inputs are physical configurations: z ~ 0.3·N(0, 1) in all 60 flow coordinates around the
//! minimum-energy reference, mapped to Cartesians (fixed seed).
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench -p fab-benches --bench aldp`

use std::sync::Arc;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fab_core::LogDensity;
use fab_targets::aldp::{AldpForceField, AldpTarget, InternalCoordinates, CART_DIM, FLOW_DIM};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn flow_points(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = fab_core::seeded_rng(seed, 0);
    let t = fab_core::rng::randn(&mut rng, (n, FLOW_DIM), candle_core::DType::F64, &Device::Cpu)
        .expect("randn");
    fab_core::to_f64_vec(&t).expect("f64").iter().map(|v| 0.3 * v).collect()
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
}

criterion_group!(benches, aldp);
criterion_main!(benches);
