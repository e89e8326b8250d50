//! `GET /pixel/v1/track` and `GET /pixel/v1/page`: RudderStack's pixel API, for places that can
//! load an image but not run JavaScript or send a POST (e-mails, AMP pages, `<noscript>`).
//!
//! The event comes as query parameters, the way rudder-server reads them: `writeKey` (required),
//! `anonymousId` / `userId`, `event` (track) or `name` (page), and any other parameter as a dotted
//! path into the event (`properties.plan=pro`, `context.page.url=...`). Values stay strings:
//! a query string has no types. `type` is always the endpoint's.
//!
//! The answer is always `200` with a 1x1 transparent GIF, as RudderStack and Segment do: an
//! `<img>` must never show a broken image in a customer's e-mail or page. The 200 still comes only
//! after the event is durable; when it could not be stored the reason is in the `X-Sluice-Error`
//! header (`<code>: <message>`) and counted in `sluice_requests_rejected_total`.

use std::num::NonZeroU32;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use sluice_eventlog::AppendBatch;

use crate::event::{enrich, EventKind, RequestInfo};
use crate::{CollectError, Collector};

/// A 1x1 transparent GIF (43 bytes).
pub const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The header that carries why a pixel event was not stored.
pub const ERROR_HEADER: &str = "X-Sluice-Error";

pub(crate) async fn track(req: HttpRequest, c: web::Data<Collector>) -> HttpResponse {
    answer(store(EventKind::Track, &req, &c).await)
}

pub(crate) async fn page(req: HttpRequest, c: web::Data<Collector>) -> HttpResponse {
    answer(store(EventKind::Page, &req, &c).await)
}

fn answer(outcome: Result<(), CollectError>) -> HttpResponse {
    let mut resp = HttpResponse::Ok();
    resp.content_type("image/gif")
        // Every load must reach the collector: a cached pixel is an event lost.
        .insert_header((header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"))
        .insert_header((header::EXPIRES, "0"));
    if let Err(e) = outcome {
        metrics::counter!(crate::metric::REJECTED, "reason" => e.code()).increment(1);
        // Header values must be visible ASCII; messages quote user input.
        let text: String = format!("{}: {e}", e.code())
            .chars()
            .map(|ch| if ch.is_ascii_graphic() || ch == ' ' { ch } else { '?' })
            .take(512)
            .collect();
        resp.insert_header((ERROR_HEADER, text));
    }
    resp.body(PIXEL_GIF.as_slice())
}

async fn store(kind: EventKind, req: &HttpRequest, c: &Collector) -> Result<(), CollectError> {
    let params = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| CollectError::InvalidEvent(format!("query string: {e}")))?
        .into_inner();
    let (body, write_key) = event_from_query(kind, params)?;
    let write_key = write_key.filter(|k| !k.is_empty()).ok_or(CollectError::MissingWriteKey)?;
    let (source, key_id) = c.by_key.get(&write_key).cloned().ok_or(CollectError::UnknownWriteKey)?;

    let received_at = Utc::now();
    let received_at_text = received_at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let ip = if c.config.trust_forwarded_for {
        req.connection_info().realip_remote_addr().map(|a| {
            a.parse::<std::net::SocketAddr>().map(|s| s.ip().to_string()).unwrap_or_else(|_| a.to_string())
        })
    } else {
        req.peer_addr().map(|a| a.ip().to_string())
    };
    let info = RequestInfo::new(Some(kind), received_at, &received_at_text, ip.as_deref());
    let mut scratch = Vec::with_capacity(body.len() + 256);
    let enriched = enrich(&body, &info, &mut scratch)?;
    let mut batch = AppendBatch::with_capacity(scratch.len() + 64);
    batch.push(&source.id, &key_id, &enriched.head, &scratch, enriched.origin.as_bytes());

    if let Some((limiter, _)) = &source.limiter {
        if let Ok(Err(not_until)) = limiter.check_n(NonZeroU32::MIN) {
            use governor::clock::{Clock, DefaultClock};
            return Err(CollectError::RateLimited { retry_after: not_until.wait_time_from(DefaultClock::default().now()) });
        }
    }
    c.log.append(batch).await.map_err(|e| CollectError::from_log(e, c.log_full_retry_after()))?;
    let slot = kind.index();
    source.received[slot].increment(1);
    Ok(())
}

/// Builds the event JSON from the query parameters; returns it with the write key.
pub fn event_from_query(kind: EventKind, params: Vec<(String, String)>) -> Result<(String, Option<String>), CollectError> {
    let mut event = Map::new();
    event.insert("channel".into(), Value::from("web"));
    let mut write_key = None;
    for (key, value) in params {
        match key.as_str() {
            "writeKey" => write_key = Some(value),
            // Some templates wrap the id in quotes (rudder-server strips them too).
            "anonymousId" => {
                let v = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(&value);
                event.insert(key, Value::from(v));
            }
            "type" => {}
            _ => set_path(&mut event, &key, value)?,
        }
    }
    if kind == EventKind::Page {
        if let Some(Value::String(name)) = event.get_mut("name") {
            if name.trim().is_empty() {
                *name = "Unknown Page".into();
            }
        }
    }
    event.insert("type".into(), Value::from(kind.as_str()));
    Ok((Value::Object(event).to_string(), write_key))
}

/// `a.b.c=v` sets `{"a":{"b":{"c":"v"}}}`; a later parameter overwrites an earlier scalar.
fn set_path(root: &mut Map<String, Value>, path: &str, value: String) -> Result<(), CollectError> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 8 {
        return Err(CollectError::InvalidEvent(format!("query parameter {path:?} is not a dotted path like properties.plan")));
    }
    let (last, parents) = parts.split_last().expect("split gives one part at least");
    let mut node = root;
    for part in parents {
        let entry = node.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        node = entry.as_object_mut().expect("made an object above");
    }
    node.insert(last.to_string(), Value::from(value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn dotted_parameters_become_nested_objects() {
        let (body, key) = event_from_query(
            EventKind::Track,
            q(&[("writeKey", "k"), ("anonymousId", "\"a1\""), ("event", "Email Opened"), ("properties.campaign.id", "c9"), ("type", "alias")]),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(key.as_deref(), Some("k"));
        assert_eq!(v["anonymousId"], "a1");
        assert_eq!(v["type"], "track");
        assert_eq!(v["properties"]["campaign"]["id"], "c9");
        assert!(v.get("writeKey").is_none());
    }

    #[test]
    fn empty_path_segments_are_refused() {
        assert!(event_from_query(EventKind::Page, q(&[("properties..x", "1")])).is_err());
    }

    #[test]
    fn the_gif_is_one_by_one() {
        assert_eq!(&PIXEL_GIF[..6], b"GIF89a");
        assert_eq!((PIXEL_GIF[6], PIXEL_GIF[8]), (1, 1));
    }
}
