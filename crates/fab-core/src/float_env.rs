//! The floating-point environment of the threads that train: subnormal numbers flushed to zero.
//!
//! On x86-64 an arithmetic operation that takes or produces a subnormal number (|x| below
//! 1.2·10⁻³⁸ in f32, 2.2·10⁻³⁰⁸ in f64) leaves the vector units for a microcode assist that
//! costs on the order of a hundred cycles on Intel cores. A float32 flow that has trained for a
//! while can feed such numbers to every product of a pass (gradients scaled through saturated
//! units, tiny spline derivatives), and then runs several times slower: an alanine-dipeptide run
//! went from 1.3 to 3.3 s per iteration (docs/PERFORMANCE.md, "Subnormal numbers in the
//! alanine-dipeptide flow"). Flush-to-zero (results) and denormals-are-zero (inputs) replace
//! them by 0, as PyTorch's `set_flush_denormal(True)` does; a value that small is zero for
//! every quantity this project computes.

/// Bit 15 of MXCSR: results that would be subnormal are 0 (flush to zero).
#[cfg(target_arch = "x86_64")]
const FTZ: u32 = 1 << 15;
/// Bit 6 of MXCSR: subnormal inputs are read as 0 (denormals are zero).
#[cfg(target_arch = "x86_64")]
const DAZ: u32 = 1 << 6;

/// Sets flush-to-zero and denormals-are-zero for the SSE/AVX arithmetic of the calling thread.
/// Threads started afterwards by this thread inherit the setting (the thread pools of rayon and
/// `gemm` included, if they are built afterwards), so call it at the start of `main`, before any
/// pool exists. A no-op on other architectures.
pub fn flush_subnormals_to_zero() {
    #[cfg(target_arch = "x86_64")]
    {
        let csr = read_mxcsr() | FTZ | DAZ;
        // SAFETY: `ldmxcsr` loads a 32-bit value from the given address; the value is the current
        // control word with two documented mode bits set, so no reserved bit is touched.
        #[allow(unsafe_code)]
        unsafe {
            core::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
        }
    }
}

/// Whether the calling thread flushes subnormal numbers to zero (both FTZ and DAZ set);
/// always `false` off x86-64.
pub fn subnormals_flushed() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        read_mxcsr() & (FTZ | DAZ) == FTZ | DAZ
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
fn read_mxcsr() -> u32 {
    let mut csr: u32 = 0;
    // SAFETY: `stmxcsr` stores the 32-bit control word at the given address, a local u32.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
    }
    csr
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn flushing_makes_subnormal_products_zero_and_threads_inherit_it() {
        // A fresh thread, so that the test harness's own threads keep their environment.
        std::thread::spawn(|| {
            let tiny = || black_box(1e-30f32) * black_box(1e-10f32);
            assert!(!subnormals_flushed());
            assert!(tiny() > 0.0 && !tiny().is_normal(), "1e-40 is subnormal without the flags");
            let sub = black_box(f32::from_bits(1)); // the smallest subnormal
            assert!(sub * black_box(2.0f32) > 0.0);
            flush_subnormals_to_zero();
            assert!(subnormals_flushed());
            assert_eq!(tiny(), 0.0);
            assert_eq!(sub * black_box(2.0f32), 0.0, "a subnormal input is read as 0");
            assert_eq!(black_box(1e-300f64) * black_box(1e-10f64), 0.0);
            // Normal numbers are untouched.
            assert_eq!(black_box(1e-20f32) * black_box(1e-10f32), 1e-20f32 * 1e-10f32);
            let child = std::thread::spawn(|| (subnormals_flushed(), black_box(1e-30f32) * black_box(1e-10f32))).join().unwrap();
            assert_eq!(child, (true, 0.0));
        })
        .join()
        .unwrap();
    }
}
