//! One partition: an ordered list of segments, the last one active. Appends go through
//! the group commit in `commit.rs`; readers never take the writer lock: they clone the
//! segment list and read each segment up to its published length. A failed write that
//! cannot be undone, or any failed fsync, poisons the partition: appends fail until the
//! log is reopened.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::commit::{Queue, SyncStage};
use super::committer::Committer;
use super::config::EmbeddedConfig;
use super::recovery::Opened;
use super::segment::{self, IndexBuilder, LiveIndex, Segment, segment_path};
use crate::error::{LogError, Result};
use crate::format::batch;
use crate::format::index::SegmentSummary;
use crate::fs::{Fs, OpenMode};
use crate::log::{FetchRequest, PartitionOffsets};
use crate::types::{Offset, PartitionId, StoredRecord, Timestamp, TopicConfig, TopicName};

pub(super) struct Writer {
    pub active: Arc<Segment>,
    /// Bytes written to the active segment (published or still being synced).
    pub written_len: u64,
    /// The end of the zeros written ahead of `written_len` (`preallocate_bytes`).
    pub zeroed_end: u64,
    /// The offset the next batch gets.
    pub next_offset: u64,
    pub index: IndexBuilder,
    /// Timestamp of the active segment's first batch, for rolling by age.
    pub first_append_ms: Option<i64>,
    /// The group-commit buffer, kept between groups.
    pub scratch: Vec<u8>,
}

pub(crate) struct Partition {
    pub topic: TopicName,
    pub id: PartitionId,
    pub(super) dir: PathBuf,
    pub(super) fs: Arc<dyn Fs>,
    pub(super) settings: Arc<EmbeddedConfig>,
    /// The log's writer and syncer threads.
    pub(super) committer: Arc<Committer>,
    pub(super) config: Arc<RwLock<TopicConfig>>,
    pub(super) segments: RwLock<Vec<Arc<Segment>>>,
    pub(super) writer: Mutex<Writer>,
    pub(super) queue: Mutex<Queue>,
    /// Written batches waiting for their fsync (durability = fsync).
    pub(super) stage: Mutex<SyncStage>,
    /// Held while syncing and publishing: keeps publication in write order.
    pub(super) sync_lock: Mutex<()>,
    pub(super) hw: watch::Sender<u64>,
    poisoned: AtomicBool,
    pub(super) dirty: AtomicBool,
    /// Held by retention, compaction and sealing, which all replace segments.
    pub(super) maintenance: Mutex<()>,
    /// Rolled segments not sealed yet.
    unsealed: Mutex<Vec<Arc<Segment>>>,
    /// The last sealed segment's live index memory, for the next active segment.
    spare_index: Mutex<LiveIndex>,
    pub(super) needs_compaction: AtomicBool,
    /// Set when its topic is deleted: from then on nothing writes in `dir`, which a
    /// topic created with the same name may own (`remove`).
    removed: AtomicBool,
    /// The wal generation this partition last wrote a record in (`wal.rs`).
    pub(super) wal_generation: AtomicU64,
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
        committer: Arc<Committer>,
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
        let mut last = bases[bases.len() - 1];
        for (i, &base) in bases[..bases.len() - 1].iter().enumerate() {
            match super::recovery::open_sealed_or_rebuild(&*fs, &dir, base, bases[i + 1], interval)?
            {
                Opened::Sealed(seg) => segments.push(Arc::new(seg)),
                Opened::Damaged => {
                    super::recovery::cut_after(&*fs, &dir, &bases[i + 1..])?;
                    last = base;
                    break;
                }
            }
        }
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
            committer,
            config,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                written_len: active.len(),
                zeroed_end: active.len(),
                active,
                next_offset,
                index,
                first_append_ms,
                scratch: Vec::new(),
            }),
            queue: Mutex::new(Queue::default()),
            stage: Mutex::new(SyncStage::default()),
            sync_lock: Mutex::new(()),
            hw: watch::Sender::new(next_offset),
            poisoned: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            maintenance: Mutex::new(()),
            unsealed: Mutex::new(Vec::new()),
            spare_index: Mutex::new(LiveIndex::default()),
            needs_compaction: AtomicBool::new(true),
            removed: AtomicBool::new(false),
            wal_generation: AtomicU64::new(0),
        })
    }

    pub(super) fn poisoned_error(&self) -> LogError {
        LogError::Poisoned {
            topic: self.topic.to_string(),
            partition: self.id.0,
        }
    }

    pub(super) fn poison(&self, why: &std::io::Error) {
        tracing::error!(topic = %self.topic, partition = self.id.0, error = %why,
            "partition refuses writes until the log is reopened");
        self.poisoned.store(true, Ordering::Release);
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Starts a new active segment. Sealing the old one (fsync, index files) happens in
    /// the background (`seal_pending`), so appends only wait for a file creation. A
    /// crash before it is sealed leaves a segment without index files, which recovery
    /// rebuilds by scanning it.
    pub(super) fn roll(self: &Arc<Self>, w: &mut Writer) -> Result<()> {
        self.drain_syncs()?;
        self.cut_zeros(w)?;
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
            std::mem::take(&mut *self.spare_index.lock()),
        ));
        // Listed as unsealed before its successor is listed: a wal checkpoint reads
        // the list of segments, then the unsealed ones (`sync_for_checkpoint`).
        self.unsealed.lock().push(w.active.clone());
        self.segments.write().push(active.clone());
        w.active = active;
        w.written_len = 0;
        w.zeroed_end = 0;
        w.index = IndexBuilder::new(self.settings.index_interval_bytes);
        w.first_append_ms = None;
        // Rolls happen on the writer thread, which is no runtime thread: the runtime
        // the log was opened on is asked to seal in the background.
        match self.committer.runtime() {
            Some(rt) => {
                let p = self.clone();
                drop(rt.spawn_blocking(move || p.seal_logged()));
            }
            None => self.seal_pending()?,
        }
        Ok(())
    }

    /// Removes the zeros written ahead of the active segment's data: a segment that
    /// is sealed or closed ends with its last batch (its index files say how long it
    /// is). Should the cut not reach the disk before a crash, recovery finds zeros
    /// after the last batch, which it knows for what they are.
    fn cut_zeros(&self, w: &mut Writer) -> Result<()> {
        if w.zeroed_end > w.written_len {
            w.active
                .file
                .set_len(w.written_len)
                .map_err(LogError::io(&w.active.path))?;
            w.zeroed_end = w.written_len;
        }
        Ok(())
    }

    fn seal_logged(&self) {
        if let Err(e) = self.seal_pending() {
            tracing::error!(topic = %self.topic, partition = self.id.0, error = %e,
                "sealing a segment failed; the next open rebuilds its indexes");
        }
    }

    /// Seals rolled segments: fsync, write their index files, swap in their sealed form
    /// (indexes read from files, not held in memory). Segments that retention or
    /// compaction replaced meanwhile are skipped.
    pub(super) fn seal_pending(&self) -> Result<()> {
        let _m = self.maintenance.lock();
        if self.is_removed() {
            return Ok(());
        }
        // Each stays listed until synced: a wal checkpoint syncs the listed ones.
        let pending = self.unsealed.lock().clone();
        for seg in pending {
            let listed = self.segments.read().iter().any(|s| Arc::ptr_eq(s, &seg));
            if listed && let Err(e) = seg.file.sync_data() {
                self.poison(&e);
                return Err(self.poisoned_error());
            }
            self.unsealed.lock().retain(|s| !Arc::ptr_eq(s, &seg));
            if !listed {
                continue;
            }
            let summary = seg.summary();
            seg.with_live_entries(|offsets, times| {
                segment::write_index_files(&*self.fs, &self.dir, &summary, offsets, times, "")
            })?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(LogError::io(&self.dir))?;
            let sealed = Arc::new(seg.sealed_from_files(&*self.fs, &self.dir)?);
            {
                let mut segs = self.segments.write();
                if let Some(slot) = segs.iter_mut().find(|s| Arc::ptr_eq(s, &seg)) {
                    *slot = sealed;
                }
            }
            *self.spare_index.lock() = seg.take_live_index();
        }
        self.needs_compaction.store(true, Ordering::Release);
        Ok(())
    }

    /// Fsyncs every segment the partition may have written since the last wal
    /// checkpoint: the active one and those rolled but not sealed yet. Errors poison
    /// the partition (a deleted or closed one is left alone). Takes no writer lock:
    /// the writer thread may be waiting for this checkpoint while holding one. A roll
    /// lists the old segment as unsealed before it lists the new one, so reading in
    /// the other order cannot miss a segment (a sealed one was synced).
    pub(super) fn sync_for_checkpoint(&self) {
        let active = self.segments.read().last().cloned();
        let files: Vec<_> = {
            let unsealed = self.unsealed.lock();
            unsealed
                .iter()
                .chain(active.as_ref())
                .map(|s| s.file.clone())
                .collect()
        };
        for file in files {
            if let Err(e) = file.sync_data() {
                if !self.queue.lock().closed {
                    self.poison(&e);
                }
                return;
            }
        }
    }

    /// Rolls the active segment now if it holds data, and seals it before returning
    /// (so compaction and retention may act on everything written so far).
    pub fn roll_now(self: &Arc<Self>) -> Result<()> {
        let mut w = self.writer.lock();
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        if self.is_removed() {
            return Err(LogError::TopicNotFound(self.topic.to_string()));
        }
        if !w.active.is_empty() {
            self.roll(&mut w)?;
        }
        drop(w);
        self.seal_pending()
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

    /// Whether a read from `from` starts in the last [`HOT_BYTES`] of the active
    /// segment: bytes written moments ago, still in the page cache, which the
    /// caller's thread copies faster than a hand-over to a blocking thread and back
    /// (two wake-ups, each a scheduling delay on a busy machine).
    pub fn reads_hot(&self, from: u64) -> bool {
        let segs = self.segments.read();
        let Some(active) = segs.last() else {
            return false;
        };
        from >= active.base
            && active
                .live_position_for(from)
                .is_some_and(|pos| active.len().saturating_sub(pos) <= HOT_BYTES)
    }

    /// Reads records at or after `req.from`. Blocking I/O: callers on a runtime
    /// read here directly only what [`Partition::reads_hot`] says is hot.
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
            let mut first = None;
            while pos < len {
                let h = seg.header_at(pos)?;
                if h.last_offset() >= from {
                    first = Some(h);
                    break;
                }
                pos += h.total_len() as u64;
            }
            if let Some(h) = first {
                let budget = read_budget(&h, from, max_records - records.len(), req.max_bytes);
                let batches = seg.read_batches(pos, budget)?;
                let count: usize = batches.iter().map(|(h, _)| h.record_count as usize).sum();
                records.reserve(count.min(max_records - records.len()));
                for (h, bytes) in batches {
                    if records.len() >= max_records {
                        break;
                    }
                    batch::decode_records_into(&bytes, &h, from, max_records, &mut records)
                        .map_err(|e| seg.corrupt(pos, e))?;
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
                        batch::decode_records(&bytes, &h).map_err(|e| seg.corrupt(pos, e))?;
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
        while self.queue.lock().scheduled {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut w = self.writer.lock();
        if self.is_poisoned() || self.drain_syncs().is_err() {
            return Ok(());
        }
        self.seal_pending()?;
        self.cut_zeros(&mut w)?;
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

    /// Marks the partition gone (topic deleted): later appends fail, and once this
    /// returns no group commit, roll, seal or cleanup writes in its directory again.
    pub fn remove(&self) {
        self.queue.lock().closed = true;
        self.removed.store(true, Ordering::Release);
        // Whoever holds these now finishes first; whoever takes them later sees the flag.
        drop(self.writer.lock());
        drop(self.maintenance.lock());
    }

    /// Whether the topic was deleted (checked under the writer or maintenance lock).
    pub(super) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
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

/// How far back from the end of the active segment a read counts as hot
/// ([`Partition::reads_hot`]): a few group commits' worth, read at most `max_bytes`
/// at a time.
const HOT_BYTES: u64 = 8 << 20;

/// How many bytes a fetch reads from the batch `h` on: that batch alone when it holds
/// every record still wanted (reading the age of one event reads one batch, not a
/// megabyte of them), else up to `max_bytes`. A batch compaction left gaps in may
/// hold fewer records than its offsets span: it is not counted on.
fn read_budget(h: &batch::BatchHeader, from: u64, wanted: usize, max_bytes: usize) -> usize {
    let dense = u64::from(h.record_count) == u64::from(h.last_offset_delta) + 1;
    let in_batch = h.last_offset() + 1 - from.max(h.base_offset);
    if dense && in_batch >= wanted as u64 {
        h.total_len()
    } else {
        max_bytes
    }
}
