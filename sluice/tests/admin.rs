//! The admin listener, against the real binary: operators' paths answer on the admin port and
//! 404 on the public one; the bearer token is enforced when set and never logged; `/ready` turns
//! 503 with a reason when the log's disk budget is used up, and the chat webhook hears about the
//! log filling up before and when it does.

mod common;

use std::fs;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{admin_url, free_port, read_request_body, start_healthy, wait_healthy, write_config, Killed};
use serde_json::Value;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

fn track(port: u16, n: usize) -> reqwest::blocking::Response {
    let body = serde_json::json!({
        "batch": (0..n).map(|i| serde_json::json!({"type": "track", "userId": format!("u{i}"), "event": "Admin Test", "properties": {"pad": "x".repeat(64)}})).collect::<Vec<_>>()
    });
    client().post(format!("http://127.0.0.1:{port}/v1/batch")).basic_auth("test-key", Some("")).json(&body).send().unwrap()
}

fn wait_until(what: &str, secs: u64, log: &Path, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}; log:\n{}", fs::read_to_string(log).unwrap_or_default());
}

#[test]
fn admin_paths_answer_on_the_admin_port_and_404_on_the_public_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let log = dir.path().join("sluice.log");
    let _server = start_healthy(&config, port, &log);
    let admin = admin_url(&config);
    let c = client();

    assert_eq!(track(port, 7).status(), 200);
    let metrics = c.get(format!("{admin}/metrics")).send().unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = metrics.text().unwrap();
    assert!(text.contains("sluice_events_received_total{source=\"web\",type=\"track\"} 7"), "{text}");

    let health = c.get(format!("{admin}/health")).send().unwrap();
    assert_eq!(health.status(), 200);
    let ready = c.get(format!("{admin}/ready")).send().unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["destinations"][0]["id"], "out");
    assert_eq!(ready["destinations"][0]["enabled"], true);
    assert!(ready["destinations"][0]["lag_events"].is_u64(), "{ready}");
    assert!(ready["destinations"][0]["failing_since"].is_null(), "{ready}");
    assert!(ready["log"]["budget_bytes"].as_u64().unwrap() > 0);

    let page = c.get(format!("{admin}/dashboard")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("/dashboard/app.js"));
    let data: Value = c.get(format!("{admin}/dashboard/data")).send().unwrap().json().unwrap();
    assert_eq!(data["received"]["total"], 7, "{data}");

    for path in ["/metrics", "/ready", "/dashboard", "/dashboard/data", "/dashboard/app.js"] {
        let r = c.get(format!("http://127.0.0.1:{port}{path}")).send().unwrap();
        assert_eq!(r.status(), 404, "public {path} must not exist");
    }
    assert_eq!(c.get(format!("http://127.0.0.1:{port}/health")).send().unwrap().status(), 200, "load balancers keep /health");

    // stderr is a file here, not a terminal: no colour codes in it.
    let written = fs::read_to_string(&log).unwrap();
    assert!(written.contains("sluice is running"), "{written}");
    assert!(!written.contains('\u{1b}'), "ANSI escapes in a non-terminal log:\n{written}");
}

#[test]
fn the_token_is_enforced_when_set_and_never_logged_and_json_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let yaml = fs::read_to_string(&config).unwrap().replace("admin:\n", "admin:\n  token_env: SLUICE_TEST_ADMIN_TOKEN\n");
    fs::write(&config, yaml).unwrap();
    let log = dir.path().join("sluice.log");
    let token = format!("tok-{}-secret", std::process::id());

    // Without the variable, Sluice refuses to start (a token was asked for) and says which.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["run", "--config"]).arg(&config).env_remove("SLUICE_TEST_ADMIN_TOKEN").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SLUICE_TEST_ADMIN_TOKEN"), "{err}");

    let file = fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&config)
        .env("SLUICE_TEST_ADMIN_TOKEN", &token)
        .env("SLUICE_LOG", "debug")
        .env("SLUICE_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    wait_healthy(&mut child, port, &log);
    let _server = Killed(child);
    let admin = admin_url(&config);
    let c = client();
    assert_eq!(track(port, 3).status(), 200, "ingest needs no admin token");

    for path in ["/metrics", "/ready", "/dashboard/data"] {
        let url = format!("{admin}{path}");
        let none = c.get(&url).send().unwrap();
        assert_eq!(none.status(), 401, "{path} without a token");
        assert!(none.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        assert!(!none.text().unwrap().contains(&token));
        assert_eq!(c.get(&url).bearer_auth("wrong").send().unwrap().status(), 401, "{path} with a wrong token");
        assert_eq!(c.get(&url).bearer_auth(format!("{token}x")).send().unwrap().status(), 401, "{path} with a longer token");
        assert_eq!(c.get(&url).basic_auth(&token, Some("")).send().unwrap().status(), 401, "{path} with Basic");
        assert_eq!(c.get(&url).bearer_auth(&token).send().unwrap().status(), 200, "{path} with the token");
    }
    // Liveness and the page's static files hold no data and stay open.
    for path in ["/health", "/dashboard", "/dashboard/app.js", "/dashboard/app.css"] {
        assert_eq!(c.get(format!("{admin}{path}")).send().unwrap().status(), 200, "{path}");
    }

    let written = fs::read_to_string(&log).unwrap();
    assert!(!written.contains(&token), "the token is in the log:\n{written}");
    let mut lines = 0;
    for line in written.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        lines += 1;
    }
    assert!(lines >= 2, "expected JSON log lines:\n{written}");
    assert!(written.contains("sluice is running"));
}

/// A chat webhook: records each POST body's `text`.
fn chat_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/chat", listener.local_addr().unwrap());
    let texts = Arc::new(Mutex::new(Vec::new()));
    let seen = texts.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if let Some(body) = read_request_body(&mut reader) {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    seen.lock().unwrap().push(v["text"].as_str().unwrap_or_default().to_string());
                }
            }
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (url, texts)
}

#[test]
fn ready_turns_unready_and_chat_hears_when_the_log_budget_is_used_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let admin_port = free_port();
    let (chat_url, chat) = chat_receiver();
    // No destination: nothing ever passes a segment, so the log only grows.
    let config = dir.path().join("sluice.yaml");
    fs::write(
        &config,
        format!(
            r#"data_dir: {data}
collector:
  listen: 127.0.0.1:{port}
admin:
  listen: 127.0.0.1:{admin_port}
log:
  segment_bytes: 8192
  disk_budget_bytes: 16384
sources:
  - id: web
    write_keys: ["test-key"]
alerts:
  webhook_url: "{chat_url}"
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("sluice.log");
    let _server = start_healthy(&config, port, &log);
    let admin = admin_url(&config);
    let c = client();
    let ready = || {
        let r = c.get(format!("{admin}/ready")).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    assert_eq!(ready().0, 200);

    // Fill to 90% of the budget one small request at a time, so the "nearly full" state is seen.
    let mut sent = 0;
    while ready().1["log"]["used_ratio"].as_f64().unwrap() < 0.9 {
        assert_eq!(track(port, 1).status(), 200, "refused before 90% of the budget");
        sent += 1;
        assert!(sent < 1000, "the log never reached 90%");
    }
    assert_eq!(ready().0, 200, "near the budget is still ready");
    wait_until("the nearly-full alert", 10, &log, || chat.lock().unwrap().iter().any(|t| t.contains("% of its disk budget")));

    let mut refused = None;
    for _ in 0..1000 {
        let r = track(port, 1);
        if r.status() != 200 {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("the log never filled");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.json::<Value>().unwrap()["error"], "log_full");
    let (status, body) = ready();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    let reason = body["reasons"][0].as_str().unwrap();
    assert!(reason.starts_with("log_full") && reason.contains("16384"), "{reason}");
    wait_until("the log-full alert", 10, &log, || chat.lock().unwrap().iter().any(|t| t.contains("is full") && t.contains("503")));

    // The dashboard's recent errors carry the rejection with its reason.
    let data: Value = c.get(format!("{admin}/dashboard/data")).send().unwrap().json().unwrap();
    let errors = data["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e["kind"] == "rejected" && e["subject"] == "log_full"), "{data}");
    assert!(errors.iter().any(|e| e["kind"] == "log"), "{data}");
}
