//! kill -9 of a publishing `sluice serve`: every event whose batch was answered 200 is
//! in the log after a restart, and the event type is too; subscriptions resume from
//! their commits; views from their state, counting every event once.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Node, sluice, spawn_serve, wait_for_listen_address};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

#[test]
fn acknowledged_events_survive_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = spawn_serve(&data);
    let (addr, _lines) = wait_for_listen_address(&mut server);
    let base = format!("http://{addr}");
    let schema =
        json!({"type": "object", "properties": {"seq": {"type": "integer"}}, "required": ["seq"]});
    let et = json!({"name": "crash.orders", "owning_application": "orders", "category": "business",
        "enrichment_strategies": ["metadata_enrichment"], "partition_count": 3,
        "schema": {"type": "json_schema", "schema": schema.to_string()}});
    let r = agent()
        .post(&format!("{base}/event-types"))
        .header("Content-Type", "application/json")
        .send(et.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status(), 201);

    let stop = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    let acked: Vec<u64> = std::thread::scope(|scope| {
        let publishers: Vec<_> = (0..4u64)
            .map(|w| {
                let (base, stop, answered) = (&base, &stop, &answered);
                scope.spawn(move || {
                    let mut acked = Vec::new();
                    for b in 0u64.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let seqs: Vec<u64> = (0..10).map(|i| (w << 32) | (b * 10 + i)).collect();
                        let events: Vec<Value> = seqs
                            .iter()
                            .map(|s| json!({"seq": s, "metadata": {"eid": format!("00000000-0000-4000-8000-{s:012x}"),
                                "occurred_at": "2026-11-22T10:00:00Z"}}))
                            .collect();
                        let sent = agent()
                            .post(&format!("{base}/event-types/crash.orders/events"))
                            .header("Content-Type", "application/json")
                            .send(Value::Array(events).to_string().as_bytes());
                        match sent {
                            Ok(r) if r.status() == 200 => {
                                acked.extend(seqs);
                                answered.fetch_add(10, Ordering::Relaxed);
                            }
                            _ => break, // the server is gone
                        }
                    }
                    acked
                })
            })
            .collect();
        // Kill while publishing is in full swing: after enough answers (not after a
        // fixed time, which a loaded CI machine may not fill), then a little more.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while answered.load(Ordering::Relaxed) < 200 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        publishers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect()
    });
    assert!(
        acked.len() >= 100,
        "the publishers got answers before the kill: {}",
        acked.len()
    );

    // Restart: the event type is there; then read the log directly.
    let mut server = spawn_serve(&data);
    let (addr, _lines) = wait_for_listen_address(&mut server);
    let r = agent()
        .get(&format!("http://{addr}/event-types/crash.orders"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200, "the event type survived");
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait().unwrap();

    let stored: BTreeSet<u64> = sluice_log::testing::stored_records(&data, "crash.orders")
        .into_iter()
        .flatten()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.value.unwrap()).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let lost: Vec<&u64> = acked.iter().filter(|s| !stored.contains(s)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

/// Reads a subscription stream's lines on a thread (ureq undoes the chunking).
fn open_stream(base: &str, sub: &str) -> (String, std::sync::mpsc::Receiver<Value>) {
    let resp = agent()
        .get(&format!(
            "{base}/subscriptions/{sub}/events?batch_limit=5&max_uncommitted_events=1000&batch_flush_timeout=1"
        ))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-nakadi-streamid"]
        .to_str()
        .unwrap()
        .to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in std::io::BufRead::lines(reader).map_while(Result::ok) {
            if tx
                .send(serde_json::from_str::<Value>(&line).unwrap())
                .is_err()
            {
                break;
            }
        }
    });
    (id, rx)
}

fn commit(base: &str, sub: &str, stream: &str, cursor: &Value) -> u16 {
    agent()
        .post(&format!("{base}/subscriptions/{sub}/cursors"))
        .header("Content-Type", "application/json")
        .header("X-Nakadi-StreamId", stream)
        .send(json!({"items": [cursor]}).to_string().as_bytes())
        .unwrap()
        .status()
        .as_u16()
}

fn offset_of(cursor: &Value) -> u64 {
    cursor["offset"].as_str().unwrap()[9..].parse().unwrap()
}

#[test]
fn a_subscription_resumes_from_its_commits_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = spawn_serve(&data);
    let (addr, _lines) = wait_for_listen_address(&mut server);
    let base = format!("http://{addr}");
    let et = json!({"name": "crash.stock", "owning_application": "stock", "category": "undefined",
        "partition_count": 2, "schema": {"type": "json_schema", "schema": "{}"}});
    let post = |path: &str, body: &Value| {
        agent()
            .post(&format!("{base}{path}"))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap()
    };
    assert_eq!(post("/event-types", &et).status(), 201);
    let events: Vec<Value> = (0..200u64).map(|seq| json!({"seq": seq})).collect();
    assert_eq!(
        post("/event-types/crash.stock/events", &Value::Array(events)).status(),
        200
    );
    let mut r = post(
        "/subscriptions",
        &json!({"owning_application": "stock", "event_types": ["crash.stock"], "read_from": "begin"}),
    );
    assert_eq!(r.status(), 201);
    let sub: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let sub = sub["id"].as_str().unwrap().to_string();

    // Read everything; commit only the first half of each partition's batches.
    let (stream, lines) = open_stream(&base, &sub);
    let mut committed = std::collections::BTreeMap::new();
    let mut received = 0;
    while received < 200 {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a batch");
        let Some(batch) = line["events"].as_array() else {
            continue;
        };
        received += batch.len();
        let p = line["cursor"]["partition"].as_str().unwrap().to_string();
        let offset = offset_of(&line["cursor"]);
        if offset < 50 {
            assert_eq!(commit(&base, &sub, &stream, &line["cursor"]), 204);
            committed.insert(p, offset);
        }
    }
    server.kill().unwrap(); // SIGKILL, with uncommitted events out
    server.wait().unwrap();

    let mut server = spawn_serve(&data);
    let (addr, _lines) = wait_for_listen_address(&mut server);
    let base = format!("http://{addr}");
    let mut r = agent()
        .get(&format!("{base}/subscriptions/{sub}/cursors"))
        .call()
        .unwrap();
    let cursors: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    for c in cursors["items"].as_array().unwrap() {
        let p = c["partition"].as_str().unwrap();
        assert_eq!(
            offset_of(c),
            committed[p],
            "partition {p}: the commit survived kill -9"
        );
    }
    // The uncommitted events come again, from just after each commit, all of them.
    let (_stream, lines) = open_stream(&base, &sub);
    let mut next: std::collections::BTreeMap<String, u64> =
        committed.iter().map(|(p, o)| (p.clone(), o + 1)).collect();
    let mut again = 0;
    let expected = 200 - committed.values().map(|o| o + 1).sum::<u64>() as usize;
    while again < expected {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the uncommitted events again");
        let Some(batch) = line["events"].as_array() else {
            continue;
        };
        let p = line["cursor"]["partition"].as_str().unwrap().to_string();
        let last = offset_of(&line["cursor"]);
        let first = last + 1 - batch.len() as u64;
        assert_eq!(
            first, next[&p],
            "partition {p} resumes right after its commit, in order"
        );
        next.insert(p, last + 1);
        again += batch.len();
    }
    assert_eq!(again, expected, "exactly the uncommitted events, no more");
    let _ = server.kill();
    server.wait().unwrap();
}

/// kill -9 of a server whose view writes its state every 100 ms while orders pour in:
/// after the restart the view goes on from its last state and counts every event in
/// the log exactly once (state and offsets were written together).
#[test]
fn a_view_counts_every_event_once_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spawn = || {
        Node(
            sluice()
                .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(&data)
                .env("SLUICE_VIEWS__CHECKPOINT_INTERVAL_MS", "100")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    let mut server = spawn();
    let (addr, _lines) = wait_for_listen_address(&mut server);
    let base = format!("http://{addr}");
    let post = |base: &str, path: &str, body: &Value| {
        agent()
            .post(&format!("{base}{path}"))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
    };
    let et = json!({"name": "crash.order", "owning_application": "shop", "category": "business",
        "enrichment_strategies": ["metadata_enrichment"], "partition_count": 3,
        "schema": {"type": "json_schema", "schema": "{}"}});
    assert_eq!(post(&base, "/event-types", &et).unwrap().status(), 201);
    let view = json!({"sql": "CREATE VIEW per_sku AS SELECT sku, COUNT(*) AS n FROM \"crash.order\" GROUP BY sku"});
    assert_eq!(post(&base, "/views", &view).unwrap().status(), 201);

    let stop = std::sync::atomic::AtomicBool::new(false);
    let acked = std::thread::scope(|t| {
        let publisher = t.spawn(|| {
            let mut acked = 0u64;
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<Value> = (0..50)
                    .map(|_| {
                        seq += 1;
                        json!({"sku": format!("s{}", seq % 7),
                               "metadata": {"eid": format!("00000000-0000-4000-8000-{seq:012x}"),
                                            "occurred_at": "2026-11-23T10:00:00Z"}})
                    })
                    .collect();
                match post(
                    &base,
                    "/event-types/crash.order/events",
                    &Value::Array(batch),
                ) {
                    Ok(r) if r.status() == 200 => acked += 50,
                    _ => break,
                }
            }
            acked
        });
        std::thread::sleep(Duration::from_millis(1500));
        server.kill().unwrap(); // SIGKILL, mid-publish and mid-checkpoint maybe
        server.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        publisher.join().unwrap()
    });
    assert!(acked > 0);

    let mut server = spawn();
    let (addr, _lines) = wait_for_listen_address(&mut server);
    let base = format!("http://{addr}");
    let get = |path: &str| -> Value {
        let mut r = agent().get(&format!("{base}{path}")).call().unwrap();
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
    };
    let in_log: u64 = get("/event-types/crash.order/partitions")
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let newest = p["newest_available_offset"].as_str().unwrap();
            if newest == "BEGIN" {
                0
            } else {
                newest[9..].parse::<u64>().unwrap() + 1
            }
        })
        .sum();
    assert!(
        in_log >= acked,
        "acknowledged events were lost: {in_log} < {acked}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let st = get("/views/per_sku");
        if st["status"] == "running" {
            break st;
        }
        assert!(Instant::now() < deadline, "{st}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let counted: u64 = get("/views/per_sku/rows?limit=100")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n"].as_u64().unwrap())
        .sum();
    assert_eq!(
        counted, in_log,
        "every event in the log counted once: {status}"
    );
    assert!(
        status["loaded_from"]
            .as_str()
            .is_some_and(|p| p.ends_with(".state")),
        "it went on from its state: {status}"
    );
    let replayed = status["events_applied"].as_u64().unwrap();
    assert!(replayed < in_log, "only the tail was replayed: {status}");
    eprintln!(
        "kill -9: {acked} acknowledged, {in_log} in the log, {counted} counted, {replayed} replayed after the restart"
    );
    let _ = server.kill();
    server.wait().unwrap();
}
