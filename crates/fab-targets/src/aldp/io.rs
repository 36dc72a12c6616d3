//! Reading configurations and writing samples (PDB, XYZ) and energy reports (JSON).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::forcefield::{AldpForceField, EnergyTerms, TermForces};
use super::internal::{batch_len, phi_psi, CART_DIM};
use super::target::{regularize_energy, KBT};
use crate::{Result, TargetError};

fn data_err(path: &Path, msg: impl Into<String>) -> TargetError {
    TargetError::Data { path: path.display().to_string(), msg: msg.into() }
}

/// Reads configurations of alanine dipeptide (nm) as a flat `[n * 66]` row-major vector.
///
/// Accepted formats (chosen by extension, `.npy` vs anything else as JSON):
/// * JSON: one configuration as a list of 22 `[x, y, z]` triples, or a list of such
///   configurations, or flat lists of 66 numbers;
/// * `.npy` (`<f8` or `<f4`, C order) of shape `[n, 66]`, `[n, 22, 3]`, `[22, 3]` or `[66]`.
///
/// # Errors
/// [`TargetError::Data`] if the file cannot be read or has another shape.
pub fn read_coordinates(path: &Path) -> Result<Vec<f64>> {
    let is_npy = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let data = if is_npy {
        let (data, shape) = fab_core::npy::read_f64(path).map_err(|e| data_err(path, e.to_string()))?;
        let ok = matches!(shape.as_slice(), [_, CART_DIM] | [_, 22, 3] | [22, 3] | [CART_DIM]);
        if !ok {
            return Err(data_err(path, format!("expected an array of shape [n, 66] or [n, 22, 3], got {shape:?}")));
        }
        data
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| data_err(path, e.to_string()))?;
        parse_json_coordinates(&text).map_err(|m| data_err(path, m))?
    };
    if data.is_empty() || data.len() % CART_DIM != 0 {
        return Err(data_err(path, format!("{} numbers is not a multiple of 66", data.len())));
    }
    Ok(data)
}

/// Parses the JSON forms accepted by [`read_coordinates`]: a rectangular nested list of shape
/// `[22][3]`, `[n][22][3]` or `[n][66]`; any other shape (e.g. a transposed `[3][22]`, which has
/// the right count) is refused with the shape that was found.
fn parse_json_coordinates(text: &str) -> std::result::Result<Vec<f64>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    /// The shape of a rectangular nested list of numbers, flattening it into `out`.
    fn walk(v: &serde_json::Value, out: &mut Vec<f64>, depth: usize) -> std::result::Result<Vec<usize>, String> {
        match v {
            serde_json::Value::Number(n) => {
                out.push(n.as_f64().ok_or("a coordinate is not a number")?);
                Ok(Vec::new())
            }
            serde_json::Value::Array(a) if depth < 3 => {
                let mut inner: Option<Vec<usize>> = None;
                for e in a {
                    let s = walk(e, out, depth + 1)?;
                    match &inner {
                        None => inner = Some(s),
                        Some(first) if *first != s => return Err("nested lists of different lengths (not a rectangular array)".into()),
                        Some(_) => {}
                    }
                }
                let mut shape = vec![a.len()];
                shape.extend(inner.unwrap_or_default());
                Ok(shape)
            }
            serde_json::Value::Array(_) => Err("lists nested deeper than [n][22][3]".into()),
            _ => Err("expected nested lists of numbers (22 × 3 per configuration)".into()),
        }
    }
    let mut out = Vec::new();
    let shape = walk(&v, &mut out, 0)?;
    let ok = matches!(shape.as_slice(), [22, 3] | [_, 22, 3] | [_, CART_DIM]);
    if !ok {
        return Err(format!("expected coordinates of shape [22][3], [n][22][3] or [n][66] (nm), found {shape:?}"));
    }
    Ok(out)
}

/// Writes configurations (`xs`: `[n, 66]`, nm) as a multi-model PDB file (coordinates in Å,
/// one `MODEL` per configuration, `CONECT` records for the covalent bonds). For many
/// configurations, stream them with [`PdbWriter`].
///
/// # Errors
/// A shape error for a bad batch, [`TargetError::Data`] if writing fails.
pub fn write_pdb<W: Write>(w: W, ff: &AldpForceField, xs: &[f64]) -> Result<()> {
    batch_len(xs, CART_DIM, "ALDP coordinate batch")?;
    let mut pdb = PdbWriter::new(w, ff)?;
    pdb.write_models(xs)?;
    pdb.finish().map(|_| ())
}

/// A multi-model PDB file written in pieces, so that any number of configurations fits in
/// bounded memory: [`new`](Self::new) writes the header, [`write_models`](Self::write_models)
/// appends one `MODEL … ENDMDL` block per configuration, [`finish`](Self::finish) writes the
/// `CONECT` records and `END`. Standard viewers and MDTraj / MDAnalysis read the result as a
/// trajectory (serials of models past 9 999 extend to the left of column 11).
pub struct PdbWriter<'a, W: Write> {
    w: W,
    ff: &'a AldpForceField,
    models: usize,
}

impl<W: Write> std::fmt::Debug for PdbWriter<'_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdbWriter").field("models", &self.models).finish_non_exhaustive()
    }
}

fn pdb_io(e: std::io::Error) -> TargetError {
    TargetError::Data { path: "<pdb writer>".into(), msg: e.to_string() }
}

impl<'a, W: Write> PdbWriter<'a, W> {
    /// Starts a PDB file for the atoms of `ff`.
    ///
    /// # Errors
    /// [`TargetError::Data`] if writing fails.
    pub fn new(mut w: W, ff: &'a AldpForceField) -> Result<Self> {
        w.write_all(b"REMARK   1 ALANINE DIPEPTIDE (ACE-ALA-NME), WRITTEN BY FAB-RS\n").map_err(pdb_io)?;
        Ok(Self { w, ff, models: 0 })
    }

    /// Appends configurations (`xs`: `[n, 66]`, nm), one model each.
    ///
    /// # Errors
    /// A shape error for a bad batch, [`TargetError::Data`] if writing fails.
    pub fn write_models(&mut self, xs: &[f64]) -> Result<()> {
        batch_len(xs, CART_DIM, "ALDP coordinate batch")?;
        let mut s = String::new();
        for x in xs.chunks(CART_DIM) {
            self.models += 1;
            // Columns 1-6 "MODEL ", serial right-justified to column 14.
            s.push_str(&format!("MODEL {:>8}\n", self.models));
            for (a, atom) in self.ff.atoms().iter().enumerate() {
                let name =
                    if atom.name.len() < 4 && atom.element.len() == 1 { format!(" {:<3}", atom.name) } else { format!("{:<4}", atom.name) };
                let resid: i64 = atom.residue_id.trim().parse().unwrap_or(0);
                s.push_str(&format!(
                    "ATOM  {:>5} {} {:>3} A{:>4}    {:>8.3}{:>8.3}{:>8.3}{:>6.2}{:>6.2}          {:>2}\n",
                    a + 1,
                    name,
                    atom.residue,
                    resid,
                    10.0 * x[3 * a],
                    10.0 * x[3 * a + 1],
                    10.0 * x[3 * a + 2],
                    1.0,
                    0.0,
                    atom.element
                ));
            }
            s.push_str("TER\nENDMDL\n");
        }
        self.w.write_all(s.as_bytes()).map_err(pdb_io)
    }

    /// Number of models written so far.
    pub fn models(&self) -> usize {
        self.models
    }

    /// Writes the bond records and `END`, flushes, and returns the writer.
    ///
    /// # Errors
    /// [`TargetError::Data`] if writing fails.
    pub fn finish(mut self) -> Result<W> {
        let ff = self.ff;
        let mut partners = vec![Vec::new(); ff.n_atoms()];
        for &(i, j) in ff.topology_bonds() {
            partners[i].push(j);
            partners[j].push(i);
        }
        let mut s = String::new();
        for (i, p) in partners.iter_mut().enumerate() {
            p.sort_unstable();
            if !p.is_empty() {
                s.push_str(&format!("CONECT{:>5}", i + 1));
                for j in p.iter() {
                    s.push_str(&format!("{:>5}", j + 1));
                }
                s.push('\n');
            }
        }
        s.push_str("END\n");
        self.w.write_all(s.as_bytes()).map_err(pdb_io)?;
        self.w.flush().map_err(pdb_io)?;
        Ok(self.w)
    }
}

/// Writes configurations (`xs`: `[n, 66]`, nm) as a multi-frame XYZ file (element symbols,
/// coordinates in Å; the comment line carries the frame index).
///
/// # Errors
/// A shape error for a bad batch, [`TargetError::Data`] if writing fails.
pub fn write_xyz<W: Write>(mut w: W, ff: &AldpForceField, xs: &[f64]) -> Result<()> {
    batch_len(xs, CART_DIM, "ALDP coordinate batch")?;
    let io = |e: std::io::Error| TargetError::Data { path: "<xyz writer>".into(), msg: e.to_string() };
    let mut s = String::new();
    for (m, x) in xs.chunks(CART_DIM).enumerate() {
        s.push_str(&format!("{}\nalanine dipeptide frame {} (Angstrom)\n", ff.n_atoms(), m));
        for (a, atom) in ff.atoms().iter().enumerate() {
            s.push_str(&format!(
                "{:<2} {:>14.8} {:>14.8} {:>14.8}\n",
                atom.element,
                10.0 * x[3 * a],
                10.0 * x[3 * a + 1],
                10.0 * x[3 * a + 2]
            ));
        }
    }
    w.write_all(s.as_bytes()).map_err(io)
}

/// Energy and forces of one configuration, as reported by `fab energy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationReport {
    /// Energies per term, kJ/mol (NaN, serialised as `null`, for non-finite coordinates).
    pub energy_kj_per_mol: EnergyTerms,
    /// Reduced energy E/k_BT at 300 K (k_BT = 2.4942 kJ/mol).
    pub reduced_energy_kbt: f64,
    /// log p̃ = −u_reg (boltzgen's regularisation); −∞ is written as `null`.
    pub log_prob_unnormalised: f64,
    /// Whether the energy is finite.
    pub finite: bool,
    /// Total forces −∂E/∂x, kJ/mol/nm, one `[fx, fy, fz]` per atom.
    pub forces_kj_per_mol_nm: Vec<[f64; 3]>,
    /// Forces per term, if requested.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub term_forces_kj_per_mol_nm: Option<TermForces>,
    /// Ramachandran angles (φ, ψ) in radians (IUPAC / mdtraj convention).
    pub phi_psi_rad: [f64; 2],
}

/// The JSON report of `fab energy --system aldp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyReport {
    /// `"alanine dipeptide, AMBER ff96 + GB-OBC1 (OpenMM AlanineDipeptideImplicit)"`.
    pub system: String,
    /// Units of the fields.
    pub units: String,
    /// One entry per configuration, in input order.
    pub configurations: Vec<ConfigurationReport>,
}

impl EnergyReport {
    /// Evaluates every configuration of `xs` (`[n, 66]`, nm). With `per_term_forces` the forces
    /// of each term are included as well.
    ///
    /// # Errors
    /// A shape error if `xs.len()` is not a multiple of 66.
    pub fn new(ff: &AldpForceField, xs: &[f64], per_term_forces: bool) -> Result<Self> {
        batch_len(xs, CART_DIM, "ALDP coordinate batch")?;
        let mut configurations = Vec::new();
        for x in xs.chunks(CART_DIM) {
            let (e, tf) = ff.energy_and_forces_by_term(x)?;
            let mut forces = vec![[0.0; 3]; ff.n_atoms()];
            for (a, f) in forces.iter_mut().enumerate() {
                for (c, fc) in f.iter_mut().enumerate() {
                    let k = 3 * a + c;
                    *fc = tf.bonds[k] + tf.angles[k] + tf.torsions[k] + tf.nonbonded[k] + tf.gb[k];
                }
            }
            let u = e.total / KBT;
            let reg = regularize_energy(u);
            let (phi, psi) = phi_psi(x)?;
            configurations.push(ConfigurationReport {
                energy_kj_per_mol: e,
                reduced_energy_kbt: u,
                log_prob_unnormalised: if reg.is_finite() { -reg } else { f64::NEG_INFINITY },
                finite: e.is_finite(),
                forces_kj_per_mol_nm: forces,
                term_forces_kj_per_mol_nm: per_term_forces.then_some(tf),
                phi_psi_rad: [phi, psi],
            });
        }
        Ok(Self {
            system: "alanine dipeptide, AMBER ff96 + GB-OBC1 (OpenMM AlanineDipeptideImplicit)".into(),
            units: "energies kJ/mol, forces kJ/mol/nm, angles rad, reduced energies in kBT at 300 K".into(),
            configurations,
        })
    }

    /// Pretty-printed JSON (non-finite numbers become `null`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
