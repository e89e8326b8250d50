//! `sluice run`: the stages this process's role runs. The collector runs on actix-web's runtime;
//! the router runs on its own multi-threaded tokio runtime, so slow transformations or
//! destinations never take HTTP worker time.
//!
//! Roles (`--role`, or `SLUICE_ROLE`): `all` (default) runs the collector and the router in one
//! process; with `log.backend: kafka`, `collector` runs only HTTP ingest and `router` only the
//! destination workers, each with its own admin listener (`/metrics`, `/health`, `/ready`), so
//! either scales out on its own. The embedded log belongs to one process's data directory, so it
//! runs only as `all`.

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sluice_collector::Collector;
use sluice_eventlog::{EventLog, LogSource, LogWriter};
use sluice_kafka::{KafkaSource, KafkaWriter};
use sluice_recent::RecentErrors;
use sluice_router::{Alerter, DeadLetters, RoutedDestination, Router};
use sluice_transformer::Registry;

use crate::admin::{self, AdminLog, AdminState};
use crate::config::{Backend, Config};

/// What one `sluice run` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// HTTP ingest (and the admin listener); no destination workers.
    Collector,
    /// Destination workers (and the admin listener); no public ingest port.
    Router,
    /// Both, in one process.
    All,
}

impl Role {
    fn collects(self) -> bool {
        self != Role::Router
    }
    fn routes(self) -> bool {
        self != Role::Collector
    }
}

/// The log as this process's role needs it, behind the contract.
pub struct OpenedLog {
    pub writer: Option<Arc<dyn LogWriter>>,
    pub source: Option<Arc<dyn LogSource>>,
    /// The embedded log, for what only it has (the disk budget watch).
    pub embedded: Option<EventLog>,
}

/// Opens the configured backend for `role`: an error for a role the backend cannot serve or a
/// broker that does not answer.
pub fn open_log(config: &Config, role: Role) -> anyhow::Result<OpenedLog> {
    match config.log.backend {
        Backend::Embedded => {
            if role != Role::All {
                anyhow::bail!(
                    "--role {} needs log.backend: kafka: the embedded log lives in one process's data directory ({}), so only --role all (the default) can use it",
                    if role == Role::Router { "router" } else { "collector" },
                    config.log.embedded().dir.display()
                );
            }
            let log = EventLog::open(config.log.embedded()).context("opening the event log")?;
            // Every destination of the config holds its segments, disabled ones too; stale
            // cursors are warned about by the log.
            let ids: Vec<&str> = config.destinations.iter().map(|d| d.id.as_str()).collect();
            LogSource::hold_for(&log, &ids).context("reading the destinations' cursors")?;
            Ok(OpenedLog { writer: Some(Arc::new(log.clone())), source: Some(Arc::new(log.clone())), embedded: Some(log) })
        }
        Backend::Kafka => {
            let kafka = config.log.kafka.as_ref().context("log.backend is kafka but log.kafka is missing")?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let writer: Option<Arc<dyn LogWriter>> = if role.collects() {
                Some(Arc::new(rt.block_on(KafkaWriter::open(kafka)).context("opening the Kafka producer")?))
            } else {
                None
            };
            let source: Option<Arc<dyn LogSource>> = if role.routes() {
                Some(Arc::new(rt.block_on(KafkaSource::open(kafka)).context("opening the Kafka consumers")?))
            } else {
                None
            };
            Ok(OpenedLog { writer, source, embedded: None })
        }
    }
}

/// Histogram buckets (seconds) for latencies: fsync-scale at the bottom, slow uploads at the top.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0];

pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    use metrics_exporter_prometheus::Matcher;
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_requests".into()), COUNT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_events".into()), COUNT_BUCKETS)?
        .install_recorder()
        .context("installing the Prometheus recorder")
}

/// Builds every enabled destination with its transformation chain.
pub async fn build_destinations(config: &Config, registry: &Registry) -> anyhow::Result<Vec<RoutedDestination>> {
    let mut out = Vec::new();
    for d in config.destinations.iter().filter(|d| d.enabled) {
        let destination = d.sink.build().await.with_context(|| format!("building destination {}", d.id))?;
        let chain = registry.chain(&d.transformations)?;
        out.push(RoutedDestination { config: d.clone(), destination, chain });
    }
    Ok(out)
}

pub fn run(config: Config, role: Role) -> anyhow::Result<()> {
    let prometheus = install_metrics()?;
    let log = open_log(&config, role)?;
    let registry = Arc::new(Registry::load(&config.transformations)?);
    let _watch = registry.watch();
    let alerts = config.alerts.clone().map(|a| Arc::new(Alerter::new(a)));
    Alerter::register_metrics();
    let recent = Arc::new(RecentErrors::default());

    let router_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-router")
        .enable_all()
        .build()?;
    let router = match &log.source {
        None => None,
        Some(source) => {
            let dlq = Arc::new(DeadLetters::open(config.dead_letter_dir())?);
            let router = router_rt.block_on(async {
                let destinations = build_destinations(&config, &registry).await?;
                let reg = registry.clone();
                tokio::spawn(async move {
                    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
                    while hup.recv().await.is_some() {
                        let failed = reg.reload_all();
                        tracing::info!(refused = failed.len(), "SIGHUP: transformation scripts reloaded");
                    }
                });
                anyhow::Ok(Router::start_with_errors(source.clone(), destinations, dlq, alerts.clone(), recent.clone())?)
            })?;
            Some(router)
        }
    };
    if let Some(embedded) = &log.embedded {
        router_rt.spawn(sluice_router::watch_log(embedded.clone(), alerts.clone(), recent.clone()));
    }

    let admin_config = admin::admin_config(&config);
    let states = router.as_ref().map(Router::states).unwrap_or_default();
    let admin_log = AdminLog { writer: log.writer.clone(), source: log.source.clone() };
    let admin_state = actix_web::web::Data::new(AdminState::new(&config, prometheus, admin_log, states, recent.clone())?);
    let collector = match &log.writer {
        Some(writer) => Some(actix_web::web::Data::new(
            Collector::new(config.collector.clone(), &config.sources, writer.clone())
                .map_err(anyhow::Error::msg)?
                .with_recent_errors(recent),
        )),
        None => None,
    };
    let listen = config.collector.listen.clone();
    let workers = config.collector.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    actix_web::rt::System::new().block_on(async move {
        match collector {
            Some(collector) => {
                let admin_server = bind_admin(&config, &admin_config, admin_state)?;
                let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(sluice_collector::configure(collector.clone())))
                    .workers(workers)
                    .backlog(4096)
                    .bind(&listen)
                    .with_context(|| format!("binding {listen}"))?
                    .run();
                tracing::info!(?role, %listen, admin = %admin_config.listen, destinations = config.destinations.len(), "sluice is running");
                let admin_handle = admin_server.map(|s| {
                    let handle = s.handle();
                    actix_web::rt::spawn(s);
                    handle
                });
                let result = server.await.context("HTTP server");
                if let Some(h) = admin_handle {
                    h.stop(true).await;
                }
                result
            }
            None => {
                // A router has no public port: the admin listener is its server, and it owns
                // the signal handling (SIGTERM/SIGINT stop it, then the router).
                let listen = admin_config.listen.clone();
                let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(admin::configure(admin_state.clone())))
                    .workers(1)
                    .bind(&listen)
                    .with_context(|| format!("binding the admin listener {listen}"))?
                    .run();
                tracing::info!(?role, admin = %listen, destinations = config.destinations.len(), "sluice is running");
                server.await.context("admin listener")
            }
        }
    })?;
    if let Some(router) = router {
        tracing::info!("HTTP server stopped; stopping the router");
        router_rt.block_on(router.stop());
    }
    Ok(())
}

/// Binds the admin listener. With no `admin:` block the default address is a convenience: when
/// it is taken (a second Sluice on the same machine), Sluice runs without it and says so. An
/// address the operator chose must bind, or Sluice does not start.
fn bind_admin(
    config: &Config,
    admin_config: &crate::config::AdminConfig,
    state: actix_web::web::Data<AdminState>,
) -> anyhow::Result<Option<actix_web::dev::Server>> {
    let listen = admin_config.listen.clone();
    let loopback = listen.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
    if !loopback && !state.token_required() {
        tracing::warn!(%listen, "the admin listener is reachable beyond this machine without a token: set admin.token_env");
    }
    let bound = actix_web::HttpServer::new(move || actix_web::App::new().configure(admin::configure(state.clone())))
        .workers(1)
        .disable_signals()
        .bind(&listen);
    match bound {
        Ok(server) => Ok(Some(server.run())),
        Err(error) if config.admin.is_none() => {
            tracing::error!(%listen, %error, "cannot bind the default admin listener; running without /metrics, /ready and /dashboard (set admin.listen)");
            Ok(None)
        }
        Err(error) => Err(anyhow::Error::new(error).context(format!("binding the admin listener {listen}"))),
    }
}
