//! The contract every `Log` implementation keeps, as one suite generic over `dyn Log`.
//! Each check uses its own topics (named with `prefix`), so the suite runs against a
//! shared broker as well as against a fresh embedded log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{
    CleanupPolicy, FetchRequest, Header, Log, LogError, Offset, PartitionId, Record, StoredRecord,
    Timestamp, TopicConfig, TopicName,
};

const P0: PartitionId = PartitionId(0);

fn topic(prefix: &str, name: &str) -> TopicName {
    TopicName::new(format!("{prefix}{name}")).expect("valid test topic name")
}

async fn read_all(log: &dyn Log, t: &TopicName, p: PartitionId) -> Vec<StoredRecord> {
    super::read_partition(log, t, p).await.expect("read")
}

/// The names of the checks, in the order `run` runs them.
pub const CHECKS: &[&str] = &[
    "topics_lifecycle",
    "deleting_a_topic_keeps_the_others",
    "update_topic",
    "add_partitions",
    "append_then_fetch_roundtrip",
    "fetch_limits",
    "offsets_and_out_of_range",
    "long_poll_wakes_on_append",
    "offset_for_timestamp",
    "partitions_are_independent",
    "concurrent_appends_keep_order",
    "compacted_topics_need_keys",
];

/// Runs every check; panics with a message naming the broken promise.
pub async fn run(log: Arc<dyn Log>, prefix: &str) {
    run_except(log, prefix, &[]).await;
}

/// Runs every check but those named in `skip` (a broker's documented deviations).
pub async fn run_except(log: Arc<dyn Log>, prefix: &str, skip: &[&str]) {
    for name in CHECKS.iter().filter(|n| !skip.contains(n)) {
        run_one(log.clone(), prefix, name).await;
    }
}

/// Runs the check called `name`.
pub async fn run_one(log: Arc<dyn Log>, prefix: &str, name: &str) {
    match name {
        "topics_lifecycle" => topics_lifecycle(&*log, prefix).await,
        "deleting_a_topic_keeps_the_others" => {
            deleting_a_topic_keeps_the_others(&*log, prefix).await
        }
        "update_topic" => update_topic(&*log, prefix).await,
        "add_partitions" => add_partitions(&*log, prefix).await,
        "append_then_fetch_roundtrip" => append_then_fetch_roundtrip(&*log, prefix).await,
        "fetch_limits" => fetch_limits(&*log, prefix).await,
        "offsets_and_out_of_range" => offsets_and_out_of_range(&*log, prefix).await,
        "long_poll_wakes_on_append" => long_poll_wakes_on_append(log, prefix).await,
        "offset_for_timestamp" => offset_for_timestamp(&*log, prefix).await,
        "partitions_are_independent" => partitions_are_independent(&*log, prefix).await,
        "concurrent_appends_keep_order" => concurrent_appends_keep_order(log, prefix).await,
        "compacted_topics_need_keys" => compacted_topics_need_keys(&*log, prefix).await,
        other => panic!("no contract check called {other}"),
    }
}

pub async fn topics_lifecycle(log: &dyn Log, prefix: &str) {
    let t = topic(prefix, "lifecycle");
    let config = TopicConfig::with_partitions(3);
    log.create_topic(&t, config.clone()).await.expect("create");
    assert!(matches!(
        log.create_topic(&t, config.clone()).await,
        Err(LogError::TopicExists(_))
    ));
    assert!(matches!(
        log.create_topic(&topic(prefix, "zero"), TopicConfig::with_partitions(0))
            .await,
        Err(LogError::InvalidConfig { .. })
    ));
    let info = log.topic(&t).await.expect("describe");
    assert_eq!(info.config.partitions, 3);
    assert!(
        log.list_topics()
            .await
            .expect("list")
            .iter()
            .any(|i| i.name == t)
    );

    log.delete_topic(&t).await.expect("delete");
    assert!(matches!(
        log.topic(&t).await,
        Err(LogError::TopicNotFound(_))
    ));
    assert!(matches!(
        log.delete_topic(&t).await,
        Err(LogError::TopicNotFound(_))
    ));
    assert!(matches!(
        log.append(&t, P0, vec![Record::value("x")]).await,
        Err(LogError::TopicNotFound(_))
    ));
    // A deleted name can be reused, and starts empty.
    log.create_topic(&t, TopicConfig::with_partitions(1))
        .await
        .expect("recreate");
    assert!(read_all(log, &t, P0).await.is_empty());
    log.delete_topic(&t).await.expect("delete again");
}

pub async fn deleting_a_topic_keeps_the_others(log: &dyn Log, prefix: &str) {
    let keep = topic(prefix, "kept");
    let gone = topic(prefix, "deleted");
    for t in [&keep, &gone] {
        log.create_topic(t, TopicConfig::with_partitions(1))
            .await
            .expect("create");
        log.append(t, P0, vec![Record::value("x")])
            .await
            .expect("append");
    }
    log.delete_topic(&gone).await.expect("delete");
    assert!(
        log.topic(&keep).await.is_ok(),
        "deleting one topic deleted another"
    );
    log.append(&keep, P0, vec![Record::value("y")])
        .await
        .expect("the other topic takes appends");
    assert_eq!(read_all(log, &keep, P0).await.len(), 2);
    log.delete_topic(&keep).await.expect("delete");
}

pub async fn update_topic(log: &dyn Log, prefix: &str) {
    let t = topic(prefix, "update");
    log.create_topic(&t, TopicConfig::with_partitions(3))
        .await
        .expect("create");
    let mut changed = log.topic(&t).await.expect("describe").config;
    changed.retention_ms = Some(60_000);
    log.update_topic(&t, changed.clone()).await.expect("update");
    assert_eq!(
        log.topic(&t).await.expect("describe").config.retention_ms,
        Some(60_000)
    );
    log.delete_topic(&t).await.expect("delete");
}

pub async fn add_partitions(log: &dyn Log, prefix: &str) {
    let t = topic(prefix, "grow");
    log.create_topic(&t, TopicConfig::with_partitions(3))
        .await
        .expect("create");
    log.add_partitions(&t, 5).await.expect("grow");
    assert_eq!(log.topic(&t).await.expect("describe").config.partitions, 5);
    log.append(&t, PartitionId(4), vec![Record::value("x")])
        .await
        .expect("append to new partition");
    assert!(
        log.add_partitions(&t, 2).await.is_err(),
        "partition count must never shrink"
    );
    log.delete_topic(&t).await.expect("delete");
}

pub async fn append_then_fetch_roundtrip(log: &dyn Log, prefix: &str) {
    let t = topic(prefix, "roundtrip");
    log.create_topic(&t, TopicConfig::with_partitions(1))
        .await
        .expect("create");
    let mut written = Vec::new();
    let mut last: Option<Offset> = None;
    for batch in 0..20u32 {
        let records: Vec<Record> = (0..=batch % 7)
            .map(|i| Record {
                key: (i % 2 == 0).then(|| Bytes::from(format!("k{batch}-{i}"))),
                value: Some(Bytes::from(vec![b'v'; (batch * 31 + i) as usize % 300])),
                headers: vec![Header {
                    key: "h".into(),
                    value: Bytes::from(format!("{batch}")),
                }],
                timestamp: Some(Timestamp(1_700_000_000_000 + i64::from(batch))),
            })
            .collect();
        let appended = log.append(&t, P0, records.clone()).await.expect("append");
        assert_eq!(appended.offsets.len(), records.len());
        for w in appended.offsets.windows(2) {
            assert!(w[0] < w[1], "offsets must increase within a batch");
        }
        if let (Some(prev), Some(first)) = (last, appended.offsets.first()) {
            assert!(*first > prev, "offsets must increase across appends");
        }
        last = appended.last();
        written.extend(appended.offsets.into_iter().zip(records));
    }
    let read = read_all(log, &t, P0).await;
    assert_eq!(read.len(), written.len());
    for (r, (offset, w)) in read.iter().zip(&written) {
        assert_eq!(r.offset, *offset);
        assert_eq!(r.key, w.key);
        assert_eq!(r.value, w.value);
        assert_eq!(r.headers, w.headers);
        assert_eq!(Some(r.timestamp), w.timestamp);
    }
    // Reading from the middle starts exactly there.
    let mid = written[written.len() / 2].0;
    let f = log
        .fetch(&t, P0, FetchRequest::new(mid))
        .await
        .expect("fetch mid");
    assert_eq!(f.records.first().map(|r| r.offset), Some(mid));
    // An empty append is a no-op.
    assert!(
        log.append(&t, P0, Vec::new())
            .await
            .expect("empty")
            .offsets
            .is_empty()
    );
    log.delete_topic(&t).await.expect("delete");
}

pub async fn fetch_limits(log: &dyn Log, prefix: &str) {
    let t = topic(prefix, "limits");
    log.create_topic(&t, TopicConfig::with_partitions(1))
        .await
        .expect("create");
    let big = vec![Record::value(vec![7u8; 10_000]); 5];
    log.append(&t, P0, big).await.expect("append");
    let earliest = log.offsets(&t, P0).await.expect("offsets").earliest;
    let f = log
        .fetch(&t, P0, FetchRequest::new(earliest).max_records(2))
        .await
        .expect("fetch");
    assert_eq!(f.records.len(), 2, "max_records is a cap");
    assert_eq!(f.next, Offset(f.records[1].offset.0 + 1));
    let f = log
        .fetch(&t, P0, FetchRequest::new(earliest).max_bytes(10))
        .await
        .expect("fetch");
    assert!(
        !f.records.is_empty(),
        "one record is returned even when larger than max_bytes"
    );
    log.delete_topic(&t).await.expect("delete");
}

pub async fn offsets_and_out_of_range(log: &dyn Log, prefix: &str) {
    let t = topic(prefix, "offsets");
    log.create_topic(&t, TopicConfig::with_partitions(1))
        .await
        .expect("create");
    let empty = log.offsets(&t, P0).await.expect("offsets");
    assert_eq!(empty.earliest, empty.latest, "a new partition is empty");
    let a = log
        .append(&t, P0, vec![Record::value("a"), Record::value("b")])
        .await
        .expect("append");
    let o = log.offsets(&t, P0).await.expect("offsets");
    assert!(
        o.latest > a.last().expect("offset"),
        "latest is past the last record"
    );
    assert!(o.earliest <= a.offsets[0]);
    let at_end = log
        .fetch(&t, P0, FetchRequest::new(o.latest))
        .await
        .expect("fetch at end");
    assert!(at_end.records.is_empty());
    assert_eq!(at_end.next, o.latest);
    let beyond = log
        .fetch(&t, P0, FetchRequest::new(Offset(o.latest.0 + 100)))
        .await;
    assert!(
        matches!(beyond, Err(LogError::OffsetOutOfRange { .. })),
        "{beyond:?}"
    );
    assert!(matches!(
        log.fetch(&t, PartitionId(9), FetchRequest::new(Offset(0)))
            .await,
        Err(LogError::PartitionNotFound { .. })
    ));
    log.delete_topic(&t).await.expect("delete");
}

pub async fn long_poll_wakes_on_append(log: Arc<dyn Log>, prefix: &str) {
    let t = topic(prefix, "longpoll");
    log.create_topic(&t, TopicConfig::with_partitions(1))
        .await
        .expect("create");
    let latest = log.offsets(&t, P0).await.expect("offsets").latest;

    let started = Instant::now();
    let timed_out = log
        .fetch(
            &t,
            P0,
            FetchRequest::new(latest).max_wait(Duration::from_millis(200)),
        )
        .await
        .expect("fetch");
    assert!(timed_out.records.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "waited for max_wait"
    );

    let writer = {
        let log = log.clone();
        let t = t.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            log.append(&t, P0, vec![Record::value("wake")])
                .await
                .expect("append");
        })
    };
    let started = Instant::now();
    let woke = log
        .fetch(
            &t,
            P0,
            FetchRequest::new(latest).max_wait(Duration::from_secs(20)),
        )
        .await
        .expect("fetch");
    assert_eq!(woke.records.len(), 1);
    assert_eq!(woke.records[0].value.as_deref(), Some(&b"wake"[..]));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "returned when data arrived"
    );
    writer.await.expect("writer");
    log.delete_topic(&t).await.expect("delete");
}

pub async fn offset_for_timestamp(log: &dyn Log, prefix: &str) {
    let t = topic(prefix, "times");
    log.create_topic(&t, TopicConfig::with_partitions(1))
        .await
        .expect("create");
    let mut offsets = Vec::new();
    for ts in [1000i64, 2000, 3000, 4000] {
        let r = Record {
            value: Some(Bytes::from(ts.to_string())),
            timestamp: Some(Timestamp(ts)),
            ..Record::default()
        };
        offsets.push(log.append(&t, P0, vec![r]).await.expect("append").offsets[0]);
    }
    let at = |ts| log.offset_for_timestamp(&t, P0, Timestamp(ts));
    assert_eq!(at(0).await.expect("lookup"), Some(offsets[0]));
    assert_eq!(at(2000).await.expect("lookup"), Some(offsets[1]));
    assert_eq!(at(2500).await.expect("lookup"), Some(offsets[2]));
    assert_eq!(at(4000).await.expect("lookup"), Some(offsets[3]));
    assert_eq!(at(4001).await.expect("lookup"), None);
    log.delete_topic(&t).await.expect("delete");
}

pub async fn partitions_are_independent(log: &dyn Log, prefix: &str) {
    let t = topic(prefix, "independent");
    log.create_topic(&t, TopicConfig::with_partitions(4))
        .await
        .expect("create");
    for p in 0..4u32 {
        let records = (0..=p)
            .map(|i| Record::value(format!("p{p}-{i}")))
            .collect();
        log.append(&t, PartitionId(p), records)
            .await
            .expect("append");
    }
    for p in 0..4u32 {
        let read = read_all(log, &t, PartitionId(p)).await;
        let values: Vec<_> = read.iter().filter_map(|r| r.value.clone()).collect();
        let expected: Vec<_> = (0..=p).map(|i| Bytes::from(format!("p{p}-{i}"))).collect();
        assert_eq!(values, expected, "partition {p}");
    }
    log.delete_topic(&t).await.expect("delete");
}

pub async fn concurrent_appends_keep_order(log: Arc<dyn Log>, prefix: &str) {
    let t = topic(prefix, "concurrent");
    log.create_topic(&t, TopicConfig::with_partitions(1))
        .await
        .expect("create");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let log = log.clone();
            let t = t.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let recs = vec![Record::keyed(format!("w{w}"), format!("{i}"))];
                    log.append(&t, P0, recs).await.expect("append");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let read = read_all(&*log, &t, P0).await;
    assert_eq!(read.len(), 200);
    for w in 0..8 {
        let key = Bytes::from(format!("w{w}"));
        let seq: Vec<String> = read
            .iter()
            .filter(|r| r.key.as_ref() == Some(&key))
            .filter_map(|r| {
                r.value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
            .collect();
        let expected: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        assert_eq!(seq, expected, "writer {w}'s records stay in its order");
    }
    log.delete_topic(&t).await.expect("delete");
}

pub async fn compacted_topics_need_keys(log: &dyn Log, prefix: &str) {
    let t = topic(prefix, "compacted");
    let config = TopicConfig {
        cleanup_policy: CleanupPolicy::Compact,
        ..TopicConfig::with_partitions(1)
    };
    log.create_topic(&t, config).await.expect("create");
    assert!(matches!(
        log.append(&t, P0, vec![Record::value("no key")]).await,
        Err(LogError::InvalidRecord { .. })
    ));
    log.append(
        &t,
        P0,
        vec![Record::keyed("k", "v"), Record::tombstone("k")],
    )
    .await
    .expect("keyed records and tombstones are fine");
    let read = read_all(log, &t, P0).await;
    assert_eq!(read.len(), 2);
    assert_eq!(
        read[1].value, None,
        "a tombstone reads back as a null value"
    );
    log.delete_topic(&t).await.expect("delete");
}
