//! The durable queue: append-only segment files with group-committed fsync.
//!
//! Files under the queue directory:
//! - `NNNNNNNNNNNNNNNNNNNN.seg` (20-digit id, increasing): records, each
//!   `len: u32 LE | crc32(payload): u32 LE | payload` where payload is the event's JSON.
//! - `ack`: `segment: u64 LE | offset: u64 LE | crc32 of those 16 bytes: u32 LE`, the position up
//!   to which every record is finished (acknowledged by the collector, or rejected). Replaced by
//!   write-to-`ack.tmp` + rename, without fsync: a stale or torn `ack` only means resending
//!   events that were already delivered (same `messageId`), never losing one.
//! - `lock`: held with an OS file lock by the one client using the directory.
//!
//! One writer thread appends: every record submitted while an fsync runs goes into the next
//! write + `fdatasync`, and each `send()` returns once its record is fsynced. A new segment is
//! started when the active one passes `segment_bytes`, and at every open (so an old, possibly
//! torn, segment is never appended to). Segments wholly before the ack position are deleted.
//! On open, each remaining segment is scanned from the ack position: the first record whose
//! length or checksum does not hold ends it (a torn tail from a crash mid-write; logged and cut),
//! and the records before it are resent.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crate::shared::{Counters, Item, Shared};
use crate::Error;

const HEADER: usize = 8;

/// How `send()` learns that its record is fsynced.
pub(crate) enum Completion {
    Std(std::sync::mpsc::SyncSender<io::Result<()>>),
    Tokio(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl Completion {
    fn complete(self, r: io::Result<()>) {
        match self {
            Completion::Std(tx) => {
                let _ = tx.send(r);
            }
            Completion::Tokio(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

struct Append {
    bytes: Vec<u8>,
    done: Completion,
}

#[derive(Default)]
struct Pending {
    appends: Vec<Append>,
    stop: bool,
}

/// The writer side, shared by every `send()`.
pub(crate) struct DiskQueue {
    dir: PathBuf,
    pending: Mutex<Pending>,
    ready: Condvar,
    _lock: File,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_ack(dir: &Path) -> (u64, u64) {
    let Ok(b) = fs::read(dir.join("ack")) else {
        return (0, 0);
    };
    if b.len() != 20 || crc32fast::hash(&b[..16]).to_le_bytes() != b[16..20] {
        tracing::warn!("sluice-analytics: durable queue ack file unreadable; resending everything on disk");
        return (0, 0);
    }
    let seg = u64::from_le_bytes(b[..8].try_into().unwrap());
    let off = u64::from_le_bytes(b[8..16].try_into().unwrap());
    (seg, off)
}

/// Reads the record at `off` of `f`; `None` at a clean end, a torn or corrupt record.
fn read_record(f: &mut impl Read, max_len: u64) -> Option<Vec<u8>> {
    let mut h = [0u8; HEADER];
    f.read_exact(&mut h).ok()?;
    let len = u64::from(u32::from_le_bytes(h[..4].try_into().unwrap()));
    let crc = u32::from_le_bytes(h[4..].try_into().unwrap());
    if len == 0 || len > max_len {
        return None;
    }
    let mut payload = vec![0u8; len as usize];
    f.read_exact(&mut payload).ok()?;
    (crc32fast::hash(&payload) == crc).then_some(payload)
}

/// Scans `path` from `start`: (valid end offset, number of valid records).
fn scan(path: &Path, start: u64) -> io::Result<(u64, u64)> {
    let mut f = io::BufReader::new(File::open(path)?);
    f.seek(SeekFrom::Start(start))?;
    let (mut off, mut n) = (start, 0);
    while let Some(p) = read_record(&mut f, u64::from(u32::MAX)) {
        off += (HEADER + p.len()) as u64;
        n += 1;
    }
    Ok((off, n))
}

impl DiskQueue {
    /// Opens (or creates) the queue in `dir`, recovers what is on disk into `shared`'s state and
    /// starts the writer thread. Returns the queue and the reader positioned at the oldest
    /// unfinished record.
    pub fn open(dir: &Path, shared: &Arc<Shared>) -> Result<(Arc<DiskQueue>, Reader), Error> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        if lock.try_lock().is_err() {
            return Err(Error::Config(format!(
                "durable queue {} is in use by another client",
                dir.display()
            )));
        }
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let (ack_seg, ack_off) = read_ack(dir);
        let mut sealed = BTreeMap::new();
        let (mut records, mut disk_bytes) = (0u64, 0u64);
        let mut start = None;
        for &id in &ids {
            let path = segment_path(dir, id);
            if id < ack_seg {
                fs::remove_file(&path)?;
                continue;
            }
            let len = fs::metadata(&path)?.len();
            let from = if id == ack_seg { ack_off.min(len) } else { 0 };
            let (end, n) = scan(&path, from)?;
            if end < len {
                tracing::warn!(segment = id, cut_bytes = len - end, "sluice-analytics: torn or corrupt tail in the durable queue cut");
                OpenOptions::new().write(true).open(&path)?.set_len(end)?;
            }
            if end == 0 {
                // An active segment that never got a record (a run that sent nothing).
                fs::remove_file(&path)?;
                continue;
            }
            records += n;
            disk_bytes += end;
            sealed.insert(id, end);
            start.get_or_insert((id, from));
        }
        let active = ids.last().map_or(1, |l| l + 1);
        File::create(segment_path(dir, active))?;
        sync_dir(dir)?;
        let start = start.unwrap_or((active, 0));
        {
            let mut st = shared.lock();
            st.next_seq = records;
            st.read_seq = 0;
            st.disk_bytes = disk_bytes;
            st.active_segment = active;
            st.committed = 0;
            st.sealed = sealed;
        }
        if records > 0 {
            tracing::info!(records, "sluice-analytics: resending events left in the durable queue");
        }
        let q = Arc::new(DiskQueue {
            dir: dir.to_path_buf(),
            pending: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            _lock: lock,
        });
        let (wq, ws) = (q.clone(), shared.clone());
        std::thread::Builder::new()
            .name("sluice-analytics-fsync".into())
            .spawn(move || wq.write_loop(&ws, active))
            .map_err(|e| Error::Start(e.to_string()))?;
        let reader = Reader {
            dir: dir.to_path_buf(),
            seg: start.0,
            off: start.1,
            file: None,
            peeked: None,
        };
        Ok((q, reader))
    }

    /// Queues `bytes` for the next group commit; `done` fires once it is fsynced (or failed).
    pub fn submit(&self, bytes: Vec<u8>, done: Completion) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.stop {
            drop(p);
            done.complete(Err(io::Error::other("the durable queue is closed")));
            return;
        }
        p.appends.push(Append { bytes, done });
        drop(p);
        self.ready.notify_one();
    }

    /// Stops the writer once what is submitted is written.
    pub fn stop(&self) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.ready.notify_one();
    }

    fn write_loop(&self, shared: &Shared, mut active: u64) {
        let seg_limit = shared.config.segment_bytes;
        let mut file = match OpenOptions::new().append(true).open(segment_path(&self.dir, active)) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(error = %e, "sluice-analytics: cannot open the durable queue segment");
                None
            }
        };
        let mut len = 0u64;
        let mut buf = Vec::new();
        loop {
            let batch = {
                let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                while p.appends.is_empty() && !p.stop {
                    p = self.ready.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                if p.appends.is_empty() {
                    return;
                }
                std::mem::take(&mut p.appends)
            };
            buf.clear();
            for a in &batch {
                buf.extend_from_slice(&(a.bytes.len() as u32).to_le_bytes());
                buf.extend_from_slice(&crc32fast::hash(&a.bytes).to_le_bytes());
                buf.extend_from_slice(&a.bytes);
            }
            let result = match file.as_mut() {
                Some(f) => f.write_all(&buf).and_then(|_| f.sync_data()),
                None => Err(io::Error::other("the durable queue segment is not open")),
            };
            let n = batch.len() as u64;
            Counters::add(&shared.counters.disk_syncs, 1);
            match result {
                Ok(()) => {
                    len += buf.len() as u64;
                    let mut st = shared.lock();
                    st.committed = len;
                    st.next_seq += n;
                    drop(st);
                    shared.wake.notify_one();
                    for a in batch {
                        a.done.complete(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "sluice-analytics: durable queue write failed");
                    // Cut a partial write so the segment stays a clean sequence of records.
                    if let Some(f) = file.as_ref() {
                        let _ = f.set_len(len);
                    }
                    let mut st = shared.lock();
                    st.disk_bytes = st.disk_bytes.saturating_sub(buf.len() as u64);
                    drop(st);
                    shared.notify_changed();
                    for a in batch {
                        a.done.complete(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                }
            }
            if len >= seg_limit {
                match File::create(segment_path(&self.dir, active + 1)).and_then(|f| {
                    sync_dir(&self.dir)?;
                    Ok(f)
                }) {
                    Ok(f) => {
                        let mut st = shared.lock();
                        st.sealed.insert(active, len);
                        active += 1;
                        st.active_segment = active;
                        st.committed = 0;
                        drop(st);
                        file = Some(f);
                        len = 0;
                    }
                    Err(e) => tracing::error!(error = %e, "sluice-analytics: cannot start a new durable queue segment; appending to the current one"),
                }
            }
        }
    }
}

/// The sender's read position in the queue.
pub(crate) struct Reader {
    dir: PathBuf,
    seg: u64,
    off: u64,
    file: Option<io::BufReader<File>>,
    peeked: Option<Vec<u8>>,
}

/// Where a batch ends: everything before it is finished once the batch is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckPos {
    pub seg: u64,
    pub off: u64,
}

impl Reader {
    /// Appends records to `out` while they fit in `max_events`/`max_bytes` (counting
    /// `bytes_so_far`); returns the bytes added. Stops at the committed end.
    pub fn read_into(
        &mut self,
        shared: &Shared,
        out: &mut Vec<Item>,
        max_events: usize,
        max_bytes: usize,
        mut bytes_so_far: usize,
    ) -> usize {
        let start_bytes = bytes_so_far;
        while out.len() < max_events {
            let rec = match self.peeked.take() {
                Some(r) => r,
                None => match self.next_record(shared) {
                    Some(r) => r,
                    None => break,
                },
            };
            if !out.is_empty() && bytes_so_far + rec.len() + 1 > max_bytes {
                self.peeked = Some(rec);
                break;
            }
            bytes_so_far += rec.len() + 1;
            let mut st = shared.lock();
            let seq = st.read_seq;
            st.read_seq += 1;
            if out.is_empty() {
                st.inflight_first = Some(seq);
            }
            drop(st);
            out.push(Item { seq, bytes: rec });
        }
        bytes_so_far - start_bytes
    }

    /// True when a record was read that did not fit in the last batch.
    pub fn has_peeked(&self) -> bool {
        self.peeked.is_some()
    }

    /// The position after the last record handed out.
    pub fn position(&self) -> AckPos {
        // A peeked record is read but not handed out: the ack must stop before it.
        let back = self.peeked.as_ref().map_or(0, |r| (HEADER + r.len()) as u64);
        AckPos {
            seg: self.seg,
            off: self.off - back,
        }
    }

    fn next_record(&mut self, shared: &Shared) -> Option<Vec<u8>> {
        loop {
            let (limit, next_seg) = {
                let st = shared.lock();
                if self.seg == st.active_segment {
                    (st.committed, None)
                } else {
                    let limit = st.sealed.get(&self.seg).copied().unwrap_or(0);
                    let next = st
                        .sealed
                        .range(self.seg + 1..)
                        .next()
                        .map_or(st.active_segment, |(id, _)| *id);
                    (limit, Some(next))
                }
            };
            if self.off < limit {
                if self.file.is_none() {
                    let mut f = File::open(segment_path(&self.dir, self.seg)).ok()?;
                    f.seek(SeekFrom::Start(self.off)).ok()?;
                    self.file = Some(io::BufReader::new(f));
                }
                let f = self.file.as_mut()?;
                match read_record(f, limit - self.off) {
                    Some(r) => {
                        self.off += (HEADER + r.len()) as u64;
                        return Some(r);
                    }
                    None => {
                        shared.report(crate::Issue::Dropped {
                            count: 0,
                            reason: format!("durable segment {} unreadable after offset {}; skipped", self.seg, self.off),
                        });
                        self.off = limit;
                    }
                }
            }
            let next = next_seg?;
            self.seg = next;
            self.off = 0;
            self.file = None;
        }
    }
}

impl DiskQueue {
    /// Records that everything before `pos` is finished and deletes segments wholly before it.
    pub fn ack(&self, shared: &Shared, pos: AckPos) {
        let mut b = Vec::with_capacity(20);
        b.extend_from_slice(&pos.seg.to_le_bytes());
        b.extend_from_slice(&pos.off.to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
        let tmp = self.dir.join("ack.tmp");
        if let Err(e) = fs::write(&tmp, &b).and_then(|_| fs::rename(&tmp, self.dir.join("ack"))) {
            tracing::warn!(error = %e, "sluice-analytics: cannot persist the durable queue ack; events may be resent after a restart");
            return;
        }
        let done: Vec<(u64, u64)> = {
            let st = shared.lock();
            st.sealed
                .iter()
                .filter(|(id, end)| **id < pos.seg || (**id == pos.seg && pos.off >= **end))
                .map(|(id, end)| (*id, *end))
                .collect()
        };
        if done.is_empty() {
            return;
        }
        let mut freed = 0;
        for (id, end) in &done {
            if let Err(e) = fs::remove_file(segment_path(&self.dir, *id)) {
                tracing::warn!(segment = id, error = %e, "sluice-analytics: cannot delete an acknowledged segment");
            }
            freed += end;
        }
        let mut st = shared.lock();
        for (id, _) in &done {
            st.sealed.remove(id);
        }
        st.disk_bytes = st.disk_bytes.saturating_sub(freed);
        drop(st);
        shared.notify_changed();
    }
}
