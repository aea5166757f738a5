//! The event type registry. Its truth is the internal compacted topic
//! `__sluice_event_types` (key: event type name, value: the definition as JSON, a
//! tombstone on delete), replayed on start; the map in memory is a cache of it.
//!
//! Order of writes, so that a crash never leaves a definition without its topic:
//! create the data topic, then append the definition (the commit point). A topic that
//! no definition references is an orphan of an interrupted create or delete and is
//! removed on start.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use sluice_log::{
    CleanupPolicy as LogCleanup, FetchRequest, Log, LogError, PartitionId, Record, TopicConfig,
    TopicName,
};
use sluice_schema::{CleanupPolicy, CompiledType, EventType, time};

use crate::error::{BusError, Result};

/// The internal topic holding event type definitions.
pub const EVENT_TYPES_TOPIC: &str = "__sluice_event_types";
/// Internal topics start with this; event type names cannot (they start with a letter).
pub const INTERNAL_PREFIX: &str = "__";

/// An event type ready for publishing.
#[derive(Debug)]
pub struct Registered {
    pub compiled: CompiledType,
    pub topic: TopicName,
}

impl Registered {
    pub fn event_type(&self) -> &EventType {
        &self.compiled.event_type
    }

    pub fn partitions(&self) -> u32 {
        self.compiled.event_type.requested_partitions()
    }
}

#[derive(Debug)]
pub struct Registry {
    log: Arc<dyn Log>,
    types: RwLock<BTreeMap<String, Arc<Registered>>>,
    /// Serialises definition changes.
    admin: tokio::sync::Mutex<()>,
}

fn internal_topic() -> TopicName {
    TopicName::new(EVENT_TYPES_TOPIC).expect("a valid internal topic name")
}

fn topic_config(et: &EventType) -> TopicConfig {
    let (cleanup_policy, retention_ms) = match et.cleanup_policy {
        CleanupPolicy::Delete => (LogCleanup::Delete, Some(et.retention_ms())),
        CleanupPolicy::Compact => (LogCleanup::Compact, None),
        CleanupPolicy::CompactAndDelete => (LogCleanup::CompactAndDelete, Some(et.retention_ms())),
    };
    TopicConfig {
        partitions: et.requested_partitions(),
        cleanup_policy,
        retention_ms,
        ..TopicConfig::default()
    }
}

fn topic_of(name: &str) -> Result<TopicName> {
    TopicName::new(name).map_err(|e| BusError::Unprocessable(vec![e.to_string()]))
}

impl Registry {
    /// Replays the registry from the log, repairing what an interrupted change left.
    pub async fn open(log: Arc<dyn Log>) -> Result<Registry> {
        let internal = internal_topic();
        match log
            .create_topic(
                &internal,
                TopicConfig {
                    cleanup_policy: LogCleanup::Compact,
                    retention_ms: None,
                    segment_bytes: 16 << 20,
                    ..TopicConfig::with_partitions(1)
                },
            )
            .await
        {
            Ok(()) | Err(LogError::TopicExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let mut latest: BTreeMap<String, Option<EventType>> = BTreeMap::new();
        let mut from = log.offsets(&internal, PartitionId(0)).await?.earliest;
        loop {
            let f = log
                .fetch(&internal, PartitionId(0), FetchRequest::new(from))
                .await?;
            if f.records.is_empty() {
                break;
            }
            for r in f.records {
                let key = r
                    .key
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
                let value = match r.value {
                    Some(v) => Some(serde_json::from_slice::<EventType>(&v).map_err(|e| {
                        BusError::Metadata(format!("event type record at offset {}: {e}", r.offset))
                    })?),
                    None => None,
                };
                latest.insert(key, value);
            }
            from = f.next;
        }
        let mut types = BTreeMap::new();
        for (name, et) in latest {
            let Some(et) = et else { continue };
            let topic = topic_of(&name)?;
            if let Err(LogError::TopicNotFound(_)) = log.topic(&topic).await {
                tracing::warn!(event_type = %name, "recreating the missing topic of an event type");
                log.create_topic(&topic, topic_config(&et)).await?;
            }
            match CompiledType::compile(et) {
                Ok(compiled) => {
                    types.insert(name, Arc::new(Registered { compiled, topic }));
                }
                Err(e) => {
                    tracing::error!(event_type = %name, error = %e, "stored event type does not compile")
                }
            }
        }
        for info in log.list_topics().await? {
            let name = info.name.as_str();
            if !name.starts_with(INTERNAL_PREFIX) && !types.contains_key(name) {
                tracing::warn!(
                    topic = name,
                    "removing a topic that no event type references"
                );
                log.delete_topic(&info.name).await?;
            }
        }
        Ok(Registry {
            log,
            types: RwLock::new(types),
            admin: tokio::sync::Mutex::new(()),
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Registered>> {
        self.types.read().get(name).cloned()
    }

    pub fn require(&self, name: &str) -> Result<Arc<Registered>> {
        self.get(name)
            .ok_or_else(|| BusError::EventTypeNotFound(name.to_string()))
    }

    pub fn list(&self) -> Vec<EventType> {
        self.types
            .read()
            .values()
            .map(|r| r.event_type().clone())
            .collect()
    }

    async fn persist(&self, name: &str, et: Option<&EventType>) -> Result<()> {
        let value = et
            .map(|et| serde_json::to_vec(et).map(Bytes::from))
            .transpose()
            .map_err(|e| BusError::Metadata(e.to_string()))?;
        let record = Record {
            key: Some(Bytes::copy_from_slice(name.as_bytes())),
            value,
            ..Record::default()
        };
        self.log
            .append(&internal_topic(), PartitionId(0), vec![record])
            .await?;
        Ok(())
    }

    /// Creates an event type; returns it as stored (version, timestamps, partitions set).
    pub async fn create(&self, mut et: EventType) -> Result<EventType> {
        let problems = et.problems();
        if !problems.is_empty() {
            return Err(BusError::Unprocessable(problems));
        }
        let topic = topic_of(&et.name)?;
        let now = time::now_rfc3339();
        et.schema.version = "1.0.0".into();
        et.schema.created_at.clone_from(&now);
        et.created_at.clone_from(&now);
        et.updated_at = now;
        et.partition_count = Some(et.requested_partitions());
        let compiled =
            CompiledType::compile(et.clone()).map_err(|p| BusError::Unprocessable(p.0))?;
        let _admin = self.admin.lock().await;
        if self.get(&et.name).is_some() {
            return Err(BusError::EventTypeExists(et.name));
        }
        match self.log.create_topic(&topic, topic_config(&et)).await {
            Ok(()) => {}
            Err(LogError::TopicExists(_)) => {
                // An orphan of an interrupted create or delete: start it afresh.
                self.log.delete_topic(&topic).await?;
                self.log.create_topic(&topic, topic_config(&et)).await?;
            }
            Err(e) => return Err(e.into()),
        }
        self.persist(&et.name, Some(&et)).await?;
        self.types
            .write()
            .insert(et.name.clone(), Arc::new(Registered { compiled, topic }));
        Ok(et)
    }

    /// Replaces a definition. Immutable fields must not change; see `check_update`.
    pub async fn update(&self, name: &str, mut et: EventType) -> Result<EventType> {
        let _admin = self.admin.lock().await;
        let current = self.require(name)?;
        let old = current.event_type();
        let mut problems = et.problems();
        problems.extend(check_update(old, &et));
        if !problems.is_empty() {
            return Err(BusError::Unprocessable(problems));
        }
        et.schema.version.clone_from(&old.schema.version);
        et.schema.created_at.clone_from(&old.schema.created_at);
        et.created_at.clone_from(&old.created_at);
        et.updated_at = time::now_rfc3339();
        et.partition_count = old.partition_count;
        let compiled =
            CompiledType::compile(et.clone()).map_err(|p| BusError::Unprocessable(p.0))?;
        let config = topic_config(&et);
        self.log.update_topic(&current.topic, config).await?;
        self.persist(name, Some(&et)).await?;
        let topic = current.topic.clone();
        self.types
            .write()
            .insert(name.to_string(), Arc::new(Registered { compiled, topic }));
        Ok(et)
    }

    /// Grows an event type to `count` partitions. Idempotent; shrinking is refused.
    pub async fn set_partition_count(&self, name: &str, count: u32) -> Result<()> {
        let _admin = self.admin.lock().await;
        let current = self.require(name)?;
        let have = current.partitions();
        if count < have {
            return Err(BusError::Unprocessable(vec![format!(
                "partition_count can only grow: {name} has {have} partitions, {count} asked"
            )]));
        }
        if count > sluice_schema::event_type::MAX_PARTITIONS {
            return Err(BusError::Unprocessable(vec![format!(
                "at most {} partitions, {count} asked",
                sluice_schema::event_type::MAX_PARTITIONS
            )]));
        }
        if count == have {
            return Ok(());
        }
        let mut et = current.event_type().clone();
        et.partition_count = Some(count);
        et.updated_at = time::now_rfc3339();
        let compiled =
            CompiledType::compile(et.clone()).map_err(|p| BusError::Unprocessable(p.0))?;
        self.log.add_partitions(&current.topic, count).await?;
        self.persist(name, Some(&et)).await?;
        let topic = current.topic.clone();
        self.types
            .write()
            .insert(name.to_string(), Arc::new(Registered { compiled, topic }));
        Ok(())
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        let current = self.require(name)?;
        self.persist(name, None).await?;
        self.types.write().remove(name);
        if let Err(e) = self.log.delete_topic(&current.topic).await {
            tracing::warn!(event_type = name, error = %e, "topic not deleted; it is removed on the next start");
        }
        Ok(())
    }
}

/// The rules of changing an event type with PUT (Nakadi's, where they exist).
fn check_update(old: &EventType, new: &EventType) -> Vec<String> {
    let mut out = Vec::new();
    if new.name != old.name {
        out.push(format!(
            "name cannot be changed ({:?} -> {:?})",
            old.name, new.name
        ));
    }
    if new.category != old.category {
        out.push("category cannot be changed".into());
    }
    if new.enrichment_strategies != old.enrichment_strategies {
        out.push("enrichment_strategies cannot be changed".into());
    }
    if new.partition_strategy != old.partition_strategy
        && old.partition_strategy != sluice_schema::PartitionStrategy::Random
    {
        out.push("partition_strategy can only be changed from random".into());
    }
    if new.partition_key_fields != old.partition_key_fields
        && old.partition_strategy == sluice_schema::PartitionStrategy::Hash
    {
        out.push("partition_key_fields of a hash-partitioned event type cannot be changed".into());
    }
    let policy_ok = new.cleanup_policy == old.cleanup_policy
        || (old.cleanup_policy == CleanupPolicy::Delete
            && new.cleanup_policy == CleanupPolicy::CompactAndDelete);
    if !policy_ok {
        out.push("cleanup_policy can only change from delete to compact_and_delete".into());
    }
    if new
        .partition_count
        .is_some_and(|n| Some(n) != old.partition_count)
    {
        out.push("partition_count is changed with PUT /event-types/{name}/partition-count".into());
    }
    if !same_json(&old.schema.schema, &new.schema.schema) {
        out.push(
            "schema changes go through schema evolution, which this version of Sluice does not \
             support yet: keep the schema unchanged"
                .into(),
        );
    }
    out
}

/// Two schema strings are the same schema when they parse to equal JSON.
fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
