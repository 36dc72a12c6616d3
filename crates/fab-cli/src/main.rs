//! `fab`: train, evaluate and sample FAB flows; alanine-dipeptide energies and minimisation.
//!
//! With no arguments, trains FAB with the prioritised buffer on the 40-mode Gaussian mixture
//! using the embedded `gmm-quick` configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fab_sampler::run::{self, RunOptions, RunOutcome, StopSignal};
use fab_sampler::{Draws, FamilyConfig, Metrics};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A sampler family the command line knows: its embedded configurations and the generic
/// driver entry points instantiated for its configuration type. Adding a family is adding
/// one entry to [`FAMILIES`].
struct Family {
    /// The value of the top-level `family` key of its configurations.
    name: &'static str,
    /// Configurations compiled into the binary (name, TOML text).
    configs: &'static [(&'static str, &'static str)],
    /// Parses and validates a configuration text with overrides, and checks that it fits in memory.
    check: fn(&str, &[String]) -> fab_sampler::Result<()>,
    /// `fab train`.
    train: fn(Option<&str>, &[String], &RunOptions) -> fab_sampler::Result<RunOutcome>,
    /// `fab eval` (results into the run directory, or into another one).
    eval: EvalFn,
    /// `fab sample` (optionally with its own seed): draws in chunks, each handed to the sink.
    sample: fn(&Path, usize, Option<u64>, &mut SampleSink<'_>) -> Result<()>,
    /// `fab export`.
    export: fn(&Path, &Path, Option<&str>) -> fab_sampler::Result<PathBuf>,
    /// Samples are points of a discrete space (written as integers, without log q).
    discrete: bool,
}

/// `fab eval DIR [--out OTHER] [--iteration N] [--seed S] [--set …]` for one family.
type EvalFn =
    fn(dir: &Path, out: Option<&Path>, iteration: Option<usize>, seed: Option<u64>, overrides: &[String]) -> fab_sampler::Result<Metrics>;

fn check_family<C: FamilyConfig>(text: &str, overrides: &[String]) -> fab_sampler::Result<()> {
    C::parse(text, overrides)?.memory_estimate().check_here()
}

fn train_family<C: FamilyConfig>(text: Option<&str>, overrides: &[String], opts: &RunOptions) -> fab_sampler::Result<RunOutcome> {
    let config = text.map(|t| C::parse(t, overrides)).transpose()?;
    run::train::<C>(config, opts)
}

fn eval_family<C: FamilyConfig>(
    dir: &Path,
    out: Option<&Path>,
    iteration: Option<usize>,
    seed: Option<u64>,
    overrides: &[String],
) -> fab_sampler::Result<Metrics> {
    match (iteration, out) {
        (Some(i), Some(o)) => run::evaluate_checkpoint_into::<C>(dir, i, o, seed, overrides),
        (Some(_), None) => Err(fab_sampler::Error::Config(
            "--iteration needs --out DIR (the run's own final_metrics.json is its latest checkpoint's)".into(),
        )),
        (None, _) => run::evaluate_run_into::<C>(dir, out, seed, overrides),
    }
}

/// Where `fab sample` hands each chunk of draws (the output writer).
type SampleSink<'a> = dyn FnMut(&Draws) -> Result<()> + 'a;

/// The git commit this binary was built from (`-dirty` with uncommitted changes), recorded in
/// every run directory's `invocations.jsonl`.
const BUILD: &str = env!("FAB_GIT_COMMIT");

/// Samples drawn per chunk by `fab sample` (bounded memory for any N; a progress line each).
const SAMPLE_CHUNK: usize = 65_536;

fn sample_family<C: FamilyConfig>(dir: &Path, n: usize, seed: Option<u64>, sink: &mut SampleSink<'_>) -> Result<()> {
    let mut run = run::load_run::<C>(dir, &[])?.1;
    if let Some(s) = seed {
        run.reseed_evaluation(s);
    }
    let t0 = std::time::Instant::now();
    let mut done = 0;
    while done < n {
        let m = SAMPLE_CHUNK.min(n - done);
        sink(&run.draw(m)?)?;
        done += m;
        if n > SAMPLE_CHUNK {
            eprintln!("sampled {done} / {n} ({:.0} s)", t0.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

/// The registered sampler families; the first is the default.
const FAMILIES: &[Family] = &[
    Family {
        name: fab_train::FAMILY,
        configs: &[
            ("gmm-quick", include_str!("../../../experiments/gmm/quick.toml")),
            ("gmm-paper", include_str!("../../../experiments/gmm/paper.toml")),
            ("many-well-paper", include_str!("../../../experiments/many_well/paper.toml")),
            ("many-well-cpu", include_str!("../../../experiments/many_well/cpu.toml")),
            ("aldp-paper", include_str!("../../../experiments/aldp/paper.toml")),
            ("aldp-cpu", include_str!("../../../experiments/aldp/cpu.toml")),
        ],
        check: check_family::<fab_train::ExperimentConfig>,
        train: train_family::<fab_train::ExperimentConfig>,
        eval: eval_family::<fab_train::ExperimentConfig>,
        sample: sample_family::<fab_train::ExperimentConfig>,
        export: run::export_model::<fab_train::ExperimentConfig>,
        discrete: false,
    },
    Family {
        name: fab_gflownet::FAMILY,
        configs: &[
            ("grid-tb", include_str!("../../../experiments/gflownet/grid-tb.toml")),
            ("grid-tb-eps", include_str!("../../../experiments/gflownet/grid-tb-eps.toml")),
            ("grid-gafn", include_str!("../../../experiments/gflownet/grid-gafn.toml")),
            ("grid-tb-prt", include_str!("../../../experiments/gflownet/grid-tb-prt.toml")),
            ("grid-tb-per", include_str!("../../../experiments/gflownet/grid-tb-per.toml")),
            ("grid-tb-ls", include_str!("../../../experiments/gflownet/grid-tb-ls.toml")),
            ("grid-tb-ls-per", include_str!("../../../experiments/gflownet/grid-tb-ls-per.toml")),
            ("grid-teacher", include_str!("../../../experiments/gflownet/grid-teacher.toml")),
            ("grid-teacher-prt", include_str!("../../../experiments/gflownet/grid-teacher-prt.toml")),
            ("grid-teacher-per", include_str!("../../../experiments/gflownet/grid-teacher-per.toml")),
            ("grid-teacher-ls", include_str!("../../../experiments/gflownet/grid-teacher-ls.toml")),
            ("grid-teacher-ls-per", include_str!("../../../experiments/gflownet/grid-teacher-ls-per.toml")),
            ("grid-db", include_str!("../../../experiments/gflownet/grid-db.toml")),
            ("grid-db-per", include_str!("../../../experiments/gflownet/grid-db-per.toml")),
            ("grid-teacher-db", include_str!("../../../experiments/gflownet/grid-teacher-db.toml")),
            ("grid-teacher-db-per", include_str!("../../../experiments/gflownet/grid-teacher-db-per.toml")),
            ("grid-subtb", include_str!("../../../experiments/gflownet/grid-subtb.toml")),
            ("grid-fm", include_str!("../../../experiments/gflownet/grid-fm.toml")),
            ("hypergrid-tb", include_str!("../../../experiments/gflownet/hypergrid-tb.toml")),
            ("bits-tb", include_str!("../../../experiments/gflownet/bits-tb.toml")),
        ],
        check: check_family::<fab_gflownet::GflowConfig>,
        train: train_family::<fab_gflownet::GflowConfig>,
        eval: eval_family::<fab_gflownet::GflowConfig>,
        sample: sample_family::<fab_gflownet::GflowConfig>,
        export: run::export_model::<fab_gflownet::GflowConfig>,
        discrete: true,
    },
    Family {
        name: fab_diffusion::FAMILY,
        configs: &[
            ("diffusion-25gmm-tb", include_str!("../../../experiments/diffusion/25gmm-tb.toml")),
            ("diffusion-25gmm-tb-expl", include_str!("../../../experiments/diffusion/25gmm-tb-expl.toml")),
            ("diffusion-25gmm-tb-expl-ls", include_str!("../../../experiments/diffusion/25gmm-tb-expl-ls.toml")),
            ("diffusion-25gmm-fl-subtb-lp", include_str!("../../../experiments/diffusion/25gmm-fl-subtb-lp.toml")),
            ("diffusion-25gmm-vargrad-expl-lp-ls", include_str!("../../../experiments/diffusion/25gmm-vargrad-expl-lp-ls.toml")),
            ("diffusion-25gmm-pis", include_str!("../../../experiments/diffusion/25gmm-pis.toml")),
            ("diffusion-25gmm-teacher", include_str!("../../../experiments/diffusion/25gmm-teacher.toml")),
            ("diffusion-25gmm-per", include_str!("../../../experiments/diffusion/25gmm-per.toml")),
            ("diffusion-manywell-tb", include_str!("../../../experiments/diffusion/manywell-tb.toml")),
            ("diffusion-manywell-tb-expl", include_str!("../../../experiments/diffusion/manywell-tb-expl.toml")),
            ("diffusion-manywell-tb-expl-ls", include_str!("../../../experiments/diffusion/manywell-tb-expl-ls.toml")),
            ("diffusion-manywell-fl-subtb-lp", include_str!("../../../experiments/diffusion/manywell-fl-subtb-lp.toml")),
            ("diffusion-manywell-vargrad-expl-lp-ls", include_str!("../../../experiments/diffusion/manywell-vargrad-expl-lp-ls.toml")),
            ("diffusion-manywell-pis", include_str!("../../../experiments/diffusion/manywell-pis.toml")),
            ("diffusion-manywell-teacher", include_str!("../../../experiments/diffusion/manywell-teacher.toml")),
            ("diffusion-manywell-per", include_str!("../../../experiments/diffusion/manywell-per.toml")),
        ],
        check: check_family::<fab_diffusion::DiffusionConfig>,
        train: train_family::<fab_diffusion::DiffusionConfig>,
        eval: eval_family::<fab_diffusion::DiffusionConfig>,
        sample: sample_family::<fab_diffusion::DiffusionConfig>,
        export: run::export_model::<fab_diffusion::DiffusionConfig>,
        discrete: false,
    },
];

/// Every embedded configuration with its family.
fn embedded() -> impl Iterator<Item = (&'static Family, &'static str, &'static str)> {
    FAMILIES.iter().flat_map(|f| f.configs.iter().map(move |(n, t)| (f, *n, *t)))
}

/// The family a configuration text names (top-level `family`, default: the first family).
fn family_of(text: &str) -> Result<&'static Family> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| anyhow::anyhow!("invalid config: {}", e.message()))?;
    let name = match table.get("family") {
        None => FAMILIES[0].name,
        Some(toml::Value::String(s)) => s.as_str(),
        Some(other) => bail!("invalid config: family must be a string, got {other}"),
    };
    FAMILIES.iter().find(|f| f.name == name).ok_or_else(|| {
        let known: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        anyhow::anyhow!("invalid config: family = \"{name}\" is not a known sampler family ({})", known.join(", "))
    })
}

/// The family of the run in `dir`.
fn family_of_run(dir: &Path) -> Result<&'static Family> {
    family_of(&run::read_run_config(dir)?)
}

/// Molecular systems with a built-in force field.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum System {
    /// Alanine dipeptide in implicit solvent (AMBER ff96 + GB-OBC1), 22 atoms.
    Aldp,
}

#[derive(Parser, Debug)]
#[command(name = "fab", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FAB_GIT_COMMIT"), ")"), about = "Flow Annealed Importance Sampling Bootstrap (FAB) in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a sampler (FAB with buffer on the GMM by default).
    ///
    /// Exit status: 0 finished (final evaluation written); 1 error (nothing resumable was
    /// started, or the message says what failed); 3 stopped by Ctrl-C and 4 stopped by
    /// `train.time_limit_hours` — both after a checkpoint, continue with `fab train --resume DIR`.
    Train {
        /// A TOML config file, or the name of an embedded config (see `fab configs`).
        config: Option<String>,
        /// Override a config value, e.g. `--set train.batch_size=256` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Output directory (default: runs/<name>-seed<seed>-<unix time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in this directory from its latest checkpoint; `--set` may then change
        /// only keys that do not alter training (FAB: train.time_limit_hours,
        /// train.checkpoint_every, train.checkpoint_minutes, train.checkpoint_keep_last,
        /// train.checkpoint_keep_every, eval.plots).
        #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "out"])]
        resume: Option<PathBuf>,
        /// Hide the progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Re-run the final evaluation of a run directory's latest checkpoint (or, with
    /// `--iteration N --out DIR`, of an earlier one).
    Eval {
        /// The run directory.
        dir: PathBuf,
        /// Override an evaluation setting, e.g. `--set eval.final_batch_size=1000000`.
        #[arg(long = "set", value_name = "eval.KEY=VALUE")]
        set: Vec<String>,
        /// Write `final_metrics.json` and the plots here instead of into the run directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Evaluate the checkpoint of this iteration instead of the latest: what a run stopped
        /// there would have reported. Needs `--out`.
        #[arg(long, value_name = "N", requires = "out")]
        iteration: Option<usize>,
        /// Draw the evaluation samples from this seed's stream instead of the checkpoint's (as
        /// `fab sample --seed`): an independent evaluation set. Needs `--out`.
        #[arg(long, requires = "out")]
        seed: Option<u64>,
    },
    /// Plot metrics of several runs against each other on one figure (PNG), e.g.
    /// `fab compare A B C --x n_reward_calls --y n_goals_found --y exact_l1 --log-y exact_l1 --out cmp.png`.
    Compare {
        /// Run directories (their names label the lines).
        dirs: Vec<PathBuf>,
        /// The horizontal-axis metric.
        #[arg(long, default_value = "iteration")]
        x: String,
        /// A metric to plot (one panel each; repeat the flag).
        #[arg(long = "y", required = true)]
        y: Vec<String>,
        /// Metrics drawn on a log axis.
        #[arg(long = "log-y")]
        log_y: Vec<String>,
        /// Draw the horizontal metric on a log axis.
        #[arg(long = "log-x")]
        log_x: bool,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
        /// Figure title.
        #[arg(long, default_value = "comparison")]
        title: String,
    },
    /// Draw samples from a trained sampler (.npy, .csv, or for alanine dipeptide .pdb, by extension).
    Sample {
        /// The run directory (or an exported model such as `models/gmm-paper`).
        dir: PathBuf,
        /// Number of samples.
        #[arg(short, default_value_t = 10_000)]
        n: usize,
        /// Output file: .npy (float64 [N, d], or [N, 22, 3] with --cartesian; log q is written
        /// beside it as <stem>_log_q.npy), .csv (one row per sample, log q last), or .pdb (alanine
        /// dipeptide: a multi-model PDB file in Å, one model per sample).
        #[arg(long)]
        out: PathBuf,
        /// Alanine dipeptide: write Cartesian coordinates (nm, the force field's atom order)
        /// instead of the 60 flow coordinates; log q is then the density of the Cartesian
        /// configuration, log q(z) − log|det ∂x/∂z| (the quantity the Cartesian test
        /// log-likelihood averages). Implied by a .pdb output.
        #[arg(long)]
        cartesian: bool,
        /// Seed of the sampling stream (default: continue the run's evaluation stream, so
        /// repeated calls on one checkpoint give the same samples).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Export a run's latest checkpoint as a model directory (no optimiser or buffer state):
    /// `fab sample` and `fab eval` read it like the run, with the same numbers.
    Export {
        /// The run directory.
        dir: PathBuf,
        /// The model directory to create (must not exist), e.g. `models/my-flow`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Energies and forces of molecular configurations, printed as JSON.
    Energy {
        /// The molecular system (only `aldp`: alanine dipeptide, AMBER ff96 + GB-OBC1).
        #[arg(long, default_value = "aldp")]
        system: System,
        /// Configurations in nm: JSON of shape [22][3], [n][22][3] or [n][66], or a .npy array
        /// [n, 66] / [n, 22, 3].
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
    fab_core::alloc::keep_freed_memory();
    // Before the thread pool starts, so that its threads inherit it.
    fab_core::float_env::flush_subnormals_to_zero();
    start_thread_pool();
    match run_cli() {
        Ok(code) => code,
        Err(e) => {
            // One line per cause, without backtraces.
            let msg: Vec<String> = e.chain().map(|c| c.to_string().lines().next().unwrap_or("").to_string()).collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}

/// Starts rayon's global pool with the thread count asked for (`RAYON_NUM_THREADS`, otherwise
/// one per core), then sets `RAYON_NUM_THREADS=1` for the rest of the process. candle's CPU
/// matrix product reads that variable at every call and splits each product over that many
/// threads; fab-rs parallelises at a coarser grain (the flows' row blocks, large products in
/// `fab_core::gemm`, the diffusion sampler's path chunks), and candle's split nested inside
/// those made a two-chunk diffusion iteration slower, not faster (`docs/PERFORMANCE.md`,
/// "Diffusion samplers on two threads"). The pool's threads are idle when the variable is set.
fn start_thread_pool() {
    // An error means a pool exists already, which is fine.
    let _ = rayon::ThreadPoolBuilder::new().build_global();
    std::env::set_var("RAYON_NUM_THREADS", "1");
}

fn run_cli() -> Result<ExitCode> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Train { config: None, overrides: vec![], out: None, resume: None, no_progress: false });
    let done: Result<()> = match command {
        Command::Train { config, overrides, out, resume, no_progress } => return train(config, overrides, out, resume, !no_progress),
        Command::Eval { dir, set, out, iteration, seed } => {
            let m = (family_of_run(&dir)?.eval)(&dir, out.as_deref(), iteration, seed, &set)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
            Ok(())
        }
        Command::Sample { dir, n, out, seed, cartesian } => sample(&dir, n, &out, seed, cartesian),
        Command::Export { dir, out } => {
            let ckpt = (family_of_run(&dir)?.export)(&dir, &out, Some(BUILD))?;
            let bytes: u64 = walk_size(&out);
            eprintln!("wrote {} ({}, {:.1} MB)", out.display(), ckpt.display(), bytes as f64 / 1e6);
            Ok(())
        }
        Command::Compare { dirs, x, log_x, y, log_y, out, title } => {
            if out.extension().and_then(|e| e.to_str()) != Some("png") {
                bail!("{}: the output must end in .png", out.display());
            }
            let runs: Vec<(String, PathBuf)> = dirs
                .iter()
                .map(|d| (d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| d.display().to_string()), d.clone()))
                .collect();
            fab_sampler::compare_runs(&runs, &x, log_x, &y, &log_y, &out, &title)?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
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
                    for (f, n, _) in embedded() {
                        println!("{n}\t({})", f.name);
                    }
                }
                Some(n) => match embedded().find(|(_, k, _)| *k == n) {
                    Some((_, _, text)) => print!("{text}"),
                    None => bail!("no embedded config named {n}"),
                },
            }
            Ok(())
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// Total size in bytes of the files under `dir`.
fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk_size(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The text of a configuration given as a path or an embedded name (default: the first
/// embedded configuration).
fn config_text(config: Option<String>) -> Result<String> {
    Ok(match config {
        None => FAMILIES[0].configs[0].1.to_string(),
        Some(c) => {
            let p = Path::new(&c);
            if p.exists() {
                std::fs::read_to_string(p).with_context(|| format!("reading {c}"))?
            } else if let Some((_, _, t)) = embedded().find(|(_, k, _)| *k == c) {
                t.to_string()
            } else {
                bail!("{c}: no such file, and not an embedded config (see `fab configs`)");
            }
        }
    })
}

/// `name` and `seed` of a configuration text with overrides, for the default run directory.
fn name_and_seed(text: &str, overrides: &[String]) -> (String, i64) {
    let table: toml::Table = text.parse().unwrap_or_default();
    let mut name = table.get("name").and_then(|v| v.as_str()).unwrap_or("run").to_string();
    let mut seed = table.get("seed").and_then(|v| v.as_integer()).unwrap_or(0);
    for o in overrides {
        if let Some((k, v)) = o.split_once('=') {
            match k.trim() {
                "name" => name = v.trim().trim_matches('"').to_string(),
                "seed" => seed = v.trim().parse().unwrap_or(seed),
                _ => {}
            }
        }
    }
    (name, seed)
}

/// `fab train`; the exit status says whether the run finished (0) or stopped resumably
/// ([`fab_sampler::StopReason::exit_code`]).
fn train(
    config: Option<String>,
    overrides: Vec<String>,
    out: Option<PathBuf>,
    resume: Option<PathBuf>,
    progress: bool,
) -> Result<ExitCode> {
    let stop = StopSignal::new();
    let handler_stop = stop.clone();
    ctrlc::set_handler(move || {
        if handler_stop.requested() {
            // Second Ctrl-C: abort now. Checkpoints and final_metrics.json are written under
            // temporary names and renamed, so nothing half-written is left; the lock becomes
            // stale and is taken over by the next `--resume`.
            eprintln!("\naborted; `fab train --resume` continues from the last checkpoint");
            std::process::exit(130);
        }
        eprintln!("\nstopping after this iteration (a checkpoint will be written; Ctrl-C again aborts at once, also during the final evaluation)…");
        handler_stop.request();
    })
    .context("installing the Ctrl-C handler")?;
    let (family, text, opts) = match resume {
        Some(dir) => (
            family_of_run(&dir)?,
            None,
            RunOptions {
                out: dir,
                resume: true,
                progress,
                max_iterations_this_run: None,
                stop,
                resume_overrides: overrides.clone(),
                build: Some(BUILD.to_string()),
            },
        ),
        None => {
            let text = config_text(config)?;
            let family = family_of(&text)?;
            let out = match out {
                Some(o) => o,
                None => {
                    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                    let (name, seed) = name_and_seed(&text, &overrides);
                    // The default directory is runs/<name>-…: a name must not lead elsewhere.
                    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                        bail!("invalid config: name = \"{name}\": a run name must be a plain file name (no path separators, not starting with '.')");
                    }
                    PathBuf::from("runs").join(format!("{name}-seed{seed}-{t}"))
                }
            };
            (
                family,
                Some(text),
                RunOptions {
                    out,
                    resume: false,
                    progress,
                    max_iterations_this_run: None,
                    stop,
                    resume_overrides: Vec::new(),
                    build: Some(BUILD.to_string()),
                },
            )
        }
    };
    if let Some(t) = &text {
        // Refuse a bad configuration before announcing the run directory.
        (family.check)(t, &overrides)?;
        eprintln!("run directory: {}", opts.out.display());
    }
    match (family.train)(text.as_deref(), &overrides, &opts)? {
        RunOutcome::Finished(m) => {
            println!("{}", serde_json::to_string_pretty(&m)?);
            eprintln!("results in {}", opts.out.display());
        }
        RunOutcome::Stopped { reason, .. } => return Ok(ExitCode::from(reason.exit_code())),
    }
    Ok(ExitCode::SUCCESS)
}

/// The file formats `fab sample` writes, by extension.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SampleFormat {
    Npy,
    Csv,
    Pdb,
}

/// The map from flow coordinates to Cartesian ones of a run whose target is a molecule
/// (`target.type = "aldp"`), or `None` for every other target.
fn molecule_of_run(dir: &Path) -> Result<Option<fab_targets::aldp::InternalCoordinates>> {
    let table: toml::Table =
        run::read_run_config(dir)?.parse().map_err(|e: toml::de::Error| anyhow::anyhow!("invalid config: {}", e.message()))?;
    let is_aldp = table.get("target").and_then(|t| t.get("type")).and_then(|t| t.as_str()) == Some("aldp");
    Ok(is_aldp.then(fab_targets::aldp::InternalCoordinates::alanine_dipeptide))
}

fn sample(dir: &Path, n: usize, out: &Path, seed: Option<u64>, cartesian: bool) -> Result<()> {
    use fab_targets::aldp::{AldpForceField, PdbWriter, CART_DIM};
    if n == 0 {
        bail!("-n 0: ask for at least one sample");
    }
    // Check the output before sampling (which can take minutes), not after.
    let format = match out.extension().and_then(|e| e.to_str()) {
        Some("npy") => SampleFormat::Npy,
        Some("csv") => SampleFormat::Csv,
        Some("pdb") => SampleFormat::Pdb,
        _ => bail!("{}: the output must end in .npy, .csv or .pdb", out.display()),
    };
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("{}: the directory {} does not exist", out.display(), parent.display());
    }
    let family = family_of_run(dir)?;
    let cartesian = cartesian || format == SampleFormat::Pdb;
    let molecule = if cartesian {
        let why = if format == SampleFormat::Pdb { "a .pdb output" } else { "--cartesian" };
        Some(molecule_of_run(dir)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{why} needs a molecular target (target.type = \"aldp\" in {}); this run samples points without atoms",
                dir.join("config.toml").display()
            )
        })?)
    } else {
        None
    };
    // The force field names the atoms of a PDB file; other formats do not need it.
    let ff = (format == SampleFormat::Pdb).then(AldpForceField::amber_implicit);
    // Written under a temporary name and renamed at the end: an interrupted call leaves no file
    // that looks complete.
    let part =
        |p: &Path| p.with_file_name(format!("{}.partial", p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()));
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("samples").to_string();
    let lq_path = out.with_file_name(format!("{stem}_log_q.npy"));
    let mut x_npy: Option<fab_core::npy::NpyWriter> = None;
    let mut lq_npy: Option<fab_core::npy::NpyWriter> = None;
    let mut csv: Option<std::io::BufWriter<std::fs::File>> = None;
    let mut pdb: Option<PdbWriter<'_, std::io::BufWriter<std::fs::File>>> = None;
    let discrete = family.discrete;
    let mut non_finite = 0usize;
    let mut sink = |draws: &Draws| -> Result<()> {
        use std::io::Write;
        // Flow coordinates → Cartesian ones (and log q to the Cartesian density) for molecules.
        let converted;
        let (x, lq, d) = match &molecule {
            Some(ic) => {
                let (xc, log_det) = ic.to_cartesian_batch(&draws.x)?;
                let lqc: Vec<f64> = draws.log_q.iter().zip(&log_det).map(|(l, ld)| l - ld).collect();
                converted = (xc, lqc);
                (&converted.0, &converted.1, CART_DIM)
            }
            None => (&draws.x, &draws.log_q, draws.dim),
        };
        non_finite += x.chunks(d).zip(lq).filter(|(r, l)| !l.is_finite() || r.iter().any(|v| !v.is_finite())).count();
        match format {
            SampleFormat::Npy => {
                if x_npy.is_none() {
                    let shape: Vec<usize> = if molecule.is_some() { vec![n, CART_DIM / 3, 3] } else { vec![n, d] };
                    x_npy = Some(fab_core::npy::NpyWriter::create(&part(out), if discrete { "<i8" } else { "<f8" }, &shape)?);
                    if !discrete {
                        lq_npy = Some(fab_core::npy::NpyWriter::create(&part(&lq_path), "<f8", &[n])?);
                    }
                }
                let w = x_npy.as_mut().expect("created above");
                if discrete {
                    w.write_i64(&x.iter().map(|v| v.round() as i64).collect::<Vec<_>>())?;
                } else {
                    w.write_f64(x)?;
                    lq_npy.as_mut().expect("created above").write_f64(lq)?;
                }
            }
            SampleFormat::Pdb => {
                if pdb.is_none() {
                    let f = std::fs::File::create(part(out)).with_context(|| format!("writing {}", out.display()))?;
                    pdb = Some(PdbWriter::new(std::io::BufWriter::new(f), ff.as_ref().expect("built for .pdb"))?);
                }
                pdb.as_mut().expect("created above").write_models(x)?;
            }
            SampleFormat::Csv => {
                if csv.is_none() {
                    let f = std::fs::File::create(part(out)).with_context(|| format!("writing {}", out.display()))?;
                    let mut w = std::io::BufWriter::new(f);
                    let mut header: Vec<String> = (0..d).map(|j| format!("x{j}")).collect();
                    if !discrete {
                        header.push("log_q".into());
                    }
                    writeln!(w, "{}", header.join(","))?;
                    csv = Some(w);
                }
                let w = csv.as_mut().expect("created above");
                for i in 0..lq.len() {
                    let row = &x[i * d..(i + 1) * d];
                    let mut fields: Vec<String> = if discrete {
                        row.iter().map(|v| (v.round() as i64).to_string()).collect()
                    } else {
                        row.iter().map(|v| format!("{v}")).collect()
                    };
                    if !discrete {
                        fields.push(format!("{}", lq[i]));
                    }
                    writeln!(w, "{}", fields.join(","))?;
                }
            }
        }
        Ok(())
    };
    (family.sample)(dir, n, seed, &mut sink)?;
    if let Some(w) = x_npy {
        w.finish()?;
    }
    if let Some(w) = lq_npy {
        w.finish()?;
        std::fs::rename(part(&lq_path), &lq_path).with_context(|| format!("writing {}", lq_path.display()))?;
    }
    if let Some(mut w) = csv {
        use std::io::Write;
        w.flush()?;
    }
    if let Some(w) = pdb {
        w.finish()?;
    }
    std::fs::rename(part(out), out).with_context(|| format!("writing {}", out.display()))?;
    if non_finite > 0 && !discrete {
        eprintln!("note: {non_finite} of {n} samples have a non-finite coordinate or log q (written as they are)");
    }
    if format == SampleFormat::Npy && !discrete {
        eprintln!("wrote {} and {}", out.display(), lq_path.display());
    } else {
        eprintln!("wrote {}", out.display());
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
