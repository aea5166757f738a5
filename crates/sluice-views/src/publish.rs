//! A view's changes as data change events of a derived event type (`publish_as`).
//!
//! Every view name has one `Outlet` on a node: a queue drained by one task, so what
//! is published reaches the log in the order it was decided, whichever version of
//! the view decided it (blue/green hands the outlet from the old to the new one).
//! Changes are queued under the view's lock, in the order they were applied.
//!
//! Taking over is the one moment that is not a plain change: when a view starts
//! telling consumers (a blue/green switch, or the publisher lease of a shared log
//! coming to this node, `lease.rs`), it publishes the difference between what
//! consumers were told and its rows, from its apply loop, ahead of any later change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::engine::RowChange;
use crate::plan::Plan;
use crate::runner::Running;
use crate::view::View;

/// Events per publish request.
const CHUNK: usize = 1000;

/// Why changes were not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsent {
    /// This node does not hold the view's publisher lease (any more).
    NotPublisher,
    Failed(String),
}

/// What to publish: changes as the apply loop made them (turned into events by the
/// outlet's task, so readers do not wait on it), or events already made.
enum Pending {
    Changes(Arc<Plan>, Vec<RowChange>),
    Events(Vec<Value>),
}

struct Item {
    publish: Publish,
    pending: Pending,
    done: oneshot::Sender<Result<u64, Unsent>>,
}

/// Whether this node may publish a view's changes: always on a log of its own; on a
/// shared log while it holds the view's lease, within the time its last renewal
/// allows (`term` counts the times it got the lease).
#[derive(Debug, Default)]
struct Gate {
    open_until: Option<Instant>,
    term: u64,
}

/// The way out of one view's changes on this node.
#[derive(Debug)]
pub struct Outlet {
    leased: bool,
    gate: Mutex<Gate>,
    queue: mpsc::UnboundedSender<Item>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Item")
    }
}

impl Outlet {
    fn new(leased: bool) -> Arc<Outlet> {
        let (tx, rx) = mpsc::unbounded_channel();
        let outlet = Arc::new(Outlet {
            leased,
            gate: Mutex::new(Gate::default()),
            queue: tx,
        });
        tokio::spawn(drain(Arc::downgrade(&outlet), rx));
        outlet
    }

    /// Whether a publisher of lease `term` may publish now.
    pub(crate) fn may(&self, term: u64) -> bool {
        if !self.leased {
            return true;
        }
        let g = self.gate.lock();
        g.term == term && g.open_until.is_some_and(|t| Instant::now() < t)
    }

    /// The lease came to this node (again): a new term, open until `until`.
    pub(crate) fn open_new_term(&self, until: Instant) {
        let mut g = self.gate.lock();
        g.term += 1;
        g.open_until = Some(until);
    }

    /// A renewal went through: publishing may go on until `until`.
    pub(crate) fn extend(&self, until: Instant) {
        let mut g = self.gate.lock();
        if g.open_until.is_some() {
            g.open_until = Some(g.open_until.map_or(until, |t| t.max(until)));
        }
    }

    /// The lease went to another node.
    pub(crate) fn close(&self) {
        self.gate.lock().open_until = None;
    }

    pub(crate) fn term(&self) -> u64 {
        self.gate.lock().term
    }
}

/// Publishes what is queued, in order, while the outlet lives.
async fn drain(outlet: std::sync::Weak<Outlet>, mut rx: mpsc::UnboundedReceiver<Item>) {
    while let Some(item) = rx.recv().await {
        let Some(o) = outlet.upgrade() else { return };
        let events = match item.pending {
            Pending::Changes(plan, changes) => events_of(&plan, &changes),
            Pending::Events(events) => events,
        };
        let mut result = Ok(0);
        for chunk in events.chunks(CHUNK) {
            if let Err(e) = send(&o, &item.publish, chunk).await {
                result = Err(e);
                break;
            }
            result = result.map(|n| n + chunk.len() as u64);
        }
        let _ = item.done.send(result);
    }
}

/// Publishes events, retrying while the log refuses them (at least once), as long
/// as the outlet's gate stays open.
async fn send(outlet: &Outlet, p: &Publish, events: &[Value]) -> Result<(), Unsent> {
    let body = serde_json::to_vec(events).expect("JSON values serialize");
    let publisher = sluice_bus::Publisher {
        flow_id: None,
        published_by: Some("sluice-views".into()),
    };
    let mut wait = Duration::from_millis(100);
    loop {
        if !outlet.may(p.term) {
            return Err(Unsent::NotPublisher);
        }
        match p.bus.publish(&p.event_type, &body, &publisher).await {
            Ok(sluice_bus::Published::All(_)) => return Ok(()),
            Ok(other) => {
                return Err(Unsent::Failed(format!(
                    "{} refused the view's changes: {other:?}",
                    p.event_type
                )));
            }
            Err(e @ sluice_bus::BusError::Log(_)) if wait < Duration::from_secs(10) => {
                tracing::warn!(event_type = %p.event_type, error = %e, "view changes not published yet; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                return Err(Unsent::Failed(format!(
                    "publishing to {}: {e}",
                    p.event_type
                )));
            }
        }
    }
}

/// The outlets of a node's views, by view name.
#[derive(Debug, Clone)]
pub(crate) struct Outlets {
    /// Whether publishing needs the lease (a shared log).
    leased: bool,
    map: Arc<Mutex<HashMap<String, Arc<Outlet>>>>,
}

impl Outlets {
    pub(crate) fn new(leased: bool) -> Outlets {
        Outlets {
            leased,
            map: Arc::default(),
        }
    }

    /// Whether publishing needs the view's lease (a shared log).
    pub(crate) fn leased(&self) -> bool {
        self.leased
    }

    pub(crate) fn get(&self, view: &str) -> Arc<Outlet> {
        self.map
            .lock()
            .entry(view.to_string())
            .or_insert_with(|| Outlet::new(self.leased))
            .clone()
    }

    pub(crate) fn remove(&self, view: &str) {
        self.map.lock().remove(view);
    }

    /// A publisher of a view's changes to `event_type`, for the outlet's current term.
    pub(crate) fn publish(
        &self,
        bus: &Arc<sluice_bus::Bus>,
        view: &str,
        event_type: &str,
    ) -> Publish {
        let outlet = self.get(view);
        Publish {
            bus: bus.clone(),
            event_type: event_type.to_string(),
            term: outlet.term(),
            outlet,
        }
    }
}

/// Publishing a view's changes to a derived data change event type.
#[derive(Clone, Debug)]
pub struct Publish {
    pub bus: Arc<sluice_bus::Bus>,
    pub event_type: String,
    outlet: Arc<Outlet>,
    /// The lease term it publishes for (refused once the node's term moved on).
    term: u64,
}

/// An answer from the outlet: how many events were published, or why not.
pub type Ack = oneshot::Receiver<Result<u64, Unsent>>;

impl Publish {
    /// Queues a step's changes (call under the view's lock: the queue is the order).
    pub fn queue_changes(&self, plan: &Arc<Plan>, changes: Vec<RowChange>) -> Ack {
        self.queue(Pending::Changes(plan.clone(), changes))
    }

    fn queue(&self, pending: Pending) -> Ack {
        let (tx, rx) = oneshot::channel();
        let _ = self.outlet.queue.send(Item {
            publish: self.clone(),
            pending,
            done: tx,
        });
        rx
    }

    /// Whether it publishes for the current term of its outlet.
    pub(crate) fn current(&self) -> bool {
        self.term == self.outlet.term()
    }
}

/// Waits for an outlet's answer.
pub async fn acked(ack: Ack) -> Result<u64, Unsent> {
    ack.await
        .unwrap_or_else(|_| Err(Unsent::Failed("the view's outlet is gone".into())))
}

/// The data change events of row changes: C, U or D keyed by the view key; a delete
/// carries the row it removes.
fn events_of(plan: &Plan, changes: &[RowChange]) -> Vec<Value> {
    changes
        .iter()
        .filter_map(|c| {
            let (op, row) = match (&c.before, &c.row) {
                (None, Some(r)) => ("C", r),
                (Some(_), Some(r)) => ("U", r),
                (Some(b), None) => ("D", b),
                (None, None) => return None,
            };
            Some(change_event(&plan.name, &c.key, op, plan.row_json(row)))
        })
        .collect()
}

/// One data change event of a view.
pub fn change_event(view: &str, key: &str, op: &str, data: Value) -> Value {
    serde_json::json!({
        "metadata": {
            "eid": uuid::Uuid::new_v4().to_string(),
            "occurred_at": sluice_schema::time::now_rfc3339(),
            "partition_compaction_key": key,
        },
        "data_type": view,
        "data_op": op,
        "data": data,
    })
}

/// The rows of a view as JSON, by key.
fn rows_json(plan: &Plan, view: &View) -> BTreeMap<String, Value> {
    view.output()
        .visible()
        .map(|(k, row)| (k.to_string(), plan.row_json(&row)))
        .collect()
}

/// What a view publishes when it starts telling consumers: what they were told
/// (key -> row), to be brought to the view's rows.
#[derive(Debug)]
pub struct Takeover {
    pub publish: Publish,
    pub told: BTreeMap<String, Value>,
}

impl Takeover {
    /// Queues the events that bring consumers from what they were told to the view's
    /// rows, and publishes the view's changes from here on. Runs in the view's apply
    /// loop (nothing it applies later can be queued before).
    pub(crate) fn run(self, r: &Running) -> Ack {
        let view = r.view.read();
        let after = rows_json(&r.plan, &view);
        let mut events = Vec::new();
        for (k, row) in &after {
            match self.told.get(k) {
                None => events.push(change_event(&r.plan.name, k, "C", row.clone())),
                Some(b) if b != row => events.push(change_event(&r.plan.name, k, "U", row.clone())),
                Some(_) => {}
            }
        }
        for (k, row) in self.told {
            if !after.contains_key(&k) {
                events.push(change_event(&r.plan.name, &k, "D", row));
            }
        }
        *r.publish.lock() = Some(self.publish.clone());
        self.publish.queue(Pending::Events(events))
    }
}

/// Blue/green with a derived event type: the old view stops publishing, the new one
/// publishes the difference between the old view's rows (what consumers were told;
/// nothing if the old version did not publish there) and its own, then goes on
/// publishing its changes. Consumers see one story. On a shared log a node that does
/// not hold the lease hands nothing over: the lease brings publishing when it comes.
pub fn hand_over(old: &Running, new: &Running, p: Publish) {
    let told = {
        // Publishing is decided under a view's lock (`apply`): stop it there.
        let view = old.view.read();
        match old.publish.lock().take() {
            Some(was) if was.event_type == p.event_type && was.current() => {
                Some(rows_json(&old.plan, &view))
            }
            Some(_) => Some(BTreeMap::new()),
            None if !p.outlet.leased => Some(BTreeMap::new()),
            None => None,
        }
    };
    if let Some(told) = told {
        new.take_over(Takeover { publish: p, told });
    }
}

/// What a derived event type holds, key -> row (the last event per key, without
/// the deleted ones): what its consumers were told.
pub(crate) async fn published_rows(
    bus: &sluice_bus::Bus,
    event_type: &str,
) -> Result<BTreeMap<String, Value>, String> {
    use sluice_log::{FetchRequest, PartitionId};
    let reg = bus
        .registry()
        .require(event_type)
        .map_err(|e| e.to_string())?;
    let log = bus.log();
    let mut told = BTreeMap::new();
    for p in 0..reg.partitions() {
        let o = log
            .offsets(&reg.topic, PartitionId(p))
            .await
            .map_err(|e| e.to_string())?;
        let mut from = o.earliest;
        while from < o.latest {
            let f = log
                .fetch(&reg.topic, PartitionId(p), FetchRequest::new(from))
                .await
                .map_err(|e| format!("reading {event_type}: {e}"))?;
            if f.records.is_empty() && f.next == from {
                break;
            }
            for r in &f.records {
                let Some(v) = r.value.as_deref() else {
                    continue;
                };
                let Ok(mut e) = serde_json::from_slice::<Value>(v) else {
                    continue;
                };
                let Some(key) = e["metadata"]["partition_compaction_key"].as_str() else {
                    continue;
                };
                let key = key.to_string();
                if e["data_op"] == "D" {
                    told.remove(&key);
                } else {
                    told.insert(key, e["data"].take());
                }
            }
            from = f.next;
        }
    }
    Ok(told)
}
