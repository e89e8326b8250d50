//! Rhai transformations: small user scripts that change events on their way to a destination.
//!
//! A script defines `fn transform(event, meta)` and returns the event (changed or not), `()` to
//! drop it, or an array of events to split it; optionally `fn transform_batch(events, meta)`.
//! The YAML config lists transformations ([`TransformationConfig`]); [`Registry::load`] compiles
//! them all (a compile error is a config error) and [`Registry::chain`] builds the ordered
//! [`Chain`] a destination applies to each event.
//!
//! Guarantees:
//! - Every call runs under the transformation's [`Limits`] (operations, call depth, string /
//!   array / map sizes, wall clock per event). A script that breaks one fails only the event it
//!   was running on, with a [`TransformError`] naming the script, line and limit. (A script that
//!   is only `scrub_pii` calls is not interpreted at all and has nothing to limit: `lazy.rs`.)
//! - A reload (file change or SIGHUP) swaps in the new version only if it compiles; otherwise the
//!   running version stays and the refusal is logged. An event always runs against one version
//!   of each script from start to finish.
//! - Scripts cannot reach the file system, the network or other scripts: `import` resolves
//!   nothing, `eval` is disabled, `print`/`debug` go to the log.
//!
//! The user guide, with every helper and an example of each, is `docs/transforms.md`.

mod chain;
/// JSON bytes <-> Rhai values, as the chain does it (public for benchmarks and tools).
pub mod convert;
mod error;
pub mod helpers;
mod lazy;
mod registry;
mod scan;
mod script;
/// Running a script over sample events or fixtures (`sluice transform test`).
pub mod testing;

use std::path::PathBuf;

use serde::Deserialize;

pub use error::{LimitKind, ScriptRef, TransformError};
pub use chain::Chain;
pub use registry::{Registry, WatchHandle, DEFAULT_WATCH_INTERVAL};

/// One transformation as written in the YAML config under `transformations:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformationConfig {
    /// Name that destinations use to attach this transformation, and that errors carry.
    pub id: String,
    /// The Rhai script. Relative paths are resolved by the caller (against the working directory).
    pub script: PathBuf,
    /// Values handed to the script as `meta.params` (e.g. the list of fields to scrub).
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Sandbox limits for every call of this script.
    #[serde(default)]
    pub limits: Limits,
}

/// Sandbox limits, per event. For `transform_batch` the operation and time budgets are multiplied
/// by the number of events in the batch; the other limits stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Maximum Rhai operations (roughly: expressions evaluated) per event.
    pub max_operations: u64,
    /// Maximum depth of nested function calls (stops unbounded recursion).
    pub max_call_depth: usize,
    /// Maximum length in bytes of any string the script builds.
    pub max_string_size: usize,
    /// Maximum number of elements of any array the script builds.
    pub max_array_size: usize,
    /// Maximum number of keys of any map the script builds.
    pub max_map_size: usize,
    /// Wall-clock budget per event, in milliseconds. Checked between Rhai operations, so a single
    /// slow helper call (a regex over a very long string) finishes before it is noticed.
    pub max_time_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // Generous for event-shaped work (the shipped scripts use a few hundred operations at
        // most) while stopping a runaway script within milliseconds.
        Limits {
            max_operations: 200_000,
            max_call_depth: 32,
            max_string_size: 1 << 20,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_time_ms: 50,
        }
    }
}

/// Where an event comes from and goes to; the script sees it as `meta`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta<'a> {
    pub source: &'a str,
    pub destination: &'a str,
    pub message_id: &'a str,
    /// Id of the write key the event was sent with ("" when unknown).
    pub write_key_id: &'a str,
}

impl<'a> Meta<'a> {
    pub fn new(source: &'a str, destination: &'a str, message_id: &'a str) -> Self {
        Meta {
            source,
            destination,
            message_id,
            write_key_id: "",
        }
    }

    pub fn with_write_key_id(mut self, write_key_id: &'a str) -> Self {
        self.write_key_id = write_key_id;
        self
    }
}
