//! Looking at a log from outside the process that runs it (`sluice log cursors`,
//! `sluice log drop-cursor`): read-only except for deleting a cursor file, so it is safe while
//! `sluice run` has the log open. Nothing here opens a writer or cuts a torn tail.

use std::io::Read;
use std::path::Path;

use crate::segment::{parse_record, Parsed};
use crate::{cursor, LogError};

/// One consumer's place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorState {
    pub id: String,
    /// Next offset it will read; `None` for a consumer without a cursor file (it starts at the
    /// oldest record on disk).
    pub position: Option<u64>,
    /// Records appended that it has not handled.
    pub lag: u64,
    /// Bytes of segments on disk from the one holding its position on: what it keeps from being
    /// deleted.
    pub held_bytes: u64,
}

impl CursorState {
    /// `segments` are (base offset, bytes), oldest first.
    pub(crate) fn new(id: String, position: Option<u64>, segments: &[(u64, u64)], next_offset: u64) -> Self {
        let oldest = segments.first().map_or(0, |s| s.0);
        let from = position.unwrap_or(oldest);
        let held_bytes = segments
            .iter()
            .enumerate()
            .filter(|(i, _)| segments.get(i + 1).is_none_or(|next| next.0 > from))
            .map(|(_, s)| s.1)
            .sum();
        CursorState { id, position, lag: next_offset.saturating_sub(from.max(oldest)), held_bytes }
    }
}

/// What a log directory holds.
#[derive(Debug, Clone)]
pub struct LogState {
    /// (base offset, bytes) of every segment, oldest first.
    pub segments: Vec<(u64, u64)>,
    /// Offset the next appended record will get.
    pub next_offset: u64,
    /// Every cursor file, sorted by consumer.
    pub cursors: Vec<CursorState>,
}

impl LogState {
    /// The state of `id`, whether or not it has a cursor file.
    pub fn cursor(&self, id: &str) -> CursorState {
        self.cursors
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .unwrap_or_else(|| CursorState::new(id.to_string(), None, &self.segments, self.next_offset))
    }
}

/// Reads the state of the log in `dir` without changing it.
pub fn inspect(dir: &Path) -> Result<LogState, LogError> {
    let mut segments = Vec::new();
    match std::fs::read_dir(dir.join("segments")) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(base) = name.strip_suffix(".log").and_then(|b| b.parse::<u64>().ok()) {
                    segments.push((base, entry.metadata()?.len()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    segments.sort();
    let next_offset = match segments.last() {
        Some(&(base, _)) => base + count_valid(&crate::segment::segment_path(dir, base))?,
        None => 0,
    };
    let cursors = cursor::list(dir)?
        .into_iter()
        .map(|(id, at)| CursorState::new(id, Some(at), &segments, next_offset))
        .collect();
    Ok(LogState { segments, next_offset, cursors })
}

/// Deletes the cursor file of `consumer`; false if there was none.
pub fn drop_cursor(dir: &Path, consumer: &str) -> Result<bool, LogError> {
    cursor::remove(dir, consumer)
}

/// Valid records at the start of a segment (a torn tail, which the next open cuts, is not counted).
fn count_valid(path: &Path) -> Result<u64, LogError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let (mut at, mut n) = (0usize, 0u64);
    while let Parsed::Record { total, .. } = parse_record(&bytes[at..]) {
        at += total;
        n += 1;
    }
    Ok(n)
}
