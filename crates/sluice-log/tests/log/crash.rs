//! Crash test with a real process: a child appends with fsync durability and reports
//! each acknowledgement; the parent kills it with SIGKILL at a random moment, reopens
//! the log and checks that every acknowledged record is there, intact and in order.
//! The child is this test binary itself, re-run with an environment variable.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_log::{
    EmbeddedConfig, EmbeddedLog, FetchRequest, Log, LogError, PartitionId, Record, TopicConfig,
    TopicName,
};

const CHILD_DIR: &str = "SLUICE_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "SLUICE_CRASH_CHILD_ROUND";
const PARTITIONS: u32 = 2;

fn topic() -> TopicName {
    TopicName::new("crash").unwrap()
}

/// Runs only inside the child process.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let round: u32 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let log = EmbeddedLog::open(&dir, EmbeddedConfig::default()).unwrap();
        let config = TopicConfig {
            segment_bytes: 64 * 1024,
            ..TopicConfig::with_partitions(PARTITIONS)
        };
        match log.create_topic(&topic(), config).await {
            Ok(()) | Err(LogError::TopicExists(_)) => {}
            Err(e) => panic!("{e}"),
        }
        let writers: Vec<_> = (0..4u32)
            .map(|w| {
                let log = log.clone();
                tokio::spawn(async move {
                    for seq in 0u64.. {
                        let p = PartitionId(w % PARTITIONS);
                        let n = 1 + (seq % 5) as usize;
                        let records: Vec<Record> = (0..n)
                            .map(|i| {
                                let v = format!(
                                    "r{round}-w{w}-s{seq}-i{i}-{}",
                                    "x".repeat((seq as usize * 37) % 400)
                                );
                                Record::keyed(format!("w{w}"), v)
                            })
                            .collect();
                        let values: Vec<Bytes> =
                            records.iter().filter_map(|r| r.value.clone()).collect();
                        let appended = log.append(&topic(), p, records).await.unwrap();
                        for (o, v) in appended.offsets.iter().zip(values) {
                            println!("ACK {} {} {}", p.0, o.0, String::from_utf8_lossy(&v));
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<(u32, u64), String> = BTreeMap::new();
    let rounds = 25;
    let mut rng = fastrand::Rng::with_seed(u64::from(std::process::id()));
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let mut parts = rest.splitn(3, ' ');
                    let p: u32 = parts.next().unwrap().parse().unwrap();
                    let o: u64 = parts.next().unwrap().parse().unwrap();
                    let v = parts.next().unwrap().to_string();
                    if tx.send((p, o, v)).is_err() {
                        break;
                    }
                }
            }
        });
        // Kill at a random moment once the child is appending.
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child acknowledges appends");
        acked.insert((first.0, first.1), first.2);
        std::thread::sleep(Duration::from_millis(rng.u64(0..150)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        // Everything the child printed was acknowledged before it died.
        for (p, o, v) in rx.try_iter() {
            acked.insert((p, o), v);
        }
        verify(dir.path(), &acked, round);
    }
    assert!(
        acked.len() > 1000,
        "the rounds acknowledged enough records: {}",
        acked.len()
    );
}

fn verify(dir: &std::path::Path, acked: &BTreeMap<(u32, u64), String>, round: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let started = Instant::now();
        let log = EmbeddedLog::open(dir, EmbeddedConfig::default()).unwrap();
        let reopen = started.elapsed();
        let mut found: BTreeMap<(u32, u64), String> = BTreeMap::new();
        for p in 0..PARTITIONS {
            let mut from = log
                .offsets(&topic(), PartitionId(p))
                .await
                .unwrap()
                .earliest;
            let mut last = None;
            loop {
                let f = log
                    .fetch(&topic(), PartitionId(p), FetchRequest::new(from))
                    .await
                    .unwrap();
                if f.records.is_empty() {
                    break;
                }
                for r in f.records {
                    assert!(last < Some(r.offset), "round {round}: offsets increase");
                    last = Some(r.offset);
                    let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                    found.insert((p, r.offset.0), v);
                }
                from = f.next;
            }
        }
        for (k, v) in acked {
            assert_eq!(
                found.get(k),
                Some(v),
                "round {round}: acknowledged record {k:?} survives kill -9"
            );
        }
        assert!(reopen < Duration::from_secs(5));
        log.close().unwrap();
    });
}
