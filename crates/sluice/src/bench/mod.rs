//! `sluice bench ...`: benchmarks as commands. Each prints progress to stderr and one
//! JSON object as the last line of stdout, with the physical limit measured in the
//! same run so that BENCHMARKS.md can state a ratio.

pub mod consume;
mod cpus;
pub mod freshness;
pub mod idle;
pub mod latency;
pub mod log;
pub mod lookups;
mod measure;
pub mod publish;
pub mod reopen;
pub(crate) mod stream_client;
pub mod view_apply;
pub mod views;
