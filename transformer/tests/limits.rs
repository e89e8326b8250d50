//! Every sandbox limit stops a runaway script with an error naming the script, line and limit,
//! and only the event it was running on is affected.

mod common;

use std::time::{Duration, Instant};

use common::{apply, chain_of, meta, Scripts};
use serde_json::json;
use sluice_transformer::{LimitKind, Limits, Meta, Registry};

/// Runs `source` with a wall clock far above what the other limits need (debug builds are slow),
/// so that the limit under test is the one that fires.
fn limit_error(source: &str) -> sluice_transformer::TransformError {
    limit_error_with(source, Limits { max_time_ms: 20_000, ..Limits::default() })
}

fn limit_error_with(source: &str, limits: Limits) -> sluice_transformer::TransformError {
    let scripts = Scripts::new();
    let mut config = scripts.config("runaway", source);
    config.limits = limits;
    let registry = Registry::load(&[config]).unwrap();
    let chain = registry.chain(&["runaway".into()]).unwrap();
    apply(&chain, &json!({"type": "track"})).unwrap_err()
}

#[test]
fn an_infinite_loop_is_stopped_by_the_operation_limit() {
    let err = limit_error("fn transform(event, meta) {\n  let n = 0;\n  loop {\n    n += 1;\n  }\n}");
    assert_eq!(err.limit_kind(), Some(LimitKind::Operations), "{err}");
    assert!(err.to_string().contains("too many operations (limit 200000)"), "{err}");
    assert!(matches!(err.line(), Some(3..=4)), "{err}");
}

#[test]
fn unbounded_recursion_is_stopped_by_the_call_depth_limit() {
    let err = limit_error("fn down(n) { down(n + 1) }\nfn transform(event, meta) {\n  down(0)\n}");
    assert_eq!(err.limit_kind(), Some(LimitKind::CallDepth), "{err}");
    assert!(err.to_string().contains("call depth exceeded (limit 32)"), "{err}");
    assert!(err.to_string().starts_with("transformation runaway ("), "{err}");
}

#[test]
fn a_huge_string_is_stopped_by_the_string_size_limit() {
    let err = limit_error("fn transform(event, meta) {\n  let s = \"x\";\n  loop {\n    s += s;\n  }\n}");
    assert_eq!(err.limit_kind(), Some(LimitKind::StringSize), "{err}");
    assert!(err.to_string().contains("line 4: length of string too large (limit 1048576)"), "{err}");
}

#[test]
fn huge_arrays_and_maps_are_stopped_by_their_size_limits() {
    let err = limit_error("fn transform(event, meta) {\n  let a = [];\n  loop { a.push(1); }\n}");
    assert_eq!(err.limit_kind(), Some(LimitKind::ArraySize), "{err}");
    // Filling 10,000 keys takes more than the default operation budget, so raise it here. Rhai
    // checks map sizes after map operations (`+=`, mixin); a bare `m[k] = v` is bounded by the
    // operation limit instead.
    let generous = Limits { max_time_ms: 20_000, max_operations: 10_000_000, ..Limits::default() };
    let err = limit_error_with(
        "fn transform(event, meta) {\n  let m = #{}; let i = 0;\n  loop { let one = #{}; one[`k${i}`] = i; m += one; i += 1; }\n}",
        generous,
    );
    assert_eq!(err.limit_kind(), Some(LimitKind::MapSize), "{err}");
    assert!(err.to_string().contains("line 3: size of object map too large (limit 10000)"), "{err}");
}

#[test]
fn a_slow_script_is_stopped_by_the_wall_clock_budget() {
    let scripts = Scripts::new();
    let mut config = scripts.config("slow", "fn transform(event, meta) {\n  loop { let x = 1; }\n}");
    // Operations practically unlimited, so only the clock can stop it.
    config.limits = Limits { max_operations: u64::MAX / 4, max_time_ms: 30, ..Limits::default() };
    let registry = Registry::load(&[config]).unwrap();
    let chain = registry.chain(&["slow".into()]).unwrap();
    let started = Instant::now();
    let err = apply(&chain, &json!({})).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.limit_kind(), Some(LimitKind::WallClock), "{err}");
    assert!(err.to_string().contains("line 2: wall-clock budget exceeded (limit 30 ms)"), "{err}");
    assert!(took >= Duration::from_millis(30) && took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn one_runaway_event_does_not_affect_the_rest_of_the_batch_or_later_calls() {
    let (_s, _r, chain) = chain_of(
        "picky",
        "fn transform(event, meta) {\n  if event.spin == true {\n    loop {}\n  }\n  event.done = true;\n  event\n}",
    );
    let events = [
        br#"{"n":1}"#.as_slice(),
        br#"{"n":2,"spin":true}"#,
        br#"{"n":3}"#,
    ];
    let batch: Vec<(&[u8], Meta)> = events.iter().map(|e| (*e, meta())).collect();
    let out = chain.apply_batch(&batch);
    assert_eq!(out.len(), 3);
    assert!(out[1].as_ref().unwrap_err().is_limit());
    assert!(out[1].as_ref().unwrap_err().to_string().contains("line 3: too many operations"));
    for i in [0, 2] {
        let v: serde_json::Value = serde_json::from_slice(&out[i].as_ref().unwrap()[0]).unwrap();
        assert_eq!(v["done"], true);
    }
    // The engine is fine afterwards, on this thread and on another.
    assert_eq!(apply(&chain, &json!({"n": 4})).unwrap()[0]["done"], true);
    let chain2 = chain.clone();
    std::thread::spawn(move || assert_eq!(apply(&chain2, &json!({"n": 5})).unwrap()[0]["done"], true))
        .join()
        .unwrap();
}

#[test]
fn a_batch_gets_a_budget_proportional_to_its_size() {
    // 300 operations per event is not enough for one event's loop of 1000, but a batch of 10
    // shares 3000 operations: the batch call succeeds where a single call fails.
    let scripts = Scripts::new();
    let mut config = scripts.config(
        "batchy",
        "fn work() { let i = 0; while i < 200 { i += 1; } }\n\
         fn transform(e, m) { work(); work(); e }\n\
         fn transform_batch(events, meta) { work(); work(); events }",
    );
    config.limits.max_operations = 300;
    let registry = Registry::load(&[config]).unwrap();
    let chain = registry.chain(&["batchy".into()]).unwrap();
    let batch: Vec<(&[u8], Meta)> = (0..10).map(|_| (br#"{}"#.as_slice(), meta())).collect();
    assert!(chain.apply_batch(&batch).iter().all(|r| r.is_ok()));
    let err = apply(&chain, &json!({})).unwrap_err();
    assert_eq!(err.limit_kind(), Some(LimitKind::Operations), "{err}");
}
