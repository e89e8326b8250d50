//! The background sender: one task on the client's own runtime thread, one request in flight.
//!
//! It takes events in acceptance order into a batch (up to `max_batch_events` and
//! `max_batch_bytes`, or whatever arrived within `flush_interval` of the batch's first event),
//! posts it to `/v1/batch`, and takes the next batch only once this one is finished. That keeps
//! every user's events in order, including across retries.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Issue;
use crate::disk::{DiskQueue, Reader};
use crate::shared::{Counters, Item, Shared};

/// What one POST came to.
enum Answer {
    Delivered,
    /// Worth trying again, after `after` if the server said (`Retry-After`).
    Retry { after: Option<Duration>, why: String },
    /// 400/413: this batch as sent will never be accepted.
    Reject { status: u16, body: String },
    /// 401/403: the write key; or another 4xx that only a deployment fix clears.
    Refused { status: u16, body: String },
}

/// Delivery of a batch (or a part of one) ended.
enum Done {
    Delivered,
    Rejected { status: u16, body: String },
    Stopped,
}

pub(crate) struct Sender {
    pub shared: Arc<Shared>,
    pub http: reqwest::Client,
    pub disk: Option<(Arc<DiskQueue>, Reader)>,
    pub stop: watch::Receiver<bool>,
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = (when.with_timezone(&Utc) - Utc::now()).num_milliseconds().max(0);
    Some(Duration::from_millis(ms as u64))
}

/// The index the collector names in a 400 (`"message": "batch[3]: ..."`), if any.
fn offender_hint(body: &str) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let m = v.get("message")?.as_str()?;
    let rest = m.strip_prefix("batch[")?;
    rest[..rest.find(']')?].parse().ok()
}

impl Sender {
    pub async fn run(mut self) {
        loop {
            let Some((batch, ack)) = self.assemble().await else {
                return;
            };
            match self.deliver(batch).await {
                true => {
                    if let (Some((disk, _)), Some(pos)) = (&self.disk, ack) {
                        disk.ack(&self.shared, pos);
                    }
                    self.shared.lock().inflight_first = None;
                    self.shared.notify_changed();
                }
                false => return,
            }
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Takes whatever is available into `batch`; true when the batch cannot take the next event.
    fn take(&mut self, batch: &mut Vec<Item>, bytes: &mut usize) -> bool {
        let cfg = &self.shared.config;
        let (max_events, max_bytes) = (cfg.max_batch_events, cfg.max_batch_bytes);
        if let Some((_, reader)) = self.disk.as_mut() {
            *bytes += reader.read_into(&self.shared, batch, max_events, max_bytes, *bytes);
            return batch.len() >= max_events || reader.has_peeked();
        }
        let mut st = self.shared.lock();
        let mut took = false;
        while batch.len() < max_events {
            let Some(front) = st.queue.front() else { break };
            if !batch.is_empty() && *bytes + front.bytes.len() + 1 > max_bytes {
                drop(st);
                if took {
                    self.shared.notify_changed();
                }
                return true;
            }
            let item = st.queue.pop_front().expect("front exists");
            st.queue_bytes -= item.bytes.len();
            if batch.is_empty() {
                st.inflight_first = Some(item.seq);
            }
            *bytes += item.bytes.len() + 1;
            batch.push(item);
            took = true;
        }
        drop(st);
        if took {
            self.shared.notify_changed();
        }
        batch.len() >= max_events
    }

    /// The next batch to send, or `None` once stopped.
    async fn assemble(&mut self) -> Option<(Vec<Item>, Option<crate::disk::AckPos>)> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut deadline: Option<Instant> = None;
        loop {
            if self.stopped() {
                return None;
            }
            let full = self.take(&mut batch, &mut bytes);
            if !batch.is_empty() && deadline.is_none() {
                deadline = Some(Instant::now() + self.shared.config.flush_interval);
            }
            let hurry = {
                let st = self.shared.lock();
                st.closed || batch.first().is_some_and(|f| st.flush_until > f.seq)
            };
            let due = deadline.is_some_and(|d| Instant::now() >= d);
            if !batch.is_empty() && (full || hurry || due) {
                let ack = self.disk.as_ref().map(|(_, r)| r.position());
                return Some((batch, ack));
            }
            let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)));
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = self.shared.wake.notified() => {}
                _ = sleep => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// Delivers `batch`, isolating events the collector refuses; false when stopped first.
    async fn deliver(&mut self, batch: Vec<Item>) -> bool {
        let mut parts: VecDeque<Vec<Item>> = VecDeque::from([batch]);
        while let Some(part) = parts.pop_front() {
            match self.send_with_retries(&part).await {
                Done::Delivered => {
                    Counters::add(&self.shared.counters.sent, part.len() as u64);
                    Counters::add(&self.shared.counters.batches, 1);
                }
                Done::Stopped => return false,
                Done::Rejected { status, body } if part.len() == 1 => {
                    let event: serde_json::Value =
                        serde_json::from_slice(&part[0].bytes).unwrap_or(serde_json::Value::Null);
                    let message_id = event["messageId"].as_str().unwrap_or_default().to_string();
                    Counters::add(&self.shared.counters.rejected, 1);
                    self.shared.report(Issue::Rejected {
                        message_id,
                        status,
                        reason: body,
                        event,
                    });
                }
                Done::Rejected { status, body } => {
                    // Split so the valid events still go, in order: around the event the collector
                    // named when it did, else in halves.
                    let mut part = part;
                    let pieces = match offender_hint(&body).filter(|i| *i < part.len() && status == 400) {
                        Some(i) => {
                            let after = part.split_off(i + 1);
                            let bad = part.split_off(i);
                            vec![part, bad, after]
                        }
                        None => {
                            let second = part.split_off(part.len() / 2);
                            vec![part, second]
                        }
                    };
                    for p in pieces.into_iter().rev().filter(|p| !p.is_empty()) {
                        parts.push_front(p);
                    }
                }
            }
        }
        true
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cfg = &self.shared.config;
        let base = cfg
            .initial_backoff
            .saturating_mul(1u32 << attempt.min(20))
            .min(cfg.max_backoff);
        // Half fixed, half random: spreads clients that failed together without ever retrying
        // sooner than half the schedule.
        let half = base / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    async fn send_with_retries(&self, part: &[Item]) -> Done {
        let cfg = &self.shared.config;
        let mut attempt = 0u32;
        loop {
            let mut stop = self.stop.clone();
            let answer = tokio::select! {
                a = self.post(part) => a,
                _ = stop.wait_for(|s| *s) => return Done::Stopped,
            };
            let wait = match answer {
                Answer::Delivered => return Done::Delivered,
                Answer::Reject { status, body } => return Done::Rejected { status, body },
                Answer::Retry { after, why } => {
                    let wait = match after {
                        Some(a) => a.min(cfg.max_retry_after),
                        None => self.backoff(attempt),
                    };
                    tracing::warn!(events = part.len(), attempt, reason = %why, wait_ms = wait.as_millis() as u64, "sluice-analytics: batch not accepted; will retry");
                    wait
                }
                Answer::Refused { status, body } => {
                    if status == 401 || status == 403 {
                        Counters::add(&self.shared.counters.unauthorized, 1);
                        self.shared.report(Issue::Unauthorized { status, body });
                    } else {
                        self.shared.report(Issue::Refused { status, body });
                    }
                    cfg.max_backoff
                }
            };
            Counters::add(&self.shared.counters.retried, 1);
            attempt = attempt.saturating_add(1);
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return Done::Stopped,
            }
        }
    }

    fn body(&self, part: &[Item]) -> Vec<u8> {
        let mut json = Vec::with_capacity(part.iter().map(|i| i.bytes.len() + 1).sum::<usize>() + 64);
        json.extend_from_slice(b"{\"batch\":[");
        for (n, item) in part.iter().enumerate() {
            if n > 0 {
                json.push(b',');
            }
            json.extend_from_slice(&item.bytes);
        }
        // sentAt is stamped per attempt: the collector corrects the client's clock with
        // receivedAt - (sentAt - originalTimestamp), so a retry must not reuse an old one.
        let sent_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        json.extend_from_slice(format!("],\"sentAt\":\"{sent_at}\"}}").as_bytes());
        if !self.shared.config.gzip {
            return json;
        }
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(json.len() / 4),
            flate2::Compression::fast(),
        );
        gz.write_all(&json).expect("writing to a Vec cannot fail");
        gz.finish().expect("writing to a Vec cannot fail")
    }

    async fn post(&self, part: &[Item]) -> Answer {
        let cfg = &self.shared.config;
        let mut req = self
            .http
            .post(format!("{}/v1/batch", cfg.endpoint))
            .basic_auth(&cfg.write_key, Some(""))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(cfg.request_timeout);
        if cfg.gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let resp = match req.body(self.body(part)).send().await {
            Ok(r) => r,
            Err(e) => {
                return Answer::Retry {
                    after: None,
                    why: format!("request failed: {e}"),
                }
            }
        };
        let status = resp.status().as_u16();
        let after = retry_after(&resp);
        if resp.status().is_success() {
            return Answer::Delivered;
        }
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(2000).collect();
        match status {
            400 | 413 => Answer::Reject { status, body },
            408 | 429 | 500..=599 => Answer::Retry {
                after,
                why: format!("HTTP {status}: {body}"),
            },
            _ => Answer::Refused { status, body },
        }
    }
}
