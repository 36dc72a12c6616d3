//! Criterion benchmarks: flows (to be written).
fn main() {}
