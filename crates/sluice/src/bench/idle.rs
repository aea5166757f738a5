//! `sluice bench idle-streams`: many subscription streams open and idle at once; the
//! server's resident memory per stream.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use super::measure::{memory_mb, round2, server};
use super::publish::ensure_event_type;
use super::stream_client::{self, StreamClient};
use crate::cli::BenchIdleArgs;

#[derive(Debug, Serialize)]
struct Report {
    streams: usize,
    server_rss_before_mb: f64,
    server_rss_with_streams_mb: f64,
    rss_per_stream_kb: f64,
    /// Every stream still open (keep-alive lines arriving) at the end.
    all_open: bool,
}

fn rss_kb(pid: u32) -> anyhow::Result<f64> {
    memory_mb(&pid.to_string(), "VmRSS:")
        .map(|mb| mb * 1024.0)
        .with_context(|| format!("no process {pid}"))
}

pub async fn run(args: BenchIdleArgs) -> anyhow::Result<()> {
    if args.streams == 0 {
        bail!("--streams must be positive");
    }
    let (url, authority) = server(&args.url)?;
    let (u, et, n) = (url.clone(), args.event_type.clone(), args.streams);
    eprintln!("creating {n} subscriptions");
    let subs = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        ensure_event_type(&u, &et)?;
        (0..n)
            .map(|_| stream_client::subscribe(&u, &et, "end"))
            .collect()
    })
    .await??;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kb(args.server_pid)?;
    eprintln!("opening {n} streams");
    let params = serde_json::json!({"batch_flush_timeout": 2});
    let mut streams = Vec::with_capacity(n);
    for sub in &subs {
        streams.push(StreamClient::open(&authority, sub, &params).await?);
    }
    // Every stream must stay open and send its keep-alives.
    let mut alive = 0;
    for s in &mut streams {
        let got = tokio::time::timeout(Duration::from_secs(10), s.read(|_| {})).await;
        alive += usize::from(matches!(got, Ok(Ok(true))));
    }
    let with = rss_kb(args.server_pid)?;
    let report = Report {
        streams: n,
        server_rss_before_mb: round2(before / 1024.0),
        server_rss_with_streams_mb: round2(with / 1024.0),
        rss_per_stream_kb: round2((with - before) / n as f64),
        all_open: alive == n,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
