//! # fab-targets
//!
//! The benchmark distributions of FAB as [`fab_core::LogDensity`] implementations:
//! - [`gmm`]: the 40-component 2-D Gaussian mixture and user-defined mixtures;
//! - [`many_well`]: the 32-D Many Well (16 double wells) with its exact sampler and log Z;
//! - [`aldp`]: alanine dipeptide in implicit solvent (AMBER ff96 + GB-OBC1), energy and forces in
//!   pure Rust, in Cartesian or internal (flow) coordinates.
//!
//! Each is also a [`fab_sampler::Target`] with its own metrics and plots (mode coverage, wells
//! populated, Ramachandran KLs against the shipped reference, …), and [`TargetConfig`] builds
//! them from an experiment's `[target]` section.
#![deny(missing_docs)]

pub mod aldp;
mod config;
mod error;
pub mod gmm;
mod gmm_eval;
pub mod many_well;
mod many_well_eval;
mod two_paths;

pub use config::{AldpConfig, TargetConfig};
pub use error::{Result, TargetError};
pub use gmm_eval::{chi2_quantile_999, mode_mass_ratio_key};
pub use many_well_eval::{expected_wells_populated, grouped_z_errors};
