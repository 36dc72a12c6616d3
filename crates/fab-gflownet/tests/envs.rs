//! Environments against brute-force enumeration and the published test vectors.

use fab_gflownet::bits::BitSequence;
use fab_gflownet::grid::Grid;
use fab_gflownet::{DiscreteEnv, ExactTarget};

/// (H, d) → (N_X, Z, goals, mean-L1 of the uniform distribution, p_max) from the spec's table.
const VECTORS: [(usize, usize, usize, f64, usize, f64, f64); 6] = [
    (8, 2, 63, 10.800630, 4, 2.149870e-2, 1.851753e-1),
    (16, 2, 255, 29.202550, 9, 4.557596e-3, 6.848751e-2),
    (32, 2, 1023, 106.810230, 36, 1.249082e-3, 1.872489e-2),
    (64, 2, 4095, 427.240950, 144, 3.120543e-4, 4.681223e-3),
    (32, 3, 32674, 1949.726740, 216, 3.237404e-5, 1.025790e-3),
    (16, 4, 64125, 4578.641250, 81, 9.669815e-6, 4.368130e-4),
];

#[test]
fn deceptive_grid_matches_the_reference_vectors() {
    for (h, d, n_x, z, goals, l1_uniform, p_max) in VECTORS {
        let env = Grid::deceptive(d, h, 1.0);
        let t = ExactTarget::of(&env).unwrap();
        assert_eq!(t.p.len(), n_x, "H={h} d={d}");
        assert!((t.log_z.exp() - z).abs() < 1e-5 * z, "Z H={h} d={d}: {}", t.log_z.exp());
        assert_eq!(t.n_modes(), goals, "goals H={h} d={d}");
        let u = 1.0 / n_x as f64;
        let l1 = t.p.iter().map(|p| (p - u).abs()).sum::<f64>() / n_x as f64;
        assert!((l1 - l1_uniform).abs() < 1e-6 * l1_uniform.max(1e-3) + 1e-11, "L1 H={h} d={d}: {l1}");
        let pm = t.p.iter().cloned().fold(0.0, f64::max);
        assert!((pm - p_max).abs() < 1e-6, "p_max H={h} d={d}: {pm}");
    }
    // The float rule's asymmetric band at H = 16: indices {2, 12, 13}.
    let env = Grid::deceptive(1, 16, 1.0);
    let band: Vec<i32> = (0..16).filter(|&v| env.is_mode(&[v])).collect();
    assert_eq!(band, vec![2, 12, 13]);
    let env = Grid::deceptive(2, 8, 1.0);
    let modes: Vec<[i32; 2]> = [[1, 1], [1, 6], [6, 1], [6, 6]].to_vec();
    for m in modes {
        assert!(env.is_mode(&m));
    }
}

#[test]
fn terminal_indices_are_a_bijection_and_parents_are_valid() {
    for env in [Grid::deceptive(3, 5, 1.0), Grid::hypergrid(2, 6, 0.01)] {
        let en = env.enumeration().unwrap();
        let mut x = vec![0; env.state_len()];
        for i in 0..en.n_terminal() {
            en.terminal(i, &mut x);
            assert_eq!(en.terminal_index(&x), i);
        }
        for i in 0..en.n_nonterminal() {
            en.nonterminal(i, &mut x);
            assert_eq!(en.nonterminal_index(&x), i);
            assert!(!env.is_forced_terminal(&x));
            // Every valid parent has a smaller index (topological order).
            let mut mask = vec![false; env.n_back_actions()];
            env.backward_mask(&x, true, &mut mask);
            for (b, &m) in mask.iter().enumerate() {
                if m {
                    let mut p = x.clone();
                    env.backward_step(&mut p, b);
                    assert!(en.nonterminal_index(&p) < i);
                }
            }
        }
    }
    // A forced-terminal state has only the edge coordinate as a valid parent; the reference's
    // mask allows every non-zero coordinate.
    let env = Grid::deceptive(2, 5, 1.0);
    let mut mask = vec![false; 2];
    env.backward_mask(&[2, 4], true, &mut mask);
    assert_eq!(mask, vec![false, true]);
    env.backward_mask(&[2, 4], false, &mut mask);
    assert_eq!(mask, vec![true, true]);
}

#[test]
fn hypergrid_and_bits_have_their_closed_forms() {
    let env = Grid::hypergrid(2, 8, 0.01);
    let t = ExactTarget::of(&env).unwrap();
    assert_eq!(t.p.len(), 64);
    // Brute force of the reward formula.
    let mut z = 0.0;
    for i in 0..8 {
        for j in 0..8 {
            z += env.reward(&[i, j]);
        }
    }
    assert!((t.log_z - f64::ln(z)).abs() < 1e-12);
    let bits = BitSequence::with_random_modes(10, 1.5, 4, 7);
    let t = ExactTarget::of(&bits).unwrap();
    assert!((t.log_z - bits.log_z()).abs() < 1e-10, "{} vs {}", t.log_z, bits.log_z());
    assert_eq!(t.n_modes(), 4);
}

#[test]
fn every_shipped_gflownet_config_is_valid_at_both_protocol_sizes() {
    use fab_sampler::FamilyConfig;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/gflownet");
    let mut n = 0;
    for f in std::fs::read_dir(&root).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&f).unwrap();
            let grid = text.contains("deceptive_grid");
            let sizes: &[[&str; 2]] =
                if grid { &[["env.ndim=2", "env.horizon=64"], ["env.ndim=4", "env.horizon=16"]] } else { &[["seed=0", "seed=1"]] };
            for s in sizes {
                let o: Vec<String> = s.iter().map(|v| v.to_string()).collect();
                let cfg = fab_gflownet::GflowConfig::parse(&text, &o).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                assert!(cfg.train.n_iterations > 0);
            }
            n += 1;
        }
    }
    assert!(n >= 19, "found only {n} configs");
}
