//! Every objective's autodiff gradient equals a central finite difference of the same
//! objective (f64, a perturbed tiny network so that no gradient is trivially zero), for both
//! architectures, with and without the Langevin parametrisation and learned variance; and the
//! path terms agree between sampling forward and re-evaluating the same points.

use candle_core::{DType, Tensor};
use fab_core::{seeded_rng, FnDensity, LogDensity};
use fab_diffusion::model::{Diffusion, ModelSpec, Source, Track};
use fab_diffusion::net::{Arch, NetShape};
use fab_diffusion::objectives::{loss, BatchPart, Objective};
use fab_diffusion::process::Process;
use rand::Rng;

fn target() -> impl LogDensity {
    // A smooth non-Gaussian density in 2-D: −0.65‖x − 1‖² + 0.3 sin(x₀) + 0.2 x₀x₁.
    FnDensity::new(2, |x: &Tensor| {
        let q = (x - 1.0)?.sqr()?.sum(1)?;
        let x0 = x.narrow(1, 0, 1)?.squeeze(1)?;
        let x1 = x.narrow(1, 1, 1)?.squeeze(1)?;
        (q * -0.65)? + (x0.sin()? * 0.3)? + ((x0 * x1)? * 0.2)?
    })
}

fn spec(arch: Arch, langevin: bool, learned_variance: bool, flow_head: bool) -> ModelSpec {
    ModelSpec {
        process: Process { dim: 2, n_steps: 5, t_scale: 1.3 },
        shape: NetShape { arch, dim: 2, hidden: 6, harmonics: 3, flow_head },
        learned_variance,
        langevin: langevin.then_some(5),
        clip: Some((100.0, 1e4)),
        forward_looking: true,
        dtype: DType::F64,
    }
}

/// Moves every parameter by N(0, 0.3²)-ish noise so that the zero output layer does not make
/// inner gradients vanish.
fn perturb(model: &Diffusion, seed: u64) {
    let mut rng = seeded_rng(seed, 77);
    for (_, var) in model.params().iter().chain(model.flow_params().iter()) {
        let t = var.as_tensor();
        let v: Vec<f64> = t.flatten_all().unwrap().to_vec1::<f64>().unwrap().iter().map(|x| x + rng.random_range(-0.5..0.5)).collect();
        var.set(&Tensor::from_vec(v, t.dims(), t.device()).unwrap()).unwrap();
    }
}

fn set_entry(var: &candle_core::Var, j: usize, value: f64) {
    let t = var.as_tensor();
    let mut v: Vec<f64> = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    v[j] = value;
    var.set(&Tensor::from_vec(v, t.dims(), t.device()).unwrap()).unwrap();
}

fn entry(var: &candle_core::Var, j: usize) -> f64 {
    var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap()[j]
}

fn score(target: &dyn LogDensity, x: &[f64], n: usize) -> Vec<f64> {
    let t = Tensor::from_slice(x, (n, 2), &candle_core::Device::Cpu).unwrap();
    fab_core::to_f64_vec(&target.log_prob_and_grad(&t).unwrap().1).unwrap()
}

/// The loss as a function of the parameters: on fixed points (TB-like objectives) or on paths
/// re-drawn with the same noise (PIS).
fn loss_value(model: &Diffusion, objective: Objective, target: &dyn LogDensity, fixed: Option<&[f64]>, n: usize, seed: u64) -> f64 {
    let mut rng = seeded_rng(seed, 1);
    let paths = match fixed {
        Some(x) => model.paths(target, n, Source::Given(x), Track::None, objective.needs_flows(), &mut rng).unwrap(),
        None => model.paths(target, n, Source::Forward { exploration: 0.0 }, Track::None, false, &mut rng).unwrap(),
    };
    let s = score(target, paths.ends(2), n);
    let l = loss(objective, &paths, &paths.log_r, model.log_z_tensor(), Some(&s), BatchPart::whole(paths.n)).unwrap();
    l.to_vec1::<f64>().unwrap()[0]
}

fn check(arch: Arch, objective: Objective, langevin: bool, learned_variance: bool) {
    let target = target();
    let mut init = seeded_rng(5, 0);
    let model = Diffusion::new(spec(arch, langevin, learned_variance, objective.needs_flows()), &mut init).unwrap();
    perturb(&model, 9);
    let n = 7;
    let seed = 21;
    // Paths and the autodiff gradient.
    let mut rng = seeded_rng(seed, 1);
    let (source, track) = if objective.reparameterised() {
        (Source::Forward { exploration: 0.0 }, Track::Path)
    } else {
        (Source::Forward { exploration: 0.3 }, Track::Params)
    };
    let paths = model.paths(&target, n, source, track, objective.needs_flows(), &mut rng).unwrap();
    let s = score(&target, paths.ends(2), n);
    let l = loss(objective, &paths, &paths.log_r, model.log_z_tensor(), Some(&s), BatchPart::whole(paths.n)).unwrap();
    let store = l.backward().unwrap();
    let fixed = (!objective.reparameterised()).then(|| paths.x.clone());
    let l0 = l.to_vec1::<f64>().unwrap()[0];
    assert!((l0 - loss_value(&model, objective, &target, fixed.as_deref(), n, seed)).abs() < 1e-10 * (1.0 + l0.abs()));
    let mut pick = seeded_rng(3, 3);
    let mut checked = 0;
    let mut nonzero = 0;
    for (name, var) in model.params().iter().chain(model.flow_params().iter()) {
        let g: Vec<f64> = match store.get(var.as_tensor()) {
            Some(g) => g.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            None => vec![0.0; var.as_tensor().elem_count()],
        };
        for _ in 0..3 {
            let j = pick.random_range(0..g.len());
            let v = entry(var, j);
            let h = 1e-5;
            set_entry(var, j, v + h);
            let up = loss_value(&model, objective, &target, fixed.as_deref(), n, seed);
            set_entry(var, j, v - h);
            let down = loss_value(&model, objective, &target, fixed.as_deref(), n, seed);
            set_entry(var, j, v);
            let fd = (up - down) / (2.0 * h);
            let tol = 1e-6 * (1.0 + fd.abs().max(g[j].abs())) + 1e-7;
            assert!(
                (fd - g[j]).abs() < tol,
                "{arch:?} {objective:?} lp {langevin} lv {learned_variance}: {name}[{j}] autodiff {} vs fd {fd}",
                g[j]
            );
            checked += 1;
            nonzero += usize::from(fd.abs() > 1e-6);
        }
    }
    assert!(checked > 20 && nonzero > checked / 3, "{objective:?}: only {nonzero} of {checked} gradients are non-zero");
}

#[test]
fn gradients_match_finite_differences() {
    for arch in [Arch::Pis, Arch::At] {
        for objective in [Objective::Tb, Objective::VarGrad, Objective::Db, Objective::SubTb { lambda: 2.0 }, Objective::Pis] {
            check(arch, objective, false, false);
        }
    }
    for objective in [Objective::Tb, Objective::SubTb { lambda: 0.9 }] {
        check(Arch::Pis, objective, true, false);
        check(Arch::Pis, objective, false, true);
        check(Arch::At, objective, true, true);
    }
    // PIS with learned variance: the path depends on the variance too. (PIS with the Langevin
    // parametrisation treats the score as a constant input, as the reference does, so its
    // gradient is not that of the loss as a function of θ and is not checked here.)
    check(Arch::Pis, Objective::Pis, false, true);
}

/// A batch split into chunks (`train.path_chunks`) has the same loss and gradient as the whole
/// batch: each chunk's loss divides by the whole batch's size, and VarGrad's chunks share the
/// batch's centre.
#[test]
fn chunk_gradients_add_up_to_the_whole_batch() {
    let target = target();
    let (n, d, t1) = (7, 2, 6);
    for objective in [Objective::Tb, Objective::VarGrad, Objective::Db, Objective::SubTb { lambda: 2.0 }, Objective::Pis] {
        let mut init = seeded_rng(5, 0);
        let model = Diffusion::new(spec(Arch::Pis, true, false, objective.needs_flows()), &mut init).unwrap();
        perturb(&model, 9);
        let mut rng = seeded_rng(21, 1);
        let drawn = model.paths(&target, n, Source::Forward { exploration: 0.3 }, Track::None, false, &mut rng).unwrap();
        let evaluate = |x: &[f64], m: usize| {
            let p = model.paths(&target, m, Source::Given(x), Track::Params, objective.needs_flows(), &mut seeded_rng(0, 0)).unwrap();
            let s = score(&target, p.ends(d), m);
            (p, s)
        };
        let (whole, s) = evaluate(&drawn.x, n);
        let g =
            model.gradients(&loss(objective, &whole, &whole.log_r, model.log_z_tensor(), Some(&s), BatchPart::whole(n)).unwrap()).unwrap();
        let q = whole.log_q_host().unwrap();
        let center = q.iter().zip(&whole.log_r).map(|(q, r)| q - r).sum::<f64>() / n as f64;
        let part = BatchPart { batch: n, center: (objective == Objective::VarGrad).then_some(center) };
        let mut sum: Option<fab_diffusion::model::Gradients> = None;
        for (lo, hi) in [(0, 3), (3, 7)] {
            let rows: Vec<f64> = (0..t1).flat_map(|i| drawn.x[(i * n + lo) * d..(i * n + hi) * d].to_vec()).collect();
            let (p, s) = evaluate(&rows, hi - lo);
            let gc = model.gradients(&loss(objective, &p, &p.log_r, model.log_z_tensor(), Some(&s), part).unwrap()).unwrap();
            match sum.as_mut() {
                Some(t) => t.accumulate(&gc).unwrap(),
                None => sum = Some(gc),
            }
        }
        let sum = sum.unwrap();
        assert!((sum.loss - g.loss).abs() < 1e-12 * (1.0 + g.loss.abs()), "{objective:?}: loss {} vs {}", sum.loss, g.loss);
        let flat = |gr: &fab_diffusion::model::Gradients| -> Vec<f64> {
            let all = gr.policy.as_ref().unwrap().0.iter().chain(gr.flow.as_ref().unwrap().0.iter());
            all.flat_map(|t| t.as_ref().map_or_else(Vec::new, |t| t.flatten_all().unwrap().to_vec1::<f64>().unwrap())).collect()
        };
        let (a, b) = (flat(&g), flat(&sum));
        assert_eq!(a.len(), b.len(), "{objective:?}");
        let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "{objective:?}: a zero gradient tests nothing");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-10 * (1.0 + scale), "{objective:?}: {x} vs {y}");
        }
    }
}

/// Re-evaluating sampled paths gives the same per-step terms; the host log P_B equals the
/// tensor one; backward (bridge) paths start at 0 and end at the given points.
#[test]
fn path_terms_are_consistent() {
    let target = target();
    let mut init = seeded_rng(1, 0);
    let model = Diffusion::new(spec(Arch::Pis, true, true, true), &mut init).unwrap();
    perturb(&model, 2);
    let n = 11;
    let mut rng = seeded_rng(4, 0);
    let a = model.paths(&target, n, Source::Forward { exploration: 0.2 }, Track::None, true, &mut rng).unwrap();
    let b = model.paths(&target, n, Source::Given(&a.x), Track::Params, true, &mut rng).unwrap();
    for (x, y) in a.log_q_host().unwrap().iter().zip(b.log_q_host().unwrap()) {
        assert!((x - y).abs() < 1e-10, "{x} vs {y}");
    }
    let pb_host = model.process().log_pb_host(&a.x, n);
    let pb = fab_core::to_f64_vec(&a.sum_log_pb().unwrap()).unwrap();
    for (x, y) in pb_host.iter().zip(&pb) {
        assert!((x - y).abs() < 1e-10);
    }
    let ends = a.ends(2).to_vec();
    let bridge = model.process().bridge_paths(&ends, &mut rng);
    assert!(bridge[..2 * n].iter().all(|&v| v == 0.0));
    assert_eq!(&bridge[bridge.len() - 2 * n..], &ends[..]);
}

/// The Brownian-bridge backward policy is the exact reverse of Brownian motion: paths of the
/// untrained (zero-drift, fixed-variance) policy have Σlog P_F − Σlog P_B equal to the log
/// density of N(0, σ²I) at their end point, path by path.
#[test]
fn untrained_policy_is_brownian_motion() {
    let target = target();
    let mut init = seeded_rng(1, 0);
    let sp = spec(Arch::At, false, false, false);
    let model = Diffusion::new(sp.clone(), &mut init).unwrap();
    let n = 200;
    let mut rng = seeded_rng(8, 0);
    let p = model.paths(&target, n, Source::Forward { exploration: 0.0 }, Track::None, false, &mut rng).unwrap();
    let lq = p.log_q_host().unwrap();
    let s2 = sp.process.t_scale;
    for (k, q) in lq.iter().enumerate() {
        let x = &p.ends(2)[2 * k..2 * k + 2];
        let exact = -0.5 * (x[0] * x[0] + x[1] * x[1]) / s2 - (2.0 * std::f64::consts::PI * s2).ln();
        assert!((q - exact).abs() < 1e-9, "path {k}: {q} vs {exact}");
    }
}

/// DB and SubTB read log F(x_0..x_{T−1}) from the log-flow head: the same values whether paths
/// are walked or re-evaluated; log F(x_0) is the model's learned log Z; the forward-looking part
/// is (1 − t_i)·log N(x_i; 0, σ² max(1,i)Δt·I) + t_i·log R(x_i), computed here independently; and
/// the head's parameters train in the flow group, not with the policy; a network without a
/// head refuses to give log-flows.
#[test]
fn log_flows_come_from_the_head_with_log_z_at_the_start() {
    let target = target();
    for arch in [Arch::Pis, Arch::At] {
        let fl = spec(arch, true, false, true);
        let plain = ModelSpec { forward_looking: false, ..fl.clone() };
        let model = Diffusion::new(fl.clone(), &mut seeded_rng(1, 0)).unwrap();
        let bare = Diffusion::new(plain, &mut seeded_rng(1, 0)).unwrap();
        perturb(&model, 2);
        perturb(&bare, 2);
        assert!(model.flow_params().iter().any(|(name, _)| name.contains(".flow.")), "{arch:?}: head not in the flow group");
        assert!(model.params().iter().all(|(name, _)| !name.contains(".flow.")), "{arch:?}: head in the policy group");
        let headless = Diffusion::new(spec(arch, true, false, false), &mut seeded_rng(1, 0)).unwrap();
        for track in [Track::None, Track::Params] {
            let asked = headless.paths(&target, 3, Source::Forward { exploration: 0.0 }, track, true, &mut seeded_rng(4, 0));
            assert!(asked.is_err(), "{arch:?}: log-flows of a network without a head were not refused");
        }
        let n = 7;
        let a = model.paths(&target, n, Source::Forward { exploration: 0.1 }, Track::None, true, &mut seeded_rng(4, 0)).unwrap();
        let b = model.paths(&target, n, Source::Given(&a.x), Track::Params, true, &mut seeded_rng(5, 0)).unwrap();
        let c = bare.paths(&target, n, Source::Given(&a.x), Track::None, true, &mut seeded_rng(5, 0)).unwrap();
        let rows = |p: &fab_diffusion::model::Paths| p.log_f.as_ref().unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let (fa, fb, fc) = (rows(&a), rows(&b), rows(&c));
        let t_steps = fl.process.n_steps;
        assert_eq!(fa.len(), n * t_steps);
        for (x, y) in fa.iter().zip(&fb) {
            assert!((x - y).abs() < 1e-10, "{arch:?}: walked {x} vs re-evaluated {y}");
        }
        let log_z = model.log_z();
        let dt = 1.0 / t_steps as f64;
        let s2 = fl.process.t_scale;
        for k in 0..n {
            assert!((fa[k * t_steps] - log_z).abs() < 1e-10, "{arch:?}: log F(x_0) {} vs log Z {log_z}", fa[k * t_steps]);
            for i in 0..t_steps {
                let x = &a.x[(i * n + k) * 2..(i * n + k) * 2 + 2];
                let v = s2 * (i.max(1) as f64) * dt;
                let log_n = -0.5 * (x[0] * x[0] + x[1] * x[1]) / v - (2.0 * std::f64::consts::PI * v).ln();
                let xt = Tensor::from_slice(x, (1, 2), &candle_core::Device::Cpu).unwrap();
                let log_r = fab_core::to_f64_vec(&target.log_prob(&xt).unwrap()).unwrap()[0];
                let t = i as f64 * dt;
                let expected = (1.0 - t) * log_n + if i == 0 { 0.0 } else { t * log_r };
                let got = fa[k * t_steps + i] - fc[k * t_steps + i];
                assert!((got - expected).abs() < 1e-9, "{arch:?} step {i}: forward-looking part {got} vs {expected}");
            }
        }
    }
}

/// The hand-written host path (`Track::Tape`, `gradients_of`) computes the same paths, terms,
/// log-flows, losses and gradients as candle's graph (`Track::Params`) for TB, VarGrad, DB and
/// SubTB (the last two through the log-flow head with the forward-looking term), sampled forward
/// with exploration and on given points; and for PIS (`Track::PathTape` against `Track::Path`), whose
/// gradient runs back through the sampled points. Both architectures, with and without the
/// Langevin parametrisation (and a drift clip that binds) and learned variance (f64, so only
/// rounding separates them).
#[test]
fn host_path_matches_candle_path() {
    let target = target();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let close = |a: &[f64], b: &[f64], what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())), "{what}[{i}]: host {y} vs candle {x}");
        }
    };
    let mut compared = 0;
    // (architecture, LP, learned variance, steps, paths): every combination the host path
    // branches on, and the degenerate one step and one path.
    for (arch, langevin, learned_variance, steps, n) in [
        (Arch::Pis, false, false, 5, 9),
        (Arch::Pis, true, false, 5, 9),
        (Arch::Pis, false, true, 5, 9),
        (Arch::At, true, true, 5, 9),
        (Arch::At, false, false, 5, 9),
        (Arch::Pis, true, true, 1, 1),
        (Arch::At, true, false, 2, 1),
    ] {
        for objective in [Objective::Tb, Objective::VarGrad, Objective::Db, Objective::SubTb { lambda: 2.0 }, Objective::Pis] {
            let flows = objective.needs_flows();
            let reparam = objective.reparameterised();
            let mut sp = spec(arch, langevin, learned_variance, flows);
            sp.clip = Some((100.0, 1.5));
            sp.process.n_steps = steps;
            let mut model = Diffusion::new(sp, &mut seeded_rng(5, 0)).unwrap();
            perturb(&model, 9);
            let given = model.paths(&target, n, Source::Forward { exploration: 0.5 }, Track::None, false, &mut seeded_rng(4, 1)).unwrap().x;
            // PIS differentiates through paths it samples (with and without exploration noise).
            let sources = if reparam {
                [Source::Forward { exploration: 0.3 }, Source::Forward { exploration: 0.0 }]
            } else {
                [Source::Forward { exploration: 0.3 }, Source::Given(&given)]
            };
            for source in sources {
                let mut run = |host: bool| {
                    model.set_host_path(host);
                    let track = match (reparam, host) {
                        (true, true) => Track::PathTape,
                        (true, false) => Track::Path,
                        (false, true) => Track::Tape,
                        (false, false) => Track::Params,
                    };
                    let p = model.paths(&target, n, source, track, flows, &mut seeded_rng(8, 1)).unwrap();
                    let s = score(&target, p.ends(2), n);
                    let l = loss(objective, &p, &p.log_r, model.log_z_tensor(), Some(&s), BatchPart::whole(n)).unwrap();
                    let g = model.gradients_of(&l, &p).unwrap();
                    if host {
                        // The tape serves one backward pass (its buffers go back to a pool).
                        assert!(model.gradients_of(&l, &p).unwrap_err().to_string().contains("already differentiated"));
                    }
                    (p, g)
                };
                let (pc, gc) = run(false);
                let (ph, gh) = run(true);
                let what = format!("{arch:?} lp {langevin} lv {learned_variance} {objective:?}");
                close(&pc.x, &ph.x, &format!("{what} x"));
                close(&flat(&pc.log_pf), &flat(&ph.log_pf), &format!("{what} log_pf"));
                close(&flat(&pc.log_pb), &flat(&ph.log_pb), &format!("{what} log_pb"));
                close(&pc.log_r, &ph.log_r, &format!("{what} log_r"));
                assert_eq!(pc.log_f.is_some(), flows, "{what}");
                if let (Some(a), Some(b)) = (&pc.log_f, &ph.log_f) {
                    close(&flat(a), &flat(b), &format!("{what} log_f"));
                }
                close(&[gc.loss], &[gh.loss], &format!("{what} loss"));
                for (group, (a, b)) in
                    [("policy", (gc.policy.unwrap(), gh.policy.unwrap())), ("flow", (gc.flow.unwrap(), gh.flow.unwrap()))]
                {
                    for (i, (x, y)) in a.0.iter().zip(&b.0).enumerate() {
                        let (x, y) = (x.as_ref().map(flat), y.as_ref().map(flat));
                        match (x, y) {
                            (Some(x), Some(y)) => {
                                close(&x, &y, &format!("{what} {group} grad {i}"));
                                compared += usize::from(x.iter().any(|v| v.abs() > 1e-6));
                            }
                            (None, None) => {}
                            (x, y) => panic!("{what} {group} grad {i}: candle {:?}, host {:?}", x.is_some(), y.is_some()),
                        }
                    }
                }
            }
        }
    }
    assert!(compared > 100, "only {compared} non-zero gradients compared");
}
