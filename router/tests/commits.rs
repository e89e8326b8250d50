//! Cursor commits do not hold deliveries up: a delivered batch hands its position to the
//! worker's committer and the next batch goes on; positions that arrive while a commit is
//! running are folded into the next commit, and the last one is persisted before the worker
//! stops.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{append, destination, setup, sorted, wait_for, Receiver};
use sluice_eventlog::{CorruptRecord, EventLog, LogCommitter, LogError, LogHealth, LogReader, LogSource, Position, Record};
use sluice_router::{RoutedDestination, Router};
use sluice_transformer::Registry;

/// The embedded log, with every cursor commit taking 300 ms longer (a slow disk).
struct SlowCommits {
    log: EventLog,
    commits: Arc<AtomicUsize>,
}

impl LogSource for SlowCommits {
    fn reader(&self, consumer: &str) -> Result<Box<dyn LogReader>, LogError> {
        Ok(Box::new(SlowReader { inner: LogSource::reader(&self.log, consumer)?, commits: self.commits.clone() }))
    }
    fn hold_for(&self, consumers: &[&str]) -> Result<(), LogError> {
        LogSource::hold_for(&self.log, consumers)
    }
    fn lag(&self, consumer: &str) -> Option<u64> {
        LogSource::lag(&self.log, consumer)
    }
    fn health(&self) -> LogHealth {
        LogSource::health(&self.log)
    }
}

struct SlowReader {
    inner: Box<dyn LogReader>,
    commits: Arc<AtomicUsize>,
}

#[async_trait]
impl LogReader for SlowReader {
    async fn read(&mut self, max_records: usize, max_bytes: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        self.inner.read(max_records, max_bytes, wait).await
    }
    fn take_corrupt(&mut self) -> Vec<CorruptRecord> {
        self.inner.take_corrupt()
    }
    fn position(&self) -> Position {
        self.inner.position()
    }
    fn lag(&self) -> Option<u64> {
        self.inner.lag()
    }
    fn committer(&self) -> Arc<dyn LogCommitter> {
        Arc::new(SlowCommitter { inner: self.inner.committer(), commits: self.commits.clone() })
    }
}

struct SlowCommitter {
    inner: Arc<dyn LogCommitter>,
    commits: Arc<AtomicUsize>,
}

#[async_trait]
impl LogCommitter for SlowCommitter {
    async fn commit(&self, position: &Position) -> Result<(), LogError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(position).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_cursor_commits_do_not_hold_deliveries_and_the_last_position_is_persisted() {
    let (_dir, log, dlq) = setup();
    let (rx, url) = Receiver::always(200);
    // 200 events in batches of 10: 20 deliveries. Were each to wait for its 300 ms commit, they
    // would take 6 s.
    let ids = append(&log, "c", 7, 200).await;
    let config = destination("hook", &url, "lanes: 1\nbatch: { max_events: 10, max_age_ms: 50 }\n");
    let destination = config.sink.build().await.unwrap();
    let chain = Registry::load(&[]).unwrap().chain(&[]).unwrap();
    let commits = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let router = Router::start(
        SlowCommits { log: log.clone(), commits: commits.clone() },
        vec![RoutedDestination { config, destination, chain }],
        dlq,
        None,
    )
    .unwrap();
    wait_for("every event", 10, || rx.ids().len() >= ids.len()).await;
    let took = started.elapsed();
    assert_eq!(rx.count(), 20, "batches of 10");
    assert_eq!(sorted(rx.ids()), sorted(ids.clone()), "every event once");
    assert!(took < Duration::from_millis(3000), "20 deliveries took {took:?}: they waited for the commits");
    router.stop().await;
    // Stopping waits for the last commit: the cursor is past every delivered event.
    assert_eq!(log.cursor("hook").unwrap(), Some(200));
    let n = commits.load(Ordering::SeqCst);
    assert!((1..20).contains(&n), "{n} commits for 20 deliveries: positions that arrive during a commit are folded together");
}
