//! Sluice's log layer: the `Log` trait that every storage backend implements, and the
//! embedded, segmented, durable log that is the default backend.
//!
//! Layer rule: this crate does no network I/O, and all of its file I/O goes through
//! `fs::Fs`, so tests can inject faults.

pub mod embedded;
pub mod error;
pub mod format;
pub mod fs;
mod log;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use embedded::{Durability, EmbeddedConfig, EmbeddedLog};
pub use error::{LogError, Result};
pub use log::{Appended, FetchRequest, Fetched, Log, PartitionOffsets, TopicInfo};
pub use types::{
    CleanupPolicy, Header, Offset, PartitionId, Record, StoredRecord, Timestamp, TopicConfig,
    TopicName,
};
