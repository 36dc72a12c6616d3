//! The error type of the MCMC crate.

/// Errors of the kernels and step-size adapters.
///
/// Bad *points* (non-finite coordinates or log-densities) are not errors: the kernels reject such
/// proposals and count them in [`TransitionInfo::n_non_finite`](crate::TransitionInfo).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McmcError {
    /// A step size was not a finite positive number.
    #[error("step size must be finite and > 0, got {0}")]
    InvalidStepSize(f64),
    /// A kernel or adapter setting is out of range; the message names it.
    #[error("invalid MCMC configuration: {0}")]
    InvalidConfig(String),
    /// A gradient-based kernel was given a point without cached gradients.
    #[error("the kernel needs gradients, but the point has none; evaluate it with `with_grad = true`")]
    MissingGradient,
    /// An AIS level index was out of range.
    #[error("level {level} out of range: there are {n_levels} levels")]
    LevelOutOfRange {
        /// The index that was asked for.
        level: usize,
        /// The number of levels.
        n_levels: usize,
    },
    /// A replica-exchange start row has a non-finite tempered log-density.
    #[error("start row {row} has a non-finite log-density; start every replica at a valid point")]
    NonFiniteStart {
        /// The offending row of the start batch.
        row: usize,
    },
    /// An error from the shared traits (shapes, densities).
    #[error(transparent)]
    Core(#[from] fab_core::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, McmcError>;

#[cfg(test)]
mod tests {
    fn is_send_sync<T: Send + Sync>() {}
    #[test]
    fn error_is_send_sync() {
        is_send_sync::<super::McmcError>();
    }
}
