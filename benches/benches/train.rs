//! One FAB-with-buffer training iteration on the GMM with the paper's settings (B = 128, L = 4,
//! 15 RealNVP layers, Metropolis AIS with one intermediate distribution, float64): one AIS
//! pass, buffer insertion and sampling, four gradient steps with Adam.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench -p fab-benches --bench train`

use criterion::{criterion_group, criterion_main, Criterion};
use fab_sampler::Sampler;
use fab_train::{ExperimentConfig, FabSampler};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GMM_PAPER: &str = include_str!("../../experiments/gmm/paper.toml");

fn fab_iteration(c: &mut Criterion) {
    let cfg = ExperimentConfig::from_toml_with_overrides(GMM_PAPER, &[]).expect("config");
    let mut trainer = FabSampler::new(cfg).expect("sampler");
    trainer.fill_buffer().expect("buffer");
    // Warm up past the first iterations so that the flow is no longer the identity.
    for _ in 0..200 {
        trainer.step().expect("step");
    }
    c.bench_function("fab_buffer_gmm_iteration_b128_l4_f64", |b| b.iter(|| trainer.step().expect("step")));
}

criterion_group!(benches, fab_iteration);
criterion_main!(benches);
