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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Written,
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
}

#[derive(Debug, Default)]
pub struct EidWindow {
    entries: HashMap<Eid, (i64, State), Hasher>,
    order: VecDeque<(i64, Eid)>,
}

impl EidWindow {
    /// Forgets eids older than `now - window_ms`, and the oldest beyond `max`.
    pub fn expire(&mut self, now: i64, window_ms: u64, max: usize) {
        let horizon = now.saturating_sub(window_ms as i64);
        while let Some(&(at, eid)) = self.order.front() {
            if at >= horizon && self.entries.len() <= max {
                break;
            }
            self.order.pop_front();
            if self
                .entries
                .get(&eid)
                .is_some_and(|(t, s)| *t == at && *s == State::Written)
            {
                self.entries.remove(&eid);
            }
        }
    }

    pub fn check(&mut self, eid: Eid, now: i64) -> Verdict {
        match self.entries.get(&eid) {
            Some((_, State::Written)) => Verdict::Duplicate,
            Some((_, State::Pending)) => Verdict::InFlight,
            None => {
                self.entries.insert(eid, (now, State::Pending));
                Verdict::New
            }
        }
    }

    /// The reserved eid was written at `at`.
    pub fn confirm(&mut self, eid: Eid, at: i64) {
        self.entries.insert(eid, (at, State::Written));
        self.order.push_back((at, eid));
    }

    /// The reserved eid was not written.
    pub fn release(&mut self, eid: Eid) {
        if self
            .entries
            .get(&eid)
            .is_some_and(|(_, s)| *s == State::Pending)
        {
            self.entries.remove(&eid);
        }
    }

    /// Remembers an eid found in the log at load time.
    pub fn remember(&mut self, eid: Eid, at: i64) {
        self.confirm(eid, at);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
    fn a_window_remembers_then_forgets() {
        let mut w = EidWindow::default();
        assert_eq!(w.check(1, 0), Verdict::New);
        assert_eq!(w.check(1, 0), Verdict::InFlight);
        w.confirm(1, 10);
        assert_eq!(w.check(1, 20), Verdict::Duplicate);
        assert_eq!(w.check(2, 20), Verdict::New);
        w.release(2);
        assert_eq!(
            w.check(2, 21),
            Verdict::New,
            "a failed write does not count"
        );
        w.confirm(2, 21);
        w.expire(1000, 100, 10);
        assert!(w.is_empty(), "older than the window");
        for i in 0..5 {
            w.check(i, 0);
            w.confirm(i, 2000);
        }
        w.expire(2000, 100, 3);
        assert_eq!(w.len(), 3, "bounded by max");
        assert_eq!(w.check(4, 2000), Verdict::Duplicate, "the newest are kept");
    }
}
