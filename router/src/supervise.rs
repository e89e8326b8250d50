//! Supervision of destination workers. A worker that panics (a bug in a destination, a
//! transformation helper, the router itself) would otherwise leave its destination silently
//! undelivered while the rest of the process looks healthy. Its supervisor logs the panic,
//! counts it (`sluice_destination_worker_panics_total`), alerts, and starts a fresh worker from
//! the destination's persisted cursor: whatever the dead worker had read but not committed is
//! read and delivered again (at-least-once, as after a crash). Restarts back off from half a
//! second to a minute, so a destination that panics on every batch does not spin; a worker that
//! ran a minute without panicking starts the backoff over.

use std::time::{Duration, Instant};

use sluice_eventlog::LogReader;
use tokio::sync::watch;

use crate::metric;
use crate::worker::Spec;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A worker that ran this long before panicking is not part of a panic loop.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

pub(crate) async fn supervise(spec: Spec, reader: Box<dyn LogReader>, mut shutdown: watch::Receiver<bool>) {
    let id = spec.routed.config.id.clone();
    let mut reader = Some(reader);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let reader = match reader.take().map_or_else(|| spec.log.reader(&id), Ok) {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(destination = %id, %error, "cannot reopen the destination's cursor; retrying");
                if wait(&mut shutdown, backoff).await {
                    return;
                }
                continue;
            }
        };
        let started = Instant::now();
        let run = tokio::spawn(spec.worker().run(reader, shutdown.clone()));
        let panic = match run.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => panic_text(e.into_panic()),
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        metrics::counter!(metric::WORKER_PANICS, "destination" => id.clone()).increment(1);
        tracing::error!(destination = %id, %panic, restart_in_ms = backoff.as_millis() as u64,
            "destination worker panicked; restarting it from its persisted cursor");
        if let Some(alerts) = spec.alerts.clone() {
            let text = format!(
                ":rotating_light: Sluice's worker for destination `{id}` panicked ({panic}); it is restarted from its cursor, events read since are delivered again."
            );
            let dest = id.clone();
            tokio::spawn(async move { alerts.notify(&dest, "worker_panic", text).await });
        }
        if wait(&mut shutdown, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Sleeps `d`; true if a shutdown came first.
async fn wait(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
