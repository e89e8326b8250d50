//! `sluice dlq list | show | replay | purge` on real dead letters: a webhook receiver refuses
//! with 400 (permanent, dead-lettered at once), is fixed, and a replay delivers what was refused.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, read_request_body, start_server, wait_healthy};
use serde_json::{json, Value};

/// A webhook receiver answering `status` to every request and keeping the bodies it accepted.
struct Receiver {
    port: u16,
    status: Arc<AtomicU16>,
    accepted: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(400));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (st, acc) = (status.clone(), accepted.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let Some(body) = read_request_body(&mut reader) else { continue };
                let status = st.load(Ordering::SeqCst);
                if status == 200 {
                    if let Ok(Value::Array(events)) = serde_json::from_slice(&body) {
                        acc.lock().unwrap().extend(events);
                    }
                }
                let _ = write!(reader.get_mut(), "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Receiver { port, status, accepted }
    }
}

fn dlq(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice")).arg("dlq").args(args).arg("--config").arg(config).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn entry_ids(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
        .collect();
    ids.sort();
    ids
}

fn wait_for_entries(dir: &Path, n: usize, log: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = entry_ids(dir);
        if ids.len() >= n {
            return ids;
        }
        assert!(Instant::now() < deadline, "{} dead letters of {n}; log:\n{}", ids.len(), std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dead_letters_are_listed_shown_replayed_once_fixed_and_purged() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config: PathBuf = dir.path().join("sluice.yaml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir: {d}/data
collector:
  listen: 127.0.0.1:{port}
sources:
  - id: web
    write_keys: ["test-key"]
destinations:
  - id: hook
    batch: {{ max_events: 10, max_age_ms: 100 }}
    retry: {{ initial_backoff_ms: 10, max_backoff_ms: 20, max_attempts: 2 }}
    sink: {{ type: webhook, url: "http://127.0.0.1:{r}/in", mode: batch }}
"#,
            d = dir.path().display(),
            r = receiver.port
        ),
    )
    .unwrap();
    let log = dir.path().join("sluice.log");
    let mut child = start_server(&config, &log);
    wait_healthy(&mut child, port, &log);
    let http = reqwest::blocking::Client::new();
    let send = |ids: &[&str]| {
        let batch: Vec<Value> =
            ids.iter().map(|id| json!({"type": "track", "userId": "u1", "event": "Refused", "messageId": id})).collect();
        let resp = http.post(format!("http://127.0.0.1:{port}/v1/batch")).basic_auth("test-key", Some("")).json(&json!({"batch": batch})).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    };
    let store = dir.path().join("data/dead_letters/hook");

    send(&["m1", "m2", "m3"]);
    let ids = wait_for_entries(&store, 1, &log);
    assert_eq!(ids.len(), 1, "one batch, one entry");

    let list = dlq(&config, &["list"]);
    assert!(list.status.success(), "{}", text(&list));
    let listed = String::from_utf8_lossy(&list.stdout);
    let row = listed.lines().find(|l| l.starts_with(&ids[0])).unwrap_or_else(|| panic!("{listed}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["hook", "delivery", "3"], "{row}");
    assert!(row.contains("400"), "the reason names the status: {row}");

    let show = dlq(&config, &["show", &ids[0]]);
    assert!(show.status.success(), "{}", text(&show));
    let entry: Value = serde_json::from_slice(&show.stdout).unwrap();
    let shown: Vec<&str> = entry["events"].as_array().unwrap().iter().map(|e| e["event"]["messageId"].as_str().unwrap()).collect();
    assert_eq!(shown, ["m1", "m2", "m3"]);
    assert_eq!(entry["destination"], "hook");

    // While the receiver still refuses, a replay fails, says so, and keeps the entry.
    let again = dlq(&config, &["replay"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert_eq!(entry_ids(&store), ids);

    receiver.status.store(200, Ordering::SeqCst);
    let replay = dlq(&config, &["replay", "--destination", "hook"]);
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(String::from_utf8_lossy(&replay.stdout).contains("replayed 3 events; 0 entries failed"), "{}", text(&replay));
    let got: Vec<String> = receiver.accepted.lock().unwrap().iter().map(|e| e["messageId"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, ["m1", "m2", "m3"]);
    assert!(entry_ids(&store).is_empty(), "a delivered entry is removed");

    // Purge: a new dead letter, removed without being delivered.
    receiver.status.store(400, Ordering::SeqCst);
    send(&["m4"]);
    wait_for_entries(&store, 1, &log);
    let purge = dlq(&config, &["purge"]);
    assert!(purge.status.success() && String::from_utf8_lossy(&purge.stdout).contains("purged 1 entries"), "{}", text(&purge));
    assert!(entry_ids(&store).is_empty());
    let list = dlq(&config, &["list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 1, "only the header: {}", text(&list));
    assert_eq!(receiver.accepted.lock().unwrap().len(), 3, "purged events were not delivered");

    let _ = child.kill();
    let _ = child.wait();
}
