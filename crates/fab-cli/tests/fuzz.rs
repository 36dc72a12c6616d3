//! Fuzzing the user-facing inputs: 10⁴ random configurations per sampler family (random keys of
//! the schema and unknown ones, values including NaN, ±∞, huge, negative, empty and wrongly typed)
//! and 10⁴ random coordinate files (JSON and .npy, well-formed or not). Every input must either be
//! accepted or refused with a one-line error — never a panic. Of the accepted configurations, 40
//! per family are trained through the run driver (2 iterations each, evaluation sizes bounded,
//! watched for hangs): each works or fails in one line, and a refusal writes nothing. Seeded: the
//! same inputs every run.

use std::panic::{catch_unwind, AssertUnwindSafe};

use fab_sampler::FamilyConfig;
use rand::{Rng, RngCore, SeedableRng};

const N: usize = 10_000;

/// Every dotted key of a TOML table with its value.
fn keys(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if let toml::Value::Table(inner) = v {
            keys(&key, inner, out);
        }
        out.push((key, v.clone()));
    }
}

/// A plausible value for a key: its current value, or a number of the same kind scaled.
fn plausible(rng: &mut impl Rng, v: &toml::Value) -> String {
    match v {
        toml::Value::Integer(i) => format!("{}", (*i as f64 * rng.random_range(0.0..3.0)).round() as i64),
        toml::Value::Float(f) => format!("{:e}", f * rng.random_range(0.1..3.0)),
        other => other.to_string(),
    }
}

const VALUES: &[&str] = &[
    "nan",
    "inf",
    "-inf",
    "1e308",
    "-1e308",
    "0",
    "-1",
    "1",
    "2",
    "0.5",
    "-0.5",
    "1e9",
    "99999999999999999999",
    "-9223372036854775808",
    "18446744073709551615",
    "\"\"",
    "\"abc\"",
    "\"../../evil\"",
    "true",
    "false",
    "[]",
    "[0]",
    "[1, 2]",
    "[-1]",
    "[1e9, 1e9]",
    "{}",
    "{ a = 1 }",
    "\"cuda:99\"",
    "\"gmm25\"",
    "\"bits\"",
    "\"hypergrid\"",
    "\"teacher\"",
    "\"gafntb\"",
    "3.0",
    "1e-300",
    "-0.0",
    "garbage=",
    "=",
];

fn random_overrides(rng: &mut impl Rng, schema: &[(String, toml::Value)]) -> Vec<String> {
    let n = rng.random_range(1..=4);
    (0..n)
        .map(|_| {
            let (key, current) = if rng.random_bool(0.9) {
                schema[rng.random_range(0..schema.len())].clone()
            } else {
                (["unknown", "train.unknown", "a.b.c", "", ".", "train..lr"][rng.random_range(0..6)].to_string(), toml::Value::Integer(0))
            };
            let value = if rng.random_bool(0.6) { plausible(rng, &current) } else { VALUES[rng.random_range(0..VALUES.len())].to_string() };
            if rng.random_bool(0.02) {
                key // no '=' at all
            } else {
                format!("{key}={value}")
            }
        })
        .collect()
}

/// Accepted configurations driven through whole runs per family (each stops after 2 iterations,
/// or finishes with its final evaluation when it has fewer).
const N_RUNS: usize = 40;

/// Trains `base` with `overrides` (then `fixed`, which bound the evaluation sizes, and FAB's
/// batch and buffer fill, so that a run takes seconds) through the driver the CLI uses, in a thread watched for hangs. Every outcome
/// must be a stop with a checkpoint, a finished run, or a one-line error; a refusal before the
/// run started must leave nothing on disk.
fn drive<C: FamilyConfig + 'static>(
    name: &str,
    base: &'static str,
    overrides: Vec<String>,
    fixed: &[&str],
    out: std::path::PathBuf,
) -> bool {
    let ov: Vec<String> = overrides.iter().cloned().chain(fixed.iter().map(|s| s.to_string())).collect();
    let started = std::time::Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = out.clone();
    let worker = std::thread::spawn(move || {
        let result = C::parse(base, &ov).and_then(|cfg| {
            cfg.memory_estimate().check_here()?;
            let opts = fab_sampler::RunOptions { max_iterations_this_run: Some(2), ..fab_sampler::RunOptions::new(&dir) };
            fab_sampler::run::train::<C>(Some(cfg), &opts)
        });
        let _ = tx.send(result.map(|_| ()).map_err(|e| (matches!(e, fab_sampler::Error::Config(_)), e.to_string())));
    });
    // A hang, not a slow run: some bases take ~55 s here with two training jobs beside the test,
    // and one exceeded 120 s that way.
    let worked = match rx.recv_timeout(std::time::Duration::from_secs(300)) {
        Ok(Ok(())) => {
            assert!(out.join("checkpoints/latest").is_file(), "{name}: {overrides:?}: a run that worked left no checkpoint");
            true
        }
        Ok(Err((refused, msg))) => {
            assert!(!msg.trim().is_empty() && !msg.contains('\n'), "{name}: {overrides:?}: error is not one line: {msg:?}");
            // A configuration refused before the run started writes nothing; an error during a run
            // leaves a directory that `--resume` accepts (it holds the config).
            if refused && !out.join("checkpoints").exists() {
                assert!(
                    !out.exists() || out.join("config.toml").is_file(),
                    "{name}: {overrides:?}: refused ({msg}) but wrote {}",
                    out.display()
                );
            }
            false
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{name}: {overrides:?}: no outcome within 300 s (hang?)"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let _ = worker.join();
            panic!("{name}: {overrides:?}: the run panicked");
        }
    };
    eprintln!("fuzz run {name} {overrides:?}: {:.1} s", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&out);
    worked
}

fn fuzz_family<C: FamilyConfig + 'static>(name: &str, bases: &[&'static str], seed: u64, fixed: &[&str]) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut schema = Vec::new();
    for base in bases {
        let table: toml::Table = base.parse().unwrap();
        keys("", &table, &mut schema);
        // Keys of sections the base leaves to their defaults.
        let full = C::parse(base, &[]).unwrap().to_toml().unwrap();
        keys("", &full.parse::<toml::Table>().unwrap(), &mut schema);
    }
    schema.sort_by(|a, b| a.0.cmp(&b.0));
    schema.dedup_by(|a, b| a.0 == b.0);
    let (mut accepted, mut refused) = (0, 0);
    let mut to_run = Vec::new();
    for i in 0..N {
        let base = bases[i % bases.len()];
        let ov = random_overrides(&mut rng, &schema);
        let result = catch_unwind(AssertUnwindSafe(|| C::parse(base, &ov)));
        match result {
            Err(_) => panic!("{name}: parsing panicked with overrides {ov:?}"),
            Ok(Ok(cfg)) => {
                accepted += 1;
                let bytes = catch_unwind(AssertUnwindSafe(|| cfg.memory_estimate().total()))
                    .unwrap_or_else(|_| panic!("{name}: memory estimate panicked with {ov:?}"));
                assert!(bytes > 0.0 && !bytes.is_nan(), "{name}: {ov:?}: memory estimate {bytes}");
                // Runs of at most 256 MiB by the estimate with the bounded sizes (it also bounds
                // the network sizes, and so the compute of a run).
                if to_run.len() < N_RUNS && i % 7 == 0 {
                    let bounded: Vec<String> = ov.iter().cloned().chain(fixed.iter().map(|f| f.to_string())).collect();
                    if C::parse(base, &bounded).is_ok_and(|c| c.memory_estimate().total() < 256.0 * 1024f64.powi(2)) {
                        to_run.push((base, ov.clone()));
                    }
                }
                // What is accepted serialises and parses back to the same configuration.
                let text = cfg.to_toml().unwrap_or_else(|e| panic!("{name}: {ov:?} accepted but not serialisable: {e}"));
                let again = C::parse(&text, &[]).unwrap_or_else(|e| panic!("{name}: {ov:?} accepted, its TOML refused: {e}"));
                assert_eq!(again.to_toml().unwrap(), text, "{name}: {ov:?}");
            }
            Ok(Err(e)) => {
                refused += 1;
                let msg = e.to_string();
                assert!(!msg.trim().is_empty() && !msg.contains('\n'), "{name}: {ov:?}: error is not one line: {msg:?}");
            }
        }
    }
    // Both outcomes occur, so the fuzzer reaches past the first check.
    assert!(accepted > N / 20 && refused > N / 20, "{name}: accepted {accepted}, refused {refused}");
    assert_eq!(to_run.len(), N_RUNS, "{name}");
    let root = fab_core::test_utils::ScratchDir::new(&format!("fuzz_runs_{name}"));
    let worked = to_run
        .into_iter()
        .enumerate()
        .filter(|(k, (base, ov))| drive::<C>(name, base, ov.clone(), fixed, root.join(k.to_string())))
        .count();
    drop(root);
    eprintln!("{name}: {worked} of {N_RUNS} fuzzed runs trained; the others failed in one line");
    // Most accepted configurations train; the rest fail in one line (e.g. NaN from absurd steps).
    assert!(worked >= N_RUNS / 2, "{name}: only {worked} of {N_RUNS} runs worked");
}

#[test]
fn random_fab_configurations_are_accepted_or_refused_in_one_line() {
    let bases = [
        include_str!("../../../experiments/gmm/quick.toml"),
        include_str!("../../../experiments/gmm/paper.toml"),
        include_str!("../../../experiments/many_well/cpu.toml"),
        include_str!("../../../experiments/aldp/cpu.toml"),
    ];
    let small_eval = [
        "train.batch_size=32",
        "train.n_updates_per_ais=1",
        "buffer.min_len=64",
        "eval.batch_size=64",
        "eval.inner_batch_size=64",
        "eval.final_batch_size=128",
        "eval.final_ais_batch_size=64",
        "eval.n_test=64",
        "eval.n_mode_samples=64",
        "eval.mae_repeats=2",
    ];
    fuzz_family::<fab_train::ExperimentConfig>("fab", &bases, 1, &small_eval);
}

#[test]
fn random_gflownet_configurations_are_accepted_or_refused_in_one_line() {
    let bases = [
        include_str!("../../../experiments/gflownet/grid-teacher-ls-per.toml"),
        include_str!("../../../experiments/gflownet/grid-gafn.toml"),
        include_str!("../../../experiments/gflownet/grid-teacher-db-per.toml"),
        include_str!("../../../experiments/gflownet/bits-tb.toml"),
        include_str!("../../../experiments/gflownet/hypergrid-tb.toml"),
    ];
    fuzz_family::<fab_gflownet::GflowConfig>("gflownet", &bases, 2, &["eval.n_samples=1000"]);
}

#[test]
fn random_diffusion_configurations_are_accepted_or_refused_in_one_line() {
    let bases = [
        include_str!("../../../experiments/diffusion/25gmm-tb-expl-ls.toml"),
        include_str!("../../../experiments/diffusion/manywell-vargrad-expl-lp-ls.toml"),
        include_str!("../../../experiments/diffusion/25gmm-teacher.toml"),
        include_str!("../../../experiments/diffusion/manywell-fl-subtb-lp.toml"),
        include_str!("../../../experiments/diffusion/paper/25gmm-pis.toml"),
    ];
    let small_eval = [
        "eval.n_samples=64",
        "eval.final_n_samples=64",
        "eval.n_exact=64",
        "eval.n_likelihood_points=8",
        "eval.likelihood_paths=2",
        "eval.n_w2=32",
    ];
    fuzz_family::<fab_diffusion::DiffusionConfig>("diffusion", &bases, 3, &small_eval);
}

fn random_number(rng: &mut impl Rng) -> String {
    match rng.random_range(0..8) {
        0 => "1e400".into(),
        1 => "-0".into(),
        2 => format!("{}", rng.random_range(-1e3..1e3)),
        3 => "NaN".into(),
        4 => "\"1.0\"".into(),
        5 => "null".into(),
        _ => format!("{:.4}", rng.random_range(-2.0..2.0)),
    }
}

/// A random nested JSON list: mostly near the accepted shapes, with mutations.
fn random_json(rng: &mut impl Rng) -> String {
    let dims: Vec<usize> = match rng.random_range(0..6) {
        0 => vec![22, 3],
        1 => vec![rng.random_range(0..4), 22, 3],
        2 => vec![rng.random_range(0..4), 66],
        3 => vec![3, 22],
        4 => vec![rng.random_range(0..30)],
        _ => (0..rng.random_range(1..5)).map(|_| rng.random_range(0..25)).collect(),
    };
    fn build(rng: &mut impl Rng, dims: &[usize]) -> String {
        match dims.split_first() {
            None => {
                if rng.random_bool(0.998) {
                    format!("{:.4}", rng.random_range(-2.0..2.0))
                } else {
                    random_number(rng)
                }
            }
            Some((&n, rest)) => {
                // Occasionally a ragged list.
                let n = if rng.random_bool(0.01) { n + 1 } else { n };
                format!("[{}]", (0..n).map(|_| build(rng, rest)).collect::<Vec<_>>().join(","))
            }
        }
    }
    let mut s = build(rng, &dims);
    if rng.random_bool(0.05) {
        let cut = rng.random_range(0..=s.len());
        s.truncate(cut);
    }
    if rng.random_bool(0.02) {
        s = ["{}", "\"x\"", "", "[[[[[1]]]]]", "null", "[[1,2],[3]]"][rng.random_range(0..6)].to_string();
    }
    s
}

/// A random .npy file: a valid header of a random shape and dtype, possibly corrupted.
fn random_npy(rng: &mut impl Rng) -> Vec<u8> {
    let shape: Vec<usize> = match rng.random_range(0..5) {
        0 => vec![rng.random_range(0..4), 66],
        1 => vec![22, 3],
        2 => vec![rng.random_range(0..3), 22, 3],
        3 => vec![66],
        _ => (0..rng.random_range(0..4)).map(|_| rng.random_range(0..70)).collect(),
    };
    let descr = ["<f8", "<f4", "<i8", ">f8", "|u1"][rng.random_range(0..5)];
    let shape_str = match shape.as_slice() {
        [n] => format!("({n},)"),
        s => format!("({})", s.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let fortran = if rng.random_bool(0.05) { "True" } else { "False" };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape_str}, }}");
    header.push_str(&" ".repeat((64 - (11 + header.len()) % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    let count: usize = shape.iter().product::<usize>().min(10_000);
    let width = if descr.ends_with('4') {
        4
    } else if descr.ends_with('1') {
        1
    } else {
        8
    };
    for _ in 0..count * width {
        out.push(rng.random());
    }
    match rng.random_range(0..20) {
        0 => out.truncate(rng.random_range(0..out.len())),
        1 => {
            let i = rng.random_range(0..out.len());
            out[i] = rng.random();
        }
        2 => out.extend_from_slice(&[0, 1, 2]),
        _ => {}
    }
    out
}

#[test]
fn random_coordinate_files_are_read_or_refused_in_one_line() {
    let dir = fab_core::test_utils::ScratchDir::create("fuzz_coords");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..N {
        let npy = i % 2 == 1;
        let path = dir.join(if npy { "c.npy" } else { "c.json" });
        let bytes = if npy { random_npy(&mut rng) } else { random_json(&mut rng).into_bytes() };
        std::fs::write(&path, &bytes).unwrap();
        match catch_unwind(|| fab_targets::aldp::read_coordinates(&path)) {
            Err(_) => panic!("read_coordinates panicked on {}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)])),
            Ok(Ok(xs)) => {
                accepted += 1;
                assert!(!xs.is_empty() && xs.len() % 66 == 0);
            }
            Ok(Err(e)) => {
                refused += 1;
                let msg = e.to_string();
                assert!(!msg.trim().is_empty() && !msg.contains('\n'), "error is not one line: {msg:?}");
            }
        }
        let _ = rng.next_u32();
    }
    assert!(accepted > N / 20 && refused > N / 20, "accepted {accepted}, refused {refused}");
}

/// The memory estimate of every shipped configuration, and the parts that dominate it.
fn shipped_estimates() -> Vec<(String, f64, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut out = Vec::new();
    for dir in ["gmm", "many_well", "aldp", "gflownet", "diffusion", "diffusion/paper"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "toml")) {
            let text = std::fs::read_to_string(&f).unwrap();
            let est = match dir {
                "gflownet" => fab_gflownet::GflowConfig::parse(&text, &[]).unwrap().memory_estimate(),
                d if d.starts_with("diffusion") => fab_diffusion::DiffusionConfig::parse(&text, &[]).unwrap().memory_estimate(),
                _ => fab_train::ExperimentConfig::parse(&text, &[]).unwrap().memory_estimate(),
            };
            let largest = est.largest().map(|p| p.0.clone()).unwrap_or_default();
            out.push((format!("{dir}/{}", f.file_name().unwrap().to_string_lossy()), est.total(), largest));
        }
    }
    out
}

#[test]
fn every_shipped_configuration_fits_a_laptop_by_its_memory_estimate() {
    let all = shipped_estimates();
    assert!(all.len() > 40, "{} configs found", all.len());
    for (name, bytes, largest) in &all {
        eprintln!("{name}: {} ({largest})", fab_sampler::memory::human_bytes(*bytes));
        // The GPU-scale paper configurations included: the estimate is a lower bound, and none
        // of these needs more than a few GiB.
        assert!(*bytes > 1e5 && *bytes < 8.0 * 1024f64.powi(3), "{name}: {bytes} bytes");
    }
}
