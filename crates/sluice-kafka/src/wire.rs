//! The parts of the Kafka protocol Sluice speaks directly: reads (Fetch, ListOffsets,
//! Metadata) over pooled TCP connections to each partition's leader, and topic config
//! changes (IncrementalAlterConfigs, which librdkafka does not wrap).
//!
//! Why not librdkafka's consumer: a `Log::fetch` is one stateless Fetch (a partition,
//! an offset, a max wait), and many run at once (one per partition a stream reads).
//! A librdkafka consumer is a stateful position with its own threads and prefetch
//! queue; one per partition being read costs threads, and its Fetch v12 path crashes
//! (a NULL topic name in its metadata cache) when a broker tags Fetch answers with
//! a partition's current leader, as Tansu does. Here a fetch is an async request on a
//! connection: no thread waits, and an idle long-poll costs a socket.
//!
//! Versions are negotiated per broker (ApiVersions), within ranges that name topics by
//! name (before topic ids) and are not flexible (see `SPOKEN`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
    TopicName as KTopicName,
    fetch_request::{FetchPartition, FetchTopic},
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{
    Decodable, HeaderVersion, Request, StrBytes, encode_request_header_into_buffer,
};
use kafka_protocol::records::RecordBatchDecoder;
use parking_lot::Mutex;
use sluice_log::{
    FetchRequest as LogFetch, Fetched, Header, LogError, Offset, PartitionId, PartitionOffsets,
    Result, StoredRecord, Timestamp, TopicName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::broker;

/// Connecting, and answers to requests that are not long-polls, give up after this.
const CALL: Duration = Duration::from_secs(10);
/// Idle connections kept per broker.
const IDLE_PER_BROKER: usize = 64;
/// An idle connection unused this long is closed.
const IDLE_FOR: Duration = Duration::from_secs(60);
/// Largest answer accepted (a fetch's max_bytes plus headroom).
const MAX_FRAME: usize = 256 << 20;

/// The versions this client speaks, per API: `(min, max)`. The newest versions
/// before flexible (tagged) encodings, which every broker since Kafka 2.3 speaks:
/// nothing Sluice reads needs more, and Tansu tags answers with fields the version
/// it answers does not have.
const SPOKEN: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 5),
    (ApiKey::Metadata, 1, 8),
    (ApiKey::IncrementalAlterConfigs, 0, 0),
];

/// APIs without which reads cannot work (the others fail only when used).
const REQUIRED: &[ApiKey] = &[ApiKey::Fetch, ApiKey::ListOffsets, ApiKey::Metadata];

/// An IncrementalAlterConfigs operation.
pub(crate) enum ConfigChange {
    Set(String),
    /// Back to the cluster's default.
    Reset,
}

struct Conn {
    stream: TcpStream,
    last_used: Instant,
}

/// Where partitions live and which versions each broker speaks.
#[derive(Default)]
struct Cluster {
    /// Broker address by node id.
    brokers: HashMap<i32, String>,
    /// Leader node of each partition.
    leaders: HashMap<(String, u32), i32>,
    /// Negotiated version per API key, per broker address.
    versions: HashMap<String, HashMap<i16, i16>>,
}

pub(crate) struct Wire {
    bootstrap: Vec<String>,
    client_id: StrBytes,
    correlation: AtomicI32,
    idle: Mutex<HashMap<String, Vec<Conn>>>,
    cluster: Mutex<Cluster>,
    /// Each partition's end (high watermark) as the last fetch of it saw.
    ends: Mutex<HashMap<(String, u32), u64>>,
}

/// What went wrong with one partition in an answer.
enum PartitionError {
    /// The leader moved or the metadata is stale: ask again.
    Stale(ResponseError),
    Fatal(LogError),
}

impl Wire {
    pub(crate) fn new(bootstrap: &str) -> Arc<Wire> {
        Arc::new(Wire {
            bootstrap: bootstrap
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            client_id: StrBytes::from_static_str("sluice"),
            correlation: AtomicI32::new(1),
            idle: Mutex::new(HashMap::new()),
            cluster: Mutex::new(Cluster::default()),
            ends: Mutex::new(HashMap::new()),
        })
    }

    async fn connect(&self, addr: &str) -> Result<Conn> {
        let stream = tokio::time::timeout(CALL, TcpStream::connect(addr))
            .await
            .map_err(|_| broker(format!("connecting to {addr}: timed out")))?
            .map_err(|e| broker(format!("connecting to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            last_used: Instant::now(),
        };
        let known = self.cluster.lock().versions.contains_key(addr);
        if !known {
            let versions = self.negotiate(&mut conn, addr).await?;
            self.cluster
                .lock()
                .versions
                .insert(addr.to_string(), versions);
        }
        Ok(conn)
    }

    /// Asks the broker which versions it speaks (ApiVersions v0: every broker knows it).
    async fn negotiate(&self, conn: &mut Conn, addr: &str) -> Result<HashMap<i16, i16>> {
        let answer: ApiVersionsResponse = self
            .exchange(conn, &ApiVersionsRequest::default(), 0, CALL)
            .await?;
        if let Some(e) = ResponseError::try_from_code(answer.error_code) {
            return Err(broker(format!("{addr} refused ApiVersions: {e}")));
        }
        let mut out = HashMap::new();
        for &(key, min, max) in SPOKEN {
            let theirs = answer.api_keys.iter().find(|k| k.api_key == key as i16);
            let Some(theirs) = theirs else {
                if REQUIRED.contains(&key) {
                    return Err(broker(format!("{addr} does not speak {key:?}")));
                }
                continue;
            };
            let v = max.min(theirs.max_version);
            if v < min || v < theirs.min_version {
                return Err(broker(format!(
                    "{addr} speaks {key:?} v{}..{}, Sluice v{min}..{max}",
                    theirs.min_version, theirs.max_version
                )));
            }
            out.insert(key as i16, v);
        }
        Ok(out)
    }

    /// The version of `key` to speak with `addr` (negotiated when it connected).
    fn version(&self, addr: &str, key: ApiKey) -> Result<i16> {
        self.cluster
            .lock()
            .versions
            .get(addr)
            .and_then(|v| v.get(&(key as i16)).copied())
            .ok_or_else(|| broker(format!("{addr} does not support {key:?}")))
    }

    /// Sends one request on `conn` and reads its answer.
    async fn exchange<R: Request>(
        &self,
        conn: &mut Conn,
        request: &R,
        version: i16,
        within: Duration,
    ) -> Result<R::Response> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| broker("unknown API key"))?;
        let correlation = self.correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(self.client_id.clone()));
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        encode_request_header_into_buffer(&mut frame, &header).map_err(broker)?;
        request.encode(&mut frame, version).map_err(broker)?;
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        let io = async {
            conn.stream.write_all(&frame).await?;
            let len = conn.stream.read_i32().await?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= MAX_FRAME)
                .ok_or_else(|| std::io::Error::other(format!("answer of {len} bytes")))?;
            let mut body = vec![0u8; len];
            conn.stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(Bytes::from(body))
        };
        let mut body = tokio::time::timeout(within, io)
            .await
            .map_err(|_| broker(format!("{key:?}: no answer within {within:?}")))?
            .map_err(|e| broker(format!("{key:?}: {e}")))?;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(broker)?;
        if header.correlation_id != correlation {
            return Err(broker(format!(
                "{key:?}: answer to request {} on request {correlation}",
                header.correlation_id
            )));
        }
        R::Response::decode(&mut body, version).map_err(broker)
    }

    /// One request to the broker at `addr`, on a pooled connection (a stale pooled
    /// connection is replaced once; every request here is a read, safe to repeat).
    async fn call<R: Request>(
        &self,
        addr: &str,
        key: ApiKey,
        request: &R,
        within: Duration,
    ) -> Result<R::Response> {
        let pooled = self.idle.lock().get_mut(addr).and_then(|l| l.pop());
        let (mut conn, was_pooled) = match pooled {
            Some(c) => (c, true),
            None => (self.connect(addr).await?, false),
        };
        let version = self.version(addr, key)?;
        let answer = match self.exchange(&mut conn, request, version, within).await {
            Err(_) if was_pooled => {
                conn = self.connect(addr).await?;
                self.exchange(&mut conn, request, version, within).await?
            }
            other => other?,
        };
        conn.last_used = Instant::now();
        let mut idle = self.idle.lock();
        let list = idle.entry(addr.to_string()).or_default();
        list.retain(|c| c.last_used.elapsed() < IDLE_FOR);
        if list.len() < IDLE_PER_BROKER {
            list.push(conn);
        }
        Ok(answer)
    }

    /// Any broker that answers, bootstrap ones first.
    async fn any_broker<R: Request>(&self, key: ApiKey, request: &R) -> Result<R::Response> {
        let mut addrs = self.bootstrap.clone();
        addrs.extend(self.cluster.lock().brokers.values().cloned());
        let mut last = broker("no bootstrap address");
        for addr in addrs {
            match self.call(&addr, key, request, CALL).await {
                Ok(a) => return Ok(a),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Asks where the topic's partitions live; `TopicNotFound` if it does not exist.
    async fn refresh(&self, topic: &TopicName) -> Result<()> {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                KTopicName(StrBytes::from_string(topic.to_string())),
            ))]))
            .with_allow_auto_topic_creation(false);
        let answer: MetadataResponse = self.any_broker(ApiKey::Metadata, &request).await?;
        let mut cluster = self.cluster.lock();
        for b in &answer.brokers {
            cluster
                .brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        let t = answer.topics.iter().find(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| n.0.as_str() == topic.as_str())
        });
        let Some(t) = t else {
            return Err(LogError::TopicNotFound(topic.to_string()));
        };
        match ResponseError::try_from_code(t.error_code) {
            None => {}
            Some(ResponseError::UnknownTopicOrPartition) => {
                return Err(LogError::TopicNotFound(topic.to_string()));
            }
            Some(e) => return Err(broker(format!("metadata of {topic}: {e}"))),
        }
        cluster.leaders.retain(|k, _| k.0 != topic.as_str());
        for p in &t.partitions {
            cluster
                .leaders
                .insert((topic.to_string(), p.partition_index as u32), p.leader_id.0);
        }
        Ok(())
    }

    /// The address of the partition's leader.
    async fn leader(&self, topic: &TopicName, p: PartitionId, fresh: bool) -> Result<String> {
        if fresh || !self.knows(topic, p) {
            self.refresh(topic).await?;
        }
        let cluster = self.cluster.lock();
        let Some(&node) = cluster.leaders.get(&(topic.to_string(), p.0)) else {
            return Err(LogError::PartitionNotFound {
                topic: topic.to_string(),
                partition: p.0,
            });
        };
        cluster
            .brokers
            .get(&node)
            .cloned()
            .ok_or_else(|| broker(format!("{topic}/{p} has no leader (node {node})")))
    }

    fn knows(&self, topic: &TopicName, p: PartitionId) -> bool {
        self.cluster
            .lock()
            .leaders
            .contains_key(&(topic.to_string(), p.0))
    }

    /// Forgets where a topic lives (deleted, re-created, grown).
    pub(crate) fn forget(&self, topic: &TopicName) {
        self.ends.lock().retain(|k, _| k.0 != topic.as_str());
        self.cluster
            .lock()
            .leaders
            .retain(|k, _| k.0 != topic.as_str());
    }

    /// Runs `attempt` against the partition's leader; once more against a fresh
    /// leader when the answer says the metadata was stale.
    async fn with_leader<T, F, Fut>(
        &self,
        topic: &TopicName,
        p: PartitionId,
        attempt: F,
    ) -> Result<T>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<std::result::Result<T, PartitionError>>>,
    {
        let mut fresh = false;
        loop {
            let addr = self.leader(topic, p, fresh).await?;
            match attempt(addr).await? {
                Ok(v) => return Ok(v),
                Err(PartitionError::Fatal(e)) => return Err(e),
                Err(PartitionError::Stale(e)) if fresh => {
                    return Err(match e {
                        ResponseError::UnknownTopicOrPartition => {
                            LogError::TopicNotFound(topic.to_string())
                        }
                        e => broker(format!("{topic}/{p}: {e}")),
                    });
                }
                Err(PartitionError::Stale(_)) => fresh = true,
            }
        }
    }

    /// ListOffsets for one partition: `at` is a timestamp, or -1 latest, -2 earliest.
    /// `None` when the broker has no such offset.
    pub(crate) async fn list_offset(
        &self,
        topic: &TopicName,
        p: PartitionId,
        at: i64,
    ) -> Result<Option<u64>> {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(KTopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(p.0 as i32)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(at),
                    ]),
            ]);
        self.with_leader(topic, p, |addr| {
            let request = &request;
            async move {
                let answer: ListOffsetsResponse =
                    self.call(&addr, ApiKey::ListOffsets, request, CALL).await?;
                let part = answer
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .find(|x| x.partition_index == p.0 as i32)
                    .ok_or_else(|| broker(format!("ListOffsets: no answer for {topic}/{p}")))?;
                Ok(match classify(topic, p, part.error_code) {
                    Some(e) => Err(e),
                    None => Ok((part.offset >= 0).then_some(part.offset as u64)),
                })
            }
        })
        .await
    }

    /// Changes (or resets) configs of a topic.
    pub(crate) async fn alter_topic(
        &self,
        topic: &TopicName,
        changes: Vec<(&'static str, ConfigChange)>,
    ) -> Result<()> {
        const TOPIC: i8 = 2;
        let configs = changes
            .into_iter()
            .map(|(name, change)| {
                let c = AlterableConfig::default().with_name(StrBytes::from_static_str(name));
                match change {
                    ConfigChange::Set(v) => c
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_string(v))),
                    ConfigChange::Reset => c.with_config_operation(1).with_value(None),
                }
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configs(configs),
        ]);
        let answer: IncrementalAlterConfigsResponse = self
            .any_broker(ApiKey::IncrementalAlterConfigs, &request)
            .await?;
        for r in answer.responses {
            match ResponseError::try_from_code(r.error_code) {
                None => {}
                Some(ResponseError::UnknownTopicOrPartition) => {
                    return Err(LogError::TopicNotFound(topic.to_string()));
                }
                Some(ResponseError::InvalidConfig | ResponseError::InvalidRequest) => {
                    return Err(LogError::InvalidConfig {
                        field: "config",
                        reason: r
                            .error_message
                            .map_or_else(|| "refused by Kafka".to_string(), |m| m.to_string()),
                    });
                }
                Some(e) => {
                    let detail = r.error_message.map(|m| m.to_string()).unwrap_or_default();
                    return Err(broker(format!("altering topic {topic}: {e} {detail}")));
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn bounds(&self, topic: &TopicName, p: PartitionId) -> Result<(u64, u64)> {
        let low = self.list_offset(topic, p, -2).await?.unwrap_or(0);
        let high = self.list_offset(topic, p, -1).await?.unwrap_or(low);
        Ok((low, high.max(low)))
    }

    /// A fetch whose wait is spread over broker Fetches of at most `poll` each (as
    /// librdkafka's `fetch.wait.max.ms`): a broker that holds every Fetch for its whole
    /// wait then delays records by `poll` at most. A reader known to be behind the
    /// partition's end asks for no wait at all.
    pub(crate) async fn fetch(
        &self,
        topic: &TopicName,
        p: PartitionId,
        req: LogFetch,
        poll: Duration,
    ) -> Result<Fetched> {
        let deadline = Instant::now() + req.max_wait;
        let key = (topic.to_string(), p.0);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let behind = self
                .ends
                .lock()
                .get(&key)
                .is_some_and(|end| req.from.0 < *end);
            let wait = if behind {
                Duration::ZERO
            } else {
                left.min(poll)
            };
            let fetched = self.fetch_once(topic, p, req.max_wait(wait)).await?;
            self.ends
                .lock()
                .insert(key.clone(), fetched.offsets.latest.0);
            if !fetched.records.is_empty() || fetched.next != req.from || left <= poll {
                return Ok(fetched);
            }
        }
    }

    async fn fetch_once(
        &self,
        topic: &TopicName,
        p: PartitionId,
        req: LogFetch,
    ) -> Result<Fetched> {
        // The caller's byte limit is applied here, on whole records; the broker is
        // asked for at least a megabyte, so that it never cuts the first record short.
        let max_bytes = i32::try_from(req.max_bytes.max(1 << 20)).unwrap_or(i32::MAX);
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(i32::try_from(req.max_wait.as_millis()).unwrap_or(i32::MAX))
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(KTopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(p.0 as i32)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(req.from.0 as i64)
                            .with_last_fetched_epoch(-1)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(max_bytes),
                    ]),
            ]);
        let within = req.max_wait + CALL;
        let answer = self
            .with_leader(topic, p, |addr| {
                let request = &request;
                async move {
                    let answer: FetchResponse =
                        self.call(&addr, ApiKey::Fetch, request, within).await?;
                    if let Some(e) = ResponseError::try_from_code(answer.error_code) {
                        return Err(broker(format!("fetching {topic}/{p}: {e}")));
                    }
                    let part = answer
                        .responses
                        .into_iter()
                        .flat_map(|t| t.partitions.into_iter())
                        .find(|x| x.partition_index == p.0 as i32)
                        .ok_or_else(|| broker(format!("Fetch: no answer for {topic}/{p}")))?;
                    Ok(match classify(topic, p, part.error_code) {
                        Some(e) => Err(e),
                        None => Ok(part),
                    })
                }
            })
            .await;
        let part = match answer {
            Err(LogError::OffsetOutOfRange { .. }) => {
                let (low, high) = self.bounds(topic, p).await?;
                return Err(LogError::OffsetOutOfRange {
                    topic: topic.to_string(),
                    partition: p.0,
                    requested: req.from.0,
                    earliest: low,
                    latest: high,
                });
            }
            other => other?,
        };
        let (low, high) = (
            part.log_start_offset.max(0) as u64,
            part.high_watermark.max(0) as u64,
        );
        if req.from.0 > high {
            // Kafka answers OFFSET_OUT_OF_RANGE itself; Tansu answers nothing.
            return Err(LogError::OffsetOutOfRange {
                topic: topic.to_string(),
                partition: p.0,
                requested: req.from.0,
                earliest: low,
                latest: high,
            });
        }
        let mut fetched = decode(part.records.unwrap_or_default(), req)
            .map_err(|e| broker(format!("reading {topic}/{p}: {e}")))?;
        fetched.offsets = PartitionOffsets {
            earliest: Offset(low),
            latest: Offset(high.max(fetched.next.0)),
        };
        Ok(fetched)
    }
}

/// A partition's error code as this client handles it; `None` for no error.
fn classify(topic: &TopicName, p: PartitionId, code: i16) -> Option<PartitionError> {
    use ResponseError::*;
    let e = ResponseError::try_from_code(code)?;
    Some(match e {
        UnknownTopicOrPartition
        | NotLeaderOrFollower
        | LeaderNotAvailable
        | FencedLeaderEpoch
        | UnknownLeaderEpoch
        | UnknownTopicId => PartitionError::Stale(e),
        OffsetOutOfRange => PartitionError::Fatal(LogError::OffsetOutOfRange {
            topic: topic.to_string(),
            partition: p.0,
            requested: 0,
            earliest: 0,
            latest: 0,
        }),
        e => PartitionError::Fatal(broker(format!("{topic}/{p}: {e}"))),
    })
}

/// Record batches (the last one may be cut short by the fetch's byte limit) into the
/// records the request asked for. Control records (transaction markers) and records
/// before `from` (a batch starts where it starts) are skipped, but `next` moves past
/// them, so a reader never stalls on a marker.
fn decode(mut raw: Bytes, req: LogFetch) -> std::result::Result<Fetched, String> {
    let from = req.from.0 as i64;
    let max_records = req.max_records.max(1);
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let mut skipped_to: Option<i64> = None;
    'batches: while raw.len() >= 12 {
        let len = (&raw[8..12]).get_i32();
        let size = 12 + usize::try_from(len).map_err(|_| format!("batch length {len}"))?;
        if raw.len() < size {
            break; // cut short: the next fetch starts there
        }
        let mut batch = raw.split_to(size);
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| e.to_string())?;
        for r in set.records {
            if r.offset < from {
                continue;
            }
            if r.control {
                skipped_to = Some(r.offset);
                continue;
            }
            let size = r.value.as_ref().map_or(0, |v| v.len());
            if records.len() >= max_records || (!records.is_empty() && bytes + size > req.max_bytes)
            {
                break 'batches;
            }
            bytes += size;
            records.push(StoredRecord {
                offset: Offset(r.offset as u64),
                timestamp: Timestamp(r.timestamp),
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| Header {
                        key: k.to_string(),
                        value: v.unwrap_or_default(),
                    })
                    .collect(),
            });
        }
    }
    let next = match (records.last(), skipped_to) {
        (Some(r), Some(s)) => Offset(r.offset.0.max(s as u64) + 1),
        (Some(r), None) => Offset(r.offset.0 + 1),
        (None, Some(s)) => Offset(s as u64 + 1),
        (None, None) => req.from,
    };
    Ok(Fetched {
        records,
        next,
        offsets: PartitionOffsets {
            earliest: Offset(0),
            latest: next,
        },
    })
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::*;

    fn record(offset: i64, control: bool) -> Record {
        Record {
            transactional: control,
            control,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp: 1_000 + offset,
            key: Some(Bytes::from(format!("k{offset}"))),
            value: Some(Bytes::from(format!("v{offset}"))),
            headers: Default::default(),
        }
    }

    /// Record batches as a Fetch answer carries them, one batch per group.
    fn batches(groups: &[&[Record]]) -> Bytes {
        let mut buf = BytesMut::new();
        for group in groups {
            let options = RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            };
            RecordBatchEncoder::encode(&mut buf, group.iter(), &options).unwrap();
        }
        buf.freeze()
    }

    fn offsets(f: &Fetched) -> Vec<u64> {
        f.records.iter().map(|r| r.offset.0).collect()
    }

    #[test]
    fn markers_and_gaps_are_skipped_and_next_moves_past_them() {
        // 0, 1, a transaction marker at 2, 5 (3 and 4 compacted away), a marker at 6.
        let raw = batches(&[
            &[record(0, false), record(1, false)],
            &[record(2, true)],
            &[record(5, false)],
            &[record(6, true)],
        ]);
        let f = decode(raw.clone(), LogFetch::new(Offset(0))).unwrap();
        assert_eq!(offsets(&f), [0, 1, 5]);
        assert_eq!(f.next, Offset(7), "past the trailing marker");
        assert_eq!(f.records[2].value.as_deref(), Some(&b"v5"[..]));

        // From the middle of the first batch; a limit of one record: the marker right
        // after it is passed too, the record after that is not.
        let f = decode(raw.clone(), LogFetch::new(Offset(1)).max_records(1)).unwrap();
        assert_eq!((offsets(&f), f.next), (vec![1], Offset(3)));
        let f = decode(raw.clone(), LogFetch::new(Offset(3))).unwrap();
        assert_eq!(offsets(&f), [5], "3 and 4 are gone: the read starts at 5");

        // Only a marker: nothing to read, but the reader moves on.
        let marker = batches(&[&[record(9, true)]]);
        let f = decode(marker, LogFetch::new(Offset(9))).unwrap();
        assert!(f.records.is_empty());
        assert_eq!(f.next, Offset(10));
    }

    #[test]
    fn a_batch_cut_short_by_the_byte_limit_is_left_for_the_next_fetch() {
        let raw = batches(&[&[record(0, false)], &[record(1, false)]]);
        let cut = raw.slice(..raw.len() - 5);
        let f = decode(cut, LogFetch::new(Offset(0))).unwrap();
        assert_eq!((offsets(&f), f.next), (vec![0], Offset(1)));
    }
}
