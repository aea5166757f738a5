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
//! descheduled while holding one blocks few others. Each shard forgets its own expired
//! eids as it takes new ones.
//!
//! The window is rebuilt from the log's tail (`offset_for_timestamp(now - window)`) the
//! first time an event type is published to after a start, so a retry after a crash
//! or a timeout is caught too. Memory is bounded by `max_eids` per event type: when
//! more eids than that arrive within the window, the oldest are forgotten early.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

/// Shards of the window. Growing a hash table moves every entry at once: with a million
/// eids in one table that stalled all publishing for ~250 ms (seen as the p99 of the
/// publish benchmark). A shard holds 1/64 of them, and `grow_ahead` grows at most one
/// shard per request before it fills up: eids spread evenly, so shards left to grow
/// when full would all grow within the same few requests.
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

#[derive(Debug)]
pub struct EidWindow {
    shards: Vec<Mutex<Shard>>,
    /// Requests whose eids are being written.
    in_flight: Mutex<HashSet<u64, Hasher>>,
    requests: AtomicU64,
    /// The shard `grow_ahead` looks at next.
    grow_cursor: AtomicUsize,
    window_ms: i64,
    max_per_shard: usize,
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<Key, Slot, Hasher>,
    /// Eids in the order they were first seen, for expiry.
    order: VecDeque<(i64, Key)>,
}

impl Shard {
    /// Forgets eids seen before `horizon`, and the oldest beyond `max`.
    fn expire(&mut self, horizon: i64, max: usize) {
        while let Some(&(at, k)) = self.order.front() {
            if at >= horizon && self.entries.len() <= max {
                break;
            }
            self.order.pop_front();
            if let Entry::Occupied(e) = self.entries.entry(k)
                && e.get().at == at
            {
                e.remove();
            }
        }
    }
}

impl EidWindow {
    /// An empty window remembering eids for `window_ms`, at most `max_eids` of them.
    pub fn new(window_ms: u64, max_eids: usize) -> EidWindow {
        EidWindow {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            in_flight: Mutex::default(),
            requests: AtomicU64::new(0),
            grow_cursor: AtomicUsize::new(0),
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            max_per_shard: max_eids.div_ceil(SHARDS),
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
        let mut shard = self.shard(eid).lock();
        shard.expire(now.saturating_sub(self.window_ms), self.max_per_shard);
        match shard.entries.entry(key(eid)) {
            Entry::Occupied(e) => match e.get().request {
                r if r == request => Verdict::Repeated,
                r if r != 0 && self.in_flight.lock().contains(&r) => Verdict::InFlight,
                _ => Verdict::Duplicate,
            },
            Entry::Vacant(e) => {
                e.insert(Slot { at: now, request });
                shard.order.push_back((now, key(eid)));
                Verdict::New
            }
        }
    }

    /// `request` could not write `eid`: forget it, so that a retry is written.
    pub fn release(&self, eid: Eid, request: u64) {
        if let Entry::Occupied(e) = self.shard(eid).lock().entries.entry(key(eid))
            && e.get().request == request
        {
            e.remove();
        }
    }

    /// Remembers an eid found in the log at load time, written at `at`.
    pub fn remember(&self, eid: Eid, at: i64) {
        let mut shard = self.shard(eid).lock();
        if let Entry::Vacant(e) = shard.entries.entry(key(eid)) {
            e.insert(Slot { at, request: 0 });
            shard.order.push_back((at, key(eid)));
        }
    }

    /// Doubles the next shard's room (round robin) if it is three quarters full, so
    /// that shards grow one at a time rather than all at once. Call once per request.
    pub fn grow_ahead(&self) {
        let i = self.grow_cursor.fetch_add(1, Ordering::Relaxed) % SHARDS;
        let mut shard = self.shards[i].lock();
        let (len, room) = (shard.entries.len(), shard.entries.capacity());
        if room >= 64 && len >= room / 4 * 3 {
            shard.entries.reserve(room);
        }
        let (len, room) = (shard.order.len(), shard.order.capacity());
        if room >= 64 && len >= room / 4 * 3 {
            shard.order.reserve(room);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
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
                w.grow_ahead();
            }
        }
        for s in &w.shards {
            let s = s.lock();
            let (len, room) = (s.entries.len(), s.entries.capacity());
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
        let busiest = w.shards.iter().map(|s| s.lock().entries.len()).max();
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
