//! Publishing: a JSON array of events -> validate, enrich, partition every event (all or
//! nothing) -> drop eids already published within the idempotency window -> append
//! each partition's events in request order -> per-item outcome.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use sluice_log::{FetchRequest, PartitionId, Record, Timestamp};
use sluice_schema::{Enrichment, EventText, Prepared, split_array, time};

use crate::Bus;
use crate::dedup::{Eid, EidWindow, Verdict, parse_eid};
use crate::error::{BusError, Result};
use crate::registry::Registered;

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
    /// Every event was written, or had been within the idempotency window (HTTP 200).
    All(Written),
    /// Some events could not be written; the others were (HTTP 207).
    Partial(Vec<ItemOutcome>, Written),
    /// Validation, enrichment or partitioning failed; nothing was written (HTTP 422).
    Rejected(Vec<ItemOutcome>),
}

/// Where a request's events went: per partition written to, the offset of the last
/// event written there (what a read-your-writes wait needs).
pub type Written = Vec<(u32, u64)>;

/// Who publishes, for enrichment.
#[derive(Clone, Debug, Default)]
pub struct Publisher {
    pub flow_id: Option<String>,
    pub published_by: Option<String>,
}

/// One accepted event on its way to the log.
struct Placed {
    partition: u32,
    eid: Option<String>,
    /// Set when the eid was reserved in the window and must be confirmed or released.
    reserved: Option<u128>,
    verdict: Verdict,
    /// The earlier event of this request with the same eid: this one shares its fate.
    same_as: Option<usize>,
}

impl Bus {
    /// Publishes a JSON array of events to `name`, all or nothing on validation.
    pub async fn publish(
        &self,
        name: &str,
        body: &[u8],
        publisher: &Publisher,
    ) -> Result<Published> {
        let registered = self.registry.require(name)?;
        let items = events_of(body)?;
        let received_at = time::now_rfc3339();
        let ctx = Enrichment {
            received_at: &received_at,
            flow_id: publisher.flow_id.as_deref(),
            published_by: publisher.published_by.as_deref(),
            max_event_bytes: self.config.max_event_bytes,
        };
        let partitions = registered.partitions();
        let mut random = |n: u32| fastrand::u32(0..n);
        let mut prepared = Vec::with_capacity(items.len());
        for text in &items {
            let value = parse_event(text)?;
            prepared.push(
                registered
                    .compiled
                    .prepare(value, text, partitions, &ctx, &mut random),
            );
        }
        if prepared.iter().any(Result::is_err) {
            return Ok(Published::Rejected(rejected(prepared, &items)));
        }
        let prepared: Vec<Prepared> = prepared.into_iter().flatten().collect();
        self.write(&registered, prepared).await
    }

    async fn write(
        &self,
        registered: &Arc<Registered>,
        prepared: Vec<Prepared>,
    ) -> Result<Published> {
        let window = self.window_of(registered).await?;
        let compacted = registered.event_type().cleanup_policy.compacts();
        let mut by_partition: Vec<Vec<Record>> = vec![Vec::new(); registered.partitions() as usize];
        let mut placed = Vec::with_capacity(prepared.len());
        let mut hold = window.as_deref().map(Hold::begin);
        {
            let now = Timestamp::now().0;
            for p in prepared {
                let eid = p.eid.as_deref().and_then(parse_eid);
                let verdict = match (&mut hold, eid) {
                    (Some(hold), Some(eid)) => hold.check(eid, now, p.partition),
                    _ => Verdict::New,
                };
                // Only for an eid repeated within the request: rare, so a scan.
                let same_as = (verdict == Verdict::Repeated).then(|| {
                    placed
                        .iter()
                        .position(|q: &Placed| q.reserved.is_some() && q.reserved == eid)
                        .unwrap_or_default()
                });
                if verdict == Verdict::New {
                    by_partition[p.partition as usize].push(Record {
                        key: if compacted {
                            p.compaction_key.map(Bytes::from)
                        } else {
                            None
                        },
                        value: Some(Bytes::from(p.bytes)),
                        ..Record::default()
                    });
                }
                let reserved = if verdict == Verdict::New && hold.is_some() {
                    eid
                } else {
                    None
                };
                placed.push(Placed {
                    partition: p.partition,
                    eid: p.eid,
                    reserved,
                    verdict,
                    same_as,
                });
            }
        }
        // All partitions are appended concurrently, on this task (no spawn per write).
        let writes = by_partition
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(p, records)| {
                let topic = &registered.topic;
                async move {
                    (
                        p,
                        self.log.append(topic, PartitionId(p as u32), records).await,
                    )
                }
            });
        let mut written: Written = Vec::new();
        let (failed, mut errors): (Vec<(usize, String)>, Vec<sluice_log::LogError>) =
            futures_util::future::join_all(writes)
                .await
                .into_iter()
                .filter_map(|(p, r)| match r {
                    Ok(at) => {
                        if let Some(last) = at.last() {
                            written.push((p as u32, last.0));
                        }
                        None
                    }
                    Err(e) => Some(((p, e.to_string()), e)),
                })
                .unzip();
        if let Some(hold) = hold {
            hold.finish(|p| failed.iter().any(|(fp, _)| *fp == p as usize));
        }
        let in_flight = placed.iter().any(|p| p.verdict == Verdict::InFlight);
        if failed.is_empty() && !in_flight {
            return Ok(Published::All(written));
        }
        // Nothing of the batch was written because the log failed (Kafka away): the
        // request fails as a whole (503), not event by event.
        let none_written = placed.iter().all(|pl| {
            let pl = pl.same_as.map_or(pl, |i| &placed[i]);
            pl.verdict == Verdict::New && failed.iter().any(|(fp, _)| *fp == pl.partition as usize)
        });
        if none_written && !errors.is_empty() {
            return Err(errors.swap_remove(0).into());
        }
        let outcomes = placed
            .iter()
            .map(|pl| {
                let pl = pl.same_as.map_or(pl, |i| &placed[i]);
                let failure = failed.iter().find(|(fp, _)| *fp == pl.partition as usize);
                let status = match (pl.verdict, failure) {
                    (Verdict::InFlight, _) => ItemStatus::Failed {
                        step: "publishing",
                        detail:
                            "an event with this eid is being published by another request; retry"
                                .into(),
                    },
                    (Verdict::New, Some((_, detail))) => ItemStatus::Failed {
                        step: "publishing",
                        detail: detail.clone(),
                    },
                    // Written now, or within the window before.
                    (Verdict::New | Verdict::Duplicate | Verdict::Repeated, _) => {
                        ItemStatus::Submitted
                    }
                };
                ItemOutcome {
                    eid: pl.eid.clone(),
                    status,
                }
            })
            .collect();
        Ok(Published::Partial(outcomes, written))
    }

    /// The idempotency window of an event type, loaded from the log's tail on first use
    /// after a start. `None` when idempotency is off.
    async fn window_of(&self, registered: &Registered) -> Result<Option<Arc<EidWindow>>> {
        let window_ms = self.config.idempotency_window_ms;
        if window_ms == 0 {
            return Ok(None);
        }
        let name = &registered.event_type().name;
        let slot = self.windows.lock().entry(name.clone()).or_default().clone();
        let window = slot
            .get_or_try_init(|| async {
                let w = EidWindow::new(window_ms, self.config.idempotency_max_eids);
                let since = Timestamp(Timestamp::now().0.saturating_sub(window_ms as i64));
                for p in 0..registered.partitions() {
                    self.load_window(registered, PartitionId(p), since, &w)
                        .await?;
                }
                Ok::<_, BusError>(Arc::new(w))
            })
            .await?
            .clone();
        window.grow_ahead();
        Ok(Some(window))
    }

    async fn load_window(
        &self,
        reg: &Registered,
        p: PartitionId,
        since: Timestamp,
        w: &EidWindow,
    ) -> Result<()> {
        #[derive(Deserialize)]
        struct Md {
            eid: Option<String>,
        }
        #[derive(Deserialize)]
        struct EidOnly {
            metadata: Option<Md>,
        }
        let Some(mut from) = self.log.offset_for_timestamp(&reg.topic, p, since).await? else {
            return Ok(());
        };
        loop {
            let f = self
                .log
                .fetch(&reg.topic, p, FetchRequest::new(from).max_bytes(4 << 20))
                .await?;
            if f.records.is_empty() {
                return Ok(());
            }
            for r in &f.records {
                let eid = r
                    .value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<EidOnly>(v).ok())
                    .and_then(|e| e.metadata?.eid)
                    .and_then(|e| parse_eid(&e));
                if let Some(eid) = eid {
                    w.remember(eid, r.timestamp.0);
                }
            }
            from = f.next;
        }
    }
}

/// One request's eids in the idempotency window. `finish` says which partitions failed;
/// a hold dropped unfinished (the request was cancelled, e.g. its client went away)
/// releases every eid it took, so a retry writes them: a duplicate is possible then,
/// a lost event is not.
struct Hold<'a> {
    window: &'a EidWindow,
    request: u64,
    /// The eids this request took, with their partitions.
    taken: Vec<(Eid, u32)>,
    finished: bool,
}

impl<'a> Hold<'a> {
    fn begin(window: &'a EidWindow) -> Hold<'a> {
        Hold {
            window,
            request: window.begin(),
            taken: Vec::new(),
            finished: false,
        }
    }

    fn check(&mut self, eid: Eid, now: i64, partition: u32) -> Verdict {
        let verdict = self.window.check(eid, now, self.request);
        if verdict == Verdict::New {
            self.taken.push((eid, partition));
        }
        verdict
    }

    /// The appends are done: eids of failed partitions are released, the rest kept.
    fn finish(mut self, failed: impl Fn(u32) -> bool) {
        for &(eid, p) in &self.taken {
            if failed(p) {
                self.window.release(eid, self.request);
            }
        }
        self.finished = true;
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if !self.finished {
            for &(eid, _) in &self.taken {
                self.window.release(eid, self.request);
            }
        }
        self.window.end(self.request);
    }
}

/// A request body's events (a JSON array), split but not parsed yet.
pub(crate) fn events_of(body: &[u8]) -> Result<Vec<EventText<'_>>> {
    let body = std::str::from_utf8(body)
        .map_err(|e| BusError::Malformed(format!("the body is not valid UTF-8: {e}")))?;
    split_array(body)
        .map_err(|e| BusError::Malformed(format!("the body must be a JSON array of events: {e}")))
}

/// One event of a request body, parsed.
pub(crate) fn parse_event(text: &EventText<'_>) -> Result<serde_json::Value> {
    serde_json::from_str(text.as_str())
        .map_err(|e| BusError::Malformed(format!("an event is not valid JSON: {e}")))
}

fn rejected(
    prepared: Vec<Result<Prepared, sluice_schema::ItemError>>,
    items: &[EventText<'_>],
) -> Vec<ItemOutcome> {
    prepared
        .into_iter()
        .zip(items)
        .map(|(p, raw)| match p {
            Ok(p) => ItemOutcome {
                eid: p.eid,
                status: ItemStatus::Aborted,
            },
            Err(e) => ItemOutcome {
                eid: eid_of(raw.as_str()),
                status: ItemStatus::Failed {
                    step: e.step.as_str(),
                    detail: e.detail,
                },
            },
        })
        .collect()
}

fn eid_of(raw: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    v.pointer("/metadata/eid")
        .and_then(|e| e.as_str())
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_request_releases_its_eids_and_a_finished_one_keeps_them() {
        let w = EidWindow::new(60_000, 1000);
        let mut hold = Hold::begin(&w);
        assert_eq!(hold.check(1, 0, 0), Verdict::New);
        assert_eq!(hold.check(2, 0, 1), Verdict::New);
        drop(hold); // e.g. the client went away while appending
        let mut hold = Hold::begin(&w);
        assert_eq!(hold.check(1, 1, 0), Verdict::New, "a retry is written");
        assert_eq!(hold.check(2, 1, 1), Verdict::New);
        hold.finish(|p| p == 1);
        let mut hold = Hold::begin(&w);
        assert_eq!(hold.check(1, 2, 0), Verdict::Duplicate, "written");
        assert_eq!(hold.check(2, 2, 1), Verdict::New, "its partition failed");
    }
}
