//! Derived state: SQL views over event types, kept incrementally from the log.
//!
//! `sql::compile` turns `CREATE VIEW ... AS SELECT ...` into a `Plan` (`plan.rs`);
//! `View` runs it incrementally (`engine/`, the DBSP model: changes with weights
//! through filters, projections, joins and aggregates) over events turned into
//! source changes (`source.rs`) kept in source tables (`table.rs`); `naive` evaluates the same plan from scratch, the
//! reference the engine is tested against. `Views` (`service.rs`) keeps the views of a
//! node: definitions in the log, each view fed from its sources by `runner.rs`.

pub mod catalog;
pub mod codec;
pub mod datum;
pub mod engine;
pub mod expr;
pub mod frozen;
mod lease;
mod lifecycle;
pub mod naive;
pub mod plan;
pub mod publish;
pub mod runner;
mod service;
pub mod snapshot;
pub mod source;
pub mod sql;
pub mod table;
mod view;

pub use datum::{Datum, Row};
pub use plan::{Catalog, Path, Plan, SourceInfo, SourceKind};
pub use service::{Definition, Policy, Views, ViewsConfig, ViewsError};
pub use sql::{SqlError, compile};
pub use view::{Applied, OnError, Rejected, View};
