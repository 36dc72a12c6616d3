//! Replica-exchange reference sampling of alanine dipeptide at 300 K.
//!
//! * `run`: one independent replica-exchange run (HMC moves in the 60-D flow coordinates, the
//!   energy tempered over a temperature ladder, neighbour swaps); writes the 300 K replica's
//!   (φ, ψ), energies, chirality flags and thinned flow-space samples, plus `diagnostics.json`.
//! * `combine`: pools several runs into the compact reference shipped in
//!   `crates/fab-targets/data/aldp/reference` (L-form only), with per-run basin populations,
//!   error bars, autocorrelation times and a consistency test.
//! * `bench`: density-evaluation throughput.
//!
//! Protocol, cost and diagnostics of the shipped reference: `docs/ALDP_REFERENCE.md`.

mod analysis;
mod volume;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::{Parser, Subcommand, ValueEnum};
use fab_core::{npy, seeded_rng, LogDensity};
use fab_mcmc::{betas_from_temperatures, geometric_temperatures, linear_temperatures, ReplicaExchange, ReplicaExchangeConfig};
use fab_targets::aldp::eval::{
    basin_of, basin_populations, counts_1d, kl_noise_floor, phi_psi_of_flow, ramachandran_counts, ramachandran_file, Basin, Estimate,
    ReferenceSummary, ANGLE_BINS, PHI_PSI_HISTOGRAM_FILE, RAMACHANDRAN_BINS, RAMACHANDRAN_BINS_FINE,
};
use fab_targets::aldp::{
    is_l_form, phi_psi, wrap_angle, AldpForceField, AldpTarget, InternalCoordinates, MinimizeOptions, FLOW_DIM, KBT, TEMPERATURE,
};
use serde::Serialize;
use serde_json::json;

use crate::analysis::{batch_means_se, chi2_consistency, mean, tau_int};
use crate::volume::CartesianVolume;

#[derive(Parser, Debug)]
#[command(about = "Replica-exchange reference sampling of alanine dipeptide (300 K)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One independent replica-exchange run.
    Run(RunArgs),
    /// Pool runs into the shipped reference.
    Combine(CombineArgs),
    /// Time density evaluations and sweeps.
    Bench(BenchArgs),
    /// Basin populations and mean energy of a multi-chain run, with standard errors from the
    /// spread of its independent chains (for the single-temperature cross-check).
    Summarize(SummarizeArgs),
}

#[derive(clap::Args, Debug)]
struct SummarizeArgs {
    /// Run directory written by `run`.
    #[arg(long, num_args = 1.., required = true)]
    run: Vec<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, Serialize)]
enum Ladder {
    /// The paper's ladder: 300 K + 50 K steps (21 replicas up to 1300 K by default).
    Paper,
    /// Geometric from 300 K to `--t-max` with `--n-replicas` replicas.
    Geometric,
}

#[derive(ValueEnum, Clone, Copy, Debug, Serialize)]
enum Start {
    /// The minimum-energy configuration of the transform (z = 0; β region).
    Min,
    /// Minimised from φ = −70°, ψ = −40° (αR).
    AlphaR,
    /// Minimised from φ = 60°, ψ = 40° (αL).
    AlphaL,
    /// Minimised from φ = 70°, ψ = −70° (C7ax).
    C7ax,
    /// Minimised from φ = −75°, ψ = 145° (PII).
    Pii,
}

#[derive(clap::Args, Debug, Serialize)]
struct RunArgs {
    /// Seed of the run's random stream.
    #[arg(long)]
    seed: u64,
    /// Starting configuration (all replicas start there).
    #[arg(long, value_enum, default_value = "min")]
    start: Start,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Temperature ladder.
    #[arg(long, value_enum, default_value = "paper")]
    ladder: Ladder,
    /// Number of replicas.
    #[arg(long, default_value_t = 21)]
    n_replicas: usize,
    /// Highest temperature (K) of the ladder; the paper ladder uses 50 K steps and ignores it.
    #[arg(long, default_value_t = 1300.0)]
    t_max: f64,
    /// Independent chains batched together in this run.
    #[arg(long, default_value_t = 1)]
    n_chains: usize,
    /// Leapfrog steps per HMC trajectory.
    #[arg(long, default_value_t = 10)]
    n_leapfrog: usize,
    /// Initial step size of the 300 K replica (flow-coordinate units).
    #[arg(long, default_value_t = 0.05)]
    step_size: f64,
    /// Target acceptance of the burn-in step-size adaptation.
    #[arg(long, default_value_t = 0.75)]
    target_accept: f64,
    /// Burn-in sweeps (step sizes adapt; nothing is recorded).
    #[arg(long, default_value_t = 3000)]
    burn_in: usize,
    /// Production sweeps (step sizes frozen).
    #[arg(long, default_value_t = 100_000)]
    sweeps: usize,
    /// Record (φ, ψ), energy and chirality of the 300 K replica every this many sweeps.
    #[arg(long, default_value_t = 2)]
    phi_psi_every: usize,
    /// Record the full 300 K flow-space sample every this many sweeps (a multiple of
    /// `phi_psi_every`).
    #[arg(long, default_value_t = 20)]
    z_every: usize,
    /// Print progress every this many sweeps.
    #[arg(long, default_value_t = 5000)]
    progress_every: usize,
}

#[derive(clap::Args, Debug)]
struct CombineArgs {
    /// Run directories (each written by `run`).
    #[arg(long, num_args = 1.., required = true)]
    runs: Vec<PathBuf>,
    /// Output directory of the shipped reference.
    #[arg(long)]
    out: PathBuf,
    /// Flow-space samples to ship in total (taken evenly from the runs, thinned evenly in time;
    /// stored as float16).
    #[arg(long, default_value_t = 100_000)]
    n_z: usize,
    /// (φ, ψ) pairs to ship in total (taken evenly from the runs, thinned evenly in time).
    #[arg(long, default_value_t = 100_000)]
    n_phi_psi: usize,
    /// Batches for the batch-means standard errors.
    #[arg(long, default_value_t = 20)]
    n_batches: usize,
    /// Command line recorded in the summary (how to regenerate).
    #[arg(long, default_value = "")]
    protocol: String,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Batch sizes to time.
    #[arg(long, num_args = 1.., default_values_t = vec![21usize, 42, 84])]
    batch: Vec<usize>,
    /// Sweeps of the timed replica-exchange run (paper ladder, 1 chain).
    #[arg(long, default_value_t = 200)]
    sweeps: usize,
}

fn main() {
    if let Err(e) = run_cli() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run_cli() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run(a) => run(a),
        Cmd::Combine(a) => combine(a),
        Cmd::Bench(a) => bench(a),
        Cmd::Summarize(a) => summarize(a),
    }
}

/// CPU time of this process in seconds (user + system, from /proc; NaN where unavailable).
fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    match (f.get(11).and_then(|v| v.parse::<f64>().ok()), f.get(12).and_then(|v| v.parse::<f64>().ok())) {
        (Some(u), Some(s)) => (u + s) / tick,
        _ => f64::NAN,
    }
}

struct Model {
    ic: Arc<InternalCoordinates>,
    ff: Arc<AldpForceField>,
    target: AldpTarget,
    volume: CartesianVolume,
}

fn model() -> Result<Model> {
    let ff = Arc::new(AldpForceField::amber_implicit());
    let ic = Arc::new(InternalCoordinates::with_reference(ff.reference_positions())?);
    let target = AldpTarget::new(ff.clone(), ic.clone());
    let volume = CartesianVolume::new(ic.clone());
    Ok(Model { ic, ff, target, volume })
}

/// Wraps every dihedral of a flow-space configuration to its canonical range (the density is
/// 2π-periodic in every raw dihedral, so this is a symmetry of the target).
fn canonical(z: &mut [f64], ic: &InternalCoordinates) {
    let s = ic.stds();
    for i in (5..FLOW_DIM).step_by(3) {
        z[i] = wrap_angle(z[i] * s[i]) / s[i];
    }
}

fn start_config(start: Start, m: &Model) -> Result<Vec<f64>> {
    let deg = std::f64::consts::PI / 180.0;
    let (phi, psi) = match start {
        Start::Min => return Ok(vec![0.0; FLOW_DIM]),
        Start::AlphaR => (-70.0, -40.0),
        Start::AlphaL => (60.0, 40.0),
        Start::C7ax => (70.0, -70.0),
        Start::Pii => (-75.0, 145.0),
    };
    // Raw boltzgen dihedrals are −φ (flow dim 17) and −ψ (flow dim 44), std 1. The dihedrals
    // of HA (dim 26) and CB (dim 29) are measured from the same atom (C of ACE) around the same
    // N–CA axis, so they are shifted with φ: otherwise HA and CB would turn with the ACE group
    // and the configuration would change chirality.
    let mean = m.ic.means();
    let mut z = vec![0.0; FLOW_DIM];
    let d_phi = wrap_angle(-phi * deg - mean[17]);
    for i in [17, 26, 29] {
        z[i] = wrap_angle(z[i] + d_phi);
    }
    z[44] = wrap_angle(-psi * deg - mean[44]);
    let (x, _) = m.ic.to_cartesian(&z)?;
    let opts = MinimizeOptions { max_iterations: 2000, ..Default::default() };
    let res = m.ff.minimize(&x, &opts)?;
    let (mut z, _) = m.ic.to_internal(&res.positions)?;
    canonical(&mut z, &m.ic);
    Ok(z)
}

fn temperatures(a: &RunArgs) -> Vec<f64> {
    match a.ladder {
        Ladder::Paper => linear_temperatures(TEMPERATURE, 50.0, a.n_replicas),
        Ladder::Geometric => geometric_temperatures(TEMPERATURE, a.t_max, a.n_replicas),
    }
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|x| *x as f32).collect()
}

/// Per-output record of the 300 K replica.
#[derive(Default)]
struct Cold {
    phi_psi: Vec<f64>,
    energy: Vec<f64>,
    l_form: Vec<f64>,
    z: Vec<f64>,
}

fn run(a: RunArgs) -> Result<()> {
    if a.z_every == 0 || a.phi_psi_every == 0 || !a.z_every.is_multiple_of(a.phi_psi_every) {
        bail!("--z-every must be a positive multiple of --phi-psi-every");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let m = model()?;
    let temps = temperatures(&a);
    let betas = betas_from_temperatures(&temps)?;
    let k = betas.len();
    let cfg = ReplicaExchangeConfig {
        betas: betas.clone(),
        n_leapfrog: a.n_leapfrog,
        init_step_size: a.step_size,
        target_accept: a.target_accept,
        ..Default::default()
    };
    let z0 = start_config(a.start, &m)?;
    if !is_l_form(&z0)? {
        bail!("start configuration is not L-form");
    }
    let (x0c, _) = m.ic.to_cartesian(&z0)?;
    let (phi0, psi0) = phi_psi(&x0c)?;
    let rows: Vec<f64> = (0..a.n_chains * k).flat_map(|_| z0.iter().copied()).collect();
    let x0 = Tensor::from_vec(rows, (a.n_chains * k, FLOW_DIM), &Device::Cpu)?;
    let mut re = ReplicaExchange::new(&m.target, Some(&m.volume as &dyn LogDensity), cfg.clone(), &x0)?;
    let mut rng = seeded_rng(a.seed, 0);
    println!(
        "run seed {} start {:?} (φ {:.1}°, ψ {:.1}°), {} replicas {:.0}–{:.0} K, {} chain(s)",
        a.seed,
        a.start,
        phi0.to_degrees(),
        psi0.to_degrees(),
        k,
        temps[0],
        temps[k - 1],
        a.n_chains
    );

    let (t0, c0) = (Instant::now(), cpu_seconds());
    for s in 1..=a.burn_in {
        re.sweep(true, &mut rng)?;
        if s % a.progress_every == 0 {
            let st = re.stats();
            println!(
                "burn-in {s}: {:.0} s, acc[0] {:.2} acc[K-1] {:.2}, eps[0] {:.4} eps[K-1] {:.4}",
                t0.elapsed().as_secs_f64(),
                st.acceptance_rates()[0],
                st.acceptance_rates()[k - 1],
                re.step_sizes()[0],
                re.step_sizes()[k - 1]
            );
        }
    }
    let burn_stats = re.stats().clone();
    re.reset_stats();
    let burn_wall = t0.elapsed().as_secs_f64();
    let step_sizes = re.step_sizes();
    println!("burn-in done in {burn_wall:.0} s; step sizes {step_sizes:?}");

    let mut cold = Cold::default();
    let (t1, c1) = (Instant::now(), cpu_seconds());
    let mut g = vec![0.0; FLOW_DIM];
    let mut n_alpha_l = 0usize;
    re.run(a.sweeps, a.phi_psi_every, &mut rng, |s, re| {
        let pos = re.positions(0)?;
        let lt = re.log_target(0)?;
        for (c, zr) in pos.chunks(FLOW_DIM).enumerate() {
            let mut z = zr.to_vec();
            canonical(&mut z, &m.ic);
            let (x, _) = m.ic.to_cartesian(&z).map_err(|e| fab_core::Error::invalid(e.to_string()))?;
            let (phi, psi) = phi_psi(&x).map_err(|e| fab_core::Error::invalid(e.to_string()))?;
            let lr = m.volume.eval_one(&z, &mut g);
            let l = is_l_form(&z).map_err(|e| fab_core::Error::invalid(e.to_string()))?;
            cold.phi_psi.extend([phi, psi]);
            cold.energy.push(-(lt[c] - lr) * KBT);
            cold.l_form.push(if l { 1.0 } else { 0.0 });
            if basin_of(phi, psi) == Some(Basin::AlphaL) {
                n_alpha_l += 1;
            }
            if s % a.z_every == 0 {
                cold.z.extend(&z);
            }
        }
        if s % a.progress_every == 0 {
            let st = re.stats();
            let sw = st.swap_rates();
            println!(
                "sweep {s}: {:.0} s, acc[0] {:.2}, swap min {:.2} mean {:.2}, round trips {}, αL so far {:.4}",
                t1.elapsed().as_secs_f64(),
                st.acceptance_rates()[0],
                sw.iter().copied().fold(f64::INFINITY, f64::min),
                mean(&sw),
                st.round_trips,
                n_alpha_l as f64 / cold.energy.len() as f64
            );
        }
        Ok(())
    })?;
    let prod_wall = t1.elapsed().as_secs_f64();
    let prod_cpu = cpu_seconds() - c1;
    let total_cpu = cpu_seconds() - c0;
    let st = re.stats().clone();

    let n = cold.energy.len();
    npy::write_f32(&a.out.join("cold_phi_psi.npy"), &f32s(&cold.phi_psi), &[n, 2])?;
    npy::write_f64(&a.out.join("cold_energy.npy"), &cold.energy, &[n])?;
    npy::write_f32(&a.out.join("cold_l_form.npy"), &f32s(&cold.l_form), &[n])?;
    let nz = cold.z.len() / FLOW_DIM;
    npy::write_f32(&a.out.join("cold_z.npy"), &f32s(&cold.z), &[nz, FLOW_DIM])?;
    let d_frac = 1.0 - mean(&cold.l_form);
    let diag = json!({
        "args": a,
        "temperatures": temps,
        "betas": betas,
        "config": cfg,
        "start_phi_psi_deg": [phi0.to_degrees(), psi0.to_degrees()],
        "step_sizes": step_sizes,
        "burn_in_stats": burn_stats,
        "stats": st,
        "acceptance_rates": st.acceptance_rates(),
        "swap_rates": st.swap_rates(),
        "mean_swap_accept_probs": st.mean_swap_accept_probs(),
        "n_outputs": n,
        "n_z": nz,
        "d_form_fraction": d_frac,
        "burn_in_wall_s": burn_wall,
        "production_wall_s": prod_wall,
        "production_cpu_s": prod_cpu,
        "total_cpu_s": total_cpu,
        "evaluations_per_cpu_s": st.n_evaluations as f64 / prod_cpu,
        "threads": std::env::var("RAYON_NUM_THREADS").unwrap_or_default(),
    });
    let path = a.out.join("diagnostics.json");
    std::fs::write(&path, serde_json::to_string_pretty(&diag)?)?;
    println!(
        "done: {n} outputs, {nz} z samples, D fraction {d_frac:.2e}, production {prod_wall:.0} s wall / {prod_cpu:.0} s cpu, {:.0} evals/cpu-s",
        st.n_evaluations as f64 / prod_cpu
    );
    Ok(())
}

/// One run's outputs, L-form filtered.
struct RunData {
    dir: PathBuf,
    phi: Vec<f64>,
    psi: Vec<f64>,
    energy: Vec<f64>,
    z: Vec<f64>,
    n_total: usize,
    n_d: usize,
    n_z_total: usize,
    diag: serde_json::Value,
}

fn load_run(dir: &Path) -> Result<RunData> {
    let (pp, _) = npy::read_f64(&dir.join("cold_phi_psi.npy"))?;
    let (l, _) = npy::read_f64(&dir.join("cold_l_form.npy"))?;
    let (e, _) = npy::read_f64(&dir.join("cold_energy.npy"))?;
    let (z, _) = npy::read_f64(&dir.join("cold_z.npy"))?;
    let diag: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("diagnostics.json"))?)?;
    let (mut phi, mut psi, mut energy) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..l.len() {
        if l[i] > 0.5 {
            phi.push(pp[2 * i]);
            psi.push(pp[2 * i + 1]);
            energy.push(e[i]);
        }
    }
    let mut zl = Vec::new();
    let n_z_total = z.len() / FLOW_DIM;
    for zi in z.chunks(FLOW_DIM) {
        if is_l_form(zi)? {
            zl.extend_from_slice(zi);
        }
    }
    Ok(RunData { dir: dir.to_path_buf(), n_total: l.len(), n_d: l.len() - phi.len(), phi, psi, energy, z: zl, n_z_total, diag })
}

/// Fraction of flow-space samples `[n, 60]` with a cis peptide bond: ω1 = dihedral(1, 4, 6, 8)
/// (ACE–ALA) and ω2 = dihedral(8, 14, 16, 18) (ALA–NME), read from flow dims 8 and 50 (raw
/// dihedral = −ω, std 1); cis iff |ω| < π/2. Returns (ω1 cis, ω2 cis).
fn cis_fractions(z: &[f64], ic: &InternalCoordinates) -> (f64, f64) {
    let mean = ic.means();
    let n = (z.len() / FLOW_DIM).max(1) as f64;
    let cis =
        |i: usize| z.chunks(FLOW_DIM).filter(|r| wrap_angle(-(r[i] + mean[i])).abs() < std::f64::consts::FRAC_PI_2).count() as f64 / n;
    (cis(8), cis(50))
}

/// Across-chain mean and standard error.
fn mean_se(v: &[f64]) -> Estimate {
    let m = mean(v);
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64).sqrt();
    Estimate { mean: m, se: sd / (v.len() as f64).sqrt() }
}

fn summarize(a: SummarizeArgs) -> Result<()> {
    let ic = InternalCoordinates::alanine_dipeptide();
    // Per chain over all given runs (chains of different runs are independent too).
    let (mut pops, mut energies) = (Vec::new(), Vec::new());
    let mut zs = Vec::new();
    for dir in &a.run {
        let (pp, _) = npy::read_f64(&dir.join("cold_phi_psi.npy"))?;
        let (e, _) = npy::read_f64(&dir.join("cold_energy.npy"))?;
        let (z, _) = npy::read_f64(&dir.join("cold_z.npy"))?;
        let diag: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("diagnostics.json"))?)?;
        let c = diag["args"]["n_chains"].as_u64().context("n_chains in diagnostics.json")? as usize;
        for chain in 0..c {
            let rows: Vec<usize> = (chain..e.len()).step_by(c).collect();
            let phi: Vec<f64> = rows.iter().map(|&r| pp[2 * r]).collect();
            let psi: Vec<f64> = rows.iter().map(|&r| pp[2 * r + 1]).collect();
            pops.push(basin_populations(&phi, &psi, None)?.as_array());
            energies.push(mean(&rows.iter().map(|&r| e[r]).collect::<Vec<_>>()));
        }
        zs.extend(z);
    }
    let names = ["beta_c5", "alpha_r", "alpha_l"];
    let mut out = serde_json::Map::new();
    for (j, name) in names.iter().enumerate() {
        out.insert(name.to_string(), json!(mean_se(&pops.iter().map(|p| p[j]).collect::<Vec<_>>())));
    }
    out.insert("energy_kj_mol".into(), json!(mean_se(&energies)));
    out.insert("n_chains".into(), json!(energies.len()));
    out.insert("cis_fraction_omega1_omega2".into(), json!(cis_fractions(&zs, &ic)));
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `n` indices spread evenly over 0..len.
fn even_indices(len: usize, n: usize) -> Vec<usize> {
    let n = n.min(len);
    (0..n).map(|i| i * len / n).collect()
}

fn combine(a: CombineArgs) -> Result<()> {
    let runs: Vec<RunData> = a.runs.iter().map(|d| load_run(d)).collect::<Result<_>>()?;
    let r = runs.len();
    std::fs::create_dir_all(&a.out)?;
    let names = ["beta_c5", "alpha_r", "alpha_l"];
    let mut per_run = Vec::new();
    let mut per_run_json = Vec::new();
    for run in &runs {
        let pops = basin_populations(&run.phi, &run.psi, None)?;
        let mut ests = [Estimate { mean: 0.0, se: 0.0 }; 3];
        let mut taus = serde_json::Map::new();
        for (j, name) in names.iter().enumerate() {
            let ind: Vec<f64> = run
                .phi
                .iter()
                .zip(&run.psi)
                .map(|(p, s)| {
                    let b = basin_of(*p, *s);
                    let hit = matches!((j, b), (0, Some(Basin::BetaC5)) | (1, Some(Basin::AlphaR)) | (2, Some(Basin::AlphaL)));
                    if hit {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            ests[j] = Estimate { mean: pops.as_array()[j], se: batch_means_se(&ind, a.n_batches) };
            let (tau, w) = tau_int(&ind);
            taus.insert(name.to_string(), json!({"tau_outputs": tau, "window": w}));
        }
        let (tau_e, w_e) = tau_int(&run.energy);
        let every = run.diag["args"]["phi_psi_every"].as_u64().unwrap_or(1) as f64;
        per_run.push(ests);
        per_run_json.push(json!({
            "dir": run.dir.display().to_string(),
            "seed": run.diag["args"]["seed"],
            "start": run.diag["args"]["start"],
            "n_outputs": run.n_total,
            "n_d_form": run.n_d,
            "n_z_recorded": run.n_z_total,
            "n_z_l_form": run.z.len() / FLOW_DIM,
            "basins": ests,
            "tau_int_basin_indicators": taus,
            "tau_int_energy_outputs": tau_e,
            "tau_int_energy_window": w_e,
            "output_every_sweeps": every,
            "mean_energy_kj_mol": mean(&run.energy),
            "energy_se_batch_means": batch_means_se(&run.energy, a.n_batches),
            "acceptance_rates": run.diag["acceptance_rates"],
            "swap_rates": run.diag["swap_rates"],
            "round_trips": run.diag["stats"]["round_trips"],
            "step_sizes": run.diag["step_sizes"],
            "production_wall_s": run.diag["production_wall_s"],
            "production_cpu_s": run.diag["production_cpu_s"],
            "total_cpu_s": run.diag["total_cpu_s"],
            "evaluations_per_cpu_s": run.diag["evaluations_per_cpu_s"],
        }));
    }
    // Pooled populations: mean over runs, SE from the spread of the independent runs.
    let mut pooled = [Estimate { mean: 0.0, se: 0.0 }; 3];
    let mut consistency = serde_json::Map::new();
    for j in 0..3 {
        let v: Vec<f64> = per_run.iter().map(|e| e[j].mean).collect();
        let s: Vec<f64> = per_run.iter().map(|e| e[j].se).collect();
        pooled[j] = mean_se(&v);
        let (chi2, dof, p) = chi2_consistency(&v, &s);
        consistency.insert(names[j].to_string(), json!({"chi2": chi2, "dof": dof, "p_value": p}));
    }

    // Ship: n_phi_psi pairs and n_z samples, an equal share from every run, evenly in time.
    let (mut pp, mut zs) = (Vec::new(), Vec::new());
    let (mut pp_per_run, mut z_per_run) = (Vec::new(), Vec::new());
    for (i, run) in runs.iter().enumerate() {
        let share = |total: usize| total / r + usize::from(i < total % r);
        let idx = even_indices(run.phi.len(), share(a.n_phi_psi));
        for &t in &idx {
            pp.extend([run.phi[t], run.psi[t]]);
        }
        pp_per_run.push(idx.len());
        let nz = run.z.len() / FLOW_DIM;
        let idx = even_indices(nz, share(a.n_z));
        for &t in &idx {
            zs.extend_from_slice(&run.z[t * FLOW_DIM..(t + 1) * FLOW_DIM]);
        }
        z_per_run.push(idx.len());
    }
    let n_pp = pp.len() / 2;
    let n_z = zs.len() / FLOW_DIM;
    if n_pp < a.n_phi_psi || n_z < a.n_z {
        println!("warning: only {n_pp} pairs and {n_z} z samples available");
    }
    npy::write_f32(&a.out.join("phi_psi.npy"), &f32s(&pp), &[n_pp, 2])?;
    // z in half precision: every flow coordinate lies in [−π, π], so the rounding error is
    // ≤ 2⁻¹⁰ (docs/ALDP_REFERENCE.md measures its effect on the metrics).
    npy::write_f16(&a.out.join("z.npy"), &zs, &[n_z, FLOW_DIM])?;
    // Basin populations of the shipped z samples (φ, ψ recomputed from the stored values).
    let (z16, _) = npy::read_f64(&a.out.join("z.npy"))?;
    let (zphi, zpsi) = phi_psi_of_flow(&z16)?;
    let z_pops = basin_populations(&zphi, &zpsi, None)?;
    let pp32: Vec<f64> = pp.iter().map(|v| *v as f32 as f64).collect();
    let shipped_pops = basin_populations(
        &pp32.iter().step_by(2).copied().collect::<Vec<_>>(),
        &pp32.iter().skip(1).step_by(2).copied().collect::<Vec<_>>(),
        None,
    )?;
    // Histograms of every recorded L-form pair (the reference of the (φ, ψ) KLs) and the KL
    // noise floor of each, from n_batches blocks per run.
    let n_records: usize = runs.iter().map(|x| x.phi.len()).sum();
    let mut floors = serde_json::Map::new();
    let mut floor_of = [None, None];
    for (slot, bins) in [RAMACHANDRAN_BINS, RAMACHANDRAN_BINS_FINE].into_iter().enumerate() {
        let mut total = vec![0.0; bins * bins];
        let mut blocks = Vec::new();
        for run in &runs {
            let len = run.phi.len();
            for b in 0..a.n_batches {
                let (lo, hi) = (b * len / a.n_batches, (b + 1) * len / a.n_batches);
                let c = ramachandran_counts(&run.phi[lo..hi], &run.psi[lo..hi], None, bins)?;
                total.iter_mut().zip(&c).for_each(|(t, v)| *t += v);
                blocks.push(c);
            }
        }
        let floor = kl_noise_floor(&blocks)?;
        let occupied = total.iter().filter(|c| **c > 0.0).count();
        let n_eff = (occupied as f64 - 1.0) / (2.0 * floor);
        floors.insert(bins.to_string(), json!({"kl_floor": floor, "occupied_bins": occupied, "n_effective_from_floor": n_eff}));
        floor_of[slot] = Some(floor);
        println!("Ramachandran {bins}×{bins}: KL noise floor {floor:.2e}, {occupied} occupied bins, N_eff ≈ {n_eff:.3e}");
        npy::write_f64(&a.out.join(ramachandran_file(bins)), &total, &[bins, bins])?;
    }
    let all_phi: Vec<f64> = runs.iter().flat_map(|x| x.phi.iter().copied()).collect();
    let all_psi: Vec<f64> = runs.iter().flat_map(|x| x.psi.iter().copied()).collect();
    let mut angle_counts = counts_1d(&all_phi, ANGLE_BINS, -std::f64::consts::PI, std::f64::consts::PI)?;
    angle_counts.extend(counts_1d(&all_psi, ANGLE_BINS, -std::f64::consts::PI, std::f64::consts::PI)?);
    npy::write_f64(&a.out.join(PHI_PSI_HISTOGRAM_FILE), &angle_counts, &[2, ANGLE_BINS])?;
    let cis = cis_fractions(&zs, &InternalCoordinates::alanine_dipeptide());
    let n_d: usize = runs.iter().map(|x| x.n_d).sum();
    let n_all: usize = runs.iter().map(|x| x.n_total).sum();
    let summary = ReferenceSummary {
        n_phi_psi: n_pp,
        n_z,
        phi_psi_per_run: pp_per_run,
        z_per_run,
        basins: pooled,
        basins_per_run: per_run.clone(),
        d_form_fraction: n_d as f64 / n_all as f64,
        temperature: TEMPERATURE,
        protocol: a.protocol.clone(),
        histogram_records: n_records as u64,
        ramachandran_kl_floor: floor_of[0],
        ramachandran_kl_floor_100: floor_of[1],
    };
    std::fs::write(a.out.join("reference.json"), serde_json::to_string_pretty(&summary)?)?;
    let runs_json = json!({
        "runs": per_run_json,
        "pooled_basins": pooled,
        "consistency_chi2": consistency,
        "histogram_records": n_records,
        "ramachandran_kl_noise_floor": floors,
        "shipped_phi_psi_basins": shipped_pops,
        "shipped_z_basins": z_pops,
        "shipped_z_cis_fraction_omega1_omega2": cis,
        "d_form_samples": n_d,
        "all_samples": n_all,
    });
    std::fs::write(a.out.join("runs.json"), serde_json::to_string_pretty(&runs_json)?)?;
    println!("{}", serde_json::to_string_pretty(&runs_json)?);
    println!("wrote {n_pp} (φ, ψ) pairs and {n_z} z samples to {}", a.out.display());
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    let m = model()?;
    let mut rng = seeded_rng(0, 0);
    for &n in &a.batch {
        let z: Vec<f64> = fab_core::rng::normal_vec(&mut rng, n * FLOW_DIM).iter().map(|v| 0.3 * v).collect();
        let t = Tensor::from_vec(z, (n, FLOW_DIM), &Device::Cpu)?;
        let reps = (20_000 / n).max(5);
        for (name, d) in [("target", &m.target as &dyn LogDensity), ("volume", &m.volume as &dyn LogDensity)] {
            let (t0, c0) = (Instant::now(), cpu_seconds());
            for _ in 0..reps {
                d.log_prob_and_grad(&t)?;
            }
            let w = t0.elapsed().as_secs_f64() / (reps * n) as f64 * 1e6;
            let c = (cpu_seconds() - c0) / (reps * n) as f64 * 1e6;
            println!("{name} log_prob_and_grad batch {n}: {w:.2} µs/config wall, {c:.2} µs/config cpu");
        }
    }
    let temps = linear_temperatures(TEMPERATURE, 50.0, 21);
    let cfg = ReplicaExchangeConfig { betas: betas_from_temperatures(&temps)?, n_leapfrog: 10, init_step_size: 0.05, ..Default::default() };
    let x0 = Tensor::zeros((21, FLOW_DIM), candle_core::DType::F64, &Device::Cpu)?;
    let mut re = ReplicaExchange::new(&m.target, Some(&m.volume as &dyn LogDensity), cfg, &x0)?;
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for _ in 0..a.sweeps {
        re.sweep(true, &mut rng)?;
    }
    let w = t0.elapsed().as_secs_f64();
    let c = cpu_seconds() - c0;
    println!(
        "replica exchange, 21 replicas, L = 10: {:.2} ms/sweep wall, {:.2} ms/sweep cpu, {:.0} evaluations/cpu-s, acc {:?}",
        w / a.sweeps as f64 * 1e3,
        c / a.sweeps as f64 * 1e3,
        re.stats().n_evaluations as f64 / c,
        re.stats().acceptance_rates().iter().map(|v| (v * 100.0).round() / 100.0).collect::<Vec<_>>()
    );
    Ok(())
}
