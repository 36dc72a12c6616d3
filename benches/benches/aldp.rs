//! Criterion benchmarks: aldp (to be written).
fn main() {}
