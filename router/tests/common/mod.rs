//! Helpers shared by the router tests that need a receiver whose answers change request by
//! request (retries, Retry-After), a chat webhook that records alerts, or transformations.
//! `delivery.rs` keeps its own simpler receiver.
#![allow(dead_code)] // each test file uses a different part of this module

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;
use sluice_eventlog::{AppendBatch, EventLog, LogConfig};
use sluice_router::{Alerter, DeadLetters, DestinationConfig, RoutedDestination, Router};
use sluice_transformer::Registry;

/// What the receiver answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, retry_after: None }
    }
    pub fn retry_after(mut self, value: impl Into<String>) -> Reply {
        self.retry_after = Some(value.into());
        self
    }
}

/// One request the receiver saw: when it arrived (the test's monotonic clock), what it answered
/// and the JSON body.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub status: u16,
    pub body: Value,
}

/// An actix-web server on 127.0.0.1 whose answer to request number `n` (0-based) is `plan(n)`.
/// It records every request, accepted or not.
#[derive(Clone)]
pub struct Receiver {
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    pub fn start(plan: impl Fn(usize) -> Reply + Send + Sync + 'static) -> (Receiver, String) {
        let plan: Arc<dyn Fn(usize) -> Reply + Send + Sync> = Arc::new(plan);
        let r = Receiver { seen: Arc::default() };
        let seen = r.seen.clone();
        let server = HttpServer::new(move || {
            let (seen, plan) = (seen.clone(), plan.clone());
            App::new().app_data(web::PayloadConfig::new(64 << 20)).route(
                "/",
                web::post().to(move |_req: HttpRequest, body: web::Bytes| {
                    let (seen, plan) = (seen.clone(), plan.clone());
                    async move {
                        // Numbering and recording under one lock, so `plan(n)` matches the n-th
                        // entry of `seen` even with concurrent lanes.
                        let reply = {
                            let mut seen = seen.lock().unwrap();
                            let reply = plan(seen.len());
                            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            seen.push(Seen { at: Instant::now(), status: reply.status, body });
                            reply
                        };
                        let mut response =
                            HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap());
                        if let Some(v) = reply.retry_after {
                            response.insert_header(("Retry-After", v));
                        }
                        response.finish()
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

    /// Always answers `status`.
    pub fn always(status: u16) -> (Receiver, String) {
        Receiver::start(move |_| Reply::status(status))
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Events of the accepted (2xx) requests, in arrival order (batch bodies are arrays).
    pub fn events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for s in self.seen.lock().unwrap().iter().filter(|s| (200..300).contains(&s.status)) {
            match &s.body {
                Value::Array(items) => out.extend(items.iter().cloned()),
                other => out.push(other.clone()),
            }
        }
        out
    }

    pub fn ids(&self) -> Vec<String> {
        self.events().iter().map(|e| e["messageId"].as_str().unwrap_or_default().to_string()).collect()
    }
}

/// Short batch age and fast retries, so tests never wait on defaults meant for production.
pub const FAST: &str =
    "batch: { max_events: 1000, max_age_ms: 50 }\nretry: { initial_backoff_ms: 20, max_backoff_ms: 100, max_attempts: 4 }\n";

/// A webhook destination `id` posting to `url`; `extra` is the rest of its YAML (lanes, batch,
/// retry, transformations), each line ending in a newline.
pub fn destination(id: &str, url: &str, extra: &str) -> DestinationConfig {
    let yaml = format!("id: {id}\n{extra}sink: {{ type: webhook, url: \"{url}\", timeout_ms: 2000 }}\n");
    serde_yaml::from_str(&yaml).unwrap()
}

pub async fn start(
    log: &EventLog,
    dlq: &Arc<DeadLetters>,
    registry: &Registry,
    configs: Vec<DestinationConfig>,
    alerts: Option<Arc<Alerter>>,
) -> Router {
    let mut routed = Vec::new();
    for config in configs {
        let destination = config.sink.build().await.unwrap();
        routed.push(RoutedDestination { chain: registry.chain(&config.transformations).unwrap(), config, destination });
    }
    Router::start(log.clone(), routed, dlq.clone(), alerts).unwrap()
}

/// Appends raw JSON events in one log append (so one read returns them together).
pub async fn append_raw(log: &EventLog, events: &[String]) {
    let mut batch = AppendBatch::default();
    for e in events {
        batch.push_event("web", "", e.as_bytes());
    }
    log.append(batch).await.unwrap();
}

/// Appends `n` track events of `users` users with messageIds `{tag}{i}`; returns the ids.
pub async fn append(log: &EventLog, tag: &str, users: usize, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}{i}")).collect();
    let events: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| format!(r#"{{"type":"track","event":"e","userId":"u{}","messageId":"{id}"}}"#, i % users))
        .collect();
    append_raw(log, &events).await;
    ids
}

pub async fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn setup() -> (tempfile::TempDir, EventLog, Arc<DeadLetters>) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let dlq = Arc::new(DeadLetters::open(dir.path().join("dlq")).unwrap());
    (dir, log, dlq)
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// One Prometheus recorder for the whole test binary (a recorder is process-global); each test
/// reads only the series of its own destinations.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap())
}

/// The value of `name{destination="dest"}`, 0 when absent.
pub fn counter(name: &str, dest: &str) -> u64 {
    let want = format!("{name}{{destination=\"{dest}\"}} ");
    metrics().render().lines().find_map(|l| l.strip_prefix(&want).map(|v| v.trim().parse().unwrap())).unwrap_or(0)
}
