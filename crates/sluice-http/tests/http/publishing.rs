//! `POST /event-types/{name}/events`: the 200 / 422 contract, enrichment, ordering,
//! durability across restarts, concurrency, bad input.

use serde_json::{Value, json};

use crate::{Server, price_changed, price_event, stored_events, uuid};

fn publish(s: &Server, name: &str, events: &[Value]) -> crate::Reply {
    s.post(
        &format!("/event-types/{name}/events"),
        &Value::Array(events.to_vec()),
    )
}

#[test]
fn a_valid_batch_is_stored_enriched_and_in_order_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    assert_eq!(
        s.post("/event-types", &price_changed("shop.price", 4))
            .status,
        201
    );
    let events: Vec<Value> = (0..40)
        .map(|i| price_event(&format!("sku-{}", i % 5), i))
        .collect();
    let r = s.agent_post_with_flow(
        "/event-types/shop.price/events",
        &Value::Array(events),
        "flow-42",
    );
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    s.stop();

    let stored = stored_events(dir.path(), "shop.price");
    assert_eq!(stored.iter().map(Vec::len).sum::<usize>(), 40);
    for (p, events) in stored.iter().enumerate() {
        for e in events {
            let md = &e["metadata"];
            assert_eq!(md["event_type"], "shop.price");
            assert_eq!(md["partition"], p.to_string());
            assert_eq!(md["version"], "1.0.0");
            assert_eq!(md["flow_id"], "flow-42");
            assert_eq!(md["published_by"], "unauthenticated", "no principal header");
            assert!(md["received_at"].as_str().is_some_and(|t| t.ends_with('Z')));
        }
        // One sku lives in one partition, in the order it was sent.
        for sku in 0..5 {
            let seqs: Vec<u64> = events
                .iter()
                .filter(|e| e["sku"] == format!("sku-{sku}"))
                .map(|e| e["seq"].as_u64().unwrap())
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "partition {p} sku-{sku}: {seqs:?}"
            );
        }
    }
    for sku in 0..5 {
        let homes = stored
            .iter()
            .filter(|events| events.iter().any(|e| e["sku"] == format!("sku-{sku}")))
            .count();
        assert_eq!(homes, 1, "sku-{sku} is in exactly one partition");
    }
}

#[test]
fn published_by_names_the_caller_and_only_the_server_sets_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    assert_eq!(
        s.post("/event-types", &price_changed("shop.price", 1))
            .status,
        201
    );
    let path = "/event-types/shop.price/events";
    let r = s.post_as(path, &json!([price_event("a", 1)]), "jane");
    assert_eq!(r.status, 200, "{}", r.body);
    let mut forged = price_event("b", 2);
    forged["metadata"]["published_by"] = json!("mallory");
    let r = s.post_as(path, &json!([forged]), "jane");
    assert_eq!(
        r.status, 422,
        "a producer may not claim a publisher: {}",
        r.body
    );
    s.stop();
    let stored = stored_events(dir.path(), "shop.price");
    let by: Vec<&Value> = stored[0]
        .iter()
        .map(|e| &e["metadata"]["published_by"])
        .collect();
    assert_eq!(by, [&json!("jane")]);
}

#[test]
fn one_invalid_event_rejects_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.post("/event-types", &price_changed("shop.price", 2));
    let mut bad = price_event("sku-1", 1);
    bad["price"]["currency"] = json!("DOGE");
    let mut no_eid = price_event("sku-2", 2);
    no_eid["metadata"].as_object_mut().unwrap().remove("eid");
    let batch = vec![
        price_event("sku-0", 0),
        bad,
        no_eid,
        price_event("sku-3", 3),
    ];
    let r = publish(&s, "shop.price", &batch);
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.content_type, "application/json");
    let items = r.json();
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["publishing_status"], "aborted");
    assert_eq!(items[0]["eid"], uuid(0));
    assert_eq!(items[1]["publishing_status"], "failed");
    assert_eq!(items[1]["step"], "validating");
    assert!(
        items[1]["detail"]
            .as_str()
            .unwrap()
            .contains("/price/currency"),
        "{}",
        items[1]
    );
    assert_eq!(items[2]["publishing_status"], "failed");
    assert!(
        items[2]["detail"].as_str().unwrap().contains("eid"),
        "{}",
        items[2]
    );
    assert_eq!(items[3]["publishing_status"], "aborted");

    // Server-set metadata and the size limit are validation failures too.
    let mut forged = price_event("sku-9", 9);
    forged["metadata"]["received_at"] = json!("2020-01-01T00:00:00Z");
    assert_eq!(publish(&s, "shop.price", &[forged]).status, 422);
    let mut huge = price_event("sku-9", 10);
    huge["sku"] = json!("x".repeat(1_100_000));
    let r = publish(&s, "shop.price", &[huge]);
    assert_eq!(r.status, 422);
    assert!(
        r.json()[0]["detail"]
            .as_str()
            .unwrap()
            .contains("larger than the limit")
    );
    s.stop();
    let stored = stored_events(dir.path(), "shop.price");
    assert!(stored.iter().all(Vec::is_empty), "nothing was written");
}

#[test]
fn malformed_requests_get_problems() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.post("/event-types", &price_changed("shop.price", 1));
    let path = "/event-types/shop.price/events";
    s.send("POST", path, "application/json", b"[{\"sku\": ".to_vec())
        .problem(400);
    s.send(
        "POST",
        path,
        "application/json",
        b"{\"not\": \"an array\"}".to_vec(),
    )
    .problem(400);
    s.send(
        "POST",
        path,
        "application/json",
        vec![b'[', 0xc3, 0x28, b']'],
    )
    .problem(400);
    s.send("POST", path, "text/plain", b"[]".to_vec())
        .problem(415);
    let deep = format!("[{}{}]", "[".repeat(10_000), "]".repeat(10_000));
    s.send("POST", path, "application/json", deep.into_bytes())
        .problem(400);
    publish(&s, "no.such.type", &[price_event("a", 1)]).problem(404);
    assert_eq!(
        publish(&s, "shop.price", &[]).status,
        200,
        "an empty batch is fine"
    );
}

#[test]
fn events_survive_a_restart_and_publishing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.post("/event-types", &price_changed("shop.price", 3));
    let first: Vec<Value> = (0..30)
        .map(|i| price_event(&format!("sku-{}", i % 7), i))
        .collect();
    assert_eq!(publish(&s, "shop.price", &first).status, 200);
    s.stop();
    let s = Server::start(dir.path());
    let second: Vec<Value> = (30..60)
        .map(|i| price_event(&format!("sku-{}", i % 7), i))
        .collect();
    assert_eq!(publish(&s, "shop.price", &second).status, 200);
    s.stop();
    let stored = stored_events(dir.path(), "shop.price");
    let mut seqs: Vec<u64> = stored
        .iter()
        .flatten()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..60).collect::<Vec<_>>());
}

#[test]
fn concurrent_publishers_lose_nothing_and_keep_order_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.post("/event-types", &price_changed("shop.price", 4));
    let threads = 8;
    let batches = 25;
    let per_batch = 10u64;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let s = &s;
            scope.spawn(move || {
                for b in 0..batches {
                    let events: Vec<Value> = (0..per_batch)
                        .map(|i| {
                            let seq = (t * batches + b) * per_batch + i;
                            let mut e = price_event(&format!("writer-{t}"), seq);
                            e["seq"] = json!(b * per_batch + i);
                            e
                        })
                        .collect();
                    let r = publish(s, "shop.price", &events);
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            });
        }
    });
    s.stop();
    let stored = stored_events(dir.path(), "shop.price");
    assert_eq!(
        stored.iter().map(Vec::len).sum::<usize>() as u64,
        threads * batches * per_batch
    );
    for t in 0..threads {
        let sku = format!("writer-{t}");
        let seqs: Vec<u64> = stored
            .iter()
            .flatten()
            .filter(|e| e["sku"] == sku)
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (0..batches * per_batch).collect::<Vec<_>>(),
            "{sku} in order"
        );
    }
}

#[test]
fn data_change_events_follow_the_data_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let stock = json!({
        "name": "shop.stock",
        "owning_application": "inventory",
        "category": "data",
        "enrichment_strategies": ["metadata_enrichment"],
        "partition_strategy": "hash",
        "partition_key_fields": ["sku"],
        "schema": {"type": "json_schema", "schema": json!({
            "type": "object",
            "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
            "required": ["sku", "quantity"]
        }).to_string()}
    });
    assert_eq!(s.post("/event-types", &stock).status, 201);
    let ok = json!({"data_type": "stock", "data_op": "U", "data": {"sku": "a", "quantity": 3},
        "metadata": {"eid": uuid(1), "occurred_at": "2026-11-22T10:00:00Z"}});
    assert_eq!(
        publish(&s, "shop.stock", std::slice::from_ref(&ok)).status,
        200
    );
    let mut bad_op = ok.clone();
    bad_op["data_op"] = json!("X");
    assert_eq!(publish(&s, "shop.stock", &[bad_op]).status, 422);
    let mut extra = ok.clone();
    extra["unexpected"] = json!(true);
    assert_eq!(
        publish(&s, "shop.stock", &[extra]).status,
        422,
        "the data envelope is closed"
    );
    let mut wrong_type = ok;
    wrong_type["metadata"]["event_type"] = json!("shop.other");
    let r = publish(&s, "shop.stock", &[wrong_type]);
    assert_eq!(r.status, 422);
    assert!(
        r.json()[0]["detail"]
            .as_str()
            .unwrap()
            .contains("shop.other")
    );
}

#[test]
fn gzip_and_zstd_bodies_are_accepted() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.post("/event-types", &price_changed("shop.price", 1));
    let events = |from: u64| {
        Value::Array((from..from + 10).map(|i| price_event("sku", i)).collect()).to_string()
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(events(0).as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let zstd = ruzstd::encoding::compress_to_vec(
        events(10).as_bytes(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let path = "/event-types/shop.price/events";
    assert_eq!(s.send_encoded(path, "gzip", gz).status, 200);
    assert_eq!(s.send_encoded(path, "zstd", zstd).status, 200);
    s.send_encoded(path, "gzip", b"not gzip".to_vec())
        .problem(400);
    s.send_encoded(path, "br", b"whatever".to_vec())
        .problem(415);
    // A small body that inflates past the batch limit is refused, not inflated.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b' '; 60_000_000]).unwrap();
    s.send_encoded(path, "gzip", bomb.finish().unwrap())
        .problem(413);
    s.stop();
    let stored = stored_events(dir.path(), "shop.price");
    assert_eq!(stored[0].len(), 20);
}

#[test]
fn retries_within_the_window_are_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.post("/event-types", &price_changed("shop.price", 3));
    let batch: Vec<Value> = (0..20)
        .map(|i| price_event(&format!("sku-{}", i % 4), i))
        .collect();
    assert_eq!(publish(&s, "shop.price", &batch).status, 200);
    assert_eq!(
        publish(&s, "shop.price", &batch).status,
        200,
        "a retry is answered as submitted"
    );
    // A batch repeating an eid inside itself, and mixing old and new events.
    let mut mixed: Vec<Value> = (15..25)
        .map(|i| price_event(&format!("sku-{}", i % 4), i))
        .collect();
    mixed.push(price_event("sku-1", 24));
    assert_eq!(publish(&s, "shop.price", &mixed).status, 200);
    s.stop();
    // After a restart the window is rebuilt from the log.
    let s = Server::start(dir.path());
    assert_eq!(publish(&s, "shop.price", &batch).status, 200);
    s.stop();
    let stored = stored_events(dir.path(), "shop.price");
    let mut seqs: Vec<u64> = stored
        .iter()
        .flatten()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..25).collect::<Vec<_>>(), "every event once");
}
