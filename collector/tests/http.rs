//! Every answer of the collector, through the real actix-web service and a real event log.

#[macro_use]
mod common;

use common::{basic, gzip, setup_with, stored, Setup};

use actix_web::http::StatusCode;
use actix_web::test;
use sluice_collector::{CollectorConfig, RateLimitConfig, SourceConfig};

fn source(rate: Option<RateLimitConfig>) -> SourceConfig {
    SourceConfig { id: "web".into(), write_keys: vec!["key1".into()], rate_limit: rate }
}

fn setup(config: CollectorConfig, rate: Option<RateLimitConfig>, budget: u64) -> Setup {
    setup_with(config, &[source(rate)], 4096, budget)
}

async fn error_of(resp: actix_web::dev::ServiceResponse) -> (StatusCode, String, Option<String>) {
    let status = resp.status();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let body: serde_json::Value = test::read_body_json(resp).await;
    (status, body["error"].as_str().unwrap().to_string(), retry)
}

const TRACK: &str = r#"{"userId":"u1","event":"Post Created","properties":{"channel":"town-square"}}"#;

#[actix_web::test]
async fn track_is_stored_enriched_and_answered_ok() {
    let s = setup(CollectorConfig::new("127.0.0.1:0"), None, 1 << 20);
    let app = app!(s);
    let req = test::TestRequest::post().uri("/v1/track").insert_header(basic("key1")).set_payload(TRACK).to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(test::read_body(resp).await, "OK");
    let events = stored(&s.log).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "track");
    assert_eq!(events[0]["properties"]["channel"], "town-square");
    assert!(events[0]["receivedAt"].is_string() && events[0]["messageId"].is_string());
}

#[actix_web::test]
async fn missing_and_unknown_write_keys_get_401() {
    let s = setup(CollectorConfig::new("127.0.0.1:0"), None, 1 << 20);
    let app = app!(s);
    let resp = test::call_service(&app, test::TestRequest::post().uri("/v1/track").set_payload(TRACK).to_request()).await;
    let (status, code, _) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "missing_write_key"));
    let req = test::TestRequest::post().uri("/v1/track").insert_header(basic("nope")).set_payload(TRACK).to_request();
    let (status, code, _) = error_of(test::call_service(&app, req).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "unknown_write_key"));
    assert!(stored(&s.log).await.is_empty());
}

#[actix_web::test]
async fn malformed_json_and_invalid_events_get_400_and_store_nothing() {
    let s = setup(CollectorConfig::new("127.0.0.1:0"), None, 1 << 20);
    let app = app!(s);
    for (uri, body, want) in [
        ("/v1/track", r#"{"userId":"u1","event":"#, "malformed_json"),
        ("/v1/track", r#"{"event":"e"}"#, "invalid_event"),
        ("/v1/batch", r#"{"batch":[{"type":"track","userId":"u","event":"ok"},{"type":"track","userId":"u"}]}"#, "invalid_event"),
        ("/v1/batch", r#"{"nobatch":1}"#, "malformed_json"),
    ] {
        let req = test::TestRequest::post().uri(uri).insert_header(basic("key1")).set_payload(body).to_request();
        let (status, code, _) = error_of(test::call_service(&app, req).await).await;
        assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, want), "{body}");
    }
    assert!(stored(&s.log).await.is_empty(), "one invalid event rejects the whole batch");
}

#[actix_web::test]
async fn gzip_batches_are_accepted_and_the_beacon_takes_the_key_in_the_query() {
    let s = setup(CollectorConfig::new("127.0.0.1:0"), None, 1 << 20);
    let app = app!(s);
    let batch = r#"{"batch":[{"type":"identify","userId":"u1","traits":{"plan":"pro"}},{"type":"page","anonymousId":"a1","name":"Home"}],"sentAt":"2026-11-22T10:00:00Z"}"#;
    let req = test::TestRequest::post()
        .uri("/v1/batch")
        .insert_header(basic("key1"))
        .insert_header(("Content-Encoding", "gzip"))
        .set_payload(gzip(batch.as_bytes()))
        .to_request();
    assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
    let req = test::TestRequest::post()
        .uri("/beacon/v1/batch?writeKey=key1")
        .insert_header(("Content-Type", "text/plain"))
        .set_payload(r#"{"batch":[{"type":"track","anonymousId":"a1","event":"Tab Closed"}]}"#)
        .to_request();
    assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
    let events = stored(&s.log).await;
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["identify", "page", "track"]);
    assert_eq!(events[0]["sentAt"], "2026-11-22T10:00:00Z");
}

#[actix_web::test]
async fn oversized_bodies_and_gzip_bombs_get_413() {
    let mut config = CollectorConfig::new("127.0.0.1:0");
    config.max_body_bytes = 10_000;
    config.max_decompressed_bytes = 50_000;
    let s = setup(config, None, 1 << 20);
    let app = app!(s);
    let big = format!(r#"{{"userId":"u","event":"e","properties":{{"p":"{}"}}}}"#, "x".repeat(20_000));
    let req = test::TestRequest::post().uri("/v1/track").insert_header(basic("key1")).set_payload(big).to_request();
    let (status, code, _) = error_of(test::call_service(&app, req).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    // 5 MB of zeros gzip to ~5 KB: small on the wire, refused once it passes 50 KB unpacked.
    let bomb = gzip(&vec![b'0'; 5 << 20]);
    assert!(bomb.len() < 10_000, "{}", bomb.len());
    let req = test::TestRequest::post()
        .uri("/v1/batch")
        .insert_header(basic("key1"))
        .insert_header(("Content-Encoding", "gzip"))
        .set_payload(bomb)
        .to_request();
    let (status, code, _) = error_of(test::call_service(&app, req).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    let req = test::TestRequest::post()
        .uri("/v1/track")
        .insert_header(basic("key1"))
        .insert_header(("Content-Encoding", "gzip"))
        .set_payload("not gzip")
        .to_request();
    assert_eq!(error_of(test::call_service(&app, req).await).await.1, "bad_gzip");
}

#[actix_web::test]
async fn rate_limit_answers_429_with_retry_after() {
    let rate = RateLimitConfig { events_per_second: 1, burst: Some(3) };
    let s = setup(CollectorConfig::new("127.0.0.1:0"), Some(rate), 1 << 20);
    let app = app!(s);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let req = test::TestRequest::post().uri("/v1/track").insert_header(basic("key1")).set_payload(TRACK).to_request();
        let resp = test::call_service(&app, req).await;
        statuses.push(resp.status());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            let (_, code, retry) = error_of(resp).await;
            assert_eq!(code, "rate_limited");
            assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
        }
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    assert_eq!(stored(&s.log).await.len(), 3, "refused requests store nothing");
}

#[actix_web::test]
async fn a_full_log_answers_503_with_retry_after() {
    let s = setup(CollectorConfig::new("127.0.0.1:0"), None, 8192);
    let app = app!(s);
    let body = format!(r#"{{"userId":"u","event":"e","properties":{{"p":"{}"}}}}"#, "x".repeat(1500));
    let mut last = None;
    for _ in 0..10 {
        let req = test::TestRequest::post().uri("/v1/track").insert_header(basic("key1")).set_payload(body.clone()).to_request();
        let resp = test::call_service(&app, req).await;
        if resp.status() != StatusCode::OK {
            last = Some(error_of(resp).await);
            break;
        }
    }
    let (status, code, retry) = last.expect("the budget must run out");
    assert_eq!((status, code.as_str(), retry.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, "log_full", Some("5")));
}

#[actix_web::test]
async fn health_and_cors_preflight() {
    let s = setup(CollectorConfig::new("127.0.0.1:0"), None, 1 << 20);
    let app = app!(s);
    let resp = test::call_service(&app, test::TestRequest::get().uri("/health").to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = test::read_body_json(resp).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["log"]["backend"], "embedded");
    assert_eq!(body["log"]["next_offset"], 0, "the embedded log's record count, as /health always gave it: {body}");
    let req = test::TestRequest::default()
        .method(actix_web::http::Method::OPTIONS)
        .uri("/v1/batch")
        .insert_header(("Origin", "https://chat.example.com"))
        .insert_header(("Access-Control-Request-Method", "POST"))
        .insert_header(("Access-Control-Request-Headers", "authorization,content-type"))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers().get("access-control-allow-origin").unwrap(), "https://chat.example.com");
}
