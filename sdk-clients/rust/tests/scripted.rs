//! Status codes the collector gives only under load or disk pressure (429, 503 with
//! `Retry-After`), and a 400 without an index hint, from a tiny scripted HTTP server.

mod common;

use common::{Scripted, WRITE_KEY};
use sluice_analytics::{Client, ClientConfig, Identity, Issue, Message};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn hdr(k: &str, v: &str) -> Vec<(String, String)> {
    vec![(k.to_string(), v.to_string())]
}

#[test]
fn retry_after_on_429_and_503_is_honoured() {
    let mut n = 0;
    let server = Scripted::start(Box::new(move |_| {
        n += 1;
        match n {
            1 => (429, hdr("Retry-After", "1"), r#"{"error":"rate_limited"}"#.into()),
            2 => (503, hdr("Retry-After", "2"), r#"{"error":"log_full"}"#.into()),
            _ => (200, vec![], "OK".into()),
        }
    }));
    // A 10 ms backoff: without Retry-After the retries would come at once.
    let client = Client::new(
        ClientConfig::new(server.url(), WRITE_KEY)
            .flush_interval(Duration::from_millis(10))
            .backoff(Duration::from_millis(10), Duration::from_millis(20)),
    )
    .unwrap();
    let m = Message::track(Identity::user("u1"), "Rate Limited");
    let id = m.message_id().to_string();
    client.send(m).unwrap();
    client.flush(Duration::from_secs(20)).unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.iter().map(|r| r.status).collect::<Vec<_>>(), vec![429, 503, 200]);
    let gap1 = reqs[1].at - reqs[0].at;
    let gap2 = reqs[2].at - reqs[1].at;
    assert!(gap1 >= Duration::from_millis(950), "429 retried after {gap1:?}, not ~1 s");
    assert!(gap2 >= Duration::from_millis(1950), "503 retried after {gap2:?}, not ~2 s");
    assert!(gap2 < Duration::from_secs(5), "waited far longer than asked: {gap2:?}");
    for r in &reqs {
        assert_eq!(r.body["batch"][0]["messageId"], id.as_str(), "same messageId on every retry");
        assert!(r.headers.iter().any(|(k, v)| k == "content-encoding" && v == "gzip"));
        assert!(r.headers.iter().any(|(k, v)| k == "authorization" && v.starts_with("Basic ")));
    }
    // sentAt is stamped per attempt.
    assert_ne!(reqs[0].body["sentAt"], reqs[2].body["sentAt"]);
    let s = client.stats();
    assert_eq!((s.sent, s.retried), (1, 2));
}

#[test]
fn plain_5xx_and_408_back_off_exponentially_then_deliver() {
    let mut n = 0;
    let server = Scripted::start(Box::new(move |_| {
        n += 1;
        match n {
            1 => (500, vec![], "boom".into()),
            2 => (408, vec![], "slow".into()),
            3 => (502, vec![], "bad gateway".into()),
            _ => (200, vec![], "OK".into()),
        }
    }));
    let client = Client::new(
        ClientConfig::new(server.url(), WRITE_KEY)
            .flush_interval(Duration::from_millis(10))
            .backoff(Duration::from_millis(200), Duration::from_secs(5)),
    )
    .unwrap();
    client.send(Message::track(Identity::user("u1"), "Flaky")).unwrap();
    client.flush(Duration::from_secs(20)).unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 4);
    // Backoff doubles from 200 ms, each wait in [half, full]: >= 100, 200, 400 ms.
    let gaps: Vec<Duration> = reqs.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (g, min) in gaps.iter().zip([100, 200, 400]) {
        assert!(*g >= Duration::from_millis(min), "gaps {gaps:?}");
    }
}

/// Without the collector's `batch[i]` hint the SDK bisects; both bad events are found, every
/// good one is delivered once, in order.
#[test]
fn bisects_a_400_without_hint() {
    let server = Scripted::start(Box::new(|body| {
        let bad = body["batch"]
            .as_array()
            .map(|b| b.iter().any(|e| e["properties"]["bad"] == true))
            .unwrap_or(true);
        if bad {
            (400, vec![], r#"{"error":"invalid_event","message":"no"}"#.into())
        } else {
            (200, vec![], "OK".into())
        }
    }));
    let issues = Arc::new(Mutex::new(Vec::new()));
    let sink = issues.clone();
    let client = Client::new(
        ClientConfig::new(server.url(), WRITE_KEY)
            .max_batch_events(64)
            .flush_interval(Duration::from_secs(5))
            .on_issue(move |i| sink.lock().unwrap().push(i.clone())),
    )
    .unwrap();
    let mut bad_ids = HashSet::new();
    for i in 0..64 {
        let bad = i == 5 || i == 40;
        let m = Message::track(Identity::user("u1"), "E").properties(serde_json::json!({"i": i, "bad": bad}));
        if bad {
            bad_ids.insert(m.message_id().to_string());
        }
        client.send(m).unwrap();
    }
    client.flush(Duration::from_secs(20)).unwrap();
    let delivered: Vec<i64> = server
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .flat_map(|r| r.body["batch"].as_array().unwrap().clone())
        .map(|e| e["properties"]["i"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (0..64).filter(|i| *i != 5 && *i != 40).collect();
    assert_eq!(delivered, expected);
    let reported: HashSet<String> = issues
        .lock()
        .unwrap()
        .iter()
        .filter_map(|i| match i {
            Issue::Rejected { message_id, .. } => Some(message_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reported, bad_ids);
    assert_eq!(client.stats().rejected, 2);
    // log2(64) = 6 levels: far fewer requests than one per event.
    assert!(server.requests().len() < 30, "{} requests", server.requests().len());
}
