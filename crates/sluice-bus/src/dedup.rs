//! Idempotent publishing: the eids published to an event type within a time window,
//! so that a retried event is answered as submitted and not written twice.
//!
//! ```text
//!  check: new ------> reserve (Pending) --append ok--> Written (kept for the window)
//!         |                              \--append failed--> forgotten
//!         +-- Written within the window: duplicate, not written, "submitted"
//!         +-- Pending (a concurrent request carries it): failed, "retry"
//! ```
//!
//! The window is rebuilt from the log's tail (`offset_for_timestamp(now - window)`) the
//! first time an event type is published to after a start, so a retry after a crash
//! or a timeout is caught too. Memory is bounded by `max_eids` per event type: when
//! more eids than that arrive within the window, the oldest are forgotten early.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

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

/// A remembered eid: when, and whether it is written or reserved by a request.
/// 16 bytes, and keys of two u64s (not one u128, aligned to 16): an entry of the table
/// is 32 bytes instead of 48, which matters at a million eids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    at: i64,
    /// 0: written; otherwise the number of the request that reserved it.
    pending: u64,
}

const WRITTEN: u64 = 0;

type Key = [u64; 2];

fn key(eid: Eid) -> Key {
    [(eid >> 64) as u64, eid as u64]
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

#[derive(Debug)]
pub struct EidWindow {
    shards: Vec<Shard>,
    requests: u64,
    /// The shard `grow_ahead` looks at next.
    grow_cursor: usize,
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<Key, Slot, Hasher>,
    /// Written eids in the order they were confirmed, for expiry.
    order: VecDeque<(i64, Key)>,
}

impl Default for EidWindow {
    fn default() -> Self {
        EidWindow {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            requests: 0,
            grow_cursor: 0,
        }
    }
}

impl EidWindow {
    /// The shard of an eid: Fibonacci hashing of both halves, so that UUID versions
    /// whose low bits hardly vary (time-based ones) still spread.
    fn shard(&mut self, eid: Eid) -> &mut Shard {
        let folded = (eid as u64) ^ ((eid >> 64) as u64);
        let i = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.trailing_zeros());
        &mut self.shards[i as usize]
    }

    /// A number for the next request, telling its own reservations from others'.
    pub fn next_request(&mut self) -> u64 {
        self.requests += 1;
        self.requests
    }

    /// Doubles the next shard's room (round robin) if it is three quarters full, so
    /// that shards grow one at a time rather than all at once. Call once per request.
    pub fn grow_ahead(&mut self) {
        let shard = &mut self.shards[self.grow_cursor];
        self.grow_cursor = (self.grow_cursor + 1) % SHARDS;
        let (len, room) = (shard.entries.len(), shard.entries.capacity());
        if room >= 64 && len >= room / 4 * 3 {
            shard.entries.reserve(room);
        }
        let (len, room) = (shard.order.len(), shard.order.capacity());
        if room >= 64 && len >= room / 4 * 3 {
            shard.order.reserve(room);
        }
    }

    /// Forgets eids older than `now - window_ms`, and the oldest beyond `max` (in all:
    /// each shard keeps at most its share).
    pub fn expire(&mut self, now: i64, window_ms: u64, max: usize) {
        let horizon = now.saturating_sub(window_ms as i64);
        let per_shard = max.div_ceil(SHARDS);
        for shard in &mut self.shards {
            while let Some(&(at, k)) = shard.order.front() {
                if at >= horizon && shard.entries.len() <= per_shard {
                    break;
                }
                shard.order.pop_front();
                if let Entry::Occupied(e) = shard.entries.entry(k)
                    && *e.get()
                        == (Slot {
                            at,
                            pending: WRITTEN,
                        })
                {
                    e.remove();
                }
            }
        }
    }

    /// Reserves `eid` for `request` unless it is known.
    pub fn check(&mut self, eid: Eid, now: i64, request: u64) -> Verdict {
        debug_assert_ne!(request, WRITTEN, "requests are numbered from 1");
        match self.shard(eid).entries.entry(key(eid)) {
            Entry::Occupied(e) => match e.get().pending {
                WRITTEN => Verdict::Duplicate,
                r if r == request => Verdict::Repeated,
                _ => Verdict::InFlight,
            },
            Entry::Vacant(e) => {
                e.insert(Slot {
                    at: now,
                    pending: request,
                });
                Verdict::New
            }
        }
    }

    /// The reserved eid was written at `at`.
    pub fn confirm(&mut self, eid: Eid, at: i64) {
        let (shard, k) = (self.shard(eid), key(eid));
        let written = Slot {
            at,
            pending: WRITTEN,
        };
        *shard.entries.entry(k).or_insert(written) = written;
        shard.order.push_back((at, k));
    }

    /// The reserved eid was not written.
    pub fn release(&mut self, eid: Eid) {
        if let Entry::Occupied(e) = self.shard(eid).entries.entry(key(eid))
            && e.get().pending != WRITTEN
        {
            e.remove();
        }
    }

    /// Remembers an eid found in the log at load time.
    pub fn remember(&mut self, eid: Eid, at: i64) {
        self.confirm(eid, at);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.entries.len()).sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eids_parse_as_uuids() {
        let a = parse_eid("5b4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11").unwrap();
        assert_eq!(parse_eid("5B4A4C7E-8A52-4B0A-9F7A-3B1F2B0C9D11"), Some(a));
        assert_eq!(parse_eid("5b4a4c7e8a524b0a9f7a3b1f2b0c9d11"), None);
        assert_eq!(parse_eid("zb4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11"), None);
    }

    #[test]
    fn shards_grow_ahead_of_need() {
        let mut w = EidWindow::default();
        for i in 1..=64_000u128 {
            w.check(
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
                0,
                1,
            );
            if i % 100 == 0 {
                w.grow_ahead();
            }
        }
        for s in &w.shards {
            let (len, room) = (s.entries.len(), s.entries.capacity());
            assert!(len < room / 4 * 3 + 150, "{len} of {room}");
        }
    }

    #[test]
    fn eids_spread_over_the_shards() {
        let mut w = EidWindow::default();
        // Time-based UUIDs: only the high bits vary.
        for i in 0..6400u128 {
            w.check(i << 80, 0, 1);
        }
        let busiest = w.shards.iter().map(|s| s.entries.len()).max().unwrap();
        assert!(busiest < 300, "a shard holds {busiest} of 6400");
    }

    #[test]
    fn a_window_remembers_then_forgets() {
        let mut w = EidWindow::default();
        let (r1, r2) = (w.next_request(), w.next_request());
        assert_eq!(w.check(1, 0, r1), Verdict::New);
        assert_eq!(w.check(1, 0, r1), Verdict::Repeated);
        assert_eq!(w.check(1, 0, r2), Verdict::InFlight);
        w.confirm(1, 10);
        assert_eq!(w.check(1, 20, r2), Verdict::Duplicate);
        assert_eq!(w.check(2, 20, r2), Verdict::New);
        w.release(2);
        assert_eq!(
            w.check(2, 21, r2),
            Verdict::New,
            "a failed write does not count"
        );
        w.confirm(2, 21);
        w.expire(1000, 100, 10);
        assert!(w.is_empty(), "older than the window");
        // Bounded by max: each shard keeps its share, the newest first.
        let eids: Vec<Eid> = (1..=10_000u128)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))
            .collect();
        for (t, &e) in eids.iter().enumerate() {
            w.check(e, 2000, r2);
            w.confirm(e, 2000 + t as i64);
        }
        w.expire(3000, 100_000, 640);
        assert!(
            (576..=640).contains(&w.len()),
            "about max remain: {}",
            w.len()
        );
        assert_eq!(
            w.check(eids[9_999], 12_000, r2),
            Verdict::Duplicate,
            "the newest are kept"
        );
        assert_eq!(
            w.check(eids[0], 12_000, r2),
            Verdict::New,
            "the oldest went"
        );
    }
}
