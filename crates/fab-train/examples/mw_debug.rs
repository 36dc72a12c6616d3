//! Debug: where do exploding AIS weights come from on Many Well?
use fab_core::LogDensity;
use fab_train::{ExperimentConfig, Trainer};
fn main() {
    let text = std::fs::read_to_string("experiments/many_well/cpu.toml").unwrap();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = ExperimentConfig::from_toml_with_overrides(&text, &args).unwrap();
    let mut t = Trainer::new(cfg).unwrap();
    for it in 0..80 {
        let info = t.step().unwrap();
        let lz = info.log_z_ais.unwrap();
        if it % 5 == 0 || lz > 1000.0 {
            println!("it {} loss {:.3} gn {:.3} logz {:.3e} skip {}", info.iteration, info.loss, info.grad_norm, lz, info.skipped_steps);
        }
        if lz > 1000.0 {
            let b = t.buffer().unwrap();
            let lw = b.log_w();
            let (imax, _) = lw.iter().enumerate().fold((0, f64::NEG_INFINITY), |a, (i, v)| if *v > a.1 { (i, *v) } else { a });
            let d = b.dim();
            let x = &b.x()[imax * d..(imax + 1) * d];
            let xt = candle_core::Tensor::from_slice(x, (1, d), &candle_core::Device::Cpu).unwrap().to_dtype(t.flow().dtype()).unwrap();
            let lq = t.flow().log_prob(&xt).unwrap();
            let lp = t.target().density().log_prob(&xt).unwrap();
            println!("  max log_w {:.3e} at |x|max {:.3}, log q {:?} log p {:?} log_q_old {:.3e}", lw[imax], x.iter().fold(0.0f64, |a, v| a.max(v.abs())), fab_core::to_f64_vec(&lq).unwrap(), fab_core::to_f64_vec(&lp).unwrap(), b.log_q_old()[imax]);
            println!("  x = {:?}", x.iter().map(|v| (v * 100.0).round() / 100.0).collect::<Vec<_>>());
            break;
        }
    }
}
