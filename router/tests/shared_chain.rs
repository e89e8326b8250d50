//! Destinations with the same transformation chain share one run of it per event, and stay
//! independent: a destination that is down holds nobody else back (and, back up, reads what it
//! missed from the memo's spill instead of running the chain again), and a script that reads
//! `meta.destination` is still run once per destination.

mod common;


use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{append, append_raw, counter, destination, metrics, setup, sorted, start, wait_for, Receiver, Reply};
use serde_json::Value;
use sluice_transformer::{Registry, TransformationConfig};

fn registry(dir: &std::path::Path, scripts: &[(&str, &str)]) -> Registry {
    let configs: Vec<TransformationConfig> = scripts
        .iter()
        .map(|(id, body)| {
            let path = dir.join(format!("{id}.rhai"));
            std::fs::write(&path, body).unwrap();
            serde_yaml::from_str(&format!("id: {id}\nscript: {}", path.display())).unwrap()
        })
        .collect();
    Registry::load(&configs).unwrap()
}

const MARK: &str = "fn transform(event, meta) { event.properties = #{ marked: meta.source }; event }";
const VIA: &str = "fn transform(event, meta) { event.via = `${meta.destination}`; event }";
const KEEP: &str = "fn transform(event, meta) { event.marked = meta.source; event }";

/// For a destination that is down: it keeps its batch and retries until the test ends.
const RETRY_FOREVER: &str = "retry: { initial_backoff_ms: 20, max_backoff_ms: 50, max_attempts: 1000000 }\n";

/// The YAML of a destination running `script` alone, in batches of at most 100 events.
fn chain_of(script: &str) -> String {
    format!("transformations: [{script}]\nbatch: {{ max_events: 100, max_age_ms: 50 }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_destinations_of_one_chain_run_it_once_per_event_and_a_down_one_holds_nobody_back() {
    metrics();
    let (dir, log, dlq) = setup();
    let registry = registry(dir.path(), &[("mark", MARK)]);
    let (a, a_url) = Receiver::always(200);
    let (b, b_url) = Receiver::always(200);
    let (down, down_url) = Receiver::always(503);
    let chain = chain_of("mark");
    let configs = vec![
        destination("shared_a", &a_url, &chain),
        destination("shared_b", &b_url, &chain),
        destination("shared_down", &down_url, &format!("{chain}{RETRY_FOREVER}")),
    ];
    let router = start(&log, &dlq, &registry, configs, None).await;
    let mut ids = Vec::new();
    for round in 0..10 {
        ids.extend(append(&log, &format!("s{round}-"), 7, 100).await);
    }
    wait_for("both healthy destinations to get every event", 30, || a.count() > 0 && a.ids().len() == 1000 && b.ids().len() == 1000).await;
    assert_eq!(sorted(a.ids()), sorted(ids.clone()));
    assert_eq!(sorted(b.ids()), sorted(ids.clone()));
    for e in a.events().iter().chain(b.events().iter()) {
        assert_eq!(e["properties"], serde_json::json!({"marked": "web"}), "transformed: {e}");
    }
    assert!(down.count() > 0 && down.events().is_empty(), "the third destination was failing all along");
    // Every event the three destinations transformed was run once and taken by the others: the
    // one that is down read only its first batches, so only those were shared with it.
    let shared: u64 = ["shared_a", "shared_b", "shared_down"].iter().map(|d| counter("sluice_transform_shared_total", d)).sum();
    assert!(shared >= 1000, "at least one destination took each event's outcome from another's run: {shared}");
    assert!(counter("sluice_transform_shared_total", "shared_down") < 1000, "the down destination stopped reading");
    router.stop().await;
    assert!(dlq.ids(Some("shared_a")).unwrap().is_empty() && dlq.ids(Some("shared_b")).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_reads_meta_destination_runs_for_each_destination() {
    metrics();
    let (dir, log, dlq) = setup();
    let registry = registry(dir.path(), &[("via", VIA)]);
    let (a, a_url) = Receiver::always(200);
    let (b, b_url) = Receiver::always(200);
    let chain = chain_of("via");
    let configs = vec![destination("via_a", &a_url, &chain), destination("via_b", &b_url, &chain)];
    let router = start(&log, &dlq, &registry, configs, None).await;
    append(&log, "v-", 3, 200).await;
    wait_for("both destinations", 30, || a.ids().len() == 200 && b.ids().len() == 200).await;
    let vias = |r: &Receiver| r.events().iter().map(|e| e["via"].clone()).collect::<std::collections::HashSet<Value>>();
    assert_eq!(vias(&a), [Value::from("via_a")].into_iter().collect());
    assert_eq!(vias(&b), [Value::from("via_b")].into_iter().collect());
    assert_eq!(counter("sluice_transform_shared_total", "via_a") + counter("sluice_transform_shared_total", "via_b"), 0);
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_was_down_catches_up_from_the_spill_without_running_the_chain_again() {
    metrics();
    let (dir, log, dlq) = setup();
    let registry = registry(dir.path(), &[("keep", KEEP)]);
    let (fast, fast_url) = Receiver::always(200);
    let up = Arc::new(AtomicBool::new(false));
    let (slow, slow_url) = {
        let up = up.clone();
        Receiver::start(move |_| Reply::status(if up.load(Ordering::SeqCst) { 200 } else { 503 }))
    };
    let chain = chain_of("keep");
    let configs = vec![destination("spill_fast", &fast_url, &chain), destination("spill_slow", &slow_url, &format!("{chain}{RETRY_FOREVER}"))];
    let router = start(&log, &dlq, &registry, configs, None).await;
    // 600 events of 64 KB: about 38 MiB of outcomes, more than twice the memo's 16 MiB, so what
    // the slow destination has not read goes to the spill.
    let pad = "x".repeat(64 << 10);
    let ids: Vec<String> = (0..600).map(|i| format!("big{i}")).collect();
    let events: Vec<String> = ids
        .iter()
        .map(|id| format!(r#"{{"type":"track","event":"e","userId":"u","messageId":"{id}","properties":{{"pad":"{pad}"}}}}"#))
        .collect();
    for chunk in events.chunks(100) {
        append_raw(&log, chunk).await;
    }
    wait_for("the healthy destination to get every event", 60, || fast.ids().len() == 600).await;
    assert!(slow.count() > 0 && slow.events().is_empty(), "the slow destination was failing all along");
    up.store(true, Ordering::SeqCst);
    wait_for("the slow destination to catch up", 60, || slow.ids().len() >= 600).await;
    assert_eq!(sorted(slow.ids()), sorted(ids.clone()));
    for e in slow.events() {
        assert_eq!(e["marked"], "web");
        assert_eq!(e["properties"]["pad"].as_str().map(str::len), Some(64 << 10), "outcomes read back whole");
    }
    // Each event ran through the chain once: one destination took every outcome from the
    // other's run, in memory or from the spill (without the spill, the slow one ran the chain
    // again for everything the memo had dropped).
    let taken = counter("sluice_transform_shared_total", "spill_fast") + counter("sluice_transform_shared_total", "spill_slow");
    assert_eq!(taken, 600);
    router.stop().await;
    // The spill's files, created in the dead-letter directory itself (entries live in its
    // subdirectories), were never visible there.
    let files: Vec<_> = std::fs::read_dir(dlq.dir()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    assert!(files.is_empty(), "{files:?}");
    assert!(dlq.ids(None).unwrap().is_empty(), "nothing was dead-lettered");
}
