//! `sluice serve`: open the data dir, run until Ctrl-C or SIGTERM, shut down cleanly.

use anyhow::Context;
use sluice_log::EmbeddedLog;

use crate::config::{Config, Storage};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let Storage::Embedded = config.storage;
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
    let stats = log.stats();
    tracing::info!(
        data_dir = %config.data_dir.display(),
        durability = %config.log.durability,
        topics = stats.topics,
        partitions = stats.partitions,
        bytes = stats.bytes,
        "sluice is running on the embedded log; stop it with Ctrl-C or SIGTERM"
    );
    shutdown_signal().await?;
    tracing::info!("shutting down: flushing and closing the log");
    tokio::task::spawn_blocking(move || log.close()).await??;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
