//! One segment: a file of record batches covering a range of offsets, with its sparse
//! offset and time indexes. The active segment keeps its indexes in memory; a sealed
//! one reads them from its index files on demand, so an open log holds little memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::RwLock;

use bytes::Bytes;

use crate::error::{LogError, Result};
use crate::format::batch::{self, BatchHeader, FormatError};
use crate::format::index::{self, IndexKind, OffsetEntry, SegmentSummary, TimeEntry};
use crate::fs::{self, Fs, FsFile, OpenMode};

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";

/// `<dir>/<base as 20 digits>.<ext>`, Kafka's naming, so files sort by offset.
pub(crate) fn segment_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_segment_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// The in-memory indexes of the active segment.
#[derive(Debug, Default)]
pub(crate) struct LiveIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

#[derive(Debug)]
enum SegmentIndex {
    Live(RwLock<LiveIndex>),
    Sealed {
        offsets: Arc<dyn FsFile>,
        offset_count: u32,
        times: Arc<dyn FsFile>,
        time_count: u32,
    },
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<dyn FsFile>,
    /// Bytes of complete batches that readers may see.
    len: AtomicU64,
    /// Exclusive end of the offsets this segment covers.
    end_offset: AtomicU64,
    max_timestamp: AtomicI64,
    index: SegmentIndex,
}

impl Segment {
    pub fn live(
        base: u64,
        path: PathBuf,
        file: Arc<dyn FsFile>,
        summary: SegmentSummary,
        live: LiveIndex,
    ) -> Segment {
        Segment {
            base,
            path,
            file,
            len: AtomicU64::new(summary.log_bytes),
            end_offset: AtomicU64::new(summary.end_offset),
            max_timestamp: AtomicI64::new(summary.max_timestamp),
            index: SegmentIndex::Live(RwLock::new(live)),
        }
    }

    /// Opens a sealed segment whose index files are valid and match the log file.
    /// `None` when they are missing, damaged or stale (the caller rebuilds them).
    pub fn open_sealed(fs: &dyn Fs, dir: &Path, base: u64) -> Result<Option<Segment>> {
        let path = segment_path(dir, base, LOG_EXT);
        let file = fs
            .open(&path, OpenMode::ReadWrite)
            .map_err(LogError::io(&path))?;
        let len = file.size().map_err(LogError::io(&path))?;
        let Some((summary, offsets, offset_count)) =
            open_index(fs, &segment_path(dir, base, INDEX_EXT), IndexKind::Offset)
        else {
            return Ok(None);
        };
        let Some((tsummary, times, time_count)) = open_index(
            fs,
            &segment_path(dir, base, TIME_INDEX_EXT),
            IndexKind::Time,
        ) else {
            return Ok(None);
        };
        if summary != tsummary || summary.base_offset != base || summary.log_bytes != len {
            return Ok(None);
        }
        Ok(Some(Segment {
            base,
            path,
            file,
            len: AtomicU64::new(len),
            end_offset: AtomicU64::new(summary.end_offset),
            max_timestamp: AtomicI64::new(summary.max_timestamp),
            index: SegmentIndex::Sealed {
                offsets,
                offset_count,
                times,
                time_count,
            },
        }))
    }

    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    pub fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            base_offset: self.base,
            end_offset: self.end_offset(),
            log_bytes: self.len(),
            max_timestamp: self.max_timestamp(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes appended batches visible (active segment only). `entries` are the index
    /// entries of the batches just written.
    pub fn publish(&self, len: u64, end_offset: u64, max_timestamp: i64, entries: &LiveIndex) {
        if let SegmentIndex::Live(live) = &self.index
            && (!entries.offsets.is_empty() || !entries.times.is_empty())
        {
            let mut live = live.write();
            live.offsets.extend_from_slice(&entries.offsets);
            live.times.extend_from_slice(&entries.times);
        }
        self.max_timestamp
            .fetch_max(max_timestamp, Ordering::AcqRel);
        self.end_offset.store(end_offset, Ordering::Release);
        self.len.store(len, Ordering::Release);
    }

    /// The live index entries (active segment), to write them out when sealing.
    pub fn live_entries(&self) -> (Vec<OffsetEntry>, Vec<TimeEntry>) {
        match &self.index {
            SegmentIndex::Live(live) => {
                let live = live.read();
                (live.offsets.clone(), live.times.clone())
            }
            SegmentIndex::Sealed { .. } => (Vec::new(), Vec::new()),
        }
    }

    /// Calls `f` with the live index entries without copying them (sealing writes them
    /// out; a rolled segment gets no more, so holding the read lock meanwhile costs
    /// only readers of that segment a short wait).
    pub fn with_live_entries<T>(&self, f: impl FnOnce(&[OffsetEntry], &[TimeEntry]) -> T) -> T {
        match &self.index {
            SegmentIndex::Live(live) => {
                let live = live.read();
                f(&live.offsets, &live.times)
            }
            SegmentIndex::Sealed { .. } => f(&[], &[]),
        }
    }

    /// Takes the live index's memory, emptied, for the partition's next active segment:
    /// once this segment is sealed and replaced in the list. Reallocating a fresh index
    /// for every segment (about 1.3 MB per 256 MiB) made the allocator's footprint
    /// creep by that much per segment. A reader still holding this segment then finds
    /// no entries and reads it from its start: slower, still correct.
    pub fn take_live_index(&self) -> LiveIndex {
        match &self.index {
            SegmentIndex::Live(live) => {
                let mut index = std::mem::take(&mut *live.write());
                index.offsets.clear();
                index.times.clear();
                index
            }
            SegmentIndex::Sealed { .. } => LiveIndex::default(),
        }
    }

    /// The number of index entries held in memory (for reporting memory use).
    pub fn live_index_len(&self) -> usize {
        match &self.index {
            SegmentIndex::Live(live) => {
                let live = live.read();
                live.offsets.len() + live.times.len()
            }
            SegmentIndex::Sealed { .. } => 0,
        }
    }

    /// A sealed twin of this (active) segment, reading its index from files just written.
    pub fn sealed_from_files(&self, fs: &dyn Fs, dir: &Path) -> Result<Segment> {
        Segment::open_sealed(fs, dir, self.base)?.ok_or_else(|| LogError::Corrupt {
            path: segment_path(dir, self.base, INDEX_EXT),
            position: 0,
            reason: "index just written does not match its segment".into(),
        })
    }

    /// Byte position of a batch at or before the one holding `offset`.
    pub fn position_for(&self, offset: u64) -> Result<u64> {
        let rel = offset.saturating_sub(self.base).min(u64::from(u32::MAX)) as u32;
        match &self.index {
            SegmentIndex::Live(live) => {
                let live = live.read();
                let i = live.offsets.partition_point(|e| e.relative_offset <= rel);
                Ok(i.checked_sub(1)
                    .map_or(0, |i| u64::from(live.offsets[i].position)))
            }
            SegmentIndex::Sealed {
                offsets,
                offset_count,
                ..
            } => {
                let found =
                    self.search_file(&**offsets, *offset_count, IndexKind::Offset, |raw| {
                        index::decode_offset_entry(raw).relative_offset <= rel
                    })?;
                Ok(found.map_or(0, |raw| {
                    u64::from(index::decode_offset_entry(&raw).position)
                }))
            }
        }
    }

    /// [`Segment::position_for`] answered from memory: none for a sealed segment
    /// (whose index is a file).
    pub fn live_position_for(&self, offset: u64) -> Option<u64> {
        match &self.index {
            SegmentIndex::Live(_) => self.position_for(offset).ok(),
            SegmentIndex::Sealed { .. } => None,
        }
    }

    /// Byte position from which to scan for the first record with timestamp >= `at`.
    pub fn position_for_time(&self, at: i64) -> Result<u64> {
        let rel = match &self.index {
            SegmentIndex::Live(live) => {
                let live = live.read();
                let i = live.times.partition_point(|e| e.timestamp < at);
                i.checked_sub(1).map(|i| live.times[i].relative_offset)
            }
            SegmentIndex::Sealed {
                times, time_count, ..
            } => self
                .search_file(&**times, *time_count, IndexKind::Time, |raw| {
                    index::decode_time_entry(raw).timestamp < at
                })?
                .map(|raw| index::decode_time_entry(&raw).relative_offset),
        };
        match rel {
            Some(rel) => self.position_for(self.base + u64::from(rel)),
            None => Ok(0),
        }
    }

    /// Binary search over index-file entries: the last entry for which `before` holds.
    fn search_file(
        &self,
        file: &dyn FsFile,
        count: u32,
        kind: IndexKind,
        before: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>> {
        let width = kind.entry_len();
        let read = |i: u32| -> Result<Vec<u8>> {
            let mut raw = vec![0; width];
            let pos = (index::HEADER_LEN + i as usize * width) as u64;
            fs::read_exact_at(file, &mut raw, pos).map_err(LogError::io(&self.path))?;
            Ok(raw)
        };
        let (mut lo, mut hi) = (0u32, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(&read(mid)?) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(read).transpose()
    }

    /// The error for damage found at `position` in this segment.
    pub fn corrupt(&self, position: u64, e: impl ToString) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            position,
            reason: e.to_string(),
        }
    }

    /// Reads the header of the batch at `pos` (which must be below `len()`).
    pub fn header_at(&self, pos: u64) -> Result<BatchHeader> {
        let mut raw = [0u8; batch::HEADER_LEN];
        fs::read_exact_at(&*self.file, &mut raw, pos).map_err(LogError::io(&self.path))?;
        let h = batch::decode_header(&raw).map_err(|e| self.corrupt(pos, e))?;
        if pos + h.total_len() as u64 > self.len() {
            return Err(self.corrupt(pos, "batch runs past the end of the segment"));
        }
        Ok(h)
    }

    /// Reads whole batches starting at `pos`: at least one, then more while they fit in
    /// `max_bytes`. Each batch is CRC-checked. Returns (header, batch bytes) pairs.
    pub fn read_batches(&self, pos: u64, max_bytes: usize) -> Result<Vec<(BatchHeader, Bytes)>> {
        let len = self.len();
        if pos >= len {
            return Ok(Vec::new());
        }
        let first = self.header_at(pos)?;
        let want = (max_bytes.max(first.total_len()) as u64).min(len - pos) as usize;
        let mut buf = vec![0u8; want];
        fs::read_exact_at(&*self.file, &mut buf, pos).map_err(LogError::io(&self.path))?;
        let buf = Bytes::from(buf);
        let mut out = Vec::new();
        let mut at = 0usize;
        while at + batch::HEADER_LEN <= buf.len() {
            let h =
                batch::decode_header(&buf[at..]).map_err(|e| self.corrupt(pos + at as u64, e))?;
            if at + h.total_len() > buf.len() {
                break;
            }
            let bytes = buf.slice(at..at + h.total_len());
            batch::verify(&bytes, &h).map_err(|e| self.corrupt(pos + at as u64, e))?;
            out.push((h, bytes));
            at += h.total_len();
        }
        Ok(out)
    }
}

fn open_index(
    fs: &dyn Fs,
    path: &Path,
    kind: IndexKind,
) -> Option<(SegmentSummary, Arc<dyn FsFile>, u32)> {
    let raw = fs::read_all(fs, path).ok()?;
    let (summary, count) = index::verify(&raw, kind).ok()?;
    let file = fs.open(path, OpenMode::Read).ok()?;
    Some((summary, file, count))
}

/// Writes both index files of a segment durably. Without a suffix they are replaced
/// atomically (temporary file + rename), so a reader never sees half an index.
pub(crate) fn write_index_files(
    fs: &dyn Fs,
    dir: &Path,
    summary: &SegmentSummary,
    offsets: &[OffsetEntry],
    times: &[TimeEntry],
    suffix: &str,
) -> Result<()> {
    let write = |ext: &str, data: Vec<u8>| {
        let path = segment_path(dir, summary.base_offset, &format!("{ext}{suffix}"));
        if suffix.is_empty() {
            return fs::write_atomic(fs, &path, &data).map_err(LogError::io(&path));
        }
        let file = fs
            .open(&path, OpenMode::CreateTruncate)
            .map_err(LogError::io(&path))?;
        fs::write_all_at(&*file, &data, 0).map_err(LogError::io(&path))?;
        file.sync_data().map_err(LogError::io(&path))
    };
    write(INDEX_EXT, index::encode_offset_index(summary, offsets))?;
    write(TIME_INDEX_EXT, index::encode_time_index(summary, times))?;
    Ok(())
}

/// What a sequential scan of a segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Bytes of valid batches from the start.
    pub valid_len: u64,
    pub end_offset: Option<u64>,
    pub max_timestamp: i64,
    pub index: LiveIndex,
    /// Why the scan stopped before the end of the file, if it did.
    pub damage: Option<FormatError>,
    /// Zeros after the last batch, to the end of the file: space an active segment
    /// had written ahead (`preallocate_bytes`), not damage.
    pub zero_tail: u64,
}

/// Index entries are added every `interval` bytes of batches.
#[derive(Debug)]
pub(crate) struct IndexBuilder {
    interval: u64,
    since_offset_entry: u64,
    max_ts_indexed: i64,
    since_time_entry: u64,
}

impl IndexBuilder {
    pub fn new(interval: u32) -> IndexBuilder {
        IndexBuilder {
            interval: u64::from(interval.max(1)),
            since_offset_entry: u64::MAX / 2,
            max_ts_indexed: i64::MIN,
            since_time_entry: u64::MAX / 2,
        }
    }

    /// Continues after a live index (for the active segment after a clean open).
    pub fn resume(interval: u32, live: &LiveIndex, len: u64) -> IndexBuilder {
        let mut b = IndexBuilder::new(interval);
        if let Some(last) = live.offsets.last() {
            b.since_offset_entry = len - u64::from(last.position);
        }
        if let Some(last) = live.times.last() {
            b.max_ts_indexed = last.timestamp;
            b.since_time_entry = 0;
        }
        b
    }

    /// Called for each batch placed in the segment; adds the index entries it earns.
    pub fn on_batch(&mut self, b: &Placed, out: &mut LiveIndex) {
        if self.since_offset_entry >= self.interval {
            out.offsets.push(OffsetEntry {
                relative_offset: b.rel_base,
                position: b.position as u32,
            });
            self.since_offset_entry = 0;
        }
        self.since_offset_entry += b.len;
        self.since_time_entry += b.len;
        if b.max_timestamp > self.max_ts_indexed && self.since_time_entry >= self.interval {
            out.times.push(TimeEntry {
                timestamp: b.max_timestamp,
                relative_offset: b.rel_last,
            });
            self.max_ts_indexed = b.max_timestamp;
            self.since_time_entry = 0;
        }
    }
}

/// Where a batch went in its segment, for the indexes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed {
    /// First and last offsets relative to the segment's base.
    pub rel_base: u32,
    pub rel_last: u32,
    /// Byte position in the segment and length.
    pub position: u64,
    pub len: u64,
    pub max_timestamp: i64,
}

/// Scans a segment file from the start, checking every batch, to rebuild its indexes
/// and find where valid data ends. Reads in large chunks; never panics on bad bytes.
pub(crate) fn scan(file: &dyn FsFile, path: &Path, base: u64, interval: u32) -> Result<Scan> {
    const CHUNK: usize = 4 << 20;
    let file_len = file.size().map_err(LogError::io(path))?;
    let mut out = Scan {
        valid_len: 0,
        end_offset: None,
        max_timestamp: i64::MIN,
        index: LiveIndex::default(),
        damage: None,
        zero_tail: 0,
    };
    let mut builder = IndexBuilder::new(interval);
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = 0u64; // file position of buf[0]
    let mut pos = 0u64;
    let mut prev_last: Option<u64> = None;
    while pos < file_len {
        let rel = (pos - buf_start) as usize;
        if buf.len() < rel + batch::HEADER_LEN {
            // Refill from `pos`, at least one header's worth.
            let want = (CHUNK as u64).min(file_len - pos) as usize;
            buf.resize(want, 0);
            fs::read_exact_at(file, &mut buf, pos).map_err(LogError::io(path))?;
            buf_start = pos;
            if want < batch::HEADER_LEN {
                if buf.iter().all(|b| *b == 0) {
                    out.zero_tail = want as u64;
                    break;
                }
                out.damage = Some(FormatError::Truncated {
                    needed: batch::HEADER_LEN,
                    available: want,
                });
                break;
            }
            continue;
        }
        if buf[rel..rel + batch::HEADER_LEN].iter().all(|b| *b == 0)
            && zeros_to_end(file, pos, file_len).map_err(LogError::io(path))?
        {
            out.zero_tail = file_len - pos;
            break;
        }
        let h = match batch::decode_header(&buf[rel..]) {
            Ok(h) => h,
            Err(e) => {
                out.damage = Some(e);
                break;
            }
        };
        let total = h.total_len();
        if pos + total as u64 > file_len {
            out.damage = Some(FormatError::Truncated {
                needed: total,
                available: (file_len - pos) as usize,
            });
            break;
        }
        if buf.len() < rel + total {
            buf.resize(total.max(CHUNK).min((file_len - pos) as usize), 0);
            fs::read_exact_at(file, &mut buf, pos).map_err(LogError::io(path))?;
            buf_start = pos;
            continue;
        }
        if let Err(e) = batch::verify(&buf[rel..rel + total], &h) {
            out.damage = Some(e);
            break;
        }
        // Offsets must increase and stay within what a u32 relative offset can index.
        let rel_last = h
            .last_offset()
            .checked_sub(base)
            .filter(|&r| r <= u64::from(u32::MAX));
        let ordered = prev_last.is_none_or(|p| h.base_offset > p) && h.base_offset >= base;
        let (true, Some(rel_last)) = (ordered, rel_last) else {
            out.damage = Some(FormatError::BadRecord("batch offsets out of order"));
            break;
        };
        let placed = Placed {
            rel_base: (h.base_offset - base) as u32,
            rel_last: rel_last as u32,
            position: pos,
            len: total as u64,
            max_timestamp: h.max_timestamp,
        };
        builder.on_batch(&placed, &mut out.index);
        if h.record_count > 0 {
            out.max_timestamp = out.max_timestamp.max(h.max_timestamp);
        }
        prev_last = Some(h.last_offset());
        out.end_offset = Some(h.last_offset() + 1);
        pos += total as u64;
        out.valid_len = pos;
    }
    Ok(out)
}

/// Whether every byte of `file` from `pos` to `len` is zero.
fn zeros_to_end(file: &dyn FsFile, mut pos: u64, len: u64) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    while pos < len {
        let n = (buf.len() as u64).min(len - pos) as usize;
        fs::read_exact_at(file, &mut buf[..n], pos)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}
