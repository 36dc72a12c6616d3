//! ALDP force field vs OpenMM 8.6.1 (Reference platform, double precision): energies per force
//! group and forces on the 66 configurations of `data/aldp/aldp_reference_vectors.json`
//! (minima, perturbed minima, MD frames at 300/600/1000 K, atom clashes), plus finite-difference
//! checks of the analytic forces and robustness on extreme inputs.

use fab_targets::aldp::{phi_psi, regularize_energy, AldpCartesian, AldpForceField, EnergyTerms, KBT};
use serde_json::Value;

const REFERENCE: &str = include_str!("../data/aldp/aldp_reference_vectors.json");

struct RefConfig {
    id: u64,
    kind: String,
    x: Vec<f64>,
    energy_total: f64,
    groups: [(String, f64); 5],
    forces: Vec<f64>,
    group_forces: Vec<Vec<f64>>,
    phi: f64,
    psi: f64,
    u_reg: f64,
}

const GROUPS: [&str; 5] = ["bonds", "angles", "torsions", "nonbonded", "gb"];

fn flat(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().flat_map(|a| a.as_array().unwrap().iter().map(|c| c.as_f64().unwrap())).collect()
}

fn load() -> Vec<RefConfig> {
    let v: Value = serde_json::from_str(REFERENCE).unwrap();
    v["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| RefConfig {
            id: c["id"].as_u64().unwrap(),
            kind: c["kind"].as_str().unwrap().to_string(),
            x: flat(&c["positions_nm"]),
            energy_total: c["energy_total"].as_f64().unwrap(),
            groups: GROUPS.map(|g| (g.to_string(), c["energy_groups"][g].as_f64().unwrap())),
            forces: flat(&c["forces"]),
            group_forces: GROUPS.iter().map(|g| flat(&c["forces_groups"][*g])).collect(),
            phi: c["phi_rad"].as_f64().unwrap(),
            psi: c["psi_rad"].as_f64().unwrap(),
            u_reg: c["fab_u_regularised_kBT_300K"].as_f64().unwrap(),
        })
        .collect()
}

fn term(e: &EnergyTerms, g: &str) -> f64 {
    match g {
        "bonds" => e.bonds,
        "angles" => e.angles,
        "torsions" => e.torsions,
        "nonbonded" => e.nonbonded,
        "gb" => e.gb,
        _ => unreachable!(),
    }
}

/// The energy tolerance: relative 1e-6, absolute 1e-4 kJ/mol near zero.
fn energy_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4_f64.max(1e-6 * b.abs())
}

fn rel_norm_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

#[test]
fn energies_and_forces_match_openmm_on_every_reference_configuration() {
    let ff = AldpForceField::amber_implicit();
    let configs = load();
    assert_eq!(configs.len(), 66);
    let (mut worst_e, mut worst_f) = (0.0f64, 0.0f64);
    for c in &configs {
        let (e, tf) = ff.energy_and_forces_by_term(&c.x).unwrap();
        let mut f = vec![0.0; 66];
        // `energy_and_forces` is the fast fused kernel, `energy_and_forces_by_term` the
        // term-by-term reference: both are held to the same tolerances below.
        let e2 = ff.energy_and_forces(&c.x, &mut f).unwrap();
        for (name, ours, theirs) in [
            ("bonds", e2.bonds, e.bonds),
            ("angles", e2.angles, e.angles),
            ("torsions", e2.torsions, e.torsions),
            ("nonbonded", e2.nonbonded, e.nonbonded),
            ("gb", e2.gb, e.gb),
            ("total", e2.total, e.total),
        ] {
            // Same formulas with a different operation order and own exp/ln/atan2 (a few ulp):
            // agreement to 1e-12 of max(|E|, 1) kJ/mol.
            assert!((ours - theirs).abs() <= 1e-12 * theirs.abs().max(1.0), "config {}: kernel {name} {ours} vs reference {theirs}", c.id);
        }
        assert!(energy_close(e2.total, c.energy_total), "config {}: kernel total", c.id);
        assert!((e2.total - c.energy_total).abs() <= 1e-10 * c.energy_total.abs().max(100.0), "config {}: kernel total", c.id);
        assert!(energy_close(e.total, c.energy_total), "config {} ({}): total {} vs {}", c.id, c.kind, e.total, c.energy_total);
        // Stricter, same reasoning as for the forces below: relative 1e-10 (of max(|E|, 100)).
        assert!((e.total - c.energy_total).abs() <= 1e-10 * c.energy_total.abs().max(100.0), "config {}", c.id);
        worst_e = worst_e.max((e.total - c.energy_total).abs() / c.energy_total.abs().max(100.0));
        for (k, (g, ref_e)) in c.groups.iter().enumerate() {
            let ours = term(&e, g);
            assert!(energy_close(ours, *ref_e), "config {} ({}), {g}: {ours} vs {ref_e}", c.id, c.kind);
            worst_e = worst_e.max((ours - ref_e).abs() / ref_e.abs().max(100.0));
            let ours_f = match k {
                0 => &tf.bonds,
                1 => &tf.angles,
                2 => &tf.torsions,
                3 => &tf.nonbonded,
                _ => &tf.gb,
            };
            let err = rel_norm_err(ours_f, &c.group_forces[k]);
            // The force tolerance: relative 1e-5 in norm, per term.
            assert!(err < 1e-5, "config {} ({}), {g} forces: rel err {err}", c.id, c.kind);
            worst_f = worst_f.max(err);
        }
        let err = rel_norm_err(&f, &c.forces);
        assert!(err < 1e-5, "config {} ({}) total forces: rel err {err}", c.id, c.kind);
        // Stricter: both codes are double precision, so the difference should be rounding,
        // ~1e-15 of the force scale. The scale is the sum of the per-group force norms (the
        // total alone nearly cancels at a minimum); 1e-9 leaves a wide margin for the
        // summation order of OpenMM's Reference platform while still catching any formula slip.
        let scale: f64 = c.group_forces.iter().map(|g| g.iter().map(|v| v * v).sum::<f64>().sqrt()).sum();
        let abs_err = rel_norm_err(&f, &c.forces) * c.forces.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(abs_err <= 1e-9 * scale, "config {}: |dF| {abs_err} vs scale {scale}", c.id);
        worst_f = worst_f.max(abs_err / scale);
        // Ramachandran angles: same IUPAC dihedral formula as OpenMM's reference script, so
        // agreement is to rounding (1e-12 rad leaves room for the atan2 argument order).
        let (phi, psi) = phi_psi(&c.x).unwrap();
        assert!((phi - c.phi).abs() < 1e-12 && (psi - c.psi).abs() < 1e-12, "config {} phi/psi", c.id);
        // Regularised reduced energy (clash configurations exceed the 1e8 kBT cut).
        let u = regularize_energy(e.total / KBT);
        assert!((u - c.u_reg).abs() <= 1e-9 * c.u_reg.abs().max(1.0), "config {}: u_reg {u} vs {}", c.id, c.u_reg);
    }
    eprintln!("worst relative energy error {worst_e:.2e}, worst force error / force scale {worst_f:.2e}");
}

#[test]
fn batched_evaluation_equals_single_evaluation() {
    let ff = AldpForceField::amber_implicit();
    let configs = load();
    let xs: Vec<f64> = configs.iter().flat_map(|c| c.x.iter().copied()).collect();
    let mut fs = vec![0.0; xs.len()];
    let es = ff.energies_and_forces(&xs, &mut fs).unwrap();
    for (k, c) in configs.iter().enumerate() {
        let mut f = vec![0.0; 66];
        let e = ff.energy_and_forces(&c.x, &mut f).unwrap();
        // Same code path per row, so results are bit-identical whatever the thread count.
        assert_eq!(e, es[k]);
        assert_eq!(f, fs[k * 66..(k + 1) * 66].to_vec());
    }
    assert!(ff.energies_and_forces(&xs[..65], &mut fs[..65]).is_err());
}

#[test]
fn analytic_forces_match_finite_differences() {
    // Independent of OpenMM: −∂E/∂x by central differences of our own energy at the fab-torch reference minimum (|F| ~ 12), an
    // MD frame at 1000 K and a clash configuration. h = 1e-6 nm: the truncation error
    // h²/6·E''' is < 1e-6 kJ/mol/nm for these stiffnesses, rounding is ~1e-16·|E|/h; we demand
    // relative 1e-6 in norm (the clash has |E| ~ 6e5 and |F| ~ 1e7, so rounding stays ~1e-10).
    let ff = AldpForceField::amber_implicit();
    let configs = load();
    for id in [1u64, 50, 61] {
        let c = configs.iter().find(|c| c.id == id).unwrap();
        let mut f = vec![0.0; 66];
        ff.energy_and_forces(&c.x, &mut f).unwrap();
        let h = 1e-6;
        let mut fd = vec![0.0; 66];
        for k in 0..66 {
            let mut xp = c.x.clone();
            xp[k] += h;
            let mut xm = c.x.clone();
            xm[k] -= h;
            let ep = ff.energy(&xp).unwrap().total;
            let em = ff.energy(&xm).unwrap().total;
            fd[k] = -(ep - em) / (2.0 * h);
        }
        let err = rel_norm_err(&f, &fd);
        assert!(err < 1e-6, "config {id}: analytic vs finite-difference forces rel err {err}");
    }
}

#[test]
fn extreme_inputs_never_panic_and_give_minus_inf_or_regularised_values() {
    use candle_core::{Device, Tensor};
    use fab_core::LogDensity;
    let ff = AldpForceField::amber_implicit();
    let x0 = ff.reference_positions().to_vec();
    let mut cases: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut nan = x0.clone();
    nan[7] = f64::NAN;
    cases.push(("nan", nan));
    let mut inf = x0.clone();
    inf[0] = f64::INFINITY;
    cases.push(("inf", inf));
    let mut overlap = x0.clone();
    for c in 0..3 {
        overlap[3 * 9 + c] = overlap[3 * 18 + c]; // HA exactly on top of the NME carbon
    }
    cases.push(("overlap", overlap));
    let mut near = x0.clone();
    near[3 * 9] = near[3 * 18] + 1e-9;
    near[3 * 9 + 1] = near[3 * 18 + 1];
    near[3 * 9 + 2] = near[3 * 18 + 2];
    cases.push(("near-overlap", near));
    cases.push(("huge", x0.iter().enumerate().map(|(i, v)| v + 1e6 * (i % 7) as f64).collect()));
    cases.push(("all-zero", vec![0.0; 66]));
    let target = AldpCartesian::default();
    let xs: Vec<f64> = cases.iter().flat_map(|(_, x)| x.iter().copied()).collect();
    let t = Tensor::from_vec(xs, (cases.len(), 66), &Device::Cpu).unwrap();
    let (lp, g) = target.log_prob_and_grad(&t).unwrap();
    let lp = lp.to_vec1::<f64>().unwrap();
    let g = g.to_vec2::<f64>().unwrap();
    for (k, (name, _)) in cases.iter().enumerate() {
        assert!(!lp[k].is_nan(), "{name}: NaN log p");
        assert!(g[k].iter().all(|v| v.is_finite()), "{name}: non-finite gradient");
        match *name {
            "nan" | "inf" | "overlap" | "all-zero" => {
                assert_eq!(lp[k], f64::NEG_INFINITY, "{name}");
                assert!(g[k].iter().all(|v| *v == 0.0), "{name}");
            }
            // Finite but enormous energies are log-compressed above 1e8 kBT.
            _ => assert!(lp[k] <= -1e8 && lp[k] > -1e8 - 100.0, "{name}: {}", lp[k]),
        }
    }
    // The raw energy API documents NaN terms for non-finite coordinates.
    assert!(ff.energy(&cases[0].1).unwrap().total.is_nan());
    assert!(ff.energy(&[0.0; 65]).is_err());
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    use fab_targets::aldp::{AldpTarget, FLOW_DIM};
    let ff = AldpForceField::amber_implicit();
    let configs = load();
    let xs: Vec<f64> = configs.iter().flat_map(|c| c.x.iter().copied()).collect();
    let target = AldpTarget::default();
    let zs: Vec<f64> = (0..37 * FLOW_DIM).map(|i| 0.2 * ((i * 7919) % 1000) as f64 / 1000.0 - 0.1).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut f = vec![0.0; xs.len()];
            let e = ff.energies_and_forces(&xs, &mut f).unwrap();
            let (lp, g) = target.log_prob_and_grad_f64(&zs).unwrap();
            (e, f, lp, g)
        })
    };
    // Groups of four are aligned to the start of the batch and evaluated independently, so
    // the results are bit-identical for any thread count.
    let (a, b) = (run(1), run(3));
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
    assert_eq!(a.3, b.3);
}

#[test]
fn cartesian_log_density_gradient_matches_finite_differences() {
    use candle_core::{Device, Tensor};
    use fab_core::test_utils::finite_difference_grad;
    use fab_core::LogDensity;
    // log p̃ = −E/k_BT through the tensor interface, at the fab-torch minimum and a 600 K MD
    // frame. h = 1e-6 nm: |log p̃| ~ 10–70 so rounding is ~1e-16·70/1e-6 ≈ 1e-8 per entry and
    // truncation h²·f'''/6 < 1e-7 for bond stiffness/k_BT ~ 1e5 nm⁻²; tolerance 1e-5·(1 + |g|).
    let target = AldpCartesian::default();
    let configs = load();
    let xs: Vec<f64> = [1u64, 40].iter().flat_map(|id| configs.iter().find(|c| c.id == *id).unwrap().x.clone()).collect();
    let t = Tensor::from_vec(xs.clone(), (2, 66), &Device::Cpu).unwrap();
    let (lp, g) = target.log_prob_and_grad(&t).unwrap();
    let lp = lp.to_vec1::<f64>().unwrap();
    assert!((lp[0] - 172.67751692548748 / KBT).abs() < 1e-9); // −E/k_BT with E < 0
    let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
    let fd = finite_difference_grad(&target, &xs, 2, 1e-6);
    for k in 0..g.len() {
        assert!((g[k] - fd[k]).abs() < 1e-5 * (1.0 + g[k].abs()), "entry {k}: {} vs {}", g[k], fd[k]);
    }
}
