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
    write_config_with(dir, port, brokers, topic, destination, 5000)
}

/// [`write_config`] with the producer's delivery timeout (`message.timeout.ms`) given.
fn write_config_with(dir: &Path, port: u16, brokers: &str, topic: &str, destination: &str, message_timeout_ms: u64) -> PathBuf {
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
      message.timeout.ms: {message_timeout_ms}
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

    /// SIGTERM, then waits for the process to exit (30 s at most).
    fn terminate(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "sluice did not exit within 30 s of SIGTERM; log:\n{}", self.text());
            thread::sleep(Duration::from_millis(50));
        }
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

fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_or(what, cond, String::new);
}

/// Like [`wait_until`], with `context()` (logs) in the failure message.
fn wait_until_or(what: &str, mut cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}\n{}", context());
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
    // Restarted once the broker has given up on the killed member (session.timeout.ms, 10 s by
    // default), while the collector goes on taking events. Sooner would also do on Kafka, which
    // holds the rebalance until the dead member expires and then assigns everything to the new
    // one; tansu 0.6 instead leaves the new member with no partitions when the dead one was the
    // group's leader (see the takeover test below for where its coordinator goes wrong).
    thread::sleep(Duration::from_secs(11));
    let router = Sluice::start(&config, "router", "router");
    wait_until_or(
        "the restarted router holds every partition",
        || last_assignment(&router.text()).is_some_and(|l| l.contains("parts=[0, 1, 2]")),
        || format!("router log:\n{}", router.text()),
    );
    thread::sleep(Duration::from_secs(1));
    let acked = sender.finish();
    assert!(acked.len() > delivered_before_restart, "the kill happened mid-stream ({delivered_before_restart} of {} delivered)", acked.len());
    let missing = wait_delivered(&out, &acked);
    assert!(missing.is_empty(), "{} of {} acknowledged events missing, e.g. {:?}; router log:\n{}", missing.len(), acked.len(), &missing[..missing.len().min(5)], router.text());
}

/// Partitions a router's log says it was assigned last.
fn last_assignment(log: &str) -> Option<String> {
    log.lines().rev().find(|l| l.contains("rebalance: partitions assigned")).map(|l| l.to_string())
}

/// How the takeover test takes router a away.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// SIGTERM: the router finishes the delivery in flight, commits what it delivered, and
    /// leaves its group; the coordinator hands its partitions to router b at once.
    Term,
    /// SIGKILL: nothing is committed or left; the coordinator notices the missed heartbeats
    /// after `session.timeout.ms` and hands its partitions to router b, which re-delivers what
    /// a had read but not committed.
    Kill,
}

fn two_routers_share_the_partitions_and_one_takes_over(stop: Stop) {
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
    match stop {
        Stop::Term => a.terminate(),
        Stop::Kill => a.kill(),
    }
    wait_until_or(
        "router b took over every partition",
        || last_assignment(&b.text()).is_some_and(|l| l.contains("parts=[0, 1, 2]")),
        || format!("router a log:\n{}\nrouter b log:\n{}", a.text(), b.text()),
    );
    thread::sleep(Duration::from_secs(1));
    let acked = sender.finish();
    let missing = wait_delivered(&out, &acked);
    assert!(missing.is_empty(), "{} of {} acknowledged events missing, e.g. {:?}; router b log:\n{}", missing.len(), acked.len(), &missing[..missing.len().min(5)], b.text());
}

#[test]
fn two_routers_share_the_partitions_and_one_takes_over_when_the_other_stops() {
    two_routers_share_the_partitions_and_one_takes_over(Stop::Term);
}

/// Not run by default: tansu 0.6 never hands on the partitions of a member whose session
/// expired. Its coordinator drops the member on the next heartbeat of another one and answers
/// it "rebalance in progress", but keeps the group formed, with the old generation, leader and
/// assignments (tansu-broker 0.6.0, coordinator/group/administrator.rs: `heartbeat` of the
/// formed group calls the member-level `missed_heartbeat`, which does not move the group back to
/// forming; the group-level one that would runs after it and finds nothing left to drop). The
/// survivor rejoins, gets its old partitions back from `sync` (which ignores the leader's new
/// assignments in a formed group), and the dead member's partitions stay unowned. A member
/// that leaves (SIGTERM, above) or joins does move the group to forming, so those rebalances
/// work. Run this one against Apache Kafka:
/// `SLUICE_TEST_KAFKA_BROKERS=host:9092 cargo test -p sluice --test kafka_roles -- --ignored`.
#[test]
#[ignore = "tansu 0.6 does not reassign the partitions of a member whose session expired; run with --ignored against Apache Kafka"]
fn two_routers_share_the_partitions_and_one_takes_over_when_the_other_is_killed() {
    two_routers_share_the_partitions_and_one_takes_over(Stop::Kill);
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
        // tansu resolves a sqlite:// path against its working directory, absolute or not.
        let child = Command::new(tansu_binary())
            .current_dir(db.parent().unwrap())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .arg("--storage-engine")
            .arg(format!("sqlite://{}", db.file_name().unwrap().to_string_lossy()))
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

    /// Takes the broker away abruptly (SIGKILL): connections drop, and the producer retries what
    /// was in flight once the broker is back, with the same producer epoch and sequence numbers.
    /// Not SIGTERM: tansu 0.6 stops its storage before its connections and answers the produce
    /// requests in flight with an error, after which librdkafka's idempotent producer bumps its
    /// own epoch (KIP-360), which the restarted sqlite engine cannot take (see the test).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    // Messages queued when the broker goes away are kept until it is back (30 s > the 8 s
    // outage). Were one to time out, librdkafka's idempotent producer would drain and bump its
    // producer epoch on its own (KIP-360; rdkafka_broker.c, rdkafka_idempotence.c),
    // which Kafka accepts and tansu 0.6's sqlite engine does not: a produce with an epoch it never
    // issued panics its storage task ("more or less than one row", tansu-storage lite.rs, query
    // producer_select_for_update.sql) and the broker serves nothing more.
    let config = write_config_with(dir.path(), port, &format!("127.0.0.1:{kafka_port}"), "events", "d", 30_000);
    let out = dir.path().join("out");
    let sluice = Sluice::start(&config, "all", "all");

    let sender = Sender::start(port, "r", Duration::from_millis(20));
    wait_until("events flow", || sender.acked() > 100);
    tansu.kill();
    let acked_when_stopped = sender.acked();
    // The sender's request in flight at the kill waits for the broker (its events are queued
    // in the producer); a new request while the broker is down is refused at once.
    thread::sleep(Duration::from_secs(2));
    let probe = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{port}/v1/batch"))
        .basic_auth("test-key", Some(""))
        .json(&serde_json::json!({ "batch": [{"type": "track", "event": "e", "userId": "probe", "messageId": "probe-1"}] }))
        .send()
        .unwrap_or_else(|e| panic!("a request while the broker is down got no answer within 5 s ({e}); log:\n{}", sluice.text()));
    assert_eq!(probe.status(), 503, "a request while the broker is down; log:\n{}", sluice.text());
    assert!(probe.headers().contains_key("retry-after"), "503 without Retry-After");
    thread::sleep(Duration::from_secs(6));
    let acked_while_down = sender.acked() - acked_when_stopped;
    let _tansu = Tansu::start(kafka_port, &db, &tansu_log);
    let restarted_at = sender.acked();
    wait_until_or(
        "ingest recovered on its own",
        || sender.acked() > restarted_at + 100,
        || {
            let (r503, other) = (sender.retry_after_503.load(Ordering::Relaxed), sender.other.load(Ordering::Relaxed));
            let tansu = fs::read_to_string(&tansu_log).unwrap_or_default();
            format!("acked {}, 503s {r503}, other answers {other}; sluice log:\n{}\ntansu log:\n{tansu}", sender.acked(), sluice.text())
        },
    );
    let other = sender.other.load(Ordering::Relaxed);
    let acked = sender.finish();
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
