//! The error type of fab-buffer.

/// Everything that can go wrong when building, filling, sampling, adjusting, saving or loading a
/// [`PrioritisedBuffer`](crate::PrioritisedBuffer) or a [`RankedBuffer`](crate::RankedBuffer).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BufferError {
    /// The buffer configuration is invalid (zero dimension, zero capacity, `min_len > capacity`).
    #[error("invalid buffer configuration: {0}")]
    InvalidConfig(String),
    /// An argument is out of range or inconsistent (shape, α, clip, index, duplicate index, NaN
    /// priority, rank parameter k).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Sampling was requested before `min_len` entries were ever added.
    #[error("buffer not ready: {added} entries added so far, at least min_len = {min_len} are needed before sampling")]
    NotReady {
        /// Entries added so far (over the buffer's lifetime).
        added: u64,
        /// The configured minimum.
        min_len: usize,
    },
    /// More distinct entries were requested than the buffer holds with a finite log-weight.
    #[error("cannot draw {requested} distinct entries: only {available} stored entries have a finite log-weight (lower the batch size or the number of batches, or raise min_len)")]
    NotEnoughEntries {
        /// K, the number of indices requested.
        requested: usize,
        /// Stored entries with a finite log-weight.
        available: usize,
    },
    /// Sampling was requested from a [`RankedBuffer`](crate::RankedBuffer) that holds no entries.
    #[error("cannot sample from an empty ranked buffer: insert entries first")]
    Empty,
    /// A checkpoint file is malformed or does not match this build's format.
    #[error("invalid buffer checkpoint: {0}")]
    Format(String),
    /// An error from fab-core.
    #[error(transparent)]
    Core(#[from] fab_core::Error),
    /// A tensor operation or safetensors I/O failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, BufferError>;

#[cfg(test)]
mod tests {
    fn is_send_sync<T: Send + Sync>() {}
    #[test]
    fn error_is_send_sync() {
        is_send_sync::<super::BufferError>();
    }
}
