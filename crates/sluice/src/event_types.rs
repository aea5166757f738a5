//! `sluice event-types list|get|create|delete` against a running server.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cli::EventTypesCommand;
use crate::client::Client;
use crate::config::Config;

pub fn run(cmd: EventTypesCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        EventTypesCommand::List { server, json } => {
            let all = Client::new(&server, config)
                .get("/event-types")?
                .ok_json()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            println!(
                "{:<40} {:<10} {:>10} {:>8}",
                "NAME", "CATEGORY", "PARTITIONS", "SCHEMA"
            );
            for et in all.as_array().into_iter().flatten() {
                println!(
                    "{:<40} {:<10} {:>10} {:>8}",
                    et["name"].as_str().unwrap_or(""),
                    et["category"].as_str().unwrap_or(""),
                    et["partition_count"].as_u64().unwrap_or(1),
                    et["schema"]["version"].as_str().unwrap_or("")
                );
            }
        }
        EventTypesCommand::Get { name, server } => {
            let et = Client::new(&server, config)
                .get(&format!("/event-types/{name}"))?
                .ok_json()?;
            println!("{}", serde_json::to_string_pretty(&et)?);
        }
        EventTypesCommand::Create { file, server } => {
            let client = Client::new(&server, config);
            let definitions = read_definitions(&file)?;
            for def in &definitions {
                let name = def["name"].as_str().unwrap_or("(no name)");
                let body = serde_json::to_vec(def)?;
                client
                    .post("/event-types", &body)?
                    .ok_json()
                    .with_context(|| format!("cannot create {name}"))?;
                println!("created {name}");
            }
        }
        EventTypesCommand::Delete { name, server } => {
            Client::new(&server, config)
                .delete(&format!("/event-types/{name}"))?
                .ok()?;
            println!("deleted {name}");
        }
    }
    Ok(())
}

/// One definition or a list of them, from JSON or YAML (by extension, else by trying).
fn read_definitions(file: &Path) -> anyhow::Result<Vec<Value>> {
    let text = crate::client::read_input(file)?;
    let yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let value: Value = if yaml {
        serde_norway::from_str(&text)
            .with_context(|| format!("{} is not valid YAML", file.display()))?
    } else {
        match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(json_err) => serde_norway::from_str(&text)
                .map_err(|_| json_err)
                .with_context(|| format!("{} is neither valid JSON nor YAML", file.display()))?,
        }
    };
    let mut defs = match value {
        Value::Array(a) => a,
        v @ Value::Object(_) => vec![v],
        _ => bail!(
            "{} must hold an event type or a list of them",
            file.display()
        ),
    };
    // YAML lets people write the schema as a mapping; the API wants it as a string.
    for def in &mut defs {
        if let Some(schema) = def.pointer_mut("/schema/schema")
            && !schema.is_string()
        {
            *schema = Value::String(schema.to_string());
        }
    }
    Ok(defs)
}
