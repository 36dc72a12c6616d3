//! Errors of the flow crate.

/// Errors raised while building or evaluating a flow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// A configuration value is out of range or inconsistent; the message names it.
    #[error("invalid flow configuration: {0}")]
    InvalidConfig(String),
    /// A checkpoint does not fit the model.
    #[error("checkpoint mismatch: {0}")]
    Checkpoint(String),
    /// An error from the shared traits (shapes, I/O).
    #[error(transparent)]
    Core(#[from] fab_core::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, FlowError>;

impl From<FlowError> for fab_core::Error {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::Core(c) => c,
            FlowError::Candle(c) => fab_core::Error::Candle(c),
            other => fab_core::Error::InvalidArgument(other.to_string()),
        }
    }
}
