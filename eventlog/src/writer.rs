//! The single writer thread: group commit.
//!
//! Requests queue in a channel while the previous group is being synced; the thread then takes
//! everything queued (up to a size cap), writes it with one `write` per request and one
//! `fdatasync`, and answers every request in the group. One sync per group instead of one per
//! request is what lets durable ingest run at network speed.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::segment::{segment_path, sync_dir, Active};
use crate::{metric, AppendBatch, Committed, LogConfig, LogError, Shared};

pub(crate) struct Request {
    pub batch: AppendBatch,
    pub reply: oneshot::Sender<Result<u64, LogError>>,
}

/// Most bytes written in one group: bounds the latency a huge backlog adds to one sync.
const MAX_GROUP_BYTES: usize = 32 << 20;

pub(crate) fn spawn(
    config: LogConfig,
    shared: Arc<Shared>,
    active: Active,
    rx: mpsc::Receiver<Request>,
) -> Result<(), LogError> {
    std::thread::Builder::new()
        .name("sluice-log-writer".into())
        .spawn(move || Writer { config, shared, active, poisoned: None }.run(rx))?;
    Ok(())
}

struct Writer {
    config: LogConfig,
    shared: Arc<Shared>,
    active: Active,
    poisoned: Option<String>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut group: Vec<Request> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut bytes = first.batch.bytes();
            group.push(first);
            while bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(req) => {
                        bytes += req.batch.bytes();
                        group.push(req);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
    }

    fn commit_group(&mut self, group: &mut Vec<Request>) {
        if let Some(why) = &self.poisoned {
            for req in group.drain(..) {
                let _ = req.reply.send(Err(LogError::Poisoned(why.clone())));
            }
            return;
        }
        // Refuse what does not fit the budget before writing anything.
        let budget = self.config.disk_budget_bytes;
        let mut used = self.shared.size_bytes.load(Ordering::Relaxed);
        let mut accepted = Vec::with_capacity(group.len());
        let mut refused = false;
        for req in group.drain(..) {
            let need = req.batch.bytes() as u64;
            if used + need > budget {
                refused = true;
                let _ = req.reply.send(Err(LogError::Full { used, budget }));
            } else {
                used += need;
                accepted.push(req);
            }
        }
        self.shared.refusing.store(refused, Ordering::Relaxed);
        if accepted.is_empty() {
            return;
        }
        let started = Instant::now();
        match self.write_and_sync(&accepted) {
            Ok(first_offsets) => {
                metrics::histogram!(metric::APPEND_SYNC_SECONDS).record(started.elapsed().as_secs_f64());
                metrics::histogram!(metric::GROUP_COMMIT_REQUESTS).record(accepted.len() as f64);
                *self.shared.write_error.lock().unwrap() = None;
                for (req, first) in accepted.into_iter().zip(first_offsets) {
                    let _ = req.reply.send(Ok(first));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "event log write failed; the requests in this group get 503");
                let msg = e.to_string();
                *self.shared.write_error.lock().unwrap() = Some(self.poisoned.clone().unwrap_or_else(|| msg.clone()));
                for req in accepted {
                    let _ = req.reply.send(Err(LogError::Io(std::io::Error::other(msg.clone()))));
                }
            }
        }
    }

    /// Writes every request, syncs once, publishes the new end. On failure the file is cut back
    /// to where it was, so no half-group survives to be read (or re-read after a restart).
    fn write_and_sync(&mut self, group: &[Request]) -> std::io::Result<Vec<u64>> {
        if self.active.len >= self.config.segment_bytes {
            self.roll()?;
        }
        let start_len = self.active.len;
        let mut offsets = Vec::with_capacity(group.len());
        let mut next = self.active.next_offset;
        let result = (|| {
            for req in group {
                self.active.file.write_all(&req.batch.buf)?;
                offsets.push(next);
                next += req.batch.count;
            }
            self.active.file.sync_data()
        })();
        if let Err(e) = result {
            if let Err(cut) = self.active.file.set_len(start_len).and_then(|_| self.active.file.sync_data()) {
                self.poisoned = Some(format!("write failed ({e}) and the tail could not be cut back ({cut})"));
            }
            return Err(e);
        }
        let written: u64 = group.iter().map(|r| r.batch.buf.len() as u64).sum();
        self.active.len += written;
        self.active.next_offset = next;
        self.shared.segments.lock().unwrap().insert(self.active.base, self.active.len);
        let size = self.shared.size_bytes.fetch_add(written, Ordering::Relaxed) + written;
        metrics::gauge!(metric::SIZE_BYTES).set(size as f64);
        metrics::gauge!(metric::NEXT_OFFSET).set(next as f64);
        self.publish();
        Ok(offsets)
    }

    /// Seals the active segment and starts a new one named after the next offset.
    fn roll(&mut self) -> std::io::Result<()> {
        let base = self.active.next_offset;
        let path = segment_path(&self.shared.dir, base);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        sync_dir(&self.shared.dir.join("segments"))?;
        self.active.file = file;
        self.active.base = base;
        self.active.len = 0;
        self.shared.segments.lock().unwrap().insert(base, 0);
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let _ = self.active.committed_tx.send(Committed {
            next_offset: self.active.next_offset,
            active_base: self.active.base,
            active_len: self.active.len,
        });
    }
}

