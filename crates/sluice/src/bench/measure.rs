//! Measuring helpers: latency percentiles, the disk's own write bandwidth, RSS, CPU time.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Percentiles {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            (samples[i].as_secs_f64() * 1_000_000.0).round() / 1000.0
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }
}

/// The disk's sequential write bandwidth in MB/s (10^6 bytes), measured like
/// `dd if=/dev/zero of=FILE bs=1M count=N conv=fdatasync`: 1 MiB writes, one
/// fdatasync at the end, timed until it returns.
pub fn disk_write_mb_per_sec(dir: &Path, bytes: u64) -> std::io::Result<f64> {
    let path = dir.join("disk-probe.bin");
    let chunk = vec![0u8; 1 << 20];
    let started = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    let mut written = 0u64;
    while written < bytes {
        file.write_all(&chunk)?;
        written += chunk.len() as u64;
    }
    file.sync_data()?;
    let secs = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(written as f64 / secs / 1e6)
}

/// Waits until the kernel has written back dirty pages (sync(1)), so that one phase
/// does not pay for the previous phase's writeback.
pub fn settle_writeback() {
    if let Err(e) = std::process::Command::new("sync").status() {
        eprintln!("warning: cannot run sync ({e}); figures may include earlier writeback");
    }
}

/// Resident set size of this process in MB, from /proc/self/status.
pub fn rss_mb() -> f64 {
    memory_mb("self", "VmRSS:").unwrap_or(0.0)
}

/// CPU seconds this process used so far (user + system, all threads), from
/// /proc/self/stat (clock ticks of 1/100 s).
pub fn cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/self/stat")
}

/// CPU seconds process `pid` used so far (all threads).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// Context switches (voluntary and not) of all threads of process `pid` so far:
/// each is a thread going off a core, to wait or because another needed it.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let count = |status: String| -> u64 {
        status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
            .sum()
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(count)
        .sum()
}

fn stat_cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // After the command name (in parentheses), utime and stime are fields 12 and 13.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The calling thread's CPU seconds (user and system; 10 ms ticks).
pub fn thread_cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/thread-self/stat")
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Memory the kernel can give a process now without swapping (MemAvailable), in MB.
pub fn available_mb() -> Option<f64> {
    meminfo_mb("MemAvailable:")
}

/// A field of /proc/meminfo (`MemFree:`, `Cached:`...), in MB.
pub fn meminfo_mb(field: &str) -> Option<f64> {
    mb_field(&std::fs::read_to_string("/proc/meminfo").ok()?, field)
}

/// A `field:  N kB` line of a /proc file, in MB.
fn mb_field(text: &str, field: &str) -> Option<f64> {
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(round2(kb / 1024.0))
}

/// A process's (`self` or a pid) resident memory in MB from /proc: `field` is
/// `VmRSS:` (now) or `VmHWM:` (peak).
pub fn memory_mb(process: &str, field: &str) -> Option<f64> {
    mb_field(
        &std::fs::read_to_string(format!("/proc/{process}/status")).ok()?,
        field,
    )
}

/// `--url` as the base URL (no trailing slash) and its `host:port`.
pub fn server(url: &str) -> anyhow::Result<(String, String)> {
    let base = url.trim_end_matches('/').to_string();
    let authority = base
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.authority().map(ToString::to_string))
        .ok_or_else(|| anyhow::anyhow!("--url must be a URL such as http://127.0.0.1:8080"))?;
    Ok((base, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_samples() {
        let mut s: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut s);
        assert_eq!(p.p50, 500.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
        assert_eq!(p.max, 1000.0);
        assert_eq!(Percentiles::of(&mut []).p99, 0.0);
    }
}
