//! One AIS pass on Many Well 32-D with the Many Well flow (docs/ALGORITHMS.md,
//! "Normalizing flows"): 4 intermediate distributions, HMC with 5 leapfrog steps, target p²/q
//! (training), float64 and float32.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench -p fab-benches --bench ais`

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fab_ais::{Ais, AisConfig};
use fab_benches::perturb;
use fab_flows::RealNvpConfig;
use fab_targets::many_well::ManyWell;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn ais_pass(c: &mut Criterion) {
    let mut group = c.benchmark_group("ais_many_well_pass");
    group.sample_size(10);
    for (dtype, batch) in [(DType::F64, 2048usize), (DType::F32, 2048), (DType::F64, 512)] {
        let flow = RealNvpConfig::many_well().build(0, dtype, &Device::Cpu).expect("flow");
        perturb(&flow, 0.01);
        let target = ManyWell::new(32, dtype, &Device::Cpu).expect("target");
        let mut ais = Ais::new(AisConfig::many_well()).expect("ais");
        let mut rng = fab_core::seeded_rng(0, 1);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new(format!("{dtype:?}").to_lowercase(), batch), |b| {
            b.iter(|| ais.run(&flow, &target, batch, &mut rng).expect("ais pass"))
        });
    }
    group.finish();
}

criterion_group!(benches, ais_pass);
criterion_main!(benches);
