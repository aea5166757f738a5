//! Group commit: how appends to one partition become durable and visible.
//!
//! ```text
//!  append() --enqueue--> queue --(not scheduled yet)--> the log's writer thread
//!
//!  writer:  take queued batches -> assign offsets -> one pwrite --+--> publish + reply
//!                                                                 |    (interval, none)
//!                                                                 v
//!                                          stage --> the log's syncer thread: one
//!                                                    fdatasync for every group written
//!                                                    so far -> publish in write order
//!                                                    -> reply (fsync)
//! ```
//!
//! With a wal (`wal.rs`), a group of at most `wal_max_group_bytes` goes to the stage
//! with the wal mark that makes it durable, and is published by the wal's syncer
//! instead (`publish_logged`); the stage keeps both kinds in write order.
//!
//! With `durability = fsync` the writer does not wait for the fsync: while the syncer
//! flushes group N, the writer already writes group N+1, and the next fsync covers all
//! groups written meanwhile. Readers see a batch only once it is published, so nothing
//! they saw can vanish in a crash. A roll drains the stage first, so a segment is
//! sealed only with all of its batches published. The two threads are shared by all
//! partitions (`committer.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::config::Durability;
use super::partition::{Partition, Writer};
use super::segment::{LiveIndex, Placed, Segment};
use crate::error::{LogError, Result};
use crate::format::batch::{self, EncodedBatch};
use crate::fs;
use crate::log::Appended;
use crate::types::{Offset, Timestamp};

pub(crate) type Reply = oneshot::Sender<Result<Appended>>;

/// The largest group commit that writes zeros ahead (`Partition::zero_ahead`).
const SMALL_GROUP_BYTES: u64 = 4096;

pub(crate) struct Pending {
    batch: EncodedBatch,
    reply: Reply,
}

#[derive(Default)]
pub(crate) struct Queue {
    pending: VecDeque<Pending>,
    /// Set while the partition is in the writer's lane or being written.
    pub scheduled: bool,
    pub closed: bool,
}

/// Groups written to the active segment, waiting for the syncer's fdatasync.
#[derive(Default)]
pub(crate) struct SyncStage {
    pending: Vec<Written>,
    /// Set while the partition is in the syncer's lane.
    scheduled: bool,
}

/// A group that was written: what publishing it changes, and whom to answer.
struct Written {
    segment: Arc<Segment>,
    end: u64,
    next: u64,
    max_timestamp: i64,
    index: LiveIndex,
    replies: Vec<(Reply, Vec<Offset>)>,
    /// With a wal record: the wal's `durable` mark that makes the group durable.
    logged: Option<u64>,
}

/// Batches assembled for one write.
struct Staged {
    start: u64,
    next: u64,
    buf: Vec<u8>,
    index: LiveIndex,
    max_timestamp: i64,
    done: Vec<(Reply, Vec<Offset>)>,
    /// Written in a pass with other partitions (`write_round`).
    shared: bool,
}

impl Staged {
    fn new(start: u64, next: u64, mut buf: Vec<u8>) -> Staged {
        buf.clear();
        Staged {
            start,
            next,
            buf,
            index: LiveIndex::default(),
            max_timestamp: i64::MIN,
            done: Vec::new(),
            shared: false,
        }
    }

    fn fail(&mut self, e: &LogError) {
        for (reply, _) in self.done.drain(..) {
            let _ = reply.send(Err(e.duplicate()));
        }
    }
}

impl Partition {
    /// Queues a batch. Returns the receiver of its result and whether the caller must
    /// schedule the partition with the writer because it is not scheduled yet.
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
        let schedule = !q.scheduled;
        q.scheduled = true;
        Ok((rx, schedule))
    }

    /// Commits one group of the queued batches (on the log's writer thread). Returns
    /// whether more are queued; when not, the partition is no longer scheduled.
    /// `shared`: the pass writes at least `wal_min_partitions` partitions, so the wal
    /// (if any) makes them all durable with one fdatasync. A partition written alone
    /// gains nothing from it, and syncs its segment (the wal would write its bytes
    /// twice).
    pub(super) fn write_round(self: &Arc<Self>, shared: bool) -> bool {
        let group = {
            let mut q = self.queue.lock();
            let mut bytes = 0;
            let mut group = Vec::new();
            while let Some(p) = q.pending.front() {
                if !group.is_empty() && bytes + p.batch.bytes.len() > self.settings.max_group_bytes
                {
                    break;
                }
                bytes += p.batch.bytes.len();
                group.extend(q.pending.pop_front());
            }
            group
        };
        if !group.is_empty() {
            self.commit(group, shared);
        }
        let mut q = self.queue.lock();
        q.scheduled = !q.pending.is_empty();
        q.scheduled
    }

    fn commit(self: &Arc<Self>, group: Vec<Pending>, shared: bool) {
        let mut w = self.writer.lock();
        if self.is_poisoned() || self.is_removed() {
            let e = match self.is_removed() {
                true => LogError::TopicNotFound(self.topic.to_string()),
                false => self.poisoned_error(),
            };
            for p in group {
                let _ = p.reply.send(Err(e.duplicate()));
            }
            return;
        }
        let config = self.config.read().clone();
        let now = Timestamp::now().0;
        let total: usize = group.iter().map(|p| p.batch.bytes.len()).sum();
        let mut staged = Staged::new(w.written_len, w.next_offset, std::mem::take(&mut w.scratch));
        staged.shared = shared;
        staged.buf.reserve(total);
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
                    .write_staged(&mut w, &mut staged, config.segment_bytes)
                    .and_then(|()| self.roll(&mut w));
                if let Err(e) = rolled {
                    staged.fail(&e);
                    for p in std::iter::once(p).chain(group) {
                        let _ = p.reply.send(Err(e.duplicate()));
                    }
                    return;
                }
                staged = Staged::new(0, w.next_offset, std::mem::take(&mut staged.buf));
                staged.shared = shared;
            }
            let mut bytes = p.batch.bytes;
            let base = staged.next;
            batch::set_base_offset(&mut bytes, base, p.batch.body_crc);
            let count = u64::from(p.batch.count);
            let rel_base = (base - w.active.base) as u32;
            let placed = Placed {
                rel_base,
                rel_last: rel_base + (count as u32).saturating_sub(1),
                position: staged.start + staged.buf.len() as u64,
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
        if let Err(e) = self.write_staged(&mut w, &mut staged, config.segment_bytes) {
            staged.fail(&e);
        }
        // Keep the buffer for the next group: fresh pages cost a fault and a clear each.
        staged.buf.clear();
        if staged.buf.capacity() <= self.settings.max_group_bytes {
            w.scratch = staged.buf;
        }
    }

    /// Writes the staged batches at the end of the active segment, then publishes them
    /// (interval, none) or hands them to the syncer (fsync).
    fn write_staged(
        self: &Arc<Self>,
        w: &mut Writer,
        staged: &mut Staged,
        segment_bytes: u64,
    ) -> Result<()> {
        if staged.buf.is_empty() {
            return Ok(());
        }
        let file = &w.active.file;
        let data_len = staged.buf.len();
        let fsync = self.settings.durability == Durability::Fsync;
        let small = data_len as u64 <= self.settings.wal_max_group_bytes;
        let wal = self
            .committer
            .wal()
            .filter(|_| fsync && small && staged.shared);
        let mut zeroed_end = match wal {
            Some(_) => w.zeroed_end, // the segment is not synced now: no zeros needed
            None => self.zero_ahead(w, staged, segment_bytes),
        };
        let mut wrote = fs::write_all_at(&**file, &staged.buf, staged.start);
        if wrote.is_err() && staged.buf.len() > data_len && file.set_len(staged.start).is_ok() {
            // No room for the zeros (a full disk): the data alone may still fit.
            staged.buf.truncate(data_len);
            zeroed_end = staged.start;
            wrote = fs::write_all_at(&**file, &staged.buf, staged.start);
        }
        staged.buf.truncate(data_len);
        if let Err(e) = wrote {
            // Undo a partial write; if even that fails the tail is unknown.
            if file.set_len(staged.start).is_err() {
                self.poison(&e);
            }
            w.zeroed_end = w.zeroed_end.min(staged.start);
            return Err(LogError::Io {
                path: w.active.path.clone(),
                source: e,
            });
        }
        let start = staged.start;
        let end = start + staged.buf.len() as u64;
        w.written_len = end;
        w.zeroed_end = zeroed_end.max(end);
        w.next_offset = staged.next;
        let written = Written {
            segment: w.active.clone(),
            end,
            next: staged.next,
            max_timestamp: staged.max_timestamp,
            index: std::mem::take(&mut staged.index),
            replies: std::mem::take(&mut staged.done),
            logged: None,
        };
        match (self.settings.durability, wal) {
            (Durability::Fsync, Some(wal)) => {
                wal.append(self, w.active.base, start, &staged.buf, |durable_at| {
                    let logged = Written {
                        logged: Some(durable_at),
                        ..written
                    };
                    self.stage.lock().pending.push(logged);
                });
            }
            (Durability::Fsync, None) => self.hand_to_syncer(written),
            (Durability::Interval | Durability::None, _) => {
                self.dirty.store(true, Ordering::Release);
                self.publish(written);
            }
        }
        staged.buf.clear();
        staged.start = end;
        staged.max_timestamp = i64::MIN;
        Ok(())
    }

    /// Where the zeros written ahead will end once `staged` is written. A group of at
    /// most `SMALL_GROUP_BYTES` that would end past them (durability fsync) takes
    /// `preallocate_bytes` more with it, in the same pwrite: the next syncs then
    /// write data over zeros already on disk, within the file's length, and need no
    /// write of its size. Larger groups just extend the file: zeros written first
    /// double the bytes a group sends to disk, which for a page costs less than the
    /// write of the size it saves, and under a stream of large groups saturates the
    /// disk. No zeros go past `segment_bytes`, where the segment rolls.
    fn zero_ahead(&self, w: &Writer, staged: &mut Staged, segment_bytes: u64) -> u64 {
        let ahead = self.settings.preallocate_bytes;
        let data_end = staged.start + staged.buf.len() as u64;
        let small = staged.buf.len() as u64 <= SMALL_GROUP_BYTES;
        let to = (data_end + ahead).next_multiple_of(4096).min(segment_bytes);
        let fsync = self.settings.durability == Durability::Fsync;
        if !fsync || ahead == 0 || data_end <= w.zeroed_end || !small || to <= data_end {
            return w.zeroed_end;
        }
        staged.buf.resize((to - staged.start) as usize, 0);
        to
    }

    fn publish(&self, w: Written) {
        w.segment.publish(w.end, w.next, w.max_timestamp, &w.index);
        self.hw.send_replace(w.next);
        for (reply, offsets) in w.replies {
            let _ = reply.send(Ok(Appended { offsets }));
        }
    }

    fn hand_to_syncer(self: &Arc<Self>, written: Written) {
        let schedule = {
            let mut stage = self.stage.lock();
            stage.pending.push(written);
            !std::mem::replace(&mut stage.scheduled, true)
        };
        if schedule {
            self.committer.schedule_sync(self.clone());
        }
    }

    /// Syncs and publishes the groups written so far (on the log's syncer thread).
    pub(super) fn sync_round(&self) {
        let _order = self.sync_lock.lock();
        let groups = {
            let mut stage = self.stage.lock();
            stage.scheduled = false;
            std::mem::take(&mut stage.pending)
        };
        let _ = self.sync_and_publish(groups);
    }

    /// Syncs and publishes whatever is staged now, on the caller's thread (roll, close).
    pub(super) fn drain_syncs(&self) -> Result<()> {
        let _order = self.sync_lock.lock();
        let groups = std::mem::take(&mut self.stage.lock().pending);
        self.sync_and_publish(groups)
    }

    /// Publishes the groups at the front of the stage whose wal records are durable
    /// up to `durable` (on the wal's syncer thread, after its fdatasync). A group the
    /// syncer must fsync first stops it, keeping publication in write order: the
    /// syncer then publishes the groups after it too.
    pub(super) fn publish_logged(&self, durable: u64) {
        let _order = self.sync_lock.lock();
        for g in self.take_logged(durable) {
            self.publish(g);
        }
    }

    /// The wal round that held the groups up to `end` failed: they fail, and the
    /// partition refuses writes until the log is reopened.
    pub(super) fn fail_logged(&self, end: u64, why: &std::io::Error) {
        let _order = self.sync_lock.lock();
        let groups = self.take_logged(end);
        self.poison(why);
        for g in groups {
            for (reply, _) in g.replies {
                let _ = reply.send(Err(self.poisoned_error()));
            }
        }
    }

    fn take_logged(&self, durable: u64) -> Vec<Written> {
        let mut stage = self.stage.lock();
        let n = stage
            .pending
            .iter()
            .take_while(|g| g.logged.is_some_and(|at| at <= durable))
            .count();
        stage.pending.drain(..n).collect()
    }

    /// One fdatasync for all `groups` (all in the active segment: a roll drains the
    /// stage before it seals), then publication in write order.
    fn sync_and_publish(&self, groups: Vec<Written>) -> Result<()> {
        let Some(last) = groups.last() else {
            return Ok(());
        };
        let synced = if self.is_poisoned() {
            Err(self.poisoned_error())
        } else {
            last.segment.file.sync_data().map_err(|e| {
                self.poison(&e);
                self.poisoned_error()
            })
        };
        match synced {
            Ok(()) => {
                groups.into_iter().for_each(|g| self.publish(g));
                Ok(())
            }
            Err(e) => {
                for g in groups {
                    for (reply, _) in g.replies {
                        let _ = reply.send(Err(e.duplicate()));
                    }
                }
                Err(e)
            }
        }
    }
}
