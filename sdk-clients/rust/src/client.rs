//! The caller-facing handle.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{ClientConfig, Issue, QueueFullPolicy};
use crate::disk::{Completion, DiskQueue};
use crate::sender::Sender;
use crate::shared::{Counters, Item, Shared, State};
use crate::{Error, Message};

const RECORD_HEADER: u64 = 8;

/// A snapshot of the client's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Events the collector acknowledged (200).
    pub sent: u64,
    /// Requests that failed and were tried again (any cause).
    pub retried: u64,
    /// Events dropped under [`QueueFullPolicy::DropOldest`].
    pub dropped: u64,
    /// Events the collector refused alone (400/413), reported as [`Issue::Rejected`].
    pub rejected: u64,
    /// Answers 401/403 (write key refused).
    pub unauthorized: u64,
    /// Requests the collector acknowledged.
    pub batches: u64,
    /// Events accepted by `send()` and not finished yet (queued or in flight).
    pub queued: u64,
    /// Durable mode: bytes of the queue's segment files.
    pub disk_bytes: u64,
}

struct Inner {
    shared: Arc<Shared>,
    disk: Option<Arc<DiskQueue>>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: nothing can flush any more, so the sender stops. Memory-queue
        // events not yet sent are lost (call shutdown() to drain); durable ones stay on disk.
        self.shared.lock().closed = true;
        let _ = self.stop.send(true);
        if let Some(d) = &self.disk {
            d.stop();
        }
    }
}

/// A handle on one analytics client: a queue and the background sender draining it. Cheap to
/// clone; every clone is the same client.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("config", &self.inner.shared.config).finish()
    }
}

enum Push {
    /// Queued; `n` older events were dropped to make room.
    Done(u64),
    Full,
}

impl Client {
    /// Checks `config`, opens the durable queue if configured (recovering what an earlier run
    /// left), and starts the sender on its own thread and single-threaded tokio runtime, so the
    /// client works the same from sync code and from inside any runtime.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("sluice-analytics/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Start(e.to_string()))?;
        let shared = Arc::new(Shared::new(config));
        let (disk, reader) = match shared.config.durable_dir.clone() {
            Some(dir) => {
                let (q, r) = DiskQueue::open(&dir, &shared)?;
                (Some(q), Some(r))
            }
            None => (None, None),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Start(e.to_string()))?;
        let sender = Sender {
            shared: shared.clone(),
            http,
            disk: disk.clone().zip(reader),
            stop: stop_rx,
        };
        let thread = std::thread::Builder::new()
            .name("sluice-analytics-sender".into())
            .spawn(move || runtime.block_on(sender.run()))
            .map_err(|e| Error::Start(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                shared,
                disk,
                stop: stop_tx,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn prepare(&self, msg: &Message) -> Result<Vec<u8>, Error> {
        msg.validate().map_err(Error::InvalidMessage)?;
        let bytes = msg.to_bytes();
        let limit = self.shared().config.max_event_bytes;
        if bytes.len() > limit {
            return Err(Error::EventTooLarge {
                message_id: msg.message_id().to_string(),
                size: bytes.len(),
                limit,
            });
        }
        Ok(bytes)
    }

    /// Memory mode: queues `bytes` if there is room (dropping the oldest under DropOldest).
    fn try_push(&self, st: &mut State, bytes: &mut Option<Vec<u8>>) -> Result<Push, Error> {
        if st.closed {
            return Err(Error::Closed);
        }
        let cfg = &self.shared().config;
        let len = bytes.as_ref().map_or(0, Vec::len);
        let fits = |st: &State| {
            st.queue.len() < cfg.max_queue_events && st.queue_bytes + len <= cfg.max_queue_bytes
        };
        let mut dropped_now = 0;
        if !fits(st) {
            if cfg.queue_full == QueueFullPolicy::Block {
                return Ok(Push::Full);
            }
            let mut dropped = 0;
            while !fits(st) {
                let Some(old) = st.queue.pop_front() else { break };
                st.queue_bytes -= old.bytes.len();
                dropped += 1;
            }
            Counters::add(&self.shared().counters.dropped, dropped);
            dropped_now = dropped;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.queue_bytes += len;
        st.queue.push_back(Item {
            seq,
            bytes: bytes.take().expect("pushed once"),
        });
        Ok(Push::Done(dropped_now))
    }

    /// Durable mode: reserves disk room for a record of `len` bytes.
    fn try_reserve(&self, st: &mut State, len: u64) -> Result<Push, Error> {
        if st.closed {
            return Err(Error::Closed);
        }
        let max = self.shared().config.max_disk_bytes;
        let need = len + RECORD_HEADER;
        if st.disk_bytes + need > max && st.disk_bytes > 0 {
            return Ok(Push::Full);
        }
        st.disk_bytes += need;
        Ok(Push::Done(0))
    }

    /// Queues `msg` for sending. Returns once it is in the memory queue, or with a durable queue
    /// once it is fsynced to disk. With [`QueueFullPolicy::Block`] (and always in durable mode
    /// when `max_disk_bytes` is used up) it waits for room. Call it from sync code; in async code
    /// use [`Client::send_async`].
    pub fn send(&self, msg: Message) -> Result<(), Error> {
        let bytes = self.prepare(&msg)?;
        let shared = self.shared();
        if let Some(disk) = &self.inner.disk {
            let mut st = shared.lock();
            while let Push::Full = self.try_reserve(&mut st, bytes.len() as u64)? {
                st = shared.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            drop(st);
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            disk.submit(bytes, Completion::Std(tx));
            return match rx.recv() {
                Ok(r) => r.map_err(Error::Io),
                Err(_) => Err(Error::Closed),
            };
        }
        let mut bytes = Some(bytes);
        let mut st = shared.lock();
        let dropped = loop {
            match self.try_push(&mut st, &mut bytes)? {
                Push::Done(d) => break d,
                Push::Full => st = shared.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        };
        drop(st);
        self.queued(dropped);
        Ok(())
    }

    /// [`Client::send`] for async code: waits (for room, for the fsync) without blocking the
    /// runtime thread.
    pub async fn send_async(&self, msg: Message) -> Result<(), Error> {
        let bytes = self.prepare(&msg)?;
        let shared = self.shared();
        if let Some(disk) = &self.inner.disk {
            loop {
                let notified = {
                    let mut st = shared.lock();
                    match self.try_reserve(&mut st, bytes.len() as u64)? {
                        Push::Done(_) => break,
                        Push::Full => shared.changed_async.notified(),
                    }
                };
                notified.await;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            disk.submit(bytes, Completion::Tokio(tx));
            return match rx.await {
                Ok(r) => r.map_err(Error::Io),
                Err(_) => Err(Error::Closed),
            };
        }
        let mut bytes = Some(bytes);
        let dropped = loop {
            let notified = {
                let mut st = shared.lock();
                match self.try_push(&mut st, &mut bytes)? {
                    Push::Done(d) => break d,
                    Push::Full => shared.changed_async.notified(),
                }
            };
            notified.await;
        };
        self.queued(dropped);
        Ok(())
    }

    /// After a push (outside the lock, so an issue callback may call back into the client).
    fn queued(&self, dropped: u64) {
        self.shared().wake.notify_one();
        if dropped > 0 {
            self.shared().report(Issue::Dropped {
                count: dropped,
                reason: "memory queue full (DropOldest)".into(),
            });
        }
    }

    /// Asks the sender to send what is queued now, and returns the target sequence number.
    fn request_flush(&self) -> u64 {
        let target = {
            let mut st = self.shared().lock();
            st.flush_until = st.flush_until.max(st.next_seq);
            st.next_seq
        };
        self.shared().wake.notify_one();
        target
    }

    /// Blocks until every event `send()` accepted before this call is finished (acknowledged by
    /// the collector, or rejected/dropped and reported), or `timeout` passes
    /// ([`Error::Timeout`]; nothing is lost by that: sending goes on).
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let target = self.request_flush();
        let shared = self.shared();
        let start = Instant::now();
        let mut st = shared.lock();
        loop {
            let low = st.low_water(shared.durable);
            if low >= target {
                return Ok(());
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout {
                    pending: target - low,
                    waited: timeout,
                });
            }
            st = shared
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// [`Client::flush`] for async code (needs a tokio runtime with timers).
    pub async fn flush_async(&self, timeout: Duration) -> Result<(), Error> {
        let target = self.request_flush();
        let shared = self.shared();
        let wait = async {
            loop {
                let notified = {
                    let st = shared.lock();
                    if st.low_water(shared.durable) >= target {
                        return;
                    }
                    shared.changed_async.notified()
                };
                notified.await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(()) => Ok(()),
            Err(_) => {
                let low = shared.lock().low_water(shared.durable);
                Err(Error::Timeout {
                    pending: target.saturating_sub(low),
                    waited: timeout,
                })
            }
        }
    }

    /// Refuses further sends ([`Error::Closed`]), flushes within `timeout`, then stops the
    /// sender. On [`Error::Timeout`] the unsent events of a memory queue are lost (counted in
    /// the error); those of a durable queue stay on disk for the next client on the directory.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        self.shared().lock().closed = true;
        self.shared().notify_changed();
        let result = self.flush(timeout);
        let _ = self.inner.stop.send(true);
        self.shared().wake.notify_one();
        if let Some(d) = &self.inner.disk {
            d.stop();
        }
        let handle = self.inner.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        result
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        let shared = self.shared();
        let c = &shared.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let st = shared.lock();
        Stats {
            sent: get(&c.sent),
            retried: get(&c.retried),
            dropped: get(&c.dropped),
            rejected: get(&c.rejected),
            unauthorized: get(&c.unauthorized),
            batches: get(&c.batches),
            queued: st.next_seq - st.low_water(shared.durable),
            disk_bytes: st.disk_bytes,
        }
    }
}
