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
    pub fn new(config: AlertsConfig) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("static client config");
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
