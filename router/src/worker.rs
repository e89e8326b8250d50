//! One worker per destination: read from its cursor, filter, transform, batch, deliver in
//! per-user lanes, retry, dead-letter, and only then move the cursor.
//!
//! The cursor moves only after every event read so far is delivered or dead-lettered, so a crash
//! at any point re-delivers (at-least-once) and never skips. Workers share nothing but the log,
//! so a destination that is down only builds its own lag.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::value::RawValue;
use sluice_destinations::{Batch, DeliveryError, Destination, OutEvent};
use sluice_eventlog::{CorruptRecord, LogReader, LogSource, Record};
use sluice_recent::RecentErrors;
use sluice_transformer::Chain;
use tokio::sync::watch;

use crate::alert::Alerter;
use crate::config::DestinationConfig;
use crate::dlq::{DeadEvent, DeadLetters, Entry, Stage};
use crate::metric;
use crate::shared::SharedRuns;

/// What a worker is made of; the supervisor makes a fresh worker from it after a panic.
pub(crate) struct Spec {
    pub routed: crate::RoutedDestination,
    pub shared: Option<(Arc<SharedRuns>, usize)>,
    pub log: Arc<dyn LogSource>,
    pub dlq: Arc<DeadLetters>,
    pub alerts: Option<Arc<Alerter>>,
    /// Shared with the admin listener's readiness report; survives a worker's restart.
    pub failing_since: Arc<AtomicI64>,
    pub recent: Arc<RecentErrors>,
}

impl Spec {
    pub fn worker(&self) -> Worker {
        let d = &self.routed;
        Worker {
            id: Arc::from(d.config.id.as_str()),
            config: d.config.clone(),
            destination: d.destination.clone(),
            chain: d.chain.clone(),
            shared: self.shared.clone(),
            dlq: self.dlq.clone(),
            alerts: self.alerts.clone(),
            failing_since: self.failing_since.clone(),
            recent: self.recent.clone(),
        }
    }
}

pub(crate) struct Worker {
    pub id: Arc<str>,
    pub config: DestinationConfig,
    pub destination: Arc<dyn Destination>,
    pub chain: Chain,
    /// The chain's runs shared with the other destinations of the same chain, and this
    /// destination's index among them (`shared.rs`).
    pub shared: Option<(Arc<SharedRuns>, usize)>,
    pub dlq: Arc<DeadLetters>,
    pub alerts: Option<Arc<Alerter>>,
    /// Unix ms since which deliveries have been failing; 0 while healthy. Shared by the lanes
    /// and with the admin listener's readiness report.
    pub failing_since: Arc<AtomicI64>,
    pub recent: Arc<RecentErrors>,
}

/// Events read and processed, waiting for their batch to be delivered.
#[derive(Default)]
struct Pending {
    /// Lanes per log partition (one group, `None`, for the embedded log): a delivered batch
    /// never spans partitions, so its offsets name it (see `Batch::span_name`).
    groups: Vec<(Option<u32>, Vec<Vec<OutEvent>>)>,
    lanes: usize,
    events: usize,
    bytes: usize,
    oldest_received_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Dead letters found while processing (a failed transformation, a corrupt record), written
    /// by `fill` on the async side before it returns, so always before the cursor passes them.
    dead: Vec<DeadLetter>,
}

/// A batch's lanes as batches, each with what the destination prepared for it, waiting for the
/// previous delivery to finish. (Not `transform::Prepared`, the records made ready for lanes.)
struct ReadyBatches {
    batches: Vec<(Batch, Option<sluice_destinations::Prepared>)>,
    oldest_received_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A dead-letter entry waiting to be written, with the alert kind it raises.
pub(crate) struct DeadLetter {
    stage: Stage,
    events: Vec<DeadEvent>,
    reason: String,
    attempts: u32,
    first_failed: chrono::DateTime<chrono::Utc>,
    alert: &'static str,
}

impl Worker {
    /// Reads, transforms and batches the next events while the previous batch is delivered, so
    /// transformation (CPU) and delivery (network, encoding) overlap; a full batch is encoded
    /// while the one before it is still being written. Only one batch is written at a time:
    /// batch N+1 starts writing after batch N finished, which keeps each user's order, and the
    /// cursor moves to the end of batch N only once N is delivered.
    pub async fn run(self, mut reader: Box<dyn LogReader>, mut shutdown: watch::Receiver<bool>) {
        let id = self.id.clone();
        // Every series of this destination exists from the start at 0, so that the first dead
        // letter or retry is an increase Prometheus sees (rules alert on increase()).
        for name in [metric::DELIVERED, metric::RETRIED, metric::FAILED, metric::DEAD_LETTERED, metric::FILTERED, metric::TRANSFORM_FAILED] {
            metrics::counter!(name, "destination" => id.to_string()).increment(0);
        }
        if let Some(lag) = reader.lag() {
            metrics::gauge!(metric::LAG_EVENTS, "destination" => id.to_string()).set(lag as f64);
        }
        for name in [metric::DELIVERY_SECONDS, metric::BATCH_EVENTS] {
            let _ = metrics::histogram!(name, "destination" => id.to_string());
        }
        let this = Arc::new(self);
        tracing::info!(destination = %id, cursor = %reader.position(), "destination worker started");
        // Cursor commits run in their own task, one at a time, always of the newest delivered
        // position: a delivery hands its end over and is done, instead of waiting for two
        // fsyncs. Positions that arrive while a commit runs are folded into the next one.
        let (delivered_to, commits) = watch::channel(None);
        let delivered_to = Arc::new(delivered_to);
        let committing = tokio::spawn(commit_delivered(id.clone(), reader.committer(), commits));
        // The delivery in flight; it yields false when a shutdown interrupted its retries.
        let mut in_flight: Option<tokio::task::JoinHandle<bool>> = None;
        while !*shutdown.borrow() {
            let mut pending = Pending { lanes: this.config.lanes, ..Default::default() };
            // The delivery is watched while the next batch fills, so that a panic in it brings
            // this worker down (and its supervisor restarts it) at once, not when the next
            // events happen to arrive.
            let mut delivered = None;
            let filled = {
                let fill = this.fill(reader.as_mut(), &mut pending, &mut shutdown);
                tokio::pin!(fill);
                loop {
                    tokio::select! {
                        filled = &mut fill => break filled,
                        done = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                            in_flight = None;
                            delivered = Some(joined(done));
                        }
                    }
                }
            };
            if delivered == Some(false) {
                // Stopped between retries: the cursor stays before that batch, so all of it
                // (and what was read since) is read and delivered again next start.
                break;
            }
            if !filled {
                break;
            }
            let end = reader.position();
            let lag = reader.lag();
            let (worker, stop, delivered_to) = (this.clone(), shutdown.clone(), delivered_to.clone());
            // The next delivery starts now and encodes its batches (`Destination::prepare`) while
            // the previous one may still be writing, but writes nothing before that one is done
            // (`go`): it holds the older events of the same users. Still at most two batches in
            // memory: the next fill starts only after the previous delivery has finished.
            let (go, start) = tokio::sync::oneshot::channel::<bool>();
            let next = tokio::spawn(async move {
                let batches = worker.prepare(pending).await;
                if !start.await.unwrap_or(false) {
                    return false;
                }
                if !worker.flush(batches, &stop).await {
                    return false;
                }
                delivered_to.send_replace(Some(end));
                if let Some(lag) = lag {
                    metrics::gauge!(metric::LAG_EVENTS, "destination" => worker.id.to_string()).set(lag as f64);
                }
                true
            });
            let previous = match in_flight.take() {
                Some(delivery) => joined(delivery.await),
                None => true,
            };
            // A dropped `go` (this task unwinding from a panic above) reads as false too.
            let _ = go.send(previous);
            if !previous {
                joined(next.await);
                break;
            }
            in_flight = Some(next);
        }
        if let Some(delivery) = in_flight.take() {
            joined(delivery.await);
        }
        // The last delivered position is persisted before the worker reports it has stopped.
        drop(delivered_to);
        let _ = committing.await;
        tracing::info!(destination = %id, "destination worker stopped");
    }

    /// Reads until a batch limit or the batch's age is reached. Returns false on shutdown (what
    /// was read but not delivered is read again after the restart).
    async fn fill(&self, reader: &mut dyn LogReader, pending: &mut Pending, shutdown: &mut watch::Receiver<bool>) -> bool {
        let limits = &self.config.batch;
        let max_age = Duration::from_millis(limits.max_age_ms);
        let mut started: Option<Instant> = None;
        let mut consumed_any = false;
        loop {
            let mut wait = match started {
                Some(t) => max_age.saturating_sub(t.elapsed()),
                None => Duration::from_millis(500),
            };
            if started.is_some() && wait.is_zero() {
                return true;
            }
            if let Some(at) = pending.oldest_received_at {
                // Events that have already waited `max_age` in the log (the end of a backlog)
                // do not wait again for more to arrive: what is there is read on (wait 0) and
                // the batch goes as soon as the reader has caught up. While records keep
                // coming, the batch still fills to its size limits.
                let waited = (chrono::Utc::now() - at).to_std().unwrap_or_default();
                wait = wait.min(max_age.saturating_sub(waited));
            }
            let want = limits.max_events.saturating_sub(pending.events).max(1);
            let room = limits.max_bytes.saturating_sub(pending.bytes).max(1);
            let read = tokio::select! {
                r = reader.read(want, room, wait) => r,
                _ = shutdown.changed() => return false,
            };
            let records = match read {
                Ok(r) => r,
                Err(error) => {
                    tracing::error!(destination = %self.id, %error, "cannot read the event log; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let corrupt = reader.take_corrupt();
            if !corrupt.is_empty() {
                // The reader has moved past them: they count as consumed, so the batch ends and
                // the cursor is committed after they are dead-lettered.
                consumed_any = true;
                started.get_or_insert_with(Instant::now);
                pending.dead.extend(corrupt.iter().map(|c| self.quarantined(c)));
            }
            if records.is_empty() {
                if !self.write_dead_letters(pending, shutdown).await {
                    return false;
                }
                if started.is_some() || consumed_any {
                    return true;
                }
                metrics::gauge!(metric::LAG_SECONDS, "destination" => self.id.to_string()).set(0.0);
                continue;
            }
            consumed_any = true;
            started.get_or_insert_with(Instant::now);
            tokio::task::block_in_place(|| self.process(&records, pending));
            if let Some((runs, member)) = &self.shared {
                if let Some(at) = reader.position().as_offset() {
                    runs.passed(*member, at);
                }
            }
            if !self.write_dead_letters(pending, shutdown).await {
                return false;
            }
            if pending.events >= limits.max_events || pending.bytes >= limits.max_bytes {
                return true;
            }
        }
    }

    /// Filters and transforms records into lanes (`transform::prepare`); records that cannot be
    /// routed or transformed are dead-lettered.
    fn process(&self, records: &[Record], pending: &mut Pending) {
        let shared = self.shared.as_ref().map(|(runs, _)| &**runs);
        let prepared = crate::transform::prepare(&self.config, &self.chain, shared, records);
        if prepared.filtered > 0 {
            metrics::counter!(metric::FILTERED, "destination" => self.id.to_string()).increment(prepared.filtered);
        }
        if prepared.taken > 0 {
            metrics::counter!(metric::TRANSFORM_SHARED, "destination" => self.id.to_string()).increment(prepared.taken as u64);
        }
        if pending.oldest_received_at.is_none() {
            pending.oldest_received_at = prepared.oldest_received_at;
        }
        for record in prepared.not_objects {
            pending.dead.push(self.dead_letter(Stage::Transform, &[record], "stored event is not a JSON object".into(), 0));
        }
        reserve(pending, &prepared.events);
        for (partition, lane, event) in prepared.events {
            push(pending, partition, lane, event);
        }
        for (record, error) in prepared.failed {
            metrics::counter!(metric::TRANSFORM_FAILED, "destination" => self.id.to_string()).increment(1);
            tracing::warn!(destination = %self.id, offset = record.offset, %error, "transformation failed; event dead-lettered");
            pending.dead.push(self.dead_letter(Stage::Transform, &[record], error, 1));
        }
    }

    /// Turns the lanes into batches and has the destination prepare (encode) them, every lane
    /// at once.
    async fn prepare(&self, pending: Pending) -> ReadyBatches {
        let batches: Vec<Batch> = pending
            .groups
            .into_iter()
            .flat_map(|(partition, lanes)| lanes.into_iter().filter(|l| !l.is_empty()).map(move |events| (partition, events)))
            .map(|(partition, events)| Batch { destination: self.id.clone(), partition, events })
            .collect();
        let prepared = join_all(batches.iter().map(|b| self.destination.prepare(b))).await;
        ReadyBatches { batches: batches.into_iter().zip(prepared).collect(), oldest_received_at: pending.oldest_received_at }
    }

    /// Delivers every lane concurrently, each with its own retries. Returns false when a
    /// shutdown interrupted a lane's retries, so the batch must not be marked as done.
    async fn flush(&self, ready: ReadyBatches, shutdown: &watch::Receiver<bool>) -> bool {
        if ready.batches.is_empty() {
            return true;
        }
        if let Some(t) = ready.oldest_received_at {
            let lag = (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0;
            metrics::gauge!(metric::LAG_SECONDS, "destination" => self.id.to_string()).set(lag.max(0.0));
        }
        let done = join_all(ready.batches.into_iter().map(|(batch, encoded)| self.deliver(batch, encoded, shutdown.clone()))).await;
        done.into_iter().all(|d| d)
    }

    /// Delivers one lane's batch, retrying temporary failures. Returns true once the batch is
    /// delivered or dead-lettered, false if a shutdown came while it was failing: an attempt in
    /// flight is finished (it is bounded by the destination's timeout), but no new attempt starts,
    /// or a stop would wait out the whole retry policy (up to `max_age_secs`, an hour by default).
    async fn deliver(&self, batch: Batch, prepared: Option<sluice_destinations::Prepared>, mut shutdown: watch::Receiver<bool>) -> bool {
        let dest = self.id.to_string();
        let retry = &self.config.retry;
        let first_failed = chrono::Utc::now();
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let t0 = Instant::now();
            let write = async {
                match &prepared {
                    Some(p) => self.destination.deliver_prepared(&batch, p).await,
                    None => self.destination.deliver(&batch).await,
                }
            };
            let result = match tokio::time::timeout(self.destination.timeout(), write).await {
                Ok(r) => r,
                Err(_) => Err(DeliveryError::temporary(format!("timed out after {:?}", self.destination.timeout()))),
            };
            metrics::histogram!(metric::DELIVERY_SECONDS, "destination" => dest.clone()).record(t0.elapsed().as_secs_f64());
            match result {
                Ok(delivered) => {
                    let rejected = delivered.rejected.len();
                    metrics::counter!(metric::DELIVERED, "destination" => dest.clone()).increment((batch.events.len() - rejected) as u64);
                    metrics::histogram!(metric::BATCH_EVENTS, "destination" => dest.clone()).record(batch.events.len() as f64);
                    for (index, reason) in delivered.rejected {
                        if let Some(ev) = batch.events.get(index) {
                            let dead = self.dead_letter_out(batch.partition, std::slice::from_ref(ev), format!("refused by the destination: {reason}"), attempt, first_failed);
                            if !self.store(dead, &shutdown).await {
                                return false;
                            }
                        }
                    }
                    self.recovered();
                    return true;
                }
                Err(error) => {
                    let retriable = error.is_retriable()
                        && attempt < retry.max_attempts
                        && started.elapsed() < Duration::from_secs(retry.max_age_secs);
                    self.failing(&error);
                    if !retriable {
                        metrics::counter!(metric::FAILED, "destination" => dest.clone()).increment(batch.events.len() as u64);
                        tracing::error!(destination = %dest, attempts = attempt, %error, events = batch.events.len(), "delivery failed for good; batch dead-lettered");
                        let dead = self.dead_letter_out(batch.partition, &batch.events, error.to_string(), attempt, first_failed);
                        return self.store(dead, &shutdown).await;
                    }
                    let wait = error.retry_after().unwrap_or_default().max(retry.backoff(attempt - 1));
                    metrics::counter!(metric::RETRIED, "destination" => dest.clone()).increment(1);
                    self.recent.push("delivery_failed", &dest, format_args!("attempt {attempt}: {error}; retrying in {} ms", wait.as_millis()));
                    tracing::warn!(destination = %dest, attempt, %error, wait_ms = wait.as_millis() as u64, "batch delivery failed; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        // A dropped Router (Err) stops the worker too, as it does in `fill`.
                        _ = shutdown.wait_for(|stop| *stop) => {
                            tracing::info!(destination = %dest, attempts = attempt, events = batch.events.len(), "stopping while the batch is failing; it is delivered again after the restart");
                            return false;
                        }
                    }
                }
            }
        }
    }

    fn failing(&self, error: &DeliveryError) {
        let now = chrono::Utc::now().timestamp_millis();
        let since = match self.failing_since.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => now,
            Err(since) => since,
        };
        if let Some(alerts) = &self.alerts {
            let failing_for = Duration::from_millis((now - since).max(0) as u64);
            if failing_for >= alerts.failing_after() {
                let text = format!(
                    ":warning: Sluice destination `{}` has been failing for {}s (events wait in the log, nothing is lost): {error}",
                    self.id,
                    failing_for.as_secs()
                );
                // Posted on the side: a slow chat webhook must not delay the next retry.
                let (alerts, dest) = (alerts.clone(), self.id.clone());
                tokio::spawn(async move { alerts.notify(&dest, "failing", text).await });
            }
        }
    }

    fn recovered(&self) {
        self.failing_since.store(0, Ordering::Release);
    }

    fn dead_letter_out(&self, partition: Option<u32>, events: &[OutEvent], reason: String, attempts: u32, first_failed: chrono::DateTime<chrono::Utc>) -> DeadLetter {
        let events = events
            .iter()
            .filter_map(|e| {
                let raw = RawValue::from_string(String::from_utf8_lossy(&e.json).into_owned()).ok()?;
                Some(DeadEvent { partition, offset: e.offset, source: e.source.to_string(), write_key_id: String::new(), event: raw })
            })
            .collect();
        DeadLetter { stage: Stage::Delivery, events, reason, attempts, first_failed, alert: "dead_letter" }
    }

    fn dead_letter(&self, stage: Stage, records: &[&Record], reason: String, attempts: u32) -> DeadLetter {
        let events = records
            .iter()
            .map(|r| DeadEvent {
                partition: r.partition,
                offset: r.offset,
                source: r.source.to_string(),
                write_key_id: r.write_key_id.to_string(),
                // A record the log could not parse is kept as a JSON string so nothing is lost.
                event: RawValue::from_string(String::from_utf8_lossy(&r.event).into_owned()).unwrap_or_else(|_| {
                    RawValue::from_string(serde_json::to_string(&String::from_utf8_lossy(&r.event)).unwrap()).unwrap()
                }),
            })
            .collect();
        DeadLetter { stage, events, reason, attempts, first_failed: chrono::Utc::now(), alert: "dead_letter" }
    }

    /// A corrupt record the reader skipped, as a dead letter: its raw bytes (base64, they are not
    /// JSON) with where they were, so nothing the disk still holds is lost.
    fn quarantined(&self, c: &CorruptRecord) -> DeadLetter {
        use base64::Engine as _;
        metrics::counter!(metric::CORRUPT_RECORDS, "destination" => self.id.to_string()).increment(c.records);
        let event = serde_json::json!({
            "corrupt_record": {
                "segment": c.segment,
                "position": c.position,
                "offset": c.offset,
                "records": c.records,
                "reason": c.reason,
                "bytes_base64": base64::engine::general_purpose::STANDARD.encode(&c.bytes),
            }
        });
        let last = c.offset + c.records - 1;
        let offsets = if last == c.offset { format!("offset {}", c.offset) } else { format!("offsets {}-{last}", c.offset) };
        DeadLetter {
            stage: Stage::Corrupt,
            events: vec![DeadEvent {
                partition: None,
                offset: c.offset,
                source: String::new(),
                write_key_id: String::new(),
                event: RawValue::from_string(event.to_string()).expect("serde_json output is JSON"),
            }],
            reason: format!("corrupt_record: {offsets}, byte {} of {}: {}", c.position, c.segment, c.reason),
            attempts: 0,
            first_failed: chrono::Utc::now(),
            alert: "corrupt_record",
        }
    }

    async fn write_dead_letters(&self, pending: &mut Pending, shutdown: &watch::Receiver<bool>) -> bool {
        for dead in std::mem::take(&mut pending.dead) {
            if !self.store(dead, shutdown).await {
                return false;
            }
        }
        true
    }

    /// Writes a dead letter, on the blocking pool: a disk that is slow or full must not hold a
    /// runtime thread, which other destinations need. A dead letter is never dropped: while the
    /// store cannot be written (disk full, a path that is not a directory) it is retried every
    /// second; the destination stalls and its lag grows, which is visible and loses nothing.
    /// Returns false if a shutdown came first (the cursor then stays before the events).
    async fn store(&self, dead: DeadLetter, shutdown: &watch::Receiver<bool>) -> bool {
        let count = dead.events.len();
        let stage = dead.stage;
        let entry = Entry {
            id: String::new(),
            destination: self.id.to_string(),
            stage: dead.stage,
            reason: dead.reason.clone(),
            attempts: dead.attempts,
            first_failed_at: dead.first_failed.to_rfc3339(),
            dead_lettered_at: chrono::Utc::now().to_rfc3339(),
            events: dead.events,
        };
        let mut shutdown = shutdown.clone();
        let id = loop {
            let (dlq, attempt) = (self.dlq.clone(), entry.clone());
            let written = tokio::task::spawn_blocking(move || dlq.put(attempt))
                .await
                .unwrap_or_else(|e| Err(crate::RouterError::DeadLetter(format!("dead-letter write panicked: {e}"))));
            match written {
                Ok(id) => break id,
                Err(error) => {
                    metrics::counter!(metric::DEAD_LETTER_WRITE_FAILED, "destination" => self.id.to_string()).increment(1);
                    tracing::error!(destination = %self.id, %error, events = count, "could not write the dead-letter entry; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return false,
                    }
                }
            }
        };
        metrics::counter!(metric::DEAD_LETTERED, "destination" => self.id.to_string()).increment(count as u64);
        let kind = match stage {
            Stage::Transform => "transform_failed",
            Stage::Delivery => "dead_lettered",
            Stage::Corrupt => "corrupt_record",
        };
        self.recent.push(kind, &self.id, format_args!("{count} event(s) dead-lettered (entry {id}): {}", dead.reason));
        if let Some(alerts) = self.alerts.clone() {
            let (reason, dest) = (dead.reason, self.id.clone());
            let text = if dead.alert == "corrupt_record" {
                format!(
                    ":rotating_light: Sluice found a corrupt record in its event log while reading for destination `{dest}` and skipped it (entry {id}): {reason}. The raw bytes are in `sluice dlq show {id}`; check the disk."
                )
            } else {
                format!(
                    ":rotating_light: Sluice dead-lettered {count} event(s) for destination `{dest}` (entry {id}): {reason}. Inspect with `sluice dlq show {id}`, replay with `sluice dlq replay --destination {dest}`."
                )
            };
            let kind = dead.alert;
            tokio::spawn(async move { alerts.notify(&dest, kind, text).await });
        }
        true
    }
}

/// Persists the newest position sent on `delivered` until every sender is gone. `changed` still
/// reports a position sent just before the last sender was dropped, so the final one is
/// committed too.
async fn commit_delivered(id: Arc<str>, committer: Arc<dyn sluice_eventlog::LogCommitter>, mut delivered: watch::Receiver<Option<sluice_eventlog::Position>>) {
    while delivered.changed().await.is_ok() {
        let Some(position) = delivered.borrow_and_update().clone() else { continue };
        if let Err(error) = committer.commit(&position).await {
            tracing::error!(destination = %id, %error, "could not persist the cursor; events may be re-delivered");
        }
    }
}

/// The outcome of a delivery task. A panic in it is the worker's panic: raised again so the
/// supervisor sees it, instead of reading as a stop.
fn joined(result: Result<bool, tokio::task::JoinError>) -> bool {
    match result {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => false,
    }
}

/// Makes room in the lanes for `events` at once: a batch fills from reads of thousands of events,
/// and lanes grown by doubling copied themselves into fresh pages on the way (BENCHMARKS.md,
/// issue 16, the page-fault profile).
fn reserve(pending: &mut Pending, events: &[(Option<u32>, usize, OutEvent)]) {
    let Some((partition, _, _)) = events.first() else { return };
    if events.iter().any(|(p, _, _)| p != partition) {
        return; // several partitions in one read (Kafka): rare, the lanes grow as they go
    }
    let mut per_lane = vec![0usize; pending.lanes];
    for (_, lane, _) in events {
        per_lane[*lane] += 1;
    }
    let group = group_of(pending, *partition);
    for (lane, n) in pending.groups[group].1.iter_mut().zip(per_lane) {
        lane.reserve(n);
    }
}

fn group_of(pending: &mut Pending, partition: Option<u32>) -> usize {
    match pending.groups.iter().position(|(p, _)| *p == partition) {
        Some(i) => i,
        None => {
            pending.groups.push((partition, vec![Vec::new(); pending.lanes]));
            pending.groups.len() - 1
        }
    }
}

fn push(pending: &mut Pending, partition: Option<u32>, lane: usize, event: OutEvent) {
    pending.events += 1;
    pending.bytes += event.json.len();
    let group = group_of(pending, partition);
    pending.groups[group].1[lane].push(event);
}
