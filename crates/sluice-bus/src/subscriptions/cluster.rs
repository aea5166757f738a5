//! The streams of one subscription across nodes (shared logs: Kafka). No coordinator:
//! every node follows `__sluice_sessions` and decides from the same facts.
//!
//! - `m/{subscription}/{stream}`: a stream is open on a node (its start time, direct
//!   partitions, commit timeout). Written when it opens and every second while it is
//!   live (a heartbeat), a tombstone once it ended and holds nothing. A stream not heard
//!   of for `LIVE_FOR` is not live.
//! - `h/{subscription}/{event type}/{partition}/{stream}`: the stream claims the
//!   partition; a tombstone releases it. Claims queue in log order: the partition is
//!   held by the earliest live claim, so two streams never hold it at once, whatever
//!   the nodes believe about each other.
//!
//! Each node runs the same even split (`session.rs`) over the live streams of all
//! nodes, ordered by start time. A local stream assigned a partition claims it and
//! sends from it only once its claim is the holder; a stream that lost a partition
//! releases it once it has nothing uncommitted (committed, or its commit timeout
//! passed): the release is the handover, and Nakadi's rule holds across nodes. The
//! claims of a node that died are released by any node, `LIVE_FOR` plus the stream's
//! commit timeout after its last heartbeat.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sluice_log::{Log, LogError, PartitionId, Record, StoredRecord, TopicName};

use super::session::StreamCtl;
use super::store::PartKey;
use crate::error::Result;
use crate::follow::{Follower, key_of};

pub const SESSIONS_TOPIC: &str = "__sluice_sessions";
/// A stream not heard of for this long is not live.
pub const LIVE_FOR: Duration = Duration::from_secs(3);
/// How often a node says its streams are alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize, Deserialize)]
struct MemberRecord {
    node: String,
    started_ms: i64,
    direct: Vec<PartKey>,
    commit_timeout_ms: u64,
    /// The generation of the subscription's cursors the stream opened in.
    #[serde(default)]
    generation: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ClaimRecord {
    node: String,
}

/// A stream as its last record said.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub node: String,
    pub started_ms: i64,
    pub direct: Vec<PartKey>,
    pub commit_timeout: Duration,
    pub generation: u64,
    /// When this node applied its last record.
    pub seen: Instant,
}

#[derive(Debug, Default)]
struct View {
    members: HashMap<String, BTreeMap<String, Member>>,
    /// Claims per (subscription, partition), in log order: (stream, node); the first
    /// holds it.
    claims: HashMap<(String, PartKey), Vec<(String, String)>>,
}

impl View {
    fn apply(&mut self, r: &StoredRecord) {
        let key = key_of(r);
        if let Some(rest) = key.strip_prefix("m/") {
            let Some((sub, stream)) = rest.split_once('/') else {
                return;
            };
            let members = self.members.entry(sub.to_string()).or_default();
            match r
                .value
                .as_deref()
                .map(serde_json::from_slice::<MemberRecord>)
            {
                None => {
                    members.remove(stream);
                }
                Some(Ok(m)) => {
                    members.insert(
                        stream.to_string(),
                        Member {
                            node: m.node,
                            started_ms: m.started_ms,
                            direct: m.direct,
                            commit_timeout: Duration::from_millis(m.commit_timeout_ms),
                            generation: m.generation,
                            seen: Instant::now(),
                        },
                    );
                }
                Some(Err(e)) => tracing::warn!(key, error = %e, "unreadable session record"),
            }
        } else if let Some(rest) = key.strip_prefix("h/") {
            let Some((sub, rest)) = rest.split_once('/') else {
                return;
            };
            let mut parts = rest.rsplitn(3, '/');
            let (Some(stream), Some(p), Some(et)) = (parts.next(), parts.next(), parts.next())
            else {
                return;
            };
            let Ok(p) = p.parse::<u32>() else { return };
            let claims = self
                .claims
                .entry((sub.to_string(), (et.to_string(), p)))
                .or_default();
            match r
                .value
                .as_deref()
                .map(serde_json::from_slice::<ClaimRecord>)
            {
                None => claims.retain(|(s, _)| s != stream),
                Some(Ok(c)) => {
                    if !claims.iter().any(|(s, _)| s == stream) {
                        claims.push((stream.to_string(), c.node));
                    }
                }
                Some(Err(e)) => tracing::warn!(key, error = %e, "unreadable claim record"),
            }
        }
    }
}

/// This node's view of every subscription's streams and claims, kept by a follower.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// This process, as its records name it.
    pub node: String,
    log: Arc<dyn Log>,
    view: Arc<Mutex<View>>,
    follower: Follower,
}

fn topic() -> TopicName {
    TopicName::new(SESSIONS_TOPIC).expect("a valid internal topic name")
}

fn member_key(sub: &str, stream: &str) -> Bytes {
    Bytes::from(format!("m/{sub}/{stream}"))
}

fn claim_key(sub: &str, (et, p): &PartKey, stream: &str) -> Bytes {
    Bytes::from(format!("h/{sub}/{et}/{p}/{stream}"))
}

impl Cluster {
    pub async fn open(log: Arc<dyn Log>) -> Result<Cluster> {
        let t = topic();
        match log
            .create_topic(&t, crate::registry::compacted_internal())
            .await
        {
            Ok(()) | Err(LogError::TopicExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let from = log.offsets(&t, PartitionId(0)).await?.earliest;
        let view = Arc::new(Mutex::new(View::default()));
        let follower = Follower::spawn(log.clone(), t, from, {
            let view = view.clone();
            move |r| view.lock().apply(r)
        });
        let cluster = Cluster {
            node: uuid::Uuid::new_v4().to_string(),
            log,
            view,
            follower,
        };
        // Claims are decided in log order: read all of it before taking part.
        cluster.follower.caught_up_to_end().await?;
        Ok(cluster)
    }

    /// Appends records to the sessions topic and waits until they are applied here.
    pub async fn append(&self, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let at = self.log.append(&topic(), PartitionId(0), records).await?;
        if let Some(last) = at.last() {
            self.follower.caught_up(last).await?;
        }
        Ok(())
    }

    /// Says these local streams are open (a heartbeat).
    pub async fn announce(&self, sub: &str, streams: &[Arc<StreamCtl>]) -> Result<()> {
        self.append(self.member_records(sub, streams)).await
    }

    /// The records saying these local streams are open.
    pub fn member_records(&self, sub: &str, streams: &[Arc<StreamCtl>]) -> Vec<Record> {
        streams
            .iter()
            .map(|s| {
                let m = MemberRecord {
                    node: self.node.clone(),
                    started_ms: s.started_ms,
                    direct: s.direct.clone(),
                    commit_timeout_ms: s.commit_timeout.as_millis() as u64,
                    generation: s.generation,
                };
                let value = serde_json::to_vec(&m).unwrap_or_default();
                Record::keyed(member_key(sub, &s.id), Bytes::from(value))
            })
            .collect()
    }

    pub async fn leave(&self, sub: &str, streams: &[String]) -> Result<()> {
        self.append(Self::leave_records(sub, streams)).await
    }

    /// The records saying these streams ended.
    pub fn leave_records(sub: &str, streams: &[String]) -> Vec<Record> {
        streams
            .iter()
            .map(|s| Record::tombstone(member_key(sub, s)))
            .collect()
    }

    /// Claims (`true`) and releases (`false`) of partitions by streams, in one append.
    pub async fn write_claims(&self, sub: &str, steps: &[(PartKey, String, bool)]) -> Result<()> {
        let value = Bytes::from(
            serde_json::to_vec(&ClaimRecord {
                node: self.node.clone(),
            })
            .unwrap_or_default(),
        );
        let records = steps
            .iter()
            .map(|(part, stream, claim)| {
                let key = claim_key(sub, part, stream);
                if *claim {
                    Record::keyed(key, value.clone())
                } else {
                    Record::tombstone(key)
                }
            })
            .collect();
        self.append(records).await
    }

    pub async fn release(&self, sub: &str, part: &PartKey, stream: &str) -> Result<()> {
        self.write_claims(sub, &[(part.clone(), stream.to_string(), false)])
            .await
    }

    /// Live streams of other nodes.
    pub fn remote_members(&self, sub: &str) -> Vec<(String, Member)> {
        let view = self.view.lock();
        view.members
            .get(sub)
            .map(|m| {
                m.iter()
                    .filter(|(_, m)| m.node != self.node && m.seen.elapsed() < LIVE_FOR)
                    .map(|(id, m)| (id.clone(), m.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Streams of this node the cluster still counts as members.
    pub fn own_members(&self, sub: &str) -> Vec<String> {
        let view = self.view.lock();
        view.members
            .get(sub)
            .map(|m| {
                m.iter()
                    .filter(|(_, m)| m.node == self.node)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The partitions a stream asked for (direct assignment), if it is a member.
    pub fn direct_of(&self, sub: &str, stream: &str) -> Option<Vec<PartKey>> {
        let view = self.view.lock();
        Some(view.members.get(sub)?.get(stream)?.direct.clone())
    }

    /// The stream holding the partition (the earliest claim), if any.
    pub fn holder(&self, sub: &str, part: &PartKey) -> Option<String> {
        self.view
            .lock()
            .claims
            .get(&(sub.to_string(), part.clone()))
            .and_then(|c| c.first().map(|(s, _)| s.clone()))
    }

    /// Whether `stream` has a claim on the partition (holding it or queued).
    pub fn has_claim(&self, sub: &str, part: &PartKey, stream: &str) -> bool {
        self.view
            .lock()
            .claims
            .get(&(sub.to_string(), part.clone()))
            .is_some_and(|c| c.iter().any(|(s, _)| s == stream))
    }

    /// The partitions `stream` has claims on.
    pub fn claims_of(&self, sub: &str, stream: &str) -> Vec<PartKey> {
        self.view
            .lock()
            .claims
            .iter()
            .filter(|((s, _), c)| s == sub && c.iter().any(|(x, _)| x == stream))
            .map(|((_, k), _)| k.clone())
            .collect()
    }

    /// Claims this node made for a subscription: (partition, stream).
    pub fn own_claims(&self, sub: &str) -> Vec<(PartKey, String)> {
        let view = self.view.lock();
        let mut out = Vec::new();
        for ((s, key), claims) in &view.claims {
            if s != sub {
                continue;
            }
            for (stream, node) in claims {
                if *node == self.node {
                    out.push((key.clone(), stream.clone()));
                }
            }
        }
        out
    }

    /// Streams of any node silent for longer than `LIVE_FOR` plus their commit
    /// timeout, with their claims: whatever they held uncommitted is given up.
    pub fn expired(&self) -> Vec<(String, String, Vec<PartKey>)> {
        let view = self.view.lock();
        let mut out = Vec::new();
        for (sub, members) in &view.members {
            for (stream, m) in members {
                if m.seen.elapsed() > LIVE_FOR + m.commit_timeout {
                    let claims = view
                        .claims
                        .iter()
                        .filter(|((s, _), c)| s == sub && c.iter().any(|(x, _)| x == stream))
                        .map(|((_, k), _)| k.clone())
                        .collect();
                    out.push((sub.clone(), stream.clone(), claims));
                }
            }
        }
        out
    }
}
