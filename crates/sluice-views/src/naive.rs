//! The same plan evaluated from scratch over whole tables, the obvious way: nested
//! loops, groups recomputed. Slow and simple; the model tests hold the incremental
//! engine to it after every step.

use std::collections::BTreeMap;

use crate::datum::{Datum, Row};
use crate::engine::{concat, join_key, nulls, width};
use crate::expr::truthy;
use crate::plan::{AggFunc, JoinKind, Plan, Rel};

/// The rows of a plan's relation over the rows of each scan; rows an expression fails
/// on are left out. `Err` if an aggregate cannot be computed.
pub fn evaluate(plan: &Plan, scans: &[Vec<Row>]) -> Result<Vec<Row>, String> {
    eval(&plan.root, plan, scans)
}

/// The view as it must be: key text to row.
pub fn view(plan: &Plan, scans: &[Vec<Row>]) -> Result<BTreeMap<String, Row>, String> {
    Ok(evaluate(plan, scans)?
        .into_iter()
        .map(|r| (plan.key_text(&r).to_string(), r))
        .collect())
}

fn eval(rel: &Rel, plan: &Plan, scans: &[Vec<Row>]) -> Result<Vec<Row>, String> {
    Ok(match rel {
        Rel::Scan(s) => scans[*s].clone(),
        Rel::Filter { input, pred } => eval(input, plan, scans)?
            .into_iter()
            .filter(|r| pred.eval(r).and_then(|d| truthy(&d)).unwrap_or(false))
            .collect(),
        Rel::Map { input, exprs, .. } => eval(input, plan, scans)?
            .into_iter()
            .filter_map(|r| {
                exprs
                    .iter()
                    .map(|e| e.eval(&r))
                    .collect::<Result<Vec<Datum>, _>>()
                    .ok()
            })
            .map(Row::from)
            .collect(),
        Rel::Join {
            left,
            right,
            kind,
            left_keys,
            right_keys,
        } => {
            let ls = eval(left, plan, scans)?;
            let rs = eval(right, plan, scans)?;
            let pad = nulls(width(right, plan));
            let mut out = Vec::new();
            for l in &ls {
                let Ok(lk) = join_key(left_keys, l) else {
                    continue;
                };
                let mut matched = false;
                for r in &rs {
                    let Ok(Some(rk)) = join_key(right_keys, r) else {
                        continue;
                    };
                    if lk.as_ref() == Some(&rk) {
                        matched = true;
                        out.push(concat(l, r));
                    }
                }
                if !matched && *kind == JoinKind::Left {
                    out.push(concat(l, &pad));
                }
            }
            out
        }
        Rel::Aggregate {
            input, group, aggs, ..
        } => {
            let rows = eval(input, plan, scans)?;
            let mut groups: BTreeMap<Vec<Datum>, Vec<Vec<Option<Datum>>>> = BTreeMap::new();
            if group.is_empty() {
                groups.insert(Vec::new(), Vec::new());
            }
            for r in rows {
                let Ok(key) = group
                    .iter()
                    .map(|e| e.eval(&r))
                    .collect::<Result<Vec<_>, _>>()
                else {
                    continue;
                };
                let Ok(args) = aggs
                    .iter()
                    .map(|a| a.arg.as_ref().map(|e| e.eval(&r)).transpose())
                    .collect::<Result<Vec<_>, _>>()
                else {
                    continue;
                };
                groups.entry(key).or_default().push(args);
            }
            let mut out = Vec::new();
            for (key, members) in groups {
                let mut row = key;
                for (i, a) in aggs.iter().enumerate() {
                    let values: Vec<&Datum> = members
                        .iter()
                        .filter_map(|m| m[i].as_ref())
                        .filter(|d| !d.is_null())
                        .collect();
                    row.push(match a.func {
                        AggFunc::Count if a.arg.is_none() => Datum::Int(members.len() as i64),
                        AggFunc::Count => Datum::Int(values.len() as i64),
                        AggFunc::Min => values.iter().min().map_or(Datum::Null, |d| (*d).clone()),
                        AggFunc::Max => values.iter().max().map_or(Datum::Null, |d| (*d).clone()),
                        AggFunc::Sum | AggFunc::Avg => {
                            if values.is_empty() {
                                Datum::Null
                            } else {
                                let mut ints: i128 = 0;
                                let mut floats = 0.0;
                                let mut any_float = false;
                                for v in &values {
                                    match v {
                                        Datum::Int(i) => ints += i128::from(*i),
                                        Datum::Float(x) => {
                                            floats += x;
                                            any_float = true;
                                        }
                                        other => {
                                            return Err(format!(
                                                "SUM needs numbers, got {}",
                                                other.type_name()
                                            ));
                                        }
                                    }
                                }
                                if a.func == AggFunc::Avg {
                                    Datum::Float((ints as f64 + floats) / values.len() as f64)
                                } else if any_float {
                                    Datum::Float(ints as f64 + floats)
                                } else {
                                    Datum::Int(
                                        i64::try_from(ints)
                                            .map_err(|_| "SUM out of range".to_string())?,
                                    )
                                }
                            }
                        }
                    });
                }
                out.push(Row::from(row));
            }
            out
        }
    })
}
