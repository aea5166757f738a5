//! The black-box HTTP scenarios of `tests/http`, unchanged, on Kafka: each test's
//! server runs on a Tansu broker of its own (`sluice_kafka::testing::Broker`); and
//! those only Kafka has, with two nodes on one broker (`nodes`).

#[path = "../http/compaction.rs"]
mod compaction;
#[path = "../http/event_types.rs"]
mod event_types;
#[path = "../http/evolution.rs"]
mod evolution;
#[path = "../http/harness.rs"]
mod harness;
#[path = "../http/lowlevel.rs"]
mod lowlevel;
#[path = "../http/nakadion.rs"]
mod nakadion;
mod nodes;
#[path = "../http/partitions.rs"]
mod partitions;
#[path = "../http/publishing.rs"]
mod publishing;
#[path = "../http/streams.rs"]
mod streams;
#[path = "../http/subscriptions.rs"]
mod subscriptions;
#[path = "../http/views.rs"]
mod views;
#[path = "../http/views_state.rs"]
mod views_state;

pub use harness::*;

pub const STORAGE: Storage = Storage::Kafka;
