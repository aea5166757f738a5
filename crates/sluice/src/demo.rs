//! `sluice demo`: Sluice on the embedded log with a simulated shop publishing to it
//! over the HTTP API, the shop's views registered, and what to look at printed. Ctrl-C
//! stops the shop, then the server, cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::DemoArgs;
use crate::config::{Config, Storage};
use crate::serve;
use crate::shop::driver::{self, Driver};
use crate::shop::{EVENT_TYPES, Shop};

pub async fn run(args: DemoArgs, mut config: Config) -> anyhow::Result<()> {
    if args.rate == 0 || args.products == 0 {
        anyhow::bail!("--rate and --products must be positive");
    }
    let temporary = args.data_dir.is_none();
    config.data_dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()))
    });
    config.http.listen = args.listen.clone();
    config.storage = Storage::Embedded;
    let data_dir = config.data_dir.clone();

    let signal = serve::shutdown_signal()?;
    let (interrupted, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signal.await;
        let _ = interrupted.send(true);
    });
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let node = serve::start(config, async {
        let _ = server_stopped.await;
    })
    .await?
    .context("stopped before serving")?;
    let url = format!("http://{}", node.addr);
    println!(
        "sluice demo: serving on {url} (data in {})",
        data_dir.display()
    );

    let outcome = shop(&args, &url, node.addr.to_string(), stopping).await;
    let _ = stop_server.send(());
    let stopped = node.finished().await;
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    println!("{}", outcome?);
    stopped?;
    println!("sluice demo: stopped");
    Ok(())
}

/// Registers the shop, publishes its catalog, prints what to look at, then runs the
/// shop until `signal`; the summary of what it published.
async fn shop(
    args: &DemoArgs,
    url: &str,
    authority: String,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<String> {
    let u = url.to_string();
    let setup = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        driver::register(&u)?;
        crate::bench::stream_client::subscribe(&u, "shop.order", "end")
    });
    let mut early = stopping.clone();
    let subscription = tokio::select! {
        s = setup => s??,
        _ = early.wait_for(|stop| *stop) => return Ok("sluice demo: stopped while setting up".into()),
    };

    let started = Instant::now();
    let mut shop = Shop::new(args.seed, driver::now_ms() as u64);
    let driver = Driver::start(&authority, None).await?;
    eprintln!(
        "publishing the catalog: {} products with their offers and stock...",
        args.products
    );
    let catalog = shop.catalog(args.products, driver::now_ms());
    let catalog_events = catalog.len();
    tokio::select! {
        r = driver::publish_all(&driver, catalog) => r?,
        _ = early.wait_for(|stop| *stop) => return Ok("sluice demo: stopped while publishing the catalog".into()),
    }
    print_guide(url, &subscription, args.rate);

    let progress = driver::progress(driver.stats.clone(), Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let stop = stop.clone();
        let rate = args.rate;
        tokio::spawn(async move {
            let queued = driver::pace(&mut shop, &driver, rate, None, &stop).await;
            (queued, driver)
        })
    };
    let _ = stopping.wait_for(|stop| *stop).await;
    stop.store(true, Ordering::Relaxed);
    let (queued, driver) = running.await?;
    queued?;
    let stats = driver.stats.clone();
    driver.finish().await?;
    progress.abort();
    let secs = started.elapsed().as_secs_f64();
    Ok(format!(
        "sluice demo: the shop published {} events in {secs:.1} s ({catalog_events} for the catalog; {} refused): {}",
        stats.published(),
        stats.failed.load(Ordering::Relaxed),
        stats.by_type()
    ))
}

fn print_guide(url: &str, subscription: &str, rate: u64) {
    let lines = [
        (
            format!("curl -s {url}/views/product_listing/rows/SKU-000042"),
            "one enriched product: product + best offer + stock",
        ),
        (
            format!("curl -s '{url}/views/product_listing/rows?limit=3'"),
            "the first rows, in key order",
        ),
        (
            format!("curl -s {url}/views/product_listing"),
            "the view: SQL, rows, offsets and lag per source",
        ),
        (
            format!("curl -s {url}/views/orders_per_minute/rows"),
            "orders and revenue per minute",
        ),
        (
            format!("curl -sN {url}/subscriptions/{subscription}/events"),
            "the orders as they happen (a subscription stream)",
        ),
        (
            format!("curl -s {url}/subscriptions/{subscription}/stats"),
            "the subscription's partitions and unconsumed events",
        ),
        (
            format!("curl -s {url}/event-types/shop.offer/partitions"),
            "the log: offsets of each partition",
        ),
    ];
    println!(
        "\nA simulated shop now publishes {rate} events/s to {}.\nViews: product_listing, stock_per_sku, orders_per_minute. Look at them:\n",
        EVENT_TYPES.join(", ")
    );
    for (cmd, what) in lines {
        println!("  {cmd}\n      {what}");
    }
    println!("\nStop with Ctrl-C.\n");
}
