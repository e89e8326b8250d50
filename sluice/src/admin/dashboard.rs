//! `GET /dashboard`: a live page for users without Grafana. The HTML, script and style are
//! compiled into the binary (no CDN, no request leaves the page); the script polls
//! `/dashboard/data` every two seconds, keeps the last ten minutes of samples and draws its own
//! charts on canvas. Rates are computed in the browser from successive counter readings, the way
//! Prometheus' `rate()` does, so the server keeps no history.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use sluice_collector::metric as collector_metric;
use sluice_router::metric as router_metric;

use super::metrics_text::{self, Sample};
use super::AdminState;

const PAGE: &str = include_str!("dashboard.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(|| async { asset(PAGE, "text/html; charset=utf-8") }))
        .route("/dashboard/app.js", web::get().to(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/dashboard/app.css", web::get().to(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route("/dashboard/data", web::get().to(data));
}

fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // The page may only load what the binary serves: a stray external URL fails loudly.
        .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'self'; img-src 'self' data:"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

fn by_label(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        if let Some(v) = s.label(label) {
            *out.entry(v.to_string()).or_insert(0.0) += s.value;
        }
    }
    out
}

async fn data(req: HttpRequest, s: web::Data<AdminState>) -> HttpResponse {
    if let Some(denied) = s.denied(&req) {
        return denied;
    }
    s.refresh_lag();
    let samples = metrics_text::parse(&s.prometheus.render());
    let sum = |name: &str, filter: &[(&str, &str)]| metrics_text::sum(&samples, name, filter) as u64;
    let log = s.log.health();
    let destinations: Vec<_> = s
        .destinations
        .iter()
        .map(|d| {
            let f = [("destination", d.id.as_str())];
            serde_json::json!({
                "id": d.id,
                "enabled": d.enabled,
                "delivered": sum(router_metric::DELIVERED, &f),
                "retries": sum(router_metric::RETRIED, &f),
                "failed": sum(router_metric::FAILED, &f),
                "dead_lettered": sum(router_metric::DEAD_LETTERED, &f),
                "transform_failed": sum(router_metric::TRANSFORM_FAILED, &f),
                "lag_events": if d.state.is_some() { Some(sum(router_metric::LAG_EVENTS, &f)) } else { None },
                "lag_seconds": d.state.as_ref().map(|_| metrics_text::sum(&samples, router_metric::LAG_SECONDS, &f)),
                "failing_since_ms": d.state.as_ref().and_then(|st| st.failing_since_ms()),
            })
        })
        .collect();
    let (errors, errors_seen) = s.recent.snapshot();
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(serde_json::json!({
        "at_ms": chrono::Utc::now().timestamp_millis(),
        "received": {
            "total": sum(collector_metric::RECEIVED, &[]),
            "by_source": by_label(&samples, collector_metric::RECEIVED, "source"),
        },
        "rejected": {
            "total": sum(collector_metric::REJECTED, &[]),
            "by_reason": by_label(&samples, collector_metric::REJECTED, "reason"),
        },
        "log": {
            "backend": log.backend,
            "size_bytes": log.size_bytes,
            "budget_bytes": log.budget_bytes,
            // The embedded log's gauge; a Kafka topic's end lives with its brokers (0 here).
            "next_offset": sum(sluice_eventlog::metric::NEXT_OFFSET, &[]),
            "refusing_appends": log.refusing_appends,
            "write_error": log.write_error,
        },
        "destinations": destinations,
        "alerts_sent": sum(router_metric::ALERTS_SENT, &[]),
        "errors": errors,
        "errors_seen": errors_seen,
    }))
}
