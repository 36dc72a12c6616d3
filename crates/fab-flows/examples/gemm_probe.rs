//! Probe: raw gemm throughput for the Many Well conditioner shapes (f64 and f32).
use std::time::Instant;
fn main() {
    for &(m, k, n, ta, tb) in &[
        (2048usize, 320usize, 320usize, false, true),
        (2048, 320, 320, false, false),
        (320, 2048, 320, true, false),
        (2048, 16, 320, false, true),
        (2048, 320, 32, false, true),
    ] {
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.001).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.002).cos()).collect();
        let mut c = vec![0.0f64; m * n];
        let reps = 20;
        let t = Instant::now();
        for _ in 0..reps {
            fab_flows::cpu::bench_matmul(&mut c, &a, ta, &b, tb, m, k, n);
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        println!("f64 {m}x{k}x{n} ta={ta} tb={tb}: {:.3} ms, {:.1} GFLOP/s", dt * 1e3, 2.0 * (m * k * n) as f64 / dt / 1e9);
        let a: Vec<f32> = a.iter().map(|v| *v as f32).collect();
        let b: Vec<f32> = b.iter().map(|v| *v as f32).collect();
        let mut c = vec![0.0f32; m * n];
        let t = Instant::now();
        for _ in 0..reps {
            fab_flows::cpu::bench_matmul(&mut c, &a, ta, &b, tb, m, k, n);
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        println!("f32 {m}x{k}x{n} ta={ta} tb={tb}: {:.3} ms, {:.1} GFLOP/s", dt * 1e3, 2.0 * (m * k * n) as f64 / dt / 1e9);
    }
}
