//! # fab-targets
//!
//! The benchmark distributions of FAB as [`fab_core::LogDensity`] implementations:
//! - [`gmm`]: the 40-component 2-D Gaussian mixture and user-defined mixtures;
//! - [`many_well`]: the 32-D Many Well (16 double wells) with its exact sampler and log Z;
//! - [`aldp`]: alanine dipeptide in implicit solvent (AMBER ff96 + GB-OBC1), energy and forces in
//!   pure Rust, in Cartesian or internal (flow) coordinates.
#![deny(missing_docs)]

pub mod aldp;
mod error;
pub mod gmm;
pub mod many_well;

pub use error::{Result, TargetError};
