//! `sluice transform test SCRIPT --event FILE`: outcomes for one event, an array or NDJSON.

use serde_json::json;
use sluice_transformer::testing;

fn run_events(script: &str, events: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let script_path = dir.path().join("s.rhai");
    std::fs::write(&script_path, script).unwrap();
    let events_path = dir.path().join("events.json");
    std::fs::write(&events_path, events).unwrap();
    let mut out = Vec::new();
    let params = json!({"drop_type": "page"}).as_object().unwrap().clone();
    testing::run_events(&script_path, params, &events_path, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

const SCRIPT: &str = r#"fn transform(event, meta) {
  if event.type == meta.params.drop_type { return (); }
  if event.type == "screen" { throw "screens are not supported"; }
  if event.type == "group" { return [event, event]; }
  if event.userId == "u2" { event.seen = true; }
  event
}"#;

#[test]
fn prints_each_outcome_for_ndjson() {
    let out = run_events(
        SCRIPT,
        "{\"type\":\"track\",\"messageId\":\"m1\",\"userId\":\"u1\"}\n\
         {\"type\":\"track\",\"messageId\":\"m2\",\"userId\":\"u2\"}\n\n\
         {\"type\":\"page\",\"messageId\":\"m3\"}\n\
         {\"type\":\"group\",\"messageId\":\"m4\"}\n\
         {\"type\":\"screen\",\"messageId\":\"m5\"}\n",
    );
    assert!(out.contains("# event 1 (messageId \"m1\"): unchanged"), "{out}");
    assert!(out.contains("# event 2 (messageId \"m2\"): changed\n{"), "{out}");
    assert!(out.contains("\"seen\": true"), "{out}");
    assert!(out.contains("# event 3 (messageId \"m3\"): dropped"), "{out}");
    assert!(out.contains("# event 4 (messageId \"m4\"): split into 2"), "{out}");
    assert!(out.contains("# event 5 (messageId \"m5\"): error: transformation s ("), "{out}");
    assert!(out.contains("line 3: script error: screens are not supported"), "{out}");
}

#[test]
fn accepts_a_single_object_or_an_array() {
    let one = run_events(SCRIPT, r#"{"type":"track","messageId":"a"}"#);
    assert_eq!(one.matches("# event").count(), 1, "{one}");
    let many = run_events(SCRIPT, r#"[{"type":"track"},{"type":"page"}]"#);
    assert_eq!(many.matches("# event").count(), 2, "{many}");
    assert!(many.contains("# event 2 (messageId \"\"): dropped"), "{many}");
}

#[test]
fn a_script_that_does_not_compile_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bad.rhai");
    std::fs::write(&script, "fn transform(e, m) {\n  e +\n}").unwrap();
    let events = dir.path().join("e.json");
    std::fs::write(&events, "{}").unwrap();
    let err = testing::run_events(&script, Default::default(), &events, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().starts_with("transformation bad ("), "{err}");
    assert!(err.line().is_some(), "{err}");
}
