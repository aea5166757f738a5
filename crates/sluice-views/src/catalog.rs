//! The bus's event types as view sources: which are tables, keyed how, and which are
//! streams (docs/sql.md, "Sources").

use std::collections::BTreeMap;

use sluice_bus::Registry;
use sluice_schema::{Category, CleanupPolicy, PartitionStrategy};

use crate::plan::{Catalog, Path, SourceInfo, SourceKind};

/// The path of a compacted event type's key.
pub fn compaction_key() -> Path {
    vec!["metadata".into(), "partition_compaction_key".into()]
}

impl Catalog for Registry {
    fn source(&self, event_type: &str) -> Option<SourceInfo> {
        let et = self.get(event_type)?.event_type().clone();
        // A compacted event type keeps the latest event per compaction key: the log's
        // own notion of "latest per key", so a replay after compaction agrees.
        let key = if et.cleanup_policy != CleanupPolicy::Delete {
            Some(vec![compaction_key()])
        } else if et.partition_strategy == PartitionStrategy::Hash {
            Some(
                et.partition_key_fields
                    .iter()
                    .map(|f| f.split('.').map(String::from).collect())
                    .collect(),
            )
        } else {
            None
        };
        Some(SourceInfo {
            kind: key.map_or(SourceKind::Stream, |key| SourceKind::Table { key }),
            data_change: et.category == Category::Data,
        })
    }
}

/// A node's catalog: its event types, and its views that publish their changes (a
/// view read by another view is read from the event type it publishes to).
#[derive(Debug)]
pub(crate) struct WithViews<'a> {
    pub registry: &'a Registry,
    /// View name to the event type it publishes to, if any.
    pub views: BTreeMap<String, Option<String>>,
}

impl Catalog for WithViews<'_> {
    fn source(&self, event_type: &str) -> Option<SourceInfo> {
        self.registry.source(event_type)
    }

    fn resolve(&self, name: &str) -> Result<(String, SourceInfo), String> {
        if let Some(info) = self.registry.source(name) {
            return Ok((name.to_string(), info));
        }
        match self.views.get(name) {
            Some(Some(event_type)) => self
                .registry
                .source(event_type)
                .map(|info| (event_type.clone(), info))
                .ok_or_else(|| {
                    format!("view `{name}` publishes to `{event_type}`, which does not exist")
                }),
            Some(None) => Err(format!(
                "view `{name}` does not publish its changes: give it publish_as to read it from other views"
            )),
            None => Err(format!("event type or view `{name}` does not exist")),
        }
    }
}
