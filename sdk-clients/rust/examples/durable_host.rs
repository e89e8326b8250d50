//! A host process for the crash test (and a small demo of the durable queue).
//!
//! `durable_host send URL QUEUE_DIR N` sends N track events through a durable-queue client and
//! prints `ok <messageId>` as each `send()` returns (the event is then fsynced), then `all` and
//! waits to be killed. `durable_host drain URL QUEUE_DIR` opens a client on the same directory,
//! which resends what is left there, flushes, prints `drained <sent>` and exits 0.

use std::io::Write;
use std::time::Duration;

use sluice_analytics::{Client, ClientConfig, Identity, Message};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, url, dir) = (&args[1], &args[2], &args[3]);
    let client = Client::new(
        ClientConfig::new(url.as_str(), "test-key")
            .durable_queue(dir)
            .backoff(Duration::from_millis(50), Duration::from_millis(500)),
    )
    .expect("client");
    let mut out = std::io::stdout().lock();
    match mode.as_str() {
        "send" => {
            let n: usize = args[4].parse().expect("N");
            for i in 0..n {
                let msg = Message::track(Identity::user(format!("u{}", i % 7)), "Crash Test")
                    .properties(serde_json::json!({"i": i}));
                let id = msg.message_id().to_string();
                client.send(msg).expect("send");
                writeln!(out, "ok {id}").unwrap();
                out.flush().unwrap();
            }
            writeln!(out, "all").unwrap();
            out.flush().unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        "drain" => {
            client.flush(Duration::from_secs(60)).expect("flush");
            writeln!(out, "drained {}", client.stats().sent).unwrap();
            client.shutdown(Duration::from_secs(5)).expect("shutdown");
        }
        m => panic!("unknown mode {m}"),
    }
}
