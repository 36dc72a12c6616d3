#!/usr/bin/env python3
"""Where the largest importance weights of an alanine-dipeptide flow lie (needs NumPy).

usage:
  fab sample DIR -n 200000 --out P_z.npy                 # flow coordinates (chirality)
  fab sample DIR -n 200000 --cartesian --out P_x.npy     # the same samples in Cartesian nm
  fab energy --coords P_x.npy > P_e.json                 # log p of each configuration
  scripts/aldp-weight-tail.py P [P …]

`fab sample` without `--seed` continues the run's evaluation stream from the same checkpoint,
so the two calls draw the same samples. The weight of a sample is p/q with both densities taken
per Cartesian volume (`log_prob_unnormalised` from `fab energy`, log q from `P_x_log_q.npy`),
which equals the flow-coordinate weight. Prints the ESS, the largest weights with their basin
(docs/ALGORITHMS.md, "Evaluation metrics": αL if 0 < φ < 2.2, else αR if −2.2 ≤ ψ < 0.5, else
β), chirality, (φ, ψ) and energy, each basin's share of the samples, of the top 10⁻³ weights and
of the total weight, the ESS of the samples outside αL (a diagnostic, not an estimator), and,
inside αL, per φ strip of 0.29 rad, the flow's samples and re-weighted mass relative to the
shipped reference histogram and the strip's share of αL's largest 1 % of weights, then the
basin's edge toward φ = 0 split by ψ. Several prefixes (draws of one checkpoint with different `--seed`) are
pooled into one sample set.
"""
import json
import sys

import numpy as np

from aldp_dihedrals import phi_psi

ROOT = __file__.rsplit("/scripts/", 1)[0]


def ess(log_w):
    log_w = log_w[np.isfinite(log_w)]
    w = np.exp(log_w - log_w.max())
    return w.sum() ** 2 / (len(log_w) * (w * w).sum())


def load(prefix):
    """log p, energy, log q (Cartesian), Cartesian and flow coordinates of one draw."""
    confs = json.load(open(f"{prefix}_e.json"))["configurations"]
    log_p = np.array([c["log_prob_unnormalised"] if c["finite"] else -np.inf for c in confs])
    energy = np.array([c["energy_kj_per_mol"]["total"] if c["finite"] else np.nan for c in confs])
    return log_p, energy, np.load(f"{prefix}_x_log_q.npy"), np.load(f"{prefix}_x.npy").reshape(-1, 22, 3), np.load(f"{prefix}_z.npy")


def main(prefixes):
    log_p, energy, log_q, x, z = (np.concatenate(a) for a in zip(*(load(p) for p in prefixes)))
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
    # Inside αL, by φ strips of three 64-bin histogram bins (0.29 rad, as in
    # aldp-alpha-l-profile.py), against the reference histogram: the flow's samples and its
    # re-weighted mass relative to the reference's, and where αL's largest weights are. A strip
    # the flow under-fills but covers re-weights to about 1 with heavy weights; one it does not
    # cover (its samples sit elsewhere in the other coordinates) re-weights below 1.
    ref = np.load(f"{ROOT}/crates/fab-targets/data/aldp/reference/ramachandran_64.npy").astype(float)
    ref /= ref.sum()
    width = 3 * 2 * np.pi / 64
    in_l = (phi >= 0) & (phi < 8 * width)
    strip = np.where(in_l, np.floor(phi / width).astype(int), -1)
    top_l = np.flatnonzero(in_l)[np.argsort(-w[in_l])[: max(1, in_l.sum() // 100)]]
    print("φ from  reference ‰  samples/ref  re-weighted/ref  of αL's top 1 % weights  samples")
    for k in range(8):
        r = ref[32 + 3 * k:35 + 3 * k].sum()
        at = strip == k
        print(f"{k * width:5.2f}  {1000 * r:10.3f}  {at.mean() / r:11.2f}  {w[at].sum() / r:15.2f}  {np.mean(at[top_l]):23.3f}  {at.sum():7d}")
    # The edge toward φ = 0 (φ < 0.59) by ψ, in eight groups of 0.79 rad.
    edge = in_l & (strip < 2)
    group = np.clip(np.floor((psi + np.pi) / (np.pi / 4)).astype(int), 0, 7)
    r = ref[32:38].reshape(6, 8, 8).sum(axis=(0, 2))
    print("φ < 0.59, ψ from " + " ".join(f"{-np.pi + g * np.pi / 4:6.2f}" for g in range(8)))
    print("reference ‱      " + " ".join(f"{1e4 * v:6.3f}" for v in r))
    print("samples/ref      " + " ".join(f"{np.mean(edge & (group == g)) / v:6.2f}" for g, v in enumerate(r)))
    print("re-weighted/ref  " + " ".join(f"{w[edge & (group == g)].sum() / v:6.2f}" for g, v in enumerate(r)))
    print("samples          " + " ".join(f"{np.sum(edge & (group == g)):6d}" for g in range(8)))

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
