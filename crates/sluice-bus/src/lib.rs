//! The event bus: the event type registry (kept in the log) and publishing. HTTP-free:
//! `sluice-http` maps its calls and errors onto Nakadi's API.

mod config;
pub mod cursor;
mod dedup;
mod error;
pub mod follow;
mod publish;
pub mod reading;
pub mod registry;
mod schemas;
pub mod subscriptions;
mod tombstones;

use std::collections::HashMap;
use std::sync::Arc;

use sluice_log::Log;
use sluice_schema::EventType;

pub use config::BusConfig;
pub use cursor::CursorOffset;
pub use error::{BusError, Result};
pub use follow::{Follower, key_of};
pub use publish::{ItemOutcome, ItemStatus, Published, Publisher, Written};
pub use registry::{Registered, Registry, replay};
pub use schemas::Compatibility;
pub use subscriptions::Subscriptions;

/// The bounds of one partition, as cursors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    /// The oldest event still available.
    pub oldest: CursorOffset,
    /// The newest event, or `BEGIN` when the partition never had one.
    pub newest: CursorOffset,
    /// The log offset the next event gets.
    pub latest: u64,
}

impl PartitionInfo {
    /// Events after `consumed` (Nakadi's `unconsumed_events`; counts before compaction).
    pub fn unconsumed_after(&self, consumed: CursorOffset) -> u64 {
        let first_unconsumed = match consumed {
            CursorOffset::Begin => match self.oldest {
                CursorOffset::At(o) => o,
                CursorOffset::Begin => 0,
            },
            CursorOffset::At(o) => o + 1,
        };
        self.latest.saturating_sub(first_unconsumed)
    }
}

/// Seconds since the event at `offset` was appended (Nakadi's consumer time lag: the
/// age of the oldest event not consumed); 0 when there is none there.
pub async fn event_age_seconds(
    log: &dyn Log,
    topic: &sluice_log::TopicName,
    partition: u32,
    offset: u64,
) -> Result<u64> {
    let now_ms = sluice_log::Timestamp::now().0;
    let request = sluice_log::FetchRequest::new(sluice_log::Offset(offset)).max_records(1);
    let f = log
        .fetch(topic, sluice_log::PartitionId(partition), request)
        .await?;
    Ok(f.records
        .first()
        .map_or(0, |r| ((now_ms - r.timestamp.0).max(0) / 1000) as u64))
}

/// The bounds of every partition of a registered event type, from the log.
pub(crate) async fn partition_infos(
    log: &dyn Log,
    reg: &registry::Registered,
) -> Result<Vec<PartitionInfo>> {
    let mut out = Vec::new();
    for p in 0..reg.partitions() {
        let o = log.offsets(&reg.topic, sluice_log::PartitionId(p)).await?;
        out.push(PartitionInfo {
            partition: p,
            oldest: CursorOffset::At(o.earliest.0),
            newest: CursorOffset::newest(o.earliest.0, o.latest.0),
            latest: o.latest.0,
        });
    }
    Ok(out)
}

/// The bus over one log.
#[derive(Debug)]
pub struct Bus {
    log: Arc<dyn Log>,
    registry: Registry,
    subscriptions: Subscriptions,
    config: BusConfig,
    /// Per event type, its idempotency window once loaded.
    windows: parking_lot::Mutex<HashMap<String, WindowSlot>>,
}

/// Loaded once (from the log's tail), then read without waiting: a lock held across the
/// load would queue every request behind the one holding it.
type WindowSlot = Arc<tokio::sync::OnceCell<Arc<dedup::EidWindow>>>;

impl Bus {
    /// Opens the bus: replays the registry from the log.
    pub async fn open(log: Arc<dyn Log>, config: BusConfig) -> Result<Bus> {
        let registry = Registry::open(log.clone()).await?;
        let subscriptions = Subscriptions::open(log.clone(), config.max_commit_timeout_sec).await?;
        Ok(Bus {
            log,
            registry,
            subscriptions,
            config,
            windows: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// Before the process stops: on a shared log, hands this node's subscription
    /// streams over to the other nodes at once.
    pub async fn shutdown(&self) {
        self.subscriptions.shutdown().await;
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    pub async fn create_event_type(&self, et: EventType) -> Result<EventType> {
        let created = self.registry.create(et).await?;
        self.windows.lock().remove(&created.name);
        Ok(created)
    }

    pub async fn update_event_type(&self, name: &str, et: EventType) -> Result<EventType> {
        self.registry.update(name, et).await
    }

    /// Deletes an event type, unless subscriptions read it (Nakadi: deleting one under
    /// a live subscription silently broke it).
    pub async fn delete_event_type(&self, name: &str) -> Result<()> {
        let readers = self.subscriptions.reading(name);
        if !readers.is_empty() {
            return Err(BusError::Conflict(format!(
                "event type {name} is read by subscriptions {}; delete them first",
                readers.join(", ")
            )));
        }
        self.registry.delete(name).await?;
        self.windows.lock().remove(name);
        Ok(())
    }

    pub fn event_type(&self, name: &str) -> Result<EventType> {
        Ok(self.registry.require(name)?.event_type().clone())
    }

    pub fn event_types(&self) -> Vec<EventType> {
        self.registry.list()
    }

    /// The bounds of every partition of an event type.
    pub async fn partitions(&self, name: &str) -> Result<Vec<PartitionInfo>> {
        partition_infos(&*self.log, &*self.registry.require(name)?).await
    }

    /// Grows an event type to `count` partitions (never shrinks).
    pub async fn set_partition_count(&self, name: &str, count: u32) -> Result<()> {
        self.registry.set_partition_count(name, count).await
    }
}
