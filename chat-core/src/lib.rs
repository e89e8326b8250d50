//! chat-core: a small Mattermost-style chat server (users, teams, channels, posts, threads,
//! reactions, read markers, typing) over an HTTP JSON API and a WebSocket, with its own SQLite
//! store. Every user action is emitted as an analytics event through the Sluice Rust SDK and
//! recorded in the emission ledger that `sluice reconcile` checks against the destinations.
//! `load` is the load generator behind the `chat-load` binary.

pub mod analytics;
pub mod api;
pub mod hub;
pub mod ledger;
pub mod load;
pub mod store;
pub mod ws;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// The crate's one error type; HTTP handlers return it and it maps itself to a status.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("emission ledger: {0}")]
    Ledger(String),
    #[error("analytics: {0}")]
    Analytics(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl ChatError {
    fn id(&self) -> &'static str {
        match self {
            ChatError::BadRequest(_) => "api.bad_request",
            ChatError::Unauthorized(_) => "api.unauthorized",
            ChatError::Forbidden(_) => "api.forbidden",
            ChatError::NotFound(_) => "api.not_found",
            ChatError::Conflict(_) => "api.conflict",
            _ => "api.internal",
        }
    }
}

/// Errors look like Mattermost's: `{"id": ..., "message": ..., "status_code": ...}`.
impl ResponseError for ChatError {
    fn status_code(&self) -> StatusCode {
        match self {
            ChatError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ChatError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ChatError::Forbidden(_) => StatusCode::FORBIDDEN,
            ChatError::NotFound(_) => StatusCode::NOT_FOUND,
            ChatError::Conflict(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        HttpResponse::build(status).json(serde_json::json!({
            "id": self.id(),
            "message": self.to_string(),
            "status_code": status.as_u16(),
        }))
    }
}

impl From<actix_web::error::BlockingError> for ChatError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ChatError::Internal(e.to_string())
    }
}
