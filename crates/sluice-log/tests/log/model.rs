//! Property test: any sequence of appends, reads, clean and crash reopens and
//! compactions leaves the embedded log equal to a simple in-memory model.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use sluice_log::testing::MemFs;
use sluice_log::{
    CleanupPolicy, EmbeddedConfig, EmbeddedLog, FetchRequest, Log, Offset, PartitionId, Record,
    TopicConfig, TopicName,
};

#[derive(Debug, Clone)]
enum Op {
    Append {
        partition: u32,
        records: Vec<(u8, Option<u16>)>,
    },
    Read {
        partition: u32,
        at: usize,
        max_records: usize,
    },
    CleanReopen,
    CrashReopen {
        seed: u64,
    },
    /// Seal every partition's active segment and run cleanup (which compacts all).
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2u32, proptest::collection::vec((0..6u8, proptest::option::weighted(0.85, any::<u16>())), 1..12))
            .prop_map(|(partition, records)| Op::Append { partition, records }),
        3 => (0..2u32, any::<usize>(), 1..20usize)
            .prop_map(|(partition, at, max_records)| Op::Read { partition, at, max_records }),
        1 => Just(Op::CleanReopen),
        1 => any::<u64>().prop_map(|seed| Op::CrashReopen { seed }),
        2 => Just(Op::Compact),
    ]
}

type Entry = (Offset, Bytes, Option<Bytes>);

struct Model {
    partitions: Vec<Vec<Entry>>,
}

impl Model {
    fn compact(&mut self, p: usize) {
        let mut latest: HashMap<Bytes, Offset> = HashMap::new();
        for (o, k, _) in &self.partitions[p] {
            latest.insert(k.clone(), *o);
        }
        self.partitions[p].retain(|(o, k, v)| latest[k] == *o && v.is_some());
    }
}

fn settings() -> EmbeddedConfig {
    EmbeddedConfig {
        index_interval_bytes: 128,
        maintenance_interval_ms: 3_600_000,
        ..EmbeddedConfig::default()
    }
}

fn open(fs: &MemFs) -> EmbeddedLog {
    EmbeddedLog::open_with_fs(Arc::new(fs.clone()), Path::new("/data"), settings()).expect("open")
}

async fn read_from(
    log: &EmbeddedLog,
    t: &TopicName,
    p: u32,
    from: Offset,
    max: usize,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut from = from;
    loop {
        let f = log
            .fetch(
                t,
                PartitionId(p),
                FetchRequest::new(from).max_records(max).max_bytes(700),
            )
            .await
            .expect("fetch");
        if f.records.is_empty() {
            assert_eq!(
                f.next, f.offsets.latest,
                "an empty read ends at the high watermark"
            );
            return out;
        }
        assert!(f.next > from);
        from = f.next;
        out.extend(
            f.records
                .into_iter()
                .map(|r| (r.offset, r.key.expect("key"), r.value)),
        );
    }
}

fn run(ops: Vec<Op>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut fs = MemFs::new();
        let t = TopicName::new("model").expect("name");
        let mut log = open(&fs);
        let config = TopicConfig {
            partitions: 2,
            cleanup_policy: CleanupPolicy::Compact,
            segment_bytes: 1024,
            delete_retention_ms: 0,
            ..TopicConfig::default()
        };
        log.create_topic(&t, config).await.expect("create");
        let mut model = Model {
            partitions: vec![Vec::new(), Vec::new()],
        };
        for op in ops {
            match op {
                Op::Append { partition, records } => {
                    let recs: Vec<Record> = records
                        .iter()
                        .map(|(k, v)| Record {
                            key: Some(Bytes::from(format!("key-{k}"))),
                            value: v.map(|v| {
                                Bytes::from(format!("value-{v}-{}", "x".repeat(v as usize % 90)))
                            }),
                            ..Record::default()
                        })
                        .collect();
                    let appended = log
                        .append(&t, PartitionId(partition), recs.clone())
                        .await
                        .expect("append");
                    let m = &mut model.partitions[partition as usize];
                    for (o, r) in appended.offsets.into_iter().zip(recs) {
                        if let Some((last, _, _)) = m.last() {
                            assert!(o > *last, "offsets increase");
                        }
                        m.push((o, r.key.expect("key"), r.value));
                    }
                }
                Op::Read {
                    partition,
                    at,
                    max_records,
                } => {
                    let m = &model.partitions[partition as usize];
                    let from = if m.is_empty() {
                        log.offsets(&t, PartitionId(partition))
                            .await
                            .expect("offsets")
                            .earliest
                    } else {
                        m[at % m.len()].0
                    };
                    let got = read_from(&log, &t, partition, from, max_records).await;
                    let want: Vec<Entry> = m.iter().filter(|e| e.0 >= from).cloned().collect();
                    assert_eq!(got, want, "read of partition {partition} from {from}");
                }
                Op::CleanReopen => {
                    log.close().expect("close");
                    drop(log);
                    log = open(&fs);
                }
                Op::CrashReopen { seed } => {
                    // Everything was acknowledged with fsync durability: a power cut now,
                    // with any torn unsynced tail, must keep all of it.
                    let image = fs.crash_image(seed);
                    drop(log);
                    fs = image;
                    log = open(&fs);
                }
                Op::Compact => {
                    for p in 0..2u32 {
                        log.roll(&t, PartitionId(p)).expect("roll");
                        model.compact(p as usize);
                    }
                    log.run_cleanup().expect("cleanup");
                }
            }
        }
        for p in 0..2u32 {
            let earliest = log
                .offsets(&t, PartitionId(p))
                .await
                .expect("offsets")
                .earliest;
            let got = read_from(&log, &t, p, earliest, 1000).await;
            assert_eq!(
                got, model.partitions[p as usize],
                "final contents of partition {p}"
            );
        }
        log.close().expect("close");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn embedded_log_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops);
    }
}
