//! Segment files: record encoding, recovery of the newest segment on open, and deletion of
//! segments every consumer has passed.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::{metric, payload, Committed, EventHead, LogConfig, LogError, Shared};

pub(crate) const HEADER: usize = 8;
/// Upper bound on one record; a length above it can only be garbage from a torn write.
pub(crate) const MAX_RECORD: usize = 64 << 20;

/// Frames one payload (see `payload.rs`) as `len | crc | payload`. Returns where the head's user
/// key lies in `buf`.
pub(crate) fn encode_record(
    buf: &mut Vec<u8>,
    source: &str,
    write_key_id: &str,
    head: Option<&EventHead<'_>>,
    event: &[u8],
    origin: &[u8],
) -> std::ops::Range<usize> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    let user = payload::encode(buf, source, write_key_id, head, event, origin);
    let len = buf.len() - start - HEADER;
    let crc = crc32fast::hash(&buf[start + HEADER..]);
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    user
}

/// One record found in a buffer: its payload's parts (ranges from the payload's start, which is
/// `HEADER` bytes into the record) and how long the whole record is.
pub(crate) enum Parsed {
    Record { parts: payload::Parts, total: usize },
    /// Not enough bytes for a whole record (a short read, or a torn tail).
    Incomplete,
    /// Bytes that are not a valid record.
    Invalid(String),
}

/// Parses the record at the start of `buf`.
pub(crate) fn parse_record(buf: &[u8]) -> Parsed {
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
    match payload::decode(payload) {
        Ok(parts) => Parsed::Record { parts, total: HEADER + len },
        Err(reason) => Parsed::Invalid(reason),
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
        chunks: Arc::default(),
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
