//! The router against real webhook receivers on 127.0.0.1: retries, dead letters and replay,
//! per-user order across lanes, and isolation of a failing destination.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::Value;
use sluice_eventlog::{AppendBatch, EventLog, LogConfig};
use sluice_router::{DeadLetters, DestinationConfig, RoutedDestination, Router};
use sluice_transformer::Registry;

/// A receiver that answers with whatever status it is told to, and records every request: the
/// status it answered and the events in the body.
/// Every request: the status answered and the events sent.
type Seen = Arc<Mutex<Vec<(u16, Vec<Value>)>>>;

#[derive(Clone, Default)]
struct Receiver {
    status: Arc<AtomicU16>,
    seen: Seen,
    requests: Arc<AtomicU16>,
}

impl Receiver {
    fn start(status: u16) -> (Receiver, String) {
        let r = Receiver { status: Arc::new(AtomicU16::new(status)), ..Default::default() };
        let state = r.clone();
        let server = HttpServer::new(move || {
            let state = state.clone();
            App::new().app_data(web::PayloadConfig::new(64 << 20)).route(
                "/",
                web::post().to(move |body: web::Bytes| {
                    let state = state.clone();
                    async move {
                        let status = state.status.load(Ordering::SeqCst);
                        let events: Vec<Value> = serde_json::from_slice(&body).unwrap();
                        state.seen.lock().unwrap().push((status, events));
                        state.requests.fetch_add(1, Ordering::SeqCst);
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
                    }
                }),
            )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let url = format!("http://{}/", server.addrs()[0]);
        tokio::spawn(server.run());
        (r, url)
    }

    /// Events of the requests it accepted (answered 200), in arrival order.
    fn received(&self) -> Vec<Value> {
        self.seen.lock().unwrap().iter().filter(|(s, _)| *s == 200).flat_map(|(_, e)| e.clone()).collect()
    }

    fn ids(&self) -> Vec<String> {
        self.received().iter().map(|e| e["messageId"].as_str().unwrap().to_string()).collect()
    }

    fn statuses(&self) -> Vec<u16> {
        self.seen.lock().unwrap().iter().map(|(s, _)| *s).collect()
    }
}

fn destination(id: &str, url: &str, extra: &str) -> DestinationConfig {
    let yaml = format!(
        "id: {id}\nlanes: 4\nbatch: {{ max_events: 50, max_age_ms: 50 }}\nretry: {{ initial_backoff_ms: 20, max_backoff_ms: 100, max_attempts: 4 }}\n{extra}sink: {{ type: webhook, url: \"{url}\", timeout_ms: 2000 }}\n"
    );
    serde_yaml::from_str(&yaml).unwrap()
}

async fn start(log: &EventLog, dlq: &Arc<DeadLetters>, configs: Vec<DestinationConfig>) -> Router {
    let registry = Registry::load(&[]).unwrap();
    let mut routed = Vec::new();
    for config in configs {
        let destination = config.sink.build().await.unwrap();
        routed.push(RoutedDestination { chain: registry.chain(&config.transformations).unwrap(), config, destination });
    }
    Router::start(log.clone(), routed, dlq.clone(), None).unwrap()
}

async fn append(log: &EventLog, users: usize, per_user: usize) -> Vec<String> {
    append_tagged(log, "", users, per_user).await
}

async fn append_tagged(log: &EventLog, tag: &str, users: usize, per_user: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut batch = AppendBatch::default();
    for seq in 0..per_user {
        for u in 0..users {
            let id = format!("{tag}u{u}-{seq}");
            let ev = format!(r#"{{"type":"track","event":"e","userId":"u{u}","seq":{seq},"messageId":"{id}"}}"#);
            batch.push_event("web", "", ev.as_bytes());
            ids.push(id);
        }
    }
    log.append(batch).await.unwrap();
    ids
}

async fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn setup() -> (tempfile::TempDir, EventLog, Arc<DeadLetters>) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let dlq = Arc::new(DeadLetters::open(dir.path().join("dlq")).unwrap());
    (dir, log, dlq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failures_are_retried_until_delivered_and_the_cursor_moves() {
    let (_dir, log, dlq) = setup();
    let (rx, url) = Receiver::start(503);
    let router = start(&log, &dlq, vec![destination("hook", &url, "")]).await;
    let ids = append(&log, 5, 4).await;
    wait_for("retries", 10, || rx.requests.load(Ordering::SeqCst) >= 2).await;
    rx.status.store(200, Ordering::SeqCst);
    wait_for("delivery", 10, || rx.ids().len() >= ids.len()).await;
    let mut got = rx.ids();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    wait_for("cursor", 5, || log.cursor("hook").unwrap() == Some(20)).await;
    router.stop().await;
    assert!(dlq.ids(None).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_are_dead_lettered_at_once_and_replay_delivers_them() {
    let (_dir, log, dlq) = setup();
    let (rx, url) = Receiver::start(400);
    let mut config = destination("hook", &url, "");
    config.lanes = 1;
    let router = start(&log, &dlq, vec![config.clone()]).await;
    let ids = append(&log, 3, 2).await;
    wait_for("dead letters", 10, || dlq.ids(None).unwrap().len() == 1).await;
    router.stop().await;
    assert_eq!(rx.requests.load(Ordering::SeqCst), 1, "a 400 must not be retried");
    let (dest, id) = dlq.ids(None).unwrap().remove(0);
    let entry = dlq.get(&dest, &id).unwrap();
    assert_eq!(entry.events.len(), ids.len());
    assert!(entry.reason.contains("400"), "{}", entry.reason);

    rx.status.store(200, Ordering::SeqCst);
    let destination = config.sink.build().await.unwrap();
    let chain = Registry::load(&[]).unwrap().chain(&[]).unwrap();
    let n = sluice_router::replay(&dlq, &entry, &config, destination.as_ref(), &chain).await.unwrap();
    assert_eq!(n, sluice_router::Replayed { delivered: ids.len(), filtered: 0 });
    assert_eq!(rx.ids().len(), ids.len());
    assert!(dlq.ids(None).unwrap().is_empty(), "a replayed entry is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_users_events_arrive_in_order_across_parallel_lanes() {
    let (_dir, log, dlq) = setup();
    let (rx, url) = Receiver::start(200);
    let router = start(&log, &dlq, vec![destination("hook", &url, "")]).await;
    let ids = append(&log, 20, 30).await;
    wait_for("delivery", 20, || rx.ids().len() >= ids.len()).await;
    router.stop().await;
    let received = rx.received();
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for e in &received {
        let user = e["userId"].as_str().unwrap().to_string();
        let seq = e["seq"].as_i64().unwrap();
        let prev = last.insert(user.clone(), seq).unwrap_or(-1);
        assert!(seq > prev, "{user}: {seq} arrived after {prev}");
    }
    assert_eq!(last.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_does_not_hold_back_a_healthy_one_and_catches_up_later() {
    let (_dir, log, dlq) = setup();
    let (healthy, healthy_url) = Receiver::start(200);
    let (failing, failing_url) = Receiver::start(503);
    let retry = "retry: { initial_backoff_ms: 20, max_backoff_ms: 100, max_attempts: 1000 }\n";
    let mut broken = destination("broken", &failing_url, "");
    broken.retry = serde_yaml::from_str::<DestinationConfig>(&format!("id: x\n{retry}sink: {{type: files, path: /tmp}}")).unwrap().retry;
    let router = start(&log, &dlq, vec![destination("ok", &healthy_url, ""), broken]).await;
    let ids = append(&log, 10, 10).await;
    let t0 = Instant::now();
    wait_for("healthy delivery", 10, || healthy.ids().len() >= ids.len()).await;
    let healthy_took = t0.elapsed();
    // The other destination was tried meanwhile and refused every time: what it saw it answered
    // with 503, so nothing of it counts as delivered yet.
    wait_for("attempts at the failing destination", 10, || failing.requests.load(Ordering::SeqCst) >= 2).await;
    let statuses = failing.statuses();
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    assert!(failing.ids().is_empty());
    // Well under what a stalled worker would take: the failing one retries every 20-100 ms, a
    // healthy batch takes its 50 ms batch age plus a request.
    assert!(healthy_took < Duration::from_secs(3), "the healthy destination took {healthy_took:?} next to a failing one");
    // More events while the other is down: still prompt.
    let more = append_tagged(&log, "more-", 10, 1).await;
    wait_for("healthy delivery", 10, || healthy.ids().len() >= ids.len() + more.len()).await;
    failing.status.store(200, Ordering::SeqCst);
    wait_for("catch-up", 20, || failing.ids().len() >= ids.len() + more.len()).await;
    router.stop().await;
    let mut got = failing.ids();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), ids.len() + more.len(), "nothing lost");
    assert!(dlq.ids(None).unwrap().is_empty());
    println!("healthy destination delivered 100 events in {healthy_took:?} while the other failed");
}
