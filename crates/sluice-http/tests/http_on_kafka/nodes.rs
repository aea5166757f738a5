//! Two Sluice nodes on one Kafka cluster form one bus: what one node is told, the
//! other knows within a second; races between them are settled the same on both.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::streams::{Stream, events};
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

/// Stream owners per partition as a node reports them (`-` for none).
fn owners(s: &Server, id: &str) -> Vec<String> {
    let stats = s.get(&format!("/subscriptions/{id}/stats")).json();
    stats["items"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["stream_id"].as_str().unwrap_or("-").to_string())
        .collect()
}

fn commit(s: &Server, id: &str, stream: &str, cursor: &Value) -> u16 {
    s.json_with(
        "POST",
        &format!("/subscriptions/{id}/cursors"),
        &[("X-Nakadi-StreamId", stream)],
        &json!({"items": [cursor]}),
    )
    .status
}

/// Reads every batch that comes within `quiet`, committing each through `via`;
/// returns the partitions the events came from and how many there were.
fn drain(stream: &Stream, via: &Server, id: &str, quiet: Duration) -> (BTreeSet<String>, usize) {
    let (mut parts, mut n) = (BTreeSet::new(), 0);
    while let Some(batch) = stream.next_batch(quiet) {
        n += events(&batch).len();
        parts.insert(batch["cursor"]["partition"].as_str().unwrap().to_string());
        assert_eq!(commit(via, id, &stream.id, &batch["cursor"]), 204);
    }
    (parts, n)
}

fn publish(s: &Server, seqs: std::ops::Range<u64>) {
    let batch: Vec<Value> = seqs.map(|i| price_event(&format!("sku-{i}"), i)).collect();
    let r = s.post("/event-types/shop.price/events", &Value::Array(batch));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn streams_on_two_nodes_share_a_subscription_without_sharing_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(dir.path());
    assert_eq!(
        a.post("/event-types", &price_changed("shop.price", 4))
            .status,
        201
    );
    publish(&a, 0..40);
    let sub = json!({"owning_application": "search", "event_types": ["shop.price"],
                     "read_from": "begin"});
    let id = a.post("/subscriptions", &sub).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    within("the subscription on B", || {
        b.get(&format!("/subscriptions/{id}")).status == 200
    });
    let path = format!("/subscriptions/{id}/events?batch_flush_timeout=1&commit_timeout=5");

    // One stream, on A: every partition, as both nodes see it.
    let on_a = Stream::open(a.addr, &path, None);
    assert_eq!(on_a.status, 200, "{}", on_a.body);
    let (parts, n) = drain(&on_a, &a, &id, Duration::from_millis(2500));
    assert_eq!((parts.len(), n), (4, 40));
    within("A's stream owning everything, seen on B", || {
        owners(&b, &id) == vec![on_a.id.clone(); 4]
    });

    // A second stream, on B: the partitions split 2 / 2, the same on both nodes.
    let on_b = Stream::open(b.addr, &path, None);
    assert_eq!(on_b.status, 200, "{}", on_b.body);
    let split = |s: &Server| {
        let o = owners(s, &id);
        o.iter().filter(|x| **x == on_a.id).count() == 2
            && o.iter().filter(|x| **x == on_b.id).count() == 2
    };
    within("a 2 / 2 split on A", || split(&a));
    within("a 2 / 2 split on B", || split(&b));
    assert_eq!(owners(&a, &id), owners(&b, &id));

    // New events reach the stream that holds their partition, and only that one;
    // B's stream commits through A.
    publish(&b, 40..80);
    let (parts_a, n_a) = drain(&on_a, &a, &id, Duration::from_millis(2500));
    let (parts_b, n_b) = drain(&on_b, &a, &id, Duration::from_millis(2500));
    assert_eq!(n_a + n_b, 40, "every event once");
    assert!(parts_a.is_disjoint(&parts_b), "{parts_a:?} / {parts_b:?}");
    assert_eq!(parts_a.len() + parts_b.len(), 4);
    let stats = a.get(&format!("/subscriptions/{id}/stats")).json();
    for p in stats["items"][0]["partitions"].as_array().unwrap() {
        assert_eq!(p["unconsumed_events"], 0, "{stats}");
    }

    // B stops: its partitions come back to A's stream.
    drop(on_b);
    b.stop();
    within("A's stream owning everything again", || {
        owners(&a, &id) == vec![on_a.id.clone(); 4]
    });
    publish(&a, 80..120);
    let (parts, n) = drain(&on_a, &a, &id, Duration::from_millis(2500));
    assert_eq!((parts.len(), n), (4, 40));
}

#[test]
fn a_reset_on_one_node_ends_the_streams_of_every_node_and_late_commits_do_not_undo_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(dir.path());
    assert_eq!(
        a.post("/event-types", &price_changed("shop.price", 1))
            .status,
        201
    );
    publish(&a, 0..10);
    let sub = json!({"owning_application": "search", "event_types": ["shop.price"],
                     "read_from": "begin"});
    let id = a.post("/subscriptions", &sub).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    within("the subscription on B", || {
        b.get(&format!("/subscriptions/{id}")).status == 200
    });
    let path = format!(
        "/subscriptions/{id}/events?batch_flush_timeout=1&batch_limit=10&commit_timeout=10"
    );
    let on_b = Stream::open(b.addr, &path, None);
    assert_eq!(on_b.status, 200, "{}", on_b.body);
    let batch = on_b.next_batch(Duration::from_secs(10)).unwrap();
    assert_eq!(events(&batch).len(), 10);

    // Reset on A: B's stream ends, as a stream on A would.
    let reset_at = Instant::now();
    let r = a.json_with(
        "PATCH",
        &format!("/subscriptions/{id}/cursors"),
        &[],
        &json!({"to": "begin"}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let rest = on_b.rest(Duration::from_secs(10));
    let ended = reset_at.elapsed();
    assert!(
        ended < Duration::from_secs(2),
        "B's stream ended after {ended:?}"
    );
    let last = rest.last().expect("the stream says why it ends");
    assert!(
        last["info"]["debug"].as_str().unwrap().contains("reset"),
        "{last}"
    );
    eprintln!("B's stream ended {ended:?} after the reset on A");

    // Its commit comes late, through either node: refused, the reset stands.
    assert_eq!(commit(&b, &id, &on_b.id, &batch["cursor"]), 422);
    assert_eq!(commit(&a, &id, &on_b.id, &batch["cursor"]), 422);
    let begin = |s: &Server| {
        s.get(&format!("/subscriptions/{id}/cursors")).json()["items"][0]["offset"] == "BEGIN"
    };
    within("the reset on both nodes", || begin(&a) && begin(&b));
    std::thread::sleep(Duration::from_millis(500));
    assert!(begin(&a) && begin(&b), "still reset");

    // A new stream, on either node, reads every event again.
    let on_a = Stream::open(a.addr, &path, None);
    assert_eq!(on_a.status, 200, "{}", on_a.body);
    let again = on_a.next_batch(Duration::from_secs(10)).unwrap();
    assert_eq!(events(&again).len(), 10);
}

/// What a topic deleted behind Sluice's back leaves: an event type whose topic Kafka
/// does not have. (Tansu cannot delete one topic - its DeleteTopics removes them all,
/// docs/design/kafka.md - so the definition is written to the registry topic directly,
/// as another tool would, for a topic never created.)
#[test]
fn an_event_type_whose_topic_is_gone_fails_alone_with_a_clear_error() {
    use sluice_log::{Log, PartitionId, Record, TopicName};

    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(dir.path());
    assert_eq!(
        a.post("/event-types", &price_changed("shop.price", 1))
            .status,
        201
    );
    let mut ghost = a.get("/event-types/shop.price").json();
    ghost["name"] = json!("shop.ghost");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = sluice_kafka::KafkaConfig::new(crate::broker_for(dir.path()));
        let log = sluice_kafka::KafkaLog::connect(config, Duration::from_secs(10))
            .await
            .unwrap();
        let registry = TopicName::new("__sluice_event_types").unwrap();
        let record = Record::keyed(
            bytes::Bytes::from_static(b"shop.ghost"),
            bytes::Bytes::from(ghost.to_string()),
        );
        log.append(&registry, PartitionId(0), vec![record])
            .await
            .unwrap();
    });
    within("the ghost event type", || {
        a.get("/event-types/shop.ghost").status == 200
    });

    // Publishing to it fails at once with a Problem naming what happened.
    let event = Value::Array(vec![price_event("sku-1", 1)]);
    let started = Instant::now();
    let r = a.post("/event-types/shop.ghost/events", &event);
    let took = started.elapsed();
    let detail = r.problem(500);
    assert!(
        detail.contains("shop.ghost") && detail.contains("deleted outside Sluice"),
        "{detail}"
    );
    assert!(took < Duration::from_secs(2), "the error took {took:?}");
    eprintln!("publishing to an event type without a topic: 500 after {took:?}");
    for path in [
        "/event-types/shop.ghost/partitions",
        "/event-types/shop.ghost/partitions/0",
    ] {
        assert!(a.get(path).problem(500).contains("deleted outside Sluice"));
    }
    let sub = json!({"owning_application": "x", "event_types": ["shop.ghost"]});
    assert!(
        a.post("/subscriptions", &sub)
            .problem(500)
            .contains("shop.ghost")
    );

    // The other event types do not notice.
    publish(&a, 0..3);
    let sub = json!({"owning_application": "x", "event_types": ["shop.price"],
                     "read_from": "begin"});
    let id = a.post("/subscriptions", &sub).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stream = Stream::open(
        a.addr,
        &format!("/subscriptions/{id}/events?batch_flush_timeout=1&batch_limit=3"),
        None,
    );
    assert_eq!(
        events(&stream.next_batch(Duration::from_secs(10)).unwrap()).len(),
        3
    );
    drop(stream);

    // A node that starts recreates the topic (empty): publishing works again.
    let b = Server::start(dir.path());
    let r = b.post("/event-types/shop.ghost/events", &event);
    assert_eq!(r.status, 200, "{}", r.body);
}
