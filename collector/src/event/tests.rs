use super::*;
use serde_json::{json, Value};

fn info(kind: Option<Kind>, ip: Option<&'static str>) -> RequestInfo<'static> {
    let received_at = DateTime::parse_from_rfc3339("2026-11-22T10:00:10.000Z").unwrap().with_timezone(&Utc);
    RequestInfo {
        endpoint_kind: kind,
        received_at,
        received_at_text: "2026-11-22T10:00:10.000Z",
        ip,
        batch_sent_at: None,
    }
}

fn run(raw: &str, info: &RequestInfo<'_>) -> Result<Value, CollectError> {
    let mut out = Vec::new();
    enrich(raw, info, &mut out)?;
    Ok(serde_json::from_slice(&out).expect("enriched output must be valid JSON"))
}

fn reason(raw: &str, info: &RequestInfo<'_>) -> String {
    run(raw, info).unwrap_err().to_string()
}

#[test]
fn fast_path_adds_type_message_id_received_at_timestamp_and_ip() {
    let v = run(r#"{"userId":"u1","event":"Post Created","properties":{"len":3},"context":{"library":{"name":"x"}}}"#, &info(Some(Kind::Track), Some("10.1.2.3"))).unwrap();
    assert_eq!(v["type"], "track");
    assert_eq!(v["receivedAt"], "2026-11-22T10:00:10.000Z");
    assert_eq!(v["timestamp"], "2026-11-22T10:00:10.000Z");
    assert_eq!(v["context"], json!({"ip": "10.1.2.3", "library": {"name": "x"}}));
    assert_eq!(v["properties"], json!({"len": 3}));
    assert_eq!(v["messageId"].as_str().unwrap().len(), 36);
}

#[test]
fn client_values_are_kept() {
    let raw = r#"{"type":"identify","userId":"u1","messageId":"m-1","timestamp":"2026-01-01T00:00:00Z","context":{"ip":"1.1.1.1"}}"#;
    let v = run(raw, &info(Some(Kind::Identify), Some("10.0.0.1"))).unwrap();
    assert_eq!(v["messageId"], "m-1");
    assert_eq!(v["timestamp"], "2026-01-01T00:00:00Z");
    assert_eq!(v["context"]["ip"], "1.1.1.1");
}

#[test]
fn timestamp_is_corrected_for_client_clock_skew() {
    // The client's clock is 5 minutes fast: it says it sent at 10:05:00 an event from 10:04:50.
    let raw = r#"{"userId":"u1","event":"e","originalTimestamp":"2026-11-22T10:04:50Z","sentAt":"2026-11-22T10:05:00Z"}"#;
    let v = run(raw, &info(Some(Kind::Track), None)).unwrap();
    assert_eq!(v["timestamp"], "2026-11-22T10:00:00.000Z");
}

#[test]
fn batch_sent_at_applies_to_events_without_one() {
    let mut i = info(None, None);
    i.batch_sent_at = Some(Cow::Borrowed("2026-11-22T10:00:20Z"));
    let raw = r#"{"type":"track","userId":"u1","event":"e","originalTimestamp":"2026-11-22T10:00:15Z"}"#;
    let v = run(raw, &i).unwrap();
    assert_eq!(v["sentAt"], "2026-11-22T10:00:20Z");
    assert_eq!(v["timestamp"], "2026-11-22T10:00:05.000Z");
}

#[test]
fn empty_context_gets_ip_without_a_stray_comma() {
    let v = run(r#"{"anonymousId":"a","context":{ }}"#, &info(Some(Kind::Page), Some("::1"))).unwrap();
    assert_eq!(v["context"], json!({"ip": "::1"}));
}

#[test]
fn ip_goes_in_front_of_the_first_context_key_whatever_its_shape() {
    let at = info(Some(Kind::Track), Some("10.0.0.1"));
    // Whitespace around the first key, and a client's own ip kept as sent.
    let v = run(r#"{"userId":"u","event":"e","context":{  "os" : {"name":"Linux"} }}"#, &at).unwrap();
    assert_eq!(v["context"], json!({"ip": "10.0.0.1", "os": {"name": "Linux"}}));
    let v = run(r#"{"userId":"u","event":"e","context":{"app":{"ip":"x"},"ip":"192.0.2.7"}}"#, &at).unwrap();
    assert_eq!(v["context"], json!({"app": {"ip": "x"}, "ip": "192.0.2.7"}));
    // A first key with an escape is not borrowed from the body: the slow path handles it.
    let v = run(r#"{"userId":"u","event":"e","context":{"\u0061pp":1,"\u0069p":"192.0.2.8"}}"#, &at).unwrap();
    assert_eq!(v["context"], json!({"app": 1, "ip": "192.0.2.8"}));
    let v = run(r#"{"userId":"u","event":"e","context":{"\u0061pp":1}}"#, &at).unwrap();
    assert_eq!(v["context"], json!({"app": 1, "ip": "10.0.0.1"}));
    // Without an ip to add, a context that is not an object is left alone.
    let v = run(r#"{"userId":"u","event":"e","context":[1,{"a":2}]}"#, &info(Some(Kind::Track), None)).unwrap();
    assert_eq!(v["context"], json!([1, {"a": 2}]));
    assert!(reason(r#"{"userId":"u","event":"e","context":[1]}"#, &at).contains("context must be a JSON object"));
    assert!(reason(r#"{"userId":"u","event":"e","context":7}"#, &at).contains("context must be a JSON object"));
}

#[test]
fn present_nulls_take_the_slow_path_and_are_replaced() {
    let raw = r#"{"userId":"u1","messageId":null,"timestamp":null,"context":{"ip":null},"receivedAt":"1999-01-01T00:00:00Z"}"#;
    let v = run(raw, &info(Some(Kind::Screen), Some("10.0.0.9"))).unwrap();
    assert_eq!(v["messageId"].as_str().unwrap().len(), 36);
    assert_eq!(v["timestamp"], "2026-11-22T10:00:10.000Z");
    assert_eq!(v["receivedAt"], "2026-11-22T10:00:10.000Z");
    assert_eq!(v["context"]["ip"], "10.0.0.9");
    assert_eq!(v["type"], "screen");
}

#[test]
fn numeric_user_ids_are_accepted() {
    assert!(run(r#"{"userId":42}"#, &info(Some(Kind::Identify), None)).is_ok());
}

#[test]
fn invalid_events_are_refused_with_a_reason() {
    let t = info(Some(Kind::Track), None);
    assert!(reason(r#"{"event":"e"}"#, &t).contains("userId or anonymousId"));
    assert!(reason(r#"{"userId":"  ","event":"e"}"#, &t).contains("userId or anonymousId"));
    assert!(reason(r#"{"userId":"u"}"#, &t).contains("\"event\" name"));
    assert!(reason(r#"{"userId":"u","event":"e","type":"page"}"#, &t).contains("type must be"));
    assert!(reason(r#"{"userId":"u","event":"e","timestamp":"yesterday"}"#, &t).contains("RFC 3339"));
    assert!(reason(r#"{"userId":"u","event":"e","context":"x"}"#, &info(Some(Kind::Track), Some("1.2.3.4"))).contains("context"));
    assert!(reason(r#"{"userId":"u"}"#, &info(Some(Kind::Alias), None)).contains("previousId"));
    assert!(reason(r#"{"userId":"u"}"#, &info(Some(Kind::Group), None)).contains("groupId"));
    assert!(reason(r#"{"userId":"u"}"#, &info(None, None)).contains("needs a \"type\""));
    assert!(reason(r#"{"type":"purchase","userId":"u"}"#, &info(None, None)).contains("unknown type"));
    assert!(reason(r#"[1,2]"#, &t).contains("JSON object"));
    assert!(matches!(run(r#"{"userId":"u","event":"e""#, &t), Err(CollectError::MalformedJson(_))));
}
