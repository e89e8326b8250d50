//! The memory queue's bound and its two policies, with the collector down then up.

mod common;

use common::{free_port, ids, wait_until, Collector, WRITE_KEY};
use sluice_analytics::{Client, ClientConfig, Identity, Issue, Message, QueueFullPolicy};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn bounded(url: &str, policy: QueueFullPolicy) -> ClientConfig {
    ClientConfig::new(url, WRITE_KEY)
        .max_batch_events(10)
        .max_queue(100, 1 << 20, policy)
        .flush_interval(Duration::from_millis(20))
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
}

#[test]
fn drop_oldest_keeps_the_newest_and_counts_the_rest() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let reported = Arc::new(AtomicU64::new(0));
    let r = reported.clone();
    let client = Client::new(bounded(&url, QueueFullPolicy::DropOldest).on_issue(move |i| {
        if let Issue::Dropped { count, .. } = i {
            r.fetch_add(*count, Ordering::Relaxed);
        }
    }))
    .unwrap();
    let mut all = Vec::new();
    for i in 0..300 {
        let m = Message::track(Identity::user("u1"), "Flood").properties(serde_json::json!({"i": i}));
        all.push(m.message_id().to_string());
        client.send(m).unwrap(); // never waits
        if i == 0 {
            // Let the sender take its first batch into flight (and fail on it).
            assert!(wait_until(Duration::from_secs(5), || client.stats().retried >= 1));
        }
    }
    let s = client.stats();
    assert!(s.dropped >= 190, "{s:?}");
    assert_eq!(reported.load(Ordering::Relaxed), s.dropped);
    assert_eq!(s.queued + s.dropped, 300);

    let c = Collector::start_on(port);
    client.flush(Duration::from_secs(30)).unwrap();
    let got = c.wait_delivered((300 - s.dropped) as usize, Duration::from_secs(20));
    let delivered = ids(&got);
    assert_eq!(delivered.len() as u64, 300 - s.dropped);
    // The newest 100 are all there: it is the oldest that go.
    let newest: HashSet<String> = all[200..].iter().cloned().collect();
    assert!(newest.is_subset(&delivered));
    assert!(delivered.contains(&all[0]), "the in-flight first batch is not dropped");
}

#[test]
fn block_waits_for_room_and_loses_nothing() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(bounded(&url, QueueFullPolicy::Block)).unwrap();
    let sender = client.clone();
    let t = std::thread::spawn(move || {
        let mut sent = HashSet::new();
        for _ in 0..300 {
            let m = Message::track(Identity::user("u1"), "Patient");
            sent.insert(m.message_id().to_string());
            sender.send(m).unwrap();
        }
        sent
    });
    // Held at the bound: 100 queued plus at most one batch of 10 in flight.
    assert!(wait_until(Duration::from_secs(10), || client.stats().queued >= 100));
    assert!(client.stats().queued <= 110, "{:?}", client.stats());
    let c = Collector::start_on(port);
    let sent = t.join().unwrap();
    client.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(client.stats().dropped, 0);
    assert_eq!(ids(&c.wait_delivered(300, Duration::from_secs(20))), sent);
}

/// `send_async` waiting for room must leave the runtime thread free: on a single-threaded
/// runtime, another task keeps ticking while a send is held.
#[test]
fn send_async_waits_without_blocking_the_runtime() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(bounded(&url, QueueFullPolicy::Block)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let t = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                t.fetch_add(1, Ordering::Relaxed);
            }
        });
        let c = client.clone();
        let sends = tokio::spawn(async move {
            for _ in 0..200 {
                c.send_async(Message::track(Identity::user("u1"), "Async Wait")).await.unwrap();
            }
        });
        // Wait until the queue is full and the sends are held...
        while client.stats().queued < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = ticks.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(ticks.load(Ordering::Relaxed) > before + 5, "the runtime thread was blocked");
        assert!(!sends.is_finished());
        let c = Collector::start_on(port);
        sends.await.unwrap();
        client.flush_async(Duration::from_secs(30)).await.unwrap();
        assert_eq!(client.stats().sent, 200);
        drop(c);
    });
}
