//! The write-ahead file shared by all partitions of the log (durability fsync): one
//! fdatasync makes a whole commit round durable, however many partitions it touched.
//!
//! ```text
//!  writer pass:  p1 group -> pwrite into p1's segment, record appended to the round
//!                p2 group -> pwrite into p2's segment, record appended to the round
//!                ...
//!  round end:    one pwrite of the round's records + one fdatasync of the wal file
//!                -> every group of the round is published and answered
//! ```
//!
//! Without it every partition a round touched needed an fdatasync of its own segment;
//! on a busy shop a publish request touches several partitions, and those syncs, their
//! thread switches and their disk writes were most of the delay from publish to
//! subscriber. Segment files are still written at once (readers read them), but are
//! synced later: when they roll (sealing), when the log closes, and by a checkpoint.
//!
//! There are two wal files, used in turn. When the one being written is full, the
//! writer moves to the other and a checkpoint thread fsyncs every segment the full one
//! has records for; only then may the full one be written again. Each use of a file
//! has a generation number, higher than the other file's, and a random nonce, both
//! written in each record: records left from an earlier use of the file, which may
//! follow the current use's last record, are told apart by their nonce. Groups larger than `wal_max_group_bytes`
//! skip the wal and fsync their own segment (`commit.rs`): for bulk writes the wal
//! would double the bytes written.
//!
//! Record layout (little endian), one per group or topic deletion:
//!
//! ```text
//!  crc32c u32 | len u32 | generation u64 | nonce u64 | kind u8 | partition u32
//!  | segment base u64 | position u64 | topic len u16 | topic bytes | data (the batches)
//! ```
//!
//! `crc32c` covers everything after itself; `len` is the whole record's length.
//! Recovery is in `replay.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::partition::Partition;
use crate::error::{LogError, Result};
use crate::fs::{self, Fs, FsFile, OpenMode};
use crate::types::TopicName;

/// The directory of the wal files, in the data dir.
pub(crate) const WAL_DIR: &str = "wal";
/// The two files, used in turn (generation `g` is written to `FILES[g % 2]`).
pub(crate) const FILES: [&str; 2] = ["0.wal", "1.wal"];
/// Bytes of a record before the topic name.
pub(crate) const HEADER_LEN: usize = 4 + 4 + 8 + 8 + 1 + 4 + 8 + 8 + 2;
/// The zeros written ahead of a wal file's data, in the same pwrite, so that an
/// fdatasync of records written over them needs no write of the file's size.
const PREALLOCATE_BYTES: u64 = 1 << 20;

/// What a record says.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A group of batches written to a segment at a position.
    Data = 1,
    /// The topic was deleted: its earlier records must not be replayed (a topic
    /// created later with the same name would receive them).
    DropTopic = 2,
}

/// The fields of a record's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub generation: u64,
    /// Random, one per use of a file.
    pub nonce: u64,
    pub kind: Kind,
    pub partition: u32,
    pub base: u64,
    pub position: u64,
    pub topic: String,
}

/// Appends one whole record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, h: &Header, data: &[u8]) {
    let start = buf.len();
    let len = HEADER_LEN + h.topic.len() + data.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&h.generation.to_le_bytes());
    buf.extend_from_slice(&h.nonce.to_le_bytes());
    buf.push(h.kind as u8);
    buf.extend_from_slice(&h.partition.to_le_bytes());
    buf.extend_from_slice(&h.base.to_le_bytes());
    buf.extend_from_slice(&h.position.to_le_bytes());
    buf.extend_from_slice(&(h.topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(h.topic.as_bytes());
    buf.extend_from_slice(data);
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Parses the fixed part of a record header: (crc, whole length, header without topic).
pub(crate) fn decode_fixed(raw: &[u8; HEADER_LEN]) -> Option<(u32, usize, Header, usize)> {
    let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
    let kind = match raw[24] {
        1 => Kind::Data,
        2 => Kind::DropTopic,
        _ => return None,
    };
    let topic_len = usize::from(u16::from_le_bytes([
        raw[HEADER_LEN - 2],
        raw[HEADER_LEN - 1],
    ]));
    let len = u32_at(4) as usize;
    if len < HEADER_LEN + topic_len {
        return None;
    }
    let header = Header {
        generation: u64_at(8),
        nonce: u64_at(16),
        kind,
        partition: u32_at(25),
        base: u64_at(29),
        position: u64_at(37),
        topic: String::new(),
    };
    Some((u32_at(0), len, header, topic_len))
}

/// A number no earlier use of a wal file is likely to have had: 64 random bits.
fn nonce(generation: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(generation);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// The wal of one log (only with durability fsync and `wal_bytes` > 0).
pub(crate) struct Wal {
    dir: PathBuf,
    files: [Arc<dyn FsFile>; 2],
    capacity: u64,
    /// A round is written once it holds this many bytes, even mid-pass.
    max_round: usize,
    state: Mutex<State>,
    /// Wakes the syncer: rounds were written, or the log stops.
    written: Condvar,
    /// Wakes those waiting for `durable` to advance.
    synced: Condvar,
    /// Which files may be written: not the current one, nor one being checkpointed.
    free: Arc<FreeFiles>,
}

#[derive(Default)]
struct FreeFiles {
    free: Mutex<[bool; 2]>,
    freed: Condvar,
}

impl FreeFiles {
    fn release(&self, file: usize) {
        self.free.lock()[file] = true;
        self.freed.notify_all();
    }
}

/// Marks are counts of bytes ever appended to rounds: a group is durable once
/// `durable` reaches the value `appended` had after its record.
struct State {
    generation: u64,
    nonce: u64,
    /// Where the next round goes in the current file.
    position: u64,
    /// How far each file is known to be allocated (data or zeros).
    allocated: [u64; 2],
    appended: u64,
    /// Rounds up to here are written to the current file.
    written: u64,
    /// Rounds up to here are synced.
    durable: u64,
    /// The records of the round being assembled.
    buf: Vec<u8>,
    /// Partitions with groups in the round being assembled.
    round: Vec<Arc<Partition>>,
    /// Partitions with groups in rounds written but not synced yet.
    unsynced: Vec<Arc<Partition>>,
    /// Partitions with records in the current file, for its checkpoint.
    dirty: Vec<Arc<Partition>>,
    syncer_started: bool,
    stopped: bool,
    /// Set by a failed write or sync: every later round fails too.
    failed: bool,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens both files for writing, after `replay` has applied and invalidated their
    /// records. Writing starts at the start of the file of `generation`.
    pub fn open(
        fs: &dyn Fs,
        data_dir: &Path,
        capacity: u64,
        max_group_bytes: u64,
        generation: u64,
    ) -> Result<Wal> {
        let dir = data_dir.join(WAL_DIR);
        let mut files = Vec::with_capacity(2);
        let mut allocated = [0; 2];
        for (i, name) in FILES.iter().enumerate() {
            let path = dir.join(name);
            let file = fs
                .open(&path, OpenMode::Create)
                .map_err(LogError::io(&path))?;
            allocated[i] = file.size().map_err(LogError::io(&path))?.min(capacity);
            files.push(file);
        }
        // The files' entries, and the wal directory's own entry in the data dir.
        fs.sync_dir(&dir).map_err(LogError::io(&dir))?;
        fs.sync_dir(data_dir).map_err(LogError::io(data_dir))?;
        let current = (generation % 2) as usize;
        let mut free = [true; 2];
        free[current] = false;
        Ok(Wal {
            files: files.try_into().expect("two files"),
            dir,
            capacity,
            max_round: (capacity / 4).max(max_group_bytes * 2) as usize,
            state: Mutex::new(State {
                generation,
                nonce: nonce(generation),
                position: 0,
                allocated,
                appended: 0,
                written: 0,
                durable: 0,
                buf: Vec::new(),
                round: Vec::new(),
                unsynced: Vec::new(),
                dirty: Vec::new(),
                syncer_started: false,
                stopped: false,
                failed: false,
            }),
            written: Condvar::new(),
            synced: Condvar::new(),
            free: Arc::new(FreeFiles {
                free: Mutex::new(free),
                freed: Condvar::new(),
            }),
        })
    }

    /// Adds a record of `data`, just written at `position` of the segment at `base` of
    /// `p`, to the round. `stage` runs under the wal's lock with the mark `durable`
    /// must reach for the group to be published: a round written meanwhile by another
    /// thread (a topic deletion) cannot miss the group or publish it early.
    pub fn append(
        self: &Arc<Self>,
        p: &Arc<Partition>,
        base: u64,
        position: u64,
        data: &[u8],
        stage: impl FnOnce(u64),
    ) {
        let header = Header {
            generation: 0,
            nonce: 0,
            kind: Kind::Data,
            partition: p.id.0,
            base,
            position,
            topic: p.topic.as_str().to_owned(),
        };
        let mut s = self.make_room(HEADER_LEN + header.topic.len() + data.len());
        let header = Header {
            generation: s.generation,
            nonce: s.nonce,
            ..header
        };
        encode(&mut s.buf, &header, data);
        s.appended += (HEADER_LEN + header.topic.len() + data.len()) as u64;
        stage(s.appended);
        s.round.push(p.clone());
        if p.wal_generation.swap(s.generation, Ordering::AcqRel) != s.generation {
            s.dirty.push(p.clone());
        }
    }

    /// Makes the topic's earlier records void (durably, before returning).
    pub fn drop_topic(self: &Arc<Self>, topic: &TopicName) -> Result<()> {
        let mut s = self.make_room(HEADER_LEN + topic.as_str().len());
        let header = Header {
            generation: s.generation,
            nonce: s.nonce,
            kind: Kind::DropTopic,
            partition: 0,
            base: 0,
            position: 0,
            topic: topic.as_str().to_owned(),
        };
        encode(&mut s.buf, &header, &[]);
        s.appended += (HEADER_LEN + topic.as_str().len()) as u64;
        let mark = s.appended;
        self.write_round(&mut s);
        while s.durable < mark && !s.failed {
            self.synced.wait(&mut s);
        }
        match s.failed {
            true => Err(self.failed_error()),
            false => Ok(()),
        }
    }

    /// Writes the round assembled so far (at the end of the writer's pass); the syncer
    /// thread makes it durable and publishes it.
    pub fn commit(self: &Arc<Self>) {
        let mut s = self.state.lock();
        self.write_round(&mut s);
    }

    /// The state, with room in the round and the current file for `len` more bytes:
    /// writes the round first if it is full, moves to the other file if this one is.
    fn make_room(self: &Arc<Self>, len: usize) -> MutexGuard<'_, State> {
        let mut s = self.state.lock();
        loop {
            let fits_round = s.buf.len() + len <= self.max_round;
            let fits_file = s.position + (s.buf.len() + len) as u64 <= self.capacity;
            let full = !fits_round || !fits_file;
            if !s.buf.is_empty() && full {
                self.write_round(&mut s);
            } else if s.buf.is_empty() && s.position > 0 && !fits_file {
                // Every round in this file is synced before the next one is written.
                // The lock is let go while waiting: all is checked again after.
                if s.durable < s.written && !s.failed {
                    self.synced.wait(&mut s);
                    continue;
                }
                self.switch(&mut s);
            } else {
                return s;
            }
        }
    }

    /// Moves writing to the other file once it is free, and starts the checkpoint of
    /// the current one on a thread of its own.
    fn switch(&self, s: &mut State) {
        let old = (s.generation % 2) as usize;
        let next = 1 - old;
        {
            let mut free = self.free.free.lock();
            while !free[next] {
                tracing::debug!("waiting for the checkpoint of the other wal file");
                self.free.freed.wait(&mut free);
            }
            free[next] = false;
        }
        let dirty = Arc::new(std::mem::take(&mut s.dirty));
        s.generation += 1;
        s.nonce = nonce(s.generation);
        s.position = 0;
        let checkpoint = move |dirty: &[Arc<Partition>], free: &FreeFiles| {
            dirty.iter().for_each(|p| p.sync_for_checkpoint());
            free.release(old);
        };
        let (d, free) = (dirty.clone(), self.free.clone());
        let spawned = std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || checkpoint(&d, &free));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a wal checkpoint thread; checkpointing inline");
            checkpoint(&dirty, &self.free);
        }
    }

    /// One pwrite of the round's records (and zeros ahead, if the file is not
    /// allocated that far yet); hands it to the syncer.
    fn write_round(self: &Arc<Self>, s: &mut State) {
        if s.buf.is_empty() {
            return;
        }
        let f = (s.generation % 2) as usize;
        let len = s.buf.len() as u64;
        let end = s.position + len;
        if end > s.allocated[f] {
            let to = (end + PREALLOCATE_BYTES)
                .next_multiple_of(4096)
                .min(self.capacity)
                .max(end);
            s.buf.resize((to - s.position) as usize, 0);
        }
        let file = &self.files[f];
        let wrote = match s.failed {
            true => Err(std::io::Error::other("an earlier wal write failed")),
            false => fs::write_all_at(&**file, &s.buf, s.position),
        };
        let reached = s.position + s.buf.len() as u64;
        s.buf.clear();
        let round = std::mem::take(&mut s.round);
        if let Err(e) = wrote {
            s.failed = true;
            self.synced.notify_all();
            tracing::error!(error = %e, "writing the wal failed; its partitions refuse writes until the log is reopened");
            round.iter().for_each(|p| p.fail_logged(u64::MAX, &e));
            return;
        }
        s.allocated[f] = s.allocated[f].max(reached);
        s.position = end;
        s.written = s.appended;
        s.unsynced.extend(round);
        if !s.syncer_started {
            s.syncer_started = true;
            let wal = self.clone();
            let spawned = std::thread::Builder::new()
                .name("sluice-wal-sync".into())
                .spawn(move || wal.run_syncer());
            if let Err(e) = spawned {
                // Appends then wait for a thread that does not come: say so loudly.
                tracing::error!(error = %e, "cannot start the wal's sync thread");
            }
        } else {
            self.written.notify_one();
        }
    }

    /// The syncer thread: one fdatasync for every round written since the last, then
    /// their groups are published (in write order per partition: `publish_logged`).
    fn run_syncer(&self) {
        let mut s = self.state.lock();
        loop {
            while s.durable == s.written && !s.stopped {
                self.written.wait(&mut s);
            }
            if s.durable == s.written {
                return; // stopped, nothing left
            }
            let mark = s.written;
            let parts = std::mem::take(&mut s.unsynced);
            let file = self.files[(s.generation % 2) as usize].clone();
            let failed = s.failed;
            drop(s);
            let synced = match failed {
                true => Err(std::io::Error::other("an earlier wal write failed")),
                false => file.sync_data(),
            };
            s = self.state.lock();
            // On failure too: waiters see `failed`, and nothing is synced twice.
            s.durable = mark;
            if let Err(e) = &synced
                && !std::mem::replace(&mut s.failed, true)
            {
                tracing::error!(error = %e, "syncing the wal failed; its partitions refuse writes until the log is reopened");
            }
            self.synced.notify_all();
            drop(s);
            match synced {
                Ok(()) => parts.iter().for_each(|p| p.publish_logged(mark)),
                Err(e) => parts.iter().for_each(|p| p.fail_logged(mark, &e)),
            }
            s = self.state.lock();
        }
    }

    fn failed_error(&self) -> LogError {
        LogError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("writing the wal failed"),
        }
    }

    /// Lets the syncer end once it has synced what was written, and lets go of the
    /// partitions held for checkpoints (the log is closing or gone).
    pub fn stop(&self) {
        let mut s = self.state.lock();
        s.stopped = true;
        s.dirty.clear();
        self.written.notify_all();
    }
}
