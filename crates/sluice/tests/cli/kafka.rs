//! `sluice serve --storage kafka` when Kafka is not there: at start (it waits, with
//! backoff, or gives up clearly), and under load (publishes fail with 503 Problems,
//! nothing acknowledged is lost, and it recovers when the broker is back). The broker
//! is a real Tansu process, killed with SIGKILL.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_kafka::testing::Broker;
use sluice_kafka::{KafkaConfig, KafkaLog};
use sluice_log::{PartitionId, TopicName};

use crate::process::stderr_lines;
use crate::{Node, wait_for_listen_address};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve_cmd(data: &Path, bootstrap: &str, settings: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for s in settings {
        cmd.args(["--set", s]);
    }
    cmd.args([
        "serve",
        "--storage",
        "kafka",
        "--kafka-bootstrap",
        bootstrap,
    ])
    .args(["--listen", "127.0.0.1:0", "--data-dir"])
    .arg(data)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

pub(crate) fn serve_on_kafka(data: &Path, bootstrap: &str, settings: &[&str]) -> Node {
    Node(serve_cmd(data, bootstrap, settings).spawn().unwrap())
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

pub(crate) fn post(url: &str, body: &Value) -> (u16, String, String) {
    match agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
    {
        Ok(mut r) => {
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (
                r.status().as_u16(),
                ct,
                r.body_mut().read_to_string().unwrap_or_default(),
            )
        }
        Err(e) => (0, String::new(), e.to_string()),
    }
}

fn orders_type() -> Value {
    let schema =
        json!({"type": "object", "properties": {"seq": {"type": "integer"}}, "required": ["seq"]});
    json!({"name": "shop.orders", "owning_application": "orders", "category": "business",
        "enrichment_strategies": ["metadata_enrichment"], "partition_count": 2,
        "schema": {"type": "json_schema", "schema": schema.to_string()}})
}

fn batch(seqs: &[u64]) -> Value {
    Value::Array(
        seqs.iter()
            .map(|s| {
                json!({"seq": s, "metadata": {"eid": format!("00000000-0000-4000-8000-{s:012x}"),
                "occurred_at": "2026-11-22T10:00:00Z"}})
            })
            .collect(),
    )
}

#[test]
fn serve_waits_for_kafka_at_start_and_serves_once_it_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let mut server = serve_on_kafka(&dir.path().join("data"), &bootstrap, &[]);
    let lines = stderr_lines(&mut server);
    let said = |what: &str, within: Duration| {
        let deadline = Instant::now() + within;
        while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(what) {
                return line;
            }
        }
        panic!("sluice serve never said {what:?}");
    };
    let waiting = said("Kafka is not reachable yet", Duration::from_secs(20));
    assert!(waiting.contains(&bootstrap), "{waiting}");
    let _broker = Broker::start_at(&dir.path().join("broker"), port);
    // The broker takes seconds to start, more on a loaded 2-core machine (a CI run saw
    // over 30 s once); "never" is what this checks.
    let serving = said("sluice is serving", Duration::from_secs(90));
    let addr = serving
        .split("listen=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let (status, _, body) = post(&format!("http://{addr}/event-types"), &orders_type());
    assert_eq!(status, 201, "{body}");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn serve_gives_up_clearly_when_kafka_never_comes() {
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = serve_cmd(
        &dir.path().join("data"),
        &bootstrap,
        &["kafka.connect_timeout_ms=2000"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("gave up reaching Kafka at {bootstrap}")),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn publishes_fail_with_503_while_kafka_is_gone_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = dir.path().join("broker");
    let mut broker = Broker::start_on(&broker_dir);
    let port = broker.port();
    let mut server = serve_on_kafka(
        &dir.path().join("data"),
        &broker.bootstrap,
        &["kafka.delivery_timeout_ms=3000"],
    );
    let (addr, lines) = wait_for_listen_address(&mut server.0);
    let said = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    std::thread::spawn({
        let said = said.clone();
        move || {
            while let Ok(line) = lines.recv() {
                said.lock().unwrap().push(line);
            }
        }
    });
    let server_said = || {
        let all = said.lock().unwrap();
        all[all.len().saturating_sub(20)..].join("\n")
    };
    let base = format!("http://{addr}");
    let (status, _, body) = post(&format!("{base}/event-types"), &orders_type());
    assert_eq!(status, 201, "{body}");

    let stop = AtomicBool::new(false);
    let acked_count = AtomicUsize::new(0);
    let problems = Arc::new(failures::Problems::default());
    let acked: Vec<u64> = std::thread::scope(|scope| {
        // However this ends (a failed assertion too), the publishers stop.
        let _stop = StopOnDrop(&stop);
        let publishers: Vec<_> = (0..2u64)
            .map(|w| {
                let (base, stop, acked_count, problems) = (&base, &stop, &acked_count, &problems);
                scope.spawn(move || {
                    let mut acked = Vec::new();
                    for b in 0u64.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let seqs: Vec<u64> = (0..10).map(|i| (w << 32) | (b * 10 + i)).collect();
                        let url = format!("{base}/event-types/shop.orders/events");
                        let (status, ct, body) = post(&url, &batch(&seqs));
                        if status == 200 {
                            acked.extend(seqs);
                            acked_count.fetch_add(10, Ordering::Relaxed);
                        } else if status == 207 {
                            // Some partitions written, some not: what was submitted
                            // is acknowledged too.
                            let items: Value = serde_json::from_str(&body).unwrap();
                            for (seq, item) in seqs.iter().zip(items.as_array().unwrap()) {
                                if item["publishing_status"] == "submitted" {
                                    acked.push(*seq);
                                }
                            }
                            problems.record(status, &ct, &body);
                        } else {
                            problems.record(status, &ct, &body);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                    acked
                })
            })
            .collect();
        let wait_for = |n: usize, what: &str| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked_count.load(Ordering::Relaxed) < n {
                assert!(
                    Instant::now() < deadline,
                    "{what}; last answers: {:?}; the server said:\n{}",
                    problems.all().last(),
                    server_said()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for(200, "publishing never got going");
        broker.kill9();
        // Gone: publishes fail (after the delivery timeout) with Problems (those
        // caught mid-request may be 207s, written on some partitions only).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !problems.all().iter().any(|(status, ..)| *status == 503) {
            assert!(
                Instant::now() < deadline,
                "no publish failed while Kafka was gone; the server said:\n{}",
                server_said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let before = acked_count.load(Ordering::Relaxed);
        // Back, where it was, with its data: publishing recovers by itself.
        drop(std::mem::replace(
            &mut broker,
            Broker::start_at(&broker_dir, port),
        ));
        wait_for(
            before + 200,
            "publishing did not recover once Kafka was back",
        );
        stop.store(true, Ordering::Relaxed);
        publishers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect()
    });
    for (status, ct, body) in problems.all() {
        if status == 207 {
            // Nakadi's per-event answer, when the cluster went away mid-request.
            assert!(body.contains("\"publishing_status\":\"failed\""), "{body}");
            continue;
        }
        assert_eq!(status, 503, "{body}");
        assert_eq!(ct, "application/problem+json", "{body}");
        assert!(body.contains("\"status\":503"), "{body}");
    }
    assert!(
        problems.all().iter().any(|(status, ..)| *status == 503),
        "while Kafka was gone, requests were refused whole"
    );
    server.kill().unwrap();
    server.wait().unwrap();

    // Every event answered 200 is in Kafka.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stored: BTreeSet<u64> = rt.block_on(async {
        let log = KafkaLog::connect(KafkaConfig::new(&broker.bootstrap), Duration::from_secs(20))
            .await
            .unwrap();
        let topic = TopicName::new("shop.orders").unwrap();
        let mut seqs = BTreeSet::new();
        for p in 0..2 {
            for r in sluice_log::testing::read_partition(&log, &topic, PartitionId(p))
                .await
                .unwrap()
            {
                let v: Value = serde_json::from_slice(&r.value.unwrap()).unwrap();
                seqs.insert(v["seq"].as_u64().unwrap());
            }
        }
        seqs
    });
    let missing: Vec<u64> = acked
        .iter()
        .filter(|s| !stored.contains(s))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events are not in Kafka: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "acknowledged {}, failed requests {}, stored {}",
        acked.len(),
        problems.count(),
        stored.len()
    );
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Failed publish answers, shared by the publisher threads.
mod failures {
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Problems(Mutex<Vec<(u16, String, String)>>);

    impl Problems {
        pub fn record(&self, status: u16, ct: &str, body: &str) {
            self.0
                .lock()
                .unwrap()
                .push((status, ct.to_string(), body.to_string()));
        }
        pub fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
        pub fn all(&self) -> Vec<(u16, String, String)> {
            self.0.lock().unwrap().clone()
        }
    }
}

/// A subscription stream read line by line on a thread (lines of JSON).
fn open_stream(url: &str) -> (String, std::sync::mpsc::Receiver<Value>) {
    let resp = ureq::get(url).call().unwrap();
    assert_eq!(resp.status(), 200);
    let stream_id = resp
        .headers()
        .get("x-nakadi-streamid")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = resp.into_body().into_reader();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(reader)).map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                break;
            };
            if v.get("events").is_some() && tx.send(v).is_err() {
                break;
            }
        }
    });
    (stream_id, rx)
}

#[test]
fn a_killed_node_s_partitions_go_to_another_node_s_stream_after_its_commit_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_on(&dir.path().join("broker"));
    let mut node_a = serve_on_kafka(&dir.path().join("a"), &broker.bootstrap, &[]);
    let mut node_b = serve_on_kafka(&dir.path().join("b"), &broker.bootstrap, &[]);
    let (a, _a_lines) = wait_for_listen_address(&mut node_a.0);
    let (b, _b_lines) = wait_for_listen_address(&mut node_b.0);
    let (a, b) = (format!("http://{a}"), format!("http://{b}"));
    assert_eq!(post(&format!("{a}/event-types"), &orders_type()).0, 201);
    let (status, _, body) = post(
        &format!("{a}/event-types/shop.orders/events"),
        &batch(&(0..20).collect::<Vec<_>>()),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post(
        &format!("{a}/subscriptions"),
        &json!({"owning_application": "billing", "event_types": ["shop.orders"],
                "read_from": "begin"}),
    );
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!(
        "/subscriptions/{id}/events?batch_flush_timeout=1&commit_timeout=8&max_uncommitted_events=100"
    );

    // A's stream gets both partitions and commits nothing.
    let (_, on_a) = open_stream(&format!("{a}{path}"));
    let mut got_on_a = 0;
    while got_on_a < 20 {
        let batch = on_a
            .recv_timeout(Duration::from_secs(10))
            .expect("A's batches");
        got_on_a += batch["events"].as_array().unwrap().len();
    }

    // B's stream (on B, once B knows the subscription) waits: A holds uncommitted events.
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent()
        .get(&format!("{b}/subscriptions/{id}"))
        .call()
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "B never saw the subscription");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, on_b) = open_stream(&format!("{b}{path}"));
    assert!(
        on_b.recv_timeout(Duration::from_millis(1500)).is_err(),
        "nothing for B while A holds it all"
    );
    drop(on_a);

    // A dies. After its heartbeats stop (3 s) and its commit timeout (8 s), B's
    // stream takes both partitions and gets every uncommitted event again.
    let killed = Instant::now();
    node_a.kill().unwrap(); // SIGKILL
    node_a.wait().unwrap();
    let mut seqs = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seqs.len() < 20 && Instant::now() < deadline {
        if let Ok(batch) = on_b.recv_timeout(Duration::from_secs(1)) {
            for e in batch["events"].as_array().unwrap() {
                seqs.insert(e["seq"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(
        seqs,
        (0..20).collect::<BTreeSet<u64>>(),
        "every event, again, on B"
    );
    eprintln!("B took over {:?} after the kill", killed.elapsed());
    node_b.kill().unwrap();
    node_b.wait().unwrap();
}
