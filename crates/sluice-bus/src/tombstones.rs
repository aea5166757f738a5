//! `deleted-events`: tombstones for compacted event types. Each item names a key
//! (`metadata.partition_compaction_key`) and carries what its partition is computed
//! from; its content is not validated. The log's compaction then drops every event of
//! that key. With the `random` strategy the key may be in any partition, so the
//! tombstone goes to all of them.

use bytes::Bytes;
use serde_json::Value;
use sluice_log::{PartitionId, Record};
use sluice_schema::PartitionStrategy;

use crate::Bus;
use crate::error::{BusError, Result};
use crate::publish::{ItemOutcome, ItemStatus, Published, events_of, parse_event};

/// A tombstone's key and the partitions it goes to.
type Target = (String, Vec<u32>);
/// Why an item was refused: the step and the detail.
type Refusal = (&'static str, String);

impl Bus {
    pub async fn delete_events(&self, name: &str, body: &[u8]) -> Result<Published> {
        let registered = self.registry.require(name)?;
        let et = registered.event_type();
        if !et.cleanup_policy.compacts() {
            return Err(BusError::Unprocessable(vec![format!(
                "event type {name} is not compacted (cleanup_policy {:?}): it has no keys to delete",
                et.cleanup_policy
            )]));
        }
        let items = events_of(body)?;
        let partitions = registered.partitions();
        let mut targets: Vec<std::result::Result<Target, Refusal>> = Vec::new();
        for text in &items {
            let v = parse_event(text)?;
            let key = v
                .pointer("/metadata/partition_compaction_key")
                .and_then(Value::as_str);
            let target = match key {
                None | Some("") => Err((
                    "validating",
                    "metadata.partition_compaction_key is required".to_string(),
                )),
                Some(k) if et.partition_strategy == PartitionStrategy::Random => {
                    Ok((k.to_string(), (0..partitions).collect()))
                }
                Some(k) => registered
                    .compiled
                    .partition_of(&v, partitions, &mut |_| 0)
                    .map(|p| (k.to_string(), vec![p]))
                    .map_err(|e| (e.step.as_str(), e.detail)),
            };
            targets.push(target);
        }
        if targets.iter().any(Result::is_err) {
            let outcomes = targets
                .into_iter()
                .map(|t| ItemOutcome {
                    eid: None,
                    status: match t {
                        Ok(_) => ItemStatus::Aborted,
                        Err((step, detail)) => ItemStatus::Failed { step, detail },
                    },
                })
                .collect();
            return Ok(Published::Rejected(outcomes));
        }
        let mut by_partition: Vec<Vec<Record>> = vec![Vec::new(); partitions as usize];
        let targets: Vec<Target> = targets.into_iter().flatten().collect();
        for (key, parts) in &targets {
            for &p in parts {
                by_partition[p as usize].push(Record::tombstone(Bytes::from(key.clone())));
            }
        }
        let mut failed = Vec::new();
        let mut written = Vec::new();
        for (p, records) in by_partition
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
        {
            match self
                .log
                .append(&registered.topic, PartitionId(p as u32), records)
                .await
            {
                Ok(at) => written.extend(at.last().map(|o| (p as u32, o.0))),
                Err(e) => failed.push((p as u32, e.to_string())),
            }
        }
        if failed.is_empty() {
            return Ok(Published::All(written));
        }
        let outcomes = targets
            .iter()
            .map(|(_, parts)| ItemOutcome {
                eid: None,
                status: match failed.iter().find(|(p, _)| parts.contains(p)) {
                    Some((_, detail)) => ItemStatus::Failed {
                        step: "publishing",
                        detail: detail.clone(),
                    },
                    None => ItemStatus::Submitted,
                },
            })
            .collect();
        Ok(Published::Partial(outcomes, written))
    }
}
