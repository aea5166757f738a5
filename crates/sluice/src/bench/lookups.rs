//! `sluice bench lookups`: key lookups of `bench views`'s view at a fixed rate, on an
//! open loop, from a process of its own. Each keep-alive connection is driven by the
//! task that sends on it: the request is written and the response read straight off
//! the socket, with no connection task to hand them through (a client's own hops
//! would count in every lookup's time).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::measure::{Percentiles, cpu_seconds};
use crate::cli::BenchLookupsArgs;

/// What `bench lookups` prints.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(super) struct LookupsReport {
    pub rate: u64,
    pub lookups: u64,
    pub errors: u64,
    /// From when each request was due.
    pub latency_ms: Percentiles,
    /// From send to response.
    pub service_ms: Percentiles,
    /// How late requests went out.
    pub sent_late_ms: Percentiles,
    /// How late a thread that only sleeps on the same schedule wakes up, measured
    /// before the lookups: the machine's own floor under `sent_late_ms`.
    pub idle_wakeup_late_ms: Percentiles,
    /// How late a thread of this process that only sleeps in 1 ms steps wakes up
    /// during the lookups: the floor under the lookups' own tail, at the same time.
    pub idle_wakeup_late_during_ms: Percentiles,
    /// This process's CPU time (all threads) per lookup.
    pub client_cpu_us_per_lookup: f64,
}

/// How late a thread sleeping until each due time of a schedule wakes up.
pub(super) fn sleep_jitter(interval: Duration, for_: Duration) -> Vec<Duration> {
    let started = Instant::now();
    let mut late = Vec::new();
    for n in 0u32.. {
        let due = started + interval * n;
        if due - started >= for_ {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        late.push(due.elapsed());
    }
    late
}

/// Runs on a runtime of one thread (beside the pacing thread): a request and its
/// response are handled where the connection's task runs, never handed between
/// threads. With hyper's client on two workers, the client's own wake-ups counted
/// in every lookup: p99 0.97 ms (median of 16 runs) against 0.72 ms now, the server
/// unchanged (BENCHMARKS.md, Views, session 18).
pub fn run(args: BenchLookupsArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(send(args))
}

async fn send(args: BenchLookupsArgs) -> anyhow::Result<()> {
    if args.keys == 0 || args.rate == 0 || args.seconds == 0 || args.connections == 0 {
        bail!("--keys, --rate, --seconds and --connections must be positive");
    }
    let (_, authority) = super::measure::server(&args.url)?;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let jitter =
        tokio::task::spawn_blocking(move || sleep_jitter(interval, Duration::from_secs(2))).await?;
    let l = lookups(
        authority,
        args.keys,
        args.rate,
        args.seconds,
        args.connections,
    )
    .await?;
    let report = l.report(args.rate, jitter);
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

pub(super) struct Lookups {
    /// From when each request was due.
    latencies: Vec<Duration>,
    /// From each request's send to its response.
    service: Vec<Duration>,
    /// How late each request was sent after it was due.
    late: Vec<Duration>,
    /// How late an idle thread woke up meanwhile.
    idle_late: Vec<Duration>,
    /// This process's CPU seconds while sending them.
    cpu_seconds: f64,
    errors: u64,
}

impl Lookups {
    /// The report of lookups sent at `rate`, with the idle wake-up lateness measured
    /// before them (none when not measured).
    pub(super) fn report(mut self, rate: u64, mut idle_late: Vec<Duration>) -> LookupsReport {
        LookupsReport {
            rate,
            lookups: self.latencies.len() as u64,
            errors: self.errors,
            latency_ms: Percentiles::of(&mut self.latencies),
            service_ms: Percentiles::of(&mut self.service),
            sent_late_ms: Percentiles::of(&mut self.late),
            idle_wakeup_late_ms: Percentiles::of(&mut idle_late),
            idle_wakeup_late_during_ms: Percentiles::of(&mut self.idle_late),
            client_cpu_us_per_lookup: per_lookup_us(self.cpu_seconds, self.latencies.len()),
        }
    }
}

/// GET /views/product_listing/rows/{sku} at `rate` per second over `connections`
/// keep-alive connections, on an open loop: a thread of its own paces the schedule
/// (its sleeps are precise to tens of microseconds, where tokio's timer ticks in
/// milliseconds) and hands each due request to the first free connection; a
/// request's latency counts from when it was due, so a slow server also delays the
/// requests queued behind it (no coordinated omission).
pub(super) async fn lookups(
    addr: String,
    keys: u64,
    rate: u64,
    seconds: u64,
    connections: u64,
) -> anyhow::Result<Lookups> {
    let (due_tx, due_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let due_rx = Arc::new(tokio::sync::Mutex::new(due_rx));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..connections {
        let (errors, due_rx) = (errors.clone(), due_rx.clone());
        let mut conn = Connection::open(&addr).await?;
        workers.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(w);
            let (mut latencies, mut service, mut late) = (Vec::new(), Vec::new(), Vec::new());
            let mut path = String::new();
            loop {
                let Some(due) = due_rx.lock().await.recv().await else {
                    break;
                };
                let sent = Instant::now();
                path.clear();
                write!(
                    path,
                    "/views/product_listing/rows/sku-{:09}",
                    rng.u64(..keys)
                )?;
                let status = conn.get(&path).await?;
                latencies.push(due.elapsed());
                service.push(sent.elapsed());
                late.push(sent - due);
                if status != 200 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok((latencies, service, late))
        }));
    }
    let cpu_before = cpu_seconds();
    let idle = std::thread::spawn(move || {
        sleep_jitter(Duration::from_millis(1), Duration::from_secs(seconds))
    });
    let pacer = std::thread::spawn(move || {
        let started = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        for n in 0..rate * seconds {
            let due = started + interval.mul_f64(n as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if due_tx.send(due).is_err() {
                return;
            }
        }
    });
    let (mut latencies, mut service, mut late) = (Vec::new(), Vec::new(), Vec::new());
    for w in workers {
        let (l, s, t) = w.await??;
        latencies.extend(l);
        service.extend(s);
        late.extend(t);
    }
    pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    let idle_late = idle
        .join()
        .map_err(|_| anyhow::anyhow!("the idle thread panicked"))?;
    Ok(Lookups {
        latencies,
        service,
        late,
        idle_late,
        cpu_seconds: cpu_seconds() - cpu_before,
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Microseconds of CPU per lookup, to 0.1 us.
pub(super) fn per_lookup_us(cpu_seconds: f64, lookups: usize) -> f64 {
    (cpu_seconds * 1e7 / lookups.max(1) as f64).round() / 10.0
}

/// A keep-alive HTTP/1.1 connection with one request at a time in flight.
struct Connection {
    stream: TcpStream,
    host: String,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl Connection {
    async fn open(authority: &str) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(authority)
            .await
            .with_context(|| format!("cannot connect to {authority}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            host: authority.to_owned(),
            request: Vec::new(),
            response: Vec::with_capacity(4096),
        })
    }

    /// GETs `path` and reads the whole response; its status.
    async fn get(&mut self, path: &str) -> anyhow::Result<u16> {
        self.request.clear();
        self.request.extend_from_slice(b"GET ");
        self.request.extend_from_slice(path.as_bytes());
        self.request.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        self.request.extend_from_slice(self.host.as_bytes());
        self.request.extend_from_slice(b"\r\n\r\n");
        self.stream.write_all(&self.request).await?;
        self.response.clear();
        loop {
            if self.stream.read_buf(&mut self.response).await? == 0 {
                bail!("the server closed the connection");
            }
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut head = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head_len) = head.parse(&self.response)? else {
                continue;
            };
            let length = head
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .context("a response without content-length")?;
            let status = head.code.unwrap_or_default();
            while self.response.len() < head_len + length {
                if self.stream.read_buf(&mut self.response).await? == 0 {
                    bail!("the server closed the connection in a response");
                }
            }
            return Ok(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A response whose body comes in a later write is read whole, so the next
    /// request on the connection gets its own response, not the rest of this one.
    #[tokio::test]
    async fn a_response_is_read_to_the_end_of_its_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for (status, body) in [("200 OK", "{\"sku\":\"a\"}"), ("404 Not Found", "{}")] {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                s.write_all(body.as_bytes()).await.unwrap();
            }
            seen
        });
        let mut conn = Connection::open(&addr).await.unwrap();
        assert_eq!(conn.get("/views/v/rows/a").await.unwrap(), 200);
        assert_eq!(conn.get("/views/v/rows/b").await.unwrap(), 404);
        let seen = server.await.unwrap();
        assert!(
            seen[0].starts_with("GET /views/v/rows/a HTTP/1.1\r\n"),
            "{seen:?}"
        );
        assert!(
            seen[1].starts_with("GET /views/v/rows/b HTTP/1.1\r\n"),
            "{seen:?}"
        );
    }
}
