//! The crate's one error enum.

use std::time::Duration;

/// Why a call on [`crate::Client`] failed. Delivery problems that happen later, in the
/// background sender, are not returned here: they reach [`crate::ClientConfig::on_issue`], the
/// log and [`crate::Stats`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (bad URL, limits out of range...).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// One serialized event is over the per-event limit; it was not queued and will not be sent.
    #[error("event {message_id} is {size} bytes, over the {limit}-byte per-event limit; not sent")]
    EventTooLarge {
        message_id: String,
        size: usize,
        limit: usize,
    },

    /// The message cannot be sent as built (e.g. an empty user id).
    #[error("invalid message: {0}")]
    InvalidMessage(String),

    /// `shutdown()` was called (or the last handle dropped): the client accepts nothing more.
    #[error("the client is shut down")]
    Closed,

    /// `flush()`/`shutdown()` ran out of time; `pending` events were not yet acknowledged.
    #[error("{pending} event(s) not acknowledged within {waited:?}")]
    Timeout { pending: u64, waited: Duration },

    /// The durable queue's file could not be written or fsynced; the event is not durable.
    #[error("durable queue I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The background sender could not start (runtime or HTTP client).
    #[error("cannot start the sender: {0}")]
    Start(String),
}
