//! `sluice demo`: it serves, the simulated shop's products appear in the enriched view
//! with their best price and stock, orders are counted per minute, and Ctrl-C (SIGINT)
//! stops it cleanly with a summary.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{assert_refused, sluice, text};

fn get(url: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).call().unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    (
        r.status().as_u16(),
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

/// A running demo, killed if its test ends (or fails) without stopping it.
struct Demo(Option<std::process::Child>);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `sluice demo` on `dir`, its URL once it serves, and its stdout's lines.
fn start(dir: &std::path::Path) -> (Demo, String, Receiver<String>) {
    let mut demo = sluice()
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--rate",
            "300",
            "--products",
            "50",
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let demo = Demo(Some(demo));
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the demo never said where it serves");
        if let Some(rest) = line.strip_prefix("sluice demo: serving on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    (demo, url, lines)
}

/// Ctrl-C: the demo stops cleanly and sums up; what it said.
fn interrupt(mut demo: Demo, lines: &Receiver<String>) -> Vec<String> {
    let demo = demo.0.take().expect("running");
    let interrupted = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = demo.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    lines.iter().collect()
}

#[test]
fn the_demo_fills_the_enriched_view_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, url, lines) = start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);

    // The catalog's products appear, complete: product + best offer + stock.
    let listed = loop {
        let (status, page) = get(&format!("{url}/views/product_listing/rows?limit=100"));
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if status == 200 && items.len() >= 40 {
            break items;
        }
        assert!(
            Instant::now() < deadline,
            "product_listing: {status} {page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for row in &listed {
        assert!(row["sku"].as_str().unwrap().starts_with("SKU-"), "{row}");
        assert!(row["best_price"].as_i64().unwrap() > 0, "{row}");
        assert!(row["offers"].as_i64().unwrap() >= 1, "{row}");
        assert!(row["available"].as_i64().unwrap() >= 0, "{row}");
        assert!(
            row["title"].is_string() && row["brand"].is_string(),
            "{row}"
        );
    }
    let (status, one) = get(&format!("{url}/views/product_listing/rows/SKU-000001"));
    assert_eq!(status, 200, "{one}");
    // Orders arrive and are counted per minute.
    loop {
        let (_, per_minute) = get(&format!("{url}/views/orders_per_minute/rows"));
        let orders: i64 = per_minute["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["orders"].as_i64().unwrap_or(0))
            .sum();
        if orders > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no orders counted: {per_minute}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let said = interrupt(demo, &lines);
    let summary = said
        .iter()
        .find(|l| l.contains("the shop published"))
        .unwrap_or_else(|| panic!("no summary in {said:?}"));
    assert!(summary.contains("0 refused"), "{summary}");
    assert_eq!(
        said.last().map(String::as_str),
        Some("sluice demo: stopped")
    );
}

/// A data dir of an older demo, whose view reads orders as a table: the next demo
/// replaces that view with its own, and leaves the views it defines alike untouched.
#[test]
fn a_second_demo_on_a_data_dir_brings_its_views_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, url, lines) = start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&format!("{url}/views/orders_per_minute")).0 != 200 {
        assert!(Instant::now() < deadline, "the demo never made its views");
        std::thread::sleep(Duration::from_millis(100));
    }
    let older = "CREATE VIEW orders_per_minute AS SELECT SUBSTRING(metadata.occurred_at, 1, 16) \
                 AS minute, COUNT(*) AS orders FROM \"shop.order\" \
                 GROUP BY SUBSTRING(metadata.occurred_at, 1, 16)";
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let put = agent
        .put(&format!("{url}/views/orders_per_minute"))
        .header("Content-Type", "application/json")
        .send(serde_json::json!({ "sql": older }).to_string().as_bytes())
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let (_, listing) = get(&format!("{url}/views/product_listing"));
    interrupt(demo, &lines);

    // The view is replaced once the demo has registered the shop (after it serves).
    let (demo, url, lines) = start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, orders) = get(&format!("{url}/views/orders_per_minute"));
        if orders["sql"]
            .as_str()
            .is_some_and(|sql| sql.contains("STREAM(\"shop.order\")"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "still the older view: {orders}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, again) = get(&format!("{url}/views/product_listing"));
    assert_eq!(again["updated_at"], listing["updated_at"], "{again}");
    interrupt(demo, &lines);
}

#[test]
fn bench_freshness_measures_the_shop_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let out = sluice()
        .args([
            "bench",
            "freshness",
            "--duration",
            "2",
            "--max-seconds",
            "2",
        ])
        .args(["--products", "100", "--rate", "2000", "--data-dir"])
        .arg(&data)
        .args(["--server-log", "info", "--set", "log.durability=interval"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The server's own log is shown when asked for, and the server took the
    // command's `--set`.
    let stderr = text(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("server: ")
            && l.contains("listen=")
            && l.contains("interval durability")),
        "{stderr}"
    );
    let stdout = text(&out.stdout);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // Published at the rate asked for, whose share of the maximum is reported.
    let events = v["events"].as_u64().unwrap();
    assert_eq!(
        (v["events_per_sec"].as_u64(), events),
        (Some(2000), 4000),
        "{v}"
    );
    let max = v["max_events_per_sec"].as_f64().unwrap();
    let fraction = v["fraction"].as_f64().unwrap();
    assert!((fraction - 2000.0 / max).abs() < 0.01, "{v}");
    // Every event reached the subscriber; the view's reads all saw their batch
    // applied.
    assert_eq!(v["received"], events, "{v}");
    assert_eq!(v["refused"], 0, "{v}");
    assert!(v["view_reads"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["view_reads_not_caught_up"], 0, "{v}");
    assert_eq!(v["durability"], "interval", "{v}");
    assert!(v["max_events_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    // The server's cost of the measured events, read from its /proc entries.
    assert!(v["server_cpu_us_per_event"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["server_context_switches_per_1k_events"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    // And the benchmark's own (it shares the machine).
    assert!(v["client_cpu_us_per_event"].as_f64().unwrap() > 0.0, "{v}");
    for key in ["publish_to_subscriber_ms", "publish_to_view_ms"] {
        for p in ["p50", "p99", "p999"] {
            assert!(v[key][p].as_f64().is_some(), "{key}.{p}: {v}");
        }
        assert!(v[key]["p50"].as_f64() <= v[key]["p999"].as_f64(), "{v}");
    }
    // A log filter that does not parse is refused before anything starts.
    let bad = sluice()
        .args([
            "bench",
            "freshness",
            "--server-log",
            "sluice=loud",
            "--data-dir",
        ])
        .arg(dir.path().join("unused"))
        .output()
        .unwrap();
    assert_refused(&bad, "not a log filter");
    let zero = sluice()
        .args(["bench", "freshness", "--rate", "0", "--data-dir"])
        .arg(dir.path().join("unused"))
        .output()
        .unwrap();
    assert_refused(&zero, "--rate must be positive");
    assert!(!dir.path().join("unused").exists());
    // A second run refuses a used dir rather than measuring on top of old data.
    let again = sluice()
        .args(["bench", "freshness", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_refused(&again, "not empty");
}
