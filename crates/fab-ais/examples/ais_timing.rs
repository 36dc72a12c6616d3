//! Wall-clock time of one AIS pass with cheap densities (a diagonal Gaussian as the "flow"), so
//! that the driver's and kernels' own overhead is visible. Run with
//! `RAYON_NUM_THREADS=1 cargo run --release -p fab-ais --example ais_timing`.

use std::time::Instant;

use candle_core::{DType, Device};
use fab_ais::{Ais, AisConfig};
use fab_core::seeded_rng;
use fab_core::test_utils::DiagGaussian;
use fab_targets::gmm::Gmm;
use fab_targets::many_well::ManyWell;

fn time(label: &str, mut f: impl FnMut()) {
    f(); // warm-up
    let reps = 20;
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    println!("{label}: median {:.3} ms (min {:.3}, max {:.3}) over {reps} runs", v[reps / 2], v[0], v[reps - 1]);
}

fn main() {
    let dev = Device::Cpu;
    let mw = ManyWell::new(32, DType::F64, &dev).unwrap();
    let q32 = DiagGaussian::new(vec![0.0; 32], vec![2.0; 32]);
    let mut rng = seeded_rng(0, 0);
    let mut ais = Ais::new(AisConfig::many_well()).unwrap();
    time("Many Well 32-D, B=2048, n_int=4, HMC L=5 (21 q+p evals with grad)", || {
        ais.run(&q32, &mw, 2048, &mut rng).unwrap();
    });
    let x = q32.sample_and_log_prob_for_timing(2048, &mut rng);
    time("  of which one ManyWell log_prob_and_grad(2048)", || {
        fab_core::LogDensity::log_prob_and_grad(&mw, &x).unwrap();
    });
    time("  of which one DiagGaussian log_prob_and_grad(2048)", || {
        fab_core::LogDensity::log_prob_and_grad(&q32, &x).unwrap();
    });

    let gmm = Gmm::fab40(DType::F64, &dev).unwrap();
    let q2 = DiagGaussian::new(vec![0.0; 2], vec![20.0; 2]);
    let mut ais = Ais::new(AisConfig::gmm()).unwrap();
    time("GMM, B=128, n_int=1, Metropolis", || {
        ais.run(&q2, &gmm, 128, &mut rng).unwrap();
    });
    let x2 = q2.sample_and_log_prob_for_timing(128, &mut rng);
    time("  of which one GMM log_prob(128)", || {
        fab_core::LogDensity::log_prob(&gmm, &x2).unwrap();
    });
    let x3 = q2.sample_and_log_prob_for_timing(12800, &mut rng);
    time("  (one GMM log_prob(12800))", || {
        fab_core::LogDensity::log_prob(&gmm, &x3).unwrap();
    });
}

trait SampleForTiming {
    fn sample_and_log_prob_for_timing(&self, n: usize, rng: &mut fab_core::FabRng) -> candle_core::Tensor;
}
impl SampleForTiming for DiagGaussian {
    fn sample_and_log_prob_for_timing(&self, n: usize, rng: &mut fab_core::FabRng) -> candle_core::Tensor {
        fab_core::Proposal::sample_and_log_prob(self, n, rng).unwrap().0
    }
}

#[allow(dead_code)]
fn scaling() {}
