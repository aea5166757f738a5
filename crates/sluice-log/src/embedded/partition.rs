//! One partition: an ordered list of segments, the last one active, with group commit
//! for appends and lock-free-ish reads.
//!
//! Append path (group commit):
//!
//! ```text
//!  append() --enqueue--> queue --(first one in becomes leader)--> lead() on a blocking thread
//!                                   leader: take all queued batches, assign offsets,
//!                                   one write + one fdatasync, publish, reply to each
//! ```
//!
//! Readers never take the writer lock: they clone the segment list and read each
//! segment up to its published length. A failed write that cannot be undone, or any
//! failed fsync, poisons the partition: appends fail until the log is reopened.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, watch};

use super::config::{Durability, EmbeddedConfig};
use super::segment::{self, IndexBuilder, LiveIndex, Placed, Segment, segment_path};
use crate::error::{LogError, Result};
use crate::format::batch::{self, EncodedBatch};
use crate::format::index::SegmentSummary;
use crate::fs::{self, Fs, OpenMode};
use crate::log::{Appended, FetchRequest, PartitionOffsets};
use crate::types::{Offset, PartitionId, StoredRecord, Timestamp, TopicConfig, TopicName};

pub(crate) type Reply = oneshot::Sender<Result<Appended>>;

struct Pending {
    batch: EncodedBatch,
    reply: Reply,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    leader: bool,
    closed: bool,
}

struct Writer {
    active: Arc<Segment>,
    next_offset: u64,
    index: IndexBuilder,
    /// Timestamp of the active segment's first batch, for rolling by age.
    first_append_ms: Option<i64>,
}

pub(crate) struct Partition {
    pub topic: TopicName,
    pub id: PartitionId,
    pub(super) dir: PathBuf,
    pub(super) fs: Arc<dyn Fs>,
    pub(super) settings: Arc<EmbeddedConfig>,
    pub(super) config: Arc<RwLock<TopicConfig>>,
    pub(super) segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<Writer>,
    queue: Mutex<Queue>,
    hw: watch::Sender<u64>,
    poisoned: AtomicBool,
    dirty: AtomicBool,
    /// Held by retention and compaction, which both replace sealed segments.
    pub(super) maintenance: Mutex<()>,
    pub(super) needs_compaction: AtomicBool,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("topic", &self.topic)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The outcome of one read.
pub(crate) struct Read {
    pub records: Vec<StoredRecord>,
    pub next: Offset,
}

impl Partition {
    /// Opens (recovering) or creates the partition in `dir`.
    pub fn open(
        topic: TopicName,
        id: PartitionId,
        dir: PathBuf,
        fs: Arc<dyn Fs>,
        settings: Arc<EmbeddedConfig>,
        config: Arc<RwLock<TopicConfig>>,
    ) -> Result<Partition> {
        fs.create_dir_all(&dir).map_err(LogError::io(&dir))?;
        super::recovery::finish_interrupted_swaps(&*fs, &dir)?;
        let names = fs.read_dir(&dir).map_err(LogError::io(&dir))?;
        let mut bases: Vec<u64> = names
            .iter()
            .filter_map(|n| segment::parse_segment_name(n, segment::LOG_EXT))
            .collect();
        bases.sort_unstable();
        if bases.is_empty() {
            let path = segment_path(&dir, 0, segment::LOG_EXT);
            fs.open(&path, OpenMode::CreateTruncate)
                .map_err(LogError::io(&path))?;
            fs.sync_dir(&dir).map_err(LogError::io(&dir))?;
            bases.push(0);
        }
        let interval = settings.index_interval_bytes;
        let mut segments = Vec::with_capacity(bases.len());
        for (i, &base) in bases[..bases.len() - 1].iter().enumerate() {
            let seg =
                super::recovery::open_sealed_or_rebuild(&*fs, &dir, base, bases[i + 1], interval)?;
            segments.push(Arc::new(seg));
        }
        let last = bases[bases.len() - 1];
        let (active, index) = super::recovery::open_active(&*fs, &dir, last, interval)?;
        let first_append_ms = if active.is_empty() {
            None
        } else {
            Some(active.header_at(0)?.first_timestamp)
        };
        let next_offset = active.end_offset();
        let active = Arc::new(active);
        segments.push(active.clone());
        Ok(Partition {
            topic,
            id,
            dir,
            fs,
            settings,
            config,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                active,
                next_offset,
                index,
                first_append_ms,
            }),
            queue: Mutex::new(Queue::default()),
            hw: watch::Sender::new(next_offset),
            poisoned: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            maintenance: Mutex::new(()),
            needs_compaction: AtomicBool::new(true),
        })
    }

    fn poisoned_error(&self) -> LogError {
        LogError::Poisoned {
            topic: self.topic.to_string(),
            partition: self.id.0,
        }
    }

    fn poison(&self, why: &std::io::Error) {
        tracing::error!(topic = %self.topic, partition = self.id.0, error = %why,
            "partition refuses writes until the log is reopened");
        self.poisoned.store(true, Ordering::Release);
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Queues a batch. Returns the receiver of its result and whether the caller must
    /// start the leader (`lead`) because none is running.
    pub fn enqueue(
        &self,
        batch: EncodedBatch,
    ) -> Result<(oneshot::Receiver<Result<Appended>>, bool)> {
        let (reply, rx) = oneshot::channel();
        let mut q = self.queue.lock();
        if q.closed {
            return Err(LogError::TopicNotFound(self.topic.to_string()));
        }
        q.pending.push_back(Pending { batch, reply });
        let lead = !q.leader;
        q.leader = true;
        Ok((rx, lead))
    }

    /// Runs group commits until the queue is empty. Blocking: call on a thread that may
    /// block (`spawn_blocking`).
    pub fn lead(&self) {
        loop {
            let group = {
                let mut q = self.queue.lock();
                if q.pending.is_empty() {
                    q.leader = false;
                    return;
                }
                let mut bytes = 0;
                let mut group = Vec::new();
                while let Some(p) = q.pending.front() {
                    if !group.is_empty()
                        && bytes + p.batch.bytes.len() > self.settings.max_group_bytes
                    {
                        break;
                    }
                    bytes += p.batch.bytes.len();
                    group.extend(q.pending.pop_front());
                }
                group
            };
            self.commit(group);
        }
    }

    fn commit(&self, group: Vec<Pending>) {
        let mut w = self.writer.lock();
        if self.is_poisoned() {
            for p in group {
                let _ = p.reply.send(Err(self.poisoned_error()));
            }
            return;
        }
        let config = self.config.read().clone();
        let now = Timestamp::now().0;
        let total: usize = group.iter().map(|p| p.batch.bytes.len()).sum();
        let mut staged = Staged::new(w.active.len(), w.next_offset, total);
        let mut group = group.into_iter();
        while let Some(p) = group.next() {
            let size = p.batch.bytes.len() as u64;
            let seg_len = staged.start + staged.buf.len() as u64;
            let rel_end = staged.next + u64::from(p.batch.count) - w.active.base;
            let too_big = seg_len + size > config.segment_bytes || rel_end > u64::from(u32::MAX);
            let first = w
                .first_append_ms
                .or((!staged.buf.is_empty()).then_some(now));
            let too_old = config
                .segment_ms
                .zip(first)
                .is_some_and(|(ms, first)| now.saturating_sub(first) >= ms as i64);
            if seg_len > 0 && (too_big || too_old) {
                let rolled = self
                    .write_staged(&mut w, &mut staged)
                    .and_then(|()| self.roll(&mut w));
                if let Err(e) = rolled {
                    staged.fail(&e, self);
                    for p in std::iter::once(p).chain(group) {
                        let _ = p.reply.send(Err(self.error_like(&e)));
                    }
                    return;
                }
                staged = Staged::new(0, w.next_offset, total);
            }
            let mut bytes = p.batch.bytes;
            let base = staged.next;
            batch::set_base_offset(&mut bytes, base, p.batch.body_crc);
            let count = u64::from(p.batch.count);
            let pos = staged.start + staged.buf.len() as u64;
            let rel_base = (base - w.active.base) as u32;
            let placed = Placed {
                rel_base,
                rel_last: rel_base + (count as u32).saturating_sub(1),
                position: pos,
                len: size,
                max_timestamp: p.batch.max_timestamp,
            };
            w.index.on_batch(&placed, &mut staged.index);
            staged.buf.extend_from_slice(&bytes);
            staged.max_timestamp = staged.max_timestamp.max(p.batch.max_timestamp);
            staged.next += count;
            let offsets = (base..base + count).map(Offset).collect();
            staged.done.push((p.reply, offsets));
            if w.first_append_ms.is_none() {
                w.first_append_ms = Some(now);
            }
        }
        if let Err(e) = self.write_staged(&mut w, &mut staged) {
            staged.fail(&e, self);
        }
    }

    /// Rebuilds an error for a second recipient (errors are not Clone: they hold io::Error).
    fn error_like(&self, e: &LogError) -> LogError {
        match e {
            LogError::Poisoned { .. } => self.poisoned_error(),
            LogError::Io { path, source } => LogError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            other => LogError::InvalidRecord {
                reason: other.to_string(),
            },
        }
    }

    /// Writes the staged batches at the end of the active segment, syncs them if the
    /// durability asks for it, publishes them and answers their appenders.
    fn write_staged(&self, w: &mut Writer, staged: &mut Staged) -> Result<()> {
        if staged.buf.is_empty() {
            return Ok(());
        }
        let file = &w.active.file;
        let path = &w.active.path;
        if let Err(e) = fs::write_all_at(&**file, &staged.buf, staged.start) {
            // Undo a partial write; if even that fails the tail is unknown.
            if file.set_len(staged.start).is_err() {
                self.poison(&e);
            }
            return Err(LogError::Io {
                path: path.clone(),
                source: e,
            });
        }
        match self.settings.durability {
            Durability::Fsync => {
                if let Err(e) = file.sync_data() {
                    self.poison(&e);
                    return Err(self.poisoned_error());
                }
            }
            Durability::Interval | Durability::None => self.dirty.store(true, Ordering::Release),
        }
        let end = staged.start + staged.buf.len() as u64;
        w.active
            .publish(end, staged.next, staged.max_timestamp, &staged.index);
        w.next_offset = staged.next;
        self.hw.send_replace(staged.next);
        for (reply, offsets) in staged.done.drain(..) {
            let _ = reply.send(Ok(Appended { offsets }));
        }
        staged.buf.clear();
        staged.index = LiveIndex::default();
        staged.start = end;
        Ok(())
    }

    /// Seals the active segment (sync, write its index files) and starts a new one.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        let old = w.active.clone();
        if let Err(e) = old.file.sync_data() {
            self.poison(&e);
            return Err(self.poisoned_error());
        }
        let (offsets, times) = old.live_entries();
        let summary = SegmentSummary {
            end_offset: w.next_offset,
            ..old.summary()
        };
        segment::write_index_files(&*self.fs, &self.dir, &summary, &offsets, &times, "")?;
        let sealed = Arc::new(old.sealed_from_files(&*self.fs, &self.dir)?);
        let base = w.next_offset;
        let path = segment_path(&self.dir, base, segment::LOG_EXT);
        let file = self
            .fs
            .open(&path, OpenMode::CreateTruncate)
            .map_err(LogError::io(&path))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(LogError::io(&self.dir))?;
        let active = Arc::new(Segment::live(
            base,
            path,
            file,
            SegmentSummary {
                base_offset: base,
                end_offset: base,
                log_bytes: 0,
                max_timestamp: i64::MIN,
            },
            LiveIndex::default(),
        ));
        {
            let mut segs = self.segments.write();
            if let Some(last) = segs.last_mut() {
                *last = sealed;
            }
            segs.push(active.clone());
        }
        w.active = active;
        w.index = IndexBuilder::new(self.settings.index_interval_bytes);
        w.first_append_ms = None;
        self.needs_compaction.store(true, Ordering::Release);
        Ok(())
    }

    /// Seals the active segment now if it holds data (tests and compaction use it).
    pub fn roll_now(&self) -> Result<()> {
        let mut w = self.writer.lock();
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        if w.active.is_empty() {
            return Ok(());
        }
        self.roll(&mut w)
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let earliest = self.segments.read().first().map_or(0, |s| s.base);
        PartitionOffsets {
            earliest: Offset(earliest),
            latest: Offset(*self.hw.borrow()),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.hw.subscribe()
    }

    /// Reads records at or after `req.from`. Blocking I/O.
    pub fn read(&self, req: &FetchRequest) -> Result<Read> {
        let segs = self.segments.read().clone();
        let earliest = segs.first().map_or(0, |s| s.base);
        let latest = *self.hw.borrow();
        let mut from = req.from.0;
        if from < earliest || from > latest {
            return Err(LogError::OffsetOutOfRange {
                topic: self.topic.to_string(),
                partition: self.id.0,
                requested: from,
                earliest,
                latest,
            });
        }
        let max_records = req.max_records.max(1);
        let mut records = Vec::new();
        let first = segs.partition_point(|s| s.base <= from).saturating_sub(1);
        for seg in &segs[first..] {
            // end before len: a reader that sees a new end also sees its bytes.
            let end = seg.end_offset();
            let len = seg.len();
            if from >= end {
                continue;
            }
            let mut pos = seg.position_for(from)?;
            while pos < len {
                let h = seg.header_at(pos)?;
                if h.last_offset() >= from {
                    break;
                }
                pos += h.total_len() as u64;
            }
            if pos < len {
                'batches: for (h, bytes) in seg.read_batches(pos, req.max_bytes)? {
                    let decoded =
                        batch::decode_records(&bytes, &h).map_err(|e| LogError::Corrupt {
                            path: seg.path.clone(),
                            position: pos,
                            reason: e.to_string(),
                        })?;
                    for r in decoded.into_iter().filter(|r| r.offset.0 >= from) {
                        records.push(r);
                        if records.len() >= max_records {
                            break 'batches;
                        }
                    }
                }
            }
            if let Some(last) = records.last() {
                return Ok(Read {
                    next: Offset(last.offset.0 + 1),
                    records,
                });
            }
            from = from.max(end);
        }
        Ok(Read {
            records,
            next: Offset(from.min(latest.max(req.from.0))),
        })
    }

    /// The first offset with a timestamp at or after `at`. Blocking I/O.
    pub fn offset_for_timestamp(&self, at: Timestamp) -> Result<Option<Offset>> {
        let segs = self.segments.read().clone();
        for seg in segs.iter().filter(|s| s.max_timestamp() >= at.0) {
            let mut pos = seg.position_for_time(at.0)?;
            loop {
                let batches = seg.read_batches(pos, 1 << 20)?;
                if batches.is_empty() {
                    break;
                }
                for (h, bytes) in batches {
                    pos += h.total_len() as u64;
                    if h.max_timestamp < at.0 {
                        continue;
                    }
                    let records =
                        batch::decode_records(&bytes, &h).map_err(|e| LogError::Corrupt {
                            path: seg.path.clone(),
                            position: pos,
                            reason: e.to_string(),
                        })?;
                    if let Some(r) = records.iter().find(|r| r.timestamp >= at) {
                        return Ok(Some(r.offset));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Fsyncs unsynced appends (interval durability, flush, close).
    pub fn sync(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let active = self.writer.lock().active.clone();
        active.file.sync_data().map_err(|e| {
            self.poison(&e);
            self.poisoned_error()
        })
    }

    /// Stops accepting appends, waits for queued ones, syncs and writes the active
    /// segment's index so the next open needs no scan.
    pub fn close(&self) -> Result<()> {
        self.queue.lock().closed = true;
        while self.queue.lock().leader {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let w = self.writer.lock();
        if self.is_poisoned() {
            return Ok(());
        }
        w.active
            .file
            .sync_data()
            .map_err(LogError::io(&w.active.path))?;
        let (offsets, times) = w.active.live_entries();
        let summary = SegmentSummary {
            end_offset: w.next_offset,
            ..w.active.summary()
        };
        segment::write_index_files(&*self.fs, &self.dir, &summary, &offsets, &times, "")?;
        self.fs.sync_dir(&self.dir).map_err(LogError::io(&self.dir))
    }

    /// Marks the partition gone (topic deleted): later appends fail.
    pub fn shut(&self) {
        self.queue.lock().closed = true;
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.len()).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// Index entries held in memory (active segment only).
    pub fn memory_index_entries(&self) -> usize {
        self.segments
            .read()
            .last()
            .map_or(0, |s| s.live_index_len())
    }
}

/// Batches assembled for one write.
struct Staged {
    start: u64,
    next: u64,
    buf: Vec<u8>,
    index: LiveIndex,
    max_timestamp: i64,
    done: Vec<(Reply, Vec<Offset>)>,
}

impl Staged {
    fn new(start: u64, next: u64, capacity: usize) -> Staged {
        Staged {
            start,
            next,
            buf: Vec::with_capacity(capacity),
            index: LiveIndex::default(),
            max_timestamp: i64::MIN,
            done: Vec::new(),
        }
    }

    fn fail(&mut self, e: &LogError, p: &Partition) {
        for (reply, _) in self.done.drain(..) {
            let _ = reply.send(Err(p.error_like(e)));
        }
    }
}
