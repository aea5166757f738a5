//! `sluice bench publish`: an HTTP load generator for `POST /event-types/{name}/events`.
//! Each connection keeps one request in flight; every event has a fresh eid (the
//! server's idempotency must not make the figures look better than they are).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::json;

use super::measure::{Percentiles, memory_mb, round2, server};
use crate::cli::BenchPublishArgs;

#[derive(Debug, Serialize)]
struct Report {
    event_type: String,
    batch: usize,
    event_bytes: usize,
    concurrency: usize,
    duration_sec: f64,
    target_events_per_sec: u64,
    events: u64,
    events_per_sec: f64,
    batches_per_sec: f64,
    mb_per_sec: f64,
    errors: u64,
    latency_ms: Latency,
    /// The slowest answer in each second of the run, in ms: where stalls happened.
    worst_ms_per_sec: Vec<f64>,
    server_rss_mb: Option<f64>,
    server_peak_rss_mb: Option<f64>,
    /// The same events written by a plain Kafka producer (with `--kafka-peer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka_peer: Option<PeerReport>,
    /// events_per_sec through Sluice / events_per_sec of the plain producer.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_peer: Option<f64>,
}

#[derive(Debug, Serialize)]
struct PeerReport {
    bootstrap: String,
    events: u64,
    events_per_sec: f64,
    errors: u64,
    /// From sending a batch to its last acknowledgement.
    batch_latency_ms: Latency,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// A price-change event type: a realistic business schema.
fn event_type(name: &str) -> serde_json::Value {
    let schema = json!({
        "type": "object",
        "properties": {
            "sku": {"type": "string", "minLength": 1},
            "seller_id": {"type": "string"},
            "price": {"type": "object", "properties": {
                "amount": {"type": "integer", "minimum": 0},
                "currency": {"type": "string", "enum": ["EUR", "USD", "GBP", "PLN", "SEK"]}
            }, "required": ["amount", "currency"]},
            "previous_amount": {"type": "integer", "minimum": 0},
            "channel": {"type": "string", "enum": ["web", "app", "store"]},
            "valid_from": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "note": {"type": "string"}
        },
        "required": ["sku", "seller_id", "price", "channel"]
    });
    json!({
        "name": name,
        "owning_application": "sluice-bench",
        "category": "business",
        "enrichment_strategies": ["metadata_enrichment"],
        "partition_strategy": "hash",
        "partition_key_fields": ["sku"],
        "partition_count": 4,
        "schema": {"type": "json_schema", "schema": schema.to_string()}
    })
}

const EID_PLACEHOLDER: &str = "00000000-0000-4000-8000-000000000000";
const CHANNELS: [&str; 3] = ["web", "app", "store"];

/// One batch as bytes, with the byte positions of its eids, to patch per request.
pub(super) struct Template {
    pub body: Vec<u8>,
    pub eids: Vec<usize>,
}

pub(super) fn template(batch: usize, event_bytes: usize) -> Template {
    let mut body = b"[".to_vec();
    let mut eids = Vec::with_capacity(batch);
    for i in 0..batch {
        if i > 0 {
            body.push(b',');
        }
        let mut event = json!({
            "sku": format!("SKU-{:06}", i * 7919 % 100_000),
            "seller_id": format!("seller-{}", i % 37),
            "price": {"amount": 1999 + i, "currency": "EUR"},
            "previous_amount": 2499,
            "channel": CHANNELS[i % 3],
            "valid_from": "2026-11-22T10:00:00Z",
            "tags": ["sale", "autumn"],
            "metadata": {"eid": EID_PLACEHOLDER, "occurred_at": "2026-11-22T10:00:00.000Z"},
            "note": ""
        });
        let base = event.to_string().len();
        event["note"] = json!("x".repeat(event_bytes.saturating_sub(base)));
        let text = event.to_string();
        let at = text.find(EID_PLACEHOLDER).unwrap_or(0);
        eids.push(body.len() + at);
        body.extend_from_slice(text.as_bytes());
    }
    body.push(b']');
    Template { body, eids }
}

/// Writes a unique UUID-shaped eid for `n` at `at`.
pub(super) fn patch_eid(body: &mut [u8], at: usize, n: u64) {
    let hex = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (n >> 32) as u32,
        (n >> 16) & 0xffff,
        (n >> 4) & 0xfff,
        n & 0xfff,
        n & 0xffff_ffff_ffff
    );
    body[at..at + 36].copy_from_slice(hex.as_bytes());
}

pub async fn run(args: BenchPublishArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.concurrency == 0 || args.duration == 0 {
        bail!("--batch, --concurrency and --duration must be positive");
    }
    let (_, authority) = server(&args.url)?;
    ensure_event_type(&args.url, &args.event_type)?;
    let template = Arc::new(template(args.batch, args.event_bytes));
    let path = format!("/event-types/{}/events", args.event_type);
    // Eids unique within the run and, from a clock-derived start, across runs.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let counter = Arc::new(AtomicU64::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1,
    ));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    // Open loop at --rate: each connection sends its share on a fixed schedule.
    let interval = (args.rate > 0).then(|| {
        Duration::from_secs_f64(args.concurrency as f64 * args.batch as f64 / args.rate as f64)
    });
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (template, counter, errors) = (template.clone(), counter.clone(), errors.clone());
        let (authority, path) = (authority.clone(), path.clone());
        workers.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut body = template.body.clone();
            let offset = interval.map(|i| i.mul_f64(w as f64 / args.concurrency as f64));
            let mut n = 0u32;
            loop {
                let due = match (interval, offset) {
                    (Some(i), Some(o)) => Some(started + o + i * n),
                    _ => None,
                };
                if let Some(due) = due {
                    tokio::time::sleep_until(due.into()).await;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                for &at in &template.eids {
                    patch_eid(&mut body, at, counter.fetch_add(1, Ordering::Relaxed));
                }
                let req = Request::post(&path)
                    .header("host", &authority)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.clone())))?;
                // Latency from when the request was due (open loop) or sent.
                let from = due.unwrap_or(now);
                let resp = sender.send_request(req).await?;
                let ok = resp.status() == hyper::StatusCode::OK;
                resp.into_body().collect().await?;
                latencies.push((from - started, from.elapsed()));
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut timed = Vec::new();
    for w in workers {
        timed.extend(w.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let seconds = (elapsed.ceil() as usize).max(1);
    let mut worst_ms_per_sec = vec![0.0f64; seconds];
    for (at, took) in &timed {
        let worst = &mut worst_ms_per_sec[(at.as_secs() as usize).min(seconds - 1)];
        *worst = worst.max(round2(took.as_secs_f64() * 1000.0));
    }
    let latencies: Vec<Duration> = timed.into_iter().map(|(_, took)| took).collect();
    let batches = latencies.len() as u64;
    let errors = errors.load(Ordering::Relaxed);
    let events = (batches - errors) * args.batch as u64;
    let events_per_sec = (events as f64 / elapsed).round();
    let kafka_peer = match &args.kafka_peer {
        Some(bootstrap) => Some(peer(bootstrap, &args, &template).await?),
        None => None,
    };
    let ratio_to_peer = kafka_peer
        .as_ref()
        .filter(|p| p.events_per_sec > 0.0)
        .map(|p| round2(events_per_sec / p.events_per_sec));
    let report = Report {
        event_type: args.event_type.clone(),
        batch: args.batch,
        event_bytes: args.event_bytes,
        concurrency: args.concurrency,
        duration_sec: round2(elapsed),
        target_events_per_sec: args.rate,
        events,
        events_per_sec,
        batches_per_sec: round2(batches as f64 / elapsed),
        mb_per_sec: round2((batches - errors) as f64 * template.body.len() as f64 / elapsed / 1e6),
        errors,
        latency_ms: latency(latencies),
        worst_ms_per_sec,
        server_rss_mb: args
            .server_pid
            .and_then(|pid| memory_mb(&pid.to_string(), "VmRSS:")),
        server_peak_rss_mb: args
            .server_pid
            .and_then(|pid| memory_mb(&pid.to_string(), "VmHWM:")),
        kafka_peer,
        ratio_to_peer,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    let p = Percentiles::of(&mut samples);
    let p90 = {
        let i = ((samples.len() as f64 * 0.9).ceil() as usize).clamp(1, samples.len().max(1)) - 1;
        samples
            .get(i)
            .map_or(0.0, |d| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0)
    };
    Latency {
        p50: p.p50,
        p90,
        p99: p.p99,
        p999: p.p999,
        max: p.max,
    }
}

/// The same events, for as long, through a plain Kafka producer.
#[cfg(feature = "kafka")]
async fn peer(
    bootstrap: &str,
    args: &BenchPublishArgs,
    template: &Template,
) -> anyhow::Result<PeerReport> {
    let events: Vec<serde_json::Value> = serde_json::from_slice(&template.body)?;
    let payloads: Vec<Vec<u8>> = events
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    let topic = format!(
        "sluice-bench-peer-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    eprintln!(
        "plain producer: {} s to {bootstrap} (topic {topic})",
        args.duration
    );
    let run = sluice_kafka::peer::produce(
        bootstrap,
        &topic,
        4,
        Arc::new(payloads),
        args.batch,
        args.concurrency,
        Duration::from_secs(args.duration),
    )
    .await
    .context("the plain Kafka producer")?;
    let elapsed = run.elapsed.as_secs_f64();
    Ok(PeerReport {
        bootstrap: bootstrap.to_string(),
        events: run.records,
        events_per_sec: (run.records as f64 / elapsed).round(),
        errors: run.errors,
        batch_latency_ms: latency(run.batch_latencies),
    })
}

#[cfg(not(feature = "kafka"))]
async fn peer(
    _bootstrap: &str,
    _args: &BenchPublishArgs,
    _template: &Template,
) -> anyhow::Result<PeerReport> {
    bail!("--kafka-peer needs a sluice built with the `kafka` feature")
}

/// Creates the event type unless it exists.
pub(super) fn ensure_event_type(url: &str, event_type: &str) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let base = url.trim_end_matches('/');
    let got = agent
        .get(&format!("{base}/event-types/{event_type}"))
        .call()
        .with_context(|| format!("cannot reach Sluice at {base}"))?;
    if got.status() == 200 {
        return Ok(());
    }
    let body = self::event_type(event_type).to_string();
    let mut r = agent
        .post(&format!("{base}/event-types"))
        .header("Content-Type", "application/json")
        .send(body.as_bytes())?;
    if r.status() != 201 {
        bail!(
            "cannot create {event_type}: {}",
            r.body_mut().read_to_string().unwrap_or_default()
        );
    }
    eprintln!("created event type {event_type} (4 partitions, hash by sku)");
    Ok(())
}
