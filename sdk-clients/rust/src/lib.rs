//! `sluice-analytics`: a Segment-spec analytics client for Sluice's collector.
//!
//! ```no_run
//! use sluice_analytics::{Client, ClientConfig, Identity, Message};
//! let client = Client::new(ClientConfig::new("http://127.0.0.1:8080", "write-key")
//!     .durable_queue("/var/lib/chat/analytics-queue"))?;
//! client.send(Message::track(Identity::user("u42"), "Post Created")
//!     .properties(serde_json::json!({"channel_id": "c1"})))?;
//! client.shutdown(std::time::Duration::from_secs(10))?;
//! # Ok::<(), sluice_analytics::Error>(())
//! ```
//!
//! # Guarantees
//!
//! - **Ids and times are the client's.** `messageId` (UUID v4), `originalTimestamp` and
//!   `context.library` are set when the [`Message`] is built; `sentAt` is stamped on every
//!   attempt. A retried event keeps its `messageId`, so downstream deduplication works.
//! - **Order.** One request in flight per client, and events are taken in `send()` order, so the
//!   events of one user (of one calling thread) reach the collector in the order they were sent,
//!   through retries and through the splitting of a refused batch.
//! - **Retries.** Connection errors, timeouts, 408, 429 and 5xx are retried for as long as the
//!   client runs, with exponential backoff and jitter; `Retry-After` (seconds or HTTP date) is
//!   honoured as given, up to `max_retry_after`.
//! - **A bad event costs only itself.** The collector refuses a whole batch for one invalid
//!   event (400). The client splits the batch (around the index the collector names, else in
//!   halves) until the offender is alone, drops only it, and reports it
//!   ([`Issue::Rejected`], [`Stats::rejected`]); the others are delivered, in order. A 413 is
//!   handled the same way.
//! - **A wrong write key is loud, not lossy.** 401/403 are logged at error level, reported as
//!   [`Issue::Unauthorized`] and counted, and the events are kept and retried every
//!   `max_backoff`: a key fixed on the collector's side clears it without losing anything.
//! - **Bounded memory.** The memory queue holds at most `max_queue` events/bytes; when full,
//!   `send()` waits ([`QueueFullPolicy::Block`], the default) or drops the oldest events
//!   (counted and reported). An event over `max_event_bytes` is refused at `send()` with
//!   [`Error::EventTooLarge`]; a batch never exceeds the collector's 4 MiB body limit.
//! - **Durable queue (optional).** With [`ClientConfig::durable_queue`], `send()` returns only
//!   once the event is fsynced to an append-only file; concurrent `send()`s share one fsync
//!   (group commit). If the host process crashes or is killed, the next client opened on the
//!   directory resends every event not yet acknowledged (at least once: an event whose batch was
//!   acknowledged just before the crash may arrive twice, with the same `messageId`). When the
//!   queue's disk budget is used up, `send()` waits for room whatever the policy: an event a
//!   durable `send()` accepted is never dropped.
//! - **Flush and shutdown.** [`Client::flush`] waits until every event accepted before it is
//!   finished; [`Client::shutdown`] refuses new events, flushes within a deadline, and stops.
//!
//! # Runtime model
//!
//! The client owns one thread with a single-threaded tokio runtime (the sender, with reqwest and
//! rustls) and, in durable mode, one fsync thread. It does not need or use the caller's runtime:
//! [`Client::send`] is for sync code, [`Client::send_async`] awaits room and the fsync without
//! blocking a runtime thread.
//!
//! # On-disk format of the durable queue
//!
//! A directory with `NNNNNNNNNNNNNNNNNNNN.seg` files (increasing 20-digit ids) of records
//! `len: u32 LE | crc32(payload): u32 LE | payload (the event's JSON)`, an `ack` file
//! (`segment: u64 LE | offset: u64 LE | crc32: u32 LE`: everything before that position is
//! finished), and a `lock` file held by the one client using the directory. Every open starts a
//! new segment; a torn or corrupt record ends its segment (logged, cut); segments wholly before
//! the ack position are deleted. The ack file is replaced by rename without fsync: if it is
//! stale after a crash, already-delivered events are resent, never lost.

mod client;
mod config;
mod disk;
mod error;
mod message;
mod sender;
mod shared;

pub use client::{Client, Stats};
pub use config::{ClientConfig, Issue, IssueCallback, QueueFullPolicy, COLLECTOR_BODY_LIMIT};
pub use error::Error;
pub use message::{Identity, Message, MessageType, LIBRARY_NAME, LIBRARY_VERSION};
