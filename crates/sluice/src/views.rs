//! `sluice views create|list|get|rows|snapshot|delete` against a running server.

use std::path::Path;

use anyhow::bail;
use serde_json::{Value, json};

use crate::cli::ViewsCommand;
use crate::client::Client;
use crate::config::Config;

/// The text of an SQL file (`-`: stdin).
fn read_sql(file: &Path) -> anyhow::Result<String> {
    let text = crate::client::read_input(file)?;
    let sql = text.trim().trim_end_matches(';').trim().to_string();
    if sql.is_empty() {
        bail!("{} holds no SQL", file.display());
    }
    Ok(sql)
}

/// The view name a `CREATE VIEW` statement names (for PUT), as the server will read it.
fn view_name(sql: &str) -> Option<String> {
    let mut words = sql.split_whitespace();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("VIEW") {
            let name = words.next()?;
            let name = name.split('(').next()?.trim_matches('"');
            return Some(name.to_string());
        }
    }
    None
}

pub fn run(cmd: ViewsCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        ViewsCommand::Create {
            file,
            publish_as,
            on_error,
            replace,
            server,
        } => {
            let sql = read_sql(&file)?;
            let mut body = json!({"sql": sql, "on_error": on_error});
            if let Some(et) = publish_as {
                body["publish_as"] = json!(et);
            }
            let client = Client::new(&server, config);
            let answer = if replace {
                let Some(name) = view_name(&sql) else {
                    bail!("{} does not hold CREATE VIEW name AS ...", file.display());
                };
                client.put(&format!("/views/{name}"), body.to_string().as_bytes())?
            } else {
                client.post("/views", body.to_string().as_bytes())?
            };
            let created = answer.status == 201;
            let view = answer.ok_json()?;
            let name = view["name"].as_str().unwrap_or_default();
            let key = view["key"].as_array().map(|k| {
                k.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            println!(
                "{} view {name} (key: {})",
                if created { "created" } else { "replacing" },
                key.unwrap_or_default()
            );
        }
        ViewsCommand::List { json, server } => {
            let views = Client::new(&server, config).get("/views")?.ok_json()?;
            let items = views["items"].as_array().cloned().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(());
            }
            println!(
                "{:<30} {:<12} {:>10} {:>10} {:>8}",
                "NAME", "STATUS", "ROWS", "LAG", "SKIPPED"
            );
            for v in items {
                let lag: u64 = v["sources"]
                    .as_array()
                    .map(|s| s.iter().filter_map(|x| x["lag_events"].as_u64()).sum())
                    .unwrap_or(0);
                println!(
                    "{:<30} {:<12} {:>10} {:>10} {:>8}",
                    v["name"].as_str().unwrap_or_default(),
                    v["status"].as_str().unwrap_or_default(),
                    v["rows"].as_u64().unwrap_or(0),
                    lag,
                    v["errors"]["skipped"].as_u64().unwrap_or(0),
                );
            }
        }
        ViewsCommand::Get { name, server } => {
            let v = Client::new(&server, config)
                .get(&format!("/views/{name}"))?
                .ok_json()?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ViewsCommand::Rows {
            name,
            key,
            prefix,
            after,
            limit,
            server,
        } => {
            let client = Client::new(&server, config);
            match key {
                Some(k) => {
                    let row = client.get(&format!("/views/{name}/rows/{k}"))?.ok_json()?;
                    println!("{row}");
                }
                None => {
                    let mut path = format!("/views/{name}/rows?limit={limit}&prefix={prefix}");
                    if let Some(a) = after {
                        path.push_str(&format!("&after={a}"));
                    }
                    let rows = client.get(&path)?.ok_json()?;
                    for r in rows["items"].as_array().into_iter().flatten() {
                        println!("{r}");
                    }
                }
            }
        }
        ViewsCommand::Snapshot { name, server } => {
            let r = Client::new(&server, config)
                .post(&format!("/views/{name}/snapshots"), b"{}")?
                .ok_json()?;
            println!("{}", r["path"].as_str().unwrap_or_default());
        }
        ViewsCommand::Delete { name, server } => {
            Client::new(&server, config)
                .delete(&format!("/views/{name}"))?
                .ok()?;
            println!("deleted {name}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_view_name_is_read_from_the_sql() {
        assert_eq!(
            super::view_name("CREATE VIEW a AS SELECT 1").as_deref(),
            Some("a")
        );
        assert_eq!(
            super::view_name("create or replace view \"b\" WITH (key='x') AS SELECT").as_deref(),
            Some("b")
        );
        assert_eq!(super::view_name("SELECT 1"), None);
    }
}
