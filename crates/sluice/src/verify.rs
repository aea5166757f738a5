//! `sluice verify`: check every segment of a data dir, read-only.

use anyhow::{Context, bail};
use sluice_log::embedded::verify_dir;

use crate::config::Config;

pub fn run(config: &Config) -> anyhow::Result<()> {
    let dir = &config.data_dir;
    if !dir.join("topics").is_dir() {
        bail!(
            "{} is not a Sluice data dir (no topics/ inside)",
            dir.display()
        );
    }
    let report = verify_dir(dir).with_context(|| format!("cannot verify {}", dir.display()))?;
    println!(
        "{}: {} topics, {} partitions, {} segments, {} bytes",
        dir.display(),
        report.topics,
        report.partitions,
        report.segments,
        report.bytes
    );
    for s in &report.stale_indexes {
        println!(
            "index missing or stale (rebuilt on next open): {}",
            s.display()
        );
    }
    if report.wal_records > 0 {
        println!(
            "{} write-ahead records are written again into their segments at the next open",
            report.wal_records
        );
    }
    for d in &report.damage {
        println!(
            "DAMAGE {} at byte {}: {}",
            d.path.display(),
            d.position,
            d.reason
        );
    }
    if !report.damage.is_empty() {
        bail!(
            "{} damaged segment(s); in an active segment the tail is cut off at the next open \
             (after the write-ahead records above, if any, are written again)",
            report.damage.len()
        );
    }
    println!("ok");
    Ok(())
}
