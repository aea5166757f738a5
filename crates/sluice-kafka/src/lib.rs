//! The `Log` trait on Apache Kafka: one idempotent producer per process (`acks=all`),
//! assign-only consumers for reads (no consumer group: positions are the caller's),
//! and the admin API for topics. Only this crate links librdkafka.
//!
//! Kafka is the truth here: nothing about a topic is cached that Kafka could change
//! behind Sluice's back, except partition counts and cleanup policies, which are
//! re-read when an answer shows they moved.

mod admin;
pub mod peer;
#[cfg(feature = "testing")]
pub mod testing;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sluice_log::{
    Appended, CleanupPolicy, FetchRequest, Fetched, Log, LogError, Offset, PartitionId,
    PartitionOffsets, Record, Result, Timestamp, TopicConfig, TopicInfo, TopicName,
};

/// How to reach the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap: String,
    /// Replicas of each topic Sluice creates (3 in production; 1 on a single broker).
    pub replication_factor: i32,
    /// How long an append may take before it fails (librdkafka's delivery.timeout.ms).
    pub delivery_timeout: Duration,
    /// The longest wait asked of the broker in one Fetch; a longer `max_wait` is
    /// several Fetches (librdkafka's fetch.wait.max.ms).
    pub fetch_wait_max: Duration,
}

impl KafkaConfig {
    pub fn new(bootstrap: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            bootstrap: bootstrap.into(),
            replication_factor: 1,
            delivery_timeout: Duration::from_secs(30),
            fetch_wait_max: Duration::from_millis(100),
        }
    }
}

/// What Sluice remembers of a topic between calls.
#[derive(Clone, Copy, Debug)]
struct Known {
    partitions: u32,
    cleanup: CleanupPolicy,
}

/// A `Log` on a Kafka cluster.
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    /// Replaced by a fresh one after a delivery failure (see `renew_producer`).
    producer: parking_lot::RwLock<Arc<FutureProducer>>,
    admin: AdminClient<DefaultClientContext>,
    /// Reads: Fetch and ListOffsets spoken directly (see `wire`).
    wire: Arc<wire::Wire>,
    known: Mutex<HashMap<String, Known>>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("bootstrap", &self.inner.config.bootstrap)
            .finish_non_exhaustive()
    }
}

/// A librdkafka error as a `LogError`.
pub(crate) fn broker(e: impl std::fmt::Display) -> LogError {
    LogError::Broker {
        reason: e.to_string(),
    }
}

fn base_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap)
        .set("client.id", "sluice")
        .set("log_level", "3");
    c
}

impl KafkaLog {
    /// Connects (lazily: librdkafka connects on first use) and checks the cluster
    /// answers within `wait`.
    pub async fn connect(config: KafkaConfig, wait: Duration) -> Result<KafkaLog> {
        let producer = new_producer(&config)?;
        let admin: AdminClient<DefaultClientContext> =
            base_config(&config).create().map_err(broker)?;
        let log = KafkaLog {
            inner: Arc::new(Inner {
                wire: wire::Wire::new(&config.bootstrap),
                config,
                producer: parking_lot::RwLock::new(Arc::new(producer)),
                admin,
                known: Mutex::new(HashMap::new()),
            }),
        };
        let probe = log.clone();
        tokio::task::spawn_blocking(move || {
            probe
                .producer()
                .client()
                .fetch_metadata(None, wait)
                .map(|_| ())
                .map_err(|e| {
                    broker(format!(
                        "cannot reach Kafka at {}: {e}",
                        probe.inner.config.bootstrap
                    ))
                })
        })
        .await
        .map_err(broker)??;
        Ok(log)
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    pub(crate) fn producer(&self) -> Arc<FutureProducer> {
        self.inner.producer.read().clone()
    }

    /// Replaces `failed` (unless that happened already) with a fresh producer: a new
    /// producer id, nothing queued. After deliveries failed (the cluster away past
    /// the delivery timeout, or a fatal idempotence error that leaves librdkafka's
    /// producer unusable) the next appends start clean; what failed was answered as
    /// failed, so nothing acknowledged is at stake.
    fn renew_producer(&self, failed: &Arc<FutureProducer>) {
        let fresh = match new_producer(&self.inner.config) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a new Kafka producer");
                return;
            }
        };
        let old = {
            let mut current = self.inner.producer.write();
            if !Arc::ptr_eq(&current, failed) {
                return;
            }
            std::mem::replace(&mut *current, fresh)
        };
        tracing::warn!("Kafka deliveries failed: appends go on with a new producer");
        // Dropping purges what it still holds and waits for its threads.
        std::thread::spawn(move || drop(old));
    }

    /// Partition count and cleanup policy, from memory or from the cluster.
    async fn known(&self, topic: &TopicName) -> Result<Known> {
        if let Some(k) = self.inner.known.lock().get(topic.as_str()) {
            return Ok(*k);
        }
        let info = self.topic(topic).await?;
        let k = Known {
            partitions: info.config.partitions,
            cleanup: info.config.cleanup_policy,
        };
        self.inner
            .known
            .lock()
            .insert(topic.as_str().to_string(), k);
        Ok(k)
    }

    fn forget(&self, topic: &TopicName) {
        self.inner.known.lock().remove(topic.as_str());
        self.inner.wire.forget(topic);
    }

    async fn check_partition(&self, topic: &TopicName, partition: PartitionId) -> Result<Known> {
        let mut k = self.known(topic).await?;
        if partition.0 >= k.partitions {
            // Maybe grown by another node since: ask again once.
            self.forget(topic);
            k = self.known(topic).await?;
        }
        if partition.0 >= k.partitions {
            return Err(LogError::PartitionNotFound {
                topic: topic.to_string(),
                partition: partition.0,
            });
        }
        Ok(k)
    }
}

#[async_trait]
impl Log for KafkaLog {
    async fn create_topic(&self, name: &TopicName, config: TopicConfig) -> Result<()> {
        config.validate()?;
        admin::create(self, name, &config).await?;
        self.forget(name);
        Ok(())
    }

    async fn delete_topic(&self, name: &TopicName) -> Result<()> {
        self.forget(name);
        admin::delete(self, name).await
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        admin::list(self).await
    }

    async fn topic(&self, name: &TopicName) -> Result<TopicInfo> {
        admin::describe(self, name).await
    }

    async fn update_topic(&self, name: &TopicName, config: TopicConfig) -> Result<()> {
        config.validate()?;
        self.forget(name);
        admin::alter(self, name, &config).await
    }

    async fn add_partitions(&self, name: &TopicName, partitions: u32) -> Result<()> {
        self.forget(name);
        admin::grow(self, name, partitions).await
    }

    async fn append(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        records: Vec<Record>,
    ) -> Result<Appended> {
        if records.is_empty() {
            self.check_partition(topic, partition).await?;
            return Ok(Appended {
                offsets: Vec::new(),
            });
        }
        let known = self.check_partition(topic, partition).await?;
        if known.cleanup.compacts() && records.iter().any(|r| r.key.is_none()) {
            return Err(LogError::InvalidRecord {
                reason: format!("topic {topic} is compacted: every record needs a key"),
            });
        }
        let now = Timestamp::now().0;
        // Queue every record first (librdkafka keeps them in order per partition with
        // the idempotent producer), then wait for every acknowledgement.
        let producer = self.producer();
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for h in &r.headers {
                headers = headers.insert(KafkaHeader {
                    key: &h.key,
                    value: Some(&h.value[..]),
                });
            }
            let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic.as_str())
                .partition(partition.0 as i32)
                .timestamp(r.timestamp.map_or(now, |t| t.0))
                .headers(headers);
            if let Some(k) = &r.key {
                fr = fr.key(&k[..]);
            }
            if let Some(v) = &r.value {
                fr = fr.payload(&v[..]);
            }
            match producer.send_result(fr) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => return Err(produce_error(topic, partition, &e)),
            }
        }
        let mut offsets = Vec::with_capacity(pending.len());
        let mut failure = None;
        // Every delivery is awaited, failed or not: none is left behind.
        for delivery in pending {
            match delivery.await {
                Ok(Ok(d)) => offsets.push(Offset(d.offset as u64)),
                Ok(Err((e, _))) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    failure.get_or_insert(KafkaError::Canceled);
                }
            }
        }
        match failure {
            None => Ok(Appended { offsets }),
            Some(e) => {
                self.forget(topic);
                // Deleted behind our back: say so rather than time out. Briefly: with
                // the cluster away, asking would only add its metadata timeout.
                let asked = tokio::time::timeout(Duration::from_secs(1), self.known(topic));
                if let Ok(Err(gone @ LogError::TopicNotFound(_))) = asked.await {
                    return Err(gone);
                }
                let error = produce_error(topic, partition, &e);
                if matches!(error, LogError::Broker { .. }) {
                    self.renew_producer(&producer);
                }
                Err(error)
            }
        }
    }

    async fn fetch(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        request: FetchRequest,
    ) -> Result<Fetched> {
        self.check_partition(topic, partition).await?;
        let poll = self.inner.config.fetch_wait_max;
        self.inner.wire.fetch(topic, partition, request, poll).await
    }

    async fn offsets(&self, topic: &TopicName, partition: PartitionId) -> Result<PartitionOffsets> {
        self.check_partition(topic, partition).await?;
        let (low, high) = self.inner.wire.bounds(topic, partition).await?;
        Ok(PartitionOffsets {
            earliest: Offset(low),
            latest: Offset(high),
        })
    }

    async fn offset_for_timestamp(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        at: Timestamp,
    ) -> Result<Option<Offset>> {
        self.check_partition(topic, partition).await?;
        Ok(self
            .inner
            .wire
            .list_offset(topic, partition, at.0)
            .await?
            .map(Offset))
    }

    fn shared(&self) -> bool {
        true
    }

    async fn flush(&self) -> Result<()> {
        let log = self.clone();
        tokio::task::spawn_blocking(move || {
            log.producer()
                .flush(log.inner.config.delivery_timeout)
                .map_err(broker)
        })
        .await
        .map_err(broker)?
    }
}

/// The node's producer: acks=all, idempotent, 1 ms linger.
fn new_producer(config: &KafkaConfig) -> Result<FutureProducer> {
    base_config(config)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set(
            "delivery.timeout.ms",
            config.delivery_timeout.as_millis().to_string(),
        )
        .create()
        .map_err(broker)
}

fn produce_error(topic: &TopicName, partition: PartitionId, e: &KafkaError) -> LogError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            LogError::TopicNotFound(topic.to_string())
        }
        Some(RDKafkaErrorCode::UnknownPartition) => LogError::PartitionNotFound {
            topic: topic.to_string(),
            partition: partition.0,
        },
        Some(RDKafkaErrorCode::InvalidRecord | RDKafkaErrorCode::InvalidMessage) => {
            LogError::InvalidRecord {
                reason: e.to_string(),
            }
        }
        _ => broker(format!("appending to {topic}/{partition}: {e}")),
    }
}
