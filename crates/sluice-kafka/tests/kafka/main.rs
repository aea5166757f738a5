//! `KafkaLog` against a real Kafka-protocol broker (`sluice_kafka::testing::Broker`).

use std::sync::Arc;
use std::time::Duration;

use sluice_kafka::testing::Broker;
use sluice_kafka::{KafkaConfig, KafkaLog};
use sluice_log::Log;

/// Checks Tansu 0.6.0 cannot pass, each for a deviation from Apache Kafka's documented
/// behaviour (docs/design/kafka.md lists them); `tansu_still_deviates` notices when
/// one goes away.
const TANSU_DEVIATIONS: &[&str] = &[
    "deleting_a_topic_keeps_the_others",
    "add_partitions",
    "offset_for_timestamp",
];

async fn connect(broker: &Broker) -> Arc<dyn Log> {
    Arc::new(
        KafkaLog::connect(KafkaConfig::new(&broker.bootstrap), Duration::from_secs(20))
            .await
            .expect("connect"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_contract_holds_on_kafka() {
    let broker = Broker::start();
    let log = connect(&broker).await;
    sluice_log::testing::contract::run_except(log, "contract-", TANSU_DEVIATIONS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_still_deviates() {
    let broker = Broker::start();
    let log = connect(&broker).await;
    for name in TANSU_DEVIATIONS {
        let run = tokio::spawn(sluice_log::testing::contract::run_one(
            log.clone(),
            "deviation-",
            name,
        ));
        assert!(
            run.await.is_err(),
            "Tansu now passes the contract check {name}: take it off TANSU_DEVIATIONS"
        );
    }
}
