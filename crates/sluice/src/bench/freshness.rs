//! `sluice bench freshness`: the simulated shop against a `sluice serve` of this binary
//! (a process of its own, on the data dir, with this command's `--config` and `--set`:
//! by default an embedded log with fsync durability).
//! First the shop publishes as fast as the server acknowledges for a while: the
//! maximum rate. Then it publishes on schedule at a fraction of it while
//!
//! - a subscription stream over all the shop's event types receives every event:
//!   publish acknowledged -> event received (`publish_to_subscriber_ms`);
//! - after each acknowledged batch that changes the product listing, a read of the
//!   changed product waits until the view has applied the batch's written cursors
//!   (read-your-writes): publish acknowledged -> the read answers
//!   (`publish_to_view_ms`; the read's own round trip included).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde::Serialize;

use super::measure::{Percentiles, context_switches, process_cpu_seconds, round2};
use super::stream_client::{Committer, Line, StreamClient, connect};
use crate::cli::{BenchFreshnessArgs, GlobalArgs};
use crate::config::Config;
use crate::shop::driver::{self, Acked, Driver, OnAck};
use crate::shop::{EVENT_TYPES, OFFER, PRODUCT, STOCK, Shop};

#[derive(Debug, Serialize)]
struct Report {
    /// Events/s the server acknowledged while the shop published as fast as it could.
    max_events_per_sec: f64,
    fraction: f64,
    /// The fixed rate of the measurement.
    events_per_sec: u64,
    seconds: u64,
    events: u64,
    refused: u64,
    received: u64,
    publish_to_subscriber_ms: Percentiles,
    view_reads: u64,
    /// Reads that timed out before the view applied the batch (10 s).
    view_reads_not_caught_up: u64,
    publish_to_view_ms: Percentiles,
    /// How late a thread of this process that only sleeps (1 ms steps) woke up
    /// during the measurement: the machine's scheduling delay under this load, a
    /// floor under both delays.
    wakeup_late_ms: Percentiles,
    /// The server's CPU (all threads) per event during the measurement.
    server_cpu_us_per_event: f64,
    /// The server's threads going off a core (to wait or preempted) per 1,000 events
    /// during the measurement (threads that exited meanwhile are not counted).
    server_context_switches_per_1k_events: f64,
    /// This process's CPU per event during the measurement: the shop generating and
    /// publishing, the subscriber, the view reads (the load the benchmark itself puts
    /// on the machine beside the server).
    client_cpu_us_per_event: f64,
    catalog_products: usize,
    /// The server's `log.durability`.
    durability: String,
}

/// A `sluice serve` of this binary on 127.0.0.1:0.
struct Server {
    child: Child,
    authority: String,
}

impl Server {
    /// With `log`, the server logs at that filter and every line is shown; without,
    /// at `info` and only errors are shown.
    /// The server takes `global`'s config file and overrides, as this command did.
    fn spawn(
        dir: &std::path::Path,
        log: Option<&str>,
        global: &GlobalArgs,
    ) -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?;
        let show_all = log.is_some();
        let mut command = Command::new(exe);
        if let Some(file) = &global.config {
            command.arg("--config").arg(file);
        }
        for o in &global.overrides {
            command.arg("--set").arg(o);
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", log.unwrap_or("info"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start sluice serve")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if show_all || line.contains("ERROR") {
                    eprintln!("server: {line}");
                }
                if let Some(rest) = line.split("listen=").nth(1) {
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = tx.send(addr);
                }
            }
        });
        let authority = rx
            .recv_timeout(Duration::from_secs(60))
            .context("sluice serve did not say where it listens")?;
        Ok(Server { child, authority })
    }

    fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("sluice serve exited with {status}");
        }
        Ok(())
    }
}

/// Nanoseconds since `start`, never 0 (0 means "not yet").
fn stamp(start: Instant) -> u64 {
    (start.elapsed().as_nanos() as u64).max(1)
}

/// Waits until the view has applied everything its sources hold.
async fn view_caught_up(url: &str, view: &str) -> anyhow::Result<()> {
    let (url, view) = (url.to_string(), view.to_string());
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let mut r = ureq::get(&format!("{url}/views/{view}")).call()?;
            let status: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
            if status["status"] == "running" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the view {view} did not catch up: {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await?
}

pub async fn run(
    args: BenchFreshnessArgs,
    global: &GlobalArgs,
    config: &Config,
) -> anyhow::Result<()> {
    if args.duration == 0 || args.max_seconds < 2 || !(args.fraction > 0.0 && args.fraction <= 1.0)
    {
        bail!("--duration must be positive, --max-seconds at least 2, --fraction in (0, 1]");
    }
    if args.rate == Some(0) {
        bail!("--rate must be positive");
    }
    if let Some(filter) = &args.server_log {
        tracing_subscriber::EnvFilter::try_new(filter)
            .map_err(|e| anyhow::anyhow!("--server-log {filter:?} is not a log filter: {e}"))?;
    }
    let dir = &args.data_dir;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} is not empty: give bench freshness a fresh dir",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let server = Server::spawn(dir, args.server_log.as_deref(), global)?;
    let authority = server.authority.clone();
    let url = format!("http://{authority}");
    let u = url.clone();
    tokio::task::spawn_blocking(move || driver::register(&u)).await??;

    let mut shop = Shop::new(args.seed, driver::now_ms() as u64);
    eprintln!("publishing the catalog ({} products)...", args.products);
    let d = Driver::start(&authority, None).await?;
    driver::publish_all(&d, shop.catalog(args.products, driver::now_ms())).await?;
    d.finish().await?;
    view_caught_up(&url, "product_listing").await?;

    eprintln!(
        "publishing as fast as the server takes it for {} s...",
        args.max_seconds
    );
    let d = Driver::start(&authority, None).await?;
    let stats = d.stats.clone();
    let warm = Duration::from_secs(1);
    driver::flood(&mut shop, &d, warm).await?;
    let (from, at) = (stats.published(), Instant::now());
    driver::flood(&mut shop, &d, Duration::from_secs(args.max_seconds - 1)).await?;
    let max = (stats.published() - from) as f64 / at.elapsed().as_secs_f64();
    d.finish().await?;
    view_caught_up(&url, "product_listing").await?;

    let rate = args.rate.unwrap_or(((max * args.fraction) as u64).max(1));
    let fraction = rate as f64 / max;
    let total = rate * args.duration;
    eprintln!(
        "publishing {rate} events/s ({fraction:.2} of {max:.0}) for {} s...",
        args.duration
    );
    let pid = server.child.id();
    let own = std::process::id();
    let (cpu, switches) = (process_cpu_seconds(pid), context_switches(pid));
    let client_cpu = process_cpu_seconds(own);
    let measured = measure(&mut shop, &authority, &url, rate, total).await?;
    let client_cpu = process_cpu_seconds(own) - client_cpu;
    let cpu = process_cpu_seconds(pid) - cpu;
    let switches = context_switches(pid).saturating_sub(switches);
    server.stop()?;
    let report = Report {
        max_events_per_sec: max.round(),
        fraction: round2(fraction),
        events_per_sec: rate,
        seconds: args.duration,
        catalog_products: args.products,
        durability: config.log.durability.to_string(),
        server_cpu_us_per_event: round2(cpu * 1e6 / total as f64),
        server_context_switches_per_1k_events: round2(switches as f64 * 1e3 / total as f64),
        client_cpu_us_per_event: round2(client_cpu * 1e6 / total as f64),
        ..measured
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The measured phase: `total` events at `rate`, their arrival at a subscriber and in
/// the view.
async fn measure(
    shop: &mut Shop,
    authority: &str,
    url: &str,
    rate: u64,
    total: u64,
) -> anyhow::Result<Report> {
    let slots = |n| Arc::new((0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
    let (acked, received) = (slots(total), slots(total));
    let base = shop.next_seq();
    let start = Instant::now();

    let (u, types) = (url.to_string(), EVENT_TYPES.to_vec());
    let sub = tokio::task::spawn_blocking(move || subscribe_all(&u, &types)).await??;
    let params = serde_json::json!({"batch_limit": 1, "batch_flush_timeout": 1,
        "max_uncommitted_events": 1_000_000});
    let mut stream = StreamClient::open(authority, &sub, &params).await?;
    // How many events the subscriber waits for: known once the publishing ended.
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    // The stream's first line (a keep-alive after batch_flush_timeout): it is under
    // way. Events published before that wait for the first line, which the server
    // holds back ~0.2 s (see sluice-http's streaming.rs): not what this measures.
    let (attached, ready) = tokio::sync::oneshot::channel::<()>();
    let subscriber = {
        let (received, authority, prefix) = (
            received.clone(),
            authority.to_string(),
            shop.eid_prefix().to_string(),
        );
        let expected = expected.clone();
        tokio::spawn(async move {
            let mut committer = Committer::new(&authority, &sub, COMMIT_EVERY).await?;
            let mut count = 0u64;
            let mut give_up = Instant::now() + Duration::from_secs(3600);
            let mut attached = Some(attached);
            while count < expected.load(Ordering::Relaxed) && Instant::now() < give_up {
                let read = stream.read(|line| {
                    if let Some(tell) = attached.take() {
                        let _ = tell.send(());
                    }
                    let Ok(l) = serde_json::from_slice::<Line>(line) else {
                        return;
                    };
                    let now = stamp(start);
                    for e in l.events.iter().flatten() {
                        let seq = eid_seq(e.get(), &prefix).and_then(|s| s.checked_sub(base));
                        if let Some(i) = seq.filter(|i| *i < total) {
                            received[i as usize].store(now, Ordering::Relaxed);
                            count += 1;
                        }
                    }
                    committer.note(&l);
                });
                match tokio::time::timeout(Duration::from_secs(2), read).await {
                    Ok(more) => {
                        if !more? {
                            break;
                        }
                    }
                    // Nothing for 2 s after the publishing ended: 10 s more at most.
                    Err(_) if expected.load(Ordering::Relaxed) < u64::MAX => {
                        give_up = give_up.min(Instant::now() + Duration::from_secs(10));
                    }
                    Err(_) => {}
                }
                committer.commit_if_due(&stream.id).await?;
            }
            anyhow::Ok(count)
        })
    };

    let reads = Arc::new(ViewReads::new(authority));
    let on_ack: OnAck = {
        let (acked, reads) = (acked.clone(), reads.clone());
        Arc::new(move |a: &Acked<'_>| {
            let at = (a.at.saturating_duration_since(start).as_nanos() as u64).max(1);
            for e in a.events {
                if let Some(i) = e.seq.checked_sub(base).filter(|i| *i < total) {
                    acked[i as usize].store(at, Ordering::Relaxed);
                }
            }
            if matches!(a.kind, PRODUCT | OFFER | STOCK)
                && let (Some(written), Some(sku)) =
                    (a.written, a.events.last().and_then(|e| e.sku.as_deref()))
            {
                reads.clone().start(sku, written, a.at);
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .context("the subscription stream sent nothing for 30 s")?
        .context("the subscription stream ended")?;
    let d = Driver::start(authority, Some(on_ack)).await?;
    let for_ = Duration::from_secs_f64(total as f64 / rate as f64);
    let sleeper =
        std::thread::spawn(move || super::lookups::sleep_jitter(Duration::from_millis(1), for_));
    let stats = d.stats.clone();
    let progress = driver::progress(stats.clone(), Duration::from_secs(5));
    let stop = std::sync::atomic::AtomicBool::new(false);
    driver::pace(shop, &d, rate, Some(total), &stop).await?;
    d.finish().await?;
    progress.abort();
    let published = acked
        .iter()
        .filter(|a| a.load(Ordering::Relaxed) > 0)
        .count();
    expected.store(published as u64, Ordering::Relaxed);
    let got = subscriber.await??;
    let (view_ms, not_caught_up) = reads.finish().await;

    let mut to_subscriber = Vec::with_capacity(total as usize);
    for (a, r) in acked.iter().zip(received.iter()) {
        let (a, r) = (a.load(Ordering::Relaxed), r.load(Ordering::Relaxed));
        if a > 0 && r > 0 {
            to_subscriber.push(Duration::from_nanos(r.saturating_sub(a)));
        }
    }
    let mut view_ms = view_ms;
    let mut late = sleeper
        .join()
        .map_err(|_| anyhow::anyhow!("the sleeping thread panicked"))?;
    Ok(Report {
        max_events_per_sec: 0.0,
        fraction: 0.0,
        events_per_sec: rate,
        seconds: 0,
        events: total,
        refused: stats.failed.load(Ordering::Relaxed),
        received: got,
        publish_to_subscriber_ms: Percentiles::of(&mut to_subscriber),
        view_reads: view_ms.len() as u64,
        view_reads_not_caught_up: not_caught_up,
        publish_to_view_ms: Percentiles::of(&mut view_ms),
        wakeup_late_ms: Percentiles::of(&mut late),
        server_cpu_us_per_event: 0.0,
        server_context_switches_per_1k_events: 0.0,
        client_cpu_us_per_event: 0.0,
        catalog_products: 0,
        durability: String::new(),
    })
}

/// The event number in an event's eid, when the eid is the shop's.
fn eid_seq(event: &str, prefix: &str) -> Option<u64> {
    let at = event.find("\"eid\":\"")? + 7;
    let eid = event.get(at..at + 36)?;
    u64::from_str_radix(eid.strip_prefix(prefix)?, 16).ok()
}

/// A subscription over `types`, read from their ends, in a consumer group of its own.
fn subscribe_all(url: &str, types: &[&str]) -> anyhow::Result<String> {
    let group = format!("freshness-{}", driver::now_ms());
    let body = serde_json::json!({"owning_application": "sluice-bench", "event_types": types,
        "consumer_group": group, "read_from": "end"});
    let mut r = ureq::post(&format!("{url}/subscriptions"))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())?;
    let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
    v["id"]
        .as_str()
        .map(String::from)
        .context("no subscription id")
}

/// Reads of the product listing that wait for a batch's cursors: at most `MAX` at
/// once (a batch acknowledged while all are busy is not sampled), over a pool of
/// keep-alive connections.
struct ViewReads {
    authority: String,
    slots: Arc<tokio::sync::Semaphore>,
    pool: Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
    delays: Mutex<Vec<Duration>>,
    not_caught_up: AtomicU64,
}

/// How often the subscriber commits its cursors.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

const MAX_READS: u32 = 64;

impl ViewReads {
    fn new(authority: &str) -> ViewReads {
        ViewReads {
            authority: authority.to_string(),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_READS as usize)),
            pool: Mutex::new(Vec::new()),
            delays: Mutex::new(Vec::new()),
            not_caught_up: AtomicU64::new(0),
        }
    }

    fn start(self: Arc<Self>, sku: &str, written: &str, acked: Instant) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        let (sku, written) = (sku.to_string(), written.to_string());
        tokio::spawn(async move {
            let _permit = permit;
            match self.read(&sku, &written).await {
                Ok(true) => self.delays.lock().expect("delays").push(acked.elapsed()),
                Ok(false) => {
                    self.not_caught_up.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => eprintln!("a view read failed: {e:#}"),
            }
        });
    }

    /// Whether the view had applied `written` when it answered.
    async fn read(&self, sku: &str, written: &str) -> anyhow::Result<bool> {
        let pooled = self.pool.lock().expect("pool").pop();
        let mut conn = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => connect(&self.authority).await?,
        };
        let req = Request::get(format!("/views/product_listing/rows/{sku}?wait_ms=10000"))
            .header("host", &self.authority)
            .header("x-sluice-wait-for", written)
            .body(Full::new(Bytes::new()))?;
        let resp = conn.send_request(req).await?;
        let caught_up = resp
            .headers()
            .get("x-sluice-caught-up")
            .is_some_and(|v| v == "true");
        resp.into_body().collect().await?;
        self.pool.lock().expect("pool").push(conn);
        Ok(caught_up)
    }

    /// Waits for the reads under way; the delays and how many did not catch up.
    async fn finish(&self) -> (Vec<Duration>, u64) {
        let _all = self.slots.acquire_many(MAX_READS).await;
        let delays = std::mem::take(&mut *self.delays.lock().expect("delays"));
        (delays, self.not_caught_up.load(Ordering::Relaxed))
    }
}
