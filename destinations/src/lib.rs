//! Destinations: where batches of events end up.
//!
//! Every destination implements one small trait, [`Destination`], and is built from one variant of
//! [`SinkConfig`]. The router owns batching, retries and dead letters; a destination only turns a
//! [`Batch`] into a write and classifies failures through [`DeliveryError::is_retriable`], so the
//! retry policy lives in one place.
//!
//! Delivery is at-least-once: a batch can be handed over again after a crash or a retry, so every
//! destination writes idempotently where it can (deterministic file and object names, MERGE on id).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;

mod error;
pub mod files;
pub mod readback;
pub mod s3;
pub mod snowflake;
pub mod webhook;

pub use error::DeliveryError;
pub use readback::LandedIds;

/// One event on its way to a destination, after filtering and transformation.
#[derive(Debug, Clone)]
pub struct OutEvent {
    /// Offset of the log record this event came from. A split can give several events one offset.
    pub offset: u64,
    /// Id of the source (from the config) whose write key sent the event.
    pub source: Arc<str>,
    /// The event as a JSON object, exactly as it will be written.
    pub json: Bytes,
}

/// A group of events delivered together.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Id of the destination (from the config).
    pub destination: Arc<str>,
    /// The log partition every event of the batch comes from (Kafka); `None` for the embedded
    /// log. A batch never spans partitions: offsets name it only within one.
    pub partition: Option<u32>,
    /// Events in log order. Never empty.
    pub events: Vec<OutEvent>,
}

impl Batch {
    /// Lowest log offset in the batch: with [`Batch::last_offset`] it names the batch
    /// deterministically, so a retried write overwrites instead of duplicating.
    pub fn first_offset(&self) -> u64 {
        self.events.iter().map(|e| e.offset).min().unwrap_or(0)
    }

    /// Highest log offset in the batch.
    pub fn last_offset(&self) -> u64 {
        self.events.iter().map(|e| e.offset).max().unwrap_or(0)
    }

    /// The part of an output's name that the offsets `first..=last` of this batch's partition
    /// give: `<first:020>-<last:020>` for the embedded log (as it always was, so existing
    /// directories and buckets keep their naming) and `p<partition:04>-<first:020>-<last:020>`
    /// for a partitioned log (Kafka), where offsets repeat across partitions. Deterministic: a
    /// retried batch gets the same name and overwrites.
    pub fn span_name(&self, first: u64, last: u64) -> String {
        match self.partition {
            None => format!("{first:020}-{last:020}"),
            Some(p) => format!("p{p:04}-{first:020}-{last:020}"),
        }
    }

    /// Sum of the events' JSON sizes.
    pub fn bytes(&self) -> usize {
        self.events.iter().map(|e| e.json.len()).sum()
    }
}

/// The event's `receivedAt`, if it has a parsable one. It names the hour a batch is filed under
/// (files, S3): taken from the batch rather than the clock, a retry that crosses an hour boundary
/// writes to the same place and overwrites instead of duplicating.
pub fn received_at(json: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    #[derive(serde::Deserialize)]
    struct Received<'a> {
        #[serde(rename = "receivedAt", borrow)]
        received_at: Option<std::borrow::Cow<'a, str>>,
    }
    let received: Received = serde_json::from_slice(json).ok()?;
    Some(chrono::DateTime::parse_from_rfc3339(&received.received_at?).ok()?.with_timezone(&chrono::Utc))
}

/// The gzip level of the sinks that gzip (files, S3 `ndjson_gzip`, Snowflake stage files) when
/// their config names none: zlib's default.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// The one rule for a sink's `gzip_level`, so every sink refuses the same values the same way.
pub(crate) fn check_gzip_level(level: u32) -> Result<(), String> {
    if level > 9 {
        return Err(format!("gzip_level must be 0..=9, got {level}"));
    }
    Ok(())
}

/// What a destination reports back for a batch it accepted.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Events the destination refused for good while taking the rest (index into
    /// `Batch::events`, reason). The router dead-letters them.
    pub rejected: Vec<(usize, String)>,
}

/// A batch made ready to write by [`Destination::prepare`]: what the destination encoded, in a
/// form only that destination reads back.
pub type Prepared = Box<dyn std::any::Any + Send + Sync>;

/// A place events are written to.
#[async_trait]
pub trait Destination: Send + Sync {
    /// Write one batch. `Ok` means every event not listed in `Delivered::rejected` is stored.
    async fn deliver(&self, batch: &Batch) -> Result<Delivered, DeliveryError>;

    /// The CPU work of writing `batch` that does not touch the destination (encoding), done
    /// ahead. The router calls it for the next batch while the previous one is still being
    /// written, so one batch's encoding overlaps the other's network time, and hands the result
    /// to every attempt of [`Destination::deliver_prepared`], so a retry does not encode again.
    /// `None` (the default, and the answer when encoding fails) means "nothing prepared": the
    /// router then calls [`Destination::deliver`], which reports any error the usual way.
    async fn prepare(&self, _batch: &Batch) -> Option<Prepared> {
        None
    }

    /// Writes `batch` from what [`Destination::prepare`] returned for it; same contract as
    /// [`Destination::deliver`].
    async fn deliver_prepared(&self, batch: &Batch, _prepared: &Prepared) -> Result<Delivered, DeliveryError> {
        self.deliver(batch).await
    }

    /// Longest a single `deliver` call may take before the router treats it as a timeout.
    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// The `sink:` block of a destination in the YAML config.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Gzip NDJSON files in a local directory.
    Files(files::FilesConfig),
    /// JSON to an HTTP endpoint, one request per batch or per event.
    Webhook(webhook::WebhookConfig),
    /// Gzip NDJSON or Parquet objects in an S3 (or S3-compatible) bucket.
    S3(s3::S3Config),
    /// Staged files loaded into Snowflake with COPY INTO and MERGE on id.
    /// Boxed: its config is by far the largest variant.
    Snowflake(Box<snowflake::SnowflakeConfig>),
}

impl SinkConfig {
    /// The `type:` name of the sink (`files`, `webhook`, `s3`, `snowflake`).
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Files(_) => "files",
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::S3(_) => "s3",
            SinkConfig::Snowflake(_) => "snowflake",
        }
    }

    /// Checks that need no I/O (used by `sluice validate`).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            SinkConfig::Files(c) => c.validate(),
            SinkConfig::Webhook(c) => c.validate(),
            SinkConfig::S3(c) => c.validate(),
            SinkConfig::Snowflake(c) => c.validate(),
        }
    }

    /// Builds the destination; this is where clients are created and connections may be made.
    pub async fn build(&self) -> Result<Arc<dyn Destination>, DeliveryError> {
        match self {
            SinkConfig::Files(c) => Ok(Arc::new(files::FilesDestination::new(c.clone())?)),
            SinkConfig::Webhook(c) => Ok(Arc::new(webhook::WebhookDestination::new(c.clone())?)),
            SinkConfig::S3(c) => Ok(Arc::new(s3::S3Destination::new(c.clone()).await?)),
            SinkConfig::Snowflake(c) => Ok(Arc::new(snowflake::SnowflakeDestination::new((**c).clone()).await?)),
        }
    }
}
