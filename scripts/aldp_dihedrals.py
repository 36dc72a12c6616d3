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
