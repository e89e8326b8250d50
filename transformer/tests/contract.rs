//! The script contract: keep, change, drop, split; meta and params; chains; errors that name
//! the script and line; batches.

mod common;

use common::{apply, chain_of, meta, post_event, Scripts};
use serde_json::json;
use sluice_transformer::{Meta, Registry, TransformError};

#[test]
fn keep_returns_the_event_unchanged() {
    let (_s, _r, chain) = chain_of("keep", "fn transform(event, meta) { event }");
    let event = post_event();
    assert_eq!(apply(&chain, &event).unwrap(), vec![event]);
}

#[test]
fn change_sees_meta_and_params() {
    let scripts = Scripts::new();
    let mut config = scripts.config(
        "tag",
        r#"fn transform(event, meta) {
            event.properties.via = `${meta.source}->${meta.destination}`;
            event.properties.seen_id = meta.message_id;
            event.properties.key = meta.write_key_id;
            event.properties.team = meta.params.team;
            event.properties.limit = meta.params.nested.limit + 1;
            event
        }"#,
    );
    config.params = serde_json::from_value(json!({"team": "growth", "nested": {"limit": 41}})).unwrap();
    let registry = Registry::load(&[config]).unwrap();
    let chain = registry.chain(&["tag".into()]).unwrap();
    let out = apply(&chain, &post_event()).unwrap();
    let props = &out[0]["properties"];
    assert_eq!(props["via"], "src-web->dest-warehouse");
    assert_eq!(props["seen_id"], "m-1");
    assert_eq!(props["key"], "wk-1");
    assert_eq!(props["team"], "growth");
    assert_eq!(props["limit"], 42);
    assert_eq!(props["post_id"], "p1", "untouched fields stay");
}

#[test]
fn params_cannot_be_changed_by_one_event_for_the_next() {
    let scripts = Scripts::new();
    let mut config = scripts.config(
        "sneaky",
        r#"fn transform(event, meta) {
            event.seen = meta.params.count;
            try { meta.params.count = 99; } catch {}
            event
        }"#,
    );
    config.params = serde_json::from_value(json!({"count": 1})).unwrap();
    let registry = Registry::load(&[config]).unwrap();
    let chain = registry.chain(&["sneaky".into()]).unwrap();
    for _ in 0..2 {
        assert_eq!(apply(&chain, &json!({"a": 1})).unwrap()[0]["seen"], 1);
    }
}

#[test]
fn unit_drops_the_event() {
    let (_s, _r, chain) =
        chain_of("drop", r#"fn transform(event, meta) { if event.type == "track" { () } else { event } }"#);
    assert!(apply(&chain, &post_event()).unwrap().is_empty());
    assert_eq!(apply(&chain, &json!({"type": "page"})).unwrap().len(), 1);
}

#[test]
fn an_array_splits_the_event() {
    let (_s, _r, chain) = chain_of(
        "split",
        r#"fn transform(event, meta) {
            let a = event; a.part = 1;
            let b = event; b.part = 2;
            [a, b]
        }"#,
    );
    let out = apply(&chain, &json!({"x": "y"})).unwrap();
    assert_eq!(out, vec![json!({"x": "y", "part": 1}), json!({"x": "y", "part": 2})]);
}

#[test]
fn chains_run_in_order_and_an_empty_chain_is_a_pass_through() {
    let scripts = Scripts::new();
    let configs = [
        scripts.config("split", "fn transform(e, m) { let a = e; a.n = 1; let b = e; b.n = 2; [a, b] }"),
        scripts.config("drop_odd", "fn transform(e, m) { if e.n % 2 == 1 { () } else { e.trail = `${e.trail}b`; e } }"),
        scripts.config("mark", r#"fn transform(e, m) { e.trail = "a"; e }"#),
    ];
    let registry = Registry::load(&configs).unwrap();
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let chain = registry.chain(&ids(&["mark", "split", "drop_odd"])).unwrap();
    assert_eq!(apply(&chain, &json!({})).unwrap(), vec![json!({"n": 2, "trail": "ab"})]);

    // The same event, untouched, on a destination without transformations.
    let empty = registry.chain(&[]).unwrap();
    assert!(empty.is_empty());
    let raw = br#"{"b":1,  "a":2}"#;
    assert_eq!(empty.apply(raw, &meta()).unwrap(), vec![raw.to_vec()]);
}

#[test]
fn unknown_ids_and_duplicates_are_errors() {
    let scripts = Scripts::new();
    let registry = Registry::load(&[scripts.config("a", "fn transform(e, m) { e }")]).unwrap();
    let err = registry.chain(&["a".into(), "nope".into()]).err().unwrap();
    assert_eq!(err.to_string(), r#"unknown transformation "nope""#);
    let twice = [scripts.config("a", "fn transform(e, m) { e }"), scripts.config("a", "fn transform(e, m) { e }")];
    assert!(matches!(Registry::load(&twice), Err(TransformError::DuplicateId(id)) if id == "a"));
}

#[test]
fn compile_errors_name_file_line_and_message() {
    let scripts = Scripts::new();
    let config = scripts.config("broken", "fn transform(event, meta) {\n  let x = ;\n  event\n}");
    let err = Registry::load(std::slice::from_ref(&config)).err().unwrap();
    let text = err.to_string();
    let prefix = format!("transformation broken ({}) line 2: ", config.script.display());
    assert!(text.starts_with(&prefix), "{text}");
    assert_eq!(err.line(), Some(2));
    // `check` reports every failing script, for `sluice validate`.
    let other = scripts.config("typo", "fn transform(event, meta) {\n  evnt\n}");
    let all = Registry::check(&[config, scripts.config("ok", "fn transform(e, m) { e }"), other]);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[1].to_string().contains("line 2") && all[1].to_string().contains("evnt"), "{}", all[1]);
}

#[test]
fn a_script_without_transform_or_with_the_wrong_arity_is_refused() {
    let scripts = Scripts::new();
    let none = Registry::load(&[scripts.config("none", "fn helper(x) { x }")]).err().unwrap();
    assert!(none.to_string().contains("defines neither fn transform(event, meta)"), "{none}");
    let arity = Registry::load(&[scripts.config("one", "fn transform(event) { event }")]).err().unwrap();
    assert!(arity.to_string().contains("must take 2 parameters"), "{arity}");
    let missing = Registry::load(&[common::config("gone", std::path::Path::new("/nonexistent/x.rhai"))]);
    assert!(matches!(missing, Err(TransformError::Read { .. })));
}

#[test]
fn runtime_errors_name_the_script_and_line() {
    let (scripts, _r, chain) = chain_of(
        "thrower",
        "fn check(e) {\n  if e.bad == true {\n    throw \"bad event\";\n  }\n}\nfn transform(event, meta) {\n  check(event);\n  event\n}",
    );
    let err = apply(&chain, &json!({"bad": true})).unwrap_err();
    let file = scripts.dir.path().join("thrower.rhai");
    assert_eq!(
        err.to_string(),
        format!("transformation thrower ({}) line 3: script error: bad event (in fn check)", file.display())
    );
    assert!(!err.is_limit() && err.is_event_error());

    let (_s, _r, chain) = chain_of("types", "fn transform(event, meta) {\n  event.n = event.s + 1 * [];\n  event\n}");
    let err = apply(&chain, &json!({"s": "x"})).unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
}

#[test]
fn wrong_outputs_and_inputs_are_errors() {
    let (_s, _r, chain) = chain_of("num", "fn transform(e, m) { 42 }");
    let err = apply(&chain, &json!({})).unwrap_err();
    assert!(err.to_string().contains("returned a i64"), "{err}");
    let (_s, _r, chain) = chain_of("mixed", "fn transform(e, m) { [e, 1] }");
    let err = apply(&chain, &json!({})).unwrap_err();
    assert!(err.to_string().contains("element 1 of the returned array"), "{err}");
    let err = chain.apply(b"[1]", &meta()).unwrap_err();
    assert!(matches!(err, TransformError::BadEvent(_)), "{err}");
}

const DEDUPE_BATCH: &str = r#"
// Drops events whose messageId was already seen in this batch; tags the rest with their index.
fn transform_batch(events, meta) {
    let seen = #{};
    let out = [];
    for (e, i) in events {
        if seen.contains(e.messageId) { out.push(()); continue; }
        seen[e.messageId] = true;
        e.batch_index = i;
        e.source = meta.per_event[i].source;
        out.push(e);
    }
    out
}
"#;

#[test]
fn transform_batch_sees_the_whole_batch_with_one_outcome_per_event() {
    let (_s, _r, chain) = chain_of("dedupe", DEDUPE_BATCH);
    let events = [br#"{"messageId":"a"}"#.as_slice(), br#"{"messageId":"b"}"#, br#"{"messageId":"a"}"#];
    let sources = ["s0", "s1", "s2"];
    let batch: Vec<(&[u8], Meta)> =
        events.iter().zip(sources).map(|(e, s)| (*e, Meta::new(s, "d", ""))).collect();
    let out = chain.apply_batch(&batch);
    let parsed: Vec<Vec<serde_json::Value>> = out
        .into_iter()
        .map(|r| r.unwrap().iter().map(|b| serde_json::from_slice(b).unwrap()).collect())
        .collect();
    assert_eq!(parsed[0], vec![json!({"messageId": "a", "batch_index": 0, "source": "s0"})]);
    assert_eq!(parsed[1], vec![json!({"messageId": "b", "batch_index": 1, "source": "s1"})]);
    assert!(parsed[2].is_empty(), "duplicate dropped: {:?}", parsed[2]);

    // A batch-only script also serves single events (a batch of one).
    assert_eq!(apply(&chain, &json!({"messageId": "z"})).unwrap()[0]["batch_index"], 0);
}

#[test]
fn a_failing_transform_batch_falls_back_to_transform_per_event() {
    let (_s, _r, chain) = chain_of(
        "both",
        r#"fn transform_batch(events, meta) { throw "batch path broken"; }
           fn transform(e, m) { if e.bad == true { throw "bad one"; } e.ok = true; e }"#,
    );
    let batch: Vec<(&[u8], Meta)> = vec![
        (br#"{"id":1}"#.as_slice(), meta()),
        (br#"{"id":2,"bad":true}"#.as_slice(), meta()),
        (br#"not json"#.as_slice(), meta()),
    ];
    let out = chain.apply_batch(&batch);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out[0].as_ref().unwrap()[0]).unwrap(), json!({"id": 1, "ok": true}));
    assert!(out[1].as_ref().unwrap_err().to_string().contains("bad one"));
    assert!(matches!(out[2], Err(TransformError::BadEvent(_))));
}

/// `meta` maps are built from a per-thread template: each event must still see its own
/// message id and source, the params of its own transformation, and none of what a previous
/// event's script wrote into its `meta`.
#[test]
fn each_event_sees_its_own_meta() {
    let scripts = Scripts::new();
    let source = r#"fn transform(e, m) {
        e.seen = `${m.source}/${m.message_id}/${m.params.k}/${m.scratch ?? "clean"}`;
        m.scratch = "dirty";
        e
    }"#;
    let mut a = scripts.config("a", source);
    a.params = serde_json::from_value(json!({"k": "A"})).unwrap();
    let mut b = scripts.config("b", &source.replace("e.seen", "e.seen_b"));
    b.params = serde_json::from_value(json!({"k": "B"})).unwrap();
    let registry = Registry::load(&[a, b]).unwrap();
    let chain = registry.chain(&["a".into(), "b".into()]).unwrap();
    let event = br#"{"type":"track"}"#;
    for (src, id) in [("s1", "m1"), ("s1", "m2"), ("s2", "m3")] {
        let out = chain.apply(event, &Meta::new(src, "d", id)).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&out[0]).unwrap();
        assert_eq!(out["seen"], format!("{src}/{id}/A/clean"));
        assert_eq!(out["seen_b"], format!("{src}/{id}/B/clean"));
    }
}

/// Writing into `meta` (or storing it in the event) used to panic inside Rhai: a shared params
/// value inside the map tripped its data-size check. Now it works on the event's own copy, and
/// params stay read-only.
#[test]
fn meta_can_be_written_and_stored_but_params_stay_read_only() {
    let scripts = Scripts::new();
    let mut config = scripts.config(
        "m",
        r#"fn transform(e, m) {
            e.meta = m;
            e.blocked = [];
            m.note = "x";
            try { m.params.k = "changed"; } catch { e.blocked.push("params"); }
            e.k = m.params.k;
            let copy = m;
            copy.note = "a copy is the script's own";
            e.copy = copy.note;
            e
        }"#,
    );
    config.params = serde_json::from_value(json!({"k": "v", "list": [1, 2]})).unwrap();
    let registry = Registry::load(&[config]).unwrap();
    let chain = registry.chain(&["m".into()]).unwrap();
    let out = chain.apply(br#"{"a":1}"#, &Meta::new("s", "d", "m1")).unwrap();
    let out: serde_json::Value = serde_json::from_slice(&out[0]).unwrap();
    assert_eq!(out["meta"]["params"], json!({"k": "v", "list": [1, 2]}));
    assert_eq!(out["meta"]["message_id"], "m1");
    assert_eq!(out["blocked"], json!(["params"]));
    assert_eq!(out["k"], "v");
    assert_eq!(out["copy"], "a copy is the script's own");
}
