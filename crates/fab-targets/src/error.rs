//! Errors of the target crate.

/// Errors raised while building or evaluating a target.
///
/// Bad *points* are not errors (they give `-inf` log-density); these are configuration, shape
/// and I/O faults.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// A configuration value is inconsistent or out of range; the message names it.
    #[error("invalid target configuration: {0}")]
    InvalidConfig(String),
    /// A data file could not be read or parsed.
    #[error("could not read {path}: {msg}")]
    Data {
        /// The file.
        path: String,
        /// What went wrong.
        msg: String,
    },
    /// An error from the shared traits (shapes, tensors).
    #[error(transparent)]
    Core(#[from] fab_core::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, TargetError>;

impl From<TargetError> for fab_core::Error {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::Core(c) => c,
            TargetError::Candle(c) => fab_core::Error::Candle(c),
            other => fab_core::Error::InvalidArgument(other.to_string()),
        }
    }
}

impl From<TargetError> for fab_sampler::Error {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::InvalidConfig(msg) => fab_sampler::Error::Config(msg),
            other => fab_sampler::Error::family(other),
        }
    }
}
