//! Events that stay bytes: a script that never looks inside its event gets it unconverted.
//!
//! Why: turning an event's JSON into Rhai maps and back is most of what a chain costs (issue 16's
//! profile: conversion, writing and freeing the values). A script like the shipped
//! `scrub_pii.rhai` only hands the event to `scrub_pii` and returns it; for such a script the
//! event is a [`LazyEvent`] holding the stored bytes, and `scrub_pii` rewrites those bytes
//! (`helpers::scrub_bytes`).
//!
//! When a script qualifies is decided once, at compile time ([`crate::scan::event_use`]): every
//! mention of the event variable in `fn transform` must hand it whole to `scrub_pii` as its first
//! argument (`scrub_pii(event, …)` or `event.scrub_pii(…)`), or be the body's last statement.
//! Anything else (reading a field, `return event`, a map literal holding it, a script function
//! of its own named `scrub_pii`) gives the script a Rhai map as before. The script cannot tell
//! the difference: the only operations it applies to the event behave the same on both.
//!
//! A stage that needs a map gets one: the chain converts a `LazyEvent` before running such a
//! script, and `scrub_pii` converts it itself when the byte path declines (a hash over a
//! non-string value).

use rhai::{Dynamic, EvalAltResult, Map};

use crate::convert::{event_from_json, event_to_json};
use crate::helpers::scrub::{self, ScrubOptions};
use crate::helpers::scrub_bytes;
use crate::TransformError;

/// The event of a script that only hands it to `scrub_pii`. Registered under the type name
/// `map`, so error messages read as they do for a map.
#[derive(Clone)]
pub enum LazyEvent {
    /// The stored JSON object, as written (or as `scrub_pii` rewrote it).
    Bytes(Vec<u8>),
    /// Converted, because a helper needed the values.
    Map(Map),
}

impl LazyEvent {
    /// The helper as a script calls it.
    pub fn scrub_pii(&mut self, opts: &ScrubOptions) -> Result<usize, Box<EvalAltResult>> {
        self.scrub(opts).map_err(|e| e.to_string().into())
    }

    fn scrub(&mut self, opts: &ScrubOptions) -> Result<usize, TransformError> {
        if let LazyEvent::Bytes(bytes) = self {
            if let Some((out, changed)) = scrub_bytes::scrub_bytes(bytes, opts) {
                *bytes = out;
                return Ok(changed);
            }
            *self = LazyEvent::Map(event_from_json(bytes)?.cast::<Map>());
        }
        match self {
            LazyEvent::Map(map) => Ok(scrub::scrub_pii(map, opts)),
            LazyEvent::Bytes(_) => unreachable!("converted above"),
        }
    }
}

/// A script that is only `scrub_pii` calls (`Compiled::native_calls`), made without the
/// interpreter: one call per options, on a lazy event or on a map an earlier script returned.
pub fn scrub_each(item: &mut Dynamic, calls: &[ScrubOptions]) -> Result<(), TransformError> {
    if let Some(mut lazy) = item.write_lock::<LazyEvent>() {
        for opts in calls {
            lazy.scrub(opts)?;
        }
        return Ok(());
    }
    if let Some(mut map) = item.write_lock::<Map>() {
        for opts in calls {
            scrub::scrub_pii(&mut map, opts);
        }
    }
    Ok(())
}

/// The first input of a chain: bytes for a script that takes a lazy event, a map otherwise.
pub fn input(bytes: &[u8], lazy: bool) -> Result<Dynamic, TransformError> {
    if lazy {
        Ok(Dynamic::from(LazyEvent::Bytes(bytes.to_vec())))
    } else {
        event_from_json(bytes)
    }
}

/// Makes `item` a map for a script that looks inside its event.
pub fn to_map(item: &mut Dynamic) -> Result<(), TransformError> {
    if item.is::<LazyEvent>() {
        *item = match std::mem::take(item).cast::<LazyEvent>() {
            LazyEvent::Bytes(bytes) => event_from_json(&bytes)?,
            LazyEvent::Map(map) => Dynamic::from_map(map),
        };
    }
    Ok(())
}

/// Whether a script's output is an event (a map, or a lazy event).
pub fn is_event(value: &Dynamic) -> bool {
    value.is_map() || value.is::<LazyEvent>()
}

/// A chain's output event as JSON: lazy bytes go out as they are.
pub fn into_json(item: Dynamic) -> Vec<u8> {
    if item.is::<LazyEvent>() {
        return match item.cast::<LazyEvent>() {
            LazyEvent::Bytes(bytes) => bytes,
            LazyEvent::Map(map) => event_to_json(&Dynamic::from_map(map)),
        };
    }
    event_to_json(&item)
}
