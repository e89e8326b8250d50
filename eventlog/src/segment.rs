//! Segment files: record encoding, recovery of the newest segment on open, and deletion of
//! segments every consumer has passed.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::{metric, Committed, LogConfig, LogError, Payload, Shared};

pub(crate) const HEADER: usize = 8;
/// Version 1 records carry no write key id; they are still read (with an empty id).
const VERSION_1: u8 = 1;
const VERSION: u8 = 2;
/// Upper bound on one record; a length above it can only be garbage from a torn write.
pub(crate) const MAX_RECORD: usize = 64 << 20;

pub(crate) fn encode_record(buf: &mut Vec<u8>, source: &str, write_key_id: &str, event: &[u8]) {
    let source = &source.as_bytes()[..source.len().min(255)];
    let key_id = &write_key_id.as_bytes()[..write_key_id.len().min(255)];
    let len = 3 + source.len() + key_id.len() + event.len();
    let start = buf.len();
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(VERSION);
    buf.push(source.len() as u8);
    buf.extend_from_slice(source);
    buf.push(key_id.len() as u8);
    buf.extend_from_slice(key_id);
    buf.extend_from_slice(event);
    let crc = crc32fast::hash(&buf[start + HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One record found in a buffer: where its payload is and how long the whole record is.
pub(crate) enum Parsed<'a> {
    Record { source: &'a [u8], key_id: &'a [u8], event_start: usize, event_end: usize, total: usize },
    /// Not enough bytes for a whole record (a short read, or a torn tail).
    Incomplete,
    /// Bytes that are not a valid record.
    Invalid(String),
}

/// Parses the record at the start of `buf`.
pub(crate) fn parse_record(buf: &[u8]) -> Parsed<'_> {
    if buf.len() < HEADER {
        return Parsed::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if !(2..=MAX_RECORD).contains(&len) {
        return Parsed::Invalid(format!("impossible record length {len}"));
    }
    if buf.len() < HEADER + len {
        return Parsed::Incomplete;
    }
    let payload = &buf[HEADER..HEADER + len];
    if crc32fast::hash(payload) != crc {
        return Parsed::Invalid("checksum mismatch".into());
    }
    match decode_payload(payload) {
        Ok(p) => Parsed::Record {
            source: p.source,
            key_id: p.write_key_id,
            event_start: HEADER + p.event.start,
            event_end: HEADER + p.event.end,
            total: HEADER + len,
        },
        Err(reason) => Parsed::Invalid(reason),
    }
}

/// Decodes a record's payload (the bytes after length and checksum).
pub(crate) fn decode_payload(payload: &[u8]) -> Result<Payload<'_>, String> {
    let len = payload.len();
    if len < 2 {
        return Err(format!("impossible record length {len}"));
    }
    let source_len = payload[1] as usize;
    if 2 + source_len > len {
        return Err("source longer than record".into());
    }
    let source = &payload[2..2 + source_len];
    let (key_id, event_at) = match payload[0] {
        VERSION_1 => (&payload[..0], 2 + source_len),
        VERSION => {
            let Some(&key_len) = payload.get(2 + source_len) else {
                return Err("write key id missing".into());
            };
            let key_at = 3 + source_len;
            if key_at + key_len as usize > len {
                return Err("write key id longer than record".into());
            }
            (&payload[key_at..key_at + key_len as usize], key_at + key_len as usize)
        }
        other => return Err(format!("unknown record version {other}")),
    };
    Ok(Payload { source, write_key_id: key_id, event: event_at..len })
}

/// Walks the records of an [`crate::AppendBatch`] (which holds only records it encoded itself).
pub(crate) struct Payloads<'a> {
    pub buf: &'a [u8],
}

impl<'a> Iterator for Payloads<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < HEADER {
            return None;
        }
        let len = u32::from_le_bytes(self.buf[0..4].try_into().unwrap()) as usize;
        let payload = &self.buf[HEADER..HEADER + len];
        self.buf = &self.buf[HEADER + len..];
        let event = decode_payload(payload).map(|p| p.event).unwrap_or(len..len);
        Some((payload, &payload[event]))
    }
}

pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join("segments").join(format!("{base:020}.log"))
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The active segment as the writer takes it over.
pub(crate) struct Active {
    pub file: File,
    pub base: u64,
    pub len: u64,
    pub next_offset: u64,
    pub committed_tx: watch::Sender<Committed>,
}

/// Opens the log directory: lists segments, scans the newest one, cuts a torn tail.
pub(crate) fn recover(config: &LogConfig) -> Result<(Arc<Shared>, Active), LogError> {
    let seg_dir = config.dir.join("segments");
    std::fs::create_dir_all(&seg_dir)?;
    std::fs::create_dir_all(config.dir.join("cursors"))?;
    let mut segments = BTreeMap::new();
    for entry in std::fs::read_dir(&seg_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = name.strip_suffix(".log").and_then(|b| b.parse::<u64>().ok()) {
            segments.insert(base, entry.metadata()?.len());
        }
    }
    if segments.is_empty() {
        File::create(segment_path(&config.dir, 0))?;
        sync_dir(&seg_dir)?;
        segments.insert(0, 0);
    }
    let (&base, _) = segments.iter().next_back().unwrap();
    let path = segment_path(&config.dir, base);
    let (count, valid_len, file_len) = scan_and_cut(&path)?;
    segments.insert(base, valid_len);
    let file = OpenOptions::new().append(true).open(&path)?;
    if valid_len < file_len {
        tracing::warn!(
            segment = %path.display(),
            cut_bytes = file_len - valid_len,
            kept_records = count,
            "cut a torn or corrupt tail off the newest log segment (a crash mid-write); \
             no acknowledged event was in it"
        );
    }
    let next_offset = base + count;
    let size: u64 = segments.values().sum();
    metrics::gauge!(metric::SIZE_BYTES).set(size as f64);
    metrics::gauge!(metric::NEXT_OFFSET).set(next_offset as f64);
    let committed = Committed { next_offset, active_base: base, active_len: valid_len };
    let (committed_tx, committed_rx) = watch::channel(committed);
    let shared = Arc::new(Shared {
        dir: config.dir.clone(),
        segments: Mutex::new(segments),
        size_bytes: AtomicU64::new(size),
        committed: committed_rx,
        cursors: Mutex::new(HashMap::new()),
        stale: Mutex::default(),
        budget_bytes: config.disk_budget_bytes,
        refusing: AtomicBool::new(false),
        write_error: Mutex::new(None),
    });
    Ok((shared, Active { file, base, len: valid_len, next_offset, committed_tx }))
}

/// Counts the valid records of a segment and truncates whatever follows the last one.
/// Returns (records, valid length, length before the cut).
fn scan_and_cut(path: &Path) -> Result<(u64, u64, u64), LogError> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut pos = 0usize;
    let mut count = 0u64;
    while pos < bytes.len() {
        match parse_record(&bytes[pos..]) {
            Parsed::Record { total, .. } => {
                pos += total;
                count += 1;
            }
            Parsed::Incomplete | Parsed::Invalid(_) => break,
        }
    }
    let file_len = bytes.len() as u64;
    if (pos as u64) < file_len {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(pos as u64)?;
        f.sync_all()?;
    }
    Ok((count, pos as u64, file_len))
}

/// Deletes sealed segments that every consumer known to this process has moved past.
pub(crate) fn delete_passed(shared: &Shared) -> Result<(), LogError> {
    let Some(min_cursor) = shared.cursors.lock().unwrap().values().copied().min() else {
        return Ok(());
    };
    let active_base = shared.committed.borrow().active_base;
    let mut segments = shared.segments.lock().unwrap();
    // A segment ends where the next begins; it can go when the slowest cursor is at or past that.
    let bases: Vec<u64> = segments.keys().copied().collect();
    for pair in bases.windows(2) {
        let (base, next_base) = (pair[0], pair[1]);
        if next_base > min_cursor || base >= active_base {
            break;
        }
        std::fs::remove_file(shared.segment_path(base))?;
        if let Some(len) = segments.remove(&base) {
            let size = shared.size_bytes.fetch_sub(len, Ordering::Relaxed) - len;
            metrics::gauge!(metric::SIZE_BYTES).set(size as f64);
        }
        shared.refusing.store(false, Ordering::Relaxed);
        tracing::debug!(base, "deleted a log segment every consumer has passed");
    }
    Ok(())
}
