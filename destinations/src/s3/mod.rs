//! The `s3` destination: one object per batch and source in an S3 (or S3-compatible) bucket.
//!
//! Keys are `{prefix}/{source}/{yyyy}/{mm}/{dd}/{hh}/{first_offset}-{last_offset}.{ext}` with the
//! offsets zero-padded to 20 digits (as in the `files` sink) so keys sort in log order; from a
//! partitioned log (Kafka) the name is `p{partition:04}-{first_offset}-{last_offset}`
//! (`Batch::span_name`). Everything
//! in a key comes from the batch itself, so a retried batch writes the same keys and overwrites its
//! earlier objects instead of duplicating them:
//! - the offsets are the lowest and highest of that source's events in the batch;
//! - the date and hour are the UTC `receivedAt` of the source's first event, not the delivery time,
//!   which would move a retry that crosses an hour boundary to another key. Only an event without
//!   a parsable `receivedAt` (the collector always sets one; a transform could drop it) falls back
//!   to the delivery time.
//!
//! A batch with events from several sources becomes one object per source. If one upload fails
//! the whole batch fails and its retry rewrites every object, which is harmless.
//!
//! Formats:
//! - `ndjson_gzip` (`.ndjson.gz`): the events exactly as received, one per line, gzipped. The
//!   object is stored as `Content-Type: application/gzip` *without* `Content-Encoding: gzip`: with
//!   that header, browsers, presigned-URL downloads and some SDKs gunzip transparently and hand
//!   back plain text under a `.gz` name, while Athena, Spark and Snowflake's COPY find the
//!   compression from the `.gz` suffix anyway.
//! - `parquet` (`.parquet`, Snappy): the warehouse columns, see [`encode`].
//!
//! Objects at or over `multipart_threshold_bytes` go up as a multipart upload (parts uploaded four
//! at a time); a failed or timed-out multipart upload is aborted. An upload cut short by a crash
//! stays incomplete in the bucket until a lifecycle rule (`AbortIncompleteMultipartUpload`)
//! removes it: set one on the bucket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Deserialize;
use tracing::debug;

use crate::{Batch, Delivered, DeliveryError, Destination, OutEvent, Prepared};

pub(crate) mod client;
pub mod encode;
mod members;
mod upload;

const MIB: u64 = 1024 * 1024;
/// S3's smallest allowed part (except the last one).
const MIN_PART_BYTES: u64 = 5 * MIB;
/// S3's largest allowed part.
const MAX_PART_BYTES: u64 = 5 * 1024 * MIB;

/// Settings of an `s3` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket the objects are written to. It must exist.
    pub bucket: String,
    /// Key prefix, without a trailing slash (one is trimmed). Empty: keys start with the source.
    #[serde(default)]
    pub prefix: String,
    /// AWS region. Unset: the standard chain (`AWS_REGION`, profile, instance metadata); with a
    /// custom `endpoint` and no region found, `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Custom endpoint for S3-compatible stores (MinIO, Ceph, moto), e.g. `http://127.0.0.1:9000`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Address buckets as `{endpoint}/{bucket}` instead of `{bucket}.{endpoint}`; most
    /// S3-compatible stores need this.
    #[serde(default)]
    pub force_path_style: bool,
    /// Static credentials. Unset: the standard chain (environment, profile, web identity,
    /// container and instance roles).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret for `access_key_id`; required with it.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Session token for temporary static credentials.
    #[serde(default)]
    pub session_token: Option<String>,
    /// Object format: `ndjson_gzip` (default) or `parquet`.
    #[serde(default)]
    pub format: S3Format,
    /// Gzip level of `ndjson_gzip` objects, 0 (none) to 9 (smallest). Unset: 6. Lower levels
    /// trade larger objects for less CPU (BENCHMARKS.md, issue 16, has a drain at level 1).
    #[serde(default)]
    pub gzip_level: Option<u32>,
    /// Objects of this size or more (after encoding) use a multipart upload. Default 16 MiB.
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold_bytes: u64,
    /// Size of each multipart part, 5 MiB to 5 GiB. Default 8 MiB. Raised automatically for an
    /// object that would need more than 10,000 parts.
    #[serde(default = "default_part_size")]
    pub part_size_bytes: u64,
    /// Longest the delivery of one batch (all its objects) may take, in milliseconds. Default 120 s.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_multipart_threshold() -> u64 {
    16 * MIB
}

fn default_part_size() -> u64 {
    8 * MIB
}

fn default_timeout_ms() -> u64 {
    120_000
}

/// How the events of an object are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum S3Format {
    /// Gzipped newline-delimited JSON, the events byte for byte (`.ndjson.gz`).
    #[default]
    NdjsonGzip,
    /// Apache Parquet with the warehouse columns (`.parquet`).
    Parquet,
}

impl S3Format {
    fn extension(self) -> &'static str {
        match self {
            S3Format::NdjsonGzip => "ndjson.gz",
            S3Format::Parquet => "parquet",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            S3Format::NdjsonGzip => "application/gzip",
            S3Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

impl S3Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return Err(format!("bucket {:?} must be a bucket name (no slashes)", self.bucket));
        }
        if let Some(endpoint) = &self.endpoint {
            let ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            if !ok {
                return Err(format!("endpoint {endpoint:?} must start with http:// or https://"));
            }
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err("access_key_id and secret_access_key must be set together".into())
            }
            (None, None) if self.session_token.is_some() => {
                return Err("session_token needs access_key_id and secret_access_key".into())
            }
            _ => {}
        }
        if !(MIN_PART_BYTES..=MAX_PART_BYTES).contains(&self.part_size_bytes) {
            return Err(format!(
                "part_size_bytes must be between {MIN_PART_BYTES} (5 MiB) and {MAX_PART_BYTES} (5 GiB), got {}",
                self.part_size_bytes
            ));
        }
        if let Some(level) = self.gzip_level {
            crate::check_gzip_level(level)?;
            if self.format == S3Format::Parquet {
                return Err("gzip_level applies to ndjson_gzip objects; parquet objects are compressed with snappy".into());
            }
        }
        if self.multipart_threshold_bytes == 0 {
            return Err("multipart_threshold_bytes must be greater than 0".into());
        }
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be greater than 0".into());
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Builds the client from the config and the standard AWS chain (see [`client::build`]).
    async fn client(&self) -> Result<aws_sdk_s3::Client, DeliveryError> {
        client::build(&client::Settings {
            region: self.region.as_deref(),
            endpoint: self.endpoint.as_deref(),
            force_path_style: self.force_path_style,
            access_key_id: self.access_key_id.as_deref(),
            secret_access_key: self.secret_access_key.as_deref(),
            session_token: self.session_token.as_deref(),
            timeout: self.timeout(),
        })
        .await
    }
}

/// Writes batches as objects in a bucket.
pub struct S3Destination {
    config: S3Config,
    client: aws_sdk_s3::Client,
}

impl S3Destination {
    pub async fn new(config: S3Config) -> Result<Self, DeliveryError> {
        config.validate().map_err(DeliveryError::Config)?;
        let client = config.client().await?;
        Ok(S3Destination { config, client })
    }

    /// The key of the object holding `source`'s events with offsets `first..=last`.
    fn key(&self, batch: &Batch, source: &str, hour: DateTime<Utc>, first: u64, last: u64) -> String {
        let prefix = self.config.prefix.trim_matches('/');
        let slash = if prefix.is_empty() { "" } else { "/" };
        format!(
            "{prefix}{slash}{source}/{:04}/{:02}/{:02}/{:02}/{}.{}",
            hour.year(),
            hour.month(),
            hour.day(),
            hour.hour(),
            batch.span_name(first, last),
            self.config.format.extension()
        )
    }

    /// Encodes the object of one source (`indexes` into the batch's events, in log order).
    async fn encode_source(&self, batch: &Batch, source: &str, indexes: Vec<usize>) -> Result<EncodedObject, DeliveryError> {
        let events: Vec<OutEvent> = indexes.iter().map(|&i| batch.events[i].clone()).collect();
        let hour = encode::received_at(&events[0].json).unwrap_or_else(Utc::now);
        let first = events.iter().map(|e| e.offset).min().unwrap_or(0);
        let last = events.iter().map(|e| e.offset).max().unwrap_or(0);
        let key = self.key(batch, source, hour, first, last);
        let format = self.config.format;
        let level = self.config.gzip_level.unwrap_or(encode::DEFAULT_GZIP_LEVEL);
        // Gzip and Parquet encoding of a large batch is CPU work that would stall the executor.
        let encoded = tokio::task::spawn_blocking(move || encode::encode(format, level, &events, Utc::now()))
            .await
            .map_err(|e| DeliveryError::temporary(format!("encoding task failed: {e}")))??;
        Ok(EncodedObject { indexes, key, first, last, encoded })
    }

    /// Encodes every source's object of `batch`: sources in name order, events in log order
    /// within each, so the same batch always yields the same objects.
    async fn encode_batch(&self, batch: &Batch) -> Result<Vec<EncodedObject>, DeliveryError> {
        let mut by_source: BTreeMap<Arc<str>, Vec<usize>> = BTreeMap::new();
        for (i, event) in batch.events.iter().enumerate() {
            by_source.entry(event.source.clone()).or_default().push(i);
        }
        let mut objects = Vec::with_capacity(by_source.len());
        for (source, indexes) in by_source {
            objects.push(self.encode_source(batch, &source, indexes).await?);
        }
        Ok(objects)
    }

    /// Uploads encoded objects one after another, all by `deadline`; returns the events they
    /// refused, as indexes into the batch.
    async fn upload_batch(&self, batch: &Batch, objects: &[EncodedObject], deadline: Instant) -> Result<Delivered, DeliveryError> {
        let mut delivered = Delivered::default();
        for o in objects {
            let count = o.indexes.len();
            let rejected = o.encoded.rejected.iter().map(|(i, reason)| (o.indexes[*i], reason.clone()));
            delivered.rejected.extend(rejected);
            if o.encoded.rejected.len() == count {
                // Nothing left to store; an empty Parquet file would only confuse readers.
                continue;
            }
            let object = upload::Object {
                bucket: &self.config.bucket,
                key: &o.key,
                content_type: self.config.format.content_type(),
                metadata: [
                    ("sluice-destination", batch.destination.to_string()),
                    ("sluice-events", (count - o.encoded.rejected.len()).to_string()),
                    ("sluice-first-offset", o.first.to_string()),
                    ("sluice-last-offset", o.last.to_string()),
                ],
            };
            let size = o.encoded.bytes.len();
            let started = Instant::now();
            upload::upload(&self.client, &object, o.encoded.bytes.clone(), &self.config, deadline).await?;
            debug!(
                destination = %batch.destination,
                bucket = %self.config.bucket,
                key = %o.key,
                events = count,
                bytes = size,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "s3 object written"
            );
        }
        Ok(delivered)
    }
}

/// One source's object of a batch, encoded and named, waiting to be uploaded.
struct EncodedObject {
    /// The source's events, as indexes into the batch.
    indexes: Vec<usize>,
    key: String,
    first: u64,
    last: u64,
    encoded: encode::Encoded,
}

#[async_trait]
impl Destination for S3Destination {
    async fn deliver(&self, batch: &Batch) -> Result<Delivered, DeliveryError> {
        // Encoding counts against the deadline too, so this destination's own timeout still
        // fires before the router's (`timeout` below).
        let deadline = Instant::now() + self.config.timeout();
        let objects = self.encode_batch(batch).await?;
        self.upload_batch(batch, &objects, deadline).await
    }

    async fn prepare(&self, batch: &Batch) -> Option<Prepared> {
        let objects = self.encode_batch(batch).await.ok()?;
        Some(Box::new(objects))
    }

    async fn deliver_prepared(&self, batch: &Batch, prepared: &Prepared) -> Result<Delivered, DeliveryError> {
        match prepared.downcast_ref::<Vec<EncodedObject>>() {
            Some(objects) => self.upload_batch(batch, objects, Instant::now() + self.config.timeout()).await,
            None => self.deliver(batch).await,
        }
    }

    /// The configured timeout plus grace for aborting a failed multipart upload, so this
    /// destination's own deadline fires first.
    fn timeout(&self) -> Duration {
        self.config.timeout() + Duration::from_secs(5)
    }
}

/// Every `messageId` in the sink's objects (read back for `sluice reconcile`): lists the bucket
/// under the prefix and reads `.ndjson.gz` and `.parquet` objects, eight at a time.
pub async fn landed_ids(config: &S3Config) -> Result<crate::LandedIds, DeliveryError> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    config.validate().map_err(DeliveryError::Config)?;
    let client = config.client().await?;
    let prefix = config.prefix.trim_matches('/');
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = client.list_objects_v2().bucket(&config.bucket);
        if !prefix.is_empty() {
            req = req.prefix(format!("{prefix}/"));
        }
        if let Some(t) = token.take() {
            req = req.continuation_token(t);
        }
        let page = req.send().await.map_err(|e| DeliveryError::temporary(format!("listing s3://{}/{prefix}: {e:?}", config.bucket)))?;
        for object in page.contents() {
            if let Some(key) = object.key() {
                if key.ends_with(".ndjson.gz") || key.ends_with(".parquet") {
                    keys.push(key.to_string());
                }
            }
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
            _ => break,
        }
    }
    let client = &client;
    let parts: Vec<crate::LandedIds> = stream::iter(keys)
        .map(|key| async move {
            let object = client
                .get_object()
                .bucket(&config.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| DeliveryError::temporary(format!("reading s3://{}/{key}: {e:?}", config.bucket)))?;
            let body = object
                .body
                .collect()
                .await
                .map_err(|e| DeliveryError::temporary(format!("reading s3://{}/{key}: {e}", config.bucket)))?
                .into_bytes();
            tokio::task::spawn_blocking(move || encode::read_ids(&key, body))
                .await
                .map_err(|e| DeliveryError::temporary(format!("decoding task failed: {e}")))?
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let mut all = crate::LandedIds::default();
    for part in parts {
        all.append(part);
    }
    Ok(all)
}
