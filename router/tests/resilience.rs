//! What keeps a destination moving when something below it breaks: a corrupt record in a sealed
//! log segment, a dead-letter store that cannot be written, a destination that panics.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{append, counter, destination, metrics, sorted, wait_for, Receiver, FAST};
use sluice_destinations::{Batch, Delivered, DeliveryError, Destination};
use sluice_eventlog::{EventLog, LogConfig};
use sluice_router::{AlertsConfig, Alerter, DeadLetters, RoutedDestination, Router, Stage};
use sluice_transformer::Registry;

/// Bytes of the n-th record of a segment file: (position, length with header).
fn record_at(bytes: &[u8], n: usize) -> (usize, usize) {
    let mut at = 0;
    for _ in 0..n {
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    (at, 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_in_a_sealed_segment_is_dead_lettered_alerted_counted_and_skipped() {
    metrics();
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { dir: dir.path().join("log"), segment_bytes: 4096, disk_budget_bytes: 1 << 20 };
    let log = EventLog::open(config).unwrap();
    let dlq = Arc::new(DeadLetters::open(dir.path().join("dlq")).unwrap());
    let mut ids = Vec::new();
    for round in 0..20 {
        ids.extend(append(&log, &format!("r{round}-"), 3, 20).await);
    }
    assert!(log.segment_count() >= 3, "several sealed segments");
    // Flip a byte inside the payload of the fourth record of the oldest, sealed segment.
    let first = dir.path().join("log/segments/00000000000000000000.log");
    let mut bytes = std::fs::read(&first).unwrap();
    let (at, len) = record_at(&bytes, 3);
    bytes[at + len - 4] ^= 0x5a;
    std::fs::write(&first, &bytes).unwrap();

    let (chat, chat_url) = Receiver::always(200);
    let alerts = Arc::new(Alerter::new(AlertsConfig { webhook_url: chat_url, failing_after_secs: 300, min_interval_secs: 300 }));
    let (hook, url) = Receiver::always(200);
    let router = common::start(&log, &dlq, &Registry::load(&[]).unwrap(), vec![destination("corrupt-hook", &url, FAST)], Some(alerts)).await;
    let mut want = ids.clone();
    let lost = want.remove(3);
    wait_for("every other event", 10, || hook.ids().len() >= want.len()).await;
    wait_for("the cursor past the end", 10, || log.cursor("corrupt-hook").unwrap() == Some(ids.len() as u64)).await;
    wait_for("the alert", 10, || chat.count() >= 1).await;
    router.stop().await;
    assert_eq!(sorted(hook.ids()), sorted(want), "{lost} is the corrupt one; everything else arrives");

    let entries = dlq.ids(Some("corrupt-hook")).unwrap();
    assert_eq!(entries.len(), 1);
    let entry = dlq.get("corrupt-hook", &entries[0].1).unwrap();
    assert_eq!(entry.stage, Stage::Corrupt);
    assert!(entry.reason.starts_with("corrupt_record: offset 3,"), "{}", entry.reason);
    assert_eq!(entry.events[0].offset, 3);
    let kept: serde_json::Value = serde_json::from_str(entry.events[0].event.get()).unwrap();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(kept["corrupt_record"]["bytes_base64"].as_str().unwrap()).unwrap();
    assert_eq!(raw, bytes[at..at + len], "the raw bytes as they are on disk");
    assert_eq!(counter("sluice_log_corrupt_records_total", "corrupt-hook"), 1);
    let text = chat.requests()[0].body["text"].as_str().unwrap().to_string();
    assert!(text.contains("corrupt record") && text.contains("`corrupt-hook`") && text.contains(&entries[0].1), "{text}");

    let config = destination("corrupt-hook", &url, "");
    let built = config.sink.build().await.unwrap();
    let replayed = sluice_router::replay(&dlq, &entry, &config, built.as_ref(), &Registry::load(&[]).unwrap().chain(&[]).unwrap()).await;
    assert!(replayed.unwrap_err().to_string().contains("nothing to replay"), "corrupt bytes are not an event");
}

/// With the runtime's two threads, two destinations whose dead-letter writes fail used to park
/// both threads in `std::thread::sleep`, and every other destination stopped with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_destination_keeps_delivering_while_dead_letter_writes_fail_elsewhere() {
    metrics();
    let (dir, log, dlq) = common::setup();
    // Tests run as root, so permissions do not stop a write: a regular file where a
    // destination's dead-letter directory must be created does.
    for blocked in ["dl-bad1", "dl-bad2"] {
        std::fs::write(dir.path().join("dlq").join(blocked), b"not a directory").unwrap();
    }
    let (ok, ok_url) = Receiver::always(200);
    let (bad, bad_url) = Receiver::always(400);
    let configs = vec![
        destination("dl-ok", &ok_url, FAST),
        destination("dl-bad1", &bad_url, &format!("lanes: 1\n{FAST}")),
        destination("dl-bad2", &bad_url, &format!("lanes: 1\n{FAST}")),
    ];
    let router = common::start(&log, &dlq, &Registry::load(&[]).unwrap(), configs, None).await;
    let first = append(&log, "a", 4, 20).await;
    // Both refused their batch (a 400: dead-letter at once) and are now failing to store it.
    wait_for("both refusals", 10, || bad.count() >= 2).await;
    wait_for("failed dead-letter writes", 10, || {
        counter("sluice_dead_letter_write_failures_total", "dl-bad1") >= 1 && counter("sluice_dead_letter_write_failures_total", "dl-bad2") >= 1
    })
    .await;
    let t0 = Instant::now();
    let second = append(&log, "b", 4, 20).await;
    wait_for("the healthy destination's second batch", 10, || ok.ids().len() >= first.len() + second.len()).await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "healthy delivery took {took:?} while dead-letter writes failed");
    assert_eq!(log.cursor("dl-bad1").unwrap(), None, "nothing stored, so the cursor must not move");

    // The store comes back: the entries are written and the cursors move on.
    for blocked in ["dl-bad1", "dl-bad2"] {
        std::fs::remove_file(dir.path().join("dlq").join(blocked)).unwrap();
    }
    wait_for("the dead letters", 10, || dlq.ids(Some("dl-bad1")).unwrap().len() + dlq.ids(Some("dl-bad2")).unwrap().len() >= 2).await;
    wait_for("the cursors", 10, || {
        log.cursor("dl-bad1").unwrap() == Some(40) && log.cursor("dl-bad2").unwrap() == Some(40)
    })
    .await;
    router.stop().await;
    println!("healthy destination delivered 40 events in {took:?} while two others could not write dead letters");
}

/// Panics on its first delivery, then records what it is given.
#[derive(Default)]
struct PanicsOnce {
    panicked: AtomicBool,
    ids: Mutex<Vec<String>>,
}

#[async_trait]
impl Destination for PanicsOnce {
    async fn deliver(&self, batch: &Batch) -> Result<Delivered, DeliveryError> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("a bug in this destination");
        }
        let mut ids = self.ids.lock().unwrap();
        for e in &batch.events {
            let v: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
            ids.push(v["messageId"].as_str().unwrap().to_string());
        }
        Ok(Delivered::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_panics_is_restarted_from_its_cursor_counted_and_alerted() {
    metrics();
    let (_dir, log, dlq) = common::setup();
    let (chat, chat_url) = Receiver::always(200);
    let alerts = Arc::new(Alerter::new(AlertsConfig { webhook_url: chat_url, failing_after_secs: 300, min_interval_secs: 300 }));
    let panicky = Arc::new(PanicsOnce::default());
    let config = destination("panicky", "http://127.0.0.1:9/", &format!("lanes: 1\n{FAST}"));
    let routed = RoutedDestination { config, destination: panicky.clone(), chain: Registry::load(&[]).unwrap().chain(&[]).unwrap() };
    let router = Router::start(log.clone(), vec![routed], dlq.clone(), Some(alerts)).unwrap();
    let ids = append(&log, "p", 3, 30).await;
    wait_for("every event after the restart", 10, || panicky.ids.lock().unwrap().len() >= ids.len()).await;
    wait_for("the cursor", 10, || log.cursor("panicky").unwrap() == Some(30)).await;
    wait_for("the alert", 10, || chat.count() >= 1).await;
    let more = append(&log, "q", 3, 6).await;
    wait_for("events after the restart keep flowing", 10, || panicky.ids.lock().unwrap().len() >= ids.len() + more.len()).await;
    router.stop().await;
    let mut got = panicky.ids.lock().unwrap().clone();
    got.dedup();
    assert_eq!(sorted(got), sorted([ids, more].concat()));
    assert_eq!(counter("sluice_destination_worker_panics_total", "panicky"), 1);
    let text = chat.requests()[0].body["text"].as_str().unwrap().to_string();
    assert!(text.contains("`panicky` panicked") && text.contains("a bug in this destination"), "{text}");
    assert!(dlq.ids(None).unwrap().is_empty());
}
