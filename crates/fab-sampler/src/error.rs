//! The error type of the sampler core.

use std::path::Path;

/// Errors of the run driver, evaluation and checkpoints, and the errors a sampler family or a
/// target reports through the core (kept as their source, not flattened into text).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration or request is invalid; the message names the offending key or value.
    #[error("invalid config: {0}")]
    Config(String),
    /// A run directory or checkpoint is missing, incomplete or inconsistent.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// File-system error.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Shared-trait error (shapes, devices, invalid arguments).
    #[error(transparent)]
    Core(#[from] fab_core::Error),
    /// Tensor error.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Writing a plot failed.
    #[error(transparent)]
    Plot(#[from] fab_plot::PlotError),
    /// A sampler family or a target failed; the family's own error is the source.
    #[error(transparent)]
    Family(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Result alias of the sampler core.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.display().to_string(), source }
    }

    /// Wraps the error of a sampler family or a target, keeping it as the source.
    pub fn family<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        Error::Family(Box::new(e))
    }
}

impl From<Error> for fab_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Core(c) => c,
            Error::Candle(c) => fab_core::Error::Candle(c),
            other => fab_core::Error::InvalidArgument(other.to_string()),
        }
    }
}
