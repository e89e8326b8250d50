//! At-least-once across a crash for destinations other than `files`: the real `sluice` binary
//! is SIGKILLed while it is delivering, restarted on the same data directory, and every
//! acknowledged messageId must still reach the destination. Duplicates are allowed (the cursor
//! only moves after a whole batch is delivered, so a batch cut off by the kill is sent again) and
//! are counted in the output.
//!
//! - webhook: a receiver in this process that takes 200 ms per request, so deliveries are
//!   provably in flight at the kill.
//! - s3: moto on 127.0.0.1:5000 (`scripts/backends.sh start`; like destinations/tests/s3.rs, the
//!   test fails rather than skips without it), killed while clients are still sending.

#[allow(dead_code)] // this file does not use the `files` helpers
mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use common::{free_port, start_server, wait_healthy};
use serde_json::Value;

/// One destination `hook` with the given sink; small batches so a run has many of them.
fn write_config(dir: &Path, port: u16, sink: &str) -> PathBuf {
    let destination = format!(
        "  - id: hook\n    lanes: 4\n    batch: {{ max_events: 100, max_age_ms: 100 }}\n    \
         retry: {{ initial_backoff_ms: 100, max_backoff_ms: 1000 }}\n    sink: {sink}\n"
    );
    common::write_config_with(dir, port, &destination)
}

/// Posts `total` track events in `/v1/batch` requests of `per_request`, with `pause` between
/// requests. A request that fails (the server is down, or was killed mid-request) is sent again
/// with the same messageIds until it is acknowledged, as an SDK does; `acked` counts the events
/// acknowledged so far. Returns every id, all of them acknowledged.
fn send_events(port: u16, tag: &str, total: usize, per_request: usize, pause: Duration, acked: &AtomicUsize) -> Vec<String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/batch");
    let ids: Vec<String> = (0..total).map(|i| format!("{tag}-{i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for chunk in ids.chunks(per_request) {
        let batch: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| serde_json::json!({ "type": "track", "event": "e", "userId": format!("u{}", i % 16), "messageId": id }))
            .collect();
        let body = serde_json::json!({ "batch": batch }).to_string();
        loop {
            assert!(Instant::now() < deadline, "could not get {total} events acknowledged within 120 s");
            let res = client.post(&url).basic_auth("test-key", Some("")).header("content-type", "application/json").body(body.clone()).send();
            if matches!(&res, Ok(r) if r.status().as_u16() == 200) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        acked.fetch_add(chunk.len(), Ordering::SeqCst);
        thread::sleep(pause);
    }
    ids
}

fn wait_until(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every id is in `delivered()`, then checks nothing foreign arrived and reports the
/// duplicates. `delivered` maps messageId -> times delivered.
fn check_all_delivered(name: &str, ids: &[String], log: &Path, mut delivered: impl FnMut() -> HashMap<String, usize>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (seen, missing) = loop {
        let seen = delivered();
        let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (seen, missing);
        }
        thread::sleep(Duration::from_millis(250));
    };
    assert!(missing.is_empty(), "{name}: {} acknowledged events never delivered (first: {:?}); log tail:\n{}", missing.len(), &missing[..missing.len().min(5)], tail(log));
    let sent: HashSet<&String> = ids.iter().collect();
    let foreign: Vec<&String> = seen.keys().filter(|k| !sent.contains(k)).collect();
    assert!(foreign.is_empty(), "{name}: delivered ids nobody sent: {:?}", &foreign[..foreign.len().min(5)]);
    let total: usize = seen.values().sum();
    let twice = seen.values().filter(|&&n| n > 1).count();
    eprintln!("{name}: {} acknowledged, all delivered; {total} deliveries, {} extra, {twice} ids delivered more than once", ids.len(), total - ids.len());
}

fn tail(log: &Path) -> String {
    let l = fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(&l[l.len().saturating_sub(4000)..]).into_owned()
}

/// The webhook receiver: takes `delay` per request, then records the batch's messageIds and
/// answers 200. `in_flight` counts requests being handled, kept right by a guard even if actix
/// drops the handler when the client disconnects.
#[derive(Default)]
struct Hook {
    delivered: Mutex<HashMap<String, usize>>,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
}

struct InFlight(Arc<Hook>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Hook {
    fn start(delay: Duration) -> (Arc<Hook>, String) {
        let hook = Arc::new(Hook::default());
        let state = hook.clone();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let state = state.clone();
                    App::new().app_data(web::PayloadConfig::new(64 << 20)).route(
                        "/",
                        web::post().to(move |body: web::Bytes| {
                            let state = state.clone();
                            async move {
                                state.in_flight.fetch_add(1, Ordering::SeqCst);
                                let _guard = InFlight(state.clone());
                                state.requests.fetch_add(1, Ordering::SeqCst);
                                actix_web::rt::time::sleep(delay).await;
                                let events: Vec<Value> = serde_json::from_slice(&body).unwrap();
                                let mut delivered = state.delivered.lock().unwrap();
                                for e in events {
                                    *delivered.entry(e["messageId"].as_str().unwrap().to_string()).or_insert(0) += 1;
                                }
                                HttpResponse::Ok().finish()
                            }
                        }),
                    )
                })
                // The test process must keep its own signal handling.
                .disable_signals()
                .workers(2)
                .bind("127.0.0.1:0")
                .unwrap();
                tx.send(server.addrs()[0]).unwrap();
                server.run().await.unwrap();
            })
        });
        let addr = rx.recv().unwrap();
        (hook, format!("http://{addr}/"))
    }

    fn distinct(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }
}

#[test]
fn webhook_deliveries_cut_by_sigkill_are_completed_after_the_restart() {
    let (hook, url) = Hook::start(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &format!("{{ type: webhook, url: \"{url}\", timeout_ms: 10000 }}"));
    let log = dir.path().join("sluice.log");
    let mut child = start_server(&config, &log);
    wait_healthy(&mut child, port, &log);

    let t0 = Instant::now();
    let ids = send_events(port, "w", 4000, 100, Duration::ZERO, &AtomicUsize::new(0));
    let sent_in = t0.elapsed();
    // 4 lanes x 200 ms per request: some hundreds of events a second, so a few thousand take
    // seconds and the kill lands in the middle, with requests being handled.
    wait_until("deliveries under way", 30, || hook.distinct() >= 200 && hook.in_flight.load(Ordering::SeqCst) > 0);
    let (at_kill, in_flight, requests) = (hook.distinct(), hook.in_flight.load(Ordering::SeqCst), hook.requests.load(Ordering::SeqCst));
    child.kill().expect("SIGKILL sluice");
    let _ = child.wait();
    eprintln!("webhook: {} events acknowledged in {sent_in:?}; SIGKILL with {at_kill} delivered, {in_flight} request(s) in flight, {requests} requests so far", ids.len());
    assert!(in_flight > 0, "the kill must cut deliveries in flight");
    assert!(at_kill > 0 && at_kill < ids.len(), "some but not all delivered at the kill ({at_kill} of {})", ids.len());
    // The requests in flight finish on the receiver's side; sluice never saw their answers.
    thread::sleep(Duration::from_millis(300));
    eprintln!("webhook: {} delivered once the cut requests finished", hook.distinct());

    let t1 = Instant::now();
    let mut child = start_server(&config, &log);
    wait_healthy(&mut child, port, &log);
    check_all_delivered("webhook", &ids, &log, || hook.delivered.lock().unwrap().clone());
    eprintln!("webhook: the rest delivered {:?} after the restart; {} requests in all", t1.elapsed(), hook.requests.load(Ordering::SeqCst));
    let _ = child.kill();
    let _ = child.wait();
}

/// The S3 endpoint under test; fails (never skips) when nothing answers there.
fn s3_endpoint() -> String {
    let endpoint = std::env::var("SLUICE_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    if std::net::TcpStream::connect(host).is_err() {
        panic!("no S3 server at {endpoint} (SLUICE_TEST_S3_ENDPOINT): run `scripts/backends.sh start` first");
    }
    endpoint
}

/// A client for moto. moto does not verify signatures but does check object ownership: a request
/// whose Authorization header names the access key `test` (the one sluice uploads with) may read
/// the objects, an anonymous one gets 403. This keeps the AWS SDK out of this crate's
/// dev-dependencies, at the price of working against moto only.
fn moto_client() -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";
    headers.insert(reqwest::header::AUTHORIZATION, auth.parse().unwrap());
    reqwest::blocking::Client::builder().default_headers(headers).timeout(Duration::from_secs(10)).build().unwrap()
}

fn s3_keys(client: &reqwest::blocking::Client, bucket_url: &str) -> Vec<String> {
    let listing = client.get(format!("{bucket_url}?list-type=2")).send().unwrap().text().unwrap();
    assert!(listing.contains("<IsTruncated>false</IsTruncated>"), "more than one page of objects: {listing:.300}");
    listing.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_string).collect()
}

/// messageId -> count over every object in the bucket, and the number of objects.
fn s3_delivered(client: &reqwest::blocking::Client, bucket_url: &str) -> (HashMap<String, usize>, usize) {
    let keys = s3_keys(client, bucket_url);
    let mut seen = HashMap::new();
    for key in &keys {
        let res = client.get(format!("{bucket_url}/{key}")).send().unwrap();
        assert!(res.status().is_success(), "GET {key}: {}", res.status());
        let body = res.bytes().unwrap();
        for line in BufReader::new(flate2::read::MultiGzDecoder::new(&body[..])).lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            *seen.entry(v["messageId"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    (seen, keys.len())
}

#[test]
fn s3_deliveries_cut_by_sigkill_are_completed_after_the_restart() {
    let endpoint = s3_endpoint();
    let client = moto_client();
    let bucket = format!("sluice-restart-{}", std::process::id());
    let bucket_url = format!("{endpoint}/{bucket}");
    let created = client.put(&bucket_url).send().unwrap();
    assert!(created.status().is_success(), "creating bucket {bucket}: {}", created.status());

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink = format!(
        "{{ type: s3, bucket: {bucket}, prefix: events, region: us-east-1, endpoint: \"{endpoint}\", force_path_style: true, access_key_id: test, secret_access_key: test }}"
    );
    let config = write_config(dir.path(), port, &sink);
    let log = dir.path().join("sluice.log");
    let mut child = start_server(&config, &log);
    wait_healthy(&mut child, port, &log);

    // Uploads to moto are quick, so instead of a slow receiver the clients are still sending when
    // the server dies: batches are being read, uploaded and committed all along. The clients
    // re-send what was refused while the server was down.
    let acked = Arc::new(AtomicUsize::new(0));
    let sender = {
        let acked = acked.clone();
        thread::spawn(move || send_events(port, "s", 6000, 100, Duration::from_millis(30), &acked))
    };
    // About a third of the way: some 40 objects of ~25 events (4 lanes share each 100-event batch).
    wait_until("a part of the events in the bucket", 30, || s3_keys(&client, &bucket_url).len() >= 40);
    let (at_kill, objects) = s3_delivered(&client, &bucket_url);
    let acked_at_kill = acked.load(Ordering::SeqCst);
    child.kill().expect("SIGKILL sluice");
    let _ = child.wait();
    eprintln!("s3: SIGKILL with {acked_at_kill} acknowledged, {} delivered in {objects} objects", at_kill.len());
    assert!(!sender.is_finished() && acked_at_kill < 6000, "the clients were still sending at the kill");
    assert!(!at_kill.is_empty());

    thread::sleep(Duration::from_millis(500));
    let mut child = start_server(&config, &log);
    wait_healthy(&mut child, port, &log);
    let ids = sender.join().unwrap();
    check_all_delivered("s3", &ids, &log, || s3_delivered(&client, &bucket_url).0);
    eprintln!("s3: {} objects in the bucket", s3_delivered(&client, &bucket_url).1);
    let _ = child.kill();
    let _ = child.wait();
}
