//! `sluice serve`: the HTTP API on the embedded log or on Kafka, until Ctrl-C or
//! SIGTERM; then in-flight requests finish and the log is flushed and closed.

use std::sync::Arc;

use anyhow::Context;
use sluice_bus::Bus;
use sluice_log::{EmbeddedLog, Log};
use tokio::net::TcpListener;

use crate::config::{Config, Storage};

pub async fn run(config: Config) -> anyhow::Result<()> {
    // Before anything else: a SIGTERM that arrives while the log opens must still
    // mean a clean stop, not the default action (death).
    match start(config, shutdown_signal()?).await? {
        Some(node) => node.finished().await,
        None => Ok(()),
    }
}

/// A node serving the API, until its stop future completes.
pub struct Node {
    /// Where the API listens (the port the OS chose for `:0`).
    pub addr: std::net::SocketAddr,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    /// Waits until the node has stopped: requests finished, views and the log closed.
    pub async fn finished(self) -> anyhow::Result<()> {
        self.serving.await?
    }
}

/// Opens the log, the event types and the views, and serves the API until `stop`
/// completes; `None` when `stop` completed before the node served.
pub async fn start(
    config: Config,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<Node>> {
    let mut stop = Box::pin(stop);
    let options = api_options(&config)?;
    let opened = tokio::select! {
        _ = &mut stop => {
            tracing::info!("stopped before serving");
            return Ok(None);
        }
        opened = open_log(&config) => opened?,
    };
    let bus = Bus::open(opened.log.clone(), config.bus.clone())
        .await
        .context("cannot load the event types")?;
    let listener = TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        listen = %addr,
        storage = %opened.description,
        event_types = bus.event_types().len(),
        "sluice is serving; stop it with Ctrl-C or SIGTERM"
    );
    let bus = Arc::new(bus);
    let views = Arc::new(
        sluice_views::Views::open(bus.clone(), config.views.resolve(&config.data_dir))
            .await
            .context("cannot load the views")?,
    );
    let serving = tokio::spawn(async move {
        sluice_http::serve(listener, bus.clone(), views.clone(), options, async {
            stop.await;
            tracing::info!("shutting down: finishing requests, then flushing and closing the log");
        })
        .await?;
        views.shutdown().await;
        bus.shutdown().await;
        opened.log.flush().await.context("flushing the log")?;
        if let Some(embedded) = opened.embedded {
            tokio::task::spawn_blocking(move || embedded.close()).await??;
        }
        tracing::info!("stopped cleanly");
        Ok(())
    });
    Ok(Some(Node { addr, serving }))
}

/// The log `serve` runs on.
struct Opened {
    log: Arc<dyn Log>,
    /// The embedded log, to close it cleanly at the end.
    embedded: Option<EmbeddedLog>,
    description: String,
}

async fn open_log(config: &Config) -> anyhow::Result<Opened> {
    match config.storage {
        Storage::Embedded => {
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
            Ok(Opened {
                log: Arc::new(log.clone()),
                embedded: Some(log),
                description: format!(
                    "embedded log in {} ({} durability, {} partitions, {} bytes)",
                    config.data_dir.display(),
                    config.log.durability,
                    stats.partitions,
                    stats.bytes
                ),
            })
        }
        Storage::Kafka => open_kafka(config).await,
    }
}

#[cfg(feature = "kafka")]
async fn open_kafka(config: &Config) -> anyhow::Result<Opened> {
    use std::time::{Duration, Instant};

    use sluice_kafka::{KafkaConfig, KafkaLog};

    let k = &config.kafka;
    if k.bootstrap.trim().is_empty() {
        anyhow::bail!(
            "storage is kafka but no broker is given: pass --kafka-bootstrap HOST:PORT \
             (or set kafka.bootstrap)"
        );
    }
    // The data dir holds no state on Kafka, but it is where caches will go.
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let mut settings = KafkaConfig::new(k.bootstrap.trim());
    settings.replication_factor = k.replication_factor;
    settings.delivery_timeout = Duration::from_millis(k.delivery_timeout_ms);
    settings.fetch_wait_max = Duration::from_millis(k.fetch_wait_max_ms.max(1));
    let deadline = Instant::now() + Duration::from_millis(k.connect_timeout_ms);
    let mut backoff = Duration::from_millis(250);
    loop {
        match KafkaLog::connect(settings.clone(), Duration::from_secs(5)).await {
            Ok(log) => {
                return Ok(Opened {
                    log: Arc::new(log),
                    embedded: None,
                    description: format!("kafka at {}", k.bootstrap),
                });
            }
            Err(e) if Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Kafka is not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "gave up reaching Kafka at {} after {} ms (kafka.connect_timeout_ms)",
                    k.bootstrap, k.connect_timeout_ms
                )));
            }
        }
    }
}

#[cfg(not(feature = "kafka"))]
async fn open_kafka(_config: &Config) -> anyhow::Result<Opened> {
    anyhow::bail!("storage is kafka, but this sluice was built without the `kafka` feature")
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
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
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
