//! Crash-safety: every event acknowledged with 200 must be delivered, even when the
//! server is SIGKILLed (repeatedly) while clients are sending.

mod common;

use common::{delivered_events, free_port, start_server, wait_healthy, write_config};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// messageId -> number of times it appears in the delivered output.
fn delivered_ids(out_dir: &Path) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for v in delivered_events(out_dir) {
        if let Some(id) = v.get("messageId").and_then(|m| m.as_str()) {
            *seen.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    seen
}

#[test]
fn no_acknowledged_event_is_lost_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let log = dir.path().join("sluice.log");
    let out_dir = dir.path().join("out");

    let mut child = start_server(&config, &log);
    wait_healthy(&mut child, port, &log);

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let url = format!("http://127.0.0.1:{port}/v1/batch");

    let mut handles = Vec::new();
    for t in 0..8u32 {
        let stop = stop.clone();
        let acked = acked.clone();
        let attempts = attempts.clone();
        let failures = failures.clone();
        let url = url.clone();
        handles.push(thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(3))
                .connect_timeout(Duration::from_millis(500))
                .build()
                .unwrap();
            let hard_deadline = Instant::now() + Duration::from_secs(120);
            let mut seq: u64 = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < hard_deadline {
                let ids: Vec<String> = (0..20)
                    .map(|_| {
                        seq += 1;
                        format!("crash-t{t}-{seq}")
                    })
                    .collect();
                let batch: Vec<serde_json::Value> = ids
                    .iter()
                    .map(|id| {
                        serde_json::json!({
                            "type": "track",
                            "userId": format!("u{t}"),
                            "event": "e",
                            "messageId": id,
                        })
                    })
                    .collect();
                let body = serde_json::json!({ "batch": batch }).to_string();
                attempts.fetch_add(1, Ordering::Relaxed);
                let res = client
                    .post(&url)
                    .basic_auth("test-key", Some(""))
                    .header("content-type", "application/json")
                    .body(body)
                    .send();
                match res {
                    Ok(r) if r.status().as_u16() == 200 => {
                        let text = r.text().unwrap_or_default();
                        if text.trim() == "OK" {
                            acked.lock().unwrap().extend(ids);
                        } else {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }));
    }

    for round in 1..=3 {
        thread::sleep(Duration::from_millis(1500));
        let before = acked.lock().unwrap().len();
        child.kill().expect("SIGKILL sluice");
        let _ = child.wait();
        eprintln!("round {round}: SIGKILLed server with {before} acked ids so far");
        child = start_server(&config, &log);
        wait_healthy(&mut child, port, &log);
    }
    // Let the clients run a little against the final server as well.
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }

    let acked: Vec<String> = acked.lock().unwrap().clone();
    let acked_set: HashSet<&String> = acked.iter().collect();
    assert_eq!(acked.len(), acked_set.len(), "client generated duplicate ids");
    assert!(
        acked.len() >= 1000,
        "too few acknowledged events ({}) for a meaningful test",
        acked.len()
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivered;
    let mut missing: Vec<&String>;
    loop {
        delivered = delivered_ids(&out_dir);
        missing = acked.iter().filter(|id| !delivered.contains_key(*id)).collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(250));
    }

    let total_lines: usize = delivered.values().sum();
    let acked_delivered = acked.len() - missing.len();
    let dup_ids = delivered.values().filter(|&&c| c > 1).count();
    let unacked_delivered = delivered.keys().filter(|k| !acked_set.contains(k)).count();
    eprintln!(
        "requests attempted={} failed/unacked={} | acked events={} delivered(acked)={} missing={} | \
         distinct delivered={} total lines={} ids delivered more than once={} delivered-but-unacked={}",
        attempts.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
        acked.len(),
        acked_delivered,
        missing.len(),
        delivered.len(),
        total_lines,
        dup_ids,
        unacked_delivered,
    );

    let _ = child.kill();
    let _ = child.wait();

    assert!(
        missing.is_empty(),
        "{} acknowledged events lost (first few: {:?}); log tail:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        {
            let l = fs::read_to_string(&log).unwrap_or_default();
            let start = l.len().saturating_sub(4000);
            String::from_utf8_lossy(&l.as_bytes()[start..]).into_owned()
        }
    );
}
