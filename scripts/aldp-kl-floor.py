#!/usr/bin/env python3
"""Monte-Carlo checks of the Ramachandran KL floor against the shipped reference (needs NumPy).

usage:
  scripts/aldp-kl-floor.py                 # exact draws: mean KL and αL part; αL mass scaled
  fab sample DIR -n 1000000 --cartesian --seed 7 --out P_x.npy
  scripts/aldp-kl-floor.py P_x.npy         # also: that sample's KL split and empty αL bins
  scripts/aldp-kl-floor.py --run DIR P7_x.npy P8_x.npy P9_x.npy
                                           # several sets: each, then mean ± sd over them and
                                           # (with --run) the run's own ramachandran_kl_flow;
                                           # the same KL: `fab sample DIR` without --seed draws
                                           # the final evaluation's set, scored here as the run
                                           # scored it (models/aldp-cpu: 0.00476 both)
  (scripts/aldp-kl-spread.sh DIR draws the sets and calls this.)

Draws 10⁶ samples from the reference's 64 × 64 histogram (200 times) and scores them with the
KL of docs/ALGORITHMS.md, "Alanine dipeptide" (ε = 10⁻¹⁰); the mean is what
`ramachandran_kl_flow_floor` computes exactly, the standard deviation how much one set of 10⁶
samples scatters. Then the same for histograms whose αL/C7ax mass
(bins with φ centre in (0, 2.2)) is scaled by 0.5, 0.75, 0.9, 1.2, 1.4 and 2 and renormalised
(too much mass there scores below the floor: the metric rewards over-filling a sparse basin), and, given a
Cartesian sample file, that sample's whole KL, its αL part and the number of αL bins with
reference mass that it leaves empty, against the expected number for exact draws.
"""
import json
import sys

import numpy as np

from aldp_dihedrals import ramachandran_counts

ROOT = __file__.rsplit("/scripts/", 1)[0]
B, EPS, N = 64, 1e-10, 10**6
ref = np.load(f"{ROOT}/crates/fab-targets/data/aldp/reference/ramachandran_64.npy").ravel()
cell = (2 * np.pi / B) ** 2
p = ref / ref.sum()
h_ref = p / cell
centres = (np.arange(B) + 0.5) * 2 * np.pi / B - np.pi
alpha_l = np.repeat((centres > 0) & (centres < 2.2), B)  # row-major over φ, then ψ


def kl_split(counts):
    terms = h_ref * np.log((h_ref + EPS) / (counts / counts.sum() / cell + EPS)) * cell
    return terms.sum(), terms[alpha_l].sum()


def draws(q, reps, rng):
    """Mean, its standard error, and the standard deviation of one set's KL (whole, αL part)."""
    kls = np.array([kl_split(rng.multinomial(N, q).astype(float)) for _ in range(reps)])
    return kls.mean(0), kls.std(0) / np.sqrt(reps), kls.std(0)


def main():
    args = sys.argv[1:]
    run = None
    if args[:1] == ["--run"]:
        if len(args) < 2:
            sys.exit("aldp-kl-floor: --run needs a run or model directory")
        run, args = args[1], args[2:]
    rng = np.random.default_rng(0)
    (tot, al), (se_t, se_a), (sd_t, sd_a) = draws(p, 200, rng)
    print(f"exact draws of {N}: KL {tot:.5f} ± {se_t:.5f}, αL part {al:.5f} ± {se_a:.5f} "
          f"(mean ± standard error; one set's standard deviation {sd_t:.5f} and {sd_a:.5f})")
    # Scaled down, then (appended, so the first three keep their numbers) up: the KL of 10⁶
    # unweighted samples falls below the floor when αL holds too much mass.
    for f in (0.5, 0.75, 0.9, 1.2, 1.4, 2.0):
        q = p.copy()
        q[alpha_l] *= f
        (tot, al), _, _ = draws(q / q.sum(), 10, rng)
        print(f"αL mass × {f}: KL {tot:.5f}, αL part {al:.5f}")
    m = alpha_l & (p > 0)
    print(f"αL bins with reference mass: {m.sum()}, expected empty for {N} exact draws: {((1 - p[m]) ** N).sum():.0f}")
    kls = []
    if run is not None:
        with open(f"{run}/final_metrics.json") as f:
            kl = json.load(f)["ramachandran_kl_flow"]
        print(f"{run}: ramachandran_kl_flow {kl:.5f} (its final evaluation's set)")
        kls.append(kl)
    for path in args:
        g, n = ramachandran_counts(path, B, "aldp-kl-floor")
        tot, al = kl_split(g.ravel())
        print(f"{path} ({n} samples): KL {tot:.5f}, αL part {al:.5f}, empty αL bins with reference mass: {(m & (g.ravel() == 0)).sum()}")
        kls.append(tot)
    if len(kls) > 1:
        k = np.array(kls)
        print(f"KL over {len(k)} sets: {k.mean():.5f} ± {k.std(ddof=1):.5f} (mean ± standard deviation)")


if __name__ == "__main__":
    main()
