//! `fab`: train, evaluate and sample FAB flows; alanine-dipeptide energies and minimisation.
//!
//! With no arguments, trains FAB with the prioritised buffer on the 40-mode Gaussian mixture
//! using the embedded `gmm-quick` configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fab_train::run::{self, RunOptions, RunOutcome};
use fab_train::ExperimentConfig;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Configurations compiled into the binary, usable by name instead of a path.
const EMBEDDED: &[(&str, &str)] = &[
    ("gmm-quick", include_str!("../../../experiments/gmm/quick.toml")),
    ("gmm-paper", include_str!("../../../experiments/gmm/paper.toml")),
    ("many-well-paper", include_str!("../../../experiments/many_well/paper.toml")),
    ("many-well-cpu", include_str!("../../../experiments/many_well/cpu.toml")),
    ("aldp-paper", include_str!("../../../experiments/aldp/paper.toml")),
    ("aldp-cpu", include_str!("../../../experiments/aldp/cpu.toml")),
];

/// Molecular systems with a built-in force field.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum System {
    /// Alanine dipeptide in implicit solvent (AMBER ff96 + GB-OBC1), 22 atoms.
    Aldp,
}

#[derive(Parser, Debug)]
#[command(name = "fab", version, about = "Flow Annealed Importance Sampling Bootstrap (FAB) in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a flow (FAB with buffer on the GMM by default).
    Train {
        /// A TOML config file, or the name of an embedded config (see `fab configs`).
        config: Option<String>,
        /// Override a config value, e.g. `--set train.batch_size=256` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Output directory (default: runs/<name>-seed<seed>-<unix time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in this directory from its latest checkpoint.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "overrides", "out"])]
        resume: Option<PathBuf>,
        /// Hide the progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Re-run the final evaluation of a run directory's latest checkpoint.
    Eval {
        /// The run directory.
        dir: PathBuf,
        /// Override an evaluation setting, e.g. `--set eval.final_batch_size=1000000`.
        #[arg(long = "set", value_name = "eval.KEY=VALUE")]
        set: Vec<String>,
    },
    /// Draw samples from a trained flow (.npy, or .csv by extension).
    Sample {
        /// The run directory.
        dir: PathBuf,
        /// Number of samples.
        #[arg(short, default_value_t = 10_000)]
        n: usize,
        /// Output file (.npy or .csv); log q is written beside .npy samples as <stem>_log_q.npy.
        #[arg(long)]
        out: PathBuf,
    },
    /// Energies and forces of molecular configurations, printed as JSON.
    Energy {
        /// The molecular system (only `aldp`: alanine dipeptide, AMBER ff96 + GB-OBC1).
        #[arg(long, default_value = "aldp")]
        system: System,
        /// Configurations: a JSON list of 22×3 coordinates in nm, or a .npy array [n, 66].
        #[arg(long)]
        coords: PathBuf,
        /// Also report the forces of every energy term.
        #[arg(long)]
        per_term_forces: bool,
    },
    /// Minimise the energy (L-BFGS) and report the minimum.
    Minimize {
        /// The molecular system (only `aldp`).
        #[arg(long, default_value = "aldp")]
        system: System,
        /// Start configuration (JSON or .npy; the first configuration is used). Default: the
        /// force field's start positions.
        #[arg(long)]
        coords: Option<PathBuf>,
        /// Stop when the largest force component is below this (kJ/mol/nm).
        #[arg(long, default_value_t = 1e-3)]
        force_tolerance: f64,
        /// Write the minimised coordinates here (.pdb, .xyz or .npy).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List or print the embedded configurations.
    Configs {
        /// Print this one.
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    match run_cli() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line per cause, without backtraces.
            let msg: Vec<String> = e.chain().map(|c| c.to_string().lines().next().unwrap_or("").to_string()).collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn run_cli() -> Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Train { config: None, overrides: vec![], out: None, resume: None, no_progress: false });
    match command {
        Command::Train { config, overrides, out, resume, no_progress } => train(config, overrides, out, resume, !no_progress),
        Command::Eval { dir, set } => {
            let m = run::evaluate_run_with(&dir, &set)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
            Ok(())
        }
        Command::Sample { dir, n, out } => sample(&dir, n, &out),
        Command::Energy { system: System::Aldp, coords, per_term_forces } => {
            let ff = fab_targets::aldp::AldpForceField::amber_implicit();
            let xs = fab_targets::aldp::read_coordinates(&coords)?;
            let report = fab_targets::aldp::EnergyReport::new(&ff, &xs, per_term_forces)?;
            println!("{}", report.to_json());
            Ok(())
        }
        Command::Minimize { system: System::Aldp, coords, force_tolerance, out } => minimize(coords, force_tolerance, out),
        Command::Configs { name } => {
            match name {
                None => {
                    for (n, _) in EMBEDDED {
                        println!("{n}");
                    }
                }
                Some(n) => match EMBEDDED.iter().find(|(k, _)| *k == n) {
                    Some((_, text)) => print!("{text}"),
                    None => bail!("no embedded config named {n}"),
                },
            }
            Ok(())
        }
    }
}

fn load_config(config: Option<String>, overrides: &[String]) -> Result<ExperimentConfig> {
    let text = match config {
        None => EMBEDDED[0].1.to_string(),
        Some(c) => {
            let p = Path::new(&c);
            if p.exists() {
                std::fs::read_to_string(p).with_context(|| format!("reading {c}"))?
            } else if let Some((_, t)) = EMBEDDED.iter().find(|(k, _)| *k == c) {
                t.to_string()
            } else {
                bail!("{c}: no such file, and not an embedded config (see `fab configs`)");
            }
        }
    };
    Ok(ExperimentConfig::from_toml_with_overrides(&text, overrides)?)
}

fn train(config: Option<String>, overrides: Vec<String>, out: Option<PathBuf>, resume: Option<PathBuf>, progress: bool) -> Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("\nstopping after this iteration (a checkpoint will be written)…");
        run::request_stop();
    })
    .context("installing the Ctrl-C handler")?;
    let (cfg, opts) = match resume {
        Some(dir) => (None, RunOptions { out: dir, resume: true, progress, max_iterations_this_run: None }),
        None => {
            let cfg = load_config(config, &overrides)?;
            let out = out.unwrap_or_else(|| {
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                PathBuf::from("runs").join(format!("{}-seed{}-{t}", cfg.name, cfg.seed))
            });
            eprintln!("run directory: {}", out.display());
            (Some(cfg), RunOptions { out, resume: false, progress, max_iterations_this_run: None })
        }
    };
    match run::run_experiment(cfg, &opts)? {
        RunOutcome::Finished(m) => {
            println!("{}", serde_json::to_string_pretty(&m)?);
            eprintln!("results in {}", opts.out.display());
        }
        RunOutcome::Stopped { .. } => {}
    }
    Ok(())
}

fn sample(dir: &Path, n: usize, out: &Path) -> Result<()> {
    let mut trainer = run::load_trainer(dir)?;
    let d = trainer.flow().base().dim();
    let (x, lq) = trainer.sample_flow(n)?;
    match out.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            fab_core::npy::write_f64(out, &x, &[n, d])?;
            let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("samples");
            let lq_path = out.with_file_name(format!("{stem}_log_q.npy"));
            fab_core::npy::write_f64(&lq_path, &lq, &[n])?;
            eprintln!("wrote {} and {}", out.display(), lq_path.display());
        }
        Some("csv") => {
            let mut s = String::new();
            let header: Vec<String> = (0..d).map(|j| format!("x{j}")).chain(std::iter::once("log_q".to_string())).collect();
            s.push_str(&header.join(","));
            s.push('\n');
            for i in 0..n {
                let row: Vec<String> = x[i * d..(i + 1) * d].iter().chain(std::iter::once(&lq[i])).map(|v| format!("{v}")).collect();
                s.push_str(&row.join(","));
                s.push('\n');
            }
            std::fs::write(out, s).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {}", out.display());
        }
        _ => bail!("{}: the output must end in .npy or .csv", out.display()),
    }
    Ok(())
}

fn minimize(coords: Option<PathBuf>, force_tolerance: f64, out: Option<PathBuf>) -> Result<()> {
    use fab_targets::aldp::{AldpForceField, MinimizeOptions, CART_DIM};
    let ff = AldpForceField::amber_implicit();
    let x0 = match coords {
        Some(p) => {
            let xs = fab_targets::aldp::read_coordinates(&p)?;
            xs[..CART_DIM].to_vec()
        }
        None => ff.start_positions().to_vec(),
    };
    let opts = MinimizeOptions { force_tolerance, ..MinimizeOptions::default() };
    let t = std::time::Instant::now();
    let r = ff.minimize(&x0, &opts)?;
    let report = serde_json::json!({
        "system": "alanine dipeptide, AMBER ff96 + GB-OBC1",
        "energy_kj_per_mol": r.energy,
        "iterations": r.iterations,
        "evaluations": r.evaluations,
        "max_force_kj_per_mol_nm": r.max_force,
        "converged": r.converged,
        "seconds": t.elapsed().as_secs_f64(),
        "positions_nm": r.positions.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = out {
        match p.extension().and_then(|e| e.to_str()) {
            Some("pdb") => fab_targets::aldp::write_pdb(std::fs::File::create(&p)?, &ff, &r.positions)?,
            Some("xyz") => fab_targets::aldp::write_xyz(std::fs::File::create(&p)?, &ff, &r.positions)?,
            Some("npy") => fab_core::npy::write_f64(&p, &r.positions, &[1, CART_DIM])?,
            _ => bail!("{}: the output must end in .pdb, .xyz or .npy", p.display()),
        }
        eprintln!("wrote {}", p.display());
    }
    if !r.converged {
        bail!("not converged after {} iterations (max force {:.3e} kJ/mol/nm)", r.iterations, r.max_force);
    }
    Ok(())
}
