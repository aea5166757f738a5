//! Settings of the embedded log (the `[log]` section of sluice.toml).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// When an append is acknowledged.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After the group commit's fdatasync: survives kill -9 and power loss.
    #[default]
    Fsync,
    /// After the write; a background flusher fsyncs every `flush_interval_ms`.
    /// Survives kill -9; a power loss may lose the last interval.
    Interval,
    /// After the write; fsync only when a segment rolls or the log closes.
    /// Survives kill -9 (the page cache keeps the data); a power loss may lose much.
    None,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Fsync => "fsync",
            Durability::Interval => "interval",
            Durability::None => "none",
        })
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "interval" => Ok(Durability::Interval),
            "none" => Ok(Durability::None),
            other => Err(format!(
                "unknown durability {other:?}: expected fsync, interval or none"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    pub durability: Durability,
    /// With `durability = "interval"`: how often dirty partitions are fsynced.
    pub flush_interval_ms: u64,
    /// One sparse index entry per this many bytes of batches.
    pub index_interval_bytes: u32,
    /// The most bytes one group commit writes at once.
    pub max_group_bytes: usize,
    /// Threads that run fdatasyncs, each for one partition at a time (at least 1).
    pub sync_threads: usize,
    /// How often retention and compaction run.
    pub maintenance_interval_ms: u64,
    /// With `durability = "fsync"`: when a group commit of at most 4 KiB reaches the
    /// end of the zeros written ahead in the active segment, this many more bytes of
    /// zeros are written with it. An fdatasync of data written over them does not also
    /// have to write the file's new size, one disk write fewer per sync (0: off).
    pub preallocate_bytes: u64,
    /// With `durability = "fsync"`: the size of each of the two write-ahead files
    /// shared by all partitions. A commit round then takes one fdatasync, of the
    /// write-ahead file, however many partitions it wrote to (0: off; each partition
    /// fsyncs its own segment).
    pub wal_bytes: u64,
    /// Group commits larger than this skip the write-ahead file and fsync their own
    /// segment: for bulk writes the write-ahead file would double the bytes written.
    pub wal_max_group_bytes: u64,
    /// The wal is used by writer passes over at least this many partitions (at least
    /// 1). With 2, a pass over one partition syncs its segment and does not write its
    /// bytes twice: better for one busy partition alone, worse for several (passes
    /// then alternate between the two ways; BENCHMARKS.md, "The write-ahead file").
    pub wal_min_partitions: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            durability: Durability::Fsync,
            flush_interval_ms: 1000,
            index_interval_bytes: 4096,
            max_group_bytes: 16 << 20,
            sync_threads: 4,
            maintenance_interval_ms: 30_000,
            preallocate_bytes: 256 << 10,
            wal_bytes: 16 << 20,
            wal_max_group_bytes: 256 << 10,
            wal_min_partitions: 1,
        }
    }
}
