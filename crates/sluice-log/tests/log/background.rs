//! What happens without being asked: rolling by age, the interval flusher, the
//! background cleaner; a damaged topic file; and what a fetch reads to answer.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_log::testing::MemFs;
use sluice_log::{
    CleanupPolicy, Durability, EmbeddedConfig, EmbeddedLog, FetchRequest, Log, LogError, Offset,
    PartitionId, Record, TopicConfig, TopicName,
};

const P0: PartitionId = PartitionId(0);

fn topic() -> TopicName {
    TopicName::new("stock").unwrap()
}

fn open(fs: &MemFs, settings: EmbeddedConfig) -> EmbeddedLog {
    EmbeddedLog::open_with_fs(Arc::new(fs.clone()), Path::new("/data"), settings).unwrap()
}

fn log_files(fs: &MemFs) -> usize {
    fs.files()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .count()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn segments_roll_by_age() {
    let fs = MemFs::new();
    let log = open(&fs, EmbeddedConfig::default());
    let config = TopicConfig {
        segment_ms: Some(30),
        ..TopicConfig::with_partitions(1)
    };
    log.create_topic(&topic(), config).await.unwrap();
    log.append(&topic(), P0, vec![Record::value("a")])
        .await
        .unwrap();
    log.append(&topic(), P0, vec![Record::value("b")])
        .await
        .unwrap();
    assert_eq!(log_files(&fs), 1, "young segment: no roll");
    tokio::time::sleep(Duration::from_millis(60)).await;
    log.append(&topic(), P0, vec![Record::value("c")])
        .await
        .unwrap();
    assert_eq!(
        log_files(&fs),
        2,
        "the old segment was sealed before this append"
    );
    let read = log
        .fetch(&topic(), P0, FetchRequest::new(Offset(0)))
        .await
        .unwrap();
    assert_eq!(read.records.len(), 2, "a fetch reads within one segment");
    let rest = log
        .fetch(&topic(), P0, FetchRequest::new(read.next))
        .await
        .unwrap();
    assert_eq!(rest.records[0].value.as_deref(), Some(&b"c"[..]));
}

#[tokio::test]
async fn interval_durability_fsyncs_in_the_background() {
    let fs = MemFs::new();
    let settings = EmbeddedConfig {
        durability: Durability::Interval,
        flush_interval_ms: 20,
        ..EmbeddedConfig::default()
    };
    let log = open(&fs, settings.clone());
    log.create_topic(&topic(), TopicConfig::with_partitions(1))
        .await
        .unwrap();
    let syncs = fs.syncs();
    log.append(
        &topic(),
        P0,
        vec![Record::value("acknowledged before its fsync")],
    )
    .await
    .unwrap();
    assert_eq!(fs.syncs(), syncs, "the append returned without an fsync");
    eventually("the background flusher", || fs.syncs() > syncs).await;
    // A power cut now keeps the record, whatever part of any unsynced tail survives.
    for seed in 0..8 {
        let image = fs.crash_image(seed);
        let log2 = open(&image, settings.clone());
        let read = log2
            .fetch(&topic(), P0, FetchRequest::new(Offset(0)))
            .await
            .unwrap();
        assert_eq!(read.records.len(), 1, "seed {seed}");
    }
    drop(log);
}

#[tokio::test]
async fn the_background_cleaner_compacts_without_being_asked() {
    let fs = MemFs::new();
    let settings = EmbeddedConfig {
        maintenance_interval_ms: 20,
        ..EmbeddedConfig::default()
    };
    let log = open(&fs, settings);
    let config = TopicConfig {
        cleanup_policy: CleanupPolicy::Compact,
        segment_bytes: 1024,
        ..TopicConfig::with_partitions(1)
    };
    log.create_topic(&topic(), config).await.unwrap();
    for i in 0..200 {
        let r = Record::keyed(
            format!("sku-{}", i % 4),
            format!("stock level {i} {}", "x".repeat(40)),
        );
        log.append(&topic(), P0, vec![r]).await.unwrap();
    }
    let before = log_files(&fs);
    assert!(before > 10);
    // Appends and reads go on while the cleaner works.
    let mut appended = 200;
    let started = Instant::now();
    while log_files(&fs) >= before / 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the cleaner never ran"
        );
        let r = Record::keyed("sku-0", format!("stock level {appended}"));
        log.append(&topic(), P0, vec![r]).await.unwrap();
        appended += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut from = Offset(0);
    let mut latest = std::collections::HashMap::new();
    loop {
        let f = log
            .fetch(&topic(), P0, FetchRequest::new(from))
            .await
            .unwrap();
        if f.records.is_empty() {
            break;
        }
        for r in f.records {
            latest.insert(r.key.unwrap(), r.value.unwrap());
        }
        from = f.next;
    }
    assert_eq!(latest.len(), 4, "every key survives compaction");
    let sku0 = String::from_utf8(latest[&b"sku-0"[..]].to_vec()).unwrap();
    assert_eq!(
        sku0,
        format!("stock level {}", appended - 1),
        "with its latest value"
    );
}

#[tokio::test]
async fn a_damaged_topic_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap();
    log.create_topic(&topic(), TopicConfig::with_partitions(2))
        .await
        .unwrap();
    log.close().unwrap();
    drop(log);
    let file = dir.path().join("topics/stock/topic.json");
    std::fs::write(&file, b"{ not json").unwrap();
    let err = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("topic.json"), "{err}");
    // Nothing was changed: the partitions' data is still there.
    assert!(
        dir.path()
            .join("topics/stock/1/00000000000000000000.log")
            .exists()
    );
}

/// Many partitions, fewer sync threads than partitions: every append completes, in
/// order per appender, and offsets stay contiguous per partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_partitions_share_one_writer_and_a_sync_thread() {
    let fs = MemFs::new();
    let log = open(
        &fs,
        EmbeddedConfig {
            sync_threads: 1,
            ..EmbeddedConfig::default()
        },
    );
    log.create_topic(&topic(), TopicConfig::with_partitions(16))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for p in 0..16u32 {
        for appender in 0..4u8 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut last = None;
                for i in 0..25u8 {
                    let records = vec![Record::value(vec![appender, i])];
                    let at = log.append(&topic(), PartitionId(p), records).await.unwrap();
                    let offset = at.offsets[0];
                    assert!(last < Some(offset), "in order for one appender");
                    last = Some(offset);
                }
            }));
        }
    }
    let all = futures_join(tasks);
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("every append completes: no partition is left unscheduled");
    for p in 0..16u32 {
        let f = log
            .fetch(
                &topic(),
                PartitionId(p),
                FetchRequest::new(Offset(0)).max_records(1000),
            )
            .await
            .unwrap();
        let offsets: Vec<u64> = f.records.iter().map(|r| r.offset.0).collect();
        assert_eq!(offsets, (0..100).collect::<Vec<u64>>(), "partition {p}");
    }
    log.close().unwrap();
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.await.unwrap();
    }
}

/// A one-partition topic of `batches` appends of `records` records of `bytes` bytes.
async fn log_of_batches(fs: &MemFs, batches: usize, records: usize, bytes: usize) -> EmbeddedLog {
    let log = open(fs, EmbeddedConfig::default());
    log.create_topic(&topic(), TopicConfig::with_partitions(1))
        .await
        .unwrap();
    let value = "x".repeat(bytes);
    for _ in 0..batches {
        let batch = (0..records).map(|_| Record::value(value.clone())).collect();
        log.append(&topic(), P0, batch).await.unwrap();
    }
    log
}

#[tokio::test]
async fn a_fetch_of_one_record_reads_its_batch_only() {
    let fs = MemFs::new();
    // Ten batches of 100 records of ~100 bytes: ~10 KB each.
    let log = log_of_batches(&fs, 10, 100, 100).await;
    let before = fs.bytes_read();
    let one = log
        .fetch(&topic(), P0, FetchRequest::new(Offset(250)).max_records(1))
        .await
        .unwrap();
    assert_eq!(one.records.len(), 1);
    assert_eq!(one.records[0].offset, Offset(250));
    let read = fs.bytes_read() - before;
    assert!(
        (10_000..20_000).contains(&read),
        "one batch of ~10 KB (and its header twice), not the 75 KB after it: {read}"
    );
    // Records wanted past the batch: read on up to max_bytes, as before.
    let before = fs.bytes_read();
    let more = log
        .fetch(
            &topic(),
            P0,
            FetchRequest::new(Offset(250)).max_records(200),
        )
        .await
        .unwrap();
    assert_eq!(more.records.len(), 200);
    assert!(fs.bytes_read() - before > 70_000);
}

/// A reader at the tail reads on its own thread; one further back goes to the
/// blocking pool (its bytes may be on disk only). Shown with a pool of one thread
/// held busy: the tail is read anyway, an old offset waits for the pool.
#[test]
fn a_fetch_at_the_tail_does_not_wait_for_the_blocking_pool() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // 12 MB: the first records lie further back than a hot read reaches.
        let log = log_of_batches(&MemFs::new(), 12, 1000, 1000).await;
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = tokio::task::spawn_blocking(move || held.recv());
        let fetch = |from: u64| {
            let log = log.clone();
            async move {
                let request = FetchRequest::new(Offset(from)).max_records(10);
                log.fetch(&topic(), P0, request).await.unwrap()
            }
        };
        let wait = Duration::from_millis(300);
        let tail = tokio::time::timeout(Duration::from_secs(10), fetch(11_995))
            .await
            .expect("the tail is read while the pool is busy");
        assert_eq!(tail.records.len(), 5);
        assert_eq!(tail.records[0].offset, Offset(11_995));
        let old = tokio::spawn(fetch(0));
        tokio::time::sleep(wait).await;
        assert!(!old.is_finished(), "an old offset is read on the pool");
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        let old = old.await.unwrap();
        assert_eq!(old.records.len(), 10);
        assert_eq!(old.records[0].offset, Offset(0));
    });
}
