//! The AMBER ff96 + GB-OBC1 force field of alanine dipeptide, parsed from the OpenMM system
//! description, with energies and analytic forces in float64.
//!
//! Every term follows the formula OpenMM evaluates for this system (documented in
//! `data/aldp/aldp_forcefield.json`):
//!
//! | term | energy |
//! |---|---|
//! | bonds | ½ k (r − r₀)² |
//! | angles | ½ k (θ − θ₀)², θ the angle at the middle atom |
//! | torsions | k (1 + cos(n φ − phase)), φ the IUPAC dihedral (proper and improper) |
//! | nonbonded | k_e q_i q_j / r + 4ε((σ/r)¹² − (σ/r)⁶) over all pairs, no cut-off, Lorentz–Berthelot mixing, the exception list replacing (1-4) or removing (1-2, 1-3) pairs |
//! | gb | GB-OBC1 (the OpenMM `CustomGBForce`): Born radii from the OBC integral, self and pair polarisation terms, ACE surface-area term |
//!
//! Forces are −∂E/∂x, derived by hand for every term; the GB forces use the standard two-pass
//! chain rule through the Born radii.

use serde::{Deserialize, Serialize};

use super::kernel::{eval1, eval4, KernelParams, KernelScratch};
use crate::{Result, TargetError};

/// The OpenMM system description this module was written for, embedded at compile time
/// (openmmtools `AlanineDipeptideImplicit`, MIT; see `data/README.md`).
pub const FORCEFIELD_JSON: &str = include_str!("../../data/aldp/aldp_forcefield.json");

/// The computed-value and energy expressions of the GB-OBC1 `CustomGBForce` that
/// [`AldpForceField`] implements. A force-field file with different expressions is rejected.
const GB_EXPECTED_EXPRESSIONS: [&str; 5] = [
    "select(step(r+sr2-or1), 0.5*(1/L-1/U+0.25*(r-sr2^2/r)*(1/(U^2)-1/(L^2))+0.5*log(L/U)/r), 0);U=r+sr2;L=max(or1, D);D=abs(r-sr2)",
    "1/(1/or-tanh(0.8*psi+2.909125*psi^3)/radius);psi=I*or; radius=or+offset; offset=0.009",
    "-0.5*138.935485*(1/soluteDielectric-1/solventDielectric)*charge^2/B; solventDielectric=78.5; soluteDielectric=1; kappa=0; offset=0.008999999999999999",
    "28.3919551*(radius+0.14)^2*(radius/B)^6; radius=or+offset; solventDielectric=78.5; soluteDielectric=1; kappa=0; offset=0.008999999999999999",
    "-138.935485*(1/soluteDielectric-1/solventDielectric)*charge1*charge2/f;f=sqrt(r^2+B1*B2*exp(-r^2/(4*B1*B2))); solventDielectric=78.5; soluteDielectric=1; kappa=0; offset=0.008999999999999999",
];

// Literal constants of the GB expressions above.
/// Coulomb constant written in the CustomGBForce expressions (kJ/mol·nm/e²).
pub(super) const GB_COULOMB: f64 = 138.935485;
pub(super) const GB_SOLUTE_DIELECTRIC: f64 = 1.0;
pub(super) const GB_SOLVENT_DIELECTRIC: f64 = 78.5;
/// Dielectric offset used in the Born-radius expression.
pub(super) const GB_OFFSET_BORN: f64 = 0.009;
/// Dielectric offset used in the energy expressions: the JSON writes it as
/// 0.008999999999999999, which parses to the same float64 as 0.009.
pub(super) const GB_OFFSET_ENERGY: f64 = 0.009;
/// OBC1 tanh coefficients α, γ (β = 0).
pub(super) const OBC_ALPHA: f64 = 0.8;
pub(super) const OBC_GAMMA: f64 = 2.909125;
/// ACE surface-area constant 4π·2.25936 kJ/mol/nm² and probe radius (nm).
pub(super) const ACE_CONSTANT: f64 = 28.3919551;
pub(super) const ACE_PROBE: f64 = 0.14;

/// One atom of the system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtomInfo {
    /// PDB atom name (e.g. `CA`).
    pub name: String,
    /// Element symbol (e.g. `C`).
    pub element: String,
    /// Residue name (`ACE`, `ALA`, `NME`).
    pub residue: String,
    /// Residue number as written in the topology (1-based).
    pub residue_id: String,
    /// Mass in Da.
    pub mass: f64,
    /// Partial charge in e.
    pub charge: f64,
}

/// Energies of one configuration per force-field term, in kJ/mol.
///
/// The five terms are the OpenMM force groups of the reference vectors; `total` is their sum.
/// A configuration with non-finite coordinates has every field NaN (see
/// [`AldpForceField::energy_and_forces`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EnergyTerms {
    /// Harmonic bonds.
    pub bonds: f64,
    /// Harmonic angles.
    pub angles: f64,
    /// Periodic torsions (propers and impropers).
    pub torsions: f64,
    /// Coulomb + Lennard-Jones without cut-off, with exclusions and scaled 1-4 pairs.
    pub nonbonded: f64,
    /// GB-OBC1 polarisation energy plus the ACE surface-area term.
    pub gb: f64,
    /// Sum of the five terms.
    pub total: f64,
}

impl EnergyTerms {
    /// All terms NaN: the energy of a configuration with non-finite coordinates.
    pub const NAN: EnergyTerms =
        EnergyTerms { bonds: f64::NAN, angles: f64::NAN, torsions: f64::NAN, nonbonded: f64::NAN, gb: f64::NAN, total: f64::NAN };

    /// Whether the total energy is finite.
    pub fn is_finite(&self) -> bool {
        self.total.is_finite()
    }

    fn with_total(mut self) -> Self {
        self.total = self.bonds + self.angles + self.torsions + self.nonbonded + self.gb;
        self
    }
}

/// Forces of one configuration split by term, each `[n_atoms * 3]` in kJ/mol/nm.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TermForces {
    /// Harmonic-bond forces.
    pub bonds: Vec<f64>,
    /// Harmonic-angle forces.
    pub angles: Vec<f64>,
    /// Torsion forces.
    pub torsions: Vec<f64>,
    /// Nonbonded (Coulomb + LJ) forces.
    pub nonbonded: Vec<f64>,
    /// GB-OBC1 + ACE forces.
    pub gb: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Bond {
    pub(super) i: usize,
    pub(super) j: usize,
    pub(super) r0: f64,
    pub(super) k: f64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Angle {
    pub(super) i: usize,
    pub(super) j: usize,
    pub(super) k: usize,
    pub(super) theta0: f64,
    pub(super) k_force: f64,
}

/// A dihedral quadruple with all its Fourier terms, so that φ and its gradient are computed once.
#[derive(Debug, Clone)]
pub(super) struct Torsion {
    pub(super) atoms: [usize; 4],
    /// (periodicity, phase, k) per term; terms with k = 0 are dropped at parse time.
    pub(super) terms: Vec<(f64, f64, f64)>,
}

/// An interacting nonbonded pair (excluded pairs are not stored).
#[derive(Debug, Clone, Copy)]
pub(super) struct NbPair {
    pub(super) i: usize,
    pub(super) j: usize,
    /// k_e · q_i q_j (kJ/mol·nm).
    pub(super) qq: f64,
    /// σ and ε of the pair (combined or from the exception).
    pub(super) sigma: f64,
    pub(super) eps4: f64,
}

/// Per-particle GB parameters.
#[derive(Debug, Clone, Copy)]
pub(super) struct GbAtom {
    pub(super) charge: f64,
    /// Offset radius `or` = intrinsic radius − 0.009 nm.
    pub(super) or: f64,
    /// Scaled offset radius `sr` = screen · or.
    pub(super) sr: f64,
}

/// Per-thread buffers of the fast kernel.
pub(crate) type BatchScratch = KernelScratch;

thread_local! {
    static KERNEL_SCRATCH: std::cell::RefCell<KernelScratch> = std::cell::RefCell::new(KernelScratch::default());
}

/// Runs `f` with this thread's kernel buffers (allocated once per thread, so single
/// evaluations do not allocate); a fresh set if they are already in use.
pub(crate) fn with_kernel_scratch<R>(f: impl FnOnce(&mut KernelScratch) -> R) -> R {
    KERNEL_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut KernelScratch::default()),
    })
}

/// Scratch buffers of one GB evaluation (reused across configurations).
#[derive(Debug, Clone, Default)]
pub(crate) struct GbScratch {
    unit: Vec<[f64; 3]>,
    r: Vec<f64>,
    di_ij: Vec<f64>,
    di_ji: Vec<f64>,
    radial: Vec<f64>,
    integral: Vec<f64>,
    born: Vec<f64>,
    dborn_di: Vec<f64>,
    de_dborn: Vec<f64>,
}

impl GbScratch {
    fn resize(&mut self, n_atoms: usize, n_pairs: usize) {
        self.unit.resize(n_pairs, [0.0; 3]);
        self.r.resize(n_pairs, 0.0);
        self.di_ij.resize(n_pairs, 0.0);
        self.di_ji.resize(n_pairs, 0.0);
        self.radial.resize(n_pairs, 0.0);
        self.integral.resize(n_atoms, 0.0);
        self.born.resize(n_atoms, 0.0);
        self.dborn_di.resize(n_atoms, 0.0);
        self.de_dborn.resize(n_atoms, 0.0);
    }
}

/// The complete force field of alanine dipeptide in implicit solvent, as OpenMM builds it from
/// the Amber prmtop of the openmmtools `AlanineDipeptideImplicit` test system (AMBER ff96,
/// GB-OBC1 with ACE surface term, no cut-off, no constraints).
///
/// Evaluation is pure float64 Rust with analytic forces; it matches OpenMM's Reference platform
/// to ~1e-12 relative on the reference configurations (see the crate tests).
///
/// # Example
/// ```
/// use fab_targets::aldp::AldpForceField;
/// let ff = AldpForceField::amber_implicit();
/// let x = ff.reference_positions().to_vec();
/// let e = ff.energy(&x).unwrap();
/// assert!((e.total - (-172.67751692548748)).abs() < 1e-6);
/// ```
#[derive(Debug, Clone)]
pub struct AldpForceField {
    pub(super) atoms: Vec<AtomInfo>,
    pub(super) topology_bonds: Vec<(usize, usize)>,
    pub(super) bonds: Vec<Bond>,
    pub(super) angles: Vec<Angle>,
    pub(super) torsions: Vec<Torsion>,
    pub(super) nb_pairs: Vec<NbPair>,
    pub(super) gb_atoms: Vec<GbAtom>,
    /// All unordered pairs i < j (the GB pair sums run over every pair).
    pub(super) all_pairs: Vec<(usize, usize)>,
    /// −k_GB · q_i q_j per entry of `all_pairs`.
    pub(super) gb_pair_qq: Vec<f64>,
    pub(super) reference_positions: Vec<f64>,
    pub(super) start_positions: Vec<f64>,
    pub(super) minimum_positions: Vec<f64>,
    /// The same force field flattened for the fast kernel.
    pub(super) kernel: KernelParams,
}

// ---------------------------------------------------------------------------------------------
// JSON schema (only the fields used).

#[derive(Deserialize)]
struct JsonFile {
    atoms: Vec<JsonAtom>,
    topology_bonds: Vec<[usize; 2]>,
    forces: Vec<serde_json::Value>,
    coulomb_constant_measured: JsonCoulomb,
    positions_start_nm: Vec<[f64; 3]>,
    positions_minimum_nm: Vec<[f64; 3]>,
    positions_fab_position_min_energy_pt_nm: Vec<[f64; 3]>,
}

#[derive(Deserialize)]
struct JsonAtom {
    name: String,
    element: String,
    residue: String,
    residue_id: String,
    mass: f64,
    charge: f64,
    lj_sigma: f64,
    lj_epsilon: f64,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct JsonCoulomb {
    ONE_4PI_EPS0_NonbondedForce_Reference: f64,
}

#[derive(Deserialize)]
struct JsonBond {
    i: usize,
    j: usize,
    r0: f64,
    k: f64,
}

#[derive(Deserialize)]
struct JsonAngle {
    i: usize,
    j: usize,
    k_atom: usize,
    theta0: f64,
    k: f64,
}

#[derive(Deserialize)]
struct JsonTorsion {
    i: usize,
    j: usize,
    k_atom: usize,
    l: usize,
    periodicity: u32,
    phase: f64,
    k: f64,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct JsonException {
    i: usize,
    j: usize,
    chargeProd: f64,
    sigma: f64,
    epsilon: f64,
}

#[derive(Deserialize)]
struct JsonExpr {
    expression: String,
}

fn bad(msg: impl Into<String>) -> TargetError {
    TargetError::InvalidConfig(format!("ALDP force field: {}", msg.into()))
}

fn terms_of<T: serde::de::DeserializeOwned>(force: &serde_json::Value, key: &str) -> Result<Vec<T>> {
    let v = force.get(key).ok_or_else(|| bad(format!("force has no `{key}` list")))?;
    serde_json::from_value(v.clone()).map_err(|e| bad(format!("`{key}`: {e}")))
}

fn flatten(p: &[[f64; 3]]) -> Vec<f64> {
    p.iter().flatten().copied().collect()
}

impl AldpForceField {
    /// The embedded force field of the FAB paper's target (parsed once per call; cheap, ~1 ms).
    pub fn amber_implicit() -> Self {
        Self::from_json_str(FORCEFIELD_JSON).expect("the embedded ALDP force field is valid")
    }

    /// Parses a force-field description in the schema of `data/aldp/aldp_forcefield.json`.
    ///
    /// # Errors
    /// [`TargetError::InvalidConfig`] if the JSON is malformed, an index is out of range, a
    /// force is missing, or the GB force is not the GB-OBC1 form implemented here.
    pub fn from_json_str(json: &str) -> Result<Self> {
        let f: JsonFile = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let n = f.atoms.len();
        if n == 0 {
            return Err(bad("no atoms"));
        }
        let check = |idx: &[usize]| -> Result<()> {
            if idx.iter().any(|&a| a >= n) {
                Err(bad(format!("atom index in {idx:?} out of range (n = {n})")))
            } else {
                Ok(())
            }
        };
        let force = |class: &str| -> Result<&serde_json::Value> {
            f.forces.iter().find(|v| v.get("class").and_then(|c| c.as_str()) == Some(class)).ok_or_else(|| bad(format!("no {class}")))
        };

        let mut bonds = Vec::new();
        for b in terms_of::<JsonBond>(force("HarmonicBondForce")?, "terms")? {
            check(&[b.i, b.j])?;
            bonds.push(Bond { i: b.i, j: b.j, r0: b.r0, k: b.k });
        }
        let mut angles = Vec::new();
        for a in terms_of::<JsonAngle>(force("HarmonicAngleForce")?, "terms")? {
            check(&[a.i, a.j, a.k_atom])?;
            angles.push(Angle { i: a.i, j: a.j, k: a.k_atom, theta0: a.theta0, k_force: a.k });
        }
        let mut torsions: Vec<Torsion> = Vec::new();
        for t in terms_of::<JsonTorsion>(force("PeriodicTorsionForce")?, "terms")? {
            let atoms = [t.i, t.j, t.k_atom, t.l];
            check(&atoms)?;
            if t.k == 0.0 {
                continue; // contributes exactly zero energy and force
            }
            let term = (t.periodicity as f64, t.phase, t.k);
            match torsions.iter_mut().find(|q| q.atoms == atoms) {
                Some(q) => q.terms.push(term),
                None => torsions.push(Torsion { atoms, terms: vec![term] }),
            }
        }

        // Nonbonded: combined parameters for every pair, replaced by the exceptions.
        let nb = force("NonbondedForce")?;
        if nb.get("nonbonded_method").and_then(|m| m.as_str()) != Some("NoCutoff") {
            return Err(bad("only NonbondedForce with NoCutoff is supported"));
        }
        let ke = f.coulomb_constant_measured.ONE_4PI_EPS0_NonbondedForce_Reference;
        let mut pair_params = vec![None::<(f64, f64, f64)>; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = (&f.atoms[i], &f.atoms[j]);
                pair_params[i * n + j] = Some((a.charge * b.charge, 0.5 * (a.lj_sigma + b.lj_sigma), (a.lj_epsilon * b.lj_epsilon).sqrt()));
            }
        }
        for e in terms_of::<JsonException>(nb, "exceptions")? {
            check(&[e.i, e.j])?;
            if e.i == e.j {
                return Err(bad("exception of an atom with itself"));
            }
            let (i, j) = (e.i.min(e.j), e.i.max(e.j));
            pair_params[i * n + j] = if e.chargeProd == 0.0 && e.epsilon == 0.0 { None } else { Some((e.chargeProd, e.sigma, e.epsilon)) };
        }
        let mut nb_pairs = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                if let Some((qq, sigma, eps)) = pair_params[i * n + j] {
                    nb_pairs.push(NbPair { i, j, qq: ke * qq, sigma, eps4: 4.0 * eps });
                }
            }
        }

        // GB-OBC1.
        let gb = force("CustomGBForce")?;
        let mut exprs: Vec<String> = Vec::new();
        for key in ["computed_values", "energy_terms"] {
            for e in terms_of::<JsonExpr>(gb, key)? {
                exprs.push(e.expression);
            }
        }
        if exprs.len() != GB_EXPECTED_EXPRESSIONS.len() || exprs.iter().zip(GB_EXPECTED_EXPRESSIONS).any(|(a, b)| a != b) {
            return Err(bad("the CustomGBForce is not the GB-OBC1 + ACE form implemented here"));
        }
        if gb.get("nonbonded_method").and_then(|m| m.as_str()) != Some("NoCutoff")
            || gb.get("num_exclusions").and_then(|m| m.as_u64()).unwrap_or(0) != 0
        {
            return Err(bad("the CustomGBForce must be NoCutoff without exclusions"));
        }
        let params: Vec<[f64; 3]> = terms_of(gb, "particle_params")?;
        if params.len() != n {
            return Err(bad("CustomGBForce particle count differs from the atom count"));
        }
        let gb_atoms: Vec<GbAtom> = params.iter().map(|p| GbAtom { charge: p[0], or: p[1], sr: p[2] }).collect();
        if gb_atoms.iter().any(|a| !(a.or > 0.0 && a.sr >= 0.0)) {
            return Err(bad("GB radii must be positive"));
        }
        let pref = -GB_COULOMB * (1.0 / GB_SOLUTE_DIELECTRIC - 1.0 / GB_SOLVENT_DIELECTRIC);
        let mut all_pairs = Vec::with_capacity(n * (n - 1) / 2);
        let mut gb_pair_qq = Vec::with_capacity(n * (n - 1) / 2);
        for i in 0..n {
            for j in i + 1..n {
                all_pairs.push((i, j));
                gb_pair_qq.push(pref * gb_atoms[i].charge * gb_atoms[j].charge);
            }
        }

        let mut topology_bonds = Vec::new();
        for b in &f.topology_bonds {
            check(b)?;
            topology_bonds.push((b[0], b[1]));
        }
        for p in [&f.positions_start_nm, &f.positions_minimum_nm, &f.positions_fab_position_min_energy_pt_nm] {
            if p.len() != n {
                return Err(bad("a position set has the wrong number of atoms"));
            }
        }
        let atoms = f
            .atoms
            .iter()
            .map(|a| AtomInfo {
                name: a.name.clone(),
                element: a.element.clone(),
                residue: a.residue.clone(),
                residue_id: a.residue_id.clone(),
                mass: a.mass,
                charge: a.charge,
            })
            .collect();
        let mut ff = Self {
            atoms,
            topology_bonds,
            bonds,
            angles,
            torsions,
            nb_pairs,
            gb_atoms,
            all_pairs,
            gb_pair_qq,
            reference_positions: flatten(&f.positions_fab_position_min_energy_pt_nm),
            start_positions: flatten(&f.positions_start_nm),
            minimum_positions: flatten(&f.positions_minimum_nm),
            kernel: KernelParams::default(),
        };
        ff.kernel = KernelParams::new(&ff);
        Ok(ff)
    }

    /// Number of atoms (22).
    pub fn n_atoms(&self) -> usize {
        self.atoms.len()
    }

    /// Number of Cartesian coordinates, 3 × atoms (66).
    pub fn dim(&self) -> usize {
        3 * self.atoms.len()
    }

    /// The atoms (names, elements, residues, masses, charges).
    pub fn atoms(&self) -> &[AtomInfo] {
        &self.atoms
    }

    /// Covalent bonds of the topology (atom index pairs), e.g. for PDB `CONECT` records.
    pub fn topology_bonds(&self) -> &[(usize, usize)] {
        &self.topology_bonds
    }

    /// The minimum-energy configuration of fab-torch (`position_min_energy.pt`), nm, `[66]`:
    /// the reference that defines the internal-coordinate means (E = −172.67752 kJ/mol).
    pub fn reference_positions(&self) -> &[f64] {
        &self.reference_positions
    }

    /// The positions of the openmmtools test system (the start of OpenMM's minimiser), nm.
    pub fn start_positions(&self) -> &[f64] {
        &self.start_positions
    }

    /// OpenMM's tightly converged minimum (tolerance 1e-3 kJ/mol/nm), nm
    /// (E = −173.17050 kJ/mol).
    pub fn openmm_minimum_positions(&self) -> &[f64] {
        &self.minimum_positions
    }

    fn check_len(&self, x: &[f64], what: &'static str) -> Result<()> {
        if x.len() != self.dim() {
            return Err(TargetError::Core(fab_core::Error::Shape { what, expected: format!("[{}]", self.dim()), got: vec![x.len()] }));
        }
        Ok(())
    }

    /// Energy of one configuration `x` (`[n_atoms * 3]`, nm), per term, in kJ/mol.
    ///
    /// # Errors
    /// A shape error if `x` does not have 3 × n_atoms entries.
    pub fn energy(&self, x: &[f64]) -> Result<EnergyTerms> {
        let mut f = vec![0.0; x.len()];
        self.energy_and_forces(x, &mut f)
    }

    /// Energy (kJ/mol) and forces −∂E/∂x (kJ/mol/nm, written to `forces`, `[n_atoms * 3]`) of one
    /// configuration.
    ///
    /// Non-finite coordinates give [`EnergyTerms::NAN`] and zero forces. Atoms on top of each
    /// other give a non-finite energy (+∞ or NaN); [`crate::aldp::regularize_energy`] and the
    /// log-densities turn every non-finite energy into log p = −∞.
    ///
    /// # Errors
    /// A shape error if `x` or `forces` does not have 3 × n_atoms entries.
    pub fn energy_and_forces(&self, x: &[f64], forces: &mut [f64]) -> Result<EnergyTerms> {
        self.check_len(x, "ALDP coordinates")?;
        self.check_len(forces, "ALDP forces")?;
        Ok(with_kernel_scratch(|s| eval1(self, x, forces, s)))
    }

    /// Energies and forces split by term (for comparison with per-force-group references).
    ///
    /// # Errors
    /// A shape error if `x` does not have 3 × n_atoms entries.
    pub fn energy_and_forces_by_term(&self, x: &[f64]) -> Result<(EnergyTerms, TermForces)> {
        self.check_len(x, "ALDP coordinates")?;
        let d = self.dim();
        let mut tf =
            TermForces { bonds: vec![0.0; d], angles: vec![0.0; d], torsions: vec![0.0; d], nonbonded: vec![0.0; d], gb: vec![0.0; d] };
        if x.iter().any(|v| !v.is_finite()) {
            return Ok((EnergyTerms::NAN, tf));
        }
        let mut s = GbScratch::default();
        let e = EnergyTerms {
            bonds: self.bond_terms(x, &mut tf.bonds),
            angles: self.angle_terms(x, &mut tf.angles),
            torsions: self.torsion_terms(x, &mut tf.torsions),
            nonbonded: self.nonbonded_terms(x, &mut tf.nonbonded),
            gb: self.gb_terms(x, &mut tf.gb, &mut s),
            total: 0.0,
        };
        Ok((e.with_total(), tf))
    }

    /// Batched energies: `xs` is `[n, n_atoms * 3]` row-major; returns one [`EnergyTerms`] per
    /// row. Rows are evaluated in parallel with rayon.
    ///
    /// # Errors
    /// A shape error if `xs.len()` is not a multiple of 3 × n_atoms.
    pub fn energies(&self, xs: &[f64]) -> Result<Vec<EnergyTerms>> {
        let mut f = vec![0.0; xs.len()];
        self.energies_and_forces(xs, &mut f)
    }

    /// Batched energies and forces: `xs` and `forces` are `[n, n_atoms * 3]` row-major. Rows are
    /// evaluated in parallel with rayon (results do not depend on the number of threads).
    ///
    /// # Errors
    /// A shape error if the lengths are not equal multiples of 3 × n_atoms.
    pub fn energies_and_forces(&self, xs: &[f64], forces: &mut [f64]) -> Result<Vec<EnergyTerms>> {
        use rayon::prelude::*;
        let d = self.dim();
        if !xs.len().is_multiple_of(d) || forces.len() != xs.len() {
            return Err(TargetError::Core(fab_core::Error::Shape {
                what: "ALDP coordinate batch and forces",
                expected: format!("[n * {d}] each"),
                got: vec![xs.len(), forces.len()],
            }));
        }
        let n = xs.len() / d;
        let mut out = vec![EnergyTerms::default(); n];
        // Groups of four configurations go through the 4-lane kernel; results do not depend on
        // the grouping (each lane computes exactly what the 1-lane kernel computes).
        out.par_chunks_mut(4)
            .zip(xs.par_chunks(4 * d).zip(forces.par_chunks_mut(4 * d)))
            .with_min_len(2)
            .for_each(|(e, (x, f))| with_kernel_scratch(|s| self.eval_group(x, f, e, s)));
        Ok(out)
    }

    /// Energies and forces of up to four configurations (`xs`, `fs`: `[k, 66]`, `k ≤ 4`).
    pub(crate) fn eval_group(&self, xs: &[f64], fs: &mut [f64], es: &mut [EnergyTerms], s: &mut BatchScratch) {
        let d = self.dim();
        let k = es.len();
        if k == 4 {
            eval4(self, xs, fs, es, s);
        } else {
            for c in 0..k {
                es[c] = eval1(self, &xs[c * d..(c + 1) * d], &mut fs[c * d..(c + 1) * d], s);
            }
        }
    }

    /// Energy and forces of one configuration of the right length through the fast kernel.
    pub(crate) fn eval(&self, x: &[f64], f: &mut [f64], s: &mut BatchScratch) -> EnergyTerms {
        eval1(self, x, f, s)
    }

    /// The term-by-term reference evaluation (readable, libm-based; the fast kernel is tested
    /// against it). Same conventions as [`energy_and_forces`](Self::energy_and_forces).
    ///
    /// # Errors
    /// A shape error if `x` or `forces` does not have 3 × n_atoms entries.
    pub fn energy_and_forces_reference(&self, x: &[f64], forces: &mut [f64]) -> Result<EnergyTerms> {
        self.check_len(x, "ALDP coordinates")?;
        self.check_len(forces, "ALDP forces")?;
        forces.fill(0.0);
        if x.iter().any(|v| !v.is_finite()) {
            return Ok(EnergyTerms::NAN);
        }
        let mut s = GbScratch::default();
        let f = forces;
        Ok(EnergyTerms {
            bonds: self.bond_terms(x, f),
            angles: self.angle_terms(x, f),
            torsions: self.torsion_terms(x, f),
            nonbonded: self.nonbonded_terms(x, f),
            gb: self.gb_terms(x, f, &mut s),
            total: 0.0,
        }
        .with_total())
    }

    // -----------------------------------------------------------------------------------------
    // Terms. Each adds its forces into `f` and returns its energy.

    fn bond_terms(&self, x: &[f64], f: &mut [f64]) -> f64 {
        let mut e = 0.0;
        for b in &self.bonds {
            let d = sub(pos(x, b.j), pos(x, b.i));
            let r = norm(d);
            let dr = r - b.r0;
            e += 0.5 * b.k * dr * dr;
            // F_i = k (r − r0) d/r, F_j = −F_i.
            let c = b.k * dr / r;
            add_scaled(f, b.i, d, c);
            add_scaled(f, b.j, d, -c);
        }
        e
    }

    fn angle_terms(&self, x: &[f64], f: &mut [f64]) -> f64 {
        let mut e = 0.0;
        for a in &self.angles {
            let xj = pos(x, a.j);
            let u = sub(pos(x, a.i), xj);
            let v = sub(pos(x, a.k), xj);
            let p = cross(u, v);
            let pn = norm(p);
            let theta = pn.atan2(dot(u, v));
            let dt = theta - a.theta0;
            e += 0.5 * a.k_force * dt * dt;
            if pn > 0.0 {
                // ∂θ/∂u = (u × p)/(|u|²|p|), ∂θ/∂v = −(v × p)/(|v|²|p|); F = −k (θ − θ0) ∂θ/∂x.
                let c = -a.k_force * dt / pn;
                let gu = scale(cross(u, p), c / dot(u, u));
                let gv = scale(cross(v, p), -c / dot(v, v));
                add_scaled(f, a.i, gu, 1.0);
                add_scaled(f, a.k, gv, 1.0);
                add_scaled(f, a.j, add(gu, gv), -1.0);
            }
        }
        e
    }

    fn torsion_terms(&self, x: &[f64], f: &mut [f64]) -> f64 {
        let mut e = 0.0;
        for t in &self.torsions {
            let [i, j, k, l] = t.atoms;
            let g = dihedral_with_grad(pos(x, i), pos(x, j), pos(x, k), pos(x, l));
            let mut de_dphi = 0.0;
            for &(n, phase, kf) in &t.terms {
                let a = n * g.phi - phase;
                e += kf * (1.0 + a.cos());
                de_dphi -= kf * n * a.sin();
            }
            for (atom, gr) in [(i, g.gi), (j, g.gj), (k, g.gk), (l, g.gl)] {
                add_scaled(f, atom, gr, -de_dphi);
            }
        }
        e
    }

    fn nonbonded_terms(&self, x: &[f64], f: &mut [f64]) -> f64 {
        let mut e = 0.0;
        for p in &self.nb_pairs {
            let d = sub(pos(x, p.j), pos(x, p.i));
            let r2 = dot(d, d);
            let inv_r2 = 1.0 / r2;
            let inv_r = inv_r2.sqrt();
            let s2 = p.sigma * p.sigma * inv_r2;
            let s6 = s2 * s2 * s2;
            let lj = p.eps4 * (s6 * s6 - s6);
            let coul = p.qq * inv_r;
            e += lj + coul;
            // r ∂E/∂r = −coul − eps4 (12 s12 − 6 s6); F_i = −∂E/∂x_i = (∂E/∂r) d/r.
            let r_de_dr = -coul - p.eps4 * (12.0 * s6 * s6 - 6.0 * s6);
            let c = r_de_dr * inv_r2;
            add_scaled(f, p.i, d, c);
            add_scaled(f, p.j, d, -c);
        }
        e
    }

    fn gb_terms(&self, x: &[f64], f: &mut [f64], s: &mut GbScratch) -> f64 {
        let n = self.n_atoms();
        let np = self.all_pairs.len();
        s.resize(n, np);
        s.integral[..n].fill(0.0);
        // Pass 1: distances and the OBC integrals I_i = Σ_{j≠i} I(r_ij; or_i, sr_j).
        for (p, &(i, j)) in self.all_pairs.iter().enumerate() {
            let d = sub(pos(x, j), pos(x, i));
            let r = norm(d);
            let inv_r = 1.0 / r;
            s.unit[p] = scale(d, inv_r);
            s.r[p] = r;
            let (ai, aj) = (&self.gb_atoms[i], &self.gb_atoms[j]);
            let (v_ij, d_ij) = obc_integral(r, inv_r, ai.or, aj.sr);
            let (v_ji, d_ji) = obc_integral(r, inv_r, aj.or, ai.sr);
            s.integral[i] += v_ij;
            s.integral[j] += v_ji;
            s.di_ij[p] = d_ij;
            s.di_ji[p] = d_ji;
        }
        // Pass 2: Born radii and the single-particle energies.
        let self_pref = -0.5 * GB_COULOMB * (1.0 / GB_SOLUTE_DIELECTRIC - 1.0 / GB_SOLVENT_DIELECTRIC);
        let mut e = 0.0;
        for (a, at) in self.gb_atoms.iter().enumerate() {
            let radius_b = at.or + GB_OFFSET_BORN;
            let psi = s.integral[a] * at.or;
            let t = OBC_ALPHA * psi + OBC_GAMMA * psi * psi * psi;
            let th = t.tanh();
            let born = 1.0 / (1.0 / at.or - th / radius_b);
            // dB/dI = B² (1 − tanh²) (α + 3γψ²) or / radius.
            s.dborn_di[a] = born * born * (1.0 - th * th) * (OBC_ALPHA + 3.0 * OBC_GAMMA * psi * psi) * at.or / radius_b;
            s.born[a] = born;
            let e_self = self_pref * at.charge * at.charge / born;
            let radius_e = at.or + GB_OFFSET_ENERGY;
            let ratio = radius_e / born;
            let r3 = ratio * ratio * ratio;
            let e_ace = ACE_CONSTANT * (radius_e + ACE_PROBE) * (radius_e + ACE_PROBE) * r3 * r3;
            e += e_self + e_ace;
            s.de_dborn[a] = -(e_self + 6.0 * e_ace) / born;
        }
        // Pass 3: pair polarisation energy −k q_i q_j / f_GB, its radial and Born-radius partials.
        for (p, &(i, j)) in self.all_pairs.iter().enumerate() {
            let r = s.r[p];
            let r2 = r * r;
            let (bi, bj) = (s.born[i], s.born[j]);
            let kb = bi * bj;
            let ex = (-r2 / (4.0 * kb)).exp();
            let f2 = r2 + kb * ex;
            let fgb = f2.sqrt();
            let ep = self.gb_pair_qq[p] / fgb;
            e += ep;
            // ∂E/∂(f²) = −E/(2f²); ∂f²/∂r = r(2 − ex/2); ∂f²/∂(B_i B_j) = ex (1 + r²/(4 B_i B_j)).
            let de_df2 = -0.5 * ep / f2;
            s.radial[p] = de_df2 * r * (2.0 - 0.5 * ex);
            let de_dk = de_df2 * ex * (1.0 + r2 / (4.0 * kb));
            s.de_dborn[i] += de_dk * bj;
            s.de_dborn[j] += de_dk * bi;
        }
        // Pass 4: chain rule through the Born radii, ∂E/∂I_a = ∂E/∂B_a · dB_a/dI_a, then all
        // radial derivatives into forces.
        for a in 0..n {
            s.de_dborn[a] *= s.dborn_di[a];
        }
        for (p, &(i, j)) in self.all_pairs.iter().enumerate() {
            let de_dr = s.radial[p] + s.de_dborn[i] * s.di_ij[p] + s.de_dborn[j] * s.di_ji[p];
            // r = |x_j − x_i|: F_i = ∂E/∂r · u, F_j = −∂E/∂r · u.
            add_scaled(f, i, s.unit[p], de_dr);
            add_scaled(f, j, s.unit[p], -de_dr);
        }
        e
    }
}

/// The OBC pair integral I(r; or₁, sr₂) of the CustomGBForce and its derivative in r.
///
/// `select(step(r+sr2-or1), 0.5*(1/L-1/U+0.25*(r-sr2^2/r)*(1/U^2-1/L^2)+0.5*log(L/U)/r), 0)`
/// with U = r + sr2, D = |r − sr2|, L = max(or1, D).
#[inline]
fn obc_integral(r: f64, inv_r: f64, or1: f64, sr2: f64) -> (f64, f64) {
    let u = r + sr2;
    if u - or1 < 0.0 {
        return (0.0, 0.0);
    }
    let dm = r - sr2;
    let dabs = dm.abs();
    // L and dL/dr (the max picks or1, constant, or |r − sr2|, slope sign(r − sr2)).
    let (l, dl) = if or1 >= dabs { (or1, 0.0) } else { (dabs, if dm >= 0.0 { 1.0 } else { -1.0 }) };
    let inv_l = 1.0 / l;
    let inv_u = 1.0 / u;
    let inv_l2 = inv_l * inv_l;
    let inv_u2 = inv_u * inv_u;
    let sr2sq = sr2 * sr2;
    let t = r - sr2sq * inv_r;
    let q = inv_u2 - inv_l2;
    let lg = (l * inv_u).ln();
    let val = 0.5 * (inv_l - inv_u + 0.25 * t * q + 0.5 * lg * inv_r);
    let dt = 1.0 + sr2sq * inv_r * inv_r;
    let dq = -2.0 * inv_u2 * inv_u + 2.0 * dl * inv_l2 * inv_l;
    let dlg = dl * inv_l - inv_u;
    let der = 0.5 * (-dl * inv_l2 + inv_u2 + 0.25 * (dt * q + t * dq) + 0.5 * (dlg - lg * inv_r) * inv_r);
    (val, der)
}

// ---------------------------------------------------------------------------------------------
// Small 3-vector helpers shared with the internal-coordinate code.

pub(crate) type V3 = [f64; 3];

#[inline(always)]
pub(crate) fn pos(x: &[f64], a: usize) -> V3 {
    [x[3 * a], x[3 * a + 1], x[3 * a + 2]]
}
#[inline(always)]
pub(crate) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
#[inline(always)]
pub(crate) fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
#[inline(always)]
pub(crate) fn scale(a: V3, c: f64) -> V3 {
    [a[0] * c, a[1] * c, a[2] * c]
}
#[inline(always)]
pub(crate) fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
#[inline(always)]
pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}
#[inline(always)]
pub(crate) fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}
#[inline(always)]
pub(crate) fn add_scaled(f: &mut [f64], a: usize, v: V3, c: f64) {
    f[3 * a] += c * v[0];
    f[3 * a + 1] += c * v[1];
    f[3 * a + 2] += c * v[2];
}

/// A dihedral angle and its gradient with respect to the four positions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DihedralGrad {
    /// IUPAC dihedral of (i, j, k, l) in (−π, π].
    pub phi: f64,
    pub gi: V3,
    pub gj: V3,
    pub gk: V3,
    pub gl: V3,
}

/// IUPAC dihedral φ(i, j, k, l) = atan2(|b2| b1·(b2×b3), (b1×b2)·(b2×b3)) with b1 = j − i,
/// b2 = k − j, b3 = l − k.
#[inline]
pub(crate) fn dihedral(xi: V3, xj: V3, xk: V3, xl: V3) -> f64 {
    let b1 = sub(xj, xi);
    let b2 = sub(xk, xj);
    let b3 = sub(xl, xk);
    let n1 = cross(b1, b2);
    let n2 = cross(b2, b3);
    (norm(b2) * dot(b1, n2)).atan2(dot(n1, n2))
}

/// The dihedral and its gradient (Bekker / Blondel–Karplus form): with m = b1×b2, n = b2×b3,
/// ∂φ/∂x_i = −|b2|/|m|² m, ∂φ/∂x_l = |b2|/|n|² n, and the middle atoms from the translation and
/// rotation invariance of φ. Degenerate (collinear) quadruples get a zero gradient.
#[inline]
pub(crate) fn dihedral_with_grad(xi: V3, xj: V3, xk: V3, xl: V3) -> DihedralGrad {
    let b1 = sub(xj, xi);
    let b2 = sub(xk, xj);
    let b3 = sub(xl, xk);
    let m = cross(b1, b2);
    let n = cross(b2, b3);
    let b2n = norm(b2);
    let phi = (b2n * dot(b1, n)).atan2(dot(m, n));
    let mm = dot(m, m);
    let nn = dot(n, n);
    if mm == 0.0 || nn == 0.0 || b2n == 0.0 {
        let z = [0.0; 3];
        return DihedralGrad { phi, gi: z, gj: z, gk: z, gl: z };
    }
    let gi = scale(m, -b2n / mm);
    let gl = scale(n, b2n / nn);
    let b22 = b2n * b2n;
    let p = dot(b1, b2) / b22;
    let q = dot(b3, b2) / b22;
    // With p = b1·b2/|b2|², q = b3·b2/|b2|²:
    // ∂φ/∂x_j = −(1 + p) ∂φ/∂x_i + q ∂φ/∂x_l ; ∂φ/∂x_k = −(1 + q) ∂φ/∂x_l + p ∂φ/∂x_i.
    let gj = add(scale(gi, -(1.0 + p)), scale(gl, q));
    let gk = add(scale(gl, -(1.0 + q)), scale(gi, p));
    DihedralGrad { phi, gi, gj, gk, gl }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dihedral_gradient_matches_finite_differences() {
        // A generic (non-planar) quadruple; central differences with h = 1e-6 have truncation
        // error O(h²·φ''') ~ 1e-12 and rounding ~1e-10, so 1e-7 is a safe absolute bound.
        let pts = [[0.1, 0.2, -0.3], [0.25, 0.05, 0.0], [0.4, 0.3, 0.1], [0.3, 0.45, 0.35]];
        let g = dihedral_with_grad(pts[0], pts[1], pts[2], pts[3]);
        let grads = [g.gi, g.gj, g.gk, g.gl];
        let h = 1e-6;
        for a in 0..4 {
            for c in 0..3 {
                let mut p = pts;
                p[a][c] += h;
                let fp = dihedral(p[0], p[1], p[2], p[3]);
                p[a][c] -= 2.0 * h;
                let fm = dihedral(p[0], p[1], p[2], p[3]);
                let fd = (fp - fm) / (2.0 * h);
                assert!((fd - grads[a][c]).abs() < 1e-7, "atom {a} comp {c}: {fd} vs {}", grads[a][c]);
            }
        }
    }

    #[test]
    fn dihedral_sign_is_iupac() {
        // Right-handed rotation viewed along j→k: i on +x, l rotated by +90° about the z axis
        // through j→k gives +π/2 in the IUPAC convention.
        let phi = dihedral([1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]);
        assert!((phi - std::f64::consts::FRAC_PI_2).abs() < 1e-15, "{phi}");
    }

    #[test]
    fn obc_integral_derivative_matches_finite_differences() {
        // Cover the three branches: L = or1 (overlap), L = r − sr2 (separated) and the
        // step-zero region; h = 1e-7 nm keeps both sides in the same branch.
        for &(r, or1, sr2) in &[(0.12, 0.15, 0.1), (0.35, 0.111, 0.094), (0.05, 0.2, 0.1), (0.02, 0.2, 0.01)] {
            let (v, d) = obc_integral(r, 1.0 / r, or1, sr2);
            let h = 1e-7;
            let fp = obc_integral(r + h, 1.0 / (r + h), or1, sr2).0;
            let fm = obc_integral(r - h, 1.0 / (r - h), or1, sr2).0;
            let fd = (fp - fm) / (2.0 * h);
            assert!(v.is_finite());
            // Relative 1e-6: rounding error of the difference quotient is ~1e-16·|I|/h ≈ 1e-9·|I|.
            assert!((fd - d).abs() <= 1e-6 * d.abs().max(1.0), "r={r}: {fd} vs {d}");
        }
    }
}
