//! What a 200 promises, end to end through the real binary: an event at the nesting limit reaches
//! the files destination through the default scrub_pii chain (one past it is refused); a bad
//! client clock is repaired, delivered and counted in /metrics; scripts see the real write key id
//! (named or fingerprinted, header or body key); a log written with version 1 records still
//! delivers; `transform test` fails on a failing event; SIGHUP swaps a script.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{admin_url, delivered_events, free_port, metric_value, start_healthy, Killed};
use serde_json::{json, Value};

const MAX_EVENT_DEPTH: usize = 64;

fn repo() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).parent().unwrap().to_path_buf()
}

struct Sluice {
    child: Killed,
    port: u16,
    /// `http://<admin.listen>`: where /metrics is.
    admin: String,
    dir: tempfile::TempDir,
    log: PathBuf,
    http: reqwest::blocking::Client,
}

impl Sluice {
    /// Starts the binary on `body` (sources, transformations, destinations), with data and output
    /// under a fresh directory (`{dir}` in `body` stands for it).
    fn start(body: &str) -> Sluice {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, body)
    }

    fn start_in(dir: tempfile::TempDir, body: &str) -> Sluice {
        let port = free_port();
        let config = format!(
            "data_dir: {d}/data\ncollector:\n  listen: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin}\n{}",
            body.replace("{dir}", &dir.path().display().to_string()),
            d = dir.path().display(),
            admin = free_port(),
        );
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("sluice.log");
        let child = start_healthy(&path, port, &log);
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let admin = admin_url(&path);
        Sluice { child, port, admin, dir, log, http }
    }

    fn post(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.http.post(format!("http://127.0.0.1:{}{path}", self.port)).json(body);
        if let Some(key) = key {
            req = req.basic_auth(key, Some(""));
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.admin)).send().unwrap().text().unwrap()
    }

    /// Waits until the files destination under `{dir}/out` holds `n` events.
    fn delivered(&self, n: usize) -> Vec<Value> {
        let out = self.dir.path().join("out");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = delivered_events(&out);
            if events.len() >= n {
                assert_eq!(events.len(), n, "more events than sent: {events:?}");
                return events;
            }
            assert!(Instant::now() < deadline, "{} of {n} events delivered; log:\n{}", events.len(), self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn nested(n: usize) -> Value {
    let mut v = json!("deep");
    for _ in 0..n {
        v = json!({ "level": v });
    }
    v
}

fn scrub_pii_config() -> String {
    format!(
        r#"sources:
  - id: web
    write_keys: ["test-key"]
transformations:
  - id: scrub_pii
    script: {}
destinations:
  - id: out
    transformations: [scrub_pii]
    batch: {{ max_events: 100, max_age_ms: 100 }}
    sink: {{ type: files, path: "{{dir}}/out" }}
"#,
        repo().join("transforms/scrub_pii.rhai").display()
    )
}

#[test]
fn an_event_at_the_nesting_limit_is_delivered_through_scrub_pii_and_one_past_it_is_refused() {
    let s = Sluice::start(&scrub_pii_config());
    // The event is level 1: properties may be MAX - 1 deep.
    let at_limit = json!({"userId": "u1", "event": "Deep", "properties": nested(MAX_EVENT_DEPTH - 1)});
    assert_eq!(s.post("/v1/track", Some("test-key"), &at_limit).0, 200);
    let past = json!({"batch": [{"type": "track", "userId": "u1", "event": "Deeper", "properties": nested(MAX_EVENT_DEPTH)}]});
    let (status, body) = s.post("/v1/batch", Some("test-key"), &past);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_event")), "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("batch[0]: "), "{body}");
    let events = s.delivered(1);
    assert_eq!(events[0]["event"], "Deep");
    assert_eq!(events[0]["properties"], nested(MAX_EVENT_DEPTH - 1));
    assert!(!s.log_text().contains("dead-letter"), "{}", s.log_text());
}

#[test]
fn bad_timestamps_are_repaired_delivered_and_counted_in_metrics() {
    let s = Sluice::start(&scrub_pii_config());
    let batch = json!({"sentAt": "not a date", "batch": [
        {"type": "track", "userId": "u1", "event": "A", "timestamp": "2026-12-01T10:00:00Z"},
        {"type": "track", "userId": "u1", "event": "B", "timestamp": "yesterday", "originalTimestamp": 1764583200},
        {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}},
    ]});
    assert_eq!(s.post("/v1/batch", Some("test-key"), &batch).0, 200);
    assert_eq!(s.post("/v1/track", Some("test-key"), &json!({"userId": "u2", "event": "C"})).0, 200);
    assert_eq!(s.post("/v1/track", Some("test-key"), &json!({"userId": "u2", "event": "D", "properties": [1]})).0, 400);
    let mut events = s.delivered(4);
    events.sort_by_key(|e| e["event"].as_str().unwrap_or("").to_string());
    let b = events.iter().find(|e| e["event"] == "B").unwrap();
    assert_eq!(b["timestamp"], b["receivedAt"]);
    assert_eq!(
        b["context"]["sluice"]["invalid_timestamps"],
        json!({"timestamp": "yesterday", "originalTimestamp": 1764583200, "sentAt": "not a date"})
    );

    let text = s.metrics();
    let m = |series: &str| metric_value(&text, series);
    assert_eq!(m(r#"sluice_events_received_total{source="web",type="track"}"#), 3.0, "{text}");
    assert_eq!(m(r#"sluice_events_received_total{source="web",type="identify"}"#), 1.0);
    assert_eq!(m(r#"sluice_timestamps_repaired_total{source="web",field="sentAt"}"#), 3.0);
    assert_eq!(m(r#"sluice_timestamps_repaired_total{source="web",field="timestamp"}"#), 1.0);
    assert_eq!(m(r#"sluice_timestamps_repaired_total{source="web",field="originalTimestamp"}"#), 1.0);
    assert_eq!(m(r#"sluice_requests_rejected_total{reason="invalid_event"}"#), 1.0);
    // Delivery is counted once the batch landed, which `delivered` above already saw on disk.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_value(&s.metrics(), r#"sluice_destination_delivered_total{destination="out"}"#) < 4.0 {
        assert!(Instant::now() < deadline, "{}", s.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric_value(&s.metrics(), r#"sluice_destination_delivered_total{destination="out"}"#), 4.0);
}

const KEY_ID_SCRIPT: &str = "fn transform(event, meta) { event.seen_key_id = meta.write_key_id; event }\n";

fn key_id_config(script: &Path) -> String {
    format!(
        r#"sources:
  - id: web
    write_keys: ["plain-key", {{ id: ios-app, key: "named-key" }}]
transformations:
  - id: key_id
    script: {}
destinations:
  - id: out
    transformations: [key_id]
    batch: {{ max_events: 100, max_age_ms: 100 }}
    sink: {{ type: files, path: "{{dir}}/out" }}
"#,
        script.display()
    )
}

#[test]
fn scripts_see_the_write_key_id_the_event_came_with() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("key_id.rhai");
    std::fs::write(&script, KEY_ID_SCRIPT).unwrap();
    let s = Sluice::start_in(dir, &key_id_config(&script));
    assert_eq!(s.post("/v1/track", Some("named-key"), &json!({"userId": "u", "event": "Named"})).0, 200);
    assert_eq!(s.post("/v1/track", Some("plain-key"), &json!({"userId": "u", "event": "Plain"})).0, 200);
    let body_key = json!({"writeKey": "named-key", "batch": [{"type": "track", "userId": "u", "event": "Body"}]});
    assert_eq!(s.post("/v1/batch", None, &body_key).0, 200);
    let events = s.delivered(3);
    let seen = |name: &str| events.iter().find(|e| e["event"] == name).unwrap()["seen_key_id"].clone();
    assert_eq!(seen("Named"), "ios-app");
    // As `printf plain-key | sha256sum` prints it.
    assert_eq!(seen("Plain"), "sha256:2b5cde0108a9");
    assert_eq!(seen("Body"), "ios-app");
    assert!(events.iter().all(|e| e.get("writeKey").is_none()));
}

/// A version 1 record as the previous release wrote it.
fn v1_record(source: &str, event: &str) -> Vec<u8> {
    let mut payload = vec![1u8, source.len() as u8];
    payload.extend_from_slice(source.as_bytes());
    payload.extend_from_slice(event.as_bytes());
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// CRC-32 (IEEE), bit by bit: the log's checksum, without a dependency for one test.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn a_log_written_with_version_1_records_still_opens_and_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let segments = dir.path().join("data/log/segments");
    std::fs::create_dir_all(&segments).unwrap();
    let mut bytes = Vec::new();
    for i in 0..3 {
        let event = json!({"type": "track", "userId": "u", "event": "Old", "messageId": format!("old-{i}"),
                           "receivedAt": "2026-11-30T10:00:00.000Z"});
        bytes.extend(v1_record("web", &event.to_string()));
    }
    std::fs::write(segments.join(format!("{:020}.log", 0)), bytes).unwrap();
    let script = dir.path().join("key_id.rhai");
    std::fs::write(&script, KEY_ID_SCRIPT).unwrap();
    let s = Sluice::start_in(dir, &key_id_config(&script));
    assert_eq!(s.post("/v1/track", Some("named-key"), &json!({"userId": "u", "event": "New", "messageId": "new-3"})).0, 200);
    let events = s.delivered(4);
    let ids: Vec<(&str, &str)> =
        events.iter().map(|e| (e["messageId"].as_str().unwrap(), e["seen_key_id"].as_str().unwrap())).collect();
    assert!(ids.contains(&("old-0", "")) && ids.contains(&("old-1", "")) && ids.contains(&("old-2", "")), "{ids:?}");
    assert!(ids.contains(&("new-3", "ios-app")), "{ids:?}");
}

#[test]
fn transform_test_exits_non_zero_when_the_script_fails_on_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.rhai");
    std::fs::write(&script, "fn transform(event, meta) { if event.userId == \"bad\" { throw \"no bad users\"; } event }").unwrap();
    let run = |events: &str| {
        let file = dir.path().join("events.json");
        std::fs::write(&file, events).unwrap();
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["transform", "test"])
            .arg(&script)
            .arg("--event")
            .arg(&file)
            .output()
            .unwrap()
    };
    let ok = run(r#"[{"userId": "good"}]"#);
    assert!(ok.status.success(), "{ok:?}");
    let failed = run(r#"[{"userId": "good"}, {"userId": "bad"}]"#);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert!(stdout.contains("# event 1") && stdout.contains("# event 2") && stdout.contains("no bad users"), "{stdout}");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("failed on 1 event"), "{failed:?}");
}

#[test]
fn sighup_reloads_a_script_and_later_events_carry_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tag.rhai");
    std::fs::write(&script, "fn transform(event, meta) { event.version = 1; event }\n").unwrap();
    // An old mtime, kept across the edit below with the same length: the file watcher (which
    // polls size and mtime) sees no change, so only the SIGHUP can bring the new version in.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&script).unwrap().set_modified(old).unwrap();
    let s = Sluice::start_in(dir, &key_id_config(&script).replace("key_id", "tag"));
    assert_eq!(s.post("/v1/track", Some("plain-key"), &json!({"userId": "u", "event": "Before"})).0, 200);
    s.delivered(1);
    std::fs::write(&script, "fn transform(event, meta) { event.version = 2; event }\n").unwrap();
    std::fs::File::options().write(true).open(&script).unwrap().set_modified(old).unwrap();
    let hup = Command::new("kill").arg("-HUP").arg(s.child.0.id().to_string()).status().unwrap();
    assert!(hup.success());
    // The reload is observable in the log; wait for it rather than for time to pass.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.log_text().contains("SIGHUP: transformation scripts reloaded") {
        assert!(Instant::now() < deadline, "no reload logged:\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.post("/v1/track", Some("plain-key"), &json!({"userId": "u", "event": "After"})).0, 200);
    let events = s.delivered(2);
    let version = |name: &str| events.iter().find(|e| e["event"] == name).unwrap()["version"].clone();
    assert_eq!((version("Before"), version("After")), (json!(1), json!(2)));
}
