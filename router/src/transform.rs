//! What a destination makes of the records it reads: its rule for which events it takes, then
//! its chain, run on every core and once for all the destinations that share it (`shared.rs`).
//! The worker and a dead-letter replay both go through [`prepare`], so a replayed event meets
//! the same filter, scripts and wall-clock retry as a live one.

use bytes::Bytes;
use sluice_destinations::OutEvent;
use sluice_eventlog::Record;
use sluice_transformer::{Chain, Meta};

use crate::config::DestinationConfig;
use crate::shared::{Outcome, SharedRuns};

/// Records made ready for delivery.
#[derive(Default)]
pub(crate) struct Prepared<'r> {
    /// Output events, each with its record's partition and its per-user lane, in input order.
    pub events: Vec<(Option<u32>, usize, OutEvent)>,
    /// Records the destination does not take (sources, integrations, filter).
    pub filtered: u64,
    /// Records that are not a JSON object, so have no head to route by.
    pub not_objects: Vec<&'r Record>,
    /// Records whose transformation failed, with the reason.
    pub failed: Vec<(&'r Record, String)>,
    /// How many chain outcomes came from another destination's run.
    pub taken: usize,
    /// `receivedAt` of the first record taken: the batch's age and the lag gauge count from it.
    pub oldest_received_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Filters `records` by the destination's rule and runs its chain over those it takes.
pub(crate) fn prepare<'r>(config: &DestinationConfig, chain: &Chain, shared: Option<&SharedRuns>, records: &'r [Record]) -> Prepared<'r> {
    // The memo is keyed by offset, which names a record only in a log of one partition (the
    // embedded log). On Kafka each destination runs its chain itself.
    let shared = shared.filter(|_| records.iter().all(|r| r.partition.is_none()));
    let mut prepared = Prepared::default();
    // (record, lane, messageId): the head the collector kept with the event, so routing reads no JSON.
    let mut taken: Vec<(&Record, usize, std::borrow::Cow<'r, str>)> = Vec::with_capacity(records.len());
    for record in records {
        let Some(head) = record.head() else {
            prepared.not_objects.push(record);
            continue;
        };
        if !config.takes(&head, &record.source) {
            prepared.filtered += 1;
            continue;
        }
        if prepared.oldest_received_at.is_none() && !head.received_at.is_empty() {
            prepared.oldest_received_at = chrono::DateTime::parse_from_rfc3339(&head.received_at).ok().map(|t| t.to_utc());
        }
        taken.push((record, lane(&head.user, config.lanes), head.message_id));
    }
    if chain.is_empty() {
        prepared.events = taken
            .into_iter()
            .map(|(r, lane, _)| (r.partition, lane, OutEvent { offset: r.offset, source: r.source.clone(), json: r.event.clone() }))
            .collect();
        return prepared;
    }
    let inputs: Vec<(&[u8], Meta<'_>)> = taken
        .iter()
        .map(|(r, _, mid)| (&r.event[..], Meta::new(&r.source, &config.id, mid).with_write_key_id(&r.write_key_id)))
        .collect();
    let offsets: Vec<u64> = taken.iter().map(|(r, _, _)| r.offset).collect();
    let (outcomes, shared_runs) = outcomes(chain, shared, &offsets, &inputs);
    prepared.taken = shared_runs;
    // Grown by doubling, this vector was a fifth of a drain's page faults (with the lanes').
    prepared.events.reserve(taken.len());
    for ((record, lane, _), outcome) in taken.into_iter().zip(outcomes) {
        match outcome {
            Ok(outs) => prepared
                .events
                .extend(outs.into_iter().map(|json| (record.partition, lane, OutEvent { offset: record.offset, source: record.source.clone(), json }))),
            Err(error) => prepared.failed.push((record, error)),
        }
    }
    prepared
}

/// Lane of an event: the same user always maps to the same lane, which keeps each user's events
/// in order while lanes run in parallel.
fn lane(user: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

/// The chain's outcome for each of `inputs` (whose log offsets are `offsets`), and how many
/// were taken from another destination's run. With `shared`, and as long as no script of the
/// chain reads `meta.destination` (asked per call: a reload can change it), each event is run
/// once for every destination of the chain.
fn outcomes(chain: &Chain, shared: Option<&SharedRuns>, offsets: &[u64], inputs: &[(&[u8], Meta<'_>)]) -> (Vec<Outcome>, usize) {
    match shared {
        Some(runs) if !chain.reads_destination() => runs.outcomes(offsets, |mine| {
            let part: Vec<(&[u8], Meta<'_>)> = mine.iter().map(|&i| inputs[i]).collect();
            transform_parallel(chain, &part)
        }),
        _ => (transform_parallel(chain, inputs), 0),
    }
}

/// Below this many events a read is transformed on the calling thread: starting threads would
/// cost more than it saves.
const PARALLEL_MIN_EVENTS: usize = 256;

/// Transforms on every core: the events are cut into one contiguous chunk per core (outcomes
/// come back in input order). Scripts with `transform_batch` see a chunk as their batch.
///
/// The chunks run on rayon's pool, one set of threads for every destination for the life of
/// the process. Before, each read started and joined its own threads, so four destinations
/// draining at once ran eight of them on two cores (BENCHMARKS.md, issue 16, has the drain's
/// figures with and without).
fn transform_parallel(chain: &Chain, inputs: &[(&[u8], Meta<'_>)]) -> Vec<Outcome> {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let run = |part: &[(&[u8], Meta<'_>)]| {
        let mut outcomes = chain.apply_batch(part);
        retry_wall_clock_failures(chain, part, &mut outcomes);
        pack(outcomes)
    };
    if threads < 2 || inputs.len() < PARALLEL_MIN_EVENTS {
        return run(inputs);
    }
    let chunk = inputs.len().div_ceil(threads);
    let parts: Vec<Vec<Outcome>> = inputs.par_chunks(chunk).map(run).collect();
    let mut outcomes = Vec::with_capacity(inputs.len());
    outcomes.extend(parts.into_iter().flatten());
    outcomes
}

/// The output events of a run copied into shared buffers of about [`PACK_BYTES`], each event a
/// slice of one. The chain gives every event its own allocation, made on a transforming thread
/// and freed on whichever thread delivers it last, with the shared handle `Bytes` adds to each;
/// the allocator took 9% of a one-destination drain's CPU, most of it in such frees
/// (BENCHMARKS.md, issue 16). Here the chain's buffers are freed at once, on the thread that made
/// them. A buffer stays in memory until every event in it is delivered everywhere, so buffers are
/// kept small: with one buffer per run (megabytes) single four-destination drains peaked 5-60 MB
/// higher.
fn pack(outcomes: Vec<TransformOutcome>) -> Vec<Outcome> {
    let mut left: usize = outcomes.iter().filter_map(|o| o.as_ref().ok()).flatten().map(Vec::len).sum();
    let mut buffers: Vec<Bytes> = Vec::new();
    // Per output: its buffer and its span there.
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for out in outcomes.iter().filter_map(|o| o.as_ref().ok()).flatten() {
        if !buf.is_empty() && buf.len() + out.len() > buf.capacity() {
            buffers.push(Bytes::from(std::mem::take(&mut buf)));
        }
        if buf.is_empty() {
            buf.reserve_exact(left.min(PACK_BYTES).max(out.len()));
        }
        spans.push((buffers.len(), buf.len(), buf.len() + out.len()));
        buf.extend_from_slice(out);
        left -= out.len();
    }
    if !buf.is_empty() {
        buffers.push(Bytes::from(buf));
    }
    let mut spans = spans.into_iter();
    outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok(outs) => Ok(outs
                .iter()
                .map(|_| {
                    let (n, start, end) = spans.next().expect("one span per output");
                    buffers[n].slice(start..end)
                })
                .collect()),
            Err(e) => Err(e.to_string()),
        })
        .collect()
}

/// Size of the buffers [`pack`] fills: under mimalloc's large-object size, and about a hundred
/// chat events, so one event still pending keeps little else in memory.
const PACK_BYTES: usize = 64 << 10;

/// The wall-clock limit measures elapsed time, so on a loaded machine a thread that was simply
/// not scheduled for a while can hit it with a healthy script. Such an event gets one more run
/// on its own before it counts as failed: a runaway script fails again, a preempted one passes.
fn retry_wall_clock_failures(chain: &Chain, inputs: &[(&[u8], Meta<'_>)], outcomes: &mut [TransformOutcome]) {
    use sluice_transformer::{LimitKind, TransformError};
    for (input, outcome) in inputs.iter().zip(outcomes.iter_mut()) {
        if matches!(outcome, Err(TransformError::Limit { kind: LimitKind::WallClock, .. })) {
            if let Some(again) = chain.apply_batch(std::slice::from_ref(input)).pop() {
                *outcome = again;
            }
        }
    }
}

type TransformOutcome = Result<Vec<Vec<u8>>, sluice_transformer::TransformError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel path must give exactly what one thread gives, in input order, with failures
    /// staying on their own events.
    #[test]
    fn parallel_transformation_keeps_input_order_and_per_event_errors() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("t.rhai");
        std::fs::write(
            &script,
            "fn transform(event, meta) { if event.n % 97 == 0 { throw \"bad \" + event.n } event.doubled = event.n * 2; event }",
        )
        .unwrap();
        let config: sluice_transformer::TransformationConfig =
            serde_yaml::from_str(&format!("id: t\nscript: {}", script.display())).unwrap();
        let chain = sluice_transformer::Registry::load(&[config]).unwrap().chain(&["t".to_string()]).unwrap();
        let events: Vec<Vec<u8>> = (0..1000).map(|n| format!(r#"{{"n":{n}}}"#).into_bytes()).collect();
        let inputs: Vec<(&[u8], Meta<'_>)> = events.iter().map(|e| (&e[..], Meta::new("web", "d", "m"))).collect();
        assert!(inputs.len() >= PARALLEL_MIN_EVENTS);
        let parallel = transform_parallel(&chain, &inputs);
        assert_eq!(parallel.len(), 1000);
        for (n, outcome) in parallel.iter().enumerate() {
            if n % 97 == 0 {
                assert!(outcome.as_ref().unwrap_err().to_string().contains(&format!("bad {n}")));
            } else {
                let out: serde_json::Value = serde_json::from_slice(&outcome.as_ref().unwrap()[0]).unwrap();
                assert_eq!(out["doubled"], serde_json::json!(n * 2), "event {n} out of place");
            }
        }
    }

    /// Splits, drops and failures keep their places when the outputs are packed into shared buffers.
    #[test]
    fn packed_outputs_keep_their_events_and_places() {
        use sluice_transformer::TransformError;
        let outcomes: Vec<TransformOutcome> = vec![
            Ok(vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]),
            Err(TransformError::DuplicateId("boom".into())),
            Ok(vec![]),
            Ok(vec![b"{\"c\":3}".to_vec()]),
        ];
        let packed = pack(outcomes);
        assert_eq!(packed.len(), 4);
        let texts = |o: &Outcome| o.as_ref().unwrap().iter().map(|b| String::from_utf8(b.to_vec()).unwrap()).collect::<Vec<_>>();
        assert_eq!(texts(&packed[0]), ["{\"a\":1}", "{\"b\":2}"]);
        assert!(packed[1].as_ref().unwrap_err().contains("boom"));
        assert!(texts(&packed[2]).is_empty());
        assert_eq!(texts(&packed[3]), ["{\"c\":3}"]);

        // More than one buffer's worth, and an output larger than a buffer.
        let big = |n: usize, len: usize| format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(len)).into_bytes();
        let outcomes: Vec<TransformOutcome> = (0..500).map(|n| Ok(vec![big(n, if n == 250 { 3 * PACK_BYTES } else { 700 })])).collect();
        let packed = pack(outcomes);
        for (n, outcome) in packed.iter().enumerate() {
            let out: serde_json::Value = serde_json::from_slice(&outcome.as_ref().unwrap()[0]).unwrap();
            assert_eq!(out["n"], serde_json::json!(n));
        }
    }
}
