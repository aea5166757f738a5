//! Two Sluice nodes on one Kafka cluster form one bus: what one node is told, the
//! other knows within a second; races between them are settled the same on both.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Server, price_changed, price_event};

/// Two nodes on one broker (on Kafka a data dir holds nothing of its own).
fn two_nodes(dir: &std::path::Path) -> (Server, Server) {
    (Server::start(dir), Server::start(dir))
}

/// Polls `check` until it holds; returns how long that took (fails after 5 s).
fn within(what: &str, check: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not seen on the other node within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn definitions_and_cursors_converge_across_nodes_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(dir.path());
    let mut seen = Vec::new();

    assert_eq!(
        a.post("/event-types", &price_changed("shop.price", 2))
            .status,
        201
    );
    seen.push(within("an event type created on A", || {
        b.get("/event-types/shop.price").status == 200
    }));
    // Either node takes events; both see them.
    let batch: Vec<Value> = (0..10)
        .map(|i| price_event(&format!("sku-{i}"), i))
        .collect();
    assert_eq!(
        b.post("/event-types/shop.price/events", &Value::Array(batch))
            .status,
        200
    );
    assert_eq!(
        a.get("/event-types/shop.price/partitions").json(),
        b.get("/event-types/shop.price/partitions").json()
    );

    // A schema change on B reaches A.
    let mut changed = price_changed("shop.price", 2);
    let mut schema: Value =
        serde_json::from_str(changed["schema"]["schema"].as_str().unwrap()).unwrap();
    schema["properties"]["note"] = json!({"type": "string"});
    changed["schema"]["schema"] = json!(schema.to_string());
    changed.as_object_mut().unwrap().remove("partition_count");
    let r = b.put("/event-types/shop.price", &changed);
    assert_eq!(r.status, 200, "{}", r.body);
    let version = r.json()["schema"]["version"].clone();
    seen.push(within("a schema change made on B", || {
        a.get("/event-types/shop.price").json()["schema"]["version"] == version
    }));
    assert_eq!(
        a.get("/event-types/shop.price/schemas").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A subscription created on B is listed on A, and A answers its key with its id.
    let sub = json!({"owning_application": "search", "event_types": ["shop.price"],
                     "read_from": "begin"});
    let created = b.post("/subscriptions", &sub);
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().unwrap().to_string();
    seen.push(within("a subscription created on B", || {
        a.get(&format!("/subscriptions/{id}")).status == 200
    }));
    let again = a.post("/subscriptions", &sub);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["id"], json!(id));

    // Cursors reset on A are B's cursors too.
    let r = a.json_with(
        "PATCH",
        &format!("/subscriptions/{id}/cursors"),
        &[],
        &json!({"to": "end"}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // (Without the tokens, which are fresh on every answer.)
    let offsets = |s: &Server| -> Vec<Value> {
        s.get(&format!("/subscriptions/{id}/cursors")).json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| json!([c["event_type"], c["partition"], c["offset"]]))
            .collect()
    };
    let on_a = offsets(&a);
    assert_ne!(on_a[0][2], json!("BEGIN"));
    seen.push(within("cursors reset on A", || offsets(&b) == on_a));

    // Deleting a subscription on A deletes it on B.
    assert_eq!(a.delete(&format!("/subscriptions/{id}")).status, 204);
    seen.push(within("a subscription deleted on A", || {
        b.get(&format!("/subscriptions/{id}")).status == 404
    }));

    eprintln!("convergence times: {seen:?}");
    for t in seen {
        assert!(t < Duration::from_secs(1), "converged in {t:?}");
    }
}

#[test]
fn racing_creates_on_two_nodes_are_settled_the_same_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(dir.path());
    // The same event type from both nodes at once: one is created, the other refused.
    let (ra, rb) = std::thread::scope(|t| {
        let ha = t.spawn(|| {
            a.post("/event-types", &price_changed("shop.stock", 1))
                .status
        });
        let hb = t.spawn(|| {
            b.post("/event-types", &price_changed("shop.stock", 1))
                .status
        });
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let mut statuses = [ra, rb];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "one create wins, the other is told");
    within("the winner's event type", || {
        a.get("/event-types/shop.stock").status == 200
            && b.get("/event-types/shop.stock").status == 200
    });

    // The same subscription key from both nodes at once: one id, on both.
    let sub = json!({"owning_application": "stock", "event_types": ["shop.stock"]});
    let (ra, rb) = std::thread::scope(|t| {
        let ha = t.spawn(|| a.post("/subscriptions", &sub).json()["id"].clone());
        let hb = t.spawn(|| b.post("/subscriptions", &sub).json()["id"].clone());
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert!(ra.is_string(), "{ra}");
    assert_eq!(ra, rb, "both nodes answer the same subscription");
    within("one subscription on both nodes", || {
        let count = |s: &Server| {
            s.get("/subscriptions?owning_application=stock").json()["items"]
                .as_array()
                .unwrap()
                .len()
        };
        count(&a) == 1 && count(&b) == 1
    });
}
