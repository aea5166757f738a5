//! `sluice bench view-apply`: `bench views`'s view built in one thread from events
//! held in memory, no log, no server: what one core of the engine does. Decoding
//! (the readers' part) and applying (the apply loop's part) are timed apart; the
//! thread's CPU time over the whole build checks that it ran on a core of its own.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use serde::Serialize;
use sluice_views::{OnError, View};

use super::measure::{memory_mb, round2, thread_cpu_seconds};
use super::views::{BenchCatalog, SQL, source_batches};
use crate::cli::BenchViewApplyArgs;

#[derive(Debug, Serialize)]
struct Report {
    keys: u64,
    events: u64,
    /// Events per apply, as the apply loop takes them at most.
    batch: usize,
    decode_us_per_event: f64,
    apply_us_per_event: f64,
    /// Events per second of decoding and applying (wall clock, one thread).
    events_per_core_sec: f64,
    /// The thread's CPU seconds over its wall-clock seconds (1.0: never preempted).
    cpu_share: f64,
    view_rows: u64,
    /// Visible row changes the events made (as `bench views`'s `build_row_changes`).
    view_row_changes: u64,
    /// The engine's changes behind them (as `bench views`'s `build_engine_changes`).
    engine_changes: u64,
    /// Encoding the state (what a checkpoint pauses the view for): into fresh
    /// memory, then again into the buffer kept from the first.
    state_encode_ms: f64,
    state_encode_again_ms: f64,
    state_mb: f64,
    rss_mb: f64,
}

/// The events `bench views` publishes, in its order, as the log stores them.
fn events(keys: u64, updates: u64) -> Vec<(&'static str, Vec<u8>)> {
    let mut seq = 0u64;
    source_batches(keys, updates)
        .flat_map(|(t, batch)| batch.into_iter().map(move |data| (t, data)))
        .map(|(t, data)| {
            seq += 1;
            let stored = format!(
                r#"{{"metadata":{{"eid":"00000000-0000-4000-8000-{seq:012x}","occurred_at":"2026-11-23T10:00:00Z","received_at":"2026-11-23T10:00:00.001Z","event_type":"{t}","partition":"0","version":"1.0.0"}},"data_type":"x","data_op":"U","data":{data}}}"#
            );
            (t, stored.into_bytes())
        })
        .collect()
}

pub fn run(args: &BenchViewApplyArgs) -> anyhow::Result<()> {
    if args.keys == 0 || args.batch == 0 {
        bail!("--keys and --batch must be positive");
    }
    let plan =
        Arc::new(sluice_views::compile(SQL, &BenchCatalog).map_err(|e| anyhow::anyhow!("{e}"))?);
    eprintln!("making {} keys and {} updates...", args.keys, args.updates);
    let raw = events(args.keys, args.updates);
    let mut view = View::new(plan);
    let decoders = view.decoders();
    eprintln!("decoding and applying {} events...", raw.len());
    let (mut decoding, mut applying) = (0.0, 0.0);
    let (mut view_row_changes, mut engine_changes) = (0, 0);
    let (started, cpu) = (Instant::now(), thread_cpu_seconds());
    for chunk in raw.chunks(args.batch) {
        let at = Instant::now();
        let decoded = chunk
            .iter()
            .map(|(t, bytes)| match decoders.decode(t, Some(bytes), None) {
                Some(Ok(event)) => Ok((*t, event)),
                Some(Err(e)) => bail!("{t}: {e}"),
                None => bail!("the view does not read {t}"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let decoded_at = Instant::now();
        let batch: Vec<(&str, &sluice_views::source::Event)> =
            decoded.iter().map(|(t, e)| (*t, e)).collect();
        let applied = view.apply_events(&batch, OnError::Stop);
        if let Some(r) = applied.rejected.first() {
            bail!("the view rejected an event: {}", r.message);
        }
        view_row_changes += applied.changes.len() as u64;
        engine_changes += applied.engine_changes;
        decoding += (decoded_at - at).as_secs_f64();
        applying += decoded_at.elapsed().as_secs_f64();
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds() - cpu;
    eprintln!("took {wall:.2} s");
    let events = raw.len() as u64;
    let encode = |buf: Vec<u8>| {
        let at = Instant::now();
        let bytes = sluice_views::snapshot::encode_into(&view, "", &Default::default(), buf);
        (bytes, round2(at.elapsed().as_secs_f64() * 1e3))
    };
    let (bytes, state_encode_ms) = encode(Vec::new());
    let (bytes, state_encode_again_ms) = encode(bytes);
    let view_rows = view.output().len() as u64;
    if view_rows != args.keys {
        bail!("the view has {view_rows} rows, {} expected", args.keys);
    }
    let per_event_us = |secs: f64| round2(secs * 1e6 / events as f64);
    let report = Report {
        keys: args.keys,
        events,
        batch: args.batch,
        decode_us_per_event: per_event_us(decoding),
        apply_us_per_event: per_event_us(applying),
        events_per_core_sec: (events as f64 / (decoding + applying)).round(),
        cpu_share: round2(cpu / wall),
        view_rows,
        view_row_changes,
        engine_changes,
        state_encode_ms,
        state_encode_again_ms,
        state_mb: round2(bytes.len() as f64 / 1e6),
        rss_mb: memory_mb("self", "VmRSS:").unwrap_or(0.0),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
