//! The command line: subcommands and their flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sluice_log::Durability;

use crate::config::Storage;

/// Sluice: a log as the source of truth for e-commerce microservices.
///
/// Services publish events (products, offers, prices, stock, orders) to a durable,
/// partitioned log; derived state is rebuilt from it. This build has the embedded log.
const EXAMPLES: &str = "\
Examples:
  sluice serve --data-dir /var/lib/sluice       run until Ctrl-C or SIGTERM
  sluice verify --data-dir /var/lib/sluice      CRC-check every segment, read-only
  sluice config --set log.durability=interval   show the effective configuration
  sluice bench log --data-dir /tmp --records 1000000 --durability fsync

Environment:
  SLUICE_CONFIG=FILE            config file (like --config)
  SLUICE_DATA_DIR=DIR           any key: SLUICE_ + upper-case key, sections joined by __
  SLUICE_LOG__DURABILITY=none   e.g. the [log] section's durability
  RUST_LOG=debug                log verbosity (default info), written to stderr";

#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file (TOML; see config/sluice.example.toml). Also SLUICE_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override any config key, e.g. --set log.durability=interval (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Sluice: the HTTP API on the data dir, until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Run Sluice with a simulated shop publishing to it, and show what to look at.
    Demo(DemoArgs),
    /// Check every segment of a data dir and report damage (read-only).
    Verify(VerifyArgs),
    /// Print the effective configuration as TOML.
    Config,
    /// Manage event types on a running server.
    #[command(subcommand, name = "event-types")]
    EventTypes(EventTypesCommand),
    /// Publish events (JSON lines from a file or stdin) to an event type.
    Publish(PublishArgs),
    /// Manage subscriptions on a running server.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// Follow an event type's new events (or all, with --from-beginning), like tail -f.
    Tail(TailArgs),
    /// Manage SQL views on a running server and read their rows.
    #[command(subcommand)]
    Views(ViewsCommand),
    /// Benchmarks that print one JSON object as the last line of stdout.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (overrides data_dir from the config; default ./data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API (overrides http.listen; default 127.0.0.1:8080).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Where the log lives: embedded (local disk) or kafka (overrides storage).
    #[arg(long, value_name = "embedded|kafka")]
    pub storage: Option<Storage>,
    /// Kafka brokers, host:port[,host:port...] (overrides kafka.bootstrap).
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_bootstrap: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address of the HTTP API.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Data directory (default: a temporary one, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Events per second the shop publishes after its catalog.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Products in the catalog published first (with their offers and stock).
    #[arg(long, default_value_t = 2000)]
    pub products: usize,
    /// The shop's random seed (the same seed, the same shop).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Data directory (overrides data_dir from the config).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append records to the embedded log, read them back, reopen it; compare with the
    /// disk's own sequential write bandwidth measured in the same run.
    Log(BenchLogArgs),
    /// Load a running server with publish requests over HTTP (keep-alive connections).
    Publish(BenchPublishArgs),
    /// Open an existing data dir in this fresh process: time to open, segments,
    /// index entries held in memory, and the process's RSS afterwards.
    Reopen(BenchReopenArgs),
    /// Read an event type from the beginning through subscription streams (publishing
    /// the events first when there are fewer than --events).
    Consume(BenchConsumeArgs),
    /// Publish at a fixed rate while a subscription stream reads: the time from each
    /// publish's acknowledgement to the event's arrival at the subscriber.
    Latency(BenchLatencyArgs),
    /// Open many idle subscription streams (one subscription each) and report the
    /// server's resident memory per stream.
    IdleStreams(BenchIdleArgs),
    /// The enriched-product SQL view: build rate from the log, key lookups over HTTP
    /// under updates, restore from its state (in-process, on an embedded log).
    Views(BenchViewsArgs),
    /// Key lookups of `bench views`'s view (product_listing, keys sku-000000000...)
    /// over HTTP at a fixed rate, from this process: the client half of `bench views`,
    /// which runs it in a process of its own.
    Lookups(BenchLookupsArgs),
    /// The simulated shop at a fraction of its measured maximum rate: the delay from
    /// each publish's acknowledgement to a subscriber and to the enriched view.
    Freshness(BenchFreshnessArgs),
    /// Restore `bench views`'s view from its state file in this fresh process: the
    /// restore half of `bench views`, which runs it in a process of its own.
    ViewRestore(BenchViewRestoreArgs),
    /// `bench views`'s view built in this one thread from events in memory (no log,
    /// no server): decoding and applying, per core.
    ViewApply(BenchViewApplyArgs),
}

#[derive(Debug, Args, Clone)]
pub struct BenchViewApplyArgs {
    /// Products, each with a price and two stock rows.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Random price and stock updates after them.
    #[arg(long, default_value_t = 200_000)]
    pub updates: u64,
    /// Events per apply (the apply loop takes at most 1024).
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
}

#[derive(Debug, Args, Clone)]
pub struct BenchFreshnessArgs {
    /// A fresh directory for the server's data (a `sluice serve` of this binary).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Seconds of measurement at the fixed rate.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// The fixed rate as a fraction of the maximum measured first.
    #[arg(long, default_value_t = 0.5)]
    pub fraction: f64,
    /// A fixed rate (events/s) instead of a fraction of the maximum, which varies
    /// from run to run: for comparing two builds or settings at the same load. The
    /// maximum is still measured, and `fraction` reports the rate's share of it.
    #[arg(long, conflicts_with = "fraction")]
    pub rate: Option<u64>,
    /// Seconds of publishing as fast as possible to measure the maximum.
    #[arg(long, default_value_t = 10)]
    pub max_seconds: u64,
    /// Products in the catalog published first.
    #[arg(long, default_value_t = 10_000)]
    pub products: usize,
    /// The shop's random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The server's log filter (its `RUST_LOG`, e.g. `info,sluice_views=debug` for
    /// each checkpoint's pause), every line shown on stderr after `server: `.
    /// Without it: `info`, and only errors shown.
    #[arg(long, value_name = "FILTER")]
    pub server_log: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct BenchViewRestoreArgs {
    /// The state (snapshot) file `bench views` wrote.
    #[arg(long, value_name = "FILE")]
    pub state: std::path::PathBuf,
    /// The keys the view must have once restored.
    #[arg(long)]
    pub keys: u64,
}

#[derive(Debug, Args, Clone)]
pub struct BenchLookupsArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The view's keys are sku-000000000 up to this many.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Lookups per second.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Seconds of lookups.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Keep-alive connections the lookups are spread over.
    #[arg(long, default_value_t = 16)]
    pub connections: u64,
}

#[derive(Debug, Args, Clone)]
pub struct BenchIdleArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The server's process id (its RSS is read from /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: u32,
    /// The event type the subscriptions read (created when missing).
    #[arg(long, value_name = "NAME", default_value = "bench.idle")]
    pub event_type: String,
    /// Streams to open.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
}

#[derive(Debug, Args, Clone)]
pub struct BenchConsumeArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The event type (created like `bench publish` does when missing).
    #[arg(long, value_name = "NAME", default_value = "bench.consume")]
    pub event_type: String,
    /// Events the event type must hold; missing ones are published first.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Approximate bytes of one published event.
    #[arg(long, default_value_t = 500)]
    pub event_bytes: usize,
    /// Streaming clients sharing the subscription.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Events per batch (stream parameter batch_limit).
    #[arg(long, default_value_t = 1000)]
    pub batch_limit: u64,
    /// Stream parameter max_uncommitted_events (the clients commit every 100 ms).
    #[arg(long, default_value_t = 200_000)]
    pub max_uncommitted: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args, Clone)]
pub struct BenchViewsArgs {
    /// A fresh (empty) dir for the benchmark's log and view state.
    #[arg(long, value_name = "DIR")]
    pub data_dir: std::path::PathBuf,
    /// Products (each with a price and two stock rows): the view's keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Random price and stock updates published after the initial rows.
    #[arg(long, default_value_t = 200_000)]
    pub updates: u64,
    /// Key lookups per second over HTTP.
    #[arg(long, default_value_t = 20_000)]
    pub lookup_rate: u64,
    /// Seconds of lookups.
    #[arg(long, default_value_t = 10)]
    pub lookup_seconds: u64,
    /// Price updates per second published during the lookups.
    #[arg(long, default_value_t = 2_000)]
    pub update_rate: u64,
    /// Send the lookups from this process instead of a process of their own.
    #[arg(long)]
    pub lookups_in_process: bool,
    /// Build the view with every thread of the process on this one CPU: the work
    /// of one core, without the other cores' load slowing it.
    #[arg(long, value_name = "CPU")]
    pub build_cpu: Option<usize>,
}

#[derive(Debug, Args, Clone)]
pub struct BenchLatencyArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The event type (created like `bench publish` does when missing).
    #[arg(long, value_name = "NAME", default_value = "bench.latency")]
    pub event_type: String,
    /// Events per second, published on a fixed schedule.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Events per publish request.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Approximate bytes of one event.
    #[arg(long, default_value_t = 500)]
    pub event_bytes: usize,
    /// Seconds to publish.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// The subscriber's batch_limit (1: every event is sent as soon as it is stored).
    #[arg(long, default_value_t = 1)]
    pub batch_limit: u64,
}

#[derive(Debug, Args, Clone)]
pub struct BenchReopenArgs {
    /// The data dir to open (for example one kept by `bench log --keep`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct BenchLogArgs {
    /// Directory to benchmark in (a fresh sub-directory is used and removed after).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records to append in total.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// fsync | interval | none
    #[arg(long, default_value_t = Durability::Fsync)]
    pub durability: Durability,
    /// Partitions of the benchmark topic (one writer task group each).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Records per append call.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Appends in flight per partition (they share group commits).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// The log's `preallocate_bytes` (zeros written ahead of the data; 0 = off).
    #[arg(long, default_value_t = sluice_log::EmbeddedConfig::default().preallocate_bytes)]
    pub preallocate_bytes: u64,
    /// The log's `wal_bytes` (durability fsync: each of the two write-ahead files that
    /// make a commit round durable with one fdatasync; 0 = off, each partition's
    /// segment is synced instead).
    #[arg(long, default_value_t = sluice_log::EmbeddedConfig::default().wal_bytes)]
    pub wal_bytes: u64,
    /// Records per second in all, sent on a fixed schedule (open loop, latency counted
    /// from when each append was due); 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Bytes written to measure the disk's bandwidth; default: as many as the
    /// benchmark appends, at most 1 GiB; 0 skips the measurement.
    #[arg(long)]
    pub disk_probe_bytes: Option<u64>,
    /// Keep the benchmark's data instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// The server's URL (default: http:// + http.listen from the config). Also SLUICE_URL.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventTypesCommand {
    /// List event types (name, category, partitions, schema version).
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Print the full JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one event type as JSON.
    Get {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Create event types from a JSON or YAML file (one definition or a list).
    Create {
        /// The file (`-` for stdin).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete an event type and its events.
    Delete {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ViewsCommand {
    /// Create a view from a file holding `CREATE VIEW name AS SELECT ...`
    /// (docs/sql.md); with --replace, a view of that name is replaced (blue/green).
    Create {
        /// The SQL file (`-` for stdin).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Publish the view's changes to this data event type (created if missing).
        #[arg(long, value_name = "EVENT_TYPE")]
        publish_as: Option<String>,
        /// What to do with an event the view cannot compute: skip | stop.
        #[arg(long, value_name = "POLICY", default_value = "skip")]
        on_error: String,
        /// Replace the view of the same name if there is one.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List views (name, status, rows, lag).
    List {
        /// Print the full JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a view's status as JSON (SQL, rows, per-source offsets and lag, errors).
    Get {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print one row by key, or rows in key order (JSON lines).
    Rows {
        name: String,
        /// The key of one row (composite keys: values joined by `/`).
        key: Option<String>,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only keys after this one.
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Copy a view's state to the server's snapshot dir.
    Snapshot {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a view (and its state).
    Delete {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Create a subscription (or find the one with the same application, event types
    /// and consumer group); prints its id.
    Create {
        /// An event type to read (repeat for several).
        #[arg(long = "event-type", value_name = "NAME", required = true)]
        event_types: Vec<String>,
        /// The application that owns the subscription.
        #[arg(long, value_name = "APP")]
        owning_application: String,
        #[arg(long, value_name = "GROUP", default_value = "default")]
        consumer_group: String,
        /// Where to start: begin | end.
        #[arg(long, value_name = "WHERE", default_value = "end")]
        read_from: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List subscriptions (newest first).
    List {
        /// Only those reading this event type.
        #[arg(long, value_name = "NAME")]
        event_type: Option<String>,
        /// Print the full JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Per partition: assignment, unconsumed events and the age of the oldest one.
    Stats {
        id: String,
        /// Print the full JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Move a subscription's cursors (its streams are closed first).
    Reset {
        id: String,
        /// begin | end | an RFC 3339 time (from the first event appended at or after it).
        #[arg(long, value_name = "WHERE")]
        to: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a subscription and its cursors.
    Delete {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The event type to follow.
    pub event_type: String,
    /// Start from the oldest available events instead of the next new one.
    #[arg(long)]
    pub from_beginning: bool,
    /// One compact JSON line per event (default: indented).
    #[arg(long)]
    pub raw: bool,
    /// Stop after this many events.
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The event type to publish to.
    pub event_type: String,
    /// JSON lines, one event per line (default: stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args, Clone)]
pub struct BenchPublishArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The event type; created (business category, a realistic price schema, 4
    /// partitions, hash by sku) when it does not exist.
    #[arg(long, value_name = "NAME")]
    pub event_type: String,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Approximate bytes of one event as sent.
    #[arg(long, default_value_t = 500)]
    pub event_bytes: usize,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Target events per second across all connections (open loop); 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// The server's process id, to report its resident memory (current and peak).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// After the run, write the same events for as long to this Kafka cluster with a
    /// plain producer (acks=all, idempotent, same batches and concurrency) and report
    /// both: what the bus layer costs on Sluice-on-Kafka.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_peer: Option<String>,
}
