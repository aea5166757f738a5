//! The `Log` contract suite on the embedded log, on disk and on the in-memory filesystem.

use std::sync::Arc;

use sluice_log::testing::{MemFs, contract};
use sluice_log::{Durability, EmbeddedConfig, EmbeddedLog, Log};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_on_disk_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap();
    contract::run(Arc::new(log.clone()) as Arc<dyn Log>, "c-").await;
    log.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_keeps_the_contract_with_every_durability() {
    for durability in [Durability::Interval, Durability::None] {
        let fs = Arc::new(MemFs::new());
        let config = EmbeddedConfig {
            durability,
            flush_interval_ms: 5,
            ..EmbeddedConfig::default()
        };
        let log = EmbeddedLog::open_with_fs(fs, "/data".as_ref(), config).unwrap();
        contract::run(Arc::new(log.clone()) as Arc<dyn Log>, "m-").await;
        log.close().unwrap();
    }
}
