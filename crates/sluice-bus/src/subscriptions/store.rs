//! Where subscriptions and their committed cursors live: two internal compacted topics,
//! replayed on start, like the event type registry.
//!
//! - `__sluice_subscriptions`: key = subscription id, value = the definition as JSON,
//!   a tombstone on delete;
//! - `__sluice_cursors`: key = `{id}/{event type}/{partition}` (generation 0) or
//!   `{id}/{generation}/{event type}/{partition}`, value = the committed cursor offset
//!   as text (`BEGIN` or `001-0001-...`); key `{id}/reset`, value = the generation.
//!
//! Generations make a cursor reset hold on every node: a reset writes the new cursors
//! under the next generation, then the reset record (its commit point). A stream
//! commits under the generation it opened in; once a node applies the reset record it
//! closes the streams of older generations and ignores their commits, so a commit
//! racing the reset (from a stream on any node) can never undo it, and every node
//! decides the same from log order alone.
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
/// Called when a subscription's cursors were reset to a new generation (any node).
pub(crate) type OnReset = Box<dyn Fn(&str, u64) + Send + Sync>;

/// The cursors of one subscription: those of its current generation, and those
/// written ahead for a reset whose record is not applied (yet, or ever: a crash).
#[derive(Debug, Default)]
struct SubCursors {
    generation: u64,
    current: Cursors,
    ahead: BTreeMap<u64, Cursors>,
}

/// What the two topics say, applied record by record.
#[derive(Default)]
struct State {
    subs: RwLock<BTreeMap<String, Arc<Subscription>>>,
    cursors: RwLock<HashMap<String, SubCursors>>,
    /// The log offset of the record each cursor key was last set from.
    cursor_at: RwLock<HashMap<String, Offset>>,
    on_cursor: std::sync::OnceLock<OnCursor>,
    on_reset: std::sync::OnceLock<OnReset>,
}

/// What a key of the cursors topic names.
#[derive(Debug, PartialEq)]
enum CursorKey<'a> {
    Cursor {
        id: &'a str,
        generation: u64,
        part: PartKey,
    },
    Reset(&'a str),
}

impl CursorKey<'_> {
    fn parse(key: &str) -> Option<CursorKey<'_>> {
        let parts: Vec<&str> = key.split('/').collect();
        let cursor = |id, generation, et: &str, p: &str| {
            Some(CursorKey::Cursor {
                id,
                generation,
                part: (et.to_string(), p.parse().ok()?),
            })
        };
        match parts.as_slice() {
            [id, "reset"] => Some(CursorKey::Reset(id)),
            [id, et, p] => cursor(*id, 0, et, p),
            [id, generation, et, p] => cursor(*id, generation.parse().ok()?, et, p),
            _ => None,
        }
    }
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

    /// Applies a record of the cursors topic read at `at`.
    fn apply_cursor_record(&self, key: &str, value: Option<&[u8]>, at: Offset) {
        match CursorKey::parse(key) {
            Some(CursorKey::Cursor {
                id,
                generation,
                part,
            }) => self.apply_cursor(key, id, generation, part, value, at),
            Some(CursorKey::Reset(id)) => {
                let generation = value
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok());
                if let Some(generation) = generation {
                    self.apply_reset(id, generation);
                }
            }
            None => tracing::error!(cursor = key, "unreadable cursor key"),
        }
    }

    /// A reset took effect: the cursors written ahead for it are the current ones,
    /// and commits of older generations are ignored from now on.
    fn apply_reset(&self, id: &str, generation: u64) {
        {
            let mut all = self.cursors.write();
            let c = all.entry(id.to_string()).or_default();
            if generation <= c.generation {
                return;
            }
            c.generation = generation;
            c.current = c.ahead.remove(&generation).unwrap_or_default();
            c.ahead.retain(|g, _| *g > generation);
        }
        if let Some(hook) = self.on_reset.get() {
            hook(id, generation);
        }
    }

    /// Sets a cursor from the record at `at` unless a later record set it already or
    /// its generation is over.
    fn apply_cursor(
        &self,
        key: &str,
        id: &str,
        generation: u64,
        part: PartKey,
        value: Option<&[u8]>,
        at: Offset,
    ) {
        {
            let mut seen = self.cursor_at.write();
            if seen.get(key).is_some_and(|o| *o >= at) {
                return;
            }
            seen.insert(key.to_string(), at);
        }
        let offset = match value.map(std::str::from_utf8) {
            None => None,
            Some(Ok(text)) => match CursorOffset::parse(text) {
                Some(offset) => Some(offset),
                None => {
                    tracing::error!(cursor = key, "unreadable cursor");
                    return;
                }
            },
            Some(Err(_)) => {
                tracing::error!(cursor = key, "unreadable cursor");
                return;
            }
        };
        let mut all = self.cursors.write();
        let c = all.entry(id.to_string()).or_default();
        let cursors = match generation.cmp(&c.generation) {
            std::cmp::Ordering::Less => return, // a commit the reset overtook
            std::cmp::Ordering::Equal => &mut c.current,
            std::cmp::Ordering::Greater => c.ahead.entry(generation).or_default(),
        };
        match offset {
            None => {
                cursors.remove(&part);
            }
            Some(offset) => {
                cursors.insert(part.clone(), offset);
                let current = generation == c.generation;
                drop(all);
                if current && let Some(hook) = self.on_cursor.get() {
                    hook(id, &part, offset);
                }
            }
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

fn cursor_key(id: &str, generation: u64, (et, p): &PartKey) -> String {
    match generation {
        0 => format!("{id}/{et}/{p}"),
        g => format!("{id}/{g}/{et}/{p}"),
    }
}

fn reset_key(id: &str) -> String {
    format!("{id}/reset")
}

impl Store {
    pub async fn open(log: Arc<dyn Log>) -> Result<Store> {
        let state = Arc::new(State::default());
        let (subs, subs_next) = replay(&log, &topic(SUBSCRIPTIONS_TOPIC)).await?;
        for (id, value) in subs {
            state.apply_subscription(&id, value.as_deref());
        }
        let (cursors, cursors_next) = replay(&log, &topic(CURSORS_TOPIC)).await?;
        // Compaction kept the last record of each key, not their order: generations
        // first, then the cursors of each.
        let (resets, cursors): (Vec<_>, Vec<_>) = cursors
            .into_iter()
            .partition(|(k, _)| matches!(CursorKey::parse(k), Some(CursorKey::Reset(_))));
        for (key, value) in resets.into_iter().chain(cursors) {
            state.apply_cursor_record(&key, value.as_deref(), Offset(0));
        }
        let definitions = Follower::spawn(log.clone(), topic(SUBSCRIPTIONS_TOPIC), subs_next, {
            let state = state.clone();
            move |r| state.apply_subscription(&key_of(r), r.value.as_deref())
        });
        let cursors = Follower::spawn(log.clone(), topic(CURSORS_TOPIC), cursors_next, {
            let state = state.clone();
            move |r| state.apply_cursor_record(&key_of(r), r.value.as_deref(), r.offset)
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

    /// Sets what runs when a subscription's cursors were reset (once).
    pub fn on_reset(&self, hook: OnReset) {
        let _ = self.state.on_reset.set(hook);
    }

    pub fn cursors(&self, id: &str) -> Cursors {
        self.state
            .cursors
            .read()
            .get(id)
            .map(|c| c.current.clone())
            .unwrap_or_default()
    }

    pub fn cursor(&self, id: &str, part: &PartKey) -> Option<CursorOffset> {
        self.state
            .cursors
            .read()
            .get(id)?
            .current
            .get(part)
            .copied()
    }

    /// The current generation of a subscription's cursors (how many resets it had).
    pub fn generation(&self, id: &str) -> u64 {
        self.state
            .cursors
            .read()
            .get(id)
            .map_or(0, |c| c.generation)
    }

    /// Writes cursors of a generation durably, then applies them here. Cursors of a
    /// generation a reset ended change nothing, on any node.
    pub async fn set_cursors(
        &self,
        id: &str,
        generation: u64,
        cursors: &[(PartKey, CursorOffset)],
    ) -> Result<()> {
        let records = cursors
            .iter()
            .map(|(k, o)| {
                (
                    cursor_key(id, generation, k),
                    Some(Bytes::from(o.to_string())),
                )
            })
            .collect();
        self.write_cursor_records(records).await
    }

    /// Resets a subscription's cursors: writes them under the next generation, then
    /// the reset record that makes them current everywhere.
    pub async fn reset_cursors(&self, id: &str, cursors: &[(PartKey, CursorOffset)]) -> Result<()> {
        let generation = self.generation(id) + 1;
        let mut records: Vec<(String, Option<Bytes>)> = cursors
            .iter()
            .map(|(k, o)| {
                (
                    cursor_key(id, generation, k),
                    Some(Bytes::from(o.to_string())),
                )
            })
            .collect();
        records.push((reset_key(id), Some(Bytes::from(generation.to_string()))));
        self.write_cursor_records(records).await
    }

    /// Appends records to the cursors topic, then applies them here in that order.
    async fn write_cursor_records(&self, records: Vec<(String, Option<Bytes>)>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = records
            .iter()
            .map(|(k, v)| match v {
                Some(v) => Record::keyed(Bytes::from(k.clone()), v.clone()),
                None => Record::tombstone(Bytes::from(k.clone())),
            })
            .collect();
        let at = self
            .log
            .append(&topic(CURSORS_TOPIC), PartitionId(0), batch)
            .await?;
        for ((k, v), offset) in records.iter().zip(at.offsets) {
            self.state.apply_cursor_record(k, v.as_deref(), offset);
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
        let generation = self.generation(id);
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
            .map(|k| cursor_key(id, generation, k))
            .chain((generation > 0).then(|| reset_key(id)))
            .map(|k| Record::tombstone(Bytes::from(k)))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_log::{EmbeddedConfig, EmbeddedLog, Log};

    use super::*;

    fn part(p: u32) -> PartKey {
        ("shop.cart".to_string(), p)
    }

    #[test]
    fn cursor_keys_name_their_generation() {
        assert_eq!(
            CursorKey::parse("s1/shop.cart/3"),
            Some(CursorKey::Cursor {
                id: "s1",
                generation: 0,
                part: part(3)
            })
        );
        assert_eq!(
            CursorKey::parse("s1/2/shop.cart/3"),
            Some(CursorKey::Cursor {
                id: "s1",
                generation: 2,
                part: part(3)
            })
        );
        assert_eq!(CursorKey::parse("s1/reset"), Some(CursorKey::Reset("s1")));
        assert_eq!(CursorKey::parse("s1/x/shop.cart/3"), None);
        assert_eq!(CursorKey::parse("s1/shop.cart/p"), None);
        assert_eq!(CursorKey::parse("s1"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_racing_a_reset_never_undoes_it_and_a_replay_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> =
            Arc::new(EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap());
        let store = Store::open(log.clone()).await.unwrap();
        let resets = Arc::new(parking_lot::Mutex::new(Vec::new()));
        store.on_reset(Box::new({
            let resets = resets.clone();
            move |id, g| resets.lock().push((id.to_string(), g))
        }));
        store
            .set_cursors("s1", 0, &[(part(0), CursorOffset::At(40))])
            .await
            .unwrap();
        store
            .reset_cursors("s1", &[(part(0), CursorOffset::Begin)])
            .await
            .unwrap();
        assert_eq!(store.generation("s1"), 1);
        assert_eq!(*resets.lock(), vec![("s1".to_string(), 1)]);
        // A stream opened before the reset commits after it: written, but ignored.
        store
            .set_cursors("s1", 0, &[(part(0), CursorOffset::At(90))])
            .await
            .unwrap();
        assert_eq!(store.cursor("s1", &part(0)), Some(CursorOffset::Begin));
        // A stream of the new generation commits.
        store
            .set_cursors("s1", 1, &[(part(0), CursorOffset::At(5))])
            .await
            .unwrap();
        assert_eq!(store.cursor("s1", &part(0)), Some(CursorOffset::At(5)));
        // Cursors written ahead of a reset whose record never came (a crash) are not
        // current.
        store
            .set_cursors("s1", 2, &[(part(0), CursorOffset::At(1))])
            .await
            .unwrap();
        assert_eq!(store.cursor("s1", &part(0)), Some(CursorOffset::At(5)));
        drop(store);

        let replayed = Store::open(log).await.unwrap();
        assert_eq!(replayed.generation("s1"), 1);
        assert_eq!(replayed.cursor("s1", &part(0)), Some(CursorOffset::At(5)));
    }
}
