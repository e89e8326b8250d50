//! `sluice run`: every stage in one process. The collector runs on actix-web's runtime; the
//! router runs on its own multi-threaded tokio runtime, so slow transformations or destinations
//! never take HTTP worker time.

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sluice_collector::Collector;
use sluice_eventlog::EventLog;
use sluice_recent::RecentErrors;
use sluice_router::{Alerter, DeadLetters, RoutedDestination, Router};
use sluice_transformer::Registry;

use crate::admin::{self, AdminState};
use crate::config::Config;

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

pub fn run(config: Config) -> anyhow::Result<()> {
    let prometheus = install_metrics()?;
    let log = EventLog::open(config.log.clone()).context("opening the event log")?;
    // Every destination of the config holds its segments, disabled ones too; stale cursors are
    // warned about by the log.
    let ids: Vec<&str> = config.destinations.iter().map(|d| d.id.as_str()).collect();
    log.hold_for(&ids).context("reading the destinations' cursors")?;
    let registry = Arc::new(Registry::load(&config.transformations)?);
    let _watch = registry.watch();
    let dlq = Arc::new(DeadLetters::open(config.dead_letter_dir())?);
    let alerts = config.alerts.clone().map(|a| Arc::new(Alerter::new(a)));
    Alerter::register_metrics();
    let recent = Arc::new(RecentErrors::default());

    let router_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-router")
        .enable_all()
        .build()?;
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
        tokio::spawn(sluice_router::watch_log(log.clone(), alerts.clone(), recent.clone()));
        anyhow::Ok(Router::start_with_errors(log.clone(), destinations, dlq, alerts, recent.clone())?)
    })?;

    let admin_config = admin::admin_config(&config);
    let admin_state = actix_web::web::Data::new(AdminState::new(&config, prometheus, log.clone(), router.states(), recent.clone())?);
    let collector = actix_web::web::Data::new(
        Collector::new(config.collector.clone(), &config.sources, log).map_err(anyhow::Error::msg)?.with_recent_errors(recent),
    );
    let listen = config.collector.listen.clone();
    let workers = config.collector.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    actix_web::rt::System::new().block_on(async move {
        let admin_server = bind_admin(&config, &admin_config, admin_state)?;
        let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(sluice_collector::configure(collector.clone())))
            .workers(workers)
            .backlog(4096)
            .bind(&listen)
            .with_context(|| format!("binding {listen}"))?
            .run();
        tracing::info!(%listen, admin = %admin_config.listen, destinations = config.destinations.len(), "sluice is running");
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
    })?;
    tracing::info!("HTTP server stopped; stopping the router");
    router_rt.block_on(router.stop());
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
