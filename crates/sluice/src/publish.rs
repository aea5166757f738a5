//! `sluice publish <event-type>`: JSON lines from a file or stdin, sent in batches;
//! progress on stderr; stops at the first refused batch with the server's reasons.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cli::PublishArgs;
use crate::client::Client;
use crate::config::Config;

pub fn run(args: PublishArgs, config: &Config) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let client = Client::new(&args.server, config);
    let input: Box<dyn Read> = match &args.file {
        Some(path) => Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => Box::new(std::io::stdin()),
    };
    let path = format!("/event-types/{}/events", args.event_type);
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut sent = 0usize;
    let mut batch: Vec<u8> = Vec::new();
    let mut in_batch = 0usize;
    let send =
        |batch: &mut Vec<u8>, in_batch: &mut usize, sent: &mut usize| -> anyhow::Result<()> {
            if *in_batch == 0 {
                return Ok(());
            }
            batch.push(b']');
            let answer = client.post(&path, batch)?;
            match answer.status {
                200 => {}
                207 | 422 => {
                    let items: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
                    let reasons: Vec<String> = items
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .filter(|(_, i)| i["publishing_status"] == "failed")
                        .take(5)
                        .map(|(n, i)| {
                            format!(
                                "event {}: {} ({})",
                                *sent + n + 1,
                                i["detail"].as_str().unwrap_or(""),
                                i["step"].as_str().unwrap_or("")
                            )
                        })
                        .collect();
                    bail!(
                        "HTTP {}: the batch of events {}..={} was {}:\n  {}",
                        answer.status,
                        *sent + 1,
                        *sent + *in_batch,
                        if answer.status == 422 {
                            "refused, nothing written"
                        } else {
                            "partly written"
                        },
                        reasons.join("\n  ")
                    );
                }
                _ => answer.ok()?,
            }
            *sent += *in_batch;
            *in_batch = 0;
            batch.clear();
            if progress {
                eprint!("\r{sent} events published");
                let _ = std::io::stderr().flush();
            }
            Ok(())
        };
    for (n, line) in BufReader::new(input).lines().enumerate() {
        let line = line.context("cannot read the input")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        serde_json::from_str::<serde::de::IgnoredAny>(line)
            .with_context(|| format!("line {} is not JSON", n + 1))?;
        batch.push(if in_batch == 0 { b'[' } else { b',' });
        batch.extend_from_slice(line.as_bytes());
        in_batch += 1;
        if in_batch == args.batch {
            send(&mut batch, &mut in_batch, &mut sent)?;
        }
    }
    send(&mut batch, &mut in_batch, &mut sent)?;
    if progress {
        eprintln!();
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "published {sent} events to {} in {secs:.1} s",
        args.event_type
    );
    Ok(())
}
