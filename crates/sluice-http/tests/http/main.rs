//! Black-box HTTP tests: a real server on 127.0.0.1:0 over a real data dir, driven by
//! an HTTP client, one binary.

mod compaction;
mod event_types;
mod evolution;
mod lowlevel;
mod nakadion;
mod partitions;
mod publishing;
mod streams;
mod subscriptions;
mod views;
mod views_state;

mod harness;

pub use harness::*;

/// These scenarios run on the embedded log (`tests/http_on_kafka` runs them on Kafka).
pub const STORAGE: Storage = Storage::Embedded;
