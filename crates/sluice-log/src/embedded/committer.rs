//! The threads that commit appends, shared by every partition of the log: one writer
//! and a few syncers (`sync_threads`, default 4).
//!
//! ```text
//!  append(p) --enqueue--> p.queue --(p not scheduled yet)--> writer lane
//!  writer:   each ready partition in turn: one group -> one pwrite --> syncer lane
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
//! (docs/adr/0003). A lane runs on the blocking pool only while it has work: an idle
//! log has no thread, and thousands of partitions do not mean thousands of threads.

use std::sync::Arc;

use parking_lot::Mutex;

use super::partition::Partition;

/// The writer and the syncer lanes of one log.
pub(crate) struct Committer {
    write: Lane,
    sync: Lane,
}

/// Partitions ready for one stage, served by at most `max_threads` threads.
struct Lane {
    state: Mutex<LaneState>,
    max_threads: usize,
}

struct LaneState {
    ready: Vec<Arc<Partition>>,
    threads: usize,
}

impl Lane {
    fn new(max_threads: usize) -> Lane {
        Lane {
            state: Mutex::new(LaneState {
                ready: Vec::new(),
                threads: 0,
            }),
            max_threads: max_threads.max(1),
        }
    }

    /// Adds a ready partition; true when the caller must start one more thread.
    fn push(&self, p: Arc<Partition>) -> bool {
        let mut s = self.state.lock();
        s.ready.push(p);
        let start = s.threads < self.max_threads;
        s.threads += usize::from(start);
        start
    }

    /// Takes up to `n` ready partitions, oldest first; none means the calling thread
    /// is done (and no longer counted).
    fn take(&self, n: usize) -> Option<Vec<Arc<Partition>>> {
        let mut s = self.state.lock();
        if s.ready.is_empty() {
            s.threads -= 1;
            return None;
        }
        let n = n.min(s.ready.len());
        Some(s.ready.drain(..n).collect())
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
    pub fn new(sync_threads: usize) -> Committer {
        Committer {
            write: Lane::new(1),
            sync: Lane::new(sync_threads),
        }
    }

    /// `p` has queued appends and is not scheduled yet (its `scheduled` flag was clear).
    pub fn schedule_write(self: &Arc<Self>, p: Arc<Partition>) {
        if self.write.push(p) {
            let c = self.clone();
            run_blocking(move || c.run_writer());
        }
    }

    /// `p` has written groups waiting for their fsync and is not scheduled yet.
    pub fn schedule_sync(self: &Arc<Self>, p: Arc<Partition>) {
        if self.sync.push(p) {
            let c = self.clone();
            run_blocking(move || c.run_syncer());
        }
    }

    /// One group per ready partition per pass, so a busy partition cannot starve the
    /// others; a partition with more queued goes round again.
    fn run_writer(&self) {
        while let Some(ready) = self.write.take(usize::MAX) {
            for p in ready {
                if p.write_round() {
                    self.write.state.lock().ready.push(p);
                }
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

/// On the runtime's blocking pool; inline when there is no runtime (a log used from
/// plain threads).
fn run_blocking(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(f)),
        Err(_) => f(),
    }
}
