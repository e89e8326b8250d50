//! The embedded event log: an append-only, checksummed, segmented file log on local disk.
//!
//! # Guarantees
//! - [`EventLog::append`] returns only after the records are written *and* `fdatasync`ed. Appends
//!   from concurrent callers are grouped by a single writer thread into one write + one sync
//!   (group commit), so many requests share the ~3 ms cost of an fsync.
//! - Every record is checksummed. On open, a torn or corrupt tail of the newest segment (a crash
//!   mid-write) is detected and cut off, and a warning says how many bytes were dropped. Nothing
//!   that an `append` acknowledged can be in that tail, because acknowledgement follows the sync.
//! - Each consumer (a destination) has its own cursor, persisted under `cursors/`. Consumers read
//!   independently; one that falls behind only holds back deletion of old segments.
//! - Sealed segments are deleted once every consumer the log knows of has committed past them.
//!   The log knows a consumer once it opened a reader, and every consumer handed to
//!   [`EventLog::hold_for`] (the binary hands it every destination in the config, enabled or
//!   not): a disabled destination holds segments from its persisted cursor, or from the oldest
//!   segment if it never had one, so re-enabling it delivers its whole backlog.
//! - A cursor file whose consumer is not in that list (a destination removed from the config, a
//!   "stale" cursor) holds segments too: nothing is dropped silently. `hold_for` warns about each
//!   with the bytes it holds; [`inspect`] lists cursors and [`drop_cursor`] deletes one (the
//!   `sluice log cursors` and `sluice log drop-cursor` commands). A running log notices a dropped
//!   stale cursor at its next commit and frees what only it held.
//! - When the bytes on disk would exceed the configured budget, appends fail with
//!   [`LogError::Full`] (the collector turns that into 503 + `Retry-After`) instead of growing
//!   without bound. A held backlog therefore ends in 503s, never in lost events.
//! - A record in synced data that fails its checksum is quarantined by the reader (see
//!   [`Reader::take_corrupt`]) instead of stopping it.
//!
//! # The contract
//! The collector, the router and the binary see the log only through the traits of
//! [`LogWriter`], [`LogSource`], [`LogReader`] and [`LogCommitter`] (see `contract.rs` for what
//! each promises, positions across partitions and how outputs are named from them); [`EventLog`]
//! implements them, and so does the Kafka backend.
//!
//! # On-disk format
//! ```text
//! <dir>/segments/<base offset, 20 digits>.log   segments, oldest first; the last is active
//! <dir>/cursors/<consumer>.offset               next offset the consumer will read, in decimal
//!
//! segment  = record*
//! record   = len:u32le crc:u32le payload[len]          crc = CRC-32 (IEEE) of payload
//! payload  = version:u8 (=3) source_len:u8 source key_id_len:u8 key_id head_len:varint head event
//!          | version:u8 (=2) source_len:u8 source key_id_len:u8 key_id event  (read, never written)
//!          | version:u8 (=1) source_len:u8 source event                       (read, never written)
//! head     = the event's head (type, name, user, messageId, receivedAt, integrations), see `head.rs`
//! event    = JSON object bytes, nested at most MAX_EVENT_DEPTH deep
//! ```
//! `key_id` names the write key the event was sent with (the id of a source's `write_keys`
//! entry, never the key itself). `head` holds what the router decides by, as the collector read
//! it while validating the event, so the router never parses an event only to route it
//! ([`EventHead`]). Logs written before version 3 stay readable: a version 1 or 2 record's head
//! is made by one parse of its event when it is read, and version 1 records read with an empty
//! write key id. The payload is framed apart from its encoding ([`payload`]), so a backend with
//! its own framing can store payloads as they are.
//! Kafka stores exactly `payload` as a message's value (see the `sluice-kafka` crate), so the
//! record format is one for both backends.
//!
//! Offsets are implicit: the n-th record of a segment (from 0) has offset `base + n`. A segment
//! name gives its first offset, so finding an offset means picking the segment and scanning it.

mod admin;
mod chunks;
mod contract;
mod cursor;
mod error;
mod head;
pub mod payload;
mod reader;
mod segment;
pub mod skim;
mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};

pub use admin::{drop_cursor, inspect, CursorState, LogState};
pub use contract::{LogCommitter, LogReader, LogSource, LogWriter, Position};
pub use error::LogError;
pub use head::{id_text, string_text, EventHead, EventKind};
pub use reader::{CorruptRecord, Reader};

/// Deepest nesting of objects and arrays an event in the log may have, the event's own object
/// counting as 1 (`{"a":{"b":[1]}}` is 3 deep). The collector refuses deeper events with a 400 and
/// the transformer's parser accepts exactly this much, so whatever the collector acknowledges the
/// router can read. 64 is far above real events (SDK payloads are under 10 deep) and leaves half
/// of the common JSON parsers' limit of 128 for what comes on top on the way out: a script that
/// wraps events, the array of a webhook batch, the receiver's own envelope.
pub const MAX_EVENT_DEPTH: usize = 64;

/// Metric names, kept together so dashboards and code agree.
pub mod metric {
    /// Histogram: seconds spent in one group write + fdatasync.
    pub const APPEND_SYNC_SECONDS: &str = "sluice_log_append_sync_seconds";
    /// Histogram: requests served by one group commit.
    pub const GROUP_COMMIT_REQUESTS: &str = "sluice_log_group_commit_requests";
    /// Gauge: bytes of all segments on disk.
    pub const SIZE_BYTES: &str = "sluice_log_size_bytes";
    /// Gauge: next offset to be written (records ever appended).
    pub const NEXT_OFFSET: &str = "sluice_log_next_offset";
    /// Gauge: `disk_budget_bytes`, so dashboards can draw the size against it.
    pub const DISK_BUDGET_BYTES: &str = "sluice_log_disk_budget_bytes";
}

/// Settings of the embedded log (`log:` in the YAML config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Directory holding segments and cursors. Created if missing. Empty in the YAML means
    /// `<data_dir>/log`, filled in by the config loader.
    #[serde(default)]
    pub dir: PathBuf,
    /// A segment is sealed and a new one started once it reaches this size.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Most bytes the segments may take on disk; appends beyond it are refused (503).
    #[serde(default = "default_disk_budget")]
    pub disk_budget_bytes: u64,
}

fn default_segment_bytes() -> u64 {
    64 << 20
}

fn default_disk_budget() -> u64 {
    10 << 30
}

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            segment_bytes: default_segment_bytes(),
            disk_budget_bytes: default_disk_budget(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 4096 {
            return Err(format!("segment_bytes must be at least 4096, got {}", self.segment_bytes));
        }
        if self.disk_budget_bytes < self.segment_bytes * 2 {
            return Err(format!(
                "disk_budget_bytes ({}) must be at least twice segment_bytes ({})",
                self.disk_budget_bytes, self.segment_bytes
            ));
        }
        Ok(())
    }
}

/// A record read back from the log.
#[derive(Debug, Clone)]
pub struct Record {
    /// The partition the record is in; `None` in the embedded log (one partition, unnamed).
    pub partition: Option<u32>,
    /// Offset in its partition.
    pub offset: u64,
    pub source: Arc<str>,
    /// Id of the write key the event came with; empty for version 1 records.
    pub write_key_id: Arc<str>,
    /// The event JSON exactly as appended.
    pub event: Bytes,
    /// The head, encoded ([`EventHead::decode`]); empty when the event is not a JSON object.
    head: Bytes,
}

impl Record {
    /// A record of `event` with its `head` (`None` when the event is not a JSON object).
    pub fn new(offset: u64, source: Arc<str>, write_key_id: Arc<str>, head: Option<&EventHead<'_>>, event: Bytes) -> Record {
        let head = head.map_or_else(Bytes::new, |h| {
            let mut out = Vec::with_capacity(32);
            h.encode(&event, &event, &mut out);
            out.into()
        });
        Record { partition: None, offset, source, write_key_id, event, head }
    }

    /// The event's head, as the collector read it (or as one parse of the event found it, for
    /// records older than version 3). `None` when the stored event is not a JSON object.
    pub fn head(&self) -> Option<EventHead<'_>> {
        if self.head.is_empty() {
            return None;
        }
        // Checked when the record was read, so this cannot fail.
        EventHead::decode(&self.head, &self.event).ok()
    }
}

/// Records encoded for one append. Encoding happens in the caller's task, so the writer thread
/// only copies finished bytes.
#[derive(Debug, Default)]
pub struct AppendBatch {
    buf: Vec<u8>,
    count: u64,
    /// Per record: where its payload and its user key are in `buf`.
    index: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

/// One record of an [`AppendBatch`], for backends that store payloads as they are.
#[derive(Debug, Clone, Copy)]
pub struct BatchRecord<'a> {
    /// The record's payload ([`payload`]).
    pub payload: &'a [u8],
    /// The user the event belongs to ([`EventHead::user`]), the key that keeps one user's
    /// events in order.
    pub user: &'a str,
}

impl AppendBatch {
    pub fn with_capacity(bytes: usize) -> Self {
        AppendBatch { buf: Vec::with_capacity(bytes), count: 0, index: Vec::new() }
    }

    /// Adds one event with its head (as the collector read it while validating the event).
    /// `origin` is the text the head was read from if `event` begins with it byte for byte (the
    /// request's event, to which the collector appends fields), else empty: the head's fields are
    /// stored as references into the event, found without a search where they borrow from it.
    /// `source` or `write_key_id` longer than 255 bytes is a programming error (config ids are
    /// short).
    pub fn push(&mut self, source: &str, write_key_id: &str, head: &EventHead<'_>, event: &[u8], origin: &[u8]) {
        self.push_encoded(source, write_key_id, Some(head), event, origin);
    }

    /// Adds one event whose head is not known yet: it is read from the event (for tools and
    /// tests; the collector knows the head and calls [`AppendBatch::push`]). An event that is not
    /// a JSON object is stored without a head.
    pub fn push_event(&mut self, source: &str, write_key_id: &str, event: &[u8]) {
        let head = EventHead::parse(event).ok();
        self.push_encoded(source, write_key_id, head.as_ref(), event, event);
    }

    fn push_encoded(&mut self, source: &str, write_key_id: &str, head: Option<&EventHead<'_>>, event: &[u8], origin: &[u8]) {
        let start = self.buf.len();
        let user = segment::encode_record(&mut self.buf, source, write_key_id, head, event, origin);
        self.index.push((start + segment::HEADER..self.buf.len(), user));
        self.count += 1;
    }

    /// The records in the order they were pushed.
    pub fn records(&self) -> impl Iterator<Item = BatchRecord<'_>> {
        self.index.iter().map(|(payload, user)| BatchRecord {
            payload: &self.buf[payload.clone()],
            user: std::str::from_utf8(&self.buf[user.clone()]).expect("written from a str"),
        })
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }
}

/// Where the durable end of the log is; published by the writer after every sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed {
    pub next_offset: u64,
    pub active_base: u64,
    pub active_len: u64,
}

/// State shared by the writer, readers and cursor commits.
pub(crate) struct Shared {
    pub dir: PathBuf,
    /// base offset -> length in bytes, for every segment on disk (the active one included).
    pub segments: Mutex<BTreeMap<u64, u64>>,
    pub size_bytes: AtomicU64,
    pub committed: watch::Receiver<Committed>,
    /// Last committed cursor of every consumer that opened a reader in this process or was
    /// handed to `hold_for`, and of stale cursor files: the slowest one decides deletion.
    pub cursors: Mutex<HashMap<String, u64>>,
    /// Consumers in `cursors` only because their file was found (not in the config): dropped
    /// from `cursors` once their file is gone.
    pub stale: Mutex<HashSet<String>>,
    pub budget_bytes: u64,
    /// The last group had appends refused for the budget; cleared by a group that fits or by a
    /// segment deletion (room was made, the next append will tell).
    pub refusing: AtomicBool,
    /// Why the last write failed; cleared by the next successful one (stays when poisoned).
    pub write_error: Mutex<Option<String>>,
    /// Read buffers the readers hand back and take again (`chunks.rs`).
    pub chunks: Arc<chunks::ChunkPool>,
}

impl Shared {
    pub fn segment_path(&self, base: u64) -> PathBuf {
        segment::segment_path(&self.dir, base)
    }
}

/// Handle to the log; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
    tx: mpsc::Sender<writer::Request>,
}

impl EventLog {
    /// Opens (or creates) the log, repairing a torn tail, and starts the writer thread.
    pub fn open(config: LogConfig) -> Result<EventLog, LogError> {
        config.validate().map_err(LogError::Config)?;
        let (shared, active) = segment::recover(&config)?;
        let (tx, rx) = mpsc::channel(4096);
        // Published at once: a restarted process must not show an empty log until the next write.
        metrics::gauge!(metric::DISK_BUDGET_BYTES).set(config.disk_budget_bytes as f64);
        metrics::gauge!(metric::SIZE_BYTES).set(shared.size_bytes.load(Ordering::Relaxed) as f64);
        metrics::gauge!(metric::NEXT_OFFSET).set(shared.committed.borrow().next_offset as f64);
        // Registered empty, so the first writes are a rate Prometheus can compute.
        let _ = (metrics::histogram!(metric::APPEND_SYNC_SECONDS), metrics::histogram!(metric::GROUP_COMMIT_REQUESTS));
        writer::spawn(config, shared.clone(), active, rx)?;
        Ok(EventLog { shared, tx })
    }

    /// Appends the batch durably; returns the offset of its first record.
    pub async fn append(&self, batch: AppendBatch) -> Result<u64, LogError> {
        if batch.is_empty() {
            return Ok(self.shared.committed.borrow().next_offset);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Request { batch, reply })
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Opens a reader for `consumer`, positioned at its persisted cursor (or at the oldest record
    /// still on disk for a consumer seen for the first time).
    pub fn reader(&self, consumer: &str) -> Result<Reader, LogError> {
        cursor::check_name(consumer)?;
        let oldest = *self.shared.segments.lock().unwrap().keys().next().unwrap_or(&0);
        let start = cursor::load(&self.shared.dir, consumer)?.unwrap_or(oldest).max(oldest);
        self.shared.cursors.lock().unwrap().insert(consumer.to_string(), start);
        Ok(Reader::new(self.shared.clone(), consumer.to_string(), start))
    }

    /// Persists `consumer`'s cursor: every record before `next_offset` has been handled. Deletes
    /// segments every consumer has passed.
    pub fn commit(&self, consumer: &str, next_offset: u64) -> Result<(), LogError> {
        cursor::store(&self.shared.dir, consumer, next_offset)?;
        self.shared.cursors.lock().unwrap().insert(consumer.to_string(), next_offset);
        self.forget_dropped_stale();
        segment::delete_passed(&self.shared)
    }

    /// Makes segment deletion wait for every consumer in `consumers` (the destinations of the
    /// config, enabled or not) and for every cursor file on disk, whether or not a reader is
    /// ever opened for it. A consumer without a cursor holds from the oldest segment. Returns
    /// the stale cursors (files whose consumer is not in `consumers`), each warned about.
    pub fn hold_for<S: AsRef<str>>(&self, consumers: &[S]) -> Result<Vec<CursorState>, LogError> {
        let oldest = *self.shared.segments.lock().unwrap().keys().next().unwrap_or(&0);
        let wanted: HashSet<&str> = consumers.iter().map(AsRef::as_ref).collect();
        let mut holds = Vec::new();
        for id in &wanted {
            cursor::check_name(id)?;
            holds.push((id.to_string(), cursor::load(&self.shared.dir, id)?.unwrap_or(oldest)));
        }
        let stale: Vec<(String, u64)> =
            cursor::list(&self.shared.dir)?.into_iter().filter(|(id, _)| !wanted.contains(id.as_str())).collect();
        {
            let mut cursors = self.shared.cursors.lock().unwrap();
            for (id, at) in holds.iter().chain(&stale) {
                cursors.entry(id.clone()).or_insert(*at);
            }
            self.shared.stale.lock().unwrap().extend(stale.iter().map(|(id, _)| id.clone()));
        }
        let segments: Vec<(u64, u64)> = self.shared.segments.lock().unwrap().iter().map(|(b, l)| (*b, *l)).collect();
        let next = self.next_offset();
        let states: Vec<CursorState> = stale
            .into_iter()
            .map(|(id, position)| CursorState::new(id, Some(position), &segments, next))
            .collect();
        for s in &states {
            tracing::warn!(
                cursor = %s.id, position = s.position.unwrap_or(0), held_bytes = s.held_bytes,
                "stale cursor: no destination in the config has this id, and it keeps log segments from being deleted; \
                 drop it with `sluice log drop-cursor {}` if that destination is gone for good", s.id
            );
        }
        Ok(states)
    }

    fn forget_dropped_stale(&self) {
        let mut stale = self.shared.stale.lock().unwrap();
        if stale.is_empty() {
            return;
        }
        let mut cursors = self.shared.cursors.lock().unwrap();
        stale.retain(|id| {
            let kept = cursor::exists(&self.shared.dir, id);
            if !kept {
                cursors.remove(id);
                tracing::info!(cursor = %id, "stale cursor dropped; segments it held can be deleted");
            }
            kept
        });
    }

    /// The persisted cursor of `consumer`, if it has one.
    pub fn cursor(&self, consumer: &str) -> Result<Option<u64>, LogError> {
        cursor::load(&self.shared.dir, consumer)
    }

    /// Offset the next appended record will get.
    pub fn next_offset(&self) -> u64 {
        self.shared.committed.borrow().next_offset
    }

    /// Bytes the segments take on disk.
    pub fn size_bytes(&self) -> u64 {
        self.shared.size_bytes.load(Ordering::Relaxed)
    }

    /// Number of segment files on disk.
    pub fn segment_count(&self) -> usize {
        self.shared.segments.lock().unwrap().len()
    }

    /// What readiness checks and the log-filling alert look at.
    pub fn health(&self) -> LogHealth {
        LogHealth {
            backend: "embedded",
            next_offset: Some(self.next_offset()),
            size_bytes: self.size_bytes(),
            budget_bytes: self.shared.budget_bytes,
            refusing_appends: self.shared.refusing.load(Ordering::Relaxed),
            write_error: self.shared.write_error.lock().unwrap().clone(),
        }
    }
}

/// The log's state as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogHealth {
    /// `embedded` or `kafka`: readiness words its reasons after it.
    pub backend: &'static str,
    /// Offset the next appended record gets (the records ever appended), where the backend has
    /// one number for it: the embedded log; `None` for Kafka (one per partition).
    pub next_offset: Option<u64>,
    pub size_bytes: u64,
    pub budget_bytes: u64,
    /// Appends are being refused because the disk budget is used up (ingest answers 503).
    pub refusing_appends: bool,
    /// The last write failed with this error (ingest answers 503 `log_unavailable`).
    pub write_error: Option<String>,
}

impl LogHealth {
    /// Share of the disk budget in use, 0.0 to 1.0.
    pub fn used_ratio(&self) -> f64 {
        self.size_bytes as f64 / self.budget_bytes.max(1) as f64
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod holds_tests;

#[cfg(test)]
mod format_tests;
