//! CPU-time measurement of the ALDP target (ignored by default; a measurement, not a test).
//!
//! Run: `cargo test --release -p fab-targets --test aldp_timing -- --ignored --nocapture`
//!
//! Every evaluation runs on the calling thread (a one-thread rayon pool that uses it), and the
//! time is that thread's on-CPU time from `/proc/thread-self/schedstat`, so time stolen by
//! other processes on a shared machine is not counted. Reports CPU and wall time per
//! configuration.

use fab_targets::aldp::{AldpForceField, AldpTarget, InternalCoordinates, CART_DIM, FLOW_DIM};
use rand_distr::{Distribution, StandardNormal};

fn thread_cpu_ns() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// (CPU, wall) µs per configuration, averaged over `reps` repetitions of `f` on `n`
/// configurations (schedstat advances in scheduler ticks here, so only long totals are
/// accurate: every measurement below runs for ≥ 0.25 s).
fn measure(reps: usize, n: usize, mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm-up
    let (c0, w0) = (thread_cpu_ns().expect("schedstat"), std::time::Instant::now());
    for _ in 0..reps {
        f();
    }
    let cpu = (thread_cpu_ns().unwrap() - c0) / 1e3 / (reps * n) as f64;
    let wall = w0.elapsed().as_secs_f64() * 1e6 / (reps * n) as f64;
    (cpu, wall)
}

#[test]
#[ignore]
fn cpu_time_per_configuration() {
    if thread_cpu_ns().is_none() {
        eprintln!("no /proc/thread-self/schedstat: skipped");
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).use_current_thread().build().unwrap();
    pool.install(|| {
        let ff = AldpForceField::amber_implicit();
        let ic = InternalCoordinates::alanine_dipeptide();
        let target = AldpTarget::default();
        let mut rng = fab_core::seeded_rng(1, 0);
        let n = 1024;
        let zs: Vec<f64> =
            (0..n * FLOW_DIM).map(|_| 0.3 * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut rng)).collect();
        let (xs, _) = ic.to_cartesian_batch(&zs).unwrap();
        let mut fs = vec![0.0; xs.len()];
        let mut f1 = vec![0.0; CART_DIM];
        let x1 = &xs[..CART_DIM];
        let z1 = &zs[..FLOW_DIM];
        let rows = [
            ("energy + forces, batch 1024", measure(40, n, || drop(ff.energies_and_forces(&xs, &mut fs)))),
            ("energy + forces, batch 1", measure(10_000, 1, || drop(ff.energy_and_forces(x1, &mut f1)))),
            ("energy + forces, batch 1, reference (libm)", measure(10_000, 1, || drop(ff.energy_and_forces_reference(x1, &mut f1)))),
            ("flow log p + grad, batch 1024", measure(40, n, || drop(target.log_prob_and_grad_f64(&zs)))),
            ("flow log p + grad, batch 1", measure(10_000, 1, || drop(target.log_prob_and_grad_f64(z1)))),
            ("flow log p only, batch 1024", measure(40, n, || drop(target.log_prob_f64(&zs)))),
            ("z -> x only (scalar libm path), batch 1024", measure(40, n, || drop(ic.to_cartesian_batch(&zs)))),
        ];
        for (name, (cpu, wall)) in rows {
            println!("{name:<46} cpu {cpu:7.2} us/config   wall {wall:7.2} us/config");
        }
    });
}
