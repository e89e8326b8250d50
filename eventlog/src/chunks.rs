//! Buffers for the readers' large reads, kept and handed out again instead of freed.
//!
//! A backlog drain reads the log in 4 MiB chunks, one after another, in every reader. Each chunk
//! lives only until its records are transformed or delivered, then the allocator frees it, hands
//! its pages back to the kernel after its purge delay, and the next read faults fresh pages in
//! again while the kernel copies the file into them. In `perf record -e page-faults` of a drain
//! into four destinations that copy was a quarter of all page faults (BENCHMARKS.md, issue 16).
//! A chunk that comes back here keeps its pages, so the next read lands in memory that is
//! already there.
//!
//! Records are slices of their chunk ([`Bytes::from_owner`]): the buffer comes back when the
//! last of them is dropped. A chunk whose records are held for long (a destination without a
//! transformation delivers the stored bytes themselves) just stays out; the pool then makes a new
//! one, and keeps at most [`KEPT`] of those that come back.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Capacity of every pooled buffer: the largest single read (`reader::MAX_CHUNK`).
pub(crate) const CHUNK: usize = 4 << 20;
/// Reads from this size take a kept buffer if there is one: a destination with small batches
/// (a webhook's 1,000 events, under 1 MiB) reads its backlog in reads this large.
pub(crate) const REUSED_FROM: usize = 256 << 10;
/// Reads from this size get a new pooled buffer when none is kept. Smaller ones get a buffer of
/// their own size: a reader following the live end of the log reads a few records at a time,
/// and a 4 MiB buffer held for each of them would be waste.
pub(crate) const POOLED_FROM: usize = 1 << 20;
/// Buffers kept for reuse (32 MiB): enough for every reader of a typical config to have one
/// being filled and one being transformed.
const KEPT: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct ChunkPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl ChunkPool {
    /// An empty buffer with room for `len` bytes: a kept one for large reads.
    pub fn take(&self, len: usize) -> Vec<u8> {
        if !(REUSED_FROM..=CHUNK).contains(&len) {
            return Vec::with_capacity(len);
        }
        match self.free.lock().unwrap().pop() {
            Some(buf) => buf,
            None if len >= POOLED_FROM => Vec::with_capacity(CHUNK),
            None => Vec::with_capacity(len),
        }
    }

    /// `buf` as shared bytes that go back to `pool` once the last slice of them is dropped.
    pub fn share(pool: &Arc<ChunkPool>, buf: Vec<u8>) -> Bytes {
        if buf.capacity() != CHUNK {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Pooled { buf, pool: pool.clone() })
    }

    fn put(&self, mut buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap();
        if free.len() < KEPT {
            buf.clear();
            free.push(buf);
        }
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.free.lock().unwrap().len()
    }
}

/// A pooled buffer lent out as [`Bytes`].
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<ChunkPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_buffer_comes_back_when_its_last_slice_is_dropped_and_small_ones_never_do() {
        let pool = Arc::new(ChunkPool::default());
        let mut buf = pool.take(2 << 20);
        assert_eq!(buf.capacity(), CHUNK);
        buf.extend_from_slice(b"hello world");
        let bytes = ChunkPool::share(&pool, buf);
        let slice = bytes.slice(6..);
        drop(bytes);
        assert_eq!(pool.kept(), 0, "a slice still points into the buffer");
        assert_eq!(&slice[..], b"world");
        drop(slice);
        assert_eq!(pool.kept(), 1);
        let again = pool.take(CHUNK);
        assert!(again.is_empty(), "a reused buffer starts empty");
        assert_eq!(again.capacity(), CHUNK);
        assert_eq!(pool.kept(), 0);

        let small = pool.take(4096);
        assert!(small.capacity() < CHUNK);
        drop(ChunkPool::share(&pool, small));
        assert_eq!(pool.kept(), 0, "small reads are not pooled");

        // A middling read takes a kept buffer, but does not make one.
        let middling = pool.take(REUSED_FROM);
        assert!(middling.capacity() < CHUNK);
        drop(ChunkPool::share(&pool, pool.take(CHUNK)));
        assert_eq!(pool.kept(), 1);
        assert_eq!(pool.take(REUSED_FROM).capacity(), CHUNK);
    }

    #[test]
    fn the_pool_keeps_at_most_its_limit() {
        let pool = Arc::new(ChunkPool::default());
        let lent: Vec<Bytes> = (0..KEPT + 3).map(|_| ChunkPool::share(&pool, pool.take(CHUNK))).collect();
        drop(lent);
        assert_eq!(pool.kept(), KEPT);
    }
}
