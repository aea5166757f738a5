//! One view kept fresh from the log: a reader task per source partition feeds one
//! apply loop, which takes batches into the view and records, per partition, the
//! offset the view has applied up to. Reads of rows and progress take short locks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use sluice_log::{FetchRequest, Log, LogError, Offset, PartitionId, StoredRecord, TopicName};
use tokio::sync::{mpsc, watch};

use crate::plan::Plan;
use crate::view::{OnError, View};

/// How many records one apply takes at most (bounds how long readers wait on it).
const BATCH: usize = 1024;
/// How long a read waits for new records.
const POLL: Duration = Duration::from_millis(500);
/// How long a failed read waits before trying again.
const RETRY: Duration = Duration::from_secs(1);
/// How many recent errors a view keeps.
const KEEP_ERRORS: usize = 20;

/// One partition of a source event type.
pub type SourcePartition = (String, u32);

/// An event a view left out or stopped at.
#[derive(Clone, Debug, PartialEq)]
pub struct EventError {
    pub event_type: String,
    pub partition: u32,
    pub offset: u64,
    pub message: String,
}

/// Where a view stands.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Per source partition, the offset of the next event to apply.
    pub next: BTreeMap<SourcePartition, u64>,
    pub events: u64,
    /// Events left out (policy skip) since the view started here.
    pub skipped: u64,
    pub errors: Vec<EventError>,
    /// Why the view stopped applying (policy stop), if it did.
    pub stopped: Option<EventError>,
    /// A source that cannot be read now, and why.
    pub unreadable: Option<String>,
    /// The state file the view started from (none: the beginning of the log).
    pub loaded_from: Option<String>,
}

/// A view and the task keeping it fresh.
#[derive(Debug)]
pub struct Running {
    pub plan: Arc<Plan>,
    pub view: RwLock<View>,
    pub progress: Mutex<Progress>,
    /// Bumped after every applied batch (read-your-writes waits on it).
    pub applied: watch::Sender<u64>,
    /// Where and how often the state is written (none: memory only).
    pub checkpoint: Option<Checkpoint>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Writing a view's state and offsets to disk, whole.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: std::path::PathBuf,
    pub every: Duration,
    pub sql: String,
}

impl Running {
    /// The view's state and the offsets it reflects, as bytes (`snapshot.rs`).
    pub fn state_bytes(&self, sql: &str) -> Vec<u8> {
        // The apply loop changes both under the view's write lock: read them together.
        let view = self.view.read();
        let offsets = self.progress.lock().next.clone();
        crate::snapshot::encode(&view, sql, &offsets)
    }

    /// Writes the state now (also on a clean shutdown).
    pub async fn write_checkpoint(&self) -> std::io::Result<()> {
        let Some(c) = &self.checkpoint else {
            return Ok(());
        };
        let bytes = self.state_bytes(&c.sql);
        let path = c.path.clone();
        tokio::task::spawn_blocking(move || crate::snapshot::write_file(&path, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

/// Records read from one source partition.
struct Chunk {
    source: SourcePartition,
    records: Vec<StoredRecord>,
    next: u64,
}

impl Running {
    /// Starts keeping `view` fresh from `start` (every source partition the view
    /// reads, with the offset of its next event).
    pub fn start(
        log: Arc<dyn Log>,
        view: View,
        start: BTreeMap<SourcePartition, u64>,
        on_error: OnError,
        checkpoint: Option<Checkpoint>,
        loaded_from: Option<String>,
    ) -> Arc<Running> {
        let plan = view.plan().clone();
        let running = Arc::new(Running {
            plan,
            view: RwLock::new(view),
            progress: Mutex::new(Progress {
                next: start.clone(),
                loaded_from,
                ..Progress::default()
            }),
            applied: watch::channel(0).0,
            checkpoint,
            task: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel(16);
        for (source, from) in start {
            tokio::spawn(read(
                log.clone(),
                source,
                from,
                tx.clone(),
                Arc::downgrade(&running),
            ));
        }
        let task = tokio::spawn(apply_loop(Arc::downgrade(&running), rx, on_error));
        *running.task.lock() = Some(task);
        running
    }
}

/// Reads one source partition from `from` into the apply loop, until the view goes.
async fn read(
    log: Arc<dyn Log>,
    source: SourcePartition,
    mut from: u64,
    tx: mpsc::Sender<Chunk>,
    running: std::sync::Weak<Running>,
) {
    let Ok(topic) = TopicName::new(source.0.as_str()) else {
        return;
    };
    loop {
        if running.strong_count() == 0 {
            return;
        }
        // About what BATCH records take: the log reads max_bytes at once.
        let request = FetchRequest::new(Offset(from))
            .max_records(BATCH)
            .max_bytes(256 << 10)
            .max_wait(POLL);
        match log.fetch(&topic, PartitionId(source.1), request).await {
            Ok(f) => {
                if let Some(r) = running.upgrade() {
                    r.progress.lock().unreadable = None;
                }
                if f.next.0 == from {
                    continue;
                }
                from = f.next.0;
                let chunk = Chunk {
                    source: source.clone(),
                    records: f.records,
                    next: from,
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
            Err(LogError::OffsetOutOfRange { earliest, .. }) if earliest > from => {
                // Retention removed events the view had not read: go on from what is left.
                if let Some(r) = running.upgrade() {
                    r.progress.lock().unreadable = Some(format!(
                        "{} partition {}: events {from}..{earliest} were removed by retention before the view read them",
                        source.0, source.1
                    ));
                }
                from = earliest;
            }
            Err(e) => {
                if let Some(r) = running.upgrade() {
                    r.progress.lock().unreadable =
                        Some(format!("{} partition {}: {e}", source.0, source.1));
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn apply_loop(
    running: std::sync::Weak<Running>,
    mut rx: mpsc::Receiver<Chunk>,
    on_error: OnError,
) {
    let every = running
        .upgrade()
        .and_then(|r| r.checkpoint.as_ref().map(|c| c.every))
        .unwrap_or(Duration::from_secs(3600));
    let mut last_checkpoint = tokio::time::Instant::now();
    let mut dirty = false;
    loop {
        let first = match tokio::time::timeout_at(last_checkpoint + every, rx.recv()).await {
            Ok(Some(chunk)) => Some(chunk),
            Ok(None) => return,
            Err(_) => None,
        };
        if last_checkpoint.elapsed() >= every {
            last_checkpoint = tokio::time::Instant::now();
            if dirty && let Some(r) = running.upgrade() {
                dirty = false;
                if let Err(e) = r.write_checkpoint().await {
                    tracing::error!(view = %r.plan.name, error = %e, "view state not written");
                }
            }
        }
        let Some(first) = first else { continue };
        dirty = true;
        let mut chunks = vec![first];
        let mut records = chunks[0].records.len();
        while records < BATCH {
            match rx.try_recv() {
                Ok(c) => {
                    records += c.records.len();
                    chunks.push(c);
                }
                Err(_) => break,
            }
        }
        let Some(r) = running.upgrade() else { return };
        if r.progress.lock().stopped.is_some() {
            continue;
        }
        apply(&r, chunks, on_error);
    }
}

/// Applies chunks to the view; moves the offsets past what it took.
fn apply(r: &Running, chunks: Vec<Chunk>, on_error: OnError) {
    // (event type, event, where it came from)
    let mut events: Vec<(String, Value, u32, u64)> = Vec::new();
    let mut parse_errors = Vec::new();
    for c in &chunks {
        let lean = lean(&r.plan, &c.source.0);
        for rec in &c.records {
            match parse(rec, lean) {
                Ok(Some(v)) => events.push((c.source.0.clone(), v, c.source.1, rec.offset.0)),
                Ok(None) => {}
                Err(message) => parse_errors.push(EventError {
                    event_type: c.source.0.clone(),
                    partition: c.source.1,
                    offset: rec.offset.0,
                    message,
                }),
            }
        }
    }
    let batch: Vec<(&str, &Value)> = events.iter().map(|(t, v, _, _)| (t.as_str(), v)).collect();
    let applied = r.view.write().apply(&batch, on_error);
    let mut progress = r.progress.lock();
    let error_of = |i: usize, message: String| {
        let (t, _, p, o) = &events[i];
        EventError {
            event_type: t.clone(),
            partition: *p,
            offset: *o,
            message,
        }
    };
    let rejected: Vec<EventError> = applied
        .rejected
        .iter()
        .map(|x| error_of(x.index, x.message.clone()))
        .collect();
    progress.events += applied.taken as u64;
    if applied.taken < events.len() {
        // Stopped before an event: each partition advances to its first event not taken.
        let stop = error_of(
            applied.taken,
            applied
                .rejected
                .last()
                .map(|x| x.message.clone())
                .unwrap_or_default(),
        );
        let mut first_not_taken: BTreeMap<SourcePartition, u64> = BTreeMap::new();
        for (t, _, p, o) in &events[applied.taken..] {
            first_not_taken.entry((t.clone(), *p)).or_insert(*o);
        }
        for c in &chunks {
            let next = first_not_taken.get(&c.source).copied().unwrap_or(c.next);
            progress.next.insert(c.source.clone(), next);
        }
        tracing::error!(view = %r.plan.name, event_type = %stop.event_type, partition = stop.partition, offset = stop.offset, error = %stop.message, "view stopped at an event it cannot compute");
        progress.stopped = Some(stop);
    } else {
        for c in &chunks {
            progress.next.insert(c.source.clone(), c.next);
        }
        progress.skipped += (rejected.len() + parse_errors.len()) as u64;
    }
    for e in parse_errors.into_iter().chain(rejected) {
        tracing::warn!(view = %r.plan.name, event_type = %e.event_type, partition = e.partition, offset = e.offset, error = %e.message, "view left an event out");
        progress.errors.push(e);
    }
    let excess = progress.errors.len().saturating_sub(KEEP_ERRORS);
    progress.errors.drain(..excess);
    drop(progress);
    r.applied.send_modify(|n| *n += 1);
}

/// Whether the view reads only `data_op` and `data` of an event type's events (data
/// change events, no metadata field used): then the rest is skipped, not built.
fn lean(plan: &Plan, event_type: &str) -> bool {
    plan.scans
        .iter()
        .filter(|s| s.event_type == event_type)
        .all(|s| {
            s.info.data_change
                && s.columns
                    .iter()
                    .all(|p| !p.is_empty() && p[0] != "metadata")
        })
}

/// The part of a data change event a lean view reads.
#[derive(serde::Deserialize)]
struct DataChange {
    data_op: Option<String>,
    data: Option<Value>,
}

/// An event as JSON; a compaction tombstone as a delete of its key.
fn parse(rec: &StoredRecord, lean: bool) -> Result<Option<Value>, String> {
    match &rec.value {
        Some(v) if lean => {
            let d: DataChange = serde_json::from_slice(v).map_err(|e| format!("not JSON: {e}"))?;
            let mut event = serde_json::Map::new();
            if let Some(op) = d.data_op {
                event.insert("data_op".into(), Value::String(op));
            }
            if let Some(data) = d.data {
                event.insert("data".into(), data);
            }
            Ok(Some(Value::Object(event)))
        }
        Some(v) => serde_json::from_slice(v)
            .map(Some)
            .map_err(|e| format!("not JSON: {e}")),
        None => Ok(rec
            .key
            .as_deref()
            .map(|k| crate::source::tombstone(&String::from_utf8_lossy(k)))),
    }
}
