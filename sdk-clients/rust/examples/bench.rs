//! Throughput and memory of one client into a local collector.
//!
//! `cargo run --release -p sluice-analytics --example bench -- SLUICE_BIN [EVENTS]`
//!
//! Starts `SLUICE_BIN run` on a free port with a temporary config (no destination: the figure is
//! the SDK plus the collector's fsynced ingest), then measures, each from `send()` of the first
//! event to `flush()` returning:
//! - the memory queue, one calling thread;
//! - the durable queue, one calling thread (each `send()` waits for its fsync);
//! - the durable queue, 16 calling threads sharing the client (group commit shares fsyncs).
//!
//! Then the RSS of a client whose memory queue is full (10,000 events, collector unreachable).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_analytics::{Client, ClientConfig, Identity, Message, QueueFullPolicy};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn event(i: usize) -> Message {
    Message::track(Identity::user(format!("user-{}", i % 1000)), "Post Created").properties(
        serde_json::json!({"channel_id": format!("c{}", i % 50), "length": i % 300, "team": "core", "client": "web"}),
    )
}

fn run(client: &Client, events: usize, threads: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let c = client.clone();
            s.spawn(move || {
                for i in (t..events).step_by(threads) {
                    c.send(event(i)).expect("send");
                }
            });
        }
    });
    client.flush(Duration::from_secs(600)).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(client.stats().sent as usize, events);
    events as f64 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sluice = args.get(1).expect("usage: bench SLUICE_BIN [EVENTS]");
    let events: usize = args.get(2).map_or(200_000, |n| n.parse().expect("EVENTS"));
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = format!(
        "data_dir: {}\ncollector:\n  listen: 127.0.0.1:{port}\nsources:\n  - id: bench\n    write_keys: [\"bench-key\"]\n    rate_limit: {{ events_per_second: 10000000, burst: 10000000 }}\ndestinations: []\n",
        dir.path().join("data").display()
    );
    std::fs::write(dir.path().join("sluice.yaml"), cfg).unwrap();
    let mut server = Command::new(sluice)
        .args(["run", "--config"])
        .arg(dir.path().join("sluice.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sluice did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let size = event(1).to_json().to_string().len();
    println!("events of ~{size} bytes, {events} per run, batches of 500");

    let mem = Client::new(ClientConfig::new(&url, "bench-key")).unwrap();
    let r = run(&mem, events, 1);
    println!("memory queue, 1 thread:    {r:>9.0} events/s");
    mem.shutdown(Duration::from_secs(10)).unwrap();

    for threads in [1, 16] {
        let q = dir.path().join(format!("queue-{threads}"));
        let n = if threads == 1 { events / 10 } else { events };
        let durable = Client::new(ClientConfig::new(&url, "bench-key").durable_queue(&q)).unwrap();
        let r = run(&durable, n, threads);
        println!("durable queue, {threads:>2} thread(s): {r:>9.0} events/s ({n} events)");
        durable.shutdown(Duration::from_secs(10)).unwrap();
    }
    let _ = server.kill();
    let _ = server.wait();

    // Memory at a full queue: nothing listens on `port` any more.
    let before = rss_kib();
    let full = Client::new(
        ClientConfig::new(&url, "bench-key").max_queue(10_000, 64 << 20, QueueFullPolicy::DropOldest),
    )
    .unwrap();
    for i in 0..12_000 {
        full.send(event(i)).unwrap();
    }
    let s = full.stats();
    println!(
        "full memory queue ({} queued, {} dropped): RSS {} KiB before the client, {} KiB with it",
        s.queued,
        s.dropped,
        before,
        rss_kib()
    );
}
