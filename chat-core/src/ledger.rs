//! The emission ledger: the `messageId` of every analytics event the chat core emits, so that
//! `sluice reconcile` can prove what landed.
//!
//! Format (`<data_dir>/emitted.ledger`, append-only text, one record per line):
//!
//! ```text
//! 6f1c0d3e-5a8b-4c3e-9d2f-0b7e8a9c1d2e     intent: about to be handed to the SDK (37 bytes)
//! +6f1c0d3e-5a8b-4c3e-9d2f-0b7e8a9c1d2e    confirmed: the SDK accepted it (durably queued)
//! -6f1c0d3e-5a8b-4c3e-9d2f-0b7e8a9c1d2e    refused: the SDK returned an error, it was never queued
//! ```
//!
//! The crash order, and why: an intent line is written to the file (one `write` for every intent
//! that arrived meanwhile) *before* the event is handed to the SDK, whose durable queue fsyncs it.
//! The intent waits for the write, not for an fsync: once written, the line is in the kernel's
//! page cache and survives a crash (even SIGKILL) of the chat core. A syncer thread fsyncs the file
//! every 100 ms while it is dirty. So every event that can reach Sluice is in the ledger, and the
//! user's action waits for one fsync (the SDK's), not two; an earlier version fsynced the intent
//! first and doubled the analytics cost of every post (BENCHMARKS.md, "Chat capture").
//! What a power cut (not a process crash) can lose is the last 100 ms of ledger lines; their
//! events may then land without being in the ledger, which reconciliation reports as "not in the
//! ledger", never as missing. Confirmations are written the same way.
//!
//! A crash of the chat core between the two fsyncs leaves intents that were never queued; they
//! must not count as "missing". Reconciliation therefore reads an intent without a confirmation as
//! *unconfirmed*: if its id landed it counts as emitted and landed; if not, it is reported apart
//! ("unconfirmed, not landed": in flight when the chat core stopped) and not as missing. The
//! blind spot is the events whose confirmation was lost in the same crash *and* that were then
//! lost downstream: at most the events in flight at the crash, and it is printed as a number.
//!
//! A torn last line (crash in the middle of a write) is terminated with a newline on open, and
//! readers skip lines that are not a record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::ChatError;

enum Record {
    Intent(String, oneshot::Sender<Result<(), String>>),
    Confirm(String),
    Refuse(String),
    Sync(oneshot::Sender<Result<(), String>>),
}

/// A handle to the ledger's writer thread; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Record>,
}

impl Ledger {
    pub fn open(path: &Path) -> Result<Ledger, ChatError> {
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
            }
        }
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("ledger".into()).spawn(move || writer(file, rx))?;
        Ok(Ledger { tx })
    }

    /// Records that `id` is about to be emitted; returns once the line is written (not fsynced,
    /// see the module docs).
    pub async fn intent(&self, id: &str) -> Result<(), ChatError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Record::Intent(id.to_string(), done)).map_err(|_| ChatError::Ledger("writer stopped".into()))?;
        wait.await.map_err(|_| ChatError::Ledger("writer stopped".into()))?.map_err(ChatError::Ledger)
    }

    pub fn confirm(&self, id: &str) {
        let _ = self.tx.send(Record::Confirm(id.to_string()));
    }

    pub fn refuse(&self, id: &str) {
        let _ = self.tx.send(Record::Refuse(id.to_string()));
    }

    /// Writes and fsyncs everything recorded so far (at shutdown).
    pub async fn sync(&self) -> Result<(), ChatError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Record::Sync(done)).map_err(|_| ChatError::Ledger("writer stopped".into()))?;
        wait.await.map_err(|_| ChatError::Ledger("writer stopped".into()))?.map_err(ChatError::Ledger)
    }
}

/// How often the syncer thread fsyncs a dirty ledger.
const SYNC_EVERY: Duration = Duration::from_millis(100);

/// Writes what is queued in one `write` and answers the intents at once; fsyncs are the syncer
/// thread's job (or done here for an explicit `sync`), so an intent never waits for the disk.
fn writer(mut file: File, rx: mpsc::Receiver<Record>) {
    let dirty = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = match file.try_clone() {
        Ok(clone) => {
            let (dirty, stop) = (dirty.clone(), stop.clone());
            std::thread::Builder::new().name("ledger-sync".into()).spawn(move || syncer(clone, &dirty, &stop)).ok()
        }
        Err(e) => {
            tracing::error!(error = %e, "emission ledger: no syncer thread; every write is fsynced at once");
            None
        }
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut intents = Vec::new();
    let mut syncs = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            match record {
                Record::Intent(id, done) => {
                    buf.extend_from_slice(id.as_bytes());
                    buf.push(b'\n');
                    intents.push(done);
                }
                Record::Confirm(id) => {
                    buf.push(b'+');
                    buf.extend_from_slice(id.as_bytes());
                    buf.push(b'\n');
                }
                Record::Refuse(id) => {
                    buf.push(b'-');
                    buf.extend_from_slice(id.as_bytes());
                    buf.push(b'\n');
                }
                Record::Sync(done) => syncs.push(done),
            }
            next = if intents.len() < 4096 { rx.try_recv().ok() } else { None };
        }
        if !buf.is_empty() {
            let written = file.write_all(&buf);
            buf.clear();
            if let Err(e) = written {
                fail(&mut intents, &e);
                fail(&mut syncs, &e);
                continue;
            }
            dirty.store(true, Ordering::Release);
        }
        for w in intents.drain(..) {
            let _ = w.send(Ok(()));
        }
        if !syncs.is_empty() || syncer.is_none() {
            dirty.store(false, Ordering::Release);
            match file.sync_data() {
                Ok(()) => syncs.drain(..).for_each(|w| drop(w.send(Ok(())))),
                Err(e) => fail(&mut syncs, &e),
            }
        }
    }
    stop.store(true, Ordering::Release);
    let _ = file.sync_data();
    if let Some(t) = syncer {
        let _ = t.join();
    }
}

fn syncer(file: File, dirty: &AtomicBool, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(SYNC_EVERY);
        if dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = file.sync_data() {
                tracing::error!(error = %e, "emission ledger fsync failed");
                dirty.store(true, Ordering::Release);
            }
        }
    }
}

fn fail(waiters: &mut Vec<oneshot::Sender<Result<(), String>>>, e: &std::io::Error) {
    tracing::error!(error = %e, "emission ledger write failed");
    for w in waiters.drain(..) {
        let _ = w.send(Err(e.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An intent is in the file (the page cache) by the time `intent` returns, before any fsync:
    /// that is what makes a SIGKILL right after it harmless. A torn last line from an earlier crash
    /// is ended first, so the next record starts on a line of its own.
    #[tokio::test]
    async fn intents_are_written_before_intent_returns_and_follow_a_torn_line_on_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emitted.ledger");
        std::fs::write(&path, "older\n+older\ntorn-by-a-cra").unwrap();
        let ledger = Ledger::open(&path).unwrap();
        ledger.intent("a1").await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "older\n+older\ntorn-by-a-cra\na1\n");
        ledger.confirm("a1");
        ledger.refuse("b2");
        ledger.intent("c3").await.unwrap();
        ledger.sync().await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "older\n+older\ntorn-by-a-cra\na1\n+a1\n-b2\nc3\n");
    }
}
