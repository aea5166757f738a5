//! The embedded log: topics of partitions of segment files in a locked data dir.
//!
//! ```text
//! <data-dir>/LOCK                                   held while open (one process)
//! <data-dir>/topics/<topic>/topic.json              TopicConfig
//! <data-dir>/topics/<topic>/<partition>/<base>.log  record batches
//!                                     /<base>.index      sparse offset index (sealed)
//!                                     /<base>.timeindex  sparse time index (sealed)
//! <data-dir>/wal/0.wal, 1.wal                       write-ahead files (`wal.rs`)
//! ```

mod cleanup;
mod commit;
mod committer;
mod config;
mod partition;
mod recovery;
mod replay;
mod segment;
mod verify;
mod wal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::{Condvar, Mutex, RwLock};

pub use cleanup::CleanupStats;
use committer::Committer;
pub use config::{Durability, EmbeddedConfig};
use partition::Partition;
pub use verify::{Damage, VerifyReport, verify_dir};

use crate::error::{LogError, Result};
use crate::format::batch::{self, FormatError};
use crate::fs::{self, DirLock, Fs, StdFs};
use crate::log::{Appended, FetchRequest, Fetched, Log, PartitionOffsets, TopicInfo};
use crate::types::{Offset, PartitionId, Record, Timestamp, TopicConfig, TopicName};

const TOPICS_DIR: &str = "topics";
const TOPIC_FILE: &str = "topic.json";
const DELETED_PREFIX: &str = ".deleted-";
/// The most `preallocate_bytes` may be: the zeros ride in the group commit's buffer.
const MAX_PREALLOCATE_BYTES: u64 = 64 << 20;
/// The smallest write-ahead file.
const MIN_WAL_BYTES: u64 = 16 << 10;

struct Topic {
    dir: PathBuf,
    config: Arc<RwLock<TopicConfig>>,
    partitions: RwLock<Vec<Arc<Partition>>>,
}

struct Inner {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    settings: Arc<EmbeddedConfig>,
    committer: Arc<Committer>,
    topics: RwLock<BTreeMap<TopicName, Arc<Topic>>>,
    /// Serialises topic creation, deletion and config changes.
    admin: Mutex<()>,
    closed: AtomicBool,
    stop: Arc<Stop>,
    _lock: Box<dyn DirLock>,
}

/// The embedded, durable, partitioned log. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// What the open log holds, for status output and the reopen benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    pub topics: usize,
    pub partitions: usize,
    pub segments: usize,
    pub bytes: u64,
    pub memory_index_entries: usize,
}

impl EmbeddedLog {
    /// Opens (or creates) the log in `dir` on the real filesystem, recovering after a
    /// crash, and starts its background flusher and cleaner threads.
    pub fn open(dir: impl AsRef<Path>, settings: EmbeddedConfig) -> Result<EmbeddedLog> {
        Self::open_with_fs(Arc::new(StdFs), dir.as_ref(), settings)
    }

    pub fn open_with_fs(
        fs: Arc<dyn Fs>,
        dir: &Path,
        settings: EmbeddedConfig,
    ) -> Result<EmbeddedLog> {
        if settings.sync_threads == 0 {
            return Err(LogError::InvalidConfig {
                field: "log.sync_threads",
                reason: "must be at least 1".into(),
            });
        }
        if settings.preallocate_bytes > MAX_PREALLOCATE_BYTES {
            return Err(LogError::InvalidConfig {
                field: "log.preallocate_bytes",
                reason: format!(
                    "{} is more than the {MAX_PREALLOCATE_BYTES} bytes a group commit may write ahead",
                    settings.preallocate_bytes
                ),
            });
        }
        if settings.wal_min_partitions == 0 {
            return Err(LogError::InvalidConfig {
                field: "log.wal_min_partitions",
                reason: "must be at least 1".into(),
            });
        }
        if settings.wal_bytes > 0 && settings.wal_bytes < MIN_WAL_BYTES {
            return Err(LogError::InvalidConfig {
                field: "log.wal_bytes",
                reason: format!(
                    "{} is less than the {MIN_WAL_BYTES} bytes a write-ahead file needs (0 turns it off)",
                    settings.wal_bytes
                ),
            });
        }
        if settings.wal_bytes > 0 && settings.wal_max_group_bytes > settings.wal_bytes / 4 {
            return Err(LogError::InvalidConfig {
                field: "log.wal_max_group_bytes",
                reason: format!(
                    "{} is more than a quarter of log.wal_bytes ({})",
                    settings.wal_max_group_bytes, settings.wal_bytes
                ),
            });
        }
        if !fs.exists(dir) {
            tracing::info!(dir = %dir.display(), "creating a new, empty data dir");
        }
        fs.create_dir_all(dir).map_err(LogError::io(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = fs.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => LogError::Locked {
                path: dir.to_path_buf(),
            },
            _ => LogError::Io {
                path: lock_path.clone(),
                source: e,
            },
        })?;
        let topics_dir = dir.join(TOPICS_DIR);
        fs.create_dir_all(&topics_dir)
            .map_err(LogError::io(&topics_dir))?;
        // Before any partition opens: they then recover from what the wal rewrote.
        let generation = replay::replay(&*fs, dir, &topics_dir)?;
        let wal = (settings.durability == Durability::Fsync && settings.wal_bytes > 0)
            .then(|| {
                wal::Wal::open(
                    &*fs,
                    dir,
                    settings.wal_bytes,
                    settings.wal_max_group_bytes,
                    generation,
                )
            })
            .transpose()?;
        let settings = Arc::new(settings);
        let committer = Arc::new(Committer::new(
            settings.sync_threads,
            wal,
            settings.wal_min_partitions,
        ));
        let mut topics = BTreeMap::new();
        for name in fs
            .read_dir(&topics_dir)
            .map_err(LogError::io(&topics_dir))?
        {
            let path = topics_dir.join(&name);
            if name.starts_with(DELETED_PREFIX) {
                fs.remove_dir_all(&path).map_err(LogError::io(&path))?;
                continue;
            }
            let Ok(topic_name) = TopicName::new(name.clone()) else {
                tracing::warn!(path = %path.display(), "ignoring a directory that is not a topic");
                continue;
            };
            if !fs.exists(&path.join(TOPIC_FILE)) {
                // Its topic file is a creation's commit point: this one never finished.
                tracing::warn!(path = %path.display(), "removing a topic whose creation was interrupted");
                fs.remove_dir_all(&path).map_err(LogError::io(&path))?;
                continue;
            }
            let topic = open_topic(&fs, &settings, &committer, &topic_name, path)?;
            topics.insert(topic_name, Arc::new(topic));
        }
        let log = EmbeddedLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                fs,
                settings,
                committer,
                topics: RwLock::new(topics),
                admin: Mutex::new(()),
                closed: AtomicBool::new(false),
                stop: Arc::new(Stop::default()),
                _lock: lock,
            }),
        };
        log.start_background();
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn settings(&self) -> &EmbeddedConfig {
        &self.inner.settings
    }

    fn start_background(&self) {
        let s = &self.inner.settings;
        if s.durability == Durability::Interval {
            spawn_periodic(
                "sluice-log-flush",
                &self.inner,
                Duration::from_millis(s.flush_interval_ms.max(1)),
                |inner| {
                    for p in all_partitions(inner) {
                        if let Err(e) = p.sync() {
                            tracing::error!(error = %e, "interval flush failed");
                        }
                    }
                },
            );
        }
        spawn_periodic(
            "sluice-log-clean",
            &self.inner,
            Duration::from_millis(s.maintenance_interval_ms.max(1)),
            |inner| {
                let _ = maintain(inner); // errors are logged per partition
            },
        );
    }

    fn topic_handle(&self, name: &TopicName) -> Result<Arc<Topic>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        self.inner
            .topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::TopicNotFound(name.to_string()))
    }

    fn partition(&self, name: &TopicName, id: PartitionId) -> Result<Arc<Partition>> {
        let topic = self.topic_handle(name)?;
        let parts = topic.partitions.read();
        parts
            .get(id.0 as usize)
            .cloned()
            .ok_or_else(|| LogError::PartitionNotFound {
                topic: name.to_string(),
                partition: id.0,
            })
    }

    /// Runs retention and compaction on every partition now (the background thread
    /// does the same every `maintenance_interval_ms`).
    pub fn run_cleanup(&self) -> Result<CleanupStats> {
        maintain(&self.inner)
    }

    /// Seals the active segment of a partition (so compaction and retention may act on
    /// everything written so far).
    pub fn roll(&self, name: &TopicName, id: PartitionId) -> Result<()> {
        self.partition(name, id)?.roll_now()
    }

    pub fn stats(&self) -> LogStats {
        let parts = all_partitions(&self.inner);
        LogStats {
            topics: self.inner.topics.read().len(),
            partitions: parts.len(),
            segments: parts.iter().map(|p| p.segment_count()).sum(),
            bytes: parts.iter().map(|p| p.size_bytes()).sum(),
            memory_index_entries: parts.iter().map(|p| p.memory_index_entries()).sum(),
        }
    }

    /// Waits for queued appends, syncs everything and writes the active segments'
    /// indexes, so that the next open needs no scan. The log refuses calls afterwards.
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.signal_stop();
        let mut first_err = None;
        for p in all_partitions(&self.inner) {
            if let Err(e) = p.close() {
                first_err.get_or_insert(e);
            }
        }
        self.inner.committer.stop();
        first_err.map_or(Ok(()), Err)
    }

    fn write_topic_file(&self, dir: &Path, config: &TopicConfig) -> Result<()> {
        let path = dir.join(TOPIC_FILE);
        let json = serde_json::to_vec_pretty(config).map_err(|e| LogError::InvalidConfig {
            field: "topic",
            reason: e.to_string(),
        })?;
        fs::write_atomic(&*self.inner.fs, &path, &json).map_err(LogError::io(&path))
    }

    fn open_partition(&self, name: &TopicName, topic: &Topic, id: u32) -> Result<Arc<Partition>> {
        Ok(Arc::new(Partition::open(
            name.clone(),
            PartitionId(id),
            topic.dir.join(id.to_string()),
            self.inner.fs.clone(),
            self.inner.settings.clone(),
            self.inner.committer.clone(),
            topic.config.clone(),
        )?))
    }
}

/// Tells the background threads to end. Kept apart from `Inner`, so that a waiting
/// thread holds no reference to the log and dropping the log stops it.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Inner {
    fn signal_stop(&self) {
        *self.stop.stopped.lock() = true;
        self.stop.wake.notify_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.signal_stop();
        self.committer.stop();
    }
}

fn spawn_periodic(name: &str, inner: &Arc<Inner>, every: Duration, f: fn(&Inner)) {
    let stop = inner.stop.clone();
    let inner: Weak<Inner> = Arc::downgrade(inner);
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                {
                    let mut stopped = stop.stopped.lock();
                    if !*stopped {
                        stop.wake.wait_for(&mut stopped, every);
                    }
                    if *stopped {
                        return;
                    }
                }
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                f(&strong);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a log background thread");
    }
}

fn all_partitions(inner: &Inner) -> Vec<Arc<Partition>> {
    let topics: Vec<Arc<Topic>> = inner.topics.read().values().cloned().collect();
    topics
        .iter()
        .flat_map(|t| t.partitions.read().clone())
        .collect()
}

/// Retention and compaction on every partition. A failing partition does not stop the
/// others; the first error is returned after all were tried.
fn maintain(inner: &Inner) -> Result<CleanupStats> {
    let now = Timestamp::now();
    let mut total = CleanupStats::default();
    let mut first_err = None;
    for p in all_partitions(inner) {
        match p.enforce_retention(now) {
            Ok(r) => total.segments_deleted += r.segments_deleted,
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.id.0, error = %e, "retention failed");
                first_err.get_or_insert(e);
            }
        }
        if p.needs_compaction.load(Ordering::Acquire) {
            match p.compact(now) {
                Ok(c) => {
                    total.segments_compacted += c.segments_compacted;
                    total.records_removed += c.records_removed;
                }
                Err(e) => {
                    p.needs_compaction.store(true, Ordering::Release); // try again next time
                    tracing::error!(topic = %p.topic, partition = p.id.0, error = %e, "compaction failed");
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    first_err.map_or(Ok(total), Err)
}

fn open_topic(
    fs: &Arc<dyn Fs>,
    settings: &Arc<EmbeddedConfig>,
    committer: &Arc<Committer>,
    name: &TopicName,
    dir: PathBuf,
) -> Result<Topic> {
    let path = dir.join(TOPIC_FILE);
    let raw = fs::read_all(&**fs, &path).map_err(LogError::io(&path))?;
    let config: TopicConfig = serde_json::from_slice(&raw).map_err(|e| LogError::Corrupt {
        path: path.clone(),
        position: e.column() as u64,
        reason: e.to_string(),
    })?;
    let config = Arc::new(RwLock::new(config));
    let count = config.read().partitions;
    let mut partitions = Vec::with_capacity(count as usize);
    for id in 0..count {
        partitions.push(Arc::new(Partition::open(
            name.clone(),
            PartitionId(id),
            dir.join(id.to_string()),
            fs.clone(),
            settings.clone(),
            committer.clone(),
            config.clone(),
        )?));
    }
    Ok(Topic {
        dir,
        config,
        partitions: RwLock::new(partitions),
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| LogError::Closed)?
}

#[async_trait]
impl Log for EmbeddedLog {
    async fn create_topic(&self, name: &TopicName, config: TopicConfig) -> Result<()> {
        config.validate()?;
        let this = self.clone();
        let name = name.clone();
        blocking(move || {
            let _admin = this.inner.admin.lock();
            if this.inner.closed.load(Ordering::Acquire) {
                return Err(LogError::Closed);
            }
            if this.inner.topics.read().contains_key(&name) {
                return Err(LogError::TopicExists(name.to_string()));
            }
            let fs = &this.inner.fs;
            let topics_dir = this.inner.dir.join(TOPICS_DIR);
            let dir = topics_dir.join(name.as_str());
            if fs.exists(&dir) {
                // Leftover of a creation that crashed before its topic file was written.
                fs.remove_dir_all(&dir).map_err(LogError::io(&dir))?;
            }
            fs.create_dir_all(&dir).map_err(LogError::io(&dir))?;
            let topic = Topic {
                dir: dir.clone(),
                config: Arc::new(RwLock::new(config.clone())),
                partitions: RwLock::new(Vec::new()),
            };
            let mut parts = Vec::new();
            for id in 0..config.partitions {
                parts.push(this.open_partition(&name, &topic, id)?);
            }
            *topic.partitions.write() = parts;
            // The topic file is the commit point: a topic dir without one is discarded.
            this.write_topic_file(&dir, &config)?;
            fs.sync_dir(&topics_dir)
                .map_err(LogError::io(&topics_dir))?;
            this.inner.topics.write().insert(name, Arc::new(topic));
            Ok(())
        })
        .await
    }

    async fn delete_topic(&self, name: &TopicName) -> Result<()> {
        let this = self.clone();
        let name = name.clone();
        blocking(move || {
            let _admin = this.inner.admin.lock();
            let topic = this
                .inner
                .topics
                .write()
                .remove(&name)
                .ok_or_else(|| LogError::TopicNotFound(name.to_string()))?;
            for p in topic.partitions.read().iter() {
                p.remove();
            }
            let fs = &this.inner.fs;
            let topics_dir = this.inner.dir.join(TOPICS_DIR);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let grave = topics_dir.join(format!("{DELETED_PREFIX}{name}-{nanos}"));
            fs.rename(&topic.dir, &grave)
                .map_err(LogError::io(&topic.dir))?;
            fs.sync_dir(&topics_dir)
                .map_err(LogError::io(&topics_dir))?;
            // Before a topic of the same name can be created: its records are void.
            if let Some(wal) = this.inner.committer.wal() {
                wal.drop_topic(&name)?;
            }
            fs.remove_dir_all(&grave).map_err(LogError::io(&grave))
        })
        .await
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        Ok(self
            .inner
            .topics
            .read()
            .iter()
            .map(|(name, t)| TopicInfo {
                name: name.clone(),
                config: t.config.read().clone(),
            })
            .collect())
    }

    async fn topic(&self, name: &TopicName) -> Result<TopicInfo> {
        let t = self.topic_handle(name)?;
        let config = t.config.read().clone();
        Ok(TopicInfo {
            name: name.clone(),
            config,
        })
    }

    async fn update_topic(&self, name: &TopicName, config: TopicConfig) -> Result<()> {
        config.validate()?;
        let topic = self.topic_handle(name)?;
        let current = topic.config.read().partitions;
        if config.partitions != current {
            return Err(LogError::InvalidConfig {
                field: "partitions",
                reason: format!("is {current}; change it with add_partitions"),
            });
        }
        let this = self.clone();
        blocking(move || {
            let _admin = this.inner.admin.lock();
            this.write_topic_file(&topic.dir, &config)?;
            *topic.config.write() = config;
            for p in topic.partitions.read().iter() {
                p.needs_compaction.store(true, Ordering::Release);
            }
            Ok(())
        })
        .await
    }

    async fn add_partitions(&self, name: &TopicName, partitions: u32) -> Result<()> {
        let topic = self.topic_handle(name)?;
        let this = self.clone();
        let name = name.clone();
        blocking(move || {
            let _admin = this.inner.admin.lock();
            let mut config = topic.config.read().clone();
            if partitions < config.partitions {
                return Err(LogError::InvalidConfig {
                    field: "partitions",
                    reason: format!("can only grow: {} -> {partitions}", config.partitions),
                });
            }
            config.partitions = partitions;
            config.validate()?;
            let current = topic.partitions.read().len() as u32;
            let mut added = Vec::new();
            for id in current..partitions {
                added.push(this.open_partition(&name, &topic, id)?);
            }
            this.write_topic_file(&topic.dir, &config)?;
            topic.partitions.write().extend(added);
            *topic.config.write() = config;
            Ok(())
        })
        .await
    }

    async fn append(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        records: Vec<Record>,
    ) -> Result<Appended> {
        let part = self.partition(topic, partition)?;
        if records.is_empty() {
            return Ok(Appended {
                offsets: Vec::new(),
            });
        }
        if part.config.read().cleanup_policy.compacts() && records.iter().any(|r| r.key.is_none()) {
            return Err(LogError::InvalidRecord {
                reason: format!("topic `{topic}` is compacted: every record needs a key"),
            });
        }
        let encoded = batch::encode_append(&records, Timestamp::now()).map_err(|e| match e {
            FormatError::BadLength(n) => LogError::InvalidRecord {
                reason: format!(
                    "batch of {n} bytes exceeds the limit of {} bytes",
                    batch::MAX_BATCH_BYTES
                ),
            },
            other => LogError::InvalidRecord {
                reason: other.to_string(),
            },
        })?;
        let (rx, schedule) = part.enqueue(encoded)?;
        if schedule {
            part.committer.schedule_write(part.clone());
        }
        rx.await.map_err(|_| LogError::Closed)?
    }

    async fn fetch(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        request: FetchRequest,
    ) -> Result<Fetched> {
        let part = self.partition(topic, partition)?;
        let mut hw = part.subscribe();
        let deadline = Instant::now() + request.max_wait;
        loop {
            let latest = *hw.borrow_and_update();
            if request.from.0 < latest || request.max_wait.is_zero() || Instant::now() >= deadline {
                let read = if part.reads_hot(request.from.0) {
                    part.read(&request)?
                } else {
                    let p = part.clone();
                    blocking(move || p.read(&request)).await?
                };
                return Ok(Fetched {
                    records: read.records,
                    next: read.next,
                    offsets: part.offsets(),
                });
            }
            if request.from.0 > latest {
                // Out of range: let read() produce the error.
                let p = part.clone();
                blocking(move || p.read(&request)).await?;
            }
            let woke = tokio::time::timeout_at(deadline.into(), hw.changed()).await;
            if !matches!(woke, Ok(Ok(()))) {
                return Ok(Fetched {
                    records: Vec::new(),
                    next: request.from,
                    offsets: part.offsets(),
                });
            }
        }
    }

    async fn offsets(&self, topic: &TopicName, partition: PartitionId) -> Result<PartitionOffsets> {
        Ok(self.partition(topic, partition)?.offsets())
    }

    async fn offset_for_timestamp(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        at: Timestamp,
    ) -> Result<Option<Offset>> {
        let part = self.partition(topic, partition)?;
        blocking(move || part.offset_for_timestamp(at)).await
    }

    async fn flush(&self) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || {
            for p in all_partitions(&inner) {
                p.sync()?;
            }
            Ok(())
        })
        .await
    }
}
