//! Alerts to a chat incoming webhook (Mattermost, Slack: `{"text": "..."}`), throttled per
//! destination and kind so an outage produces a message, not a flood.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AlertsConfig;

pub struct Alerter {
    config: AlertsConfig,
    client: reqwest::Client,
    last_sent: Mutex<HashMap<(String, &'static str), Instant>>,
    throttled: AtomicU64,
}

impl Alerter {
    /// Every kind of alert, for the `kind` label of the alerts counter.
    pub const KINDS: [&'static str; 6] =
        ["failing", "dead_letter", "corrupt_record", "worker_panic", "log_nearly_full", "log_full"];

    /// The alerts counter at 0 for every kind, so dashboards show "none sent" rather than no
    /// data (also without an `alerts:` block) and a first alert is an increase.
    pub fn register_metrics() {
        for kind in Self::KINDS {
            metrics::counter!(crate::metric::ALERTS_SENT, "kind" => kind).increment(0);
        }
    }

    pub fn new(config: AlertsConfig) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("static client config");
        Self::register_metrics();
        Alerter { config, client, last_sent: Mutex::new(HashMap::new()), throttled: AtomicU64::new(0) }
    }

    pub fn failing_after(&self) -> Duration {
        Duration::from_secs(self.config.failing_after_secs)
    }

    /// Alerts held back so far because one of the same kind and destination went out within
    /// `min_interval_secs` (also the `sluice_alerts_throttled_total` metric).
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Posts `text` unless an alert of the same kind for this destination went out recently.
    pub async fn notify(&self, destination: &str, kind: &'static str, text: String) {
        {
            let mut last = self.last_sent.lock().unwrap();
            let key = (destination.to_string(), kind);
            let interval = Duration::from_secs(self.config.min_interval_secs);
            if last.get(&key).is_some_and(|t| t.elapsed() < interval) {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metric::ALERTS_THROTTLED, "kind" => kind).increment(1);
                return;
            }
            last.insert(key, Instant::now());
        }
        let body = serde_json::json!({ "text": text, "username": "sluice" });
        match self.client.post(&self.config.webhook_url).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                metrics::counter!(crate::metric::ALERTS_SENT, "kind" => kind).increment(1);
                return;
            }
            Ok(r) => tracing::warn!(status = %r.status(), destination, "alert webhook refused the alert"),
            Err(error) => tracing::warn!(%error, destination, "could not post the alert"),
        }
        // Not delivered: forget the mark, so the next alert of this kind is not held back by one
        // nobody saw.
        self.last_sent.lock().unwrap().remove(&(destination.to_string(), kind));
    }
}

/// Above this share of the disk budget the log counts as nearly full: ingest is about to answer
/// 503 `log_full`, and someone should look before it does.
pub const LOG_NEARLY_FULL: f64 = 0.9;

/// Watches the log's disk budget once a second and posts when it passes [`LOG_NEARLY_FULL`] and
/// when appends are refused (ingest answers 503), each kind throttled like the other alerts. Runs
/// until its task is dropped.
pub async fn watch_log(log: impl sluice_eventlog::LogWriter + 'static, alerts: Option<std::sync::Arc<Alerter>>, recent: std::sync::Arc<sluice_recent::RecentErrors>) {
    // 0 healthy, 1 nearly full, 2 refusing appends; the ring is told when the level rises, the
    // chat on every check at a raised level (the Alerter's interval keeps that to one message).
    let mut level = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let h = log.health();
        let pct = h.used_ratio() * 100.0;
        let (now, kind, text) = if h.refusing_appends {
            (2, "log_full", format!(
                ":no_entry: Sluice's event log is full ({} of {} bytes, {pct:.0}%): ingest answers 503 `log_full` and clients must retry. A destination that does not keep up holds old segments: check lag and failing destinations.",
                h.size_bytes, h.budget_bytes
            ))
        } else if h.used_ratio() >= LOG_NEARLY_FULL {
            (1, "log_nearly_full", format!(
                ":warning: Sluice's event log is at {pct:.0}% of its disk budget ({} of {} bytes): ingest answers 503 once it is full. Check the lag of the destinations.",
                h.size_bytes, h.budget_bytes
            ))
        } else {
            level = 0;
            continue;
        };
        if now > level {
            recent.push("log", kind, format_args!("{pct:.0}% of the disk budget ({} of {} bytes) in use", h.size_bytes, h.budget_bytes));
            tracing::warn!(used_bytes = h.size_bytes, budget_bytes = h.budget_bytes, refusing = h.refusing_appends, "the event log is filling up");
        }
        level = now;
        if let Some(alerts) = &alerts {
            alerts.notify("event-log", kind, text).await;
        }
    }
}
