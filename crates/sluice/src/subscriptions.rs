//! `sluice subscriptions create|list|stats|reset|delete` and `sluice tail` against a
//! running server.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cli::{SubscriptionsCommand, TailArgs};
use crate::client::Client;
use crate::config::Config;

pub fn run(cmd: SubscriptionsCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        SubscriptionsCommand::Create {
            event_types,
            owning_application,
            consumer_group,
            read_from,
            server,
        } => {
            let body = json!({"owning_application": owning_application, "event_types": event_types,
                "consumer_group": consumer_group, "read_from": read_from});
            let answer =
                Client::new(&server, config).post("/subscriptions", body.to_string().as_bytes())?;
            let existed = answer.status == 200;
            let sub = answer.ok_json()?;
            let id = sub["id"].as_str().unwrap_or_default();
            if existed {
                eprintln!("a subscription with this application, event types and group exists");
            }
            println!("{id}");
        }
        SubscriptionsCommand::List {
            event_type,
            json,
            server,
        } => {
            let client = Client::new(&server, config);
            let mut all = Vec::new();
            let mut path = match &event_type {
                Some(et) => format!("/subscriptions?limit=1000&event_type={et}"),
                None => "/subscriptions?limit=1000".to_string(),
            };
            loop {
                let page = client.get(&path)?.ok_json()?;
                all.extend(page["items"].as_array().cloned().unwrap_or_default());
                match page["_links"]["next"]["href"].as_str() {
                    Some(next) => path = next.to_string(),
                    None => break,
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<20} {:<12} {:<6} EVENT TYPES",
                "ID", "APPLICATION", "GROUP", "FROM"
            );
            for s in &all {
                let types: Vec<&str> = s["event_types"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{:<36}  {:<20} {:<12} {:<6} {}",
                    s["id"].as_str().unwrap_or(""),
                    s["owning_application"].as_str().unwrap_or(""),
                    s["consumer_group"].as_str().unwrap_or(""),
                    s["read_from"].as_str().unwrap_or(""),
                    types.join(",")
                );
            }
        }
        SubscriptionsCommand::Stats { id, json, server } => {
            let stats = Client::new(&server, config)
                .get(&format!("/subscriptions/{id}/stats?show_time_lag=true"))?
                .ok_json()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
                return Ok(());
            }
            println!(
                "{:<30} {:>9} {:<12} {:>12} {:>8}  STREAM",
                "EVENT TYPE", "PARTITION", "STATE", "UNCONSUMED", "LAG (s)"
            );
            for et in stats["items"].as_array().into_iter().flatten() {
                for p in et["partitions"].as_array().into_iter().flatten() {
                    println!(
                        "{:<30} {:>9} {:<12} {:>12} {:>8}  {}",
                        et["event_type"].as_str().unwrap_or(""),
                        p["partition"].as_str().unwrap_or(""),
                        p["state"].as_str().unwrap_or(""),
                        p["unconsumed_events"].as_u64().unwrap_or(0),
                        p["consumer_lag_seconds"].as_u64().unwrap_or(0),
                        p["stream_id"].as_str().unwrap_or("-")
                    );
                }
            }
        }
        SubscriptionsCommand::Reset { id, to, server } => {
            Client::new(&server, config)
                .patch(
                    &format!("/subscriptions/{id}/cursors"),
                    json!({"to": to}).to_string().as_bytes(),
                )?
                .ok()?;
            println!("reset {id} to {to}");
        }
        SubscriptionsCommand::Delete { id, server } => {
            Client::new(&server, config)
                .delete(&format!("/subscriptions/{id}"))?
                .ok()?;
            println!("deleted {id}");
        }
    }
    Ok(())
}

/// Follows an event type through the low-level read: every event as it is stored.
pub fn tail(args: TailArgs, config: &Config) -> anyhow::Result<()> {
    let client = Client::new(&args.server, config);
    let mut headers = Vec::new();
    if args.from_beginning {
        let parts = client
            .get(&format!("/event-types/{}/partitions", args.event_type))?
            .ok_json()?;
        let cursors: Vec<Value> = parts
            .as_array()
            .context("partitions")?
            .iter()
            .map(|p| json!({"partition": p["partition"], "offset": "BEGIN"}))
            .collect();
        headers.push(("X-Nakadi-Cursors", Value::Array(cursors).to_string()));
    }
    let mut path = format!(
        "/event-types/{}/events?batch_limit=1&batch_flush_timeout=5",
        args.event_type
    );
    if let Some(n) = args.limit {
        if n == 0 {
            bail!("--limit must be positive");
        }
        path.push_str(&format!("&stream_limit={n}"));
    }
    let reader = client.stream(&path, &headers)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = 0u64;
    for line in reader.lines() {
        let line = line.context("the stream broke off")?;
        let batch: Value = serde_json::from_str(&line).context("a stream line is not JSON")?;
        for event in batch["events"].as_array().into_iter().flatten() {
            let text = if args.raw {
                serde_json::to_string(event)?
            } else {
                serde_json::to_string_pretty(event)?
            };
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                return Ok(()); // the reader went away (e.g. `| head`)
            }
            printed += 1;
        }
        if args.limit.is_some_and(|n| printed >= n) {
            break;
        }
    }
    Ok(())
}
