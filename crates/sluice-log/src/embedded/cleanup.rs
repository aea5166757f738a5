//! Background cleanup of sealed segments: retention (delete whole segments by age or
//! size) and compaction (keep the latest record per key, keep offsets unchanged).
//! Neither touches the active segment, so appends never wait for them; readers keep
//! reading a replaced segment through the handle they already hold.
//!
//! Compaction swap protocol (crash-safe, completed or discarded by recovery):
//!
//! ```text
//!  write <base>.{log,index,timeindex}.cleaned, fsync each
//!    -> rename .log/.index .cleaned -> .swap, fsync dir
//!    -> rename .timeindex .cleaned -> .swap, fsync dir        (commit point)
//!    -> delete the replaced segments' files
//!    -> rename .swap -> final names, fsync dir
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::partition::Partition;
use super::recovery::{CLEANED, SWAP};
use super::segment::{
    self, INDEX_EXT, IndexBuilder, LOG_EXT, LiveIndex, Placed, Segment, TIME_INDEX_EXT,
    segment_path,
};
use crate::error::{LogError, Result};
use crate::format::batch::{self, BatchBuilder};
use crate::format::index::{OffsetEntry, SegmentSummary, TimeEntry};
use crate::fs::{self, OpenMode};
use crate::types::{StoredRecord, Timestamp};

/// What one cleanup pass did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanupStats {
    pub segments_deleted: usize,
    pub segments_compacted: usize,
    pub records_removed: u64,
}

impl Partition {
    /// Deletes the oldest sealed segments beyond the time and size retention.
    pub(crate) fn enforce_retention(&self, now: Timestamp) -> Result<CleanupStats> {
        let config = self.config.read().clone();
        let mut stats = CleanupStats::default();
        if !config.cleanup_policy.deletes() {
            return Ok(stats);
        }
        let _m = self.maintenance.lock();
        if self.is_removed() {
            return Ok(stats);
        }
        let segs = self.segments.read().clone();
        let mut remaining: u64 = segs.iter().map(|s| s.len()).sum();
        let mut doomed = 0;
        for seg in &segs[..segs.len().saturating_sub(1)] {
            let expired = config
                .retention_ms
                .is_some_and(|ms| seg.max_timestamp() < now.0.saturating_sub(ms as i64));
            let oversize = config
                .retention_bytes
                .is_some_and(|max| remaining.saturating_sub(seg.len()) >= max);
            if !(expired || oversize) {
                break;
            }
            remaining -= seg.len();
            doomed += 1;
        }
        if doomed == 0 {
            return Ok(stats);
        }
        let removed: Vec<Arc<Segment>> = self.segments.write().drain(..doomed).collect();
        for seg in &removed {
            self.remove_segment_files(seg.base)?;
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(LogError::io(&self.dir))?;
        stats.segments_deleted = removed.len();
        tracing::debug!(topic = %self.topic, partition = self.id.0, deleted = doomed, "retention");
        Ok(stats)
    }

    fn remove_segment_files(&self, base: u64) -> Result<()> {
        for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
            let path = segment_path(&self.dir, base, ext);
            if self.fs.exists(&path) {
                self.fs.remove_file(&path).map_err(LogError::io(&path))?;
            }
        }
        Ok(())
    }

    /// Compacts the sealed segments: for every key only its latest record survives;
    /// tombstones survive `delete_retention_ms` after their timestamp; keyless records
    /// are kept. Consecutive small segments are merged while they fit one segment.
    pub(crate) fn compact(&self, now: Timestamp) -> Result<CleanupStats> {
        let config = self.config.read().clone();
        let mut stats = CleanupStats::default();
        if !config.cleanup_policy.compacts() {
            return Ok(stats);
        }
        let _m = self.maintenance.lock();
        if self.is_removed() {
            return Ok(stats);
        }
        self.needs_compaction.store(false, Ordering::Release);
        let segs = self.segments.read().clone();
        let sealed = &segs[..segs.len().saturating_sub(1)];
        if sealed.is_empty() {
            return Ok(stats);
        }
        // Pass 1: the latest offset of every key in the sealed part.
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        for seg in sealed {
            for_each_record(seg, |r| {
                if let Some(k) = &r.key {
                    latest.insert(k.to_vec(), r.offset.0);
                }
            })?;
        }
        let keep = |r: &StoredRecord| match &r.key {
            None => true,
            Some(k) => {
                latest.get(k.as_ref()) == Some(&r.offset.0)
                    && (r.value.is_some()
                        || r.timestamp
                            .0
                            .saturating_add(config.delete_retention_ms as i64)
                            > now.0)
            }
        };
        // Pass 2: rewrite groups of consecutive segments that fit in one segment.
        let mut i = 0;
        while i < sealed.len() {
            let mut j = i + 1;
            let mut size = sealed[i].len();
            while j < sealed.len() && size + sealed[j].len() <= config.segment_bytes {
                size += sealed[j].len();
                j += 1;
            }
            let group = &sealed[i..j];
            i = j;
            let removed = self.rewrite(group, &keep)?;
            if let Some(removed) = removed {
                stats.segments_compacted += group.len();
                stats.records_removed += removed;
            }
        }
        Ok(stats)
    }

    /// Rewrites `group` into one segment of the records `keep` accepts and swaps it in.
    /// `None` when there was nothing to gain.
    fn rewrite(
        &self,
        group: &[Arc<Segment>],
        keep: &impl Fn(&StoredRecord) -> bool,
    ) -> Result<Option<u64>> {
        let base = group[0].base;
        let end_offset = group[group.len() - 1].end_offset();
        let mut out: Vec<u8> = Vec::new();
        let mut entries = LiveIndex::default();
        let mut index = IndexBuilder::new(self.settings.index_interval_bytes);
        let mut max_ts = i64::MIN;
        let mut removed = 0u64;
        for seg in group {
            let mut pos = 0;
            while pos < seg.len() {
                let batches = seg.read_batches(pos, 4 << 20)?;
                for (h, bytes) in &batches {
                    pos += h.total_len() as u64;
                    let records =
                        batch::decode_records(bytes, h).map_err(|e| seg.corrupt(pos, e))?;
                    let kept: Vec<&StoredRecord> = records.iter().filter(|r| keep(r)).collect();
                    removed += (records.len() - kept.len()) as u64;
                    let Some(first) = kept.first() else { continue };
                    let new_base = first.offset.0;
                    let mut b = BatchBuilder::new(first.timestamp.0, bytes.len());
                    for r in &kept {
                        b.push(
                            (r.offset.0 - new_base) as u32,
                            r.timestamp.0,
                            r.key.as_deref(),
                            r.value.as_deref(),
                            &r.headers,
                        );
                    }
                    let encoded = b.finish(new_base);
                    let h2 = batch::decode_header(&encoded).map_err(|e| seg.corrupt(pos, e))?;
                    let placed = Placed {
                        rel_base: (new_base - base) as u32,
                        rel_last: (h2.last_offset() - base) as u32,
                        position: out.len() as u64,
                        len: encoded.len() as u64,
                        max_timestamp: h2.max_timestamp,
                    };
                    index.on_batch(&placed, &mut entries);
                    max_ts = max_ts.max(h2.max_timestamp);
                    out.extend_from_slice(&encoded);
                }
            }
        }
        if removed == 0 && group.len() == 1 {
            return Ok(None);
        }
        let summary = SegmentSummary {
            base_offset: base,
            end_offset,
            log_bytes: out.len() as u64,
            max_timestamp: max_ts,
        };
        self.swap_in(group, &summary, &out, &entries.offsets, &entries.times)?;
        tracing::debug!(topic = %self.topic, partition = self.id.0, base, segments = group.len(),
            removed, "compacted");
        Ok(Some(removed))
    }

    fn swap_in(
        &self,
        group: &[Arc<Segment>],
        summary: &SegmentSummary,
        data: &[u8],
        offsets: &[OffsetEntry],
        times: &[TimeEntry],
    ) -> Result<()> {
        let (fs, dir, base) = (&*self.fs, &self.dir, summary.base_offset);
        let cleaned_log = segment_path(dir, base, &format!("{LOG_EXT}{CLEANED}"));
        let file = fs
            .open(&cleaned_log, OpenMode::CreateTruncate)
            .map_err(LogError::io(&cleaned_log))?;
        fs::write_all_at(&*file, data, 0).map_err(LogError::io(&cleaned_log))?;
        file.sync_data().map_err(LogError::io(&cleaned_log))?;
        drop(file);
        segment::write_index_files(fs, dir, summary, offsets, times, CLEANED)?;
        let rename = |ext: &str| {
            let from = segment_path(dir, base, &format!("{ext}{CLEANED}"));
            let to = segment_path(dir, base, &format!("{ext}{SWAP}"));
            fs.rename(&from, &to).map_err(LogError::io(&from))
        };
        let sync = || fs.sync_dir(dir).map_err(LogError::io(dir));
        rename(LOG_EXT)?;
        rename(INDEX_EXT)?;
        sync()?;
        rename(TIME_INDEX_EXT)?; // the commit point
        sync()?;
        for seg in group {
            self.remove_segment_files(seg.base)?;
        }
        for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
            let from = segment_path(dir, base, &format!("{ext}{SWAP}"));
            let to = segment_path(dir, base, ext);
            fs.rename(&from, &to).map_err(LogError::io(&from))?;
        }
        sync()?;
        let replacement =
            Arc::new(
                Segment::open_sealed(fs, dir, base)?.ok_or_else(|| LogError::Corrupt {
                    path: segment_path(dir, base, LOG_EXT),
                    position: 0,
                    reason: "compacted segment does not match its index".into(),
                })?,
            );
        let mut segs = self.segments.write();
        if let Some(at) = segs.iter().position(|s| s.base == base) {
            let n = group.len().min(segs.len() - at);
            segs.splice(at..at + n, [replacement]);
        }
        Ok(())
    }
}

/// Calls `f` for every record of a segment, in offset order.
fn for_each_record(seg: &Segment, mut f: impl FnMut(&StoredRecord)) -> Result<()> {
    let mut pos = 0;
    while pos < seg.len() {
        let batches = seg.read_batches(pos, 4 << 20)?;
        if batches.is_empty() {
            break;
        }
        for (h, bytes) in &batches {
            let records = batch::decode_records(bytes, h).map_err(|e| seg.corrupt(pos, e))?;
            records.iter().for_each(&mut f);
            pos += h.total_len() as u64;
        }
    }
    Ok(())
}
