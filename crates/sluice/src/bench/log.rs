//! `sluice bench log`: append, read back and reopen the embedded log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde::Serialize;
use sluice_log::{
    EmbeddedConfig, EmbeddedLog, FetchRequest, Log, PartitionId, Record, TopicConfig, TopicName,
};

use super::measure::{self, Percentiles, round2};
use crate::cli::BenchLogArgs;

#[derive(Debug, Serialize)]
struct Report {
    records: u64,
    record_bytes: usize,
    partitions: u32,
    batch: usize,
    concurrency: usize,
    durability: String,
    preallocate_bytes: u64,
    wal_bytes: u64,
    target_records_per_sec: u64,
    append_records_per_sec: f64,
    append_mb_per_sec: f64,
    append_latency_ms: Percentiles,
    read_records_per_sec: f64,
    read_mb_per_sec: f64,
    /// Mean of the two probes below.
    disk_write_mb_per_sec: Option<f64>,
    /// The disk probe before the append phase and after the reopen.
    disk_probes_mb_per_sec: Vec<f64>,
    append_to_disk_ratio: Option<f64>,
    read_to_disk_ratio: Option<f64>,
    log_bytes: u64,
    segments: usize,
    reopen_ms: f64,
    memory_index_entries: usize,
    rss_mb_after_reopen: f64,
}

pub async fn run(args: BenchLogArgs) -> anyhow::Result<()> {
    if args.record_bytes == 0
        || args.records == 0
        || args.partitions == 0
        || args.batch == 0
        || args.concurrency == 0
    {
        bail!(
            "--record-bytes, --records, --partitions, --batch and --concurrency must all be positive"
        );
    }
    let root = args
        .data_dir
        .join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let result = bench(&args, &root).await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&root);
    }
    let report = result?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn bench(args: &BenchLogArgs, root: &std::path::Path) -> anyhow::Result<Report> {
    let payload = args.records as f64 * args.record_bytes as f64;
    let probe = args
        .disk_probe_bytes
        .unwrap_or((payload as u64).clamp(1 << 20, 1 << 30));
    let mut probes = Vec::new();
    if probe > 0 {
        probes.push(probe_disk(root, probe)?);
    }
    let settings = EmbeddedConfig {
        durability: args.durability,
        preallocate_bytes: args.preallocate_bytes,
        wal_bytes: args.wal_bytes,
        ..EmbeddedConfig::default()
    };
    let dir = root.join("log");
    let log = EmbeddedLog::open(&dir, settings.clone())?;
    let topic = TopicName::new("bench")?;
    log.create_topic(&topic, TopicConfig::with_partitions(args.partitions))
        .await?;

    measure::settle_writeback();
    eprintln!(
        "appending {} records of {} bytes, {} partition(s), batches of {}, {} in flight per partition, durability {}",
        args.records,
        args.record_bytes,
        args.partitions,
        args.batch,
        args.concurrency,
        args.durability
    );
    let (append_elapsed, mut latencies) = append_phase(&log, &topic, args).await?;
    log.flush().await?;

    measure::settle_writeback(); // read from the page cache, not against writeback
    eprintln!("reading back");
    let started = Instant::now();
    let mut read_records = 0u64;
    let mut read_bytes = 0u64;
    for p in 0..args.partitions {
        let (n, b) = read_partition(&log, &topic, PartitionId(p)).await?;
        read_records += n;
        read_bytes += b;
    }
    let read_elapsed = started.elapsed();
    if read_records != args.records {
        bail!(
            "read back {read_records} records, appended {}",
            args.records
        );
    }
    let stats = log.stats();
    log.close()?;
    drop(log);

    eprintln!("reopening");
    let started = Instant::now();
    let log = EmbeddedLog::open(&dir, settings)?;
    let reopen = started.elapsed();
    let reopened = log.stats();
    let rss = measure::rss_mb();
    log.close()?;

    if probe > 0 {
        probes.push(probe_disk(root, probe)?);
    }
    let disk = (!probes.is_empty()).then(|| probes.iter().sum::<f64>() / probes.len() as f64);
    let append_mb = payload / append_elapsed.as_secs_f64() / 1e6;
    let read_mb = read_bytes as f64 / read_elapsed.as_secs_f64() / 1e6;
    Ok(Report {
        records: args.records,
        record_bytes: args.record_bytes,
        partitions: args.partitions,
        batch: args.batch,
        concurrency: args.concurrency,
        target_records_per_sec: args.rate,
        durability: args.durability.to_string(),
        preallocate_bytes: args.preallocate_bytes,
        wal_bytes: args.wal_bytes,
        append_records_per_sec: (args.records as f64 / append_elapsed.as_secs_f64()).round(),
        append_mb_per_sec: round2(append_mb),
        append_latency_ms: Percentiles::of(&mut latencies),
        read_records_per_sec: (read_records as f64 / read_elapsed.as_secs_f64()).round(),
        read_mb_per_sec: round2(read_mb),
        disk_write_mb_per_sec: disk.map(round2),
        disk_probes_mb_per_sec: probes.into_iter().map(round2).collect(),
        append_to_disk_ratio: disk.map(|d| round2(append_mb / d)),
        read_to_disk_ratio: disk.map(|d| round2(read_mb / d)),
        log_bytes: stats.bytes,
        segments: stats.segments,
        reopen_ms: round2(reopen.as_secs_f64() * 1000.0),
        memory_index_entries: reopened.memory_index_entries,
        rss_mb_after_reopen: round2(rss),
    })
}

/// The disk's write bandwidth, after letting earlier writeback finish.
fn probe_disk(root: &std::path::Path, bytes: u64) -> anyhow::Result<f64> {
    eprintln!(
        "measuring the disk: {} MiB sequential write + fdatasync",
        bytes >> 20
    );
    measure::settle_writeback();
    let mb = measure::disk_write_mb_per_sec(root, bytes)?;
    eprintln!("disk: {mb:.0} MB/s");
    Ok(mb)
}

/// Appends `args.records` records with `args.concurrency` appends in flight per
/// partition; returns the elapsed time and every append's latency. With `--rate`, each
/// appender sends its share on a fixed schedule and latency counts from when an append
/// was due, so queueing is not hidden.
async fn append_phase(
    log: &EmbeddedLog,
    topic: &TopicName,
    args: &BenchLogArgs,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let value = Bytes::from(vec![b'x'; args.record_bytes]);
    let per_partition = args.records / u64::from(args.partitions);
    let extra = args.records % u64::from(args.partitions);
    let started = Instant::now();
    let appenders = u64::from(args.partitions) * args.concurrency as u64;
    let interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(appenders as f64 * args.batch as f64 / args.rate as f64));
    let mut tasks = Vec::new();
    for p in 0..args.partitions {
        let remaining = Arc::new(AtomicU64::new(
            per_partition + u64::from(u64::from(p) < extra),
        ));
        for c in 0..args.concurrency {
            let (log, topic, value, remaining) =
                (log.clone(), topic.clone(), value.clone(), remaining.clone());
            let batch = args.batch as u64;
            let k = u64::from(p) * args.concurrency as u64 + c as u64;
            let offset = interval.map(|i| i.mul_f64(k as f64 / appenders as f64));
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for n in 0u32.. {
                    let due = interval.zip(offset).map(|(i, o)| started + o + i * n);
                    if let Some(due) = due {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let take = remaining
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                            r.checked_sub(r.min(batch)).filter(|_| r > 0)
                        })
                        .map(|r| r.min(batch));
                    let Ok(n) = take else { break };
                    let records = (0..n).map(|_| Record::value(value.clone())).collect();
                    let t0 = due.unwrap_or_else(Instant::now);
                    log.append(&topic, PartitionId(p), records).await?;
                    latencies.push(t0.elapsed());
                }
                anyhow::Ok(latencies)
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((started.elapsed(), all))
}

async fn read_partition(
    log: &EmbeddedLog,
    topic: &TopicName,
    p: PartitionId,
) -> anyhow::Result<(u64, u64)> {
    let mut from = log.offsets(topic, p).await?.earliest;
    let (mut n, mut bytes) = (0u64, 0u64);
    loop {
        let f = log
            .fetch(
                topic,
                p,
                FetchRequest::new(from)
                    .max_records(1 << 20)
                    .max_bytes(8 << 20),
            )
            .await?;
        if f.records.is_empty() {
            return Ok((n, bytes));
        }
        n += f.records.len() as u64;
        bytes += f
            .records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
            .sum::<u64>();
        from = f.next;
    }
}
