//! Settings of the bus (the `[bus]` section of sluice.toml).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// The largest event accepted, in bytes as sent (Nakadi: 999,000).
    pub max_event_bytes: usize,
    /// The largest publish request body accepted, in bytes after decompression.
    pub max_batch_bytes: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            max_event_bytes: 1_000_000,
            max_batch_bytes: 50_000_000,
        }
    }
}
