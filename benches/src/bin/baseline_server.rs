//! The yardstick for the ingest benchmark: an actix-web server that does the least a JSON
//! collector could do — read the body, parse it into a `serde_json::Value`, answer 200 — and
//! nothing else (no auth, no validation, no storage). Sluice's figures are reported as a ratio
//! to this server measured in the same run, because absolute numbers move between machines.
//!
//! Usage: `baseline-server [ADDR] [WORKERS]` (default `127.0.0.1:8090`, one worker per core).

use actix_web::{web, App, HttpResponse, HttpServer};

async fn parse(body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        // black_box keeps the optimiser from dropping the parse it was asked to measure.
        Ok(v) => {
            std::hint::black_box(&v);
            HttpResponse::Ok().content_type("application/json").body(r#"{"ok":true}"#)
        }
        Err(e) => HttpResponse::BadRequest().body(e.to_string()),
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let workers = args
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new()
                // Same body ceiling as Sluice's default batch limit, so both read the same bytes.
                .app_data(web::PayloadConfig::new(4 << 20))
                .default_service(web::post().to(parse))
        })
        .workers(workers)
        .backlog(4096)
        .bind(&addr)?
        .run()
        .await
    })
}
