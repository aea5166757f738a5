//! The servers and helpers every HTTP scenario uses, on the storage the test binary
//! names in `crate::STORAGE`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::{Value, json};
use sluice_bus::{Bus, BusConfig};
use sluice_log::{EmbeddedConfig, EmbeddedLog, Log};

/// Where the servers of a test binary keep their log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// The embedded log in the test's data dir.
    Embedded,
    /// A Tansu broker per test data dir (its storage inside that dir), started on
    /// first use and stopped once the dir is gone.
    Kafka,
}

/// What a scenario needs beyond the HTTP API that not every storage of the tests has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Running the log's cleaner on demand: only the embedded log can (Kafka
    /// compacts on the broker's own schedule).
    CompactionOnDemand,
    /// Deleting a topic without touching the others: Tansu 0.6.0's sqlite engine
    /// deletes every topic of the cluster (docs/design/kafka.md).
    TopicDeletion,
    /// Adding partitions: Tansu 0.6.0 has no CreatePartitions (docs/design/kafka.md).
    PartitionGrowth,
}

/// Whether this binary's storage has what a scenario needs next; when it does not,
/// it says so on stderr and the scenario ends there (what ran before still counts).
pub fn storage_has(needs: Needs) -> bool {
    let has = match crate::STORAGE {
        Storage::Embedded => true,
        Storage::Kafka => false,
    };
    if !has {
        eprintln!("the rest of this scenario is not run on Tansu: it needs {needs:?}");
    }
    has
}

/// The bootstrap address of the broker that serves `dir`.
pub fn broker_for(dir: &Path) -> String {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use sluice_kafka::testing::Broker;

    static BROKERS: OnceLock<Mutex<HashMap<PathBuf, Broker>>> = OnceLock::new();
    let brokers = BROKERS.get_or_init(|| {
        // The reaper: a test's broker goes when the test's temporary dir does.
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                let gone: Vec<Broker> = {
                    let mut map = BROKERS.get().unwrap().lock().unwrap();
                    let dead: Vec<PathBuf> = map.keys().filter(|d| !d.exists()).cloned().collect();
                    dead.iter().filter_map(|d| map.remove(d)).collect()
                };
                drop(gone);
            }
        });
        Mutex::new(HashMap::new())
    });
    let mut map = brokers.lock().unwrap();
    map.entry(dir.to_path_buf())
        .or_insert_with(|| Broker::start_on(&dir.join("kafka-broker")))
        .bootstrap
        .clone()
}

/// The log of the server on `dir`, as `crate::STORAGE` says.
pub async fn open_log(dir: &Path) -> (Arc<dyn Log>, Option<EmbeddedLog>) {
    match crate::STORAGE {
        Storage::Embedded => {
            let log = EmbeddedLog::open(dir, EmbeddedConfig::default()).unwrap();
            (Arc::new(log.clone()), Some(log))
        }
        Storage::Kafka => {
            let config = sluice_kafka::KafkaConfig::new(broker_for(dir));
            let wait = std::time::Duration::from_secs(20);
            let log = sluice_kafka::KafkaLog::connect(config, wait).await.unwrap();
            (Arc::new(log), None)
        }
    }
}

/// The header the test server trusts to name the caller (as behind an auth proxy).
pub const PRINCIPAL_HEADER: &str = "x-forwarded-user";

/// A server on its own runtime thread; `stop` shuts it down and closes its log.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    agent: ureq::Agent,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, BusConfig::default())
    }

    /// A server with the bus configured as given.
    pub fn start_with(dir: &Path, config: BusConfig) -> Server {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let data = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (log, embedded) = open_log(&data).await;
                let bus = Bus::open(log.clone(), config).await.unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let options = sluice_http::ApiOptions {
                    principal_header: Some(PRINCIPAL_HEADER.parse().unwrap()),
                };
                let bus = Arc::new(bus);
                let views_config = sluice_views::ViewsConfig {
                    state_dir: Some(data.join("views")),
                    checkpoint_every: std::time::Duration::from_millis(200),
                    snapshot_dir: Some(data.join("snapshots")),
                    ..Default::default()
                };
                let views = Arc::new(
                    sluice_views::Views::open(bus.clone(), views_config)
                        .await
                        .unwrap(),
                );
                sluice_http::serve(listener, bus.clone(), views.clone(), options, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
                views.shutdown().await;
                drop(views);
                bus.shutdown().await;
                log.flush().await.unwrap();
                if let Some(embedded) = embedded {
                    tokio::task::spawn_blocking(move || embedded.close())
                        .await
                        .unwrap()
                        .unwrap();
                }
            });
        });
        let addr = addr_rx.recv().expect("the server starts");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Server {
            addr,
            dir: dir.to_path_buf(),
            stop: Some(stop_tx),
            thread: Some(thread),
            agent,
        }
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("the server thread ends cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn get(&self, path: &str) -> Reply {
        Reply::from(self.agent.get(&self.url(path)).call().unwrap())
    }

    /// GET with extra request headers.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.get(&self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::from(req.call().unwrap())
    }

    pub fn delete(&self, path: &str) -> Reply {
        Reply::from(self.agent.delete(&self.url(path)).call().unwrap())
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(
            "POST",
            path,
            "application/json",
            body.to_string().into_bytes(),
        )
    }

    pub fn agent_post_with_flow(&self, path: &str, body: &Value, flow_id: &str) -> Reply {
        let resp = self
            .agent
            .post(&self.url(path))
            .header("Content-Type", "application/json")
            .header("X-Flow-Id", flow_id)
            .send(body.to_string().as_bytes());
        Reply::from(resp.unwrap())
    }

    pub fn post_as(&self, path: &str, body: &Value, principal: &str) -> Reply {
        Reply::from(
            self.agent
                .post(&self.url(path))
                .header(PRINCIPAL_HEADER, principal)
                .send_json(body)
                .unwrap(),
        )
    }

    pub fn send_encoded(&self, path: &str, encoding: &str, body: Vec<u8>) -> Reply {
        let resp = self
            .agent
            .post(&self.url(path))
            .header("Content-Type", "application/json")
            .header("Content-Encoding", encoding)
            .send(&body[..]);
        Reply::from(resp.unwrap())
    }

    /// A JSON request with extra headers (`POST`, `PUT` or `PATCH`).
    pub fn json_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Reply {
        let url = self.url(path);
        let mut req = match method {
            "POST" => self.agent.post(&url),
            "PUT" => self.agent.put(&url),
            "PATCH" => self.agent.patch(&url),
            other => panic!("unsupported method {other}"),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::from(req.send_json(body).unwrap())
    }

    pub fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(
            "PUT",
            path,
            "application/json",
            body.to_string().into_bytes(),
        )
    }

    pub fn send(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let url = self.url(path);
        let resp = match method {
            "POST" => self
                .agent
                .post(&url)
                .header("Content-Type", content_type)
                .send(&body[..]),
            "PUT" => self
                .agent
                .put(&url)
                .header("Content-Type", content_type)
                .send(&body[..]),
            other => panic!("unsupported method {other}"),
        };
        Reply::from(resp.unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub headers: ureq::http::HeaderMap,
}

impl From<ureq::http::Response<ureq::Body>> for Reply {
    fn from(mut r: ureq::http::Response<ureq::Body>) -> Reply {
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        Reply {
            status: r.status().as_u16(),
            content_type,
            body,
            headers: r.headers().clone(),
        }
    }
}

impl Reply {
    /// A response header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts a Problem JSON response with `status`, returning its detail.
    pub fn problem(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.content_type, "application/problem+json",
            "{}",
            self.body
        );
        let p = self.json();
        assert_eq!(p["status"], status);
        assert!(p["title"].is_string() && p["type"].is_string());
        p["detail"].as_str().unwrap_or_default().to_string()
    }
}

/// A realistic business event type: a price change, hash-partitioned by sku.
pub fn price_changed(name: &str, partitions: u32) -> Value {
    let schema = json!({
        "type": "object",
        "properties": {
            "sku": {"type": "string"},
            "price": {"type": "object", "properties": {
                "amount": {"type": "integer", "minimum": 0},
                "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]}
            }, "required": ["amount", "currency"]},
            "seq": {"type": "integer"}
        },
        "required": ["sku", "price"]
    });
    json!({
        "name": name,
        "owning_application": "pricing",
        "category": "business",
        "enrichment_strategies": ["metadata_enrichment"],
        "partition_strategy": "hash",
        "partition_key_fields": ["sku"],
        "partition_count": partitions,
        "schema": {"type": "json_schema", "schema": schema.to_string()}
    })
}

/// A valid price event.
pub fn price_event(sku: &str, seq: u64) -> Value {
    json!({
        "sku": sku,
        "price": {"amount": 1999 + seq, "currency": "EUR"},
        "seq": seq,
        "metadata": {"eid": uuid(seq), "occurred_at": "2026-11-22T10:00:00Z"}
    })
}

pub fn uuid(n: u64) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        n >> 16,
        n & 0xffff_ffff_ffff
    )
}

/// Every stored event of an event type, per partition, read from the data dir directly
/// (the server must be stopped).
pub fn stored_events(dir: &Path, event_type: &str) -> Vec<Vec<Value>> {
    let records = match crate::STORAGE {
        Storage::Embedded => sluice_log::testing::stored_records(dir, event_type),
        Storage::Kafka => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (log, _) = open_log(dir).await;
                let topic = sluice_log::TopicName::new(event_type).unwrap();
                let partitions = log.topic(&topic).await.unwrap().config.partitions;
                let mut out = Vec::new();
                for p in 0..partitions {
                    let p = sluice_log::PartitionId(p);
                    out.push(
                        sluice_log::testing::read_partition(&*log, &topic, p)
                            .await
                            .unwrap(),
                    );
                }
                out
            })
        }
    };
    records
        .into_iter()
        .map(|records| {
            records
                .into_iter()
                // Tombstones (null values) are not events.
                .filter_map(|r| r.value.map(|v| serde_json::from_slice(&v).unwrap()))
                .collect()
        })
        .collect()
}
