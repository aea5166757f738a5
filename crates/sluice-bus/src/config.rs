//! Settings of the bus (the `[bus]` section of sluice.toml).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// The largest event accepted, in bytes as sent (Nakadi: 999,000).
    pub max_event_bytes: usize,
    /// The largest publish request body accepted, in bytes after decompression.
    pub max_batch_bytes: usize,
    /// An event whose metadata.eid was published to the same event type within this
    /// many milliseconds is answered as submitted and not written again. 0 turns it off.
    pub idempotency_window_ms: u64,
    /// The most eids remembered per event type; beyond it the oldest are forgotten early.
    pub idempotency_max_eids: usize,
    /// The longest commit timeout a subscription stream may ask for, in seconds
    /// (Nakadi: 60, fixed). Slow consumers can be allowed more here.
    pub max_commit_timeout_sec: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            max_event_bytes: 1_000_000,
            max_batch_bytes: 50_000_000,
            idempotency_window_ms: 300_000,
            idempotency_max_eids: 1_000_000,
            max_commit_timeout_sec: 60,
        }
    }
}
