//! The aggregate operator: per group, how many rows and each aggregate's accumulator,
//! updated by the weights of its input's changes; a group's row is retracted and
//! emitted again when it changes.

use std::collections::{BTreeMap, HashMap};

use super::{Errors, Hasher, Node, ZSet};
use crate::datum::{Datum, Key, Row};
use crate::expr::Expr;
use crate::plan::{Agg, AggFunc};
use crate::table::SourceTable;

#[derive(Debug)]
pub(crate) struct Aggregate {
    pub(crate) input: Node,
    pub(crate) group: Vec<Expr>,
    pub(crate) aggs: Vec<Agg>,
    pub(crate) groups: HashMap<Key, Group, Hasher>,
    /// No GROUP BY: one row, even over no input.
    pub(crate) global: bool,
    pub(crate) started: bool,
}

/// The state of one group: how many rows, and each aggregate's accumulator.
#[derive(Debug, Default)]
pub(crate) struct Group {
    pub(crate) rows: i64,
    pub(crate) accs: Vec<Acc>,
}

/// An aggregate's accumulator. Integers sum exactly; MIN / MAX keep the multiset.
#[derive(Debug)]
pub(crate) enum Acc {
    Count(i64),
    Sum {
        ints: i128,
        floats: f64,
        float_values: i64,
        values: i64,
    },
    Extreme(BTreeMap<Datum, i64>),
}

impl Acc {
    pub(crate) fn new(func: AggFunc) -> Acc {
        match func {
            AggFunc::Count => Acc::Count(0),
            AggFunc::Sum | AggFunc::Avg => Acc::Sum {
                ints: 0,
                floats: 0.0,
                float_values: 0,
                values: 0,
            },
            AggFunc::Min | AggFunc::Max => Acc::Extreme(BTreeMap::new()),
        }
    }

    /// Adds a value `w` times (a retraction when negative).
    fn add(&mut self, func: AggFunc, v: Option<&Datum>, w: i64) -> Result<(), String> {
        match self {
            Acc::Count(n) => {
                if v.is_none_or(|v| !v.is_null()) {
                    *n += w;
                }
            }
            Acc::Sum {
                ints,
                floats,
                float_values,
                values,
            } => match v {
                Some(Datum::Null) | None => {}
                Some(Datum::Int(i)) => {
                    *ints += i128::from(*i) * i128::from(w);
                    *values += w;
                }
                Some(Datum::Float(x)) => {
                    // Within a step weights may go below zero and back (changes
                    // are not consolidated): drift is cleared at its end (`settle`).
                    *floats += x * w as f64;
                    *float_values += w;
                    *values += w;
                }
                Some(other) => {
                    let name = if func == AggFunc::Avg { "AVG" } else { "SUM" };
                    return Err(format!(
                        "{name} needs numbers, got {} {other}",
                        other.type_name()
                    ));
                }
            },
            Acc::Extreme(m) => {
                if let Some(v) = v.filter(|v| !v.is_null()) {
                    let x = m.entry(v.clone()).or_insert(0);
                    *x += w;
                    if *x == 0 {
                        m.remove(v);
                    }
                }
            }
        }
        Ok(())
    }

    /// At the end of a step: a sum left with no doubles has no rounding left either.
    fn settle(&mut self) {
        if let Acc::Sum {
            floats,
            float_values: 0,
            ..
        } = self
        {
            *floats = 0.0;
        }
    }

    fn value(&self, func: AggFunc) -> Result<Datum, String> {
        Ok(match (self, func) {
            (Acc::Count(n), _) => Datum::Int(*n),
            (Acc::Sum { values: 0, .. }, _) => Datum::Null,
            (
                Acc::Sum {
                    ints,
                    floats,
                    float_values,
                    values,
                },
                AggFunc::Avg,
            ) => Datum::Float(
                (*ints as f64 + if *float_values > 0 { *floats } else { 0.0 }) / *values as f64,
            ),
            (
                Acc::Sum {
                    ints,
                    floats,
                    float_values,
                    ..
                },
                _,
            ) => {
                if *float_values > 0 {
                    Datum::Float(*ints as f64 + floats)
                } else {
                    match i64::try_from(*ints) {
                        Ok(i) => Datum::Int(i),
                        Err(_) => return Err(format!("SUM out of the integer range: {ints}")),
                    }
                }
            }
            (Acc::Extreme(m), AggFunc::Min) => m.keys().next().cloned().unwrap_or(Datum::Null),
            (Acc::Extreme(m), _) => m.keys().next_back().cloned().unwrap_or(Datum::Null),
        })
    }
}

/// A group before any row.
fn fresh(aggs: &[Agg]) -> Group {
    Group {
        rows: 0,
        accs: aggs.iter().map(|a| Acc::new(a.func)).collect(),
    }
}

/// A row's group (no allocation for one group expression).
fn group_key(exprs: &[Expr], row: &[Datum]) -> Result<Key, crate::expr::EvalError> {
    if let [one] = exprs {
        return Ok(Key::One(one.eval(row)?));
    }
    Ok(Key::from_vec(
        exprs
            .iter()
            .map(|e| e.eval(row))
            .collect::<Result<_, _>>()?,
    ))
}

/// A group's row: its key, then each aggregate's value.
fn group_row(aggs: &[Agg], key: &Key, g: &Group) -> Result<Row, String> {
    let mut out = Vec::with_capacity(key.values().len() + aggs.len());
    out.extend_from_slice(key.values());
    for (a, acc) in aggs.iter().zip(&g.accs) {
        out.push(acc.value(a.func)?);
    }
    Ok(Row::from(out))
}

impl Aggregate {
    pub(super) fn step(
        &mut self,
        scans: &[ZSet],
        tables: &[SourceTable],
        errors: &mut Errors,
    ) -> ZSet {
        let input = self.input.step(scans, tables, errors);
        // Each group touched, with its row before the step.
        let mut touched: Vec<(Key, Option<Row>)> = Vec::new();
        let mut seen: HashMap<Key, (), Hasher> = HashMap::default();
        if !self.started && self.global {
            let none = Key::Many(Box::new([]));
            self.groups.insert(none.clone(), self.fresh());
            touched.push((none.clone(), None));
            seen.insert(none, ());
        }
        self.started = true;
        let (aggs, global) = (&self.aggs, self.global);
        let mut args: Vec<Option<Datum>> = Vec::with_capacity(aggs.len());
        for (row, w) in input {
            let key = match group_key(&self.group, &row) {
                Ok(k) => k,
                Err(e) => {
                    errors.push(e.0);
                    continue;
                }
            };
            args.clear();
            if let Err(e) = aggs.iter().try_for_each(|a| {
                args.push(a.arg.as_ref().map(|e| e.eval(&row)).transpose()?);
                Ok::<_, crate::expr::EvalError>(())
            }) {
                errors.push(e.0);
                continue;
            }
            // A group made here has no rows: it had no row before (unless global).
            let g = self
                .groups
                .entry(key.clone())
                .or_insert_with(|| fresh(aggs));
            if seen.insert(key.clone(), ()).is_none() {
                let before = (g.rows > 0 || global)
                    .then(|| group_row(aggs, &key, g))
                    .transpose()
                    .unwrap_or_else(|e| {
                        errors.push(e);
                        None
                    });
                touched.push((key, before));
            }
            g.rows += w;
            for ((a, acc), v) in aggs.iter().zip(g.accs.iter_mut()).zip(&args) {
                if let Err(e) = acc.add(a.func, v.as_ref(), w) {
                    errors.push(e);
                }
            }
        }
        let mut out = Vec::new();
        for (key, before) in touched {
            let after = match self.groups.get_mut(&key) {
                Some(g) if g.rows > 0 || global => {
                    g.accs.iter_mut().for_each(Acc::settle);
                    group_row(aggs, &key, g).map_or_else(
                        |e| {
                            errors.push(e);
                            None
                        },
                        Some,
                    )
                }
                _ => {
                    self.groups.remove(&key);
                    None
                }
            };
            if before != after {
                out.extend(before.map(|r| (r, -1)));
                out.extend(after.map(|r| (r, 1)));
            }
        }
        out
    }

    /// Calls `f` with the row of the group whose one value is `key` (a join key:
    /// a whole double joins as the integer, so the group of either is found).
    pub(super) fn rows_of(&self, key: &Datum, f: &mut dyn FnMut(&Row)) {
        let mut of = |value: Datum| {
            let key = Key::One(value);
            if let Some(g) = self.groups.get(&key)
                && (g.rows > 0 || self.global)
                && let Ok(row) = group_row(&self.aggs, &key, g)
            {
                f(&row);
            }
        };
        of(key.clone());
        if let Datum::Int(i) = key
            && i.unsigned_abs() < 9_000_000_000_000_000
        {
            of(Datum::Float(*i as f64));
        }
    }

    pub(crate) fn fresh(&self) -> Group {
        fresh(&self.aggs)
    }
}
