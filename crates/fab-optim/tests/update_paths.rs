//! The fused CPU update and the candle tensor-op update of [`Adam::step`] compute the same
//! thing: both optimisers see the same parameters and the same gradients for several steps,
//! with weight decay (L2 and decoupled), gradient-norm clipping, a changing learning rate and a
//! step in which one parameter has no gradient.

use candle_core::{DType, Device, Tensor};
use fab_core::rng::normal_vec;
use fab_core::{seeded_rng, Grads, ParamSet};
use fab_optim::{Adam, AdamConfig, LrSchedule, OptimError, StepOutcome, UpdatePath};

const SHAPES: [(&str, &[usize]); 3] = [("w", &[4, 3]), ("b", &[3]), ("s", &[5])];
const N_STEPS: u64 = 12;
const MAX_NORM: f64 = 5.0;

/// Two parameter sets with the same values (seeded), in `dtype`.
fn twin_params(dtype: DType, seed: u64) -> (ParamSet, ParamSet) {
    let mut rng = seeded_rng(seed, 0);
    let (mut a, mut b) = (ParamSet::new(), ParamSet::new());
    for (name, shape) in SHAPES {
        let n = shape.iter().product();
        let values = normal_vec(&mut rng, n);
        a.create(name, values.clone(), shape, dtype, &Device::Cpu).unwrap();
        b.create(name, values, shape, dtype, &Device::Cpu).unwrap();
    }
    (a, b)
}

/// The gradients of step `t`: seeded normals, scaled by 100 every third step so that the global
/// norm exceeds [`MAX_NORM`] and clipping acts; parameter "b" has no gradient at step 4.
fn grads_at(t: u64, dtype: DType, seed: u64) -> Grads {
    let mut rng = seeded_rng(seed, 1 + t);
    let scale = if t.is_multiple_of(3) { 100.0 } else { 0.7 };
    Grads(
        SHAPES
            .iter()
            .map(|(name, shape)| {
                let n = shape.iter().product();
                let g: Vec<f64> = normal_vec(&mut rng, n).iter().map(|x| x * scale).collect();
                (!(t == 4 && *name == "b")).then(|| Tensor::from_vec(g, *shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap())
            })
            .collect(),
    )
}

fn as_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Largest |a − b| / max(|a|, |b|, 1e-30) over two equally long slices.
fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1e-30)).fold(0.0, f64::max)
}

/// Runs [`N_STEPS`] clipped steps with each update path and returns the largest relative
/// difference over parameters, first and second moments; also checks step outcomes and counts.
fn run_both(dtype: DType, config: AdamConfig, seed: u64) -> f64 {
    let (p_fused, p_tensor) = twin_params(dtype, seed);
    let mut fused = Adam::new(&p_fused, config).unwrap();
    fused.set_update_path(UpdatePath::Fused);
    let mut tensor = Adam::new(&p_tensor, config).unwrap();
    tensor.set_update_path(UpdatePath::TensorOps);
    let schedule = LrSchedule::WarmupCosine { warmup_steps: 3, t_max: 20 };
    let mut clipped_steps = 0;
    for t in 0..N_STEPS {
        let lr = schedule.lr_at(config.lr, t + 1);
        fused.set_learning_rate(lr).unwrap();
        tensor.set_learning_rate(lr).unwrap();
        let mut g_fused = grads_at(t, dtype, seed);
        let mut g_tensor = grads_at(t, dtype, seed);
        let o_fused = fused.step_clipped(&p_fused, &mut g_fused, Some(MAX_NORM)).unwrap();
        let o_tensor = tensor.step_clipped(&p_tensor, &mut g_tensor, Some(MAX_NORM)).unwrap();
        // Same gradients in, so the same pre-clip norm and the same decision.
        assert_eq!(o_fused, o_tensor, "step {t}");
        let StepOutcome::Applied { grad_norm } = o_fused else {
            panic!("step {t} was skipped: {o_fused:?}");
        };
        if grad_norm > MAX_NORM {
            clipped_steps += 1;
        }
    }
    assert_eq!(clipped_steps, 4, "steps 0, 3, 6 and 9 must be clipped");
    assert_eq!(fused.step_count(), N_STEPS);
    assert_eq!(fused.param_steps(), tensor.param_steps());
    assert_eq!(fused.param_steps(), &[N_STEPS, N_STEPS - 1, N_STEPS]);

    let mut worst = 0.0f64;
    for ((name, a), b) in p_fused.iter().zip(p_tensor.vars()) {
        let (va, vb) = (as_f64(a.as_tensor()), as_f64(b.as_tensor()));
        // The parameters did move (a test on untouched parameters would prove nothing).
        let (p0, _) = twin_params(dtype, seed);
        let start = as_f64(p0.get(name).unwrap().as_tensor());
        assert!(max_rel_diff(&va, &start) > 1e-4, "{name} did not move");
        worst = worst.max(max_rel_diff(&va, &vb));
        let moments = [(fused.first_moment(name), tensor.first_moment(name)), (fused.second_moment(name), tensor.second_moment(name))];
        for (ma, mb) in moments {
            let (ma, mb) = (ma.unwrap(), mb.unwrap());
            assert_eq!(ma.dtype(), dtype);
            assert_eq!(mb.dtype(), dtype);
            worst = worst.max(max_rel_diff(&as_f64(ma), &as_f64(mb)));
        }
    }
    worst
}

fn l2_config() -> AdamConfig {
    AdamConfig { lr: 3e-2, weight_decay: 1e-2, decoupled_weight_decay: false, ..Default::default() }
}

fn decoupled_config() -> AdamConfig {
    AdamConfig { lr: 3e-2, weight_decay: 0.1, decoupled_weight_decay: true, ..Default::default() }
}

// Tolerance. Both paths do the same operations in the same order and precision except one:
// candle's `tensor / scalar` multiplies by the reciprocal of √(1 − β₂ᵗ), the fused kernel
// divides by it. That changes the denominator by at most one rounding (relative 2⁻⁵³ ≈ 1.1e-16
// in f64, 2⁻²⁴ ≈ 6e-8 in f32) and the update by about two, per step; with L2 decay the
// parameter feeds back into the gradient. Measured over these 12 steps: 1.3e-16 (f64) and
// 2.9e-7 (f32) relative. The bounds, 1e-13 and 1e-5, leave a margin of hundreds of roundings
// and still fail for any real difference in the update rule (eps off by 10 % in one path gives
// 2e-9 in f64; a wrong β, bias correction, decay or clipping factor gives 1e-3 or more).
const TOL_F64: f64 = 1e-13;
const TOL_F32: f64 = 1e-5;

#[test]
fn fused_equals_tensor_ops_f64_l2_decay() {
    let d = run_both(DType::F64, l2_config(), 11);
    eprintln!("max relative difference fused vs tensor ops: {d:e}");
    assert!(d <= TOL_F64, "max relative difference {d:e}");
}

#[test]
fn fused_equals_tensor_ops_f64_decoupled_decay() {
    let d = run_both(DType::F64, decoupled_config(), 12);
    eprintln!("max relative difference fused vs tensor ops: {d:e}");
    assert!(d <= TOL_F64, "max relative difference {d:e}");
}

#[test]
fn fused_equals_tensor_ops_f32() {
    for (config, seed) in [(l2_config(), 13), (decoupled_config(), 14)] {
        let d = run_both(DType::F32, config, seed);
        eprintln!("max relative difference fused vs tensor ops (f32): {d:e}");
        assert!(d <= TOL_F32, "max relative difference {d:e}");
    }
}

#[test]
fn auto_uses_the_fused_kernel_on_cpu() {
    // `Auto` on contiguous CPU f64 parameters must be bit-identical to `Fused`.
    let (p_auto, p_fused) = twin_params(DType::F64, 21);
    let mut auto = Adam::new(&p_auto, decoupled_config()).unwrap();
    assert_eq!(auto.update_path(), UpdatePath::Auto);
    let mut fused = Adam::new(&p_fused, decoupled_config()).unwrap();
    fused.set_update_path(UpdatePath::Fused);
    for t in 0..5 {
        auto.step_clipped(&p_auto, &mut grads_at(t, DType::F64, 21), Some(MAX_NORM)).unwrap();
        fused.step_clipped(&p_fused, &mut grads_at(t, DType::F64, 21), Some(MAX_NORM)).unwrap();
    }
    for (a, b) in p_auto.vars().iter().zip(p_fused.vars()) {
        let bits = |t: &Tensor| as_f64(t).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a.as_tensor()), bits(b.as_tensor()));
    }
}

#[test]
fn fused_refuses_what_it_cannot_update_and_modifies_nothing() {
    // bf16 has no fused kernel: `Fused` is an error before anything changes, `Auto` falls back
    // to tensor operations.
    let mut params = ParamSet::new();
    let w = params.create("w", vec![1.0, -2.0, 0.5], &[3], DType::BF16, &Device::Cpu).unwrap();
    let g = Grads(vec![Some(Tensor::new(&[0.5f64, 0.5, -0.5], &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap())]);
    let before = as_f64(w.as_tensor());
    // lr 0.1: a step of 1e-3 would round back to the same bf16 values.
    let config = AdamConfig { lr: 0.1, ..Default::default() };
    let mut adam = Adam::new(&params, config).unwrap();
    adam.set_update_path(UpdatePath::Fused);
    assert!(matches!(adam.step(&params, &g), Err(OptimError::Mismatch(_))));
    assert_eq!(as_f64(w.as_tensor()), before);
    assert_eq!(adam.step_count(), 0);
    assert!(adam.first_moment("w").is_none());
    adam.set_update_path(UpdatePath::Auto);
    adam.step(&params, &g).unwrap();
    assert_eq!(adam.step_count(), 1);
    assert_ne!(as_f64(w.as_tensor()), before);
}
