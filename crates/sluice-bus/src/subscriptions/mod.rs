//! Subscriptions (Nakadi's high-level API): definitions and committed cursors kept in
//! the log (`store.rs`), streams sharing a subscription's partitions (`session.rs`),
//! the stream itself (`stream.rs`), and what clients call: create, list, stream,
//! commit, reset, stats.

mod cluster;
mod commits;
pub mod model;
mod nodes;
pub mod params;
mod session;
mod store;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use sluice_log::{Log, TopicName};
use sluice_schema::time;
use tokio::sync::mpsc;

use crate::PartitionInfo;
use crate::cursor::CursorOffset;
use crate::error::{BusError, Result};
use crate::registry::Registry;
use cluster::Cluster;
pub use cluster::SESSIONS_TOPIC;
pub use model::{PartitionCursor, ReadFrom, Subscription};
pub(crate) use params::Resolved;
pub use params::{PartitionRef, StreamParams};
use session::{State, StreamCtl};
use store::Store;
pub use store::{CURSORS_TOPIC, Cursors, PartKey, SUBSCRIPTIONS_TOPIC};

/// The event type unprocessable events go to (Nakadi's name), created when the first
/// subscription asks for dead letters.
pub const DEAD_LETTER_EVENT_TYPE: &str = "nakadi.dead.letter.queue";

/// Creates the dead letter event type if `s` sends events there and it is missing.
async fn ensure_dead_letter_type(registry: &Registry, s: &Subscription) -> Result<()> {
    let wants = matches!(
        s.dead_letters(),
        Ok(Some(d)) if d.policy == model::UnprocessablePolicy::DeadLetter
    );
    if !wants || registry.get(DEAD_LETTER_EVENT_TYPE).is_some() {
        return Ok(());
    }
    let et: sluice_schema::EventType = serde_json::from_value(serde_json::json!({
        "name": DEAD_LETTER_EVENT_TYPE,
        "owning_application": "sluice",
        "category": "undefined",
        "partition_strategy": "random",
        "schema": {"type": "json_schema", "schema": "{\"type\": \"object\"}"},
    }))
    .map_err(|e| BusError::Metadata(e.to_string()))?;
    match registry.create(et).await {
        Ok(_) | Err(BusError::EventTypeExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The streams of one subscription and what they share.
#[derive(Debug)]
pub(crate) struct Session {
    pub id: String,
    pub state: Mutex<State>,
    /// Commits and resets of this subscription, one at a time: cursors only move in
    /// the order they were checked.
    commits: tokio::sync::Mutex<()>,
}

/// An open stream: its id (the `X-Nakadi-StreamId` header) and its lines.
#[derive(Debug)]
pub struct EventStream {
    pub id: String,
    pub lines: mpsc::Receiver<Bytes>,
}

/// A committed cursor as clients send and get it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionCursor {
    pub event_type: String,
    pub partition: String,
    pub offset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_token: Option<String>,
}

/// The outcome of committing one cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitResult {
    /// The cursor moved forward.
    Committed,
    /// The committed cursor was already at or past it.
    Outdated,
}

/// Where a reset puts a subscription's cursors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetTo {
    /// Given cursors (Nakadi's PATCH); partitions not named keep theirs.
    Cursors(Vec<PartitionCursor>),
    /// Every partition before its oldest available event.
    Begin,
    /// Every partition after its newest event.
    End,
    /// Every partition before its first event appended at or after this time (ms).
    Time(i64),
}

/// One partition in a subscription's stats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStats {
    pub partition: u32,
    /// `unassigned`, `assigned` or `reassigning`.
    pub state: &'static str,
    pub unconsumed_events: u64,
    /// Seconds since the oldest unconsumed event was appended (0 when none).
    pub consumer_lag_seconds: Option<u64>,
    pub stream_id: Option<String>,
    /// `auto` or `direct`, when assigned.
    pub assignment_type: Option<&'static str>,
}

/// Subscriptions of one bus.
#[derive(Debug)]
pub struct Subscriptions {
    log: Arc<dyn Log>,
    store: Arc<Store>,
    sessions: Sessions,
    /// On a shared log: the streams of other nodes (`cluster.rs`).
    cluster: Option<Arc<Cluster>>,
    /// Keeps this node's part in the cluster (`cluster_loop`); stops when dropped.
    cluster_task: Option<tokio::task::JoinHandle<()>>,
    /// Creates one at a time: a create looks for an existing key, then writes.
    creating: tokio::sync::Mutex<()>,
    /// The longest commit timeout a stream may ask for, in seconds.
    max_commit_timeout: u64,
}

fn topic(name: &str) -> Result<TopicName> {
    crate::registry::topic_of(name)
}

fn parse_partition(s: &str) -> Option<u32> {
    s.parse().ok()
}

type Sessions = Arc<Mutex<HashMap<String, Arc<Session>>>>;

impl Drop for Subscriptions {
    fn drop(&mut self) {
        if let Some(t) = &self.cluster_task {
            t.abort();
        }
    }
}

impl Subscriptions {
    pub(crate) async fn open(log: Arc<dyn Log>, max_commit_timeout: u64) -> Result<Subscriptions> {
        let store = Arc::new(Store::open(log.clone()).await?);
        let sessions: Sessions = Arc::new(Mutex::new(HashMap::new()));
        // A cursor moved (here or on another node): its stream may have room again.
        store.on_cursor(Box::new({
            let sessions = Arc::downgrade(&sessions);
            move |id, key, offset| {
                let Some(session) = sessions.upgrade().and_then(|s| s.lock().get(id).cloned())
                else {
                    return;
                };
                let mut st = session.state.lock();
                if let CursorOffset::At(o) = offset {
                    st.committed(key, o);
                }
                st.rebalance(Instant::now());
                for s in &st.streams {
                    s.notify.notify_one();
                }
            }
        }));
        // A reset (here or on another node): streams of older generations end.
        store.on_reset(Box::new({
            let sessions = Arc::downgrade(&sessions);
            move |id, generation| {
                let Some(session) = sessions.upgrade().and_then(|s| s.lock().get(id).cloned())
                else {
                    return;
                };
                let mut st = session.state.lock();
                if st.streams.iter().any(|s| s.generation < generation) {
                    st.close_all("the subscription's cursors were reset");
                }
            }
        }));
        let (cluster, cluster_task) = if log.shared() {
            let cluster = Arc::new(Cluster::open(log.clone()).await?);
            let task = tokio::spawn(nodes::cluster_loop(
                Arc::downgrade(&sessions),
                cluster.clone(),
                store.clone(),
            ));
            (Some(cluster), Some(task))
        } else {
            (None, None)
        };
        Ok(Subscriptions {
            log,
            store,
            sessions,
            cluster,
            cluster_task,
            creating: tokio::sync::Mutex::new(()),
            max_commit_timeout,
        })
    }

    /// Leaves the cluster (shared logs): this node's streams end and release what they
    /// hold at once, so other nodes' streams take over without waiting for them to
    /// expire. Uncommitted events are sent again to the next owner.
    pub async fn shutdown(&self) {
        let Some(cluster) = &self.cluster else { return };
        if let Some(t) = &self.cluster_task {
            t.abort();
        }
        let all: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for session in all {
            session.state.lock().close_all("the node is shutting down");
            let sub = session.id.as_str();
            let claims: Vec<(PartKey, String, bool)> = cluster
                .own_claims(sub)
                .into_iter()
                .map(|(key, stream)| (key, stream, false))
                .collect();
            let release = async {
                cluster.write_claims(sub, &claims).await?;
                cluster.leave(sub, &cluster.own_members(sub)).await
            };
            if let Err(e) = release.await {
                tracing::warn!(subscription = sub, error = %e, "streams not released at shutdown");
            }
        }
    }

    pub fn get(&self, id: &str) -> Result<Arc<Subscription>> {
        self.store
            .get(id)
            .ok_or_else(|| BusError::SubscriptionNotFound(id.to_string()))
    }

    /// Every subscription, newest first.
    pub fn list(&self) -> Vec<Arc<Subscription>> {
        let mut all = self.store.list();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        all
    }

    /// Subscriptions reading `event_type`.
    pub fn reading(&self, event_type: &str) -> Vec<String> {
        self.store
            .list()
            .iter()
            .filter(|s| s.event_types.iter().any(|e| e == event_type))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Every partition of the subscription's event types, with its bounds.
    async fn bounds(
        &self,
        registry: &Registry,
        s: &Subscription,
    ) -> Result<BTreeMap<PartKey, PartitionInfo>> {
        let mut out = BTreeMap::new();
        for et in &s.event_types {
            let reg = registry.require(et)?;
            for info in crate::partition_infos(&*self.log, &reg).await? {
                out.insert((et.clone(), info.partition), info);
            }
        }
        Ok(out)
    }

    /// Creates a subscription, or returns the one with the same key (`false`: existed).
    pub async fn create(
        &self,
        registry: &Registry,
        mut s: Subscription,
    ) -> Result<(Arc<Subscription>, bool)> {
        let mut problems = s.problems();
        for et in &s.event_types {
            if registry.get(et).is_none() {
                problems.push(format!("event type {et:?} does not exist"));
            }
        }
        if !problems.is_empty() {
            return Err(BusError::Unprocessable(problems));
        }
        let _one = self.creating.lock().await;
        self.store.caught_up().await?;
        if let Some(existing) = self.store.find(&s) {
            return Ok((existing, false));
        }
        let bounds = self.bounds(registry, &s).await?;
        let initial = match s.read_from {
            ReadFrom::Begin => bounds
                .keys()
                .map(|k| (k.clone(), CursorOffset::Begin))
                .collect(),
            ReadFrom::End => bounds.iter().map(|(k, b)| (k.clone(), b.newest)).collect(),
            ReadFrom::Cursors => {
                let given = commits::check_cursors(&s.initial_cursors, &bounds)?;
                let missing: Vec<String> = bounds
                    .keys()
                    .filter(|k| !given.contains_key(*k))
                    .map(|(et, p)| format!("{et}/{p}"))
                    .collect();
                if !missing.is_empty() {
                    return Err(BusError::Unprocessable(vec![format!(
                        "initial_cursors must cover every partition; missing: {}",
                        missing.join(", ")
                    )]));
                }
                given.into_iter().collect::<Vec<_>>()
            }
        };
        ensure_dead_letter_type(registry, &s).await?;
        s.id = uuid::Uuid::new_v4().to_string();
        s.event_types.sort();
        let now = time::now_rfc3339();
        s.created_at.clone_from(&now);
        s.updated_at = now;
        self.store.set_cursors(&s.id, 0, &initial).await?;
        let mine = self.store.put(s).await?;
        // Another node may have created the same key meanwhile: every node names the
        // same winner, and the loser's definition goes.
        match self.store.find(&mine) {
            Some(winner) if winner.id != mine.id => {
                self.store.delete(&mine.id).await?;
                Ok((winner, false))
            }
            _ => Ok((mine, true)),
        }
    }

    /// Changes what may change: authorization, annotations, labels.
    pub async fn update(
        &self,
        registry: &Registry,
        id: &str,
        new: Subscription,
    ) -> Result<Arc<Subscription>> {
        let old = self.get(id)?;
        let mut problems = Vec::new();
        if new.owning_application != old.owning_application {
            problems.push("owning_application cannot be changed".to_string());
        }
        let (mut a, mut b) = (new.event_types.clone(), old.event_types.clone());
        a.sort();
        b.sort();
        if a != b {
            problems.push("event_types cannot be changed".into());
        }
        if new.consumer_group != old.consumer_group {
            problems.push("consumer_group cannot be changed".into());
        }
        if !new.id.is_empty() && new.id != old.id {
            problems.push("id cannot be changed".into());
        }
        if let Err(e) = new.dead_letters() {
            problems.push(e);
        }
        if !problems.is_empty() {
            return Err(BusError::Unprocessable(problems));
        }
        ensure_dead_letter_type(registry, &new).await?;
        let mut s = (*old).clone();
        s.authorization = new.authorization;
        s.annotations = new.annotations;
        s.labels = new.labels;
        s.updated_at = time::now_rfc3339();
        let s = self.store.put(s).await?;
        if let Some(session) = self.sessions.lock().get(id) {
            session.state.lock().dead_letters = s.dead_letters().ok().flatten();
        }
        Ok(s)
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        self.get(id)?;
        if let Some(session) = self.sessions.lock().remove(id) {
            session
                .state
                .lock()
                .close_all("the subscription was deleted");
        }
        self.store.delete(id).await
    }

    fn session(&self, id: &str) -> Arc<Session> {
        self.sessions
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Session {
                    id: id.to_string(),
                    state: Mutex::new(State {
                        shared: self.cluster.is_some(),
                        ..State::default()
                    }),
                    commits: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Opens a stream: checks the parameters and the committed cursors, takes
    /// partitions, and starts sending.
    pub async fn open_stream(
        &self,
        registry: &Registry,
        id: &str,
        params: &StreamParams,
    ) -> Result<EventStream> {
        let sub = self.get(id)?;
        let params = params
            .resolve(self.max_commit_timeout)
            .map_err(BusError::Unprocessable)?;
        let bounds = self.bounds(registry, &sub).await?;
        let mut direct = Vec::new();
        for p in &params.partitions {
            let key = parse_partition(&p.partition).map(|n| (p.event_type.clone(), n));
            match key.filter(|k| bounds.contains_key(k)) {
                Some(k) => direct.push(k),
                None => {
                    return Err(BusError::Unprocessable(vec![format!(
                        "partition {:?} of event type {:?} is not part of subscription {id}",
                        p.partition, p.event_type
                    )]));
                }
            }
        }
        let committed = self.store.cursors(id);
        let expired: Vec<String> = bounds
            .iter()
            .filter_map(|(k, b)| {
                let CursorOffset::At(c) = committed.get(k).copied()? else {
                    return None;
                };
                let CursorOffset::At(oldest) = b.oldest else {
                    return None;
                };
                (c + 1 < oldest).then(|| {
                    format!(
                        "{} partition {}: committed {}, available {} to {}",
                        k.0,
                        k.1,
                        CursorOffset::At(c),
                        b.oldest,
                        b.newest
                    )
                })
            })
            .collect();
        if !expired.is_empty() {
            return Err(BusError::PreconditionFailed(format!(
                "committed cursors point at events no longer available (retention): {}; reset them with PATCH /subscriptions/{id}/cursors",
                expired.join("; ")
            )));
        }
        let session = self.session(id);
        let stream_id = uuid::Uuid::new_v4().to_string();
        let generation = self.store.generation(id);
        let ctl = Arc::new(StreamCtl::new(
            stream_id.clone(),
            direct.clone(),
            params.commit_timeout,
            generation,
        ));
        {
            let mut st = session.state.lock();
            if let Some(cluster) = &self.cluster {
                nodes::sync_remote(&mut st, cluster, id, generation);
            }
            // A reset applied since the generation was read would not close it.
            if st.resetting || self.store.generation(id) != generation {
                return Err(BusError::Conflict(format!(
                    "the cursors of subscription {id} are being reset; try again"
                )));
            }
            st.ensure_parts(bounds.keys().cloned());
            st.dead_letters = sub.dead_letters().ok().flatten();
            for k in &direct {
                if let Some(other) = st
                    .streams
                    .iter()
                    .find(|s| s.is_live() && s.direct.contains(k))
                {
                    return Err(BusError::Conflict(format!(
                        "{} partition {} is already assigned to stream {}",
                        k.0, k.1, other.id
                    )));
                }
            }
            st.streams.push(ctl.clone());
            st.rebalance(Instant::now());
            let got = st.parts.values().any(|p| {
                p.owned_by(&stream_id) || p.target.as_ref().is_some_and(|t| t.id == stream_id)
            });
            if !got {
                st.streams.retain(|s| s.id != stream_id);
                if let Some(cluster) = self.cluster.clone() {
                    let (id, stream) = (id.to_string(), stream_id.clone());
                    tokio::spawn(async move { cluster.leave(&id, &[stream]).await });
                }
                let live = st.streams.iter().filter(|s| s.is_live()).count();
                return Err(BusError::Conflict(format!(
                    "no free slots: subscription {id} has {} partitions and {live} streams reading them",
                    st.parts.len()
                )));
            }
        }
        if let Some(cluster) = &self.cluster {
            // Known to the other nodes before it takes anything (it joined the session
            // first, so a heartbeat never takes it for a stream that ended).
            if let Err(e) = cluster.announce(id, std::slice::from_ref(&ctl)).await {
                ctl.disconnected();
                session.state.lock().streams.retain(|s| s.id != stream_id);
                return Err(e);
            }
            // Claim what the split gave it now, and take what the claims hold, not at
            // the next ticks.
            for _ in 0..2 {
                if let Err(e) = nodes::settle_session(&session, cluster, &self.store).await {
                    tracing::warn!(subscription = id, error = %e, "cannot settle streams with the cluster");
                }
            }
        }
        let (tx, lines) = mpsc::channel(2);
        let task = stream::StreamTask {
            log: self.log.clone(),
            owner: stream::Owner::Subscription {
                store: self.store.clone(),
                session,
                ctl,
            },
            params,
            tx,
            subscription_cursors: true,
        };
        tokio::spawn(task.run());
        Ok(EventStream {
            id: stream_id,
            lines,
        })
    }

    /// Per partition: assignment, unconsumed events and (with `time_lag`) the age of
    /// the oldest unconsumed one. Available from creation on, before any stream.
    pub async fn stats(
        &self,
        registry: &Registry,
        id: &str,
        time_lag: bool,
    ) -> Result<Vec<(String, Vec<PartitionStats>)>> {
        let sub = self.get(id)?;
        let bounds = self.bounds(registry, &sub).await?;
        let committed = self.store.cursors(id);
        let session = self.sessions.lock().get(id).cloned();
        let mut out: Vec<(String, Vec<PartitionStats>)> = Vec::new();
        for (key, b) in &bounds {
            let c = committed.get(key).copied().unwrap_or(CursorOffset::Begin);
            let unconsumed = b.unconsumed_after(c);
            // A partition this node's stream owns is reported from here (it may still
            // wait for its claim to hold); any other from the cluster's claims.
            let local_owner = session.as_ref().is_some_and(|s| {
                s.state
                    .lock()
                    .parts
                    .get(key)
                    .and_then(|p| p.owner.as_ref().map(|o| !o.remote))
                    .unwrap_or(false)
            });
            let (state, stream_id, assignment) = match (&self.cluster, &session) {
                (Some(cluster), _) if !local_owner => match cluster.holder(id, key) {
                    None => ("unassigned", None, None),
                    Some(holder) => {
                        let moving = session.as_ref().is_some_and(|s| {
                            s.state.lock().parts.get(key).is_some_and(|p| {
                                p.target.is_some()
                                    || p.owner.as_ref().is_none_or(|o| o.id != holder)
                            })
                        });
                        let direct = cluster
                            .direct_of(id, &holder)
                            .is_some_and(|d| d.contains(key));
                        (
                            if moving { "reassigning" } else { "assigned" },
                            Some(holder),
                            Some(if direct { "direct" } else { "auto" }),
                        )
                    }
                },
                (_, None) => ("unassigned", None, None),
                (_, Some(s)) => {
                    let st = s.state.lock();
                    match st
                        .parts
                        .get(key)
                        .and_then(|p| p.owner.as_ref().map(|o| (p, o)))
                    {
                        None => ("unassigned", None, None),
                        Some((p, o)) => {
                            let state = if p.target.is_some() || !o.is_live() {
                                "reassigning"
                            } else {
                                "assigned"
                            };
                            let kind = if o.direct.is_empty() {
                                "auto"
                            } else {
                                "direct"
                            };
                            (state, Some(o.id.clone()), Some(kind))
                        }
                    }
                }
            };
            let lag = if !time_lag {
                None
            } else if unconsumed == 0 {
                Some(0)
            } else {
                let from = match c {
                    CursorOffset::At(o) => o + 1,
                    CursorOffset::Begin => match b.oldest {
                        CursorOffset::At(o) => o,
                        CursorOffset::Begin => 0,
                    },
                };
                let t = topic(&key.0)?;
                Some(crate::event_age_seconds(&*self.log, &t, key.1, from).await?)
            };
            let stats = PartitionStats {
                partition: key.1,
                state,
                unconsumed_events: unconsumed,
                consumer_lag_seconds: lag,
                stream_id,
                assignment_type: assignment,
            };
            match out.last_mut() {
                Some((et, parts)) if *et == key.0 => parts.push(stats),
                _ => out.push((key.0.clone(), vec![stats])),
            }
        }
        Ok(out)
    }
}

/// Nakadi's low-level read of one event type: `starts` holds (partition, cursor to read
/// after); lines without `event_type` and `cursor_token`, and no commits.
pub(crate) fn read_direct(
    log: Arc<dyn Log>,
    starts: Vec<(PartKey, CursorOffset)>,
    params: Resolved,
) -> mpsc::Receiver<Bytes> {
    stream::spawn_direct(log, starts, params)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use sluice_log::{EmbeddedConfig, EmbeddedLog, Log, PartitionId, TopicName};

    use crate::{Bus, BusConfig, BusError, Publisher};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_on_cursors_older_than_retention_is_refused_naming_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap();
        let bus = Bus::open(Arc::new(log.clone()) as Arc<dyn Log>, BusConfig::default())
            .await
            .unwrap();
        let et = json!({"name": "shop.cart", "owning_application": "cart", "category": "undefined",
            "options": {"retention_time": 1}, "schema": {"type": "json_schema", "schema": "{}"}});
        bus.create_event_type(serde_json::from_value(et).unwrap())
            .await
            .unwrap();
        let publish = |n: usize| {
            let body = serde_json::to_vec(&vec![json!({"item": 1}); n]).unwrap();
            let bus = &bus;
            async move {
                bus.publish("shop.cart", &body, &Publisher::default())
                    .await
                    .unwrap()
            }
        };
        publish(3).await;
        let sub =
            json!({"owning_application": "x", "event_types": ["shop.cart"], "read_from": "begin"});
        let (sub, _) = bus
            .subscriptions()
            .create(bus.registry(), serde_json::from_value(sub).unwrap())
            .await
            .unwrap();
        let key = ("shop.cart".to_string(), 0);
        bus.subscriptions()
            .store
            .set_cursors(&sub.id, 0, &[(key, crate::CursorOffset::At(0))])
            .await
            .unwrap();
        // The segment with offsets 0..3 rolls and ages past its 1 ms retention.
        log.roll(&TopicName::new("shop.cart").unwrap(), PartitionId(0))
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        publish(1).await;
        log.run_cleanup().unwrap();
        let err = bus
            .subscriptions()
            .open_stream(
                bus.registry(),
                &sub.id,
                &crate::subscriptions::StreamParams::default(),
            )
            .await
            .unwrap_err();
        let BusError::PreconditionFailed(detail) = err else {
            panic!("not a 412: {err}");
        };
        assert!(
            detail.contains(
                "committed 001-0001-000000000000000000, available 001-0001-000000000000000003"
            ),
            "{detail}"
        );
        assert!(detail.contains("PATCH"), "{detail}");
    }
}
