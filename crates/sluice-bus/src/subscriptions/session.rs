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

use super::model::DeadLetters;
use super::store::PartKey;

/// Events sent in one batch and not committed yet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sent {
    /// The log offsets of the batch's first and last events.
    pub first: u64,
    pub last: u64,
    pub count: u64,
    pub at: Instant,
}

/// The batches a partition's owner sent and did not get committed, oldest first,
/// and how many events they hold (asked on every turn of a stream, so kept as a
/// count: with batches of one event, summing them cost a stream more than sending).
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    batches: VecDeque<Sent>,
    events: u64,
}

impl Inflight {
    pub fn push(&mut self, sent: Sent) {
        self.events += sent.count;
        self.batches.push_back(sent);
    }

    /// Forgets the batches that end at or before `offset`.
    pub fn committed_through(&mut self, offset: u64) {
        while let Some(s) = self.batches.front().filter(|s| s.last <= offset) {
            self.events -= s.count;
            self.batches.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.events = 0;
    }

    pub fn front(&self) -> Option<&Sent> {
        self.batches.front()
    }

    pub fn back(&self) -> Option<&Sent> {
        self.batches.back()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn events(&self) -> u64 {
        self.events
    }
}

/// One partition of the subscription, as the streams share it.
#[derive(Debug, Default)]
pub(crate) struct Part {
    /// The stream allowed to send it (or holding uncommitted events of it).
    pub owner: Option<Arc<StreamCtl>>,
    /// Where a rebalance moves it once `owner` has nothing uncommitted.
    pub target: Option<Arc<StreamCtl>>,
    /// Sent by `owner`, not committed, oldest first.
    pub inflight: Inflight,
    /// Dead letters: how often delivery starting at `failed_from` ended uncommitted.
    pub failures: u32,
    pub failed_from: Option<u64>,
    /// Events up to here failed too often together: they go one at a time until then.
    pub isolate_until: Option<u64>,
    /// This event failed too often alone: the next owner skips it (and dead-letters it).
    pub skip: Option<u64>,
    /// On a shared log: the owner does not hold the partition in the cluster yet
    /// (`cluster.rs`), so it may not send from it.
    pub unheld: bool,
}

impl Part {
    pub fn uncommitted(&self) -> u64 {
        self.inflight.events()
    }

    /// The owner may send from it (not being handed over, and held in the cluster).
    pub fn sendable_by(&self, stream: &StreamCtl) -> bool {
        self.target.is_none()
            && !self.unheld
            && self.owner.as_ref().is_some_and(|o| o.id == stream.id)
    }

    pub fn owned_by(&self, stream: &str) -> bool {
        self.owner.as_ref().is_some_and(|o| o.id == stream)
    }

    /// The uncommitted events were given up (their stream ended or lost the partition):
    /// with dead letters on, count it against the first of them.
    ///
    /// ```text
    ///  normal --(max failures from the same event)--> isolating: one event at a time
    ///         up to the last event then sent
    ///  isolating --(one event fails max times alone)--> it is skipped (and dead-lettered)
    ///  isolating --(committed past the isolated range)--> normal
    /// ```
    fn given_up(&mut self, dead_letters: Option<DeadLetters>) {
        let (Some(first), Some(last)) = (self.inflight.front(), self.inflight.back()) else {
            return;
        };
        let (first, last) = (first.first, last.last);
        self.inflight.clear();
        let Some(dl) = dead_letters else { return };
        if self.failed_from == Some(first) {
            self.failures += 1;
        } else {
            self.failed_from = Some(first);
            self.failures = 1;
        }
        if self.failures < dl.max_send_count {
            return;
        }
        self.failures = 0;
        self.failed_from = None;
        if self.isolate_until.is_none() {
            self.isolate_until = Some(last);
        } else {
            self.skip = Some(first);
        }
    }
}

/// One stream of a subscription, as the session sees it.
#[derive(Debug)]
pub(crate) struct StreamCtl {
    pub id: String,
    /// A stream of another node (shared logs): only its membership is known here.
    pub remote: bool,
    /// When it opened (ms since the epoch): streams are ordered by it across nodes.
    pub started_ms: i64,
    /// Partitions asked for by the client (direct assignment); empty: auto.
    pub direct: Vec<PartKey>,
    pub commit_timeout: Duration,
    /// The generation of the subscription's cursors it opened in: a reset to a newer
    /// one ends it, and its commits count only in its own.
    pub generation: u64,
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
    pub fn new(
        id: String,
        direct: Vec<PartKey>,
        commit_timeout: Duration,
        generation: u64,
    ) -> StreamCtl {
        StreamCtl::with_origin(id, direct, commit_timeout, generation, false, now_ms())
    }

    /// A stream as another node announced it.
    pub fn remote(
        id: String,
        direct: Vec<PartKey>,
        commit_timeout: Duration,
        generation: u64,
        started_ms: i64,
    ) -> StreamCtl {
        StreamCtl::with_origin(id, direct, commit_timeout, generation, true, started_ms)
    }

    fn with_origin(
        id: String,
        direct: Vec<PartKey>,
        commit_timeout: Duration,
        generation: u64,
        remote: bool,
        started_ms: i64,
    ) -> StreamCtl {
        StreamCtl {
            id,
            remote,
            started_ms,
            direct,
            commit_timeout,
            generation,
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
    /// The log is shared with other nodes: streams are ordered by start time and a
    /// new owner sends only once it holds the partition in the cluster.
    pub shared: bool,
    /// The subscription's dead-letter settings (from its annotations).
    pub dead_letters: Option<DeadLetters>,
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
        if self.shared {
            // Every node orders the same streams the same way.
            self.streams
                .sort_by(|a, b| a.started_ms.cmp(&b.started_ms).then(a.id.cmp(&b.id)));
        }
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
        let dead_letters = self.dead_letters;
        let shared = self.shared;
        for (key, part) in &mut self.parts {
            let want = desired.get(key).cloned();
            let before = part.owner.as_ref().map(|o| o.id.clone());
            changed |= settle(part, want, now, dead_letters);
            if shared && part.owner.as_ref().map(|o| &o.id) != before.as_ref() {
                part.unheld = true;
            }
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
    pub fn sent(&mut self, key: &PartKey, sent: Sent) {
        if let Some(p) = self.parts.get_mut(key) {
            p.inflight.push(sent);
        }
    }

    /// Everything up to `offset` of `key` is committed.
    pub fn committed(&mut self, key: &PartKey, offset: u64) {
        if let Some(p) = self.parts.get_mut(key) {
            p.inflight.committed_through(offset);
            if p.isolate_until.is_some_and(|until| offset >= until) {
                p.isolate_until = None;
            }
            if p.skip.is_some_and(|o| offset >= o) {
                p.skip = None;
            }
        }
    }

    /// Ends every stream (a reset): their uncommitted events are given up.
    /// Remote streams come back from the cluster if their generation is current.
    pub fn close_all(&mut self, reason: &str) {
        for s in &self.streams {
            s.close(reason);
        }
        for p in self.parts.values_mut() {
            *p = Part::default(); // a reset also ends any dead-letter search
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

fn now_ms() -> i64 {
    sluice_log::Timestamp::now().0
}

/// When the owner's claim on uncommitted events of a partition it must give up ends:
/// its commit timeout after it ended (Nakadi lets a closed stream commit what it
/// got), or after the oldest uncommitted batch was sent.
fn handover_deadline(owner: &StreamCtl, oldest: &Sent) -> Instant {
    let from = owner.ended_at().map_or(oldest.at, |e| e.max(oldest.at));
    from + owner.commit_timeout
}

/// Moves one partition toward `want`; true if its owner or target changed.
fn settle(
    part: &mut Part,
    want: Option<Arc<StreamCtl>>,
    now: Instant,
    dead_letters: Option<DeadLetters>,
) -> bool {
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
            part.given_up(dead_letters);
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

    #[test]
    fn inflight_counts_the_events_of_its_batches() {
        let (mut f, t) = (Inflight::default(), Instant::now());
        f.push(sent(0, 9, t));
        f.push(sent(10, 10, t));
        f.push(sent(11, 14, t));
        assert_eq!(f.events(), 15);
        f.committed_through(9);
        assert_eq!((f.events(), f.front().map(|s| s.first)), (5, Some(10)));
        f.committed_through(12); // inside the last batch: it stays whole
        assert_eq!(f.events(), 4);
        f.committed_through(14);
        assert_eq!((f.events(), f.is_empty()), (0, true));
        f.push(sent(15, 16, t));
        f.clear();
        assert_eq!((f.events(), f.back().is_none()), (0, true));
    }

    fn sent(first: u64, last: u64, at: Instant) -> Sent {
        Sent {
            first,
            last,
            count: last - first + 1,
            at,
        }
    }

    fn stream(id: &str) -> Arc<StreamCtl> {
        Arc::new(StreamCtl::new(
            id.into(),
            Vec::new(),
            Duration::from_secs(60),
            0,
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
        s.sent(&keys(2)[1], sent(6, 10, t0));
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
        s.sent(&keys(2)[1], sent(20, 20, t0));
        s.streams[1].disconnected();
        s.rebalance(t0);
        assert_eq!(owners(&s), ["a", "b"], "b may still commit");
        s.rebalance(t0 + Duration::from_secs(61));
        assert_eq!(owners(&s), ["a", "a"]);
        assert_eq!(s.parts[&keys(2)[1]].uncommitted(), 0);
        assert_eq!(s.streams.len(), 1, "b is forgotten");
    }

    #[test]
    fn failing_deliveries_isolate_then_skip_the_poison_event() {
        let t0 = Instant::now();
        let key = ("et".to_string(), 0);
        let mut s = State {
            dead_letters: Some(DeadLetters {
                max_send_count: 2,
                policy: super::super::model::UnprocessablePolicy::Skip,
            }),
            ..State::default()
        };
        s.ensure_parts([key.clone()]);
        let fail = |s: &mut State, first, last| {
            let a = stream("a");
            s.streams.push(a.clone());
            s.rebalance(t0);
            s.sent(&key, sent(first, last, t0));
            a.forfeit("commit timeout");
            s.rebalance(t0);
        };
        fail(&mut s, 0, 9);
        assert_eq!(s.parts[&key].isolate_until, None, "once is not enough");
        fail(&mut s, 0, 9);
        assert_eq!(
            s.parts[&key].isolate_until,
            Some(9),
            "twice: one at a time up to 9"
        );
        s.committed(&key, 0);
        fail(&mut s, 1, 1);
        fail(&mut s, 1, 1);
        assert_eq!(s.parts[&key].skip, Some(1), "event 1 failed alone twice");
        s.committed(&key, 1);
        assert_eq!(s.parts[&key].skip, None);
        s.committed(&key, 9);
        assert_eq!(
            s.parts[&key].isolate_until, None,
            "past the range: normal again"
        );
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
            0,
        ));
        s.streams.push(d);
        s.rebalance(now);
        assert_eq!(owners(&s), ["d", "auto", "auto"]);
    }
}
