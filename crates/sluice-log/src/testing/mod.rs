//! Test support shared by this crate's tests and by other backends' tests:
//! a fault-injecting in-memory filesystem and the `Log` contract suite.

pub mod contract;
pub mod memfs;

pub use memfs::MemFs;

use std::path::Path;

use crate::{
    EmbeddedConfig, EmbeddedLog, FetchRequest, Log, LogError, PartitionId, StoredRecord, TopicName,
};

/// Every record of a partition, from its earliest offset to its end.
pub async fn read_partition(
    log: &dyn Log,
    topic: &TopicName,
    partition: PartitionId,
) -> Result<Vec<StoredRecord>, LogError> {
    let mut out = Vec::new();
    let mut from = log.offsets(topic, partition).await?.earliest;
    loop {
        let f = log.fetch(topic, partition, FetchRequest::new(from)).await?;
        if f.records.is_empty() {
            return Ok(out);
        }
        from = f.next;
        out.extend(f.records);
    }
}

/// Every record of every partition of `topic` in the data dir `dir`, opened directly
/// (no server may hold it). Panics on errors: for tests.
pub fn stored_records(dir: &Path, topic: &str) -> Vec<Vec<StoredRecord>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let log = EmbeddedLog::open(dir, EmbeddedConfig::default()).expect("open the data dir");
        let topic = TopicName::new(topic).expect("a topic name");
        let partitions = log
            .topic(&topic)
            .await
            .expect("the topic")
            .config
            .partitions;
        let mut out = Vec::new();
        for p in 0..partitions {
            out.push(
                read_partition(&log, &topic, PartitionId(p))
                    .await
                    .expect("read"),
            );
        }
        log.close().expect("close");
        out
    })
}
