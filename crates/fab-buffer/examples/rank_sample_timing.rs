//! Times rank-prioritised draws of 300 positions from a full buffer of N entries, each after
//! one insertion, as the diffusion sampler's replay does every other iteration (the first draw
//! sorts; later ones merge).
//! `cargo run --release -p fab-buffer --example rank_sample_timing [N]`
use std::time::Instant;

use fab_buffer::{Prioritisation, RankedBuffer};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(600_000);
    let mut rng = StdRng::seed_from_u64(0);
    let mut b = RankedBuffer::new(n).unwrap();
    for i in 0..n as u64 {
        b.insert(i, (), rng.random::<f64>()).unwrap();
    }
    let mut times = Vec::new();
    let mut check = 0usize;
    for i in 0..21 {
        for j in 0..300 {
            b.insert(n as u64 + 300 * i + j, (), rng.random::<f64>()).unwrap();
        }
        let t = Instant::now();
        check += b.sample(300, Prioritisation::rank_default(), &mut rng).unwrap()[0];
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let first = times.remove(0);
    times.sort_by(f64::total_cmp);
    println!(
        "N {n}: first draw {first:.2} ms, then median {:.2} ms per draw of 300 after 300 insertions (check {check})",
        times[times.len() / 2]
    );
}
