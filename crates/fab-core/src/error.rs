//! The error type shared by the traits of this crate.

/// Errors of the shared traits: shape or device faults and invalid arguments.
///
/// Bad *points* are not errors: a density returns `-inf` outside its support.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed (shape mismatch inside candle, device fault, ...).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A batch had the wrong shape.
    #[error("expected {what} of shape {expected}, got {got:?}")]
    Shape {
        /// What was being checked (e.g. "points").
        what: &'static str,
        /// The expected shape, in words (e.g. "[n, 2]").
        expected: String,
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// An argument was out of its valid range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

#[cfg(test)]
mod tests {
    fn is_send_sync<T: Send + Sync>() {}
    #[test]
    fn error_is_send_sync() {
        is_send_sync::<super::Error>();
    }
}
