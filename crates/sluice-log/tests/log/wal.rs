//! The write-ahead file (durability fsync): crash images at every sync point with a
//! wal small enough to be checkpointed and reused many times, deleted topics, torn
//! segment tails, and which groups it carries.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sluice_log::fs::{Fs, OpenMode};
use sluice_log::testing::{MemFs, read_partition};
use sluice_log::{
    Durability, EmbeddedConfig, EmbeddedLog, Log, LogError, Offset, PartitionId, Record,
    TopicConfig, TopicName,
};

const PARTITIONS: u32 = 3;

/// A wal of two 16 KiB files: a few dozen small groups fill one.
fn small_wal() -> EmbeddedConfig {
    EmbeddedConfig {
        index_interval_bytes: 256,
        maintenance_interval_ms: 3_600_000,
        wal_bytes: 16 << 10,
        wal_max_group_bytes: 2 << 10,
        ..EmbeddedConfig::default()
    }
}

fn open_with(fs: &MemFs, settings: EmbeddedConfig) -> Result<EmbeddedLog, LogError> {
    EmbeddedLog::open_with_fs(Arc::new(fs.clone()), Path::new("/data"), settings)
}

fn topic() -> TopicName {
    TopicName::new("orders").unwrap()
}

fn config() -> TopicConfig {
    TopicConfig {
        segment_bytes: 4096,
        ..TopicConfig::with_partitions(PARTITIONS)
    }
}

/// One acknowledged append: sync points passed when it was acknowledged, the topic's
/// incarnation (1, or 2 once deleted and created again), where it went, its value.
struct Acked {
    syncs: u64,
    incarnation: u32,
    partition: u32,
    offset: Offset,
    value: Bytes,
}

/// Sync points passed when the topic's deletion started.
struct Run {
    acked: Vec<Acked>,
    deletion_started: u64,
}

async fn workload(fs: &MemFs) -> Run {
    let log = open_with(fs, small_wal()).unwrap();
    log.create_topic(&topic(), config()).await.unwrap();
    let mut acked = Vec::new();
    let mut deletion_started = u64::MAX;
    let mut incarnation = 1;
    for i in 0..240u32 {
        if i == 120 {
            deletion_started = fs.syncs();
            log.delete_topic(&topic()).await.unwrap();
            log.create_topic(&topic(), config()).await.unwrap();
            incarnation = 2;
        }
        let partition = i % PARTITIONS;
        let value = format!(
            "inc{incarnation}-p{partition}-{i}-{}",
            "w".repeat((i % 7) as usize * 15)
        );
        let record = Record::keyed(format!("k{i}"), value.clone());
        let a = log
            .append(&topic(), PartitionId(partition), vec![record])
            .await
            .unwrap();
        acked.push(Acked {
            syncs: fs.syncs(),
            incarnation,
            partition,
            offset: a.offsets[0],
            value: Bytes::from(value),
        });
    }
    Run {
        acked,
        deletion_started,
    }
}

/// The incarnation a stored value was written by.
fn incarnation_of(value: &[u8]) -> u32 {
    u32::from(value[3] - b'0')
}

#[tokio::test]
async fn a_crash_at_every_sync_point_of_a_small_wal_keeps_every_acknowledged_record() {
    let total = {
        let fs = MemFs::new();
        let run = workload(&fs).await;
        assert!(run.acked.len() == 240);
        fs.syncs()
    };
    assert!(total > 240, "one sync point or more per append ({total})");
    for k in 0..total {
        let fs = MemFs::new();
        fs.capture_at(k, k);
        let run = workload(&fs).await;
        let Some(image) = fs.take_capture() else {
            continue;
        };
        let log = open_with(&image, small_wal()).unwrap_or_else(|e| panic!("sync point {k}: {e}"));
        let mut present = Vec::new();
        if log.topic(&topic()).await.is_ok() {
            for p in 0..PARTITIONS {
                let records = read_partition(&log, &topic(), PartitionId(p))
                    .await
                    .unwrap_or_else(|e| panic!("sync point {k}: {e}"));
                present.extend(records.into_iter().map(|r| (p, r)));
            }
        }
        // Whatever is there was written there, by one incarnation of the topic.
        for (p, r) in &present {
            let value = r.value.as_ref().expect("a value");
            let written = run
                .acked
                .iter()
                .any(|a| a.partition == *p && a.offset == r.offset && a.value == *value);
            assert!(
                written,
                "sync point {k}: p{p} offset {} holds {value:?}",
                r.offset
            );
        }
        let incarnations: Vec<u32> = present
            .iter()
            .map(|(_, r)| incarnation_of(r.value.as_ref().unwrap()))
            .collect();
        let shown = incarnations.first().copied();
        assert!(
            incarnations.iter().all(|i| Some(*i) == shown),
            "sync point {k}: records of both incarnations"
        );
        // Everything acknowledged before the crash is there, for the incarnation that
        // is; the first may be gone only once its deletion had started.
        let durable = |inc: u32| {
            run.acked
                .iter()
                .filter(move |a| a.syncs <= k && a.incarnation == inc)
        };
        let current = if durable(2).next().is_some() {
            2
        } else {
            shown.unwrap_or(1)
        };
        if current == 1 && present.is_empty() && k < run.deletion_started {
            assert!(
                durable(1).next().is_none(),
                "sync point {k}: the topic lost everything"
            );
        }
        if !present.is_empty() || current == 2 {
            for a in durable(current) {
                let kept = present
                    .iter()
                    .any(|(p, r)| *p == a.partition && r.offset == a.offset);
                assert!(
                    kept,
                    "sync point {k}: lost {:?} at p{} {}",
                    a.value, a.partition, a.offset
                );
            }
        }
    }
}

#[tokio::test]
async fn records_of_a_deleted_topic_never_reach_one_created_with_its_name() {
    for seed in 0..20 {
        let fs = MemFs::new();
        let log = open_with(&fs, small_wal()).unwrap();
        let one = TopicConfig::with_partitions(1);
        log.create_topic(&topic(), one.clone()).await.unwrap();
        for i in 0..5 {
            let r = Record::keyed("k", format!("old-{i}"));
            log.append(&topic(), PartitionId(0), vec![r]).await.unwrap();
        }
        log.delete_topic(&topic()).await.unwrap();
        log.create_topic(&topic(), one).await.unwrap();
        for i in 0..2 {
            let r = Record::keyed("k", format!("new-{i}"));
            log.append(&topic(), PartitionId(0), vec![r]).await.unwrap();
        }
        let image = fs.crash_image(seed);
        drop(log);
        let values = values_after_crash(&image).await;
        assert_eq!(values, ["new-0", "new-1"], "seed {seed}");
    }
}

/// The values of partition 0 once the log is opened on a crash image.
async fn values_after_crash(image: &MemFs) -> Vec<Bytes> {
    let log = open_with(image, small_wal()).unwrap();
    read_partition(&log, &topic(), PartitionId(0))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.value)
        .collect()
}

/// The bytes of both wal files.
fn wal_bytes(fs: &MemFs) -> Vec<u8> {
    let mut out = Vec::new();
    for name in ["0.wal", "1.wal"] {
        let file = fs
            .open(&Path::new("/data/wal").join(name), OpenMode::Read)
            .unwrap();
        let mut bytes = vec![0; file.size().unwrap() as usize];
        sluice_log::fs::read_exact_at(&*file, &mut bytes, 0).unwrap();
        out.extend(bytes);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn groups_over_wal_max_group_bytes_skip_the_wal_and_survive_a_crash() {
    for seed in 0..10 {
        let fs = MemFs::new();
        let log = open_with(&fs, small_wal()).unwrap();
        log.create_topic(&topic(), config()).await.unwrap();
        let small = format!("small-{seed}");
        let large = format!("large-{seed}-{}", "L".repeat(3000));
        for value in [&small, &large] {
            let r = Record::keyed("k", value.clone());
            log.append(&topic(), PartitionId(0), vec![r]).await.unwrap();
        }
        let wal = wal_bytes(&fs);
        assert!(
            contains(&wal, small.as_bytes()),
            "a small group is in the wal"
        );
        assert!(!contains(&wal, large.as_bytes()), "a large one is not");
        let image = fs.crash_image(seed);
        drop(log);
        let values = values_after_crash(&image).await;
        assert_eq!(values, [small.as_str(), large.as_str()], "seed {seed}");
    }
}

#[tokio::test]
async fn a_damaged_unsynced_tail_is_written_again_from_the_wal_whatever_the_new_settings() {
    let fs = MemFs::new();
    let log = open_with(&fs, small_wal()).unwrap();
    log.create_topic(&topic(), TopicConfig::with_partitions(1))
        .await
        .unwrap();
    for i in 0..20 {
        let r = Record::keyed("k", format!("v{i}"));
        log.append(&topic(), PartitionId(0), vec![r]).await.unwrap();
    }
    let before = read_partition(&log, &topic(), PartitionId(0))
        .await
        .unwrap();
    drop(log); // unclean: as after kill -9
    let segment = Path::new("/data/topics/orders/0/00000000000000000000.log");
    let len = fs.file_len(segment).unwrap() as usize;
    fs.flip_bit(segment, len - 3, 1).unwrap(); // the last batch, not synced
    // Reopened without a wal: what the old one holds is still replayed.
    let interval = EmbeddedConfig {
        durability: Durability::Interval,
        ..small_wal()
    };
    let log = open_with(&fs, interval).unwrap();
    assert_eq!(
        read_partition(&log, &topic(), PartitionId(0))
            .await
            .unwrap(),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_and_deletions_through_a_small_wal_all_survive_a_crash() {
    let fs = MemFs::new();
    let log = Arc::new(open_with(&fs, small_wal()).unwrap());
    log.create_topic(&topic(), config()).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..8u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..100u32 {
                let partition = (task + i) % PARTITIONS;
                let value = format!("t{task}-{i}-{}", "c".repeat((i % 5) as usize * 40));
                let r = Record::keyed(format!("k{task}"), value.clone());
                let a = log
                    .append(&topic(), PartitionId(partition), vec![r])
                    .await
                    .unwrap();
                acked.push((partition, a.offsets[0], value));
            }
            acked
        }));
    }
    // Meanwhile topics are created and deleted: deletion records go through the same
    // rounds and files, from another thread than the writer's.
    let side = {
        let log = log.clone();
        tokio::spawn(async move {
            let t = TopicName::new("side").unwrap();
            for _ in 0..30 {
                log.create_topic(&t, TopicConfig::with_partitions(1))
                    .await
                    .unwrap();
                let r = Record::keyed("k", "side");
                log.append(&t, PartitionId(0), vec![r]).await.unwrap();
                log.delete_topic(&t).await.unwrap();
            }
        })
    };
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    side.await.unwrap();
    // Over 100 KiB of records through two 16 KiB files: each was reused many times.
    let image = fs.crash_image(7);
    drop(log);
    let log = open_with(&image, small_wal()).unwrap();
    let mut stored = Vec::new();
    for p in 0..PARTITIONS {
        for r in read_partition(&log, &topic(), PartitionId(p))
            .await
            .unwrap()
        {
            stored.push((
                p,
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
    acked.sort();
    stored.sort();
    assert_eq!(stored, acked);
}

#[tokio::test]
async fn a_pass_over_one_partition_syncs_its_segment_and_a_wider_one_shares_the_wal() {
    let fs = MemFs::new();
    let settings = EmbeddedConfig {
        wal_min_partitions: 2,
        ..small_wal()
    };
    let log = open_with(&fs, settings).unwrap();
    log.create_topic(&topic(), config()).await.unwrap();
    for i in 0..20 {
        let r = Record::keyed("k", format!("alone-{i}"));
        log.append(&topic(), PartitionId(0), vec![r]).await.unwrap();
    }
    assert!(
        !contains(&wal_bytes(&fs), b"alone-"),
        "one at a time: no wal"
    );
    // Appends to three partitions at once: the writer usually takes them in one pass.
    let mut shared = false;
    let t = topic();
    for i in 0..100 {
        let append = |p: u32| {
            let r = Record::keyed("k", format!("together-{i}-{p}"));
            log.append(&t, PartitionId(p), vec![r])
        };
        let (a, b, c) = tokio::join!(append(0), append(1), append(2));
        for appended in [a, b, c] {
            appended.unwrap();
        }
        if contains(&wal_bytes(&fs), format!("together-{i}-").as_bytes()) {
            shared = true;
            break;
        }
    }
    assert!(
        shared,
        "a pass over several partitions went through the wal"
    );
}

#[tokio::test]
async fn verify_counts_the_records_the_next_open_writes_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), small_wal()).unwrap();
    log.create_topic(&topic(), config()).await.unwrap();
    for i in 0..6 {
        let r = Record::keyed("k", format!("v{i}"));
        log.append(&topic(), PartitionId(i % PARTITIONS), vec![r])
            .await
            .unwrap();
    }
    drop(log); // unclean: the active segments have no index files
    let report = sluice_log::embedded::verify_dir(dir.path()).unwrap();
    assert_eq!(report.wal_records, 6);
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    let log = EmbeddedLog::open(dir.path(), small_wal()).unwrap();
    log.close().unwrap();
    drop(log);
    let report = sluice_log::embedded::verify_dir(dir.path()).unwrap();
    assert_eq!(
        report.wal_records, 0,
        "replayed and invalidated at the open"
    );
}
