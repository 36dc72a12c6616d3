//! `fab`: train, evaluate and sample FAB flows; alanine-dipeptide energies.
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
];

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
        Command::Eval { dir } => {
            let m = run::evaluate_run(&dir)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
            Ok(())
        }
        Command::Sample { dir, n, out } => sample(&dir, n, &out),
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
