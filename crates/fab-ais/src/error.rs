//! The error type of the AIS crate.

/// Errors of annealed importance sampling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AisError {
    /// A configuration value is out of range; the message names it.
    #[error("invalid AIS configuration: {0}")]
    InvalidConfig(String),
    /// Every sample had a non-finite log q, log p or log-weight.
    #[error("AIS: no valid samples at the {stage} (all {batch} had non-finite log q, log p or log w); check the flow and the target for NaN/inf")]
    NoValidSamples {
        /// "chain start" or "chain end".
        stage: &'static str,
        /// Number of samples at that stage.
        batch: usize,
    },
    /// The flow and the target live in different dimensions.
    #[error("the proposal has dimension {q} but the target has dimension {p}")]
    DimensionMismatch {
        /// Dimension of the proposal q.
        q: usize,
        /// Dimension of the target p.
        p: usize,
    },
    /// A saved state does not fit this sampler.
    #[error("AIS state does not fit: {0}")]
    StateMismatch(String),
    /// An error from a transition kernel.
    #[error(transparent)]
    Mcmc(#[from] fab_mcmc::McmcError),
    /// An error from the shared traits (shapes, densities).
    #[error(transparent)]
    Core(#[from] fab_core::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, AisError>;

#[cfg(test)]
mod tests {
    fn is_send_sync<T: Send + Sync>() {}
    #[test]
    fn error_is_send_sync() {
        is_send_sync::<super::AisError>();
    }
}
