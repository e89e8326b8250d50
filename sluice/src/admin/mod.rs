//! The admin listener: what operators look at, on its own address (`admin.listen`, default
//! `127.0.0.1:9180`) so that none of it faces the internet with the collector's port, and a
//! scrape or a dashboard refresh never takes a worker from ingest.
//!
//! - `GET /health`: liveness (the process answers). Never needs the token, so probes stay simple.
//! - `GET /ready`: 200 while ingest can accept events (the log is writable and under its disk
//!   budget), else 503 with the reasons; each destination's state either way.
//! - `GET /metrics`: Prometheus text.
//! - `GET /dashboard`: the built-in live page (see `dashboard.rs`); its data at `/dashboard/data`.
//!
//! With `admin.token_env` set, `/ready`, `/metrics` and `/dashboard/data` need
//! `Authorization: Bearer <token>`. The page's own HTML, script and style hold no data and load
//! without it (a browser cannot add a header to a navigation); the page asks for the token.

mod dashboard;
pub mod metrics_text;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use sha2::{Digest, Sha256};
use sluice_eventlog::{LogHealth, LogSource, LogWriter};
use sluice_recent::RecentErrors;
use sluice_router::DestinationState;

use crate::config::{AdminConfig, Config};

/// A destination as the admin listener reports it: configured ones that are disabled too.
pub struct AdminDestination {
    pub id: String,
    pub enabled: bool,
    /// Present while its worker runs.
    pub state: Option<DestinationState>,
}

/// The log as this process's role has it: the writer in a collector, the source in a router,
/// both in `--role all`.
#[derive(Clone)]
pub struct AdminLog {
    pub writer: Option<Arc<dyn LogWriter>>,
    pub source: Option<Arc<dyn LogSource>>,
}

impl AdminLog {
    /// The writer's health where there is one (ingest is what readiness is about), else the
    /// reader side's.
    pub fn health(&self) -> LogHealth {
        match (&self.writer, &self.source) {
            (Some(w), _) => w.health(),
            (None, Some(s)) => s.health(),
            (None, None) => LogHealth { backend: "none", next_offset: None, size_bytes: 0, budget_bytes: 0, refusing_appends: false, write_error: None },
        }
    }
}

/// Everything the admin handlers read; shared by the listener's workers.
pub struct AdminState {
    pub prometheus: PrometheusHandle,
    pub log: AdminLog,
    pub destinations: Vec<AdminDestination>,
    pub recent: Arc<RecentErrors>,
    token: Option<Token>,
}

/// The bearer token, kept only as its SHA-256: comparing digests takes the same time whatever
/// the guess (the lengths are equal and the loop does not stop early), and the clear text is
/// not kept in memory for a debug print or a core dump to show.
struct Token([u8; 32]);

impl Token {
    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.iter().zip(self.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl AdminState {
    pub fn new(
        config: &Config,
        prometheus: PrometheusHandle,
        log: AdminLog,
        states: Vec<DestinationState>,
        recent: Arc<RecentErrors>,
    ) -> anyhow::Result<AdminState> {
        let admin = admin_config(config);
        let token = match &admin.token_env {
            None => None,
            Some(var) => {
                let value = std::env::var(var).unwrap_or_default();
                if value.trim().is_empty() {
                    anyhow::bail!("admin.token_env names {var}, which is not set or empty: set it, or remove token_env");
                }
                Some(Token(Sha256::digest(value.trim().as_bytes()).into()))
            }
        };
        // A collector-only process runs no destination: it reports none.
        let routes = log.source.is_some();
        let destinations = config
            .destinations
            .iter()
            .filter(|_| routes)
            .map(|d| AdminDestination {
                id: d.id.clone(),
                enabled: d.enabled,
                state: states.iter().find(|s| *s.id == *d.id).cloned(),
            })
            .collect();
        Ok(AdminState { prometheus, log, destinations, recent, token })
    }

    pub fn token_required(&self) -> bool {
        self.token.is_some()
    }

    /// The 401 to send when a token is required and the request lacks the right one.
    fn denied(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let Some(token) = &self.token else { return None };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        match presented {
            Some(p) if token.matches(p) => None,
            // Neither the expected nor the presented token is ever logged or echoed.
            _ => Some(HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"sluice-admin\""))
                .json(serde_json::json!({
                    "error": "unauthorized",
                    "message": "this admin endpoint needs Authorization: Bearer <token> (admin.token_env)",
                }))),
        }
    }

    /// Sets the lag gauge of every running destination from its cursor. The worker sets it only
    /// after a delivery, so without this a destination that keeps failing would show the lag it
    /// had when it started failing, not the one that is building.
    fn refresh_lag(&self) {
        for d in self.destinations.iter().filter(|d| d.state.is_some()) {
            if let Some(lag) = self.lag_events(&d.id) {
                metrics::gauge!(sluice_router::metric::LAG_EVENTS, "destination" => d.id.clone()).set(lag as f64);
            }
        }
    }

    /// Events written to the log that `id` has not yet passed.
    fn lag_events(&self, id: &str) -> Option<u64> {
        self.log.source.as_ref()?.lag(id)
    }
}

/// The `admin:` block, or its defaults when the YAML has none.
pub fn admin_config(config: &Config) -> AdminConfig {
    config.admin.clone().unwrap_or_else(|| AdminConfig { listen: crate::config::DEFAULT_ADMIN_LISTEN.into(), token_env: None })
}

/// Every admin route; used by `sluice run` and by tests.
pub fn configure(state: web::Data<AdminState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(state)
            .route("/health", web::get().to(health))
            .route("/ready", web::get().to(ready))
            .route("/metrics", web::get().to(metrics));
        dashboard::routes(cfg);
    }
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(req: HttpRequest, s: web::Data<AdminState>) -> HttpResponse {
    if let Some(denied) = s.denied(&req) {
        return denied;
    }
    s.refresh_lag();
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(s.prometheus.render())
}

/// Ready means ingest can take events. A failing destination does not make Sluice unready: its
/// events wait in the log, and taking the collector out of a load balancer would only turn that
/// delay into lost events at the client. Its state is reported for the operator to see.
async fn ready(req: HttpRequest, s: web::Data<AdminState>) -> HttpResponse {
    if let Some(denied) = s.denied(&req) {
        return denied;
    }
    let log = s.log.health();
    let mut reasons = Vec::new();
    if log.refusing_appends && log.backend == "kafka" {
        reasons.push("log_full: the Kafka producer's queue is full; ingest answers 503".to_string());
    } else if log.refusing_appends {
        reasons.push(format!(
            "log_full: the event log's disk budget is used up ({} of {} bytes); ingest answers 503",
            log.size_bytes, log.budget_bytes
        ));
    }
    if let Some(e) = &log.write_error {
        reasons.push(format!("log_unavailable: the last write to the event log failed: {e}"));
    }
    let destinations: Vec<_> = s
        .destinations
        .iter()
        .map(|d| {
            let failing = d.state.as_ref().and_then(|st| st.failing_since_ms());
            serde_json::json!({
                "id": d.id,
                "enabled": d.enabled,
                "running": d.state.is_some(),
                "lag_events": if d.enabled { s.lag_events(&d.id) } else { None },
                "failing_since": failing.and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.to_rfc3339()),
            })
        })
        .collect();
    let body = serde_json::json!({
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "log": {
            "backend": log.backend,
            "size_bytes": log.size_bytes,
            "budget_bytes": log.budget_bytes,
            "used_ratio": log.used_ratio(),
            "refusing_appends": log.refusing_appends,
            "write_error": log.write_error,
        },
        "destinations": destinations,
    });
    if reasons.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
