//! A disabled destination keeps its place in the log, and the cursors of destinations removed
//! from the config can be seen and dropped: the real `sluice` binary, its `log` commands, and
//! 4 KiB segments so a few hundred events span many of them.

#[allow(dead_code)] // this file writes its own config
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use common::{delivered_events, free_port, start_server, wait_healthy};

/// `now` always delivers; `later` is in the config as `later` (None: not at all).
fn write_config(dir: &Path, port: u16, later: Option<bool>) -> PathBuf {
    let later = match later {
        Some(enabled) => format!(
            "  - id: later\n    enabled: {enabled}\n    batch: {{ max_events: 500, max_age_ms: 100 }}\n    sink: {{ type: files, path: {} }}\n",
            dir.join("out_later").display()
        ),
        None => String::new(),
    };
    let cfg = format!(
        r#"data_dir: {data}
collector:
  listen: 127.0.0.1:{port}
log:
  segment_bytes: 4096
sources:
  - id: web
    write_keys: ["test-key"]
destinations:
  - id: now
    batch: {{ max_events: 500, max_age_ms: 100 }}
    sink: {{ type: files, path: {now} }}
{later}"#,
        data = dir.join("data").display(),
        now = dir.join("out_now").display(),
    );
    let path = dir.join("sluice.yaml");
    fs::write(&path, cfg).unwrap();
    path
}

fn start(config: &Path, log: &Path, port: u16) -> Child {
    let mut child = start_server(config, log);
    wait_healthy(&mut child, port, log);
    child
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Sends `n` track events in batches of 20; returns their messageIds.
fn send(port: u16, tag: &str, n: usize) -> Vec<String> {
    let client = reqwest::blocking::Client::new();
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    for chunk in ids.chunks(20) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|id| serde_json::json!({"type": "track", "event": "Post Created", "userId": "u1", "messageId": id, "properties": {"text": "x".repeat(100)}}))
            .collect();
        let r = client
            .post(format!("http://127.0.0.1:{port}/v1/batch"))
            .basic_auth("test-key", Some(""))
            .json(&serde_json::json!({ "batch": batch }))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    }
    ids
}

fn ids_in(out: &Path) -> BTreeSet<String> {
    delivered_events(out).iter().map(|e| e["messageId"].as_str().unwrap().to_string()).collect()
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn cursor(dir: &Path, id: &str) -> Option<u64> {
    fs::read_to_string(dir.join("data/log/cursors").join(format!("{id}.offset"))).ok().map(|s| s.trim().parse().unwrap())
}

fn segments(dir: &Path) -> usize {
    fs::read_dir(dir.join("data/log/segments")).unwrap().count()
}

fn sluice_log(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice")).arg("log").args(args).arg("--config").arg(config).output().unwrap()
}

/// The `log cursors` line of `id`, split on whitespace.
fn cursor_line(out: &Output, id: &str) -> Option<Vec<String>> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.first().map(String::as_str) == Some(id))
}

#[test]
fn a_disabled_destination_keeps_its_backlog_and_a_removed_ones_cursor_can_be_seen_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let log = dir.join("sluice.log");
    let port = free_port();

    // 1. `later` is disabled while 300 events go through `now`, over many segments.
    let config = write_config(dir, port, Some(false));
    let server = start(&config, &log, port);
    let sent = send(port, "a", 300);
    wait_for("now's cursor at the end", || cursor(dir, "now") == Some(300));
    assert!(segments(dir) > 5, "the disabled destination holds every segment ({} on disk)", segments(dir));
    let listed = sluice_log(&config, &["cursors"]);
    assert!(listed.status.success(), "{listed:?}");
    let now = cursor_line(&listed, "now").unwrap();
    assert_eq!((now[1].as_str(), now[2].as_str(), now[4].as_str()), ("300", "0", "active"), "{now:?}");
    let later = cursor_line(&listed, "later").unwrap();
    assert_eq!((later[1].as_str(), later[2].as_str(), later[4].as_str()), ("-", "300", "disabled"), "{later:?}");
    stop(server);

    // 2. Re-enabled, it delivers its whole backlog.
    let config = write_config(dir, port, Some(true));
    let server = start(&config, &log, port);
    wait_for("later's cursor at the end", || cursor(dir, "later") == Some(300));
    let got = ids_in(&dir.join("out_later"));
    let want: BTreeSet<String> = sent.iter().cloned().collect();
    assert_eq!(got.len(), want.len(), "{} of {} events reached the re-enabled destination", got.len(), want.len());
    assert_eq!(got, want);
    stop(server);

    // 3. Removed from the config, its cursor is stale: it is warned about at start, listed, and
    //    dropped on request (ids still in the config are refused).
    let config = write_config(dir, port, None);
    let before = fs::read_to_string(&log).unwrap().len();
    let server = start(&config, &log, port);
    send(port, "b", 40);
    wait_for("now's cursor at the end", || cursor(dir, "now") == Some(340));
    let started = fs::read_to_string(&log).unwrap()[before..].to_string();
    let warning = started.lines().find(|l| l.contains("stale cursor")).unwrap_or_else(|| panic!("no warning in:\n{started}"));
    assert!(warning.contains("later") && warning.contains("held_bytes"), "{warning}");
    let held = segments(dir);
    assert!(held > 1, "the stale cursor holds its segments");

    let listed = sluice_log(&config, &["cursors"]);
    let later = cursor_line(&listed, "later").unwrap();
    assert_eq!((later[1].as_str(), later[2].as_str(), later[4].as_str()), ("300", "40", "stale"), "{later:?}");

    let refused = sluice_log(&config, &["drop-cursor", "now"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is in the config"), "{refused:?}");
    assert_eq!(cursor(dir, "now"), Some(340), "a refused drop changes nothing");
    let unknown = sluice_log(&config, &["drop-cursor", "nobody"]);
    assert_eq!(unknown.status.code(), Some(1));

    let dropped = sluice_log(&config, &["drop-cursor", "later"]);
    assert!(dropped.status.success(), "{dropped:?}");
    assert_eq!(cursor(dir, "later"), None);
    assert!(cursor_line(&sluice_log(&config, &["cursors"]), "later").is_none());
    // The running server lets go of the segments at its next commit.
    send(port, "c", 20);
    wait_for("the segments only the dropped cursor held to go", || segments(dir) < held);
    stop(server);
}
