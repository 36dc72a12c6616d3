//! Pieces shared by the timing examples (`perf_probe`, `vs_torch`).

use fab_flows::FlowModel;

pub use fab_core::alloc::keep_freed_memory;

/// Nanoseconds all threads of this process have spent on a CPU.
pub fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `m` with 0.01·N(0, 1) added to every parameter (seeded), so that no coupling is the identity
/// and the timings are those of a trained flow.
pub fn perturb(m: FlowModel) -> FlowModel {
    let mut rng = fab_core::seeded_rng(1, 99);
    for v in m.vars() {
        let noise = fab_core::rng::randn(&mut rng, v.shape(), v.dtype(), v.device()).expect("noise");
        v.set(&(v.as_tensor() + (noise * 0.01).expect("scale")).expect("add")).expect("set");
    }
    m
}
