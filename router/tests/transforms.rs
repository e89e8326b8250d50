//! A destination's transformation chain run by the router, with the real Rhai engine: the shipped
//! `transforms/scrub_pii.rhai` followed by a test script that rewrites, drops, throws and spins.
//! The receiver must get exactly the transformed events that were not dropped; events whose
//! transformation failed are dead-lettered alone (stage `transform`, untransformed, with the
//! script's name, line and error) while the rest of their batch is delivered; and a replay after
//! the script is fixed runs the whole chain before delivering.

mod common;

use std::path::{Path, PathBuf};

use common::{append_raw, destination, setup, start, wait_for, Receiver};
use serde_json::{json, Value};
use sluice_router::Stage;
use sluice_transformer::{Limits, Registry, TransformationConfig};

/// Runs after scrub_pii. Lines are counted by the assertions on the dead-letter reasons.
const GATE: &str = r#"// gate: a test script with one behaviour per marker.
fn transform(event, meta) {
    if event.event == "Heartbeat" { return (); }
    if event.properties.poison ?? false { throw "poisoned event " + meta.message_id; }
    if event.properties.spin ?? false { loop { } }
    let card = event.properties.card;
    if type_of(card) == "string" {
        event.properties.card = "**** " + card.sub_string(card.len() - 4);
    }
    event
}
"#;

/// The same script after the "fix": poisoned events are let through, marked.
const GATE_FIXED: &str = r#"// gate, fixed.
fn transform(event, meta) {
    if event.event == "Heartbeat" { return (); }
    if event.properties.poison ?? false { event.properties.poison = "checked"; }
    event
}
"#;

fn workspace() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).parent().unwrap().to_path_buf()
}

fn fixture(name: &str) -> Value {
    let path = workspace().join("transforms/fixtures/scrub_pii").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn order(id: &str, extra: Value) -> Value {
    let mut props = json!({ "card": "4111111111111111", "email": "ana@example.com", "total": 42 });
    props.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({ "type": "track", "event": "Order Completed", "userId": "u1", "messageId": id, "properties": props })
}

fn heartbeat(id: &str) -> Value {
    json!({ "type": "track", "event": "Heartbeat", "userId": "u1", "messageId": id, "properties": {} })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_rewrites_drops_and_dead_letters_per_event_and_replay_reruns_it() {
    let (dir, log, dlq) = setup();
    let gate_path = dir.path().join("gate.rhai");
    std::fs::write(&gate_path, GATE).unwrap();
    let registry = Registry::load(&[
        TransformationConfig {
            id: "scrub_pii".into(),
            script: workspace().join("transforms/scrub_pii.rhai"),
            params: Default::default(), // the fixtures' defaults: no params.json in that directory
            limits: Limits::default(),
        },
        TransformationConfig {
            id: "gate".into(),
            script: gate_path.clone(),
            params: Default::default(),
            // Small, so the spinning event fails fast even in a debug build.
            limits: Limits { max_operations: 20_000, ..Limits::default() },
        },
    ])
    .unwrap();

    // One append before the router starts, one lane, one batch: the failures below happen in
    // the same batch as the deliveries, which is what "isolated per event" has to mean.
    let events = vec![
        fixture("post_with_emails.input.json"),
        order("o-1", json!({})),
        heartbeat("h-1"),
        order("p-1", json!({ "poison": true })),
        order("o-2", json!({ "card": "5500000000000004" })),
        order("s-1", json!({ "spin": true })),
        heartbeat("h-2"),
        order("p-2", json!({ "poison": true })),
        order("o-3", json!({})),
    ];
    append_raw(&log, &events.iter().map(Value::to_string).collect::<Vec<_>>()).await;

    let (hook, url) = Receiver::always(200);
    let extra = "lanes: 1\ntransformations: [scrub_pii, gate]\nbatch: { max_events: 1000, max_age_ms: 200 }\n";
    let config = destination("hook", &url, extra);
    let router = start(&log, &dlq, &registry, vec![config.clone()], None).await;
    wait_for("the cursor past every event", 10, || log.cursor("hook").unwrap() == Some(events.len() as u64)).await;
    router.stop().await;

    // scrub_pii masks the email key, then gate masks the card; both scripts ran, in order.
    let scrubbed_order = |id: &str, last4: &str| {
        json!({ "type": "track", "event": "Order Completed", "userId": "u1", "messageId": id,
                "properties": { "card": format!("**** {last4}"), "email": "[redacted]", "total": 42 } })
    };
    let want = vec![
        fixture("post_with_emails.expected.json"),
        scrubbed_order("o-1", "1111"),
        scrubbed_order("o-2", "0004"),
        scrubbed_order("o-3", "1111"),
    ];
    assert_eq!(hook.count(), 1, "one batch, one request");
    assert_eq!(hook.events(), want, "exactly the transformed, non-dropped events, in log order");

    // Each failed event is its own entry, stored as it was before any transformation.
    let entries: Vec<_> = dlq.ids(Some("hook")).unwrap().iter().map(|(d, id)| dlq.get(d, id).unwrap()).collect();
    assert_eq!(entries.len(), 3, "p-1, s-1 and p-2 dead-lettered one by one");
    let by_id = |mid: &str| {
        entries
            .iter()
            .find(|e| serde_json::from_str::<Value>(e.events[0].event.get()).unwrap()["messageId"] == mid)
            .unwrap_or_else(|| panic!("no dead-letter entry for {mid}"))
    };
    for (mid, line, error) in [
        ("p-1", 4, "script error: poisoned event p-1"),
        ("p-2", 4, "script error: poisoned event p-2"),
        ("s-1", 5, "too many operations (limit 20000)"),
    ] {
        let entry = by_id(mid);
        assert_eq!(entry.stage, Stage::Transform);
        assert_eq!(entry.events.len(), 1);
        let original = events.iter().find(|e| e["messageId"] == mid).unwrap();
        let stored: Value = serde_json::from_str(entry.events[0].event.get()).unwrap();
        assert_eq!(&stored, original, "{mid}: dead-lettered untransformed, so a replay runs the whole chain");
        for want in [format!("transformation gate ({})", gate_path.display()), format!("line {line}: {error}")] {
            assert!(entry.reason.contains(&want), "{mid}: reason lacks {want:?}: {}", entry.reason);
        }
        println!("{mid}: {}", entry.reason);
    }

    // Fix the script and replay: the events go through scrub_pii and the new gate first.
    std::fs::write(&gate_path, GATE_FIXED).unwrap();
    assert!(registry.reload("gate").unwrap(), "the fixed script is swapped in");
    let destination = config.sink.build().await.unwrap();
    let chain = registry.chain(&config.transformations).unwrap();
    for entry in &entries {
        sluice_router::replay(&dlq, entry, &config, destination.as_ref(), &chain).await.unwrap();
    }
    assert!(dlq.ids(None).unwrap().is_empty(), "replayed entries are removed");
    let replayed: Vec<Value> = hook.events().into_iter().skip(want.len()).collect();
    assert_eq!(replayed.len(), 3);
    for e in &replayed {
        assert_eq!(e["properties"]["email"], "[redacted]", "scrub_pii ran on replay: {e}");
        assert_eq!(e["properties"]["card"], "4111111111111111", "the fixed gate no longer masks: {e}");
    }
    let poisoned: Vec<&Value> = replayed.iter().filter(|e| e["properties"]["poison"] == "checked").collect();
    assert_eq!(poisoned.len(), 2, "the fixed gate ran on replay: {replayed:?}");
}

/// A replay takes the worker's own path: the destination's current filter decides first (an
/// event it no longer takes is counted, not delivered), and a script that still fails leaves
/// the entry in the store with the script's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_applies_the_current_filter_and_keeps_entries_that_fail_again() {
    let (dir, log, dlq) = setup();
    let gate_path = dir.path().join("gate.rhai");
    std::fs::write(&gate_path, GATE).unwrap();
    let gate = TransformationConfig { id: "gate".into(), script: gate_path.clone(), params: Default::default(), limits: Limits::default() };
    let registry = Registry::load(&[gate]).unwrap();
    let mut poisoned = order("p-1", json!({ "poison": true }));
    poisoned["event"] = json!("Order Refunded");
    append_raw(&log, &[order("p-2", json!({ "poison": true })).to_string(), poisoned.to_string()]).await;

    let (hook, url) = Receiver::always(200);
    let config = destination("hook", &url, "lanes: 1\ntransformations: [gate]\nbatch: { max_events: 10, max_age_ms: 100 }\n");
    let router = start(&log, &dlq, &registry, vec![config.clone()], None).await;
    wait_for("both events dead-lettered", 10, || dlq.ids(Some("hook")).unwrap().len() == 2).await;
    router.stop().await;
    assert_eq!(hook.count(), 0);
    let entries: Vec<_> = dlq.ids(Some("hook")).unwrap().iter().map(|(d, id)| dlq.get(d, id).unwrap()).collect();

    // The script is still broken: each replay fails with its error and the entries stay.
    let destination = config.sink.build().await.unwrap();
    let chain = registry.chain(&config.transformations).unwrap();
    for entry in &entries {
        let err = sluice_router::replay(&dlq, entry, &config, destination.as_ref(), &chain).await.unwrap_err().to_string();
        assert!(err.contains("failed again") && err.contains("poisoned event"), "{err}");
    }
    assert_eq!(dlq.ids(Some("hook")).unwrap().len(), 2, "entries that fail again are kept");
    assert_eq!(hook.count(), 0);

    // Fixed script, and the destination now excludes refunds: one event delivered, one filtered.
    std::fs::write(&gate_path, GATE_FIXED).unwrap();
    assert!(registry.reload("gate").unwrap());
    let filtered_config = destination_with_filter(&url);
    let chain = registry.chain(&filtered_config.transformations).unwrap();
    let mut total = sluice_router::Replayed::default();
    for entry in &entries {
        let r = sluice_router::replay(&dlq, entry, &filtered_config, destination.as_ref(), &chain).await.unwrap();
        total.delivered += r.delivered;
        total.filtered += r.filtered;
    }
    assert_eq!(total, sluice_router::Replayed { delivered: 1, filtered: 1 });
    let got = hook.events();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["messageId"], "p-2");
    assert_eq!(got[0]["properties"]["poison"], "checked", "the fixed script ran on replay");
    assert!(dlq.ids(Some("hook")).unwrap().is_empty(), "replayed entries are removed");
}

fn destination_with_filter(url: &str) -> sluice_router::DestinationConfig {
    destination("hook", url, "lanes: 1\ntransformations: [gate]\nfilter: { exclude_events: [Order Refunded] }\n")
}
