#!/usr/bin/env python3
"""Where in the rare basin a flow's Ramachandran KL comes from (needs NumPy).

usage:
  fab sample DIR -n 1000000 --cartesian --out X.npy     # the final evaluation's flow samples
  scripts/aldp-alpha-l-profile.py X.npy [Y.npy ...]

Splits the αL/C7ax window of the 64 × 64 Ramachandran histogram (bins whose φ centre lies in
(0, 2.2), any ψ; the window of `ramachandran_kl_flow_alpha_l`) into strips of three φ bins
(0.29 rad) and prints, per strip: the reference's mass (‰ of all), each sample set's unweighted
mass there relative to the reference's, and its KL terms summed over the strip (·10⁴, the same
terms as `ramachandran_kl_flow`, docs/ALGORITHMS.md, "Alanine dipeptide"; their sum over the
window is `ramachandran_kl_flow_alpha_l`), beside what exact draws of 10⁶ from the reference
histogram score there (the floor, about 2.0·10⁻³ over the window): whether a flow's excess is
missing mass, misplaced mass, or the floor. Last, for each set: what exact draws score in the
window when its mass there is scaled to the set's (the metric rewards too much mass in a sparse
basin: ×1.4 scores 0.6·10⁻³ against 2.0·10⁻³ at the right mass), and the rest, the part of the
set's αL KL that is the shape of its samples inside the window.
"""
import sys

import numpy as np

from aldp_dihedrals import ramachandran_counts

ROOT = __file__.rsplit("/scripts/", 1)[0]
B, EPS = 64, 1e-10
ref = np.load(f"{ROOT}/crates/fab-targets/data/aldp/reference/ramachandran_64.npy").astype(float)
cell = (2 * np.pi / B) ** 2
h_ref = ref / ref.sum() / cell
centres = (np.arange(B) + 0.5) * 2 * np.pi / B - np.pi
window = np.where((centres > 0) & (centres < 2.2))[0]
in_window = np.repeat((centres > 0) & (centres < 2.2), B)  # row-major over φ, then ψ
strips = [window[i:i + 3] for i in range(0, len(window), 3)]


def strip_terms(q):
    """KL terms of the histogram shares q (`[B, B]`, summing to 1) summed over each strip."""
    terms = h_ref * np.log((h_ref + EPS) / (q / cell + EPS)) * cell
    return np.array([terms[s].sum() for s in strips])


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: scripts/aldp-alpha-l-profile.py X.npy [Y.npy ...]   (fab sample DIR --cartesian)")
    r = np.array([ref[s].sum() for s in strips]) / ref.sum()
    print("φ strip from     " + " ".join(f"{centres[s[0]] - np.pi / B:7.2f}" for s in strips) + "    window")
    print("reference ‰      " + " ".join(f"{1000 * v:7.3f}" for v in r) + f"    {1000 * r.sum():7.3f}")
    # What exact draws of 10⁶ score per strip (mean of 100 sets): the floor the flows compare to.
    rng = np.random.default_rng(0)
    p = (ref / ref.sum()).ravel()
    floor = np.mean([strip_terms(rng.multinomial(10**6, p).reshape(B, B) / 10**6) for _ in range(100)], axis=0)
    print("exact draws of 10⁶")
    print("  KL terms ·10⁴  " + " ".join(f"{1e4 * v:7.2f}" for v in floor) + f"    {1e4 * floor.sum():7.2f}")
    for path in sys.argv[1:]:
        g, n_configurations = ramachandran_counts(path, B, "aldp-alpha-l-profile")
        q = g / g.sum()
        m = np.array([q[s].sum() for s in strips])
        t = strip_terms(q)
        # Exact draws of as many samples, with the window's mass scaled to this set's: what the
        # αL part would be with this mass and the reference's shape inside the window.
        scaled = p.copy()
        scaled[in_window] *= m.sum() / r.sum()
        scaled /= scaled.sum()
        n = int(g.sum())
        same_mass = np.mean([strip_terms(rng.multinomial(n, scaled).reshape(B, B) / n).sum() for _ in range(100)])
        print(f"{path} ({n_configurations} samples)")
        print("  mass / ref     " + " ".join(f"{a / b:7.2f}" for a, b in zip(m, r)) + f"    {m.sum() / r.sum():7.2f}")
        print("  KL terms ·10⁴  " + " ".join(f"{1e4 * v:7.2f}" for v in t) + f"    {1e4 * t.sum():7.2f}")
        print(f"  exact draws with this window mass: αL part {1e4 * same_mass:.2f}·10⁻⁴, so "
              f"{1e4 * (t.sum() - same_mass):.2f}·10⁻⁴ of this set's is the shape inside the window")


if __name__ == "__main__":
    main()
