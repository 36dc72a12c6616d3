//! The internal-coordinate transform (docs/ALGORITHMS.md, "Targets") and the 60-D flow-space
//! target: fab-torch's test vectors, round trips, log-determinants against numerical Jacobians,
//! ∇_z log p against finite differences, the chirality filter and the `Flow`/`LogDensity` tensor
//! interfaces.

use candle_core::{DType, Device, Tensor};
use fab_core::test_utils::{log_abs_det_rows, numerical_jacobian};
use fab_core::{seeded_rng, Flow, LogDensity};
use fab_targets::aldp::{
    is_l_form, l_form_mask, phi_psi, AldpForceField, AldpTarget, InternalCoordinates, CART_DIM, CIRCULAR_INDICES, FLOW_DIM, SEED_ATOMS,
};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde_json::Value;

const ZMATRIX: &str = include_str!("../data/aldp/aldp_zmatrix.json");

fn flat(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|a| match a {
            Value::Array(r) => r.iter().map(|c| c.as_f64().unwrap()).collect::<Vec<_>>(),
            n => vec![n.as_f64().unwrap()],
        })
        .collect()
}

fn pairwise(x: &[f64]) -> Vec<f64> {
    let mut d = Vec::new();
    for i in 0..22 {
        for j in i + 1..22 {
            let s: f64 = (0..3).map(|c| (x[3 * i + c] - x[3 * j + c]).powi(2)).sum();
            d.push(s.sqrt());
        }
    }
    d
}

/// A random flow-space point near the reference: 0.3·N(0, 1) for bonds, angles and
/// non-circular dihedrals, uniform on [−π, π) for the circular dihedrals.
fn random_z(rng: &mut impl Rng) -> Vec<f64> {
    let mut z: Vec<f64> = (0..FLOW_DIM).map(|_| 0.3 * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, rng)).collect();
    for &c in &CIRCULAR_INDICES {
        z[c] = rng.random_range(-std::f64::consts::PI..std::f64::consts::PI);
    }
    z
}

#[test]
fn means_match_the_zmatrix_file() {
    let v: Value = serde_json::from_str(ZMATRIX).unwrap();
    let ic = InternalCoordinates::alanine_dipeptide();
    let m = ic.means();
    let s = ic.stds();
    let seed_mean = flat(&v["seed_internal"]["mean"]);
    for k in 0..3 {
        // Same formulas on the same float64 input: rounding-level agreement.
        assert!((m[k] - seed_mean[k]).abs() < 1e-13, "seed {k}");
    }
    for row in v["rows"].as_array().unwrap() {
        let b = row["flow_index_bond"].as_u64().unwrap() as usize;
        assert!((m[b] - row["bond_mean_nm"].as_f64().unwrap()).abs() < 1e-13);
        assert!((m[b + 1] - row["angle_mean_rad"].as_f64().unwrap()).abs() < 1e-12);
        assert!((m[b + 2] - row["dihedral_mean_rad_boltzgen_sign"].as_f64().unwrap()).abs() < 1e-12);
        assert_eq!(s[b], row["bond_std_nm"].as_f64().unwrap());
        assert_eq!(s[b + 1], row["angle_std_rad"].as_f64().unwrap());
        assert_eq!(s[b + 2], row["dihedral_std_rad"].as_f64().unwrap());
        assert_eq!(ic.is_circular(b + 2), row["dihedral_circular"].as_bool().unwrap());
    }
    let circ: Vec<usize> =
        v["circular_dihedrals"]["flow_indices"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
    let mut sorted = circ.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, CIRCULAR_INDICES.to_vec());
}

#[test]
fn fab_torch_test_vectors_are_reproduced() {
    let v: Value = serde_json::from_str(ZMATRIX).unwrap();
    let ic = InternalCoordinates::alanine_dipeptide();
    let target = AldpTarget::default();
    let vectors = v["test_vectors_x_to_z"].as_array().unwrap();
    assert_eq!(vectors.len(), 16);
    for t in vectors {
        let x = flat(&t["positions_nm"]);
        let z_ref = flat(&t["z_flow_60"]);
        let (z, ld) = ic.to_internal(&x).unwrap();
        for k in 0..FLOW_DIM {
            // boltzgen computes angles with acos (ours: atan2) and divides by stds as small as
            // 0.005; 1e-9 in z is 5e-12 nm / 1.5e-10 rad, far below any physical scale.
            assert!((z[k] - z_ref[k]).abs() < 1e-9, "{}: z[{k}] {} vs {}", t["kind"], z[k], z_ref[k]);
        }
        let ld_ref = t["log_det_dz_dx"].as_f64().unwrap();
        assert!((ld - ld_ref).abs() < 1e-10, "{}: logdet {ld} vs {ld_ref}", t["kind"]);
        // fab's log p(z): the OpenMM energy (reproduced to ~1e-14) plus the log-det.
        let lp = target.log_prob_f64(&z).unwrap()[0];
        let lp_ref = t["fab_log_prob_z"].as_f64().unwrap();
        assert!((lp - lp_ref).abs() < 1e-8, "{}: log p {lp} vs {lp_ref}", t["kind"]);
        assert_eq!(is_l_form(&z).unwrap(), t["filter_chirality_L"].as_bool().unwrap(), "{}", t["kind"]);
        // The reference φ/ψ went through float32 (mdtraj), hence 1e-6 rad.
        let (phi, psi) = phi_psi(&x).unwrap();
        assert!((phi - t["phi_iupac"].as_f64().unwrap()).abs() < 1e-6);
        assert!((psi - t["psi_iupac"].as_f64().unwrap()).abs() < 1e-6);
        // x → z → x reproduces all pairwise distances (rigid motion removed).
        let (x2, ld2) = ic.to_cartesian(&z).unwrap();
        let err = pairwise(&x).iter().zip(pairwise(&x2)).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-14, "{}: pairwise distance error {err}", t["kind"]);
        assert!((ld + ld2).abs() < 1e-10);
    }
}

#[test]
fn z_zero_is_the_reference_configuration_and_log_p_matches_spec() {
    let ff = AldpForceField::amber_implicit();
    let ic = InternalCoordinates::alanine_dipeptide();
    let (x, ld) = ic.to_cartesian(&[0.0; FLOW_DIM]).unwrap();
    let err = pairwise(&x).iter().zip(pairwise(ff.reference_positions())).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 1e-14, "pairwise distance error {err}");
    // docs/ALGORITHMS.md, "Targets": log|det ∂x/∂z| at z = 0 is −245.48211 and log p(0) =
    // −176.25049 (5 decimals);
    // the unrounded fab-torch value is −176.25048624002648.
    assert!((ld - (-245.48211)).abs() < 5e-6, "{ld}");
    let target = AldpTarget::default();
    let lp = target.log_prob_f64(&[0.0; FLOW_DIM]).unwrap()[0];
    assert!((lp - (-176.25049)).abs() < 5e-6, "{lp}");
    assert!((lp - (-176.25048624002648)).abs() < 1e-9, "{lp}");
    // And the reference configuration maps to z = 0 exactly (up to rounding).
    let (z, _) = ic.to_internal(ff.reference_positions()).unwrap();
    assert!(z.iter().all(|v| v.abs() < 1e-12), "{z:?}");
    // The reconstruction frame: CA at the origin, N on +x, C in the xy-plane.
    let [ca, n, c] = SEED_ATOMS;
    assert_eq!(&x[3 * ca..3 * ca + 3], &[0.0, 0.0, 0.0]);
    assert!(x[3 * n + 1] == 0.0 && x[3 * n + 2] == 0.0 && x[3 * c + 2] == 0.0 && x[3 * c + 1] > 0.0);
}

#[test]
fn round_trip_z_to_x_to_z_on_random_points() {
    let ic = InternalCoordinates::alanine_dipeptide();
    let mut rng = seeded_rng(11, 0);
    for _ in 0..200 {
        let z = random_z(&mut rng);
        let (x, ld_fwd) = ic.to_cartesian(&z).unwrap();
        let (z2, ld_inv) = ic.to_internal(&x).unwrap();
        for k in 0..FLOW_DIM {
            // Bonds are divided by 0.005 on the way back, so an x-rounding of 1e-16 nm becomes
            // ~1e-13 in z; 1e-10 leaves margin for the acos-free angles near the reference.
            assert!((z[k] - z2[k]).abs() < 1e-10, "z[{k}]: {} vs {}", z[k], z2[k]);
        }
        assert!((ld_fwd + ld_inv).abs() < 1e-10);
    }
}

/// The 60 Cartesian coordinates not fixed by the reconstruction frame (CA = 0, N_y = N_z = 0,
/// C_z = 0): the map z → these is square, so its Jacobian determinant is defined.
fn free_coordinates(x: &[f64]) -> Vec<f64> {
    let [ca, n, c] = SEED_ATOMS;
    let mut out = Vec::with_capacity(FLOW_DIM);
    for (i, v) in x.iter().enumerate() {
        let (atom, comp) = (i / 3, i % 3);
        let fixed = atom == ca || (atom == n && comp > 0) || (atom == c && comp == 2);
        if !fixed {
            out.push(*v);
        }
    }
    out
}

#[test]
fn log_det_matches_numerical_jacobian() {
    let ic = InternalCoordinates::alanine_dipeptide();
    let mut rng = seeded_rng(12, 0);
    for _ in 0..5 {
        let z = random_z(&mut rng);
        let (x, ld) = ic.to_cartesian(&z).unwrap();
        assert_eq!(free_coordinates(&x).len(), FLOW_DIM);
        let f = |zz: &[f64]| free_coordinates(&ic.to_cartesian(zz).unwrap().0);
        // Central differences with h = 1e-6 in z (≤ 5e-9 nm): truncation O(h²) ~ 1e-12 relative
        // per entry and rounding ~1e-10 relative; the log|det| of a well-conditioned 60×60
        // matrix then agrees to ~1e-7.
        let j = numerical_jacobian(&f, &z, 1e-6);
        let ld_num = log_abs_det_rows(&j);
        assert!((ld - ld_num).abs() < 1e-6, "analytic {ld} vs numerical {ld_num}");
    }
}

#[test]
fn backward_matches_finite_differences_of_a_random_linear_functional() {
    // L(z) = a·x(z) + c·log|det ∂x/∂z|(z) with random a, c: the reverse-mode gradient must be
    // its exact derivative.
    let ic = InternalCoordinates::alanine_dipeptide();
    let mut rng = seeded_rng(13, 0);
    for _ in 0..5 {
        let z = random_z(&mut rng);
        let a: Vec<f64> = (0..CART_DIM).map(|_| StandardNormal.sample(&mut rng)).collect();
        let c: f64 = StandardNormal.sample(&mut rng);
        let l = |zz: &[f64]| {
            let (x, ld) = ic.to_cartesian(zz).unwrap();
            x.iter().zip(&a).map(|(xi, ai)| xi * ai).sum::<f64>() + c * ld
        };
        let (x, _) = ic.to_cartesian(&z).unwrap();
        let mut g = vec![0.0; FLOW_DIM];
        ic.to_cartesian_backward(&z, &x, &a, c, &mut g).unwrap();
        let h = 1e-6;
        for k in 0..FLOW_DIM {
            let mut zp = z.clone();
            zp[k] += h;
            let mut zm = z.clone();
            zm[k] -= h;
            let fd = (l(&zp) - l(&zm)) / (2.0 * h);
            // Truncation h²·L'''/6 ~ 1e-12 and rounding ~1e-16·|L|/h ~ 1e-9 (|L| ~ 250).
            assert!((fd - g[k]).abs() < 1e-6 * (1.0 + g[k].abs()), "dL/dz[{k}]: fd {fd} vs {}", g[k]);
        }
    }
}

/// Central differences with step `h` of log p at each row of `zs` against the analytic
/// gradient: asserts |fd − g_k| < tol(log p, g_k) for every coordinate.
fn check_flow_gradient(target: &AldpTarget, zs: &[f64], h: f64, tol: &dyn Fn(f64, f64) -> f64) {
    let n = zs.len() / FLOW_DIM;
    let (lp, g) = target.log_prob_and_grad_f64(zs).unwrap();
    assert!(lp.iter().all(|v| v.is_finite()), "{lp:?}");
    for i in 0..n {
        let z = &zs[i * FLOW_DIM..(i + 1) * FLOW_DIM];
        let gi = &g[i * FLOW_DIM..(i + 1) * FLOW_DIM];
        for k in 0..FLOW_DIM {
            let mut zp = z.to_vec();
            zp[k] += h;
            let mut zm = z.to_vec();
            zm[k] -= h;
            let fd = (target.log_prob_f64(&zp).unwrap()[0] - target.log_prob_f64(&zm).unwrap()[0]) / (2.0 * h);
            assert!((fd - gi[k]).abs() < tol(lp[i], gi[k]), "point {i} (log p {}), dim {k}: fd {fd} vs {}", lp[i], gi[k]);
        }
    }
}

#[test]
fn flow_space_gradient_matches_finite_differences_near_the_minimum() {
    // Physical points: every coordinate 0.3·N(0, 1) around z = 0 (log p ~ -180 to -300).
    // With h = 1e-6 the rounding in the difference quotient is ~1e-16·|log p|/h ~ 3e-8 and the
    // truncation h²·f'''/6 is below 1e-7 relative in the stiffest (bond) directions.
    // Tolerance 1e-5·(1 + |g_k|).
    let target = AldpTarget::default();
    let mut rng = seeded_rng(14, 0);
    let zs: Vec<f64> = (0..4 * FLOW_DIM).map(|_| 0.3 * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut rng)).collect();
    check_flow_gradient(&target, &zs, 1e-6, &|_, gk| 1e-5 * (1.0 + gk.abs()));
}

#[test]
fn flow_space_gradient_matches_finite_differences_with_random_dihedrals() {
    // The brief's points: 0.3·N(0, 1) with the circular dihedrals uniform on [-π, π). These
    // usually contain clashes (log p ~ -1e4 to -1e7), so the rounding error of the difference
    // quotient, ~1e-16·|log p|/h, dominates at small h; h = 1e-4 balances it against the
    // truncation error h²·f'''/6 (measured relative errors 1e-10 to 4e-7 across dims).
    // Tolerance: 1e-5·(1 + |g_k|) plus a rounding allowance 1e-14·|log p|/h.
    let target = AldpTarget::default();
    let mut rng = seeded_rng(15, 0);
    let zs: Vec<f64> = (0..4).flat_map(|_| random_z(&mut rng)).collect();
    let h = 1e-4;
    check_flow_gradient(&target, &zs, h, &|lp, gk| 1e-5 * (1.0 + gk.abs()) + 1e-14 * lp.abs() / h);
}

#[test]
fn flow_and_log_density_tensor_interfaces() {
    let ic = InternalCoordinates::alanine_dipeptide();
    let target = AldpTarget::default();
    let mut rng = seeded_rng(15, 0);
    let zs: Vec<f64> = (0..3).flat_map(|_| random_z(&mut rng)).collect();
    let z = Tensor::from_vec(zs.clone(), (3, FLOW_DIM), &Device::Cpu).unwrap();
    let (x, ld_f) = ic.forward(&z).unwrap();
    assert_eq!(x.dims(), &[3, CART_DIM]);
    let (z2, ld_i) = ic.inverse(&x).unwrap();
    assert_eq!(z2.dims(), &[3, FLOW_DIM]);
    let s = (ld_f + ld_i).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
    assert!(s < 1e-10);
    // f32 in → f32 out, same values up to f32 rounding of the input.
    let z32 = z.to_dtype(DType::F32).unwrap();
    let lp32 = target.log_prob(&z32).unwrap();
    assert_eq!(lp32.dtype(), DType::F32);
    let (lp64, g64) = target.log_prob_and_grad(&z).unwrap();
    assert_eq!(g64.dims(), &[3, FLOW_DIM]);
    let a = lp32.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let b = lp64.to_vec1::<f64>().unwrap();
    for (u, v) in a.iter().zip(&b) {
        // z rounded to f32 (relative 6e-8) moves log p by ≲ |∇ log p|·|Δz| (|∇| ≲ 1e3 ⇒ ~1e-4).
        assert!((u - v).abs() < 1e-2 * (1.0 + v.abs()), "{u} vs {v}");
    }
    assert!(target.log_prob(&Tensor::zeros((2, 66), DType::F64, &Device::Cpu).unwrap()).is_err());
    assert_eq!(target.dim(), FLOW_DIM);
}

#[test]
fn invalid_flow_points_give_minus_infinity_not_nan() {
    let target = AldpTarget::default();
    let mut cases: Vec<Vec<f64>> = Vec::new();
    let mut z = vec![0.0; FLOW_DIM];
    z[3] = -30.0; // bond of atom 0 = 0.1089 − 0.15 < 0: outside the chart
    cases.push(z);
    let mut z = vec![0.0; FLOW_DIM];
    z[10] = f64::NAN;
    cases.push(z);
    let mut z = vec![0.0; FLOW_DIM];
    z[20] = f64::INFINITY;
    cases.push(z);
    cases.push(vec![1e6; FLOW_DIM]); // absurd but finite: bonds of 5e3 nm
    let zs: Vec<f64> = cases.concat();
    let (lp, g) = target.log_prob_and_grad_f64(&zs).unwrap();
    for (k, v) in lp.iter().enumerate() {
        assert!(!v.is_nan(), "case {k}");
        assert!(g[k * FLOW_DIM..(k + 1) * FLOW_DIM].iter().all(|v| v.is_finite()), "case {k}");
    }
    assert_eq!(&lp[..3], &[f64::NEG_INFINITY; 3]);
    assert!(lp[3].is_finite() || lp[3] == f64::NEG_INFINITY);
}

#[test]
fn chirality_filter_separates_the_mirror_image() {
    let ff = AldpForceField::amber_implicit();
    let ic = InternalCoordinates::alanine_dipeptide();
    let x = ff.reference_positions().to_vec();
    let mirror: Vec<f64> = x.iter().map(|v| -v).collect();
    let (z, _) = ic.to_internal(&x).unwrap();
    let (zm, _) = ic.to_internal(&mirror).unwrap();
    assert_eq!(l_form_mask(&[z.clone(), zm.clone()].concat()).unwrap(), vec![true, false]);
    // The force field is achiral up to the torsion phases, which the prmtop stores as
    // 3.141594 instead of π: cos(nφ − 3.141594) is not exactly even in φ, so the mirror image
    // differs by ≲ Σ k·n·|3.141594 − π| ≈ 1e-3 kJ/mol at most (observed ~3e-6, as in fab-torch's
    // own mirror-image test vector).
    let e = ff.energy(&x).unwrap().total;
    let em = ff.energy(&mirror).unwrap().total;
    assert!((e - em).abs() < 1e-4, "{e} vs {em}");
    // Wrapping: d near ±2π counts as small.
    let mut zw = z.clone();
    zw[17] = 3.1;
    zw[26] = 3.1 - 2.0 * std::f64::consts::PI + 0.1;
    assert!(is_l_form(&zw).unwrap());
}

#[test]
fn flow_target_batch_and_single_evaluations_are_identical() {
    // Groups of four use the 4-lane kernel, the remainder and single points the 1-lane one;
    // both perform the same IEEE operations per point, so the results are bit-identical.
    let target = AldpTarget::default();
    let mut rng = seeded_rng(16, 0);
    let zs: Vec<f64> = (0..6).flat_map(|_| random_z(&mut rng)).collect();
    let (lp, g) = target.log_prob_and_grad_f64(&zs).unwrap();
    for c in 0..6 {
        let (l1, g1) = target.log_prob_and_grad_f64(&zs[c * FLOW_DIM..(c + 1) * FLOW_DIM]).unwrap();
        assert_eq!(l1[0].to_bits(), lp[c].to_bits(), "point {c}");
        assert_eq!(g1, g[c * FLOW_DIM..(c + 1) * FLOW_DIM].to_vec(), "point {c}");
        assert_eq!(target.log_prob_f64(&zs[c * FLOW_DIM..(c + 1) * FLOW_DIM]).unwrap()[0].to_bits(), lp[c].to_bits());
    }
}

/// The rare-basin share FAB logs per AIS batch, on the shipped reference's 10⁵ configurations:
/// the αL/C7ax share counted one configuration at a time (≈ 0.24 %, docs/ALDP_REFERENCE.md);
/// equal log-weights give the same share by weight, and weight concentrated on one αL
/// configuration gives 1.
#[test]
fn batch_stats_count_the_rare_basin_share_of_a_batch() {
    use fab_sampler::Target;
    use fab_targets::aldp::eval::{basin_of, phi_psi_of_flow, Basin};
    let r = fab_targets::aldp::eval::load_reference().unwrap();
    let t = fab_targets::aldp::AldpEvalTarget::with_shipped_reference(fab_targets::aldp::AldpTarget::default());
    let stats: std::collections::BTreeMap<String, f64> = t.batch_stats(&r.z, &vec![0.0; r.n_z]).into_iter().collect();
    let (phi_all, psi_all) = phi_psi_of_flow(&r.z).unwrap();
    let n_alpha_l = phi_all.iter().zip(&psi_all).filter(|(p, q)| basin_of(**p, **q) == Some(Basin::AlphaL)).count();
    assert!(n_alpha_l >= 100, "{n_alpha_l} αL configurations");
    assert_eq!(stats["alpha_l_fraction"], n_alpha_l as f64 / r.n_z as f64);
    assert!((stats["alpha_l_weight"] / (n_alpha_l as f64 / r.n_z as f64) - 1.0).abs() < 1e-9, "{stats:?} {n_alpha_l}");
    let k = phi_all.iter().position(|&p| p > 0.0 && p < fab_targets::aldp::eval::PHI_L_MAX).unwrap();
    let mut lw = vec![-1e3; r.n_z];
    lw[k] = 0.0;
    let stats: std::collections::BTreeMap<String, f64> = t.batch_stats(&r.z, &lw).into_iter().collect();
    assert!((stats["alpha_l_weight"] - 1.0).abs() < 1e-12, "{stats:?}");
}

/// The L-form αL share: on the shipped reference (all L-form) it is the αL population; moving
/// the HA dihedral (flow dimension 26) by 2 rad makes every configuration D-form without moving
/// φ or ψ, and the share drops to 0 while the plain αL population stays.
#[test]
fn l_form_alpha_l_share_ignores_d_form_samples_in_the_window() {
    use fab_targets::aldp::eval::{basin_populations, l_form_alpha_l_share, phi_psi_of_flow};
    use fab_targets::aldp::{l_form_mask, FLOW_DIM};
    let r = fab_targets::aldp::eval::load_reference().unwrap();
    let (phi, psi) = phi_psi_of_flow(&r.z).unwrap();
    let l = l_form_mask(&r.z).unwrap();
    let plain = basin_populations(&phi, &psi, None).unwrap().alpha_l;
    assert!(plain > 0.0);
    assert_eq!(l_form_alpha_l_share(&phi, &psi, &l).unwrap(), plain);
    let mut d = r.z.clone();
    d.chunks_mut(FLOW_DIM).for_each(|z| z[26] += 2.0);
    let (dphi, dpsi) = phi_psi_of_flow(&d).unwrap();
    assert_eq!((&dphi, &dpsi), (&phi, &psi));
    let dl = l_form_mask(&d).unwrap();
    assert!(dl.iter().all(|x| !x));
    assert_eq!(l_form_alpha_l_share(&dphi, &dpsi, &dl).unwrap(), 0.0);
    assert!(l_form_alpha_l_share(&phi, &psi, &l[1..]).is_err());
}
