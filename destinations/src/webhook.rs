//! The `webhook` destination: events sent to an HTTP endpoint as JSON.
//!
//! - `mode: batch` (default): one request per batch whose body is a JSON array of the events, in
//!   log order.
//! - `mode: event`: one request per event whose body is the event object, sent one after the other
//!   so the receiver sees them in log order. An event the endpoint refuses for good (a 4xx other
//!   than 408/429) is reported in [`Delivered::rejected`] and the rest go on; a temporary failure
//!   stops the batch, and its retry sends the earlier events again (at-least-once: receivers
//!   deduplicate on `messageId`).
//!
//! Responses: 2xx is success; 408, 429, 5xx, timeouts and connection errors are temporary (with the
//! `Retry-After` wait if the endpoint sent one); other 4xx and 3xx are permanent. Redirects are not
//! followed: following a 301/302 would turn a POST into a GET and drop the body.
//!
//! # Signing
//! With `signing_secret` set, every request carries
//!
//! ```text
//! X-Sluice-Timestamp: <unix seconds when the request was signed>
//! X-Sluice-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<payload>")>
//! ```
//!
//! where `<payload>` is the JSON body exactly as sent, before gzip when `gzip: true` (so a receiver
//! whose framework already undid `Content-Encoding` can still verify). The timestamp is inside the
//! signed bytes so a captured request cannot be replayed later with a fresh timestamp. A receiver:
//! 1. reads both headers and the raw body (gunzipped if `Content-Encoding: gzip`);
//! 2. computes `HMAC-SHA256(secret, timestamp + "." + body)` and hex-encodes it;
//! 3. compares it with the header value after `sha256=` in constant time;
//! 4. rejects the request if the timestamp is more than a few minutes from its clock (5 is usual).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use sha2::Sha256;
use tracing::{debug, warn};

use crate::{Batch, Delivered, DeliveryError, Destination};

/// Header carrying the request signature (see the module docs).
pub const SIGNATURE_HEADER: &str = "x-sluice-signature";
/// Header carrying the unix time the signature was made at.
pub const TIMESTAMP_HEADER: &str = "x-sluice-timestamp";

/// Longest part of an error response body kept in a failure reason.
const EXCERPT_BYTES: usize = 256;

/// Settings of a `webhook` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Endpoint the events are sent to (`http://` or `https://`).
    pub url: String,
    /// HTTP method: `POST` (default) or `PUT`.
    #[serde(default)]
    pub method: WebhookMethod,
    /// `batch` (default): one request per batch with a JSON array body; `event`: one request per
    /// event, in order.
    #[serde(default)]
    pub mode: WebhookMode,
    /// Extra request headers (for example `Authorization`). Values arrive already
    /// env-interpolated by the config loader.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Longest one delivery may take, in milliseconds: the single request in `batch` mode, all of
    /// the batch's requests together in `event` mode.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// When set, requests are signed with HMAC-SHA256 (see the module docs for verification).
    #[serde(default)]
    pub signing_secret: Option<String>,
    /// Gzip request bodies and send `Content-Encoding: gzip`.
    #[serde(default)]
    pub gzip: bool,
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// HTTP method used for webhook requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum WebhookMethod {
    #[default]
    #[serde(rename = "POST", alias = "post")]
    Post,
    #[serde(rename = "PUT", alias = "put")]
    Put,
}

/// How a batch is turned into requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookMode {
    /// One request per batch; the body is a JSON array of the events.
    #[default]
    Batch,
    /// One request per event, sent sequentially in log order.
    Event,
}

/// Headers the destination sets itself; a user value would break signing or framing.
const RESERVED_HEADERS: [&str; 5] =
    ["content-length", "content-encoding", "host", SIGNATURE_HEADER, TIMESTAMP_HEADER];

impl WebhookConfig {
    pub fn validate(&self) -> Result<(), String> {
        let url = Url::parse(&self.url).map_err(|e| format!("url {:?} is not a valid URL: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("url must be http:// or https://, got {}://", url.scheme()));
        }
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be greater than 0".into());
        }
        if matches!(&self.signing_secret, Some(s) if s.is_empty()) {
            return Err("signing_secret must not be empty when set".into());
        }
        self.header_map().map(|_| ())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The user's headers plus the defaults, checked for valid names and values.
    fn header_map(&self) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &self.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: {name:?} is not a valid header name"))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(format!("headers: {name} is set by the webhook sink itself"));
            }
            // The value is not echoed: it is often a credential.
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("headers: the value of {name} is not a valid header value"))?;
            map.insert(header, value);
        }
        Ok(map)
    }
}

/// Sends batches to an HTTP endpoint.
pub struct WebhookDestination {
    config: WebhookConfig,
    client: reqwest::Client,
    url: Url,
    method: Method,
    headers: HeaderMap,
}

impl WebhookDestination {
    pub fn new(config: WebhookConfig) -> Result<Self, DeliveryError> {
        config.validate().map_err(DeliveryError::Config)?;
        let url = Url::parse(&config.url).map_err(|e| DeliveryError::Config(e.to_string()))?;
        let headers = config.header_map().map_err(DeliveryError::Config)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout().min(Duration::from_secs(10)))
            .build()
            .map_err(|e| DeliveryError::Config(format!("cannot build the HTTP client: {e}")))?;
        let method = match config.method {
            WebhookMethod::Post => Method::POST,
            WebhookMethod::Put => Method::PUT,
        };
        Ok(WebhookDestination { config, client, url, method, headers })
    }

    /// Sends one request carrying `payload` and classifies the outcome.
    async fn send(&self, payload: Bytes, timeout: Duration) -> Result<StatusCode, DeliveryError> {
        let mut request =
            self.client.request(self.method.clone(), self.url.clone()).headers(self.headers.clone()).timeout(timeout);
        if let Some(secret) = &self.config.signing_secret {
            let timestamp = Utc::now().timestamp();
            request = request
                .header(TIMESTAMP_HEADER, timestamp)
                .header(SIGNATURE_HEADER, signature(secret.as_bytes(), timestamp, &payload));
        }
        let body = if self.config.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
            gzip(&payload)?
        } else {
            payload
        };
        let response = request.body(body).send().await.map_err(|e| classify_send_error(e, timeout))?;
        classify_response(response).await
    }

    async fn deliver_batch(&self, batch: &Batch) -> Result<Delivered, DeliveryError> {
        let mut body = BytesMut::with_capacity(batch.bytes() + batch.events.len() + 2);
        body.extend_from_slice(b"[");
        for (i, event) in batch.events.iter().enumerate() {
            if i > 0 {
                body.extend_from_slice(b",");
            }
            body.extend_from_slice(&event.json);
        }
        body.extend_from_slice(b"]");
        let status = self.send(body.freeze(), self.config.timeout()).await?;
        debug!(destination = %batch.destination, events = batch.events.len(), %status, "webhook batch delivered");
        Ok(Delivered::default())
    }

    async fn deliver_each(&self, batch: &Batch) -> Result<Delivered, DeliveryError> {
        let deadline = Instant::now() + self.config.timeout();
        let mut delivered = Delivered::default();
        for (i, event) in batch.events.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DeliveryError::temporary(format!(
                    "timed out after {} ms with {i} of {} events sent",
                    self.config.timeout_ms,
                    batch.events.len()
                )));
            }
            match self.send(event.json.clone(), left).await {
                Ok(_) => {}
                Err(DeliveryError::Permanent { reason }) => {
                    warn!(destination = %batch.destination, offset = event.offset, %reason, "webhook refused an event");
                    delivered.rejected.push((i, reason));
                }
                Err(e) => {
                    debug!(destination = %batch.destination, sent = i, events = batch.events.len(), error = %e, "webhook event failed; the batch will be retried");
                    return Err(e);
                }
            }
        }
        debug!(destination = %batch.destination, events = batch.events.len(), rejected = delivered.rejected.len(), "webhook events delivered");
        Ok(delivered)
    }
}

#[async_trait]
impl Destination for WebhookDestination {
    async fn deliver(&self, batch: &Batch) -> Result<Delivered, DeliveryError> {
        match self.config.mode {
            WebhookMode::Batch => self.deliver_batch(batch).await,
            WebhookMode::Event => self.deliver_each(batch).await,
        }
    }

    /// The configured timeout plus a second of grace, so the request's own timeout fires first
    /// and the router gets this destination's more precise error.
    fn timeout(&self) -> Duration {
        self.config.timeout() + Duration::from_secs(1)
    }
}

/// `sha256=` + hex HMAC-SHA256 of `"{timestamp}.{payload}"`.
fn signature(secret: &[u8], timestamp: i64, payload: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn gzip(payload: &[u8]) -> Result<Bytes, DeliveryError> {
    // The fast level: JSON shrinks well even at level 1, and this runs on the async executor.
    let mut gz = GzEncoder::new(Vec::with_capacity(payload.len() / 4), Compression::fast());
    gz.write_all(payload)?;
    Ok(gz.finish()?.into())
}

fn classify_send_error(error: reqwest::Error, timeout: Duration) -> DeliveryError {
    // Webhook URLs often carry a token in their path or query, and reasons end up in logs and in
    // the dead-letter store.
    let error = error.without_url();
    if error.is_timeout() {
        DeliveryError::temporary(format!("webhook request timed out after {} ms", timeout.as_millis()))
    } else if error.is_connect() {
        DeliveryError::temporary(format!("cannot connect to the webhook: {}", error_chain(&error)))
    } else {
        // Resets, truncated responses and the like: nothing says the next attempt will fail too.
        DeliveryError::temporary(format!("webhook request failed: {}", error_chain(&error)))
    }
}

/// The error and its sources on one line ("connection refused" sits a few levels down).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

async fn classify_response(response: reqwest::Response) -> Result<StatusCode, DeliveryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(status);
    }
    if status.is_redirection() {
        let location =
            response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
        return Err(DeliveryError::permanent(format!(
            "webhook answered {status} redirecting to {location}; redirects are not followed, set url to the final address"
        )));
    }
    let retry_after =
        response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, Utc::now()));
    let reason = format!("webhook answered {status}: {}", body_excerpt(response).await);
    Err(DeliveryError::from_status(Some(status.as_u16()), reason, retry_after))
}

/// The start of an error body, on one line, so a reason says what the endpoint complained about.
async fn body_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_BYTES)]);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        "(empty body)".into()
    } else {
        text
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3). A date in the past
/// means "now".
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is RFC 2822 syntax with a "GMT" zone.
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn validate_rejects_bad_urls_and_reserved_or_invalid_headers() {
        let config = |url: &str, headers: &[(&str, &str)]| WebhookConfig {
            url: url.into(),
            method: WebhookMethod::Post,
            mode: WebhookMode::Batch,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            timeout_ms: 1000,
            signing_secret: None,
            gzip: false,
        };
        assert!(config("https://example.com/hook", &[("Authorization", "Bearer x")]).validate().is_ok());
        assert!(config("ftp://example.com", &[]).validate().unwrap_err().contains("http"));
        assert!(config("not a url", &[]).validate().is_err());
        assert!(config("http://h", &[("X-Sluice-Signature", "x")]).validate().unwrap_err().contains("set by"));
        assert!(config("http://h", &[("bad name", "x")]).validate().is_err());
        let err = config("http://h", &[("Authorization", "secret\nvalue")]).validate().unwrap_err();
        assert!(!err.contains("secret"), "a header value must not be echoed: {err}");
    }

    #[test]
    fn config_parses_with_defaults_and_refuses_unknown_fields() {
        let c: WebhookConfig = serde_json::from_str(r#"{"url":"http://h/x","method":"PUT","mode":"event"}"#).unwrap();
        assert_eq!((c.method, c.mode, c.timeout_ms, c.gzip), (WebhookMethod::Put, WebhookMode::Event, 10_000, false));
        assert!(serde_json::from_str::<WebhookConfig>(r#"{"url":"http://h","timeout":5}"#).is_err());
    }
}
