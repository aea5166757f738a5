//! The event type registry. Its truth is the internal compacted topic
//! `__sluice_event_types` (key: event type name, value: the definition as JSON, a
//! tombstone on delete), replayed on start and then followed (`follow.rs`); the map in
//! memory is a cache of it, changed only by applying its records, in log order, on
//! every node alike.
//!
//! Order of writes, so that a crash never leaves a definition without its topic:
//! create the data topic, then append the definition (the commit point). A topic that
//! no definition references is an orphan of an interrupted create or delete and is
//! removed on start - at once on a log of this process alone, after a grace period on
//! a shared one (Kafka), where it may be another node's create in progress. Two nodes
//! creating one name race on the data topic: Kafka creates it for one of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use sluice_log::{
    CleanupPolicy as LogCleanup, FetchRequest, Log, LogError, Offset, PartitionId, Record,
    StoredRecord, TopicConfig, TopicName,
};
use sluice_schema::event_type::EventTypeSchema;
use sluice_schema::evolution::{self, Level};
use sluice_schema::{CleanupPolicy, CompatibilityMode, CompiledType, EventType, time};

use crate::error::{BusError, Result};
use crate::follow::{Follower, key_of};

/// How long a topic without a definition is left alone on a shared log before it is
/// removed as an orphan (a create in progress on another node takes well under this).
const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// The internal topic holding event type definitions.
pub const EVENT_TYPES_TOPIC: &str = "__sluice_event_types";
/// The internal topic holding every schema version (key `name/version`).
pub const SCHEMAS_TOPIC: &str = "__sluice_schemas";
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

/// What the registry's topics say, applied record by record.
#[derive(Debug, Default)]
struct State {
    types: RwLock<BTreeMap<String, Arc<Registered>>>,
    /// Every schema version of every event type, oldest first.
    schemas: RwLock<BTreeMap<String, Vec<EventTypeSchema>>>,
}

impl State {
    /// Applies a record of `__sluice_event_types`.
    fn apply_definition(&self, r: &StoredRecord) {
        let Some(name) = r.key.as_deref().map(String::from_utf8_lossy) else {
            return;
        };
        let Some(value) = &r.value else {
            self.types.write().remove(name.as_ref());
            return;
        };
        let et = match serde_json::from_slice::<EventType>(value) {
            Ok(et) => et,
            Err(e) => {
                tracing::error!(event_type = %name, error = %e, "unreadable event type record");
                return;
            }
        };
        if let Some(current) = self.types.read().get(name.as_ref())
            && current.event_type() == &et
        {
            return;
        }
        let topic = match topic_of(&name) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(event_type = %name, error = %e, "event type with a bad name");
                return;
            }
        };
        let mut schemas = self.schemas.write();
        let history = schemas.entry(name.to_string()).or_default();
        if !history.iter().any(|s| s.version == et.schema.version) {
            history.push(et.schema.clone());
            history.sort_by_key(|s| semver(&s.version));
        }
        drop(schemas);
        match CompiledType::compile(et) {
            Ok(compiled) => {
                self.types
                    .write()
                    .insert(name.to_string(), Arc::new(Registered { compiled, topic }));
            }
            Err(e) => {
                tracing::error!(event_type = %name, error = %e, "stored event type does not compile")
            }
        }
    }

    /// Applies a record of `__sluice_schemas` (key `name/version`).
    fn apply_schema(&self, r: &StoredRecord) {
        let key = key_of(r);
        let Some((name, version)) = key.split_once('/') else {
            return;
        };
        let mut schemas = self.schemas.write();
        match &r.value {
            None => {
                if let Some(h) = schemas.get_mut(name) {
                    h.retain(|s| s.version != version);
                    if h.is_empty() {
                        schemas.remove(name);
                    }
                }
            }
            Some(v) => match serde_json::from_slice::<EventTypeSchema>(v) {
                Ok(schema) => {
                    let h = schemas.entry(name.to_string()).or_default();
                    if !h.iter().any(|s| s.version == schema.version) {
                        h.push(schema);
                        h.sort_by_key(|s| semver(&s.version));
                    }
                }
                Err(e) => tracing::error!(schema = %key, error = %e, "unreadable schema record"),
            },
        }
    }
}

#[derive(Debug)]
pub struct Registry {
    log: Arc<dyn Log>,
    state: Arc<State>,
    definitions: Follower,
    schema_versions: Follower,
    /// Serialises definition changes made on this node.
    admin: tokio::sync::Mutex<()>,
}

fn internal_topic() -> TopicName {
    TopicName::new(EVENT_TYPES_TOPIC).expect("a valid internal topic name")
}

fn schemas_topic() -> TopicName {
    TopicName::new(SCHEMAS_TOPIC).expect("a valid internal topic name")
}

pub fn compacted_internal() -> TopicConfig {
    TopicConfig {
        cleanup_policy: LogCleanup::Compact,
        retention_ms: None,
        segment_bytes: 16 << 20,
        ..TopicConfig::with_partitions(1)
    }
}

/// Every live value of a compacted internal topic, by key (replayed from the start),
/// and the offset to follow it from.
pub async fn replay(
    log: &Arc<dyn Log>,
    topic: &TopicName,
) -> Result<(BTreeMap<String, Option<Bytes>>, Offset)> {
    match log.create_topic(topic, compacted_internal()).await {
        Ok(()) | Err(LogError::TopicExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut latest = BTreeMap::new();
    let bounds = log.offsets(topic, PartitionId(0)).await?;
    let mut from = bounds.earliest;
    while from < bounds.latest {
        let request = FetchRequest::new(from).max_wait(std::time::Duration::from_secs(1));
        let f = log.fetch(topic, PartitionId(0), request).await?;
        if f.records.is_empty() && f.next == from {
            break;
        }
        for r in f.records {
            latest.insert(key_of(&r), r.value);
        }
        from = f.next;
    }
    Ok((latest, from))
}

/// A replayed key and value as the record a follower would apply.
fn replayed(key: String, value: Option<Bytes>) -> StoredRecord {
    StoredRecord {
        offset: Offset(0),
        timestamp: sluice_log::Timestamp(0),
        key: Some(Bytes::from(key)),
        value,
        headers: Vec::new(),
    }
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

pub(crate) fn topic_of(name: &str) -> Result<TopicName> {
    TopicName::new(name).map_err(|e| BusError::Unprocessable(vec![e.to_string()]))
}

impl Registry {
    /// Replays the registry from the log, repairing what an interrupted change left,
    /// and follows it from there.
    pub async fn open(log: Arc<dyn Log>) -> Result<Registry> {
        let (definitions, definitions_next) = replay(&log, &internal_topic()).await?;
        let (schemas, schemas_next) = replay(&log, &schemas_topic()).await?;
        let state = Arc::new(State::default());
        for (key, value) in schemas {
            state.apply_schema(&replayed(key, value));
        }
        // Every defined name, including any that fails to compile: its topic and data
        // are kept, never treated as an orphan.
        let mut defined = std::collections::BTreeSet::new();
        for (name, value) in definitions {
            let Some(value) = value else {
                state.schemas.write().remove(&name);
                continue;
            };
            if let Ok(et) = serde_json::from_slice::<EventType>(&value) {
                let topic = topic_of(&name)?;
                if let Err(LogError::TopicNotFound(_)) = log.topic(&topic).await {
                    tracing::warn!(event_type = %name, "recreating the missing topic of an event type");
                    log.create_topic(&topic, topic_config(&et)).await?;
                }
            }
            defined.insert(name.clone());
            state.apply_definition(&replayed(name, Some(value)));
        }
        state
            .schemas
            .write()
            .retain(|name, _| defined.contains(name));
        let orphans: Vec<TopicName> = log
            .list_topics()
            .await?
            .into_iter()
            .map(|info| info.name)
            .filter(|n| !n.as_str().starts_with(INTERNAL_PREFIX) && !defined.contains(n.as_str()))
            .collect();
        let definitions = Follower::spawn(log.clone(), internal_topic(), definitions_next, {
            let state = state.clone();
            move |r| state.apply_definition(r)
        });
        let schema_versions = Follower::spawn(log.clone(), schemas_topic(), schemas_next, {
            let state = state.clone();
            move |r| state.apply_schema(r)
        });
        let registry = Registry {
            log,
            state,
            definitions,
            schema_versions,
            admin: tokio::sync::Mutex::new(()),
        };
        registry.remove_orphans(orphans).await?;
        Ok(registry)
    }

    /// Removes topics no definition references: at once on a log of this process
    /// alone; on a shared log only those still unreferenced after `ORPHAN_GRACE`.
    async fn remove_orphans(&self, orphans: Vec<TopicName>) -> Result<()> {
        if orphans.is_empty() {
            return Ok(());
        }
        if !self.log.shared() {
            for topic in orphans {
                tracing::warn!(%topic, "removing a topic that no event type references");
                self.log.delete_topic(&topic).await?;
            }
            return Ok(());
        }
        let log = self.log.clone();
        let state = Arc::downgrade(&self.state);
        tokio::spawn(async move {
            tokio::time::sleep(ORPHAN_GRACE).await;
            for topic in orphans {
                let Some(state) = state.upgrade() else { return };
                if state.types.read().contains_key(topic.as_str()) {
                    continue;
                }
                tracing::warn!(%topic, "removing a topic that no event type references");
                if let Err(e) = log.delete_topic(&topic).await {
                    tracing::warn!(%topic, error = %e, "orphan topic not removed");
                }
            }
        });
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Registered>> {
        self.state.types.read().get(name).cloned()
    }

    pub fn require(&self, name: &str) -> Result<Arc<Registered>> {
        self.get(name)
            .ok_or_else(|| BusError::EventTypeNotFound(name.to_string()))
    }

    pub fn list(&self) -> Vec<EventType> {
        self.state
            .types
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
        let at = self
            .log
            .append(&internal_topic(), PartitionId(0), vec![record])
            .await?;
        if let Some(offset) = at.last() {
            self.definitions.caught_up(offset).await?;
        }
        Ok(())
    }

    async fn persist_schema(
        &self,
        name: &str,
        schema: Option<&EventTypeSchema>,
        version: &str,
    ) -> Result<()> {
        let value = schema
            .map(|s| serde_json::to_vec(s).map(Bytes::from))
            .transpose()
            .map_err(|e| BusError::Metadata(e.to_string()))?;
        let record = Record {
            key: Some(Bytes::from(format!("{name}/{version}"))),
            value,
            ..Record::default()
        };
        let at = self
            .log
            .append(&schemas_topic(), PartitionId(0), vec![record])
            .await?;
        if let Some(offset) = at.last() {
            self.schema_versions.caught_up(offset).await?;
        }
        Ok(())
    }

    /// Every schema version of an event type, oldest first.
    pub fn schema_versions(&self, name: &str) -> Result<Vec<EventTypeSchema>> {
        self.require(name)?;
        Ok(self
            .state
            .schemas
            .read()
            .get(name)
            .cloned()
            .unwrap_or_default())
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
        drop(compiled);
        let _admin = self.admin.lock().await;
        if self.get(&et.name).is_some() {
            return Err(BusError::EventTypeExists(et.name));
        }
        match self.log.create_topic(&topic, topic_config(&et)).await {
            Ok(()) => {}
            Err(LogError::TopicExists(_)) => {
                // Defined meanwhile by another node, or an orphan of an interrupted
                // create or delete.
                self.definitions.caught_up_to_end().await?;
                if self.get(&et.name).is_some() {
                    return Err(BusError::EventTypeExists(et.name));
                }
                if self.log.shared() {
                    return Err(BusError::Conflict(format!(
                        "a topic named {} exists without a definition: another node may be \
                         creating it, or an interrupted create left it (it is removed a minute \
                         after a node starts); try again later",
                        et.name
                    )));
                }
                // This process alone uses the log: an orphan. Start it afresh.
                self.log.delete_topic(&topic).await?;
                self.log.create_topic(&topic, topic_config(&et)).await?;
            }
            Err(e) => return Err(e.into()),
        }
        self.persist_schema(&et.name, Some(&et.schema), &et.schema.version)
            .await?;
        self.persist(&et.name, Some(&et)).await?;
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
        let (version, level) = evolve_schema(old, &et.schema.schema, et.compatibility_mode)?;
        if level == Level::None {
            et.schema.created_at.clone_from(&old.schema.created_at);
        } else {
            et.schema.created_at = time::now_rfc3339();
        }
        et.schema.version = version;
        et.created_at.clone_from(&old.created_at);
        et.updated_at = time::now_rfc3339();
        et.partition_count = old.partition_count;
        CompiledType::compile(et.clone()).map_err(|p| BusError::Unprocessable(p.0))?;
        let config = topic_config(&et);
        self.log.update_topic(&current.topic, config).await?;
        if et.schema.version != old.schema.version {
            self.persist_schema(name, Some(&et.schema), &et.schema.version)
                .await?;
        }
        self.persist(name, Some(&et)).await?;
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
        CompiledType::compile(et.clone()).map_err(|p| BusError::Unprocessable(p.0))?;
        self.log.add_partitions(&current.topic, count).await?;
        self.persist(name, Some(&et)).await?;
        Ok(())
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        let current = self.require(name)?;
        let versions = self.schema_versions(name)?;
        self.persist(name, None).await?;
        for v in &versions {
            self.persist_schema(name, None, &v.version).await?;
        }
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
    let mode_ok = matches!(
        (old.compatibility_mode, new.compatibility_mode),
        (a, b) if a == b
    ) || matches!(
        (old.compatibility_mode, new.compatibility_mode),
        (CompatibilityMode::None, CompatibilityMode::Forward)
            | (CompatibilityMode::Forward, CompatibilityMode::Compatible)
    );
    if !mode_ok {
        out.push(format!(
            "compatibility_mode can only become stricter, one step at a time (none -> forward -> compatible): \
             {:?} -> {:?} is not allowed",
            old.compatibility_mode, new.compatibility_mode
        ));
    }
    out
}

/// The evolution of `old`'s schema into `new_schema` under `mode`: the new version,
/// or every change the mode forbids.
pub fn evolve_schema(
    old: &EventType,
    new_schema: &str,
    mode: CompatibilityMode,
) -> Result<(String, Level)> {
    let parse = |s: &str, what: &str| {
        serde_json::from_str::<serde_json::Value>(s).map_err(|e| {
            BusError::Unprocessable(vec![format!("{what} schema is not valid JSON: {e}")])
        })
    };
    let before = parse(&old.schema.schema, "the current")?;
    let after = parse(new_schema, "the new")?;
    let e = evolution::evolve(&before, &after, mode);
    if !e.incompatible.is_empty() {
        let mut problems = vec![format!(
            "the schema change is incompatible under compatibility_mode {}:",
            mode_name(mode)
        )];
        problems.extend(e.incompatible.iter().map(ToString::to_string));
        return Err(BusError::Unprocessable(problems));
    }
    Ok((evolution::bump(&old.schema.version, e.level), e.level))
}

pub fn mode_name(mode: CompatibilityMode) -> &'static str {
    match mode {
        CompatibilityMode::Compatible => "compatible",
        CompatibilityMode::Forward => "forward",
        CompatibilityMode::None => "none",
    }
}

/// Two schema strings are the same schema when they parse to equal JSON.
pub fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A semver as a sortable triple.
fn semver(v: &str) -> (u64, u64, u64) {
    let mut p = v.split('.').map(|x| x.parse().unwrap_or(0));
    (
        p.next().unwrap_or(0),
        p.next().unwrap_or(0),
        p.next().unwrap_or(0),
    )
}
