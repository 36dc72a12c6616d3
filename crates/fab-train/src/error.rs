//! The error type of the FAB family (checkpoint and file errors are the sampler core's).

use crate::optim::OptimError;

/// Errors of configuration, training, evaluation and checkpointing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The experiment configuration is invalid; the message names the offending key.
    #[error("invalid config: {0}")]
    Config(String),
    /// The optimiser failed.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// The replay buffer failed.
    #[error(transparent)]
    Buffer(#[from] fab_buffer::BufferError),
    /// Annealed importance sampling failed.
    #[error(transparent)]
    Ais(#[from] fab_ais::AisError),
    /// The flow failed.
    #[error(transparent)]
    Flow(#[from] fab_flows::FlowError),
    /// The target failed.
    #[error(transparent)]
    Target(#[from] fab_targets::TargetError),
    /// Shared-trait error (shapes, devices).
    #[error(transparent)]
    Core(#[from] fab_core::Error),
    /// Tensor error.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The sampler core (driver, evaluation, checkpoints) failed.
    #[error(transparent)]
    Sampler(#[from] fab_sampler::Error),
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;

impl From<TrainError> for fab_core::Error {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Core(c) => c,
            TrainError::Candle(c) => fab_core::Error::Candle(c),
            other => fab_core::Error::InvalidArgument(other.to_string()),
        }
    }
}

impl From<TrainError> for fab_sampler::Error {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Config(msg) => fab_sampler::Error::Config(msg),
            TrainError::Sampler(inner) => inner,
            TrainError::Core(c) => fab_sampler::Error::Core(c),
            TrainError::Candle(c) => fab_sampler::Error::Candle(c),
            other => fab_sampler::Error::family(other),
        }
    }
}

#[cfg(test)]
mod tests {
    fn is_send_sync<T: Send + Sync>() {}
    #[test]
    fn error_is_send_sync() {
        is_send_sync::<super::TrainError>();
    }
}
