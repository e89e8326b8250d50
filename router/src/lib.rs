//! The router: one worker per destination between the event log and the destination.
//!
//! Workers see the log only through [`LogSource`] (the embedded log or Kafka, where a worker is
//! one member of the destination's consumer group `sluice-<destination id>`).
//!
//! Each worker reads from its own cursor, filters, runs the destination's transformation chain,
//! batches (events / bytes / age), delivers in per-user lanes with retries and backoff, sends
//! what cannot be delivered to the dead-letter store, and then advances its cursor. See
//! `worker.rs` for the order of those steps and why it is safe to crash between any two.

mod alert;
pub mod config;
pub mod dlq;
mod error;
mod head;
mod worker;

mod supervise;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use sluice_destinations::{Batch, Destination, OutEvent};
use sluice_eventlog::LogSource;
use sluice_recent::RecentErrors;
use sluice_transformer::{Chain, Meta};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use alert::{watch_log, Alerter};
pub use config::{AlertsConfig, BatchConfig, DestinationConfig, FilterConfig, RetryConfig};
pub use dlq::{DeadLetters, Entry, Stage};
pub use error::RouterError;

/// Metric names of the router (label `destination` on all but the alerts counter).
pub mod metric {
    pub const DELIVERED: &str = "sluice_destination_delivered_total";
    pub const RETRIED: &str = "sluice_destination_retries_total";
    pub const FAILED: &str = "sluice_destination_failed_total";
    pub const DEAD_LETTERED: &str = "sluice_destination_dead_lettered_total";
    pub const FILTERED: &str = "sluice_destination_filtered_total";
    pub const TRANSFORM_FAILED: &str = "sluice_transform_failed_total";
    pub const LAG_EVENTS: &str = "sluice_destination_lag_events";
    pub const LAG_SECONDS: &str = "sluice_destination_lag_seconds";
    pub const BATCH_EVENTS: &str = "sluice_destination_batch_events";
    pub const DELIVERY_SECONDS: &str = "sluice_destination_delivery_seconds";
    pub const ALERTS_SENT: &str = "sluice_alerts_sent_total";
    /// Alerts held back because one of the same kind and destination went out recently (label `kind`).
    pub const ALERTS_THROTTLED: &str = "sluice_alerts_throttled_total";
    /// Records (offsets) of the event log found corrupt and quarantined by a destination's reader.
    pub const CORRUPT_RECORDS: &str = "sluice_log_corrupt_records_total";
    /// Failed attempts to write a dead-letter entry (each retried a second later).
    pub const DEAD_LETTER_WRITE_FAILED: &str = "sluice_dead_letter_write_failures_total";
    /// Panics of a destination's worker (each followed by a restart from the persisted cursor).
    pub const WORKER_PANICS: &str = "sluice_destination_worker_panics_total";
}

/// A destination ready to run: its config, the built destination and its transformation chain.
pub struct RoutedDestination {
    pub config: DestinationConfig,
    pub destination: Arc<dyn Destination>,
    pub chain: Chain,
}

/// The running workers.
pub struct Router {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    states: Vec<DestinationState>,
}

/// What readiness and the dashboard show of a running destination; cheap to clone.
#[derive(Clone)]
pub struct DestinationState {
    pub id: Arc<str>,
    /// Unix ms since which deliveries fail; 0 while healthy. Shared with the worker.
    failing_since: Arc<AtomicI64>,
}

impl DestinationState {
    /// Unix ms of the first failure of the current failing streak, if deliveries are failing.
    pub fn failing_since_ms(&self) -> Option<i64> {
        Some(self.failing_since.load(Ordering::Acquire)).filter(|&t| t != 0)
    }
}

impl Router {
    /// Starts one supervised worker per enabled destination (a worker that panics is restarted
    /// from its persisted cursor, see `supervise.rs`). Must run inside a multi-threaded tokio
    /// runtime (transformations run on the worker threads through `block_in_place`).
    ///
    /// Segment deletion of the embedded log waits only for the destinations the log knows; hand
    /// it every destination of the config, disabled ones too, with [`LogSource::hold_for`]
    /// before starting.
    pub fn start(
        log: impl LogSource + 'static,
        destinations: Vec<RoutedDestination>,
        dlq: Arc<DeadLetters>,
        alerts: Option<Arc<Alerter>>,
    ) -> Result<Router, RouterError> {
        Router::start_with_errors(log, destinations, dlq, alerts, Arc::default())
    }

    /// [`Router::start`], recording delivery failures, dead letters and transformation failures
    /// in `recent` (the ring the admin dashboard shows).
    pub fn start_with_errors(
        log: impl LogSource + 'static,
        destinations: Vec<RoutedDestination>,
        dlq: Arc<DeadLetters>,
        alerts: Option<Arc<Alerter>>,
        recent: Arc<RecentErrors>,
    ) -> Result<Router, RouterError> {
        let log: Arc<dyn LogSource> = Arc::new(log);
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut states = Vec::new();
        for d in destinations.into_iter().filter(|d| d.config.enabled) {
            let reader = log.reader(&d.config.id)?;
            let state = DestinationState { id: Arc::from(d.config.id.as_str()), failing_since: Arc::default() };
            states.push(state.clone());
            let spec = worker::Spec {
                routed: d,
                log: log.clone(),
                dlq: dlq.clone(),
                alerts: alerts.clone(),
                failing_since: state.failing_since,
                recent: recent.clone(),
            };
            tasks.push(tokio::spawn(supervise::supervise(spec, reader, rx.clone())));
        }
        Ok(Router { shutdown, tasks, states })
    }

    /// The running destinations, in config order.
    pub fn states(&self) -> Vec<DestinationState> {
        self.states.clone()
    }

    /// Stops the workers after their current delivery attempt (a failing batch is not retried
    /// further); undelivered reads are re-read next start.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Delivers one dead-letter entry again (one attempt): transformed first if it failed in a
/// transformation. On success the entry is removed from the store.
pub async fn replay(
    dlq: &DeadLetters,
    entry: &Entry,
    destination: &dyn Destination,
    chain: &Chain,
) -> Result<usize, RouterError> {
    if entry.stage == Stage::Corrupt {
        return Err(RouterError::DeadLetter(format!(
            "entry {} holds corrupt log bytes, not an event: nothing to replay (look at it with `sluice dlq show {}`, then purge it)",
            entry.id, entry.id
        )));
    }
    let dest: Arc<str> = Arc::from(entry.destination.as_str());
    // An entry holds the events of one batch, and a batch never spans partitions.
    let partition = entry.events.first().and_then(|e| e.partition);
    let mut events = Vec::with_capacity(entry.events.len());
    for e in &entry.events {
        let source: Arc<str> = Arc::from(e.source.as_str());
        let json = e.event.get().as_bytes();
        if entry.stage == Stage::Transform && !chain.is_empty() {
            let head = head::RouteHead::parse(json).ok();
            let mid = head.as_ref().and_then(|h| h.message_id.as_deref()).unwrap_or("").to_string();
            for out in chain.apply(json, &Meta::new(&e.source, &entry.destination, &mid).with_write_key_id(&e.write_key_id))? {
                events.push(OutEvent { offset: e.offset, source: source.clone(), json: out.into() });
            }
        } else {
            events.push(OutEvent { offset: e.offset, source, json: bytes::Bytes::copy_from_slice(json) });
        }
    }
    let count = events.len();
    if count > 0 {
        let batch = Batch { destination: dest, partition, events };
        let delivered = destination
            .deliver(&batch)
            .await
            .map_err(|error| RouterError::Destination { destination: entry.destination.clone(), error })?;
        if !delivered.rejected.is_empty() {
            return Err(RouterError::Destination {
                destination: entry.destination.clone(),
                error: sluice_destinations::DeliveryError::permanent(format!(
                    "{} event(s) refused again, first: {}",
                    delivered.rejected.len(),
                    delivered.rejected[0].1
                )),
            });
        }
    }
    dlq.remove(&entry.destination, &entry.id)?;
    Ok(count)
}
