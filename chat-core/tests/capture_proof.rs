//! The capture proof: the chat core, the real `sluice` binary (default pipeline with scrub_pii to
//! files, plus an S3 destination on moto) and the load generator with a few hundred users.
//! Mid-run Sluice is killed with SIGKILL twice and restarted, the chat core once. Then
//! `sluice reconcile` must print 100.000% for both destinations, and no simulated user's name or
//! email may appear in any delivered byte.
//!
//! Needs moto (`scripts/backends.sh start`; `SLUICE_TEST_S3_ENDPOINT`) and the debug `sluice`
//! binary next to this test's executable (`cargo test --workspace` builds it; with
//! `cargo test -p chat-core` run `cargo build -p sluice` first, or set `SLUICE_BIN`).

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const NAME_MARKER: &str = "Loadsim";
const EMAIL_DOMAIN: &str = "chat-load.example";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sluice_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    assert!(bin.exists(), "no sluice binary at {}: run `cargo build -p sluice` (or set SLUICE_BIN)", bin.display());
    bin
}

fn s3_endpoint() -> String {
    let endpoint = std::env::var("SLUICE_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let addr = endpoint.trim_start_matches("http://").to_string();
    assert!(
        std::net::TcpStream::connect_timeout(&addr.parse().expect("SLUICE_TEST_S3_ENDPOINT host:port"), Duration::from_secs(2)).is_ok(),
        "no S3 (moto) at {endpoint}: run `scripts/backends.sh start`"
    );
    endpoint
}

/// moto checks that a reader names the access key that wrote (see sluice/tests/restart_delivery.rs).
fn moto() -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";
    headers.insert(reqwest::header::AUTHORIZATION, auth.parse().unwrap());
    reqwest::blocking::Client::builder().default_headers(headers).timeout(Duration::from_secs(30)).build().unwrap()
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let log = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    cmd.stdin(Stdio::null()).stdout(Stdio::from(log.try_clone().unwrap())).stderr(Stdio::from(log)).spawn().expect("spawn")
}

fn wait_http(child: &mut Child, url: &str, log: &Path, what: &str) {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status}; log:\n{}", fs::read_to_string(log).unwrap_or_default());
        }
        if client.get(url).send().map(|r| r.status().is_success()).unwrap_or(false) {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} not up after 60 s; log:\n{}", fs::read_to_string(log).unwrap_or_default());
}

fn ledger_records(path: &Path) -> usize {
    fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0)
}

/// Waits until the ledger has grown by `by` records: the chat is busy, so a kill lands mid-flow.
fn wait_ledger_growth(path: &Path, by: usize, load: &mut Child) {
    let start = ledger_records(path);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger_records(path) < start + by {
        assert!(Instant::now() < deadline, "the ledger did not grow by {by} records in 60 s");
        assert!(load.try_wait().unwrap().is_none(), "chat-load ended before the kills were done");
        thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

/// Every delivered byte, decompressed: the files destination and every object in the bucket.
fn delivered_text(out: &Path, client: &reqwest::blocking::Client, bucket_url: &str) -> (String, usize) {
    let mut text = String::new();
    let mut objects = 0;
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                flate2::read::MultiGzDecoder::new(fs::File::open(&p).unwrap()).read_to_string(&mut text).unwrap();
                objects += 1;
            }
        }
    }
    let mut token = String::new();
    loop {
        let listing = client.get(format!("{bucket_url}?list-type=2{token}")).send().unwrap().text().unwrap();
        for key in listing.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()) {
            let body = client.get(format!("{bucket_url}/{key}")).send().unwrap().bytes().unwrap();
            flate2::read::MultiGzDecoder::new(&body[..]).read_to_string(&mut text).unwrap();
            objects += 1;
        }
        match listing.split("<NextContinuationToken>").nth(1).and_then(|s| s.split('<').next()) {
            Some(t) if listing.contains("<IsTruncated>true") => token = format!("&continuation-token={}", urlencode(t)),
            _ => break,
        }
    }
    (text, objects)
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[test]
fn every_chat_event_lands_through_sigkills_and_no_name_or_email_does() {
    let endpoint = s3_endpoint();
    let sluice = sluice_bin();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s3 = moto();
    let bucket = format!("chat-proof-{}", std::process::id());
    let bucket_url = format!("{endpoint}/{bucket}");
    assert!(s3.put(&bucket_url).send().unwrap().status().is_success(), "creating bucket {bucket}");

    let sluice_port = free_port();
    let chat_port = free_port();
    let scrub = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../transforms/scrub_pii.rhai");
    let config = d.join("sluice.yaml");
    fs::write(
        &config,
        format!(
            r#"data_dir: {data}
collector:
  listen: 127.0.0.1:{sluice_port}
sources:
  - id: chat
    write_keys: ["chat-key"]
transformations:
  - id: scrub_pii
    script: {scrub}
destinations:
  - id: local_files
    transformations: [scrub_pii]
    batch: {{ max_events: 1000, max_age_ms: 300 }}
    sink: {{ type: files, path: {out} }}
  - id: s3_archive
    transformations: [scrub_pii]
    batch: {{ max_events: 2000, max_age_ms: 500 }}
    sink: {{ type: s3, bucket: {bucket}, prefix: chat, region: us-east-1, endpoint: "{endpoint}", force_path_style: true, access_key_id: test, secret_access_key: test }}
"#,
            data = d.join("sluice-data").display(),
            scrub = scrub.display(),
            out = d.join("out").display(),
        ),
    )
    .unwrap();
    let sluice_log = d.join("sluice.log");
    let start_sluice = || spawn(Command::new(&sluice).arg("run").arg("--config").arg(&config), &sluice_log);
    let health = format!("http://127.0.0.1:{sluice_port}/health");
    let mut sluice_proc = start_sluice();
    wait_http(&mut sluice_proc, &health, &sluice_log, "sluice");

    let chat_dir = d.join("chat");
    let ledger = chat_dir.join("emitted.ledger");
    let chat_log = d.join("chat.log");
    let start_chat = || {
        spawn(
            Command::new(env!("CARGO_BIN_EXE_chat-core"))
                .args(["--listen", &format!("127.0.0.1:{chat_port}"), "--sluice-url", &format!("http://127.0.0.1:{sluice_port}")])
                .args(["--write-key", "chat-key", "--workers", "2"])
                .arg("--data-dir")
                .arg(&chat_dir),
            &chat_log,
        )
    };
    let ping = format!("http://127.0.0.1:{chat_port}/api/v4/system/ping");
    let mut chat = start_chat();
    wait_http(&mut chat, &ping, &chat_log, "chat-core");

    let load_log = d.join("load.log");
    let roster = d.join("roster.csv");
    let summary = d.join("summary.json");
    let mut load = spawn(
        Command::new(env!("CARGO_BIN_EXE_chat-load"))
            .args(["--url", &format!("http://127.0.0.1:{chat_port}")])
            .args(["--users", "300", "--compression", "480", "--duration", "30", "--war-room-rate", "5", "--war-room-members", "60"])
            .arg("--roster")
            .arg(&roster)
            .arg("--summary-json")
            .arg(&summary),
        &load_log,
    );
    // The kills happen in the run phase, each once the chat has emitted more events.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !fs::read_to_string(&load_log).unwrap_or_default().contains("setup took") {
        assert!(Instant::now() < deadline, "chat-load setup did not finish; log:\n{}", fs::read_to_string(&load_log).unwrap_or_default());
        assert!(load.try_wait().unwrap().is_none(), "chat-load failed in setup; log:\n{}", fs::read_to_string(&load_log).unwrap_or_default());
        thread::sleep(Duration::from_millis(100));
    }
    wait_ledger_growth(&ledger, 600, &mut load);
    kill9(&mut sluice_proc);
    sluice_proc = start_sluice();
    wait_http(&mut sluice_proc, &health, &sluice_log, "sluice");
    wait_ledger_growth(&ledger, 600, &mut load);
    kill9(&mut chat);
    chat = start_chat();
    wait_http(&mut chat, &ping, &chat_log, "chat-core after SIGKILL");
    wait_ledger_growth(&ledger, 600, &mut load);
    kill9(&mut sluice_proc);
    sluice_proc = start_sluice();
    wait_http(&mut sluice_proc, &health, &sluice_log, "sluice");

    let status = load.wait().unwrap();
    let load_text = fs::read_to_string(&load_log).unwrap();
    assert!(status.success(), "chat-load failed:\n{load_text}");
    let s: serde_json::Value = serde_json::from_str(&fs::read_to_string(&summary).unwrap()).unwrap();
    assert!(s["posts"].as_u64().unwrap() > 100 && s["reads"].as_u64().unwrap() > 500, "too little load:\n{load_text}");
    assert!(s["ws_deliveries"].as_u64().unwrap() > 0 && s["ws_connected_peak"].as_i64().unwrap() >= 80, "no fan-out:\n{load_text}");

    let out = Command::new(&sluice)
        .args(["reconcile", "--config"])
        .arg(&config)
        .arg("--ledger")
        .arg(&ledger)
        .args(["--wait", "120"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{report}");
    eprintln!("{}", load_text.lines().filter(|l| !l.starts_with('[')).collect::<Vec<_>>().join("\n"));
    assert!(out.status.success(), "reconcile failed:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    for dest in ["local_files (files)", "s3_archive (s3)"] {
        let line = report.lines().find(|l| l.starts_with(dest)).unwrap_or_else(|| panic!("no line for {dest}:\n{report}"));
        assert!(line.contains("missing 0,") && line.contains("capture 100.000%"), "{line}");
    }
    let emitted: usize = report.lines().next().unwrap().split(": ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(emitted > 3000, "only {emitted} events emitted:\n{report}");

    // No personal data in any delivered byte; and the check is not vacuous: the identifies that
    // carried every name and email did land, scrubbed.
    let (text, objects) = delivered_text(&d.join("out"), &s3, &bucket_url);
    assert!(objects > 2, "only {objects} objects delivered");
    assert!(!text.contains(NAME_MARKER), "a simulated name reached a destination");
    assert!(!text.contains(EMAIL_DOMAIN), "a simulated email address reached a destination");
    // Those two searches cover every user: each name carries the marker, each email the domain.
    let roster = fs::read_to_string(&roster).unwrap();
    assert_eq!(roster.lines().count(), 301, "{roster:.200}");
    for line in roster.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        assert!(cols[1].contains(NAME_MARKER) && cols[2].ends_with(EMAIL_DOMAIN), "{line}");
    }
    let identifies = text.lines().filter(|l| l.contains("\"type\":\"identify\"")).count();
    let scrubbed = text.lines().filter(|l| l.contains("\"type\":\"identify\"") && l.contains("\"email\":\"[redacted]\"")).count();
    assert!(identifies >= 2 * 2 * 300, "only {identifies} identify events across both destinations");
    assert_eq!(scrubbed, identifies, "every identify keeps its traits, scrubbed");
    let _ = sluice_proc.kill();
    let _ = chat.kill();
}
