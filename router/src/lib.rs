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
mod filter;
mod shared;
mod spill;
mod transform;
mod worker;

mod supervise;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sluice_destinations::{Batch, Destination, OutEvent};
use sluice_eventlog::{LogSource, Record};
use sluice_recent::RecentErrors;
use sluice_transformer::Chain;
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
    /// Events whose transformation a destination took from another destination's run of the
    /// same chain instead of running it again.
    pub const TRANSFORM_SHARED: &str = "sluice_transform_shared_total";
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
        let destinations: Vec<RoutedDestination> = destinations.into_iter().filter(|d| d.config.enabled).collect();
        let mut shared = share_chains(&destinations, dlq.dir()).into_iter();
        for d in destinations {
            let shared = shared.next().expect("one entry per destination");
            let reader = log.reader(&d.config.id)?;
            let state = DestinationState { id: Arc::from(d.config.id.as_str()), failing_since: Arc::default() };
            states.push(state.clone());
            let spec = worker::Spec {
                routed: d,
                shared,
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

/// Destinations with the same non-empty chain (the same transformation ids in the same order)
/// share one memo of its outcomes, unless a script of it reads `meta.destination`: one entry per
/// destination, in order, with its index in its group. The memo spills to unlinked files in
/// `dir` (the dead-letter directory: the one place on disk the router owns; the files are
/// never visible there).
fn share_chains(destinations: &[RoutedDestination], dir: &std::path::Path) -> Vec<Option<(Arc<shared::SharedRuns>, usize)>> {
    let mut groups: std::collections::HashMap<&[String], Vec<usize>> = std::collections::HashMap::new();
    for (i, d) in destinations.iter().enumerate() {
        if !d.chain.is_empty() && !d.chain.reads_destination() {
            groups.entry(&d.config.transformations).or_default().push(i);
        }
    }
    let mut out: Vec<Option<(Arc<shared::SharedRuns>, usize)>> = vec![None; destinations.len()];
    for members in groups.into_values().filter(|m| m.len() > 1) {
        let spill = spill::Spill::new(dir.to_path_buf(), spill::CAP_BYTES);
        let runs = Arc::new(shared::SharedRuns::new(members.len(), shared::BUDGET_BYTES, Some(spill)));
        let ids: Vec<&str> = members.iter().map(|&i| destinations[i].config.id.as_str()).collect();
        tracing::info!(destinations = ?ids, chain = ?destinations[members[0]].config.transformations,
            "these destinations share one run of their transformation chain");
        for (member, &i) in members.iter().enumerate() {
            out[i] = Some((runs.clone(), member));
        }
    }
    out
}

/// What a replay of one dead-letter entry did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Events the destination accepted.
    pub delivered: usize,
    /// Events the destination no longer takes (its `sources`, `filter` or the event's
    /// `integrations`, as configured now): not delivered, as a live worker would not.
    pub filtered: u64,
}

/// Delivers one dead-letter entry again (one attempt). An entry dead-lettered before delivery
/// (a failed transformation) takes the worker's own path again (`transform::prepare`): the
/// destination's current filter, then its current chain with the wall-clock retry. An entry that
/// failed in delivery holds transformed events and is delivered as it is. On success the entry
/// is removed from the store; on any failure it stays.
pub async fn replay(
    dlq: &DeadLetters,
    entry: &Entry,
    config: &DestinationConfig,
    destination: &dyn Destination,
    chain: &Chain,
) -> Result<Replayed, RouterError> {
    if entry.stage == Stage::Corrupt {
        return Err(RouterError::DeadLetter(format!(
            "entry {} holds corrupt log bytes, not an event: nothing to replay (look at it with `sluice dlq show {}`, then purge it)",
            entry.id, entry.id
        )));
    }
    let dest: Arc<str> = Arc::from(entry.destination.as_str());
    // An entry holds the events of one batch, and a batch never spans partitions.
    let partition = entry.events.first().and_then(|e| e.partition);
    let mut replayed = Replayed::default();
    let events: Vec<OutEvent> = if entry.stage == Stage::Transform {
        let records: Vec<Record> = entry
            .events
            .iter()
            .map(|e| {
                let json = e.event.get().as_bytes();
                let head = sluice_eventlog::EventHead::parse(json).ok();
                Record::new(e.offset, Arc::from(e.source.as_str()), Arc::from(e.write_key_id.as_str()), head.as_ref(), Bytes::copy_from_slice(json))
            })
            .collect();
        // Entries are small (one event per failed transformation): run on this thread.
        let prepared = transform::prepare(config, chain, None, &records);
        if let Some(record) = prepared.not_objects.first() {
            return Err(RouterError::Replay(format!("entry {}: the event at offset {} is not a JSON object", entry.id, record.offset)));
        }
        if let Some((record, error)) = prepared.failed.first() {
            return Err(RouterError::Replay(format!(
                "entry {}: the transformation failed again on the event at offset {}: {error}",
                entry.id, record.offset
            )));
        }
        replayed.filtered = prepared.filtered;
        prepared.events.into_iter().map(|(_, _, event)| event).collect()
    } else {
        entry
            .events
            .iter()
            .map(|e| OutEvent { offset: e.offset, source: Arc::from(e.source.as_str()), json: Bytes::copy_from_slice(e.event.get().as_bytes()) })
            .collect()
    };
    replayed.delivered = events.len();
    if !events.is_empty() {
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
    Ok(replayed)
}
