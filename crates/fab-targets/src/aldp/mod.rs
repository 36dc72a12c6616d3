//! Alanine dipeptide (ACE-ALA-NME, 22 atoms) in implicit solvent at 300 K, the headline
//! benchmark of FAB (Midgley et al. 2023), computed natively in float64 Rust.
//!
//! * [`AldpForceField`]: the AMBER ff96 + GB-OBC1 force field exactly as OpenMM builds it for the
//!   openmmtools `AlanineDipeptideImplicit` test system (bonds, angles, torsions, Coulomb + LJ
//!   without cut-off with exclusions and scaled 1-4 pairs, GB-OBC1 with the ACE surface term),
//!   energies per term and analytic forces, batched with rayon.
//! * [`InternalCoordinates`]: the 66 ↔ 60-D internal-coordinate transform of fab-torch/boltzgen
//!   (docs/ALGORITHMS.md, "Targets"), both directions with log-determinants and an exact
//!   reverse-mode gradient; it implements [`fab_core::Flow`].
//! * [`AldpTarget`]: the 60-D flow-space target log p(z) = −u_reg(x(z)) + log|det ∂x/∂z| used by
//!   FAB, and [`AldpCartesian`], the 66-D Cartesian Boltzmann density; both implement
//!   [`fab_core::LogDensity`] with analytic gradients.
//! * [`is_l_form`]/[`l_form_mask`] (chirality filter), [`phi_psi`] (Ramachandran angles),
//!   [`read_coordinates`], [`write_pdb`], [`write_xyz`], [`EnergyReport`] and
//!   [`AldpForceField::minimize`] (L-BFGS) for the command line.
//!
//! Units: nm, kJ/mol, kJ/mol/nm, radians. k_BT = 8.314e-3 × 300 = 2.4942 kJ/mol (boltzgen's
//! value). The force-field data are embedded, so nothing is read at run time.
//!
//! Provenance of the data: `crates/fab-targets/data/README.md`. Accuracy against OpenMM and
//! speed: `docs/ALDP.md`.

pub mod eval;
mod evaluated;
mod forcefield;
mod internal;
mod io;
mod kernel;
mod minimize;
mod nerf;
mod target;
mod vec3;

pub use evaluated::{AldpEvalTarget, ChiralityFilter};
pub use forcefield::{AldpForceField, AtomInfo, EnergyTerms, TermForces, FORCEFIELD_JSON};
pub use internal::{
    is_l_form, l_form_mask, phi_psi, wrap_angle, InternalCoordinates, CART_DIM, CHIRALITY_INDICES, CHIRALITY_MEAN_DIFF,
    CHIRALITY_THRESHOLD, CIRCULAR_INDICES, FLOW_DIM, N_ATOMS, SEED_ATOMS, STD_ANGLE, STD_BOND, STD_CIRCULAR, STD_DIHEDRAL, Z_MATRIX,
};
pub use io::{read_coordinates, write_pdb, write_xyz, ConfigurationReport, EnergyReport, PdbWriter};
pub use minimize::{MinimizeOptions, MinimizeResult};
pub use target::{
    regularize_energy, regularize_energy_with_derivative, AldpCartesian, AldpTarget, ENERGY_CUT, ENERGY_MAX, GAS_CONSTANT, KBT, TEMPERATURE,
};
