//! One test body every sink runs against its real backend: files in a temporary directory, the
//! webhook against a local HTTP receiver, S3 against moto, Snowflake against fakesnow (start them
//! with `scripts/backends.sh start`; the tests fail, not skip, when they are down).
//!
//! The promises checked are the ones the router builds on (`destinations/src/lib.rs`):
//! - a batch delivered once lands exactly once, read back through the sink's own read-back
//!   (`landed_ids`, what `sluice reconcile` uses);
//! - the same batch delivered again (the router's retry) does not duplicate;
//! - failures the backend can really produce are classified: temporary ones retriable, permanent
//!   ones not;
//! - events refused one by one are reported in `Delivered::rejected` (by their index) and the
//!   rest of the batch lands;
//! - a large batch is split as the sink documents it, and still lands exactly once.
//!
//! A new sink gets all of this by implementing [`Target`] and adding one `conformance!` line.
//! A case that does not apply to a sink is named in that line with the reason; the suite checks
//! that the target agrees (it cannot offer the case) and prints the reason when it runs.

#[path = "support/fakesnow.rs"]
mod fakesnow;
#[path = "support/moto.rs"]
mod moto;
#[path = "support/receiver.rs"]
mod receiver;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::json;
use sluice_destinations::files::{FilesConfig, FilesDestination};
use sluice_destinations::readback::{format_uuid, parse_uuid};
use sluice_destinations::s3::{S3Config, S3Destination, S3Format};
use sluice_destinations::snowflake::{SnowflakeConfig, SnowflakeDestination};
use sluice_destinations::webhook::{WebhookConfig, WebhookDestination, WebhookMethod, WebhookMode};
use sluice_destinations::{Batch, Destination, LandedIds, OutEvent};

use receiver::{Receiver, Reply};

/// Events in the large batch: enough for Snowflake's `max_file_bytes` and the S3 multipart
/// threshold below to split it.
const LARGE: usize = 3_000;

/// A sink under test, with a fresh, empty place to write to (directory, receiver, bucket,
/// database) so the cases run in parallel.
trait Target: Sized {
    async fn new() -> Self;

    fn destination(&self) -> &dyn Destination;

    /// Every `messageId` that landed, with repeats; `objects` counts what holds them (files,
    /// requests, objects, tables).
    async fn landed(&self) -> LandedIds;

    /// Whether delivering a batch again replaces what the first delivery wrote. `false` for a
    /// sink that cannot take a write back (it must then list `retry_does_not_duplicate`).
    const RETRY_OVERWRITES: bool;

    /// Destinations of this sink that fail with a retriable error, each with what it shows.
    async fn temporary_failures(&self) -> Vec<Failure>;

    /// Destinations of this sink that fail for good; `None` when none can (the line says why).
    async fn permanent_failures(&self) -> Option<Vec<Failure>>;

    /// An event this sink refuses on its own while taking the rest of its batch (`id` is its
    /// `messageId`, where it has one); `None` when it refuses nothing one by one.
    fn refused_event(&self, id: &str) -> Option<Bytes>;

    /// How many objects (see [`Target::landed`]) the documented split makes of `batch`; `None`
    /// when the read-back cannot see the split (the line says why).
    fn objects_for(&self, batch: &Batch) -> Option<u64>;
}

/// A destination set up to fail, and what the failure stands for.
struct Failure {
    what: String,
    destination: Box<dyn Destination>,
    /// What must live as long as the destination (a scratch directory, a database).
    _keep: Option<Box<dyn std::any::Any>>,
}

impl Failure {
    fn new(what: impl Into<String>, destination: impl Destination + 'static) -> Failure {
        Failure { what: what.into(), destination: Box::new(destination), _keep: None }
    }

    fn keeping(mut self, keep: impl std::any::Any) -> Failure {
        self._keep = Some(Box::new(keep));
        self
    }
}

/// One `mod` of tests per sink. `not_applicable` names the cases the sink cannot run, each with
/// the reason.
macro_rules! conformance {
    ($name:ident: $target:ty $(, not_applicable { $($case:ident: $why:literal),* $(,)? })? $(,)?) => {
        mod $name {
            use super::*;
            const NOT_APPLICABLE: &[(&str, &str)] = &[$($((stringify!($case), $why)),*)?];
            #[tokio::test(flavor = "multi_thread")]
            async fn delivered_once_lands_once() {
                cases::delivered_once_lands_once::<$target>(NOT_APPLICABLE).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn retry_does_not_duplicate() {
                cases::retry_does_not_duplicate::<$target>(NOT_APPLICABLE).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn temporary_failures_are_retriable() {
                cases::temporary_failures_are_retriable::<$target>(NOT_APPLICABLE).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn permanent_failures_are_not_retriable() {
                cases::permanent_failures_are_not_retriable::<$target>(NOT_APPLICABLE).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn refused_events_are_reported_one_by_one() {
                cases::refused_events_are_reported_one_by_one::<$target>(NOT_APPLICABLE).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn large_batch_splits_as_documented() {
                cases::large_batch_splits_as_documented::<$target>(NOT_APPLICABLE).await
            }
        }
    };
}

conformance!(files: Files, not_applicable {
    permanent_failures_are_not_retriable: "every failure of a local write (disk full, a path in the way, permissions) can be fixed by an operator, so all are temporary",
    refused_events_are_reported_one_by_one: "the files sink writes each event's bytes as they are; it refuses none",
});
conformance!(webhook_batch_mode: Webhook<false>, not_applicable {
    retry_does_not_duplicate: "a receiver cannot be made to forget a request: a retried batch is sent again with the same messageIds, which receivers deduplicate on (README, webhook); the suite checks exactly that",
    refused_events_are_reported_one_by_one: "batch mode sends one request per batch; a refusal refuses the whole batch (a permanent failure)",
});
conformance!(webhook_event_mode: Webhook<true>, not_applicable {
    retry_does_not_duplicate: "a receiver cannot be made to forget a request: a retried batch is sent again with the same messageIds, which receivers deduplicate on (README, webhook); the suite checks exactly that",
    permanent_failures_are_not_retriable: "event mode turns a refusal (4xx) into that event's rejection, not a failure of the batch; see refused_events_are_reported_one_by_one",
});
conformance!(s3_ndjson: S3<false>, not_applicable {
    refused_events_are_reported_one_by_one: "ndjson_gzip stores each event's bytes as they are; it refuses none",
});
conformance!(s3_parquet: S3<true>);
conformance!(snowflake: Snowflake, not_applicable {
    large_batch_splits_as_documented: "max_file_bytes splits a table's rows into several staged files, which are removed after the load, so the read-back cannot count them; the suite still checks that the split batch lands exactly once",
});

/// The test bodies, the same for every sink.
mod cases {
    use super::*;

    const CASES: [&str; 6] = [
        "delivered_once_lands_once",
        "retry_does_not_duplicate",
        "temporary_failures_are_retriable",
        "permanent_failures_are_not_retriable",
        "refused_events_are_reported_one_by_one",
        "large_batch_splits_as_documented",
    ];

    /// Whether `case` runs in full: the target and its line must agree on that.
    fn applies<T>(case: &str, not_applicable: &[(&str, &str)], target_offers_it: bool) -> bool {
        let sink = std::any::type_name::<T>();
        for (listed, _) in not_applicable {
            assert!(CASES.contains(listed), "{sink}: no conformance case is called {listed}");
        }
        match (not_applicable.iter().find(|(c, _)| *c == case), target_offers_it) {
            (None, true) => true,
            (Some((_, why)), false) => {
                eprintln!("{sink}: {case} does not apply: {why}");
                false
            }
            (None, false) => panic!("{sink} cannot run {case}: name it in its conformance! line with the reason"),
            (Some(_), true) => panic!("{sink} lists {case} as not applicable but offers it"),
        }
    }

    pub async fn delivered_once_lands_once<T: Target>(na: &[(&str, &str)]) {
        assert!(applies::<T>("delivered_once_lands_once", na, true));
        let target = T::new().await;
        assert!(target.landed().await.is_empty(), "a fresh target holds nothing");
        let batch = batch(&["web"], 5);
        let delivered = target.destination().deliver(&batch).await.unwrap();
        assert!(delivered.rejected.is_empty(), "{:?}", delivered.rejected);
        assert_exactly(&target.landed().await, &ids(&batch), 1);
    }

    pub async fn retry_does_not_duplicate<T: Target>(na: &[(&str, &str)]) {
        let overwrites = applies::<T>("retry_does_not_duplicate", na, T::RETRY_OVERWRITES);
        let target = T::new().await;
        let batch = batch(&["web", "app"], 6);
        target.destination().deliver(&batch).await.unwrap();
        let first = target.landed().await;
        target.destination().deliver(&batch).await.unwrap();
        let landed = target.landed().await;
        if overwrites {
            assert_exactly(&landed, &ids(&batch), 1);
            assert_eq!(landed.objects, first.objects, "the retry replaced what the first delivery wrote");
        } else {
            // At-least-once: the same ids arrive again, so a receiver can deduplicate on them.
            assert_exactly(&landed, &ids(&batch), 2);
        }
    }

    pub async fn temporary_failures_are_retriable<T: Target>(na: &[(&str, &str)]) {
        let target = T::new().await;
        let failures = target.temporary_failures().await;
        assert!(applies::<T>("temporary_failures_are_retriable", na, !failures.is_empty()));
        for failure in failures {
            let error = failure.destination.deliver(&batch(&["web"], 3)).await.expect_err(&failure.what);
            assert!(error.is_retriable(), "{}: should be retriable, got {error}", failure.what);
        }
    }

    pub async fn permanent_failures_are_not_retriable<T: Target>(na: &[(&str, &str)]) {
        let target = T::new().await;
        let failures = target.permanent_failures().await;
        if !applies::<T>("permanent_failures_are_not_retriable", na, failures.is_some()) {
            return;
        }
        let failures = failures.unwrap_or_default();
        assert!(!failures.is_empty(), "a target offering permanent failures offers at least one");
        for failure in failures {
            let error = failure.destination.deliver(&batch(&["web"], 3)).await.expect_err(&failure.what);
            assert!(!error.is_retriable(), "{}: should be permanent, got {error}", failure.what);
            assert_eq!(error.retry_after(), None, "{}", failure.what);
        }
    }

    pub async fn refused_events_are_reported_one_by_one<T: Target>(na: &[(&str, &str)]) {
        let target = T::new().await;
        let mut batch = batch(&["web"], 5);
        let refused_id = format_uuid(rand::random());
        let Some(json) = target.refused_event(&refused_id) else {
            assert!(!applies::<T>("refused_events_are_reported_one_by_one", na, false));
            return;
        };
        assert!(applies::<T>("refused_events_are_reported_one_by_one", na, true));
        let at = 2;
        batch.events[at].json = json;
        let delivered = target.destination().deliver(&batch).await.unwrap();
        assert_eq!(delivered.rejected.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [at], "{:?}", delivered.rejected);
        assert!(!delivered.rejected[0].1.is_empty(), "a rejection says why");
        let mut rest = batch.clone();
        rest.events.remove(at);
        assert_exactly(&target.landed().await, &ids(&rest), 1);
    }

    pub async fn large_batch_splits_as_documented<T: Target>(na: &[(&str, &str)]) {
        let target = T::new().await;
        let batch = batch(&["web", "app"], LARGE);
        let objects = target.objects_for(&batch);
        let visible = applies::<T>("large_batch_splits_as_documented", na, objects.is_some());
        let delivered = target.destination().deliver(&batch).await.unwrap();
        assert!(delivered.rejected.is_empty(), "{:?}", delivered.rejected);
        let landed = target.landed().await;
        assert_exactly(&landed, &ids(&batch), 1);
        if visible {
            assert_eq!(Some(landed.objects), objects, "objects the batch was split into");
        }
    }
}

/// Offsets never repeat across batches of one test run: sinks name what they write after them.
static NEXT_OFFSET: AtomicU64 = AtomicU64::new(1);

/// `n` track events with fresh UUID `messageId`s, their sources taken in turn from `sources`.
/// Each carries some random text, so that compression does not make a large batch small.
fn batch(sources: &[&str], n: usize) -> Batch {
    let first = NEXT_OFFSET.fetch_add(n as u64, Ordering::Relaxed);
    let mut rng = rand::rng();
    let events = (0..n)
        .map(|i| {
            let noise: String = (&mut rng).sample_iter(Alphanumeric).take(200).map(char::from).collect();
            let json = json!({
                "type": "track", "event": "Conformance Checked", "messageId": format_uuid(rand::random()),
                "userId": format!("u{}", i % 7), "anonymousId": "anon-1",
                "receivedAt": "2026-11-22T10:15:30.250Z", "sentAt": "2026-11-22T10:15:30.000Z",
                "timestamp": "2026-11-22T10:15:30.000Z", "originalTimestamp": "2026-11-22T10:15:29.000Z",
                "context": {"library": {"name": "conformance"}}, "properties": {"n": i, "noise": noise},
            });
            OutEvent { offset: first + i as u64, source: Arc::from(sources[i % sources.len()]), json: json.to_string().into() }
        })
        .collect();
    Batch { destination: Arc::from("conformance"), partition: None, events }
}

/// The batch's `messageId`s.
fn ids(batch: &Batch) -> Vec<u128> {
    batch
        .events
        .iter()
        .map(|e| {
            let value: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
            parse_uuid(value["messageId"].as_str().unwrap()).unwrap()
        })
        .collect()
}

/// Every id in `expected` landed exactly `times` times, and nothing else did.
fn assert_exactly(landed: &LandedIds, expected: &[u128], times: usize) {
    assert!(landed.others.is_empty() && landed.without_id == 0, "only the batch's ids: {landed:?}");
    let mut counts: BTreeMap<u128, usize> = BTreeMap::new();
    for id in &landed.uuids {
        *counts.entry(*id).or_default() += 1;
    }
    for id in expected {
        let n = counts.remove(id).unwrap_or(0);
        assert_eq!(n, times, "{} landed {n} times", format_uuid(*id));
    }
    assert!(counts.is_empty(), "ids that were not in the batch: {:?}", counts.keys().map(|u| format_uuid(*u)).collect::<Vec<_>>());
}

/// A port nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// The sinks.

struct Files {
    dir: tempfile::TempDir,
    destination: FilesDestination,
}

impl Files {
    fn config(path: &std::path::Path) -> FilesConfig {
        FilesConfig { path: path.into(), gzip_level: 1 }
    }
}

impl Target for Files {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let destination = FilesDestination::new(Self::config(dir.path())).unwrap();
        Files { dir, destination }
    }

    fn destination(&self) -> &dyn Destination {
        &self.destination
    }

    async fn landed(&self) -> LandedIds {
        sluice_destinations::files::landed_ids(&Self::config(self.dir.path())).unwrap()
    }

    const RETRY_OVERWRITES: bool = true;

    async fn temporary_failures(&self) -> Vec<Failure> {
        // A file where the sink's directory should be: the writes fail until someone moves it.
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("out");
        let destination = FilesDestination::new(Self::config(&path)).unwrap();
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, b"in the way").unwrap();
        vec![Failure::new("a file in the way of the directory", destination).keeping(scratch)]
    }

    async fn permanent_failures(&self) -> Option<Vec<Failure>> {
        None
    }

    fn refused_event(&self, _id: &str) -> Option<Bytes> {
        None
    }

    fn objects_for(&self, _batch: &Batch) -> Option<u64> {
        Some(1) // one file per batch, whatever its size
    }
}

/// The webhook sink in `batch` mode (`false`) or `event` mode (`true`).
struct Webhook<const PER_EVENT: bool> {
    receiver: Receiver,
    destination: WebhookDestination,
}

fn webhook_config<const PER_EVENT: bool>(url: &str) -> WebhookConfig {
    WebhookConfig {
        url: url.into(),
        method: WebhookMethod::Post,
        mode: if PER_EVENT { WebhookMode::Event } else { WebhookMode::Batch },
        headers: Default::default(),
        // Event mode sends the large batch's events one request after the other within it.
        timeout_ms: 60_000,
        signing_secret: None,
        gzip: false,
    }
}

/// A webhook to a new receiver that answers the first request with `reply`.
async fn failing_webhook<const PER_EVENT: bool>(what: &str, reply: Reply) -> Failure {
    let receiver = Receiver::start([reply]).await;
    let mut config = webhook_config::<PER_EVENT>(&receiver.url);
    config.timeout_ms = 500; // for `Reply::Hang`
    let destination = WebhookDestination::new(config).unwrap();
    // The receiver's task outlives the handle; the test runtime stops it.
    Failure::new(what, destination)
}

impl<const PER_EVENT: bool> Target for Webhook<PER_EVENT> {
    async fn new() -> Self {
        let receiver = Receiver::start([]).await;
        let destination = WebhookDestination::new(webhook_config::<PER_EVENT>(&receiver.url)).unwrap();
        Webhook { receiver, destination }
    }

    fn destination(&self) -> &dyn Destination {
        &self.destination
    }

    async fn landed(&self) -> LandedIds {
        self.receiver.landed()
    }

    const RETRY_OVERWRITES: bool = false;

    async fn temporary_failures(&self) -> Vec<Failure> {
        let nowhere = WebhookDestination::new(webhook_config::<PER_EVENT>(&format!("http://127.0.0.1:{}/hook", closed_port())));
        let mut failures = vec![Failure::new("connection refused", nowhere.unwrap())];
        for (what, reply) in [
            ("408", Reply::Status(408)),
            ("429 with Retry-After", Reply::RetryAfter(429, "1".into())),
            ("500", Reply::Status(500)),
            ("502", Reply::Status(502)),
            ("503", Reply::Status(503)),
            ("no answer within timeout_ms", Reply::Hang),
        ] {
            failures.push(failing_webhook::<PER_EVENT>(what, reply).await);
        }
        failures
    }

    async fn permanent_failures(&self) -> Option<Vec<Failure>> {
        if PER_EVENT {
            return None;
        }
        let mut failures = Vec::new();
        for status in [400, 401, 403, 404, 413, 422, 301] {
            failures.push(failing_webhook::<PER_EVENT>(&status.to_string(), Reply::Status(status)).await);
        }
        Some(failures)
    }

    fn refused_event(&self, id: &str) -> Option<Bytes> {
        if !PER_EVENT {
            return None;
        }
        self.receiver.refuse(id);
        Some(json!({"type": "track", "event": "Refused", "messageId": id}).to_string().into())
    }

    fn objects_for(&self, batch: &Batch) -> Option<u64> {
        // One request per batch, or one per event.
        Some(if PER_EVENT { batch.events.len() as u64 } else { 1 })
    }
}

/// The S3 sink writing `ndjson_gzip` (`false`) or `parquet` (`true`).
struct S3<const PARQUET: bool> {
    config: S3Config,
    destination: S3Destination,
}

fn s3_config<const PARQUET: bool>(endpoint: &str, bucket: &str) -> S3Config {
    S3Config {
        prefix: "conformance".into(),
        format: if PARQUET { S3Format::Parquet } else { S3Format::NdjsonGzip },
        // The large batch stays under the multipart threshold: moto 5.1 stores a multipart
        // object's CRC32 without S3's "-{parts}" suffix, so the read-back's SDK client (rightly
        // checking response checksums) refuses to read it. tests/s3.rs covers multipart uploads
        // with a client that does not check.
        timeout_ms: 30_000,
        ..moto::sink_config(endpoint, bucket)
    }
}

impl<const PARQUET: bool> Target for S3<PARQUET> {
    async fn new() -> Self {
        let (_, endpoint, bucket) = moto::fresh_bucket("conformance").await;
        let config = s3_config::<PARQUET>(&endpoint, &bucket);
        let destination = S3Destination::new(config.clone()).await.unwrap();
        S3 { config, destination }
    }

    fn destination(&self) -> &dyn Destination {
        &self.destination
    }

    async fn landed(&self) -> LandedIds {
        sluice_destinations::s3::landed_ids(&self.config).await.unwrap()
    }

    const RETRY_OVERWRITES: bool = true;

    async fn temporary_failures(&self) -> Vec<Failure> {
        let mut config = s3_config::<PARQUET>(&format!("http://127.0.0.1:{}", closed_port()), &self.config.bucket);
        config.timeout_ms = 5_000;
        vec![Failure::new("unreachable endpoint", S3Destination::new(config).await.unwrap())]
    }

    async fn permanent_failures(&self) -> Option<Vec<Failure>> {
        let mut config = self.config.clone();
        config.bucket = format!("{}-missing", config.bucket);
        Some(vec![Failure::new("NoSuchBucket", S3Destination::new(config).await.unwrap())])
    }

    fn refused_event(&self, _id: &str) -> Option<Bytes> {
        // Parquet rows are objects; anything else is refused alone.
        PARQUET.then(|| Bytes::from_static(b"[1,2,3]"))
    }

    fn objects_for(&self, batch: &Batch) -> Option<u64> {
        // One object per source in the batch.
        let mut sources: Vec<&str> = batch.events.iter().map(|e| &*e.source).collect();
        sources.sort_unstable();
        sources.dedup();
        Some(sources.len() as u64)
    }
}

struct Snowflake {
    env: fakesnow::Env,
    destination: SnowflakeDestination,
}

impl Snowflake {
    fn config(env: &fakesnow::Env) -> SnowflakeConfig {
        // Small files, so that the large batch is staged as several.
        SnowflakeConfig { max_file_bytes: 64 * 1024, ..env.config() }
    }
}

impl Target for Snowflake {
    async fn new() -> Self {
        let env = fakesnow::Env::new().await;
        let destination =
            SnowflakeDestination::with_client(Self::config(&env), fakesnow::client(&Default::default())).await.unwrap();
        Snowflake { env, destination }
    }

    fn destination(&self) -> &dyn Destination {
        &self.destination
    }

    async fn landed(&self) -> LandedIds {
        self.destination.landed_ids().await.unwrap()
    }

    const RETRY_OVERWRITES: bool = true; // MERGE on id

    async fn temporary_failures(&self) -> Vec<Failure> {
        // The service answering 503 (an HTML page, as a gateway does) to every statement.
        let faults = fakesnow::Faults::default();
        faults.fail_next_queries.store(u32::MAX, Ordering::SeqCst);
        let unavailable = SnowflakeDestination::with_client(Self::config(&self.env), fakesnow::client(&faults)).await.unwrap();
        let nowhere: reqwest::Url = format!("http://127.0.0.1:{}", closed_port()).parse().unwrap();
        let unreachable =
            SnowflakeDestination::with_client(Self::config(&self.env), fakesnow::client_to(nowhere, &faults)).await.unwrap();
        vec![Failure::new("503 from the service", unavailable), Failure::new("unreachable account", unreachable)]
    }

    async fn permanent_failures(&self) -> Option<Vec<Failure>> {
        // `tracks` replaced by a view: no ALTER or MERGE can fix that by retrying.
        let env = fakesnow::Env::new().await;
        env.admin.exec(&format!("CREATE SCHEMA {}.EVENTS", env.database)).await;
        env.admin.exec(&format!("CREATE VIEW {} AS SELECT 'x' AS event", env.table("tracks"))).await;
        let destination = SnowflakeDestination::with_client(env.config(), fakesnow::client(&Default::default()));
        Some(vec![Failure::new("a SQL compilation error (tracks is a view)", destination.await.unwrap()).keeping(env)])
    }

    fn refused_event(&self, _id: &str) -> Option<Bytes> {
        // Rows are merged on messageId: an event without one cannot be placed.
        Some(json!({"type": "track", "event": "No Id", "receivedAt": "2026-11-22T10:15:30.250Z"}).to_string().into())
    }

    fn objects_for(&self, _batch: &Batch) -> Option<u64> {
        None
    }
}
