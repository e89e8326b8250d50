//! Events that stay bytes (`src/lazy.rs`): a script that only hands its event to `scrub_pii`
//! gets the stored bytes, and `scrub_pii` rewrites them (`helpers/scrub_bytes.rs`). These tests
//! hold the byte path to the map path: the same values for every params combination, the same
//! counts, the same errors, and the map path wherever the byte path declines.

mod common;

use common::{apply, chain_of, meta};
use rhai::{Dynamic, Map};
use serde_json::{json, Value};
use sluice_transformer::helpers::scrub::{scrub_pii, ScrubOptions};
use sluice_transformer::helpers::scrub_bytes::scrub_bytes;

fn options(params: &Value) -> ScrubOptions {
    let map: Map = rhai::serde::to_dynamic(params).unwrap().cast();
    ScrubOptions::from_map(&map).unwrap()
}

/// The map path: parse, scrub the Rhai map, back to JSON.
fn by_map(event: &[u8], opts: &ScrubOptions) -> (Value, usize) {
    let value: Value = serde_json::from_slice(event).unwrap();
    let mut map: Map = rhai::serde::to_dynamic(&value).unwrap().cast();
    let changed = scrub_pii(&mut map, opts);
    (rhai::serde::from_dynamic(&Dynamic::from_map(map)).unwrap(), changed)
}

fn by_bytes(event: &[u8], opts: &ScrubOptions) -> Option<(Value, usize)> {
    let (out, changed) = scrub_bytes(event, opts)?;
    Some((serde_json::from_slice(&out).expect("the byte path writes JSON"), changed))
}

/// Shapes that reach every branch, written the ways clients write JSON: spaced out, with escapes
/// in keys and values, unicode, arrays of maps, nulls and values of every type under matched keys.
fn events() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        br#"{}"#.to_vec(),
        br#" { "type" : "track" , "userId" : "Ann.Lee@Example.org" } "#.to_vec(),
        br#"{"userId":"a@b.io","anonymousId":" c@d.io ","previousId":"not mail","user_id":"e@f.io"}"#.to_vec(),
        "{\"properties\":{\"m\\u00e9ssage\":\"caf\\u00e9 \\\"x@y.io\\\"\\n\",\"email\":\"\\u0061@b.io\",\"emoji\":\"\u{1F600} z@w.io\"}}".as_bytes().to_vec(),
        br#"{"traits":{"name":"Ana Lima","bio":"Ana from Lisbon, ana@l.pt","nested":{"first-name":["A",{"x":1}],"ok":[1,2.50,-0,1e3,true,null]}},"properties":{"m":"Lima and ANA"}}"#.to_vec(),
        br#"{"properties":{"message":"hi Bo Chen"},"context":{"traits":{"display_name":"Bo Chen","email":null,"phone":{"home":1}},"page":{"url":"https://x.io/?e=q@a.io"},"library":{"name":"sdk"}}}"#.to_vec(),
        br#"{"context":"ua a@b.io","traits":5,"properties":["x c@d.io",{"email":"e@f.io"}]}"#.to_vec(),
        br#"{"properties":{"email":"x","EMAIL":null,"items":[[{"Full Name":"Q R"}],{"address":{"street":"s"}}],"count":3}}"#.to_vec(),
        br#"{"traits":{"username":"  "},"context":{"traits":{"name":"Jo"}},"properties":{"t":"Jo here"}}"#.to_vec(),
    ];
    for i in 0..40 {
        let email = format!("user.{i}@example{}.com", i % 3);
        let mut e = json!({
            "type": "track", "event": "Post Created", "userId": if i % 4 == 0 { email.clone() } else { format!("u{i}") },
            "properties": {"message": format!("hi {email}, User {i}"), "count": i, "mentions": ["a", email.clone()],
                           "author_name": format!("User {i}"), "channel_name": "town-square"},
            "context": {"ip": "203.0.113.1", "traits": {"name": format!("User {i}"), "email": email}},
        });
        if i % 3 == 0 {
            e["traits"] = json!({"first_name": "Userina", "list": [[{"first name": "A"}]], "note": "Userina's"});
        }
        out.push(if i % 2 == 0 { serde_json::to_vec(&e).unwrap() } else { serde_json::to_vec_pretty(&e).unwrap() });
    }
    out
}

#[test]
fn the_byte_path_matches_the_map_path_for_every_params_combination() {
    let combos = [
        json!({}),
        json!({"person_names": false}),
        json!({"mode": "drop"}),
        json!({"mode": "hash", "hmac_key": "secret"}),
        json!({"hmac_key": "secret", "replacement": "XX", "fields": ["email", "phone"]}),
        json!({"redact_text_emails": false}),
        json!({"redact_text_emails": false, "person_names": false}),
        json!({"mode": "bogus", "replacement": "ask dpo@corp.io about Lima"}),
        json!({"fields": "email", "mode": "drop", "redact_text_emails": false}),
        json!({"fields": [], "mode": "hash"}),
    ];
    let mut compared = 0;
    for params in &combos {
        let opts = options(params);
        for event in events() {
            let text = String::from_utf8_lossy(&event);
            match by_bytes(&event, &opts) {
                Some(got) => {
                    assert_eq!(got, by_map(&event, &opts), "params {params}, event {text}");
                    compared += 1;
                }
                // Only a hash over a value that is not a string is left to the map path.
                None => assert_eq!(params["mode"], "hash", "declined: params {params}, event {text}"),
            }
        }
    }
    assert!(compared > 300, "{compared}");
}

#[test]
fn malformed_or_unsupported_input_is_declined_not_rewritten() {
    let opts = options(&json!({}));
    for bad in [&b"[1]"[..], b"{\"a\":}", b"{\"a\":1", b"{\"a\":1} x", b"{\"a\":01}", b"{\"a\":\"\\x\"}", b"{\"a\":tru}", b"\xff"] {
        assert!(scrub_bytes(bad, &opts).is_none(), "{}", String::from_utf8_lossy(bad));
    }
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    assert!(scrub_bytes(deep.as_bytes(), &opts).is_none(), "deeper than the collector accepts");
    let hash = options(&json!({"mode": "hash"}));
    assert!(scrub_bytes(br#"{"traits":{"email":{"a":1}}}"#, &hash).is_none());
    assert!(scrub_bytes(br#"{"traits":{"email":"a@b.io"}}"#, &hash).is_some());
}

fn run(chain: &sluice_transformer::Chain, bytes: &[u8]) -> Result<Vec<String>, String> {
    chain
        .apply(bytes, &meta())
        .map(|outs| outs.into_iter().map(|o| String::from_utf8(o).unwrap()).collect())
        .map_err(|e| e.to_string())
}

#[test]
fn the_shipped_script_keeps_the_event_as_written_and_a_reading_script_gets_a_map() {
    let input = br#"{"userId":"u1","type":"track","properties":{"price":1.50,"big":12345678901234567890,"email":"x"}}"#;
    let (_s, _r, shipped) = chain_of("s", include_str!("../../transforms/scrub_pii.rhai"));
    // Bytes in, bytes out: key order, number forms and big integers as the client wrote them.
    assert_eq!(
        run(&shipped, input).unwrap(),
        [r#"{"userId":"u1","type":"track","properties":{"price":1.50,"big":12345678901234567890,"email":"[redacted]"}}"#]
    );
    // A script that reads a field gets a map (keys sorted, numbers as Rhai holds them).
    let (_s, _r, reading) = chain_of("r", "fn transform(event, meta) { scrub_pii(event); if event.type == \"x\" { return (); } event }");
    let out: Value = serde_json::from_str(&run(&reading, input).unwrap()[0]).unwrap();
    assert_eq!(out["properties"]["email"], "[redacted]");
    assert!(run(&reading, input).unwrap()[0].starts_with(r#"{"properties":"#));
    // The same events come out of both, as values.
    for event in events() {
        let value: Value = serde_json::from_slice(&event).unwrap();
        assert_eq!(apply(&shipped, &value).unwrap(), apply(&reading, &value).unwrap());
    }
}

#[test]
fn a_lazy_stage_hands_a_map_on_to_a_stage_that_reads_and_errors_stay_per_event() {
    let scripts = common::Scripts::new();
    let scrub = scripts.config("scrub", include_str!("../../transforms/scrub_pii.rhai"));
    let tag = scripts.config("tag", "fn transform(e, m) { e.tagged = e.properties.email; e }");
    let mut hash = scripts.config("hash", include_str!("../../transforms/scrub_pii.rhai"));
    hash.params = serde_json::from_value(json!({"mode": "hash"})).unwrap();
    let registry = sluice_transformer::Registry::load(&[scrub, tag, hash]).unwrap();
    let chain = registry.chain(&["scrub".into(), "tag".into()]).unwrap();
    let out: Value = serde_json::from_str(&run(&chain, br#"{"properties":{"email":"a@b.io"}}"#).unwrap()[0]).unwrap();
    assert_eq!(out["tagged"], "[redacted]");
    // The byte path declines a hash over an object; the helper converts and hashes it as before.
    let hashed = registry.chain(&["hash".into()]).unwrap();
    let out: Value = serde_json::from_str(&run(&hashed, br#"{"traits":{"email":{"b":1,"a":2}}}"#).unwrap()[0]).unwrap();
    assert_eq!(out["traits"]["email"], sluice_transformer::helpers::text::sha256_hex(r#"{"a":2,"b":1}"#));
    // A stored event that is not an object fails alone, with the parser's reason.
    let err = run(&chain, b"{\"properties\": [1,}").unwrap_err();
    assert!(err.contains("line 1 column"), "{err}");
    assert!(run(&chain, br#"{"properties":{}}"#).is_ok());
}

#[test]
fn a_script_of_scrub_pii_calls_only_runs_without_the_interpreter() {
    // With a budget of one Rhai operation, only a script the chain runs itself can pass.
    let scripts = common::Scripts::new();
    let tight = sluice_transformer::Limits { max_operations: 1, ..Default::default() };
    let mut native = scripts.config("native", "fn transform(event, meta) {\n  scrub_pii(event, meta.params);\n  event.scrub_pii();\n  event\n}");
    native.limits = tight.clone();
    native.params = serde_json::from_value(json!({"replacement": "XX"})).unwrap();
    let mut interpreted = scripts.config("interpreted", "fn transform(event, meta) {\n  scrub_pii(event, meta.params);\n  let n = 1;\n  event\n}");
    interpreted.limits = tight;
    let registry = sluice_transformer::Registry::load(&[native, interpreted]).unwrap();
    let input = br#"{"userId":"a@b.io","traits":{"email":"x","note":"mail c@d.io"}}"#;
    let out = run(&registry.chain(&["native".into()]).unwrap(), input).unwrap();
    let out: Value = serde_json::from_str(&out[0]).unwrap();
    // The second call, with default options, masks again: both calls were made, in order.
    assert_eq!(out["traits"], json!({"email": "[redacted]", "note": "mail [email]"}));
    assert_eq!(out["userId"].as_str().unwrap().len(), 64, "pseudonymised");
    let err = run(&registry.chain(&["interpreted".into()]).unwrap(), input).unwrap_err();
    assert!(err.contains("too many operations"), "{err}");
}

/// Small deterministic generator (the crate has no rand dependency).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Keys that hit every rule (fields in several spellings, person-name keys, identity keys, the
/// parts with rules of their own) mixed with keys that hit none.
const KEYS: &[&str] = &[
    "traits", "properties", "context", "userId", "anonymousId", "previous_id", "email", "EMAIL", "first_name",
    "firstName", "name", "author_name", "channel_name", "phone", "address", "message", "note", "items", "id",
    "caf\u{e9}", "a\"b", "",
];
const WORDS: &[&str] = &[
    "Ana", "ana", "Lima", "Bo", "Ana Lima", "hello", "ana@x.io", "mail: q@w.co,", "caf\u{e9} \u{1F600}", "line\nbreak",
    "tab\there", "quote\"d", "back\\slash", "Anastasia", "[name]", "", " Ana ",
];

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 4 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 1),
        2 => json!(rng.below(1000) as i64 - 500),
        3 => json!(rng.below(1000) as f64 / 8.0),
        4 => Value::String((0..=rng.below(3)).map(|_| rng.pick(WORDS)).collect::<Vec<_>>().join(" ")),
        5 => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => random_object(rng, depth + 1),
    }
}

fn random_object(rng: &mut Rng, depth: u32) -> Value {
    Value::Object((0..rng.below(7)).map(|_| (rng.pick(KEYS).to_string(), random_value(rng, depth))).collect())
}

#[test]
fn random_events_scrub_the_same_on_both_paths() {
    let mut rng = Rng(16);
    let combos = [json!({}), json!({"mode": "drop"}), json!({"mode": "hash", "hmac_key": "k"}), json!({"redact_text_emails": false})];
    let opts: Vec<ScrubOptions> = combos.iter().map(options).collect();
    let (mut compared, mut changed) = (0, 0);
    for _ in 0..3000 {
        let event = random_object(&mut rng, 0);
        // Written compact or spread out, so the byte path sees both.
        let bytes = if rng.below(2) == 0 { serde_json::to_vec(&event) } else { serde_json::to_vec_pretty(&event) }.unwrap();
        for (params, opts) in combos.iter().zip(&opts) {
            let Some(got) = by_bytes(&bytes, opts) else {
                assert_eq!(params["mode"], "hash", "declined {event}");
                continue;
            };
            let want = by_map(&bytes, opts);
            assert_eq!(got, want, "params {params}, event {event}");
            compared += 1;
            changed += usize::from(want.1 > 0);
        }
    }
    assert!(compared > 9000 && changed > 2000, "{compared} compared, {changed} changed");
}
