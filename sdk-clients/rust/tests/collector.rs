//! The SDK against the real `sluice` collector: events land with their ids, a collector outage
//! loses nothing, a SIGKILLed host process loses nothing with the durable queue, a bad event is
//! isolated and reported, a wrong write key is reported loudly.

mod common;

use common::{example_bin, free_port, ids, wait_until, Collector, WRITE_KEY};
use serde_json::json;
use sluice_analytics::{Client, ClientConfig, Error, Identity, Issue, Message};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn fast(url: &str) -> ClientConfig {
    ClientConfig::new(url, WRITE_KEY)
        .flush_interval(Duration::from_millis(50))
        .backoff(Duration::from_millis(50), Duration::from_millis(400))
}

#[test]
fn events_land_with_their_ids_and_library() {
    let c = Collector::start();
    let client = Client::new(fast(&c.url()).max_batch_events(100)).unwrap();
    let mut sent = HashSet::new();
    for i in 0..600 {
        let who = Identity::user(format!("u{}", i % 5));
        let msg = match i % 6 {
            0 => Message::track(who, "Post Created").properties(json!({"i": i})),
            1 => Message::identify(who).traits(json!({"name": "Ana"})),
            2 => Message::page(who, "Home"),
            3 => Message::screen(who, "Settings"),
            4 => Message::group(who, "team-1"),
            _ => Message::alias(format!("u{i}"), "a1"),
        };
        sent.insert(msg.message_id().to_string());
        client.send(msg).unwrap();
    }
    client.flush(Duration::from_secs(20)).unwrap();
    let stats = client.stats();
    assert_eq!(stats.sent, 600);
    assert_eq!(stats.queued, 0);
    client.shutdown(Duration::from_secs(5)).unwrap();
    assert!(matches!(
        client.send(Message::track(Identity::user("u"), "Late")),
        Err(Error::Closed)
    ));

    let got = c.wait_delivered(600, Duration::from_secs(20));
    assert_eq!(got.len(), 600, "exactly the events sent, no duplicates");
    assert_eq!(ids(&got), sent);
    let e = &got[0];
    assert_eq!(e["context"]["library"]["name"], "sluice-analytics");
    assert!(e["sentAt"].is_string() && e["originalTimestamp"].is_string());
}

#[test]
fn oversized_event_is_refused_at_send_and_never_sent() {
    let c = Collector::start();
    let client = Client::new(fast(&c.url()).max_event_bytes(1024)).unwrap();
    let big = Message::track(Identity::user("u1"), "Big").properties(json!({"blob": "x".repeat(2000)}));
    let big_id = big.message_id().to_string();
    match client.send(big) {
        Err(Error::EventTooLarge { message_id, size, limit }) => {
            assert_eq!(message_id, big_id);
            assert!(size > 2000);
            assert_eq!(limit, 1024);
        }
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    let small = Message::track(Identity::user("u1"), "Small");
    let small_id = small.message_id().to_string();
    client.send(small).unwrap();
    client.flush(Duration::from_secs(10)).unwrap();
    let got = c.wait_delivered(1, Duration::from_secs(10));
    assert_eq!(ids(&got), HashSet::from([small_id]));
    assert!(matches!(
        client.send(Message::track(Identity::user(""), "No One")),
        Err(Error::InvalidMessage(_))
    ));
}

#[test]
fn collector_down_then_back_loses_nothing() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(fast(&url)).unwrap();
    let mut sent = HashSet::new();
    for i in 0..300 {
        let m = Message::track(Identity::user(format!("u{}", i % 3)), "While Down");
        sent.insert(m.message_id().to_string());
        client.send(m).unwrap();
    }
    // Observable proof that the collector was really down: failed attempts.
    assert!(wait_until(Duration::from_secs(10), || client.stats().retried >= 3));
    assert_eq!(client.stats().sent, 0);
    let c = Collector::start_on(port);
    client.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(client.stats().sent, 300);
    let got = c.wait_delivered(300, Duration::from_secs(20));
    assert_eq!(ids(&got), sent);
}

#[test]
fn async_sends_from_a_runtime_land() {
    let c = Collector::start();
    let client = Client::new(fast(&c.url())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sent: HashSet<String> = rt.block_on(async {
        let mut sent = HashSet::new();
        for i in 0..200 {
            let m = Message::track(Identity::anonymous(format!("a{}", i % 4)), "Async");
            sent.insert(m.message_id().to_string());
            client.send_async(m).await.unwrap();
        }
        client.flush_async(Duration::from_secs(20)).await.unwrap();
        sent
    });
    let got = c.wait_delivered(200, Duration::from_secs(20));
    assert_eq!(ids(&got), sent);
}

#[test]
fn bad_event_is_isolated_reported_and_the_rest_land() {
    let c = Collector::start();
    let issues = Arc::new(Mutex::new(Vec::new()));
    let sink = issues.clone();
    let client = Client::new(
        fast(&c.url())
            .max_batch_events(200)
            .flush_interval(Duration::from_secs(5))
            .on_issue(move |i| sink.lock().unwrap().push(i.clone())),
    )
    .unwrap();
    let (mut good, mut bad) = (HashSet::new(), HashSet::new());
    for i in 0..200 {
        let mut m = Message::track(Identity::user("u1"), "Maybe Bad").properties(json!({"i": i}));
        // The SDK passes `properties` through as set; the collector refuses one that is not an
        // object (Segment's spec), so this event is refused alone.
        if i == 37 || i == 150 {
            m = m.set("properties", json!("not an object"));
            bad.insert(m.message_id().to_string());
        } else {
            good.insert(m.message_id().to_string());
        }
        client.send(m).unwrap();
    }
    client.flush(Duration::from_secs(30)).unwrap();
    let stats = client.stats();
    assert_eq!((stats.sent, stats.rejected), (198, 2));
    let reported: HashSet<String> = issues
        .lock()
        .unwrap()
        .iter()
        .filter_map(|i| match i {
            Issue::Rejected { message_id, status: 400, .. } => Some(message_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reported, bad);
    let got = c.wait_delivered(198, Duration::from_secs(20));
    assert_eq!(ids(&got), good);
    // One user's events keep their order through the split.
    let order: Vec<i64> = got.iter().map(|e| e["properties"]["i"].as_i64().unwrap()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "delivery order follows send order");
}

#[test]
fn wrong_write_key_is_reported_and_events_are_kept() {
    let c = Collector::start();
    let issues = Arc::new(Mutex::new(Vec::new()));
    let sink = issues.clone();
    let client = Client::new(
        ClientConfig::new(c.url(), "not-the-key")
            .flush_interval(Duration::from_millis(20))
            .backoff(Duration::from_millis(20), Duration::from_millis(100))
            .on_issue(move |i| sink.lock().unwrap().push(i.clone())),
    )
    .unwrap();
    for _ in 0..10 {
        client.send(Message::track(Identity::user("u1"), "Unauthorized")).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || client.stats().unauthorized >= 2));
    assert!(issues
        .lock()
        .unwrap()
        .iter()
        .any(|i| matches!(i, Issue::Unauthorized { status: 401, .. })));
    let stats = client.stats();
    assert_eq!((stats.sent, stats.dropped, stats.rejected, stats.queued), (0, 0, 0, 10));
    assert!(matches!(
        client.shutdown(Duration::from_millis(300)),
        Err(Error::Timeout { pending: 10, .. })
    ));
}

/// The host process sends through a durable queue while the collector is down and is killed
/// with SIGKILL mid-stream; restarted on the same queue with the collector up, it delivers
/// every event whose `send()` had returned.
#[test]
fn sigkilled_host_resends_its_durable_queue_after_restart() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let queue = tempfile::tempdir().unwrap();
    let host = example_bin("durable_host");
    let mut child = Command::new(&host)
        .args(["send", &url, queue.path().to_str().unwrap(), "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = HashSet::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 2000 {
        let line = lines.next().expect("host output").unwrap();
        if let Some(id) = line.strip_prefix("ok ") {
            acked.insert(id.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-send
    child.wait().unwrap();
    // What the pipe already held was acknowledged by send() as well.
    for line in lines.map_while(Result::ok) {
        if let Some(id) = line.strip_prefix("ok ") {
            acked.insert(id.to_string());
        }
    }

    let c = Collector::start_on(port);
    let out = Command::new(&host)
        .args(["drain", &url, queue.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "drain failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("drained "));
    let got = c.wait_delivered(acked.len(), Duration::from_secs(30));
    let delivered = ids(&got);
    let missing: Vec<_> = acked.difference(&delivered).collect();
    assert!(missing.is_empty(), "{} acknowledged events missing, e.g. {:?}", missing.len(), missing.first());
    // Fully acknowledged segments are trimmed: only the (empty) active segment is left.
    let segs: Vec<_> = std::fs::read_dir(queue.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert!(segs.iter().sum::<u64>() == 0 || segs.len() <= 1, "segments left: {segs:?}");
}
