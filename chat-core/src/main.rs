use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use clap::Parser;

use chat_core::analytics::Analytics;
use chat_core::api::{configure, AppState};
use chat_core::hub::Hub;
use chat_core::store::Store;

/// A Mattermost-style chat server that emits every user action to Sluice.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CHAT_LISTEN", default_value = "127.0.0.1:8065")]
    listen: String,
    /// Holds chat.db (SQLite), analytics-queue/ (the SDK's durable queue) and emitted.ledger.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = "./chat-data")]
    data_dir: PathBuf,
    /// Sluice's collector.
    #[arg(long, env = "CHAT_SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    sluice_url: String,
    /// Write key of the Sluice source.
    #[arg(long, env = "CHAT_WRITE_KEY", default_value = "sluice-dev-write-key")]
    write_key: String,
    /// `off` emits nothing (to measure what analytics costs the chat).
    #[arg(long, env = "CHAT_ANALYTICS", default_value = "on", value_parser = ["on", "off"])]
    analytics: String,
    /// HTTP worker threads (default: number of cores).
    #[arg(long, env = "CHAT_WORKERS")]
    workers: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CHAT_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    chat_core::load::raise_fd_limit();
    std::fs::create_dir_all(&args.data_dir)?;
    actix_web::rt::System::new().block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let store = Arc::new(Store::open(&args.data_dir.join("chat.db"))?);
    let analytics = if args.analytics == "on" {
        Analytics::start(&args.sluice_url, &args.write_key, &args.data_dir)?
    } else {
        Analytics::off()
    };
    let state = web::Data::new(AppState { store, hub: Hub::default(), analytics: analytics.clone() });
    let mut server = HttpServer::new(move || App::new().app_data(state.clone()).configure(configure))
        .backlog(4096)
        .max_connections(100_000)
        .shutdown_timeout(5);
    if let Some(w) = args.workers {
        server = server.workers(w);
    }
    let server = server.bind(&args.listen)?;
    tracing::info!(listen = %args.listen, data_dir = %args.data_dir.display(), analytics = %args.analytics, sluice = %args.sluice_url, "chat-core ready");
    server.run().await?;
    // SIGTERM / Ctrl-C: hand what is queued to Sluice while we can; the durable queue keeps the rest.
    analytics.shutdown(Duration::from_secs(10)).await;
    let (emitted, refused) = analytics.counts();
    tracing::info!(emitted, refused, "chat-core stopped");
    Ok(())
}
