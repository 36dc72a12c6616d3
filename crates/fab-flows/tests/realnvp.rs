//! RealNVP couplings, LU mixing and the flow model: invertibility, log-determinants against
//! numerical Jacobians, gradients against finite differences, and the CPU path against candle.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use fab_core::{rng::seeded_rng, Flow, LogDensity, Proposal};
use fab_flows::nets::LinearInit;
use fab_flows::{AffineCoupling, Backend, FlowConfig, FlowModel, Layer, LuLinear, RealNvpConfig};

/// A model of `RealNvpConfig::gmm()`-like shape but small, with random non-identity parameters.
fn random_model(dim: usize, n_layers: usize, seed: u64) -> FlowModel {
    let cfg = RealNvpConfig { dim, n_layers, layer_nodes_per_dim: 8, n_hidden_layers: 2, lu_mixing: true };
    let m = cfg.build(seed, DType::F64, &Device::Cpu).unwrap();
    // Scaled so that every layer changes its input by O(1) without compounding to overflow.
    perturb(&m, 0.6 / (cfg.hidden() as f64).sqrt(), seed);
    m
}

// Round-trip tolerance 1e-10: every layer is a handful of f64 operations per coordinate, so
// the error is a few ulps times the condition of the exp/matrix maps. Jacobian tolerance 1e-6:
// central differences with h = 1e-6 have O(h²) truncation and O(ε/h) ≈ 1e-10 rounding error
// per entry; log|det| of a well-conditioned matrix amplifies that by at most ~d·cond.

#[test]
fn affine_coupling_inverts_and_matches_numerical_jacobian() {
    for dim in [2usize, 3, 7] {
        let mut rng = seeded_rng(1, 0);
        let layer = AffineCoupling::with_last_init(dim, 16, 2, LinearInit::Uniform(0.3), &mut rng, DType::F64, &Device::Cpu).unwrap();
        let x = points(16, dim, 1.5, 2);
        check_bijection(&layer, &x, 4, 1e-10, 1e-6);
        // The layer is really not the identity.
        let (z, ld) = layer.inverse(&x).unwrap();
        assert!(max_abs_diff(&flat(&z), &flat(&x)) > 1e-2);
        assert!(flat(&ld).iter().any(|v| v.abs() > 1e-3));
    }
}

#[test]
fn lu_linear_inverts_and_matches_numerical_jacobian() {
    for dim in [2usize, 5, 32] {
        let mut rng = seeded_rng(3, 0);
        let layer = LuLinear::new(dim, &mut rng, DType::F64, &Device::Cpu).unwrap();
        // Move away from |det W| = 1 so that the log-det is not trivially zero.
        for v in layer.params().vars() {
            let noise = fab_core::rng::randn(&mut rng, v.shape(), DType::F64, &Device::Cpu).unwrap();
            v.set(&(v.as_tensor() + (noise * 0.2).unwrap()).unwrap()).unwrap();
        }
        let x = points(8, dim, 1.0, 4);
        check_bijection(&layer, &x, 2, 1e-10, 1e-6);
        // The tracked (differentiable triangular-solve) sampling path agrees with the host inverse.
        let (z, _) = layer.inverse_t(&x, false).unwrap();
        let (a, la) = layer.forward_t(&z, true).unwrap();
        let (b, lb) = layer.forward_t(&z, false).unwrap();
        assert!(max_abs_diff(&flat(&a), &flat(&b)) < 1e-10);
        assert!(max_abs_diff(&flat(&la), &flat(&lb)) < 1e-12);
    }
}

#[test]
fn coupling_is_identity_at_initialisation() {
    let mut rng = seeded_rng(0, 0);
    let layer = AffineCoupling::new(5, 20, 2, &mut rng, DType::F64, &Device::Cpu).unwrap();
    let x = points(10, 5, 2.0, 1);
    let (z, ld) = layer.inverse(&x).unwrap();
    assert_eq!(flat(&z), flat(&x));
    assert!(flat(&ld).iter().all(|v| *v == 0.0));
}

#[test]
fn model_at_initialisation_equals_its_base() {
    // Couplings are the identity and the LU layers start orthogonal (|det| = 1), which leaves
    // the standard normal base invariant: q = N(0, I) exactly (up to rounding).
    let m = RealNvpConfig::gmm().build(0, DType::F64, &Device::Cpu).unwrap();
    let x = points(64, 2, 3.0, 7);
    let lq = flat(&m.log_prob(&x).unwrap());
    let base = fab_core::test_utils::DiagGaussian::standard(2);
    let lp = flat(&base.log_prob(&x).unwrap());
    assert!(max_abs_diff(&lq, &lp) < 1e-10, "{}", max_abs_diff(&lq, &lp));
}

#[test]
fn cpu_path_matches_candle_path() {
    for (dim, layers) in [(2usize, 4usize), (6, 3)] {
        let mut m = random_model(dim, layers, 11);
        let x = points(33, dim, 2.0, 12);
        let coef: Vec<f64> = (0..33).map(|i| ((i as f64) * 0.7).sin()).collect();
        m.set_backend(Backend::Auto);
        let lq_cpu = flat(&m.log_prob(&x).unwrap());
        // The perturbed model is far from its N(0, I) initial state, so the comparison is not
        // between two identities.
        let base = flat(&fab_core::test_utils::DiagGaussian::standard(dim).log_prob(&x).unwrap());
        assert!(max_abs_diff(&lq_cpu, &base) > 0.5);
        let (lg_cpu, gx_cpu) = m.log_prob_and_grad(&x).unwrap();
        let (lb_cpu, pg_cpu) = m.log_prob_backward(&x, &coef).unwrap();
        let mut rng = seeded_rng(5, 1);
        let (xs_cpu, ls_cpu) = m.sample_and_log_prob(20, &mut rng).unwrap();
        m.set_backend(Backend::Candle);
        let lq_c = flat(&m.log_prob(&x).unwrap());
        let (_, gx_c) = m.log_prob_and_grad(&x).unwrap();
        let (_, pg_c) = m.log_prob_backward(&x, &coef).unwrap();
        let mut rng = seeded_rng(5, 1);
        let (xs_c, ls_c) = m.sample_and_log_prob(20, &mut rng).unwrap();
        assert!(max_abs_diff(&lq_cpu, &lq_c) < 1e-10, "{}", max_abs_diff(&lq_cpu, &lq_c));
        assert!(max_abs_diff(&flat(&lg_cpu), &lq_c) < 1e-10);
        assert!(max_abs_diff(&flat(&lb_cpu), &lq_c) < 1e-10);
        assert!(max_abs_diff(&flat(&gx_cpu), &flat(&gx_c)) < 1e-9);
        assert!(max_abs_diff(&flat(&xs_cpu), &flat(&xs_c)) < 1e-10);
        assert!(max_abs_diff(&flat(&ls_cpu), &flat(&ls_c)) < 1e-10);
        for ((name, _), (a, b)) in m.params().iter().zip(pg_cpu.0.iter().zip(&pg_c.0)) {
            let a = flat(a.as_ref().unwrap());
            let b = b.as_ref().map(flat).unwrap_or_else(|| vec![0.0; a.len()]);
            let scale = b.iter().map(|v| v.abs()).fold(1e-3, f64::max);
            assert!(max_abs_diff(&a, &b) / scale < 1e-9, "{name}: {}", max_abs_diff(&a, &b));
        }
    }
}

#[test]
fn input_gradient_matches_finite_differences() {
    let m = random_model(4, 3, 21);
    let x = points(5, 4, 1.5, 22);
    let (_, g) = m.log_prob_and_grad(&x).unwrap();
    let fd = fab_core::test_utils::finite_difference_grad(&m, &flat(&x), 5, 1e-5);
    // Central differences, h = 1e-5: truncation O(h²·f''') ≈ 1e-9, rounding ≈ 1e-16/1e-5.
    assert!(max_abs_diff(&flat(&g), &fd) < 1e-7, "{}", max_abs_diff(&flat(&g), &fd));
}

#[test]
fn parameter_gradient_matches_finite_differences() {
    let m = random_model(3, 2, 31);
    let x = points(7, 3, 1.0, 32);
    let coef: Vec<f64> = (0..7).map(|i| 0.3 - 0.1 * i as f64).collect();
    let (_, grads) = m.log_prob_backward(&x, &coef).unwrap();
    let objective = |m: &FlowModel| -> f64 { flat(&m.log_prob(&x).unwrap()).iter().zip(&coef).map(|(a, c)| a * c).sum() };
    let mut checked = 0;
    for (k, v) in m.vars().iter().enumerate() {
        let orig = flat(v.as_tensor());
        for idx in [0, orig.len() / 2, orig.len() - 1] {
            let h = 1e-6;
            let mut p = orig.clone();
            p[idx] += h;
            v.set(&Tensor::from_vec(p.clone(), v.shape(), &Device::Cpu).unwrap()).unwrap();
            let fp = objective(&m);
            p[idx] -= 2.0 * h;
            v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).unwrap()).unwrap();
            let fm = objective(&m);
            v.set(&Tensor::from_vec(orig.clone(), v.shape(), &Device::Cpu).unwrap()).unwrap();
            let num = (fp - fm) / (2.0 * h);
            let ana = flat(grads.0[k].as_ref().unwrap())[idx];
            assert!((num - ana).abs() < 1e-6 * (1.0 + num.abs()), "param {} [{idx}]: {ana} vs {num}", m.params().names()[k]);
            checked += 1;
        }
    }
    assert!(checked > 20);
}

#[test]
fn log_density_is_normalised_via_change_of_variables() {
    // log q(x) = log N(f⁻¹(x)) + log|det ∂f⁻¹/∂x| with the determinant taken numerically from
    // the whole composed inverse map — independent of every layer's own log-det formula.
    let m = random_model(3, 3, 41);
    let x = points(4, 3, 1.0, 42);
    let lq = flat(&m.log_prob(&x).unwrap());
    let xs = flat(&x);
    for i in 0..4 {
        let xi = xs[i * 3..(i + 1) * 3].to_vec();
        let inv = |v: &[f64]| -> Vec<f64> {
            let mut z = Tensor::from_slice(v, (1, 3), &Device::Cpu).unwrap();
            for l in m.layers().iter().rev() {
                z = l.inverse_t(&z, false).unwrap().0;
            }
            flat(&z)
        };
        let z = inv(&xi);
        let base = m.base().log_prob_t(&Tensor::from_slice(&z, (1, 3), &Device::Cpu).unwrap(), false).unwrap();
        let jac = fab_core::test_utils::numerical_jacobian(&inv, &xi, 1e-6);
        let want = flat(&base)[0] + fab_core::test_utils::log_abs_det_rows(&jac);
        assert!((want - lq[i]).abs() < 1e-6, "{want} vs {}", lq[i]);
    }
}

#[test]
fn sample_log_prob_is_consistent_with_density() {
    let m = random_model(5, 4, 51);
    let mut rng = seeded_rng(52, 0);
    let (x, lq) = m.sample_and_log_prob(40, &mut rng).unwrap();
    let lq2 = flat(&m.log_prob(&x).unwrap());
    assert!(max_abs_diff(&flat(&lq), &lq2) < 1e-9);
    // Reparameterised sampling with the tracked path gives the same numbers.
    let mut rng = seeded_rng(52, 0);
    let (xt, lt) = m.sample_t(40, &mut rng, true).unwrap();
    assert!(max_abs_diff(&flat(&xt), &flat(&x)) < 1e-10);
    assert!(max_abs_diff(&flat(&lt), &flat(&lq)) < 1e-10);
}

#[test]
fn float32_agrees_with_float64() {
    let cfg = RealNvpConfig { dim: 4, n_layers: 3, layer_nodes_per_dim: 8, n_hidden_layers: 2, lu_mixing: true };
    let m64 = cfg.build(3, DType::F64, &Device::Cpu).unwrap();
    perturb(&m64, 0.15, 3);
    let m32 = cfg.build(3, DType::F32, &Device::Cpu).unwrap();
    for (a, b) in m32.vars().iter().zip(m64.vars()) {
        a.set(&b.as_tensor().to_dtype(DType::F32).unwrap()).unwrap();
    }
    let x = points(16, 4, 1.0, 9);
    let l64 = flat(&m64.log_prob(&x).unwrap());
    let l32 = flat(&m32.log_prob(&x.to_dtype(DType::F32).unwrap()).unwrap());
    // f32 has ~7 significant digits; through 6 layers errors stay ≲ 1e-4 absolute at |log q| ~ 10.
    assert!(max_abs_diff(&l64, &l32) < 1e-4, "{}", max_abs_diff(&l64, &l32));
    let coef = vec![1.0; 16];
    let (_, g32) = m32.log_prob_backward(&x.to_dtype(DType::F32).unwrap(), &coef).unwrap();
    let (_, g64) = m64.log_prob_backward(&x, &coef).unwrap();
    let n32 = g32.global_norm().unwrap();
    let n64 = g64.global_norm().unwrap();
    assert!((n32 - n64).abs() < 1e-3 * n64);
}

#[test]
fn paper_architectures_have_the_reference_parameter_counts() {
    // Reference counts (docs/ALGORITHMS.md, "Normalizing flows"; full L and U matrices included).
    let gmm = RealNvpConfig::gmm().build(0, DType::F64, &Device::Cpu).unwrap();
    assert_eq!(gmm.params().num_scalars(), 102_184);
    let mw = RealNvpConfig::many_well().build(0, DType::F64, &Device::Cpu).unwrap();
    assert_eq!(mw.params().num_scalars(), 1_205_184);
    // The size-only count that memory estimates use is within 2 % of the built model's.
    for (cfg, n) in [(RealNvpConfig::gmm(), 102_184.0), (RealNvpConfig::many_well(), 1_205_184.0)] {
        let approx = FlowConfig::RealNvp(cfg).approx_parameters();
        assert!((approx / n - 1.0).abs() < 0.02, "{approx} vs {n}");
    }
}

#[test]
fn same_seed_same_model_and_checkpoints_round_trip() {
    let cfg = FlowConfig::RealNvp(RealNvpConfig { dim: 3, n_layers: 2, layer_nodes_per_dim: 4, n_hidden_layers: 2, lu_mixing: true });
    let a = cfg.build(8, DType::F64, &Device::Cpu).unwrap();
    let b = cfg.build(8, DType::F64, &Device::Cpu).unwrap();
    for (x, y) in a.vars().iter().zip(b.vars()) {
        assert_eq!(flat(x.as_tensor()), flat(y.as_tensor()));
    }
    perturb(&a, 0.1, 1);
    let dir = fab_core::test_utils::ScratchDir::create("flow_ckpt");
    let path = dir.join("flow.safetensors");
    a.save(&path).unwrap();
    b.load(&path).unwrap();
    let x = points(5, 3, 1.0, 2);
    assert_eq!(flat(&a.log_prob(&x).unwrap()), flat(&b.log_prob(&x).unwrap()));
    // A model built from another seed has other permutations: loading must refuse.
    let c = cfg.build(9, DType::F64, &Device::Cpu).unwrap();
    let err = c.load(&path).unwrap_err().to_string();
    assert!(err.contains("another flow configuration or seed"), "{err}");
}

#[test]
fn config_parses_from_toml_and_rejects_bad_values() {
    let cfg: FlowConfig = toml::from_str("type = \"real_nvp\"\ndim = 32\nn_layers = 10\nlayer_nodes_per_dim = 10\n").unwrap();
    assert_eq!(cfg, FlowConfig::RealNvp(RealNvpConfig::many_well()));
    assert!(toml::from_str::<FlowConfig>("type = \"real_nvp\"\nbogus = 1\n").is_err());
    let bad = FlowConfig::RealNvp(RealNvpConfig { dim: 1, ..RealNvpConfig::gmm() });
    assert!(bad.build(0, DType::F64, &Device::Cpu).is_err());
}
