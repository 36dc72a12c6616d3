#!/usr/bin/env python3
"""Times one training iteration of the reference diffusion sampler (GFNOrg/gfn-diffusion,
`energy_sampling/`), importing its modules from the checkout given on the command line.

One iteration is the body of the reference's `train_step` for forward trajectory balance:
zero the gradients, draw B trajectories of T steps with the policy (graph kept), the TB loss,
backward, one Adam step. The model, optimiser and target are built with the reference's own
classes and the settings of its Many Well runs: PIS architecture (`--pis_architectures`, hence
zero-initialised output), hidden / state / time embedding 64, 64 harmonics, T = 100,
t_scale 1, Langevin parametrisation with clipping, fixed variance, lr 1e-3 (policy) and 1e-1
(log Z). Nothing of the reference is copied here; its code is imported at run time.

Prints `ms_per_iteration <median>` and, on further lines, the mean and the loss at the end.
"""
import argparse
import os
import statistics
import sys
import time
import types


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkout", help="checkout of GFNOrg/gfn-diffusion (the directory containing energy_sampling/)")
    ap.add_argument("--energy", default="many_well", choices=("many_well", "25gmm"))
    ap.add_argument("--batch-size", type=int, default=300)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--no-langevin", action="store_true", help="drop the Langevin parametrisation")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    root = os.path.join(os.path.abspath(args.checkout), "energy_sampling")
    if not os.path.isfile(os.path.join(root, "models", "gfn.py")):
        sys.exit(f"error: {root}/models/gfn.py not found: pass the gfn-diffusion checkout")
    sys.path.insert(0, root)
    try:
        import wandb  # noqa: F401  (the reference imports it for logging only)
    except ImportError:
        sys.modules["wandb"] = types.ModuleType("wandb")

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from energies import ManyWell, TwentyFiveGaussianMixture
    from models import GFN
    from utils import cal_subtb_coef_matrix, get_gfn_forward_loss, get_gfn_optimizer

    device = torch.device("cpu")
    energy = ManyWell(device=device) if args.energy == "many_well" else TwentyFiveGaussianMixture(device=device)
    t_scale = 1.0 if args.energy == "many_well" else 5.0
    h = args.hidden
    model = GFN(
        energy.data_ndim, h, h, h, h,
        trajectory_length=args.T, clipping=True, lgv_clip=1e2, gfn_clip=1e4,
        langevin=not args.no_langevin, learned_variance=False, partial_energy=False,
        log_var_range=4.0, pb_scale_range=0.1, t_scale=t_scale,
        langevin_scaling_per_dimension=False, conditional_flow_model=False, learn_pb=False,
        pis_architectures=True, lgv_layers=3, joint_layers=2, zero_init=True, device=device,
    ).to(device)
    opt = get_gfn_optimizer(model, 1e-3, 1e-1, 1e-3, False, False, False, 1e-7)
    coeff = cal_subtb_coef_matrix(2, args.T).to(device)
    model.train()

    times = []
    loss_value = float("nan")
    for i in range(args.warmup + args.iterations):
        t0 = time.perf_counter()
        model.zero_grad()
        init = torch.zeros(args.batch_size, energy.data_ndim, device=device)
        loss = get_gfn_forward_loss("tb", init, model, energy.log_reward, coeff, exploration_std=None)
        loss.backward()
        opt.step()
        loss_value = loss.item()
        t1 = time.perf_counter()
        if i >= args.warmup:
            times.append((t1 - t0) * 1e3)
    print(f"ms_per_iteration {statistics.median(times):.3f}")
    print(f"mean_ms {statistics.fmean(times):.3f}")
    print(f"final_loss {loss_value:.4f}")
    print(f"torch {torch.__version__} threads {torch.get_num_threads()} dtype {torch.get_default_dtype()}")


if __name__ == "__main__":
    main()
