//! The last few errors, kept in memory for the operator's dashboard: request rejections (from
//! the collector), delivery failures, dead letters and transformation failures (from the router).
//!
//! The collector and the router sit side by side and share nothing else, so the ring is its own
//! tiny crate rather than living in either. It is bounded (the oldest entry falls out) and a push
//! is one short mutex section with one string copy: cheap enough for paths that already build an
//! error response. Counting belongs to the metrics; this only answers "what went wrong lately, and
//! why".

use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::Mutex;

use serde::Serialize;

/// Longest reason kept, in bytes: enough for a destination's error, small enough that a flood of
/// large messages cannot grow memory.
const MAX_REASON: usize = 400;

/// One error as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentError {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// `rejected`, `delivery_failed`, `dead_lettered`, `transform_failed`, `log`.
    pub kind: &'static str,
    /// Who it concerns: a destination id, or the rejection code for requests.
    pub subject: String,
    pub reason: String,
}

pub struct RecentErrors {
    capacity: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    items: VecDeque<RecentError>,
    /// Pushed since start; lets a reader tell that entries fell out between two looks.
    pushed: u64,
}

impl Default for RecentErrors {
    fn default() -> Self {
        RecentErrors::new(50)
    }
}

impl RecentErrors {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        RecentErrors { capacity, inner: Mutex::new(Inner { items: VecDeque::with_capacity(capacity), pushed: 0 }) }
    }

    pub fn push(&self, kind: &'static str, subject: &str, reason: impl Display) {
        let mut reason = reason.to_string();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push('…');
        }
        let entry = RecentError { at_ms: chrono::Utc::now().timestamp_millis(), kind, subject: subject.to_string(), reason };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.items.len() == self.capacity {
            inner.items.pop_front();
        }
        inner.items.push_back(entry);
        inner.pushed += 1;
    }

    /// Newest first, and how many were ever pushed.
    pub fn snapshot(&self) -> (Vec<RecentError>, u64) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.items.iter().rev().cloned().collect(), inner.pushed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_up_to_capacity_and_cuts_long_reasons() {
        let ring = RecentErrors::new(3);
        for n in 0..5 {
            ring.push("rejected", "invalid_event", format!("error {n}"));
        }
        ring.push("delivery_failed", "hook", "é".repeat(300));
        let (items, pushed) = ring.snapshot();
        assert_eq!(pushed, 6);
        let reasons: Vec<&str> = items.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(&reasons[1..], ["error 4", "error 3"]);
        assert!(items[0].reason.len() <= MAX_REASON + '…'.len_utf8());
        assert!(items[0].reason.ends_with('…'));
    }
}
