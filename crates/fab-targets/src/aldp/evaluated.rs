//! Alanine dipeptide as a [`Target`]: the flow-coordinate density, the chirality filter, and
//! its own metrics and plots against the shipped replica-exchange reference.

use fab_core::LogDensity;
use fab_sampler::{EvalContext, PlotContext, SampleFilter, Target, WeightedSamples};

use super::eval::{self, AldpReference};
use super::{is_l_form, AldpTarget};

/// The alanine-dipeptide target with the reference samples its metrics compare against.
#[derive(Debug, Clone)]
pub struct AldpEvalTarget {
    target: AldpTarget,
    reference: Option<AldpReference>,
    reference_error: Option<String>,
}

impl AldpEvalTarget {
    /// The target with the shipped reference ([`eval::load_reference`]); if it cannot be
    /// loaded, the reference metrics are skipped with a note naming the reason.
    pub fn with_shipped_reference(target: AldpTarget) -> Self {
        match eval::load_reference() {
            Ok(r) => Self { target, reference: Some(r), reference_error: None },
            Err(e) => Self { target, reference: None, reference_error: Some(e.to_string()) },
        }
    }

    /// The target with the given reference (or none).
    pub fn new(target: AldpTarget, reference: Option<AldpReference>) -> Self {
        Self { target, reference, reference_error: None }
    }

    /// The reference samples, if loaded.
    pub fn reference(&self) -> Option<&AldpReference> {
        self.reference.as_ref()
    }

    /// The density in flow coordinates.
    pub fn target(&self) -> &AldpTarget {
        &self.target
    }
}

/// Keeps the L-form (the chirality the force field describes) of alanine-dipeptide samples in
/// flow coordinates.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChiralityFilter;

impl SampleFilter for ChiralityFilter {
    fn keep(&self, x: &[f64], dim: usize) -> Vec<bool> {
        x.chunks_exact(dim).map(|z| is_l_form(z).unwrap_or(false)).collect()
    }
}

fn insert_basins(ctx: &mut EvalContext<'_>, suffix: &str, phi: &[f64], psi: &[f64], w: Option<&[f64]>) {
    match eval::basin_populations(phi, psi, w) {
        Ok(b) => {
            ctx.insert(format!("basin_beta_c5_{suffix}"), b.beta_c5);
            ctx.insert(format!("basin_alpha_r_{suffix}"), b.alpha_r);
            ctx.insert(format!("basin_alpha_l_{suffix}"), b.alpha_l);
        }
        Err(e) => ctx.note(format!("basin_alpha_l_{suffix}"), e.to_string()),
    }
}

impl Target for AldpEvalTarget {
    fn density(&self) -> &dyn LogDensity {
        &self.target
    }

    /// `alpha_l_fraction`: the share of the batch in the rare αL/C7ax basin (φ > 0);
    /// `alpha_l_weight`: its share of the batch's self-normalised weights.
    fn batch_stats(&self, x: &[f64], log_w: &[f64]) -> Vec<(String, f64)> {
        let Ok((phi, psi)) = eval::phi_psi_of_flow(x) else { return Vec::new() };
        let mut out = Vec::new();
        if let Ok(b) = eval::basin_populations(&phi, &psi, None) {
            out.push(("alpha_l_fraction".to_string(), b.alpha_l));
        }
        if log_w.len() == phi.len() {
            if let Ok(b) = eval::basin_populations(&phi, &psi, Some(&eval::importance_weights(log_w))) {
                out.push(("alpha_l_weight".to_string(), b.alpha_l));
            }
        }
        out
    }

    fn filter(&self) -> Option<&dyn SampleFilter> {
        Some(&ChiralityFilter)
    }

    /// Per sample set S (the model's own first, e.g. `flow`, then refined ones, e.g. `ais`):
    /// `eval_ess_S_clipped` (largest 10⁻⁴ of the weights clipped, as the paper's table),
    /// re-weighted basin populations `basin_*_S_reweighted` and, with the reference, the
    /// Ramachandran KLs `ramachandran_kl_S[_reweighted][_100]` and the αL/C7ax part of the
    /// 64-bin ones (`ramachandran_kl_S[_reweighted]_alpha_l`), with what exact draws of the
    /// same number would score (`ramachandran_kl_S_floor`, `ramachandran_kl_S_alpha_l_floor`). For the model's own samples
    /// also: `l_form_fraction`, the ESS of its L-form samples alone (`eval_ess_S_l_form`) and
    /// the weight share of its D-form ones (`weight_d_form_S`), the share of its largest 10⁻³
    /// weights that are L-form αL samples (`weight_top_alpha_l_S`) and the ESS of the samples
    /// outside that basin (`eval_ess_S_outside_alpha_l`, a diagnostic), unweighted basins, the share of samples that are L-form and in
    /// αL/C7ax (`basin_alpha_l_S_l_form`), φ/ψ KLs, marginal KLs of the 60
    /// coordinates, and — for a model with an exact density — the Cartesian test
    /// log-likelihood of the reference samples.
    fn metrics(&self, ctx: &mut EvalContext<'_>) -> fab_sampler::Result<()> {
        let sets: Vec<(String, WeightedSamples)> = ctx.sets.iter().map(|s| (s.name.clone(), s.samples.clone())).collect();
        let Some((first, xf)) = sets.first().map(|(n, s)| (n.clone(), s.x.clone())) else { return Ok(()) };
        let fam = fab_sampler::Error::family;
        for (name, s) in &sets {
            ctx.insert_or_note(&format!("eval_ess_{name}_clipped"), eval::clipped_ess(&s.log_w, 1e-4));
        }
        let l_form = super::l_form_mask(&xf).map_err(fam)?;
        ctx.insert_or_note("l_form_fraction", eval::share_of(&l_form));
        let mut angles = Vec::new();
        for (name, s) in &sets {
            let (phi, psi) = eval::phi_psi_of_flow(&s.x).map_err(fam)?;
            let w = eval::importance_weights(&s.log_w);
            if *name == first {
                insert_basins(ctx, name, &phi, &psi, None);
                let c = eval::chirality_weights(&s.log_w, &l_form).map_err(fam)?;
                ctx.insert(format!("eval_ess_{name}_l_form"), c.ess_l_form);
                ctx.insert(format!("weight_d_form_{name}"), c.d_form_weight);
                // The rare basin among L-form samples only: the D-form mirror image of αR lies
                // in the same (φ, ψ) window, so `basin_alpha_l_S` alone can hide a lost basin.
                let alpha_l = eval::l_form_alpha_l_mask(&phi, &psi, &l_form).map_err(fam)?;
                ctx.insert_or_note(&format!("basin_alpha_l_{name}_l_form"), eval::share_of(&alpha_l));
                let (share, ess_outside) = eval::alpha_l_weight_tail(&s.log_w, &alpha_l, 1e-3).map_err(fam)?;
                ctx.insert(format!("weight_top_alpha_l_{name}"), share);
                ctx.insert(format!("eval_ess_{name}_outside_alpha_l"), ess_outside);
            }
            insert_basins(ctx, &format!("{name}_reweighted"), &phi, &psi, Some(&w));
            angles.push((name.clone(), phi, psi, w));
        }
        let Some(r) = &self.reference else {
            let why = match &self.reference_error {
                Some(e) => format!("{e} (a binary moved out of its source tree finds it through FAB_ALDP_REFERENCE_DIR)"),
                None => "no reference given".into(),
            };
            ctx.note("ramachandran_kl_flow", format!("alanine-dipeptide reference not loaded: {why}"));
            return Ok(());
        };
        for bins in [eval::RAMACHANDRAN_BINS, eval::RAMACHANDRAN_BINS_FINE] {
            let sfx = if bins == eval::RAMACHANDRAN_BINS { String::new() } else { format!("_{bins}") };
            for (name, phi, psi, w) in &angles {
                for (variant, weights) in [("", None), ("_reweighted", Some(w.as_slice()))] {
                    let kl = r.ramachandran_kl_split(phi, psi, weights, bins).map_err(fam)?;
                    ctx.insert(format!("ramachandran_kl_{name}{variant}{sfx}"), kl.total);
                    if bins == eval::RAMACHANDRAN_BINS {
                        ctx.insert(format!("ramachandran_kl_{name}{variant}_alpha_l"), kl.alpha_l);
                    }
                }
                if bins == eval::RAMACHANDRAN_BINS {
                    let n = phi.iter().zip(psi).filter(|(a, b)| a.is_finite() && b.is_finite()).count();
                    match r.ramachandran_kl_floor(n, bins) {
                        Ok(floor) => {
                            ctx.insert(format!("ramachandran_kl_{name}_floor"), floor.total);
                            ctx.insert(format!("ramachandran_kl_{name}_alpha_l_floor"), floor.alpha_l);
                        }
                        Err(e) => ctx.note(format!("ramachandran_kl_{name}_floor"), e.to_string()),
                    }
                }
            }
        }
        let (_, phi_f, psi_f, w_f) = &angles[0];
        let (kphi, kpsi) = r.phi_psi_kl(phi_f, psi_f, None).map_err(fam)?;
        ctx.insert(format!("phi_kl_{first}"), kphi);
        ctx.insert(format!("psi_kl_{first}"), kpsi);
        let kls = eval::marginal_kls(&r.z, &xf, None).map_err(fam)?;
        let s = eval::summarize_marginal_kls(&kls).map_err(fam)?;
        ctx.insert("marginal_kl_mean", kls.iter().sum::<f64>() / kls.len() as f64);
        ctx.insert("marginal_kl_bond_mean", s.bond_mean);
        ctx.insert("marginal_kl_angle_mean", s.angle_mean);
        ctx.insert("marginal_kl_dihedral_mean", s.dihedral_mean);
        // Mean log-likelihood of the reference samples in Cartesian space.
        match ctx.model.log_prob(&r.z) {
            Some(lq) => {
                let lq = lq?;
                let ld = eval::log_det_dx_dz(&r.z).map_err(fam)?;
                ctx.insert_or_note("test_log_likelihood", eval::cartesian_log_likelihood(&lq, &ld));
            }
            None => ctx.note("test_log_likelihood", "the sampler has no exact density"),
        }
        match r.basin_populations() {
            Ok(rb) => {
                ctx.insert("basin_alpha_l_reference", rb.alpha_l);
                match eval::basin_populations(phi_f, psi_f, Some(w_f)) {
                    Ok(fb) => ctx.insert(format!("basin_max_abs_error_{first}_reweighted"), fb.max_abs_diff(&rb)),
                    Err(e) => ctx.note(format!("basin_max_abs_error_{first}_reweighted"), e.to_string()),
                }
            }
            Err(e) => ctx.note("basin_alpha_l_reference", e.to_string()),
        }
        Ok(())
    }

    /// `ramachandran.png` (reference and every set, plain and re-weighted, log-density colour
    /// scale as the paper's Figure 4) and `phi_marginal.png` (φ marginal on a log scale).
    fn plots(&self, ctx: &PlotContext<'_>) -> fab_sampler::Result<()> {
        let fam = fab_sampler::Error::family;
        let mut angles = Vec::new();
        for s in ctx.sets {
            let (phi, psi) = eval::phi_psi_of_flow(&s.samples.x).map_err(fam)?;
            let label = if s.name == "ais" { "AIS".to_string() } else { s.name.clone() };
            angles.push((label, phi, psi, eval::importance_weights(&s.samples.log_w)));
        }
        let titles: Vec<(String, String)> = angles.iter().map(|(l, ..)| (l.clone(), format!("{l}, re-weighted"))).collect();
        let mut panels = Vec::new();
        if let Some(r) = &self.reference {
            panels.push(fab_plot::RamachandranPanel { title: "reference (replica exchange)", phi: &r.phi, psi: &r.psi, weights: None });
        }
        for ((_, phi, psi, w), (plain, rew)) in angles.iter().zip(&titles) {
            panels.push(fab_plot::RamachandranPanel { title: plain, phi, psi, weights: None });
            panels.push(fab_plot::RamachandranPanel { title: rew, phi, psi, weights: Some(w) });
        }
        fab_plot::ramachandran_panels(
            ctx.dir.join("ramachandran.png"),
            &format!("{}: Ramachandran plots (φ, ψ)", ctx.title),
            &panels,
            &fab_plot::RamachandranOptions::default(),
        )?;
        let mut series = Vec::new();
        if let Some(r) = &self.reference {
            series.push(fab_plot::HistogramSeries::new("reference", &r.phi));
        }
        for (i, ((_, phi, _, w), (plain, rew))) in angles.iter().zip(&titles).enumerate() {
            if i == 0 {
                series.push(fab_plot::HistogramSeries::new(plain, phi));
            }
            series.push(fab_plot::HistogramSeries::new(rew, phi).weighted(w));
        }
        fab_plot::histogram_1d_log(
            ctx.dir.join("phi_marginal.png"),
            &format!("{}: marginal of φ", ctx.title),
            &series,
            [-std::f64::consts::PI, std::f64::consts::PI],
            200,
            &fab_plot::Histogram1dOptions { x_label: "φ (rad)".into(), max_decades: Some(7.0), ..Default::default() },
        )?;
        Ok(())
    }
}
