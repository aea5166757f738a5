//! `/event-types/{name}/partitions` and `/partition-count`.

use serde_json::{Value, json};

use crate::{Needs, Server, storage_has, uuid};

fn user_defined(name: &str, partitions: u32) -> Value {
    json!({
        "name": name,
        "owning_application": "orders",
        "category": "business",
        "enrichment_strategies": ["metadata_enrichment"],
        "partition_strategy": "user_defined",
        "default_statistic": {"messages_per_minute": 100, "message_size": 200,
                              "read_parallelism": 1, "write_parallelism": partitions},
        "schema": {"type": "json_schema", "schema": "{\"type\":\"object\"}"}
    })
}

fn event_to(partition: u32, n: u64) -> Value {
    json!({"order": n, "metadata": {"eid": uuid(n), "occurred_at": "2026-11-22T10:00:00Z",
        "partition": partition.to_string()}})
}

fn cursor(offset: u64) -> String {
    format!("001-0001-{offset:018}")
}

#[test]
fn partitions_report_their_bounds_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    assert_eq!(
        s.post("/event-types", &user_defined("shop.order", 3))
            .status,
        201
    );
    let events: Vec<Value> = (0..5).map(|n| event_to(1, n)).collect();
    assert_eq!(
        s.post("/event-types/shop.order/events", &Value::Array(events))
            .status,
        200
    );

    let parts = s.get("/event-types/shop.order/partitions").json();
    assert_eq!(
        parts.as_array().unwrap().len(),
        3,
        "partition count from default_statistic"
    );
    assert_eq!(
        parts[0],
        json!({"partition": "0", "oldest_available_offset": cursor(0),
        "newest_available_offset": "BEGIN"})
    );
    assert_eq!(parts[1]["oldest_available_offset"], cursor(0));
    assert_eq!(parts[1]["newest_available_offset"], cursor(4));

    let one = s
        .get(&format!(
            "/event-types/shop.order/partitions/1?consumed_offset={}",
            cursor(1)
        ))
        .json();
    assert_eq!(one["unconsumed_events"], 3);
    let begin = s
        .get("/event-types/shop.order/partitions/1?consumed_offset=begin")
        .json();
    assert_eq!(begin["unconsumed_events"], 5);
    s.get("/event-types/shop.order/partitions/7").problem(404);
    s.get("/event-types/shop.order/partitions/1?consumed_offset=garbage")
        .problem(422);

    let query = format!("[{{\"partition\":\"1\",\"offset\":\"{}\"}}]", cursor(4));
    let encoded: String = query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let lagged = s
        .get(&format!(
            "/event-types/shop.order/partitions?cursors={encoded}"
        ))
        .json();
    assert_eq!(lagged[1]["unconsumed_events"], 0);
    assert!(lagged[0].get("unconsumed_events").is_none());
    s.get("/event-types/shop.order/partitions?cursors=%5B")
        .problem(400);
    s.get("/event-types/nope/partitions").problem(404);
}

#[test]
fn partition_count_only_grows_and_new_partitions_take_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.post("/event-types", &user_defined("shop.order", 2));
    let detail = s
        .post("/event-types/shop.order/events", &json!([event_to(3, 1)]))
        .json()[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("not a partition"), "{detail}");
    if !storage_has(Needs::PartitionGrowth) {
        return;
    }

    let r = s.put(
        "/event-types/shop.order/partition-count",
        &json!({"partition_count": 4}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = s.put(
        "/event-types/shop.order/partition-count",
        &json!({"partition_count": 4}),
    );
    assert_eq!(r.status, 204, "idempotent");
    assert_eq!(
        s.get("/event-types/shop.order/partitions")
            .json()
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        s.get("/event-types/shop.order").json()["partition_count"],
        4
    );
    assert_eq!(
        s.post("/event-types/shop.order/events", &json!([event_to(3, 1)]))
            .status,
        200
    );

    let detail = s
        .put(
            "/event-types/shop.order/partition-count",
            &json!({"partition_count": 1}),
        )
        .problem(422);
    assert!(detail.contains("only grow"), "{detail}");
    s.stop();
    let s = Server::start(dir.path());
    assert_eq!(
        s.get("/event-types/shop.order/partitions")
            .json()
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        s.get("/event-types/shop.order/partitions/3").json()["newest_available_offset"],
        cursor(0)
    );
}
