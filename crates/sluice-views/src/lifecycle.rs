//! A view's life on this node: started from its saved state (or a snapshot, or the
//! beginning of its sources), replaced blue/green when its definition changes, and
//! stopped when it is deleted. One reconciler applies definition changes in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_bus::Bus;
use sluice_log::{Log, PartitionId, TopicName};

use crate::frozen::Frozen;
use crate::plan::Plan;
use crate::publish::hand_over;
use crate::runner::{Checkpoint, Running, SourcePartition};
use crate::service::{Definition, Entry, Result, State, ViewsConfig, catalog};
use crate::view::View;

/// How often a view that cannot run (a source missing) is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(5);

/// Applies definition changes one at a time: starts, replaces (blue/green), stops;
/// and tries views that could not start again, in case what they lacked came back.
pub(crate) async fn reconcile_loop(
    bus: Arc<Bus>,
    config: Arc<ViewsConfig>,
    state: Arc<State>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut retry = tokio::time::interval(RETRY_FAILED);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut again: Vec<String> = Vec::new();
    loop {
        let name = match again.pop() {
            Some(n) => n,
            None => tokio::select! {
                n = rx.recv() => match n {
                    Some(n) => n,
                    None => return,
                },
                _ = retry.tick() => {
                    again = state
                        .entries
                        .read()
                        .iter()
                        .filter(|(_, e)| e.failure.is_some())
                        .map(|(n, _)| n.clone())
                        .collect();
                    continue;
                }
            },
        };
        let def = state.defs.read().get(&name).cloned();
        let current = state.entries.read().get(&name).cloned();
        match (def, current) {
            (None, current) => {
                let removed = state.entries.write().remove(&name);
                free_later((removed, current));
                state.outlets.remove(&name);
                if let Some(dir) = &config.state_dir {
                    let _ = std::fs::remove_dir_all(dir.join(&name));
                }
            }
            (Some(def), Some(e)) if e.def == def && !e.loading && e.failure.is_none() => {}
            (Some(def), current) => {
                let replacing = current
                    .as_ref()
                    .and_then(|c| c.serving.clone().filter(|_| !c.loading));
                let entry = match start(&bus, &config, &state, &def, replacing.is_none()).await {
                    Ok(r) => {
                        if let Some(old) = replacing {
                            let pending = def.clone();
                            // Blue/green: the old view serves until the new caught up.
                            let state2 = state.clone();
                            let bus = bus.clone();
                            let config = config.clone();
                            tokio::spawn(async move {
                                let state = state2;
                                caught_up(&bus, &r).await;
                                let still = state.defs.read().get(&def.name) == Some(&def);
                                if still {
                                    forget_other_states(&config, &def);
                                    if let Some(event_type) = &def.publish_as {
                                        let p = state.outlets.publish(&bus, &def.name, event_type);
                                        hand_over(&old, &r, p);
                                    }
                                    set_entry(
                                        &state,
                                        def.name.clone(),
                                        Entry {
                                            def,
                                            serving: Some(r),
                                            failure: None,
                                            pending: None,
                                            loading: false,
                                            frozen: None,
                                        },
                                    );
                                    state.wake_leases.notify_one();
                                }
                                free_later(old);
                            });
                            if let Some(e) = state.entries.write().get_mut(&name) {
                                e.pending = Some(pending);
                            }
                            continue;
                        }
                        Entry {
                            def,
                            serving: Some(r),
                            failure: None,
                            pending: None,
                            loading: false,
                            frozen: None,
                        }
                    }
                    Err(e) => {
                        let why = e.to_string();
                        // Said once, not at every retry.
                        if current.as_ref().and_then(|c| c.failure.as_ref()) != Some(&why) {
                            tracing::error!(view = %name, error = %why, "view cannot run");
                        }
                        Entry {
                            def,
                            serving: None,
                            failure: Some(why),
                            pending: None,
                            loading: false,
                            frozen: None,
                        }
                    }
                };
                set_entry(&state, name, entry);
                free_later(current);
                state.wake_leases.notify_one();
            }
        }
    }
}

/// The file of a view's state for its current SQL.
pub(crate) fn state_path(dir: &Path, def: &Definition) -> PathBuf {
    dir.join(&def.name).join(format!(
        "{:016x}.state",
        crate::snapshot::fingerprint(&def.sql)
    ))
}

/// Removes the state files of a view's earlier SQL.
fn forget_other_states(config: &ViewsConfig, def: &Definition) {
    let Some(dir) = &config.state_dir else { return };
    let keep = state_path(dir, def);
    if let Ok(files) = std::fs::read_dir(dir.join(&def.name)) {
        for f in files.flatten() {
            if f.path() != keep {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

/// Where a view's state may be: its own file, then the snapshots of its SQL, newest
/// first.
fn state_candidates(config: &ViewsConfig, def: &Definition) -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = &config.state_dir {
        candidates.push(state_path(dir, def));
    }
    if let Some(dir) = &config.snapshot_dir {
        let prefix = format!("{:016x}-", crate::snapshot::fingerprint(&def.sql));
        let mut snaps: Vec<PathBuf> = std::fs::read_dir(dir.join(&def.name))
            .into_iter()
            .flatten()
            .flatten()
            .map(|f| f.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".snap"))
            })
            .collect();
        snaps.sort();
        candidates.extend(snaps.into_iter().rev());
    }
    candidates
}

/// A view's state from its own file, else from the latest snapshot of its SQL. While
/// the state loads, a view that is loading at the node's start answers reads from the
/// file (`Frozen`).
async fn load(
    state: &State,
    config: &ViewsConfig,
    def: &Definition,
    plan: &Arc<Plan>,
) -> Option<(View, BTreeMap<SourcePartition, u64>, String)> {
    for path in state_candidates(config, def) {
        if !path.exists() {
            continue;
        }
        let (plan2, sql, p) = (plan.clone(), def.sql.clone(), path.clone());
        let frozen = blocking(move || {
            Frozen::open(plan2, &sql, &p)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .await;
        let frozen = match frozen {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(view = %def.name, path = %path.display(), error = %e, "view state not used");
                continue;
            }
        };
        if let Some(e) = state.entries.write().get_mut(&def.name)
            && e.loading
            && e.def == *def
        {
            tracing::info!(view = %def.name, rows = frozen.len(), "view answers reads from its state file while it loads");
            e.frozen = Some(frozen.clone());
        }
        let file = frozen.clone();
        let decoded = blocking(move || file.load().map_err(|e| e.to_string())).await;
        match decoded {
            Ok(view) => {
                return Some((view, frozen.offsets.clone(), path.display().to_string()));
            }
            Err(e) => {
                tracing::warn!(view = %def.name, path = %path.display(), error = %e, "view state not used")
            }
        }
        if let Some(e) = state.entries.write().get_mut(&def.name) {
            e.frozen = None;
        }
    }
    None
}

/// Runs blocking work (file reads, decoding) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// Compiles a definition and starts it: from its saved state and offsets when there
/// is one, else from the beginning of its sources.
async fn start(
    bus: &Arc<Bus>,
    config: &ViewsConfig,
    state: &State,
    def: &Definition,
    serving: bool,
) -> Result<Arc<Running>> {
    let plan: Arc<Plan> = Arc::new(crate::sql::compile(&def.sql, &catalog(bus, state))?);
    let mut from: BTreeMap<SourcePartition, u64> = BTreeMap::new();
    for scan in &plan.scans {
        let reg = bus.registry().require(&scan.event_type)?;
        for p in 0..reg.partitions() {
            let o = bus.log().offsets(&reg.topic, PartitionId(p)).await?;
            from.insert((scan.event_type.clone(), p), o.earliest.0);
        }
    }
    let started = std::time::Instant::now();
    let (view, loaded_from) = match load(state, config, def, &plan).await {
        Some((view, saved, path)) => {
            tracing::info!(view = %def.name, %path, rows = view.output().len(), ms = started.elapsed().as_millis() as u64, "view state loaded");
            // Partitions added since start from their beginning.
            from.extend(saved);
            (view, Some(path))
        }
        None => (View::new(plan), None),
    };
    let checkpoint = config.state_dir.as_ref().map(|dir| Checkpoint {
        path: state_path(dir, def),
        every: config.checkpoint_every,
        sql: def.sql.clone(),
    });
    Ok(Running::start(
        bus.log().clone(),
        view,
        from,
        def.on_error.into(),
        checkpoint,
        loaded_from,
        // On a shared log the lease decides who publishes (`lease.rs`).
        def.publish_as
            .as_ref()
            .filter(|_| serving && !state.outlets.leased())
            .map(|event_type| state.outlets.publish(bus, &def.name, event_type)),
    ))
}

/// Whether a view has applied everything its sources hold now (or stopped).
pub(crate) async fn is_caught_up(bus: &Bus, r: &Running) -> bool {
    let sources: Vec<(SourcePartition, u64)> = {
        let progress = r.progress.lock();
        if progress.stopped.is_some() {
            return true;
        }
        progress.next.iter().map(|(k, n)| (k.clone(), *n)).collect()
    };
    for ((t, p), next) in sources {
        let Ok(topic) = TopicName::new(t.as_str()) else {
            return false;
        };
        match bus.log().offsets(&topic, PartitionId(p)).await {
            Ok(o) if o.latest.0 <= next => {}
            _ => return false,
        }
    }
    true
}

/// Waits until a view has applied everything its sources held when it was asked.
async fn caught_up(bus: &Bus, r: &Running) {
    let log: &Arc<dyn Log> = bus.log();
    let sources: Vec<SourcePartition> = r.progress.lock().next.keys().cloned().collect();
    let mut target = BTreeMap::new();
    for (t, p) in &sources {
        if let Ok(topic) = TopicName::new(t.as_str())
            && let Ok(o) = log.offsets(&topic, PartitionId(*p)).await
        {
            target.insert((t.clone(), *p), o.latest.0);
        }
    }
    loop {
        {
            let progress = r.progress.lock();
            let done = progress.stopped.is_some()
                || target
                    .iter()
                    .all(|(k, latest)| progress.next.get(k).is_some_and(|n| n >= latest));
            if done {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sets a view's entry. The entry it replaces is dropped after the lock, on a blocking
/// thread: a large view takes seconds to free (10M keys: tens of millions of
/// allocations), and every read of every view takes that lock.
fn set_entry(state: &State, name: String, entry: Entry) {
    let replaced = state.entries.write().insert(name, entry);
    free_later(replaced);
}

/// Drops `value` on a blocking thread (see `set_entry`).
fn free_later<T: Send + 'static>(value: T) {
    tokio::task::spawn_blocking(move || drop(value));
}
