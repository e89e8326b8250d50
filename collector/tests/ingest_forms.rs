//! What the Segment HTTP API allows besides the common shape: the write key in the body, batch
//! level context and integrations, write key ids stored with events, and the checks that keep a
//! 200 deliverable (nesting, types, timestamps repaired rather than refused).

#[macro_use]
mod common;

use common::{basic, setup_with, stored_records, Setup};

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};
use sluice_collector::{fingerprint, CollectorConfig, SourceConfig, WriteKey, MAX_EVENT_DEPTH};
use sluice_eventlog::EventLog;

fn setup() -> Setup {
    let source = SourceConfig {
        id: "web".into(),
        write_keys: vec![WriteKey::plain("key1"), WriteKey::named("ios-app", "key2")],
        rate_limit: None,
    };
    setup_with(CollectorConfig::new("127.0.0.1:0"), &[source], 1 << 20, 8 << 20)
}

/// (write key id, event) of everything stored.
async fn stored(log: &EventLog) -> Vec<(String, Value)> {
    let records = stored_records(log).await;
    records.iter().map(|rec| (rec.write_key_id.to_string(), serde_json::from_slice(&rec.event).unwrap())).collect()
}

async fn answer(resp: actix_web::dev::ServiceResponse) -> (StatusCode, Value) {
    let status = resp.status();
    let body = test::read_body(resp).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[actix_web::test]
async fn the_write_key_may_come_in_the_body_and_the_header_wins() {
    let s = setup();
    let app = app!(s);
    let track = json!({"writeKey": "key2", "userId": "u1", "event": "From Body"}).to_string();
    let resp = test::call_service(&app, test::TestRequest::post().uri("/v1/track").set_payload(track).to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let batch = json!({"writeKey": "key1", "batch": [{"type": "track", "userId": "u2", "event": "From Batch Body"}]}).to_string();
    let resp = test::call_service(&app, test::TestRequest::post().uri("/v1/batch").set_payload(batch).to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Both present: the header decides, whatever the body says.
    let wrong_in_body = json!({"writeKey": "nope", "userId": "u3", "event": "Header Wins"}).to_string();
    let req = test::TestRequest::post().uri("/v1/track").insert_header(basic("key2")).set_payload(wrong_in_body).to_request();
    assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
    let wrong_in_header = json!({"writeKey": "key1", "userId": "u4", "event": "Refused"}).to_string();
    let req = test::TestRequest::post().uri("/v1/track").insert_header(basic("nope")).set_payload(wrong_in_header).to_request();
    let (status, body) = answer(test::call_service(&app, req).await).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unknown_write_key")));
    let none = json!({"userId": "u5", "event": "No Key"}).to_string();
    let (status, body) = answer(test::call_service(&app, test::TestRequest::post().uri("/v1/track").set_payload(none).to_request()).await).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_write_key")));

    let events = stored(&s.log).await;
    let seen: Vec<(&str, &str)> = events.iter().map(|(id, e)| (id.as_str(), e["event"].as_str().unwrap())).collect();
    let key1_id = fingerprint("key1");
    assert_eq!(seen, [("ios-app", "From Body"), (key1_id.as_str(), "From Batch Body"), ("ios-app", "Header Wins")]);
    // The key is a credential: it never reaches the log.
    assert!(events.iter().all(|(_, e)| e.get("writeKey").is_none()), "{events:?}");
}

#[actix_web::test]
async fn batch_context_and_integrations_are_merged_into_each_event() {
    let s = setup();
    let app = app!(s);
    let body = json!({
        "context": {"library": {"name": "analytics-python", "version": "2.3"}, "locale": "en-US"},
        "integrations": {"All": false, "archive": true},
        "batch": [
            {"type": "track", "userId": "u1", "event": "A"},
            {"type": "track", "userId": "u1", "event": "B", "context": {"locale": "de-DE", "library": {"version": "2.4"}},
             "integrations": {"archive": false}},
        ]
    });
    let req = test::TestRequest::post().uri("/v1/batch").insert_header(basic("key1")).set_payload(body.to_string()).to_request();
    assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
    let events = stored(&s.log).await;
    let (a, b) = (&events[0].1, &events[1].1);
    assert_eq!(a["context"]["library"], json!({"name": "analytics-python", "version": "2.3"}));
    assert_eq!(a["context"]["locale"], "en-US");
    assert_eq!(a["integrations"], json!({"All": false, "archive": true}));
    assert_eq!(b["context"]["library"], json!({"name": "analytics-python", "version": "2.4"}));
    assert_eq!(b["context"]["locale"], "de-DE");
    assert_eq!(b["integrations"], json!({"All": false, "archive": false}));

    let bad = json!({"context": "en", "batch": [{"type": "track", "userId": "u1", "event": "A"}]}).to_string();
    let req = test::TestRequest::post().uri("/v1/batch").insert_header(basic("key1")).set_payload(bad).to_request();
    let (status, body) = answer(test::call_service(&app, req).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("the batch's context must be a JSON object"), "{body}");
}

#[actix_web::test]
async fn too_deep_or_mistyped_events_get_400_naming_the_event_and_nothing_is_stored() {
    let s = setup();
    let app = app!(s);
    let deep = |n: usize| -> Value {
        let mut v = json!(1);
        for _ in 0..n {
            v = json!({ "a": v });
        }
        v
    };
    // Properties at MAX - 1 levels make the event exactly MAX deep: accepted.
    let ok = json!({"batch": [{"type": "track", "userId": "u", "event": "Deep", "properties": deep(MAX_EVENT_DEPTH - 1)}]});
    let req = test::TestRequest::post().uri("/v1/batch").insert_header(basic("key1")).set_payload(ok.to_string()).to_request();
    assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
    let too_deep = json!({"batch": [
        {"type": "track", "userId": "u", "event": "Fine"},
        {"type": "track", "userId": "u", "event": "Deep", "properties": deep(MAX_EVENT_DEPTH)},
    ]});
    let req = test::TestRequest::post().uri("/v1/batch").insert_header(basic("key1")).set_payload(too_deep.to_string()).to_request();
    let (status, body) = answer(test::call_service(&app, req).await).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_event")));
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("batch[1]: ") && message.contains(&format!("{} levels deep", MAX_EVENT_DEPTH + 1)), "{message}");

    let mistyped = json!({"userId": "u", "event": "E", "properties": "not an object"}).to_string();
    let req = test::TestRequest::post().uri("/v1/track").insert_header(basic("key1")).set_payload(mistyped).to_request();
    let (status, body) = answer(test::call_service(&app, req).await).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_event")));
    assert_eq!(stored(&s.log).await.len(), 1, "only the accepted request is in the log");
}

#[actix_web::test]
async fn a_bad_client_clock_format_no_longer_loses_the_batch() {
    let s = setup();
    let app = app!(s);
    let body = json!({"sentAt": "Tue Dec 1 10:00:00 2026", "batch": [
        {"type": "track", "userId": "u", "event": "A", "timestamp": "2026-12-01T10:00:00Z"},
        {"type": "track", "userId": "u", "event": "B", "timestamp": "12/01/2026 10:00", "originalTimestamp": 17},
    ]});
    let req = test::TestRequest::post().uri("/v1/batch").insert_header(basic("key1")).set_payload(body.to_string()).to_request();
    assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
    let events = stored(&s.log).await;
    let (a, b) = (&events[0].1, &events[1].1);
    assert_eq!(a["timestamp"], "2026-12-01T10:00:00Z");
    assert_eq!(a["sentAt"], a["receivedAt"]);
    assert_eq!(a["context"]["sluice"]["invalid_timestamps"], json!({"sentAt": "Tue Dec 1 10:00:00 2026"}));
    assert_eq!(b["timestamp"], b["receivedAt"]);
    assert_eq!(b["originalTimestamp"], b["receivedAt"]);
    assert_eq!(
        b["context"]["sluice"]["invalid_timestamps"],
        json!({"timestamp": "12/01/2026 10:00", "originalTimestamp": 17, "sentAt": "Tue Dec 1 10:00:00 2026"})
    );
}
