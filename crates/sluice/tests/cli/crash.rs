//! kill -9 of a publishing `sluice serve`: every event whose batch was answered 200 is
//! in the log after a restart, and the event type is too.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{spawn_serve, wait_for_listen_address};

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
