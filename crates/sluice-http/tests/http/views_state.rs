//! SQL views over HTTP, black-box, across their life: state kept over restarts,
//! snapshots restored on a node without state, sources that grow or go and come back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::views::{SEQ, change, everything_written, remember_written, row_after, shop};
use crate::{Server, uuid};

/// Orders: business events, randomly partitioned, read as a stream.
fn orders(s: &Server) {
    let schema = json!({"type": "object", "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
                        "required": ["sku", "quantity"]});
    let et = json!({
        "name": "shop.order", "owning_application": "checkout", "category": "business",
        "enrichment_strategies": ["metadata_enrichment"], "partition_strategy": "random",
        "partition_count": 3,
        "schema": {"type": "json_schema", "schema": schema.to_string()}
    });
    assert_eq!(s.post("/event-types", &et).status, 201);
    let sql = r#"CREATE VIEW orders_per_sku AS
        SELECT sku, COUNT(*) AS orders, SUM(quantity) AS units FROM "shop.order" GROUP BY sku"#;
    assert_eq!(s.post("/views", &json!({"sql": sql})).status, 201);
}

/// Publishes `n` orders of one unit each, spread over `skus` skus.
fn order(s: &Server, from: u64, n: u64, skus: u64) {
    let batch: Vec<Value> = (from..from + n)
        .map(|i| {
            let id = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            json!({"sku": format!("s{}", i % skus), "quantity": 1,
                   "metadata": {"eid": uuid(id), "occurred_at": "2026-11-23T10:00:00Z"}})
        })
        .collect();
    let r = s.post("/event-types/shop.order/events", &Value::Array(batch));
    assert_eq!(r.status, 200, "{}", r.body);
    remember_written(&r);
}

/// A view's status once it has loaded its state (after a start).
fn loaded(s: &Server, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = s.get(&format!("/views/{name}")).json();
        if st["status"] != "loading" {
            return st;
        }
        assert!(Instant::now() < deadline, "{st}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Units per sku as the view has them, once it applied everything written.
fn units(s: &Server) -> Vec<(String, i64)> {
    let r = s.get_with(
        "/views/orders_per_sku/rows?limit=1000&wait_ms=5000",
        &[("X-Sluice-Wait-For", &everything_written())],
    );
    assert_eq!(r.header("x-sluice-caught-up"), Some("true"));
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["sku"].as_str().unwrap().to_string(),
                x["units"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_restarted_view_goes_on_from_its_state_without_counting_anything_twice() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    orders(&s);
    order(&s, 0, 300, 3);
    assert_eq!(
        units(&s),
        [("s0".into(), 100), ("s1".into(), 100), ("s2".into(), 100)]
    );
    // The status says what the last checkpoint (every 200 ms here) cost the view.
    let deadline = Instant::now() + Duration::from_secs(10);
    let checkpoint = loop {
        let st = s.get("/views/orders_per_sku").json();
        if !st["checkpoint"].is_null() {
            break st["checkpoint"].clone();
        }
        assert!(Instant::now() < deadline, "no checkpoint: {st}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(checkpoint["bytes"].as_u64().unwrap() > 0, "{checkpoint}");
    assert!(
        checkpoint["pause_ms"].as_f64().unwrap() >= 0.0,
        "{checkpoint}"
    );
    assert!(
        checkpoint["interval_ms"].as_u64().unwrap() >= 200,
        "{checkpoint}"
    );
    s.stop();

    // The view is back at once, from its state, not from the log.
    let s = Server::start(dir.path());
    let status = loaded(&s, "orders_per_sku");
    assert!(
        status["loaded_from"]
            .as_str()
            .is_some_and(|p| p.ends_with(".state")),
        "{status}"
    );
    assert_eq!(s.get("/views/orders_per_sku/rows/s1").json()["units"], 100);
    order(&s, 300, 30, 3);
    assert_eq!(
        units(&s),
        [("s0".into(), 110), ("s1".into(), 110), ("s2".into(), 110)]
    );
    assert_eq!(
        s.get("/views/orders_per_sku").json()["events_applied"],
        30,
        "only what came after the state"
    );
}

#[test]
fn a_node_without_view_state_restores_the_latest_snapshot_and_replays_what_came_after() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    orders(&s);
    order(&s, 0, 200, 4);
    units(&s);
    let r = s.post("/views/orders_per_sku/snapshots", &json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    let snap = r.json()["path"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&snap).exists());
    order(&s, 200, 40, 4);
    units(&s);
    s.stop();

    // A fresh node: no view state of its own, the snapshot dir and the log.
    std::fs::remove_dir_all(dir.path().join("views")).unwrap();
    let s = Server::start(dir.path());
    let status = loaded(&s, "orders_per_sku");
    assert_eq!(status["loaded_from"], json!(snap), "{status}");
    assert_eq!(
        units(&s),
        [
            ("s0".into(), 60),
            ("s1".into(), 60),
            ("s2".into(), 60),
            ("s3".into(), 60)
        ]
    );
    assert_eq!(s.get("/views/orders_per_sku").json()["events_applied"], 40);

    // Without a snapshot dir configured the call says so.
    assert_eq!(s.post("/views/nope/snapshots", &json!({})).status, 404);
}

#[test]
fn a_view_reads_partitions_added_to_its_sources_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    shop(&s);
    let sql = json!({"sql": "CREATE VIEW prices AS SELECT sku, amount FROM \"shop.price\""});
    assert_eq!(s.post("/views", &sql).status, 201);
    for i in 0..20 {
        change(
            &s,
            "shop.price",
            "C",
            json!({"sku": format!("p{i}"), "amount": i}),
        );
    }
    assert_eq!(row_after(&s, "prices", "p19").json()["amount"], 19);
    if !crate::storage_has(crate::Needs::PartitionGrowth) {
        return;
    }
    let r = s.put(
        "/event-types/shop.price/partition-count",
        &json!({"partition_count": 6}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // New skus hash into the new partitions too; the view reads them once it sees them.
    for i in 20..80 {
        change(
            &s,
            "shop.price",
            "C",
            json!({"sku": format!("p{i}"), "amount": i}),
        );
    }
    let r = row_after(&s, "prices", "p79");
    assert_eq!(r.json()["amount"], 79);
    let rows = s.get("/views/prices/rows?limit=1000").json();
    assert_eq!(rows["items"].as_array().unwrap().len(), 80);
    let status = s.get("/views/prices").json();
    assert_eq!(status["sources"].as_array().unwrap().len(), 6, "{status}");
}

/// A view whose source is gone when the node starts (its definition removed from the
/// registry while the node was down) says why it does not run, and runs again by
/// itself once the event type is back.
#[test]
fn a_view_that_cannot_start_runs_once_its_source_is_back() {
    if !crate::storage_has(crate::Needs::TopicDeletion) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    shop(&s);
    let sql = json!({"sql": "CREATE VIEW prices AS SELECT sku, amount FROM \"shop.price\""});
    assert_eq!(s.post("/views", &sql).status, 201);
    let price = s.get("/event-types/shop.price").json();
    s.stop();

    // The event type's definition goes, behind the node's back.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (log, embedded) = crate::open_log(dir.path()).await;
        let registry = sluice_log::TopicName::new("__sluice_event_types").unwrap();
        let tombstone = sluice_log::Record::tombstone(bytes::Bytes::from_static(b"shop.price"));
        log.append(&registry, sluice_log::PartitionId(0), vec![tombstone])
            .await
            .unwrap();
        log.flush().await.unwrap();
        if let Some(e) = embedded {
            e.close().unwrap();
        }
    });

    let s = Server::start(dir.path());
    let status = loaded(&s, "prices");
    assert_eq!(status["status"], "failed", "{status}");
    assert!(
        status["error"].as_str().unwrap().contains("shop.price"),
        "{status}"
    );
    assert!(
        s.get("/views/prices/rows/a")
            .problem(422)
            .contains("does not run")
    );

    assert_eq!(s.post("/event-types", &price).status, 201);
    change(&s, "shop.price", "C", json!({"sku": "a", "amount": 3}));
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.get("/views/prices/rows/a").status != 200 {
        assert!(Instant::now() < deadline, "{}", s.get("/views/prices").body);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.get("/views/prices").json()["status"], "running");
}
