//! Tuning of the mimalloc allocator that the `fab` binary and the timing examples install
//! (feature `mimalloc`; a library user keeps whatever allocator they choose).

/// Index of `mi_option_purge_delay` in mimalloc's option enumeration (the same in its v2 and v3
/// headers; the Rust bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory that mimalloc frees instead of returning it to the OS 10 ms later (its default
/// `purge_delay`). A training step frees and re-allocates the same large activation buffers
/// every pass; purged, they were page-faulted and zeroed again each time (≈ 150 faults per
/// alanine-dipeptide flow pass, ≈ 5 % of its time; `docs/PERFORMANCE.md`). The process keeps
/// its peak working set instead, which it re-uses at once anyway. Call it at the start of
/// `main`, in a process whose global allocator is mimalloc.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
