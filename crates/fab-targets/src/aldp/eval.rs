//! Alanine-dipeptide evaluation metrics on host data, exactly as fab-torch defines them
//! (docs/ALGORITHMS.md, "Evaluation metrics"), plus basin populations, clipped ESS and the shipped replica-exchange reference.
//!
//! All functions are pure: they take samples (flow coordinates `z: [n, 60]` row-major, or
//! Ramachandran angles in radians) and optional importance weights, and return numbers.
//!
//! * Histograms follow `numpy.histogram(…, range=…, density=True)`: equal-width bins on
//!   [lo, hi], every bin half-open [e_i, e_{i+1}) except the last, which includes hi; values
//!   outside the range or NaN are dropped; densities are count (or weight) / (in-range total ×
//!   bin width).
//! * KL divergences are Σ h_ref·ln((h_ref + ε)/(h_gen + ε))·(cell size) with ε = 1e-10
//!   ([`KL_EPS`]); the reference histogram is unweighted, the generated one optionally weighted
//!   (importance re-weighting with self-normalised weights, [`importance_weights`]).
//! * A generated histogram with no in-range mass is all zeros (numpy would give NaN); a
//!   reference without in-range mass, mismatched lengths and negative or non-finite weights are
//!   errors.
//!
//! Basins ([`Basin`]) are defined on (φ, ψ) in radians, (−π, π]:
//! * αL/C7ax: 0 < φ < [`PHI_L_MAX`] (= 2.2 rad ≈ 126°);
//! * αR: φ outside that window and [`PSI_ALPHA_MIN`] ≤ ψ < [`PSI_ALPHA_MAX`] (−2.2 ≤ ψ < 0.5 rad,
//!   ≈ −126° … 29°);
//! * β/C5/PII/C7eq (the extended region): φ outside the αL window and ψ outside that band.
//!
//! `docs/ALDP_REFERENCE.md` gives the reasoning (boundaries on low-density ridges of the
//! reference) and the reference populations with error bars.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::{phi_psi, InternalCoordinates, CART_DIM, FLOW_DIM};
use fab_core::npy;
use serde::{Deserialize, Serialize};

use crate::{Result, TargetError};

/// ε added to both densities inside the logarithm of every KL (fab-torch).
pub const KL_EPS: f64 = 1e-10;
/// Bins per axis of the paper's Ramachandran KL.
pub const RAMACHANDRAN_BINS: usize = 64;
/// Bins per axis of the finer Ramachandran KL also reported.
pub const RAMACHANDRAN_BINS_FINE: usize = 100;
/// Bins of the 1-D φ and ψ KLs, on [−π, π].
pub const ANGLE_BINS: usize = 200;
/// Bins of the 1-D marginal KLs of the 60 flow coordinates.
pub const MARGINAL_BINS: usize = 200;
/// Range of the 1-D marginal histograms.
pub const MARGINAL_RANGE: (f64, f64) = (-5.0, 5.0);

/// Upper φ limit (rad) of the αL/C7ax basin 0 < φ < `PHI_L_MAX`.
pub const PHI_L_MAX: f64 = 2.2;
/// Lower ψ limit (rad, inclusive) of the αR band for φ outside the αL window.
pub const PSI_ALPHA_MIN: f64 = -2.2;
/// Upper ψ limit (rad, exclusive) of the αR band.
pub const PSI_ALPHA_MAX: f64 = 0.5;

const PI: f64 = std::f64::consts::PI;

fn invalid(msg: impl Into<String>) -> TargetError {
    TargetError::Core(fab_core::Error::invalid(msg))
}

/// Checks optional weights: same length as the samples, finite and ≥ 0.
fn check_weights(w: Option<&[f64]>, n: usize, what: &str) -> Result<()> {
    if let Some(w) = w {
        if w.len() != n {
            return Err(invalid(format!("{what}: {} weights for {n} samples", w.len())));
        }
        if let Some(bad) = w.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(invalid(format!("{what}: weights must be finite and >= 0, got {bad}")));
        }
    }
    Ok(())
}

/// Checks a histogram's bin count and range: `bins ≥ 1`, finite `lo < hi`.
fn check_bins(bins: usize, lo: f64, hi: f64) -> Result<()> {
    if bins == 0 || !lo.is_finite() || !hi.is_finite() || lo >= hi {
        return Err(invalid(format!("histogram needs bins >= 1 and lo < hi, got {bins} on [{lo}, {hi}]")));
    }
    Ok(())
}

/// Density histogram of `values` (optionally weighted) with `bins` equal bins on [lo, hi], as
/// `numpy.histogram(values, bins, range=(lo, hi), weights, density=True)`. Returns the
/// densities and the in-range total weight; all zeros if that total is 0.
///
/// # Errors
/// `bins == 0`, an empty or reversed range, bad weights.
pub fn histogram_1d(values: &[f64], weights: Option<&[f64]>, bins: usize, lo: f64, hi: f64) -> Result<(Vec<f64>, f64)> {
    check_bins(bins, lo, hi)?;
    check_weights(weights, values.len(), "histogram")?;
    let h = fab_plot::histogram_1d(values, weights, [lo, hi], bins).map_err(|e| invalid(e.to_string()))?;
    Ok((h.densities(), h.total))
}

/// 2-D density histogram (`bins × bins`, row-major over x then y) of the pairs (x, y) on
/// [lo, hi]², as `numpy.histogram2d(x, y, bins, range=[[lo, hi], [lo, hi]], weights,
/// density=True)`. A pair is dropped if either value is outside or NaN.
///
/// # Errors
/// Length mismatch, `bins == 0`, an empty range, bad weights.
pub fn histogram_2d(x: &[f64], y: &[f64], weights: Option<&[f64]>, bins: usize, lo: f64, hi: f64) -> Result<(Vec<f64>, f64)> {
    let h = checked_histogram_2d(x, y, weights, bins, lo, hi, "histogram_2d")?;
    Ok((h.densities(), h.total))
}

/// The `bins × bins` histogram of the pairs (x, y) on [lo, hi]² after checking lengths, bins,
/// range and weights (`what` names the caller in errors).
fn checked_histogram_2d(
    x: &[f64],
    y: &[f64],
    weights: Option<&[f64]>,
    bins: usize,
    lo: f64,
    hi: f64,
    what: &str,
) -> Result<fab_plot::Histogram2d> {
    if x.len() != y.len() {
        return Err(invalid(format!("{what}: {} x values but {} y values", x.len(), y.len())));
    }
    check_bins(bins, lo, hi)?;
    check_weights(weights, x.len(), what)?;
    fab_plot::histogram_2d(x, y, weights, [lo, hi], [lo, hi], [bins, bins]).map_err(|e| invalid(e.to_string()))
}

/// Σ h_ref·ln((h_ref + ε)/(h_gen + ε))·`cell` over matching bins (ε = [`KL_EPS`]).
///
/// # Errors
/// Histograms of different lengths.
pub fn kl_from_densities(h_ref: &[f64], h_gen: &[f64], cell: f64) -> Result<f64> {
    Ok(kl_terms(h_ref, h_gen)?.iter().sum::<f64>() * cell)
}

/// The per-bin terms h_ref·ln((h_ref + ε)/(h_gen + ε)) of [`kl_from_densities`], before the
/// factor `cell`: their sum times the bin area is the KL.
///
/// # Errors
/// Histograms of different lengths.
pub fn kl_terms(h_ref: &[f64], h_gen: &[f64]) -> Result<Vec<f64>> {
    if h_ref.len() != h_gen.len() {
        return Err(invalid(format!("KL: histograms of {} and {} bins", h_ref.len(), h_gen.len())));
    }
    Ok(h_ref.iter().zip(h_gen).map(|(r, g)| r * ((r + KL_EPS) / (g + KL_EPS)).ln()).collect())
}

/// 1-D KL(ref ‖ gen) from density histograms with `bins` bins on [lo, hi]:
/// Σ h_ref ln((h_ref+ε)/(h_gen+ε))·(hi − lo)/bins. `gen_weights` re-weights the generated
/// samples (e.g. [`importance_weights`]).
///
/// # Errors
/// No reference sample in range, bad weights or range.
pub fn kl_1d(reference: &[f64], generated: &[f64], gen_weights: Option<&[f64]>, bins: usize, lo: f64, hi: f64) -> Result<f64> {
    let counts = counts_1d(reference, bins, lo, hi)?;
    if counts.iter().sum::<f64>() == 0.0 {
        return Err(invalid("KL: no reference sample inside the histogram range"));
    }
    kl_1d_from_counts(&counts, generated, gen_weights, lo, hi)
}

/// Bin counts of `values` with `bins` equal bins on [lo, hi] (binning as [`histogram_1d`]).
///
/// # Errors
/// `bins == 0`, an empty or reversed range.
pub fn counts_1d(values: &[f64], bins: usize, lo: f64, hi: f64) -> Result<Vec<f64>> {
    check_bins(bins, lo, hi)?;
    Ok(fab_plot::histogram_1d(values, None, [lo, hi], bins).map_err(|e| invalid(e.to_string()))?.counts)
}

/// Ramachandran KL(ref ‖ gen) exactly as in docs/ALGORITHMS.md, "Evaluation metrics": 2-D density histograms of (φ, ψ) with
/// `bins × bins` bins on [−π, π]² (64 in the paper, also reported with 100), ε = 1e-10,
/// KL = Σ h_ref ln((h_ref+ε)/(h_gen+ε))·(2π/bins)². NaN angles are dropped. `gen_weights`
/// gives the importance-re-weighted variant.
///
/// # Errors
/// Length mismatches, no reference pair in range, bad weights, `bins == 0`.
pub fn ramachandran_kl(
    ref_phi: &[f64],
    ref_psi: &[f64],
    gen_phi: &[f64],
    gen_psi: &[f64],
    gen_weights: Option<&[f64]>,
    bins: usize,
) -> Result<f64> {
    let counts = ramachandran_counts(ref_phi, ref_psi, None, bins)?;
    ramachandran_kl_from_counts(&counts, gen_phi, gen_psi, gen_weights, bins)
}

/// Bin counts (or weights) of the (φ, ψ) pairs on the `bins × bins` Ramachandran grid of
/// [`ramachandran_kl`], row-major over φ then ψ: what a reference ships to stand for its pairs.
///
/// # Errors
/// Length mismatches, bad weights, `bins == 0`.
pub fn ramachandran_counts(phi: &[f64], psi: &[f64], weights: Option<&[f64]>, bins: usize) -> Result<Vec<f64>> {
    Ok(checked_histogram_2d(phi, psi, weights, bins, -PI, PI, "ramachandran_counts")?.counts)
}

/// Densities of bin `counts` on bins of area `cell` (counts / (total · cell)).
fn densities_of_counts(counts: &[f64], cell: f64, what: &str) -> Result<Vec<f64>> {
    let total: f64 = counts.iter().sum();
    if !(total > 0.0) || counts.iter().any(|c| !(c.is_finite() && *c >= 0.0)) {
        return Err(invalid(format!("{what}: reference counts must be finite, >= 0 and not all zero")));
    }
    Ok(counts.iter().map(|c| c / (total * cell)).collect())
}

/// [`ramachandran_kl`] against a reference given by its bin counts ([`ramachandran_counts`]
/// with the same `bins`), e.g. the shipped histogram of every recorded reference pair.
///
/// # Errors
/// `ref_counts` not of length `bins²`, all zero or negative; as [`ramachandran_kl`] otherwise.
pub fn ramachandran_kl_from_counts(
    ref_counts: &[f64],
    gen_phi: &[f64],
    gen_psi: &[f64],
    gen_weights: Option<&[f64]>,
    bins: usize,
) -> Result<f64> {
    Ok(ramachandran_kl_split_from_counts(ref_counts, gen_phi, gen_psi, gen_weights, bins)?.total)
}

/// A Ramachandran KL and the part of it that comes from the rare basin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RamachandranKl {
    /// The whole KL, [`ramachandran_kl_from_counts`].
    pub total: f64,
    /// The sum of the KL's terms over the bins whose φ centre lies in the αL/C7ax window
    /// 0 < φ < [`PHI_L_MAX`] (the window of [`Basin::AlphaL`], at bin resolution). Where a model
    /// puts too little mass on the rare basin, its bins there hold few or no samples and this
    /// part carries most of the KL (docs/ALGORITHMS.md, "Alanine dipeptide").
    pub alpha_l: f64,
}

/// [`ramachandran_kl_from_counts`] together with its αL/C7ax part ([`RamachandranKl`]); the
/// total has the same bits as [`ramachandran_kl_from_counts`].
///
/// # Errors
/// As [`ramachandran_kl_from_counts`].
pub fn ramachandran_kl_split_from_counts(
    ref_counts: &[f64],
    gen_phi: &[f64],
    gen_psi: &[f64],
    gen_weights: Option<&[f64]>,
    bins: usize,
) -> Result<RamachandranKl> {
    let (hr, cell) = ramachandran_reference_densities(ref_counts, bins, "Ramachandran KL")?;
    let (hg, _) = histogram_2d(gen_phi, gen_psi, gen_weights, bins, -PI, PI)?;
    Ok(split_alpha_l(&kl_terms(&hr, &hg)?, bins, cell))
}

/// The reference's density histogram from its `bins × bins` Ramachandran counts, with the bin
/// area (2π/bins)² (`what` names the caller in errors).
///
/// # Errors
/// `ref_counts` not of length `bins²`, all zero or negative.
fn ramachandran_reference_densities(ref_counts: &[f64], bins: usize, what: &str) -> Result<(Vec<f64>, f64)> {
    if bins == 0 || ref_counts.len() != bins * bins {
        return Err(invalid(format!("{what}: {} reference counts for {bins}×{bins} bins", ref_counts.len())));
    }
    let w = 2.0 * PI / bins as f64;
    let cell = w * w;
    Ok((densities_of_counts(ref_counts, cell, what)?, cell))
}

/// 1-D KL(ref ‖ gen) of [`kl_1d`] against a reference given by its `bins` bin counts on [lo, hi].
///
/// # Errors
/// Counts of the wrong length, all zero or negative; as [`kl_1d`] otherwise.
pub fn kl_1d_from_counts(ref_counts: &[f64], generated: &[f64], gen_weights: Option<&[f64]>, lo: f64, hi: f64) -> Result<f64> {
    let bins = ref_counts.len();
    let hr = densities_of_counts(ref_counts, (hi - lo) / bins.max(1) as f64, "KL")?;
    let (hg, _) = histogram_1d(generated, gen_weights, bins, lo, hi)?;
    kl_from_densities(&hr, &hg, (hi - lo) / bins as f64)
}

/// Expected KL(p̂ ‖ p) between a histogram estimate p̂ and the distribution p it estimates: the
/// noise floor of a KL(ref ‖ model) against that reference, reached by a perfect model with
/// infinitely many samples. `batches` are the bin counts of consecutive blocks of the reference
/// chains (each block much longer than the autocorrelation time, so the blocks are nearly
/// independent); p̂ is their pooled histogram. To second order,
/// E[KL(p̂ ‖ p)] = Σ_k Var(p̂_k) / (2 p_k), with Var(p̂_k) estimated from the blocks as
/// B/(B − 1) · Σ_b (c_bk − p̂_k n_b)² / N² (n_b the block totals, N their sum). For B blocks of
/// independent draws this is (K − 1)/(2N) for K occupied bins.
///
/// # Errors
/// Fewer than two blocks, blocks with different numbers of bins, or no counts at all.
pub fn kl_noise_floor(batches: &[Vec<f64>]) -> Result<f64> {
    let nb = batches.len();
    if nb < 2 {
        return Err(invalid("kl_noise_floor: need at least two blocks"));
    }
    let k = batches[0].len();
    if batches.iter().any(|b| b.len() != k) {
        return Err(invalid("kl_noise_floor: blocks have different numbers of bins"));
    }
    let n_b: Vec<f64> = batches.iter().map(|b| b.iter().sum()).collect();
    let n: f64 = n_b.iter().sum();
    if !(n > 0.0) {
        return Err(invalid("kl_noise_floor: no counts"));
    }
    let mut floor = 0.0;
    for j in 0..k {
        let c: f64 = batches.iter().map(|b| b[j]).sum();
        if c == 0.0 {
            continue;
        }
        let p = c / n;
        let ss: f64 = batches.iter().zip(&n_b).map(|(b, nb)| (b[j] - p * nb).powi(2)).sum();
        let var = nb as f64 / (nb as f64 - 1.0) * ss / (n * n);
        floor += var / (2.0 * p);
    }
    Ok(floor)
}

/// The Ramachandran KL that `n_samples` exact draws from the reference histogram score against
/// it on average, with its αL/C7ax part ([`RamachandranKl`]): the floor of
/// [`ramachandran_kl_split_from_counts`] for a perfect model at that sample size (the
/// reference's own noise, [`kl_noise_floor`], comes on top). Each bin's count among the draws is
/// Binomial(`n_samples`, p_k) with p_k = `ref_counts`[k] / total, so every term's expectation is
/// a sum over that distribution (taken over ±(12 standard deviations + 12) around its mean, where
/// the neglected probability is below 10⁻²⁰). For a bin with n·p_k ≫ 1 the term is about
/// (1 − p_k)/(2n); for one with n·p_k ≪ 1 it is about p_k ln(h_ref/ε) · (bin area), the ε penalty
/// for a bin the draws miss: the reason a reference that resolves the rare tails has a floor
/// well above (K − 1)/(2n) (docs/ALDP_REFERENCE.md, "KL noise floor").
///
/// # Errors
/// `n_samples == 0`; `ref_counts` not of length `bins²`, all zero or negative.
pub fn ramachandran_kl_floor(ref_counts: &[f64], n_samples: usize, bins: usize) -> Result<RamachandranKl> {
    if n_samples == 0 {
        return Err(invalid("Ramachandran KL floor: no samples"));
    }
    let (hr, cell) = ramachandran_reference_densities(ref_counts, bins, "Ramachandran KL floor")?;
    let total: f64 = ref_counts.iter().sum();
    let n = n_samples as f64;
    let ln_fact_n = ln_factorial(n_samples);
    let terms: Vec<f64> = hr
        .iter()
        .zip(ref_counts)
        .map(|(&h, &c)| {
            if c == 0.0 {
                return 0.0;
            }
            let p = c / total;
            let (mean, sd) = (n * p, (n * p * (1.0 - p)).sqrt());
            let lo = (mean - 12.0 * sd - 12.0).floor().max(0.0) as usize;
            let hi = ((mean + 12.0 * sd + 12.0).ceil() as usize).min(n_samples);
            let (mut mass, mut expected_ln_gen) = (0.0, 0.0);
            for x in lo..=hi {
                let failures = n_samples - x;
                let mut ln_pmf = ln_fact_n - ln_factorial(x) - ln_factorial(failures) + x as f64 * p.ln();
                if failures > 0 {
                    ln_pmf += failures as f64 * (-p).ln_1p();
                }
                let pmf = ln_pmf.exp();
                mass += pmf;
                expected_ln_gen += pmf * (x as f64 / (n * cell) + KL_EPS).ln();
            }
            h * ((h + KL_EPS).ln() - expected_ln_gen / mass)
        })
        .collect();
    Ok(split_alpha_l(&terms, bins, cell))
}

/// ln x!: exact sum below 16, Stirling's series with three correction terms from there (error
/// below 10⁻¹³ relative to ln x!).
fn ln_factorial(x: usize) -> f64 {
    if x < 16 {
        return (2..=x).map(|i| (i as f64).ln()).sum();
    }
    let x = x as f64;
    let r = 1.0 / x;
    let r2 = r * r;
    x * x.ln() - x + 0.5 * (2.0 * PI * x).ln() + r * (1.0 / 12.0 - r2 * (1.0 / 360.0 - r2 / 1260.0))
}

/// Row-major Ramachandran KL terms (φ, then ψ; before the factor `cell`) summed whole and over
/// the bins whose centre [`basin_of`] puts in αL/C7ax (0 < φ < [`PHI_L_MAX`], any ψ).
fn split_alpha_l(terms: &[f64], bins: usize, cell: f64) -> RamachandranKl {
    let w = 2.0 * PI / bins as f64;
    let centre = |i: usize| -PI + (i as f64 + 0.5) * w;
    let in_alpha_l = |k: usize| basin_of(centre(k / bins), centre(k % bins)) == Some(Basin::AlphaL);
    let alpha_l = terms.iter().enumerate().filter(|(k, _)| in_alpha_l(*k)).map(|(_, t)| t).sum::<f64>() * cell;
    RamachandranKl { total: terms.iter().sum::<f64>() * cell, alpha_l }
}

/// The 1-D φ and ψ KLs of docs/ALGORITHMS.md, "Evaluation metrics" (200 bins on [−π, π], ·2π/200): returns (KL_φ, KL_ψ).
///
/// # Errors
/// As [`kl_1d`], and length mismatches between φ and ψ.
pub fn phi_psi_kl(ref_phi: &[f64], ref_psi: &[f64], gen_phi: &[f64], gen_psi: &[f64], gen_weights: Option<&[f64]>) -> Result<(f64, f64)> {
    if ref_phi.len() != ref_psi.len() || gen_phi.len() != gen_psi.len() {
        return Err(invalid("phi_psi_kl: φ and ψ must have the same length"));
    }
    Ok((kl_1d(ref_phi, gen_phi, gen_weights, ANGLE_BINS, -PI, PI)?, kl_1d(ref_psi, gen_psi, gen_weights, ANGLE_BINS, -PI, PI)?))
}

/// Kind of a flow coordinate for the grouping of the marginal KLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordKind {
    /// A bond length (the seed b1, b2 and every z-matrix bond).
    Bond,
    /// A bond angle (the seed angle and every z-matrix angle).
    Angle,
    /// A dihedral.
    Dihedral,
}

/// Kind of flow coordinate `i` (docs/ALGORITHMS.md, "Targets", flow layout: 0, 1 bonds, 2 angle, then (bond, angle,
/// dihedral) triples). Indices ≥ 60 are reported as dihedrals by the same rule; callers pass
/// i < 60.
pub fn coord_kind(i: usize) -> CoordKind {
    match i {
        0 | 1 => CoordKind::Bond,
        2 => CoordKind::Angle,
        _ => match (i - 3) % 3 {
            0 => CoordKind::Bond,
            1 => CoordKind::Angle,
            _ => CoordKind::Dihedral,
        },
    }
}

/// KL of every flow coordinate's marginal (docs/ALGORITHMS.md, "Evaluation metrics"): 200-bin density histograms on [−5, 5],
/// KL = Σ h_ref ln((h_ref+ε)/(h_gen+ε))·10/200. `ref_z` and `gen_z` are `[n, 60]` row-major.
///
/// # Errors
/// Lengths that are not multiples of 60, a coordinate without reference samples in range,
/// bad weights.
pub fn marginal_kls(ref_z: &[f64], gen_z: &[f64], gen_weights: Option<&[f64]>) -> Result<Vec<f64>> {
    if !ref_z.len().is_multiple_of(FLOW_DIM) || !gen_z.len().is_multiple_of(FLOW_DIM) {
        return Err(invalid(format!("marginal_kls: inputs must be [n, {FLOW_DIM}]")));
    }
    let (nr, ng) = (ref_z.len() / FLOW_DIM, gen_z.len() / FLOW_DIM);
    check_weights(gen_weights, ng, "marginal_kls")?;
    let (lo, hi) = MARGINAL_RANGE;
    (0..FLOW_DIM)
        .map(|i| {
            let r: Vec<f64> = (0..nr).map(|k| ref_z[k * FLOW_DIM + i]).collect();
            let g: Vec<f64> = (0..ng).map(|k| gen_z[k * FLOW_DIM + i]).collect();
            kl_1d(&r, &g, gen_weights, MARGINAL_BINS, lo, hi)
        })
        .collect()
}

/// Mean and median of the marginal KLs per coordinate kind (the reference's reported numbers).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MarginalKlSummary {
    /// Mean over the 21 bonds.
    pub bond_mean: f64,
    /// Median over the bonds.
    pub bond_median: f64,
    /// Mean over the 20 angles.
    pub angle_mean: f64,
    /// Median over the angles.
    pub angle_median: f64,
    /// Mean over the 19 dihedrals.
    pub dihedral_mean: f64,
    /// Median over the dihedrals.
    pub dihedral_median: f64,
}

fn mean_median(v: &mut [f64]) -> (f64, f64) {
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / n as f64;
    let median = if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) };
    (mean, median)
}

/// Groups 60 marginal KLs into bonds/angles/dihedrals (seed b1, b2 as bonds, the seed angle as
/// an angle) and returns each group's mean and median.
///
/// # Errors
/// Not exactly 60 values, or a NaN among them.
pub fn summarize_marginal_kls(kls: &[f64]) -> Result<MarginalKlSummary> {
    if kls.len() != FLOW_DIM || kls.iter().any(|v| v.is_nan()) {
        return Err(invalid(format!("summarize_marginal_kls: need {FLOW_DIM} non-NaN values")));
    }
    let pick = |k: CoordKind| -> Vec<f64> { kls.iter().enumerate().filter(|(i, _)| coord_kind(*i) == k).map(|(_, v)| *v).collect() };
    let (bond_mean, bond_median) = mean_median(&mut pick(CoordKind::Bond));
    let (angle_mean, angle_median) = mean_median(&mut pick(CoordKind::Angle));
    let (dihedral_mean, dihedral_median) = mean_median(&mut pick(CoordKind::Dihedral));
    Ok(MarginalKlSummary { bond_mean, bond_median, angle_mean, angle_median, dihedral_mean, dihedral_median })
}

/// Self-normalised importance weights softmax(log w); non-finite log-weights get weight 0.
/// All zeros if no log-weight is finite.
pub fn importance_weights(log_w: &[f64]) -> Vec<f64> {
    fab_core::stats::normalized_weights(log_w)
}

/// Effective sample size as a fraction of N, (Σw)²/(N·Σw²), after clipping the largest
/// ⌊`clip_fraction`·N⌋ weights to the largest unclipped weight (the paper's table clips the
/// top 10⁻⁴; `clip_fraction = 0` is the plain ESS of docs/ALGORITHMS.md, "Evaluation metrics"). Non-finite log-weights are
/// dropped first (N shrinks), as in [`fab_core::stats::effective_sample_size`].
///
/// # Errors
/// `clip_fraction` outside [0, 1).
pub fn clipped_ess(log_w: &[f64], clip_fraction: f64) -> Result<f64> {
    if !(0.0..1.0).contains(&clip_fraction) {
        return Err(invalid(format!("clip_fraction must be in [0, 1), got {clip_fraction}")));
    }
    let mut v: Vec<f64> = log_w.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return Ok(0.0);
    }
    let k = (clip_fraction * n as f64).floor() as usize;
    v.sort_by(|a, b| b.total_cmp(a));
    let cap = v[k.min(n - 1)];
    for x in v.iter_mut().take(k) {
        *x = cap;
    }
    Ok(fab_core::stats::effective_sample_size(&v))
}

/// Mean test log-likelihood in Cartesian space (docs/ALGORITHMS.md, "Evaluation metrics"): mean over samples of
/// log q(z) − log|det ∂x/∂z| (the flow density of the reference configurations, expressed per
/// Cartesian volume modulo the six rigid-body degrees of freedom).
///
/// A −∞ term (a sample the flow cannot produce) makes the mean −∞, which is the honest value.
///
/// # Errors
/// Different lengths, no samples, or a NaN term.
pub fn cartesian_log_likelihood(log_q_z: &[f64], log_det_dx_dz: &[f64]) -> Result<f64> {
    if log_q_z.len() != log_det_dx_dz.len() || log_q_z.is_empty() {
        return Err(invalid(format!("cartesian_log_likelihood: {} log q values and {} log-dets", log_q_z.len(), log_det_dx_dz.len())));
    }
    let mut s = 0.0;
    for (i, (q, l)) in log_q_z.iter().zip(log_det_dx_dz).enumerate() {
        let t = q - l;
        if t.is_nan() {
            return Err(invalid(format!("cartesian_log_likelihood: NaN term at sample {i}")));
        }
        s += t;
    }
    Ok(s / log_q_z.len() as f64)
}

/// log|det ∂x/∂z| of flow-space configurations `[n, 60]` under the paper's transform
/// ([`InternalCoordinates::alanine_dipeptide`]), for [`cartesian_log_likelihood`].
///
/// # Errors
/// A length that is not a multiple of 60.
pub fn log_det_dx_dz(z: &[f64]) -> Result<Vec<f64>> {
    let ic = InternalCoordinates::alanine_dipeptide();
    Ok(ic.to_cartesian_batch(z)?.1)
}

/// Ramachandran angles (φ, ψ) of flow-space configurations `[n, 60]`, computed on the
/// reconstructed Cartesian coordinates as the reference does (mdtraj convention, radians in
/// (−π, π]). Configurations that cannot be reconstructed give NaN angles (dropped by the
/// histograms).
///
/// # Errors
/// A length that is not a multiple of 60.
pub fn phi_psi_of_flow(z: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    let ic = InternalCoordinates::alanine_dipeptide();
    let (x, _) = ic.to_cartesian_batch(z)?;
    let mut phi = Vec::with_capacity(x.len() / CART_DIM);
    let mut psi = Vec::with_capacity(x.len() / CART_DIM);
    for xi in x.chunks(CART_DIM) {
        let (a, b) = if xi.iter().all(|v| v.is_finite()) { phi_psi(xi)? } else { (f64::NAN, f64::NAN) };
        phi.push(a);
        psi.push(b);
    }
    Ok((phi, psi))
}

/// Conformational basins of alanine dipeptide on the Ramachandran plane (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Basin {
    /// Extended region: β, C5, polyproline II and C7eq.
    BetaC5,
    /// Right-handed helix region αR (with the bridge region).
    AlphaR,
    /// Left-handed region αL/C7ax, 0 < φ < [`PHI_L_MAX`]: the rare basin.
    AlphaL,
}

/// The basin of one (φ, ψ) pair in radians; `None` if either angle is NaN.
pub fn basin_of(phi: f64, psi: f64) -> Option<Basin> {
    if phi.is_nan() || psi.is_nan() {
        return None;
    }
    Some(if phi > 0.0 && phi < PHI_L_MAX {
        Basin::AlphaL
    } else if (PSI_ALPHA_MIN..PSI_ALPHA_MAX).contains(&psi) {
        Basin::AlphaR
    } else {
        Basin::BetaC5
    })
}

/// Basin populations (fractions of the total weight).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BasinPops {
    /// Fraction in the extended β/C5/PII/C7eq region.
    pub beta_c5: f64,
    /// Fraction in αR.
    pub alpha_r: f64,
    /// Fraction in αL/C7ax.
    pub alpha_l: f64,
    /// Number of samples with finite angles that were counted.
    pub n: usize,
    /// Kish effective sample size (Σw)²/Σw² of the counted samples (= n without weights).
    pub n_effective: f64,
}

impl BasinPops {
    /// The three populations in the order (β/C5, αR, αL).
    pub fn as_array(&self) -> [f64; 3] {
        [self.beta_c5, self.alpha_r, self.alpha_l]
    }

    /// Largest absolute population difference to `other`.
    pub fn max_abs_diff(&self, other: &BasinPops) -> f64 {
        self.as_array().iter().zip(other.as_array()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
    }
}

/// Basin populations of (φ, ψ) samples, optionally weighted; NaN pairs are skipped.
///
/// # Errors
/// Length mismatches, bad weights, or no countable sample (zero total weight).
pub fn basin_populations(phi: &[f64], psi: &[f64], weights: Option<&[f64]>) -> Result<BasinPops> {
    if phi.len() != psi.len() {
        return Err(invalid(format!("basin_populations: {} φ but {} ψ", phi.len(), psi.len())));
    }
    check_weights(weights, phi.len(), "basin_populations")?;
    let mut s = [0.0f64; 3];
    let (mut n, mut w2) = (0usize, 0.0);
    for i in 0..phi.len() {
        if let Some(b) = basin_of(phi[i], psi[i]) {
            let w = weights.map_or(1.0, |w| w[i]);
            let j = match b {
                Basin::BetaC5 => 0,
                Basin::AlphaR => 1,
                Basin::AlphaL => 2,
            };
            s[j] += w;
            w2 += w * w;
            n += 1;
        }
    }
    let total: f64 = s.iter().sum();
    if total <= 0.0 {
        return Err(invalid("basin_populations: no sample with finite angles and positive weight"));
    }
    Ok(BasinPops { beta_c5: s[0] / total, alpha_r: s[1] / total, alpha_l: s[2] / total, n, n_effective: total * total / w2 })
}

/// Share of samples that are L-form (`l_form[i]`, [`super::is_l_form`]) and in αL/C7ax: the rare
/// basin as the reference counts it. The D-form mirror image of αR falls in the same (φ, ψ)
/// window, so the plain αL population of a sample set with D-form members overstates it.
///
/// # Errors
/// Length mismatches or no samples.
pub fn l_form_alpha_l_share(phi: &[f64], psi: &[f64], l_form: &[bool]) -> Result<f64> {
    share_of(&l_form_alpha_l_mask(phi, psi, l_form)?)
}

/// The fraction of `true` entries of a sample mask, e.g. [`l_form_alpha_l_mask`]'s.
///
/// # Errors
/// An empty mask.
pub fn share_of(mask: &[bool]) -> Result<f64> {
    if mask.is_empty() {
        return Err(invalid("share of an empty sample set"));
    }
    Ok(mask.iter().filter(|&&b| b).count() as f64 / mask.len() as f64)
}

/// Which samples are L-form and in αL/C7ax, the rare basin as the reference counts it.
///
/// # Errors
/// Length mismatches.
pub fn l_form_alpha_l_mask(phi: &[f64], psi: &[f64], l_form: &[bool]) -> Result<Vec<bool>> {
    if phi.len() != psi.len() || phi.len() != l_form.len() {
        return Err(invalid(format!("l_form_alpha_l_mask: {} φ, {} ψ and {} chirality flags", phi.len(), psi.len(), l_form.len())));
    }
    Ok(phi.iter().zip(psi).zip(l_form).map(|((p, q), l)| *l && basin_of(*p, *q) == Some(Basin::AlphaL)).collect())
}

/// How the importance weights of one sample set split by chirality: the ESS of its L-form
/// samples alone and the share of the self-normalised weight its D-form samples carry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChiralityWeights {
    /// ESS fraction, 1/(N_L Σ w̄ᵢ²), over the L-form samples with finite log-weights.
    pub ess_l_form: f64,
    /// Σ_{D-form} w̄ᵢ over all samples (0 when no weight is finite).
    pub d_form_weight: f64,
}

/// Splits `log_w` by the chirality flags `l_form` (docs/ALGORITHMS.md, "Evaluation metrics").
/// The force field is mirror-symmetric, so a D-form sample has as much target density as its
/// L-form image, while a flow trained on filtered samples puts little mass there: a few such
/// samples can hold most of the weight and set the whole ESS.
///
/// # Errors
/// Length mismatch.
pub fn chirality_weights(log_w: &[f64], l_form: &[bool]) -> Result<ChiralityWeights> {
    if log_w.len() != l_form.len() {
        return Err(invalid(format!("chirality_weights: {} log-weights and {} chirality flags", log_w.len(), l_form.len())));
    }
    let l_only: Vec<f64> = log_w.iter().zip(l_form).filter(|(_, l)| **l).map(|(w, _)| *w).collect();
    let w = fab_core::stats::normalized_weights(log_w);
    let d_form_weight = w.iter().zip(l_form).filter(|(_, l)| !**l).map(|(w, _)| w).sum();
    Ok(ChiralityWeights { ess_l_form: fab_core::stats::effective_sample_size(&l_only), d_form_weight })
}

/// How much of a sample set's weight tail lies in the rare basin: the share of the largest
/// ⌈`top_fraction`·N⌉ finite weights whose samples are in `alpha_l` (the L-form αL/C7ax mask of
/// [`l_form_alpha_l_mask`]), and, as a diagnostic (not an estimator of anything), the ESS
/// fraction of the samples outside that basin. Together they say how much of the distance from
/// ESS 1 is the rare basin (docs/ALGORITHMS.md, "Evaluation metrics").
///
/// # Errors
/// Length mismatch or `top_fraction` outside (0, 1].
pub fn alpha_l_weight_tail(log_w: &[f64], alpha_l: &[bool], top_fraction: f64) -> Result<(f64, f64)> {
    if alpha_l.len() != log_w.len() {
        return Err(invalid(format!("alpha_l_weight_tail: {} log-weights and {} basin flags", log_w.len(), alpha_l.len())));
    }
    if !(top_fraction > 0.0 && top_fraction <= 1.0) {
        return Err(invalid(format!("top_fraction must be in (0, 1], got {top_fraction}")));
    }
    let mut finite: Vec<usize> = (0..log_w.len()).filter(|&i| log_w[i].is_finite()).collect();
    if finite.is_empty() {
        return Ok((0.0, 0.0));
    }
    finite.sort_by(|&a, &b| log_w[b].total_cmp(&log_w[a]));
    let k = ((top_fraction * finite.len() as f64).ceil() as usize).clamp(1, finite.len());
    let share = finite[..k].iter().filter(|&&i| alpha_l[i]).count() as f64 / k as f64;
    let outside: Vec<f64> = log_w.iter().zip(alpha_l).filter(|(_, a)| !**a).map(|(w, _)| *w).collect();
    Ok((share, fab_core::stats::effective_sample_size(&outside)))
}

/// A population estimate with its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate.
    pub mean: f64,
    /// Its standard error.
    pub se: f64,
}

/// Summary of the shipped reference, stored as `reference.json` next to the arrays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceSummary {
    /// Number of (φ, ψ) pairs in `phi_psi.npy`.
    pub n_phi_psi: usize,
    /// Number of flow-space samples in `z.npy`.
    pub n_z: usize,
    /// Per independent run: (φ, ψ) pairs contributed, in file order (contiguous blocks).
    pub phi_psi_per_run: Vec<usize>,
    /// Per independent run: z samples contributed, in file order.
    pub z_per_run: Vec<usize>,
    /// Pooled basin populations (β/C5, αR, αL) with standard errors from the spread of the
    /// independent runs.
    pub basins: [Estimate; 3],
    /// Per run: basin populations with standard errors from batch means of that run.
    pub basins_per_run: Vec<[Estimate; 3]>,
    /// Fraction of 300 K samples that were D-form (removed).
    pub d_form_fraction: f64,
    /// Temperature (K).
    pub temperature: f64,
    /// Free-form protocol description (ladder, moves, thinning, seeds, command).
    pub protocol: String,
    /// Number of recorded L-form pairs behind the shipped histograms (`ramachandran_*.npy`,
    /// `phi_psi_200.npy`); 0 when the reference ships pairs only.
    #[serde(default)]
    pub histogram_records: u64,
    /// Noise floor of the 64-bin Ramachandran KL against the shipped reference
    /// ([`kl_noise_floor`]): what a perfect model with infinitely many samples would score.
    #[serde(default)]
    pub ramachandran_kl_floor: Option<f64>,
    /// The same for 100 bins.
    #[serde(default)]
    pub ramachandran_kl_floor_100: Option<f64>,
}

/// Bin counts of every recorded reference pair: the reference of the (φ, ψ) KLs when it is
/// larger than the pairs it ships (`ramachandran_{64,100}.npy` `[bins, bins]` row-major over φ
/// then ψ, `phi_psi_200.npy` `[2, 200]`: the φ then the ψ counts).
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceHistograms {
    /// `(bins, counts)` of the Ramachandran histograms ([`ramachandran_counts`]).
    pub ramachandran: Vec<(usize, Vec<f64>)>,
    /// φ counts with [`ANGLE_BINS`] bins on [−π, π].
    pub phi: Vec<f64>,
    /// ψ counts with [`ANGLE_BINS`] bins on [−π, π].
    pub psi: Vec<f64>,
}

/// File of the Ramachandran histogram with `bins` bins per axis inside a reference directory.
pub fn ramachandran_file(bins: usize) -> String {
    format!("ramachandran_{bins}.npy")
}

/// File of the 1-D φ and ψ histograms inside a reference directory.
pub const PHI_PSI_HISTOGRAM_FILE: &str = "phi_psi_200.npy";

/// The replica-exchange reference shipped with fab-targets (`data/aldp/reference`).
#[derive(Debug, Clone)]
pub struct AldpReference {
    /// φ of the L-form 300 K samples (radians).
    pub phi: Vec<f64>,
    /// ψ of the same samples.
    pub psi: Vec<f64>,
    /// L-form 300 K samples in flow coordinates, `[n_z, 60]` row-major.
    pub z: Vec<f64>,
    /// Number of rows of `z`.
    pub n_z: usize,
    /// The stored summary (populations, provenance).
    pub summary: ReferenceSummary,
    /// Histograms of every recorded pair, if the reference ships them.
    pub histograms: Option<ReferenceHistograms>,
}

impl AldpReference {
    /// Basin populations of the reference: with shipped histograms, the pooled populations of
    /// every recorded pair (`summary.basins`, `n` = the records); otherwise those of the
    /// shipped (φ, ψ) pairs.
    ///
    /// # Errors
    /// Only if the reference is empty.
    pub fn basin_populations(&self) -> Result<BasinPops> {
        if self.histograms.is_some() && self.summary.histogram_records > 0 {
            let [b, r, l] = self.summary.basins.map(|e| e.mean);
            let n = self.summary.histogram_records as usize;
            return Ok(BasinPops { beta_c5: b, alpha_r: r, alpha_l: l, n, n_effective: n as f64 });
        }
        basin_populations(&self.phi, &self.psi, None)
    }

    /// [`ramachandran_kl`] of the generated angles against this reference: against the shipped
    /// histogram of every recorded pair when there is one for `bins`, else against the pairs.
    ///
    /// # Errors
    /// As [`ramachandran_kl`].
    pub fn ramachandran_kl(&self, gen_phi: &[f64], gen_psi: &[f64], gen_weights: Option<&[f64]>, bins: usize) -> Result<f64> {
        Ok(self.ramachandran_kl_split(gen_phi, gen_psi, gen_weights, bins)?.total)
    }

    /// [`Self::ramachandran_kl`] with its αL/C7ax part ([`RamachandranKl`]).
    ///
    /// # Errors
    /// As [`ramachandran_kl`].
    pub fn ramachandran_kl_split(
        &self,
        gen_phi: &[f64],
        gen_psi: &[f64],
        gen_weights: Option<&[f64]>,
        bins: usize,
    ) -> Result<RamachandranKl> {
        ramachandran_kl_split_from_counts(&self.ramachandran_counts(bins)?, gen_phi, gen_psi, gen_weights, bins)
    }

    /// [`ramachandran_kl_floor`] against this reference: what `n_samples` exact draws score.
    ///
    /// # Errors
    /// As [`ramachandran_kl_floor`].
    pub fn ramachandran_kl_floor(&self, n_samples: usize, bins: usize) -> Result<RamachandranKl> {
        ramachandran_kl_floor(&self.ramachandran_counts(bins)?, n_samples, bins)
    }

    /// The Ramachandran bin counts this reference is compared by: the shipped histogram of every
    /// recorded pair when there is one for `bins`, else those of the shipped pairs.
    fn ramachandran_counts(&self, bins: usize) -> Result<Cow<'_, [f64]>> {
        match self.histograms.as_ref().and_then(|h| h.ramachandran.iter().find(|(b, _)| *b == bins)) {
            Some((_, counts)) => Ok(Cow::Borrowed(counts)),
            None => Ok(Cow::Owned(ramachandran_counts(&self.phi, &self.psi, None, bins)?)),
        }
    }

    /// [`phi_psi_kl`] of the generated angles against this reference (its histograms if shipped).
    ///
    /// # Errors
    /// As [`phi_psi_kl`].
    pub fn phi_psi_kl(&self, gen_phi: &[f64], gen_psi: &[f64], gen_weights: Option<&[f64]>) -> Result<(f64, f64)> {
        match &self.histograms {
            Some(h) => {
                if gen_phi.len() != gen_psi.len() {
                    return Err(invalid("phi_psi_kl: φ and ψ must have the same length"));
                }
                Ok((kl_1d_from_counts(&h.phi, gen_phi, gen_weights, -PI, PI)?, kl_1d_from_counts(&h.psi, gen_psi, gen_weights, -PI, PI)?))
            }
            None => phi_psi_kl(&self.phi, &self.psi, gen_phi, gen_psi, gen_weights),
        }
    }
}

/// Reads the optional histograms of a reference directory ([`ReferenceHistograms`]); `None`
/// when it has no `ramachandran_64.npy`.
fn load_histograms(dir: &Path) -> Result<Option<ReferenceHistograms>> {
    if !dir.join(ramachandran_file(RAMACHANDRAN_BINS)).exists() {
        return Ok(None);
    }
    let mut ramachandran = Vec::new();
    for bins in [RAMACHANDRAN_BINS, RAMACHANDRAN_BINS_FINE] {
        let path = dir.join(ramachandran_file(bins));
        if !path.exists() {
            continue;
        }
        let (c, shape) = npy::read_f64(&path)?;
        if shape != [bins, bins] {
            return Err(invalid(format!("{} has shape {shape:?}, expected [{bins}, {bins}]", path.display())));
        }
        ramachandran.push((bins, c));
    }
    let path = dir.join(PHI_PSI_HISTOGRAM_FILE);
    let (c, shape) = npy::read_f64(&path)?;
    if shape != [2, ANGLE_BINS] {
        return Err(invalid(format!("{} has shape {shape:?}, expected [2, {ANGLE_BINS}]", path.display())));
    }
    let (phi, psi) = c.split_at(ANGLE_BINS);
    Ok(Some(ReferenceHistograms { ramachandran, phi: phi.to_vec(), psi: psi.to_vec() }))
}

/// Directory of the reference samples: `$FAB_ALDP_REFERENCE_DIR` if set (for binaries moved
/// out of the source tree, or your own reference), else the shipped one inside the workspace
/// (`crates/fab-targets/data/aldp/reference`, located from this crate's manifest directory).
pub fn reference_dir() -> PathBuf {
    match std::env::var_os("FAB_ALDP_REFERENCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("data/aldp/reference"),
    }
}

/// Loads the shipped reference from [`reference_dir`].
///
/// # Errors
/// As [`load_reference_from`].
pub fn load_reference() -> Result<AldpReference> {
    load_reference_from(&reference_dir())
}

/// Loads `phi_psi.npy` (`[n, 2]`), `z.npy` (`[m, 60]`), `reference.json` and, if present, the
/// histograms of every recorded pair ([`ReferenceHistograms`]) from `dir`.
///
/// # Errors
/// Missing or malformed files, shapes that disagree with the summary.
pub fn load_reference_from(dir: &Path) -> Result<AldpReference> {
    let (pp, pshape) = npy::read_f64(&dir.join("phi_psi.npy"))?;
    if pshape.len() != 2 || pshape[1] != 2 {
        return Err(invalid(format!("phi_psi.npy has shape {pshape:?}, expected [n, 2]")));
    }
    let (z, zshape) = npy::read_f64(&dir.join("z.npy"))?;
    if zshape.len() != 2 || zshape[1] != FLOW_DIM {
        return Err(invalid(format!("z.npy has shape {zshape:?}, expected [n, {FLOW_DIM}]")));
    }
    let path = dir.join("reference.json");
    let data_err = |msg: String| TargetError::Data { path: path.display().to_string(), msg };
    let text = std::fs::read_to_string(&path).map_err(|e| data_err(e.to_string()))?;
    let summary: ReferenceSummary = serde_json::from_str(&text).map_err(|e| data_err(e.to_string()))?;
    if summary.n_phi_psi != pshape[0] || summary.n_z != zshape[0] {
        return Err(invalid(format!(
            "reference.json says {} pairs and {} z rows, files have {} and {}",
            summary.n_phi_psi, summary.n_z, pshape[0], zshape[0]
        )));
    }
    let phi = pp.iter().step_by(2).copied().collect();
    let psi = pp.iter().skip(1).step_by(2).copied().collect();
    let histograms = load_histograms(dir)?;
    Ok(AldpReference { phi, psi, z, n_z: zshape[0], summary, histograms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fab_plot::bin_index;

    #[test]
    fn bins_follow_numpy_edges() {
        // 4 bins on [0, 1]: edges 0, .25, .5, .75, 1; the last bin includes 1.
        assert_eq!(bin_index(0.0, 0.0, 1.0, 4), Some(0));
        assert_eq!(bin_index(0.25, 0.0, 1.0, 4), Some(1));
        assert_eq!(bin_index(0.2499999, 0.0, 1.0, 4), Some(0));
        assert_eq!(bin_index(1.0, 0.0, 1.0, 4), Some(3));
        assert_eq!(bin_index(1.0000001, 0.0, 1.0, 4), None);
        assert_eq!(bin_index(-1e-12, 0.0, 1.0, 4), None);
        assert_eq!(bin_index(f64::NAN, 0.0, 1.0, 4), None);
        // ±π: −π in the first bin, π in the last (angles in (−π, π] all count).
        assert_eq!(bin_index(-PI, -PI, PI, 64), Some(0));
        assert_eq!(bin_index(PI, -PI, PI, 64), Some(63));
        // Every edge of 64 bins on [−π, π] starts its own bin.
        let w = 2.0 * PI / 64.0;
        for i in 1..64 {
            let e = -PI + w * i as f64;
            assert_eq!(bin_index(e, -PI, PI, 64), Some(i), "edge {i}");
        }
    }

    #[test]
    fn histogram_is_a_density() {
        let v = [0.1, 0.2, 0.3, 0.9, 5.0, f64::NAN];
        let (h, t) = histogram_1d(&v, None, 2, 0.0, 1.0).unwrap();
        assert_eq!(t, 4.0);
        // 3 of 4 in-range values in [0, .5): density 0.75/0.5 = 1.5; 0.25/0.5 = 0.5.
        assert!((h[0] - 1.5).abs() < 1e-15 && (h[1] - 0.5).abs() < 1e-15);
        let w = [1.0, 1.0, 1.0, 3.0, 7.0, 1.0];
        let (h, _) = histogram_1d(&v, Some(&w), 2, 0.0, 1.0).unwrap();
        assert!((h[0] - 1.0).abs() < 1e-15 && (h[1] - 1.0).abs() < 1e-15);
        // 2-D: integral of the density is 1.
        let x = [0.1, -3.0, 2.0, 3.1];
        let y = [0.2, 3.0, -1.0, 0.0];
        let (h2, _) = histogram_2d(&x, &y, None, 64, -PI, PI).unwrap();
        let cell = (2.0 * PI / 64.0).powi(2);
        assert!((h2.iter().sum::<f64>() * cell - 1.0).abs() < 1e-12);
        assert!(histogram_1d(&v, Some(&[1.0]), 2, 0.0, 1.0).is_err());
        assert!(histogram_1d(&v, Some(&[1.0, 1.0, -1.0, 1.0, 1.0, 1.0]), 2, 0.0, 1.0).is_err());
        assert!(histogram_1d(&v, None, 0, 0.0, 1.0).is_err());
        assert!(histogram_2d(&x, &y[..3], None, 4, -PI, PI).is_err());
    }

    /// Deterministic points spread over [−π, π)² (a low-discrepancy lattice).
    fn lattice(n: usize, shift: f64) -> (Vec<f64>, Vec<f64>) {
        let g = 0.618_033_988_749_895;
        let phi = (0..n).map(|i| -PI + 2.0 * PI * (((i as f64 + 0.5) / n as f64 + shift).fract())).collect();
        let psi = (0..n).map(|i| -PI + 2.0 * PI * ((i as f64 * g + shift).fract())).collect();
        (phi, psi)
    }

    #[test]
    fn identical_samples_have_zero_kl() {
        let (phi, psi) = lattice(5000, 0.1);
        for bins in [RAMACHANDRAN_BINS, RAMACHANDRAN_BINS_FINE] {
            assert!(ramachandran_kl(&phi, &psi, &phi, &psi, None, bins).unwrap().abs() < 1e-12);
        }
        let (a, b) = phi_psi_kl(&phi, &psi, &phi, &psi, None).unwrap();
        assert!(a.abs() < 1e-12 && b.abs() < 1e-12);
        // Equal weights are the same as no weights; duplicating a sample equals weight 2.
        let w = vec![0.37; phi.len()];
        assert!(ramachandran_kl(&phi, &psi, &phi, &psi, Some(&w), 64).unwrap().abs() < 1e-12);
        let (mut p2, mut s2) = (phi.clone(), psi.clone());
        p2.push(phi[7]);
        s2.push(psi[7]);
        let mut w2 = vec![1.0; phi.len()];
        w2[7] = 2.0;
        let a = ramachandran_kl(&phi, &psi, &p2, &s2, None, 64).unwrap();
        let b = ramachandran_kl(&phi, &psi, &phi, &psi, Some(&w2), 64).unwrap();
        assert!(a > 0.0 && (a - b).abs() < 1e-12);
    }

    #[test]
    fn shifted_histograms_give_closed_form_kls() {
        // Reference: all mass in one cell of the 64×64 grid. Generated: half in that cell, half
        // in another. h_ref = 1/c, h_gen = 0.5/c ⇒ KL = (1/c)·ln((1/c+ε)/(0.5/c+ε))·c ≈ ln 2.
        let w = 2.0 * PI / 64.0;
        let centre = |i: usize| -PI + (i as f64 + 0.5) * w;
        let rphi = vec![centre(10); 100];
        let rpsi = vec![centre(20); 100];
        let mut gphi = vec![centre(10); 50];
        let mut gpsi = vec![centre(20); 50];
        gphi.extend(vec![centre(40); 50]);
        gpsi.extend(vec![centre(5); 50]);
        let c = w * w;
        let exact = (1.0 / c) * ((1.0 / c + KL_EPS) / (0.5 / c + KL_EPS)).ln() * c;
        let kl = ramachandran_kl(&rphi, &rpsi, &gphi, &gpsi, None, 64).unwrap();
        assert!((kl - exact).abs() < 1e-12 && (kl - 2f64.ln()).abs() < 1e-8, "{kl}");
        // Importance weights 3:1 on the two generated groups: h_gen = 0.75/c in the cell.
        let wts: Vec<f64> = (0..100).map(|i| if i < 50 { 3.0 } else { 1.0 }).collect();
        let kl = ramachandran_kl(&rphi, &rpsi, &gphi, &gpsi, Some(&wts), 64).unwrap();
        assert!((kl - (1.0f64 / 0.75).ln()).abs() < 1e-8, "{kl}");
        // Disjoint supports: KL = ln((1/c + ε)/ε), large but finite.
        let kl = ramachandran_kl(&rphi, &rpsi, &gphi[50..], &gpsi[50..], None, 64).unwrap();
        assert!((kl - ((1.0 / c + KL_EPS) / KL_EPS).ln()).abs() < 1e-6);
        // No generated pair at all: zero density, the same value.
        let kl0 = ramachandran_kl(&rphi, &rpsi, &[], &[], None, 64).unwrap();
        assert!((kl0 - kl).abs() < 1e-9);
        // 1-D: reference uniform over bins 0..100 of 200 on [−π, π], generated uniform over all
        // 200 bins ⇒ KL = ln 2 exactly (up to ε).
        let bw = 2.0 * PI / 200.0;
        let r: Vec<f64> = (0..100).map(|i| -PI + (i as f64 + 0.5) * bw).collect();
        let g: Vec<f64> = (0..200).map(|i| -PI + (i as f64 + 0.5) * bw).collect();
        let (kphi, _) = phi_psi_kl(&r, &r, &g, &g, None).unwrap();
        assert!((kphi - 2f64.ln()).abs() < 1e-8, "{kphi}");
        assert!(ramachandran_kl(&[], &[], &gphi, &gpsi, None, 64).is_err());
    }

    #[test]
    fn marginal_kls_and_grouping() {
        // Reference: coordinate i takes the centre of bin i of 200 on [−5, 5] (one sample);
        // generated: identical except coordinate 17 is moved to another bin ⇒ KL_i = 0 for
        // i ≠ 17, KL_17 = (1/w)·ln((1/w+ε)/ε)·w.
        let w = 10.0 / 200.0;
        let centre = |i: usize| -5.0 + (i as f64 + 0.5) * w;
        let r: Vec<f64> = (0..FLOW_DIM).map(centre).collect();
        let mut g = r.clone();
        g[17] = centre(150);
        let kls = marginal_kls(&r, &g, None).unwrap();
        let exact = ((1.0 / w + KL_EPS) / KL_EPS).ln();
        for (i, k) in kls.iter().enumerate() {
            if i == 17 {
                assert!((k - exact).abs() < 1e-6);
            } else {
                assert!(k.abs() < 1e-12);
            }
        }
        assert_eq!((0..60).filter(|i| coord_kind(*i) == CoordKind::Bond).count(), 21);
        assert_eq!((0..60).filter(|i| coord_kind(*i) == CoordKind::Angle).count(), 20);
        assert_eq!((0..60).filter(|i| coord_kind(*i) == CoordKind::Dihedral).count(), 19);
        assert_eq!(coord_kind(17), CoordKind::Dihedral);
        assert_eq!(coord_kind(44), CoordKind::Dihedral);
        let s = summarize_marginal_kls(&kls).unwrap();
        assert!((s.dihedral_mean - exact / 19.0).abs() < 1e-9 && s.dihedral_median == 0.0);
        assert_eq!(s.bond_mean, 0.0);
        assert!(marginal_kls(&r[..59], &g, None).is_err());
        assert!(summarize_marginal_kls(&kls[..10]).is_err());
    }

    #[test]
    fn basins_on_hand_points() {
        let deg = PI / 180.0;
        assert_eq!(basin_of(-150.0 * deg, 150.0 * deg), Some(Basin::BetaC5)); // β
        assert_eq!(basin_of(-75.0 * deg, 145.0 * deg), Some(Basin::BetaC5)); // PII
        assert_eq!(basin_of(-83.0 * deg, 75.0 * deg), Some(Basin::BetaC5)); // C7eq
        assert_eq!(basin_of(-150.0 * deg, -170.0 * deg), Some(Basin::BetaC5)); // β across ±π
        assert_eq!(basin_of(-65.0 * deg, -40.0 * deg), Some(Basin::AlphaR));
        assert_eq!(basin_of(60.0 * deg, 40.0 * deg), Some(Basin::AlphaL));
        assert_eq!(basin_of(75.0 * deg, -60.0 * deg), Some(Basin::AlphaL)); // C7ax
        assert_eq!(basin_of(170.0 * deg, 170.0 * deg), Some(Basin::BetaC5)); // β wrapping to φ > 0
        assert_eq!(basin_of(f64::NAN, 0.0), None);
        let phi = [-2.5, -1.2, 1.0, 1.0, f64::NAN];
        let psi = [2.5, -0.7, 0.5, -1.0, 0.0];
        let p = basin_populations(&phi, &psi, None).unwrap();
        assert_eq!(p.n, 4);
        assert!((p.beta_c5 - 0.25).abs() < 1e-15 && (p.alpha_r - 0.25).abs() < 1e-15);
        assert!((p.alpha_l - 0.5).abs() < 1e-15 && (p.n_effective - 4.0).abs() < 1e-12);
        let p = basin_populations(&phi, &psi, Some(&[2.0, 1.0, 0.5, 0.5, 9.0])).unwrap();
        assert!((p.beta_c5 - 0.5).abs() < 1e-15 && (p.alpha_l - 0.25).abs() < 1e-15);
        assert!((p.n_effective - 16.0 / 5.5).abs() < 1e-12);
        assert!(basin_populations(&phi, &psi[..3], None).is_err());
        assert!(basin_populations(&[f64::NAN], &[0.0], None).is_err());
        let q = BasinPops { beta_c5: 0.3, alpha_r: 0.5, alpha_l: 0.2, n: 1, n_effective: 1.0 };
        assert!((p.max_abs_diff(&q) - 0.25).abs() < 1e-12); // |0.25 − 0.5| in αR
    }

    #[test]
    fn alpha_l_weight_tail_counts_the_rare_basin_among_the_largest_weights() {
        // Ten samples: two L-form αL ones (φ = 1) with the two largest weights, one D-form αL
        // one with the third largest, the rest in β (φ = −2, ψ = 2.5) with equal weights.
        let mut phi = vec![-2.0; 10];
        let psi = vec![2.5; 10];
        let mut lw = vec![0.0; 10];
        let mut l = vec![true; 10];
        phi[3] = 1.0;
        lw[3] = 5.0;
        phi[7] = 1.0;
        lw[7] = 4.0;
        phi[0] = 1.0;
        lw[0] = 3.0;
        l[0] = false;
        lw[9] = f64::NAN;
        let mask = l_form_alpha_l_mask(&phi, &psi, &l).unwrap();
        assert_eq!(mask.iter().filter(|&&b| b).count(), 2);
        // Nine finite weights: the top 0.3 are ⌈2.7⌉ = 3 samples, two of them L-form αL.
        let (share, ess_out) = alpha_l_weight_tail(&lw, &mask, 0.3).unwrap();
        assert!((share - 2.0 / 3.0).abs() < 1e-15, "{share}");
        let outside: Vec<f64> = [0, 1, 2, 4, 5, 6, 8, 9].iter().map(|&i| lw[i]).collect();
        assert!((ess_out - fab_core::stats::effective_sample_size(&outside)).abs() < 1e-15);
        // The top single weight is αL; a tiny fraction still takes one sample.
        assert_eq!(alpha_l_weight_tail(&lw, &mask, 1e-9).unwrap().0, 1.0);
        assert!(alpha_l_weight_tail(&lw, &mask, 0.0).is_err());
        assert!(alpha_l_weight_tail(&lw[..3], &mask, 0.1).is_err());
        assert!(l_form_alpha_l_mask(&phi[..3], &psi, &l).is_err());
    }

    #[test]
    fn chirality_weights_separate_d_form_leakage() {
        // Four L-form samples of equal weight and one D-form sample holding e^3 times as much.
        let lw = [0.0, 0.0, 0.0, 0.0, 3.0, f64::NEG_INFINITY];
        let l = [true, true, true, true, false, true];
        let c = chirality_weights(&lw, &l).unwrap();
        assert!((c.ess_l_form - 1.0).abs() < 1e-15, "{c:?}");
        let big = 3f64.exp();
        assert!((c.d_form_weight - big / (4.0 + big)).abs() < 1e-15, "{c:?}");
        // The L-form ESS is the plain ESS of the L-form log-weights.
        let lw2 = [0.0, 1.0, -2.0, 5.0];
        let c2 = chirality_weights(&lw2, &[true, true, true, false]).unwrap();
        assert!((c2.ess_l_form - fab_core::stats::effective_sample_size(&lw2[..3])).abs() < 1e-15);
        assert_eq!(chirality_weights(&lw2, &[true, true, true, true]).unwrap().d_form_weight, 0.0);
        assert!(chirality_weights(&lw2, &[true]).is_err());
    }

    #[test]
    fn ess_with_and_without_clipping() {
        // 9999 equal weights and one weight e^20 times larger.
        let mut lw = vec![0.0; 10_000];
        lw[123] = 20.0;
        let big = 20f64.exp();
        let n = 10_000.0;
        let exact = (9999.0 + big).powi(2) / (n * (9999.0 + big * big));
        assert!((clipped_ess(&lw, 0.0).unwrap() - exact).abs() < 1e-12);
        assert!((clipped_ess(&lw, 0.0).unwrap() - fab_core::stats::effective_sample_size(&lw)).abs() < 1e-12);
        // Clipping the top 1e-4 (one weight of 10 000) to the largest unclipped one: all equal.
        assert!((clipped_ess(&lw, 1e-4).unwrap() - 1.0).abs() < 1e-12);
        // With 5000 weights ⌊0.5⌋ = 0 are clipped.
        assert!((clipped_ess(&lw[..5000], 1e-4).unwrap() - clipped_ess(&lw[..5000], 0.0).unwrap()).abs() < 1e-15);
        // Non-finite weights are dropped.
        let lw2 = [0.0, 0.0, f64::NEG_INFINITY, f64::NAN];
        assert!((clipped_ess(&lw2, 0.0).unwrap() - 1.0).abs() < 1e-15);
        assert_eq!(clipped_ess(&[f64::NAN], 0.0).unwrap(), 0.0);
        assert!(clipped_ess(&lw, 1.0).is_err());
        let w = importance_weights(&[0.0, 2f64.ln(), f64::NAN]);
        assert!((w[0] - 1.0 / 3.0).abs() < 1e-15 && (w[1] - 2.0 / 3.0).abs() < 1e-15 && w[2] == 0.0);
    }

    /// How many generated samples the Ramachandran KL needs: exact draws (bootstrap resamples
    /// of the shipped reference itself) still score KL ≈ 0.26 at 2·10⁴ samples, because every
    /// reference bin a sample misses costs p_b·ln(p_b/(cell·ε)) with ε = 1e-10, but < 0.01 at
    /// 10⁶. This is why the ALDP configs evaluate 10⁶ flow samples; bounds are wide (the
    /// values are 0.26 and 0.0008 for this seed) so only a changed metric can fail them.
    #[test]
    fn ramachandran_kl_needs_many_samples() {
        use rand::Rng;
        let r = load_reference().unwrap();
        let mut rng = fab_core::seeded_rng(7, 0);
        let mut draw =
            |n: usize| -> (Vec<f64>, Vec<f64>) { (0..n).map(|_| rng.random_range(0..r.phi.len())).map(|i| (r.phi[i], r.psi[i])).unzip() };
        let (p, q) = draw(20_000);
        let small = ramachandran_kl(&r.phi, &r.psi, &p, &q, None, 64).unwrap();
        let (p, q) = draw(1_000_000);
        let large = ramachandran_kl(&r.phi, &r.psi, &p, &q, None, 64).unwrap();
        assert!((0.1..0.6).contains(&small), "KL with 2e4 exact samples: {small}");
        assert!(large < 0.01, "KL with 1e6 exact samples: {large}");
    }

    /// The shipped replica-exchange reference: sizes, validity of every sample, and agreement
    /// of its parts within their statistical errors.
    #[test]
    fn shipped_reference_is_complete_and_consistent() {
        use crate::aldp::{is_l_form, AldpTarget};
        let r = load_reference().unwrap();
        let s = &r.summary;
        assert!(r.phi.len() >= 100_000 && r.n_z >= 100_000, "{} pairs, {} z", r.phi.len(), r.n_z);
        assert!(s.phi_psi_per_run.len() >= 5 && s.phi_psi_per_run.len() == s.basins_per_run.len());
        // Histograms of every record: all records binned in each, at the issue's noise floor.
        let h = r.histograms.as_ref().expect("the shipped reference has histograms of every record");
        assert_eq!(h.ramachandran.iter().map(|(b, _)| *b).collect::<Vec<_>>(), [RAMACHANDRAN_BINS, RAMACHANDRAN_BINS_FINE]);
        assert!(s.histogram_records >= 5_000_000, "{} records", s.histogram_records);
        for c in h.ramachandran.iter().map(|(_, c)| c).chain([&h.phi, &h.psi]) {
            assert_eq!(c.iter().sum::<f64>(), s.histogram_records as f64);
        }
        let floor = s.ramachandran_kl_floor.unwrap();
        assert!(floor > 0.0 && floor <= 1e-3 && s.ramachandran_kl_floor_100.unwrap() > floor, "{s:?}");
        // The shipped pairs are a thinned subset of the same records: against the full histogram
        // they score like 10⁵ exact draws (≈ 0.05, the sample-size floor of
        // `ramachandran_kl_needs_many_samples`); φ and ψ swapped would score > 1.
        let counts = &h.ramachandran[0].1;
        let kl = ramachandran_kl_from_counts(counts, &r.phi, &r.psi, None, RAMACHANDRAN_BINS).unwrap();
        let swapped = ramachandran_kl_from_counts(counts, &r.psi, &r.phi, None, RAMACHANDRAN_BINS).unwrap();
        assert!(kl < 0.1 && swapped > 1.0, "{kl} {swapped}");
        assert_eq!(s.phi_psi_per_run.iter().sum::<usize>(), r.phi.len());
        assert_eq!(s.z_per_run.iter().sum::<usize>(), r.n_z);
        assert!(r.phi.iter().chain(&r.psi).all(|v| v.is_finite() && v.abs() <= PI + 1e-6));
        // Every flow-space sample is L-form with a finite target density.
        assert!(r.z.chunks(FLOW_DIM).all(|z| is_l_form(z).unwrap()));
        let lp = AldpTarget::default().log_prob_f64(&r.z).unwrap();
        assert!(lp.iter().all(|v| v.is_finite()));

        // Pooled populations are the mean of the per-run ones.
        for j in 0..3 {
            let m = s.basins_per_run.iter().map(|b| b[j].mean).sum::<f64>() / s.basins_per_run.len() as f64;
            assert!((m - s.basins[j].mean).abs() < 1e-12);
        }
        // Each run agrees with the pool of the others: |p_r − p̄| < 4·√(se_r² + se_pool²)
        // (a normal-theory 4σ test, false-positive rate 6e-5 per comparison, ~1e-3 for all).
        for (i, run) in s.basins_per_run.iter().enumerate() {
            for j in 0..3 {
                let tol = 4.0 * (run[j].se.powi(2) + s.basins[j].se.powi(2)).sqrt();
                assert!((run[j].mean - s.basins[j].mean).abs() < tol, "run {i}, basin {j}: {run:?} vs {:?}", s.basins);
            }
        }
        // The (φ, ψ) pairs and the z samples (φ, ψ recomputed from the float32 coordinates)
        // are thinned subsets of the same runs: their populations agree within binomial error
        // (both sets are thinned beyond the basin autocorrelation time; √2 allows for residual
        // correlation; 5σ ⇒ false-positive rate < 1e-6 per basin).
        let pp = r.basin_populations().unwrap();
        let (zphi, zpsi) = phi_psi_of_flow(&r.z).unwrap();
        let zp = basin_populations(&zphi, &zpsi, None).unwrap();
        for (a, b) in pp.as_array().iter().zip(zp.as_array()) {
            let se = (a * (1.0 - a) * (1.0 / pp.n as f64 + 1.0 / zp.n as f64)).sqrt();
            assert!((a - b).abs() < 5.0 * 2f64.sqrt() * se, "{pp:?} vs {zp:?}");
        }
        // The rare φ > 0 basin is present in both sets and in every run.
        assert!(pp.alpha_l > 0.0 && zp.alpha_l * zp.n as f64 >= 20.0, "{pp:?} {zp:?}");
        assert!(s.basins_per_run.iter().all(|b| b[2].mean > 0.0));
    }

    #[test]
    fn cartesian_log_likelihood_and_flow_helpers() {
        assert!((cartesian_log_likelihood(&[1.0, 3.0], &[0.5, -0.5]).unwrap() - 2.0).abs() < 1e-15);
        assert_eq!(cartesian_log_likelihood(&[f64::NEG_INFINITY, 0.0], &[0.0, 0.0]).unwrap(), f64::NEG_INFINITY);
        assert!(cartesian_log_likelihood(&[f64::NAN], &[0.0]).is_err());
        assert!(cartesian_log_likelihood(&[1.0], &[]).is_err());
        // z = 0 is the minimum-energy configuration: φ = −2.5450, ψ = 2.6225 (docs/ALGORITHMS.md, "Targets"),
        // log|det ∂x/∂z| = −245.48211 (aldp_internal_coords.md).
        let z = vec![0.0; 2 * FLOW_DIM];
        let (phi, psi) = phi_psi_of_flow(&z).unwrap();
        assert!((phi[1] + 2.544956).abs() < 1e-5 && (psi[0] - 2.622511).abs() < 1e-5);
        let ld = log_det_dx_dz(&z).unwrap();
        assert!((ld[0] + 245.48211).abs() < 1e-4);
        assert!(phi_psi_of_flow(&z[..59]).is_err());
    }

    /// Draws `n` bins from `p` as a sticky Markov chain: with probability `stay` the previous
    /// bin again, else a fresh draw from p (stationary law p, τ_int = (1 + stay)/(1 − stay)).
    fn sticky_chain(p: &[f64], n: usize, stay: f64, rng: &mut impl rand::Rng) -> Vec<usize> {
        let cdf: Vec<f64> = p
            .iter()
            .scan(0.0, |c, v| {
                *c += v;
                Some(*c)
            })
            .collect();
        let fresh = |rng: &mut dyn rand::RngCore| {
            let u: f64 = rand::Rng::random(rng);
            cdf.iter().position(|c| u < *c).unwrap_or(p.len() - 1)
        };
        let mut k = fresh(rng);
        (0..n)
            .map(|_| {
                if rng.random::<f64>() >= stay {
                    k = fresh(rng);
                }
                k
            })
            .collect()
    }

    /// The noise floor predicted from blocks of one chain against the KL(p̂ ‖ p) actually seen
    /// over many chains: for independent draws it is (K − 1)/(2N); for a correlated chain it is
    /// 2τ_int times larger, and the block estimate sees that. 100 chains per case give the
    /// Monte-Carlo mean to ±5 % (the KL of a chain has sd ≈ √(2/(K−1))·mean ≈ 0.2·mean); the
    /// block estimate from 20 blocks over 50 bins averaged over them to ~±3 % (measured: both
    /// within 2 %): bounds ±10 %, so a missing factor of 2 or B/(B − 1) fails.
    #[test]
    fn kl_noise_floor_predicts_the_kl_of_a_histogram_estimate() {
        let k = 50;
        let raw: Vec<f64> = (0..k).map(|i| 1.0 + (i as f64 * 0.7).sin().powi(2) * 5.0).collect();
        let z: f64 = raw.iter().sum();
        let p: Vec<f64> = raw.iter().map(|v| v / z).collect();
        let n = 40_000;
        let mut rng = fab_core::seeded_rng(3, 0);
        for (stay, n_eff) in [(0.0, n as f64), (0.8, n as f64 / 9.0)] {
            let (mut kl_mean, mut floor_mean) = (0.0, 0.0);
            let reps = 100;
            for _ in 0..reps {
                let chain = sticky_chain(&p, n, stay, &mut rng);
                let blocks: Vec<Vec<f64>> = chain
                    .chunks(n / 20)
                    .map(|c| {
                        let mut h = vec![0.0; k];
                        c.iter().for_each(|&b| h[b] += 1.0);
                        h
                    })
                    .collect();
                let mut h = vec![0.0; k];
                chain.iter().for_each(|&b| h[b] += 1.0);
                kl_mean += h.iter().zip(&p).filter(|(c, _)| **c > 0.0).map(|(c, q)| c / n as f64 * (c / n as f64 / q).ln()).sum::<f64>()
                    / reps as f64;
                floor_mean += kl_noise_floor(&blocks).unwrap() / reps as f64;
            }
            let theory = (k as f64 - 1.0) / (2.0 * n_eff);
            assert!((kl_mean / theory - 1.0).abs() < 0.1, "stay {stay}: Monte-Carlo KL {kl_mean} vs (K-1)/(2 N_eff) {theory}");
            assert!((floor_mean / kl_mean - 1.0).abs() < 0.1, "stay {stay}: block estimate {floor_mean} vs Monte-Carlo KL {kl_mean}");
        }
        assert!(kl_noise_floor(&[vec![1.0, 2.0]]).is_err());
        assert!(kl_noise_floor(&[vec![1.0, 2.0], vec![1.0]]).is_err());
        assert!(kl_noise_floor(&[vec![0.0, 0.0], vec![0.0, 0.0]]).is_err());
    }

    /// (φ, ψ) at the centre of bin (i, j) of a `bins × bins` Ramachandran grid, `count` times.
    fn pairs_at_centres(counts: &[f64], bins: usize) -> (Vec<f64>, Vec<f64>) {
        let w = 2.0 * PI / bins as f64;
        let (mut phi, mut psi) = (Vec::new(), Vec::new());
        for (k, &c) in counts.iter().enumerate() {
            for _ in 0..c as usize {
                phi.push(-PI + ((k / bins) as f64 + 0.5) * w);
                psi.push(-PI + ((k % bins) as f64 + 0.5) * w);
            }
        }
        (phi, psi)
    }

    /// The αL part holds exactly the terms of the φ rows 0 < φ < 2.2 (8 bins: rows 4, 5, 6 with
    /// centres 0.39, 1.18, 1.96; row 7 at 2.75 is outside), and the total is unchanged by the split.
    #[test]
    fn the_alpha_l_part_of_the_ramachandran_kl_holds_the_terms_of_the_phi_window() {
        let bins = 8;
        let reference: Vec<f64> = (0..bins * bins).map(|k| 1.0 + ((k * 7) % 5) as f64 + (k / bins) as f64).collect();
        let kl = |gen: &[f64]| {
            let (phi, psi) = pairs_at_centres(gen, bins);
            let split = ramachandran_kl_split_from_counts(&reference, &phi, &psi, None, bins).unwrap();
            assert_eq!(split.total, ramachandran_kl_from_counts(&reference, &phi, &psi, None, bins).unwrap());
            split
        };
        // Equal outside the window, the counts of row 5 reversed along ψ (same row total): every
        // term outside is zero, so the whole KL is the αL part.
        let mut inside = reference.clone();
        inside[5 * bins..6 * bins].reverse();
        let s = kl(&inside);
        assert!(s.total > 1e-3 && (s.alpha_l - s.total).abs() < 1e-15, "{s:?}");
        // A change in row 7 (φ 2.75, just outside the window), 0 or 3: none of it is αL.
        for row in [7, 0, 3] {
            let mut outside = reference.clone();
            outside[row * bins..(row + 1) * bins].reverse();
            let s = kl(&outside);
            assert!(s.total > 1e-3 && s.alpha_l == 0.0, "row {row}: {s:?}");
        }
        // Two ψ columns swapped in every φ row: the αL rows hold part of the KL, the other rows
        // the rest (a window taken along ψ by mistake would hold all of it or none).
        let mut column = reference.clone();
        for i in 0..bins {
            column.swap(i * bins + 5, i * bins + 2);
        }
        let s = kl(&column);
        assert!(s.alpha_l > 0.0 && s.alpha_l < s.total, "{s:?}");
    }

    /// The floor is the mean KL of exact draws from the reference histogram: against Monte-Carlo
    /// draws at a size where some bins are usually missed (the ε penalty) and others are well
    /// filled, and against (K − 1)/(2n) when every bin is well filled.
    #[test]
    fn the_ramachandran_kl_floor_is_the_mean_kl_of_exact_draws() {
        use rand::Rng;
        let bins = 4;
        let reference: Vec<f64> = (0..bins * bins)
            .map(|k| {
                if k % 3 == 0 {
                    0.5
                } else if k == 10 {
                    0.0
                } else {
                    40.0 + 10.0 * (k % 4) as f64
                }
            })
            .collect();
        let total: f64 = reference.iter().sum();
        let cdf: Vec<f64> = reference
            .iter()
            .scan(0.0, |a, c| {
                *a += c / total;
                Some(*a)
            })
            .collect();
        let n = 300;
        let floor = ramachandran_kl_floor(&reference, n, bins).unwrap();
        let mut rng = fab_core::seeded_rng(11, 0);
        let reps = 4000;
        let (mut sum, mut sum2, mut sum_l) = (0.0, 0.0, 0.0);
        for _ in 0..reps {
            let mut counts = vec![0.0; bins * bins];
            for _ in 0..n {
                let u: f64 = rng.random();
                counts[cdf.iter().position(|&c| u < c).unwrap_or(bins * bins - 1)] += 1.0;
            }
            let (phi, psi) = pairs_at_centres(&counts, bins);
            let kl = ramachandran_kl_split_from_counts(&reference, &phi, &psi, None, bins).unwrap();
            sum += kl.total;
            sum2 += kl.total * kl.total;
            sum_l += kl.alpha_l;
        }
        let mean = sum / reps as f64;
        let se = ((sum2 / reps as f64 - mean * mean) / reps as f64).sqrt();
        assert!((floor.total - mean).abs() < 4.0 * se, "floor {floor:?} vs Monte-Carlo {mean} ± {se}");
        // Missed bins dominate here: (K − 1)/(2n) alone would be under a third of it.
        assert!(floor.total > 3.0 * 14.0 / (2.0 * n as f64), "{floor:?}");
        assert!((floor.alpha_l - sum_l / reps as f64).abs() < 4.0 * se, "{floor:?} vs {}", sum_l / reps as f64);
        let even = vec![1.0; 16];
        let big = 100_000;
        let f = ramachandran_kl_floor(&even, big, bins).unwrap().total;
        assert!((f / (15.0 / (2.0 * big as f64)) - 1.0).abs() < 0.01, "{f}");
        assert!(ramachandran_kl_floor(&even, 0, bins).is_err());
        assert!(ramachandran_kl_floor(&even, 10, 3).is_err());
        assert!(ramachandran_kl_floor(&[0.0; 16], 10, bins).is_err());
    }

    /// A reference given by its bin counts scores exactly like the pairs it was binned from,
    /// and `AldpReference` uses its histograms when it has them.
    #[test]
    fn kls_against_reference_counts_equal_kls_against_its_pairs() {
        use rand::Rng;
        let mut rng = fab_core::seeded_rng(5, 0);
        let mut angles = |n: usize, c: f64| -> (Vec<f64>, Vec<f64>) {
            (0..n).map(|_| ((c + rng.random::<f64>() * 2.0).rem_euclid(2.0 * PI) - PI, rng.random::<f64>() * 6.0 - 3.0)).unzip()
        };
        let (rphi, rpsi) = angles(5000, 0.0);
        let (gphi, gpsi) = angles(3000, 0.3);
        let w: Vec<f64> = (0..3000).map(|i| 1.0 + (i % 7) as f64).collect();
        for bins in [64, 100] {
            let counts = ramachandran_counts(&rphi, &rpsi, None, bins).unwrap();
            for wt in [None, Some(&w[..])] {
                let a = ramachandran_kl(&rphi, &rpsi, &gphi, &gpsi, wt, bins).unwrap();
                let b = ramachandran_kl_from_counts(&counts, &gphi, &gpsi, wt, bins).unwrap();
                assert!(a > 0.01 && (a - b).abs() < 1e-12 * a, "{a} {b}");
            }
        }
        let mut r = AldpReference {
            phi: rphi.clone(),
            psi: rpsi.clone(),
            z: vec![],
            n_z: 0,
            summary: serde_json::from_str::<ReferenceSummary>(
                r#"{"n_phi_psi":0,"n_z":0,"phi_psi_per_run":[],"z_per_run":[],"basins":[{"mean":0.5,"se":0},{"mean":0.3,"se":0},{"mean":0.2,"se":0}],"basins_per_run":[],"d_form_fraction":0,"temperature":300,"protocol":""}"#,
            )
            .unwrap(),
            histograms: None,
        };
        let from_pairs = (r.ramachandran_kl(&gphi, &gpsi, None, 64).unwrap(), r.phi_psi_kl(&gphi, &gpsi, None).unwrap());
        assert_eq!(r.basin_populations().unwrap(), basin_populations(&rphi, &rpsi, None).unwrap());
        // Histograms of other pairs (the first half only) take over once present.
        let half = 2500;
        r.histograms = Some(ReferenceHistograms {
            ramachandran: vec![(64, ramachandran_counts(&rphi[..half], &rpsi[..half], None, 64).unwrap())],
            phi: counts_1d(&rphi[..half], ANGLE_BINS, -PI, PI).unwrap(),
            psi: counts_1d(&rpsi[..half], ANGLE_BINS, -PI, PI).unwrap(),
        });
        r.summary.histogram_records = half as u64;
        let kl64 = r.ramachandran_kl(&gphi, &gpsi, None, 64).unwrap();
        assert_eq!(kl64, ramachandran_kl(&rphi[..half], &rpsi[..half], &gphi, &gpsi, None, 64).unwrap());
        assert_ne!(kl64, from_pairs.0);
        // 100 bins are not shipped here: the pairs serve.
        assert_eq!(r.ramachandran_kl(&gphi, &gpsi, None, 100).unwrap(), ramachandran_kl(&rphi, &rpsi, &gphi, &gpsi, None, 100).unwrap());
        let (kphi, kpsi) = r.phi_psi_kl(&gphi, &gpsi, None).unwrap();
        let (ephi, epsi) = phi_psi_kl(&rphi[..half], &rpsi[..half], &gphi, &gpsi, None).unwrap();
        assert!((kphi - ephi).abs() < 1e-12 && (kpsi - epsi).abs() < 1e-12 && kphi != from_pairs.1 .0);
        assert_eq!(r.basin_populations().unwrap().as_array(), [0.5, 0.3, 0.2]);
        assert!(ramachandran_kl_from_counts(&[1.0; 10], &gphi, &gpsi, None, 64).is_err());
        assert!(ramachandran_kl_from_counts(&vec![0.0; 64 * 64], &gphi, &gpsi, None, 64).is_err());
    }
}
