//! `sluice bench views`: the enriched-product view (products JOIN prices JOIN stock
//! summed per sku) built from the log, then read by key over HTTP while updates keep
//! coming, then restored from its state file. Everything but the lookup client and the
//! restore runs in this process, on an embedded log in `--data-dir`.
//!
//! - build: N products, N prices and 2N stock rows, then M random price and stock
//!   updates, are published; the view is created and timed until it has applied
//!   them all (read from the log, parsed, applied: a rebuild's real cost).
//! - lookups: GET /views/product_listing/rows/{sku} at a fixed rate, on an open loop
//!   (latency counts from when a request was due), while prices change, sent by
//!   `sluice bench lookups` in a process of its own.
//! - restore: the view's state file is read back and decoded by `sluice bench
//!   view-restore` in a fresh process (as on a node starting from a snapshot), after
//!   this one removed the built view and gave its memory back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;
use sluice_bus::{Bus, BusConfig, Publisher};
use sluice_log::{EmbeddedConfig, EmbeddedLog, Log};
use sluice_views::{Views, ViewsConfig};

use super::cpus::{self, OnOneCpu};
use super::measure::{
    Percentiles, available_mb, context_switches, cpu_seconds, meminfo_mb, memory_mb, round2,
};
use crate::cli::{BenchViewRestoreArgs, BenchViewsArgs};

pub const SQL: &str = r#"CREATE VIEW product_listing AS
SELECT p.sku, p.name, p.brand, pr.amount AS price, COALESCE(s.qty, 0) AS stock
FROM "bench.product" p
JOIN "bench.price" pr ON pr.sku = p.sku
LEFT JOIN (SELECT sku, SUM(qty) AS qty FROM "bench.stock" GROUP BY sku) s ON s.sku = p.sku"#;

#[derive(Debug, Serialize)]
struct Report {
    keys: u64,
    source_events: u64,
    build_seconds: f64,
    source_events_per_sec: f64,
    /// The CPUs the build's threads could run on (1 with `--build-cpu`).
    build_cpus: u32,
    /// Process CPU seconds (all threads) while the view was built.
    build_cpu_seconds: f64,
    source_events_per_cpu_sec: f64,
    /// Times a thread of the process went off a core during the build (those of
    /// threads that ended during it left out).
    build_context_switches: u64,
    /// Visible row changes the build made: one per key, as a view catching up reads
    /// its sources one after the other (`Plan::catch_up_ranks`), the product last.
    build_row_changes: u64,
    /// The engine's changes behind them (retractions and insertions before they are
    /// summed per key): the build's work, which the same read order makes the same.
    build_engine_changes: u64,
    lookup_rate: u64,
    /// Where the lookups were sent from.
    lookup_client: &'static str,
    lookups: u64,
    lookup_errors: u64,
    /// From when each lookup was due (open loop).
    lookup_latency_ms: Percentiles,
    /// From each lookup's send to its response.
    lookup_service_ms: Percentiles,
    /// How late lookups went out, and how late an idle sleeper on the same schedule
    /// wakes (the machine's floor; measured by the client process only).
    lookup_sent_late_ms: Percentiles,
    idle_wakeup_late_ms: Percentiles,
    /// How late a thread of the client that only sleeps in 1 ms steps woke up during
    /// the lookups (the machine's floor under their tail, at the same time).
    idle_wakeup_late_during_lookups_ms: Percentiles,
    /// CPU time per lookup of this process (the server, with the updates and the
    /// view applying them) and of the client's process; with `--lookups-in-process`
    /// both are this process's, the client's included.
    lookup_server_cpu_us: f64,
    lookup_client_cpu_us: f64,
    updates_during_lookups: u64,
    /// A fresh process: until the view's rows answer from its state file.
    restore_serving_seconds: f64,
    /// A key lookup answered from the state file (while the state loads).
    frozen_lookup_us: f64,
    /// A fresh process: until the whole state is in memory, ready to apply events.
    restore_seconds: f64,
    state_mb: f64,
    /// Resident memory before the view was built, and after.
    rss_mb_before_view: f64,
    rss_mb: f64,
    /// Resident memory of the restoring process once it holds the view.
    restore_rss_mb: f64,
    /// The machine's memory as the restoring process started.
    restore_started_with: RestoreMemory,
    peak_rss_mb: f64,
}

/// Memory as a restore starts: a restore that must take its pages from the page
/// cache rather than from free memory runs slower (on the VM of BENCHMARKS.md, 10M
/// keys in `bench view-restore`: 4.4-5.4 s with 12 GB free, 8.7-10.0 s with 2-5 GB
/// free and the rest cached).
#[derive(Debug, Serialize)]
struct RestoreMemory {
    free_mb: f64,
    page_cache_mb: f64,
    /// This process's resident memory, the built view removed.
    bench_rss_mb: f64,
}

impl RestoreMemory {
    fn now() -> RestoreMemory {
        RestoreMemory {
            free_mb: meminfo_mb("MemFree:").unwrap_or(0.0),
            page_cache_mb: meminfo_mb("Cached:").unwrap_or(0.0),
            bench_rss_mb: memory_mb("self", "VmRSS:").unwrap_or(0.0),
        }
    }
}

fn data_type(name: &str, keys: &[&str]) -> sluice_schema::EventType {
    let properties: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| (k.to_string(), json!({"type": "string"})))
        .collect();
    let schema = json!({"type": "object", "properties": properties, "required": keys});
    serde_json::from_value(json!({
        "name": name, "owning_application": "bench", "category": "data",
        "enrichment_strategies": ["metadata_enrichment"], "partition_strategy": "hash",
        "partition_key_fields": keys, "partition_count": 4,
        "schema": {"type": "json_schema", "schema": schema.to_string()}
    }))
    .expect("a valid event type")
}

/// A data change event as JSON text.
fn event(n: u64, op: &str, data: &serde_json::Value) -> String {
    format!(
        r#"{{"metadata":{{"eid":"00000000-0000-4000-8000-{n:012x}","occurred_at":"2026-11-23T10:00:00Z"}},"data_type":"x","data_op":"{op}","data":{data}}}"#
    )
}

/// The sources' events in the order `bench views` publishes them, in batches of one
/// event type: per 2,000 keys their products, their prices and two stock rows each;
/// then the updates, per 2,000 random picks the price updates among them and the
/// stock updates. Made as they are taken (10M keys do not fit in memory as JSON).
pub(super) fn source_batches(
    keys: u64,
    updates: u64,
) -> impl Iterator<Item = (&'static str, Vec<serde_json::Value>)> {
    const CHUNK: u64 = 2000;
    let sku = |i: u64| format!("sku-{i:09}");
    let catalog = (0..keys).step_by(CHUNK as usize).flat_map(move |from| {
        let to = (from + CHUNK).min(keys);
        let products = (from..to)
            .map(|i| json!({"sku": sku(i), "name": format!("Product {i}"), "brand": format!("brand-{}", i % 50)}))
            .collect();
        let prices = (from..to)
            .map(|i| json!({"sku": sku(i), "amount": 1000 + i % 9000}))
            .collect();
        let stock = (from..to)
            .flat_map(|i| {
                [
                    json!({"sku": sku(i), "location": "berlin", "qty": i % 20}),
                    json!({"sku": sku(i), "location": "paris", "qty": i % 7}),
                ]
            })
            .collect();
        [
            ("bench.product", products),
            ("bench.price", prices),
            ("bench.stock", stock),
        ]
    });
    let mut rng = fastrand::Rng::with_seed(42);
    let mut left = updates;
    let changes = std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(CHUNK);
        left -= n;
        let picks: Vec<(u64, bool)> = (0..n).map(|_| (rng.u64(..keys), rng.bool())).collect();
        let prices = picks
            .iter()
            .filter(|x| x.1)
            .map(|&(i, _)| json!({"sku": sku(i), "amount": 500 + i % 700}))
            .collect();
        let stock = picks
            .iter()
            .filter(|x| !x.1)
            .map(|&(i, _)| json!({"sku": sku(i), "location": "berlin", "qty": i % 11}))
            .collect();
        Some([("bench.price", prices), ("bench.stock", stock)])
    })
    .flatten();
    catalog
        .chain(changes)
        .filter(|(_, batch): &(_, Vec<_>)| !batch.is_empty())
}

/// The sources, with their keys.
const SOURCES: &[(&str, &[&str])] = &[
    ("bench.product", &["sku"]),
    ("bench.price", &["sku"]),
    ("bench.stock", &["sku", "location"]),
];

/// The offset of the last event in every partition of the sources.
async fn last_offsets(bus: &Bus) -> anyhow::Result<Vec<(String, u32, u64)>> {
    let log = bus.log();
    let mut out = Vec::new();
    for (name, _) in SOURCES {
        let topic = sluice_log::TopicName::new(*name)?;
        let partitions = log.topic(&topic).await?.config.partitions;
        for p in 0..partitions {
            let latest = log
                .offsets(&topic, sluice_log::PartitionId(p))
                .await?
                .latest
                .0;
            if latest > 0 {
                out.push((name.to_string(), p, latest - 1));
            }
        }
    }
    Ok(out)
}

struct Publishing {
    bus: Arc<Bus>,
    seq: AtomicU64,
}

impl Publishing {
    async fn send(
        &self,
        event_type: &str,
        data: impl Iterator<Item = serde_json::Value>,
    ) -> anyhow::Result<u64> {
        let mut body = String::from("[");
        let mut n = 0;
        for d in data {
            if n > 0 {
                body.push(',');
            }
            body.push_str(&event(self.seq.fetch_add(1, Ordering::Relaxed), "U", &d));
            n += 1;
        }
        body.push(']');
        match self
            .bus
            .publish(event_type, body.as_bytes(), &Publisher::default())
            .await?
        {
            sluice_bus::Published::All(_) => Ok(n),
            other => bail!("publishing to {event_type}: {other:?}"),
        }
    }
}

pub async fn run(args: BenchViewsArgs) -> anyhow::Result<()> {
    if args.keys == 0 || args.lookup_rate == 0 || args.lookup_seconds == 0 {
        bail!("--keys, --lookup-rate and --lookup-seconds must be positive");
    }
    if let Some(cpu) = args.build_cpu {
        cpus::check(cpu).context("--build-cpu")?;
    }
    let dir = &args.data_dir;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} is not empty: give bench views a fresh dir",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let embedded = EmbeddedLog::open(dir.join("log"), EmbeddedConfig::default())
        .with_context(|| format!("cannot open a log in {}", dir.display()))?;
    let log: Arc<dyn Log> = Arc::new(embedded.clone());
    let bus = Arc::new(Bus::open(log.clone(), BusConfig::default()).await?);
    for (name, keys) in SOURCES {
        bus.create_event_type(data_type(name, keys)).await?;
    }
    let p = Arc::new(Publishing {
        bus: bus.clone(),
        seq: AtomicU64::new(1),
    });
    eprintln!(
        "publishing the sources ({} keys, {} updates)...",
        args.keys, args.updates
    );
    let mut source_events = 0;
    for (event_type, batch) in source_batches(args.keys, args.updates) {
        source_events += p.send(event_type, batch.into_iter()).await?;
    }

    // Build: the view reads everything from the log.
    let views = Arc::new(
        Views::open(
            bus.clone(),
            ViewsConfig {
                state_dir: Some(dir.join("views")),
                checkpoint_every: Duration::from_secs(3600),
                snapshot_dir: Some(dir.join("snapshots")),
                ..ViewsConfig::default()
            },
        )
        .await?,
    );
    let rss_before = memory_mb("self", "VmRSS:").unwrap_or(0.0);
    eprintln!("building the view from {source_events} events...");
    let pinned = args.build_cpu.map(OnOneCpu::pin).transpose()?;
    let build_cpus = cpus::allowed();
    let cpu_before = cpu_seconds();
    let switches_before = context_switches(std::process::id());
    let started = Instant::now();
    views
        .create(SQL, sluice_views::Policy::Skip, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Built once it has applied the last event of every source partition: waited for
    // as a read-your-writes read does (polling the status would read the log for
    // each partition's lag on every poll, on the view's cores).
    let written = last_offsets(&bus).await?;
    while !views
        .wait_for("product_listing", &written, Duration::from_secs(1))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {}
    let build = started.elapsed().as_secs_f64();
    let build_cpu = cpu_seconds() - cpu_before;
    // Threads that ended meanwhile take their counts with them: at least this many.
    let build_context_switches =
        context_switches(std::process::id()).saturating_sub(switches_before);
    drop(pinned);
    let status = views
        .status("product_listing")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let keys = status["rows"].as_u64().unwrap_or(0);
    let build_row_changes = status["row_changes"].as_u64().unwrap_or(0);
    let build_engine_changes = status["engine_changes"].as_u64().unwrap_or(0);
    let rss = memory_mb("self", "VmRSS:").unwrap_or(0.0);

    // Lookups over HTTP while prices change.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sluice_http::serve(
        listener,
        bus.clone(),
        views.clone(),
        sluice_http::ApiOptions::default(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let stop_updates = Arc::new(AtomicBool::new(false));
    let updater = {
        let (p, stop) = (p.clone(), stop_updates.clone());
        let keys_n = args.keys;
        let rate = args.update_rate;
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(7);
            let mut sent = 0u64;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && rate > 0 {
                // Batches of 10 on schedule.
                let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let batch: Vec<serde_json::Value> = (0..10)
                    .map(|_| {
                        let i = rng.u64(..keys_n);
                        json!({"sku": format!("sku-{i:09}"), "amount": 100 + rng.u64(..900)})
                    })
                    .collect();
                sent += p.send("bench.price", batch.into_iter()).await.unwrap_or(0);
            }
            sent
        })
    };
    let cpu_before_lookups = cpu_seconds();
    let (lookup, client) = if args.lookups_in_process {
        let l = super::lookups::lookups(
            addr.to_string(),
            args.keys,
            args.lookup_rate,
            args.lookup_seconds,
            16,
        )
        .await?;
        (l.report(args.lookup_rate, Vec::new()), "in process")
    } else {
        let mut client = std::process::Command::new(std::env::current_exe()?);
        client
            .args(["bench", "lookups", "--url", &format!("http://{addr}")])
            .args(["--keys", &args.keys.to_string()])
            .args(["--rate", &args.lookup_rate.to_string()])
            .args(["--seconds", &args.lookup_seconds.to_string()])
            .stderr(std::process::Stdio::inherit());
        let out = tokio::task::spawn_blocking(move || client.output())
            .await?
            .context("cannot start the lookup client")?;
        if !out.status.success() {
            bail!("the lookup client failed: {}", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let r: super::lookups::LookupsReport =
            serde_json::from_str(text.lines().last().unwrap_or_default())
                .with_context(|| format!("the lookup client printed {text:?}"))?;
        (r, "own process")
    };
    let lookup_cpu = cpu_seconds() - cpu_before_lookups;
    stop_updates.store(true, Ordering::Relaxed);
    let updates = updater.await?;
    let _ = stop_tx.send(());
    server.await??;

    // Restore: the state written whole, then read back and decoded.
    let path = views
        .snapshot("product_listing")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let state_bytes = std::fs::metadata(&path)?.len();
    // The restore runs in a fresh process, as on a node that starts from a snapshot;
    // this one first removes the built view and gives its memory back (at most 30 s).
    views
        .delete("product_listing")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let released = Instant::now() + Duration::from_secs(30);
    while views.status("product_listing").await.is_ok() && Instant::now() < released {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(views);
    // Until the resident memory is back to within half the view's, or stops falling
    // (three seconds without 1 MB less; at most 60 s). What the allocator keeps of
    // it is reported (`restore_started_with`): at 10M keys mimalloc kept 5.5 GB of
    // the removed view here, so the restoring process took its pages from the page
    // cache (the benchmark's own log) instead of free memory, which on the VM of
    // BENCHMARKS.md costs seconds of clearing pages (restore 7.4-9.7 s, against
    // 4.5-5.6 s with `MIMALLOC_PURGE_DELAY=0`, which gave 3 GB of it back).
    let settled = Instant::now() + Duration::from_secs(60);
    let given_back = rss_before + (rss - rss_before) / 2.0;
    let mut low = memory_mb("self", "VmRSS:").unwrap_or(0.0);
    let mut still = 0;
    while low > given_back && still < 30 && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = memory_mb("self", "VmRSS:").unwrap_or(0.0);
        if now < low - 1.0 {
            (low, still) = (now, 0);
        } else {
            still += 1;
        }
    }
    // The restored view takes about as much memory as the built one: wait (at most a
    // minute more) until the machine has it, rather than have the restoring process
    // killed for want of it.
    let need_mb = rss - rss_before;
    let enough = Instant::now() + Duration::from_secs(60);
    while available_mb().is_some_and(|a| a < need_mb * 1.1) && Instant::now() < enough {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(a) = available_mb().filter(|a| *a < need_mb * 1.1) {
        eprintln!(
            "warning: {a:.0} MB available for a restore that needs about {need_mb:.0} MB; this process holds {:.0} MB",
            memory_mb("self", "VmRSS:").unwrap_or(0.0)
        );
    }
    let restore_started_with = RestoreMemory::now();
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child
        .args(["bench", "view-restore", "--state"])
        .arg(&path)
        .args(["--keys", &keys.to_string()])
        .stderr(std::process::Stdio::inherit());
    let out = tokio::task::spawn_blocking(move || child.output())
        .await?
        .context("cannot start the restoring process")?;
    if !out.status.success() {
        bail!("the restoring process failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let restored: RestoreReport = serde_json::from_str(text.lines().last().unwrap_or_default())
        .with_context(|| format!("the restoring process printed {text:?}"))?;
    bus.shutdown().await;
    log.flush().await?;
    tokio::task::spawn_blocking(move || embedded.close()).await??;

    let report = Report {
        keys,
        source_events,
        build_seconds: round2(build),
        source_events_per_sec: (source_events as f64 / build).round(),
        build_cpus,
        build_cpu_seconds: round2(build_cpu),
        source_events_per_cpu_sec: (source_events as f64 / build_cpu.max(0.01)).round(),
        build_context_switches,
        build_row_changes,
        build_engine_changes,
        lookup_rate: args.lookup_rate,
        lookup_client: client,
        lookups: lookup.lookups,
        lookup_errors: lookup.errors,
        lookup_latency_ms: lookup.latency_ms,
        lookup_service_ms: lookup.service_ms,
        lookup_sent_late_ms: lookup.sent_late_ms,
        idle_wakeup_late_ms: lookup.idle_wakeup_late_ms,
        idle_wakeup_late_during_lookups_ms: lookup.idle_wakeup_late_during_ms,
        lookup_server_cpu_us: super::lookups::per_lookup_us(lookup_cpu, lookup.lookups as usize),
        lookup_client_cpu_us: lookup.client_cpu_us_per_lookup,
        updates_during_lookups: updates,
        restore_serving_seconds: restored.restore_serving_seconds,
        frozen_lookup_us: restored.frozen_lookup_us,
        restore_seconds: restored.restore_seconds,
        restore_rss_mb: restored.rss_mb,
        restore_started_with,
        state_mb: round2(state_bytes as f64 / 1e6),
        rss_mb_before_view: rss_before,
        rss_mb: rss,
        peak_rss_mb: memory_mb("self", "VmHWM:").unwrap_or(0.0),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// What `bench view-restore` prints.
#[derive(Debug, Serialize, serde::Deserialize)]
struct RestoreReport {
    keys: u64,
    /// Reading and checking the file until its rows answer lookups.
    restore_serving_seconds: f64,
    /// The mean time of a key lookup answered from the file.
    frozen_lookup_us: f64,
    /// Reading the file and decoding it into a view (the file's lookups not counted).
    restore_seconds: f64,
    rss_mb: f64,
}

/// The bench's event types as view sources: data change tables keyed as
/// `bench views` creates them (its SQL compiles to the same plan here, without a bus).
pub(super) struct BenchCatalog;

impl sluice_views::Catalog for BenchCatalog {
    fn source(&self, event_type: &str) -> Option<sluice_views::SourceInfo> {
        let (_, keys) = SOURCES.iter().find(|(name, _)| *name == event_type)?;
        Some(sluice_views::SourceInfo {
            kind: sluice_views::SourceKind::Table {
                key: keys.iter().map(|k| vec![k.to_string()]).collect(),
            },
            data_change: true,
        })
    }
}

pub fn run_restore(args: &BenchViewRestoreArgs) -> anyhow::Result<()> {
    let plan =
        Arc::new(sluice_views::compile(SQL, &BenchCatalog).map_err(|e| anyhow::anyhow!("{e}"))?);
    let started = Instant::now();
    // First the rows from the file, as a node answers reads while the state loads.
    let frozen = sluice_views::frozen::Frozen::open(plan.clone(), SQL, &args.state)?;
    if frozen.len() as u64 != args.keys {
        bail!(
            "the state file has {} keys, the view had {}",
            frozen.len(),
            args.keys
        );
    }
    let serving_seconds = started.elapsed().as_secs_f64();
    let mut rng = fastrand::Rng::with_seed(5);
    let probes = 100_000;
    let probing = Instant::now();
    for _ in 0..probes {
        let key = format!("sku-{:09}", rng.u64(..args.keys));
        if frozen.get(&key).is_none() {
            bail!("{key} is not in the state file");
        }
    }
    let frozen_lookup_us = probing.elapsed().as_secs_f64() * 1e6 / probes as f64;
    // Then the whole state from the same file, as a node loads it.
    let decoding = Instant::now();
    let restored = frozen.load()?;
    let restore_seconds = serving_seconds + decoding.elapsed().as_secs_f64();
    drop(frozen);
    let keys = restored.output().len() as u64;
    if keys != args.keys {
        bail!("restored {keys} keys, the view had {}", args.keys);
    }
    let report = RestoreReport {
        keys,
        restore_serving_seconds: round2(serving_seconds),
        frozen_lookup_us: round2(frozen_lookup_us),
        restore_seconds: round2(restore_seconds),
        rss_mb: memory_mb("self", "VmRSS:").unwrap_or(0.0),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
