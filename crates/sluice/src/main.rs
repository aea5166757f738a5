//! The `sluice` binary: parses the command line, loads the config and runs a command.

mod bench;
mod cli;
mod client;
mod config;
mod demo;
mod event_types;
mod publish;
mod serve;
mod shop;
mod subscriptions;
mod verify;
mod views;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: publishing allocates many small JSON values; glibc's malloc was 12% of a
/// publish benchmark's CPU profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::cli::{BenchCommand, Cli, Command};
use crate::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let file = cli
        .global
        .config
        .clone()
        .or_else(|| std::env::var_os(config::CONFIG_ENV).map(Into::into));
    let mut config = Config::load(file.as_deref(), std::env::vars(), &cli.global.overrides)?;
    if !config.huge_pages {
        small_pages_only();
    }
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Serve(args) => {
            if let Some(dir) = args.data_dir {
                config.data_dir = dir;
            }
            if let Some(listen) = args.listen {
                config.http.listen = listen;
            }
            if let Some(storage) = args.storage {
                config.storage = storage;
            }
            if let Some(bootstrap) = args.kafka_bootstrap {
                config.kafka.bootstrap = bootstrap;
            }
            runtime()?.block_on(serve::run(config))
        }
        Command::Demo(args) => runtime()?.block_on(demo::run(args, config)),
        Command::Verify(args) => {
            if let Some(dir) = args.data_dir {
                config.data_dir = dir;
            }
            verify::run(&config)
        }
        Command::EventTypes(cmd) => event_types::run(cmd, &config),
        Command::Publish(args) => publish::run(args, &config),
        Command::Subscriptions(cmd) => subscriptions::run(cmd, &config),
        Command::Views(cmd) => views::run(cmd, &config),
        Command::Tail(args) => subscriptions::tail(args, &config),
        Command::Config => {
            print!("{}", toml::to_string(&config)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Log(args)) => runtime()?.block_on(bench::log::run(args)),
        Command::Bench(BenchCommand::Reopen(args)) => bench::reopen::run(&args, &config),
        Command::Bench(BenchCommand::Publish(args)) => {
            runtime()?.block_on(bench::publish::run(args))
        }
        Command::Bench(BenchCommand::Consume(args)) => {
            runtime()?.block_on(bench::consume::run(args))
        }
        Command::Bench(BenchCommand::Latency(args)) => {
            runtime()?.block_on(bench::latency::run(args))
        }
        Command::Bench(BenchCommand::IdleStreams(args)) => {
            runtime()?.block_on(bench::idle::run(args))
        }
        Command::Bench(BenchCommand::Views(args)) => runtime()?.block_on(bench::views::run(args)),
        Command::Bench(BenchCommand::Lookups(args)) => bench::lookups::run(args),
        Command::Bench(BenchCommand::Freshness(args)) => {
            runtime()?.block_on(bench::freshness::run(args, &cli.global, &config))
        }
        Command::Bench(BenchCommand::ViewRestore(args)) => bench::views::run_restore(&args),
        Command::Bench(BenchCommand::ViewApply(args)) => bench::view_apply::run(&args),
    }
}

/// Turns transparent huge pages off for this process and those it starts (the
/// `huge_pages` setting). The allocator asks for huge pages for its arenas; the kernel
/// then zeroes 2 MB at once in the fault of whichever thread first writes to one, in
/// the middle of a request. On the machine of BENCHMARKS.md that put publish p99 in
/// a fresh server's first 10 s at 100,000 events/s at 9-92 ms (4-11 ms without),
/// and a stream's p99 at half load at 4.2-9.5 ms (2.6-5.2 ms without).
fn small_pages_only() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("sluice: cannot turn transparent huge pages off ({e}); going on with them");
    }
}
