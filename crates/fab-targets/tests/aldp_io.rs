//! ALDP command-line support: reading coordinates (JSON, .npy), PDB/XYZ writers, the JSON
//! energy report and L-BFGS minimisation.

use fab_targets::aldp::{read_coordinates, write_pdb, write_xyz, AldpForceField, EnergyReport, MinimizeOptions, PdbWriter};

use fab_core::test_utils::ScratchDir;

fn as_triples(x: &[f64]) -> Vec<[f64; 3]> {
    x.chunks(3).map(|c| [c[0], c[1], c[2]]).collect()
}

#[test]
fn read_coordinates_accepts_json_and_npy() {
    let dir = ScratchDir::create("aldp_io_read");
    let ff = AldpForceField::amber_implicit();
    let a = ff.reference_positions().to_vec();
    let b = ff.openmm_minimum_positions().to_vec();
    // One configuration as 22 triples.
    let p1 = dir.join("one.json");
    std::fs::write(&p1, serde_json::to_string(&as_triples(&a)).unwrap()).unwrap();
    assert_eq!(read_coordinates(&p1).unwrap(), a);
    // A list of configurations.
    let p2 = dir.join("two.json");
    std::fs::write(&p2, serde_json::to_string(&vec![as_triples(&a), as_triples(&b)]).unwrap()).unwrap();
    assert_eq!(read_coordinates(&p2).unwrap(), [a.clone(), b.clone()].concat());
    // .npy [2, 66].
    let p3 = dir.join("two.npy");
    fab_core::npy::write_f64(&p3, &[a.clone(), b.clone()].concat(), &[2, 66]).unwrap();
    assert_eq!(read_coordinates(&p3).unwrap(), [a.clone(), b].concat());
    // Wrong shapes and garbage are errors, not panics.
    let p4 = dir.join("bad.npy");
    fab_core::npy::write_f64(&p4, &a[..60], &[2, 30]).unwrap();
    assert!(read_coordinates(&p4).is_err());
    let p5 = dir.join("bad.json");
    std::fs::write(&p5, "[[1, 2, 3]]").unwrap();
    assert!(read_coordinates(&p5).is_err());
    std::fs::write(&p5, "{\"x\": 1}").unwrap();
    assert!(read_coordinates(&p5).is_err());
    assert!(read_coordinates(&dir.join("missing.json")).is_err());
}

/// A transposed `[3][22]` list or a `[33][2]` list has the right count (66) but is not a
/// configuration: refused, naming the shape found, instead of a meaningless energy.
#[test]
fn json_coordinates_of_the_wrong_shape_are_refused_with_the_shape() {
    let dir = ScratchDir::create("aldp_io_shape");
    let ff = AldpForceField::amber_implicit();
    let a = ff.reference_positions().to_vec();
    let transposed: Vec<Vec<f64>> = (0..3).map(|k| (0..22).map(|i| a[3 * i + k]).collect()).collect();
    let p = dir.join("transposed.json");
    std::fs::write(&p, serde_json::to_string(&transposed).unwrap()).unwrap();
    let e = read_coordinates(&p).unwrap_err().to_string();
    assert!(e.contains("[3, 22]") && e.contains("[22][3]"), "{e}");
    let pairs: Vec<[f64; 2]> = a.chunks(2).map(|c| [c[0], c[1]]).collect();
    std::fs::write(&p, serde_json::to_string(&pairs).unwrap()).unwrap();
    let e = read_coordinates(&p).unwrap_err().to_string();
    assert!(e.contains("[33, 2]"), "{e}");
    // Ragged lists and a flat list of 66 numbers are refused too; [n][66] rows are accepted.
    std::fs::write(&p, "[[1.0, 2.0, 3.0], [1.0, 2.0]]").unwrap();
    assert!(read_coordinates(&p).unwrap_err().to_string().contains("rectangular"));
    std::fs::write(&p, serde_json::to_string(&a).unwrap()).unwrap();
    assert!(read_coordinates(&p).is_err());
    std::fs::write(&p, serde_json::to_string(&vec![a.clone()]).unwrap()).unwrap();
    assert_eq!(read_coordinates(&p).unwrap(), a);
}

#[test]
fn pdb_and_xyz_writers_round_trip_the_coordinates() {
    let ff = AldpForceField::amber_implicit();
    let xs = [ff.reference_positions().to_vec(), ff.start_positions().to_vec()].concat();
    let mut pdb = Vec::new();
    write_pdb(&mut pdb, &ff, &xs).unwrap();
    let pdb = String::from_utf8(pdb).unwrap();
    let atoms: Vec<&str> = pdb.lines().filter(|l| l.starts_with("ATOM")).collect();
    assert_eq!(atoms.len(), 44);
    assert_eq!(pdb.matches("MODEL").count(), 2);
    // Fixed PDB columns: name 13-16, residue 18-20, x/y/z 31-54 in Å (%8.3f), element 77-78.
    let ca = atoms[8];
    assert_eq!(&ca[12..16], " CA ");
    assert_eq!(&ca[17..20], "ALA");
    assert_eq!(ca[76..78].trim(), "C");
    for (k, line) in atoms.iter().enumerate() {
        for c in 0..3 {
            let v: f64 = line[30 + 8 * c..38 + 8 * c].trim().parse().unwrap();
            // %8.3f in Å: half a unit in the last place is 5e-4 Å = 5e-5 nm.
            assert!((v / 10.0 - xs[3 * k + c]).abs() <= 5.0001e-5, "atom line {k}");
        }
    }
    assert!(pdb.contains("CONECT"));
    let mut xyz = Vec::new();
    write_xyz(&mut xyz, &ff, &xs).unwrap();
    let xyz = String::from_utf8(xyz).unwrap();
    let lines: Vec<&str> = xyz.lines().collect();
    assert_eq!(lines.len(), 2 * 24);
    assert_eq!(lines[0].trim(), "22");
    let f: Vec<f64> = lines[2].split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
    assert_eq!(lines[2].split_whitespace().next(), Some("H"));
    for c in 0..3 {
        assert!((f[c] / 10.0 - xs[c]).abs() < 1e-9); // 8 decimals in Å
    }
    assert!(write_pdb(Vec::new(), &ff, &xs[..65]).is_err());
    // Streamed in pieces, the file is the same; model serials keep counting across pieces.
    let mut w = PdbWriter::new(Vec::new(), &ff).unwrap();
    w.write_models(&xs[..66]).unwrap();
    w.write_models(&xs[66..]).unwrap();
    assert_eq!(w.models(), 2);
    assert_eq!(String::from_utf8(w.finish().unwrap()).unwrap(), pdb);
    assert!(pdb.contains("MODEL        1\n") && pdb.contains("MODEL        2\n"));
}

#[test]
fn energy_report_serialises_terms_forces_and_non_finite_values() {
    let ff = AldpForceField::amber_implicit();
    let mut bad = ff.reference_positions().to_vec();
    bad[0] = f64::NAN;
    let xs = [ff.reference_positions().to_vec(), bad].concat();
    let r = EnergyReport::new(&ff, &xs, true).unwrap();
    assert_eq!(r.configurations.len(), 2);
    let c = &r.configurations[0];
    // OpenMM's total for this configuration (aldp_forcefield.json, fab_torch_position_min_energy_pt).
    assert!((c.energy_kj_per_mol.total - (-172.67751692548748)).abs() < 1e-9);
    assert!(c.finite && !r.configurations[1].finite);
    assert_eq!(c.forces_kj_per_mol_nm.len(), 22);
    let json = r.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["configurations"][1]["energy_kj_per_mol"]["total"].is_null());
    assert!(v["configurations"][0]["term_forces_kj_per_mol_nm"]["gb"].is_array());
    let f = &v["configurations"][0]["forces_kj_per_mol_nm"][0];
    assert!((f[0].as_f64().unwrap() - c.forces_kj_per_mol_nm[0][0]).abs() < 1e-12);
}

#[test]
fn lbfgs_reaches_the_openmm_minimum() {
    let ff = AldpForceField::amber_implicit();
    let opts = MinimizeOptions::default();
    // From the test-system start positions, as OpenMM's minimiser did: the tight OpenMM
    // minimum is −173.17050392780425 kJ/mol (tolerance 1e-3 kJ/mol/nm). A local minimiser may
    // stop in a neighbouring basin; we require the same basin (energy within 1e-4 kJ/mol,
    // i.e. the change in E over a residual force 1e-3 across ~0.1 nm) and convergence.
    let r = ff.minimize(ff.start_positions(), &opts).unwrap();
    eprintln!(
        "L-BFGS: {} iterations, {} evaluations, E = {:.10} kJ/mol, max|F| = {:.2e}",
        r.iterations, r.evaluations, r.energy.total, r.max_force
    );
    assert!(r.converged, "{r:?}");
    assert!(r.max_force <= 1e-3);
    assert!((r.energy.total - (-173.17050392780425)).abs() < 1e-4, "E = {}", r.energy.total);
    // Starting at OpenMM's minimum: already converged or nearly so, energy cannot go up.
    let r2 = ff.minimize(ff.openmm_minimum_positions(), &opts).unwrap();
    assert!(r2.converged && r2.energy.total <= -173.17050392780425 + 1e-9);
    // Invalid input is an error.
    let mut nan = ff.start_positions().to_vec();
    nan[3] = f64::NAN;
    assert!(ff.minimize(&nan, &opts).is_err());
    assert!(ff.minimize(&nan[..10], &opts).is_err());
}
