//! Probe: where a trained flow's two implementations part. Evaluates log q of given points
//! with the CPU kernels and with candle's ops, layer by layer in the density direction, and
//! prints each layer's largest difference in outputs and log-determinants, then the points
//! whose log q differ by more than 10⁻³.
//!
//! `cargo run --release -p fab-train --example backend_probe -- DIR POINTS.npy [LOG_Q.npy]`
//! (DIR: a run or model directory; POINTS: `[n, dim]` flow-space points, e.g. from `fab sample
//! DIR`; LOG_Q: log q values to check the CPU kernels' against, e.g. those `fab sample` wrote
//! beside the points — with a copy of DIR whose `config.toml` says `precision = "f64"`, how far
//! the f32 sampling pass's log q is from the f64 density at the same points.)
//! It found the f32 seam of the circular splines (docs/ALGORITHMS.md, "Circular splines at the seam").

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use fab_flows::cpu::Real;
use fab_flows::{FlowModel, Layer};
use fab_train::ExperimentConfig;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Points per chunk (candle's spline ops hold several `[n, F, 3K + 1]` tensors at once).
const CHUNK: usize = 8192;

fn as_f64(t: &Tensor) -> Res<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// One layer's density direction through its CPU kernels: (outputs, log-determinants).
fn host_inverse<T: Real>(layer: &dyn Layer, z: &Tensor) -> Res<(Tensor, Vec<f64>)> {
    let cpu = T::cpu_layer(layer).ok_or("a layer without CPU kernels")?;
    let (n, dim) = z.dims2()?;
    let mut ld = vec![T::zero(); n];
    let (out, _) = cpu.inverse(z.flatten_all()?.to_vec1::<T>()?, n, &mut ld, false)?;
    Ok((Tensor::from_vec(out, (n, dim), &Device::Cpu)?, ld.iter().map(|v| v.as_f64()).collect()))
}

/// One chunk: log q by candle and by the CPU kernels; raises each layer's largest differences
/// in `worst` (output, log-det).
fn chunk(flow: &FlowModel, x: &[f64], worst: &mut [(f64, f64)]) -> Res<(Vec<f64>, Vec<f64>)> {
    let dim = flow.base().dim();
    let n = x.len() / dim;
    // Both start from the same points; each backend then continues from its own outputs.
    let mut zc = Tensor::from_vec(x.to_vec(), (n, dim), &Device::Cpu)?.to_dtype(flow.dtype())?;
    let mut zh = zc.clone();
    let (mut ldc, mut ldh) = (vec![0.0; n], vec![0.0; n]);
    for (i, layer) in flow.layers().iter().enumerate().rev() {
        let (zc2, lc) = layer.inverse_t(&zc, false)?;
        let (zh2, lh) = match flow.dtype() {
            DType::F32 => host_inverse::<f32>(layer.as_ref(), &zh)?,
            _ => host_inverse::<f64>(layer.as_ref(), &zh)?,
        };
        let lc = as_f64(&lc)?;
        let dz = as_f64(&zc2)?.iter().zip(as_f64(&zh2)?).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let dld = lc.iter().zip(&lh).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        worst[i] = (worst[i].0.max(dz), worst[i].1.max(dld));
        for r in 0..n {
            ldc[r] += lc[r];
            ldh[r] += lh[r];
        }
        (zc, zh) = (zc2, zh2);
    }
    let (bc, bh) = (as_f64(&flow.base().log_prob_t(&zc, false)?)?, as_f64(&flow.base().log_prob_t(&zh, false)?)?);
    Ok(((0..n).map(|r| bc[r] + ldc[r]).collect(), (0..n).map(|r| bh[r] + ldh[r]).collect()))
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, points, given) = match args.as_slice() {
        [d, p] => (d, p, None),
        [d, p, q] => (d, p, Some(q)),
        _ => return Err("usage: backend_probe DIR POINTS.npy [LOG_Q.npy]".into()),
    };
    let (x, shape) = fab_core::npy::read_f64(Path::new(points))?;
    let (_, run) = fab_sampler::run::load_run::<ExperimentConfig>(Path::new(dir), &[])?;
    let flow = run.sampler().flow();
    let dim = flow.base().dim();
    if shape.len() != 2 || shape[1] != dim {
        return Err(format!("points have shape {shape:?}, the flow needs [n, {dim}]").into());
    }
    let n = shape[0];
    let mut worst = vec![(0.0, 0.0); flow.layers().len()];
    let (mut qc, mut qh) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for part in x.chunks(CHUNK * dim) {
        let (c, h) = chunk(flow, part, &mut worst)?;
        qc.extend(c);
        qh.extend(h);
    }
    for (i, (dz, dld)) in worst.iter().enumerate().rev() {
        println!("layer {i:>2}: max |Δ output| {dz:.3e}   max |Δ log-det| {dld:.3e}");
    }
    let parted: Vec<usize> = (0..n).filter(|&r| (qc[r] - qh[r]).abs() > 1e-3).collect();
    for &r in parted.iter().take(20) {
        println!("point {r}: log q candle {:.6}, CPU kernels {:.6}", qc[r], qh[r]);
    }
    println!("{} of {n} points differ by more than 1e-3 in log q", parted.len());
    if let Some(q) = given {
        let (given, _) = fab_core::npy::read_f64(Path::new(q))?;
        let mut diff: Vec<(f64, usize)> = (0..n).map(|r| (qh[r] - given[r], r)).collect();
        diff.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
        for (d, r) in diff.iter().take(10) {
            println!("point {r}: log q here − given {d:+.4}");
        }
        for tol in [1e-3, 1e-2, 1e-1, 1.0] {
            println!("|log q here − given| > {tol}: {} points", diff.iter().filter(|(d, _)| d.abs() > tol).count());
        }
    }
    Ok(())
}
