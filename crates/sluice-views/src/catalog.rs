//! The bus's event types as view sources: which are tables, keyed how, and which are
//! streams (docs/sql.md, "Sources").

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
