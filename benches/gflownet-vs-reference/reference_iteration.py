#!/usr/bin/env python3
"""Time one training iteration of the reference grid GFlowNet (adaptive-teacher, `grid/`).

Usage:
    reference_iteration.py CHECKOUT --agent tb|teacher --ndim D --horizon H \
        --iterations N --warmup W [--seed S] [--batch-size B] [--trace CSV]

CHECKOUT is a checkout of the reference repository (the directory that contains `grid/`).
Nothing from it is copied here: its modules are imported at run time from that path.

How it is timed: the reference's own `Trainer` (grid/trainer.py) is built with the same objects
and default hyper-parameters as its command line (`python trainer.py --agent A --ndim D
--horizon H`), and its own `Trainer.train()` loop is run for W + N + 1 iterations. The loop's
progress-bar wrapper (`tqdm` in grid/trainer.py) is replaced by an iterator that records a
timestamp each time the loop asks for its next index, so iteration i costs t[i+1] - t[i]: all of
the loop body (sampling the batch, losses, backward passes, clipping, optimiser steps, and for
`teacher` both networks' updates and the teacher rewards), nothing else. The reference evaluates
and logs at iteration 0 and at its last iteration; with W >= 1 both fall outside the N timed
iterations (iterations W .. W+N-1). Its evaluation sample size is cut to one batch so that those
untimed evaluations are quick, and its final checkpoint is written to a temporary directory that is
deleted afterwards.

Output: a line `ms_per_iteration <median>` (median over the N timed iterations), then the mean,
the settings and the trajectory statistics of the timed iterations.
"""

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
import types


class _TimedRange:
    """Stands in for `tqdm(range(n), ...)`: yields the same indices and records when each is asked for."""

    def __init__(self, iterable):
        self.iterable = iterable
        self.stamps = []

    def __iter__(self):
        for i in self.iterable:
            self.stamps.append(time.perf_counter())
            yield i
        self.stamps.append(time.perf_counter())


class _NullBar:
    def __init__(self, *args, **kwargs):
        pass

    def update(self, *args, **kwargs):
        pass

    def close(self):
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkout", help="reference checkout (the directory containing grid/)")
    p.add_argument("--agent", choices=["tb", "teacher"], required=True)
    p.add_argument("--ndim", type=int, default=2)
    p.add_argument("--horizon", type=int, default=64)
    p.add_argument("--iterations", type=int, default=200, help="timed iterations N")
    p.add_argument("--warmup", type=int, default=50, help="untimed iterations W before them (>= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--verbose", action="store_true", help="let the reference print its own log lines")
    p.add_argument("--trace", metavar="CSV", help="write every iteration (warm-up and timed) to this CSV file")
    args = p.parse_args()
    if args.warmup < 1:
        p.error("--warmup must be >= 1 (iteration 0 runs the reference's evaluation)")
    if args.iterations < 1:
        p.error("--iterations must be >= 1")

    checkout = os.path.abspath(args.checkout)
    if not os.path.isfile(os.path.join(checkout, "grid", "trainer.py")):
        sys.exit(f"error: {checkout}/grid/trainer.py not found; pass the reference checkout (the directory containing grid/)")

    # grid/utils.py imports wandb for its optional plots/logging, unused here; stub it only if it is absent.
    try:
        import wandb  # noqa: F401
        wandb_note = "installed"
    except ImportError:
        sys.modules["wandb"] = types.ModuleType("wandb")
        wandb_note = "stubbed (not installed; only used for the reference's optional logging)"

    import torch

    sys.path.insert(0, checkout)  # the reference imports itself as the package `grid`
    import grid.trainer as ref_trainer  # sets torch.set_num_threads(1) itself
    import grid.utils as ref_utils
    from grid.env import DeceptiveGridWorld
    from grid.models import TBAgent, TeacherStudentTBAgent

    torch.set_num_threads(1)

    # Same construction and defaults as the reference's command line (trainer.py __main__):
    # lr 1e-3, logZ lr 1e-1, clip 1.0, eps 0, logit_temp 1, learn_pb off, n_hidden 256, n_layers 2,
    # beta 1, teacher: log=True, C=19, alpha=0, beta_teacher 1; no buffer, no local search, ts_ratio 1.
    ref_utils.seed_everything(args.seed)
    env_params = {"horizon": args.horizon, "ndim": args.ndim, "beta": 1.0}
    env = DeceptiveGridWorld(**env_params)
    eval_batch_size = 1000
    common = {
        "horizon": args.horizon,
        "ndim": args.ndim,
        "eps": 0.0,
        "logit_temp": 1.0,
        "device": torch.device("cpu"),
        "n_hidden": 256,
        "n_layers": 2,
    }
    if args.agent == "tb":
        agent_cls, agent_kw = TBAgent, {"learn_pb": False}
    else:
        agent_cls, agent_kw = TeacherStudentTBAgent, {"learn_pb": False, "beta_teacher": 1.0}
    agent = agent_cls(
        envs=[DeceptiveGridWorld(**env_params) for _ in range(max(args.batch_size, eval_batch_size))],
        **common,
        **agent_kw,
    )

    n_steps = args.warmup + args.iterations + 1  # +1: the reference evaluates inside its last iteration
    trainer = ref_trainer.Trainer(
        env,
        agent,
        lr_dict={"model": 1e-3, "tb_z": 1e-1, "rnd": 1e-3},
        clip_grad_norm=1.0,
        n_train_steps=n_steps,
        batch_size=args.batch_size,
        ts_ratio=1,
        use_buffer=False,
        buffer_params={},
        ls=False,
        log=True,
        C=19.0,
        alpha=0.0,
        no_tqdm=True,
        num_empirical_loss=args.batch_size,
        n_logs=1,  # evaluation only at iteration 0 and at the last iteration
        logging_fn=None,
        run_name="timing",
        eval_num_empirical_loss=args.batch_size,
        eval_batch_size=eval_batch_size,
        plot=False,
    )

    # Record the trajectories of the training batches (not the evaluation's): number of actions per
    # trajectory, which policy sampled them, and how long sampling took. Costs a few microseconds
    # per iteration.
    sampled = []
    orig_sample_many = agent.sample_many

    def recording_sample_many(batch_size, *a, **kw):
        t0 = time.perf_counter()
        out = orig_sample_many(batch_size, *a, **kw)
        t1 = time.perf_counter()
        if not kw.get("eval", False):
            lengths = [int(t[2].shape[0]) for t in out[0]]
            sampled.append(("teacher" if kw.get("is_teacher", False) else "student", lengths, (t1 - t0) * 1e3))
        return out

    agent.sample_many = recording_sample_many

    timed = {}

    def fake_tqdm(iterable=None, *a, **kw):
        if iterable is None:  # the evaluation's progress bar
            return _NullBar()
        timed["range"] = _TimedRange(iterable)
        return timed["range"]

    ref_trainer.tqdm = fake_tqdm
    ref_utils.tqdm = lambda iterable=None, *a, **kw: iterable

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="ref-grid-timing-") as tmp:
        os.chdir(tmp)  # the reference saves pretrained/model_*.pt into the working directory
        try:
            sink = contextlib.nullcontext() if args.verbose else contextlib.redirect_stdout(io.StringIO())
            with sink:
                trainer.train()
        finally:
            os.chdir(cwd)

    stamps = timed["range"].stamps
    assert len(stamps) == n_steps + 1, (len(stamps), n_steps)
    per_iter_ms = [(stamps[i + 1] - stamps[i]) * 1e3 for i in range(n_steps)]
    window = range(args.warmup, args.warmup + args.iterations)
    times = [per_iter_ms[i] for i in window]
    med = statistics.median(times)
    mean = statistics.fmean(times)

    # sampled[k] is the training batch of iteration k (one sample_many per iteration here).
    assert len(sampled) == n_steps, (len(sampled), n_steps)
    if args.trace:
        with open(args.trace, "w") as f:
            f.write("iteration,timed,sampled_by,ms,sampling_ms,mean_actions,max_actions\n")
            for i in range(n_steps):
                who, ls, sms = sampled[i]
                f.write(f"{i},{int(i in window)},{who},{per_iter_ms[i]:.4f},{sms:.4f},{statistics.fmean(ls):.3f},{max(ls)}\n")
    lens = [l for i in window for l in sampled[i][1]]
    steps_per_batch = [max(sampled[i][1]) for i in window]
    print(f"ms_per_iteration {med:.4f} (median of {args.iterations} timed iterations after {args.warmup} warm-up)")
    print(f"mean_ms {mean:.4f}  min_ms {min(times):.4f}  max_ms {max(times):.4f}")
    sampling = [sampled[i][2] for i in window]
    rest = [per_iter_ms[i] - sampled[i][2] for i in window]
    print(
        f"  of which sampling the batch (agent.sample_many): median {statistics.median(sampling):.4f} ms; "
        f"the rest (losses, backward, clipping, optimiser steps): median {statistics.median(rest):.4f} ms"
    )
    if args.agent == "teacher":
        for who in ("student", "teacher"):
            t = [per_iter_ms[i] for i in window if sampled[i][0] == who]
            if t:
                print(f"  batch sampled by {who}: {len(t)} iterations, median {statistics.median(t):.4f} ms")
    print(
        f"settings agent={args.agent} ndim={args.ndim} horizon={args.horizon} batch={args.batch_size} "
        f"mlp=256x2 learn_pb=False eps=0 seed={args.seed} torch={torch.__version__} "
        f"threads={torch.get_num_threads()} wandb={wandb_note}"
    )
    print(
        f"trajectories (timed window): actions per trajectory mean {statistics.fmean(lens):.2f}, "
        f"max {max(lens)}; sampling forward passes per iteration (= longest in batch) mean "
        f"{statistics.fmean(steps_per_batch):.2f}, max {max(steps_per_batch)}"
    )


if __name__ == "__main__":
    main()
