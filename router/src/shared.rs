//! One run of a transformation chain for every destination that has it.
//!
//! Destinations with the same chain (the same transformations in the same order, none of which
//! reads `meta.destination`) share one [`SharedRuns`]: the first worker that needs the outcome
//! of an event claims it, runs the chain and publishes the outcome; the others take it. Everything
//! else stays per destination: its reader and cursor, filter, batches, lanes, retries and dead
//! letters, so a crash, a retry or a restart of one destination is what it was before.
//!
//! Isolation: a worker never waits for another destination's delivery. It waits only for
//! outcomes another worker is computing at that moment (work it would otherwise do itself, and
//! a claimer always publishes before it waits for anything). Outcomes are dropped once every
//! member has read past them. While the memo is over its byte budget, the oldest outcomes a
//! member still needs go to a spill on disk (`spill.rs`), where a destination that fell behind
//! (a slow sink) finds them. Past the spill's disk cap they are dropped: a destination that far
//! behind (a sink failing for hours) finds nothing and runs the chain itself, as if it were
//! alone, while the others go on.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

use bytes::Bytes;

use crate::spill::{self, Spill};

/// A chain's outcome for one event: the events it became, or why it failed.
pub(crate) type Outcome = Result<Vec<Bytes>, String>;

/// Bytes of outcomes kept in memory for members that have not read them yet; past it they
/// spill to disk (`spill.rs`). 16 MiB is about 20,000 chat events: the reads members make at
/// about the same time. It was 32 MiB when what did not fit was lost; with the spill, memory
/// is only the fast path, and the RSS target (256 MB) is shared with batches in flight.
pub(crate) const BUDGET_BYTES: usize = 16 << 20;

/// Bookkeeping per outcome, on top of its bytes.
const ENTRY_OVERHEAD: usize = 64;

enum Entry {
    /// A worker is running the chain on this event now.
    Claimed,
    Done(Outcome, usize),
}

struct State {
    entries: BTreeMap<u64, Entry>,
    bytes: usize,
    /// Next offset each member will read: outcomes below the lowest are not needed any more.
    positions: Vec<u64>,
    spill: Option<Spill>,
}

pub(crate) struct SharedRuns {
    state: Mutex<State>,
    published: Condvar,
    budget: usize,
}

/// Removes the claims of a run that did not finish (a panic), so waiters compute them instead.
struct ClaimGuard<'a> {
    runs: &'a SharedRuns,
    offsets: Vec<u64>,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if self.offsets.is_empty() {
            return;
        }
        let mut state = self.runs.lock();
        for offset in &self.offsets {
            if matches!(state.entries.get(offset), Some(Entry::Claimed)) {
                state.entries.remove(offset);
            }
        }
        drop(state);
        self.runs.published.notify_all();
    }
}

impl SharedRuns {
    /// A memo of `budget` bytes for `members` destinations, spilling to `spill` when over it
    /// (without one, what is over the budget is dropped).
    pub fn new(members: usize, budget: usize, spill: Option<Spill>) -> SharedRuns {
        SharedRuns {
            state: Mutex::new(State { entries: BTreeMap::new(), bytes: 0, positions: vec![0; members], spill }),
            published: Condvar::new(),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the map consistent (every step is one insert or
        // remove), so a poisoned lock is taken over.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outcomes for `offsets` (one per offset, in order). `run` gets the indices (into
    /// `offsets`) nobody has computed or is computing, and returns their outcomes in that order.
    /// Returns, with the outcomes, how many were taken from another member's run. Blocking:
    /// call it where blocking is allowed (`block_in_place`).
    pub fn outcomes(&self, offsets: &[u64], mut run: impl FnMut(&[usize]) -> Vec<Outcome>) -> (Vec<Outcome>, usize) {
        let mut out: Vec<Option<Outcome>> = vec![None; offsets.len()];
        let mut todo: Vec<usize> = (0..offsets.len()).collect();
        let mut taken = 0;
        while !todo.is_empty() {
            let mut mine = Vec::new();
            let mut waiting = Vec::new();
            let mut on_disk: (Vec<usize>, Vec<spill::Found>) = (Vec::new(), Vec::new());
            {
                let mut state = self.lock();
                for i in todo.drain(..) {
                    match state.entries.get(&offsets[i]) {
                        Some(Entry::Done(outcome, _)) => {
                            out[i] = Some(outcome.clone());
                            taken += 1;
                        }
                        Some(Entry::Claimed) => waiting.push(i),
                        None => match state.spill.as_ref().and_then(|s| s.find(offsets[i])) {
                            Some(found) => {
                                on_disk.0.push(i);
                                on_disk.1.push(found);
                            }
                            None => {
                                state.entries.insert(offsets[i], Entry::Claimed);
                                mine.push(i);
                            }
                        },
                    }
                }
            }
            if !on_disk.0.is_empty() {
                // Read without the lock; what cannot be read back is run here, unshared.
                let mut unread = Vec::new();
                for (i, outcome) in on_disk.0.into_iter().zip(spill::read(&on_disk.1)) {
                    match outcome {
                        Some(outcome) => {
                            out[i] = Some(outcome);
                            taken += 1;
                        }
                        None => unread.push(i),
                    }
                }
                if !unread.is_empty() {
                    for (i, outcome) in unread.iter().zip(run(&unread)) {
                        out[*i] = Some(outcome);
                    }
                }
            }
            if !mine.is_empty() {
                let mut guard = ClaimGuard { runs: self, offsets: mine.iter().map(|&i| offsets[i]).collect() };
                let results = run(&mine);
                assert_eq!(results.len(), mine.len(), "one outcome per event run");
                let mut state = self.lock();
                for (&i, outcome) in mine.iter().zip(results) {
                    let size = ENTRY_OVERHEAD + outcome.as_ref().map_or_else(String::len, |o| o.iter().map(Bytes::len).sum());
                    state.bytes += size;
                    state.entries.insert(offsets[i], Entry::Done(outcome.clone(), size));
                    out[i] = Some(outcome);
                }
                guard.offsets.clear();
                self.trim(&mut state);
                drop(state);
                self.published.notify_all();
            }
            if waiting.is_empty() {
                break;
            }
            // Wait for the claims of others; what they gave up (a panic) or what the budget
            // dropped before it was taken goes round again, to be claimed and run here.
            let mut state = self.lock();
            loop {
                // A claimer publishes all it claimed at once, in offset order, and `waiting` is in
                // offset order: while the first is still claimed, the wake was for someone else's
                // run, and looking up every waiting offset again (a four-destination drain did
                // that on every publish, 3% of its CPU) can wait for the next one.
                if matches!(state.entries.get(&offsets[waiting[0]]), Some(Entry::Claimed)) {
                    state = self.published.wait(state).unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                waiting.retain(|&i| match state.entries.get(&offsets[i]) {
                    Some(Entry::Done(outcome, _)) => {
                        out[i] = Some(outcome.clone());
                        taken += 1;
                        false
                    }
                    Some(Entry::Claimed) => true,
                    None => {
                        todo.push(i);
                        false
                    }
                });
                if waiting.is_empty() {
                    break;
                }
                state = self.published.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
        (out.into_iter().map(|o| o.expect("every outcome filled")).collect(), taken)
    }

    /// `member` will read from `position` on: outcomes every member has passed are dropped.
    pub fn passed(&self, member: usize, position: u64) {
        let mut state = self.lock();
        state.positions[member] = position;
        self.trim(&mut state);
    }

    /// Drops what no member needs any more, then moves the oldest outcomes to the spill while
    /// over the budget. The spill's write happens under the lock: it goes to the page cache (at
    /// most about one member's read, a few MB, in 1 MiB writes), and a member that looks for an
    /// outcome meanwhile must find it either here or there.
    fn trim(&self, state: &mut State) {
        let lowest = state.positions.iter().copied().min().unwrap_or(0);
        let mut spilled = Vec::new();
        while let Some(entry) = state.entries.first_entry() {
            let below = *entry.key() < lowest;
            let over = state.bytes > self.budget;
            let size = match entry.get() {
                Entry::Done(_, size) if below || over => *size,
                // A claim is never dropped here: its worker publishes it shortly. Everything
                // after it is newer.
                _ => break,
            };
            let offset = *entry.key();
            if let (Entry::Done(outcome, _), false) = (entry.remove(), below) {
                spilled.push((offset, outcome));
            }
            state.bytes -= size;
        }
        if let Some(spill) = state.spill.as_mut() {
            spill.drop_below(lowest);
            spill.put(spilled);
        }
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let state = self.lock();
        (state.entries.len(), state.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    fn outcome(offset: u64) -> Outcome {
        Ok(vec![Bytes::from(format!("{{\"n\":{offset}}}"))])
    }

    #[test]
    fn members_asking_for_the_same_events_run_each_event_once() {
        let runs = Arc::new(SharedRuns::new(3, BUDGET_BYTES, None));
        let calls = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(3));
        let offsets: Vec<u64> = (0..2000).collect();
        let threads: Vec<_> = (0..3)
            .map(|member| {
                let (runs, calls, barrier, offsets) = (runs.clone(), calls.clone(), barrier.clone(), offsets.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Each member reads in its own chunk sizes, as readers with different batch
                    // limits do.
                    let mut got = Vec::new();
                    for chunk in offsets.chunks(100 + member * 70) {
                        let (outs, _) = runs.outcomes(chunk, |mine| {
                            calls.fetch_add(mine.len(), Ordering::Relaxed);
                            mine.iter().map(|&i| outcome(chunk[i])).collect()
                        });
                        got.extend(outs);
                    }
                    got
                })
            })
            .collect();
        for t in threads {
            let got = t.join().unwrap();
            assert_eq!(got, offsets.iter().map(|&o| outcome(o)).collect::<Vec<_>>(), "outcomes in input order");
        }
        assert_eq!(calls.load(Ordering::Relaxed), 2000, "every event ran exactly once for the three members");
    }

    #[test]
    fn a_member_that_falls_behind_holds_nothing_and_runs_the_chain_itself() {
        // Budget for about ten outcomes: a member that never reads must not make the memo grow.
        let runs = SharedRuns::new(2, 10 * (ENTRY_OVERHEAD + 8), None);
        let mut calls = 0;
        let mut run = |offsets: &[u64]| {
            runs.outcomes(offsets, |mine| {
                calls += mine.len();
                mine.iter().map(|&i| outcome(offsets[i])).collect()
            })
        };
        for start in (0..1000u64).step_by(50) {
            let chunk: Vec<u64> = (start..start + 50).collect();
            run(&chunk);
        }
        runs.passed(0, 1000);
        let (entries, bytes) = runs.held();
        assert!(entries <= 11 && bytes <= 11 * (ENTRY_OVERHEAD + 8), "the memo stays in its budget: {entries} entries, {bytes} bytes");
        // The slow member now reads from the start: what was dropped it computes itself.
        let chunk: Vec<u64> = (0..50).collect();
        let (outs, taken) = runs.outcomes(&chunk, |mine| mine.iter().map(|&i| outcome(chunk[i])).collect());
        assert_eq!(taken, 0);
        assert_eq!(outs, chunk.iter().map(|&o| outcome(o)).collect::<Vec<_>>());
        assert_eq!(calls, 1000);
    }

    #[test]
    fn a_member_behind_the_budget_reads_the_spill_instead_of_running_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let budget = 10 * (ENTRY_OVERHEAD + 8);
        let runs = SharedRuns::new(2, budget, Some(Spill::new(dir.path().into(), spill::CAP_BYTES)));
        let mut calls = 0;
        // Member 0 reads 1,000 events while member 1 reads nothing.
        for start in (0..1000u64).step_by(50) {
            let chunk: Vec<u64> = (start..start + 50).collect();
            runs.outcomes(&chunk, |mine| {
                calls += mine.len();
                mine.iter().map(|&i| outcome(chunk[i])).collect()
            });
            runs.passed(0, start + 50);
        }
        let (entries, bytes) = runs.held();
        assert!(entries <= 11 && bytes <= 11 * (ENTRY_OVERHEAD + 8), "the memo stays in its budget: {entries} entries, {bytes} bytes");
        // Member 1 catches up, in other chunk sizes, and runs nothing itself.
        for start in (0..1000u64).step_by(80) {
            let chunk: Vec<u64> = (start..(start + 80).min(1000)).collect();
            let (outs, taken) = runs.outcomes(&chunk, |_| unreachable!("every outcome is in the memo or the spill"));
            assert_eq!((outs, taken), (chunk.iter().map(|&o| outcome(o)).collect::<Vec<_>>(), chunk.len()));
            runs.passed(1, start + 80);
        }
        assert_eq!(calls, 1000);
        assert_eq!(runs.state.lock().unwrap().spill.as_ref().unwrap().held(), (0, 0, 0), "all passed: the spill is empty");
    }

    #[test]
    fn outcomes_every_member_passed_are_dropped() {
        let runs = SharedRuns::new(2, BUDGET_BYTES, None);
        let chunk: Vec<u64> = (0..10).collect();
        let (_, taken) = runs.outcomes(&chunk, |mine| mine.iter().map(|&i| outcome(chunk[i])).collect());
        assert_eq!(taken, 0);
        let (_, taken) = runs.outcomes(&chunk, |_| unreachable!("all ten are published"));
        assert_eq!(taken, 10);
        runs.passed(0, 10);
        assert_eq!(runs.held().0, 10, "member 1 has not passed them yet");
        runs.passed(1, 10);
        assert_eq!(runs.held(), (0, 0));
    }

    #[test]
    fn a_run_that_panics_gives_its_claims_back_to_the_waiters() {
        let runs = Arc::new(SharedRuns::new(2, BUDGET_BYTES, None));
        let claimed = Arc::new(Barrier::new(2));
        let chunk: Vec<u64> = (0..5).collect();
        let failing = {
            let (runs, claimed, chunk) = (runs.clone(), claimed.clone(), chunk.clone());
            std::thread::spawn(move || {
                runs.outcomes(&chunk, |_| {
                    claimed.wait();
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    panic!("a bug in a helper");
                })
            })
        };
        claimed.wait();
        // Every offset is claimed by the failing thread: this member waits, then runs them.
        let (outs, taken) = runs.outcomes(&chunk, |mine| mine.iter().map(|&i| outcome(chunk[i])).collect());
        assert!(failing.join().is_err());
        assert_eq!(taken, 0);
        assert_eq!(outs, chunk.iter().map(|&o| outcome(o)).collect::<Vec<_>>());
    }

    #[test]
    fn failures_are_shared_like_results() {
        let runs = SharedRuns::new(2, BUDGET_BYTES, None);
        let (first, _) = runs.outcomes(&[7], |_| vec![Err("bad event".to_string())]);
        let (second, taken) = runs.outcomes(&[7], |_| unreachable!());
        assert_eq!((first, second, taken), (vec![Err("bad event".into())], vec![Err("bad event".into())], 1));
    }
}
