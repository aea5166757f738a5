//! A plain Kafka producer for benchmarks: what writing the same records to the same
//! broker costs without Sluice in between (no HTTP, validation, enrichment or
//! idempotency window). Same producer settings as `KafkaLog` (acks=all, idempotent),
//! same shape as an HTTP publisher: `concurrency` writers, each with one batch in
//! flight, a batch done when every record of it is acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_log::{Log, TopicConfig, TopicName};

use crate::{KafkaConfig, KafkaLog, base_config, broker};

/// What a peer run measured.
#[derive(Clone, Debug)]
pub struct PeerRun {
    pub records: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Time from sending a batch to its last acknowledgement, one per batch.
    pub batch_latencies: Vec<Duration>,
}

/// Writes `payloads` (cycled; keyed by index) in batches of `batch` records to a new
/// topic `topic` of `partitions` partitions, from `concurrency` writers, for `duration`.
/// The topic is left in place (name it afresh per run).
pub async fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    payloads: Arc<Vec<Vec<u8>>>,
    batch: usize,
    concurrency: usize,
    duration: Duration,
) -> sluice_log::Result<PeerRun> {
    let config = KafkaConfig::new(bootstrap);
    let log = KafkaLog::connect(config.clone(), Duration::from_secs(10)).await?;
    let name = TopicName::new(topic)?;
    log.create_topic(&name, TopicConfig::with_partitions(partitions))
        .await?;
    let producer: FutureProducer = base_config(&config)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()
        .map_err(broker)?;
    let producer = Arc::new(producer);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut writers = Vec::new();
    for _ in 0..concurrency {
        let (producer, payloads, next, errors) = (
            producer.clone(),
            payloads.clone(),
            next.clone(),
            errors.clone(),
        );
        let topic = topic.to_string();
        writers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let mut acks = Vec::with_capacity(batch);
                for _ in 0..batch {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let key = format!("sku-{n}");
                    let payload = &payloads[(n % payloads.len() as u64) as usize];
                    let record = FutureRecord::to(&topic).key(&key).payload(payload);
                    match producer.send_result(record) {
                        Ok(ack) => acks.push(ack),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                for ack in acks {
                    if !matches!(ack.await, Ok(Ok(_))) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut batch_latencies = Vec::new();
    for w in writers {
        batch_latencies.extend(w.await.map_err(broker)?);
    }
    let elapsed = started.elapsed();
    let errors = errors.load(Ordering::Relaxed);
    let records = (batch_latencies.len() * batch) as u64 - errors;
    Ok(PeerRun {
        records,
        errors,
        elapsed,
        batch_latencies,
    })
}
