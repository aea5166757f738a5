//! One view kept fresh from the log: a reader task per source partition feeds one
//! apply loop, which takes batches into the view and records, per partition, the
//! offset the view has applied up to. Reads of rows and progress take short locks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use sluice_log::{FetchRequest, Log, LogError, Offset, PartitionId, TopicName};
use tokio::sync::{Notify, mpsc, watch};

use crate::plan::Plan;
use crate::publish::{Ack, Publish, Takeover, Unsent, acked};
use crate::source::Event;
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
    /// Keys whose visible row the applied events changed (added, replaced or
    /// removed), counted once per step: how much the view churns.
    pub row_changes: u64,
    /// The engine's changes behind them (`Applied::engine_changes`): its work.
    pub engine_changes: u64,
    /// Events left out (policy skip) since the view started here.
    pub skipped: u64,
    pub errors: Vec<EventError>,
    /// Why the view stopped applying (policy stop), if it did.
    pub stopped: Option<EventError>,
    /// A source that cannot be read now, and why.
    pub unreadable: Option<String>,
    /// The state file the view started from (none: the beginning of the log).
    pub loaded_from: Option<String>,
    /// Change events published to the derived event type.
    pub published: u64,
    /// Why the last changes could not be published.
    pub unpublished: Option<String>,
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
    /// Where the view's changes go as data change events (set while it serves).
    pub publish: Mutex<Option<Publish>>,
    /// A takeover for the apply loop to publish before anything else (`publish.rs`).
    takeover: Mutex<Option<Takeover>>,
    /// Wakes the apply loop for a takeover.
    wake: Arc<Notify>,
    /// A takeover is being prepared or waits for the apply loop (`lease.rs`).
    pub(crate) taking_over: AtomicBool,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The buffer the last state was encoded into, kept for the next (about a
    /// tenth of the state's memory; encoding into fresh memory took twice as long).
    spare: Arc<Mutex<Vec<u8>>>,
    /// The last checkpoint taken by the apply loop, if any yet.
    pub last_checkpoint: Mutex<Option<LastCheckpoint>>,
    /// Held while the state file is encoded and written: one write at a time, and
    /// the last to take it writes the newest state.
    writing: Arc<tokio::sync::Mutex<()>>,
    /// The order the sources are read in while the view catches up, and per rank how
    /// many partitions are still catching up (`Turn`).
    ranks: BTreeMap<String, usize>,
    pending: Arc<watch::Sender<Vec<usize>>>,
}

/// Writing a view's state and offsets to disk, whole.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: std::path::PathBuf,
    pub every: Duration,
    pub sql: String,
}

/// The last checkpoint: what the view waited for, and when the next one comes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LastCheckpoint {
    /// The state's size.
    pub bytes: u64,
    /// How long the view stopped applying while its state was encoded.
    pub pause: Duration,
    /// Until the next one (`every`, or longer for a state slow to encode).
    pub interval: Duration,
}

impl Running {
    /// Starts telling consumers: the apply loop publishes the takeover next.
    pub fn take_over(&self, t: Takeover) {
        self.taking_over.store(true, Ordering::SeqCst);
        *self.takeover.lock() = Some(t);
        self.wake.notify_one();
    }

    /// Publishes a pending takeover (in the apply loop).
    async fn publish_takeover(&self) {
        let Some(t) = self.takeover.lock().take() else {
            return;
        };
        let ack = t.run(self);
        let result = acked(ack).await;
        self.published(result);
        self.taking_over.store(false, Ordering::SeqCst);
    }

    /// Counts what the outlet published, or says why it did not.
    fn published(&self, result: Result<u64, Unsent>) {
        match result {
            Ok(n) => self.progress.lock().published += n,
            // The lease moved on: consumers hear from this node again only through
            // a takeover.
            Err(Unsent::NotPublisher) => {
                let mut p = self.publish.lock();
                if p.as_ref().is_some_and(|p| !p.current()) {
                    *p = None;
                }
            }
            Err(Unsent::Failed(e)) => {
                tracing::error!(view = %self.plan.name, error = %e, "view changes not published");
                self.progress.lock().unpublished = Some(e);
            }
        }
    }

    /// The sources in the order a catch-up reads them, and those still waiting for
    /// one before them to catch up (none once every source has).
    pub fn catch_up(&self) -> (Vec<String>, Vec<String>) {
        let mut order: Vec<(&String, usize)> = self.ranks.iter().map(|(t, r)| (t, *r)).collect();
        order.sort_by_key(|(_, r)| *r);
        let reading = self.pending.borrow().iter().position(|n| *n > 0);
        let waiting = order
            .iter()
            .filter(|(_, r)| reading.is_some_and(|at| *r > at))
            .map(|(t, _)| t.to_string())
            .collect();
        (order.into_iter().map(|(t, _)| t.clone()).collect(), waiting)
    }

    /// The view's state and the offsets it reflects, as bytes (`snapshot.rs`).
    pub fn state_bytes(&self, sql: &str) -> Vec<u8> {
        // The apply loop changes both under the view's write lock: read them together.
        let view = self.view.read();
        let offsets = self.progress.lock().next.clone();
        let buf = std::mem::take(&mut *self.spare.lock());
        crate::snapshot::encode_into(&view, sql, &offsets, buf)
    }

    /// Writes the state now (also on a clean shutdown), after a write under way.
    pub async fn write_checkpoint(&self) -> std::io::Result<()> {
        let Some(c) = &self.checkpoint else {
            return Ok(());
        };
        let _writing = self.writing.lock().await;
        let bytes = self.state_bytes(&c.sql);
        let (path, spare) = (c.path.clone(), self.spare.clone());
        tokio::task::spawn_blocking(move || {
            let written = crate::snapshot::write_file(&path, &bytes);
            *spare.lock() = bytes;
            written
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

impl Running {
    /// Encodes the state and writes it in the background: the apply loop waits for
    /// the encoding (on the blocking pool: a runtime worker busy for ~0.1 s would hold
    /// up the tasks queued behind it, HTTP and streams too), then goes on while the
    /// file is written and synced (a sync behind a busy log took ~0.3 s, and every
    /// read waiting for the view with it). The state's size (0 for a view without a
    /// state file); none while the previous write is under way.
    async fn checkpoint_in_background(self: &Arc<Self>) -> Option<u64> {
        let Some(c) = self.checkpoint.clone() else {
            return Some(0);
        };
        let Ok(writing) = self.writing.clone().try_lock_owned() else {
            return None;
        };
        let r = self.clone();
        let encoding = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let bytes = r.state_bytes(&c.sql);
            let ms = started.elapsed().as_millis() as u64;
            tracing::debug!(view = %r.plan.name, bytes = bytes.len(), ms, "view state encoded (the view waited)");
            let (name, spare, len) = (r.plan.name.clone(), r.spare.clone(), bytes.len());
            tokio::task::spawn_blocking(move || {
                let _writing = writing;
                if let Err(e) = crate::snapshot::write_file(&c.path, &bytes) {
                    tracing::error!(view = %name, error = %e, "view state not written");
                }
                *spare.lock() = bytes;
            });
            len as u64
        });
        // Only a panic ends it early; the view goes on without this checkpoint then.
        Some(encoding.await.unwrap_or(0))
    }
}

/// At most this share of a view's time goes to encoding its checkpoints (the apply
/// loop pauses meanwhile): a state that takes 0.1 s to encode is written every 40 s
/// at the most, whatever `every` says. Reads waiting for the view see the pause and
/// the catch-up after it (about twice the pause), so this bounds how many of them
/// do: at 1% a 20 MB view under load (encoded in 0.1-0.2 s every 10-20 s) delayed
/// more than 1% of reads by over 100 ms.
const CHECKPOINT_SHARE: f64 = 0.0025;

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

/// A reader's place in the order a view's sources are read in while it catches up
/// (`Plan::catch_up_ranks`): it starts once every partition of a lower rank has
/// reached the log's end as it was when that partition's reading started, and counts
/// itself out of its rank when it has too (or ends, or cannot read). Partitions that
/// are already at the end (a restart) hold nothing up.
struct Turn {
    rank: usize,
    /// Per rank, how many partitions are still catching up.
    pending: Arc<watch::Sender<Vec<usize>>>,
    caught_up: bool,
}

impl Turn {
    async fn wait(&self) {
        let rank = self.rank;
        let mut pending = self.pending.subscribe();
        // Only an error if every sender is gone, with the readers: nothing to wait for.
        let _ = pending
            .wait_for(|p| p[..rank].iter().all(|n| *n == 0))
            .await;
    }

    fn caught_up(&mut self) {
        if !std::mem::replace(&mut self.caught_up, true) {
            self.pending.send_modify(|p| p[self.rank] -= 1);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.caught_up();
    }
}

/// Records read from one source partition.
struct Chunk {
    source: SourcePartition,
    /// Each record's offset and what it is to the view (decoded by the reader, so
    /// the apply loop only applies).
    events: Vec<(u64, Result<Event, String>)>,
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
        publish: Option<Publish>,
    ) -> Arc<Running> {
        let plan = view.plan().clone();
        let ranks = plan.catch_up_ranks();
        let rank = |t: &str| ranks.get(t).copied().unwrap_or(0);
        let mut pending = vec![0; ranks.values().max().map_or(1, |m| m + 1)];
        for (t, _) in start.keys() {
            pending[rank(t)] += 1;
        }
        let pending = Arc::new(watch::channel(pending).0);
        let turns: Vec<Turn> = start
            .keys()
            .map(|(t, _)| Turn {
                rank: rank(t),
                pending: pending.clone(),
                caught_up: false,
            })
            .collect();
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
            publish: Mutex::new(publish),
            takeover: Mutex::new(None),
            wake: Arc::new(Notify::new()),
            taking_over: AtomicBool::new(false),
            task: Mutex::new(None),
            writing: Arc::default(),
            spare: Arc::default(),
            last_checkpoint: Mutex::new(None),
            ranks,
            pending,
        });
        let (tx, rx) = mpsc::channel(16);
        for ((source, from), turn) in start.into_iter().zip(turns) {
            tokio::spawn(read(
                log.clone(),
                source,
                from,
                Some(turn),
                tx.clone(),
                Arc::downgrade(&running),
            ));
        }
        tokio::spawn(watch_partitions(log, tx, Arc::downgrade(&running)));
        let task = tokio::spawn(apply_loop(Arc::downgrade(&running), rx, on_error));
        *running.task.lock() = Some(task);
        running
    }
}

/// How often a view looks for partitions added to its sources.
const NEW_PARTITIONS_EVERY: Duration = Duration::from_secs(2);

/// Reads partitions added to a source while the view runs, from their beginning.
async fn watch_partitions(
    log: Arc<dyn Log>,
    tx: mpsc::Sender<Chunk>,
    running: std::sync::Weak<Running>,
) {
    loop {
        tokio::time::sleep(NEW_PARTITIONS_EVERY).await;
        let Some(r) = running.upgrade() else { return };
        let sources: std::collections::BTreeSet<String> =
            r.plan.scans.iter().map(|s| s.event_type.clone()).collect();
        for event_type in sources {
            let Ok(topic) = TopicName::new(event_type.as_str()) else {
                continue;
            };
            let Ok(info) = log.topic(&topic).await else {
                continue;
            };
            for p in 0..info.config.partitions {
                let key = (event_type.clone(), p);
                if r.progress.lock().next.contains_key(&key) {
                    continue;
                }
                let Ok(o) = log.offsets(&topic, PartitionId(p)).await else {
                    continue;
                };
                tracing::info!(view = %r.plan.name, %event_type, partition = p, "a view reads a new partition");
                r.progress.lock().next.insert(key.clone(), o.earliest.0);
                tokio::spawn(read(
                    log.clone(),
                    key,
                    o.earliest.0,
                    None,
                    tx.clone(),
                    Arc::downgrade(&r),
                ));
            }
        }
    }
}

/// Reads one source partition from `from` into the apply loop, until the view goes.
async fn read(
    log: Arc<dyn Log>,
    source: SourcePartition,
    mut from: u64,
    mut turn: Option<Turn>,
    tx: mpsc::Sender<Chunk>,
    running: std::sync::Weak<Running>,
) {
    let Ok(topic) = TopicName::new(source.0.as_str()) else {
        return;
    };
    let Some(decoders) = running.upgrade().map(|r| r.view.read().decoders()) else {
        return;
    };
    // Where this partition's catch-up ends: the log's end when its reading starts.
    let mut end = None;
    if let Some(t) = &mut turn {
        t.wait().await;
        end = log
            .offsets(&topic, PartitionId(source.1))
            .await
            .ok()
            .map(|o| o.latest.0);
    }
    loop {
        if end.is_none_or(|end| from >= end)
            && let Some(t) = &mut turn
        {
            t.caught_up();
        }
        if running.strong_count() == 0 {
            return;
        }
        // Several batches at once (fewer reads of a log batch the last fetch ended
        // inside), handed on BATCH records at a time.
        let request = FetchRequest::new(Offset(from))
            .max_records(4 * BATCH)
            .max_bytes(1 << 20)
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
                let mut events: Vec<(u64, Result<Event, String>)> = f
                    .records
                    .into_iter()
                    .filter_map(|rec| {
                        let event =
                            decoders.decode(&source.0, rec.value.as_deref(), rec.key.as_deref())?;
                        Some((rec.offset.0, event))
                    })
                    .collect();
                let mut pieces = Vec::new();
                while events.len() > BATCH {
                    let rest = events.split_off(BATCH);
                    let next = rest[0].0;
                    pieces.push((std::mem::replace(&mut events, rest), next));
                }
                pieces.push((events, from));
                for (events, next) in pieces {
                    let chunk = Chunk {
                        source: source.clone(),
                        events,
                        next,
                    };
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
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
                // A source that cannot be read holds up no other.
                if let Some(t) = &mut turn {
                    t.caught_up();
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
    let Some((wake, name)) = running
        .upgrade()
        .map(|r| (r.wake.clone(), r.plan.name.clone()))
    else {
        return;
    };
    // Views started together (a server's start) do not checkpoint together: each
    // view's first one comes at its own point of the interval, by its name. (Three
    // views encoding at once on two cores took twice as long each.)
    let phase = f64::from(crc32c::crc32c(name.as_bytes())) / f64::from(u32::MAX);
    let now = tokio::time::Instant::now();
    let mut last_checkpoint = now.checked_sub(every.mul_f64(phase)).unwrap_or(now);
    // The interval between checkpoints: `every`, or longer when encoding the state
    // pauses the view for longer than CHECKPOINT_SHARE of it.
    let mut interval = every;
    let mut dirty = false;
    loop {
        let first = tokio::select! {
            c = tokio::time::timeout_at(last_checkpoint + interval, rx.recv()) => match c {
                Ok(Some(chunk)) => Some(chunk),
                Ok(None) => return,
                Err(_) => None,
            },
            _ = wake.notified() => None,
        };
        if let Some(r) = running.upgrade() {
            r.publish_takeover().await;
        }
        if last_checkpoint.elapsed() >= interval {
            match running.upgrade() {
                Some(r) if dirty => {
                    let now = tokio::time::Instant::now();
                    if let Some(bytes) = r.checkpoint_in_background().await {
                        last_checkpoint = now;
                        dirty = false;
                        let pause = now.elapsed();
                        interval = every.max(pause.mul_f64(1.0 / CHECKPOINT_SHARE));
                        if r.checkpoint.is_some() {
                            *r.last_checkpoint.lock() = Some(LastCheckpoint {
                                bytes,
                                pause,
                                interval,
                            });
                        }
                    } else {
                        // The previous write is under way: look again in 50 ms.
                        let retry = (now + Duration::from_millis(50)).checked_sub(interval);
                        last_checkpoint = retry.unwrap_or(now);
                    }
                }
                _ => last_checkpoint = tokio::time::Instant::now(),
            }
        }
        let Some(first) = first else { continue };
        dirty = true;
        let mut chunks = vec![first];
        let mut records = chunks[0].events.len();
        while records < BATCH {
            match rx.try_recv() {
                Ok(c) => {
                    records += c.events.len();
                    chunks.push(c);
                }
                Err(_) => break,
            }
        }
        let Some(r) = running.upgrade() else { return };
        if r.progress.lock().stopped.is_some() {
            continue;
        }
        if let Some(ack) = apply(&r, chunks, on_error) {
            r.published(acked(ack).await);
        }
    }
}

/// Applies chunks to the view; moves the offsets past what it took.
fn apply(r: &Running, mut chunks: Vec<Chunk>, on_error: OnError) -> Option<Ack> {
    // (its chunk, event, offset)
    let mut events: Vec<(usize, Event, u64)> = Vec::new();
    let mut parse_errors = Vec::new();
    for (i, c) in chunks.iter_mut().enumerate() {
        for (offset, event) in c.events.drain(..) {
            match event {
                Ok(v) => events.push((i, v, offset)),
                Err(message) => parse_errors.push(EventError {
                    event_type: c.source.0.clone(),
                    partition: c.source.1,
                    offset,
                    message,
                }),
            }
        }
    }
    let batch: Vec<(&str, &Event)> = events
        .iter()
        .map(|(c, v, _)| (chunks[*c].source.0.as_str(), v))
        .collect();
    let (applied, changed, publishing) = {
        let mut view = r.view.write();
        let mut applied = view.apply_events(&batch, on_error);
        let changed = applied.changes.len() as u64;
        // Queued under the view's lock, in the order of the steps: a handover
        // (blue/green) stops it there too. The outlet makes the events.
        let publishing = r
            .publish
            .lock()
            .as_ref()
            .map(|p| p.queue_changes(&r.plan, std::mem::take(&mut applied.changes)));
        (applied, changed, publishing)
    };
    let mut progress = r.progress.lock();
    let error_of = |i: usize, message: String| {
        let (c, _, o) = &events[i];
        EventError {
            event_type: chunks[*c].source.0.clone(),
            partition: chunks[*c].source.1,
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
    progress.row_changes += changed;
    progress.engine_changes += applied.engine_changes;
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
        for (c, _, o) in &events[applied.taken..] {
            first_not_taken
                .entry(chunks[*c].source.clone())
                .or_insert(*o);
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
    publishing
}
