#!/usr/bin/env python3
"""Where the largest importance weights of an alanine-dipeptide flow lie (needs NumPy).

usage:
  fab sample DIR -n 200000 --out P_z.npy                 # flow coordinates (chirality)
  fab sample DIR -n 200000 --cartesian --out P_x.npy     # the same samples in Cartesian nm
  fab energy --coords P_x.npy > P_e.json                 # log p of each configuration
  scripts/aldp-weight-tail.py P

`fab sample` without `--seed` continues the run's evaluation stream from the same checkpoint,
so the two calls draw the same samples. The weight of a sample is p/q with both densities taken
per Cartesian volume (`log_prob_unnormalised` from `fab energy`, log q from `P_x_log_q.npy`),
which equals the flow-coordinate weight. Prints the ESS, the largest weights with their basin
(docs/ALGORITHMS.md, "Evaluation metrics": αL if 0 < φ < 2.2, else αR if −2.2 ≤ ψ < 0.5, else
β), chirality, (φ, ψ) and energy, each basin's share of the samples, of the top 10⁻³ weights and
of the total weight, and — as a diagnostic, not an estimator — the ESS of the samples outside αL.
"""
import json
import sys

import numpy as np

from aldp_dihedrals import phi_psi


def ess(log_w):
    log_w = log_w[np.isfinite(log_w)]
    w = np.exp(log_w - log_w.max())
    return w.sum() ** 2 / (len(log_w) * (w * w).sum())


def main(prefix):
    confs = json.load(open(f"{prefix}_e.json"))["configurations"]
    log_p = np.array([c["log_prob_unnormalised"] if c["finite"] else -np.inf for c in confs])
    energy = np.array([c["energy_kj_per_mol"]["total"] if c["finite"] else np.nan for c in confs])
    log_q = np.load(f"{prefix}_x_log_q.npy")
    x = np.load(f"{prefix}_x.npy").reshape(-1, 22, 3)
    z = np.load(f"{prefix}_z.npy")
    log_w = log_p - log_q
    # The force field's φ and ψ (atoms 4-6-8-14 and 6-8-14-16) and the chirality filter of
    # flow dimensions 17 and 26 (docs/ALGORITHMS.md).
    phi, psi = phi_psi(x)
    d = (z[:, 17] - z[:, 26] + np.pi) % (2 * np.pi) - np.pi
    l_form = np.abs(d + 0.043) < 0.8
    basin = np.where((phi > 0) & (phi < 2.2), "αL", np.where((psi >= -2.2) & (psi < 0.5), "αR", "β"))
    finite = np.isfinite(log_w)
    w = np.where(finite, np.exp(np.where(finite, log_w, 0.0) - log_w[finite].max()), 0.0)
    w /= w.sum()
    order = np.argsort(-w)
    print(f"{len(w)} samples, {finite.mean():.4%} finite, ESS {ess(log_w):.4f}")
    print("rank  weight   basin  L-form   φ      ψ     E kJ/mol  log q")
    for r, i in enumerate(order[:15]):
        print(f"{r:4d}  {w[i]:.5f}  {basin[i]:5s}  {str(l_form[i]):6s} {phi[i]:6.2f} {psi[i]:6.2f} {energy[i]:8.1f} {log_q[i]:7.2f}")
    top = order[: max(1, len(w) // 1000)]
    for b in ["β", "αR", "αL"]:
        print(f"{b:3s} samples {np.mean(basin == b):.5f}  top 1e-3 {np.mean(basin[top] == b):.3f}  weight {w[basin == b].sum():.5f}")
    print(f"ESS of the samples outside αL {ess(np.where(basin == 'αL', -np.inf, log_w)):.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
