//! Training curves of any run, read back from `metrics.jsonl` (so a resumed run plots its whole
//! history).

use std::path::Path;

use fab_plot::{CurveOptions, CurvePanel, Series};
use serde_json::Value;

use crate::Result;

/// Running median over `2·half + 1` values, ignoring non-finite ones.
fn running_median(y: &[f64], half: usize) -> Vec<f64> {
    (0..y.len())
        .map(|i| {
            let mut w: Vec<f64> =
                y[i.saturating_sub(half)..(i + half + 1).min(y.len())].iter().copied().filter(|v| v.is_finite()).collect();
            w.sort_by(f64::total_cmp);
            if w.is_empty() {
                f64::NAN
            } else {
                w[w.len() / 2]
            }
        })
        .collect()
}

/// A vertical range that keeps the bulk of a curve readable: the 5–95 % quantiles of the
/// values after the first 10 % of the abscissa (where early evaluations and warm-up sit), padded
/// by 20 % of their distance; `None` (all the data) unless the full range is more than 3× that
/// distance, so that a merely noisy curve is drawn whole.
pub fn robust_y_range(series: &[(&[f64], &[f64])]) -> Option<(f64, f64)> {
    let finite = |s: &&(&[f64], &[f64])| -> Vec<(f64, f64)> {
        s.0.iter().zip(s.1.iter()).filter(|(a, b)| a.is_finite() && b.is_finite()).map(|(&a, &b)| (a, b)).collect()
    };
    let points: Vec<(f64, f64)> = series.iter().flat_map(|s| finite(&s)).collect();
    if points.len() < 5 {
        return None;
    }
    let (x0, x1) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.0), h.max(p.0)));
    let settled: Vec<f64> = points.iter().filter(|p| p.0 >= x0 + 0.1 * (x1 - x0)).map(|p| p.1).collect();
    if settled.len() < 3 {
        return None;
    }
    let (lo, hi) = (fab_core::stats::quantile(&settled, 0.05), fab_core::stats::quantile(&settled, 0.95));
    let all: Vec<f64> = points.iter().map(|p| p.1).collect();
    let (min, max) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let r = hi - lo;
    if !(r > 0.0) || max - min <= 3.0 * r {
        return None;
    }
    Some(((lo - 0.2 * r).max(min), (hi + 0.2 * r).min(max)))
}

/// Applies [`robust_y_range`] to a linear panel.
fn robust(panel: CurvePanel) -> CurvePanel {
    if panel.log_y {
        return panel;
    }
    let series: Vec<(&[f64], &[f64])> = panel.series.iter().map(|s| (s.x.as_slice(), s.y.as_slice())).collect();
    match robust_y_range(&series) {
        Some((lo, hi)) => panel.with_y_range(lo, hi),
        None => panel,
    }
}

/// Panels of the loss, every `eval_ess_*` series, the headline test metrics that exist (FAB's
/// test log-likelihoods and KLs, the diffusion samplers' Δlog Z^RW and W2, the GFlowNets' exact L1
/// and goals found) and the ESS of the training AIS batch (FAB), written to `path`.
pub fn training_curves(out: &Path, path: &Path, name: &str) -> Result<()> {
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
        // Running median over 9 logged iterations: importance-weighted losses make single
        // iterations spike by orders of magnitude, which would flatten a raw curve.
        panels.push(CurvePanel::single("loss (running median of 9)", x, running_median(&y, 4), false).with_y_label("loss"));
    }
    let mut ess_keys: Vec<String> = rows
        .iter()
        .filter(|r| r["kind"] == "eval")
        .flat_map(|r| {
            r.as_object().map(|o| o.keys().filter(|k| k.starts_with("eval_ess_")).cloned().collect::<Vec<_>>()).unwrap_or_default()
        })
        .collect();
    ess_keys.sort();
    ess_keys.dedup();
    let ess: Vec<Series> = ess_keys
        .iter()
        .map(|k| {
            let (x, y) = series("eval", k);
            Series::new(k.trim_start_matches("eval_ess_").to_uppercase().replace("FLOW", "flow").replace("MODEL", "model"), x, y)
        })
        .collect();
    if !ess.is_empty() {
        panels.push(CurvePanel::multi("effective sample size", ess, false).with_y_label("ESS fraction"));
    }
    for key in [
        "test_set_mean_log_prob",
        "test_set_modes_mean_log_prob",
        "test_set_exact_mean_log_prob",
        "kl_forward",
        "ramachandran_kl_flow",
        "test_log_likelihood",
    ] {
        let (x, y) = series("eval", key);
        if x.iter().zip(&y).any(|(_, v)| v.is_finite()) {
            panels.push(CurvePanel::single(key, x, y, false));
        }
    }
    // Errors that shrink by orders of magnitude (diffusion samplers, GFlowNets) on log axes.
    for key in ["delta_log_z_rw", "w2", "exact_l1", "n_goals_found"] {
        let (x, y) = series("eval", key);
        if x.iter().zip(&y).any(|(_, v)| v.is_finite()) {
            panels.push(CurvePanel::single(key, x, y, matches!(key, "delta_log_z_rw" | "exact_l1")));
        }
    }
    let (x, y) = series("train", "ess_ais");
    if x.iter().zip(&y).any(|(_, v)| v.is_finite()) {
        panels.push(CurvePanel::single("ESS of the training AIS batch", x, y, true));
    }
    if panels.is_empty() {
        return Ok(());
    }
    let panels: Vec<CurvePanel> = panels.into_iter().map(robust).collect();
    fab_plot::training_curves(path, &format!("{name}: training"), &panels, &CurveOptions::default())?;
    Ok(())
}

/// Points drawn per run and panel in [`compare_runs`] (longer series are thinned evenly).
const MAX_COMPARE_POINTS: usize = 2000;

/// One figure comparing several runs: for every key of `y_keys` a panel of that metric against
/// `x_key` (e.g. `n_goals_found` and `exact_l1` against `n_reward_calls`), one line per run,
/// from every line of each run's `metrics.jsonl` that has both keys. `log_y` keys get a log axis;
/// `log_x` puts `x_key` on one (a budget spanning decades).
///
/// # Errors
/// No runs, a run without `metrics.jsonl`, a key no run reports, or plotting errors.
pub fn compare_runs(
    runs: &[(String, std::path::PathBuf)],
    x_key: &str,
    log_x: bool,
    y_keys: &[String],
    log_y: &[String],
    path: &Path,
    title: &str,
) -> Result<()> {
    use crate::Error;
    if runs.is_empty() || y_keys.is_empty() {
        return Err(Error::Config("compare: give at least one run directory and one --y key".into()));
    }
    let mut loaded = Vec::new();
    for (label, dir) in runs {
        let file = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let rows: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        loaded.push((label.clone(), rows));
    }
    // Labels without what all runs share (e.g. "-d4-H16-s0"), and, past the ten qualitative
    // colours, one colour per run from a sequential map so that no two runs look alike.
    let labels = strip_common_suffix(&loaded.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>());
    let n_runs = loaded.len();
    let colour = |i: usize| (n_runs > fab_plot::QUALITATIVE.len()).then(|| fab_plot::viridis(0.92 * i as f64 / (n_runs - 1) as f64));
    let mut panels = Vec::new();
    for key in y_keys {
        let mut series = Vec::new();
        for (i, ((_, rows), label)) in loaded.iter().zip(&labels).enumerate() {
            let mut pts: Vec<(f64, f64)> = rows.iter().filter_map(|r| Some((r[x_key].as_f64()?, r[key.as_str()].as_f64()?))).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if pts.len() > MAX_COMPARE_POINTS {
                let step = pts.len().div_ceil(MAX_COMPARE_POINTS);
                let last = *pts.last().expect("non-empty");
                pts = pts.into_iter().step_by(step).collect();
                pts.push(last);
            }
            if !pts.is_empty() {
                let (x, y): (Vec<f64>, Vec<f64>) = pts.into_iter().unzip();
                let mut line = Series::new(label.clone(), x, y);
                line.colour = colour(i);
                series.push(line);
            }
        }
        if series.is_empty() {
            return Err(Error::Config(format!("compare: no run reports both `{x_key}` and `{key}`")));
        }
        let panel = CurvePanel::multi(key.clone(), series, log_y.contains(key)).with_x_label(x_key).with_y_label(key.clone());
        panels.push(if log_x { panel.with_log_x() } else { panel });
    }
    // Room for a legend of many runs.
    let per_panel = if n_runs > 6 { (620, 560) } else { (420, 360) };
    let opts = CurveOptions {
        size: Some((per_panel.0 * panels.len().min(3) as u32, per_panel.1 * panels.len().div_ceil(3) as u32 + 50)),
        columns: None,
    };
    fab_plot::training_curves(path, title, &panels, &opts)?;
    Ok(())
}

/// The labels without their longest common suffix starting at a '-' (kept whole if that would
/// leave one empty).
fn strip_common_suffix(labels: &[String]) -> Vec<String> {
    if labels.len() < 2 {
        return labels.to_vec();
    }
    let first = &labels[0];
    let mut cut = first.len();
    for (i, c) in first.char_indices().rev() {
        let suffix = &first[i..];
        if labels.iter().all(|l| l.ends_with(suffix) && l.len() > suffix.len()) {
            if c == '-' {
                cut = i;
            }
        } else {
            break;
        }
    }
    labels.iter().map(|l| l[..l.len() - (first.len() - cut)].to_string()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn robust_range_drops_an_early_outlier_and_spikes_but_keeps_a_ramp() {
        let x: Vec<f64> = (0..50).map(f64::from).collect();
        // A KL that starts at 30 and settles near 0.5 ± 0.1: the first point would flatten the rest.
        let kl: Vec<f64> = x.iter().map(|&i| if i == 0.0 { 30.0 } else { 0.5 + 0.1 * (i * 0.7).sin() }).collect();
        let (lo, hi) = super::robust_y_range(&[(&x, &kl)]).expect("clipped");
        assert!(lo > 0.3 && hi < 0.75, "{lo} {hi}");
        // One late spike is off scale too.
        let mut spiky = kl.clone();
        spiky[0] = 0.5;
        spiky[30] = 1e6;
        let (_, hi) = super::robust_y_range(&[(&x, &spiky)]).expect("clipped");
        assert!(hi < 1.0, "{hi}");
        // A steady ramp (goals found) is drawn whole.
        assert_eq!(super::robust_y_range(&[(&x, &x)]), None);
        // Too few points: whole.
        assert_eq!(super::robust_y_range(&[(&x[..3], &kl[..3])]), None);
    }

    #[test]
    fn running_median_ignores_spikes_and_nans() {
        let y = [1.0, 1.0, 1e9, 1.0, f64::NAN, 1.0, 1.0];
        // Windows of 5: the spike and the NaN are each outvoted.
        let m = super::running_median(&y, 2);
        assert!(m.iter().all(|v| *v == 1.0), "{m:?}");
    }
}
