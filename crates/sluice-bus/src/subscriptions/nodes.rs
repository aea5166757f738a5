//! This node's part among the nodes sharing a log: its sessions kept in step with the
//! other nodes' streams and the claims in `__sluice_sessions` (`cluster.rs` says how
//! claims decide who holds a partition), heartbeats, and the expiry of streams of
//! nodes that went silent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::Session;
use super::cluster::{self, Cluster};
use super::session::{State, StreamCtl};
use super::store::{PartKey, Store};
use crate::error::Result;

/// Brings the other nodes' live streams into a session's state (new ones added, gone
/// ones ended), so that the even split counts every node's streams. Streams of a
/// generation a reset ended do not count: their nodes are closing them.
pub(super) fn sync_remote(st: &mut State, cluster: &Cluster, sub: &str, generation: u64) {
    let mut remote = cluster.remote_members(sub);
    remote.retain(|(_, m)| m.generation >= generation);
    for ctl in st.streams.iter().filter(|s| s.remote) {
        if ctl.is_live() && !remote.iter().any(|(id, _)| *id == ctl.id) {
            ctl.disconnected();
        }
    }
    for (id, m) in remote {
        if !st.streams.iter().any(|s| s.id == id) {
            st.streams.push(Arc::new(StreamCtl::remote(
                id,
                m.direct,
                m.commit_timeout,
                m.generation,
                m.started_ms,
            )));
        }
    }
}

/// What a node must write for its streams to hold what the split gives them.
enum Step {
    Claim(PartKey, String),
    Release(PartKey, String),
}

/// Settles one session against the cluster: claims for partitions the split gives a
/// local stream, releases for those it gave up; a local owner may send once its claim
/// holds (after this node caught up with the commits made before the handover).
pub(super) async fn settle_session(
    session: &Session,
    cluster: &Cluster,
    store: &Store,
) -> Result<()> {
    let sub = session.id.as_str();
    let (steps, newly_held) = {
        let mut st = session.state.lock();
        sync_remote(&mut st, cluster, sub, store.generation(sub));
        st.rebalance(Instant::now());
        let mut steps = Vec::new();
        let mut newly_held = Vec::new();
        let local: Vec<String> = st
            .streams
            .iter()
            .filter(|s| !s.remote)
            .map(|s| s.id.clone())
            .collect();
        for (key, part) in st.parts.iter_mut() {
            let owner = part
                .owner
                .as_ref()
                .filter(|o| !o.remote)
                .map(|o| o.id.clone());
            if let Some(owner) = &owner {
                if cluster.holder(sub, key).as_deref() == Some(owner.as_str()) {
                    if part.unheld {
                        newly_held.push(key.clone());
                    }
                } else {
                    part.unheld = true;
                    if !cluster.has_claim(sub, key, owner) {
                        steps.push(Step::Claim(key.clone(), owner.clone()));
                    }
                }
            }
            for stream in &local {
                if Some(stream) != owner.as_ref() && cluster.has_claim(sub, key, stream) {
                    steps.push(Step::Release(key.clone(), stream.clone()));
                }
            }
        }
        // Streams of this node the session forgot (ended by a reset, or gone with
        // nothing held) keep no claim.
        for (key, stream) in cluster.own_claims(sub) {
            if !local.contains(&stream) {
                steps.push(Step::Release(key, stream));
            }
        }
        (steps, newly_held)
    };
    // One append: partitions claimed together are held together.
    let steps: Vec<(PartKey, String, bool)> = steps
        .into_iter()
        .map(|step| match step {
            Step::Claim(key, stream) => (key, stream, true),
            Step::Release(key, stream) => (key, stream, false),
        })
        .collect();
    cluster.write_claims(sub, &steps).await?;
    if !newly_held.is_empty() {
        // The previous holder committed before it released: see those commits first.
        store.cursors_caught_up().await?;
        let mut st = session.state.lock();
        for key in newly_held {
            let owner = st.parts.get(&key).and_then(|p| p.owner.clone());
            if let (Some(part), Some(owner)) = (st.parts.get_mut(&key), owner)
                && cluster.holder(sub, &key).as_deref() == Some(owner.id.as_str())
            {
                part.unheld = false;
            }
        }
        for s in &st.streams {
            s.notify.notify_one();
        }
    }
    Ok(())
}

/// This node's part in the cluster: every few hundred ms each session is settled
/// against the other nodes' streams and claims; every second the local streams are
/// announced (heartbeats) and ended ones leave; streams of dead nodes are expired.
pub(super) async fn cluster_loop(
    sessions: std::sync::Weak<Mutex<HashMap<String, Arc<Session>>>>,
    cluster: Arc<Cluster>,
    store: Arc<Store>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heartbeat = Instant::now();
    loop {
        tick.tick().await;
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        let all: Vec<Arc<Session>> = sessions.lock().values().cloned().collect();
        drop(sessions);
        let heartbeat = last_heartbeat.elapsed() >= cluster::HEARTBEAT;
        if heartbeat {
            last_heartbeat = Instant::now();
        }
        // Every session's heartbeat in one append.
        let mut beats = Vec::new();
        for session in all {
            if let Err(e) = settle_session(&session, &cluster, &store).await {
                tracing::warn!(subscription = %session.id, error = %e, "cannot settle streams with the cluster");
                continue;
            }
            if !heartbeat {
                continue;
            }
            let (live, kept): (Vec<Arc<StreamCtl>>, Vec<String>) = {
                let st = session.state.lock();
                (
                    st.streams
                        .iter()
                        .filter(|s| !s.remote && s.is_live())
                        .cloned()
                        .collect(),
                    st.streams
                        .iter()
                        .filter(|s| !s.remote)
                        .map(|s| s.id.clone())
                        .collect(),
                )
            };
            let gone: Vec<String> = cluster
                .own_members(&session.id)
                .into_iter()
                .filter(|id| !kept.contains(id) && cluster.claims_of(&session.id, id).is_empty())
                .collect();
            beats.extend(cluster.member_records(&session.id, &live));
            beats.extend(Cluster::leave_records(&session.id, &gone));
        }
        if let Err(e) = cluster.append(beats).await {
            tracing::warn!(error = %e, "heartbeats not written");
        }
        if heartbeat {
            for (sub, stream, claims) in cluster.expired() {
                tracing::info!(subscription = %sub, stream = %stream, "a stream of a node that went silent expired");
                let expire = async {
                    for key in &claims {
                        cluster.release(&sub, key, &stream).await?;
                    }
                    cluster.leave(&sub, std::slice::from_ref(&stream)).await
                };
                if let Err(e) = expire.await {
                    tracing::warn!(subscription = %sub, error = %e, "cannot expire a silent stream");
                }
            }
        }
    }
}
