//! PNG reports of a run: samples over target contours (GMM), pairwise marginals of the first
//! four coordinates over the target's 2-D marginals (Many Well, as the paper's Figure 11), and
//! training curves from `metrics.jsonl`.

use std::path::Path;

use candle_core::{Device, Tensor};
use fab_core::LogDensity;
use serde_json::Value;

use crate::eval::EvalSamples;
use crate::plot::{self, Bounds2d, ContourOptions, CurveOptions, CurvePanel, PairwiseOptions, SamplePanel, Series};
use crate::target::Target;
use crate::{Result, Trainer, TrainError};

/// Points drawn per scatter panel.
const MAX_POINTS: usize = 1000;

fn points_2d(xs: &[f64], d: usize, i: usize, j: usize, max: usize) -> Vec<[f64; 2]> {
    xs.chunks_exact(d).take(max).map(|r| [r[i], r[j]]).collect()
}

/// Writes the plots of a run into `out/plots`.
pub fn write_plots(trainer: &Trainer, samples: &EvalSamples, out: &Path) -> Result<()> {
    let dir = out.join("plots");
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let name = &trainer.config().name;
    let d = trainer.target().dim();
    match trainer.target() {
        Target::Gmm(g) if d == 2 => {
            let lp = |x: f64, y: f64| -> f64 {
                Tensor::new(&[[x, y]], &Device::Cpu)
                    .and_then(|t| t.to_dtype(g.dtype()))
                    .ok()
                    .and_then(|t| g.log_prob(&t).ok())
                    .and_then(|t| fab_core::to_f64_vec(&t).ok())
                    .map_or(f64::NAN, |v| v[0])
            };
            let mut panels = vec![
                SamplePanel::new("flow samples", points_2d(&samples.flow, 2, 0, 1, MAX_POINTS)),
                SamplePanel::new("AIS samples (target p)", points_2d(&samples.ais, 2, 0, 1, MAX_POINTS)),
            ];
            let buf = trainer.buffer_points(MAX_POINTS);
            if !buf.is_empty() {
                panels.push(SamplePanel::new("buffer samples", points_2d(&buf, 2, 0, 1, MAX_POINTS)));
            }
            // The FAB GMM lives in [−40, 40]²; the paper's figure shows [−50, 50]².
            let r = g.means().iter().fold(0.0f64, |a, v| a.max(v.abs())) + 4.0 * g.stds().iter().fold(0.0f64, |a, v| a.max(*v));
            plot::contour_samples_2d(
                dir.join("samples.png"),
                &format!("{name}: samples over contours of log p"),
                &lp,
                Bounds2d::square(-r.max(10.0), r.max(10.0)),
                &panels,
                &ContourOptions::default(),
            )
            ?;
        }
        Target::ManyWell(_) if d >= 4 => {
            // 2-D marginals of Many Well: a pair (2i, 2i+1) is one double well; coordinates of
            // different wells are independent, so their marginal is the sum of 1-D marginals.
            let one_d = |k: usize, v: f64| -> f64 {
                if k % 2 == 0 {
                    fab_targets::many_well::log_p_x1(v)
                } else {
                    -0.5 * v * v
                }
            };
            let marginal = |i: usize, j: usize, xi: f64, xj: f64| one_d(i, xi) + one_d(j, xj);
            let flow: Vec<Vec<f64>> = samples.flow.chunks_exact(d).take(MAX_POINTS).map(<[f64]>::to_vec).collect();
            plot::pairwise_marginals(
                dir.join("flow_marginals.png"),
                &format!("{name}: flow samples, coordinates 1–4"),
                &marginal,
                [-3.0, 3.0],
                &flow,
                &[0, 1, 2, 3],
                &PairwiseOptions::default(),
            )
            ?;
            let ais: Vec<Vec<f64>> = samples.ais.chunks_exact(d).take(MAX_POINTS).map(<[f64]>::to_vec).collect();
            plot::pairwise_marginals(
                dir.join("ais_marginals.png"),
                &format!("{name}: AIS samples, coordinates 1–4"),
                &marginal,
                [-3.0, 3.0],
                &ais,
                &[0, 1, 2, 3],
                &PairwiseOptions::default(),
            )
            ?;
        }
        Target::Aldp(_) => aldp_plots(trainer, samples, &dir, name)?,
        _ => {}
    }
    training_curves(out, &dir.join("training.png"), name)
}

/// Ramachandran plots (log-density colour scale, as the paper's Figure 4) of the reference, the
/// flow, the re-weighted flow, AIS and re-weighted AIS, and the φ marginal on a log scale
/// (Figure 3b).
fn aldp_plots(trainer: &Trainer, samples: &EvalSamples, dir: &Path, name: &str) -> Result<()> {
    use crate::aldp_eval::{importance_weights, phi_psi_of_flow};
    let (phi_f, psi_f) = phi_psi_of_flow(&samples.flow)?;
    let (phi_a, psi_a) = phi_psi_of_flow(&samples.ais)?;
    let w_f = importance_weights(&samples.flow_log_w);
    let w_a = importance_weights(&samples.ais_log_w);
    let mut panels = Vec::new();
    if let Some(r) = trainer.aldp_reference() {
        panels.push(plot::RamachandranPanel { title: "reference (replica exchange)", phi: &r.phi, psi: &r.psi, weights: None });
    }
    panels.push(plot::RamachandranPanel { title: "flow", phi: &phi_f, psi: &psi_f, weights: None });
    panels.push(plot::RamachandranPanel { title: "flow, re-weighted", phi: &phi_f, psi: &psi_f, weights: Some(&w_f) });
    panels.push(plot::RamachandranPanel { title: "AIS", phi: &phi_a, psi: &psi_a, weights: None });
    panels.push(plot::RamachandranPanel { title: "AIS, re-weighted", phi: &phi_a, psi: &psi_a, weights: Some(&w_a) });
    plot::ramachandran_panels(dir.join("ramachandran.png"), &format!("{name}: Ramachandran plots (φ, ψ)"), &panels, &plot::RamachandranOptions::default())?;
    let mut series = Vec::new();
    if let Some(r) = trainer.aldp_reference() {
        series.push(plot::HistogramSeries::new("reference", &r.phi));
    }
    series.push(plot::HistogramSeries::new("flow", &phi_f));
    series.push(plot::HistogramSeries::new("flow, re-weighted", &phi_f).weighted(&w_f));
    series.push(plot::HistogramSeries::new("AIS, re-weighted", &phi_a).weighted(&w_a));
    plot::histogram_1d_log(
        dir.join("phi_marginal.png"),
        &format!("{name}: marginal of φ"),
        &series,
        [-std::f64::consts::PI, std::f64::consts::PI],
        200,
        &plot::Histogram1dOptions { x_label: "φ (rad)".into(), max_decades: Some(7.0), ..Default::default() },
    )?;
    Ok(())
}

/// Panels of loss, ESS and test-set log q against iteration, read back from `metrics.jsonl`
/// (so a resumed run plots its whole history).
fn training_curves(out: &Path, path: &Path, name: &str) -> Result<()> {
    let file = out.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&file) else { return Ok(()) };
    let rows: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let series = |kind: &str, key: &str| -> (Vec<f64>, Vec<f64>) {
        rows.iter()
            .filter(|r| r["kind"] == kind)
            .filter_map(|r| Some((r["iteration"].as_f64()?, r[key].as_f64().unwrap_or(f64::NAN))))
            .unzip()
    };
    let mut panels = Vec::new();
    let (x, y) = series("train", "loss");
    if !x.is_empty() {
        // Running median over 9 logged iterations: the buffer's weight ratios make single
        // iterations spike by many orders of magnitude, which would flatten a raw curve.
        let med: Vec<f64> = (0..y.len())
            .map(|i| {
                let mut w: Vec<f64> = y[i.saturating_sub(4)..(i + 5).min(y.len())].iter().copied().filter(|v| v.is_finite()).collect();
                w.sort_by(f64::total_cmp);
                if w.is_empty() {
                    f64::NAN
                } else {
                    w[w.len() / 2]
                }
            })
            .collect();
        panels.push(CurvePanel::single("loss (running median of 9)", x, med, false).with_y_label("loss"));
    }
    let (xe, ye) = series("eval", "eval_ess_flow");
    let (xa, ya) = series("eval", "eval_ess_ais");
    if !xe.is_empty() {
        panels.push(CurvePanel::multi("effective sample size", vec![Series::new("flow", xe, ye), Series::new("AIS", xa, ya)], false).with_y_label("ESS fraction"));
    }
    for key in ["test_set_mean_log_prob", "test_set_modes_mean_log_prob", "test_set_exact_mean_log_prob", "kl_forward", "ramachandran_kl_flow", "test_log_likelihood"] {
        let (x, y) = series("eval", key);
        if x.iter().zip(&y).any(|(_, v)| v.is_finite()) {
            panels.push(CurvePanel::single(key, x, y, false));
        }
    }
    let (x, y) = series("train", "ess_ais");
    if !x.is_empty() {
        panels.push(CurvePanel::single("ESS of the training AIS batch", x, y, true));
    }
    if panels.is_empty() {
        return Ok(());
    }
    plot::training_curves(path, &format!("{name}: training"), &panels, &CurveOptions::default())?;
    Ok(())
}
