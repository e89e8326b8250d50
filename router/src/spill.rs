//! Where the shared chain's memo keeps outcomes it has no memory budget for (`shared.rs`).
//!
//! A backlog drain of four destinations of one chain showed why it is needed: the slowest member
//! (a webhook, one POST in flight) fell more than the memo's 32 MiB behind the others within
//! seconds, found nothing, and ran the chain again for almost every event: 1.9 runs per event
//! instead of 1 (BENCHMARKS.md, issue 16). Writing an outcome to a file and reading it back costs
//! two copies through the page cache; running `scrub_pii` again costs a parse, the script and a
//! serialisation. So outcomes that leave the memo while a member still needs them go here.
//!
//! The files are a cache, not a log: nothing is synced, they are created already unlinked
//! (`tempfile_in`), so a crash or a restart leaves nothing behind, and the memo's rule for what
//! is missing still holds (a member runs the chain itself). Outcomes live in segments of
//! [`SEGMENT_BYTES`]; a segment goes once every member has read past its last outcome, or,
//! oldest first, when the spill is over its disk cap (a destination that has been failing for
//! hours must not fill the disk with outcomes it may never need).

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};

use crate::shared::Outcome;

/// Size at which a segment is closed and a new one started: what is freed at a time.
const SEGMENT_BYTES: u32 = 64 << 20;

/// What the spill encodes before each write.
const FLUSH_BYTES: usize = 1 << 20;

/// Disk the spill may take. 1 GiB is about 1.3 million scrubbed chat events of lag; past it the
/// slowest member runs the chain itself, as it did before there was a spill.
pub(crate) const CAP_BYTES: u64 = 1 << 30;

struct Segment {
    id: u64,
    file: Arc<File>,
    len: u32,
    /// The lowest offset it holds: segments hold increasing, disjoint ranges of offsets.
    first_offset: u64,
}

/// Where one outcome is in its segment (the segment follows from the offset). 16 bytes: a
/// member a million events behind costs 16 MB of these.
#[derive(Clone, Copy)]
struct Slot {
    offset: u64,
    pos: u32,
    len: u32,
}

/// An outcome found in the spill, to be read once the memo's lock is released.
pub(crate) struct Found {
    file: Arc<File>,
    segment: u64,
    pos: u32,
    len: u32,
}

pub(crate) struct Spill {
    dir: PathBuf,
    cap: u64,
    segments: VecDeque<Segment>,
    /// In offset order (outcomes are spilled oldest first), so lookups are a binary search.
    slots: VecDeque<Slot>,
    bytes: u64,
    next_segment: u64,
    /// The first failure is logged; after it the spill is off (outcomes are dropped as before).
    broken: bool,
    buf: Vec<u8>,
}

impl Spill {
    pub fn new(dir: PathBuf, cap: u64) -> Spill {
        Spill { dir, cap, segments: VecDeque::new(), slots: VecDeque::new(), bytes: 0, next_segment: 0, broken: false, buf: Vec::new() }
    }

    /// Keeps `outcomes` (offset order). Any whose offset is not above every offset already kept
    /// (a member ran the chain again on events the spill had to drop) is left out: the spill
    /// stays sorted, and a member that needs it runs the chain, which is always correct.
    pub fn put(&mut self, outcomes: Vec<(u64, Outcome)>) {
        if self.broken || outcomes.is_empty() {
            return;
        }
        let kept = self.slots.len();
        if let Err(e) = self.append(outcomes) {
            tracing::warn!(error = %e, dir = %self.dir.display(),
                "cannot spill the shared chain's outcomes to disk: destinations that fall behind will run the chain themselves");
            // Slots of this call may point at bytes that were never written.
            self.slots.truncate(kept);
            self.broken = true;
        }
        self.shrink_to_cap();
    }

    fn append(&mut self, outcomes: Vec<(u64, Outcome)>) -> std::io::Result<()> {
        let mut last = self.slots.back().map(|s| s.offset);
        let outcomes: Vec<(u64, Outcome)> = outcomes
            .into_iter()
            .filter(|(offset, _)| {
                let fresh = last.is_none_or(|l| *offset > l);
                last = last.max(Some(*offset));
                fresh
            })
            .collect();
        let Some(&(first, _)) = outcomes.first() else { return Ok(()) };
        let size: u64 = outcomes.iter().map(|(_, o)| encoded_len(o) as u64).sum();
        let fits = self.segments.back().is_some_and(|s| u64::from(s.len) + size <= u64::from(SEGMENT_BYTES));
        if !fits {
            let file = tempfile::tempfile_in(&self.dir)?;
            self.segments.push_back(Segment { id: self.next_segment, file: Arc::new(file), len: 0, first_offset: first });
            self.next_segment += 1;
        }
        let segment = self.segments.back_mut().expect("a segment was just ensured");
        // Written through a small buffer that lives as long as the spill: a member's read can
        // spill megabytes at once, and a buffer that size, allocated for each call, was 8% of
        // the page faults of a four-destination drain.
        let mut pos = segment.len;
        for (offset, outcome) in outcomes {
            let len = encoded_len(&outcome);
            let Ok(len32) = u32::try_from(len) else { continue };
            if self.buf.len() + len > FLUSH_BYTES && !self.buf.is_empty() {
                (&*segment.file).write_all(&self.buf)?;
                self.buf.clear();
            }
            encode(&outcome, &mut self.buf);
            // A batch larger than a segment still lands whole in one file (the next call starts
            // a new segment); positions are u32, so SEGMENT_BYTES stays far below 4 GiB.
            self.slots.push_back(Slot { offset, pos, len: len32 });
            pos = pos.saturating_add(len32);
        }
        (&*segment.file).write_all(&self.buf)?;
        self.buf.clear();
        self.bytes += u64::from(pos - segment.len);
        segment.len = pos;
        Ok(())
    }

    /// Where the outcome of `offset` is, if the spill holds it.
    pub fn find(&self, offset: u64) -> Option<Found> {
        let i = self.slots.binary_search_by_key(&offset, |s| s.offset).ok()?;
        let slot = self.slots[i];
        let at = self.segments.partition_point(|s| s.first_offset <= offset).checked_sub(1)?;
        let segment = &self.segments[at];
        Some(Found { file: segment.file.clone(), segment: segment.id, pos: slot.pos, len: slot.len })
    }

    /// Forgets outcomes below `lowest` (every member has read past them) and closes the
    /// segments that held only those.
    pub fn drop_below(&mut self, lowest: u64) {
        while self.slots.front().is_some_and(|s| s.offset < lowest) {
            self.slots.pop_front();
        }
        // A segment goes once the next one starts at or below the first offset still held;
        // with nothing left to hold, every segment goes (the next spill starts a new file).
        match self.slots.front().map(|s| s.offset) {
            None => {
                while !self.segments.is_empty() {
                    self.close_front();
                }
            }
            Some(first) => {
                while self.segments.get(1).is_some_and(|next| next.first_offset <= first) {
                    self.close_front();
                }
            }
        }
        // A member that caught up after a long lag leaves a large, mostly empty index.
        if self.slots.capacity() > 4096 && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to_fit();
        }
    }

    fn shrink_to_cap(&mut self) {
        while self.bytes > self.cap && !self.segments.is_empty() {
            self.close_front();
        }
    }

    fn close_front(&mut self) {
        if let Some(segment) = self.segments.pop_front() {
            self.bytes -= u64::from(segment.len);
            let end = self.segments.front().map_or(u64::MAX, |next| next.first_offset);
            while self.slots.front().is_some_and(|s| s.offset < end) {
                self.slots.pop_front();
            }
        }
    }

    #[cfg(test)]
    pub fn held(&self) -> (usize, u64, usize) {
        (self.slots.len(), self.bytes, self.segments.len())
    }
}

/// Reads what [`Spill::find`] found, outside the memo's lock: outcomes that lie next to each
/// other in one segment (a member catching up asks for consecutive offsets, which were spilled
/// together) are read with one call. `None` for any that could not be read.
pub(crate) fn read(found: &[Found]) -> Vec<Option<Outcome>> {
    let mut out = Vec::with_capacity(found.len());
    let mut i = 0;
    while i < found.len() {
        let mut j = i + 1;
        while j < found.len()
            && found[j].segment == found[i].segment
            && found[j].pos == found[j - 1].pos.saturating_add(found[j - 1].len)
        {
            j += 1;
        }
        let start = found[i].pos;
        let end = found[j - 1].pos + found[j - 1].len;
        let mut span = vec![0u8; (end - start) as usize];
        match found[i].file.read_exact_at(&mut span, u64::from(start)) {
            Ok(()) => {
                let span = Bytes::from(span);
                for f in &found[i..j] {
                    let at = (f.pos - start) as usize;
                    out.push(decode(span.slice(at..at + f.len as usize)));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read spilled outcomes back: running the chain for them instead");
                out.extend(std::iter::repeat_with(|| None).take(j - i));
            }
        }
        i = j;
    }
    out
}

const OK: u8 = 0;
const FAILED: u8 = 1;

fn encode(outcome: &Outcome, buf: &mut Vec<u8>) {
    match outcome {
        Ok(events) => {
            buf.put_u8(OK);
            buf.put_u32_le(events.len() as u32);
            for e in events {
                buf.put_u32_le(e.len() as u32);
                buf.put_slice(e);
            }
        }
        Err(reason) => {
            buf.put_u8(FAILED);
            buf.put_slice(reason.as_bytes());
        }
    }
}

fn encoded_len(outcome: &Outcome) -> usize {
    match outcome {
        Ok(events) => 5 + events.iter().map(|e| 4 + e.len()).sum::<usize>(),
        Err(reason) => 1 + reason.len(),
    }
}

/// The outcome in `bytes` (its events share the buffer); `None` if it is not what [`encode`]
/// wrote.
fn decode(mut bytes: Bytes) -> Option<Outcome> {
    if !bytes.has_remaining() {
        return None;
    }
    match bytes.get_u8() {
        OK => {
            let n = bytes.try_get_u32_le().ok()? as usize;
            let mut events = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let len = bytes.try_get_u32_le().ok()? as usize;
                if bytes.remaining() < len {
                    return None;
                }
                events.push(bytes.split_to(len));
            }
            Some(Ok(events))
        }
        FAILED => Some(Err(String::from_utf8(bytes.to_vec()).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(offset: u64) -> Outcome {
        match offset % 7 {
            0 => Err(format!("event {offset} failed")),
            1 => Ok(vec![]),
            2 => Ok(vec![Bytes::from(format!("{{\"a\":{offset}}}")), Bytes::from(format!("{{\"b\":{offset}}}"))]),
            _ => Ok(vec![Bytes::from(format!("{{\"n\":{offset}}}"))]),
        }
    }

    #[test]
    fn outcomes_come_back_as_they_went_in() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::new(dir.path().into(), CAP_BYTES);
        spill.put((0..100).map(|o| (o, outcome(o))).collect());
        spill.put((100..150).map(|o| (o, outcome(o))).collect());
        let found: Vec<Found> = (0..150).map(|o| spill.find(o).expect("spilled")).collect();
        let back = read(&found);
        assert_eq!(back, (0..150).map(|o| Some(outcome(o))).collect::<Vec<_>>());
        assert!(spill.find(150).is_none());
        // The files are unlinked: the directory shows nothing.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn encoded_lengths_are_exact() {
        for o in 0..7 {
            let mut buf = Vec::new();
            encode(&outcome(o), &mut buf);
            assert_eq!(buf.len(), encoded_len(&outcome(o)));
        }
    }

    #[test]
    fn offsets_out_of_order_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::new(dir.path().into(), CAP_BYTES);
        spill.put(vec![(10, outcome(10)), (11, outcome(11))]);
        spill.put(vec![(5, outcome(5)), (12, outcome(12))]);
        assert!(spill.find(5).is_none(), "below what is held: left to the chain");
        assert_eq!(read(&[spill.find(12).unwrap()]), vec![Some(outcome(12))]);
    }

    #[test]
    fn segments_go_once_passed_and_the_cap_holds() {
        let dir = tempfile::tempdir().unwrap();
        let big = |o: u64| -> Outcome { Ok(vec![Bytes::from(vec![b'x'; 1 << 20]), Bytes::from(o.to_string())]) };
        // 200 outcomes of 1 MiB: four segments; a cap of 150 MiB keeps only the newest ones.
        let mut spill = Spill::new(dir.path().into(), 150 << 20);
        for chunk in (0..200u64).collect::<Vec<_>>().chunks(10) {
            spill.put(chunk.iter().map(|&o| (o, big(o))).collect());
        }
        let (slots, bytes, segments) = spill.held();
        assert!(bytes <= 150 << 20, "over the cap: {bytes}");
        assert!(spill.find(0).is_none(), "the oldest segment went to keep the cap");
        assert!(spill.find(199).is_some());
        assert!(slots < 200 && segments >= 2);
        spill.drop_below(199);
        assert_eq!(spill.held().0, 1);
        assert_eq!(spill.held().2, 1, "only the segment holding 199 is left");
        spill.drop_below(200);
        assert_eq!(spill.held(), (0, 0, 0), "nothing needed, nothing kept");
    }

    #[test]
    fn a_spill_that_cannot_write_drops_quietly() {
        let mut spill = Spill::new("/nonexistent/sluice-spill".into(), CAP_BYTES);
        spill.put(vec![(1, outcome(1))]);
        assert!(spill.find(1).is_none());
        assert_eq!(spill.held(), (0, 0, 0));
    }
}
