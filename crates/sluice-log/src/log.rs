//! The `Log` trait: what Sluice needs from a partitioned, durable log, shaped so that
//! both the embedded log and Apache Kafka implement it.
//!
//! The shape follows Kafka's own requests: `append` is a Produce of one batch to one
//! partition, `fetch` is a Fetch with `max_wait` (long-poll), `offsets` and
//! `offset_for_timestamp` are ListOffsets, and topic config mirrors Kafka's
//! `cleanup.policy`, `retention.ms`, `retention.bytes`, `segment.bytes`, `segment.ms`.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::types::{Offset, PartitionId, Record, StoredRecord, Timestamp, TopicConfig, TopicName};

/// A topic and its configuration, as listed by the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: TopicName,
    pub config: TopicConfig,
}

/// The offsets assigned to an appended batch, in the order of its records.
/// A Kafka producer may see them spread out, so they are listed, not ranged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub offsets: Vec<Offset>,
}

impl Appended {
    pub fn last(&self) -> Option<Offset> {
        self.offsets.last().copied()
    }
}

/// What to read from one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// Read records at or after this offset (the first one may be later: gaps).
    pub from: Offset,
    /// Stop after this many records.
    pub max_records: usize,
    /// Stop before this many bytes of record data; at least one record is returned
    /// when one is available, however large.
    pub max_bytes: usize,
    /// When no record is available at `from`, wait up to this long for one.
    pub max_wait: Duration,
}

impl FetchRequest {
    pub fn new(from: Offset) -> FetchRequest {
        FetchRequest {
            from,
            max_records: 1000,
            max_bytes: 1 << 20,
            max_wait: Duration::ZERO,
        }
    }

    pub fn max_records(mut self, n: usize) -> Self {
        self.max_records = n;
        self
    }

    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }

    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }
}

/// Records read from one partition and where to continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub records: Vec<StoredRecord>,
    /// The offset to fetch from next: after the last record returned, or `from`
    /// unchanged when nothing was returned.
    pub next: Offset,
    /// The partition's offsets at the time of the read.
    pub offsets: PartitionOffsets,
}

/// The bounds of a partition, as Kafka's ListOffsets reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The first offset that can still be read (records below it were deleted by
    /// retention). There may be no record exactly at it (compaction).
    pub earliest: Offset,
    /// The offset the next appended record gets: one past the last readable record
    /// (Kafka's high watermark). `earliest == latest` means empty.
    pub latest: Offset,
}

/// A durable, partitioned, append-only log.
///
/// Contract (checked by `testing::contract` against every implementation):
/// - offsets are strictly increasing per partition and may have gaps;
/// - `append` returns only when the records are durable according to the log's
///   durability setting, and then they are visible to `fetch`;
/// - records of one `append` are contiguous and in order in their partition;
/// - `fetch` from `latest` with a `max_wait` returns as soon as a record arrives;
/// - reading below `earliest` or above `latest` is `LogError::OffsetOutOfRange`.
#[async_trait]
pub trait Log: Send + Sync + std::fmt::Debug + 'static {
    async fn create_topic(&self, name: &TopicName, config: TopicConfig) -> Result<()>;
    async fn delete_topic(&self, name: &TopicName) -> Result<()>;
    async fn list_topics(&self) -> Result<Vec<TopicInfo>>;
    async fn topic(&self, name: &TopicName) -> Result<TopicInfo>;
    /// Changes retention, cleanup policy and segment settings. Partition count
    /// changes go through `add_partitions`.
    async fn update_topic(&self, name: &TopicName, config: TopicConfig) -> Result<()>;
    /// Grows a topic to `partitions` partitions (never shrinks, like Kafka).
    async fn add_partitions(&self, name: &TopicName, partitions: u32) -> Result<()>;

    async fn append(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        records: Vec<Record>,
    ) -> Result<Appended>;
    async fn fetch(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        request: FetchRequest,
    ) -> Result<Fetched>;
    async fn offsets(&self, topic: &TopicName, partition: PartitionId) -> Result<PartitionOffsets>;
    /// The earliest offset whose record has a timestamp at or after `at`, or `None`
    /// when every record is older.
    async fn offset_for_timestamp(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        at: Timestamp,
    ) -> Result<Option<Offset>>;

    /// Makes everything appended so far durable, whatever the durability setting.
    async fn flush(&self) -> Result<()>;

    /// Whether other processes may use this log at the same time (Kafka: other
    /// Sluice nodes); an embedded log belongs to one process (its dir is locked).
    fn shared(&self) -> bool {
        false
    }
}
