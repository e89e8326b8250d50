//! State shared by the caller-facing `Client` and the background sender.
//!
//! Every accepted event gets a sequence number in acceptance order. The sender takes events in
//! that order and finishes a batch before it takes the next, so "everything up to `low_water`
//! is finished" is exact, which is what `flush()` waits for.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::config::{ClientConfig, Issue};

/// One serialized event with its place in the sequence.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub seq: u64,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Memory mode: events accepted and not yet taken by the sender.
    pub queue: VecDeque<Item>,
    pub queue_bytes: usize,
    /// The sequence number the next accepted event gets (= events accepted so far, durable mode
    /// counting those found on disk at start).
    pub next_seq: u64,
    /// Durable mode: the sequence number of the next record the sender has not read yet.
    pub read_seq: u64,
    /// First sequence number of the batch the sender holds, if any.
    pub inflight_first: Option<u64>,
    /// The sender sends partial batches at once while `low_water() < flush_until`.
    pub flush_until: u64,
    /// Durable mode: bytes of segment files on disk plus appends reserved but not yet written.
    pub disk_bytes: u64,
    /// Durable mode: the segment being appended to and its committed (fsynced) length.
    pub active_segment: u64,
    pub committed: u64,
    /// Durable mode: sealed segments still on disk, id -> length of their valid records.
    pub sealed: BTreeMap<u64, u64>,
    pub closed: bool,
}

impl State {
    /// Every event with a sequence number below this is finished (sent, rejected or dropped).
    pub fn low_water(&self, durable: bool) -> u64 {
        let mut w = self.next_seq;
        if durable {
            w = w.min(self.read_seq);
        } else if let Some(front) = self.queue.front() {
            w = w.min(front.seq);
        }
        if let Some(f) = self.inflight_first {
            w = w.min(f);
        }
        w
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
    pub unauthorized: AtomicU64,
    pub batches: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) struct Shared {
    pub config: ClientConfig,
    pub durable: bool,
    pub state: Mutex<State>,
    /// Sync callers waiting for room or for progress (flush).
    pub changed: Condvar,
    /// Async callers waiting for room.
    pub changed_async: Notify,
    /// Wakes the sender: new events, a flush, closing.
    pub wake: Notify,
    pub counters: Counters,
}

impl Shared {
    pub fn new(config: ClientConfig) -> Shared {
        Shared {
            durable: config.durable_dir.is_some(),
            config,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            changed_async: Notify::new(),
            wake: Notify::new(),
            counters: Counters::default(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters and a queue: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes everyone who waits on a state change (room, progress).
    pub fn notify_changed(&self) {
        self.changed.notify_all();
        self.changed_async.notify_waiters();
    }

    pub fn report(&self, issue: Issue) {
        match &issue {
            Issue::Rejected {
                message_id,
                status,
                reason,
                ..
            } => tracing::error!(%message_id, status, %reason, "sluice-analytics: event rejected by the collector; dropped"),
            Issue::Unauthorized { status, body } => tracing::error!(status, %body, "sluice-analytics: the collector refuses the write key; events are kept and retried"),
            Issue::Refused { status, body } => tracing::error!(status, %body, "sluice-analytics: the collector refuses the requests; events are kept and retried"),
            Issue::Dropped { count, reason } => tracing::warn!(count, %reason, "sluice-analytics: events dropped"),
        }
        if let Some(cb) = &self.config.on_issue {
            cb(&issue);
        }
    }
}
