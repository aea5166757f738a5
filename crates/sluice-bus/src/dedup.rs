//! Idempotent publishing: the eids published to an event type within a time window,
//! so that a retried event is answered as submitted and not written twice.
//!
//! ```text
//!  begin(request) -> check(eid): unknown --> remembered for `request`: write it
//!                                known, `request` still writing --> "retry" (in flight)
//!                                known, written --> not written again, "submitted"
//!  the append failed --> release(eid)         end(request): its eids count as written
//! ```
//!
//! An eid is remembered once, when first seen, with the number of its request; whether
//! it is written or still in flight is told by the (small) set of requests in flight,
//! so the success of an append costs one set removal per request, not one table update
//! per event. The table is split into 64 shards with a lock each, held for one event:
//! publishers on different threads do not queue behind each other, and a thread
//! descheduled while holding one blocks few others. Each shard keeps two generations
//! and forgets the older one whole (see `Shard`).
//!
//! The window is rebuilt from the log's tail (`offset_for_timestamp(now - window)`) the
//! first time an event type is published to after a start, so a retry after a crash
//! or a timeout is caught too. Memory is bounded by `max_eids` per event type: when
//! more eids than that arrive within the window, the oldest are forgotten early (at
//! least the newest half of them is always remembered).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// A fast, seeded hasher (SipHash cost more than the rest of the window's work).
type Hasher = foldhash::fast::RandomState;

/// An eid (a UUID) as a number.
pub type Eid = u128;

/// Parses `5b4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11` (any case).
pub fn parse_eid(s: &str) -> Option<Eid> {
    if s.len() != 36 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, c) in s.chars().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != '-' {
                return None;
            }
            continue;
        }
        v = (v << 4) | u128::from(c.to_digit(16)?);
    }
    Some(v)
}

/// What to do with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen: write it (the eid is now reserved).
    New,
    /// Written before within the window: answer "submitted", do not write.
    Duplicate,
    /// Another request with this eid is being written right now.
    InFlight,
    /// An earlier event of the same request has this eid: it shares that one's fate.
    Repeated,
}

/// Shards of the window: publishers on different threads rarely meet on a lock, and
/// a thread descheduled while holding one blocks few others.
const SHARDS: usize = 64;

/// A remembered eid: when, and by which request (0: found in the log at load time).
/// 16 bytes, and keys of two u64s (not one u128, aligned to 16): an entry of the table
/// is 32 bytes instead of 48, which matters at a million eids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    at: i64,
    request: u64,
}

type Key = [u64; 2];

fn key(eid: Eid) -> Key {
    [(eid >> 64) as u64, eid as u64]
}

type Table = HashMap<Key, Slot, Hasher>;

#[derive(Debug)]
pub struct EidWindow {
    shards: Vec<Mutex<Shard>>,
    /// Requests whose eids are being written.
    in_flight: Mutex<HashSet<u64, Hasher>>,
    requests: AtomicU64,
    window_ms: i64,
    /// A shard's young generation turns old at this many eids.
    per_generation: usize,
}

/// Two generations of eids. New eids go to `young`; when `young` is full (half the
/// shard's bound) or its first eid is a window old, `old` is forgotten whole and
/// `young` becomes `old`. So an eid is remembered for at least the window (or at least
/// half the bound's newest eids, when more arrive within the window), expiry costs no
/// per-eid work, and after warm-up the two tables are reused, never regrown: a table
/// that grew by rehashing, or filled with tombstones and rehashed in place, held its
/// lock for milliseconds (the tail of the publish benchmark).
#[derive(Debug, Default)]
struct Shard {
    young: Table,
    old: Table,
    /// When `young` took its first eid.
    young_since: Option<i64>,
}

impl Shard {
    fn get(&self, k: &Key) -> Option<Slot> {
        self.young.get(k).or_else(|| self.old.get(k)).copied()
    }

    /// Makes room for an eid seen at `now`.
    fn rotate_if_due(&mut self, now: i64, window_ms: i64, per_generation: usize) {
        let aged = self
            .young_since
            .is_some_and(|since| now.saturating_sub(since) >= window_ms);
        if self.young.len() >= per_generation || aged {
            std::mem::swap(&mut self.young, &mut self.old);
            // Keeps its allocation: the next generation fills the same table.
            self.young.clear();
            self.young_since = None;
        }
    }

    fn insert(&mut self, k: Key, slot: Slot) {
        self.young_since.get_or_insert(slot.at);
        self.young.insert(k, slot);
    }
}

impl EidWindow {
    /// An empty window remembering eids for `window_ms`, at most `max_eids` of them.
    pub fn new(window_ms: u64, max_eids: usize) -> EidWindow {
        EidWindow {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            in_flight: Mutex::default(),
            requests: AtomicU64::new(0),
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            per_generation: max_eids.div_ceil(SHARDS * 2).max(1),
        }
    }

    /// The shard of an eid: Fibonacci hashing of both halves, so that UUID versions
    /// whose low bits hardly vary (time-based ones) still spread.
    fn shard(&self, eid: Eid) -> &Mutex<Shard> {
        let folded = (eid as u64) ^ ((eid >> 64) as u64);
        let i = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.trailing_zeros());
        &self.shards[i as usize]
    }

    /// Starts a request: its number, telling its own eids from others'.
    pub fn begin(&self) -> u64 {
        let request = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.in_flight.lock().insert(request);
        request
    }

    /// The request's appends are done: the eids it kept (not released) are written.
    pub fn end(&self, request: u64) {
        self.in_flight.lock().remove(&request);
    }

    /// What to do with `eid` in `request`, remembering it if it is new.
    pub fn check(&self, eid: Eid, now: i64, request: u64) -> Verdict {
        let k = key(eid);
        let mut shard = self.shard(eid).lock();
        match shard.get(&k) {
            Some(slot) if now.saturating_sub(slot.at) < self.window_ms => match slot.request {
                r if r == request => Verdict::Repeated,
                r if r != 0 && self.in_flight.lock().contains(&r) => Verdict::InFlight,
                _ => Verdict::Duplicate,
            },
            _ => {
                shard.rotate_if_due(now, self.window_ms, self.per_generation);
                shard.insert(k, Slot { at: now, request });
                Verdict::New
            }
        }
    }

    /// `request` could not write `eid`: forget it, so that a retry is written.
    pub fn release(&self, eid: Eid, request: u64) {
        let k = key(eid);
        let shard = &mut *self.shard(eid).lock();
        for table in [&mut shard.young, &mut shard.old] {
            if table.get(&k).is_some_and(|s| s.request == request) {
                table.remove(&k);
            }
        }
    }

    /// Remembers an eid found in the log at load time, written at `at`.
    pub fn remember(&self, eid: Eid, at: i64) {
        let k = key(eid);
        let mut shard = self.shard(eid).lock();
        if shard.get(&k).is_none() {
            shard.rotate_if_due(at, self.window_ms, self.per_generation);
            shard.insert(k, Slot { at, request: 0 });
        }
    }

    /// Gives the next young generations their full room before they need it, one
    /// shard per call, so that no request pays for many growths at once. Call once
    /// per request.
    pub fn grow_ahead(&self) {
        let i = self.requests.load(Ordering::Relaxed) as usize % SHARDS;
        let mut shard = self.shards[i].lock();
        let want = self.per_generation;
        let young_room = shard.young.capacity();
        if young_room < want && shard.young.len() >= young_room / 4 * 3 {
            let more = (young_room.max(64) * 2).min(want) - shard.young.len();
            shard.young.reserve(more);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock();
                s.young.len() + s.old.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(i: u128) -> Eid {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
    }

    #[test]
    fn eids_parse_as_uuids() {
        let a = parse_eid("5b4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11").unwrap();
        assert_eq!(parse_eid("5B4A4C7E-8A52-4B0A-9F7A-3B1F2B0C9D11"), Some(a));
        assert_eq!(parse_eid("5b4a4c7e8a524b0a9f7a3b1f2b0c9d11"), None);
        assert_eq!(parse_eid("zb4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11"), None);
    }

    #[test]
    fn shards_grow_ahead_of_need() {
        let w = EidWindow::new(1_000_000, 1_000_000);
        let r = w.begin();
        for i in 1..=64_000u128 {
            w.check(spread(i), 0, r);
            if i % 100 == 0 {
                w.begin();
                w.grow_ahead();
            }
        }
        for s in &w.shards {
            let s = s.lock();
            let (len, room) = (s.young.len(), s.young.capacity());
            assert!(len < room / 4 * 3 + 150, "{len} of {room}");
        }
    }

    #[test]
    fn eids_spread_over_the_shards() {
        let w = EidWindow::new(1000, 1_000_000);
        // Time-based UUIDs: only the high bits vary.
        for i in 0..6400u128 {
            w.check(i << 80, 0, 1);
        }
        let busiest = w.shards.iter().map(|s| s.lock().young.len()).max();
        assert!(busiest.unwrap() < 300, "a shard holds {busiest:?} of 6400");
    }

    #[test]
    fn a_window_tells_new_repeated_in_flight_and_written_apart() {
        let w = EidWindow::new(100, 1000);
        let (r1, r2) = (w.begin(), w.begin());
        assert_eq!(w.check(1, 0, r1), Verdict::New);
        assert_eq!(w.check(1, 0, r1), Verdict::Repeated);
        assert_eq!(w.check(1, 0, r2), Verdict::InFlight);
        w.end(r1);
        assert_eq!(w.check(1, 20, r2), Verdict::Duplicate, "written by r1");
        assert_eq!(w.check(2, 20, r2), Verdict::New);
        w.release(2, r2);
        w.end(r2);
        let r3 = w.begin();
        assert_eq!(
            w.check(2, 21, r3),
            Verdict::New,
            "a failed write does not count"
        );
        w.remember(3, 21);
        assert_eq!(w.check(3, 22, r3), Verdict::Duplicate, "found in the log");
        // Eids older than the window are forgotten as new ones arrive.
        assert_eq!(w.check(1, 1000, r3), Verdict::New, "older than the window");
    }

    #[test]
    fn a_window_is_bounded_keeping_the_newest() {
        let w = EidWindow::new(1_000_000, 640);
        let r = w.begin();
        let eids: Vec<Eid> = (1..=10_000u128).map(spread).collect();
        for (t, &e) in eids.iter().enumerate() {
            w.check(e, t as i64, r);
        }
        w.end(r);
        assert!(w.len() <= 640 + SHARDS, "about max remain: {}", w.len());
        let r = w.begin();
        assert_eq!(
            w.check(eids[9_999], 20_000, r),
            Verdict::Duplicate,
            "the newest are kept"
        );
        assert_eq!(w.check(eids[0], 20_000, r), Verdict::New, "the oldest went");
    }
}
