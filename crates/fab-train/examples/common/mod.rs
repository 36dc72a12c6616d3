//! Pieces shared by the timing examples (`perf_probe`, `vs_torch`).

use fab_flows::FlowModel;

/// Index of `mi_option_purge_delay` in mimalloc's option enumeration (the same in its v2 and v3
/// headers; the Rust bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory that mimalloc frees instead of returning it to the OS 10 ms later (its default
/// `purge_delay`). A training step frees and re-allocates the same large activation buffers
/// every pass; purged, they were page-faulted and zeroed again each time (≈ 150 faults per
/// alanine-dipeptide flow pass, ≈ 5 % of its time; `docs/PERFORMANCE.md`). The process keeps
/// its peak working set instead, which it re-uses at once anyway.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

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
