//! The committed golden segment proves that new code still reads data written by old
//! code, and that today's writer produces the same bytes (the format did not drift).
//! Regenerate only on a deliberate format change: `SLUICE_BLESS_GOLDEN=1 cargo test golden`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use sluice_log::{
    EmbeddedConfig, EmbeddedLog, FetchRequest, Header, Log, PartitionId, Record, StoredRecord,
    Timestamp, TopicConfig, TopicName,
};

const SEGMENT: &str = "00000000000000000000.log";

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/golden-v1")
        .join(SEGMENT)
}

fn topic() -> TopicName {
    TopicName::new("golden").unwrap()
}

/// The appends that made the golden segment: several batches, keys and no keys,
/// a tombstone, headers, an empty value and explicit timestamps.
fn batches() -> Vec<Vec<Record>> {
    let ts = |ms: i64| Some(Timestamp(1_767_225_600_000 + ms));
    vec![
        vec![
            Record {
                key: Some(Bytes::from("sku-1")),
                value: Some(Bytes::from(r#"{"price":1999}"#)),
                headers: vec![],
                timestamp: ts(0),
            },
            Record {
                key: Some(Bytes::from("sku-2")),
                value: Some(Bytes::from(r#"{"price":2499}"#)),
                headers: vec![],
                timestamp: ts(5),
            },
            Record {
                key: None,
                value: Some(Bytes::from("keyless")),
                headers: vec![],
                timestamp: ts(3),
            },
        ],
        vec![Record {
            key: Some(Bytes::from("sku-1")),
            value: None,
            headers: vec![],
            timestamp: ts(10),
        }],
        vec![
            Record {
                key: Some(Bytes::from("sku-3")),
                value: Some(Bytes::new()),
                headers: vec![
                    Header {
                        key: "flow-id".into(),
                        value: Bytes::from("abc"),
                    },
                    Header {
                        key: "empty".into(),
                        value: Bytes::new(),
                    },
                ],
                timestamp: ts(20),
            },
            Record {
                key: Some(Bytes::from(vec![0u8, 255, 7])),
                value: Some(Bytes::from(vec![1u8; 300])),
                headers: vec![],
                timestamp: ts(-1000),
            },
        ],
    ]
}

async fn write_segment(dir: &Path) -> PathBuf {
    let log = EmbeddedLog::open(dir, EmbeddedConfig::default()).unwrap();
    log.create_topic(&topic(), TopicConfig::with_partitions(1))
        .await
        .unwrap();
    for b in batches() {
        log.append(&topic(), PartitionId(0), b).await.unwrap();
    }
    log.close().unwrap();
    dir.join("topics/golden/0").join(SEGMENT)
}

#[tokio::test]
async fn golden_segment_reads_back_and_todays_writer_matches_it() {
    let fresh = tempfile::tempdir().unwrap();
    let written = std::fs::read(write_segment(fresh.path()).await).unwrap();
    if std::env::var_os("SLUICE_BLESS_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_path().parent().unwrap()).unwrap();
        std::fs::write(golden_path(), &written).unwrap();
    }
    let golden = std::fs::read(golden_path()).expect("the golden segment is committed");
    assert_eq!(
        written, golden,
        "the writer's bytes drifted from the committed format"
    );

    // Old bytes, new reader: a data dir holding only the golden segment (no index).
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("topics/golden/0");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::copy(golden_path(), part.join(SEGMENT)).unwrap();
    let config = serde_json::to_vec(&TopicConfig::with_partitions(1)).unwrap();
    std::fs::write(dir.path().join("topics/golden/topic.json"), config).unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap();
    let read = log
        .fetch(
            &topic(),
            PartitionId(0),
            FetchRequest::new(sluice_log::Offset(0)),
        )
        .await
        .unwrap();
    let expected: Vec<StoredRecord> = batches()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| StoredRecord {
            offset: sluice_log::Offset(i as u64),
            timestamp: r.timestamp.unwrap(),
            key: r.key,
            value: r.value,
            headers: r.headers,
        })
        .collect();
    assert_eq!(read.records, expected);
    let found = log
        .offset_for_timestamp(&topic(), PartitionId(0), Timestamp(1_767_225_600_004))
        .await
        .unwrap();
    assert_eq!(found, Some(sluice_log::Offset(1)));
}
