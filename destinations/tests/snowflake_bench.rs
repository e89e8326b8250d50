//! Load throughput into fakesnow per batch size: a reference for regressions in the SQL path,
//! not a Snowflake figure (fakesnow is DuckDB behind a Python server). Run it with
//! `cargo test -p sluice-destinations --test snowflake_bench -- --ignored --nocapture`
//! after `scripts/backends.sh start`; docs/snowflake.md records the results.

#[path = "support/fakesnow.rs"]
mod fakesnow;

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use sluice_destinations::snowflake::{SnowflakeConfig, SnowflakeDestination};
use sluice_destinations::{Batch, Destination, OutEvent};

fn events(first: u64, count: usize) -> Batch {
    let events = (0..count as u64)
        .map(|i| {
            let n = first + i;
            let event = json!({
                "type": "track", "messageId": format!("m{n}"), "userId": format!("u{}", n % 500),
                "anonymousId": format!("a{}", n % 700), "event": "Message Posted",
                "receivedAt": "2024-05-01T10:00:00.000Z", "sentAt": "2024-05-01T10:00:00.000Z",
                "timestamp": "2024-05-01T10:00:00.000Z", "originalTimestamp": "2024-05-01T10:00:00.000Z",
                "context": {"library": {"name": "chat-core", "version": "9.1.0"}, "ip": "10.0.0.1"},
                "properties": {"channel_id": format!("c{}", n % 40), "length": n % 280, "thread": n.is_multiple_of(3),
                    "mentions": n % 4, "readers": 20, "client": "desktop", "edited": false,
                    "posted_at": "2024-05-01T09:59:59.000Z"}
            });
            OutEvent { offset: n, source: Arc::from("chat"), json: event.to_string().into_bytes().into() }
        })
        .collect();
    Batch { destination: Arc::from("warehouse"), partition: None, events }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn rows_per_second_by_batch_size() {
    println!("| batch size (events) | batches | rows per batch | seconds per batch | rows/s | share of time in fakesnow |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (size, batches) in [(100usize, 10u64), (1_000, 5), (10_000, 3)] {
        let env = fakesnow::Env::new().await;
        let config = SnowflakeConfig {
            warehouse: None,
            max_file_bytes: 100 * 1024 * 1024,
            gzip_level: 6,
            timeout_secs: 600,
            ..env.config()
        };
        let shim = fakesnow::Faults::default();
        let dest = SnowflakeDestination::with_client(config, fakesnow::client(&shim)).await.unwrap();
        // The first batch creates the tables; time the steady state after it.
        dest.deliver(&events(0, size)).await.unwrap();
        shim.server_nanos.store(0, std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        for b in 1..=batches {
            dest.deliver(&events(b * size as u64, size)).await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        // Each track event is two rows: `tracks` and its event table.
        let rows = (2 * size) as f64 * batches as f64;
        let in_server = shim.server_nanos.load(std::sync::atomic::Ordering::SeqCst) as f64 / 1e9;
        println!(
            "| {size} | {batches} | {} | {:.2} | {:.0} | {:.0}% |",
            2 * size,
            secs / batches as f64,
            rows / secs,
            100.0 * in_server / secs
        );
        let loaded = env.admin.value(&format!("SELECT COUNT(*) FROM {}", env.table("MESSAGE_POSTED"))).await;
        assert_eq!(loaded, Some(((batches + 1) * size as u64).to_string()));
    }
}
