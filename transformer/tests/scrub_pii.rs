//! The native `scrub_pii(event, options)` helper and the shipped script that calls it: each mode,
//! nested keys, emails in text, identity pseudonyms, untouched fields, and the same output as the
//! granular script it replaced for every combination of params.

mod common;

use common::{apply, Scripts};
use serde_json::{json, Value};
use sluice_transformer::{Chain, Registry};

/// transforms/scrub_pii.rhai as it was before the native helper: six granular helper calls.
/// The new script must produce exactly what this one does.
const GRANULAR: &str = r#"
fn transform(event, meta) {
    let key = meta.params.hmac_key;
    pseudonymize_emails(event, ["userId", "anonymousId", "previousId"], key);

    let fields = meta.params.fields ?? ["name", "first_name", "last_name", "full_name",
        "display_name", "nickname", "username", "email", "phone", "address"];
    let has_context = "context" in event;
    switch meta.params.mode ?? "mask" {
        "drop" => {
            event.traits.drop_keys(fields);
            event.properties.drop_keys(fields);
            if has_context { event.context.traits.drop_keys(fields); }
        }
        "hash" => {
            event.traits.hash_keys(fields, key);
            event.properties.hash_keys(fields, key);
            if has_context { event.context.traits.hash_keys(fields, key); }
        }
        _ => {
            let replacement = meta.params.replacement ?? "[redacted]";
            event.traits.mask_keys(fields, replacement);
            event.properties.mask_keys(fields, replacement);
            if has_context { event.context.traits.mask_keys(fields, replacement); }
        }
    }

    if meta.params.redact_text_emails ?? true {
        redact_emails_deep(event);
    }
    event
}
"#;

fn shipped_script() -> std::path::PathBuf {
    common::transforms_dir().join("scrub_pii.rhai")
}

/// The shipped script with `params`.
fn shipped(params: Value) -> (Registry, Chain) {
    let mut config = common::config("scrub_pii", &shipped_script());
    config.params = serde_json::from_value(params).unwrap();
    let registry = Registry::load(&[config]).unwrap();
    let chain = registry.chain(&["scrub_pii".into()]).unwrap();
    (registry, chain)
}

fn scrub(event: Value, params: Value) -> Value {
    let (_r, chain) = shipped(params);
    apply(&chain, &event).unwrap_or_else(|e| panic!("{e}")).remove(0)
}

fn sha256(text: &str) -> String {
    let (_s, _r, chain) = common::chain_of("sha", "fn transform(e, m) { e.h = sha256(e.t); e.k = hmac_sha256(e.t, \"k\"); e }");
    let out = apply(&chain, &json!({"t": text})).unwrap().remove(0);
    out["h"].as_str().unwrap().to_string()
}

fn identify() -> Value {
    json!({
        "type": "identify", "userId": "Carol@Example.com", "anonymousId": "anon-1",
        "previousId": "old@example.com", "messageId": "m-1",
        "traits": {"firstName": "Carol", "Last_Name": "Doe", "email": "carol@example.com",
                   "phone": null, "plan": "pro", "age": 41,
                   "address": {"city": "Lyon", "email": "inner@example.com"},
                   "friends": [{"display-name": "Bo", "note": "bo@x.io ok"}, "eve@x.io"]},
        "context": {"ip": "198.51.100.4", "userAgent": "bot admin@crawler.io",
                    "library": {"name": "sdk"}, "traits": {"email": "carol@example.com", "tier": 2}},
        "properties": {"message": "mail carol@example.com or dan@x.org", "nested": {"deep": {"username": "cd"}}},
        "timestamp": "2026-11-20T10:01:00.000Z"
    })
}

#[test]
fn mask_mode_is_the_default() {
    let out = scrub(identify(), json!({}));
    let traits = &out["traits"];
    assert_eq!(traits["firstName"], "[redacted]");
    assert_eq!(traits["Last_Name"], "[redacted]");
    assert_eq!(traits["email"], "[redacted]");
    assert_eq!(traits["phone"], Value::Null, "null stays null");
    assert_eq!(traits["address"], "[redacted]", "an object is replaced whole");
    assert_eq!(traits["friends"], json!([{"display-name": "[redacted]", "note": "[email] ok"}, "[email]"]));
    assert_eq!(out["properties"]["nested"]["deep"]["username"], "[redacted]", "any depth");
    assert_eq!(out["context"]["traits"], json!({"email": "[redacted]", "tier": 2}));
}

#[test]
fn drop_mode_removes_keys_at_any_depth() {
    let out = scrub(identify(), json!({"mode": "drop"}));
    assert_eq!(
        out["traits"],
        json!({"plan": "pro", "age": 41, "friends": [{"note": "[email] ok"}, "[email]"]})
    );
    assert_eq!(out["context"]["traits"], json!({"tier": 2}));
    assert_eq!(out["properties"]["nested"], json!({"deep": {}}));
}

#[test]
fn hash_mode_pseudonymises_with_and_without_a_key() {
    let plain = scrub(identify(), json!({"mode": "hash"}));
    assert_eq!(plain["traits"]["email"], sha256("carol@example.com"));
    assert_eq!(plain["traits"]["phone"], Value::Null);
    assert_eq!(plain["traits"]["address"], sha256(r#"{"city":"Lyon","email":"inner@example.com"}"#));
    let keyed = scrub(identify(), json!({"mode": "hash", "hmac_key": "k"}));
    let email = keyed["traits"]["email"].as_str().unwrap();
    assert_eq!(email.len(), 64);
    assert_ne!(email, sha256("carol@example.com"), "keyed differs from plain");
    assert_eq!(keyed["context"]["traits"]["email"], email, "stable per value");
}

#[test]
fn identity_fields_that_are_emails_become_pseudonyms() {
    let out = scrub(identify(), json!({}));
    assert_eq!(out["userId"], sha256("Carol@Example.com"));
    assert_eq!(out["previousId"], sha256("old@example.com"));
    assert_eq!(out["anonymousId"], "anon-1", "not an address: kept");
    let keyed = scrub(identify(), json!({"hmac_key": "k"}));
    assert_ne!(keyed["userId"], out["userId"]);
    assert_eq!(keyed["userId"].as_str().unwrap().len(), 64);
}

#[test]
fn emails_in_every_other_string_are_redacted_unless_turned_off() {
    let out = scrub(identify(), json!({}));
    assert_eq!(out["properties"]["message"], "mail [email] or [email]");
    assert_eq!(out["context"]["userAgent"], "bot [email]");
    let off = scrub(identify(), json!({"redact_text_emails": false, "person_names": false}));
    assert_eq!(off["properties"]["message"], "mail carol@example.com or dan@x.org");
    // The person's name is still found inside an address when only email redaction is off.
    let names_on = scrub(identify(), json!({"redact_text_emails": false}));
    assert_eq!(names_on["properties"]["message"], "mail [name]@example.com or dan@x.org");
    assert_eq!(off["context"]["userAgent"], "bot admin@crawler.io");
    assert_eq!(off["traits"]["email"], "[redacted]", "field rules still apply");
}

#[test]
fn other_fields_are_left_untouched() {
    let event = identify();
    // person_names off: with it on, firstName would be scrubbed whatever `fields` says.
    let out = scrub(event.clone(), json!({"fields": ["email"], "replacement": "X", "person_names": false}));
    for key in ["type", "messageId", "timestamp", "anonymousId"] {
        assert_eq!(out[key], event[key], "{key}");
    }
    assert_eq!(out["context"]["ip"], "198.51.100.4");
    assert_eq!(out["context"]["library"], json!({"name": "sdk"}));
    assert_eq!(out["traits"]["firstName"], "Carol", "not in fields");
    assert_eq!(out["traits"]["age"], 41, "numbers stay numbers");
    assert_eq!(out["traits"]["email"], "X");
}

#[test]
fn bad_options_fail_the_event_with_a_clear_message() {
    let (_r, chain) = shipped(json!({"hmac_key": 5}));
    let err = apply(&chain, &identify()).unwrap_err().to_string();
    assert!(err.contains("hmac_key must be a string"), "{err}");
    assert!(err.contains("transformation scrub_pii") && err.contains("line "), "{err}");
}

#[test]
fn the_helper_works_without_options_and_returns_a_count() {
    let (_s, _r, chain) = common::chain_of(
        "t",
        "fn transform(event, meta) { event.n = scrub_pii(event); event.m = event.scrub_pii(()); event }",
    );
    let out = apply(&chain, &json!({"userId": "a@b.io", "traits": {"email": "x", "ok": 1}})).unwrap().remove(0);
    assert_eq!(out["n"], 2);
    assert_eq!(out["m"], 1, "second pass: the mask is written again, the pseudonym is no email");
    assert_eq!(out["traits"], json!({"email": "[redacted]", "ok": 1}));
}

/// Events shaped to reach every branch: arrays of maps, nulls, nested objects under matched keys,
/// separators and case in key names, emails in ids, text, arrays and context.
fn varied_events() -> Vec<Value> {
    let mut events = vec![identify(), json!({"type": "track"}), json!({"type": "page", "context": {}})];
    for i in 0..60 {
        let email = format!("user.{i}@example{}.com", i % 3);
        let id = if i % 4 == 0 { email.clone() } else { format!("u{i}") };
        let mut e = json!({
            "type": "track", "event": "Post Created", "userId": id, "messageId": format!("m{i}"),
            "anonymousId": if i % 5 == 0 { Value::from(format!(" {email} ")) } else { Value::Null },
            "properties": {"message": format!("hi {email}, ping x@y.io"), "count": i, "ratio": 0.5,
                           "mentions": ["a", email.clone()], "Full-Name": "Ann B",
                           "items": [{"EMAIL": email.clone(), "sku": "s1"}, {"phone": {"home": 1}}]},
            "context": {"ip": "203.0.113.1", "traits": {"user_name": "ann", "email": email, "nick.name": null},
                        "page": {"url": format!("https://x.io/?e={i}@a.io")}},
        });
        if i % 3 == 0 {
            e["traits"] = json!({"name": "Ann", "list": [[{"first name": "A"}]], "bool": true});
        }
        if i % 7 == 0 {
            e.as_object_mut().unwrap().remove("context");
        }
        if i % 11 == 0 {
            e["context"] = json!({"library": {"name": "sdk"}});
        }
        events.push(e);
    }
    events
}

#[test]
fn output_is_identical_to_the_granular_script_for_every_params_combination() {
    let scripts = Scripts::new();
    let granular_path = scripts.write("granular.rhai", GRANULAR);
    let combos = [
        json!({}),
        json!({"mode": "drop"}),
        json!({"mode": "hash"}),
        json!({"mode": "hash", "hmac_key": "secret"}),
        json!({"hmac_key": "secret", "replacement": "XX", "fields": ["email", "phone"]}),
        json!({"redact_text_emails": false}),
        json!({"mode": "bogus", "replacement": "ask dpo@corp.io"}),
        json!({"fields": "email", "mode": "drop", "redact_text_emails": false}),
        json!({"fields": [], "mode": "hash"}),
        json!({"fields": null, "mode": null, "hmac_key": null, "redact_text_emails": null, "other": 1}),
    ];
    let events = varied_events();
    for params in combos {
        // The person-name rules came after the granular script: off, the rest must match it.
        let mut native_params = params.clone();
        if let Value::Object(m) = &mut native_params {
            m.insert("person_names".into(), Value::Bool(false));
        }
        let (_r1, new) = shipped(native_params);
        let mut config = common::config("granular", &granular_path);
        config.params = serde_json::from_value(params.clone()).unwrap();
        let registry = Registry::load(&[config]).unwrap();
        let old = registry.chain(&["granular".into()]).unwrap();
        for event in &events {
            let expected = apply(&old, event).unwrap_or_else(|e| panic!("granular {params}: {e}"));
            let got = apply(&new, event).unwrap_or_else(|e| panic!("native {params}: {e}"));
            assert_eq!(got, expected, "params {params}, event {event}");
        }
    }
}

#[test]
fn malformed_parts_are_redacted_rather_than_failing_the_event() {
    let out = scrub(json!({"context": "ua a@b.io", "traits": 5, "properties": ["x c@d.io"]}), json!({}));
    assert_eq!(out, json!({"context": "ua [email]", "traits": 5, "properties": ["x [email]"]}));
}

#[test]
fn person_name_keys_are_scrubbed_and_keys_naming_things_are_not() {
    let event = json!({"type": "track", "userId": "u1", "event": "Post Created",
        "properties": {"author_name": "Ana Lima", "sender_name": "Ana", "recipient": {"displayName": "Bo Chen", "nick_name": "bo"},
                       "channel_name": "town-square", "team_name": "core", "event_name": "post", "page name": "Home",
                       "file_name": "notes.txt"},
        "context": {"traits": {"fullName": "Ana Lima", "first_name": "Ana"}, "library": {"name": "mattermost-server"}}});
    let out = scrub(event, json!({}));
    let p = &out["properties"];
    for key in ["author_name", "sender_name"] {
        assert_eq!(p[key], "[redacted]", "{key}");
    }
    assert_eq!(p["recipient"], json!({"displayName": "[redacted]", "nick_name": "[redacted]"}));
    for (key, kept) in [("channel_name", "town-square"), ("team_name", "core"), ("event_name", "post"), ("page name", "Home"), ("file_name", "notes.txt")] {
        assert_eq!(p[key], kept, "{key}");
    }
    assert_eq!(out["context"]["traits"], json!({"fullName": "[redacted]", "first_name": "[redacted]"}));
    assert_eq!(out["context"]["library"]["name"], "mattermost-server", "technical context is left alone");
    assert_eq!(out["event"], "Post Created");
    // Off, only the listed fields are scrubbed.
    let out = scrub(json!({"properties": {"author_name": "Ana"}}), json!({"person_names": false}));
    assert_eq!(out["properties"]["author_name"], "Ana");
}

#[test]
fn names_the_event_carries_are_redacted_in_its_text() {
    let event = json!({"type": "track", "userId": "u1", "event": "Post Created",
        "properties": {"message": "Ana Lima said hi; ana, lima and ANA all match; Anastasia and banana do not",
                       "thread": ["ping @bo", "thanks lima"], "channel": "ana-team"},
        "context": {"traits": {"name": "Ana Lima", "username": "bo", "email": "ana@example.org"}}});
    let out = scrub(event, json!({}));
    assert_eq!(
        out["properties"]["message"],
        "[name] said hi; [name], [name] and [name] all match; Anastasia and banana do not"
    );
    // "bo" is under the 3-character minimum: too many ordinary words would go with it.
    assert_eq!(out["properties"]["thread"], json!(["ping @bo", "thanks [name]"]));
    assert_eq!(out["properties"]["channel"], "[name]-team", "a name between separators is a word");
    assert_eq!(out["userId"], "u1", "ids are not text");
    let top = scrub(json!({"traits": {"first_name": "Ana", "bio": "Ana from Lisbon"}, "properties": {"m": "Ana"}}), json!({}));
    assert_eq!(top["traits"], json!({"first_name": "[redacted]", "bio": "[name] from Lisbon"}));
    assert_eq!(top["properties"]["m"], "[name]");
}

/// Destinations share one run of a chain only when no script of it can tell them apart: the
/// shipped scrub reads `meta.params` alone; a script that reads `meta.destination` (directly,
/// in an interpolated string, or by handing `meta` on whole) does not share.
#[test]
fn the_shipped_scrub_can_be_shared_between_destinations_and_a_destination_reader_cannot() {
    let (_registry, chain) = shipped(json!({}));
    assert!(!chain.reads_destination());
    for (script, reads) in [
        ("fn transform(event, meta) { event.s = meta.source; event }", false),
        ("fn transform(e, m) { e.p = m.params.x; e }\nfn transform_batch(es, m) { es }", false),
        ("fn transform(event, meta) { event.d = meta.destination; event }", true),
        ("fn transform(event, meta) { event.via = `${meta.destination}`; event }", true),
        ("fn transform(event, meta) { event.m = meta; event }", true),
        ("fn transform_batch(events, meta) { for e in events { e.d = meta.per_event[0].source; } events }", true),
    ] {
        let (_scripts, _registry, chain) = common::chain_of("t", script);
        assert_eq!(chain.reads_destination(), reads, "{script}");
    }
}
