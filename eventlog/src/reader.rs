//! Sequential readers, one per consumer. A reader only ever sees records that were synced: it
//! reads up to the end the writer published after its last `fdatasync`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::segment::{parse_record, Parsed};
use crate::{Committed, LogError, Record, Shared};

/// Bytes read from disk at a time when the caller's own limit is smaller.
const MIN_CHUNK: usize = 256 << 10;
/// Largest single read. Records are slices of the buffer they were read into, so one large read
/// stays in memory until the last of its events is delivered, and bytes read past `max_records`
/// are dropped and read again by the next call. Reading a destination's whole `max_bytes`
/// (64 MiB in a typical S3 config) at once cost 7x the bytes needed and ~100 MB of RSS.
const MAX_CHUNK: usize = 4 << 20;

pub struct Reader {
    shared: Arc<Shared>,
    consumer: String,
    committed: watch::Receiver<Committed>,
    /// Offset of the next record this reader returns.
    next_offset: u64,
    /// Open segment: (base offset, file, byte position of `next_offset` in it).
    segment: Option<(u64, File, u64)>,
    last_source: Option<Arc<str>>,
    last_key_id: Option<Arc<str>>,
    /// Bytes per record seen in the last read (with some slack), to size the next read.
    record_size: usize,
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, consumer: String, start: u64) -> Self {
        let committed = shared.committed.clone();
        Reader { shared, consumer, committed, next_offset: start, segment: None, last_source: None, last_key_id: None, record_size: 1024 }
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Offset of the next record [`Reader::read`] returns.
    pub fn position(&self) -> u64 {
        self.next_offset
    }

    /// Records appended but not yet read by this reader.
    pub fn lag(&self) -> u64 {
        self.committed.borrow().next_offset.saturating_sub(self.next_offset)
    }

    /// Moves the reader to `offset` (used to re-read after a failed delivery).
    pub fn seek(&mut self, offset: u64) {
        self.next_offset = offset;
        self.segment = None;
    }

    /// Returns up to `max_records` records (and about `max_bytes` of events; always at least one
    /// record when any is available). Waits up to `wait` for new records; an empty result means
    /// none arrived in time.
    pub async fn read(&mut self, max_records: usize, max_bytes: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        let deadline = tokio::time::Instant::now() + wait;
        let committed = loop {
            let c = *self.committed.borrow_and_update();
            if self.next_offset < c.next_offset {
                break c;
            }
            match tokio::time::timeout_at(deadline, self.committed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(LogError::Closed),
                Err(_) => return Ok(Vec::new()),
            }
        };
        self.read_available(committed, max_records.max(1), max_bytes)
    }

    fn read_available(&mut self, c: Committed, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max_records && (out.is_empty() || bytes < max_bytes) && self.next_offset < c.next_offset {
            let (base, limit) = self.open_segment(&c)?;
            let (_, file, pos) = self.segment.as_ref().unwrap();
            let pos = *pos;
            if pos >= limit {
                // End of a sealed segment: the next record is in the following one.
                self.segment = None;
                let next = self.shared.segments.lock().unwrap().range(base + 1..).next().map(|(b, _)| *b);
                match next {
                    Some(_) => continue,
                    None => break,
                }
            }
            let records_left = (max_records - out.len()).saturating_mul(self.record_size);
            let bytes_left = max_bytes.saturating_sub(bytes);
            let want = (limit - pos).min(records_left.min(bytes_left).clamp(MIN_CHUNK, MAX_CHUNK) as u64) as usize;
            let records_before = out.len();
            let chunk = read_exact_at(file, pos, want)?;
            let chunk = Bytes::from(chunk);
            let mut at = 0usize;
            let mut needed = None;
            while at < chunk.len() && out.len() < max_records && (out.is_empty() || bytes < max_bytes) {
                match parse_record(&chunk[at..]) {
                    Parsed::Record { source, key_id, event_start, event_end, total } => {
                        let (source, write_key_id) = (self.intern(source), self.intern_key_id(key_id));
                        out.push(Record {
                            offset: self.next_offset,
                            source,
                            write_key_id,
                            event: chunk.slice(at + event_start..at + event_end),
                        });
                        bytes += event_end - event_start;
                        self.next_offset += 1;
                        at += total;
                    }
                    Parsed::Incomplete => {
                        // A record longer than the chunk: read it whole next round.
                        if at == 0 && chunk.len() >= 4 {
                            needed = Some(u32::from_le_bytes(chunk[0..4].try_into().unwrap()) as usize + 8);
                        }
                        break;
                    }
                    Parsed::Invalid(reason) => {
                        return Err(LogError::Corrupt {
                            segment: self.shared.segment_path(base).display().to_string(),
                            position: pos + at as u64,
                            reason,
                        })
                    }
                }
            }
            if let Some((_, _, p)) = self.segment.as_mut() {
                *p += at as u64;
            }
            if out.len() > records_before {
                self.record_size = at / (out.len() - records_before) + 64;
            }
            if let Some(n) = needed {
                let (_, file, p) = self.segment.as_ref().unwrap();
                let whole = Bytes::from(read_exact_at(file, *p, n)?);
                if let Parsed::Record { source, key_id, event_start, event_end, total } = parse_record(&whole) {
                    let (source, write_key_id) = (self.intern(source), self.intern_key_id(key_id));
                    out.push(Record { offset: self.next_offset, source, write_key_id, event: whole.slice(event_start..event_end) });
                    bytes += event_end - event_start;
                    self.next_offset += 1;
                    self.segment.as_mut().unwrap().2 += total as u64;
                } else {
                    return Err(LogError::Corrupt {
                        segment: self.shared.segment_path(base).display().to_string(),
                        position: *p,
                        reason: "record cut short inside synced data".into(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Makes sure the segment holding `next_offset` is open and positioned; returns its base and
    /// the byte length that may be read.
    fn open_segment(&mut self, c: &Committed) -> Result<(u64, u64), LogError> {
        if self.segment.is_none() {
            let (base, oldest) = {
                let segments = self.shared.segments.lock().unwrap();
                let base = segments.range(..=self.next_offset).next_back().map(|(b, _)| *b);
                (base, segments.keys().next().copied().unwrap_or(0))
            };
            let base = match base {
                Some(b) => b,
                None => {
                    // The cursor points before the oldest segment (deleted while this reader was
                    // away): nothing older exists any more, so resume at the oldest record.
                    tracing::warn!(consumer = %self.consumer, cursor = self.next_offset, oldest, "cursor older than the log; resuming at the oldest record");
                    self.next_offset = oldest;
                    oldest
                }
            };
            let file = File::open(self.shared.segment_path(base))?;
            let pos = skip_to(&file, base, self.next_offset)?;
            self.segment = Some((base, file, pos));
        }
        let base = self.segment.as_ref().unwrap().0;
        let limit = if base == c.active_base {
            c.active_len
        } else {
            self.shared.segments.lock().unwrap().get(&base).copied().unwrap_or(0)
        };
        Ok((base, limit))
    }

    fn intern(&mut self, source: &[u8]) -> Arc<str> {
        match &self.last_source {
            Some(s) if s.as_bytes() == source => s.clone(),
            _ => {
                let s: Arc<str> = Arc::from(String::from_utf8_lossy(source).as_ref());
                self.last_source = Some(s.clone());
                s
            }
        }
    }
}

impl Reader {
    /// As `intern`, for write key ids: consecutive records mostly share one.
    fn intern_key_id(&mut self, key_id: &[u8]) -> Arc<str> {
        match &self.last_key_id {
            Some(s) if s.as_bytes() == key_id => s.clone(),
            _ => {
                let s: Arc<str> = Arc::from(String::from_utf8_lossy(key_id).as_ref());
                self.last_key_id = Some(s.clone());
                s
            }
        }
    }
}

fn read_exact_at(file: &File, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, pos)?;
    Ok(buf)
}

/// Byte position of record `target` in a segment starting at `base`, found by walking headers.
fn skip_to(file: &File, base: u64, target: u64) -> Result<u64, LogError> {
    let mut pos = 0u64;
    let mut offset = base;
    let mut header = [0u8; 8];
    while offset < target {
        file.read_exact_at(&mut header, pos)?;
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as u64;
        pos += 8 + len;
        offset += 1;
    }
    Ok(pos)
}
