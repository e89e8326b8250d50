//! Each helper of the script library, called from Rhai as a user would (the examples of
//! docs/transforms.md).

mod common;

use common::{apply, chain_of};
use serde_json::{json, Value};

/// Runs `body` (the inside of `fn transform(event, meta)`) over `event`.
fn run(body: &str, event: Value) -> Value {
    let (_s, _r, chain) = chain_of("t", &format!("fn transform(event, meta) {{\n{body}\n}}"));
    apply(&chain, &event).unwrap_or_else(|e| panic!("{e}")).remove(0)
}

#[test]
fn regex_replace_and_match() {
    let out = run(
        r#"event.a = regex_replace(event.a, "\\d{4}-\\d{4}", "[card]");
           event.b = regex_replace("Smith, John", "(\\w+), (\\w+)", "$2 $1");
           event.c = regex_match(event.a, "^card");
           event"#,
        json!({"a": "card 1234-5678 ok"}),
    );
    assert_eq!(out, json!({"a": "card [card] ok", "b": "John Smith", "c": true}));
    let (_s, _r, chain) = chain_of("bad", r#"fn transform(e, m) { regex_match("x", "(") }"#);
    assert!(apply(&chain, &json!({})).unwrap_err().to_string().contains("invalid regex"));
}

#[test]
fn redact_emails_in_text_and_deep() {
    let out = run(
        r#"event.one = redact_emails("mail a@b.io now");
           event.two = redact_emails("mail a@b.io now", "<email>");
           event.n = event.nested.redact_emails_deep();
           event.k = is_email("x@y.org");
           event"#,
        json!({"nested": {"list": ["c@d.com", 3, {"deeper": "to e.f@g.co.uk!"}], "s": "none"}}),
    );
    assert_eq!(out["one"], "mail [email] now");
    assert_eq!(out["two"], "mail <email> now");
    assert_eq!(out["nested"], json!({"list": ["[email]", 3, {"deeper": "to [email]!"}], "s": "none"}));
    assert_eq!(out["n"], 2);
    assert_eq!(out["k"], true);
}

#[test]
fn mask_and_mask_keys() {
    let out = run(
        r#"event.phone = mask(event.phone, 2);
           event.pin = mask("1234");
           event.masked = event.user.mask_keys(["first_name", "email"]);
           event.extra.mask_keys("secret", "***");
           event"#,
        json!({"phone": "0612345678", "user": {"firstName": "Ann", "Email": "a@b.c", "email": null,
               "plan": "pro", "friends": [{"first-name": "Bo"}]}, "extra": {"secret": {"a": 1}}}),
    );
    assert_eq!(out["phone"], "********78");
    assert_eq!(out["pin"], "****");
    assert_eq!(
        out["user"],
        json!({"firstName": "[redacted]", "Email": "[redacted]", "email": null, "plan": "pro",
               "friends": [{"first-name": "[redacted]"}]})
    );
    assert_eq!(out["masked"], 3);
    assert_eq!(out["extra"], json!({"secret": "***"}));
}

#[test]
fn hashing_fields_and_strings() {
    let out = run(
        r#"event.h = sha256("abc");
           event.k = hmac_sha256("what do ya want for nothing?", "Jefe");
           event.a.hash_keys(["email"]);
           event.b.hash_keys(["email", "age"], "Jefe");
           event"#,
        json!({"a": {"email": "abc"}, "b": {"email": "what do ya want for nothing?", "age": 42}}),
    );
    let sha_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let hmac = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    assert_eq!(out["h"], sha_abc);
    assert_eq!(out["k"], hmac);
    assert_eq!(out["a"]["email"], sha_abc);
    assert_eq!(out["b"]["email"], hmac, "keyed: a stable pseudonym");
    assert_eq!(out["b"]["age"].as_str().unwrap().len(), 64, "non-strings are hashed in JSON form");
}

#[test]
fn drop_keys_at_any_depth() {
    let out = run(
        r#"event.removed = drop_keys(event, ["password", "api_key"]); event"#,
        json!({"password": "x", "a": {"apiKey": "k", "keep": 1, "list": [{"API-KEY": 2, "ok": 3}]}}),
    );
    assert_eq!(out, json!({"a": {"keep": 1, "list": [{"ok": 3}]}, "removed": 3}));
}

#[test]
fn anonymize_ip_and_snake_case() {
    let out = run(
        r#"event.context.ip = anonymize_ip(event.context.ip);
           event.v6 = anonymize_ip("2001:db8:1:2:3:4:5:6");
           event.name = snake_case(event.event);
           event"#,
        json!({"event": "Post Created", "context": {"ip": "198.51.100.23"}}),
    );
    assert_eq!(out["context"]["ip"], "198.51.100.0");
    assert_eq!(out["v6"], "2001:db8:1::");
    assert_eq!(out["name"], "post_created");
}

#[test]
fn flatten_and_paths() {
    let out = run(
        r#"event.flat = flatten(event.properties);
           event.dots = event.properties.flatten(".");
           event.email = get_path(event, "context.traits.email");
           event.missing = get_path(event, "context.nope.deeper");
           set_path(event, "context.device.type", "desktop");
           event.removed = remove_path(event, "context.traits");
           event"#,
        json!({"properties": {"a": {"b": 1, "c": [1]}, "d": 2},
               "context": {"traits": {"email": "x@y.z"}}}),
    );
    assert_eq!(out["flat"], json!({"a_b": 1, "a_c": [1], "d": 2}));
    assert_eq!(out["dots"], json!({"a.b": 1, "a.c": [1], "d": 2}));
    assert_eq!(out["email"], "x@y.z");
    assert_eq!(out["missing"], Value::Null);
    assert_eq!(out["context"], json!({"device": {"type": "desktop"}}));
    assert_eq!(out["removed"], json!({"email": "x@y.z"}));
    let (_s, _r, chain) = chain_of("clash", r#"fn transform(e, m) { set_path(e, "a.b", 1); e }"#);
    assert!(apply(&chain, &json!({"a": 5})).unwrap_err().to_string().contains("not a map"));
}

#[test]
fn in_place_helpers_ignore_absent_parts() {
    let out = run(
        r#"event.traits.mask_keys(["email"]);
           event.traits.drop_keys(["email"]);
           event.traits.hash_keys(["email"], meta.params.hmac_key);
           event.traits.redact_emails_deep();
           event"#,
        json!({"type": "track"}),
    );
    assert_eq!(out, json!({"type": "track"}));
}

#[test]
fn pseudonymize_emails_only_touches_named_top_level_addresses() {
    let out = run(
        r#"event.n = pseudonymize_emails(event, ["userId", "anonymousId"]);
           event.k = event.keyed.pseudonymize_emails("userId", "Jefe");
           event"#,
        json!({"userId": "abc@example.com", "anonymousId": "anon-1",
               "keyed": {"userId": "pat@x.io"},
               "context": {"userId": "deep@example.com"}}),
    );
    assert_eq!(out["userId"], sluice_sha("abc@example.com"));
    assert_eq!(out["anonymousId"], "anon-1", "not an address: kept");
    assert_eq!(out["context"]["userId"], "deep@example.com", "top level only");
    assert_eq!(out["n"], 1);
    assert_eq!(out["k"], 1);
    assert_eq!(out["keyed"]["userId"].as_str().unwrap().len(), 64);
    assert_ne!(out["keyed"]["userId"], sluice_sha("pat@x.io"), "keyed differs from plain");
}

fn sluice_sha(text: &str) -> String {
    let (_s, _r, chain) = chain_of("sha", "fn transform(e, m) { e.h = sha256(e.t); e }");
    apply(&chain, &json!({"t": text})).unwrap()[0]["h"].as_str().unwrap().to_string()
}
