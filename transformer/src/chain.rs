//! The ordered list of transformations attached to one destination.
//!
//! An event is parsed once, passed through every script as a Rhai value, and serialised once at
//! the end. Errors are per input event: one event that fails (a script error, a limit) yields an
//! `Err` for that event only, and the others of the batch carry on.

use std::sync::Arc;

use rhai::Dynamic;

use crate::convert::event_from_json;
use crate::lazy;
use crate::registry::Slot;
use crate::script::{Compiled, Outputs};
use crate::{Meta, TransformError};

/// Cheap to clone (one `Arc`), `Send + Sync`. Calls are synchronous and CPU-bound: callers on an
/// async runtime should run them with `block_in_place` or `spawn_blocking`.
#[derive(Clone)]
pub struct Chain {
    slots: Arc<[Arc<Slot>]>,
}

impl Chain {
    pub(crate) fn new(slots: Vec<Arc<Slot>>) -> Chain {
        Chain {
            slots: slots.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// One stored event (a JSON object) in; zero (dropped), one or many (split) JSON objects out.
    pub fn apply(&self, event: &[u8], meta: &Meta) -> Result<Vec<Vec<u8>>, TransformError> {
        if self.is_empty() {
            return Ok(vec![event.to_vec()]);
        }
        run_through(&self.stages(), event, meta)
    }

    /// Whether a script of the chain may read `meta.destination` (or `meta` whole): then its
    /// output can differ per destination, and destinations with this chain must each run it.
    /// Asked per use, since a reload can change the answer.
    pub fn reads_destination(&self) -> bool {
        self.slots.iter().any(|slot| slot.current().reads_destination)
    }

    /// The current version of every script, taken once so a reload never mixes two versions
    /// within one call.
    fn stages(&self) -> Vec<Arc<Compiled>> {
        self.slots.iter().map(|slot| slot.current()).collect()
    }

    /// A whole batch; one outcome per input event, in order. Scripts that define
    /// `transform_batch` see the batch at once; the others run event by event.
    pub fn apply_batch(&self, events: &[(&[u8], Meta)]) -> Vec<Result<Vec<Vec<u8>>, TransformError>> {
        if self.is_empty() {
            return events.iter().map(|(e, _)| Ok(vec![e.to_vec()])).collect();
        }
        let stages = self.stages();
        if !stages.iter().any(|c| c.has_batch) {
            // Event by event, each one parsed, run and serialised before the next is touched, so
            // its Rhai values stay in cache. Parsing the whole batch first (as a batch stage
            // needs) cost the router 15-25% of its drain rate into S3 Parquet (BENCHMARKS.md).
            return events.iter().map(|(bytes, meta)| run_through(&stages, bytes, meta)).collect();
        }
        let metas: Vec<Meta> = events.iter().map(|(_, m)| *m).collect();
        let mut states: Vec<Result<Outputs, TransformError>> = events
            .iter()
            .map(|(bytes, _)| event_from_json(bytes).map(|e| vec![e]))
            .collect();
        for compiled in stages {
            if compiled.has_batch {
                run_batch_stage(&compiled, &mut states, &metas);
            } else {
                for (state, meta) in states.iter_mut().zip(&metas) {
                    if let Ok(items) = state {
                        *state = run_each(&compiled, std::mem::take(items), meta);
                    }
                }
            }
        }
        states
            .into_iter()
            .map(|s| s.map(|items| items.into_iter().map(lazy::into_json).collect()))
            .collect()
    }
}

fn run_through(stages: &[Arc<Compiled>], bytes: &[u8], meta: &Meta) -> Result<Vec<Vec<u8>>, TransformError> {
    // The event stays bytes for as long as the scripts only hand it to helpers that read bytes
    // (`lazy.rs`), and becomes a map at the first one that looks inside it.
    let mut items = vec![lazy::input(bytes, stages[0].lazy_event)?];
    for compiled in stages {
        if let Some(calls) = &compiled.native_calls {
            // The script is only `scrub_pii` calls: make them here, without the interpreter.
            for item in &mut items {
                lazy::scrub_each(item, calls)?;
            }
            continue;
        }
        if !compiled.lazy_event {
            items.iter_mut().try_for_each(lazy::to_map)?;
        }
        items = run_each(compiled, items, meta)?;
        if items.is_empty() {
            break;
        }
    }
    Ok(items.into_iter().map(lazy::into_json).collect())
}

fn run_each(compiled: &Compiled, items: Outputs, meta: &Meta) -> Result<Outputs, TransformError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.extend(compiled.run_one(item, meta)?);
    }
    Ok(out)
}

/// Hands every live event (including the pieces of earlier splits) to `transform_batch` at once
/// and routes each outcome back to the input event it came from.
fn run_batch_stage(
    compiled: &Compiled,
    states: &mut [Result<Outputs, TransformError>],
    metas: &[Meta],
) {
    let mut owners = Vec::new();
    let mut batch: Vec<Dynamic> = Vec::new();
    let mut batch_metas = Vec::new();
    for (i, state) in states.iter_mut().enumerate() {
        if let Ok(items) = state {
            for item in std::mem::take(items) {
                owners.push(i);
                batch.push(item);
                batch_metas.push(metas[i]);
            }
        }
    }
    if batch.is_empty() {
        return;
    }
    // Kept only for the fallback below; cloning is the price of retrying event by event.
    let retry = compiled.has_transform.then(|| batch.clone());
    match compiled.run_batch(batch, &batch_metas) {
        Ok(outcomes) => {
            for (owner, outcome) in owners.into_iter().zip(outcomes) {
                merge(&mut states[owner], outcome);
            }
        }
        Err(err) => match retry {
            // The batch call failed as a whole; when the script also has `transform`, retry
            // event by event so that one bad event does not take the batch down with it.
            Some(items) => {
                tracing::warn!(error = %err, "transform_batch failed; retrying the batch event by event");
                for ((owner, item), meta) in owners.into_iter().zip(items).zip(&batch_metas) {
                    merge(&mut states[owner], compiled.run_one(item, meta));
                }
            }
            None => {
                for owner in owners {
                    states[owner] = Err(clone_error(&err));
                }
            }
        },
    }
}

fn merge(state: &mut Result<Outputs, TransformError>, outcome: Result<Outputs, TransformError>) {
    match (state.as_mut(), outcome) {
        (Ok(items), Ok(more)) => items.extend(more),
        (Ok(_), Err(e)) => *state = Err(e),
        (Err(_), _) => {}
    }
}

/// `TransformError` holds an `io::Error` in one variant and so is not `Clone`; a failed batch
/// call gives each of its events an error with the same text and classification.
fn clone_error(err: &TransformError) -> TransformError {
    match err {
        TransformError::Limit { script, kind, line, message } => TransformError::Limit {
            script: script.clone(),
            kind: *kind,
            line: *line,
            message: message.clone(),
        },
        TransformError::Runtime { script, line, message } => TransformError::Runtime {
            script: script.clone(),
            line: *line,
            message: message.clone(),
        },
        TransformError::BadOutput { script, message } => TransformError::BadOutput {
            script: script.clone(),
            message: message.clone(),
        },
        other => TransformError::BadEvent(other.to_string()),
    }
}
