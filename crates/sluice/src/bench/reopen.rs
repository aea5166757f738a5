//! `sluice bench reopen`: how fast an existing log opens, and what it holds in memory.

use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;
use sluice_log::EmbeddedLog;

use super::measure::{self, round2};
use crate::cli::BenchReopenArgs;
use crate::config::Config;

#[derive(Debug, Serialize)]
struct Report {
    log_bytes: u64,
    topics: usize,
    partitions: usize,
    segments: usize,
    open_ms: f64,
    memory_index_entries: usize,
    rss_mb_before_open: f64,
    rss_mb_after_open: f64,
}

pub fn run(args: &BenchReopenArgs, config: &Config) -> anyhow::Result<()> {
    if !args.data_dir.join("topics").is_dir() {
        bail!(
            "{} is not a Sluice data dir (no topics/ inside)",
            args.data_dir.display()
        );
    }
    let before = measure::rss_mb();
    let started = Instant::now();
    let log = EmbeddedLog::open(&args.data_dir, config.log.clone())
        .with_context(|| format!("cannot open {}", args.data_dir.display()))?;
    let open = started.elapsed();
    let after = measure::rss_mb();
    let stats = log.stats();
    log.close()?;
    let report = Report {
        log_bytes: stats.bytes,
        topics: stats.topics,
        partitions: stats.partitions,
        segments: stats.segments,
        open_ms: round2(open.as_secs_f64() * 1000.0),
        memory_index_entries: stats.memory_index_entries,
        rss_mb_before_open: round2(before),
        rss_mb_after_open: round2(after),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
