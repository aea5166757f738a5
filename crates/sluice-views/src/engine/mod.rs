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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::datum::{Datum, Key, Row, Text};
use crate::expr::{Expr, Pair, truthy};
use crate::plan::{JoinKind, Plan, Rel};
use crate::table::SourceTable;

mod aggregate;

pub(crate) use aggregate::{Acc, Aggregate, Group};

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

#[derive(Debug)]
pub(crate) struct Join {
    pub(crate) left: Node,
    pub(crate) right: Node,
    pub(crate) kind: JoinKind,
    pub(crate) left_keys: Vec<Expr>,
    pub(crate) right_keys: Vec<Expr>,
    pub(crate) right_width: usize,
    pub(crate) left_index: Side,
    pub(crate) right_index: Side,
    /// The `SELECT` list over the join, fused into it: each output row is made from
    /// the pair of rows directly (no joined row in between).
    pub(crate) project: Option<Vec<Expr>>,
}

/// Where a join's rows go: each pair made one row, or the projection over it.
struct Emit<'a> {
    project: Option<&'a [Expr]>,
    out: ZSet,
    values: Vec<Datum>,
    errors: &'a mut Errors,
}

impl Emit<'_> {
    fn push(&mut self, l: &[Datum], r: &[Datum], w: i64) {
        let Some(exprs) = self.project else {
            self.out.push((concat(l, r), w));
            return;
        };
        let pair = Pair(l, r);
        self.values.clear();
        for e in exprs {
            match e.eval_in(&pair) {
                Ok(v) => self.values.push(v),
                // Left out, as a projection leaves out a row it fails on.
                Err(e) => return self.errors.push(e.0),
            }
        }
        self.out.push((Row::from(&self.values[..]), w));
    }
}

/// One side of a join's state: an index of its own, or rows looked up by the join
/// key where they are kept already (no state of its own): in the source tables, or
/// in the groups of the side's aggregate. Tables are updated before the operators
/// step, and a side's aggregate steps before the join, so a looked-up side is the
/// side's new state.
#[derive(Debug)]
pub(crate) enum Side {
    Own(Index),
    Table(Lookup),
    /// The side is an aggregate with one group value, under filters and projections
    /// that keep it, joined on that value: a key's row is made from its group.
    Group,
}

/// A relation whose rows for a key come straight from source tables: a bare scan of
/// a table with a one-column key, or an inner join of two such relations on their
/// keys (`product JOIN price ON price.sku = product.sku`, by sku).
#[derive(Debug)]
pub(crate) enum Lookup {
    Table(usize),
    Join(Box<Lookup>, Box<Lookup>),
}

impl Lookup {
    /// Calls `f` with each row under a key (weight 1: tables hold each row once).
    fn each(&self, tables: &[SourceTable], key: &Datum, f: &mut dyn FnMut(&Row)) {
        match self {
            Lookup::Table(s) => {
                let table = &tables[*s];
                if let Some(r) = table.get(std::slice::from_ref(key)) {
                    f(&r);
                }
                // Join keys are normalized (2.0 joins as 2): a table keyed by the
                // double finds it under the double.
                if let Datum::Int(i) = key
                    && i.unsigned_abs() < 9_000_000_000_000_000
                    && let Some(r) = table.get(&[Datum::Float(*i as f64)])
                {
                    f(&r);
                }
            }
            Lookup::Join(l, r) => l.each(tables, key, &mut |left| {
                r.each(tables, key, &mut |right| f(&concat(left, right)));
            }),
        }
    }

    /// The lookup a relation's rows can come from, and the columns of its rows that
    /// hold the key.
    fn of(rel: &Rel, plan: &Plan) -> Option<(Lookup, Vec<usize>)> {
        match rel {
            Rel::Scan(s) => {
                let scan = &plan.scans[*s];
                (matches!(scan.info.kind, crate::plan::SourceKind::Table { .. })
                    && scan.key_len == 1)
                    .then(|| (Lookup::Table(*s), vec![0]))
            }
            Rel::Join {
                left,
                right,
                kind: JoinKind::Inner,
                left_keys,
                right_keys,
            } => {
                let (l, l_cols) = Lookup::of(left, plan)?;
                let (r, r_cols) = Lookup::of(right, plan)?;
                if !on_key(left_keys, &l_cols) || !on_key(right_keys, &r_cols) {
                    return None;
                }
                let offset = width(left, plan);
                let cols = l_cols
                    .into_iter()
                    .chain(r_cols.into_iter().map(|c| c + offset))
                    .collect();
                Some((Lookup::Join(Box::new(l), Box::new(r)), cols))
            }
            _ => None,
        }
    }
}

impl Side {
    /// Calls `f` with each row under a join key, and its weight. `node` is the
    /// side's operator (a group side's rows come from it).
    fn each(&self, node: &Node, tables: &[SourceTable], key: &Key, mut f: impl FnMut(&Row, i64)) {
        match (self, key) {
            (Side::Own(index), _) => {
                for (r, w) in index.get(key).into_iter().flatten() {
                    f(r, *w);
                }
            }
            (Side::Table(lookup), Key::One(d)) => lookup.each(tables, d, &mut |r| f(r, 1)),
            (Side::Group, Key::One(d)) => node.group_rows(d, &mut |r| f(r, 1)),
            (Side::Table(_) | Side::Group, Key::Many(_)) => {}
        }
    }

    /// The side a relation joined on `keys` takes: looked up in tables or in its
    /// groups where it can be, else an index of its own.
    fn of(rel: &Rel, keys: &[Expr], plan: &Plan) -> Side {
        if let Some(lookup) = table_side(rel, keys, plan) {
            return Side::Table(lookup);
        }
        match keys {
            [Expr::Col(c)] if is_group_column(rel, *c) => Side::Group,
            _ => Side::Own(Index::default()),
        }
    }

    /// Adds rows to an index of its own (tables already have them).
    fn add(&mut self, key: Key, row: Row, w: i64) {
        if let Side::Own(index) = self {
            add(index, key, row, w);
        }
    }

    fn own(&self) -> Option<&Index> {
        match self {
            Side::Own(index) => Some(index),
            Side::Table(_) | Side::Group => None,
        }
    }
}

/// The tables a join side can be looked up in instead of an index of its own: its
/// relation's rows come from tables by a key (`Lookup::of`) and it is joined on it.
fn table_side(rel: &Rel, keys: &[Expr], plan: &Plan) -> Option<Lookup> {
    let (lookup, cols) = Lookup::of(rel, plan)?;
    on_key(keys, &cols).then_some(lookup)
}

/// Whether join keys are one of the columns that hold a lookup's key.
fn on_key(keys: &[Expr], cols: &[usize]) -> bool {
    matches!(keys, [Expr::Col(c)] if cols.contains(c))
}

/// Whether column `c` of a relation's rows is the one group value of its aggregate
/// (`GROUP BY sku`, maybe under HAVING and a SELECT list that keeps it).
fn is_group_column(rel: &Rel, c: usize) -> bool {
    match rel {
        Rel::Aggregate { group, .. } => group.len() == 1 && c == 0,
        Rel::Filter { input, .. } => is_group_column(input, c),
        Rel::Map { input, exprs, .. } => {
            matches!(exprs.get(c), Some(Expr::Col(g)) if is_group_column(input, *g))
        }
        _ => false,
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

/// The join key of a row; `None` when a part is NULL (it matches nothing).
pub(crate) fn join_key(keys: &[Expr], row: &[Datum]) -> Result<Option<Key>, String> {
    let value = |k: &Expr| -> Result<Option<Datum>, String> {
        let d = k.eval(row).map_err(|e| e.0)?;
        // Numbers join by value: 2 matches 2.0.
        Ok(match d {
            Datum::Null => None,
            Datum::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Some(Datum::Int(x as i64)),
            d => Some(d),
        })
    };
    if let [one] = keys {
        return Ok(value(one)?.map(Key::One));
    }
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let Some(d) = value(k)? else { return Ok(None) };
        out.push(d);
    }
    Ok(Some(Key::Many(out.into_boxed_slice())))
}

pub(crate) fn concat(l: &[Datum], r: &[Datum]) -> Row {
    l.iter().chain(r).cloned().collect()
}

pub(crate) fn nulls(n: usize) -> Vec<Datum> {
    vec![Datum::Null; n]
}

impl<'a> IntoIterator for &'a Rows {
    type Item = &'a (Row, i64);
    type IntoIter = std::slice::Iter<'a, (Row, i64)>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Adds a row `w` times to a key's rows, which may be none.
fn add_to(slot: &mut Option<Rows>, row: Row, w: i64) {
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

/// How many rows (by weight) a key has.
fn count(index: &Index, key: &Key) -> i64 {
    index
        .get(key)
        .map_or(0, |rows| rows.iter().map(|(_, w)| w).sum())
}

/// A row's join key; errors are collected and the row left out.
fn keyed(keys: &[Expr], row: &[Datum], errors: &mut Errors) -> Option<Option<Key>> {
    match join_key(keys, row) {
        Ok(k) => Some(k),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

impl Join {
    fn step(&mut self, scans: &[ZSet], tables: &[SourceTable], errors: &mut Errors) -> ZSet {
        let dl = self.left.step(scans, tables, errors);
        let dr = self.right.step(scans, tables, errors);
        match self.right_index {
            Side::Own(_) => self.step_own_right(dl, dr, tables, errors),
            Side::Table(_) | Side::Group => self.step_lookup_right(dl, dr, tables, errors),
        }
    }

    /// dL x R (R as it was) + L' x dR (L with dL), with the padding of a left join.
    fn step_own_right(
        &mut self,
        dl: ZSet,
        dr: ZSet,
        tables: &[SourceTable],
        errors: &mut Errors,
    ) -> ZSet {
        let mut emit = Emit {
            project: self.project.as_deref(),
            out: Vec::new(),
            values: Vec::new(),
            errors,
        };
        let pad = nulls(self.right_width);
        let right = self.right_index.own().expect("an index of its own");
        // dL x R, and the padded rows of a left join for keys R lacks.
        for (l, w) in dl {
            let Some(key) = keyed(&self.left_keys, &l, emit.errors) else {
                continue;
            };
            let Some(key) = key else {
                if self.kind == JoinKind::Left {
                    emit.push(&l, &pad, w);
                }
                continue;
            };
            match right.get(&key) {
                Some(rows) => {
                    for (r, rw) in rows {
                        emit.push(&l, r, w * rw);
                    }
                }
                _ if self.kind == JoinKind::Left => emit.push(&l, &pad, w),
                _ => {}
            }
            self.left_index.add(key, l, w);
        }
        // L' x dR; for a left join, each key's count of R rows before its first
        // change, in the order the keys came.
        let mut counted: Vec<(Key, i64)> = Vec::new();
        let mut seen: HashMap<Key, (), Hasher> = HashMap::default();
        for (r, w) in dr {
            let Some(Some(key)) = keyed(&self.right_keys, &r, emit.errors) else {
                continue;
            };
            let mut any_left = false;
            self.left_index.each(&self.left, tables, &key, |l, lw| {
                any_left = true;
                emit.push(l, &r, lw * w);
            });
            let Side::Own(right) = &mut self.right_index else {
                unreachable!("an index of its own")
            };
            if self.kind == JoinKind::Left && any_left {
                // A changed group comes as its old row and its new one, one after
                // the other: mostly the key counted last.
                let known =
                    counted.last().is_some_and(|(k, _)| *k == key) || seen.contains_key(&key);
                if !known {
                    seen.insert(key.clone(), ());
                    counted.push((key.clone(), count(right, &key)));
                }
            }
            add(right, key, r, w);
        }
        // The padding that appears or goes with R's keys, once per key for the step's
        // net change: a key whose rows were replaced keeps no padding in between.
        let right = self.right_index.own().expect("an index of its own");
        for (key, before) in counted {
            let sign = match (before > 0, count(right, &key) > 0) {
                (false, true) => -1,
                (true, false) => 1,
                _ => 0,
            };
            if sign != 0 {
                self.left_index.each(&self.left, tables, &key, |l, lw| {
                    emit.push(l, &pad, sign * lw);
                });
            }
        }
        // Not consolidated: every consumer sums weights per row or key anyway.
        emit.out
    }

    /// A join whose right side is looked up as it is now (R': a table, or an
    /// aggregate's groups): L x dR (L as it was) plus dL x R', and for a left join
    /// the padding of the keys whose right rows came or went. When the left side is
    /// looked up as it is now too (L'), a key both sides changed is joined once, as
    /// its rows now less its rows before: the terms L' x dR + dL x R' - dL x dR
    /// would make three rows of a key whose two sides both came in this step, two of
    /// them cancelling only downstream.
    fn step_lookup_right(
        &mut self,
        dl: ZSet,
        dr: ZSet,
        tables: &[SourceTable],
        errors: &mut Errors,
    ) -> ZSet {
        let Join {
            left,
            right,
            kind,
            left_keys,
            right_keys,
            right_width,
            left_index,
            right_index,
            project,
        } = self;
        let pad = (*kind == JoinKind::Left).then(|| nulls(*right_width));
        let mut emit = Emit {
            project: project.as_deref(),
            out: Vec::new(),
            values: Vec::new(),
            errors,
        };
        let mut keyed_dr = Vec::with_capacity(dr.len());
        for (row, w) in dr {
            if let Some(Some(key)) = keyed(right_keys, &row, emit.errors) {
                keyed_dr.push((key, row, w));
            }
        }
        let mut keyed_dl = Vec::with_capacity(dl.len());
        for (row, w) in dl {
            match keyed(left_keys, &row, emit.errors) {
                Some(Some(key)) => keyed_dl.push((key, row, w)),
                // A NULL key matches nothing: padded in a left join.
                Some(None) => {
                    if let Some(pad) = &pad {
                        emit.push(&row, pad, w);
                    }
                }
                None => {}
            }
        }
        let (dl, dr) = (keyed_dl, keyed_dr);
        // The keys both sides changed, with their changes (left side looked up only).
        let mut both: HashMap<Key, (ZSet, ZSet), Hasher> = HashMap::default();
        if !matches!(left_index, Side::Own(_)) && !dl.is_empty() && !dr.is_empty() {
            let right: HashMap<&Key, (), Hasher> = dr.iter().map(|(k, ..)| (k, ())).collect();
            for (key, ..) in &dl {
                if right.contains_key(key) && !both.contains_key(key) {
                    both.insert(key.clone(), Default::default());
                }
            }
        }
        // L x dR; for a left join, each key's net change of right rows, in the order
        // the keys came (a changed group comes as its old row and its new one, one
        // after the other: mostly the key counted last).
        let mut net: Vec<(Key, i64)> = Vec::new();
        let mut seen: HashMap<Key, usize, Hasher> = HashMap::default();
        for (key, r, w) in dr {
            if let Some((_, changes)) = both.get_mut(&key) {
                changes.push((r, w));
                continue;
            }
            let mut any_left = false;
            left_index.each(left, tables, &key, |l, lw| {
                any_left = true;
                emit.push(l, &r, lw * w);
            });
            if pad.is_none() || !any_left {
                continue;
            }
            match net.last_mut() {
                Some((k, sum)) if *k == key => *sum += w,
                _ => match seen.get(&key) {
                    Some(i) => net[*i].1 += w,
                    None => {
                        seen.insert(key.clone(), net.len());
                        net.push((key, w));
                    }
                },
            }
        }
        // The padding that appears or goes with R's keys, once per key for the step's
        // net change (L still as it was).
        if let Some(pad) = &pad {
            for (key, change) in net {
                let mut now = 0;
                right_index.each(right, tables, &key, |_, w| now += w);
                let sign = match (now - change > 0, now > 0) {
                    (false, true) => -1,
                    (true, false) => 1,
                    _ => 0,
                };
                if sign != 0 {
                    left_index.each(left, tables, &key, |l, lw| emit.push(l, pad, sign * lw));
                }
            }
        }
        // dL x R', padded where a left join's key has no right row.
        let mut in_order = Vec::with_capacity(both.len());
        for (key, l, w) in dl {
            if let Some((changes, _)) = both.get_mut(&key) {
                if changes.is_empty() {
                    in_order.push(key);
                }
                changes.push((l, w));
                continue;
            }
            let mut any_right = false;
            right_index.each(right, tables, &key, |r, rw| {
                any_right = true;
                emit.push(&l, r, w * rw);
            });
            if let Some(pad) = &pad
                && !any_right
            {
                emit.push(&l, pad, w);
            }
            left_index.add(key, l, w);
        }
        for key in in_order {
            let (dl, dr) = &both[&key];
            let mut now = (Vec::new(), Vec::new());
            left_index.each(left, tables, &key, |l, w| now.0.push((l.clone(), w)));
            right_index.each(right, tables, &key, |r, w| now.1.push((r.clone(), w)));
            let before = (less(&now.0, dl), less(&now.1, dr));
            joined(&mut emit, &now.0, &now.1, 1, pad.as_deref());
            joined(&mut emit, &before.0, &before.1, -1, pad.as_deref());
        }
        emit.out
    }
}

/// One key's rows of both sides joined, `sign` times; in a left join (`pad`), a key
/// without right rows pads its left rows.
fn joined(
    emit: &mut Emit<'_>,
    ls: &[(Row, i64)],
    rs: &[(Row, i64)],
    sign: i64,
    pad: Option<&[Datum]>,
) {
    if let Some(pad) = pad
        && rs.iter().map(|(_, w)| w).sum::<i64>() <= 0
    {
        for (l, lw) in ls {
            emit.push(l, pad, sign * lw);
        }
        return;
    }
    for (l, lw) in ls {
        for (r, rw) in rs {
            emit.push(l, r, sign * lw * rw);
        }
    }
}

/// Rows as they were before `changes`: `now` less each change, by row.
fn less(now: &[(Row, i64)], changes: &[(Row, i64)]) -> ZSet {
    let mut was = now.to_vec();
    for (row, w) in changes {
        match was
            .iter_mut()
            .find(|(r, _)| Arc::ptr_eq(r, row) || r == row)
        {
            Some((_, x)) => *x -= w,
            None => was.push((row.clone(), -w)),
        }
    }
    was.retain(|(_, w)| *w != 0);
    was
}

/// The view's rows by key text, each with its weight (1 unless the declared key is
/// not unique).
#[derive(Debug, Default)]
pub struct Output {
    pub rows: BTreeMap<Text, Rows>,
}

/// A key whose row changed in a step: the row it had before and the row it has now.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    pub key: Text,
    pub before: Option<Row>,
    pub row: Option<Row>,
}

impl Output {
    /// Integrates changes; returns the keys whose visible row changed, in key order.
    pub fn apply(&mut self, plan: &Plan, z: ZSet) -> Vec<RowChange> {
        use std::collections::btree_map::Entry;
        let mut keyed: Vec<(Text, Row, i64)> = z
            .into_iter()
            .map(|(row, w)| (plan.key_text(&row), row, w))
            .collect();
        // Stable: a key's changes stay in their order. Each key is looked up once.
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut changes = Vec::new();
        let mut keyed = keyed.into_iter().peekable();
        while let Some((key, row, w)) = keyed.next() {
            // The key's rows taken out (an empty list left in place) and put back.
            let mut entry = self.rows.entry(key.clone());
            let mut slot = match &mut entry {
                Entry::Occupied(o) => Some(std::mem::replace(o.get_mut(), Rows::Many(Vec::new()))),
                Entry::Vacant(_) => None,
            };
            let before = slot.as_ref().and_then(Rows::visible).cloned();
            add_to(&mut slot, row, w);
            while let Some((_, row, w)) = keyed.next_if(|(k, _, _)| *k == key) {
                add_to(&mut slot, row, w);
            }
            let after = slot.as_ref().and_then(Rows::visible).cloned();
            match (entry, slot) {
                (Entry::Occupied(mut o), Some(rows)) => *o.get_mut() = rows,
                (Entry::Occupied(o), None) => {
                    o.remove();
                }
                (Entry::Vacant(v), Some(rows)) => {
                    v.insert(rows);
                }
                (Entry::Vacant(_), None) => {}
            }
            if before != after {
                changes.push(RowChange {
                    key,
                    before,
                    row: after,
                });
            }
        }
        changes
    }

    /// The row of a key: the one with a positive weight.
    pub fn get(&self, key: &str) -> Option<&Row> {
        self.visible(&Text::new(key))
    }

    fn visible(&self, key: &Text) -> Option<&Row> {
        self.rows.get(key)?.visible()
    }
}
