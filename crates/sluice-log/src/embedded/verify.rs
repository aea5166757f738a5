//! Read-only check of a whole data dir: every batch of every segment is CRC-checked and
//! every index file compared with its segment. Nothing is modified.

use std::path::{Path, PathBuf};

use super::segment::{self, INDEX_EXT, LOG_EXT, TIME_INDEX_EXT, segment_path};
use super::{TOPIC_FILE, TOPICS_DIR};
use crate::error::{LogError, Result};
use crate::format::index::{self, IndexKind};
use crate::fs::{self, Fs, OpenMode, StdFs};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    pub position: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub topics: usize,
    pub partitions: usize,
    pub segments: usize,
    pub bytes: u64,
    /// Damaged data: recovery would cut it off (in the active segment) or reads report it.
    pub damage: Vec<Damage>,
    /// Sealed segments whose index files are missing or stale (rebuilt on open).
    pub stale_indexes: Vec<PathBuf>,
    /// Records of the write-ahead files that the next open writes again into their
    /// (unsealed) segments, before it checks them: a damaged tail may be one of them.
    pub wal_records: usize,
}

/// Verifies the data dir at `dir`, holding its lock so no writer runs meanwhile.
pub fn verify_dir(dir: &Path) -> Result<VerifyReport> {
    let fs = StdFs;
    let _lock = fs.lock(&dir.join("LOCK")).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => LogError::Locked {
            path: dir.to_path_buf(),
        },
        _ => LogError::Io {
            path: dir.join("LOCK"),
            source: e,
        },
    })?;
    let topics_dir = dir.join(TOPICS_DIR);
    let mut report = VerifyReport::default();
    for topic in fs
        .read_dir(&topics_dir)
        .map_err(LogError::io(&topics_dir))?
    {
        let tdir = topics_dir.join(&topic);
        if !fs.exists(&tdir.join(TOPIC_FILE)) {
            continue;
        }
        report.topics += 1;
        for part in fs.read_dir(&tdir).map_err(LogError::io(&tdir))? {
            let pdir = tdir.join(&part);
            if part.parse::<u32>().is_err() {
                continue;
            }
            report.partitions += 1;
            verify_partition(&fs, &pdir, &mut report)?;
        }
    }
    report.wal_records = super::replay::plan(&fs, dir, &topics_dir, OpenMode::Read)?
        .to_replay
        .len();
    Ok(report)
}

fn verify_partition(fs: &dyn Fs, dir: &Path, report: &mut VerifyReport) -> Result<()> {
    let mut bases: Vec<u64> = fs
        .read_dir(dir)
        .map_err(LogError::io(dir))?
        .iter()
        .filter_map(|n| segment::parse_segment_name(n, LOG_EXT))
        .collect();
    bases.sort_unstable();
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_path(dir, base, LOG_EXT);
        let file = fs
            .open(&path, OpenMode::Read)
            .map_err(LogError::io(&path))?;
        let len = file.size().map_err(LogError::io(&path))?;
        let scan = segment::scan(&*file, &path, base, 4096)?;
        report.segments += 1;
        report.bytes += len - scan.zero_tail;
        if let Some(d) = scan.damage {
            report.damage.push(Damage {
                path: path.clone(),
                position: scan.valid_len,
                reason: d.to_string(),
            });
        }
        let sealed = i + 1 < bases.len();
        if sealed {
            let ok = [
                (INDEX_EXT, IndexKind::Offset),
                (TIME_INDEX_EXT, IndexKind::Time),
            ]
            .iter()
            .all(|(ext, kind)| {
                fs::read_all(fs, &segment_path(dir, base, ext))
                    .ok()
                    .and_then(|raw| index::verify(&raw, *kind).ok())
                    .is_some_and(|(s, _)| s.base_offset == base && s.log_bytes == len)
            });
            if !ok {
                report.stale_indexes.push(path);
            }
        }
    }
    Ok(())
}
