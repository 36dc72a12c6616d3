//! Flow benchmarks: the GMM flow (2-D, 15 layers, hidden 80, B = 128) and the Many Well flow
//! (32-D, 10 layers, hidden 320, B = 2048), float64 and float32, on the hand-written CPU path
//! and on candle's autodiff path.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench -p fab-benches --bench flows`

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fab_benches::{perturb, points};
use fab_core::{LogDensity, Proposal};
use fab_flows::{Backend, RealNvpConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_flow(c: &mut Criterion, name: &str, cfg: RealNvpConfig, batch: usize, backends: &[Backend], dtypes: &[DType]) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(batch as u64));
    if batch >= 1024 {
        group.sample_size(10);
    }
    for &dtype in dtypes {
        for &backend in backends {
            let mut model = cfg.build(0, dtype, &Device::Cpu).expect("model");
            perturb(&model, 0.01);
            model.set_backend(backend);
            let x = points(batch, cfg.dim, dtype, 1);
            let coef = vec![-1.0 / batch as f64; batch];
            let tag = format!("{}_{:?}", if backend == Backend::Auto { "cpu" } else { "candle" }, dtype).to_lowercase();
            group.bench_function(BenchmarkId::new("log_prob_backward", &tag), |b| {
                b.iter(|| model.log_prob_backward(&x, &coef).expect("backward"))
            });
            group.bench_function(BenchmarkId::new("sample_and_log_prob", &tag), |b| {
                let mut rng = fab_core::seeded_rng(2, 0);
                b.iter(|| model.sample_and_log_prob(batch, &mut rng).expect("sample"))
            });
            group.bench_function(BenchmarkId::new("log_prob_and_grad_x", &tag), |b| b.iter(|| model.log_prob_and_grad(&x).expect("grad")));
        }
    }
    group.finish();
}

fn flows(c: &mut Criterion) {
    bench_flow(c, "gmm_flow_b128", RealNvpConfig::gmm(), 128, &[Backend::Auto, Backend::Candle], &[DType::F64, DType::F32]);
    bench_flow(c, "many_well_flow_b2048", RealNvpConfig::many_well(), 2048, &[Backend::Auto], &[DType::F64, DType::F32]);
}

criterion_group!(benches, flows);
criterion_main!(benches);
