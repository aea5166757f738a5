//! One view at run time: its plan, its sources' tables, its operators and its rows.
//! `apply` takes a batch of events all or nothing: a batch in which some event fails
//! is taken back and applied one event at a time, so the failing event is known and
//! skipped (or the view stops before it), as the view's error policy says.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::engine::{Node, Output, RowChange, ZSet};
use crate::plan::{Plan, Scan};
use crate::source::{Decoder, Event};
use crate::table::{SourceTable, Undo};

/// What a view does with an event it cannot compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// Leave the event out and go on (the error stays visible on the view).
    #[default]
    Skip,
    /// Stop before the event.
    Stop,
}

/// An event a view could not apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// Its position in the batch.
    pub index: usize,
    pub message: String,
}

/// What applying a batch did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Keys whose row changed, with the row they have now.
    pub changes: Vec<RowChange>,
    pub rejected: Vec<Rejected>,
    /// How many events of the batch were taken (all of them unless the view stopped).
    pub taken: usize,
    /// The weighted rows the engine's last operator produced, before they were summed
    /// per key: the work the batch made (a replaced row is two, its retraction and
    /// its new value).
    pub engine_changes: u64,
}

/// The decoder of each event type a view reads.
#[derive(Debug)]
pub struct Decoders(HashMap<String, Decoder>);

impl Decoders {
    fn new(plan: &Plan) -> Decoders {
        let mut by_type: HashMap<&str, Vec<(usize, &Scan)>> = HashMap::new();
        for (i, s) in plan.scans.iter().enumerate() {
            by_type.entry(&s.event_type).or_default().push((i, s));
        }
        Decoders(
            by_type
                .into_iter()
                .map(|(t, scans)| (t.to_string(), Decoder::new(scans)))
                .collect(),
        )
    }

    /// An event of `event_type` from its stored bytes (a record without a value is a
    /// compaction tombstone of `key`); `None` when the view does not read the type.
    pub fn decode(
        &self,
        event_type: &str,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
    ) -> Option<Result<Event, String>> {
        let d = self.0.get(event_type)?;
        Some(match (value, key) {
            (Some(v), _) => d.decode(v),
            (None, Some(k)) => Ok(Event::Tombstone(String::from_utf8_lossy(k).into_owned())),
            (None, None) => Err("a record with neither value nor key".into()),
        })
    }
}

#[derive(Debug)]
pub struct View {
    pub(crate) plan: Arc<Plan>,
    decoders: Arc<Decoders>,
    pub(crate) tables: Vec<SourceTable>,
    pub(crate) root: Node,
    pub(crate) output: Output,
}

impl View {
    pub fn new(plan: Arc<Plan>) -> View {
        let mut view = View::empty(plan);
        // A view over no rows may have rows (a global aggregate: COUNT(*) = 0).
        let empty = vec![ZSet::new(); view.plan.scans.len()];
        let mut errors = Vec::new();
        let z = view.root.step(&empty, &view.tables, &mut errors);
        view.output.apply(&view.plan, z);
        view
    }

    /// A view with no state at all (to be filled from a snapshot).
    pub(crate) fn empty(plan: Arc<Plan>) -> View {
        let decoders = Arc::new(Decoders::new(&plan));
        View {
            tables: plan
                .scans
                .iter()
                .map(|s| SourceTable::new(s.key_len))
                .collect(),
            root: Node::build(&plan.root, &plan),
            decoders,
            output: Output::default(),
            plan,
        }
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    /// The event types the view reads.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.decoders.0.keys().map(String::as_str)
    }

    /// What reads events for this view (shared: events are decoded outside its lock).
    pub fn decoders(&self) -> Arc<Decoders> {
        self.decoders.clone()
    }

    /// Applies a batch of (event type, event as JSON) in order.
    pub fn apply(&mut self, batch: &[(&str, &Value)], policy: OnError) -> Applied {
        let events: Vec<Option<Event>> = batch
            .iter()
            .map(|(t, v)| self.decoders.0.get(*t).map(|d| d.read(v)))
            .collect();
        let batch: Vec<(&str, &Event)> = batch
            .iter()
            .zip(&events)
            .filter_map(|((t, _), e)| Some((*t, e.as_ref()?)))
            .collect();
        self.apply_events(&batch, policy)
    }

    /// Applies a batch of (event type, decoded event) in order.
    pub fn apply_events(&mut self, batch: &[(&str, &Event)], policy: OnError) -> Applied {
        if let Ok((changes, engine_changes)) = self.try_apply(batch) {
            return Applied {
                changes,
                rejected: Vec::new(),
                taken: batch.len(),
                engine_changes,
            };
        }
        let mut out = Applied::default();
        for (i, event) in batch.iter().enumerate() {
            match self.try_apply(std::slice::from_ref(event)) {
                Ok((changes, engine_changes)) => {
                    out.changes.extend(changes);
                    out.engine_changes += engine_changes;
                }
                Err(message) => {
                    out.rejected.push(Rejected { index: i, message });
                    if policy == OnError::Stop {
                        out.taken = i;
                        return out;
                    }
                }
            }
            out.taken = i + 1;
        }
        out
    }

    /// Applies a batch, or nothing and the first error; the keys whose row changed,
    /// and the engine's changes.
    fn try_apply(&mut self, batch: &[(&str, &Event)]) -> Result<(Vec<RowChange>, u64), String> {
        let mut deltas = vec![ZSet::new(); self.plan.scans.len()];
        let mut journal: Vec<(usize, Undo)> = Vec::new();
        let mut failure = None;
        'events: for (event_type, event) in batch {
            let Some(decoder) = self.decoders.0.get(*event_type) else {
                continue;
            };
            for (k, (s, _)) in decoder.scans.iter().enumerate() {
                let s = *s;
                let scan = &self.plan.scans[s];
                match decoder.change(scan, k, event) {
                    Ok(c) => {
                        let undo = self.tables[s].apply(scan, c, &mut deltas[s]);
                        journal.push((s, undo));
                    }
                    Err(e) => {
                        failure = Some(format!("{event_type}: {e}"));
                        break 'events;
                    }
                }
            }
        }
        let undo_tables = |tables: &mut [SourceTable], journal: Vec<(usize, Undo)>| {
            for (s, undo) in journal.into_iter().rev() {
                tables[s].undo(undo);
            }
        };
        if let Some(e) = failure {
            undo_tables(&mut self.tables, journal);
            return Err(e);
        }
        let mut errors = Vec::new();
        let z = self.root.step(&deltas, &self.tables, &mut errors);
        if let Some(first) = errors.into_iter().next() {
            // Take it all back: the tables first (operators that read them see the
            // state after the step, as forward), then the same changes with opposite
            // weights.
            undo_tables(&mut self.tables, journal);
            let inverse: Vec<ZSet> = deltas
                .into_iter()
                .map(|d| d.into_iter().map(|(r, w)| (r, -w)).collect())
                .collect();
            let mut again = Vec::new();
            self.root.step(&inverse, &self.tables, &mut again);
            return Err(first);
        }
        let engine_changes = z.len() as u64;
        Ok((self.output.apply(&self.plan, z), engine_changes))
    }
}
