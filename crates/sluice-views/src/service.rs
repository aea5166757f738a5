//! The views of a node: definitions kept in the log (`__sluice_views`, replayed on
//! start and followed, like every registry), each view running beside the bus, and
//! what the HTTP edge asks of them (rows by key, ranges, status).
//!
//! A changed definition is built beside the running one (blue/green): reads go to the
//! old view until the new one has caught up with the log, then the switch is one
//! pointer swap, so no read ever sees a half-built view.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sluice_bus::{Bus, BusError, CursorOffset, Follower, key_of};
use sluice_log::{PartitionId, Record, StoredRecord, TopicName};

use crate::frozen::Frozen;
use crate::lease::Leases;
use crate::lifecycle::reconcile_loop;
use crate::plan::Plan;
use crate::publish::Outlets;
use crate::runner::{Progress, Running};
use crate::sql::SqlError;
use crate::view::OnError;

pub const VIEWS_TOPIC: &str = "__sluice_views";

/// The catalog of a node: its event types and its views.
pub(crate) fn catalog<'a>(bus: &'a Bus, state: &State) -> crate::catalog::WithViews<'a> {
    crate::catalog::WithViews {
        registry: bus.registry(),
        views: state
            .defs
            .read()
            .iter()
            .map(|(k, d)| (k.clone(), d.publish_as.clone()))
            .collect(),
    }
}

/// A view as stored in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    pub sql: String,
    #[serde(default)]
    pub on_error: Policy,
    /// A data change event type the view's changes are published to (C/U/D keyed
    /// by the view key), created with the view when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_as: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// `on_error` as JSON: `skip` or `stop`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    #[default]
    Skip,
    Stop,
}

impl From<Policy> for OnError {
    fn from(p: Policy) -> OnError {
        match p {
            Policy::Skip => OnError::Skip,
            Policy::Stop => OnError::Stop,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ViewsError {
    #[error("view `{0}` does not exist")]
    NotFound(String),
    #[error("view `{0}` already exists (PUT /views/{0} replaces it)")]
    Exists(String),
    #[error("{0}")]
    Sql(#[from] SqlError),
    #[error("{0}")]
    Invalid(String),
    #[error("view `{0}` is loading its state; try again shortly")]
    Loading(String),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl From<sluice_log::LogError> for ViewsError {
    fn from(e: sluice_log::LogError) -> ViewsError {
        ViewsError::Bus(e.into())
    }
}

pub type Result<T, E = ViewsError> = std::result::Result<T, E>;

/// Where views keep their state.
#[derive(Clone, Debug)]
pub struct ViewsConfig {
    /// Each view's state and offsets, written every `checkpoint_every` and on a clean
    /// stop; a restart goes on from there. None: memory only (rebuilt from the log).
    pub state_dir: Option<PathBuf>,
    pub checkpoint_every: Duration,
    /// Where `snapshot` copies a view's state, and where a node without local state
    /// looks for the latest one before replaying the log.
    pub snapshot_dir: Option<PathBuf>,
    /// On a shared log, how long a view's publisher lease lasts without renewal
    /// (`lease.rs`): a node takes over a dead publisher after this long.
    pub publisher_lease: Duration,
}

impl Default for ViewsConfig {
    fn default() -> ViewsConfig {
        ViewsConfig {
            state_dir: None,
            checkpoint_every: Duration::from_secs(10),
            snapshot_dir: None,
            publisher_lease: Duration::from_secs(6),
        }
    }
}

/// A view of this node: its definition and what runs it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) def: Definition,
    /// The view serving reads (absent when its SQL no longer compiles).
    pub(crate) serving: Option<Arc<Running>>,
    /// Why it does not run (a source event type was deleted, ...).
    pub(crate) failure: Option<String>,
    /// A new definition being built beside the serving view.
    pub(crate) pending: Option<Definition>,
    /// Its state is being loaded (at start).
    pub(crate) loading: bool,
    /// While it loads: its rows as its state file has them (`frozen.rs`).
    pub(crate) frozen: Option<Arc<Frozen>>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) defs: RwLock<BTreeMap<String, Definition>>,
    pub(crate) entries: RwLock<BTreeMap<String, Entry>>,
    /// Where each view's changes go out (`publish.rs`).
    pub(crate) outlets: Outlets,
    /// Wakes the publisher leases (`lease.rs`): a view started, a lease record came.
    pub(crate) wake_leases: Arc<tokio::sync::Notify>,
}

/// What answers a view's reads.
enum Readable {
    Live(Arc<Running>),
    Frozen(Arc<Frozen>),
}

/// The views of this node.
#[derive(Debug)]
pub struct Views {
    bus: Arc<Bus>,
    config: Arc<ViewsConfig>,
    state: Arc<State>,
    follower: Follower,
    /// On a shared log: who publishes each view (`lease.rs`).
    leases: Option<Arc<Leases>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Views {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn topic() -> TopicName {
    TopicName::new(VIEWS_TOPIC).expect("a valid internal topic name")
}

/// A view name: also a directory name for its state.
fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 200
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ViewsError::Invalid(format!(
            "view name {name:?}: letters, digits, `_`, `-` and `.`, starting with a letter"
        )))
    }
}

impl Views {
    pub async fn open(bus: Arc<Bus>, config: ViewsConfig) -> Result<Views> {
        let config = Arc::new(config);
        let log = bus.log().clone();
        let (defs, next) = sluice_bus::replay(&log, &topic()).await?;
        let shared = log.shared();
        let state = Arc::new(State {
            defs: RwLock::default(),
            entries: RwLock::default(),
            outlets: Outlets::new(shared),
            wake_leases: Arc::default(),
        });
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for (name, value) in defs {
            if let Some(v) = value
                && let Ok(def) = serde_json::from_slice::<Definition>(&v)
            {
                // Known at once, served once loaded.
                state.entries.write().insert(
                    name.clone(),
                    Entry {
                        def: def.clone(),
                        serving: None,
                        failure: None,
                        pending: None,
                        loading: true,
                        frozen: None,
                    },
                );
                state.defs.write().insert(name.clone(), def);
                let _ = tx.send(name);
            }
        }
        let follower = Follower::spawn(log, topic(), next, {
            let state = state.clone();
            let tx = tx.clone();
            move |r: &StoredRecord| {
                let name = key_of(r);
                match r.value.as_deref().map(serde_json::from_slice::<Definition>) {
                    None => {
                        state.defs.write().remove(&name);
                    }
                    Some(Ok(def)) => {
                        state.defs.write().insert(name.clone(), def);
                    }
                    Some(Err(e)) => {
                        tracing::error!(view = %name, error = %e, "unreadable view definition");
                        return;
                    }
                }
                let _ = tx.send(name);
            }
        });
        let mut tasks = vec![tokio::spawn(reconcile_loop(
            bus.clone(),
            config.clone(),
            state.clone(),
            rx,
        ))];
        let leases = if shared {
            let leases = Arc::new(Leases::open(&bus, &state, config.publisher_lease).await?);
            tasks.push(tokio::spawn(leases.clone().run(bus.clone(), state.clone())));
            Some(leases)
        } else {
            None
        };
        Ok(Views {
            bus,
            config,
            state,
            follower,
            leases,
            tasks,
        })
    }

    /// What SQL may read here: event types, and views that publish their changes.
    fn catalog(&self) -> crate::catalog::WithViews<'_> {
        catalog(&self.bus, &self.state)
    }

    /// Creates a view; `Exists` if its name is taken.
    pub async fn create(
        &self,
        sql: &str,
        on_error: Policy,
        publish_as: Option<String>,
    ) -> Result<Definition> {
        let plan = crate::sql::compile(sql, &self.catalog())?;
        check_name(&plan.name)?;
        if self.state.defs.read().contains_key(&plan.name) {
            return Err(ViewsError::Exists(plan.name));
        }
        if let Some(et) = &publish_as {
            self.ensure_derived(&plan, et).await?;
        }
        let now = sluice_schema::time::now_rfc3339();
        let def = Definition {
            name: plan.name.clone(),
            sql: sql.to_string(),
            on_error,
            publish_as,
            created_at: now.clone(),
            updated_at: now,
        };
        self.persist(&def.name, Some(&def)).await?;
        Ok(def)
    }

    /// Creates or replaces the view `name` (its SQL must name it); `true` if created.
    pub async fn put(
        &self,
        name: &str,
        sql: &str,
        on_error: Policy,
        publish_as: Option<String>,
    ) -> Result<(Definition, bool)> {
        let plan = crate::sql::compile(sql, &self.catalog())?;
        if plan.name != name {
            return Err(ViewsError::Invalid(format!(
                "the SQL creates view `{}`, not `{name}`",
                plan.name
            )));
        }
        check_name(name)?;
        if let Some(et) = &publish_as {
            self.ensure_derived(&plan, et).await?;
        }
        let now = sluice_schema::time::now_rfc3339();
        let old = self.state.defs.read().get(name).cloned();
        let def = Definition {
            name: name.to_string(),
            sql: sql.to_string(),
            on_error,
            publish_as,
            created_at: old.as_ref().map_or(now.clone(), |o| o.created_at.clone()),
            updated_at: now,
        };
        if old.as_ref().is_some_and(|o| {
            o.sql == def.sql && o.on_error == def.on_error && o.publish_as == def.publish_as
        }) {
            return Ok((old.expect("checked"), false));
        }
        self.persist(name, Some(&def)).await?;
        Ok((def, old.is_none()))
    }

    /// The event type a view publishes to: created when missing (data, compacted,
    /// hash-partitioned by the view key); an existing one must be keyed the same way.
    async fn ensure_derived(&self, plan: &Plan, event_type: &str) -> Result<()> {
        let key: Vec<String> = plan
            .key
            .iter()
            .map(|k| plan.columns[*k].name.clone())
            .collect();
        if let Some(hidden) = plan
            .key
            .iter()
            .map(|k| &plan.columns[*k])
            .find(|c| c.hidden)
        {
            return Err(ViewsError::Invalid(format!(
                "to publish the view, select its key column `{}`",
                hidden.name
            )));
        }
        if let Some(reg) = self.bus.registry().get(event_type) {
            let et = reg.event_type();
            if et.category != sluice_schema::Category::Data || et.partition_key_fields != key {
                return Err(ViewsError::Invalid(format!(
                    "event type `{event_type}` exists, and is not a data event type keyed by {key:?}"
                )));
            }
            return Ok(());
        }
        let properties: serde_json::Map<String, serde_json::Value> = key
            .iter()
            .map(|k| (k.clone(), serde_json::json!({})))
            .collect();
        let schema =
            serde_json::json!({"type": "object", "properties": properties, "required": key});
        let et: sluice_schema::EventType = serde_json::from_value(serde_json::json!({
            "name": event_type,
            "owning_application": "sluice-views",
            "category": "data",
            "enrichment_strategies": ["metadata_enrichment"],
            "partition_strategy": "hash",
            "partition_key_fields": key,
            "cleanup_policy": "compact",
            "schema": {"type": "json_schema", "schema": schema.to_string()},
        }))
        .map_err(|e| ViewsError::Invalid(format!("publish_as: {e}")))?;
        match self.bus.create_event_type(et).await {
            Ok(_) | Err(BusError::EventTypeExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        if !self.state.defs.read().contains_key(name) {
            return Err(ViewsError::NotFound(name.to_string()));
        }
        self.persist(name, None).await
    }

    async fn persist(&self, name: &str, def: Option<&Definition>) -> Result<()> {
        let value = def.map(|d| Bytes::from(serde_json::to_vec(d).unwrap_or_default()));
        let record = Record {
            key: Some(Bytes::copy_from_slice(name.as_bytes())),
            value,
            ..Record::default()
        };
        let at = self
            .bus
            .log()
            .append(&topic(), PartitionId(0), vec![record])
            .await?;
        if let Some(offset) = at.last() {
            self.follower.caught_up(offset).await?;
        }
        // The view runs (or stops) once the reconciler saw the change.
        for _ in 0..200 {
            if self.reconciled(name, def) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Whether the reconciler has taken a definition (or its removal) in.
    fn reconciled(&self, name: &str, def: Option<&Definition>) -> bool {
        match (def, self.state.entries.read().get(name)) {
            (None, None) => true,
            (Some(d), Some(e)) => e.def == *d || e.pending.as_ref() == Some(d),
            _ => false,
        }
    }

    /// Copies a view's state and offsets to the snapshot dir; returns the file.
    pub async fn snapshot(&self, name: &str) -> Result<PathBuf> {
        let Some(dir) = &self.config.snapshot_dir else {
            return Err(ViewsError::Invalid(
                "no snapshot dir is configured (views.snapshot_dir)".into(),
            ));
        };
        let e = self.entry(name)?;
        let r = self.serving(name)?;
        let bytes = r.state_bytes(&e.def.sql);
        let path = dir.join(name).join(format!(
            "{:016x}-{:013}.snap",
            crate::snapshot::fingerprint(&e.def.sql),
            sluice_log::Timestamp::now().0
        ));
        let p = path.clone();
        tokio::task::spawn_blocking(move || crate::snapshot::write_file(&p, &bytes))
            .await
            .map_err(|e| ViewsError::Invalid(e.to_string()))?
            .map_err(|e| ViewsError::Invalid(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }

    /// Before the process stops: the leases this node holds go to other nodes, and
    /// every view writes its state.
    pub async fn shutdown(&self) {
        if let Some(leases) = &self.leases {
            leases.release(self.bus.log()).await;
        }
        let running: Vec<Arc<Running>> = self
            .state
            .entries
            .read()
            .values()
            .filter_map(|e| e.serving.clone())
            .collect();
        for r in running {
            if let Err(e) = r.write_checkpoint().await {
                tracing::error!(view = %r.plan.name, error = %e, "view state not written");
            }
        }
    }

    /// The views whose SQL reads an event type.
    pub fn readers_of(&self, event_type: &str) -> Vec<String> {
        self.state
            .entries
            .read()
            .iter()
            .filter(|(_, e)| {
                e.serving
                    .as_ref()
                    .is_some_and(|r| r.plan.scans.iter().any(|s| s.event_type == event_type))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.state.entries.read().keys().cloned().collect()
    }

    fn entry(&self, name: &str) -> Result<Entry> {
        self.state
            .entries
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| ViewsError::NotFound(name.to_string()))
    }

    /// The view serving reads (no copy of its definition: this is the read path).
    fn serving(&self, name: &str) -> Result<Arc<Running>> {
        let entries = self.state.entries.read();
        let e = entries
            .get(name)
            .ok_or_else(|| ViewsError::NotFound(name.to_string()))?;
        if e.loading {
            return Err(ViewsError::Loading(name.to_string()));
        }
        e.serving.clone().ok_or_else(|| {
            ViewsError::Invalid(format!(
                "view `{name}` does not run: {}",
                e.failure.clone().unwrap_or_default()
            ))
        })
    }

    /// What answers a view's reads: the view, or while it loads, its state file.
    fn readable(&self, name: &str) -> Result<Readable> {
        {
            let entries = self.state.entries.read();
            let e = entries
                .get(name)
                .ok_or_else(|| ViewsError::NotFound(name.to_string()))?;
            if let (true, Some(f)) = (e.loading, &e.frozen) {
                return Ok(Readable::Frozen(f.clone()));
            }
            if let (false, Some(r)) = (e.loading, &e.serving) {
                return Ok(Readable::Live(r.clone()));
            }
        }
        self.serving(name).map(Readable::Live)
    }

    /// A row by key, as JSON.
    pub fn row(&self, name: &str, key: &str) -> Result<Option<serde_json::Value>> {
        let r = match self.readable(name)? {
            Readable::Live(r) => r,
            Readable::Frozen(f) => return Ok(f.get(key).map(|row| f.plan().row_json(&row))),
        };
        let view = r.view.read();
        Ok(view.output().get(key).map(|row| r.plan.row_json(&row)))
    }

    /// Rows in key order: keys starting with `prefix`, after `after`, at most `limit`.
    pub fn rows(
        &self,
        name: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>> {
        use std::ops::Bound;
        let from = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let (rows, plan) = match self.readable(name)? {
            Readable::Live(r) => {
                let rows = r.view.read().output().range(from, prefix, limit);
                (rows, r.plan.clone())
            }
            Readable::Frozen(f) => (f.range(from, prefix, limit), f.plan().clone()),
        };
        Ok(rows.iter().map(|row| plan.row_json(row)).collect())
    }

    /// Waits (up to `wait`) until the view has applied every event before these
    /// offsets (event type, partition, offset of the last event written); whether it did.
    pub async fn wait_for(
        &self,
        name: &str,
        written: &[(String, u32, u64)],
        wait: Duration,
    ) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + wait;
        // A view loading its state answers from its file meanwhile: not caught up.
        while self
            .readable(name)
            .is_ok_and(|r| matches!(r, Readable::Frozen(_)))
        {
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = self.serving(name)?;
        let mut applied = r.applied.subscribe();
        // A partition of a source the view does not read yet (just added) is waited
        // for too; event types the view does not read are not.
        let done = |r: &Running| {
            let p = r.progress.lock();
            written.iter().all(|(t, part, o)| {
                let read = r.plan.scans.iter().any(|s| s.event_type == *t);
                !read
                    || p.next
                        .get(&(t.clone(), *part))
                        .is_some_and(|next| *next > *o)
            })
        };
        loop {
            if done(&r) {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, applied.changed())
                .await
                .is_err()
            {
                return Ok(done(&r));
            }
        }
    }

    /// What GET /views/{name} shows.
    pub async fn status(&self, name: &str) -> Result<serde_json::Value> {
        let e = self.entry(name)?;
        let mut out = serde_json::json!({
            "name": e.def.name,
            "sql": e.def.sql,
            "on_error": e.def.on_error,
            "created_at": e.def.created_at,
            "updated_at": e.def.updated_at,
        });
        if let Some(p) = &e.pending {
            out["replacing_with"] = serde_json::json!({"sql": p.sql, "updated_at": p.updated_at});
        }
        if e.loading {
            out["status"] = "loading".into();
            if let Some(f) = &e.frozen {
                // Reads are answered from the state file meanwhile.
                out["rows"] = f.len().into();
                out["reads_from"] = "state file".into();
            }
            return Ok(out);
        }
        let Some(r) = e.serving else {
            out["status"] = "failed".into();
            out["error"] = e.failure.into();
            return Ok(out);
        };
        let progress = r.progress.lock().clone();
        let rows = r.view.read().output().len();
        let sources = self.lag(&progress).await;
        let behind = sources.iter().any(|s| s["lag_events"].as_u64() != Some(0));
        out["status"] = if progress.stopped.is_some() {
            "stopped"
        } else if behind {
            "catching_up"
        } else {
            "running"
        }
        .into();
        out["rows"] = rows.into();
        out["key"] = r
            .plan
            .key
            .iter()
            .map(|k| r.plan.columns[*k].name.clone())
            .collect::<Vec<_>>()
            .into();
        let (order, waiting) = r.catch_up();
        out["catch_up"] = serde_json::json!({"order": order, "waiting": waiting});
        out["events_applied"] = progress.events.into();
        out["row_changes"] = progress.row_changes.into();
        out["engine_changes"] = progress.engine_changes.into();
        out["checkpoint"] = r
            .last_checkpoint
            .lock()
            .map(|c| {
                serde_json::json!({
                    "bytes": c.bytes,
                    "pause_ms": (c.pause.as_secs_f64() * 1e5).round() / 100.0,
                    "interval_ms": c.interval.as_millis() as u64,
                })
            })
            .into();
        out["loaded_from"] = progress.loaded_from.clone().into();
        if let Some(et) = &e.def.publish_as {
            out["publish_as"] = et.clone().into();
            out["published"] = progress.published.into();
            out["publish_error"] = progress.unpublished.clone().into();
            if let Some(leases) = &self.leases {
                let holder = leases.holder(name);
                out["publisher"] = serde_json::json!({
                    "node": holder.as_ref().map(|h| h.node.clone()),
                    "epoch": holder.as_ref().map(|h| h.epoch),
                    "this_node": holder.is_some_and(|h| h.node == leases.node),
                    "publishing": r.publish.lock().as_ref().is_some_and(|p| p.current()),
                });
            }
        }
        out["sources"] = sources.into();
        let error_json = |x: &crate::runner::EventError| {
            serde_json::json!({
                "event_type": x.event_type,
                "partition": x.partition.to_string(),
                "offset": CursorOffset::At(x.offset).to_string(),
                "message": x.message,
            })
        };
        out["errors"] = serde_json::json!({
            "skipped": progress.skipped,
            "recent": progress.errors.iter().map(error_json).collect::<Vec<_>>(),
        });
        out["stopped_at"] = progress.stopped.as_ref().map(error_json).into();
        out["error"] = progress.unreadable.clone().into();
        Ok(out)
    }

    /// Per source partition: the last applied event and how far behind the log it is.
    async fn lag(&self, progress: &Progress) -> Vec<serde_json::Value> {
        let log = self.bus.log();
        let mut out = Vec::new();
        for ((t, p), next) in &progress.next {
            let Ok(topic) = TopicName::new(t.as_str()) else {
                continue;
            };
            let latest = log
                .offsets(&topic, PartitionId(*p))
                .await
                .map(|o| o.latest.0)
                .ok();
            let lag = latest.map(|l| l.saturating_sub(*next));
            let mut seconds = Some(0);
            if lag.is_some_and(|l| l > 0) {
                seconds = sluice_bus::event_age_seconds(&**log, &topic, *p, *next)
                    .await
                    .ok();
            }
            out.push(serde_json::json!({
                "event_type": t,
                "partition": p.to_string(),
                "offset": if *next == 0 { CursorOffset::Begin } else { CursorOffset::At(next - 1) }.to_string(),
                "lag_events": lag,
                "lag_seconds": seconds,
            }));
        }
        out
    }
}
