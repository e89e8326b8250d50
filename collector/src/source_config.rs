//! `GET /sourceConfig`: the control-plane answer RudderStack's browser SDK (v3,
//! `@rudderstack/analytics-js`) fetches before it sends anything. Serving it from the collector
//! lets a fully self-hosted page load the SDK with `configUrl` pointed at Sluice, no RudderStack
//! account involved.
//!
//! The SDK asks `GET <configUrl>/sourceConfig/?p=..&v=..&writeKey=K&...` with
//! `Authorization: Basic base64(K:)`; either credential is accepted here. It refuses an answer
//! unless `source.id` is set, `source.config` is an object and `source.destinations` is an array,
//! and it stops when `source.enabled` is false. Sluice has no device-mode destinations, so the
//! list is empty and the SDK only sends to the data plane (Sluice); the SDK's error and metrics
//! reporting to RudderStack's servers is switched off in `config.statsCollection`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::json;

use crate::{CollectError, Collector};

pub(crate) async fn handle(req: HttpRequest, c: web::Data<Collector>) -> Result<HttpResponse, CollectError> {
    let key = write_key(&req).ok_or(CollectError::MissingWriteKey)?;
    let (source, _) = c.by_key.get(&key).ok_or(CollectError::UnknownWriteKey)?;
    let body = json!({
        "isHosted": false,
        "source": {
            "id": &*source.id,
            "name": &*source.id,
            "writeKey": key,
            "enabled": true,
            "workspaceId": "sluice",
            "deleted": false,
            "sourceDefinitionId": "sluice-javascript",
            "sourceDefinition": { "id": "sluice-javascript", "name": "Javascript", "category": null },
            "config": {
                "statsCollection": {
                    "errors": { "enabled": false },
                    "metrics": { "enabled": false }
                }
            },
            "destinations": []
        }
    });
    Ok(HttpResponse::Ok()
        // The answer changes only when the YAML does; a minute of caching spares page loads.
        .insert_header((header::CACHE_CONTROL, "max-age=60"))
        .json(body))
}

/// The write key from `Authorization: Basic` (username) or else the `writeKey` query parameter.
fn write_key(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let user = text.split_once(':').map(|(u, _)| u).unwrap_or(&text);
        if !user.is_empty() {
            return Some(user.to_string());
        }
    }
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .ok()?
        .into_inner()
        .into_iter()
        .find(|(k, v)| k == "writeKey" && !v.is_empty())
        .map(|(_, v)| v)
}
