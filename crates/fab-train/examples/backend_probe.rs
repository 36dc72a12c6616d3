//! Probe: where a trained flow's two implementations part. Evaluates log q of given points
//! with the CPU kernels and with candle's ops, layer by layer in the density direction, and
//! prints each layer's largest difference in outputs and log-determinants, then the points
//! whose log q differ by more than 10⁻³.
//!
//! `cargo run --release -p fab-train --example backend_probe -- DIR POINTS.npy`
//! (DIR: a run or model directory; POINTS: `[n, dim]` flow-space points, e.g. from `fab sample DIR`.)
//! It found the f32 seam of the circular splines (docs/ALGORITHMS.md, "Circular splines at the seam").

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use fab_train::ExperimentConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, points] = args.as_slice() else {
        return Err("usage: backend_probe DIR POINTS.npy".into());
    };
    let (v, shape) = fab_core::npy::read_f64(Path::new(points))?;
    let (_, run) = fab_sampler::run::load_run::<ExperimentConfig>(Path::new(dir), &[])?;
    let flow = run.sampler().flow();
    let (n, dim) = (shape[0], flow.base().dim());
    if shape.len() != 2 || shape[1] != dim {
        return Err(format!("points have shape {shape:?}, the flow needs [n, {dim}]").into());
    }
    let dt = flow.dtype();
    let as_f64 = |t: &Tensor| -> Result<Vec<f64>, candle_core::Error> { t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>() };
    // Both start from the same points; each backend then continues from its own outputs.
    let mut zc = Tensor::from_vec(v.clone(), (n, dim), &Device::Cpu)?.to_dtype(dt)?;
    let mut zh = zc.clone();
    let (mut ldc, mut ldh) = (vec![0.0; n], vec![0.0; n]);
    for (i, layer) in flow.layers().iter().enumerate().rev() {
        let (zc2, lc) = layer.inverse_t(&zc, false)?;
        let (zh2, lh) = match dt {
            DType::F32 => {
                let cpu = layer.cpu_f32().ok_or("a layer without CPU kernels")?;
                let mut ld = vec![0f32; n];
                let (z, _) = cpu.inverse(zh.flatten_all()?.to_vec1::<f32>()?, n, &mut ld, false)?;
                (Tensor::from_vec(z, (n, dim), &Device::Cpu)?, ld.iter().map(|&x| x as f64).collect::<Vec<_>>())
            }
            _ => {
                let cpu = layer.cpu_f64().ok_or("a layer without CPU kernels")?;
                let mut ld = vec![0f64; n];
                let (z, _) = cpu.inverse(zh.flatten_all()?.to_vec1::<f64>()?, n, &mut ld, false)?;
                (Tensor::from_vec(z, (n, dim), &Device::Cpu)?, ld)
            }
        };
        let lc = as_f64(&lc)?;
        let dz = as_f64(&zc2)?.iter().zip(as_f64(&zh2)?).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let dld = lc.iter().zip(&lh).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        println!("layer {i:>2}: max |Δ output| {dz:.3e}   max |Δ log-det| {dld:.3e}");
        for r in 0..n {
            ldc[r] += lc[r];
            ldh[r] += lh[r];
        }
        (zc, zh) = (zc2, zh2);
    }
    let (bc, bh) = (as_f64(&flow.base().log_prob_t(&zc, false)?)?, as_f64(&flow.base().log_prob_t(&zh, false)?)?);
    let mut parted = 0;
    for r in 0..n {
        let (qc, qh) = (bc[r] + ldc[r], bh[r] + ldh[r]);
        if (qc - qh).abs() > 1e-3 {
            parted += 1;
            println!("point {r}: log q candle {qc:.6}, CPU kernels {qh:.6}");
        }
    }
    println!("{parted} of {n} points differ by more than 1e-3 in log q");
    Ok(())
}
