//! Scaled out on Kafka (tansu): collectors and routers as separate `sluice run --role` processes.
//! Failure tests: a router SIGKILLed mid-stream and restarted, two routers of one destination
//! with one killed, and the broker restarted mid-stream. In every one, each event acknowledged
//! with 200 must reach the destination. Plus the start-up errors of bad role/backend pairs.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{delivered_events, free_port};

/// The shared broker of `scripts/backends.sh`; panics with what to do when there is none.
fn brokers() -> String {
    let brokers = std::env::var("SLUICE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if std::net::TcpStream::connect_timeout(&brokers.parse().unwrap(), Duration::from_secs(2)).is_err() {
        panic!("no Kafka broker at {brokers} (SLUICE_TEST_KAFKA_BROKERS): run `scripts/backends.sh start` and `eval \"$(scripts/backends.sh env)\"` first");
    }
    brokers
}

fn tansu_binary() -> String {
    let path = std::env::var("SLUICE_TEST_TANSU").unwrap_or_else(|_| {
        panic!("SLUICE_TEST_TANSU is not set: run `scripts/backends.sh start` (it builds tansu) and `eval \"$(scripts/backends.sh env)\"` first")
    });
    assert!(Path::new(&path).exists(), "SLUICE_TEST_TANSU={path} does not exist");
    path
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}{}", nanos % 10_000_000_000)
}

/// One config for every process of a test; each process gets its own data dir and admin
/// address through the environment (`T_DATA`, `T_ADMIN`).
fn write_config(dir: &Path, port: u16, brokers: &str, topic: &str, destination: &str) -> PathBuf {
    let cfg = format!(
        r#"data_dir: ${{T_DATA}}
collector:
  listen: 127.0.0.1:{port}
  log_full_retry_after_secs: 2
admin:
  listen: ${{T_ADMIN}}
log:
  backend: kafka
  kafka:
    brokers: {brokers}
    topic: {topic}
    partitions: 3
    client:
      message.timeout.ms: 5000
sources:
  - id: web
    write_keys: ["test-key"]
destinations:
  - id: {destination}
    batch: {{ max_events: 100, max_age_ms: 200 }}
    sink:
      type: files
      path: {out}
"#,
        out = dir.join("out").display(),
    );
    let path = dir.join("sluice.yaml");
    fs::write(&path, cfg).unwrap();
    path
}

/// A `sluice run --role ROLE` process with its own data dir, admin port and log file.
struct Sluice {
    child: Child,
    admin: u16,
    log: PathBuf,
}

impl Sluice {
    fn start(config: &Path, role: &str, name: &str) -> Sluice {
        let dir = config.parent().unwrap();
        let admin = free_port();
        let log = dir.join(format!("{name}.log"));
        let file = fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--config"])
            .arg(config)
            .args(["--role", role])
            .env("T_DATA", dir.join(format!("data-{name}")))
            .env("T_ADMIN", format!("127.0.0.1:{admin}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let mut s = Sluice { child, admin, log };
        s.wait_healthy();
        s
    }

    fn wait_healthy(&mut self) {
        let url = format!("http://127.0.0.1:{}/health", self.admin);
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sluice exited with {status}; log:\n{}", self.text());
            }
            if reqwest::blocking::get(&url).is_ok_and(|r| r.status() == 200) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("sluice not healthy after 40 s; log:\n{}", self.text());
    }

    fn text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends batches of 20 events from one thread until stopped; keeps the messageIds answered 200
/// and counts 503s that carried a Retry-After.
struct Sender {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    retry_after_503: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Sender {
    fn start(port: u16, tag: &str, pause: Duration) -> Sender {
        let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let (retry_after_503, other) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, a, r503, o, tag) = (stop.clone(), acked.clone(), retry_after_503.clone(), other.clone(), tag.to_string());
        let handle = thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                let ids: Vec<String> = (0..20).map(|i| format!("{tag}-{n}-{i}")).collect();
                n += 1;
                let batch: Vec<serde_json::Value> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| serde_json::json!({"type": "track", "event": "e", "userId": format!("u{}", i % 7), "messageId": id}))
                    .collect();
                let res = client
                    .post(format!("http://127.0.0.1:{port}/v1/batch"))
                    .basic_auth("test-key", Some(""))
                    .json(&serde_json::json!({ "batch": batch }))
                    .send();
                match res {
                    Ok(r) if r.status() == 200 => a.lock().unwrap().extend(ids),
                    Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {
                        r503.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                }
                thread::sleep(pause);
            }
        });
        Sender { stop, acked, retry_after_503, other, handle: Some(handle) }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops and returns every acknowledged messageId.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        self.acked.lock().unwrap().clone()
    }
}

fn delivered_ids(out: &Path) -> HashSet<String> {
    delivered_events(out).iter().filter_map(|v| v["messageId"].as_str().map(str::to_string)).collect()
}

/// Waits until every id in `want` is in the files under `out` (60 s at most); returns what is missing.
fn wait_delivered(out: &Path, want: &[String]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = delivered_ids(out);
        let missing: Vec<String> = want.iter().filter(|id| !got.contains(*id)).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_router_killed_mid_stream_and_restarted_loses_nothing_acknowledged() {
    let brokers = brokers();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &brokers, &unique("kill"), &unique("d"));
    let out = dir.path().join("out");
    let _collector = Sluice::start(&config, "collector", "collector");
    let mut router = Sluice::start(&config, "router", "router");

    let sender = Sender::start(port, "k", Duration::from_millis(5));
    wait_until("the router delivered something", || !delivered_ids(&out).is_empty());
    router.kill();
    let delivered_before_restart = delivered_ids(&out).len();
    thread::sleep(Duration::from_millis(500));
    let router = Sluice::start(&config, "router", "router");
    thread::sleep(Duration::from_secs(1));
    let acked = sender.finish();
    assert!(acked.len() > delivered_before_restart, "the kill happened mid-stream ({delivered_before_restart} of {} delivered)", acked.len());
    let missing = wait_delivered(&out, &acked);
    assert!(missing.is_empty(), "{} of {} acknowledged events missing, e.g. {:?}; router log:\n{}", missing.len(), acked.len(), &missing[..missing.len().min(5)], router.text());
}

/// Partitions a router's log says it was assigned last.
fn last_assignment(log: &str) -> Option<String> {
    log.lines().filter(|l| l.contains("rebalance: partitions assigned")).last().map(|l| l.to_string())
}

#[test]
fn two_routers_share_the_partitions_and_one_takes_over_when_the_other_is_killed() {
    let brokers = brokers();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &brokers, &unique("pair"), &unique("d"));
    let out = dir.path().join("out");
    let _collector = Sluice::start(&config, "collector", "collector");
    let mut a = Sluice::start(&config, "router", "router-a");
    let b = Sluice::start(&config, "router", "router-b");
    // Both members hold some of the three partitions: the group split them.
    wait_until("both routers hold partitions", || {
        let (la, lb) = (last_assignment(&a.text()), last_assignment(&b.text()));
        la.is_some_and(|l| !l.contains("parts=[]")) && lb.is_some_and(|l| !l.contains("parts=[]"))
    });

    let sender = Sender::start(port, "p", Duration::from_millis(10));
    wait_until("events flow", || delivered_ids(&out).len() > 200);
    a.kill();
    wait_until("router b took over every partition", || {
        last_assignment(&b.text()).is_some_and(|l| l.contains("parts=[0, 1, 2]"))
    });
    thread::sleep(Duration::from_secs(1));
    let acked = sender.finish();
    let missing = wait_delivered(&out, &acked);
    assert!(missing.is_empty(), "{} of {} acknowledged events missing, e.g. {:?}; router b log:\n{}", missing.len(), acked.len(), &missing[..missing.len().min(5)], b.text());
}

/// A tansu broker of this test's own, on its own port, storing in sqlite so that it keeps its
/// data across a restart.
struct Tansu {
    child: Child,
}

impl Tansu {
    fn start(port: u16, db: &Path, log: &Path) -> Tansu {
        let file = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .arg("--storage-engine")
            .arg(format!("sqlite://{}", db.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}; log:\n{}", fs::read_to_string(log).unwrap_or_default());
            thread::sleep(Duration::from_millis(100));
        }
        Tansu { child }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_broker_restarted_mid_stream_means_503_meanwhile_and_nothing_acknowledged_lost() {
    let dir = tempfile::tempdir().unwrap();
    let kafka_port = free_port();
    let db = dir.path().join("tansu.db");
    let tansu_log = dir.path().join("tansu.log");
    let mut tansu = Tansu::start(kafka_port, &db, &tansu_log);
    let port = free_port();
    let config = write_config(dir.path(), port, &format!("127.0.0.1:{kafka_port}"), "events", "d");
    let out = dir.path().join("out");
    let sluice = Sluice::start(&config, "all", "all");

    let sender = Sender::start(port, "r", Duration::from_millis(20));
    wait_until("events flow", || sender.acked() > 100);
    tansu.stop();
    let acked_when_stopped = sender.acked();
    thread::sleep(Duration::from_secs(8));
    let during = sender.retry_after_503.load(Ordering::Relaxed);
    let acked_while_down = sender.acked() - acked_when_stopped;
    let _tansu = Tansu::start(kafka_port, &db, &tansu_log);
    let restarted_at = sender.acked();
    wait_until("ingest recovered on its own", || sender.acked() > restarted_at + 100);
    let other = sender.other.load(Ordering::Relaxed);
    let acked = sender.finish();
    assert!(during > 0, "no 503 with Retry-After while the broker was down; log:\n{}", sluice.text());
    assert!(acked_while_down <= 20, "{acked_while_down} events acknowledged while the broker was down");
    assert_eq!(other, 0, "answers other than 200 and 503 + Retry-After");
    let missing = wait_delivered(&out, &acked);
    assert!(missing.is_empty(), "{} of {} acknowledged events missing, e.g. {:?}; log:\n{}", missing.len(), acked.len(), &missing[..missing.len().min(5)], sluice.text());
}

#[test]
fn roles_other_than_all_need_kafka_and_an_unreachable_broker_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["run", "--config"]).arg(&config).args(["--role", "router"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--role router needs log.backend: kafka"), "{err}");
    // The role can come from the environment too.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["run", "--config"]).arg(&config).env("SLUICE_ROLE", "collector").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--role collector needs log.backend: kafka"));

    // Nothing listens on this port: start-up fails with the brokers named, instead of
    // accepting events it cannot store.
    let closed = free_port();
    let config = write_config(dir.path(), free_port(), &format!("127.0.0.1:{closed}"), "t", "d");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&config)
        .env("T_DATA", dir.path().join("data"))
        .env("T_ADMIN", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot reach the Kafka brokers at 127.0.0.1:{closed}")), "{err}");
}
