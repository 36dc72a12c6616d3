//! Criterion benchmarks: ais (to be written).
fn main() {}
