use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use sluice_eventlog::LogError;

/// Why a request was refused. Every variant maps to one HTTP status and a machine-readable code
/// in [`ResponseError`] below: the only place statuses are chosen.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("no write key: send it as the HTTP Basic username (or as \"writeKey\" in the JSON body)")]
    MissingWriteKey,
    #[error("unknown write key")]
    UnknownWriteKey,
    #[error("body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("body is larger than the limit of {limit} bytes once decompressed")]
    DecompressedTooLarge { limit: usize },
    #[error("batch of {events} events exceeds the rate-limit burst of {burst} for this source")]
    BatchOverBurst { events: u32, burst: u32 },
    #[error("body is not valid gzip: {0}")]
    BadGzip(String),
    #[error("unsupported Content-Encoding {0:?}: send identity or gzip")]
    UnsupportedEncoding(String),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    InvalidEvent(String),
    #[error("rate limit exceeded for this write key")]
    RateLimited { retry_after: Duration },
    #[error("the event log is full; retry later")]
    LogFull { retry_after: Duration },
    #[error("the event log is unavailable: {0}")]
    LogUnavailable(String),
    #[error("could not read the request body: {0}")]
    BodyRead(String),
}

impl CollectError {
    /// Every value [`CollectError::code`] can take: the rejection counter starts at 0 for each,
    /// so a first rejection is an increase Prometheus can see (a series born at 1 is not).
    pub const CODES: [&'static str; 12] = [
        "missing_write_key",
        "unknown_write_key",
        "body_too_large",
        "batch_over_burst",
        "bad_gzip",
        "unsupported_encoding",
        "malformed_json",
        "invalid_event",
        "rate_limited",
        "log_full",
        "log_unavailable",
        "body_read_error",
    ];

    /// Stable code for clients and the `reason` label of the rejection metric.
    pub fn code(&self) -> &'static str {
        match self {
            CollectError::MissingWriteKey => "missing_write_key",
            CollectError::UnknownWriteKey => "unknown_write_key",
            CollectError::BodyTooLarge { .. } | CollectError::DecompressedTooLarge { .. } => "body_too_large",
            CollectError::BatchOverBurst { .. } => "batch_over_burst",
            CollectError::BadGzip(_) => "bad_gzip",
            CollectError::UnsupportedEncoding(_) => "unsupported_encoding",
            CollectError::MalformedJson(_) => "malformed_json",
            CollectError::InvalidEvent(_) => "invalid_event",
            CollectError::RateLimited { .. } => "rate_limited",
            CollectError::LogFull { .. } => "log_full",
            CollectError::LogUnavailable(_) => "log_unavailable",
            CollectError::BodyRead(_) => "body_read_error",
        }
    }

    pub(crate) fn from_log(e: LogError, retry_after: Duration) -> Self {
        match e {
            LogError::Full { .. } | LogError::Backlog(_) => CollectError::LogFull { retry_after },
            other => CollectError::LogUnavailable(other.to_string()),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            CollectError::RateLimited { retry_after } | CollectError::LogFull { retry_after } => Some(*retry_after),
            CollectError::LogUnavailable(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

impl ResponseError for CollectError {
    fn status_code(&self) -> StatusCode {
        match self {
            CollectError::MissingWriteKey | CollectError::UnknownWriteKey => StatusCode::UNAUTHORIZED,
            CollectError::BodyTooLarge { .. }
            | CollectError::DecompressedTooLarge { .. }
            | CollectError::BatchOverBurst { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            CollectError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            CollectError::BadGzip(_) | CollectError::MalformedJson(_) | CollectError::InvalidEvent(_) | CollectError::BodyRead(_) => {
                StatusCode::BAD_REQUEST
            }
            CollectError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            CollectError::LogFull { .. } | CollectError::LogUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        metrics::counter!(crate::metric::REJECTED, "reason" => self.code()).increment(1);
        let mut resp = HttpResponse::build(self.status_code());
        if let Some(wait) = self.retry_after() {
            // Whole seconds, rounded up: clients must not retry before the limiter has room.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.insert_header((header::RETRY_AFTER, secs.max(1).to_string()));
        }
        resp.json(serde_json::json!({ "error": self.code(), "message": self.to_string() }))
    }
}
