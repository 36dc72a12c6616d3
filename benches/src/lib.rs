//! Shared helpers for the criterion benches of fab-rs.
#![allow(missing_docs)]

use candle_core::{DType, Device, Tensor};

/// `[n, d]` standard normal points from a fixed seed.
pub fn points(n: usize, d: usize, dtype: DType, seed: u64) -> Tensor {
    let mut rng = fab_core::seeded_rng(seed, 0);
    fab_core::rng::randn(&mut rng, (n, d), dtype, &Device::Cpu).expect("points")
}

/// Adds small noise to every parameter of a model so that couplings are not the identity
/// (identity layers would let the benchmark skip no work, but keep the numbers realistic).
pub fn perturb(model: &fab_flows::FlowModel, std: f64) {
    let mut rng = fab_core::seeded_rng(1, 99);
    for v in model.vars() {
        let noise = fab_core::rng::randn(&mut rng, v.shape(), v.dtype(), v.device()).expect("noise");
        v.set(&(v.as_tensor() + (noise * std).expect("scale")).expect("add")).expect("set");
    }
}
