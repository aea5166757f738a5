//! `sluice bench consume`: streaming clients reading a subscription from the beginning
//! of an event type, committing as they go; compared with the loopback transport's own
//! bandwidth measured in the same run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::measure::{round2, server};
use super::publish::{ensure_event_type, patch_eid, template};
use super::stream_client::{self, Line, StreamClient};
use crate::cli::BenchConsumeArgs;

#[derive(Debug, Serialize)]
struct Report {
    event_type: String,
    streams: usize,
    batch_limit: u64,
    events: u64,
    duration_sec: f64,
    events_per_sec: f64,
    mb_per_sec: f64,
    commits: u64,
    /// Bytes per second through one loopback TCP connection, measured in this run.
    loopback_mb_per_sec: f64,
    ratio_to_loopback: f64,
}

/// Events stored in the event type now (all partitions).
fn stored(url: &str, event_type: &str) -> anyhow::Result<u64> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("{url}/event-types/{event_type}/partitions"))
        .call()?;
    let parts: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
    let offset =
        |v: &serde_json::Value| -> Option<u64> { v.as_str()?.rsplit('-').next()?.parse().ok() };
    let mut n = 0;
    for p in parts.as_array().context("partitions")? {
        if let (Some(old), Some(new)) = (
            offset(&p["oldest_available_offset"]),
            offset(&p["newest_available_offset"]),
        ) {
            n += new + 1 - old;
        }
    }
    Ok(n)
}

/// Publishes `n` events of about `bytes` bytes, 1000 per request, on 4 connections.
fn prefill(url: &str, event_type: &str, n: u64, bytes: usize) -> anyhow::Result<()> {
    eprintln!("publishing {n} events of ~{bytes} B to {event_type}");
    let batch = 1000u64;
    let requests = n.div_ceil(batch);
    let next = Arc::new(AtomicU64::new(0));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        >> 1;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let next = next.clone();
                scope.spawn(move || -> anyhow::Result<()> {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    loop {
                        let r = next.fetch_add(1, Ordering::Relaxed);
                        if r >= requests {
                            return Ok(());
                        }
                        let count = batch.min(n - r * batch) as usize;
                        let mut t = template(count, bytes);
                        for (i, &at) in t.eids.iter().enumerate() {
                            patch_eid(&mut t.body, at, seed + r * batch + i as u64);
                        }
                        let resp = agent
                            .post(&format!("{url}/event-types/{event_type}/events"))
                            .header("Content-Type", "application/json")
                            .send(&t.body[..])?;
                        if resp.status() != 200 {
                            bail!("publishing failed: {}", resp.status());
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a prefill thread"))
    })
}

/// One loopback TCP connection's bandwidth: 1 GiB in 256 KiB writes.
async fn loopback_mb_per_sec() -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    const TOTAL: usize = 1 << 30;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0;
        while got < TOTAL {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        anyhow::Ok(got)
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let chunk = vec![7u8; 256 << 10];
    let started = Instant::now();
    for _ in 0..TOTAL / chunk.len() {
        s.write_all(&chunk).await?;
    }
    let got = reader.await??;
    Ok(round2(got as f64 / started.elapsed().as_secs_f64() / 1e6))
}

pub async fn run(args: BenchConsumeArgs) -> anyhow::Result<()> {
    if args.streams == 0 || args.batch_limit == 0 || args.events == 0 {
        bail!("--streams, --batch-limit and --events must be positive");
    }
    let (url, authority) = server(&args.url)?;
    let (u, et) = (url.clone(), args.event_type.clone());
    let (events, bytes) = (args.events, args.event_bytes);
    let total = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        ensure_event_type(&u, &et)?;
        let have = stored(&u, &et)?;
        if have < events {
            prefill(&u, &et, events - have, bytes)?;
        }
        stored(&u, &et)
    })
    .await??;
    let loopback = loopback_mb_per_sec().await?;
    let (u, et) = (url.clone(), args.event_type.clone());
    let sub =
        tokio::task::spawn_blocking(move || stream_client::subscribe(&u, &et, "begin")).await??;
    eprintln!("reading {total} events with {} stream(s)", args.streams);

    let consumed = Arc::new(AtomicU64::new(0));
    let line_bytes = Arc::new(AtomicU64::new(0));
    let commits = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let params = serde_json::json!({
        "batch_limit": args.batch_limit,
        "max_uncommitted_events": args.max_uncommitted,
        "batch_flush_timeout": 1,
    });
    let mut tasks = Vec::new();
    for _ in 0..args.streams {
        let (authority, sub, params) = (authority.clone(), sub.clone(), params.clone());
        let (consumed, line_bytes, commits) =
            (consumed.clone(), line_bytes.clone(), commits.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = StreamClient::open(&authority, &sub, &params).await?;
            // Commits run beside the reading, as a consumer that commits in the
            // background: the latest cursor per partition, every 50 ms.
            let (cursors_tx, mut cursors_rx) =
                tokio::sync::watch::channel(BTreeMap::<String, serde_json::Value>::new());
            let committer = {
                let (authority, sub, id) = (authority.clone(), sub.clone(), stream.id.clone());
                tokio::spawn(async move {
                    let mut sender = stream_client::connect(&authority).await?;
                    while cursors_rx.changed().await.is_ok() {
                        let cursors: Vec<_> =
                            cursors_rx.borrow_and_update().values().cloned().collect();
                        stream_client::commit(&mut sender, &authority, &sub, &id, cursors).await?;
                        commits.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    anyhow::Ok(())
                })
            };
            let mut error = None;
            while consumed.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                let mut latest = Vec::new();
                let more = stream
                    .read(|line| match serde_json::from_slice::<Line>(line) {
                        Ok(l) => {
                            if let Some(events) = &l.events {
                                consumed.fetch_add(events.len() as u64, Ordering::Relaxed);
                                line_bytes.fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
                                latest.push((l.cursor.partition.to_string(), l.cursor.to_json()));
                            }
                        }
                        Err(e) => error = Some(e),
                    })
                    .await?;
                if let Some(e) = error.take() {
                    bail!("a stream line is not a batch: {e}");
                }
                if !latest.is_empty() {
                    cursors_tx.send_modify(|c| c.extend(latest));
                }
                if !more {
                    break;
                }
            }
            let finished = Instant::now();
            drop(cursors_tx);
            committer.await??;
            anyhow::Ok(finished)
        }));
    }
    let mut finished = started;
    for t in tasks {
        finished = finished.max(t.await??);
    }
    let elapsed = (finished - started).as_secs_f64();
    let events = consumed.load(Ordering::Relaxed);
    let mb = line_bytes.load(Ordering::Relaxed) as f64 / 1e6;
    let report = Report {
        event_type: args.event_type.clone(),
        streams: args.streams,
        batch_limit: args.batch_limit,
        events,
        duration_sec: round2(elapsed),
        events_per_sec: (events as f64 / elapsed).round(),
        mb_per_sec: round2(mb / elapsed),
        commits: commits.load(Ordering::Relaxed),
        loopback_mb_per_sec: loopback,
        ratio_to_loopback: round2(mb / elapsed / loopback),
    };
    if events < total {
        eprintln!(
            "only {events} of {total} events arrived within {} s",
            args.timeout
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
