//! Exported models (`fab export`) and the sample formats of `fab sample`: a model evaluates and
//! samples exactly like the run it came from and cannot be resumed; alanine-dipeptide samples
//! come out as Cartesian `.npy` and as a multi-model PDB that match the flow coordinates.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fab_core::test_utils::ScratchDir;
use fab_targets::aldp::{wrap_angle, InternalCoordinates};

fn fab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fab")).args(args).output().expect("run fab")
}

fn ok(args: &[&str]) -> Output {
    let o = fab(args);
    assert!(o.status.success(), "fab {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    o
}

fn err(args: &[&str]) -> String {
    let o = fab(args);
    assert!(!o.status.success(), "fab {} should fail", args.join(" "));
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn scratch(name: &str) -> ScratchDir {
    ScratchDir::create(&format!("models_{name}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn metrics(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(path).unwrap()).unwrap().as_object().unwrap().clone()
}

/// A two-iteration alanine-dipeptide run with a tiny flow (about a second).
fn tiny_aldp_run(dir: &Path) {
    ok(&[
        "train",
        "aldp-cpu",
        "--set",
        "train.n_iterations=2",
        "--set",
        "train.batch_size=16",
        "--set",
        "train.n_updates_per_ais=2",
        "--set",
        "buffer.min_len=32",
        "--set",
        "buffer.max_len=128",
        "--set",
        "flow.n_blocks=2",
        "--set",
        "flow.hidden=8",
        "--set",
        "eval.batch_size=16",
        "--set",
        "eval.inner_batch_size=16",
        "--set",
        "eval.n_test=16",
        "--set",
        "eval.final_batch_size=64",
        "--set",
        "eval.final_ais_batch_size=16",
        "--set",
        "eval.plots=false",
        "--set",
        "eval.n_evals=1",
        "--no-progress",
        "--out",
        s(dir),
    ]);
}

/// A binary whose shipped ALDP reference is not where it was built (moved, or its checkout
/// deleted) still evaluates: the Ramachandran KLs are left out with a note naming the missing
/// file and `FAB_ALDP_REFERENCE_DIR`, which finds the reference again.
#[test]
fn a_missing_aldp_reference_is_named_and_found_through_the_environment() {
    let root = scratch("no_reference");
    let (run, out) = (root.join("run"), root.join("eval"));
    tiny_aldp_run(&run);
    let o = Command::new(env!("CARGO_BIN_EXE_fab"))
        .args(["eval", s(&run), "--out", s(&out)])
        .env("FAB_ALDP_REFERENCE_DIR", root.join("nowhere"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let m = metrics(&out.join("final_metrics.json"));
    assert!(!m.contains_key("ramachandran_kl_flow"), "{m:?}");
    let note = m["notes"]["ramachandran_kl_flow"].as_str().unwrap_or_else(|| panic!("{:?}", m.get("notes")));
    assert!(note.contains("phi_psi.npy") && note.contains("FAB_ALDP_REFERENCE_DIR"), "{note}");
    assert!(stderr.contains("FAB_ALDP_REFERENCE_DIR") && m["eval_ess_flow"].as_f64().is_some(), "{stderr}");
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fab-targets/data/aldp/reference");
    let o = Command::new(env!("CARGO_BIN_EXE_fab"))
        .args(["eval", s(&run), "--out", s(&root.join("eval2"))])
        .env("FAB_ALDP_REFERENCE_DIR", &reference)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(metrics(&root.join("eval2/final_metrics.json"))["ramachandran_kl_flow"].as_f64().is_some());
}

#[test]
fn an_exported_model_evaluates_and_samples_like_its_run_and_cannot_be_resumed() {
    let root = scratch("export");
    let (run, model, eval_out) = (root.join("run"), root.join("model"), root.join("eval"));
    tiny_aldp_run(&run);
    ok(&["export", s(&run), "--out", s(&model)]);
    // Only what sampling and evaluation need, plus the provenance file.
    let ckpt = model.join("checkpoints").join(std::fs::read_to_string(model.join("checkpoints/latest")).unwrap().trim());
    for f in ["flow.safetensors", "fab.json", "state.json", "checksums.json"] {
        assert!(ckpt.join(f).is_file(), "{f}");
    }
    for f in ["optimizer.safetensors", "buffer.safetensors"] {
        assert!(!ckpt.join(f).exists(), "{f} should not be exported");
    }
    let info = metrics(&model.join("model.json"));
    assert_eq!(info["iteration"], 2);
    assert_eq!(metrics(&model.join("final_metrics.json")), metrics(&run.join("final_metrics.json")));

    // Evaluating the model gives the run's numbers, every digit.
    ok(&["eval", s(&run), "--out", s(&eval_out)]);
    ok(&["eval", s(&model)]);
    let (a, b) = (metrics(&eval_out.join("final_metrics.json")), metrics(&model.join("final_metrics.json")));
    assert!(a.len() > 10 && a.contains_key("eval_ess_flow") && a.contains_key("ramachandran_kl_flow"), "{a:?}");
    // The KL's αL/C7ax part and what exact draws of the same number would score.
    let key = |k: &str| a[k].as_f64().unwrap_or_else(|| panic!("{k}: {:?}", a.get(k)));
    assert!(key("ramachandran_kl_flow_floor") > 0.0 && key("ramachandran_kl_flow_alpha_l_floor") > 0.0);
    assert!(key("ramachandran_kl_flow_alpha_l_floor") < key("ramachandran_kl_flow_floor"));
    assert!(key("ramachandran_kl_flow_alpha_l").is_finite() && key("ramachandran_kl_flow_reweighted_alpha_l").is_finite());
    assert_eq!(a, b);

    // Sampling too.
    let (xr, xm) = (root.join("run.npy"), root.join("model.npy"));
    ok(&["sample", s(&run), "-n", "7", "--out", s(&xr)]);
    ok(&["sample", s(&model), "-n", "7", "--out", s(&xm)]);
    assert_eq!(std::fs::read(&xr).unwrap(), std::fs::read(&xm).unwrap());

    // A model is not a run: resuming it is refused by name, and nothing is overwritten.
    let before = std::fs::read(ckpt.join("flow.safetensors")).unwrap();
    assert!(err(&["train", "--resume", s(&model)]).contains("exported model"));
    assert!(err(&["export", s(&run), "--out", s(&model)]).contains("already exists"));
    assert_eq!(std::fs::read(ckpt.join("flow.safetensors")).unwrap(), before);
}

#[test]
fn alanine_dipeptide_samples_are_written_as_cartesian_coordinates_and_pdb_models() {
    let root = scratch("cartesian");
    let run = root.join("run");
    tiny_aldp_run(&run);
    let (zf, xf, pdbf) = (root.join("z.npy"), root.join("x.npy"), root.join("x.pdb"));
    let n = 9;
    // The same call on one checkpoint gives the same draws, so the three files hold the same samples.
    ok(&["sample", s(&run), "-n", &n.to_string(), "--out", s(&zf)]);
    ok(&["sample", s(&run), "-n", &n.to_string(), "--out", s(&xf), "--cartesian"]);
    ok(&["sample", s(&run), "-n", &n.to_string(), "--out", s(&pdbf)]);
    let (z, zshape) = fab_core::npy::read_f64(&zf).unwrap();
    let (lq_z, _) = fab_core::npy::read_f64(&root.join("z_log_q.npy")).unwrap();
    let (x, xshape) = fab_core::npy::read_f64(&xf).unwrap();
    let (lq_x, _) = fab_core::npy::read_f64(&root.join("x_log_q.npy")).unwrap();
    assert_eq!(zshape, vec![n, 60]);
    assert_eq!(xshape, vec![n, 22, 3]);
    let ic = InternalCoordinates::alanine_dipeptide();
    let (want_x, log_det) = ic.to_cartesian_batch(&z).unwrap();
    assert_eq!(x, want_x);
    for i in 0..n {
        assert!(lq_x[i].is_finite());
        assert!((lq_x[i] - (lq_z[i] - log_det[i])).abs() <= 1e-9 * lq_z[i].abs().max(1.0), "log q of sample {i}");
    }
    // The Cartesian samples map back to the flow coordinates (dihedrals modulo 2π).
    let (z_back, _) = ic.to_internal_batch(&x).unwrap();
    for (k, (a, b)) in z.iter().zip(&z_back).enumerate() {
        let i = k % 60;
        let d = if ic.is_circular(i) { wrap_angle((a - b) * ic.stds()[i]) } else { a - b };
        assert!(d.abs() < 1e-6, "coordinate {k}: {a} vs {b}");
    }

    // PDB: one model per sample, 22 atoms each, coordinates in Å at 3 decimals.
    let pdb = std::fs::read_to_string(&pdbf).unwrap();
    assert_eq!(pdb.lines().filter(|l| l.starts_with("MODEL ")).count(), n);
    assert_eq!(pdb.lines().filter(|l| l.starts_with("ENDMDL")).count(), n);
    let atoms: Vec<&str> = pdb.lines().filter(|l| l.starts_with("ATOM")).collect();
    assert_eq!(atoms.len(), 22 * n);
    for (k, line) in atoms.iter().enumerate() {
        for c in 0..3 {
            let v: f64 = line[30 + 8 * c..38 + 8 * c].trim().parse().unwrap();
            assert!((v / 10.0 - x[3 * k + c]).abs() <= 5.0001e-5, "atom line {k}");
        }
    }
    assert!(pdb.ends_with("END\n") && pdb.contains("CONECT"));
    assert!(!root.join("x_log_q.pdb").exists());

    // Points without atoms have no Cartesian form; nothing is written.
    let gmm = root.join("gmm");
    ok(&[
        "train",
        "gmm-quick",
        "--set",
        "train.n_iterations=2",
        "--set",
        "eval.final_batch_size=64",
        "--set",
        "eval.plots=false",
        "--no-progress",
        "--out",
        s(&gmm),
    ]);
    let bad = root.join("g.npy");
    assert!(err(&["sample", s(&gmm), "-n", "3", "--out", s(&bad), "--cartesian"]).contains("molecular target"));
    assert!(err(&["sample", s(&gmm), "-n", "3", "--out", s(&root.join("g.pdb"))]).contains("molecular target"));
    assert!(err(&["sample", s(&gmm), "-n", "3", "--out", s(&root.join("g.xyz"))]).contains(".npy, .csv or .pdb"));
    assert!(!bad.exists() && !root.join("g.pdb").exists());
}

/// The repository's `models/` directory.
fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name)
}

/// `fab eval models/NAME --out DIR` (into another directory: the checkout stays as it is) gives
/// the model's shipped `final_metrics.json` again; returns them.
fn assert_shipped_metrics_reproduce(model: &Path, out: &Path) -> serde_json::Map<String, serde_json::Value> {
    ok(&["eval", s(model), "--out", s(out)]);
    let (want, got) = (metrics(&model.join("final_metrics.json")), metrics(&out.join("final_metrics.json")));
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>());
    for (k, w) in &want {
        match (w.as_f64(), got[k].as_f64()) {
            // Same digits on the machine that trained it; the tolerance only allows for a CPU whose
            // vector kernels round differently (the metrics are smooth in the flow's outputs).
            (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{k}: shipped {a}, evaluated {b}"),
            _ => assert_eq!(*w, got[k], "{k}"),
        }
    }
    want
}

#[test]
fn the_shipped_gmm_model_reproduces_its_final_metrics_on_a_fresh_clone() {
    let model = shipped("gmm-paper");
    let root = scratch("shipped_gmm");
    let want = assert_shipped_metrics_reproduce(&model, &root.join("eval"));
    assert_eq!(want["modes_covered"], 40.0);
    let x = root.join("x.npy");
    ok(&["sample", s(&model), "-n", "1000", "--out", s(&x)]);
    let (x, shape) = fab_core::npy::read_f64(&x).unwrap();
    assert_eq!(shape, vec![1000, 2]);
    // The mixture's means lie in [−40, 40]²; the flow's tails reach past them, and about 0.5 %
    // of its draws are not finite (`flow_fraction_finite` 0.9955, docs/RESULTS.md).
    let inside = x.chunks(2).filter(|p| p[0].abs() < 45.0 && p[1].abs() < 45.0).count();
    assert!(inside >= 950, "{inside} of 1000 samples near the modes");
}

#[test]
fn the_shipped_many_well_model_reproduces_its_final_metrics_on_a_fresh_clone() {
    let model = shipped("many-well-cpu");
    let root = scratch("shipped_many_well");
    let want = assert_shipped_metrics_reproduce(&model, &root.join("eval"));
    // Its draws hit as many distinct wells as exact draws do, within 10 % (docs/RESULTS.md, "Many Well 32-D").
    let (got, exact) = (want["wells_populated_fraction"].as_f64().unwrap(), want["wells_populated_fraction_expected"].as_f64().unwrap());
    assert!((got / exact - 1.0).abs() < 0.1, "wells populated {got} against {exact}");
    let x = root.join("x.npy");
    ok(&["sample", s(&model), "-n", "100", "--out", s(&x)]);
    let (x, shape) = fab_core::npy::read_f64(&x).unwrap();
    assert_eq!(shape, vec![100, 32]);
    assert!(x.iter().all(|v| v.is_finite()));
}

#[test]
fn the_shipped_alanine_dipeptide_model_samples_molecules_at_the_reference_energy() {
    let model = shipped("aldp-cpu");
    let root = scratch("shipped_aldp");
    let (xf, pdbf) = (root.join("x.npy"), root.join("x.pdb"));
    ok(&["sample", s(&model), "-n", "400", "--out", s(&xf), "--cartesian"]);
    ok(&["sample", s(&model), "-n", "5", "--out", s(&pdbf)]);
    let (x, shape) = fab_core::npy::read_f64(&xf).unwrap();
    assert_eq!(shape, vec![400, 22, 3]);
    assert_eq!(std::fs::read_to_string(&pdbf).unwrap().lines().filter(|l| l.starts_with("MODEL ")).count(), 5);
    // Potential energies against the replica-exchange reference's ⟨E⟩ = −98.38 kJ/mol
    // (docs/ALDP_REFERENCE.md). Unweighted flow samples include a few clashes with energies of
    // hundreds of kJ/mol (their importance weights are ≈ 0), so the median is compared: 400
    // samples with sd ≈ 14 kJ/mol give it a standard error of ≈ 1, and 4 kJ/mol allows for
    // that and the flow's own bias. A wrong atom order or unit breaks bonds and costs hundreds.
    let ff = fab_targets::aldp::AldpForceField::amber_implicit();
    let mut e: Vec<f64> = x.chunks(66).map(|c| ff.energy(c).unwrap().total).collect();
    assert!(e.iter().all(|v| v.is_finite()));
    e.sort_by(f64::total_cmp);
    let median = 0.5 * (e[199] + e[200]);
    assert!((median + 98.38).abs() < 4.0, "median energy {median} kJ/mol");
    let physical = e.iter().filter(|&&v| v < -50.0).count();
    assert!(physical >= 388, "{physical} of 400 samples below −50 kJ/mol");
}
