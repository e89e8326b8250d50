use super::*;
use serde_json::{json, Value};
use serde_json::value::RawValue;

fn info(kind: Option<EventKind>, ip: Option<&'static str>) -> RequestInfo<'static> {
    let received_at = DateTime::parse_from_rfc3339("2026-11-22T10:00:10.000Z").unwrap().with_timezone(&Utc);
    RequestInfo::new(kind, received_at, "2026-11-22T10:00:10.000Z", ip)
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
    let v = run(r#"{"userId":"u1","event":"Post Created","properties":{"len":3},"context":{"library":{"name":"x"}}}"#, &info(Some(EventKind::Track), Some("10.1.2.3"))).unwrap();
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
    let v = run(raw, &info(Some(EventKind::Identify), Some("10.0.0.1"))).unwrap();
    assert_eq!(v["messageId"], "m-1");
    assert_eq!(v["timestamp"], "2026-01-01T00:00:00Z");
    assert_eq!(v["context"]["ip"], "1.1.1.1");
}

#[test]
fn timestamp_is_corrected_for_client_clock_skew() {
    // The client's clock is 5 minutes fast: it says it sent at 10:05:00 an event from 10:04:50.
    let raw = r#"{"userId":"u1","event":"e","originalTimestamp":"2026-11-22T10:04:50Z","sentAt":"2026-11-22T10:05:00Z"}"#;
    let v = run(raw, &info(Some(EventKind::Track), None)).unwrap();
    assert_eq!(v["timestamp"], "2026-11-22T10:00:00.000Z");
}

#[test]
fn batch_sent_at_applies_to_events_without_one() {
    let mut i = info(None, None);
    let sent: &RawValue = serde_json::from_str(r#""2026-11-22T10:00:20Z""#).unwrap();
    i.batch_sent_at = Some(sent);
    let raw = r#"{"type":"track","userId":"u1","event":"e","originalTimestamp":"2026-11-22T10:00:15Z"}"#;
    let v = run(raw, &i).unwrap();
    assert_eq!(v["sentAt"], "2026-11-22T10:00:20Z");
    assert_eq!(v["timestamp"], "2026-11-22T10:00:05.000Z");
}

#[test]
fn empty_context_gets_ip_without_a_stray_comma() {
    let v = run(r#"{"anonymousId":"a","context":{ }}"#, &info(Some(EventKind::Page), Some("::1"))).unwrap();
    assert_eq!(v["context"], json!({"ip": "::1"}));
}

#[test]
fn ip_goes_in_front_of_the_first_context_key_whatever_its_shape() {
    let at = info(Some(EventKind::Track), Some("10.0.0.1"));
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
    // A context that is not an object is refused, ip to add or not (the spec makes it an object).
    assert!(reason(r#"{"userId":"u","event":"e","context":[1,{"a":2}]}"#, &info(Some(EventKind::Track), None)).contains("context must be a JSON object"));
    assert!(reason(r#"{"userId":"u","event":"e","context":[1]}"#, &at).contains("context must be a JSON object"));
    assert!(reason(r#"{"userId":"u","event":"e","context":7}"#, &at).contains("context must be a JSON object"));
}

#[test]
fn present_nulls_take_the_slow_path_and_are_replaced() {
    let raw = r#"{"userId":"u1","messageId":null,"timestamp":null,"context":{"ip":null},"receivedAt":"1999-01-01T00:00:00Z"}"#;
    let v = run(raw, &info(Some(EventKind::Screen), Some("10.0.0.9"))).unwrap();
    assert_eq!(v["messageId"].as_str().unwrap().len(), 36);
    assert_eq!(v["timestamp"], "2026-11-22T10:00:10.000Z");
    assert_eq!(v["receivedAt"], "2026-11-22T10:00:10.000Z");
    assert_eq!(v["context"]["ip"], "10.0.0.9");
    assert_eq!(v["type"], "screen");
}

#[test]
fn numeric_user_ids_are_accepted() {
    assert!(run(r#"{"userId":42}"#, &info(Some(EventKind::Identify), None)).is_ok());
}

#[test]
fn invalid_events_are_refused_with_a_reason() {
    let t = info(Some(EventKind::Track), None);
    assert!(reason(r#"{"event":"e"}"#, &t).contains("userId or anonymousId"));
    assert!(reason(r#"{"userId":"  ","event":"e"}"#, &t).contains("userId or anonymousId"));
    assert!(reason(r#"{"userId":"u"}"#, &t).contains("\"event\" name"));
    assert!(reason(r#"{"userId":"u","event":"e","type":"page"}"#, &t).contains("type must be"));
    assert!(reason(r#"{"userId":"u","event":"e","context":"x"}"#, &info(Some(EventKind::Track), Some("1.2.3.4"))).contains("context"));
    assert!(reason(r#"{"userId":"u"}"#, &info(Some(EventKind::Alias), None)).contains("previousId"));
    assert!(reason(r#"{"userId":"u"}"#, &info(Some(EventKind::Group), None)).contains("groupId"));
    assert!(reason(r#"{"userId":"u"}"#, &info(None, None)).contains("needs a \"type\""));
    assert!(reason(r#"{"type":"purchase","userId":"u"}"#, &info(None, None)).contains("unknown type"));
    assert!(reason(r#"[1,2]"#, &t).contains("JSON object"));
    assert!(matches!(run(r#"{"userId":"u","event":"e""#, &t), Err(CollectError::MalformedJson(_))));
}

/// `{"a":{"a":...1...}}` nested `n` deep, the outer object counting as 1.
fn nested(n: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))
}

#[test]
fn nesting_up_to_the_limit_is_accepted_and_one_more_level_is_refused_with_the_depth() {
    let t = info(Some(EventKind::Track), Some("10.0.0.1"));
    // The event is level 1, so its properties may be MAX - 1 deep.
    let at_limit = format!(r#"{{"userId":"u","event":"e","properties":{}}}"#, nested(MAX_EVENT_DEPTH - 1));
    assert_eq!(check::depth(at_limit.as_bytes()), MAX_EVENT_DEPTH);
    run(&at_limit, &t).unwrap();
    let too_deep = format!(r#"{{"userId":"u","event":"e","properties":{}}}"#, nested(MAX_EVENT_DEPTH));
    let err = reason(&too_deep, &t);
    assert!(err.contains(&format!("{} levels deep; the limit is {MAX_EVENT_DEPTH}", MAX_EVENT_DEPTH + 1)), "{err}");
    // Far past serde_json's own limit of 128 the message is the same, not a parse error.
    let way_too_deep = format!(r#"{{"userId":"u","event":"e","properties":{}}}"#, nested(500));
    assert!(matches!(run(&way_too_deep, &t), Err(CollectError::InvalidEvent(m)) if m.contains("501 levels deep")));
    // Brackets inside strings are text, not nesting.
    let text = format!(r#"{{"userId":"u","event":"e","properties":{{"text":"{}"}}}}"#, "{[".repeat(200));
    run(&text, &t).unwrap();
}

#[test]
fn fields_must_have_the_types_the_spec_gives_them() {
    let t = info(Some(EventKind::Track), None);
    for (event, expect) in [
        (r#"{"userId":"u","event":"e","properties":"x"}"#, "properties must be a JSON object, not a string"),
        (r#"{"userId":"u","event":"e","properties":[1]}"#, "properties must be a JSON object, not an array"),
        (r#"{"userId":"u","event":"e","traits":5}"#, "traits must be a JSON object, not a number"),
        (r#"{"userId":"u","event":"e","integrations":true}"#, "integrations must be a JSON object, not a boolean"),
        (r#"{"userId":"u","event":"e","context":{"traits":"Ana"}}"#, "context.traits must be a JSON object"),
        (r#"{"userId":"u","event":7}"#, "event must be a string, not a number"),
        (r#"{"userId":"u","event":"e","name":{"first":"x"}}"#, "name must be a string, not an object"),
        (r#"{"userId":{"id":1},"anonymousId":"a","event":"e"}"#, "userId must be a string or a number, not an object"),
        (r#"{"userId":"u","anonymousId":[1],"event":"e"}"#, "anonymousId must be a string or a number, not an array"),
        (r#"{"userId":"u","event":"e","messageId":true}"#, "messageId must be a string or a number"),
    ] {
        let err = reason(event, &t);
        assert!(err.contains(expect), "{event}: {err}");
    }
    assert!(reason(r#"{"userId":"u","groupId":{}}"#, &info(Some(EventKind::Group), None)).contains("groupId must be"));
    // null is absent, numbers are ids.
    let v = run(r#"{"userId":7,"event":"e","properties":null,"traits":null,"integrations":{"All":true},"context":{"traits":null}}"#, &t).unwrap();
    assert_eq!(v["userId"], 7);
}

#[test]
fn timestamps_that_are_not_rfc_3339_fall_back_to_received_at_and_are_kept_as_sent() {
    let raw = r#"{"userId":"u","event":"e","timestamp":"yesterday","originalTimestamp":1700000000,"sentAt":"2026-13-45","context":{"ip":"1.2.3.4"}}"#;
    let mut out = Vec::new();
    let t = info(Some(EventKind::Track), None);
    let e = enrich(raw, &t, &mut out).unwrap();
    assert_eq!(e.repaired, [true, true, true]);
    let v: Value = serde_json::from_slice(&out).unwrap();
    for field in TIME_FIELDS {
        assert_eq!(v[field], "2026-11-22T10:00:10.000Z", "{field}");
    }
    assert_eq!(
        v["context"],
        json!({"ip": "1.2.3.4", "sluice": {"invalid_timestamps": {"timestamp": "yesterday", "originalTimestamp": 1700000000, "sentAt": "2026-13-45"}}})
    );

    // Only the broken one is repaired; a valid originalTimestamp still gives the event time.
    let raw = r#"{"userId":"u","event":"e","originalTimestamp":"2026-11-22T09:00:00Z","sentAt":"soon"}"#;
    let mut out = Vec::new();
    let t = info(Some(EventKind::Track), None);
    let e = enrich(raw, &t, &mut out).unwrap();
    assert_eq!(e.repaired, [false, false, true]);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["timestamp"], "2026-11-22T09:00:00Z");
    assert_eq!(v["originalTimestamp"], "2026-11-22T09:00:00Z");
    assert_eq!(v["context"]["sluice"], json!({"invalid_timestamps": {"sentAt": "soon"}}));

    // A broken sentAt on the batch envelope is repaired in each event that relies on it.
    let mut b = info(None, None);
    let sent: &RawValue = serde_json::from_str("\"last tuesday\"").unwrap();
    b.batch_sent_at = Some(sent);
    let mut out = Vec::new();
    let e = enrich(r#"{"type":"track","userId":"u","event":"e"}"#, &b, &mut out).unwrap();
    assert_eq!(e.repaired, [false, false, true]);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["sentAt"], "2026-11-22T10:00:10.000Z");
    assert_eq!(v["context"]["sluice"]["invalid_timestamps"]["sentAt"], "last tuesday");
}

#[test]
fn the_batch_context_and_integrations_fill_in_and_the_event_wins() {
    let mut b = info(None, Some("10.0.0.1"));
    b.batch_context = Some(json!({"library": {"name": "analytics-python", "version": "1"}, "locale": "en"}));
    b.batch_integrations = Some(json!({"All": false, "archive": true}));
    let v = run(r#"{"type":"track","userId":"u","event":"e","context":{"library":{"version":"2"}},"integrations":{"archive":false}}"#, &b).unwrap();
    assert_eq!(v["context"], json!({"library": {"name": "analytics-python", "version": "2"}, "locale": "en", "ip": "10.0.0.1"}));
    assert_eq!(v["integrations"], json!({"All": false, "archive": false}));
    let v = run(r#"{"type":"track","userId":"u","event":"e"}"#, &b).unwrap();
    assert_eq!(v["context"]["library"]["name"], "analytics-python");
    assert_eq!(v["context"]["ip"], "10.0.0.1");
}

#[test]
fn a_write_key_in_the_event_is_never_stored() {
    let v = run(r#"{"userId":"u","event":"e","writeKey":"secret"}"#, &info(Some(EventKind::Track), None)).unwrap();
    assert!(v.get("writeKey").is_none(), "{v}");
}

/// The head the log keeps must say what the stored event says, on the fast path (spliced bytes),
/// on the slow path (a parsed map) and with the batch envelope merged in: the router routes by
/// the head and never reads the event for it.
#[test]
fn the_head_agrees_with_the_stored_event_on_every_path() {
    let check = |raw: &str, info: &RequestInfo<'_>| {
        let mut out = Vec::new();
        let e = enrich(raw, info, &mut out).unwrap();
        let stored = EventHead::parse(&out).unwrap();
        assert_eq!(e.head, stored, "{raw} -> {}", String::from_utf8_lossy(&out));
        assert!(!e.head.message_id.is_empty() && !e.head.user.is_empty() && !e.head.received_at.is_empty());
        // Stored as the collector stores it (references into the event, located through the
        // request's text where they borrow from it), it reads back the same.
        let mut batch = sluice_eventlog::AppendBatch::with_capacity(0);
        batch.push("web", "k", &e.head, &out, e.origin.as_bytes());
        let record = batch.records().next().unwrap();
        assert_eq!(record.user, &*stored.user);
        let read = sluice_eventlog::Record::from_payload(0, bytes::Bytes::copy_from_slice(record.payload)).unwrap();
        assert_eq!(read.head().unwrap(), stored, "{raw}");
        // Every field the event holds byte for byte is a reference (about three bytes), not a
        // copy, whatever shifted in the event; only texts it holds escaped are copied.
        let overhead = record.payload.len() - out.len() - "web".len() - "k".len();
        let fields = [e.head.event.as_deref(), Some(&*e.head.user), Some(&*e.head.message_id), Some(&*e.head.received_at), e.head.integrations.as_deref()];
        let copied: usize = fields.into_iter().flatten().filter(|t| !out.windows(t.len().max(1)).any(|w| w == t.as_bytes())).map(|t| t.len() + 1).sum();
        assert!(overhead <= 24 + copied, "{overhead} bytes beside the event ({copied} of copied texts) for {raw}");
        e.head.into_owned_parts()
    };
    let t = info(Some(EventKind::Track), Some("10.0.0.1"));
    // Fast path, with an escaped name and user, and a generated messageId.
    let (kind, event, user, _, integrations) =
        check(r#"{"userId":"caf\u00e9","event":"Caf\u00e9 Opened","integrations":{"S3":false}}"#, &t);
    assert_eq!((kind, event.as_deref(), user.as_str(), integrations.as_deref()), (Some(EventKind::Track), Some("Café Opened"), "café", Some(r#"{"S3":false}"#)));
    // A blank userId falls back to anonymousId; a numeric messageId is its text.
    let (_, _, user, message_id, _) = check(r#"{"userId":"  ","anonymousId":"a1","event":"e","messageId":42}"#, &t);
    assert_eq!((user.as_str(), message_id.as_str()), ("a1", "42"));
    // The ip inserted into the context shifts everything after it in the stored event.
    check(r#"{"context":{"app":"x"},"userId":"user-after-the-ip","event":"Shifted","messageId":"m-0001"}"#, &t);
    // Slow path (a client receivedAt is replaced), and the envelope's integrations merged in.
    check(r#"{"userId":"u","event":"e","receivedAt":"1999-01-01T00:00:00Z","messageId":"m"}"#, &t);
    let mut b = info(None, None);
    b.batch_integrations = Some(json!({"All": false, "archive": true}));
    let (_, _, _, _, integrations) = check(r#"{"type":"page","anonymousId":"a","integrations":{"archive":false}}"#, &b);
    let merged: Value = serde_json::from_str(&integrations.unwrap()).unwrap();
    assert_eq!(merged, json!({"All": false, "archive": false}));
}

trait OwnedParts {
    fn into_owned_parts(self) -> (Option<EventKind>, Option<String>, String, String, Option<String>);
}

impl OwnedParts for EventHead<'_> {
    fn into_owned_parts(self) -> (Option<EventKind>, Option<String>, String, String, Option<String>) {
        (self.kind, self.event.map(Into::into), self.user.into(), self.message_id.into(), self.integrations.map(Into::into))
    }
}
