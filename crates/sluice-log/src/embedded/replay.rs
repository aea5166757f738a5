//! Recovery from the wal (`wal.rs`), before any partition is opened: the records of
//! both files are read in generation order, and each group is written again where it
//! was written first, in its segment. The partitions' own recovery then finds whole
//! batches there and goes on as after any crash.
//!
//! A record is replayed only into a segment that exists and is not sealed: a sealed
//! segment was fsynced before its index files were written (and compaction rewrites
//! only sealed ones), a missing one was deleted. Records of a topic before its deletion
//! record are void. Once the touched segments are synced, both files are invalidated,
//! so the next recovery does not replay the same records over newer data.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::segment::{INDEX_EXT, LOG_EXT, segment_path};
use super::wal::{self, FILES, HEADER_LEN, Header, Kind, WAL_DIR};
use crate::error::{LogError, Result};
use crate::fs::{self, Fs, FsFile, OpenMode};

/// A valid record found in a wal file.
struct Found {
    header: Header,
    file: usize,
    data_at: u64,
    data_len: usize,
}

/// The wal files of a data dir, and what recovery does with their records.
pub(crate) struct Plan {
    dir: PathBuf,
    files: [Option<Arc<dyn FsFile>>; 2],
    /// The valid records of both files, in generation order.
    records: Vec<Found>,
    /// The data records to write again (indexes into `records`), with their segment.
    pub to_replay: Vec<(usize, PathBuf)>,
    max_generation: u64,
}

/// Reads both wal files of the data dir (if any; `mode` Read or ReadWrite) and picks
/// the records to replay into the segments under `topics_dir`. Changes nothing.
pub(crate) fn plan(
    fs: &dyn Fs,
    data_dir: &Path,
    topics_dir: &Path,
    mode: OpenMode,
) -> Result<Plan> {
    let dir = data_dir.join(WAL_DIR);
    let mut files = [None, None];
    let mut found = Vec::new();
    let mut max_generation = 0;
    for (i, name) in FILES.iter().enumerate() {
        let path = dir.join(name);
        if !fs.exists(&path) {
            continue;
        }
        let file = fs.open(&path, mode).map_err(LogError::io(&path))?;
        let records = read_records(&*file, i).map_err(LogError::io(&path))?;
        if let Some(last) = records.last() {
            max_generation = max_generation.max(last.header.generation);
        }
        found.push(records);
        files[i] = Some(file);
    }
    found.sort_by_key(|records| records.first().map(|r| r.header.generation));
    let records: Vec<Found> = found.into_iter().flatten().collect();
    let mut last_drop = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if r.header.kind == Kind::DropTopic {
            last_drop.insert(r.header.topic.as_str(), i);
        }
    }
    let mut to_replay = Vec::new();
    let mut writable: HashMap<PathBuf, bool> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let h = &r.header;
        let dropped = last_drop.get(h.topic.as_str()).is_some_and(|&d| d > i);
        if h.kind != Kind::Data || dropped {
            continue;
        }
        let part_dir = topics_dir.join(&h.topic).join(h.partition.to_string());
        let path = segment_path(&part_dir, h.base, LOG_EXT);
        let open = *writable.entry(path.clone()).or_insert_with(|| {
            fs.exists(&path) && !fs.exists(&segment_path(&part_dir, h.base, INDEX_EXT))
        });
        if open {
            to_replay.push((i, path));
        }
    }
    Ok(Plan {
        dir,
        files,
        records,
        to_replay,
        max_generation,
    })
}

/// Replays both wal files of the data dir (if any) into the segments under
/// `topics_dir`, syncs what it wrote and invalidates the files. Returns the
/// generation the wal goes on with: higher than any found.
pub(crate) fn replay(fs: &dyn Fs, data_dir: &Path, topics_dir: &Path) -> Result<u64> {
    let plan = plan(fs, data_dir, topics_dir, OpenMode::ReadWrite)?;
    let dir = &plan.dir;
    fs.create_dir_all(dir).map_err(LogError::io(dir))?;
    let mut touched: BTreeMap<&Path, Arc<dyn FsFile>> = BTreeMap::new();
    for (i, path) in &plan.to_replay {
        let r = &plan.records[*i];
        if !touched.contains_key(path.as_path()) {
            let seg = fs
                .open(path, OpenMode::ReadWrite)
                .map_err(LogError::io(path))?;
            touched.insert(path, seg);
        }
        let mut data = vec![0; r.data_len];
        let wal_file = plan.files[r.file]
            .as_ref()
            .expect("a file with records is open");
        fs::read_exact_at(&**wal_file, &mut data, r.data_at)
            .map_err(LogError::io(dir.join(FILES[r.file])))?;
        fs::write_all_at(&*touched[path.as_path()], &data, r.header.position)
            .map_err(LogError::io(path))?;
    }
    for (path, seg) in &touched {
        seg.sync_data().map_err(LogError::io(path))?;
    }
    if !plan.records.is_empty() {
        // Invalidate: a record at the start of a file that does not check out ends it.
        for (i, file) in plan.files.iter().enumerate() {
            if let Some(file) = file {
                let path = dir.join(FILES[i]);
                let len = file.size().map_err(LogError::io(&path))?;
                let zeros = vec![0; HEADER_LEN.min(len as usize)];
                fs::write_all_at(&**file, &zeros, 0)
                    .and_then(|()| file.sync_data())
                    .map_err(LogError::io(&path))?;
            }
        }
        tracing::info!(
            records = plan.records.len(),
            replayed = plan.to_replay.len(),
            segments = touched.len(),
            "recovered appends from the wal"
        );
    }
    Ok(plan.max_generation + 1)
}

/// The valid records at the start of one wal file: all of one use of it (the first
/// record's generation and nonce), each whole and matching its checksum.
fn read_records(file: &dyn FsFile, index: usize) -> std::io::Result<Vec<Found>> {
    let size = file.size()?;
    let mut out: Vec<Found> = Vec::new();
    let mut pos = 0u64;
    let mut fixed = [0u8; HEADER_LEN];
    while pos + HEADER_LEN as u64 <= size {
        fs::read_exact_at(file, &mut fixed, pos)?;
        let Some((crc, len, mut header, topic_len)) = wal::decode_fixed(&fixed) else {
            break;
        };
        if pos + len as u64 > size {
            break;
        }
        let mut rest = vec![0u8; len - HEADER_LEN];
        fs::read_exact_at(file, &mut rest, pos + HEADER_LEN as u64)?;
        let computed = crc32c::crc32c_append(crc32c::crc32c(&fixed[4..]), &rest);
        let same_use = out.first().is_none_or(|f| {
            (f.header.generation, f.header.nonce) == (header.generation, header.nonce)
        });
        if computed != crc || !same_use {
            break;
        }
        let Ok(topic) = std::str::from_utf8(&rest[..topic_len]) else {
            break;
        };
        header.topic = topic.to_owned();
        out.push(Found {
            header,
            file: index,
            data_at: pos + (HEADER_LEN + topic_len) as u64,
            data_len: len - HEADER_LEN - topic_len,
        });
        pos += len as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFs;

    fn header(nonce: u64, position: u64) -> Header {
        Header {
            generation: 1,
            nonce,
            kind: Kind::Data,
            partition: 0,
            base: 0,
            position,
            topic: "orders".into(),
        }
    }

    #[test]
    fn records_of_an_earlier_use_after_the_current_ones_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = StdFs
            .open(&dir.path().join("0.wal"), OpenMode::Create)
            .unwrap();
        // An earlier use of the file: five records.
        let mut old = Vec::new();
        for i in 0..5 {
            wal::encode(&mut old, &header(0xaaaa, i * 100), &[b'o'; 60]);
        }
        fs::write_all_at(&*file, &old, 0).unwrap();
        // The current use, of the same generation (counting starts again once both
        // files were invalidated) and record sizes: it ends where an old record starts.
        let mut new = Vec::new();
        for i in 0..2 {
            wal::encode(&mut new, &header(0xbbbb, i * 100), &[b'n'; 60]);
        }
        fs::write_all_at(&*file, &new, 0).unwrap();
        let found = read_records(&*file, 0).unwrap();
        let nonces: Vec<u64> = found.iter().map(|r| r.header.nonce).collect();
        assert_eq!(nonces, [0xbbbb, 0xbbbb]);
        assert_eq!(found[1].header.position, 100);
        assert_eq!(found[1].data_len, 60);
    }
}
