"""Backbone dihedrals of alanine dipeptide from Cartesian coordinates, shared by the `aldp-*.py`
scripts (atom order of the force field, the order `fab sample --cartesian` writes)."""
import numpy as np

# Atom indices of the two backbone dihedrals: φ = C–N–Cα–C, ψ = N–Cα–C–N.
PHI_ATOMS = (4, 6, 8, 14)
PSI_ATOMS = (6, 8, 14, 16)


def dihedral(x, a, b, c, d):
    """Dihedral angle (radians, in (−π, π]) of atoms a-b-c-d for every configuration of x [n, atoms, 3]."""
    b0, b1, b2 = x[:, a] - x[:, b], x[:, c] - x[:, b], x[:, d] - x[:, c]
    b1 = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
    v = b0 - (b0 * b1).sum(1, keepdims=True) * b1
    w = b2 - (b2 * b1).sum(1, keepdims=True) * b1
    return np.arctan2((np.cross(b1, v) * w).sum(1), (v * w).sum(1))


def phi_psi(x):
    """(φ, ψ) of every configuration of x [n, 22, 3]."""
    return dihedral(x, *PHI_ATOMS), dihedral(x, *PSI_ATOMS)


def ramachandran_counts(path, bins, script):
    """Counts of (φ, ψ) in a bins × bins histogram on [−π, π]² over the configurations of a
    `fab sample --cartesian` file (read in chunks of 10⁵), and how many configurations it holds.
    A file of another shape ends the calling script with a one-line error naming it."""
    x = np.load(path, mmap_mode="r")
    if x.ndim != 3 or x.shape[1:] != (22, 3):
        raise SystemExit(f"{script}: {path} has shape {x.shape}, not [N, 22, 3] (use fab sample --cartesian)")
    chunks = [phi_psi(np.asarray(x[i:i + 100000])) for i in range(0, len(x), 100000)]
    phi, psi = (np.concatenate(a) for a in zip(*chunks))
    counts, _, _ = np.histogram2d(phi, psi, bins=bins, range=[[-np.pi, np.pi]] * 2)
    return counts, len(x)
