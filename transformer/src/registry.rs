//! All configured transformations, compiled, with reload.
//!
//! Each transformation lives in a [`Slot`] holding the running version behind an `RwLock<Arc<_>>`:
//! a chain clones the `Arc` once per event (so the event sees one version throughout) and a reload
//! swaps the pointer only after the new source compiled. A refused version is remembered by its
//! content hash so the watcher logs the refusal once, not on every poll.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rhai::{Dynamic, Engine};

use crate::chain::Chain;
use crate::error::{ScriptRef, TransformError};
use crate::script::{self, Compiled};
use crate::TransformationConfig;

/// How often [`Registry::watch`] looks at the script files.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct Slot {
    config: TransformationConfig,
    script: ScriptRef,
    engine: Arc<Engine>,
    params: Dynamic,
    current: RwLock<Arc<Compiled>>,
    seen: Mutex<Seen>,
}

/// What the slot last looked at on disk.
#[derive(Default)]
struct Seen {
    /// Modification time and length: a cheap first check before reading the file.
    stamp: Option<(SystemTime, u64)>,
    /// Hash of the last source compiled, whether it was accepted or refused.
    content: u64,
}

fn content_hash(source: &str) -> u64 {
    let mut h = DefaultHasher::new();
    source.hash(&mut h);
    h.finish()
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Slot {
    fn load(config: &TransformationConfig) -> Result<Slot, TransformError> {
        let script = script::script_ref(&config.id, &config.script);
        let stamp = file_stamp(&config.script);
        let source = read_source(&script)?;
        let engine = Arc::new(script::build_engine(&config.id, &config.limits));
        let params = script::params_value(&script, &config.params)?;
        let compiled = Compiled::compile(
            script.clone(),
            engine.clone(),
            &source,
            &config.limits,
            params.clone(),
        )?;
        Ok(Slot {
            config: config.clone(),
            script,
            engine,
            params,
            current: RwLock::new(Arc::new(compiled)),
            seen: Mutex::new(Seen {
                stamp,
                content: content_hash(&source),
            }),
        })
    }

    pub(crate) fn current(&self) -> Arc<Compiled> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Re-reads and recompiles the script. `force` recompiles even when the content is the one
    /// already seen (SIGHUP: the operator asked, so a refusal is reported again). Returns whether
    /// a new version now runs.
    fn reload(&self, force: bool) -> Result<bool, TransformError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = file_stamp(&self.config.script);
        if !force && stamp.is_some() && stamp == seen.stamp && !recently_modified(stamp) {
            return Ok(false);
        }
        let source = read_source(&self.script).inspect_err(|e| {
            tracing::error!(transformation = %self.config.id, error = %e,
                "cannot reload transformation; the previous version keeps running");
        })?;
        seen.stamp = stamp;
        let hash = content_hash(&source);
        if !force && hash == seen.content {
            return Ok(false);
        }
        seen.content = hash;
        let compiled = Compiled::compile(
            self.script.clone(),
            self.engine.clone(),
            &source,
            &self.config.limits,
            self.params.clone(),
        );
        match compiled {
            Ok(compiled) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(compiled);
                tracing::info!(transformation = %self.config.id,
                    file = %self.config.script.display(), "transformation reloaded");
                Ok(true)
            }
            Err(e) => {
                tracing::error!(transformation = %self.config.id,
                    file = %self.config.script.display(), line = ?e.line(), error = %e,
                    "new version of transformation refused; the previous version keeps running");
                Err(e)
            }
        }
    }
}

/// A file written twice within the file system's timestamp granularity keeps its modification
/// time; for recent files the content hash decides instead.
fn recently_modified(stamp: Option<(SystemTime, u64)>) -> bool {
    stamp.is_some_and(|(mtime, _)| {
        mtime
            .elapsed()
            .map_or(true, |age| age < Duration::from_secs(2))
    })
}

fn read_source(script: &ScriptRef) -> Result<String, TransformError> {
    std::fs::read_to_string(&script.file).map_err(|source| TransformError::Read {
        script: script.clone(),
        source,
    })
}

/// All configured transformations, compiled; supports reload.
pub struct Registry {
    slots: HashMap<String, Arc<Slot>>,
    /// Config order, for deterministic reload and watch order.
    order: Vec<Arc<Slot>>,
}

impl Registry {
    /// Reads and compiles every script. The first failure is returned: a compile error carries
    /// the file, line and message (what `sluice validate` prints).
    pub fn load(configs: &[TransformationConfig]) -> Result<Registry, TransformError> {
        let mut slots = HashMap::new();
        let mut order = Vec::new();
        for config in configs {
            if slots.contains_key(&config.id) {
                return Err(TransformError::DuplicateId(config.id.clone()));
            }
            let slot = Arc::new(Slot::load(config)?);
            slots.insert(config.id.clone(), slot.clone());
            order.push(slot);
        }
        Ok(Registry { slots, order })
    }

    /// Like [`Registry::load`] but reports every failing transformation, for `sluice validate`.
    pub fn check(configs: &[TransformationConfig]) -> Vec<TransformError> {
        let mut seen = std::collections::HashSet::new();
        configs
            .iter()
            .filter_map(|c| {
                if !seen.insert(c.id.as_str()) {
                    return Some(TransformError::DuplicateId(c.id.clone()));
                }
                Slot::load(c).err()
            })
            .collect()
    }

    /// The ordered chain for `ids` (a destination's `transformations:` list).
    pub fn chain(&self, ids: &[String]) -> Result<Chain, TransformError> {
        let slots = ids
            .iter()
            .map(|id| {
                self.slots
                    .get(id)
                    .cloned()
                    .ok_or_else(|| TransformError::UnknownTransformation(id.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain::new(slots))
    }

    /// Recompiles every script (SIGHUP). A version that fails to compile is refused (logged with
    /// file, line and message) and the running one stays. Returns the refusals.
    pub fn reload_all(&self) -> Vec<TransformError> {
        self.order
            .iter()
            .filter_map(|slot| slot.reload(true).err())
            .collect()
    }

    /// Reloads one transformation if its file changed. `Ok(true)` when a new version now runs.
    pub fn reload(&self, id: &str) -> Result<bool, TransformError> {
        let slot = self
            .slots
            .get(id)
            .ok_or_else(|| TransformError::UnknownTransformation(id.to_string()))?;
        slot.reload(false)
    }

    /// Watches the script files, polling every second; keep the handle alive.
    pub fn watch(&self) -> WatchHandle {
        self.watch_every(DEFAULT_WATCH_INTERVAL)
    }

    /// Watches the script files, polling every `interval`. Polling (metadata first, content
    /// hash second) rather than inotify: it survives editors that replace the file by renaming,
    /// and network file systems, at the cost of one `stat` per script per interval.
    pub fn watch_every(&self, interval: Duration) -> WatchHandle {
        let slots = self.order.clone();
        let (stop, stopped) = mpsc::channel::<()>();
        let rounds = Arc::new(AtomicU64::new(0));
        let counter = rounds.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-transform-watch".into())
            .spawn(move || loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {
                        for slot in &slots {
                            // Errors are logged by `reload`; the old version keeps running.
                            let _ = slot.reload(false);
                        }
                        counter.fetch_add(1, Ordering::Release);
                    }
                    _ => return,
                }
            })
            .expect("spawning the transformation watcher thread");
        WatchHandle {
            stop: Some(stop),
            thread: Some(thread),
            rounds,
        }
    }
}

/// Keeps the file watcher running; dropping it stops the watcher.
pub struct WatchHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    rounds: Arc<AtomicU64>,
}

impl WatchHandle {
    /// Polling rounds completed so far: every script looked at once per round. A change made
    /// before round `n` started has been acted on once `rounds()` exceeds `n`.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Acquire)
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
