//! Where subscriptions and their committed cursors live: two internal compacted topics,
//! replayed on start, like the event type registry.
//!
//! - `__sluice_subscriptions`: key = subscription id, value = the definition as JSON,
//!   a tombstone on delete;
//! - `__sluice_cursors`: key = `{id}/{event type}/{partition}`, value = the committed
//!   cursor offset as text (`BEGIN` or `001-0001-...`).
//!
//! Creating a subscription writes its initial cursors first and its definition last
//! (the commit point): cursors of a subscription that does not exist are ignored on
//! replay, so a crash between the two leaves nothing half-made.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use sluice_log::{Log, PartitionId, Record, TopicName};

use super::model::Subscription;
use crate::cursor::CursorOffset;
use crate::error::{BusError, Result};
use crate::registry::replay;

pub const SUBSCRIPTIONS_TOPIC: &str = "__sluice_subscriptions";
pub const CURSORS_TOPIC: &str = "__sluice_cursors";

/// One partition of one event type.
pub type PartKey = (String, u32);

/// Committed cursors of one subscription.
pub type Cursors = BTreeMap<PartKey, CursorOffset>;

#[derive(Debug)]
pub(crate) struct Store {
    log: Arc<dyn Log>,
    subs: RwLock<BTreeMap<String, Arc<Subscription>>>,
    cursors: RwLock<HashMap<String, Cursors>>,
}

fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("a valid internal topic name")
}

fn cursor_key(id: &str, (et, p): &PartKey) -> String {
    format!("{id}/{et}/{p}")
}

impl Store {
    pub async fn open(log: Arc<dyn Log>) -> Result<Store> {
        let mut subs = BTreeMap::new();
        for (id, value) in replay(&log, &topic(SUBSCRIPTIONS_TOPIC)).await? {
            let Some(v) = value else { continue };
            let s: Subscription = serde_json::from_slice(&v)
                .map_err(|e| BusError::Metadata(format!("subscription {id}: {e}")))?;
            subs.insert(id, Arc::new(s));
        }
        let mut cursors: HashMap<String, Cursors> = HashMap::new();
        for (key, value) in replay(&log, &topic(CURSORS_TOPIC)).await? {
            let mut parts = key.rsplitn(3, '/');
            let (Some(p), Some(et), Some(id), Some(v)) =
                (parts.next(), parts.next(), parts.next(), value)
            else {
                continue;
            };
            let (Ok(p), Some(offset)) = (
                p.parse::<u32>(),
                std::str::from_utf8(&v).ok().and_then(CursorOffset::parse),
            ) else {
                return Err(BusError::Metadata(format!("cursor {key}: unreadable")));
            };
            if subs.contains_key(id) {
                cursors
                    .entry(id.to_string())
                    .or_default()
                    .insert((et.to_string(), p), offset);
            }
        }
        Ok(Store {
            log,
            subs: RwLock::new(subs),
            cursors: RwLock::new(cursors),
        })
    }

    pub fn get(&self, id: &str) -> Option<Arc<Subscription>> {
        self.subs.read().get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Subscription>> {
        self.subs.read().values().cloned().collect()
    }

    /// The subscription with the same key as `s`, if any.
    pub fn find(&self, s: &Subscription) -> Option<Arc<Subscription>> {
        let key = s.key();
        self.subs.read().values().find(|x| x.key() == key).cloned()
    }

    pub fn cursors(&self, id: &str) -> Cursors {
        self.cursors.read().get(id).cloned().unwrap_or_default()
    }

    pub fn cursor(&self, id: &str, part: &PartKey) -> Option<CursorOffset> {
        self.cursors.read().get(id)?.get(part).copied()
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
        self.log
            .append(&topic(CURSORS_TOPIC), PartitionId(0), records)
            .await?;
        let mut all = self.cursors.write();
        let mine = all.entry(id.to_string()).or_default();
        for (k, o) in cursors {
            mine.insert(k.clone(), *o);
        }
        Ok(())
    }

    /// Writes a definition (its cursors must be written before, on create).
    pub async fn put(&self, s: Subscription) -> Result<Arc<Subscription>> {
        let value = serde_json::to_vec(&s).map_err(|e| BusError::Metadata(e.to_string()))?;
        self.log
            .append(
                &topic(SUBSCRIPTIONS_TOPIC),
                PartitionId(0),
                vec![Record::keyed(Bytes::from(s.id.clone()), Bytes::from(value))],
            )
            .await?;
        let s = Arc::new(s);
        self.subs.write().insert(s.id.clone(), s.clone());
        Ok(s)
    }

    /// Deletes a definition, then its cursors.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.log
            .append(
                &topic(SUBSCRIPTIONS_TOPIC),
                PartitionId(0),
                vec![Record::tombstone(Bytes::from(id.to_string()))],
            )
            .await?;
        self.subs.write().remove(id);
        let gone = self.cursors.write().remove(id).unwrap_or_default();
        let tombstones: Vec<Record> = gone
            .keys()
            .map(|k| Record::tombstone(Bytes::from(cursor_key(id, k))))
            .collect();
        if !tombstones.is_empty() {
            // Best effort: cursors of a deleted subscription are ignored on replay anyway.
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
