//! One publisher per view on a shared log (Kafka, several nodes).
//!
//! Every node runs every view, but a view's changes must reach its derived event type
//! once, not once per node. The node that publishes holds the view's lease, kept as
//! records of `__sluice_view_publishers` that every node applies in log order:
//!
//! - `{view}/claim/{epoch}/{node}`: a claim of the next epoch. The first claim of an
//!   epoch above the current one takes the lease; later claims of that epoch are
//!   ignored. Claims are never rewritten, so compaction keeps them in their order and
//!   a node replaying the topic reaches the same holder.
//! - `{view}/renew`: the holder's renewal of its epoch, every `term / 3`.
//! - `{view}/release`: the holder gives its epoch up (a clean stop); any caught-up
//!   node claims the next one at once.
//!
//! A node that has seen no renewal for `term` (its own clock) and whose copy of the
//! view has caught up with its sources claims the next epoch. The holder publishes only
//! until `term / 2` after the start of its last renewal that went through, so with
//! pauses shorter than `term / 2` two nodes never publish at once. A node that gets
//! the lease takes over (`publish.rs`): it reads what the derived event type holds
//! and publishes the difference to its own rows before its changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sluice_bus::{Bus, Follower, key_of};
use sluice_log::{LogError, Offset, PartitionId, Record, StoredRecord, TopicName};
use tokio::sync::Notify;

use crate::publish::{Outlets, Takeover, published_rows};
use crate::runner::Running;
use crate::service::{Result, State};

pub const PUBLISHERS_TOPIC: &str = "__sluice_view_publishers";

fn topic() -> TopicName {
    TopicName::new(PUBLISHERS_TOPIC).expect("a valid internal topic name")
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseRecord {
    node: String,
    epoch: u64,
    /// When it was written, for people reading the topic.
    at_ms: i64,
}

/// A view's lease as this node has applied it.
#[derive(Debug)]
struct Lease {
    epoch: u64,
    holder: String,
    /// When this node applied the holder's last claim or renewal.
    seen: Instant,
    /// This node's last claim: the epoch and when it was sent.
    claimed: Option<(u64, Instant)>,
    /// When this node, holding the lease, last sent a renewal that went through.
    renewed: Option<Instant>,
    /// Its holder gave it up (a clean stop): any node may claim it at once.
    released: bool,
}

impl Lease {
    fn vacant() -> Lease {
        Lease {
            epoch: 0,
            holder: String::new(),
            seen: Instant::now(),
            claimed: None,
            renewed: None,
            released: false,
        }
    }
}

/// Who publishes a view, as `GET /views/{name}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    pub epoch: u64,
}

/// The leases of every view, kept from the log; this node's claims and renewals.
#[derive(Debug)]
pub(crate) struct Leases {
    /// This process, as its records name it.
    pub(crate) node: String,
    term: Duration,
    leases: Arc<Mutex<HashMap<String, Lease>>>,
    outlets: Outlets,
    changed: Arc<Notify>,
    /// This node stops: it neither renews nor claims any more.
    stopping: std::sync::atomic::AtomicBool,
    _follower: Follower,
}

impl Leases {
    /// Replays the leases and follows them.
    pub(crate) async fn open(bus: &Bus, state: &State, term: Duration) -> Result<Leases> {
        let outlets = state.outlets.clone();
        let log = bus.log().clone();
        match log
            .create_topic(&topic(), sluice_bus::registry::compacted_internal())
            .await
        {
            Ok(()) | Err(LogError::TopicExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let bounds = log.offsets(&topic(), PartitionId(0)).await?;
        let node = uuid::Uuid::new_v4().to_string();
        let leases: Arc<Mutex<HashMap<String, Lease>>> = Arc::default();
        let changed = state.wake_leases.clone();
        let follower = Follower::spawn(log, topic(), bounds.earliest, {
            let (node, leases, outlets, changed) = (
                node.clone(),
                leases.clone(),
                outlets.clone(),
                changed.clone(),
            );
            move |r: &StoredRecord| {
                apply(&node, term, &leases, &outlets, r);
                changed.notify_one();
            }
        });
        if bounds.latest > bounds.earliest {
            follower.caught_up(Offset(bounds.latest.0 - 1)).await?;
        }
        Ok(Leases {
            node,
            term,
            leases,
            outlets,
            changed,
            stopping: std::sync::atomic::AtomicBool::new(false),
            _follower: follower,
        })
    }

    /// Who holds a view's lease, if anyone ever did.
    pub(crate) fn holder(&self, view: &str) -> Option<Holder> {
        self.leases
            .lock()
            .get(view)
            .filter(|l| l.epoch > 0)
            .map(|l| Holder {
                node: l.holder.clone(),
                epoch: l.epoch,
            })
    }

    /// Claims, renews and takes over, for every view this node runs that publishes.
    pub(crate) async fn run(self: Arc<Self>, bus: Arc<Bus>, state: Arc<State>) {
        let mut tick = tokio::time::interval(self.term / 6);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.changed.notified() => {}
            }
            self.pass(&bus, &state).await;
        }
    }

    async fn pass(&self, bus: &Arc<Bus>, state: &State) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let views: Vec<(String, String, Arc<Running>)> = state
            .entries
            .read()
            .iter()
            .filter(|(_, e)| !e.loading)
            .filter_map(|(name, e)| {
                Some((name.clone(), e.def.publish_as.clone()?, e.serving.clone()?))
            })
            .collect();
        let now = Instant::now();
        let mut records = Vec::new();
        let mut renewing = Vec::new();
        for (name, event_type, r) in views {
            let (mine, epoch, vacant, claimed_lately, renew_due) = {
                let mut leases = self.leases.lock();
                let l = leases.entry(name.clone()).or_insert_with(Lease::vacant);
                (
                    l.epoch > 0 && l.holder == self.node && !l.released,
                    l.epoch,
                    l.epoch == 0 || l.released || l.seen.elapsed() > self.term,
                    l.claimed
                        .is_some_and(|(e, t)| e == l.epoch + 1 && t.elapsed() < self.term),
                    l.renewed.is_none_or(|t| t.elapsed() >= self.term / 3),
                )
            };
            if mine {
                if renew_due {
                    records.push(self.record(&name, "renew", epoch));
                    renewing.push((name.clone(), epoch));
                }
                let current = r.publish.lock().as_ref().is_some_and(|p| p.current());
                if !current
                    && !r
                        .taking_over
                        .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    let p = self.outlets.publish(bus, &name, &event_type);
                    tokio::spawn(take_over(bus.clone(), r, p));
                }
            } else {
                // Not the holder (any more): the outlet refuses it anyway.
                r.publish.lock().take();
                if vacant && !claimed_lately && crate::lifecycle::is_caught_up(bus, &r).await {
                    records.push(self.record(
                        &name,
                        &format!("claim/{}/{}", epoch + 1, self.node),
                        epoch + 1,
                    ));
                    if let Some(l) = self.leases.lock().get_mut(&name) {
                        l.claimed = Some((epoch + 1, now));
                    }
                }
            }
        }
        if records.is_empty() {
            return;
        }
        match bus.log().append(&topic(), PartitionId(0), records).await {
            Ok(_) => {
                let mut leases = self.leases.lock();
                for (name, epoch) in renewing {
                    if let Some(l) = leases
                        .get_mut(&name)
                        .filter(|l| l.epoch == epoch && l.holder == self.node)
                    {
                        l.renewed = Some(now);
                        self.outlets.get(&name).extend(now + self.term / 2);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "view publisher leases not written"),
        }
    }

    /// Before a clean stop: stops publishing and gives up every lease this node
    /// holds, so other nodes take over at once instead of after a term.
    pub(crate) async fn release(&self, log: &Arc<dyn sluice_log::Log>) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let held: Vec<(String, u64)> = self
            .leases
            .lock()
            .iter()
            .filter(|(_, l)| l.epoch > 0 && l.holder == self.node && !l.released)
            .map(|(v, l)| (v.clone(), l.epoch))
            .collect();
        if held.is_empty() {
            return;
        }
        for (view, _) in &held {
            self.outlets.get(view).close();
        }
        let records = held
            .iter()
            .map(|(view, epoch)| self.record(view, "release", *epoch))
            .collect();
        if let Err(e) = log.append(&topic(), PartitionId(0), records).await {
            tracing::warn!(error = %e, "view publisher leases not released; others take over after a term");
        }
    }

    fn record(&self, view: &str, kind: &str, epoch: u64) -> Record {
        let value = LeaseRecord {
            node: self.node.clone(),
            epoch,
            at_ms: sluice_log::Timestamp::now().0,
        };
        Record {
            key: Some(Bytes::from(format!("{view}/{kind}"))),
            value: Some(Bytes::from(
                serde_json::to_vec(&value).expect("a lease record serializes"),
            )),
            ..Record::default()
        }
    }
}

/// Applies one lease record (in log order, the same on every node).
fn apply(
    node: &str,
    term: Duration,
    leases: &Mutex<HashMap<String, Lease>>,
    outlets: &Outlets,
    r: &StoredRecord,
) {
    let key = key_of(r);
    let Some((view, kind)) = key.split_once('/') else {
        return;
    };
    let Some(Ok(rec)) = r
        .value
        .as_deref()
        .map(serde_json::from_slice::<LeaseRecord>)
    else {
        return;
    };
    let mut leases = leases.lock();
    let l = leases.entry(view.to_string()).or_insert_with(Lease::vacant);
    if kind.starts_with("claim/") && rec.epoch > l.epoch {
        l.epoch = rec.epoch;
        l.holder = rec.node;
        l.seen = Instant::now();
        l.renewed = None;
        l.released = false;
        let outlet = outlets.get(view);
        if l.holder == node {
            // Counted from when the claim was sent: the others count from later.
            let sent = l
                .claimed
                .filter(|(e, _)| *e == l.epoch)
                .map_or_else(Instant::now, |(_, t)| t);
            l.renewed = Some(sent);
            outlet.open_new_term(sent + term / 2);
        } else {
            outlet.close();
        }
    } else if kind == "renew" && rec.epoch == l.epoch && rec.node == l.holder {
        l.seen = Instant::now();
    } else if kind == "release" && rec.epoch == l.epoch && rec.node == l.holder {
        l.released = true;
        if l.holder == node {
            outlets.get(view).close();
        }
    }
}

/// Reads what the derived event type holds, then hands the takeover to the view's
/// apply loop.
async fn take_over(bus: Arc<Bus>, r: Arc<Running>, p: crate::publish::Publish) {
    match published_rows(&bus, &p.event_type).await {
        Ok(told) => {
            tracing::info!(view = %r.plan.name, rows_published = told.len(), "this node publishes the view's changes now");
            r.take_over(Takeover { publish: p, told });
        }
        Err(e) => {
            r.progress.lock().unpublished = Some(e);
            r.taking_over
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, node: &str, epoch: u64) -> StoredRecord {
        let value = serde_json::to_vec(&LeaseRecord {
            node: node.into(),
            epoch,
            at_ms: 0,
        })
        .unwrap();
        StoredRecord {
            offset: Offset(0),
            timestamp: sluice_log::Timestamp(0),
            key: Some(Bytes::from(key.to_string())),
            value: Some(Bytes::from(value)),
            headers: Vec::new(),
        }
    }

    /// The holder every node reaches from the same records.
    fn holder_after(me: &str, records: &[StoredRecord]) -> (String, u64, bool) {
        let leases = Mutex::new(HashMap::new());
        let outlets = Outlets::new(true);
        for r in records {
            apply(me, Duration::from_secs(6), &leases, &outlets, r);
        }
        let l = &leases.lock()["v"];
        (
            l.holder.clone(),
            l.epoch,
            outlets.get("v").may(outlets.get("v").term()),
        )
    }

    #[tokio::test]
    async fn the_first_claim_of_an_epoch_holds_it_on_every_node() {
        let records = [
            record("v/claim/1/a", "a", 1),
            record("v/claim/1/b", "b", 1),
            record("v/renew", "b", 1),
            record("v/renew", "a", 1),
            // A claim of an epoch already taken, or older, changes nothing.
            record("v/claim/1/c", "c", 1),
        ];
        for me in ["a", "b", "c"] {
            let (holder, epoch, open) = holder_after(me, &records);
            assert_eq!((holder.as_str(), epoch), ("a", 1), "on node {me}");
            assert_eq!(open, me == "a", "only the holder may publish (node {me})");
        }
        // The next epoch moves it, and closes the old holder's outlet.
        let mut more = records.to_vec();
        more.push(record("v/claim/2/b", "b", 2));
        more.push(record("v/claim/2/a", "a", 2));
        assert_eq!(holder_after("a", &more), ("b".into(), 2, false));
        assert_eq!(holder_after("b", &more), ("b".into(), 2, true));
    }
}
