//! Following an internal topic: the in-memory registries are caches of compacted
//! internal topics, kept current by a task that reads each topic from where its replay
//! stopped and applies every record, whoever wrote it. On Kafka several nodes write
//! the same topics; each node converges by applying the same records in the same order.
//!
//! A node's own changes take the same path: it appends, then waits until its follower
//! has applied the record (`caught_up`), so a change is visible on the node that made
//! it when the call returns, and no cache is ever written around the log.

use std::sync::Arc;
use std::time::Duration;

use sluice_log::{FetchRequest, Log, LogError, Offset, PartitionId, StoredRecord, TopicName};
use tokio::sync::watch;

use crate::error::{BusError, Result};

/// How long one read waits for new records before it asks again.
const POLL: Duration = Duration::from_secs(1);
/// How long a failed read waits before the next try.
const RETRY: Duration = Duration::from_millis(500);
/// How long a change waits for its follower before the call fails.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A record's key as text (internal topics key their records by text).
pub fn key_of(r: &StoredRecord) -> String {
    r.key
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .into_owned()
}

/// A task applying one internal topic's records as they come; stops when dropped.
#[derive(Debug)]
pub struct Follower {
    topic: TopicName,
    log: Arc<dyn Log>,
    /// The next offset to apply (everything before it is applied).
    applied: watch::Receiver<Offset>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// Follows `topic` (partition 0) from `from`, calling `apply` for every record.
    pub fn spawn(
        log: Arc<dyn Log>,
        topic: TopicName,
        from: Offset,
        apply: impl Fn(&StoredRecord) + Send + Sync + 'static,
    ) -> Follower {
        let (tx, rx) = watch::channel(from);
        let task = tokio::spawn(run(log.clone(), topic.clone(), from, tx, apply));
        Follower {
            topic,
            log,
            applied: rx,
            task,
        }
    }

    /// Waits until the record at `offset` is applied.
    pub async fn caught_up(&self, offset: Offset) -> Result<()> {
        let mut rx = self.applied.clone();
        let wait = rx.wait_for(|next| *next > offset);
        match tokio::time::timeout(APPLY_TIMEOUT, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(BusError::Metadata(format!(
                "the follower of {} stopped",
                self.topic
            ))),
            Err(_) => Err(BusError::Metadata(format!(
                "{} was not applied within {APPLY_TIMEOUT:?}",
                self.topic
            ))),
        }
    }

    /// Waits until everything appended to the topic so far is applied (changes made
    /// on other nodes included).
    pub async fn caught_up_to_end(&self) -> Result<()> {
        let latest = self.log.offsets(&self.topic, PartitionId(0)).await?.latest;
        match latest.0.checked_sub(1) {
            Some(last) if *self.applied.borrow() <= Offset(last) => {
                self.caught_up(Offset(last)).await
            }
            _ => Ok(()),
        }
    }
}

async fn run(
    log: Arc<dyn Log>,
    topic: TopicName,
    mut next: Offset,
    applied: watch::Sender<Offset>,
    apply: impl Fn(&StoredRecord) + Send + Sync + 'static,
) {
    loop {
        let request = FetchRequest::new(next).max_wait(POLL);
        match log.fetch(&topic, PartitionId(0), request).await {
            Ok(f) => {
                for r in &f.records {
                    apply(r);
                }
                next = f.next;
                applied.send_replace(next);
            }
            Err(LogError::OffsetOutOfRange {
                earliest, latest, ..
            }) => {
                // Compaction or retention moved the start past us: what is gone was
                // superseded; go on from the oldest record left.
                tracing::warn!(%topic, from = next.0, earliest, latest, "follower jumps to the oldest record");
                next = Offset(if next.0 < earliest { earliest } else { latest });
            }
            Err(LogError::Closed) => return,
            Err(e) => {
                tracing::warn!(%topic, error = %e, "cannot read an internal topic; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
