//! Compacted event types: events keyed by `metadata.partition_compaction_key`,
//! tombstones through `deleted-events`, and the log's compaction keeping the latest
//! event per key.

use serde_json::{Value, json};
use sluice_log::{EmbeddedConfig, EmbeddedLog, PartitionId, TopicName};

use crate::{Needs, Server, storage_has, stored_events, uuid};

fn catalog(name: &str, policy: &str) -> Value {
    json!({
        "name": name,
        "owning_application": "catalog",
        "category": "business",
        "enrichment_strategies": ["metadata_enrichment"],
        "partition_strategy": "hash",
        "partition_key_fields": ["sku"],
        "partition_count": 2,
        "cleanup_policy": policy,
        "schema": {"type": "json_schema", "schema": json!({
            "type": "object",
            "properties": {"sku": {"type": "string"}, "title": {"type": "string"}},
            "required": ["sku"]
        }).to_string()}
    })
}

fn product(sku: &str, title: &str, n: u64) -> Value {
    json!({"sku": sku, "title": title, "metadata": {"eid": uuid(n),
        "occurred_at": "2026-11-22T10:00:00Z", "partition_compaction_key": sku}})
}

#[test]
fn compaction_keeps_the_latest_event_per_key_and_tombstones_delete_keys() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    assert_eq!(
        s.post("/event-types", &catalog("shop.product", "compact"))
            .status,
        201
    );
    let mut n = 0;
    for version in 0..3 {
        let batch: Vec<Value> = (0..4)
            .map(|k| {
                n += 1;
                product(&format!("sku-{k}"), &format!("v{version}"), n)
            })
            .collect();
        assert_eq!(
            s.post("/event-types/shop.product/events", &Value::Array(batch))
                .status,
            200
        );
    }
    // A compacted event type needs the key.
    let mut keyless = product("sku-9", "x", 99);
    keyless["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("partition_compaction_key");
    assert_eq!(
        s.post("/event-types/shop.product/events", &json!([keyless]))
            .status,
        422
    );

    let tombstone = json!([{"sku": "sku-2", "metadata": {"partition_compaction_key": "sku-2"}}]);
    let r = s.post("/event-types/shop.product/deleted-events", &tombstone);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.post(
        "/event-types/shop.product/deleted-events",
        &json!([{"sku": "sku-1"}]),
    );
    assert_eq!(r.status, 422);
    assert!(
        r.json()[0]["detail"]
            .as_str()
            .unwrap()
            .contains("partition_compaction_key")
    );
    s.stop();
    if !storage_has(Needs::CompactionOnDemand) {
        return;
    }

    // Compact the log as its cleaner would, then read what is left.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap();
        let topic = TopicName::new("shop.product").unwrap();
        for p in 0..2 {
            log.roll(&topic, PartitionId(p)).unwrap();
        }
        log.run_cleanup().unwrap();
        log.close().unwrap();
    });
    let mut left: Vec<(String, String)> = stored_events(dir.path(), "shop.product")
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["sku"].as_str().unwrap().to_string(),
                e["title"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    left.sort();
    let expected: Vec<(String, String)> = [0, 1, 3]
        .iter()
        .map(|k| (format!("sku-{k}"), "v2".to_string()))
        .collect();
    assert_eq!(left, expected, "latest per key, sku-2 deleted");
}

#[test]
fn deleted_events_need_a_compacted_event_type() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.post("/event-types", &catalog("shop.plain", "delete"));
    let detail = s
        .post(
            "/event-types/shop.plain/deleted-events",
            &json!([{"sku": "a", "metadata": {"partition_compaction_key": "a"}}]),
        )
        .problem(422);
    assert!(detail.contains("not compacted"), "{detail}");
}
