//! Fault injection: torn tails, flipped bits, failed fsyncs, a full disk, crash images
//! at every sync point, missing indexes, a locked or unusable data dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sluice_log::fs::{Fs, OpenMode};
use sluice_log::testing::MemFs;
use sluice_log::{
    CleanupPolicy, Durability, EmbeddedConfig, EmbeddedLog, FetchRequest, Log, LogError, Offset,
    PartitionId, Record, StoredRecord, TopicConfig, TopicName,
};

const P0: PartitionId = PartitionId(0);

fn settings(durability: Durability) -> EmbeddedConfig {
    EmbeddedConfig {
        durability,
        index_interval_bytes: 256,
        maintenance_interval_ms: 3_600_000,
        ..EmbeddedConfig::default()
    }
}

fn open(fs: &MemFs, durability: Durability) -> Result<EmbeddedLog, LogError> {
    open_with(fs, settings(durability))
}

fn open_with(fs: &MemFs, settings: EmbeddedConfig) -> Result<EmbeddedLog, LogError> {
    EmbeddedLog::open_with_fs(Arc::new(fs.clone()), Path::new("/data"), settings)
}

/// Where a segment's last non-zero byte ends: inside its last batch, whatever zeros
/// were written ahead of it.
fn data_len(fs: &MemFs, path: &Path) -> usize {
    let file = fs.open(path, OpenMode::Read).unwrap();
    let mut bytes = vec![0; file.size().unwrap() as usize];
    sluice_log::fs::read_exact_at(&*file, &mut bytes, 0).unwrap();
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

fn topic() -> TopicName {
    TopicName::new("orders").unwrap()
}

fn small_segments() -> TopicConfig {
    TopicConfig {
        segment_bytes: 2048,
        ..TopicConfig::with_partitions(1)
    }
}

fn record(i: u32) -> Record {
    Record::keyed(
        format!("k{}", i % 7),
        format!("order-{i}-{}", "p".repeat((i % 50) as usize)),
    )
}

async fn read_all(log: &EmbeddedLog, t: &TopicName) -> Result<Vec<StoredRecord>, LogError> {
    let mut out = Vec::new();
    let mut from = log.offsets(t, P0).await?.earliest;
    loop {
        let f = log.fetch(t, P0, FetchRequest::new(from)).await?;
        if f.records.is_empty() {
            return Ok(out);
        }
        from = f.next;
        out.extend(f.records);
    }
}

fn values(records: &[StoredRecord]) -> Vec<Bytes> {
    records.iter().filter_map(|r| r.value.clone()).collect()
}

fn segment_files(fs: &MemFs, ext: &str) -> Vec<PathBuf> {
    fs.files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect()
}

#[tokio::test]
async fn torn_tails_are_cut_back_to_whole_batches() {
    for seed in 0..40u64 {
        let fs = MemFs::new();
        let log = open(&fs, Durability::None).unwrap();
        log.create_topic(&topic(), small_segments()).await.unwrap();
        let mut written = Vec::new();
        for i in 0..30 {
            log.append(&topic(), P0, vec![record(i)]).await.unwrap();
            written.push(record(i).value.unwrap());
        }
        // Nothing after the topic's creation was synced (durability none): a power cut
        // keeps a random prefix of each file's unsynced bytes.
        let image = fs.crash_image(seed);
        drop(log);
        let log = open(&image, Durability::None).unwrap();
        let got = values(&read_all(&log, &topic()).await.unwrap());
        assert!(
            written.starts_with(&got),
            "seed {seed}: recovered data is a prefix of what was written"
        );
        // The partition takes appends again, after what survived.
        let next = log
            .append(&topic(), P0, vec![Record::keyed("k", "after")])
            .await
            .unwrap();
        let all = read_all(&log, &topic()).await.unwrap();
        assert_eq!(all.last().map(|r| r.offset), next.last());
        assert_eq!(all.len(), got.len() + 1);
    }
}

#[tokio::test]
async fn a_flipped_bit_in_the_tail_truncates_and_in_a_sealed_segment_is_reported() {
    let fs = MemFs::new();
    let no_wal = || EmbeddedConfig {
        wal_bytes: 0, // or it rewrites the tail from its records
        ..settings(Durability::Fsync)
    };
    let log = open_with(&fs, no_wal()).unwrap();
    log.create_topic(&topic(), small_segments()).await.unwrap();
    for i in 0..90 {
        log.append(&topic(), P0, vec![record(i)]).await.unwrap();
    }
    let before = read_all(&log, &topic()).await.unwrap();
    drop(log); // unclean: the active segment will be scanned

    let logs = segment_files(&fs, "log");
    assert!(logs.len() >= 3, "small segments rolled: {logs:?}");
    let active = logs.last().unwrap();
    let len = data_len(&fs, active);
    let file_len = fs.file_len(active).unwrap();
    assert!(file_len as usize > len, "zeros were written ahead");
    assert!(
        file_len <= 2048,
        "but not past where the segment rolls: {file_len}"
    );
    fs.flip_bit(active, len - 3, 2).unwrap(); // inside the last batch
    let log = open_with(&fs, no_wal()).unwrap();
    let after = read_all(&log, &topic()).await.unwrap();
    assert_eq!(
        after.len(),
        before.len() - 1,
        "only the damaged last batch is dropped"
    );
    assert_eq!(after[..], before[..before.len() - 1]);

    // Bit rot inside a sealed segment: reads that reach it fail with a clear error,
    // nothing panics, and the rest of the log stays readable.
    let sealed = &logs[0];
    fs.flip_bit(sealed, 60, 0).unwrap();
    let err = read_all(&log, &topic()).await.unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("corrupt data"), "{err}");
    let later = log
        .fetch(
            &topic(),
            P0,
            FetchRequest::new(after[after.len() - 1].offset),
        )
        .await
        .unwrap();
    assert_eq!(later.records.len(), 1);
}

#[tokio::test]
async fn a_failed_fsync_poisons_the_partition_until_reopened() {
    let fs = MemFs::new();
    let log = open(&fs, Durability::Fsync).unwrap();
    log.create_topic(&topic(), TopicConfig::with_partitions(1))
        .await
        .unwrap();
    log.append(&topic(), P0, vec![record(1)]).await.unwrap();
    fs.set_fail_syncs(true);
    let err = log.append(&topic(), P0, vec![record(2)]).await.unwrap_err();
    assert!(matches!(err, LogError::Poisoned { .. }), "{err}");
    fs.set_fail_syncs(false);
    // No guessing: the partition keeps refusing even though fsync works again.
    let err = log.append(&topic(), P0, vec![record(3)]).await.unwrap_err();
    assert!(matches!(err, LogError::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("reopen"), "{err}");
    // Reads still work.
    assert_eq!(read_all(&log, &topic()).await.unwrap().len(), 1);
    drop(log);
    let log = open(&fs, Durability::Fsync).unwrap();
    log.append(&topic(), P0, vec![record(4)]).await.unwrap();
    let got = values(&read_all(&log, &topic()).await.unwrap());
    // Record 2 was written but never acknowledged: it may or may not be there.
    assert_eq!(got.first(), record(1).value.as_ref());
    assert_eq!(got.last(), record(4).value.as_ref());
}

/// A log (fsync) on `fs` writing `preallocate_bytes` of zeros ahead, with the test
/// topic of one partition; its settings, to reopen it.
async fn one_partition(fs: &MemFs, preallocate_bytes: u64) -> (EmbeddedLog, EmbeddedConfig) {
    let settings = EmbeddedConfig {
        preallocate_bytes,
        wal_bytes: 0, // zeros are written ahead only where segments are synced
        ..settings(Durability::Fsync)
    };
    let log = open_with(fs, settings.clone()).unwrap();
    log.create_topic(&topic(), TopicConfig::with_partitions(1))
        .await
        .unwrap();
    (log, settings)
}

fn bytes_on_disk(fs: &MemFs) -> u64 {
    fs.files().iter().filter_map(|p| fs.file_len(p)).sum()
}

fn assert_no_space(err: &LogError) {
    assert!(err.to_string().to_lowercase().contains("no space"), "{err}");
}

#[tokio::test]
async fn a_full_disk_fails_the_append_and_loses_nothing_acknowledged() {
    let fs = MemFs::new();
    // No zeros written ahead: the next append needs room of its own.
    let (log, no_zeros) = one_partition(&fs, 0).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        log.append(&topic(), P0, vec![record(i)]).await.unwrap();
        acked.push(record(i).value.unwrap());
    }
    // Room for part of one more batch: a short write.
    fs.set_space_limit(Some(bytes_on_disk(&fs) + 20));
    let err = log
        .append(&topic(), P0, vec![record(99)])
        .await
        .unwrap_err();
    assert_no_space(&err);
    assert_eq!(values(&read_all(&log, &topic()).await.unwrap()), acked);
    // The short write was undone, so once there is room again appends go on.
    fs.set_space_limit(None);
    log.append(&topic(), P0, vec![record(5)]).await.unwrap();
    acked.push(record(5).value.unwrap());
    drop(log);
    let log = open_with(&fs, no_zeros).unwrap();
    assert_eq!(values(&read_all(&log, &topic()).await.unwrap()), acked);
}

#[tokio::test]
async fn zeros_written_ahead_give_way_to_data_on_a_full_disk() {
    let fs = MemFs::new();
    let (log, ahead) = one_partition(&fs, 4096).await;
    log.append(&topic(), P0, vec![record(0)]).await.unwrap();
    // Room for ~1 KiB past the zeros: the append that reaches their end cannot
    // write 4 KiB more, but its data fits.
    fs.set_space_limit(Some(bytes_on_disk(&fs) + 1024));
    let mut acked = vec![record(0).value.unwrap()];
    let mut i = 1;
    let err = loop {
        match log.append(&topic(), P0, vec![record(i)]).await {
            Ok(_) => acked.push(record(i).value.unwrap()),
            Err(e) => break e,
        }
        i += 1;
    };
    assert_no_space(&err);
    let written = fs.file_len(&segment_files(&fs, "log")[0]).unwrap();
    assert_eq!(log.stats().bytes, written, "no zeros left");
    // The first append wrote zeros to 8 KiB (its end plus 4 KiB, to a whole page).
    assert!(written > 8192, "the data went past the zeros: {written}");
    assert_eq!(values(&read_all(&log, &topic()).await.unwrap()), acked);
    drop(log);
    fs.set_space_limit(None);
    let log = open_with(&fs, ahead).unwrap();
    assert_eq!(values(&read_all(&log, &topic()).await.unwrap()), acked);
}

/// One acknowledged append: sync points passed when its acknowledgement was seen,
/// its key, value and offset.
struct Acked {
    syncs: u64,
    key: Bytes,
    value: Bytes,
    offset: Offset,
}

/// A workload with rolls and compaction, recording every acknowledgement.
async fn workload(fs: &MemFs) -> Vec<Acked> {
    let log = open(fs, Durability::Fsync).unwrap();
    let config = TopicConfig {
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: 0,
        segment_bytes: 1024,
        ..TopicConfig::with_partitions(1)
    };
    log.create_topic(&topic(), config).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..40u32 {
        let r = Record::keyed(
            format!("k{}", i % 3),
            format!("v{i}-{}", "z".repeat((i % 9) as usize * 10)),
        );
        if let Ok(a) = log.append(&topic(), P0, vec![r.clone()]).await {
            acked.push(Acked {
                syncs: fs.syncs(),
                key: r.key.unwrap(),
                value: r.value.unwrap(),
                offset: a.offsets[0],
            });
        }
        if i % 13 == 12 {
            let _ = log.run_cleanup();
        }
    }
    acked
}

#[tokio::test]
async fn every_sync_point_leaves_a_recoverable_image_with_all_acknowledged_data() {
    let total = {
        let fs = MemFs::new();
        workload(&fs).await;
        fs.syncs()
    };
    assert!(total > 50, "the workload passes many sync points ({total})");
    for k in 0..total {
        let fs = MemFs::new();
        fs.capture_at(k, k);
        let acked = workload(&fs).await;
        // Background threads may order sync points differently from run to run.
        let Some(image) = fs.take_capture() else {
            continue;
        };
        let log = open(&image, Durability::Fsync).unwrap_or_else(|e| panic!("sync point {k}: {e}"));
        let present = match log.topic(&topic()).await {
            Ok(_) => read_all(&log, &topic())
                .await
                .unwrap_or_else(|e| panic!("sync point {k}: {e}")),
            Err(_) => Vec::new(),
        };
        // Acknowledged before the crash: its sync point came before k. Compaction may
        // have removed superseded records, so what must survive is, for every key, its
        // latest such record or a later one.
        let durable: Vec<&Acked> = acked.iter().filter(|a| a.syncs <= k).collect();
        for key in ["k0", "k1", "k2"] {
            if let Some(latest) = durable.iter().rev().find(|a| a.key == key) {
                let kept = present
                    .iter()
                    .any(|r| r.offset >= latest.offset && r.key.as_deref() == Some(key.as_bytes()));
                assert!(
                    kept,
                    "sync point {k}: {key} lost {:?} at {}",
                    latest.value, latest.offset
                );
            }
        }
        // And whatever is there is intact: a record written by the workload, unchanged.
        for r in &present {
            let intact = acked
                .iter()
                .any(|a| a.offset == r.offset && Some(&a.value) == r.value.as_ref());
            assert!(intact, "sync point {k}: record at {} is intact", r.offset);
        }
    }
}

#[tokio::test]
async fn zeros_after_the_data_of_an_unsealed_segment_are_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), settings(Durability::Fsync)).unwrap();
    log.create_topic(&topic(), small_segments()).await.unwrap();
    for i in 0..60 {
        log.append(&topic(), P0, vec![record(i)]).await.unwrap();
    }
    let before = read_all(&log, &topic()).await.unwrap();
    let bytes = log.stats().bytes;
    log.close().unwrap();
    drop(log);
    let part = dir.path().join("topics/orders/0");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert_eq!(
        logs.iter().map(|p| size(p)).sum::<u64>(),
        bytes,
        "a clean close leaves no zeros written ahead"
    );
    // As if the process stopped after a roll, before the old segment's cut of its
    // zeros reached the disk and before it was sealed.
    let first = &logs[0];
    let len = size(first);
    std::fs::remove_file(first.with_extension("index")).unwrap();
    std::fs::remove_file(first.with_extension("timeindex")).unwrap();
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(first)
        .unwrap();
    std::io::Write::write_all(&mut &file, &[0; 5000]).unwrap();
    drop(file);

    let log = EmbeddedLog::open(dir.path(), settings(Durability::Fsync)).unwrap();
    assert_eq!(
        read_all(&log, &topic()).await.unwrap(),
        before,
        "the segments after it are kept"
    );
    assert_eq!(size(first), len, "the zeros are cut");
}

#[tokio::test]
async fn missing_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), settings(Durability::Fsync)).unwrap();
    log.create_topic(&topic(), small_segments()).await.unwrap();
    for i in 0..60 {
        log.append(&topic(), P0, vec![record(i)]).await.unwrap();
    }
    let before = read_all(&log, &topic()).await.unwrap();
    log.close().unwrap();
    drop(log);
    let part = dir.path().join("topics/orders/0");
    let mut removed = 0;
    for entry in std::fs::read_dir(&part).unwrap() {
        let p = entry.unwrap().path();
        if p.extension()
            .is_some_and(|e| e == "index" || e == "timeindex")
        {
            std::fs::remove_file(p).unwrap();
            removed += 1;
        }
    }
    assert!(removed >= 4);
    let log = EmbeddedLog::open(dir.path(), settings(Durability::Fsync)).unwrap();
    assert_eq!(read_all(&log, &topic()).await.unwrap(), before);
    let mid = before[before.len() / 2].offset;
    let f = log
        .fetch(&topic(), P0, FetchRequest::new(mid))
        .await
        .unwrap();
    assert_eq!(f.records[0].offset, mid);
    let rebuilt = std::fs::read_dir(&part)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "index")
        })
        .count();
    assert!(rebuilt >= 2, "sealed segments got their index files back");
}

#[tokio::test]
async fn a_second_opener_of_the_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap();
    let err = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    log.close().unwrap();
    drop(log);
    EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).expect("free again after close");
}

#[test]
fn settings_the_log_cannot_use_are_refused_by_name() {
    for (bad, field) in [
        (
            EmbeddedConfig {
                sync_threads: 0,
                ..EmbeddedConfig::default()
            },
            "log.sync_threads",
        ),
        (
            EmbeddedConfig {
                preallocate_bytes: 1 << 30,
                ..EmbeddedConfig::default()
            },
            "log.preallocate_bytes",
        ),
        (
            EmbeddedConfig {
                wal_min_partitions: 0,
                ..EmbeddedConfig::default()
            },
            "log.wal_min_partitions",
        ),
        (
            EmbeddedConfig {
                wal_bytes: 1000,
                ..EmbeddedConfig::default()
            },
            "log.wal_bytes",
        ),
        (
            EmbeddedConfig {
                wal_bytes: 1 << 20,
                wal_max_group_bytes: 512 << 10,
                ..EmbeddedConfig::default()
            },
            "log.wal_max_group_bytes",
        ),
    ] {
        let fs = MemFs::new();
        let err = open_with(&fs, bad).unwrap_err();
        assert!(matches!(err, LogError::InvalidConfig { .. }), "{err}");
        assert!(err.to_string().contains(field), "{err}");
        assert!(fs.files().is_empty(), "nothing written: {:?}", fs.files());
    }
}

#[tokio::test]
async fn an_unusable_data_dir_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = EmbeddedLog::open(file.join("data"), EmbeddedConfig::default()).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("not-a-dir"),
        "names the path: {err}"
    );
}

#[tokio::test]
async fn retention_deletes_whole_old_segments_only() {
    let fs = MemFs::new();
    let log = open(&fs, Durability::Fsync).unwrap();
    let config = TopicConfig {
        retention_bytes: Some(4096),
        retention_ms: None,
        ..small_segments()
    };
    log.create_topic(&topic(), config).await.unwrap();
    let mut last = Offset(0);
    for i in 0..200 {
        last = log
            .append(&topic(), P0, vec![record(i)])
            .await
            .unwrap()
            .offsets[0];
    }
    let before = log.offsets(&topic(), P0).await.unwrap();
    let stats = log.run_cleanup().unwrap();
    assert!(stats.segments_deleted > 0);
    let after = log.offsets(&topic(), P0).await.unwrap();
    assert!(after.earliest > before.earliest);
    assert_eq!(after.latest, before.latest);
    let kept = read_all(&log, &topic()).await.unwrap();
    assert_eq!(
        kept.first().unwrap().offset,
        after.earliest,
        "a whole segment is the unit"
    );
    assert_eq!(kept.last().unwrap().offset, last);
    let bytes = log.stats().bytes;
    assert!(
        bytes < 4096 + 2048,
        "size is bounded by retention plus one segment: {bytes}"
    );
    let old = log
        .fetch(&topic(), P0, FetchRequest::new(before.earliest))
        .await
        .unwrap_err();
    assert!(matches!(old, LogError::OffsetOutOfRange { .. }), "{old}");

    // Time retention: everything older than 1 ms goes, except the active segment.
    let mut config = log.topic(&topic()).await.unwrap().config;
    config.retention_ms = Some(1);
    log.update_topic(&topic(), config).await.unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    log.run_cleanup().unwrap();
    assert_eq!(segment_files(&fs, "log").len(), 1);
    assert_eq!(
        log.offsets(&topic(), P0).await.unwrap().latest,
        before.latest
    );
}
