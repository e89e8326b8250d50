//! What a [`crate::Client`] is built from; every knob has a default a chat server can run on.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::Error;

/// The collector refuses request bodies over 4 MiB (`max_body_bytes`); a batch is kept this much
/// under it, measured before gzip, so even an incompressible batch fits with its envelope.
pub const COLLECTOR_BODY_LIMIT: usize = 4 * 1024 * 1024;
const ENVELOPE_RESERVE: usize = 1024;

/// What `send()` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFullPolicy {
    /// Wait for room (`send_async` awaits without blocking the runtime thread). Nothing is lost;
    /// the caller slows down to what the collector accepts.
    Block,
    /// Make room by dropping the oldest queued events, counted in [`crate::Stats::dropped`] and
    /// reported as [`Issue::Dropped`]. `send()` never waits.
    DropOldest,
}

/// Problems the background sender met, reported to [`ClientConfig::on_issue`] (and logged).
#[derive(Debug, Clone)]
pub enum Issue {
    /// The collector refused this one event (a 400 isolated by bisecting its batch, or a 413 for
    /// the event alone). It will not be retried; the other events of its batch were delivered.
    Rejected {
        message_id: String,
        status: u16,
        reason: String,
        event: serde_json::Value,
    },
    /// The write key was refused (401/403). Events are kept and retried every `max_backoff`.
    Unauthorized { status: u16, body: String },
    /// The collector answered another 4xx (404: wrong endpoint, 415...). Events are kept and
    /// retried every `max_backoff`: this is a deployment error that a fix on either side clears.
    Refused { status: u16, body: String },
    /// A queue was full under [`QueueFullPolicy::DropOldest`] (or a durable segment was unreadable).
    Dropped { count: u64, reason: String },
}

/// A callback for [`Issue`]s. It runs on the sender's thread: keep it short.
pub type IssueCallback = Arc<dyn Fn(&Issue) + Send + Sync>;

/// Settings of a [`crate::Client`]. Start from [`ClientConfig::new`] and chain the setters.
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) endpoint: String,
    pub(crate) write_key: String,
    pub(crate) durable_dir: Option<PathBuf>,
    pub(crate) max_batch_events: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_event_bytes: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) max_queue_events: usize,
    pub(crate) max_queue_bytes: usize,
    pub(crate) queue_full: QueueFullPolicy,
    pub(crate) gzip: bool,
    pub(crate) request_timeout: Duration,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_retry_after: Duration,
    pub(crate) segment_bytes: u64,
    pub(crate) max_disk_bytes: u64,
    pub(crate) on_issue: Option<IssueCallback>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("durable_dir", &self.durable_dir)
            .field("max_batch_events", &self.max_batch_events)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("max_queue_events", &self.max_queue_events)
            .field("queue_full", &self.queue_full)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// `endpoint` is the collector's base URL (`http://127.0.0.1:8080`); the SDK posts to
    /// `{endpoint}/v1/batch` with `write_key` as the Basic-auth user.
    pub fn new(endpoint: impl Into<String>, write_key: impl Into<String>) -> ClientConfig {
        ClientConfig {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            write_key: write_key.into(),
            durable_dir: None,
            max_batch_events: 500,
            max_batch_bytes: 1024 * 1024,
            max_event_bytes: 32 * 1024,
            flush_interval: Duration::from_millis(500),
            max_queue_events: 10_000,
            max_queue_bytes: 64 * 1024 * 1024,
            queue_full: QueueFullPolicy::Block,
            gzip: true,
            request_timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            segment_bytes: 8 * 1024 * 1024,
            max_disk_bytes: 1024 * 1024 * 1024,
            on_issue: None,
        }
    }

    /// Keeps queued events in append-only files under `dir`: `send()` returns only once the event
    /// is fsynced there, and events not yet acknowledged are resent by the next client opened on
    /// the same directory (after a crash too). One client per directory at a time.
    pub fn durable_queue(mut self, dir: impl Into<PathBuf>) -> ClientConfig {
        self.durable_dir = Some(dir.into());
        self
    }

    /// Most events per request (default 500).
    pub fn max_batch_events(mut self, n: usize) -> ClientConfig {
        self.max_batch_events = n;
        self
    }

    /// Most JSON bytes per request before gzip (default 1 MiB; at most 4 MiB minus 1 KiB).
    pub fn max_batch_bytes(mut self, n: usize) -> ClientConfig {
        self.max_batch_bytes = n;
        self
    }

    /// Largest serialized event `send()` accepts (default 32 KiB); bigger ones get
    /// [`Error::EventTooLarge`] and are never sent.
    pub fn max_event_bytes(mut self, n: usize) -> ClientConfig {
        self.max_event_bytes = n;
        self
    }

    /// How long a partial batch waits for more events before it is sent (default 500 ms).
    pub fn flush_interval(mut self, d: Duration) -> ClientConfig {
        self.flush_interval = d;
        self
    }

    /// Bound of the memory queue (default 10,000 events and 64 MiB), and what happens when full.
    pub fn max_queue(mut self, events: usize, bytes: usize, policy: QueueFullPolicy) -> ClientConfig {
        self.max_queue_events = events;
        self.max_queue_bytes = bytes;
        self.queue_full = policy;
        self
    }

    /// Gzip request bodies (default on).
    pub fn gzip(mut self, on: bool) -> ClientConfig {
        self.gzip = on;
        self
    }

    /// Timeout of one HTTP request (default 10 s); a timeout is retried.
    pub fn request_timeout(mut self, d: Duration) -> ClientConfig {
        self.request_timeout = d;
        self
    }

    /// Retry backoff: doubles from `initial` up to `max`, each wait drawn in [half, full]
    /// (defaults 100 ms and 30 s). A `Retry-After` header replaces the computed wait, capped at
    /// `max_retry_after` (default 5 min).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> ClientConfig {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Cap on an honoured `Retry-After` (default 5 min).
    pub fn max_retry_after(mut self, d: Duration) -> ClientConfig {
        self.max_retry_after = d;
        self
    }

    /// Durable queue: size at which a segment file is sealed (default 8 MiB) and the most disk the
    /// queue may use (default 1 GiB; when reached, the queue-full policy applies).
    pub fn durable_limits(mut self, segment_bytes: u64, max_disk_bytes: u64) -> ClientConfig {
        self.segment_bytes = segment_bytes;
        self.max_disk_bytes = max_disk_bytes;
        self
    }

    /// Called on the sender's thread for each [`Issue`] (rejected event, bad write key, drops).
    pub fn on_issue(mut self, f: impl Fn(&Issue) + Send + Sync + 'static) -> ClientConfig {
        self.on_issue = Some(Arc::new(f));
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return bad("endpoint must start with http:// or https://");
        }
        if self.write_key.is_empty() {
            return bad("write_key must not be empty");
        }
        if self.max_batch_events == 0 {
            return bad("max_batch_events must be at least 1");
        }
        if self.max_batch_bytes > COLLECTOR_BODY_LIMIT - ENVELOPE_RESERVE {
            return bad("max_batch_bytes must stay under the collector's 4 MiB body limit (4 MiB - 1 KiB at most)");
        }
        if self.max_event_bytes > self.max_batch_bytes {
            return bad("max_event_bytes must not exceed max_batch_bytes");
        }
        if self.max_event_bytes < 64 {
            return bad("max_event_bytes must be at least 64");
        }
        if self.max_queue_events == 0 || self.max_queue_bytes < self.max_event_bytes {
            return bad("the queue must hold at least one event of max_event_bytes");
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return bad("backoff: initial must be > 0 and <= max");
        }
        if self.durable_dir.is_some() && self.max_disk_bytes < 2 * self.segment_bytes {
            return bad("max_disk_bytes must be at least two segments");
        }
        Ok(())
    }
}
