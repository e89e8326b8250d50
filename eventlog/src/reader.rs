//! Sequential readers, one per consumer. A reader only ever sees records that were synced: it
//! reads up to the end the writer published after its last `fdatasync`.
//!
//! Bytes in synced data that are not a valid record (the disk lost data under us) are
//! quarantined, never retried: the reader skips them, keeps them as a [`CorruptRecord`] for its
//! caller to dead-letter (see [`Reader::take_corrupt`]), and reads on. A record whose header is
//! intact but whose payload fails its checksum is skipped alone and stands for one offset. When
//! the header itself is damaged, the reader skips to the next byte from which a record with a
//! valid checksum starts; the offsets the skipped bytes stood for are what the segment's end
//! offset leaves over after counting the records that follow.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::chunks::ChunkPool;
use crate::segment::{parse_record, Parsed, HEADER};
use crate::{payload, Committed, LogError, Record, Shared};

/// Bytes read from disk at a time when the caller's own limit is smaller.
const MIN_CHUNK: usize = 256 << 10;
/// Largest single read. Records are slices of the buffer they were read into, so one large read
/// stays in memory until the last of its events is delivered, and bytes read past `max_records`
/// are dropped and read again by the next call. Reading a destination's whole `max_bytes`
/// (64 MiB in a typical S3 config) at once cost 7x the bytes needed and ~100 MB of RSS.
const MAX_CHUNK: usize = crate::chunks::CHUNK;

/// Bytes of a segment that were not a valid record, skipped by a reader.
#[derive(Debug, Clone)]
pub struct CorruptRecord {
    /// Path of the segment file.
    pub segment: String,
    /// Byte position of the bad bytes in the segment.
    pub position: u64,
    /// First offset the bytes stood for.
    pub offset: u64,
    /// Offsets they stood for (1 for one record whose payload failed its checksum).
    pub records: u64,
    /// What was wrong (checksum mismatch, impossible length, ...).
    pub reason: String,
    /// The raw bytes, header included.
    pub bytes: Bytes,
}

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
    /// Quarantined since the last [`Reader::take_corrupt`].
    corrupt: Vec<CorruptRecord>,
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, consumer: String, start: u64) -> Self {
        let committed = shared.committed.clone();
        Reader {
            shared,
            consumer,
            committed,
            next_offset: start,
            segment: None,
            last_source: None,
            last_key_id: None,
            record_size: 1024,
            corrupt: Vec::new(),
        }
    }

    /// The consumer this reader reads for (its cursor's name).
    pub(crate) fn consumer(&self) -> &str {
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

    /// What the reads since the last call skipped as corrupt, in log order. The offsets they
    /// stood for are behind [`Reader::position`] already: a caller that moves its cursor past
    /// them must first keep them (dead-letter them), or they are gone.
    pub fn take_corrupt(&mut self) -> Vec<CorruptRecord> {
        std::mem::take(&mut self.corrupt)
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
        // Sized from the last read's record size: grown by doubling, a drain's reads of
        // thousands of records were a few percent of its page faults.
        let expected = max_records.min(max_bytes.min(MAX_CHUNK) / self.record_size.max(1) + 1);
        let mut out = Vec::with_capacity(expected.min(c.next_offset.saturating_sub(self.next_offset) as usize));
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
            let chunk = read_into(file, pos, want, self.shared.chunks.take(want))?;
            let chunk = ChunkPool::share(&self.shared.chunks, chunk);
            let mut at = 0usize;
            let mut needed = None;
            let mut invalid = None;
            while at < chunk.len() && out.len() < max_records && (out.is_empty() || bytes < max_bytes) {
                match parse_record(&chunk[at..]) {
                    Parsed::Record { parts, total } => {
                        let record = self.record(&chunk.slice(at + HEADER..at + total), &parts);
                        bytes += record.event.len();
                        out.push(record);
                        self.next_offset += 1;
                        at += total;
                    }
                    Parsed::Incomplete => {
                        // A record longer than the chunk: read it whole next round, unless its
                        // length runs past the synced end, which only a damaged header can do.
                        if at == 0 && chunk.len() >= 4 {
                            let n = u32::from_le_bytes(chunk[0..4].try_into().unwrap()) as usize + 8;
                            if pos + n as u64 > limit {
                                invalid = Some(format!("record length {} runs past the synced end", n - 8));
                            } else {
                                needed = Some(n);
                            }
                        } else if at == 0 {
                            invalid = Some("record cut short inside synced data".into());
                        }
                        break;
                    }
                    Parsed::Invalid(reason) => {
                        invalid = Some(reason);
                        break;
                    }
                }
            }
            if let Some((_, _, p)) = self.segment.as_mut() {
                *p += at as u64;
            }
            if out.len() > records_before {
                self.record_size = at / (out.len() - records_before) + 64;
            }
            if let Some(reason) = invalid {
                self.quarantine(base, pos + at as u64, limit, c, reason)?;
                continue;
            }
            if let Some(n) = needed {
                let (_, file, p) = self.segment.as_ref().unwrap();
                let at = *p;
                let whole = Bytes::from(read_exact_at(file, at, n)?);
                match parse_record(&whole) {
                    Parsed::Record { parts, total } => {
                        let record = self.record(&whole.slice(HEADER..total), &parts);
                        bytes += record.event.len();
                        out.push(record);
                        self.next_offset += 1;
                        self.segment.as_mut().unwrap().2 += total as u64;
                    }
                    Parsed::Invalid(reason) => self.quarantine(base, at, limit, c, reason)?,
                    Parsed::Incomplete => self.quarantine(base, at, limit, c, "record cut short inside synced data".into())?,
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
            let limit = self.segment_limit(base, c);
            let end_offset = self.segment_end_offset(base, c);
            let (pos, offset) = skip_to(&file, base, self.next_offset, limit, end_offset)?;
            // A target inside a quarantined span resumes after it (the span was dead-lettered
            // before the cursor passed it).
            self.next_offset = offset;
            self.segment = Some((base, file, pos));
        }
        let base = self.segment.as_ref().unwrap().0;
        Ok((base, self.segment_limit(base, c)))
    }

    /// Bytes of segment `base` a reader may read.
    fn segment_limit(&self, base: u64, c: &Committed) -> u64 {
        if base == c.active_base {
            c.active_len
        } else {
            self.shared.segments.lock().unwrap().get(&base).copied().unwrap_or(0)
        }
    }

    /// Skips the bad bytes at `pos` of the open segment (see the module doc) and keeps them.
    fn quarantine(&mut self, base: u64, pos: u64, limit: u64, c: Committed, reason: String) -> Result<(), LogError> {
        let end_offset = self.segment_end_offset(base, &c);
        let (_, file, _) = self.segment.as_ref().unwrap();
        let rest = read_exact_at(file, pos, (limit - pos) as usize)?;
        let (skip, records) = corrupt_span(&rest, end_offset.saturating_sub(self.next_offset));
        let segment = self.shared.segment_path(base).display().to_string();
        tracing::error!(consumer = %self.consumer, %segment, position = pos, offset = self.next_offset, records, bytes = skip, %reason,
            "corrupt record in the event log; quarantined and skipped");
        self.corrupt.push(CorruptRecord {
            segment,
            position: pos,
            offset: self.next_offset,
            records,
            reason,
            bytes: Bytes::copy_from_slice(&rest[..skip]),
        });
        self.next_offset += records;
        self.segment.as_mut().unwrap().2 = pos + skip as u64;
        Ok(())
    }

    /// The offset that follows the last record of segment `base`.
    fn segment_end_offset(&self, base: u64, c: &Committed) -> u64 {
        if base == c.active_base {
            return c.next_offset;
        }
        let segments = self.shared.segments.lock().unwrap();
        segments.range(base + 1..).next().map_or(c.next_offset, |(b, _)| *b)
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
    /// The record at `next_offset`, from its payload (source and write key id interned).
    fn record(&mut self, payload: &Bytes, parts: &payload::Parts) -> Record {
        let source = self.intern(&payload[parts.source.clone()]);
        let write_key_id = self.intern_key_id(&payload[parts.write_key_id.clone()]);
        Record::from_parts(self.next_offset, payload, parts, source, write_key_id)
    }

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

/// `len` bytes at `pos`. Through seek and `read_to_end` rather than `read_exact_at` into a
/// zeroed buffer: the chunks are megabytes, and zeroing each first was a pass over memory of its
/// own (`memset`, the largest source of page faults in a four-destination drain). The reader
/// owns this `File` (one per segment it reads), so nothing else moves its position.
fn read_exact_at(file: &File, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    read_into(file, pos, len, Vec::with_capacity(len))
}

/// [`read_exact_at`] into `buf` (empty, with room for `len`).
fn read_into(file: &File, pos: u64, len: usize, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut handle = file;
    handle.seek(SeekFrom::Start(pos))?;
    handle.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("read {} of {len} bytes at {pos}", buf.len())));
    }
    Ok(buf)
}

/// Byte position of record `target` in a segment starting at `base`, found by walking headers;
/// returns it with the offset found there (past `target` when `target` lies in a damaged span).
/// A header that cannot be right (an impossible length, or one running past `limit`) is
/// stepped over the way a read quarantines it, so both agree on the offsets.
fn skip_to(file: &File, base: u64, target: u64, limit: u64, end_offset: u64) -> Result<(u64, u64), LogError> {
    let mut pos = 0u64;
    let mut offset = base;
    let mut header = [0u8; 8];
    while offset < target && pos < limit {
        file.read_exact_at(&mut header, pos)?;
        let len = u64::from(u32::from_le_bytes(header[0..4].try_into().unwrap()));
        if (2..=crate::segment::MAX_RECORD as u64).contains(&len) && pos + 8 + len <= limit {
            pos += 8 + len;
            offset += 1;
            continue;
        }
        let rest = read_exact_at(file, pos, (limit - pos) as usize)?;
        let (skip, records) = corrupt_span(&rest, end_offset.saturating_sub(offset));
        pos += skip as u64;
        offset += records;
    }
    Ok((pos, offset))
}

/// `rest` starts with bytes that are not a valid record and runs to the synced end of its
/// segment, which holds `offsets_left` offsets from here. Returns how many bytes to skip and how
/// many offsets they stood for.
fn corrupt_span(rest: &[u8], offsets_left: u64) -> (usize, u64) {
    let starts_record = |at: usize| at == rest.len() || matches!(parse_record(&rest[at..]), Parsed::Record { .. });
    // An intact header with a damaged payload: the length still leads to the next record.
    if rest.len() >= HEADER {
        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
        let next = HEADER.saturating_add(len);
        if (2..=crate::segment::MAX_RECORD).contains(&len) && next <= rest.len() && starts_record(next) {
            return (next, 1);
        }
    }
    // A damaged header: the next byte where a record with a valid checksum starts.
    let resume = (1..=rest.len()).find(|&at| starts_record(at)).unwrap_or(rest.len());
    let after = count_records(&rest[resume..]);
    (resume, offsets_left.saturating_sub(after).max(1))
}

/// Records in `buf` (a segment's tail starting at a record), counting a record with an intact
/// header but a bad payload as one; stops at a damaged header.
fn count_records(buf: &[u8]) -> u64 {
    let mut at = 0usize;
    let mut n = 0u64;
    while at + HEADER <= buf.len() {
        let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        if !(2..=crate::segment::MAX_RECORD).contains(&len) || at + HEADER + len > buf.len() {
            break;
        }
        at += HEADER + len;
        n += 1;
    }
    n
}
