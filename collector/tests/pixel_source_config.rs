//! The pixel endpoints and `/sourceConfig`, through the real actix-web service and a real event
//! log; and the request shapes of RudderStack's Go and iOS SDKs (which cannot run here), replayed
//! from fixtures with the headers those SDKs send.

#[macro_use]
mod common;

use common::{basic, gzip, setup_with, stored, Setup};

use actix_web::http::StatusCode;
use actix_web::test;
use sluice_collector::{CollectorConfig, RateLimitConfig, SourceConfig};

fn setup(rate: Option<RateLimitConfig>) -> Setup {
    let source = SourceConfig { id: "mail".into(), write_keys: vec!["key1".into()], rate_limit: rate };
    setup_with(CollectorConfig::new("127.0.0.1:0"), &[source], 1 << 20, 1 << 30)
}

/// Status, the error header and whether the body is the GIF.
async fn gif_answer(resp: actix_web::dev::ServiceResponse) -> (StatusCode, Option<String>, bool) {
    let status = resp.status();
    assert_eq!(resp.headers().get("content-type").unwrap(), "image/gif");
    assert!(resp.headers().get("cache-control").unwrap().to_str().unwrap().contains("no-store"));
    let err = resp.headers().get(sluice_collector::pixel::ERROR_HEADER).map(|v| v.to_str().unwrap().to_string());
    let body = test::read_body(resp).await;
    (status, err, body[..] == sluice_collector::pixel::PIXEL_GIF[..])
}

macro_rules! pixel {
    ($app:expr, $uri:expr $(,)?) => {
        gif_answer(
            test::call_service(
                &$app,
                test::TestRequest::get().uri($uri).peer_addr("203.0.113.9:5000".parse().unwrap()).to_request(),
            )
            .await,
        )
        .await
    };
}

#[actix_web::test]
async fn pixel_track_and_page_are_stored_with_nested_fields() {
    let s = setup(None);
    let app = app!(s);
    let (status, err, gif) = pixel!(
        app,
        "/pixel/v1/track?writeKey=key1&anonymousId=%22anon-7%22&userId=u7&event=Email%20Opened&properties.subject=Weekly%20digest&properties.campaign.id=c-42&context.library.name=mailer",
    );
    assert_eq!((status, err, gif), (StatusCode::OK, None, true));
    let (status, err, gif) = pixel!(
        app,
        "/pixel/v1/page?writeKey=key1&anonymousId=anon-7&name=Pricing&context.page.url=https%3A%2F%2Fexample.com%2Fpricing&properties.path=%2Fpricing",
    );
    assert_eq!((status, err, gif), (StatusCode::OK, None, true));

    let events = stored(&s.log).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let t = &events[0];
    assert_eq!(t["type"], "track");
    assert_eq!(t["event"], "Email Opened");
    assert_eq!(t["anonymousId"], "anon-7", "surrounding quotes are stripped like rudder-server does");
    assert_eq!(t["userId"], "u7");
    assert_eq!(t["properties"]["subject"], "Weekly digest");
    assert_eq!(t["properties"]["campaign"]["id"], "c-42");
    assert_eq!(t["context"]["library"]["name"], "mailer");
    assert_eq!(t["channel"], "web");
    assert!(t.get("writeKey").is_none(), "the write key is a credential, not event data");
    assert!(t["messageId"].is_string() && t["receivedAt"].is_string() && t["timestamp"].is_string());
    assert_eq!(t["context"]["ip"], "203.0.113.9");
    let p = &events[1];
    assert_eq!(p["type"], "page");
    assert_eq!(p["name"], "Pricing");
    assert_eq!(p["context"]["page"]["url"], "https://example.com/pricing");
    assert_eq!(p["properties"]["path"], "/pricing");
}

#[actix_web::test]
async fn pixel_errors_still_answer_a_gif_and_store_nothing() {
    let s = setup(None);
    let app = app!(s);
    let cases = [
        ("/pixel/v1/track?anonymousId=a&event=E", "missing_write_key"),
        ("/pixel/v1/track?writeKey=nope&anonymousId=a&event=E", "unknown_write_key"),
        ("/pixel/v1/track?writeKey=key1&anonymousId=a", "invalid_event"),
        ("/pixel/v1/track?writeKey=key1&event=E", "invalid_event"),
        ("/pixel/v1/page?writeKey=key1&anonymousId=a&properties..x=1", "invalid_event"),
        ("/pixel/v1/track?writeKey=key1&anonymousId=a&event=E&properties=flat", "invalid_event"),
    ];
    for (uri, code) in cases {
        let (status, err, gif) = pixel!(app, uri);
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(gif, "{uri}: body is the GIF even on errors");
        let err = err.unwrap_or_else(|| panic!("{uri}: no error header"));
        assert!(err.starts_with(&format!("{code}: ")), "{uri}: {err}");
    }
    assert!(stored(&s.log).await.is_empty());
}

#[actix_web::test]
async fn pixel_is_rate_limited_like_any_event() {
    let s = setup(Some(RateLimitConfig { events_per_second: 1, burst: Some(1) }));
    let app = app!(s);
    let uri = "/pixel/v1/track?writeKey=key1&anonymousId=a&event=Opened";
    assert_eq!(pixel!(app, uri), (StatusCode::OK, None, true));
    let (_, err, gif) = pixel!(app, uri);
    assert!(gif && err.unwrap().starts_with("rate_limited: "));
    assert_eq!(stored(&s.log).await.len(), 1);
}

#[actix_web::test]
async fn source_config_answers_what_the_rudderstack_browser_sdk_checks() {
    let s = setup(None);
    let app = app!(s);
    // The SDK's own request: trailing slash, its query parameters, the key as Basic username.
    let req = test::TestRequest::get()
        .uri("/sourceConfig/?p=npm&v=3.34.1&build=modern&writeKey=key1&lockIntegrationsVersion=false&lockPluginsVersion=false")
        .insert_header(basic("key1"))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value = test::read_body_json(resp).await;
    let src = &v["source"];
    assert_eq!(src["id"], "mail");
    assert_eq!(src["writeKey"], "key1");
    assert_eq!(src["enabled"], true);
    assert!(src["config"].is_object());
    assert_eq!(src["destinations"], serde_json::json!([]));
    assert_eq!(src["config"]["statsCollection"]["errors"]["enabled"], false);

    // The key in the query alone is enough; no key, or an unknown one, is a 401.
    let only_query = test::TestRequest::get().uri("/sourceConfig?writeKey=key1").to_request();
    assert_eq!(test::call_service(&app, only_query).await.status(), StatusCode::OK);
    for req in [
        test::TestRequest::get().uri("/sourceConfig/").to_request(),
        test::TestRequest::get().uri("/sourceConfig/?writeKey=other").to_request(),
        test::TestRequest::get().uri("/sourceConfig/").insert_header(basic("other")).to_request(),
    ] {
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let body: serde_json::Value = test::read_body_json(resp).await;
        assert!(body["error"].as_str().unwrap().ends_with("write_key"));
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))).unwrap()
}

/// rudder-sdk-go v2 (see docs/sdk-compat.md): `POST /v1/batch`, Basic auth, JSON, gzip by default.
#[actix_web::test]
async fn rudderstack_go_sdk_batch_shape_is_accepted() {
    let s = setup(None);
    let app = app!(s);
    let body = fixture("rudder_go_batch.json");
    for (gz, payload) in [(true, gzip(&body)), (false, body.clone())] {
        let mut req = test::TestRequest::post()
            .uri("/v1/batch")
            .insert_header(basic("key1"))
            .insert_header(("Content-Type", "application/json; charset=utf-8"))
            .insert_header(("User-Agent", "analytics-go (version: 4.1.0)"))
            .insert_header(("AnonymousId", "3ac5cce7-6a4b-4d1c-9b02-5b1c5a1f1c11"));
        if gz {
            req = req.insert_header(("Content-Encoding", "gzip"));
        }
        let resp = test::call_service(&app, req.set_payload(payload).to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK, "gzip={gz}");
    }
    let events = stored(&s.log).await;
    assert_eq!(events.len(), 6);
    let types: Vec<&str> = events[..3].iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["identify", "track", "page"]);
    assert_eq!(events[1]["event"], "Post Created");
    assert_eq!(events[1]["context"]["library"]["name"], "analytics-go");
    assert_eq!(events[1]["messageId"], "b1a7f0e4-50a5-4e38-9a0c-3f8a8e6b0a01", "the SDK's messageId is kept");
    assert!(events.iter().all(|e| e["receivedAt"].is_string()));
}

/// rudder-sdk-ios v1 (see docs/sdk-compat.md): `POST /v1/batch` with a `sentAt` envelope, Basic
/// auth, `AnonymousId` header; events carry `originalTimestamp` and a mobile `context`.
#[actix_web::test]
async fn rudderstack_ios_sdk_batch_shape_is_accepted() {
    let s = setup(None);
    let app = app!(s);
    let req = test::TestRequest::post()
        .uri("/v1/batch")
        .insert_header(basic("key1"))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("AnonymousId", "QzY4QTI3MzYtRjk1Qi00QUE5LTk1OTktRjUyMjM4NTdEQkEy"))
        .set_payload(fixture("rudder_ios_batch.json"))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let events = stored(&s.log).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["type"], "screen");
    assert_eq!(events[1]["event"], "Message Sent");
    assert_eq!(events[1]["context"]["os"]["name"], "iOS");
    // The envelope's sentAt reached the events, and the clock-skew correction gave a timestamp.
    assert!(events.iter().all(|e| e["sentAt"] == "2026-11-30T10:00:05.000Z" && e["timestamp"].is_string()));
}
