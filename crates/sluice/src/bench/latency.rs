//! `sluice bench latency`: events published on a fixed schedule while one subscription
//! stream reads them; per event, the time from the publisher's acknowledgement to the
//! subscriber's receipt (and from the send, end to end).
//!
//! Each event's eid carries its number (the last 12 hex digits), so the subscriber
//! knows which event arrived without a field of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde::Serialize;

use super::measure::{Percentiles, server};
use super::publish::{ensure_event_type, patch_eid, template};
use super::stream_client::{self, Line, StreamClient};
use crate::cli::BenchLatencyArgs;

#[derive(Debug, Serialize)]
struct Report {
    event_type: String,
    target_events_per_sec: u64,
    batch: usize,
    batch_limit: u64,
    events: u64,
    received: u64,
    /// Publish acknowledged -> event received by the subscriber (0 when it arrived first).
    latency_ms: Percentiles,
    /// Publish request sent -> event received.
    end_to_end_ms: Percentiles,
}

/// Nanoseconds since `start`, never 0 (0 means "not yet").
fn stamp(start: Instant) -> u64 {
    (start.elapsed().as_nanos() as u64).max(1)
}

const MASK: u64 = 0xffff_ffff_ffff;

/// The event number in an eid written by `patch_eid` (its last 12 hex digits).
fn number_in(event: &str, seed: u64) -> Option<u64> {
    let at = event.find("\"eid\":\"")? + 7;
    let eid = event.get(at..at + 36)?;
    let n = u64::from_str_radix(&eid[24..], 16).ok()?;
    Some(n.wrapping_sub(seed) & MASK)
}

pub async fn run(args: BenchLatencyArgs) -> anyhow::Result<()> {
    if args.rate == 0 || args.batch == 0 || args.duration == 0 || args.batch_limit == 0 {
        bail!("--rate, --batch, --duration and --batch-limit must be positive");
    }
    let (url, authority) = server(&args.url)?;
    let (u, et) = (url.clone(), args.event_type.clone());
    let sub = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        ensure_event_type(&u, &et)?;
        stream_client::subscribe(&u, &et, "end")
    })
    .await??;

    let total = args.rate * args.duration;
    let total = total - total % args.batch as u64;
    let slots = |n| Arc::new((0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
    let (sent, acked, received) = (slots(total), slots(total), slots(total));
    let seed = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15))
        & MASK;
    let start = Instant::now();

    // The subscriber.
    let params = serde_json::json!({"batch_limit": args.batch_limit,
        "max_uncommitted_events": 1_000_000, "batch_flush_timeout": 1});
    let mut stream = StreamClient::open(&authority, &sub, &params).await?;
    // The stream's first line (a keep-alive after batch_flush_timeout): it is under
    // way. Its start (the first line waits ~0.2 s, see sluice-http's streaming.rs)
    // is not what this measures.
    let (attached, ready) = tokio::sync::oneshot::channel::<()>();
    let subscriber = {
        let (received, authority, sub) = (received.clone(), authority.clone(), sub.clone());
        tokio::spawn(async move {
            let mut committer =
                stream_client::Committer::new(&authority, &sub, Duration::from_millis(200)).await?;
            let mut count = 0u64;
            let mut attached = Some(attached);
            let give_up = Instant::now() + Duration::from_secs(args.duration + 30);
            while count < total && Instant::now() < give_up {
                let more = tokio::time::timeout(
                    Duration::from_secs(2),
                    stream.read(|line| {
                        if let Some(tell) = attached.take() {
                            let _ = tell.send(());
                        }
                        let Ok(l) = serde_json::from_slice::<Line>(line) else {
                            return;
                        };
                        let now = stamp(start);
                        for e in l.events.iter().flatten() {
                            if let Some(n) = number_in(e.get(), seed).filter(|n| *n < total) {
                                received[n as usize].store(now, Ordering::Relaxed);
                                count += 1;
                            }
                        }
                        committer.note(&l);
                    }),
                )
                .await;
                if let Ok(more) = more
                    && !more?
                {
                    break;
                }
                committer.commit_if_due(&stream.id).await?;
            }
            anyhow::Ok(count)
        })
    };

    // The publishers: request k is due at k * interval, on connection k % CONNECTIONS.
    const CONNECTIONS: u64 = 8;
    let requests = total / args.batch as u64;
    let interval = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
    let path = format!("/event-types/{}/events", args.event_type);
    let base = template(args.batch, args.event_bytes);
    let (body0, eids) = (Arc::new(base.body), Arc::new(base.eids));
    ready
        .await
        .context("the stream ended before its first line")?;
    let begin = Instant::now();
    let mut publishers = Vec::new();
    for w in 0..CONNECTIONS {
        let (sent, acked, authority, path) =
            (sent.clone(), acked.clone(), authority.clone(), path.clone());
        let (body0, eids) = (body0.clone(), eids.clone());
        let batch = args.batch as u64;
        publishers.push(tokio::spawn(async move {
            let mut sender = stream_client::connect(&authority).await?;
            let mut k = w;
            while k < requests {
                tokio::time::sleep_until((begin + interval.mul_f64(k as f64)).into()).await;
                let mut body = body0.to_vec();
                for (i, &at) in eids.iter().enumerate() {
                    patch_eid(&mut body, at, seed + k * batch + i as u64);
                }
                let t = stamp(start);
                for i in 0..batch {
                    sent[(k * batch + i) as usize].store(t, Ordering::Relaxed);
                }
                let req = Request::post(&path)
                    .header("host", &authority)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))?;
                let resp = sender.send_request(req).await?;
                let ok = resp.status() == hyper::StatusCode::OK;
                resp.into_body().collect().await?;
                if !ok {
                    bail!("a publish failed");
                }
                let t = stamp(start);
                for i in 0..batch {
                    acked[(k * batch + i) as usize].store(t, Ordering::Relaxed);
                }
                k += CONNECTIONS;
            }
            anyhow::Ok(())
        }));
    }
    for p in publishers {
        p.await??;
    }
    let got = subscriber.await??;
    let mut after_ack = Vec::with_capacity(total as usize);
    let mut end_to_end = Vec::with_capacity(total as usize);
    for i in 0..total as usize {
        let r = received[i].load(Ordering::Relaxed);
        if r == 0 {
            continue;
        }
        let (s, a) = (
            sent[i].load(Ordering::Relaxed),
            acked[i].load(Ordering::Relaxed),
        );
        after_ack.push(Duration::from_nanos(r.saturating_sub(a)));
        end_to_end.push(Duration::from_nanos(r.saturating_sub(s)));
    }
    let report = Report {
        event_type: args.event_type.clone(),
        target_events_per_sec: args.rate,
        batch: args.batch,
        batch_limit: args.batch_limit,
        events: total,
        received: got,
        latency_ms: Percentiles::of(&mut after_ack),
        end_to_end_ms: Percentiles::of(&mut end_to_end),
    };
    if got < total {
        eprintln!("only {got} of {total} events arrived");
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
