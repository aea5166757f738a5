//! Typed errors of the log layer.

use std::io;
use std::path::PathBuf;

/// Every way a `Log` call can fail. Each variant names what was wrong, so the HTTP edge
/// can map it to a stable Problem type and a user can act on the message.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("topic `{0}` does not exist")]
    TopicNotFound(String),
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("partition {partition} of topic `{topic}` does not exist")]
    PartitionNotFound { topic: String, partition: u32 },
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("invalid topic config `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error(
        "offset {requested} is out of range for `{topic}` partition {partition}: \
         available offsets are {earliest}..{latest}"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        requested: u64,
        earliest: u64,
        latest: u64,
    },
    #[error("record rejected: {reason}")]
    InvalidRecord { reason: String },
    #[error(
        "partition {partition} of `{topic}` refuses writes after a failed write or fsync \
         (its state on disk is uncertain); reopen the log to recover"
    )]
    Poisoned { topic: String, partition: u32 },
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("data dir {path} is in use by another process (its lock is held)")]
    Locked { path: PathBuf },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the log is closed")]
    Closed,
    /// A remote log (Kafka) refused or could not be reached; `reason` is its own words.
    #[error("broker: {reason}")]
    Broker { reason: String },
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }

    /// A copy for a second recipient (one failed group commit answers many appenders).
    /// `io::Error` is not `Clone`: the copy keeps its kind and message.
    pub fn duplicate(&self) -> LogError {
        use LogError::*;
        match self {
            TopicNotFound(t) => TopicNotFound(t.clone()),
            TopicExists(t) => TopicExists(t.clone()),
            PartitionNotFound { topic, partition } => PartitionNotFound {
                topic: topic.clone(),
                partition: *partition,
            },
            InvalidTopicName { name, reason } => InvalidTopicName {
                name: name.clone(),
                reason,
            },
            InvalidConfig { field, reason } => InvalidConfig {
                field,
                reason: reason.clone(),
            },
            OffsetOutOfRange {
                topic,
                partition,
                requested,
                earliest,
                latest,
            } => OffsetOutOfRange {
                topic: topic.clone(),
                partition: *partition,
                requested: *requested,
                earliest: *earliest,
                latest: *latest,
            },
            InvalidRecord { reason } => InvalidRecord {
                reason: reason.clone(),
            },
            Poisoned { topic, partition } => Poisoned {
                topic: topic.clone(),
                partition: *partition,
            },
            Corrupt {
                path,
                position,
                reason,
            } => Corrupt {
                path: path.clone(),
                position: *position,
                reason: reason.clone(),
            },
            Locked { path } => Locked { path: path.clone() },
            Io { path, source } => Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Closed => Closed,
            Broker { reason } => Broker {
                reason: reason.clone(),
            },
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
