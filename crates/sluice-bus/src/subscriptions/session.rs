//! Who streams which partition of a subscription: the open streams, the partitions they
//! own, what they sent and was not committed yet, and the rebalancing between them.
//!
//! ```text
//!  partition:  unassigned --(a stream is open)--> assigned to S
//!              assigned to S --(rebalance: S has nothing uncommitted)--> assigned to T
//!              assigned to S --(rebalance: S has uncommitted events)--> reassigning S -> T
//!              reassigning --(S commits all, or S's commit timeout passes)--> assigned to T
//!              assigned to S --(S closed, nothing uncommitted)--> next owner / unassigned
//!              assigned to S --(S disconnected with uncommitted events)--> kept for S until
//!                   it commits them or its commit timeout passes, then released
//! ```
//!
//! Partitions are split evenly among the connected streams that did not ask for
//! particular partitions ("auto" streams), oldest streams first, keeping each partition
//! where it is when that is still even. A reassigned partition moves only once its
//! owner has no uncommitted events, so two streams never hold unacknowledged events of
//! the same partition: delivery stays in order and at least once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::store::PartKey;

/// Events sent in one batch and not committed yet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sent {
    /// The log offset of the batch's last event.
    pub last: u64,
    pub count: u64,
    pub at: Instant,
}

/// One partition of the subscription, as the streams share it.
#[derive(Debug, Default)]
pub(crate) struct Part {
    /// The stream allowed to send it (or holding uncommitted events of it).
    pub owner: Option<Arc<StreamCtl>>,
    /// Where a rebalance moves it once `owner` has nothing uncommitted.
    pub target: Option<Arc<StreamCtl>>,
    /// Sent by `owner`, not committed, oldest first.
    pub inflight: VecDeque<Sent>,
}

impl Part {
    pub fn uncommitted(&self) -> u64 {
        self.inflight.iter().map(|s| s.count).sum()
    }

    /// The owner may send from it (not being handed over).
    pub fn sendable_by(&self, stream: &StreamCtl) -> bool {
        self.target.is_none() && self.owner.as_ref().is_some_and(|o| o.id == stream.id)
    }

    pub fn owned_by(&self, stream: &str) -> bool {
        self.owner.as_ref().is_some_and(|o| o.id == stream)
    }
}

/// One stream of a subscription, as the session sees it.
#[derive(Debug)]
pub(crate) struct StreamCtl {
    pub id: String,
    /// Partitions asked for by the client (direct assignment); empty: auto.
    pub direct: Vec<PartKey>,
    pub commit_timeout: Duration,
    /// Wakes the stream's task: its partitions or its uncommitted events changed.
    pub notify: Notify,
    /// The HTTP response is still being written.
    connected: AtomicBool,
    /// Why the server ends the stream (set once).
    close: Mutex<Option<(String, Instant)>>,
    /// Its uncommitted events are given up at once (closed for a commit timeout).
    forfeit: AtomicBool,
}

impl StreamCtl {
    pub fn new(id: String, direct: Vec<PartKey>, commit_timeout: Duration) -> StreamCtl {
        StreamCtl {
            id,
            direct,
            commit_timeout,
            notify: Notify::new(),
            connected: AtomicBool::new(true),
            close: Mutex::new(None),
            forfeit: AtomicBool::new(false),
        }
    }

    pub fn is_live(&self) -> bool {
        self.connected.load(Ordering::Acquire) && self.close.lock().is_none()
    }

    /// Asks the stream to end (the first reason wins).
    pub fn close(&self, reason: impl Into<String>) {
        let mut c = self.close.lock();
        if c.is_none() {
            *c = Some((reason.into(), Instant::now()));
        }
        drop(c);
        self.notify.notify_one();
    }

    /// Ends the stream and gives up its uncommitted events: they go to the next owner.
    pub fn forfeit(&self, reason: impl Into<String>) {
        self.forfeit.store(true, Ordering::Release);
        self.close(reason);
    }

    pub fn close_reason(&self) -> Option<String> {
        self.close.lock().as_ref().map(|(r, _)| r.clone())
    }

    /// When the stream stopped being live, if it did.
    fn ended_at(&self) -> Option<Instant> {
        self.close.lock().as_ref().map(|(_, at)| *at)
    }

    /// The response ended (client gone or stream finished).
    pub fn disconnected(&self) {
        self.close("the stream ended");
        self.connected.store(false, Ordering::Release);
    }
}

/// The shared state of one subscription's streams.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub streams: Vec<Arc<StreamCtl>>,
    pub parts: BTreeMap<PartKey, Part>,
    /// A cursor reset is running: no stream may start.
    pub resetting: bool,
}

impl State {
    /// Adds partitions that appeared (new event type partitions); never removes.
    pub fn ensure_parts(&mut self, keys: impl IntoIterator<Item = PartKey>) {
        for k in keys {
            self.parts.entry(k).or_default();
        }
    }

    /// Applies deadlines, then moves partitions to where an even split wants them.
    /// Returns whether anything changed (the streams are notified if so).
    pub fn rebalance(&mut self, now: Instant) -> bool {
        let live: Vec<Arc<StreamCtl>> = self
            .streams
            .iter()
            .filter(|s| s.is_live())
            .cloned()
            .collect();
        let mut desired: BTreeMap<PartKey, Arc<StreamCtl>> = BTreeMap::new();
        for s in &live {
            for k in &s.direct {
                if self.parts.contains_key(k) {
                    desired.insert(k.clone(), s.clone());
                }
            }
        }
        let auto_streams: Vec<&Arc<StreamCtl>> =
            live.iter().filter(|s| s.direct.is_empty()).collect();
        let auto_parts: Vec<PartKey> = self
            .parts
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        if !auto_streams.is_empty() {
            let (n, k) = (auto_parts.len(), auto_streams.len());
            let quota = |i: usize| n / k + usize::from(i < n % k);
            let mut counts = vec![0usize; k];
            let index = |id: &str| auto_streams.iter().position(|s| s.id == id);
            let mut unplaced = Vec::new();
            for key in &auto_parts {
                let part = &self.parts[key];
                let current = part.target.as_ref().or(part.owner.as_ref());
                match current.and_then(|s| index(&s.id)) {
                    Some(i) if counts[i] < quota(i) => {
                        counts[i] += 1;
                        desired.insert(key.clone(), auto_streams[i].clone());
                    }
                    _ => unplaced.push(key.clone()),
                }
            }
            for key in unplaced {
                if let Some(i) = (0..k).find(|&i| counts[i] < quota(i)) {
                    counts[i] += 1;
                    desired.insert(key, auto_streams[i].clone());
                }
            }
        }
        let mut changed = false;
        for (key, part) in &mut self.parts {
            let want = desired.get(key).cloned();
            changed |= settle(part, want, now);
        }
        // Streams that are gone and hold nothing are forgotten.
        let parts = &self.parts;
        self.streams
            .retain(|s| s.is_live() || parts.values().any(|p| p.owned_by(&s.id)));
        if changed {
            for s in &self.streams {
                s.notify.notify_one();
            }
        }
        changed
    }

    /// Marks `count` events up to `last` as sent by the owner of `key`.
    pub fn sent(&mut self, key: &PartKey, last: u64, count: u64, at: Instant) {
        if let Some(p) = self.parts.get_mut(key) {
            p.inflight.push_back(Sent { last, count, at });
        }
    }

    /// Everything up to `offset` of `key` is committed.
    pub fn committed(&mut self, key: &PartKey, offset: u64) {
        if let Some(p) = self.parts.get_mut(key) {
            while p.inflight.front().is_some_and(|s| s.last <= offset) {
                p.inflight.pop_front();
            }
        }
    }

    /// Ends every stream (a reset): their uncommitted events are given up.
    pub fn close_all(&mut self, reason: &str) {
        for s in &self.streams {
            s.close(reason);
        }
        for p in self.parts.values_mut() {
            p.inflight.clear();
            p.owner = None;
            p.target = None;
        }
        self.streams.clear();
    }

    /// The earliest moment a deadline of `rebalance` passes, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.parts
            .values()
            .filter_map(|p| {
                let owner = p.owner.as_ref()?;
                let oldest = p.inflight.front()?;
                (p.target.is_some() || !owner.is_live()).then(|| handover_deadline(owner, oldest))
            })
            .min()
    }
}

/// When the owner's claim on uncommitted events of a partition it must give up ends:
/// its commit timeout after it ended (Nakadi lets a closed stream commit what it
/// got), or after the oldest uncommitted batch was sent.
fn handover_deadline(owner: &StreamCtl, oldest: &Sent) -> Instant {
    let from = owner.ended_at().map_or(oldest.at, |e| e.max(oldest.at));
    from + owner.commit_timeout
}

/// Moves one partition toward `want`; true if its owner or target changed.
fn settle(part: &mut Part, want: Option<Arc<StreamCtl>>, now: Instant) -> bool {
    let same = |a: &Option<Arc<StreamCtl>>, b: &Option<Arc<StreamCtl>>| match (a, b) {
        (Some(a), Some(b)) => a.id == b.id,
        (None, None) => true,
        _ => false,
    };
    let before = (part.owner.clone(), part.target.clone());
    if same(&part.owner, &want) {
        part.target = None;
    } else {
        let free = match (&part.owner, part.inflight.front()) {
            (None, _) | (_, None) => true,
            (Some(owner), Some(oldest)) => {
                owner.forfeit.load(Ordering::Acquire) || now >= handover_deadline(owner, oldest)
            }
        };
        if free {
            part.inflight.clear();
            part.owner = want;
            part.target = None;
        } else {
            part.target = want;
        }
    }
    !(same(&before.0, &part.owner) && same(&before.1, &part.target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u32) -> Vec<PartKey> {
        (0..n).map(|p| ("et".to_string(), p)).collect()
    }

    fn stream(id: &str) -> Arc<StreamCtl> {
        Arc::new(StreamCtl::new(
            id.into(),
            Vec::new(),
            Duration::from_secs(60),
        ))
    }

    fn owners(s: &State) -> Vec<String> {
        s.parts
            .values()
            .map(|p| p.owner.as_ref().map_or("-".into(), |o| o.id.clone()))
            .collect()
    }

    #[test]
    fn partitions_split_evenly_and_stay_put() {
        let now = Instant::now();
        let mut s = State::default();
        s.ensure_parts(keys(5));
        s.streams.push(stream("a"));
        s.rebalance(now);
        assert_eq!(owners(&s), ["a", "a", "a", "a", "a"]);
        s.streams.push(stream("b"));
        s.rebalance(now);
        assert_eq!(owners(&s), ["a", "a", "a", "b", "b"]);
        s.streams.push(stream("c"));
        s.rebalance(now);
        let o = owners(&s);
        assert_eq!(o.iter().filter(|x| *x == "a").count(), 2, "{o:?}");
        assert_eq!(o.iter().filter(|x| *x == "b").count(), 2, "{o:?}");
        assert_eq!(o.iter().filter(|x| *x == "c").count(), 1, "{o:?}");
        assert_eq!(&o[3..], ["b", "b"], "b kept what it had");
    }

    #[test]
    fn a_partition_with_uncommitted_events_moves_after_the_commit_or_the_timeout() {
        let t0 = Instant::now();
        let mut s = State::default();
        s.ensure_parts(keys(2));
        let a = stream("a");
        s.streams.push(a.clone());
        s.rebalance(t0);
        s.sent(&keys(2)[1], 10, 5, t0);
        s.streams.push(stream("b"));
        s.rebalance(t0);
        let p1 = &s.parts[&keys(2)[1]];
        assert!(p1.owned_by("a") && p1.target.as_ref().unwrap().id == "b");
        assert!(!p1.sendable_by(&a), "a stops sending it");
        assert!(s.next_deadline().is_some());
        s.committed(&keys(2)[1], 10);
        s.rebalance(t0);
        assert_eq!(owners(&s), ["a", "b"]);
        // Again, but this time the commit never comes.
        s.sent(&keys(2)[1], 20, 1, t0);
        s.streams[1].disconnected();
        s.rebalance(t0);
        assert_eq!(owners(&s), ["a", "b"], "b may still commit");
        s.rebalance(t0 + Duration::from_secs(61));
        assert_eq!(owners(&s), ["a", "a"]);
        assert_eq!(s.parts[&keys(2)[1]].uncommitted(), 0);
        assert_eq!(s.streams.len(), 1, "b is forgotten");
    }

    #[test]
    fn direct_streams_get_what_they_asked_for() {
        let now = Instant::now();
        let mut s = State::default();
        s.ensure_parts(keys(3));
        s.streams.push(stream("auto"));
        let d = Arc::new(StreamCtl::new(
            "d".into(),
            vec![keys(3)[0].clone()],
            Duration::from_secs(60),
        ));
        s.streams.push(d);
        s.rebalance(now);
        assert_eq!(owners(&s), ["d", "auto", "auto"]);
    }
}
