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

    /// The one rule every HTTP-speaking sink (webhook, S3, Snowflake's S3 stage) classifies a
    /// failed response's status by: a 4xx other than 408 (request timeout) and 429 (too many
    /// requests) says the request itself is wrong, so the same batch will fail again; 408, 429,
    /// 5xx and anything unexpected may pass. `None` (no response at all: a timeout, a refused
    /// connection) is temporary too.
    pub fn from_status(status: Option<u16>, reason: String, retry_after: Option<Duration>) -> Self {
        match status {
            Some(s) if is_permanent_status(s) => DeliveryError::Permanent { reason },
            _ => DeliveryError::Temporary { reason, retry_after },
        }
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

/// Whether an HTTP status means retrying the same request cannot succeed (see
/// [`DeliveryError::from_status`]).
fn is_permanent_status(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_4xx_other_than_408_and_429_is_permanent() {
        for s in [400, 401, 403, 404, 409, 413, 422, 499] {
            assert!(!DeliveryError::from_status(Some(s), "x".into(), None).is_retriable(), "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 100, 399, 600] {
            assert!(DeliveryError::from_status(Some(s), "x".into(), None).is_retriable(), "{s}");
        }
        let wait = Some(Duration::from_secs(3));
        assert_eq!(DeliveryError::from_status(Some(429), "x".into(), wait).retry_after(), wait);
        assert!(DeliveryError::from_status(None, "no answer".into(), None).is_retriable());
    }
}
