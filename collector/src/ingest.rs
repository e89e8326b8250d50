//! Request handling: authenticate, read the body under its limits, gunzip, validate and enrich
//! every event, check the rate limit, append durably, answer.

use std::io::Read;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use actix_cors::Cors;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use bytes::BytesMut;
use chrono::{SecondsFormat, Utc};
use futures_util::StreamExt;
use governor::clock::{Clock, DefaultClock};
use sluice_eventlog::AppendBatch;

use crate::event::{enrich, BatchBody, EventKind, RequestInfo, TIME_FIELDS};
use crate::{metric, CollectError, Collector, Source};

pub(crate) fn routes(cfg: &mut web::ServiceConfig, collector: web::Data<Collector>) {
    let mut scope = web::scope("")
        // Browsers send from any page of the customer's site; the write key is the credential.
        .wrap(Cors::default().allow_any_origin().allow_any_method().allow_any_header().max_age(3600))
        .app_data(collector)
        .route("/health", web::get().to(health))
        .route("/v1/batch", web::post().to(|req, body, c| handle(None, req, body, c)))
        .route("/beacon/v1/batch", web::post().to(|req, body, c| handle(None, req, body, c)))
        .route("/pixel/v1/track", web::get().to(crate::pixel::track))
        .route("/pixel/v1/page", web::get().to(crate::pixel::page))
        .route("/sourceConfig", web::get().to(crate::source_config::handle))
        .route("/sourceConfig/", web::get().to(crate::source_config::handle));
    for kind in EventKind::ALL {
        scope = scope.route(
            &format!("/v1/{}", kind.as_str()),
            web::post().to(move |req, body, c| handle(Some(kind), req, body, c)),
        );
    }
    cfg.service(scope);
}

async fn health(c: web::Data<Collector>) -> HttpResponse {
    let log = c.log.health();
    let mut body = serde_json::json!({
        "status": "ok",
        "log": { "backend": log.backend, "size_bytes": log.size_bytes },
    });
    // The embedded log's count of records, as /health always reported it.
    if let Some(next) = log.next_offset {
        body["log"]["next_offset"] = next.into();
    }
    HttpResponse::Ok().json(body)
}

async fn handle(
    endpoint: Option<EventKind>,
    req: HttpRequest,
    payload: web::Payload,
    c: web::Data<Collector>,
) -> Result<HttpResponse, CollectError> {
    let result = ingest(endpoint, req, payload, &c).await;
    if let Err(e) = &result {
        c.recent_errors.push("rejected", e.code(), e);
    }
    result
}

async fn ingest(
    endpoint: Option<EventKind>,
    req: HttpRequest,
    payload: web::Payload,
    c: &Collector,
) -> Result<HttpResponse, CollectError> {
    let started = Instant::now();
    let outside_key = key_outside_body(&req)?;
    let body = read_body(&req, payload, c.config.max_body_bytes).await?;
    let sent_bytes = body.len();
    let body = decode(&req, body, c.config.max_decompressed_bytes)?;
    let (source, key_id) = authenticate(outside_key, &body, c)?;

    let received_at = Utc::now();
    let received_at_text = received_at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let ip = client_ip(&req, c.config.trust_forwarded_for);
    let info = RequestInfo::new(endpoint, received_at, &received_at_text, ip.as_deref());
    let (batch, counts) = build_batch(info, &body, &source.id, &key_id)?;
    check_rate(&source, batch.len())?;
    c.log.append(batch).await.map_err(|e| CollectError::from_log(e, c.log_full_retry_after()))?;

    for (counter, n) in source.received.iter().zip(counts.kinds) {
        if n > 0 {
            counter.increment(n);
        }
    }
    for (field, n) in TIME_FIELDS.iter().zip(counts.repaired) {
        if n > 0 {
            // Rare, so the label lookup per request costs nothing that matters.
            metrics::counter!(metric::TIMESTAMPS_REPAIRED, "source" => source.id.to_string(), "field" => *field).increment(n);
        }
    }
    source.received_bytes.increment(sent_bytes as u64);
    c.request_seconds.record(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().content_type("text/plain").body("OK"))
}

/// The write key from the Authorization header, else from the `writeKey` query parameter
/// (sendBeacon cannot set headers). `None`: look in the body.
fn key_outside_body(req: &HttpRequest) -> Result<Option<String>, CollectError> {
    match req.headers().get(header::AUTHORIZATION) {
        Some(value) => basic_username(value.to_str().unwrap_or("")).map(Some),
        None => Ok(web::Query::<KeyField>::from_query(req.query_string()).ok().and_then(|q| q.into_inner().write_key)),
    }
}

/// Finds the source of the request. The header (or query) wins over a `writeKey` in the body:
/// it is what the SDKs send, and the body key is only looked at when there is none.
fn authenticate(outside: Option<String>, body: &[u8], c: &Collector) -> Result<(Arc<Source>, Arc<str>), CollectError> {
    let key = match outside {
        Some(key) => key,
        // A second, shallow parse, only for clients that send the key in the body (rare).
        None => match serde_json::from_slice::<KeyField>(body) {
            Ok(KeyField { write_key: Some(key) }) => key,
            _ => return Err(CollectError::MissingWriteKey),
        },
    };
    if key.is_empty() {
        return Err(CollectError::MissingWriteKey);
    }
    c.by_key.get(&key).cloned().ok_or(CollectError::UnknownWriteKey)
}

#[derive(serde::Deserialize)]
struct KeyField {
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
}

fn basic_username(value: &str) -> Result<String, CollectError> {
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else {
        return Err(CollectError::MissingWriteKey);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| CollectError::UnknownWriteKey)?;
    let text = String::from_utf8(decoded).map_err(|_| CollectError::UnknownWriteKey)?;
    Ok(text.split_once(':').map(|(user, _)| user).unwrap_or(&text).to_string())
}

/// Reads the body, refusing it as soon as it passes `limit` (never buffering more than that).
async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<BytesMut, CollectError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(CollectError::BodyTooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(16 << 10).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| CollectError::BodyRead(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(CollectError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Gunzips when asked to, stopping at `limit` decompressed bytes.
fn decode(req: &HttpRequest, body: BytesMut, limit: usize) -> Result<BytesMut, CollectError> {
    let encoding = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity((body.len() * 4).min(limit));
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| CollectError::BadGzip(e.to_string()))?;
            if out.len() > limit {
                return Err(CollectError::DecompressedTooLarge { limit });
            }
            Ok(BytesMut::from(&out[..]))
        }
        other => Err(CollectError::UnsupportedEncoding(other.to_string())),
    }
}

fn client_ip(req: &HttpRequest, trust_forwarded_for: bool) -> Option<String> {
    if trust_forwarded_for {
        let info = req.connection_info();
        let addr = info.realip_remote_addr()?;
        return Some(
            addr.parse::<std::net::SocketAddr>().map(|a| a.ip().to_string()).unwrap_or_else(|_| addr.to_string()),
        );
    }
    req.peer_addr().map(|a| a.ip().to_string())
}

/// Events of one request, by type and by repaired date-time field.
struct Counts {
    kinds: [u64; 6],
    repaired: [u64; 3],
}

/// Validates and enriches every event of the body into one log append, counting types.
fn build_batch<'a>(
    mut info: RequestInfo<'a>,
    body: &'a [u8],
    source: &str,
    key_id: &str,
) -> Result<(AppendBatch, Counts), CollectError> {
    let mut counts = Counts { kinds: [0; 6], repaired: [0; 3] };
    let mut scratch = Vec::with_capacity(1024);
    let mut count = |e: &crate::event::Enriched<'_>| {
        counts.kinds[e.kind.index()] += 1;
        for (n, r) in counts.repaired.iter_mut().zip(e.repaired) {
            *n += u64::from(r);
        }
    };
    let batch = match info.endpoint_kind {
        Some(_) => {
            let text = std::str::from_utf8(body).map_err(|e| CollectError::MalformedJson(e.to_string()))?;
            let mut batch = AppendBatch::with_capacity(body.len() + 256);
            let enriched = enrich(text, &info, &mut scratch)?;
            count(&enriched);
            batch.push(source, key_id, &enriched.head, &scratch, enriched.origin.as_bytes());
            batch
        }
        None => {
            let envelope: BatchBody<'_> =
                serde_json::from_slice(body).map_err(|e| CollectError::MalformedJson(e.to_string()))?;
            envelope.apply_to(&mut info)?;
            let mut batch = AppendBatch::with_capacity(body.len() + envelope.batch.len() * 160);
            for (i, raw) in envelope.batch.iter().enumerate() {
                scratch.clear();
                let enriched = enrich(raw.get(), &info, &mut scratch).map_err(|e| match e {
                    CollectError::InvalidEvent(m) => CollectError::InvalidEvent(format!("batch[{i}]: {m}")),
                    other => other,
                })?;
                count(&enriched);
                batch.push(source, key_id, &enriched.head, &scratch, enriched.origin.as_bytes());
            }
            batch
        }
    };
    Ok((batch, counts))
}

fn check_rate(source: &Source, events: u64) -> Result<(), CollectError> {
    let Some((limiter, burst)) = &source.limiter else { return Ok(()) };
    let Some(n) = NonZeroU32::new(events.min(u64::from(u32::MAX)) as u32) else { return Ok(()) };
    match limiter.check_n(n) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => Err(CollectError::RateLimited {
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        }),
        Err(_) => Err(CollectError::BatchOverBurst { events: n.get(), burst: *burst }),
    }
}
