//! The threads that commit appends, shared by every partition of the log: one writer
//! and a few syncers (`sync_threads`, default 4).
//!
//! ```text
//!  append(p) --enqueue--> p.queue --(p not scheduled yet)--> writer lane
//!  writer:   each ready partition in turn: one group -> one pwrite, and then
//!              small group, with a wal (in a pass over at least wal_min_partitions):
//!              a record in the pass's wal round
//!              otherwise: --> syncer lane
//!            end of the pass: the wal round, one pwrite --> the wal's syncer thread:
//!            one fdatasync for all rounds written so far -> publish -> reply (wal.rs)
//!  syncers:  each takes one ready partition: one fdatasync for all the groups
//!            written to it so far -> publish -> reply
//! ```
//!
//! Why shared threads rather than a leader and a syncer per partition: a publish
//! request usually touches several partitions at once. Per-partition threads were
//! woken once per partition and request; the shared writer is woken once for all the
//! partitions that became ready together and writes them back to back (a pwrite is a
//! copy into the page cache: serialising them costs little). fdatasyncs wait on the
//! disk, so they do run in parallel, on up to `sync_threads` threads. On the 2-core
//! machine this cut context switches per published event by three quarters
//! (docs/adr/0003). The lanes have threads of their own (named `sluice-writer` and
//! `sluice-sync`), started on first need and parked when idle: thousands of partitions
//! do not mean thousands of threads, and the tokio runtime's blocking pool, which
//! serves reads, never competes with them.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::partition::Partition;
use super::wal::Wal;

/// The writer and the syncer lanes of one log.
pub(crate) struct Committer {
    write: Lane,
    sync: Lane,
    /// The write-ahead file, if the log has one: the writer syncs it once per pass.
    wal: Option<Arc<Wal>>,
    /// Passes over fewer partitions do not use the wal (`EmbeddedConfig`).
    wal_min_partitions: usize,
    /// The runtime the log was opened on, if any, for background work started from
    /// the lanes' threads (sealing a rolled segment).
    runtime: Option<tokio::runtime::Handle>,
}

/// Partitions ready for one stage, served by up to `max_threads` threads of its own,
/// started on first need and parked while there is nothing to do.
struct Lane {
    name: &'static str,
    state: Mutex<LaneState>,
    wake: Condvar,
    max_threads: usize,
}

struct LaneState {
    ready: Vec<Arc<Partition>>,
    threads: usize,
    idle: usize,
    stopped: bool,
}

impl Lane {
    fn new(name: &'static str, max_threads: usize) -> Lane {
        Lane {
            name,
            state: Mutex::new(LaneState {
                ready: Vec::new(),
                threads: 0,
                idle: 0,
                stopped: false,
            }),
            wake: Condvar::new(),
            max_threads: max_threads.max(1),
        }
    }

    /// Adds a ready partition; true when the caller must start one more thread.
    fn push(&self, p: Arc<Partition>) -> bool {
        let mut s = self.state.lock();
        s.ready.push(p);
        if s.idle > 0 {
            self.wake.notify_one();
            return false;
        }
        let start = s.threads < self.max_threads;
        s.threads += usize::from(start);
        start
    }

    /// Waits for ready partitions and takes up to `n`, oldest first; `None` once the
    /// log is gone and nothing is left (the calling thread then ends).
    fn take(&self, n: usize) -> Option<Vec<Arc<Partition>>> {
        let mut s = self.state.lock();
        while s.ready.is_empty() {
            if s.stopped {
                s.threads -= 1;
                return None;
            }
            s.idle += 1;
            self.wake.wait(&mut s);
            s.idle -= 1;
        }
        let n = n.min(s.ready.len());
        Some(s.ready.drain(..n).collect())
    }

    fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("sync_threads", &self.sync.max_threads)
            .finish_non_exhaustive()
    }
}

impl Committer {
    /// Lanes for a log opened now (on the current runtime, if any).
    pub fn new(sync_threads: usize, wal: Option<Wal>, wal_min_partitions: usize) -> Committer {
        Committer {
            write: Lane::new("sluice-writer", 1),
            sync: Lane::new("sluice-sync", sync_threads),
            wal: wal.map(Arc::new),
            wal_min_partitions,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    pub fn wal(&self) -> Option<&Arc<Wal>> {
        self.wal.as_ref()
    }

    pub fn runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.as_ref()
    }

    /// `p` has queued appends and is not scheduled yet (its `scheduled` flag was clear).
    pub fn schedule_write(self: &Arc<Self>, p: Arc<Partition>) {
        if self.write.push(p) {
            self.start(&self.write, Committer::run_writer);
        }
    }

    /// `p` has written groups waiting for their fsync and is not scheduled yet.
    pub fn schedule_sync(self: &Arc<Self>, p: Arc<Partition>) {
        if self.sync.push(p) {
            self.start(&self.sync, Committer::run_syncer);
        }
    }

    /// Lets the threads end once they have finished what is ready (the log is gone).
    pub fn stop(&self) {
        self.write.stop();
        self.sync.stop();
        if let Some(wal) = &self.wal {
            wal.stop();
        }
    }

    fn start(self: &Arc<Self>, lane: &Lane, run: fn(&Committer)) {
        let c = self.clone();
        let spawned = std::thread::Builder::new()
            .name(lane.name.into())
            .spawn(move || run(&c));
        if let Err(e) = spawned {
            // Appends then wait for a thread that does not come: say so loudly.
            tracing::error!(error = %e, thread = lane.name, "cannot start a log commit thread");
            lane.state.lock().threads -= 1;
        }
    }

    /// One group per ready partition per pass, so a busy partition cannot starve the
    /// others; a partition with more queued goes round again. With a wal, the pass
    /// ends with its one fdatasync, which publishes every group of the pass.
    fn run_writer(&self) {
        while let Some(ready) = self.write.take(usize::MAX) {
            let shared = ready.len() >= self.wal_min_partitions;
            for p in ready {
                if p.write_round(shared) {
                    self.write.state.lock().ready.push(p);
                }
            }
            if let Some(wal) = &self.wal {
                wal.commit();
            }
        }
    }

    /// One partition at a time, so that the other syncers take the others.
    fn run_syncer(&self) {
        while let Some(ready) = self.sync.take(1) {
            ready.iter().for_each(|p| p.sync_round());
        }
    }
}
