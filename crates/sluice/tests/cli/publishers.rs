//! Two `sluice serve` processes on one Kafka cluster (a real Tansu broker) run the same
//! view: its changes reach the derived event type once, not once per node, and when
//! the node publishing them is killed with SIGKILL the other one takes over, so
//! that what the derived event type holds is again exactly the view's rows.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_kafka::testing::Broker;
use sluice_kafka::{KafkaConfig, KafkaLog};
use sluice_log::{PartitionId, TopicName};

use crate::Node;
use crate::kafka::{agent, post, serve_on_kafka};
use crate::wait_for_listen_address;

/// The lease of the test nodes: a takeover comes ~1.5 s after the publisher died.
const LEASE_MS: u64 = 1500;

struct Running {
    node: Node,
    url: String,
}

fn start(data: &Path, bootstrap: &str) -> Running {
    let lease = format!("views.publisher_lease_ms={LEASE_MS}");
    let mut node = serve_on_kafka(data, bootstrap, &[&lease]);
    let (addr, lines) = wait_for_listen_address(&mut node);
    // Keep reading its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Running {
        node,
        url: format!("http://{addr}"),
    }
}

fn get(url: &str) -> (u16, Value) {
    let mut r = agent().get(url).call().unwrap();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn until(what: &str, limit: Duration, check: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Publishes one data change event per (sku, amount); `None` deletes the sku.
fn prices(url: &str, changes: &[(u64, Option<u64>)], seq: &mut u64) {
    let events: Vec<Value> = changes
        .iter()
        .map(|(sku, amount)| {
            *seq += 1;
            let (op, data) = match amount {
                Some(a) => ("U", json!({"sku": format!("sku-{sku:03}"), "amount": a})),
                None => ("D", json!({"sku": format!("sku-{sku:03}")})),
            };
            json!({"metadata": {"eid": format!("00000000-0000-4000-8000-{:012x}", *seq),
                "occurred_at": "2026-11-23T10:00:00Z"},
                "data_type": "shop.price", "data_op": op, "data": data})
        })
        .collect();
    let (status, _, body) = post(
        &format!("{url}/event-types/shop.price/events"),
        &Value::Array(events),
    );
    assert_eq!(status, 200, "{body}");
}

/// The view's rows on a node, by key.
fn rows(url: &str) -> BTreeMap<String, Value> {
    let (status, body) = get(&format!("{url}/views/prices/rows?limit=10000"));
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["sku"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// Every event of the derived event type, in order per partition: (key, op, data).
fn derived(bootstrap: &str) -> Vec<(String, String, Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = KafkaLog::connect(KafkaConfig::new(bootstrap), Duration::from_secs(20))
            .await
            .unwrap();
        let topic = TopicName::new("shop.prices").unwrap();
        let mut out = Vec::new();
        // Every partition the event type has.
        for p in 0.. {
            let Ok(records) =
                sluice_log::testing::read_partition(&log, &topic, PartitionId(p)).await
            else {
                break;
            };
            for r in records {
                let v: Value = serde_json::from_slice(&r.value.unwrap()).unwrap();
                out.push((
                    v["data"]["sku"].as_str().unwrap().to_string(),
                    v["data_op"].as_str().unwrap().to_string(),
                    v["data"].clone(),
                ));
            }
        }
        out
    })
}

/// What a consumer of the derived event type holds: the last event per key.
fn told(events: &[(String, String, Value)]) -> BTreeMap<String, Value> {
    let mut told = BTreeMap::new();
    for (k, op, data) in events {
        if op == "D" {
            told.remove(k);
        } else {
            told.insert(k.clone(), data.clone());
        }
    }
    told
}

/// Which of the nodes says it publishes the view.
fn publisher(nodes: &[&Running]) -> Option<usize> {
    let mut holders = nodes.iter().enumerate().filter(|(_, n)| {
        let (_, v) = get(&format!("{}/views/prices", n.url));
        v["publisher"]["this_node"] == true && v["publisher"]["publishing"] == true
    });
    let first = holders.next().map(|(i, _)| i);
    assert!(holders.next().is_none(), "two nodes publish at once");
    first
}

#[test]
fn a_view_on_two_nodes_publishes_once_and_the_survivor_takes_over_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_on(&dir.path().join("broker"));
    let a = start(&dir.path().join("a"), &broker.bootstrap);
    let b = start(&dir.path().join("b"), &broker.bootstrap);

    let schema = json!({"type": "object", "properties": {"sku": {"type": "string"}, "amount": {}}, "required": ["sku"]});
    let et = json!({"name": "shop.price", "owning_application": "pricing", "category": "data",
        "enrichment_strategies": ["metadata_enrichment"], "partition_strategy": "hash",
        "partition_key_fields": ["sku"], "partition_count": 2,
        "schema": {"type": "json_schema", "schema": schema.to_string()}});
    let (status, _, body) = post(&format!("{}/event-types", a.url), &et);
    assert_eq!(status, 201, "{body}");
    let view = json!({"sql": r#"CREATE VIEW prices AS SELECT sku, amount FROM "shop.price""#,
        "publish_as": "shop.prices"});
    let (status, _, body) = post(&format!("{}/views", a.url), &view);
    assert_eq!(status, 201, "{body}");
    until("the view running on B", Duration::from_secs(10), || {
        get(&format!("{}/views/prices", b.url)).1["status"] == "running"
    });

    // The lease of a new view goes to a node at once (nobody held it).
    until("one node publishes", Duration::from_secs(10), || {
        publisher(&[&a, &b]).is_some()
    });

    // 100 skus, then 100 changes of their prices, through both nodes.
    let mut seq = 0;
    let all: Vec<u64> = (0..100).collect();
    for (step, through) in [(100, &a), (200, &b)] {
        let changes: Vec<(u64, Option<u64>)> = all.iter().map(|s| (*s, Some(step + s))).collect();
        prices(&through.url, &changes, &mut seq);
        for n in [&a, &b] {
            until(
                "both nodes apply every change",
                Duration::from_secs(10),
                || {
                    rows(&n.url).get("sku-099").map(|r| r["amount"].clone())
                        == Some(json!(step + 99))
                },
            );
        }
    }
    until(
        "the derived event type holds the view",
        Duration::from_secs(10),
        || told(&derived(&broker.bootstrap)) == rows(&a.url),
    );
    // Each change once, not once per node: a C then a U per sku.
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    let events = derived(&broker.bootstrap);
    let ops = |op: &str| events.iter().filter(|(_, o, _)| o == op).count();
    assert_eq!(
        (ops("C"), ops("U"), events.len()),
        (100, 100, 200),
        "events for 200 changes of 100 skus on two nodes"
    );
    let before_kill = events.len();

    // SIGKILL the publisher; changes go on through the other node.
    let holder = publisher(&[&a, &b]).expect("one node publishes");
    let (mut dead, survivor) = if holder == 0 { (a, b) } else { (b, a) };
    dead.node.kill().unwrap();
    dead.node.wait().unwrap();
    let killed = Instant::now();
    let third: Vec<(u64, Option<u64>)> = all
        .iter()
        .map(|s| (*s, if s % 10 == 0 { None } else { Some(300 + s) }))
        .collect();
    prices(&survivor.url, &third, &mut seq);
    until(
        "the survivor applies the changes",
        Duration::from_secs(10),
        || rows(&survivor.url).len() == 90,
    );
    until("the survivor publishes", Duration::from_secs(15), || {
        publisher(&[&survivor]).is_some()
    });
    until(
        "consumers hold the survivor's rows",
        Duration::from_secs(15),
        || told(&derived(&broker.bootstrap)) == rows(&survivor.url),
    );
    let took = killed.elapsed();
    let (_, status) = get(&format!("{}/views/prices", survivor.url));
    assert!(
        status["publisher"]["epoch"].as_u64().unwrap() >= 2,
        "{status}"
    );
    // The takeover published the difference: 90 updates and 10 deletes.
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    let events = derived(&broker.bootstrap);
    let since = events.len() - before_kill;
    assert_eq!(since, 100, "events after the kill: {since}");
    let deletes = events.iter().filter(|(_, op, _)| op == "D").count();
    assert_eq!(deletes, 10, "deletes published");
    eprintln!(
        "events before the kill {before_kill}, after {since}; consumers held the survivor's rows {} ms after the kill",
        took.as_millis()
    );

    // A clean stop hands the lease over at once: a third node takes over from the
    // survivor stopped with SIGTERM, well before a lease term.
    let third = start(&dir.path().join("c"), &broker.bootstrap);
    until(
        "the view running on the third node",
        Duration::from_secs(15),
        || rows(&third.url).len() == 90,
    );
    let mut survivor = survivor;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &survivor.node.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let stopped = Instant::now();
    let handed = until("the third node publishes", Duration::from_secs(10), || {
        publisher(&[&third]).is_some()
    });
    assert!(survivor.node.wait().unwrap().success(), "a clean stop");
    assert!(
        handed < Duration::from_millis(LEASE_MS),
        "the lease came {handed:?} after a clean stop, not at once"
    );
    let fourth: Vec<(u64, Option<u64>)> = (1..10).map(|s| (s, Some(400 + s))).collect();
    prices(&third.url, &fourth, &mut seq);
    until(
        "consumers hold the third node's rows",
        Duration::from_secs(10),
        || {
            let rows = rows(&third.url);
            rows["sku-009"]["amount"] == 409 && told(&derived(&broker.bootstrap)) == rows
        },
    );
    eprintln!(
        "after a clean stop the third node published {} ms later",
        stopped.elapsed().as_millis()
    );
}
