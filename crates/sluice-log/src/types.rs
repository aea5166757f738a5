//! The nouns of the log: offsets, partitions, topics, records and topic configuration.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::LogError;

/// A position in one partition. Strictly increasing per partition, but NOT dense:
/// compaction (and Kafka's transaction markers) leave gaps, so never compute
/// "the next offset" as `offset + 1` above the `Log` trait.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition number within a topic, `0..partitions`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Milliseconds since the Unix epoch, as Kafka counts them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// A validated topic name: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or `..`
/// (Kafka's rule, so every name is valid on both backends and as a directory name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

impl TopicName {
    pub const MAX_LEN: usize = 249;

    pub fn new(name: impl Into<String>) -> Result<TopicName, LogError> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > Self::MAX_LEN {
            Some("it is longer than 249 characters")
        } else if name == "." || name == ".." {
            Some("`.` and `..` are reserved")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(LogError::InvalidTopicName { name, reason }),
            None => Ok(TopicName(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicName {
    type Error = LogError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TopicName::new(s)
    }
}

impl From<TopicName> for String {
    fn from(t: TopicName) -> String {
        t.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record header: a string key and a byte value, as in Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Bytes,
}

/// A record to append. A `None` timestamp is set to the append time.
/// A `None` value on a compacted topic is a tombstone: it deletes its key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    pub timestamp: Option<Timestamp>,
}

impl Record {
    /// A keyless record with a value and no headers.
    pub fn value(value: impl Into<Bytes>) -> Record {
        Record {
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A keyed record with a value.
    pub fn keyed(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Record {
        Record {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A tombstone for `key`.
    pub fn tombstone(key: impl Into<Bytes>) -> Record {
        Record {
            key: Some(key.into()),
            ..Record::default()
        }
    }
}

/// A record as read back from a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: Offset,
    pub timestamp: Timestamp,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// What happens to old data of a topic (Kafka's `cleanup.policy`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    /// Whole segments are deleted by time and size retention.
    #[default]
    Delete,
    /// Only the latest record per key is kept; tombstones delete keys.
    Compact,
    /// Compaction, and retention on top of it.
    CompactAndDelete,
}

impl CleanupPolicy {
    pub fn compacts(self) -> bool {
        matches!(
            self,
            CleanupPolicy::Compact | CleanupPolicy::CompactAndDelete
        )
    }

    pub fn deletes(self) -> bool {
        matches!(
            self,
            CleanupPolicy::Delete | CleanupPolicy::CompactAndDelete
        )
    }
}

/// Per-topic configuration. Sizes and durations use Kafka's units and meanings:
/// `retention_bytes` is per partition; `None` means unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    pub partitions: u32,
    pub cleanup_policy: CleanupPolicy,
    /// Delete segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while a partition is larger than this.
    pub retention_bytes: Option<u64>,
    /// Roll to a new segment when the active one would grow past this.
    pub segment_bytes: u64,
    /// Roll to a new segment when the active one's first record is older than this.
    pub segment_ms: Option<u64>,
    /// How long compaction keeps a tombstone after it was cleaned once,
    /// so that slow readers still see the delete.
    pub delete_retention_ms: u64,
}

impl TopicConfig {
    pub const MIN_SEGMENT_BYTES: u64 = 1024;
    /// Positions in a segment are u32 in the index.
    pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;
    pub const MAX_PARTITIONS: u32 = 10_000;

    pub fn with_partitions(partitions: u32) -> TopicConfig {
        TopicConfig {
            partitions,
            ..TopicConfig::default()
        }
    }

    pub fn validate(&self) -> Result<(), LogError> {
        if self.partitions == 0 || self.partitions > Self::MAX_PARTITIONS {
            return Err(LogError::InvalidConfig {
                field: "partitions",
                reason: format!(
                    "must be 1..={}, got {}",
                    Self::MAX_PARTITIONS,
                    self.partitions
                ),
            });
        }
        if !(Self::MIN_SEGMENT_BYTES..=Self::MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(LogError::InvalidConfig {
                field: "segment_bytes",
                reason: format!(
                    "must be {}..={}, got {}",
                    Self::MIN_SEGMENT_BYTES,
                    Self::MAX_SEGMENT_BYTES,
                    self.segment_bytes
                ),
            });
        }
        if self.segment_ms == Some(0) {
            return Err(LogError::InvalidConfig {
                field: "segment_ms",
                reason: "must be positive".into(),
            });
        }
        Ok(())
    }
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            cleanup_policy: CleanupPolicy::Delete,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            segment_bytes: 256 * 1024 * 1024,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rule() {
        for ok in ["orders", "shop.price_changed-v2", "a", &"x".repeat(249)] {
            assert!(TopicName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "ä", "a b", &"x".repeat(250)] {
            assert!(TopicName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_validation_rejects_nonsense() {
        assert!(TopicConfig::default().validate().is_ok());
        assert!(TopicConfig::with_partitions(0).validate().is_err());
        let tiny = TopicConfig {
            segment_bytes: 10,
            ..TopicConfig::default()
        };
        assert!(tiny.validate().is_err());
    }
}
