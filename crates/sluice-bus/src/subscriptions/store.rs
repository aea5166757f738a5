//! Where subscriptions and their committed cursors live: two internal compacted topics,
//! replayed on start, like the event type registry.
//!
//! - `__sluice_subscriptions`: key = subscription id, value = the definition as JSON,
//!   a tombstone on delete;
//! - `__sluice_cursors`: key = `{id}/{event type}/{partition}`, value = the committed
//!   cursor offset as text (`BEGIN` or `001-0001-...`).
//!
//! Creating a subscription writes its initial cursors first and its definition last
//! (the commit point): cursors of a subscription that does not exist are never read,
//! so a crash between the two leaves nothing half-made.
//!
//! Both topics are replayed on start and then followed (`follow.rs`): what another
//! node writes shows here within a fetch round trip. Definitions change only through
//! the follower; a commit updates this node's cursors at once (it is latency-bound)
//! and the follower skips records older than what a key already holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use sluice_log::{Log, Offset, PartitionId, Record, TopicName};

use super::model::Subscription;
use crate::cursor::CursorOffset;
use crate::error::{BusError, Result};
use crate::follow::{Follower, key_of};
use crate::registry::replay;

pub const SUBSCRIPTIONS_TOPIC: &str = "__sluice_subscriptions";
pub const CURSORS_TOPIC: &str = "__sluice_cursors";

/// One partition of one event type.
pub type PartKey = (String, u32);

/// Committed cursors of one subscription.
pub type Cursors = BTreeMap<PartKey, CursorOffset>;

/// Called when a cursor moved (this node's commit or another node's).
pub(crate) type OnCursor = Box<dyn Fn(&str, &PartKey, CursorOffset) + Send + Sync>;

/// What the two topics say, applied record by record.
#[derive(Default)]
struct State {
    subs: RwLock<BTreeMap<String, Arc<Subscription>>>,
    cursors: RwLock<HashMap<String, Cursors>>,
    /// The log offset of the record each cursor key was last set from.
    cursor_at: RwLock<HashMap<String, Offset>>,
    on_cursor: std::sync::OnceLock<OnCursor>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl State {
    fn apply_subscription(&self, key: &str, value: Option<&[u8]>) {
        match value {
            None => {
                self.subs.write().remove(key);
                self.cursors.write().remove(key);
            }
            Some(v) => match serde_json::from_slice::<Subscription>(v) {
                Ok(s) => {
                    self.subs.write().insert(key.to_string(), Arc::new(s));
                }
                Err(e) => {
                    tracing::error!(subscription = key, error = %e, "unreadable subscription")
                }
            },
        }
    }

    /// Sets a cursor from the record at `at` unless a later record set it already.
    fn apply_cursor(&self, key: &str, value: Option<&[u8]>, at: Offset) {
        {
            let mut seen = self.cursor_at.write();
            if seen.get(key).is_some_and(|o| *o >= at) {
                return;
            }
            seen.insert(key.to_string(), at);
        }
        let mut parts = key.rsplitn(3, '/');
        let (Some(p), Some(et), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let Ok(p) = p.parse::<u32>() else { return };
        let part = (et.to_string(), p);
        let mut all = self.cursors.write();
        match value.and_then(|v| std::str::from_utf8(v).ok()) {
            None => {
                if let Some(c) = all.get_mut(id) {
                    c.remove(&part);
                }
            }
            Some(text) => match CursorOffset::parse(text) {
                Some(offset) => {
                    all.entry(id.to_string())
                        .or_default()
                        .insert(part.clone(), offset);
                    drop(all);
                    if let Some(hook) = self.on_cursor.get() {
                        hook(id, &part, offset);
                    }
                }
                None => tracing::error!(cursor = key, "unreadable cursor"),
            },
        }
    }
}

#[derive(Debug)]
pub(crate) struct Store {
    log: Arc<dyn Log>,
    state: Arc<State>,
    definitions: Follower,
    cursor_follower: Follower,
}

fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("a valid internal topic name")
}

fn cursor_key(id: &str, (et, p): &PartKey) -> String {
    format!("{id}/{et}/{p}")
}

impl Store {
    pub async fn open(log: Arc<dyn Log>) -> Result<Store> {
        let state = Arc::new(State::default());
        let (subs, subs_next) = replay(&log, &topic(SUBSCRIPTIONS_TOPIC)).await?;
        for (id, value) in subs {
            state.apply_subscription(&id, value.as_deref());
        }
        let (cursors, cursors_next) = replay(&log, &topic(CURSORS_TOPIC)).await?;
        for (key, value) in cursors {
            state.apply_cursor(&key, value.as_deref(), Offset(0));
        }
        let definitions = Follower::spawn(log.clone(), topic(SUBSCRIPTIONS_TOPIC), subs_next, {
            let state = state.clone();
            move |r| state.apply_subscription(&key_of(r), r.value.as_deref())
        });
        let cursors = Follower::spawn(log.clone(), topic(CURSORS_TOPIC), cursors_next, {
            let state = state.clone();
            move |r| state.apply_cursor(&key_of(r), r.value.as_deref(), r.offset)
        });
        Ok(Store {
            log,
            state,
            definitions,
            cursor_follower: cursors,
        })
    }

    pub fn get(&self, id: &str) -> Option<Arc<Subscription>> {
        self.state.subs.read().get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Subscription>> {
        self.state.subs.read().values().cloned().collect()
    }

    /// The subscription with the same key as `s`, if any. When nodes raced to create
    /// one key, every node names the same one: the earliest created (then lowest id).
    pub fn find(&self, s: &Subscription) -> Option<Arc<Subscription>> {
        let key = s.key();
        self.state
            .subs
            .read()
            .values()
            .filter(|x| x.key() == key)
            .min_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)))
            .cloned()
    }

    /// Waits until every definition written so far, by any node, is applied here.
    pub async fn caught_up(&self) -> Result<()> {
        self.definitions.caught_up_to_end().await
    }

    /// Waits until every commit written so far, by any node, is applied here.
    pub async fn cursors_caught_up(&self) -> Result<()> {
        self.cursor_follower.caught_up_to_end().await
    }

    /// Sets what runs when a cursor moves (once).
    pub fn on_cursor(&self, hook: OnCursor) {
        let _ = self.state.on_cursor.set(hook);
    }

    pub fn cursors(&self, id: &str) -> Cursors {
        self.state
            .cursors
            .read()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn cursor(&self, id: &str, part: &PartKey) -> Option<CursorOffset> {
        self.state.cursors.read().get(id)?.get(part).copied()
    }

    /// Writes cursors durably, then makes them current.
    pub async fn set_cursors(&self, id: &str, cursors: &[(PartKey, CursorOffset)]) -> Result<()> {
        if cursors.is_empty() {
            return Ok(());
        }
        let records = cursors
            .iter()
            .map(|(k, o)| Record::keyed(Bytes::from(cursor_key(id, k)), Bytes::from(o.to_string())))
            .collect();
        let at = self
            .log
            .append(&topic(CURSORS_TOPIC), PartitionId(0), records)
            .await?;
        for ((k, o), offset) in cursors.iter().zip(at.offsets) {
            let text = o.to_string();
            self.state
                .apply_cursor(&cursor_key(id, k), Some(text.as_bytes()), offset);
        }
        Ok(())
    }

    /// Writes a definition (its cursors must be written before, on create).
    pub async fn put(&self, s: Subscription) -> Result<Arc<Subscription>> {
        let value = serde_json::to_vec(&s).map_err(|e| BusError::Metadata(e.to_string()))?;
        let at = self
            .log
            .append(
                &topic(SUBSCRIPTIONS_TOPIC),
                PartitionId(0),
                vec![Record::keyed(Bytes::from(s.id.clone()), Bytes::from(value))],
            )
            .await?;
        if let Some(offset) = at.last() {
            self.definitions.caught_up(offset).await?;
        }
        Ok(Arc::new(s))
    }

    /// Deletes a definition, then its cursors.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let gone = self.cursors(id);
        let at = self
            .log
            .append(
                &topic(SUBSCRIPTIONS_TOPIC),
                PartitionId(0),
                vec![Record::tombstone(Bytes::from(id.to_string()))],
            )
            .await?;
        if let Some(offset) = at.last() {
            self.definitions.caught_up(offset).await?;
        }
        let tombstones: Vec<Record> = gone
            .keys()
            .map(|k| Record::tombstone(Bytes::from(cursor_key(id, k))))
            .collect();
        if !tombstones.is_empty() {
            // Best effort: cursors of a deleted subscription are never read.
            if let Err(e) = self
                .log
                .append(&topic(CURSORS_TOPIC), PartitionId(0), tombstones)
                .await
            {
                tracing::warn!(subscription = id, error = %e, "cursor tombstones not written");
            }
        }
        Ok(())
    }
}
