//! The incremental engine (DBSP): every relation of the plan is a Z-set, rows with
//! integer weights, and each operator turns changes of its inputs into changes of its
//! output. Filters and projections are linear; a join keeps both inputs indexed by
//! join key and emits `dL x R + L' x dR`; an aggregate keeps per-group state. The
//! view is the integral of the root's changes, kept by key.
//!
//! A row an expression fails on is left out where it fails, the same way when it is
//! inserted and when it is retracted (evaluation is deterministic), so state stays
//! consistent; the step reports the errors and the caller decides (`View::apply`
//! undoes the event that caused them).

use std::collections::HashMap;
use std::sync::Arc;

use crate::datum::{Datum, Key, Row};
use crate::expr::{Expr, truthy};
use crate::plan::{Plan, Rel};
use crate::table::SourceTable;

mod aggregate;
mod join;
mod output;

pub(crate) use aggregate::{Acc, Aggregate, Group};
pub(crate) use join::{Join, Side, concat, join_key, nulls};
pub use output::{Output, RowChange};

/// Changes to a relation.
pub type ZSet = Vec<(Row, i64)>;

pub(crate) type Hasher = crate::datum::Seeded;

/// The operators of a plan with their state.
#[derive(Debug)]
pub(crate) enum Node {
    Scan(usize),
    Filter(Box<Node>, Expr),
    Map(Box<Node>, Vec<Expr>),
    Join(Box<Join>),
    Aggregate(Box<Aggregate>),
}

/// The rows of one side of a join, by join key.
pub(crate) type Index = HashMap<Key, Rows, Hasher>;

/// The rows under one key with their weights: nearly always one, kept in place.
#[derive(Clone, Debug)]
pub enum Rows {
    One((Row, i64)),
    Many(Vec<(Row, i64)>),
}

impl Rows {
    pub fn as_slice(&self) -> &[(Row, i64)] {
        match self {
            Rows::One(r) => std::slice::from_ref(r),
            Rows::Many(v) => v,
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, (Row, i64)> {
        self.as_slice().iter()
    }

    /// Adds `row` `w` times; whether no row is left.
    pub fn add(&mut self, row: Row, w: i64) -> bool {
        let same = |r: &Row| Arc::ptr_eq(r, &row) || *r == row;
        match self {
            Rows::One((r, x)) if same(r) => {
                *x += w;
                *x == 0
            }
            Rows::One(first) => {
                *self = Rows::Many(vec![first.clone(), (row, w)]);
                false
            }
            Rows::Many(v) => {
                match v.iter().position(|(r, _)| same(r)) {
                    Some(i) => {
                        v[i].1 += w;
                        if v[i].1 == 0 {
                            v.swap_remove(i);
                        }
                    }
                    None => v.push((row, w)),
                }
                let empty = v.is_empty();
                if v.len() == 1 {
                    *self = Rows::One(v.pop().expect("one row"));
                }
                empty
            }
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// The row with a positive weight (a view's visible row).
    pub fn visible(&self) -> Option<&Row> {
        self.iter().find(|(_, w)| *w > 0).map(|(r, _)| r)
    }
}

/// Errors met while stepping: the message of each row left out.
pub type Errors = Vec<String>;

impl Node {
    pub fn build(rel: &Rel, plan: &Plan) -> Node {
        match rel {
            Rel::Scan(s) => Node::Scan(*s),
            Rel::Filter { input, pred } => {
                Node::Filter(Box::new(Node::build(input, plan)), pred.clone())
            }
            Rel::Map { input, exprs, .. } => match Node::build(input, plan) {
                Node::Join(mut j) if j.project.is_none() => {
                    j.project = Some(exprs.clone());
                    Node::Join(j)
                }
                input => Node::Map(Box::new(input), exprs.clone()),
            },
            Rel::Join {
                left,
                right,
                kind,
                left_keys,
                right_keys,
            } => Node::Join(Box::new(Join {
                left: Node::build(left, plan),
                right: Node::build(right, plan),
                kind: *kind,
                left_keys: left_keys.clone(),
                right_keys: right_keys.clone(),
                right_width: width(right, plan),
                left_index: Side::of(left, left_keys, plan),
                right_index: Side::of(right, right_keys, plan),
                project: None,
            })),
            Rel::Aggregate {
                input, group, aggs, ..
            } => Node::Aggregate(Box::new(Aggregate {
                input: Node::build(input, plan),
                group: group.clone(),
                aggs: aggs.clone(),
                groups: HashMap::default(),
                global: group.is_empty(),
                started: false,
            })),
        }
    }

    /// The changes of this node's output, given the changes of every scan.
    /// `tables` are the sources' tables, already holding the changes in `scans`.
    pub fn step(&mut self, scans: &[ZSet], tables: &[SourceTable], errors: &mut Errors) -> ZSet {
        match self {
            Node::Scan(s) => scans[*s].clone(),
            Node::Filter(input, pred) => {
                let mut out = input.step(scans, tables, errors);
                out.retain(|(row, _)| match pred.eval(row).and_then(|d| truthy(&d)) {
                    Ok(keep) => keep,
                    Err(e) => {
                        errors.push(e.0);
                        false
                    }
                });
                out
            }
            Node::Map(input, exprs) => {
                let rows = input.step(scans, tables, errors);
                let mut out = Vec::with_capacity(rows.len());
                let mut values = Vec::with_capacity(exprs.len());
                for (row, w) in rows {
                    values.clear();
                    match exprs.iter().try_for_each(|e| {
                        values.push(e.eval(&row)?);
                        Ok::<_, crate::expr::EvalError>(())
                    }) {
                        // One allocation: the row made from the values.
                        Ok(()) => out.push((Row::from(&values[..]), w)),
                        Err(e) => errors.push(e.0),
                    }
                }
                // Not consolidated (rows a projection made equal may cancel): every
                // consumer sums weights per row or key.
                out
            }
            Node::Join(j) => j.step(scans, tables, errors),
            Node::Aggregate(a) => a.step(scans, tables, errors),
        }
    }

    /// Calls `f` with the row the group of value `key` makes here: at an aggregate
    /// with one group value, or at a filter or projection over one (a group side).
    /// A row an expression fails on is left out, as `step` leaves it out.
    fn group_rows(&self, key: &Datum, f: &mut dyn FnMut(&Row)) {
        match self {
            Node::Aggregate(a) => a.rows_of(key, f),
            Node::Filter(input, pred) => input.group_rows(key, &mut |row| {
                if matches!(pred.eval(row).and_then(|d| truthy(&d)), Ok(true)) {
                    f(row);
                }
            }),
            Node::Map(input, exprs) => input.group_rows(key, &mut |row| {
                let values: Result<Vec<Datum>, _> = exprs.iter().map(|e| e.eval(row)).collect();
                if let Ok(values) = values {
                    f(&Row::from(values));
                }
            }),
            Node::Scan(_) | Node::Join(_) => {}
        }
    }
}

/// How many columns a relation's row has.
pub(crate) fn width(rel: &Rel, plan: &Plan) -> usize {
    match rel {
        Rel::Scan(s) => plan.scans[*s].columns.len(),
        Rel::Filter { input, .. } => width(input, plan),
        Rel::Map { exprs, .. } => exprs.len(),
        Rel::Join { left, right, .. } => width(left, plan) + width(right, plan),
        Rel::Aggregate { group, aggs, .. } => group.len() + aggs.len(),
    }
}

impl<'a> IntoIterator for &'a Rows {
    type Item = &'a (Row, i64);
    type IntoIter = std::slice::Iter<'a, (Row, i64)>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Adds a row `w` times to a key's rows, which may be none.
pub(crate) fn add_to(slot: &mut Option<Rows>, row: Row, w: i64) {
    let emptied = match slot {
        Some(rows) => rows.add(row, w),
        None => {
            if w != 0 {
                *slot = Some(Rows::One((row, w)));
            }
            false
        }
    };
    if emptied {
        *slot = None;
    }
}

/// Adds a row `w` times under its key (rows per key are few: a list, not a map).
pub(crate) fn add(index: &mut Index, key: Key, row: Row, w: i64) {
    use std::collections::hash_map::Entry;
    match index.entry(key) {
        Entry::Vacant(v) => {
            if w != 0 {
                v.insert(Rows::One((row, w)));
            }
        }
        Entry::Occupied(mut o) => {
            if o.get_mut().add(row, w) {
                o.remove();
            }
        }
    }
}
