//! Running a destination's chain over the records it takes: on every core, and once for all
//! the destinations that share the chain (see `shared.rs`).

use bytes::Bytes;
use sluice_transformer::{Chain, Meta};

use crate::shared::{Outcome, SharedRuns};

/// The chain's outcome for each of `inputs` (whose log offsets are `offsets`), and how many
/// were taken from another destination's run. With `shared`, and as long as no script of the
/// chain reads `meta.destination` (asked per call: a reload can change it), each event is run
/// once for every destination of the chain.
pub(crate) fn outcomes(chain: &Chain, shared: Option<&SharedRuns>, offsets: &[u64], inputs: &[(&[u8], Meta<'_>)]) -> (Vec<Outcome>, usize) {
    let solo = |inputs: &[(&[u8], Meta<'_>)]| -> Vec<Outcome> {
        transform_parallel(chain, inputs)
            .into_iter()
            .map(|r| r.map(|outs| outs.into_iter().map(Bytes::from).collect()).map_err(|e| e.to_string()))
            .collect()
    };
    match shared {
        Some(runs) if !chain.reads_destination() => runs.outcomes(offsets, |mine| {
            let part: Vec<(&[u8], Meta<'_>)> = mine.iter().map(|&i| inputs[i]).collect();
            solo(&part)
        }),
        _ => (solo(inputs), 0),
    }
}

/// Below this many events a read is transformed on the calling thread: starting threads would
/// cost more than it saves.
const PARALLEL_MIN_EVENTS: usize = 256;

/// Transforms on every core: the events are cut into one contiguous chunk per core (outcomes
/// come back in input order). Scripts with `transform_batch` see a chunk as their batch.
fn transform_parallel(chain: &Chain, inputs: &[(&[u8], Meta<'_>)]) -> Vec<TransformOutcome> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || inputs.len() < PARALLEL_MIN_EVENTS {
        let mut outcomes = chain.apply_batch(inputs);
        retry_wall_clock_failures(chain, inputs, &mut outcomes);
        return outcomes;
    }
    let chunk = inputs.len().div_ceil(threads);
    let mut outcomes: Vec<TransformOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = inputs.chunks(chunk).map(|part| scope.spawn(move || chain.apply_batch(part))).collect();
        handles.into_iter().flat_map(|h| h.join().expect("transformations do not panic")).collect()
    });
    retry_wall_clock_failures(chain, inputs, &mut outcomes);
    outcomes
}

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
}
