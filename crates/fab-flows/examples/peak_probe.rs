//! Probe: how close the Many Well flow rows of `benches/vs-torch` come to the core's peak f64
//! rate, and how much of each row is matrix products.
//!
//! `RAYON_NUM_THREADS=1 taskset -c 1 cargo run --release -p fab-flows --example peak_probe [reps]`
//!
//! 1. The core's peak: fused multiply-adds on independent vector accumulators (512-bit if the
//!    CPU has AVX-512F, and 256-bit), the FLOP rate nothing on this core can exceed in f64.
//! 2. Every matrix product one pass of the Many Well flow makes (B 2048, 10 layers, conditioner
//!    16 → 320 → 320 → 32, LU mixing 32 × 32), timed alone at its own shape and layout through
//!    the same `gemm` call the flow uses, summed per row.
//! 3. The three flow rows themselves (wall time on the pinned core, median of `reps`): measured time, product
//!    FLOPs, achieved rate and fraction of peak, and the time left over after the products
//!    (activations, coupling, log-determinants, copies).
//!
//! `benches/vs-torch/torch_gemm.py --flow-passes` times the same product list with torch.
#![allow(unsafe_code)]

use candle_core::{DType, Device};
use fab_core::{LogDensity, Proposal};
use fab_flows::RealNvpConfig;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One matrix product `op(a)·op(b)` of shape m×k×n (flags as `fab_flows::cpu::bench_matmul`).
#[derive(Clone, Copy)]
struct Product {
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
}

const B: usize = 2048;
const LAYERS: usize = 10;

/// The products of one flow layer's density pass: conditioner 16→320→320→32 (x·Wᵀ) and LU x·W.
fn forward_products() -> Vec<Product> {
    let p = |m, k, n, ta, tb| Product { m, k, n, ta, tb };
    vec![p(B, 16, 320, false, true), p(B, 320, 320, false, true), p(B, 320, 32, false, true), p(B, 32, 32, false, false)]
}

/// Input gradients of one layer: g·W for each dense layer, g·Wᵀ for the LU.
fn input_grad_products() -> Vec<Product> {
    let p = |m, k, n, ta, tb| Product { m, k, n, ta, tb };
    vec![p(B, 32, 320, false, false), p(B, 320, 320, false, false), p(B, 320, 16, false, false), p(B, 32, 32, false, true)]
}

/// Parameter gradients of one layer: gᵀ·x for each dense layer and for the LU.
fn weight_grad_products() -> Vec<Product> {
    let p = |m, k, n, ta, tb| Product { m, k, n, ta, tb };
    vec![p(32, B, 320, true, false), p(320, B, 320, true, false), p(320, B, 16, true, false), p(32, B, 32, true, false)]
}

fn main() {
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(7);
    // As `fab train` and `benches/vs-torch` do: freed buffers are re-used, not page-faulted again.
    fab_core::alloc::keep_freed_memory();
    let (peak512, peak256) = peak_gflops();
    let peak = peak512.unwrap_or(peak256);
    match peak512 {
        Some(p) => println!("peak f64 FMA: 512-bit {p:.1} GFLOP/s, 256-bit {peak256:.1} GFLOP/s (one thread)"),
        None => println!("peak f64 FMA: 256-bit {peak256:.1} GFLOP/s (no AVX-512F; one thread)"),
    }

    let time_list = |list: &[Product]| -> (f64, f64) {
        let (mut secs, mut flops) = (0.0, 0.0);
        for p in list {
            let s = time_product(*p, reps);
            let f = 2.0 * (p.m * p.k * p.n) as f64;
            println!(
                "  gemm f64 {}x{}x{} ta={} tb={}: {:.3} ms, {:.1} GFLOP/s ({:.0} % of peak)",
                p.m,
                p.k,
                p.n,
                p.ta,
                p.tb,
                s * 1e3,
                f / s / 1e9,
                100.0 * f / s / 1e9 / peak
            );
            secs += s;
            flops += f;
        }
        (secs * LAYERS as f64, flops * LAYERS as f64)
    };
    println!("products of one layer, density pass:");
    let fwd = time_list(&forward_products());
    println!("input gradients:");
    let gin = time_list(&input_grad_products());
    println!("parameter gradients:");
    let gw = time_list(&weight_grad_products());

    let model = RealNvpConfig::many_well().build(0, DType::F64, &Device::Cpu).expect("many_well flow");
    let mut rng = fab_core::seeded_rng(1, 0);
    let x = fab_core::rng::randn(&mut rng, (B, 32), DType::F64, &Device::Cpu).expect("randn");
    let coef = vec![-1.0 / B as f64; B];
    let rows: [(&str, (f64, f64)); 3] = [
        ("flow log q + backward", (fwd.0 + gin.0 + gw.0, fwd.1 + gin.1 + gw.1)),
        ("flow sample + log q", fwd),
        ("flow log q + ∇ₓ", (fwd.0 + gin.0, fwd.1 + gin.1)),
    ];
    println!("| Many Well row (B 2048, f64) | measured ms | products alone ms | rest ms | product GFLOP | GFLOP/s | % of peak |");
    println!("|---|---|---|---|---|---|---|");
    for (i, (name, (prod_s, flops))) in rows.iter().enumerate() {
        let mut cpu = Vec::new();
        for _ in 0..reps {
            let c0 = clock_ns();
            match i {
                0 => drop(model.log_prob_backward(&x, &coef).expect("backward")),
                1 => drop(model.sample_and_log_prob(B, &mut rng).expect("sample")),
                _ => drop(model.log_prob_and_grad(&x).expect("grad_x")),
            }
            cpu.push((clock_ns() - c0) as f64 * 1e-9);
        }
        let s = median(cpu);
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.0} |",
            s * 1e3,
            prod_s * 1e3,
            (s - prod_s) * 1e3,
            flops / 1e9,
            flops / s / 1e9,
            100.0 * flops / s / 1e9 / peak
        );
    }
}

/// Median wall time of `reps` runs of one product (after one warm-up run).
fn time_product(p: Product, reps: usize) -> f64 {
    let a: Vec<f64> = (0..p.m * p.k).map(|i| (i as f64 * 0.001).sin()).collect();
    let b: Vec<f64> = (0..p.k * p.n).map(|i| (i as f64 * 0.002).cos()).collect();
    let mut c = vec![0.0f64; p.m * p.n];
    fab_flows::cpu::bench_matmul(&mut c, &a, p.ta, &b, p.tb, p.m, p.k, p.n);
    // Small products repeat inside one timing so that the clock's resolution does not matter.
    let inner = (2e8 / (2.0 * (p.m * p.k * p.n) as f64)).ceil().max(1.0) as usize;
    let mut t = Vec::new();
    for _ in 0..reps {
        let c0 = clock_ns();
        for _ in 0..inner {
            fab_flows::cpu::bench_matmul(&mut c, &a, p.ta, &b, p.tb, p.m, p.k, p.n);
        }
        t.push((clock_ns() - c0) as f64 * 1e-9 / inner as f64);
    }
    median(t)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak f64 FMA rates of this thread's core: (512-bit if available, 256-bit), GFLOP/s.
fn peak_gflops() -> (Option<f64>, f64) {
    const ITERS: usize = 50_000_000;
    let run = |f: &dyn Fn() -> f64, lanes: usize, accumulators: usize| {
        f(); // warm-up: brings the core to the frequency it holds under this load
        let mut best = 0.0f64;
        for _ in 0..3 {
            let c0 = clock_ns();
            // black_box on both sides keeps the (side-effect-free) loop between the clock reads.
            let sink = std::hint::black_box(f());
            let s = (clock_ns() - c0) as f64 * 1e-9;
            assert!(sink.is_finite(), "peak loop produced a non-finite value");
            best = best.max(2.0 * (accumulators * lanes * ITERS) as f64 / s / 1e9);
        }
        best
    };
    let p512 = if is_x86_feature_detected!("avx512f") {
        // SAFETY: avx512f was detected at run time.
        Some(run(&|| unsafe { fma_loop_512(std::hint::black_box(ITERS)) }, 8, 16))
    } else {
        None
    };
    assert!(is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx2"), "peak_probe needs AVX2 + FMA");
    // SAFETY: avx2 and fma were detected at run time.
    let p256 = run(&|| unsafe { fma_loop_256(std::hint::black_box(ITERS)) }, 4, 12);
    (p512, p256)
}

macro_rules! fma_loop {
    ($name:ident, $feat:literal, $ty:ty, $set1:ident, $fmadd:ident, $store:ident, $lanes:literal, $acc:literal) => {
        #[target_feature(enable = $feat)]
        unsafe fn $name(iters: usize) -> f64 {
            use std::arch::x86_64::*;
            // acc ← acc·a + b converges to b/(1−a) = 1: no overflow, no subnormals.
            let a = $set1(0.999_999);
            let b = $set1(1e-6);
            let mut acc: [$ty; $acc] = [$set1(0.5); $acc];
            for _ in 0..iters {
                for v in acc.iter_mut() {
                    *v = $fmadd(*v, a, b);
                }
            }
            let mut out = [0.0f64; $lanes];
            let mut total = 0.0;
            for v in acc {
                // SAFETY: `out` holds exactly one vector of f64 lanes.
                unsafe { $store(out.as_mut_ptr(), v) };
                total += out.iter().sum::<f64>();
            }
            total
        }
    };
}

// 16 accumulators fill half of AVX-512's 32 vector registers; AVX2 has 16, so 12 there (two
// constants must stay in registers too). Either is more than the 2 units × 4 cycles of latency.
fma_loop!(fma_loop_512, "avx512f", __m512d, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_storeu_pd, 8, 16);
fma_loop!(fma_loop_256, "avx2,fma", __m256d, _mm256_set1_pd, _mm256_fmadd_pd, _mm256_storeu_pd, 4, 12);

/// Nanoseconds since the first call (wall clock: run the probe pinned to an otherwise idle core;
/// `/proc/thread-self/schedstat` advances only at scheduler ticks, too coarse for these timings).
fn clock_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}
