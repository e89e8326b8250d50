//! A destination that prepares (encodes) its batches ahead: the next batch is prepared while the
//! previous one is still being written, writes stay one at a time and in log order, and a retry
//! writes what was prepared instead of preparing again.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{append, destination, metrics, wait_for};
use sluice_destinations::{Batch, Delivered, DeliveryError, Destination, Prepared};
use sluice_router::{RoutedDestination, Router};
use sluice_transformer::Registry;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Prepare(u64),
    WriteStart(u64),
    WriteEnd(u64),
}

/// Records when it prepares and writes which batch (named by its first offset); a write takes
/// 150 ms, and the first write of the batch starting at offset 10 fails once (temporary).
#[derive(Default)]
struct Slow {
    steps: Mutex<Vec<(Step, Instant)>>,
    written: Mutex<Vec<String>>,
    unprepared: AtomicUsize,
    failed_once: AtomicUsize,
}

impl Slow {
    fn step(&self, step: Step) {
        self.steps.lock().unwrap().push((step, Instant::now()));
    }
}

#[async_trait]
impl Destination for Slow {
    async fn deliver(&self, _batch: &Batch) -> Result<Delivered, DeliveryError> {
        self.unprepared.fetch_add(1, Ordering::SeqCst);
        Err(DeliveryError::temporary("this destination is only written through what it prepared"))
    }

    async fn prepare(&self, batch: &Batch) -> Option<Prepared> {
        self.step(Step::Prepare(batch.first_offset()));
        let ids: Vec<String> = batch
            .events
            .iter()
            .map(|e| serde_json::from_slice::<serde_json::Value>(&e.json).unwrap()["messageId"].as_str().unwrap().to_string())
            .collect();
        Some(Box::new(ids))
    }

    async fn deliver_prepared(&self, batch: &Batch, prepared: &Prepared) -> Result<Delivered, DeliveryError> {
        let first = batch.first_offset();
        let ids = prepared.downcast_ref::<Vec<String>>().expect("what prepare returned");
        self.step(Step::WriteStart(first));
        tokio::time::sleep(Duration::from_millis(150)).await;
        if first == 10 && self.failed_once.fetch_add(1, Ordering::SeqCst) == 0 {
            self.step(Step::WriteEnd(first));
            return Err(DeliveryError::temporary("first attempt of the second batch fails"));
        }
        self.written.lock().unwrap().extend(ids.iter().cloned());
        self.step(Step::WriteEnd(first));
        Ok(Delivered::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_prepared_while_one_is_written_and_writes_stay_in_order() {
    metrics();
    let (_dir, log, dlq) = common::setup();
    let slow = Arc::new(Slow::default());
    let extra = "lanes: 1\nbatch: { max_events: 10, max_age_ms: 50 }\nretry: { initial_backoff_ms: 20, max_backoff_ms: 50, max_attempts: 4 }\n";
    let config = destination("prepared", "http://127.0.0.1:9/", extra);
    let routed = RoutedDestination { config, destination: slow.clone(), chain: Registry::load(&[]).unwrap().chain(&[]).unwrap() };
    let ids = append(&log, "m", 3, 40).await;
    let router = Router::start(log.clone(), vec![routed], dlq.clone(), None).unwrap();
    wait_for("the cursor at the end", 15, || log.cursor("prepared").unwrap() == Some(40)).await;
    router.stop().await;

    // Every event written once, in log order (one lane).
    assert_eq!(*slow.written.lock().unwrap(), ids);
    assert_eq!(slow.unprepared.load(Ordering::SeqCst), 0, "every attempt used what was prepared");
    let steps: Vec<(Step, Instant)> = slow.steps.lock().unwrap().clone();
    let only = |f: fn(&Step) -> Option<u64>| steps.iter().filter_map(|(s, _)| f(s)).collect::<Vec<u64>>();
    // One prepare per batch, the failed write of the second batch included. (Two batches are
    // prepared by two tasks at once, so their order among prepares is not fixed.)
    let mut prepared = only(|s| if let Step::Prepare(o) = s { Some(*o) } else { None });
    prepared.sort();
    assert_eq!(prepared, vec![0, 10, 20, 30]);
    assert_eq!(only(|s| if let Step::WriteStart(o) = s { Some(*o) } else { None }), vec![0, 10, 10, 20, 30]);
    // Writes never overlap: each starts after the one before it ended.
    let writes: Vec<&(Step, Instant)> = steps.iter().filter(|(s, _)| !matches!(s, Step::Prepare(_))).collect();
    for pair in writes.windows(2) {
        assert!(
            matches!((&pair[0].0, &pair[1].0), (Step::WriteStart(a), Step::WriteEnd(b)) if a == b)
                || matches!((&pair[0].0, &pair[1].0), (Step::WriteEnd(_), Step::WriteStart(_))),
            "writes interleaved: {:?}",
            writes.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>()
        );
    }
    // The batch after each one was prepared before that one's (150 ms) write ended.
    let at = |want: Step| steps.iter().find(|(s, _)| *s == want).map(|(_, t)| *t).unwrap();
    for (batch, next) in [(0, 10), (20, 30)] {
        assert!(
            at(Step::Prepare(next)) < at(Step::WriteEnd(batch)),
            "batch {next} was prepared only after batch {batch} was written: {steps:?}"
        );
    }
}
