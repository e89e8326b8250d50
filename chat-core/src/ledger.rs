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
//! The crash order, and why: an intent line is written and fsynced (grouped with every other
//! intent that arrives during the fsync) *before* the event is handed to the SDK, whose durable
//! queue fsyncs it in turn. So every event that can reach Sluice is in the ledger: no event is
//! invisible to reconciliation. The confirmation is written after the SDK's send returned, without
//! an fsync of its own (it rides on the next group's fsync, or the one-second tick).
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
use std::sync::mpsc;
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

    /// Records that `id` is about to be emitted; returns once the line is on disk.
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

/// Group commit: everything queued while the previous fsync ran goes out in one write + fsync.
fn writer(mut file: File, rx: mpsc::Receiver<Record>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut waiters = Vec::new();
    let mut dirty = false;
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(r) => Some(r),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let ticked = first.is_none();
        let mut next = first;
        while let Some(record) = next {
            match record {
                Record::Intent(id, done) => {
                    buf.extend_from_slice(id.as_bytes());
                    buf.push(b'\n');
                    waiters.push(done);
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
                Record::Sync(done) => waiters.push(done),
            }
            next = if waiters.len() < 4096 { rx.try_recv().ok() } else { None };
        }
        if !buf.is_empty() {
            if let Err(e) = file.write_all(&buf) {
                fail(&mut waiters, &e);
                buf.clear();
                continue;
            }
            buf.clear();
            dirty = true;
        }
        // Only intents (and explicit syncs) wait for the disk; confirmations ride along, or go
        // out with the once-a-second tick when nothing else is happening.
        if dirty && (!waiters.is_empty() || ticked) {
            match file.sync_data() {
                Ok(()) => {
                    dirty = false;
                    for w in waiters.drain(..) {
                        let _ = w.send(Ok(()));
                    }
                }
                Err(e) => fail(&mut waiters, &e),
            }
        } else {
            for w in waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
        }
    }
    let _ = file.write_all(&buf);
    let _ = file.sync_data();
}

fn fail(waiters: &mut Vec<oneshot::Sender<Result<(), String>>>, e: &std::io::Error) {
    tracing::error!(error = %e, "emission ledger write failed");
    for w in waiters.drain(..) {
        let _ = w.send(Err(e.to_string()));
    }
}
