//! Topics through Kafka's admin API: create, delete, describe (metadata + configs),
//! alter configs, add partitions. Kafka applies topic changes asynchronously; each call
//! here returns once the cluster's metadata shows the change, so that the next call
//! (an append to a new topic, a create after a delete) sees it.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use sluice_log::{CleanupPolicy, LogError, Result, TopicConfig, TopicInfo, TopicName};

use crate::wire::ConfigChange;
use crate::{KafkaLog, broker};

/// How long to wait for the cluster's metadata to show a change.
const SETTLE: Duration = Duration::from_secs(15);

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)))
}

fn policy(p: CleanupPolicy) -> &'static str {
    match p {
        CleanupPolicy::Delete => "delete",
        CleanupPolicy::Compact => "compact",
        CleanupPolicy::CompactAndDelete => "compact,delete",
    }
}

fn parse_policy(s: &str) -> CleanupPolicy {
    let (c, d) = (s.contains("compact"), s.contains("delete"));
    match (c, d) {
        (true, true) => CleanupPolicy::CompactAndDelete,
        (true, false) => CleanupPolicy::Compact,
        _ => CleanupPolicy::Delete,
    }
}

fn millis(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_string(), |v| v.to_string())
}

/// The Kafka topic configs that carry a `TopicConfig`.
fn entries(c: &TopicConfig) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("cleanup.policy", policy(c.cleanup_policy).to_string()),
        ("retention.ms", millis(c.retention_ms)),
        ("retention.bytes", millis(c.retention_bytes)),
        ("segment.bytes", c.segment_bytes.to_string()),
        ("delete.retention.ms", c.delete_retention_ms.to_string()),
    ];
    if let Some(ms) = c.segment_ms {
        out.push(("segment.ms", ms.to_string()));
    }
    out
}

/// The topic's partition count as the cluster's metadata says, `None` if it has none.
async fn partitions_now(log: &KafkaLog, name: &TopicName) -> Result<Option<u32>> {
    let log2 = log.clone();
    let topic = name.as_str().to_string();
    tokio::task::spawn_blocking(move || {
        let md = log2
            .producer()
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(broker)?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match t.error() {
            None => Ok(Some(t.partitions().len() as u32)),
            Some(_) => Ok(None),
        }
    })
    .await
    .map_err(broker)?
}

/// Waits until the metadata shows `want` partitions (or none, for `None`).
async fn settle(log: &KafkaLog, name: &TopicName, want: Option<u32>) -> Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = partitions_now(log, name).await?;
        if now == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(broker(format!(
                "topic {name}: the cluster still shows {now:?} partitions, not {want:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn create(log: &KafkaLog, name: &TopicName, config: &TopicConfig) -> Result<()> {
    let entries = entries(config);
    let mut topic = NewTopic::new(
        name.as_str(),
        config.partitions as i32,
        TopicReplication::Fixed(log.inner.config.replication_factor),
    );
    for (k, v) in &entries {
        topic = topic.set(k, v);
    }
    let results = log
        .inner
        .admin
        .create_topics([&topic], &options())
        .await
        .map_err(broker)?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                return Err(LogError::TopicExists(name.to_string()));
            }
            Err((_, code)) => return Err(broker(format!("creating topic {name}: {code}"))),
        }
    }
    settle(log, name, Some(config.partitions)).await
}

pub async fn delete(log: &KafkaLog, name: &TopicName) -> Result<()> {
    let results = log
        .inner
        .admin
        .delete_topics(&[name.as_str()], &options())
        .await
        .map_err(broker)?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((
                _,
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
            )) => {
                return Err(LogError::TopicNotFound(name.to_string()));
            }
            Err((_, code)) => return Err(broker(format!("deleting topic {name}: {code}"))),
        }
    }
    settle(log, name, None).await
}

pub async fn list(log: &KafkaLog) -> Result<Vec<TopicInfo>> {
    let log2 = log.clone();
    let names: Vec<String> = tokio::task::spawn_blocking(move || {
        let md = log2
            .producer()
            .client()
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(broker)?;
        Ok::<_, LogError>(
            md.topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| t.name().to_string())
                .collect(),
        )
    })
    .await
    .map_err(broker)??;
    let mut out = Vec::new();
    for n in names {
        // Kafka's own internal topics are not Sluice's business.
        if n.starts_with("__") && !n.starts_with("__sluice") {
            continue;
        }
        let Ok(name) = TopicName::new(n) else {
            continue;
        };
        match describe(log, &name).await {
            Ok(info) => out.push(info),
            Err(LogError::TopicNotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

pub async fn describe(log: &KafkaLog, name: &TopicName) -> Result<TopicInfo> {
    let Some(partitions) = partitions_now(log, name).await? else {
        return Err(LogError::TopicNotFound(name.to_string()));
    };
    let mut config = TopicConfig::with_partitions(partitions);
    let described = log
        .inner
        .admin
        .describe_configs([&ResourceSpecifier::Topic(name.as_str())], &options())
        .await
        .map_err(broker)?;
    for r in described {
        let resource = r.map_err(|code| broker(format!("describing topic {name}: {code}")))?;
        let map = resource.entry_map();
        let get = |k: &str| map.get(k).and_then(|e| e.value.clone());
        let num = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
        if let Some(p) = get("cleanup.policy") {
            config.cleanup_policy = parse_policy(&p);
        }
        config.retention_ms = num("retention.ms").and_then(|v| u64::try_from(v).ok());
        config.retention_bytes = num("retention.bytes").and_then(|v| u64::try_from(v).ok());
        if let Some(v) = num("segment.bytes").and_then(|v| u64::try_from(v).ok()) {
            config.segment_bytes = v;
        }
        config.segment_ms = num("segment.ms").and_then(|v| u64::try_from(v).ok());
        if let Some(v) = num("delete.retention.ms").and_then(|v| u64::try_from(v).ok()) {
            config.delete_retention_ms = v;
        }
    }
    Ok(TopicInfo {
        name: name.clone(),
        config,
    })
}

/// Changes a topic's configs with IncrementalAlterConfigs (KIP-339): the configs a
/// `TopicConfig` carries are set, those it leaves open go back to the cluster's default.
pub async fn alter(log: &KafkaLog, name: &TopicName, config: &TopicConfig) -> Result<()> {
    let current = describe(log, name).await?;
    if config.partitions != current.config.partitions {
        return Err(LogError::InvalidConfig {
            field: "partitions",
            reason: "partition counts change through add_partitions".into(),
        });
    }
    let mut changes: Vec<(&'static str, ConfigChange)> = entries(config)
        .into_iter()
        .map(|(k, v)| (k, ConfigChange::Set(v)))
        .collect();
    if config.segment_ms.is_none() {
        changes.push(("segment.ms", ConfigChange::Reset));
    }
    log.inner.wire.alter_topic(name, changes).await
}

pub async fn grow(log: &KafkaLog, name: &TopicName, partitions: u32) -> Result<()> {
    let Some(have) = partitions_now(log, name).await? else {
        return Err(LogError::TopicNotFound(name.to_string()));
    };
    if partitions < have {
        return Err(LogError::InvalidConfig {
            field: "partitions",
            reason: format!("topic {name} has {have} partitions; they never shrink"),
        });
    }
    if partitions == have {
        return Ok(());
    }
    let grow = NewPartitions::new(name.as_str(), partitions as usize);
    let results = log
        .inner
        .admin
        .create_partitions([&grow], &options())
        .await
        .map_err(broker)?;
    for r in results {
        r.map_err(|(_, code)| broker(format!("adding partitions to {name}: {code}")))?;
    }
    settle(log, name, Some(partitions)).await
}
