//! Black-box tests of the `sluice` binary: help, config, serve, verify and bench;
//! and the workspace tidy checks.

mod crash;
mod demo;
mod interop;
mod kafka;
mod process;
mod publishers;
mod tidy;

pub(crate) use process::{Node, spawn_serve, wait_for_listen_address};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env_remove("SLUICE_CONFIG").env("RUST_LOG", "info");
    c
}

fn run(args: &[&str]) -> Output {
    sluice().args(args).output().unwrap()
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command that failed and said why.
pub(crate) fn assert_refused(out: &Output, says: &str) {
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
}

#[test]
fn help_lists_the_commands() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in ["serve", "verify", "config", "bench"] {
        assert!(help.contains(cmd), "{help}");
    }
    let out = run(&["bench", "log", "--help"]);
    let help = text(&out.stdout);
    for flag in [
        "--data-dir",
        "--record-bytes",
        "--records",
        "--durability",
        "--partitions",
        "--batch",
    ] {
        assert!(help.contains(flag), "{help}");
    }
}

#[test]
fn config_layers_and_rejects_mistakes() {
    let out = sluice()
        .args(["config", "--set", "log.flush_interval_ms=250"])
        .env("SLUICE_LOG__DURABILITY", "interval")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("durability = \"interval\""), "{shown}");
    assert!(shown.contains("flush_interval_ms = 250"), "{shown}");

    let out = run(&["config", "--set", "log.durabilty=none"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown field `durabilty`"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&[
        "bench",
        "log",
        "--data-dir",
        "/tmp",
        "--durability",
        "sometimes",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("sometimes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serve_answers_http_until_sigterm_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = spawn_serve(&data);
    let (addr, lines) = wait_for_listen_address(&mut server);
    let health = ureq::get(&format!("http://{addr}/health"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert_eq!(health, "OK");

    // A second server on the same data dir is refused with a clear message.
    let second = sluice()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_refused(&second, "in use by another process");

    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.wait().unwrap();
    let rest: Vec<String> = lines.iter().collect();
    assert!(exit.success(), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("stopped cleanly")),
        "{rest:?}"
    );

    let out = run(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok"));
}

/// `THP_enabled` of a process's status: whether it may use transparent huge pages.
#[cfg(target_os = "linux")]
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"));
    line.expect("THP_enabled in /proc/PID/status")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[cfg(target_os = "linux")]
#[test]
fn serve_uses_small_pages_unless_huge_pages_are_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let start = |extra: &[&str], data: &str| {
        let mut server = Node(
            sluice()
                .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(dir.path().join(data))
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        wait_for_listen_address(&mut server);
        let thp = thp_enabled(server.id());
        server.kill().unwrap();
        server.wait().unwrap();
        thp
    };
    assert_eq!(start(&[], "default"), "0");
    // Asked for, the process keeps what it was started with (this test's own).
    let inherited = thp_enabled(std::process::id());
    assert_eq!(start(&["--set", "huge_pages=true"], "asked"), inherited);
}

#[test]
fn serve_on_an_unusable_data_dir_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = sluice()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot open the embedded log") && err.contains("a-file"),
        "{err}"
    );
}

#[test]
fn verify_reports_damage() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a Sluice data dir"),
        "{}",
        text(&out.stderr)
    );

    // Make a data dir with data by running the benchmark and keeping its files.
    let out = run(&[
        "bench",
        "log",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--records",
        "2000",
        "--record-bytes",
        "100",
        "--durability",
        "none",
        "--disk-probe-bytes",
        "0",
        "--keep",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let data = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("log");
    let out = run(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let segment = data.join("topics/bench/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&segment, bytes).unwrap();
    let out = run(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("DAMAGE"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bench_log_prints_the_promised_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "bench",
        "log",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--record-bytes",
        "200",
        "--records",
        "20000",
        "--durability",
        "fsync",
        "--partitions",
        "2",
        "--batch",
        "50",
        "--disk-probe-bytes",
        "4194304",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    for key in [
        "append_mb_per_sec",
        "append_records_per_sec",
        "read_mb_per_sec",
        "read_records_per_sec",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key} in {last}");
    }
    for key in ["p50", "p99"] {
        assert!(
            v["append_latency_ms"][key].as_f64().unwrap() > 0.0,
            "{key} in {last}"
        );
    }
    assert_eq!(v["records"], 20000);
    assert_eq!(v["record_bytes"], 200);
    assert_eq!(v["partitions"], 2);
    assert_eq!(v["durability"], "fsync");
    assert!(v["disk_write_mb_per_sec"].as_f64().unwrap() > 0.0);
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "the benchmark cleans up"
    );
}

/// The first CPU this process may run on (`Cpus_allowed_list: 0-1` or `3,5`).
fn first_allowed_cpu() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap();
    list.trim().split([',', '-']).next().unwrap().to_string()
}

#[test]
fn bench_views_builds_looks_up_from_its_own_client_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bench");
    let cpu = first_allowed_cpu();
    let bench = |keys: &str, cpu: &str| {
        run(&[
            "bench",
            "views",
            "--data-dir",
            data.to_str().unwrap(),
            "--keys",
            keys,
            "--updates",
            "300",
            "--lookup-rate",
            "300",
            "--lookup-seconds",
            "1",
            "--update-rate",
            "100",
            "--build-cpu",
            cpu,
        ])
    };
    // A CPU the process may not run on is refused before anything is written.
    assert_refused(
        &bench("10", "100000"),
        "CPU 100000 is not one this process may run on",
    );
    assert!(!data.exists());
    let out = bench("300", &cpu);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // The build ran on the one CPU asked for.
    assert_eq!(v["build_cpus"], 1, "{v}");
    assert!(v["build_context_switches"].is_u64(), "{v}");
    // Every product has its row; every lookup found one; the restore checked its keys.
    assert_eq!(v["keys"], 300, "{v}");
    assert_eq!(v["source_events"], 300 * 4 + 300, "{v}");
    assert_eq!(v["lookup_client"], "own process", "{v}");
    assert_eq!(v["lookup_errors"], 0, "{v}");
    assert!(v["lookups"].as_u64().unwrap() >= 290, "{v}");
    // Measured beside the lookups; CPU in 10 ms ticks, so possibly zero here.
    for key in ["lookup_server_cpu_us", "lookup_client_cpu_us"] {
        assert!(v[key].is_number(), "{key}: {v}");
    }
    // The build reads the sources one after the other, the product last: each key's
    // row appears once, complete, and changes no more.
    let changes = v["build_row_changes"].as_u64().unwrap();
    assert_eq!(changes, 300, "{v}");
    // A changed row is its retraction and its insertion, at least.
    let work = v["build_engine_changes"].as_u64().unwrap();
    assert!((changes..=4 * changes).contains(&work), "{v}");
    for key in [
        "source_events_per_sec",
        "source_events_per_cpu_sec",
        "state_mb",
        "rss_mb",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    // Rounded to 10 ms: zero for a view this small (the restoring process compares
    // the keys and fails on a difference).
    assert!(v["restore_seconds"].is_number(), "{v}");
    // The rows answer from the state file before the whole state is loaded.
    let serving = v["restore_serving_seconds"].as_f64().unwrap();
    assert!(serving <= v["restore_seconds"].as_f64().unwrap(), "{v}");
    assert!(v["frozen_lookup_us"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["restore_rss_mb"].as_f64().unwrap() > 0.0, "{v}");
    for key in [
        "lookup_latency_ms",
        "lookup_service_ms",
        "idle_wakeup_late_ms",
        "idle_wakeup_late_during_lookups_ms",
    ] {
        assert!(v[key]["p99"].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
}

#[test]
fn bench_view_apply_builds_the_view_in_one_thread() {
    let out = run(&["bench", "view-apply", "--keys", "500", "--updates", "700"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // Every product has its row (the command fails otherwise).
    assert_eq!(v["view_rows"], 500, "{v}");
    assert_eq!(v["events"], 500 * 4 + 700, "{v}");
    let changes = v["view_row_changes"].as_u64().unwrap();
    assert!((500..=500 * 4 + 700).contains(&changes), "{v}");
    let work = v["engine_changes"].as_u64().unwrap();
    assert!((changes..=4 * changes).contains(&work), "{v}");
    for key in [
        "decode_us_per_event",
        "apply_us_per_event",
        "events_per_core_sec",
        "state_encode_ms",
        "state_mb",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }

    let out = run(&["bench", "view-apply", "--batch", "0"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--batch"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn event_types_and_publish_commands_drive_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_serve(&dir.path().join("data"));
    let (addr, _lines) = wait_for_listen_address(&mut server);
    let url = format!("http://{addr}");
    let yaml = dir.path().join("types.yaml");
    std::fs::write(
        &yaml,
        r#"
- name: shop.price
  owning_application: pricing
  category: business
  enrichment_strategies: [metadata_enrichment]
  partition_strategy: hash
  partition_key_fields: [sku]
  partition_count: 2
  schema:
    type: json_schema
    schema:
      type: object
      properties:
        sku: {type: string}
        amount: {type: integer}
      required: [sku, amount]
"#,
    )
    .unwrap();
    let out = run(&[
        "event-types",
        "create",
        "-f",
        yaml.to_str().unwrap(),
        "--url",
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("created shop.price"));
    let out = run(&[
        "event-types",
        "create",
        "-f",
        yaml.to_str().unwrap(),
        "--url",
        &url,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );

    let list = text(&run(&["event-types", "list", "--url", &url]).stdout);
    assert!(
        list.contains("shop.price") && list.contains("business"),
        "{list}"
    );

    let events: String = (0..20)
        .map(|i| {
            format!(
                "{{\"sku\":\"sku-{}\",\"amount\":{i},\"metadata\":{{\"eid\":\"00000000-0000-4000-8000-{i:012}\",\"occurred_at\":\"2026-11-22T10:00:00Z\"}}}}\n",
                i % 3
            )
        })
        .collect();
    let lines = dir.path().join("events.jsonl");
    std::fs::write(&lines, events).unwrap();
    let out = run(&[
        "publish",
        "shop.price",
        "-f",
        lines.to_str().unwrap(),
        "--batch",
        "7",
        "--url",
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("published 20 events"),
        "{}",
        text(&out.stderr)
    );
    let parts: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!("{url}/event-types/shop.price/partitions"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let total: u64 = parts
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["newest_available_offset"].as_str().map_or(0, |o| {
                o.rsplit('-').next().unwrap().parse::<u64>().unwrap() + 1
            })
        })
        .sum();
    assert_eq!(total, 20);

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"sku\": 1, \"amount\": \"x\"}\n").unwrap();
    let out = run(&[
        "publish",
        "shop.price",
        "-f",
        bad.to_str().unwrap(),
        "--url",
        &url,
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("HTTP 422") && err.contains("validating"),
        "{err}"
    );

    // A view over it, from an SQL file: the latest price per sku (hash-partitioned
    // business events are read as a table).
    let sql = dir.path().join("latest.sql");
    std::fs::write(
        &sql,
        "CREATE VIEW latest_price AS\nSELECT sku, amount, amount * 2 AS doubled FROM \"shop.price\";\n",
    )
    .unwrap();
    let out = run(&[
        "views",
        "create",
        "-f",
        sql.to_str().unwrap(),
        "--url",
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("created view latest_price (key: sku)"),
        "{}",
        text(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let out = run(&["views", "rows", "latest_price", "sku-2", "--url", &url]);
        if out.status.success() || Instant::now() > deadline {
            break text(&out.stdout);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // sku-2 was last published with amount 17 (i = 17, 17 % 3 = 2).
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&row).unwrap(),
        serde_json::json!({"sku": "sku-2", "amount": 17, "doubled": 34})
    );
    let rows = text(&run(&["views", "rows", "latest_price", "--url", &url]).stdout);
    assert_eq!(rows.lines().count(), 3, "{rows}");
    let list = text(&run(&["views", "list", "--url", &url]).stdout);
    assert!(
        list.contains("latest_price") && list.contains("running"),
        "{list}"
    );
    let bad = dir.path().join("bad.sql");
    std::fs::write(&bad, "CREATE VIEW v AS\nSELECT sku FROM \"shop.nope\"").unwrap();
    let out = run(&[
        "views",
        "create",
        "-f",
        bad.to_str().unwrap(),
        "--url",
        &url,
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("HTTP 422") && err.contains("shop.nope") && err.contains("line 2, column 17"),
        "{err}"
    );
    assert!(
        run(&["views", "delete", "latest_price", "--url", &url])
            .status
            .success()
    );

    let out = run(&["event-types", "get", "shop.price", "--url", &url]);
    assert!(text(&out.stdout).contains("\"version\": \"1.0.0\""));
    assert!(
        run(&["event-types", "delete", "shop.price", "--url", &url])
            .status
            .success()
    );
    let out = run(&["event-types", "get", "shop.price", "--url", &url]);
    assert!(
        text(&out.stderr).contains("HTTP 404"),
        "{}",
        text(&out.stderr)
    );
    let _ = server.kill();
}

#[test]
fn subscriptions_and_tail_commands_drive_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_serve(&dir.path().join("data"));
    let (addr, _lines) = wait_for_listen_address(&mut server);
    let url = format!("http://{addr}");
    let et = r#"{"name": "shop.stock", "owning_application": "stock", "category": "undefined",
        "partition_count": 2, "schema": {"type": "json_schema", "schema": "{}"}}"#;
    let file = dir.path().join("et.json");
    std::fs::write(&file, et).unwrap();
    assert!(
        run(&[
            "event-types",
            "create",
            "-f",
            file.to_str().unwrap(),
            "--url",
            &url
        ])
        .status
        .success()
    );
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "{\"sku\": \"a\", \"qty\": 1}\n{\"sku\": \"b\", \"qty\": 2}\n{\"sku\": \"c\", \"qty\": 3}\n").unwrap();
    let out = run(&[
        "publish",
        "shop.stock",
        "-f",
        events.to_str().unwrap(),
        "--url",
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let create = |group: &str| {
        run(&[
            "subscriptions",
            "create",
            "--event-type",
            "shop.stock",
            "--owning-application",
            "search",
            "--consumer-group",
            group,
            "--read-from",
            "begin",
            "--url",
            &url,
        ])
    };
    let out = create("g1");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 36, "{id}");
    let again = create("g1");
    assert_eq!(
        text(&again.stdout).trim(),
        id,
        "the same key finds the same subscription"
    );
    assert!(text(&again.stderr).contains("exists"));

    let out = run(&["subscriptions", "list", "--url", &url]);
    assert!(text(&out.stdout).contains(&id) && text(&out.stdout).contains("shop.stock"));
    let out = run(&["subscriptions", "stats", &id, "--url", &url]);
    let stats = text(&out.stdout);
    let unconsumed: u64 = stats
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(3).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(unconsumed, 3, "{stats}");
    let out = run(&["subscriptions", "reset", &id, "--to", "end", "--url", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["subscriptions", "stats", &id, "--json", "--url", &url]);
    assert!(
        !text(&out.stdout).contains("\"unconsumed_events\": 1"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&[
        "subscriptions",
        "reset",
        &id,
        "--to",
        "someday",
        "--url",
        &url,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("RFC 3339"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&[
        "tail",
        "shop.stock",
        "--from-beginning",
        "--raw",
        "-n",
        "3",
        "--url",
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut skus: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["sku"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    skus.sort();
    assert_eq!(skus, ["a", "b", "c"]);
    let out = run(&["tail", "nope", "--url", &url]);
    assert!(
        text(&out.stderr).contains("HTTP 404"),
        "{}",
        text(&out.stderr)
    );

    assert!(
        run(&["subscriptions", "delete", &id, "--url", &url])
            .status
            .success()
    );
    let out = run(&["subscriptions", "stats", &id, "--url", &url]);
    assert!(text(&out.stderr).contains("HTTP 404"));
    let _ = server.kill();
}
