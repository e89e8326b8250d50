//! The dead-letter store: events a destination could not take, kept with why, so an operator can
//! look at them, fix the cause, and replay them.
//!
//! One JSON file per dead-lettered batch under `<dir>/<destination>/<id>.json`, written to a
//! temporary name, synced and renamed, so a crash never leaves half an entry. An entry holds the
//! events as they were when they failed: already transformed for a failed delivery, untransformed
//! for a failed transformation (`stage`), so a replay runs exactly the steps still owed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::RouterError;

/// Which step failed: decides what a replay runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// A transformation failed; replay runs the destination's transformations, then delivers.
    Transform,
    /// The destination refused or kept failing; replay delivers the stored events again.
    Delivery,
    /// Bytes of the event log that were not a valid record (`reason` starts with
    /// `corrupt_record`); the event holds them base64-encoded with their segment, position and
    /// offset. Not replayable: there is no event to deliver, only bytes to look at.
    Corrupt,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadEvent {
    /// Partition of the log record (Kafka); absent for the embedded log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    pub offset: u64,
    pub source: String,
    /// Id of the write key the event came with, for a replay that runs transformations again
    /// (`meta.write_key_id`). Empty when not needed (delivery stage) and in older entries.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub write_key_id: String,
    pub event: Box<RawValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub destination: String,
    pub stage: Stage,
    pub reason: String,
    pub attempts: u32,
    /// RFC 3339 time of the first failed attempt and of dead-lettering.
    pub first_failed_at: String,
    pub dead_lettered_at: String,
    pub events: Vec<DeadEvent>,
}

/// Handle to the store directory.
pub struct DeadLetters {
    dir: PathBuf,
    seq: AtomicU64,
}

impl DeadLetters {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, RouterError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(DeadLetters { dir, seq: AtomicU64::new(0) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores an entry durably and returns its id (`<unix ms>-<first offset>-<seq>`, sortable by time).
    pub fn put(&self, mut entry: Entry) -> Result<String, RouterError> {
        let first = entry.events.iter().map(|e| e.offset).min().unwrap_or(0);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        entry.id = format!("{:013}-{first:020}-{seq}", chrono::Utc::now().timestamp_millis());
        let dir = self.dir.join(&entry.destination);
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{}.tmp", entry.id));
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer(&mut f, &entry).map_err(|e| RouterError::DeadLetter(e.to_string()))?;
        f.flush()?;
        f.sync_data()?;
        std::fs::rename(&tmp, dir.join(format!("{}.json", entry.id)))?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(entry.id)
    }

    /// Ids of all entries, optionally of one destination, oldest first, as (destination, id).
    pub fn ids(&self, destination: Option<&str>) -> Result<Vec<(String, String)>, RouterError> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(&self.dir)? {
            let d = d?;
            let name = d.file_name().to_string_lossy().into_owned();
            if !d.file_type()?.is_dir() || destination.is_some_and(|want| want != name) {
                continue;
            }
            for f in std::fs::read_dir(d.path())? {
                let f = f?.file_name().to_string_lossy().into_owned();
                if let Some(id) = f.strip_suffix(".json") {
                    out.push((name.clone(), id.to_string()));
                }
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    pub fn get(&self, destination: &str, id: &str) -> Result<Entry, RouterError> {
        let bytes = std::fs::read(self.dir.join(destination).join(format!("{id}.json")))?;
        serde_json::from_slice(&bytes).map_err(|e| RouterError::DeadLetter(format!("entry {id}: {e}")))
    }

    /// Finds an entry by id alone (ids are unique across destinations).
    pub fn find(&self, id: &str) -> Result<Entry, RouterError> {
        let (dest, _) = self
            .ids(None)?
            .into_iter()
            .find(|(_, i)| i == id)
            .ok_or_else(|| RouterError::DeadLetter(format!("no dead-letter entry {id}")))?;
        self.get(&dest, id)
    }

    pub fn remove(&self, destination: &str, id: &str) -> Result<(), RouterError> {
        std::fs::remove_file(self.dir.join(destination).join(format!("{id}.json")))?;
        Ok(())
    }
}
