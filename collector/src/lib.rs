//! The HTTP collector: a RudderStack/Segment-compatible source.
//!
//! `POST /v1/{track,identify,page,screen,group,alias,batch}` with the write key as HTTP Basic
//! username, `POST /beacon/v1/batch?writeKey=` for page-unload sends, and `GET /health` for load
//! balancers. Nothing for operators is served here (metrics, readiness and the dashboard are on
//! the binary's admin listener): this port faces the internet. A request is answered 200 only once every event in it is durable in the event
//! log (synced to disk, or acknowledged by the Kafka brokers); one invalid event rejects the whole request, so a client retry never duplicates half of it.

mod error;
pub mod event;
mod ingest;
mod keys;
pub mod pixel;
mod source_config;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use sluice_eventlog::LogWriter;
use sluice_recent::RecentErrors;

pub use error::CollectError;
pub use event::MAX_EVENT_DEPTH;
pub use keys::{fingerprint, WriteKey};

/// Metric names of the collector.
pub mod metric {
    /// Counter{source, type}: events accepted (durable).
    pub const RECEIVED: &str = "sluice_events_received_total";
    /// Counter{source, field}: events accepted whose `timestamp`, `originalTimestamp` or `sentAt`
    /// was not an RFC 3339 date-time and was replaced by `receivedAt`.
    pub const TIMESTAMPS_REPAIRED: &str = "sluice_timestamps_repaired_total";
    /// Counter{source}: request body bytes accepted, as sent (compressed if gzip).
    pub const RECEIVED_BYTES: &str = "sluice_received_bytes_total";
    /// Counter{reason}: requests refused.
    pub const REJECTED: &str = "sluice_requests_rejected_total";
    /// Histogram: seconds from request start to durable acknowledgement.
    pub const REQUEST_SECONDS: &str = "sluice_request_duration_seconds";
}

/// `collector:` in the YAML config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Address the HTTP server binds, e.g. `127.0.0.1:8080`.
    pub listen: String,
    /// Largest request body accepted, as sent (checked while reading).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest body accepted after gunzip; stops gzip bombs before they reach memory.
    #[serde(default = "default_max_decompressed")]
    pub max_decompressed_bytes: usize,
    /// HTTP worker threads; defaults to the number of cores.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Seconds a client is told to wait (`Retry-After`) when the log is full.
    #[serde(default = "default_retry_after")]
    pub log_full_retry_after_secs: u64,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy you trust).
    #[serde(default)]
    pub trust_forwarded_for: bool,
}

fn default_max_body() -> usize {
    4 << 20
}
fn default_max_decompressed() -> usize {
    16 << 20
}
fn default_retry_after() -> u64 {
    5
}

impl CollectorConfig {
    pub fn new(listen: impl Into<String>) -> Self {
        CollectorConfig {
            listen: listen.into(),
            max_body_bytes: default_max_body(),
            max_decompressed_bytes: default_max_decompressed(),
            workers: None,
            log_full_retry_after_secs: default_retry_after(),
            trust_forwarded_for: false,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("listen {:?} is not an address like 127.0.0.1:8080: {e}", self.listen))?;
        if self.max_body_bytes == 0 || self.max_decompressed_bytes < self.max_body_bytes {
            return Err("max_decompressed_bytes must be at least max_body_bytes, and both above 0".into());
        }
        Ok(())
    }
}

/// A source in the YAML config: who may send, under which write keys, how fast.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Short id stored with every event (and used in S3 keys); `[A-Za-z0-9_-]`.
    pub id: String,
    /// Write keys that identify this source (HTTP Basic username, or `writeKey` in the body):
    /// plain strings, or `{id, key}` to name a key for scripts (`meta.write_key_id`).
    pub write_keys: Vec<WriteKey>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// Events per second per source, with a burst allowance (a token bucket, via `governor`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub events_per_second: u32,
    /// Events that may arrive at once; also the largest batch accepted. Default: 2 seconds' worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl SourceConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 64 || !self.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("source id {:?} must be 1-64 of [A-Za-z0-9_-]", self.id));
        }
        if self.write_keys.is_empty() {
            return Err(format!("source {}: write_keys must list at least one non-empty key", self.id));
        }
        for (i, k) in self.write_keys.iter().enumerate() {
            k.validate().map_err(|m| format!("source {}: write_keys: {m}", self.id))?;
            if self.write_keys[..i].iter().any(|earlier| earlier.id == k.id) {
                return Err(format!("source {}: write key id {:?} is used twice", self.id, k.id));
            }
        }
        if let Some(r) = &self.rate_limit {
            if r.events_per_second == 0 || r.burst == Some(0) {
                return Err(format!("source {}: rate_limit values must be above 0", self.id));
            }
        }
        Ok(())
    }
}

/// The rules for a `sources:` list, in one place for `sluice validate` and [`Collector::new`]: every
/// source is valid on its own, and no id or write key is used by two sources (a key must name one
/// source). `Err` carries the index of the offending source, so the config loader can point at it.
pub fn validate_sources(sources: &[SourceConfig]) -> Result<(), (usize, String)> {
    let mut ids = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    for (i, s) in sources.iter().enumerate() {
        s.validate().map_err(|m| (i, m))?;
        if !ids.insert(s.id.as_str()) {
            return Err((i, format!("id {:?} is used twice", s.id)));
        }
        if s.write_keys.iter().any(|k| !keys.insert(k.key.as_str())) {
            return Err((i, format!("a write key of {:?} is used twice", s.id)));
        }
    }
    Ok(())
}

pub(crate) struct Source {
    pub id: Arc<str>,
    pub limiter: Option<(DefaultDirectRateLimiter, u32)>,
    /// Metric handles made once here: resolving labels through the registry on every request
    /// costs an allocation and a hash lookup on the hottest path.
    pub received: [metrics::Counter; 6],
    pub received_bytes: metrics::Counter,
}

/// Shared state of all HTTP workers.
pub struct Collector {
    pub(crate) config: CollectorConfig,
    /// Write key -> its source and the key's id.
    pub(crate) by_key: HashMap<String, (Arc<Source>, Arc<str>)>,
    /// The log behind the contract: the embedded one or Kafka, the collector cannot tell.
    pub(crate) log: Arc<dyn LogWriter>,
    pub(crate) request_seconds: metrics::Histogram,
    /// Rejections land here too, with their message, for the admin dashboard.
    pub(crate) recent_errors: Arc<RecentErrors>,
}

impl Collector {
    pub fn new(
        config: CollectorConfig,
        sources: &[SourceConfig],
        log: impl LogWriter + 'static,
    ) -> Result<Collector, String> {
        validate_sources(sources).map_err(|(_, message)| format!("sources: {message}"))?;
        let log: Arc<dyn LogWriter> = Arc::new(log);
        let mut by_key = HashMap::new();
        for s in sources {
            let limiter = s.rate_limit.as_ref().map(|r| {
                let per_sec = NonZeroU32::new(r.events_per_second).expect("validated");
                let burst = r.burst.unwrap_or(r.events_per_second.saturating_mul(2));
                let quota = Quota::per_second(per_sec).allow_burst(NonZeroU32::new(burst).expect("validated"));
                (RateLimiter::direct(quota), burst)
            });
            let received = event::EventKind::ALL
                .map(|k| metrics::counter!(metric::RECEIVED, "source" => s.id.clone(), "type" => k.as_str()));
            let received_bytes = metrics::counter!(metric::RECEIVED_BYTES, "source" => s.id.clone());
            let source = Arc::new(Source { id: Arc::from(s.id.as_str()), limiter, received, received_bytes });
            for key in &s.write_keys {
                by_key.insert(key.key.clone(), (source.clone(), Arc::from(key.id.as_str())));
            }
        }
        for code in CollectError::CODES {
            metrics::counter!(metric::REJECTED, "reason" => code).increment(0);
        }
        let request_seconds = metrics::histogram!(metric::REQUEST_SECONDS);
        Ok(Collector { config, by_key, log, request_seconds, recent_errors: Arc::default() })
    }

    /// Shares the ring rejections are recorded in (the binary's, which the dashboard reads).
    pub fn with_recent_errors(mut self, ring: Arc<RecentErrors>) -> Self {
        self.recent_errors = ring;
        self
    }

    pub(crate) fn log_full_retry_after(&self) -> Duration {
        Duration::from_secs(self.config.log_full_retry_after_secs)
    }
}

/// Registers every route; used by the server and by tests (`actix_web::test::init_service`).
pub fn configure(collector: web::Data<Collector>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| ingest::routes(cfg, collector)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str, keys: &[&str]) -> SourceConfig {
        SourceConfig { id: id.into(), write_keys: keys.iter().map(|k| WriteKey::plain(*k)).collect(), rate_limit: None }
    }

    #[test]
    fn a_source_list_is_refused_at_the_first_source_that_breaks_a_rule() {
        assert_eq!(validate_sources(&[source("web", &["k1"]), source("app", &["k2", "k3"])]), Ok(()));
        let (at, message) = validate_sources(&[source("web", &["k1"]), source("bad id", &["k2"])]).unwrap_err();
        assert_eq!((at, message.contains("[A-Za-z0-9_-]")), (1, true), "{message}");
        let (at, message) = validate_sources(&[source("web", &["k1"]), source("web", &["k2"])]).unwrap_err();
        assert_eq!((at, message.as_str()), (1, "id \"web\" is used twice"));
        let (at, message) = validate_sources(&[source("web", &["k1"]), source("app", &["k2", "k1"])]).unwrap_err();
        assert_eq!((at, message.as_str()), (1, "a write key of \"app\" is used twice"));
    }
}
