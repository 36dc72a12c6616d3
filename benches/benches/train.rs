//! Criterion benchmarks: train (to be written).
fn main() {}
