//! `sluice serve`: the HTTP API on the embedded log, until Ctrl-C or SIGTERM; then
//! in-flight requests finish and the log is flushed and closed.

use std::sync::Arc;

use anyhow::Context;
use sluice_bus::Bus;
use sluice_log::{EmbeddedLog, Log};
use tokio::net::TcpListener;

use crate::config::{Config, Storage};

pub async fn run(config: Config) -> anyhow::Result<()> {
    // Before anything else: a SIGTERM that arrives while the log opens must still
    // mean a clean stop, not the default action (death).
    let stop = shutdown_signal()?;
    let Storage::Embedded = config.storage;
    let options = api_options(&config)?;
    let dir = config.data_dir.clone();
    let settings = config.log.clone();
    let log = tokio::task::spawn_blocking(move || EmbeddedLog::open(&dir, settings))
        .await?
        .with_context(|| {
            format!(
                "cannot open the embedded log in {}",
                config.data_dir.display()
            )
        })?;
    let bus = Bus::open(Arc::new(log.clone()) as Arc<dyn Log>, config.bus.clone())
        .await
        .context("cannot load the event types")?;
    let listener = TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let stats = log.stats();
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %config.data_dir.display(),
        durability = %config.log.durability,
        event_types = bus.event_types().len(),
        partitions = stats.partitions,
        bytes = stats.bytes,
        "sluice is serving; stop it with Ctrl-C or SIGTERM"
    );
    sluice_http::serve(listener, Arc::new(bus), options, async {
        stop.await;
        tracing::info!("shutting down: finishing requests, then flushing and closing the log");
    })
    .await?;
    tokio::task::spawn_blocking(move || log.close()).await??;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn api_options(config: &Config) -> anyhow::Result<sluice_http::ApiOptions> {
    let header = &config.http.principal_header;
    let principal_header = if header.is_empty() {
        None
    } else {
        Some(header.parse().map_err(|_| {
            anyhow::anyhow!("http.principal_header {header:?} is not a valid HTTP header name")
        })?)
    };
    Ok(sluice_http::ApiOptions { principal_header })
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
