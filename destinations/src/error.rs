use std::time::Duration;

/// Why a batch was not delivered. The router decides what happens next from
/// [`DeliveryError::is_retriable`] and [`DeliveryError::retry_after`].
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A failure that may pass: timeouts, connection errors, 408, 429, 5xx, a full disk.
    #[error("temporary failure: {reason}")]
    Temporary {
        reason: String,
        /// Wait the destination asked for (`Retry-After`), if any.
        retry_after: Option<Duration>,
    },
    /// A failure that will not pass by retrying the same batch: other 4xx, invalid data.
    #[error("permanent failure: {reason}")]
    Permanent { reason: String },
    /// The destination could not be built from its config.
    #[error("configuration error: {0}")]
    Config(String),
}

impl DeliveryError {
    pub fn temporary(reason: impl Into<String>) -> Self {
        DeliveryError::Temporary { reason: reason.into(), retry_after: None }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError::Permanent { reason: reason.into() }
    }

    /// Whether retrying the same batch later can succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, DeliveryError::Temporary { .. })
    }

    /// The wait the destination asked for before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Temporary { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<std::io::Error> for DeliveryError {
    fn from(e: std::io::Error) -> Self {
        // Local I/O errors (disk full, permissions fixed by an operator) are worth retrying.
        DeliveryError::temporary(format!("i/o error: {e}"))
    }
}
