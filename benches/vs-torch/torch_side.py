#!/usr/bin/env python3
"""The PyTorch side of benches/vs-torch/run.sh: times one row of the side-by-side table with
the reference implementation (lollcat/fab-torch), imported at run time from its checkout.

usage: torch_side.py FABTORCH_CHECKOUT ROW [--warmup W] [--reps R]

The models are built by the reference's own experiment code: its hydra configs
(experiments/config/gmm.yaml, many_well.yaml) are loaded with OmegaConf, switched to the
prioritised-buffer FAB setting of the paper and to the CPU, and passed to its
`experiments.setup_run.setup_model` / `setup_buffer` (RealNVP flow via
`make_wrapped_normflow_realnvp`, `AnnealedImportanceSampler`, `HamiltonianMonteCarlo` or
`Metropolis`), the training iteration is its `PrioritisedBufferTrainer.run`. Rows, outputs and
perturbation are those of crates/fab-train/examples/vs_torch.rs:

  row ROW wall_ms <median> cpu_ms <median> n R
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
import types

# The trainer wraps its loop in tqdm; one-iteration calls would each print a bar.
os.environ.setdefault("TQDM_DISABLE", "1")

ROWS = ["gmm_backward", "gmm_iteration", "mw_backward", "mw_sample", "mw_grad_x", "mw_ais",
        "mw_iteration"]
# Same value as MW_ITER_MIN_LEN in vs_torch.rs: B*L, the least one iteration's draw needs
# (the paper's 65536 only delays the first iteration by 24 more AIS passes).
MW_ITER_MIN_LEN = 16384


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkout")
    ap.add_argument("row", choices=ROWS)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    return ap.parse_args()


def import_reference(checkout):
    sys.path.insert(0, os.path.abspath(checkout))
    try:
        import larsflow  # noqa: F401
    except ImportError:
        # Only the resampled-base flow needs larsflow (a git-only package); the experiment
        # module imports it at the top. The RealNVP flows benchmarked here never touch it.
        sys.modules["larsflow"] = types.ModuleType("larsflow")
    import fab  # noqa: F401
    from experiments import setup_run
    return setup_run


def time_it(row, warmup, reps, f, setup=None):
    """`warmup` untimed calls, then `reps` timed ones; `setup` runs untimed before each call."""
    for _ in range(warmup):
        if setup:
            setup()
        f()
    wall, cpu = [], []
    for _ in range(reps):
        if setup:
            setup()
        c0 = time.process_time()
        t0 = time.perf_counter()
        f()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    print(f"# {row} wall_ms_all {[round(v, 3) for v in wall]}")
    print(f"row {row} wall_ms {statistics.median(wall):.4f} cpu_ms {statistics.median(cpu):.4f} "
          f"n {reps}", flush=True)


def load_cfg(checkout, name, overrides):
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(os.path.join(checkout, "experiments", "config", name))
    # The paper's FAB setting: alpha-2 loss with the prioritised replay buffer, float64, CPU.
    base = ["training.use_gpu=false", "training.use_64_bit=true",
            "training.use_buffer=true", "training.prioritised_buffer=true"]
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(base + overrides))


def make(checkout, problem, overrides=()):
    import torch
    setup_run = import_reference(checkout)
    if problem == "gmm":
        from fab.target_distributions.gmm import GMM
        cfg = load_cfg(checkout, "gmm.yaml", list(overrides))
        torch.manual_seed(0)  # the GMM problem's seed in the reference
        # The Monte-Carlo estimate of the true expectation (evaluation only) is cut from 1e7
        # samples (~3 GB) to 1e4; it plays no part in any timed operation.
        target = GMM(dim=cfg.target.dim, n_mixes=cfg.target.n_mixes,
                     loc_scaling=cfg.target.loc_scaling, log_var_scaling=cfg.target.log_var_scaling,
                     use_gpu=False, true_expectation_estimation_n_samples=10_000)
        torch.manual_seed(cfg.training.seed)
        torch.set_default_dtype(torch.float64)
        target = target.double()
    else:
        from fab.target_distributions.many_well import ManyWellEnergy
        cfg = load_cfg(checkout, "many_well.yaml", list(overrides))
        torch.set_default_dtype(torch.float64)
        torch.manual_seed(cfg.training.seed)
        target = ManyWellEnergy(cfg.target.dim, a=-0.5, b=-6, use_gpu=False)
    model = setup_run.setup_model(cfg, target)
    return setup_run, cfg, target, model


def perturb(flow):
    """Every parameter + 0.01 N(0, 1), as vs_torch.rs does (no coupling stays the identity)."""
    import torch
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def describe(flow, b):
    import torch
    n = sum(p.numel() for p in flow.parameters())
    dim = flow.event_shape[0]
    print(f"# flow dim {dim}, {n} parameters, dtype {torch.get_default_dtype()}, batch {b}")


def main():
    a = parse()
    import torch
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    row, reps = a.row, max(a.reps, 1)

    if row in ("gmm_backward", "mw_backward", "mw_sample", "mw_grad_x"):
        _, cfg, _, model = make(a.checkout, "gmm" if row == "gmm_backward" else "mw")
        flow = model.flow
        perturb(flow)
        b = cfg.training.batch_size
        describe(flow, b)
        x = torch.randn(b, cfg.target.dim, generator=torch.Generator().manual_seed(2))
        if row == "mw_sample":
            def f():
                with torch.no_grad():
                    flow.sample_and_log_prob((b,))
            time_it(row, a.warmup, reps, f)
        elif row == "mw_grad_x":
            # The reference's own helper, as its HMC calls it for every leapfrog step.
            from fab.sampling_methods.base import grad_and_value
            time_it(row, a.warmup, reps, lambda: grad_and_value(x, flow.log_prob))
        else:
            def f():
                loss = -torch.mean(flow.log_prob(x))
                loss.backward()

            def setup():
                for p in flow.parameters():
                    p.grad = None
            time_it(row, a.warmup, reps, f, setup)

    elif row == "mw_ais":
        _, cfg, _, model = make(a.checkout, "mw")
        perturb(model.flow)
        describe(model.flow, cfg.training.batch_size)
        ais = model.annealed_importance_sampler
        op = ais.transition_operator
        print(f"# AIS: {ais.n_intermediate_distributions} intermediate, {type(op).__name__} "
              f"L={getattr(op, 'L', None)}, p_target={ais.p_target}/{op.p_target}, "
              f"alpha={ais.alpha}, batch {cfg.training.batch_size}")
        time_it(row, a.warmup, reps,
                lambda: ais.sample_and_log_weights(cfg.training.batch_size))

    else:  # gmm_iteration, mw_iteration
        if row == "gmm_iteration":
            setup_run, cfg, _, model = make(a.checkout, "gmm")
        else:
            setup_run, cfg, _, model = make(
                a.checkout, "mw", [f"training.min_buffer_length={MW_ITER_MIN_LEN}"])
        from fab import PrioritisedBufferTrainer
        from fab.utils.logging import ListLogger
        print(f"# batch {cfg.training.batch_size}, L {cfg.training.n_batches_buffer_sampling}, "
              f"buffer min {cfg.training.min_buffer_length} max {cfg.training.maximum_buffer_length}")
        optimizer = torch.optim.Adam(model.flow.parameters(), lr=cfg.training.lr)
        t0 = time.perf_counter()
        buffer = setup_run.setup_buffer(cfg, model, auto_fill_buffer=True)
        print(f"# buffer filled in {time.perf_counter() - t0:.1f} s (untimed)")
        trainer = PrioritisedBufferTrainer(
            model=model, optimizer=optimizer, buffer=buffer, alpha=cfg.fab.alpha,
            n_batches_buffer_sampling=cfg.training.n_batches_buffer_sampling,
            logger=ListLogger(save=False), plot=None,
            max_gradient_norm=cfg.training.max_grad_norm,
            w_adjust_max_clip=cfg.training.w_adjust_max_clip,
            save_path=os.path.join(tempfile.gettempdir(), "vs-torch-unused"))  # save=False: nothing written
        b = cfg.training.batch_size
        # One call of the reference's training loop = one iteration (AIS into the buffer,
        # then n_batches_buffer_sampling gradient steps on buffer batches).
        time_it(row, a.warmup, reps,
                lambda: trainer.run(n_iterations=1, batch_size=b, save=False))


if __name__ == "__main__":
    main()
