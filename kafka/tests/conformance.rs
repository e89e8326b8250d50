//! The log contract's conformance suite: one test body, run against the embedded log and against
//! Kafka (tansu). Whatever the collector and the router rely on is checked here for both:
//! durable appends read back as appended (source, write key id, event bytes), each user's events
//! in order, a commit resumes exactly after what was committed (across reopening the log), an
//! uncommitted read is read again, and consumers are independent of each other.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sluice_eventlog::{AppendBatch, EventLog, LogConfig, LogReader, LogSource, LogWriter, Record};
use sluice_kafka::{KafkaConfig, KafkaSource, KafkaWriter};

/// A backend under test: opens a fresh writer and source on the same log each time.
#[async_trait]
trait Backend: Send + Sync {
    async fn open(&self) -> (Arc<dyn LogWriter>, Arc<dyn LogSource>);
}

struct Embedded {
    dir: tempfile::TempDir,
}

#[async_trait]
impl Backend for Embedded {
    async fn open(&self) -> (Arc<dyn LogWriter>, Arc<dyn LogSource>) {
        let log = EventLog::open(LogConfig::new(self.dir.path())).unwrap();
        (Arc::new(log.clone()), Arc::new(log))
    }
}

struct Kafka {
    config: KafkaConfig,
}

#[async_trait]
impl Backend for Kafka {
    async fn open(&self) -> (Arc<dyn LogWriter>, Arc<dyn LogSource>) {
        let writer = KafkaWriter::open(&self.config).await.unwrap();
        let source = KafkaSource::open(&self.config).await.unwrap();
        (Arc::new(writer), Arc::new(source))
    }
}

/// `n` events of 5 users, tagged so every one is unique: `{"userId":"u<k>","seq":<i>,"tag":..}`.
fn events(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!(r#"{{"userId":"u{}","seq":{i},"tag":"{tag}","messageId":"{tag}-{i}"}}"#, i % 5)).collect()
}

fn batch(events: &[String]) -> AppendBatch {
    let mut b = AppendBatch::default();
    for e in events {
        b.push_event("web", "key-1", e.as_bytes());
    }
    b
}

/// Reads until `n` records came (or 60 s passed), then makes sure nothing more arrives.
async fn read_exactly(reader: &mut dyn LogReader, n: usize) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(reader.read(1000, 1 << 20, Duration::from_millis(500)).await.unwrap());
    }
    assert_eq!(out.len(), n, "records read before the deadline");
    let extra = reader.read(1000, 1 << 20, Duration::from_millis(1500)).await.unwrap();
    assert!(extra.is_empty(), "{} records more than expected, first: {:?}", extra.len(), extra.first());
    out
}

fn texts(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8(r.event.to_vec()).unwrap()).collect()
}

/// Every appended event exactly once, with its source and write key id, each user's in order.
fn check_as_appended(records: &[Record], appended: &[String]) {
    let got: HashSet<String> = texts(records).into_iter().collect();
    let want: HashSet<String> = appended.iter().cloned().collect();
    assert_eq!(got.len(), records.len(), "an event was read twice");
    assert_eq!(got, want);
    for r in records {
        assert_eq!(&*r.source, "web");
        assert_eq!(&*r.write_key_id, "key-1");
    }
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    // Within a partition records come in log order; one user's are all in one partition.
    let mut by_partition: BTreeMap<Option<u32>, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut users_seen_in: BTreeMap<String, Option<u32>> = BTreeMap::new();
    for (partition, rs) in by_partition {
        let offsets: Vec<u64> = rs.iter().map(|r| r.offset).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets of partition {partition:?} not increasing: {offsets:?}");
        for r in rs {
            let v: serde_json::Value = serde_json::from_slice(&r.event).unwrap();
            let user = v["userId"].as_str().unwrap().to_string();
            let seq = v["seq"].as_i64().unwrap() + if v["tag"] == "b" { 1_000_000 } else { 0 };
            if let Some(p) = users_seen_in.insert(user.clone(), partition) {
                assert_eq!(p, partition, "user {user} is in two partitions");
            }
            let prev = last.insert(user.clone(), seq);
            assert!(prev.is_none_or(|p| p < seq), "user {user}: seq {seq} after {prev:?}");
        }
    }
}

async fn conformance(backend: &dyn Backend) {
    let (c1, c2, c3) = (common::unique("c1"), common::unique("c2"), common::unique("c3"));
    let a = events("a", 60);
    let b = events("b", 25);

    let (writer, source) = backend.open().await;
    writer.append(AppendBatch::default()).await.expect("an empty append is a no-op");
    writer.append(batch(&a)).await.expect("durable append");
    let health = writer.health();
    assert!(!health.refusing_appends && health.write_error.is_none(), "{health:?}");

    // c1 reads everything and commits it (as the router does after delivery).
    let mut r1 = source.reader(&c1).unwrap();
    let got = read_exactly(r1.as_mut(), a.len()).await;
    check_as_appended(&got, &a);
    r1.committer().commit(&r1.position()).await.unwrap();

    // c2 reads the same records, independently, and never commits.
    let mut r2 = source.reader(&c2).unwrap();
    check_as_appended(&read_exactly(r2.as_mut(), a.len()).await, &a);

    // c3 commits only part of what it read: the position after its first read.
    let mut r3 = source.reader(&c3).unwrap();
    let mut first = Vec::new();
    while first.is_empty() {
        first = r3.read(7, 1 << 20, Duration::from_secs(1)).await.unwrap();
    }
    assert!(first.len() <= 7);
    r3.committer().commit(&r3.position()).await.unwrap();
    let _ = r3.read(1000, 1 << 20, Duration::from_millis(500)).await.unwrap();

    drop((r1, r2, r3, writer, source));
    let (writer, source) = backend.open().await;
    writer.append(batch(&b)).await.expect("durable append after reopening");

    // c1 resumes right after its commit: exactly the new records.
    let mut r1 = source.reader(&c1).unwrap();
    check_as_appended(&read_exactly(r1.as_mut(), b.len()).await, &b);
    // c2 never committed: everything again.
    let mut r2 = source.reader(&c2).unwrap();
    let all: Vec<String> = a.iter().chain(&b).cloned().collect();
    check_as_appended(&read_exactly(r2.as_mut(), all.len()).await, &all);
    // c3: what it had not committed, nothing it had.
    let mut r3 = source.reader(&c3).unwrap();
    let rest = read_exactly(r3.as_mut(), all.len() - first.len()).await;
    let committed: HashSet<String> = texts(&first).into_iter().collect();
    assert!(texts(&rest).iter().all(|t| !committed.contains(t)), "a committed record was read again");
    let mut together = first.clone();
    together.extend(rest);
    check_as_appended(&together, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_keeps_the_contract() {
    conformance(&Embedded { dir: tempfile::tempdir().unwrap() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_keeps_the_contract() {
    let mut config = KafkaConfig::new(common::brokers());
    config.topic = common::unique("conformance");
    config.partitions = 3;
    conformance(&Kafka { config }).await;
}
