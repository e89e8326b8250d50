//! The webhook destination against a real HTTP server started by each test on 127.0.0.1.

#[path = "support/receiver.rs"]
mod receiver;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use sluice_destinations::webhook::{WebhookConfig, WebhookDestination, WebhookMethod, WebhookMode};
use sluice_destinations::{Batch, DeliveryError, Destination, OutEvent, SinkConfig};

use receiver::{Receiver, Recorded, Reply};

fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        url: url.to_owned(),
        method: WebhookMethod::Post,
        mode: WebhookMode::Batch,
        headers: Default::default(),
        timeout_ms: 5_000,
        signing_secret: None,
        gzip: false,
    }
}

fn batch(n: u64) -> Batch {
    Batch {
        destination: Arc::from("hook"),
        partition: None,
        events: (0..n)
            .map(|i| OutEvent {
                offset: 10 + i,
                source: Arc::from("chat"),
                json: json!({"messageId": format!("m{i}"), "type": "track", "event": "Message Sent", "userId": "u1", "properties": {"n": i}})
                    .to_string()
                    .into(),
            })
            .collect(),
    }
}

fn header<'a>(r: &'a Recorded, name: &str) -> &'a str {
    r.headers.get(name).unwrap_or_else(|| panic!("header {name} missing: {:?}", r.headers)).to_str().unwrap()
}

async fn deliver_error(config: WebhookConfig) -> DeliveryError {
    let dest = WebhookDestination::new(config).unwrap();
    dest.deliver(&batch(2)).await.expect_err("delivery should fail")
}

#[tokio::test]
async fn batch_mode_posts_a_json_array_of_exactly_the_events() {
    let server = Receiver::start([]).await;
    let b = batch(3);
    let delivered = WebhookDestination::new(config(&server.url)).unwrap().deliver(&b).await.unwrap();
    assert!(delivered.rejected.is_empty());
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(header(&requests[0], "content-type"), "application/json");
    assert!(requests[0].headers.get("x-sluice-signature").is_none(), "no secret, no signature");
    let sent: Vec<Value> = serde_json::from_slice(&requests[0].body).unwrap();
    let expected: Vec<Value> = b.events.iter().map(|e| serde_json::from_slice(&e.json).unwrap()).collect();
    assert_eq!(sent, expected);
}

#[tokio::test]
async fn event_mode_sends_one_request_per_event_in_order() {
    let server = Receiver::start([]).await;
    let mut c = config(&server.url);
    c.mode = WebhookMode::Event;
    c.method = WebhookMethod::Put;
    let b = batch(5);
    WebhookDestination::new(c).unwrap().deliver(&b).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 5);
    for (request, event) in requests.iter().zip(&b.events) {
        assert_eq!(request.method, "PUT");
        assert_eq!(request.body, event.json, "one event per request, in log order");
    }
}

#[tokio::test]
async fn event_mode_rejects_a_refused_event_and_delivers_the_rest() {
    let server = Receiver::start([Reply::Status(200), Reply::Status(422), Reply::Status(200)]).await;
    let mut c = config(&server.url);
    c.mode = WebhookMode::Event;
    let delivered = WebhookDestination::new(c).unwrap().deliver(&batch(3)).await.unwrap();
    assert_eq!(delivered.rejected.len(), 1, "{:?}", delivered.rejected);
    assert_eq!(delivered.rejected[0].0, 1);
    assert!(delivered.rejected[0].1.contains("422"), "{}", delivered.rejected[0].1);
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn event_mode_stops_at_a_temporary_failure() {
    let server = Receiver::start([Reply::Status(200), Reply::Status(503)]).await;
    let mut c = config(&server.url);
    c.mode = WebhookMode::Event;
    let error = WebhookDestination::new(c).unwrap().deliver(&batch(4)).await.unwrap_err();
    assert!(error.is_retriable(), "{error}");
    assert_eq!(server.requests().len(), 2, "nothing is sent after the failed event");
}

#[tokio::test]
async fn custom_headers_arrive() {
    let server = Receiver::start([]).await;
    let mut c = config(&server.url);
    c.headers.insert("Authorization".into(), "Bearer t0ken".into());
    c.headers.insert("X-Team".into(), "chat-core".into());
    WebhookDestination::new(c).unwrap().deliver(&batch(1)).await.unwrap();
    let requests = server.requests();
    assert_eq!(header(&requests[0], "authorization"), "Bearer t0ken");
    assert_eq!(header(&requests[0], "x-team"), "chat-core");
    assert!(header(&requests[0], "user-agent").starts_with("sluice/"));
}

/// What a receiver does: HMAC-SHA256 over "{timestamp}.{body}" with its copy of the secret.
fn expected_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn signature_verifies_with_the_secret_and_not_with_another() {
    let server = Receiver::start([]).await;
    let mut c = config(&server.url);
    c.signing_secret = Some("s3cret".into());
    WebhookDestination::new(c).unwrap().deliver(&batch(2)).await.unwrap();
    let requests = server.requests();
    let (timestamp, signature) = (header(&requests[0], "x-sluice-timestamp"), header(&requests[0], "x-sluice-signature"));
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp is the signing time, got {age} s ago");
    assert_eq!(signature, expected_signature("s3cret", timestamp, &requests[0].body));
    assert_ne!(signature, expected_signature("wrong", timestamp, &requests[0].body));
    let replayed_later = (timestamp.parse::<i64>().unwrap() + 600).to_string();
    assert_ne!(signature, expected_signature("s3cret", &replayed_later, &requests[0].body), "the timestamp is signed");
}

#[tokio::test]
async fn gzip_bodies_decompress_to_the_events_and_the_signature_covers_the_json() {
    let server = Receiver::start([]).await;
    let mut c = config(&server.url);
    c.gzip = true;
    c.signing_secret = Some("s3cret".into());
    let b = batch(3);
    WebhookDestination::new(c).unwrap().deliver(&b).await.unwrap();
    let requests = server.requests();
    assert_eq!(header(&requests[0], "content-encoding"), "gzip");
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&requests[0].body[..]).read_to_end(&mut json).unwrap();
    assert_eq!(serde_json::from_slice::<Vec<Value>>(&json).unwrap().len(), 3);
    let timestamp = header(&requests[0], "x-sluice-timestamp");
    assert_eq!(header(&requests[0], "x-sluice-signature"), expected_signature("s3cret", timestamp, &json));
}

#[tokio::test]
async fn retriable_statuses_are_temporary_and_carry_retry_after() {
    let in_30s = (chrono::Utc::now() + chrono::Duration::seconds(30)).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let cases = [
        (Reply::Status(408), None),
        (Reply::RetryAfter(429, "7".into()), Some(7..=7)),
        (Reply::Status(500), None),
        (Reply::RetryAfter(503, in_30s), Some(25..=30)),
        (Reply::Status(502), None),
    ];
    for (reply, wait) in cases {
        let server = Receiver::start([reply.clone()]).await;
        let error = deliver_error(config(&server.url)).await;
        assert!(error.is_retriable(), "{reply:?} should be retriable: {error}");
        match wait {
            None => assert_eq!(error.retry_after(), None, "{reply:?}"),
            Some(range) => {
                let secs = error.retry_after().expect("Retry-After is passed on").as_secs();
                assert!(range.contains(&secs), "{reply:?}: retry_after {secs}s not in {range:?}");
            }
        }
    }
}

#[tokio::test]
async fn other_4xx_and_redirects_are_permanent_with_the_status_and_body() {
    for status in [400, 401, 404, 413, 302] {
        let server = Receiver::start([Reply::Status(status)]).await;
        let error = deliver_error(config(&server.url)).await;
        assert!(!error.is_retriable(), "{status} should be permanent: {error}");
        let reason = error.to_string();
        assert!(reason.contains(&status.to_string()), "{reason}");
        if status != 302 {
            assert!(reason.contains("from the test server"), "the body excerpt is in the reason: {reason}");
        }
        assert!(!reason.contains("token=abc"), "the URL (and its token) stays out of reasons: {reason}");
    }
}

#[tokio::test]
async fn a_hanging_endpoint_times_out_as_retriable() {
    let server = Receiver::start([Reply::Hang]).await;
    let mut c = config(&server.url);
    c.timeout_ms = 300;
    let dest = WebhookDestination::new(c).unwrap();
    assert_eq!(dest.timeout(), Duration::from_millis(1_300), "configured timeout plus grace");
    let started = Instant::now();
    let error = dest.deliver(&batch(1)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(error.is_retriable(), "{error}");
    assert!(error.to_string().contains("timed out"), "{error}");
}

#[tokio::test]
async fn connection_refused_is_retriable() {
    // A port that was just free: nothing listens on it any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let error = deliver_error(config(&format!("http://127.0.0.1:{port}/hook"))).await;
    assert!(error.is_retriable(), "{error}");
    assert!(error.to_string().contains("connect"), "{error}");
}

#[tokio::test]
async fn sink_config_builds_a_webhook_from_its_type_tag() {
    let server = Receiver::start([]).await;
    let sink: SinkConfig = serde_json::from_value(json!({
        "type": "webhook", "url": server.url, "mode": "event", "headers": {"X-Key": "k"}, "timeout_ms": 2000
    }))
    .unwrap();
    sink.validate().unwrap();
    let dest = sink.build().await.unwrap();
    dest.deliver(&batch(2)).await.unwrap();
    assert_eq!(server.requests().len(), 2);
    let typo = serde_json::from_value::<SinkConfig>(json!({"type": "webhook", "url": server.url, "header": {}}));
    assert!(typo.is_err(), "unknown fields are refused");
}
