//! Publishing: a JSON array of events -> validate, enrich, partition every event (all or
//! nothing) -> append each partition's events in request order -> per-item outcome.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use sluice_log::{Log, PartitionId, Record};
use sluice_schema::{Enrichment, Prepared, time};

use crate::error::{BusError, Result};
use crate::registry::Registry;

/// What happened to one event of a batch (Nakadi's `BatchItemResponse`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemOutcome {
    pub eid: Option<String>,
    pub status: ItemStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemStatus {
    Submitted,
    /// Not written; `step` is where it failed.
    Failed {
        step: &'static str,
        detail: String,
    },
    /// Not written because another event of the batch failed.
    Aborted,
}

/// The result of one publish request.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    /// Every event was written (HTTP 200).
    All,
    /// Some partitions failed to write; the others were written (HTTP 207).
    Partial(Vec<ItemOutcome>),
    /// Validation, enrichment or partitioning failed; nothing was written (HTTP 422).
    Rejected(Vec<ItemOutcome>),
}

/// Who publishes, for enrichment.
#[derive(Clone, Debug, Default)]
pub struct Publisher {
    pub flow_id: Option<String>,
    pub published_by: Option<String>,
}

pub(crate) async fn publish(
    registry: &Registry,
    log: &Arc<dyn Log>,
    max_event_bytes: usize,
    name: &str,
    body: &[u8],
    publisher: &Publisher,
) -> Result<Published> {
    let registered = registry.require(name)?;
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        BusError::Malformed(format!("the body must be a JSON array of events: {e}"))
    })?;
    let received_at = time::now_rfc3339();
    let ctx = Enrichment {
        received_at: &received_at,
        flow_id: publisher.flow_id.as_deref(),
        published_by: publisher.published_by.as_deref(),
        max_event_bytes,
    };
    let partitions = registered.partitions();
    let mut random = |n: u32| fastrand::u32(0..n);
    let mut prepared: Vec<Result<Prepared, sluice_schema::ItemError>> =
        Vec::with_capacity(items.len());
    for raw in &items {
        let value = serde_json::from_str(raw.get())
            .map_err(|e| BusError::Malformed(format!("an event is not valid JSON: {e}")))?;
        prepared.push(registered.compiled.prepare(
            value,
            raw.get().len(),
            partitions,
            &ctx,
            &mut random,
        ));
    }
    if prepared.iter().any(Result::is_err) {
        let outcomes = prepared
            .into_iter()
            .zip(&items)
            .map(|(p, raw)| match p {
                Ok(p) => ItemOutcome {
                    eid: p.eid,
                    status: ItemStatus::Aborted,
                },
                Err(e) => ItemOutcome {
                    eid: eid_of(raw),
                    status: ItemStatus::Failed {
                        step: e.step.as_str(),
                        detail: e.detail,
                    },
                },
            })
            .collect();
        return Ok(Published::Rejected(outcomes));
    }
    let compacted = registered.event_type().cleanup_policy.compacts();
    // Per partition, the events in request order; what the outcome needs is kept aside.
    let mut by_partition: Vec<Vec<Record>> = vec![Vec::new(); partitions as usize];
    let mut placed: Vec<(u32, Option<String>)> = Vec::with_capacity(prepared.len());
    for p in prepared.into_iter().flatten() {
        by_partition[p.partition as usize].push(Record {
            key: if compacted {
                p.compaction_key.map(Bytes::from)
            } else {
                None
            },
            value: Some(Bytes::from(p.bytes)),
            ..Record::default()
        });
        placed.push((p.partition, p.eid));
    }
    let mut writes = Vec::new();
    for (p, records) in by_partition
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
    {
        let (log, topic) = (log.clone(), registered.topic.clone());
        let partition = PartitionId(p as u32);
        writes.push((
            p,
            tokio::spawn(async move { log.append(&topic, partition, records).await }),
        ));
    }
    let mut failed: Vec<(usize, String)> = Vec::new();
    for (p, handle) in writes {
        match handle.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failed.push((p, e.to_string())),
            Err(e) => failed.push((p, format!("write task failed: {e}"))),
        }
    }
    if failed.is_empty() {
        return Ok(Published::All);
    }
    let outcomes = placed
        .into_iter()
        .map(|(partition, eid)| {
            let status = match failed.iter().find(|(fp, _)| *fp == partition as usize) {
                Some((_, detail)) => ItemStatus::Failed {
                    step: "publishing",
                    detail: detail.clone(),
                },
                None => ItemStatus::Submitted,
            };
            ItemOutcome { eid, status }
        })
        .collect();
    Ok(Published::Partial(outcomes))
}

fn eid_of(raw: &RawValue) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    v.pointer("/metadata/eid")
        .and_then(|e| e.as_str())
        .map(String::from)
}
