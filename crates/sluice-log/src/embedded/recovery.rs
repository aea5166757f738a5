//! Opening a partition's files after a clean stop or a crash: finish or discard
//! interrupted compaction swaps, trust sealed segments whose index files match them
//! (rebuilding the others), and validate the active segment, truncating a torn or
//! corrupt tail to the last good batch.

use std::path::Path;

use super::segment::{
    self, INDEX_EXT, IndexBuilder, LOG_EXT, LiveIndex, Segment, TIME_INDEX_EXT, parse_segment_name,
    segment_path,
};
use crate::error::{LogError, Result};
use crate::format::index::{self, IndexKind, SegmentSummary};
use crate::fs::{self, Fs, OpenMode};

/// Suffix of compaction output still being written (discarded on open).
pub(crate) const CLEANED: &str = ".cleaned";
/// Suffix of compaction output that replaces its inputs (completed on open).
pub(crate) const SWAP: &str = ".swap";

/// Completes a compaction swap whose commit point (the time index renamed to `.swap`)
/// was reached, and removes every other leftover (`.cleaned`, partial `.swap`, `.tmp`).
pub(crate) fn finish_interrupted_swaps(fs: &dyn Fs, dir: &Path) -> Result<()> {
    let names = fs.read_dir(dir).map_err(LogError::io(dir))?;
    let mut changed = false;
    for name in &names {
        let Some(stem) = name.strip_suffix(SWAP) else {
            continue;
        };
        let Some(base) = parse_segment_name(stem, TIME_INDEX_EXT) else {
            continue;
        };
        let index_swap = segment_path(dir, base, &format!("{INDEX_EXT}{SWAP}"));
        let Ok((summary, _)) = fs::read_all(fs, &index_swap)
            .map_err(|_| index::IndexError::Truncated)
            .and_then(|raw| index::verify(&raw, IndexKind::Offset))
        else {
            continue; // left for the cleanup below
        };
        // The swap was committed: drop the segments it replaces, then rename it in.
        for other in &names {
            let replaced = [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT]
                .iter()
                .filter_map(|ext| parse_segment_name(other, ext))
                .any(|b| (summary.base_offset..summary.end_offset).contains(&b));
            if replaced {
                let path = dir.join(other);
                fs.remove_file(&path).map_err(LogError::io(&path))?;
            }
        }
        for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
            let from = segment_path(dir, base, &format!("{ext}{SWAP}"));
            let to = segment_path(dir, base, ext);
            fs.rename(&from, &to).map_err(LogError::io(&from))?;
        }
        changed = true;
        tracing::info!(dir = %dir.display(), base, "completed an interrupted compaction swap");
    }
    for name in fs.read_dir(dir).map_err(LogError::io(dir))? {
        if name.ends_with(CLEANED) || name.ends_with(SWAP) || name.ends_with(".tmp") {
            let path = dir.join(&name);
            fs.remove_file(&path).map_err(LogError::io(&path))?;
            changed = true;
        }
    }
    if changed {
        fs.sync_dir(dir).map_err(LogError::io(dir))?;
    }
    Ok(())
}

/// How a segment before the active one opened.
pub(crate) enum Opened {
    Sealed(Segment),
    /// The segment has no valid index (it was not sealed before a crash) and its data
    /// is damaged: the log must be cut there (`cut_after`) and it becomes the active one.
    Damaged,
}

/// Opens a segment before the active one. Its index files, written only after its data
/// was synced, prove it intact; without them it was rolled but not yet sealed when the
/// process stopped, so it is scanned and its indexes rebuilt. Damage found by the scan
/// means writes after it cannot be trusted either (they may have reached the disk
/// before it did): like Kafka, the log keeps only the prefix before the damage.
pub(crate) fn open_sealed_or_rebuild(
    fs: &dyn Fs,
    dir: &Path,
    base: u64,
    next_base: u64,
    interval: u32,
) -> Result<Opened> {
    if let Some(seg) = Segment::open_sealed(fs, dir, base)? {
        return Ok(Opened::Sealed(seg));
    }
    let path = segment_path(dir, base, LOG_EXT);
    let file = fs
        .open(&path, OpenMode::ReadWrite)
        .map_err(LogError::io(&path))?;
    let scan = segment::scan(&*file, &path, base, interval)?;
    if let Some(damage) = &scan.damage {
        tracing::warn!(path = %path.display(), at = scan.valid_len, %damage,
            "an unsealed segment is damaged; the log is cut there and later segments removed");
        return Ok(Opened::Damaged);
    }
    if scan.zero_tail > 0 {
        // Zeros written ahead of the data, which the roll had cut before the crash
        // but not durably: the sealed segment ends with its last batch.
        file.set_len(scan.valid_len).map_err(LogError::io(&path))?;
        file.sync_data().map_err(LogError::io(&path))?;
    }
    let summary = SegmentSummary {
        base_offset: base,
        end_offset: next_base,
        log_bytes: scan.valid_len,
        max_timestamp: scan.max_timestamp,
    };
    segment::write_index_files(
        fs,
        dir,
        &summary,
        &scan.index.offsets,
        &scan.index.times,
        "",
    )?;
    tracing::info!(path = %path.display(), "rebuilt the indexes of an unsealed segment");
    let seg = Segment::open_sealed(fs, dir, base)?.ok_or_else(|| LogError::Corrupt {
        path,
        position: 0,
        reason: "rebuilt index does not match its segment".into(),
    })?;
    Ok(Opened::Sealed(seg))
}

/// Removes the segments at `bases` (everything after a cut).
pub(crate) fn cut_after(fs: &dyn Fs, dir: &Path, bases: &[u64]) -> Result<()> {
    for &base in bases {
        for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
            let path = segment_path(dir, base, ext);
            if fs.exists(&path) {
                fs.remove_file(&path).map_err(LogError::io(&path))?;
            }
        }
    }
    fs.sync_dir(dir).map_err(LogError::io(dir))
}

/// Reads both index files of a segment fully, if valid and matching `len`.
fn load_index_files(
    fs: &dyn Fs,
    dir: &Path,
    base: u64,
    len: u64,
) -> Option<(SegmentSummary, LiveIndex)> {
    let raw = fs::read_all(fs, &segment_path(dir, base, INDEX_EXT)).ok()?;
    let (summary, _) = index::verify(&raw, IndexKind::Offset).ok()?;
    let traw = fs::read_all(fs, &segment_path(dir, base, TIME_INDEX_EXT)).ok()?;
    let (tsummary, _) = index::verify(&traw, IndexKind::Time).ok()?;
    if summary != tsummary || summary.base_offset != base || summary.log_bytes != len {
        return None;
    }
    let live = LiveIndex {
        offsets: raw[index::HEADER_LEN..]
            .chunks_exact(IndexKind::Offset.entry_len())
            .map(index::decode_offset_entry)
            .collect(),
        times: traw[index::HEADER_LEN..]
            .chunks_exact(IndexKind::Time.entry_len())
            .map(index::decode_time_entry)
            .collect(),
    };
    Some((summary, live))
}

/// Opens the last segment for appending. After a clean close its index files match
/// and are loaded (then removed, so they can never be trusted once stale); otherwise
/// the segment is scanned and a torn or corrupt tail is cut off.
pub(crate) fn open_active(
    fs: &dyn Fs,
    dir: &Path,
    base: u64,
    interval: u32,
) -> Result<(Segment, IndexBuilder)> {
    let path = segment_path(dir, base, LOG_EXT);
    let file = fs
        .open(&path, OpenMode::ReadWrite)
        .map_err(LogError::io(&path))?;
    let len = file.size().map_err(LogError::io(&path))?;
    let (summary, live) = match load_index_files(fs, dir, base, len) {
        Some(found) => found,
        None => {
            let scan = segment::scan(&*file, &path, base, interval)?;
            if let Some(damage) = &scan.damage {
                tracing::warn!(path = %path.display(), at = scan.valid_len, dropped = len - scan.valid_len,
                    %damage, "truncating a torn or corrupt tail");
            }
            if scan.valid_len < len {
                // A damaged tail, or the zeros written ahead of the data.
                file.set_len(scan.valid_len).map_err(LogError::io(&path))?;
                file.sync_data().map_err(LogError::io(&path))?;
            }
            let summary = SegmentSummary {
                base_offset: base,
                end_offset: scan.end_offset.unwrap_or(base),
                log_bytes: scan.valid_len,
                max_timestamp: scan.max_timestamp,
            };
            (summary, scan.index)
        }
    };
    let mut removed = false;
    for ext in [INDEX_EXT, TIME_INDEX_EXT] {
        let p = segment_path(dir, base, ext);
        if fs.exists(&p) {
            fs.remove_file(&p).map_err(LogError::io(&p))?;
            removed = true;
        }
    }
    if removed {
        fs.sync_dir(dir).map_err(LogError::io(dir))?;
    }
    let builder = IndexBuilder::resume(interval, &live, summary.log_bytes);
    Ok((Segment::live(base, path, file, summary, live), builder))
}
