//! The join operator: both sides' rows by join key, changes joined by the DBSP rule
//! (`dL x R + L' x dR`), a side looked up where its rows are kept already (source
//! tables, an aggregate's groups) instead of indexed, and the padding of a left join.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Errors, Hasher, Index, Node, ZSet, add, width};
use crate::datum::{Datum, Key, Row};
use crate::expr::{Expr, Pair};
use crate::plan::{JoinKind, Plan, Rel};
use crate::table::SourceTable;

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
    pub(super) fn of(rel: &Rel, keys: &[Expr], plan: &Plan) -> Side {
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
    pub(super) fn step(
        &mut self,
        scans: &[ZSet],
        tables: &[SourceTable],
        errors: &mut Errors,
    ) -> ZSet {
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
