//! Sluice's configuration: one serde struct per section, defaults in code and in the
//! commented `config/sluice.example.toml` (a test keeps the two equal), layered as
//! defaults <- config file <- `SLUICE_*` environment variables <- `--set` flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sluice_bus::BusConfig;
use sluice_log::EmbeddedConfig;

/// Environment variable naming the config file (like `--config`).
pub const CONFIG_ENV: &str = "SLUICE_CONFIG";
/// Prefix of environment overrides: `SLUICE_DATA_DIR`, `SLUICE_LOG__DURABILITY`, ...
/// (`__` separates sections).
pub const ENV_PREFIX: &str = "SLUICE_";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// The embedded segmented log on local disk.
    Embedded,
    /// An Apache Kafka cluster (the `[kafka]` section).
    Kafka,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where Sluice keeps its data (the embedded log, later the derived state).
    pub data_dir: PathBuf,
    pub storage: Storage,
    /// The embedded log.
    pub log: EmbeddedConfig,
    pub kafka: KafkaSection,
    pub http: HttpConfig,
    pub bus: BusConfig,
    pub views: ViewsSection,
    /// Whether the process may use transparent huge pages (Linux). Off by default:
    /// a huge page is zeroed whole by the thread whose write first touches it, a
    /// stall in the middle of a request (BENCHMARKS.md, "Huge pages").
    pub huge_pages: bool,
}

/// SQL views: where their state goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViewsSection {
    /// How often a view writes its state and offsets to `{data_dir}/views` (at least
    /// 400 times its last encoding time apart: the view pauses while it encodes).
    pub checkpoint_interval_ms: u64,
    /// Where `POST /views/{name}/snapshots` copies a view's state, and where a node
    /// without local state looks for the latest one. Empty: no snapshots.
    pub snapshot_dir: String,
    /// With several nodes on Kafka: how long a view's publisher lease lasts without
    /// renewal; another node publishes the view's changes this long after its
    /// publisher died.
    pub publisher_lease_ms: u64,
}

impl Default for ViewsSection {
    fn default() -> Self {
        ViewsSection {
            checkpoint_interval_ms: 10_000,
            snapshot_dir: String::new(),
            publisher_lease_ms: 6_000,
        }
    }
}

impl ViewsSection {
    /// The views' settings for a data dir.
    pub fn resolve(&self, data_dir: &Path) -> sluice_views::ViewsConfig {
        sluice_views::ViewsConfig {
            state_dir: Some(data_dir.join("views")),
            checkpoint_every: std::time::Duration::from_millis(self.checkpoint_interval_ms.max(1)),
            snapshot_dir: (!self.snapshot_dir.is_empty())
                .then(|| PathBuf::from(&self.snapshot_dir)),
            publisher_lease: std::time::Duration::from_millis(self.publisher_lease_ms.max(300)),
        }
    }
}

/// How to reach Kafka, with `storage = "kafka"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// `host:port[,host:port...]` of some brokers of the cluster.
    pub bootstrap: String,
    /// Replicas of each topic Sluice creates; -1 takes the cluster's
    /// default.replication.factor.
    pub replication_factor: i32,
    /// How long an append may wait for the cluster before it fails (503).
    pub delivery_timeout_ms: u64,
    /// The longest wait asked of a broker in one Fetch.
    pub fetch_wait_max_ms: u64,
    /// How long `serve` keeps trying to reach the cluster at start.
    pub connect_timeout_ms: u64,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            bootstrap: String::new(),
            replication_factor: -1,
            delivery_timeout_ms: 30_000,
            fetch_wait_max_ms: 100,
            connect_timeout_ms: 300_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the API listens on.
    pub listen: String,
    /// A header naming the authenticated caller, set by a trusted proxy; its value
    /// becomes `metadata.published_by`. Empty: every publisher is `unauthenticated`.
    pub principal_header: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            principal_header: String::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            storage: Storage::Embedded,
            log: EmbeddedConfig::default(),
            kafka: KafkaSection::default(),
            http: HttpConfig::default(),
            bus: BusConfig::default(),
            views: ViewsSection::default(),
            huge_pages: false,
        }
    }
}

impl Config {
    /// Builds the effective config from an optional file, the environment and
    /// `key.path=value` overrides. Unknown keys and bad values are errors that name them.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> anyhow::Result<Config> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("config file {} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == CONFIG_ENV || rest.is_empty() {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            set_path(&mut table, &path, parse_value(&value))
                .with_context(|| format!("environment variable {name}"))?;
        }
        for o in overrides {
            let Some((key, value)) = o.split_once('=') else {
                bail!("--set {o:?}: expected KEY=VALUE, for example --set log.durability=none");
            };
            let path: Vec<String> = key.trim().split('.').map(String::from).collect();
            set_path(&mut table, &path, parse_value(value.trim()))
                .with_context(|| format!("--set {o}"))?;
        }
        let origin = file.map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
        Config::deserialize(toml::Value::Table(table)).map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration (from {origin}, SLUICE_* variables and flags): {e}"
            )
        })
    }
}

/// A TOML value if `raw` is one (`42`, `true`, `"x"`, `[1]`), else the raw string.
fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    let Some((last, parents)) = path.split_last() else {
        bail!("empty key");
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .with_context(|| format!("`{p}` is a value, not a section"))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_log::Durability;

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/sluice.example.toml")
    }

    fn keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                keys(&path, v, out);
            }
        } else {
            out.push(prefix.to_string());
        }
    }

    #[test]
    fn example_file_documents_exactly_the_defaults() {
        let text = std::fs::read_to_string(example_path()).unwrap();
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            Config::default(),
            "the example file's values are the defaults"
        );
        let mut in_file = Vec::new();
        keys("", &toml::Value::Table(text.parse().unwrap()), &mut in_file);
        let mut in_code = Vec::new();
        keys(
            "",
            &toml::Value::try_from(Config::default()).unwrap(),
            &mut in_code,
        );
        in_file.sort();
        in_code.sort();
        assert_eq!(in_file, in_code, "every option appears in the example file");
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\n[log]\ndurability = \"interval\"\nflush_interval_ms = 5\n",
        )
        .unwrap();
        let env = vec![
            ("SLUICE_LOG__FLUSH_INTERVAL_MS".to_string(), "7".to_string()),
            ("SLUICE_DATA_DIR".to_string(), "/from/env".to_string()),
            ("OTHER".to_string(), "ignored".to_string()),
        ];
        let c = Config::load(Some(&file), env, &["data_dir=/from/flag".into()]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(c.log.durability, Durability::Interval);
        assert_eq!(c.log.flush_interval_ms, 7);
    }

    #[test]
    fn mistakes_are_named() {
        let err = Config::load(None, vec![], &["log.durabilty=none".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("durabilty"), "{err:#}");
        let err = Config::load(None, vec![], &["log.durability=sometimes".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("sometimes"), "{err:#}");
        let err = Config::load(None, vec![], &["novalue".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("KEY=VALUE"), "{err:#}");
        let err = Config::load(Some(Path::new("/nonexistent/s.toml")), vec![], &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/s.toml"),
            "{err:#}"
        );
    }
}
