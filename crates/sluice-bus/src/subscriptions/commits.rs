//! Commits and resets: cursors move only forward, only from the owning stream and never
//! past what it was sent; a reset closes the subscription's streams first, on every
//! node.

use std::collections::BTreeMap;
use std::time::Instant;

use sluice_log::{PartitionId, Timestamp};

use super::{
    CommitResult, PartKey, PartitionCursor, ResetTo, SubscriptionCursor, Subscriptions,
    parse_partition, topic,
};
use crate::PartitionInfo;
use crate::cursor::CursorOffset;
use crate::error::{BusError, Result};
use crate::registry::Registry;

impl Subscriptions {
    /// Commits cursors for the stream `stream_id`: each must be of a partition the stream
    /// owns and at most what it was sent. All are checked before any is written.
    pub async fn commit(
        &self,
        id: &str,
        stream_id: &str,
        cursors: &[SubscriptionCursor],
    ) -> Result<Vec<CommitResult>> {
        let sub = self.get(id)?;
        let session = match &self.cluster {
            // The stream may be on another node: this one knows it from the cluster.
            Some(_) => Some(self.session(id)),
            None => self.sessions.lock().get(id).cloned(),
        };
        let Some(session) = session else {
            return Err(no_stream(id, stream_id));
        };
        let _one = session.commits.lock().await;
        let mut parsed = Vec::with_capacity(cursors.len());
        let generation;
        {
            let mut st = session.state.lock();
            if let Some(cluster) = &self.cluster {
                super::nodes::sync_remote(&mut st, cluster, id, self.store.generation(id));
                st.rebalance(Instant::now());
            }
            let Some(stream) = st.streams.iter().find(|s| s.id == stream_id).cloned() else {
                return Err(no_stream(id, stream_id));
            };
            generation = stream.generation;
            let mut problems = Vec::new();
            for c in cursors {
                if !sub.event_types.contains(&c.event_type) {
                    problems.push(format!(
                        "event type {:?} is not part of the subscription",
                        c.event_type
                    ));
                    continue;
                }
                let (Some(p), Some(offset)) = (
                    parse_partition(&c.partition),
                    CursorOffset::parse(&c.offset),
                ) else {
                    problems.push(format!(
                        "cursor {}/{}/{} is not valid",
                        c.event_type, c.partition, c.offset
                    ));
                    continue;
                };
                let key = (c.event_type.clone(), p);
                let Some(part) = st.parts.get(&key) else {
                    problems.push(format!("{} has no partition {p}", c.event_type));
                    continue;
                };
                // A stream of another node: the cluster says what it holds; what
                // it was sent is known to its node only.
                let holds = match &self.cluster {
                    Some(cluster) if stream.remote => {
                        cluster.holder(id, &key).as_deref() == Some(stream_id)
                    }
                    _ => part.owned_by(stream_id),
                };
                if !holds {
                    problems.push(format!(
                        "{} partition {p} is not assigned to stream {stream_id}",
                        c.event_type
                    ));
                    continue;
                }
                if stream.remote {
                    parsed.push((key, offset));
                    continue;
                }
                let sent = part.inflight.back().map(|s| s.last);
                let committed = self.store.cursor(id, &key).unwrap_or(CursorOffset::Begin);
                if let CursorOffset::At(o) = offset
                    && offset > committed
                    && sent.is_none_or(|s| o > s)
                {
                    problems.push(format!(
                        "{} partition {p}: offset {} was not sent to stream {stream_id}",
                        c.event_type, c.offset
                    ));
                    continue;
                }
                parsed.push((key, offset));
            }
            if !problems.is_empty() {
                return Err(BusError::Unprocessable(problems));
            }
        }
        let mut results = Vec::with_capacity(parsed.len());
        let mut forward: BTreeMap<PartKey, CursorOffset> = BTreeMap::new();
        for (key, offset) in &parsed {
            let current = forward
                .get(key)
                .copied()
                .or_else(|| self.store.cursor(id, key))
                .unwrap_or(CursorOffset::Begin);
            if *offset > current {
                forward.insert(key.clone(), *offset);
                results.push(CommitResult::Committed);
            } else {
                results.push(CommitResult::Outdated);
            }
        }
        let moved: Vec<(PartKey, CursorOffset)> = forward.into_iter().collect();
        self.store.set_cursors(id, generation, &moved).await?;
        let mut st = session.state.lock();
        for (key, offset) in &moved {
            if let CursorOffset::At(o) = offset {
                st.committed(key, *o);
            }
        }
        st.rebalance(Instant::now());
        for s in &st.streams {
            s.notify.notify_one();
        }
        Ok(results)
    }

    /// The committed cursor of every partition (partitions added since creation: BEGIN).
    pub async fn cursors(
        &self,
        registry: &Registry,
        id: &str,
    ) -> Result<Vec<(PartKey, CursorOffset)>> {
        let sub = self.get(id)?;
        let committed = self.store.cursors(id);
        let bounds = self.bounds(registry, &sub).await?;
        Ok(bounds
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    committed.get(k).copied().unwrap_or(CursorOffset::Begin),
                )
            })
            .collect())
    }

    /// Moves the cursors: closes every stream of the subscription here first (their
    /// uncommitted events are given up), then writes the new cursors under the next
    /// generation; other nodes close theirs when they apply it (`store.rs`).
    pub async fn reset(&self, registry: &Registry, id: &str, to: ResetTo) -> Result<()> {
        let sub = self.get(id)?;
        let bounds = self.bounds(registry, &sub).await?;
        let cursors: Vec<(PartKey, CursorOffset)> = match to {
            ResetTo::Cursors(given) => check_cursors(&given, &bounds)?.into_iter().collect(),
            ResetTo::Begin => bounds
                .keys()
                .map(|k| (k.clone(), CursorOffset::Begin))
                .collect(),
            ResetTo::End => bounds.iter().map(|(k, b)| (k.clone(), b.newest)).collect(),
            ResetTo::Time(ms) => {
                let mut out = Vec::new();
                for (k, b) in &bounds {
                    let t = topic(&k.0)?;
                    let at = self
                        .log
                        .offset_for_timestamp(&t, PartitionId(k.1), Timestamp(ms))
                        .await?;
                    let c = match (at, b.oldest) {
                        (Some(o), CursorOffset::At(oldest)) if o.0 > oldest => {
                            CursorOffset::At(o.0 - 1)
                        }
                        (Some(_), _) => CursorOffset::Begin,
                        (None, _) => b.newest,
                    };
                    out.push((k.clone(), c));
                }
                out
            }
        };
        let session = self.session(id);
        let _one = session.commits.lock().await;
        {
            let mut st = session.state.lock();
            st.resetting = true;
            st.close_all("the subscription's cursors were reset");
        }
        let written = self.store.reset_cursors(id, &cursors).await;
        session.state.lock().resetting = false;
        written
    }
}

pub(super) fn no_stream(id: &str, stream_id: &str) -> BusError {
    BusError::Unprocessable(vec![format!(
        "stream {stream_id:?} is not open on subscription {id} (closed, timed out, or never opened)"
    )])
}

/// Checks cursors against the partitions: each names a partition of the subscription
/// and an offset from just before the oldest available event to the newest.
pub(super) fn check_cursors(
    given: &[PartitionCursor],
    bounds: &BTreeMap<PartKey, PartitionInfo>,
) -> Result<BTreeMap<PartKey, CursorOffset>> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for c in given {
        let key = parse_partition(&c.partition).map(|p| (c.event_type.clone(), p));
        let Some((key, b)) = key.and_then(|k| bounds.get(&k).map(|b| (k, b))) else {
            problems.push(format!(
                "{} has no partition {:?} in this subscription",
                c.event_type, c.partition
            ));
            continue;
        };
        let Some(offset) = CursorOffset::parse(&c.offset) else {
            problems.push(format!("{:?} is not a cursor offset", c.offset));
            continue;
        };
        let valid = match (offset, b.oldest) {
            (CursorOffset::Begin, _) => true,
            (CursorOffset::At(o), CursorOffset::At(oldest)) => o + 1 >= oldest && o < b.latest,
            (CursorOffset::At(_), CursorOffset::Begin) => false,
        };
        if !valid {
            problems.push(format!(
                "{} partition {}: offset {} is not available; available: {} to {}",
                key.0, key.1, c.offset, b.oldest, b.newest
            ));
            continue;
        }
        out.insert(key, offset);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(BusError::Unprocessable(problems))
    }
}
