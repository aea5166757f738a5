//! Sluice's schema layer: event types, their effective JSON Schemas, and turning a
//! published event into a validated, enriched, partitioned record. No I/O.

pub mod compiled;
pub mod effective;
pub mod event_type;
pub mod evolution;
mod splice;
pub mod time;

pub use compiled::{CompiledType, Enrichment, ItemError, Prepared, Step};
pub use effective::SchemaProblems;
pub use event_type::{
    Category, CleanupPolicy, CompatibilityMode, EventType, PartitionStrategy, valid_name,
};
pub use splice::{EventText, split_array};
