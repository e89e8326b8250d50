//! The durable queue against the real collector: group commit, segment rolling and trimming, a
//! torn tail, the disk budget, one client per directory.

mod common;

use common::{free_port, ids, wait_until, Collector, WRITE_KEY};
use sluice_analytics::{Client, ClientConfig, Error, Identity, Message};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn durable(url: &str, dir: &Path) -> ClientConfig {
    ClientConfig::new(url, WRITE_KEY)
        .durable_queue(dir)
        .durable_limits(4096, 1 << 20)
        .flush_interval(Duration::from_millis(50))
        .backoff(Duration::from_millis(50), Duration::from_millis(300))
}

fn segments(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
        .collect();
    v.sort();
    v
}

#[test]
fn concurrent_senders_share_fsyncs_segments_roll_and_are_trimmed() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let q = tempfile::tempdir().unwrap();
    let client = Client::new(durable(&url, q.path())).unwrap();
    // One client per directory.
    match Client::new(durable(&url, q.path())) {
        Err(Error::Config(m)) => assert!(m.contains("in use"), "{m}"),
        other => panic!("a second client on the directory must be refused: {other:?}"),
    }
    let sent = Arc::new(Mutex::new(HashSet::new()));
    std::thread::scope(|s| {
        for t in 0..16 {
            let (c, sent) = (client.clone(), sent.clone());
            s.spawn(move || {
                for i in 0..50 {
                    let m = Message::track(Identity::user(format!("u{t}")), "Durable")
                        .properties(serde_json::json!({"t": t, "i": i}));
                    sent.lock().unwrap().insert(m.message_id().to_string());
                    c.send(m).unwrap();
                }
            });
        }
    });
    let st = client.stats();
    assert!(st.disk_syncs < 800, "800 sends took {} fsyncs: no group commit", st.disk_syncs);
    assert!(segments(q.path()).len() > 3, "4 KiB segments must roll: {:?}", segments(q.path()));
    assert_eq!(st.queued, 800);

    let c = Collector::start_on(port);
    client.flush(Duration::from_secs(30)).unwrap();
    let got = c.wait_delivered(800, Duration::from_secs(20));
    assert_eq!(ids(&got), *sent.lock().unwrap());
    // Every sealed segment is acknowledged and deleted; at most the active one remains.
    assert!(segments(q.path()).len() <= 1, "{:?}", segments(q.path()));
    // Per-user order holds through the queue.
    for t in 0..16 {
        let order: Vec<i64> = got
            .iter()
            .filter(|e| e["properties"]["t"] == t)
            .map(|e| e["properties"]["i"].as_i64().unwrap())
            .collect();
        assert_eq!(order, (0..50).collect::<Vec<_>>(), "user {t}");
    }
    client.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_torn_tail_is_cut_and_the_records_before_it_are_delivered() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let q = tempfile::tempdir().unwrap();
    let mut sent = HashSet::new();
    {
        let client = Client::new(durable(&url, q.path()).durable_limits(1 << 20, 4 << 20)).unwrap();
        for i in 0..30 {
            let m = Message::track(Identity::user("u1"), "Before Crash").properties(serde_json::json!({"i": i}));
            sent.insert(m.message_id().to_string());
            client.send(m).unwrap();
        }
        assert!(matches!(
            client.shutdown(Duration::from_millis(100)),
            Err(Error::Timeout { pending: 30, .. })
        ));
    }
    // A crash mid-write: a record header promising more bytes than follow.
    let (last, _) = segments(q.path()).into_iter().rfind(|(_, len)| *len > 0).unwrap();
    let path = q.path().join(&last);
    let good_len = fs::metadata(&path).unwrap().len();
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&500u32.to_le_bytes()).unwrap();
    f.write_all(&[0xAB; 37]).unwrap();
    drop(f);

    let c = Collector::start_on(port);
    let client = Client::new(durable(&url, q.path())).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len, "the torn tail is cut on open");
    client.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(client.stats().sent, 30);
    let got = c.wait_delivered(30, Duration::from_secs(20));
    assert_eq!(ids(&got), sent);
    client.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_corrupt_ack_file_means_resending_not_losing() {
    let c = Collector::start();
    let q = tempfile::tempdir().unwrap();
    let mut sent = HashSet::new();
    {
        let client = Client::new(durable(&c.url(), q.path())).unwrap();
        for _ in 0..20 {
            let m = Message::track(Identity::user("u1"), "Acked");
            sent.insert(m.message_id().to_string());
            client.send(m).unwrap();
        }
        client.shutdown(Duration::from_secs(20)).unwrap();
    }
    assert_eq!(ids(&c.wait_delivered(20, Duration::from_secs(20))), sent);
    fs::write(q.path().join("ack"), b"garbage").unwrap();
    let client = Client::new(durable(&c.url(), q.path())).unwrap();
    client.flush(Duration::from_secs(20)).unwrap();
    assert!(client.stats().sent > 0, "the records left on disk are read again");
    // Whatever was still on disk is resent (duplicates with the same ids), nothing else appears.
    let got = c.wait_delivered(20, Duration::from_secs(5));
    assert_eq!(ids(&got), sent);
    client.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_full_disk_budget_makes_send_wait_then_everything_lands() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let q = tempfile::tempdir().unwrap();
    let client = Client::new(durable(&url, q.path()).durable_limits(4096, 8192)).unwrap();
    let sender = client.clone();
    let t = std::thread::spawn(move || {
        let mut sent = HashSet::new();
        for i in 0..100 {
            let m = Message::track(Identity::user("u1"), "Budget").properties(serde_json::json!({"i": i}));
            sent.insert(m.message_id().to_string());
            sender.send(m).unwrap();
        }
        sent
    });
    // send() is held at the budget while the collector is down.
    assert!(wait_until(Duration::from_secs(10), || {
        let s = client.stats();
        s.retried >= 2 && s.disk_bytes > 8192 - 600
    }));
    assert!(client.stats().disk_bytes <= 8192);
    assert!(client.stats().queued < 100);
    let c = Collector::start_on(port);
    let sent = t.join().unwrap();
    client.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(client.stats().dropped, 0);
    let got = c.wait_delivered(100, Duration::from_secs(20));
    assert_eq!(ids(&got), sent);
}
