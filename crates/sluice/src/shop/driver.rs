//! Publishing the shop over HTTP: one keep-alive connection per event type, each
//! sending what has queued up as one batch (so a key's events stay in order), on a
//! schedule (`pace`) or as fast as the server takes them (`flood`); the shop's
//! definitions registered first (`register`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tokio::sync::mpsc;

use super::{EVENT_TYPES, Event, Shop, VIEWS};
use crate::bench::stream_client::connect;

/// Events per request at most.
const MAX_BATCH: usize = 500;

/// A batch the server acknowledged.
#[derive(Debug)]
pub struct Acked<'a> {
    pub kind: usize,
    pub events: &'a [Event],
    pub at: Instant,
    /// `X-Sluice-Written`: the cursors the events were written at.
    pub written: Option<&'a str>,
}

/// Called with every acknowledged batch, on the connection's task.
pub type OnAck = Arc<dyn Fn(&Acked<'_>) + Send + Sync>;

/// Counters of a run.
#[derive(Debug, Default)]
pub struct Stats {
    pub published: [AtomicU64; 6],
    pub failed: AtomicU64,
    pub requests: AtomicU64,
}

impl Stats {
    pub fn published(&self) -> u64 {
        self.published
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// `{"shop.product": n, ...}`.
    pub fn by_type(&self) -> serde_json::Value {
        EVENT_TYPES
            .iter()
            .zip(&self.published)
            .map(|(name, n)| (name.to_string(), n.load(Ordering::Relaxed).into()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// The publishing side of a run: a queue and a connection per event type.
pub struct Driver {
    queues: Vec<mpsc::Sender<Event>>,
    senders: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub stats: Arc<Stats>,
}

impl Driver {
    pub async fn start(authority: &str, on_ack: Option<OnAck>) -> anyhow::Result<Driver> {
        let stats = Arc::new(Stats::default());
        let (mut queues, mut senders) = (Vec::new(), Vec::new());
        for (kind, name) in EVENT_TYPES.iter().enumerate() {
            let (tx, rx) = mpsc::channel(MAX_BATCH * 8);
            let conn = connect(authority).await?;
            let path = format!("/event-types/{name}/events");
            let (stats, on_ack, authority) = (stats.clone(), on_ack.clone(), authority.to_string());
            senders.push(tokio::spawn(async move {
                send_batches(kind, conn, authority, path, rx, stats, on_ack).await
            }));
            queues.push(tx);
        }
        Ok(Driver {
            queues,
            senders,
            stats,
        })
    }

    /// Queues an event (waits while its queue is full).
    pub async fn send(&self, e: Event) -> anyhow::Result<()> {
        self.queues[e.kind]
            .send(e)
            .await
            .map_err(|_| anyhow::anyhow!("the publishing connection closed"))
    }

    /// Waits until everything queued was answered.
    pub async fn finish(self) -> anyhow::Result<()> {
        drop(self.queues);
        for s in self.senders {
            s.await??;
        }
        Ok(())
    }
}

async fn send_batches(
    kind: usize,
    mut conn: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
    path: String,
    mut rx: mpsc::Receiver<Event>,
    stats: Arc<Stats>,
    on_ack: Option<OnAck>,
) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut complaints = 0;
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.push(first);
        while batch.len() < MAX_BATCH
            && let Ok(e) = rx.try_recv()
        {
            batch.push(e);
        }
        let mut body =
            Vec::with_capacity(batch.iter().map(|e| e.body.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, e) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e.body.as_bytes());
        }
        body.push(b']');
        let req = Request::post(&path)
            .header("host", &authority)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let resp = conn
            .send_request(req)
            .await
            .with_context(|| format!("publishing to {}", EVENT_TYPES[kind]))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        let at = Instant::now();
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let n = batch.len() as u64;
        if parts.status == hyper::StatusCode::OK {
            stats.published[kind].fetch_add(n, Ordering::Relaxed);
            if let Some(f) = &on_ack {
                let written = parts
                    .headers
                    .get("x-sluice-written")
                    .and_then(|v| v.to_str().ok());
                f(&Acked {
                    kind,
                    events: &batch,
                    at,
                    written,
                });
            }
        } else {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            if complaints < 3 {
                complaints += 1;
                eprintln!(
                    "publishing to {} answered {}: {}",
                    EVENT_TYPES[kind],
                    parts.status,
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }
    Ok(())
}

/// Milliseconds since the epoch, as the shop's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Publishes the shop's events at `rate` per second (open loop: on schedule, however
/// long the server takes) until `stop` is set or `limit` events were queued; returns
/// how many were queued.
pub async fn pace(
    shop: &mut Shop,
    driver: &Driver,
    rate: u64,
    limit: Option<u64>,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut queued = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| queued < l) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        let due = limit.map_or(due, |l| due.min(l));
        let now = now_ms();
        while queued < due {
            driver.send(shop.next(now)).await?;
            queued += 1;
        }
    }
    Ok(queued)
}

/// Publishes the shop's events as fast as the server acknowledges them, for `for_`.
pub async fn flood(shop: &mut Shop, driver: &Driver, for_: Duration) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut queued = 0u64;
    while started.elapsed() < for_ {
        let now = now_ms();
        for _ in 0..64 {
            driver.send(shop.next(now)).await?;
        }
        queued += 64;
    }
    Ok(queued)
}

/// Publishes `events` (a catalog) in order, as fast as the server takes them.
pub async fn publish_all(driver: &Driver, events: Vec<Event>) -> anyhow::Result<()> {
    for e in events {
        driver.send(e).await?;
    }
    Ok(())
}

/// Creates the shop's event types where they are missing (a second run on the same
/// data dir finds them) and its views as this binary defines them.
pub fn register(base_url: &str) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |path: &str, body: &serde_json::Value| -> anyhow::Result<(u16, String)> {
        let mut r = agent
            .post(&format!("{base_url}{path}"))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .with_context(|| format!("cannot reach Sluice at {base_url}"))?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
    };
    for et in super::event_types() {
        match post("/event-types", &et)? {
            (201 | 409, _) => {}
            (status, body) => bail!("cannot create event type {}: {status} {body}", et["name"]),
        }
    }
    // PUT: a view this binary defines differently (a data dir of an older demo) is
    // replaced blue/green; one already as defined is left alone.
    for (name, sql) in VIEWS {
        let mut r = agent
            .put(&format!("{base_url}/views/{name}"))
            .header("Content-Type", "application/json")
            .send(serde_json::json!({ "sql": sql }).to_string().as_bytes())
            .with_context(|| format!("cannot reach Sluice at {base_url}"))?;
        match r.status().as_u16() {
            200 | 201 => {}
            status => bail!(
                "cannot create view {name}: {status} {}\n{sql}",
                r.body_mut().read_to_string()?
            ),
        }
    }
    Ok(())
}

/// Prints a line to stderr every `every` with what was published, until dropped.
pub fn progress(stats: Arc<Stats>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut last = (0u64, Instant::now());
        loop {
            tokio::time::sleep(every).await;
            let n = stats.published();
            let rate = (n - last.0) as f64 / last.1.elapsed().as_secs_f64();
            last = (n, Instant::now());
            let failed = stats.failed.load(Ordering::Relaxed);
            eprintln!(
                "[{:>5.0} s] {n} events published ({rate:.0}/s now){}",
                started.elapsed().as_secs_f64(),
                if failed > 0 {
                    format!(", {failed} refused")
                } else {
                    String::new()
                }
            );
        }
    })
}
