//! One view at run time: its plan, its sources' tables, its operators and its rows.
//! `apply` takes a batch of events all or nothing: a batch in which some event fails
//! is taken back and applied one event at a time, so the failing event is known and
//! skipped (or the view stops before it), as the view's error policy says.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::engine::{Node, Output, RowChange, ZSet};
use crate::plan::Plan;
use crate::source::{SourceTable, Undo, change};

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
}

#[derive(Debug)]
pub struct View {
    plan: Arc<Plan>,
    /// The scans reading each event type.
    readers: HashMap<String, Vec<usize>>,
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
        let z = view.root.step(&empty, &mut errors);
        view.output.apply(&view.plan, z);
        view
    }

    /// A view with no state at all (to be filled from a snapshot).
    pub(crate) fn empty(plan: Arc<Plan>) -> View {
        let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in plan.scans.iter().enumerate() {
            readers.entry(s.event_type.clone()).or_default().push(i);
        }
        View {
            tables: plan.scans.iter().map(|_| SourceTable::default()).collect(),
            root: Node::build(&plan.root, &plan),
            readers,
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
        self.readers.keys().map(String::as_str)
    }

    /// Applies a batch of (event type, event) in order.
    pub fn apply(&mut self, batch: &[(&str, &Value)], policy: OnError) -> Applied {
        if let Ok(changes) = self.try_apply(batch) {
            return Applied {
                changes,
                rejected: Vec::new(),
                taken: batch.len(),
            };
        }
        let mut out = Applied::default();
        for (i, event) in batch.iter().enumerate() {
            match self.try_apply(std::slice::from_ref(event)) {
                Ok(changes) => out.changes.extend(changes),
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

    /// Applies a batch, or nothing and the first error.
    fn try_apply(&mut self, batch: &[(&str, &Value)]) -> Result<Vec<RowChange>, String> {
        let mut deltas = vec![ZSet::new(); self.plan.scans.len()];
        let mut journal: Vec<(usize, Undo)> = Vec::new();
        let mut failure = None;
        'events: for (event_type, event) in batch {
            let Some(scans) = self.readers.get(*event_type) else {
                continue;
            };
            for &s in scans {
                let scan = &self.plan.scans[s];
                match change(scan, event) {
                    Ok(c) => {
                        let (rows, undo) = self.tables[s].apply(scan, c);
                        deltas[s].extend(rows);
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
        let z = self.root.step(&deltas, &mut errors);
        if let Some(first) = errors.into_iter().next() {
            // Take it all back: the same changes with opposite weights.
            let inverse: Vec<ZSet> = deltas
                .into_iter()
                .map(|d| d.into_iter().map(|(r, w)| (r, -w)).collect())
                .collect();
            let mut again = Vec::new();
            self.root.step(&inverse, &mut again);
            undo_tables(&mut self.tables, journal);
            return Err(first);
        }
        Ok(self.output.apply(&self.plan, z))
    }
}
