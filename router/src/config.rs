//! The `destinations:` and `alerts:` blocks of the YAML config.

use std::time::Duration;

use serde::Deserialize;
use sluice_destinations::SinkConfig;

pub use crate::filter::FilterConfig;

/// One destination: where its events go and how they get there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Unique id; also the name of its cursor in the event log. `[A-Za-z0-9_-]`.
    pub id: String,
    /// Set to false to keep a destination in the file without delivering to it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Ids of transformations (from `transformations:`) applied in order.
    #[serde(default)]
    pub transformations: Vec<String>,
    #[serde(default)]
    pub filter: FilterConfig,
    /// Ids of the sources (from `sources:`) whose events this destination takes; empty takes
    /// every source. One source per destination gives each its own raw schema or bucket.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Independent delivery lanes: events of one user always take the same lane (so they stay in
    /// order) while different users are delivered in parallel.
    #[serde(default = "default_lanes")]
    pub lanes: usize,
    /// The destination itself (`type: files | webhook | s3 | snowflake` and its settings).
    pub sink: SinkConfig,
}

fn yes() -> bool {
    true
}
fn default_lanes() -> usize {
    4
}

/// When a batch is handed to the destination: whichever limit is reached first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Longest a batch waits to fill, in milliseconds: from when its first event was read, and
    /// never past this long after that event was received (`receivedAt`), so events that already
    /// waited in the log (a backlog's last batch) go out as soon as the reader has caught up.
    #[serde(default = "default_max_age_ms")]
    pub max_age_ms: u64,
}

fn default_max_events() -> usize {
    1000
}
fn default_max_bytes() -> usize {
    4 << 20
}
fn default_max_age_ms() -> u64 {
    1000
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_events: default_max_events(), max_bytes: default_max_bytes(), max_age_ms: default_max_age_ms() }
    }
}

/// How long a failing batch is retried before it is dead-lettered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Wait before the second attempt; doubles each time (with jitter) up to `max_backoff_ms`.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Attempts in all, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// No new attempt starts later than this after the first one.
    #[serde(default = "default_max_retry_age")]
    pub max_age_secs: u64,
}

fn default_initial_backoff() -> u64 {
    500
}
fn default_max_backoff() -> u64 {
    60_000
}
fn default_max_attempts() -> u32 {
    12
}
fn default_max_retry_age() -> u64 {
    3600
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: default_initial_backoff(),
            max_backoff_ms: default_max_backoff(),
            max_attempts: default_max_attempts(),
            max_age_secs: default_max_retry_age(),
        }
    }
}

impl RetryConfig {
    /// Exponential backoff with equal jitter: a wait drawn between half the capped exponential
    /// step and the whole of it. The jitter spreads retries of many lanes so they do not hit a
    /// recovering destination at the same instant; the fixed half (unlike full jitter, which may
    /// draw zero) keeps a retry from following its failure at once.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.initial_backoff_ms.saturating_mul(1u64 << attempt.min(20)).min(self.max_backoff_ms);
        let low = cap / 2;
        Duration::from_millis(low + rand::random_range(0..=cap - low))
    }
}

/// `alerts:`: where failures are announced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// A Mattermost or Slack incoming webhook; receives `{"text": "..."}`.
    pub webhook_url: String,
    /// Alert when a destination has been failing for this long.
    #[serde(default = "default_failing_after")]
    pub failing_after_secs: u64,
    /// At most one alert per destination and kind within this interval.
    #[serde(default = "default_alert_interval")]
    pub min_interval_secs: u64,
}

fn default_failing_after() -> u64 {
    300
}
fn default_alert_interval() -> u64 {
    300
}

impl DestinationConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 64 || !self.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("destination id {:?} must be 1-64 of [A-Za-z0-9_-]", self.id));
        }
        if self.batch.max_events == 0 || self.batch.max_bytes == 0 {
            return Err(format!("destination {}: batch.max_events and batch.max_bytes must be above 0", self.id));
        }
        if self.lanes == 0 || self.lanes > 256 {
            return Err(format!("destination {}: lanes must be 1..=256", self.id));
        }
        if self.retry.max_attempts == 0 {
            return Err(format!("destination {}: retry.max_attempts must be at least 1", self.id));
        }
        self.sink.validate().map_err(|e| format!("destination {}: {e}", self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_waits_between_half_and_all_of_the_capped_step() {
        let retry = RetryConfig { initial_backoff_ms: 100, max_backoff_ms: 1_000, ..RetryConfig::default() };
        for (attempt, cap) in [(0, 100), (1, 200), (3, 800), (4, 1_000), (30, 1_000)] {
            for _ in 0..200 {
                let wait = retry.backoff(attempt).as_millis() as u64;
                assert!((cap / 2..=cap).contains(&wait), "attempt {attempt}: {wait} ms not in {}..={cap}", cap / 2);
            }
        }
    }
}
