//! The log contract: what the collector, the router and the binary need from an event log,
//! whichever backend holds it (the embedded log of this crate, or Kafka in `sluice-kafka`).
//!
//! - [`LogWriter`]: append a batch; `Ok` means every record of it is durable (embedded: written
//!   and `fdatasync`ed; Kafka: acknowledged by every in-sync replica). A writer that cannot take
//!   more (disk budget used up, producer queue full, broker unreachable) answers an error at once
//!   instead of buffering without bound: [`LogError::is_backpressure`] tells the collector to
//!   answer 503 with `Retry-After`.
//! - [`LogSource`] opens a [`LogReader`] per consumer (one per destination). A reader reads from
//!   the consumer's committed position; the caller commits a [`Position`] once everything read
//!   before it was delivered or dead-lettered, through a [`LogCommitter`] it can use while the
//!   reader goes on reading. Reopening a reader resumes at the last commit, so a crash between a
//!   delivery and its commit re-delivers (at-least-once) and never skips.
//! - [`LogHealth`] is what readiness (`/ready`, 503) and alerts look at.
//!
//! # Positions
//! A record sits at an offset in a partition. The embedded log has a single unnamed partition
//! (`Record::partition == None`); Kafka records carry their topic partition. Output names built
//! from offsets (files, S3 keys, Snowflake stage directories; `Batch::span_name` in the
//! destinations crate) are `<first:020>-<last:020>` without a partition, exactly as before
//! partitions existed, and `p<partition:04>-<first:020>-<last:020>` with one. The router never mixes
//! partitions in one batch, so a retried batch gets the same name and overwrites.
//!
//! A [`Position`] is opaque to the router: the embedded log's is the next offset to read, a
//! Kafka reader's the next offset of every partition it has read from.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{AppendBatch, CorruptRecord, LogError, LogHealth, Record};

/// Where a consumer is: everything before it has been read (and, once committed, handled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position(Inner);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Inner {
    Offset(u64),
    Partitions(BTreeMap<u32, u64>),
}

impl Position {
    /// The position of a log with one partition: the next offset to read.
    pub fn offset(next: u64) -> Self {
        Position(Inner::Offset(next))
    }

    /// The next offset to read of every partition read from.
    pub fn partitions(next: BTreeMap<u32, u64>) -> Self {
        Position(Inner::Partitions(next))
    }

    pub fn as_offset(&self) -> Option<u64> {
        match &self.0 {
            Inner::Offset(o) => Some(*o),
            Inner::Partitions(_) => None,
        }
    }

    pub fn as_partitions(&self) -> Option<&BTreeMap<u32, u64>> {
        match &self.0 {
            Inner::Partitions(p) => Some(p),
            Inner::Offset(_) => None,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Offset(o) => write!(f, "{o}"),
            Inner::Partitions(p) => {
                let parts: Vec<String> = p.iter().map(|(p, o)| format!("p{p}:{o}")).collect();
                write!(f, "{}", parts.join(","))
            }
        }
    }
}

/// The write side of a log.
#[async_trait]
pub trait LogWriter: Send + Sync {
    /// Appends every record of `batch`; returns once all of them are durable. On an error none
    /// of them counts as acknowledged (some may be stored: the client's retry duplicates them,
    /// which at-least-once allows).
    async fn append(&self, batch: AppendBatch) -> Result<(), LogError>;

    fn health(&self) -> LogHealth;
}

/// The read side of a log: readers per consumer.
pub trait LogSource: Send + Sync {
    /// A reader for `consumer`, at its committed position (the oldest record for a new one).
    fn reader(&self, consumer: &str) -> Result<Box<dyn LogReader>, LogError>;

    /// Keeps records for every consumer in `consumers` (every destination of the config,
    /// disabled ones too) whether or not a reader is opened for it. A backend whose retention
    /// is not driven by its consumers (Kafka) has nothing to do.
    fn hold_for(&self, consumers: &[&str]) -> Result<(), LogError> {
        let _ = consumers;
        Ok(())
    }

    /// Records `consumer` has not committed yet, when the backend can tell without a round trip.
    fn lag(&self, consumer: &str) -> Option<u64>;

    fn health(&self) -> LogHealth;
}

/// One consumer's reader.
#[async_trait]
pub trait LogReader: Send {
    /// Up to `max_records` records (and about `max_bytes` of events; at least one record when
    /// any is available), in order within each partition. Waits up to `wait` for the first one;
    /// an empty result means none arrived in time.
    async fn read(&mut self, max_records: usize, max_bytes: usize, wait: Duration) -> Result<Vec<Record>, LogError>;

    /// Bytes the reads since the last call skipped as corrupt (see [`crate::Reader::take_corrupt`]);
    /// the caller dead-letters them before committing past them.
    fn take_corrupt(&mut self) -> Vec<CorruptRecord>;

    /// Where this reader is: committing it says every record read so far is handled.
    fn position(&self) -> Position;

    /// Records appended and not yet read, when known without a round trip.
    fn lag(&self) -> Option<u64>;

    /// A handle that commits for this reader's consumer while the reader goes on reading.
    fn committer(&self) -> Arc<dyn LogCommitter>;
}

/// Persists a consumer's position.
#[async_trait]
pub trait LogCommitter: Send + Sync {
    async fn commit(&self, position: &Position) -> Result<(), LogError>;
}

#[async_trait]
impl<T: LogWriter + ?Sized> LogWriter for Arc<T> {
    async fn append(&self, batch: AppendBatch) -> Result<(), LogError> {
        (**self).append(batch).await
    }
    fn health(&self) -> LogHealth {
        (**self).health()
    }
}

impl<T: LogSource + ?Sized> LogSource for Arc<T> {
    fn reader(&self, consumer: &str) -> Result<Box<dyn LogReader>, LogError> {
        (**self).reader(consumer)
    }
    fn hold_for(&self, consumers: &[&str]) -> Result<(), LogError> {
        (**self).hold_for(consumers)
    }
    fn lag(&self, consumer: &str) -> Option<u64> {
        (**self).lag(consumer)
    }
    fn health(&self) -> LogHealth {
        (**self).health()
    }
}

// ---- the embedded log behind the contract ----

#[async_trait]
impl LogWriter for crate::EventLog {
    async fn append(&self, batch: AppendBatch) -> Result<(), LogError> {
        crate::EventLog::append(self, batch).await.map(|_| ())
    }
    fn health(&self) -> LogHealth {
        crate::EventLog::health(self)
    }
}

impl LogSource for crate::EventLog {
    fn reader(&self, consumer: &str) -> Result<Box<dyn LogReader>, LogError> {
        let reader = crate::EventLog::reader(self, consumer)?;
        Ok(Box::new(EmbeddedReader { log: self.clone(), reader }))
    }
    fn hold_for(&self, consumers: &[&str]) -> Result<(), LogError> {
        crate::EventLog::hold_for(self, consumers).map(|_| ())
    }
    fn lag(&self, consumer: &str) -> Option<u64> {
        let cursor = self.cursor(consumer).ok().flatten().unwrap_or(0);
        Some(self.next_offset().saturating_sub(cursor))
    }
    fn health(&self) -> LogHealth {
        crate::EventLog::health(self)
    }
}

struct EmbeddedReader {
    log: crate::EventLog,
    reader: crate::Reader,
}

#[async_trait]
impl LogReader for EmbeddedReader {
    async fn read(&mut self, max_records: usize, max_bytes: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        self.reader.read(max_records, max_bytes, wait).await
    }
    fn take_corrupt(&mut self) -> Vec<CorruptRecord> {
        self.reader.take_corrupt()
    }
    fn position(&self) -> Position {
        Position::offset(self.reader.position())
    }
    fn lag(&self) -> Option<u64> {
        Some(self.reader.lag())
    }
    fn committer(&self) -> Arc<dyn LogCommitter> {
        Arc::new(EmbeddedCommitter { log: self.log.clone(), consumer: self.reader.consumer().to_string() })
    }
}

struct EmbeddedCommitter {
    log: crate::EventLog,
    consumer: String,
}

#[async_trait]
impl LogCommitter for EmbeddedCommitter {
    async fn commit(&self, position: &Position) -> Result<(), LogError> {
        let next = position.as_offset().ok_or_else(|| {
            LogError::Config(format!("the embedded log cannot commit a partitioned position ({position})"))
        })?;
        // Two fsyncs and a rename: off the async workers, which a drain into four destinations
        // (the webhook committing every 1,000 events) would otherwise stall for milliseconds
        // at a time.
        let (log, consumer) = (self.log.clone(), self.consumer.clone());
        tokio::task::spawn_blocking(move || log.commit(&consumer, next))
            .await
            .map_err(|e| LogError::Io(std::io::Error::other(format!("cursor commit task failed: {e}"))))?
    }
}
