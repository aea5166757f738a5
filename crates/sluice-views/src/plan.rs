//! A view's plan: the relational tree the SQL compiles to, over sources (event types
//! read as tables or streams), with every column bound to a position in its input's
//! row. The engine (`engine/`) runs it incrementally, `naive.rs` from scratch.
//!
//! Planning happens in two steps: `sql.rs` builds a tree whose expressions name
//! columns symbolically (`ColumnId`: a path of a scan, or an output of a node), and
//! `bind` then lays out each node's row (a scan holds exactly the paths the view uses,
//! key paths first) and turns every name into a position.

use std::collections::BTreeMap;

use crate::datum::{Datum, Text};
use crate::expr::Expr;

/// A field of an event: its path below the row (`price.amount` = ["price", "amount"]),
/// or below the event's metadata (["metadata", "occurred_at"]). The empty path is
/// the whole row (`SELECT *`).
pub type Path = Vec<String>;

/// How an event type is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// Latest event per key wins; a data change event with data_op D deletes it.
    Table { key: Vec<Path> },
    /// Every event is a new row, never changed (business events without a key).
    Stream,
}

/// What the planner needs to know of an event type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    pub kind: SourceKind,
    /// A data change event type: its row is the event's `data`, `data_op` says what
    /// happened; otherwise the row is the event without `metadata`.
    pub data_change: bool,
}

/// The event types a view may read.
pub trait Catalog {
    fn source(&self, event_type: &str) -> Option<SourceInfo>;

    /// What a name in FROM reads: an event type, or (where the catalog knows views)
    /// the event type another view publishes to; else why not.
    fn resolve(&self, name: &str) -> Result<(String, SourceInfo), String> {
        self.source(name)
            .map(|info| (name.to_string(), info))
            .ok_or_else(|| format!("event type `{name}` does not exist"))
    }
}

/// One read of an event type in a view (a self-join reads it twice).
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    pub event_type: String,
    pub alias: String,
    pub info: SourceInfo,
    /// The paths the view uses; the key paths come first (positions 0..key_len).
    pub columns: Vec<Path>,
    pub key_len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFunc {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

/// An aggregate call; `COUNT(*)` has no argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Agg<C = usize> {
    pub func: AggFunc,
    pub arg: Option<Expr<C>>,
}

/// A relation. The row of a join is the left row followed by the right row; the row
/// of an aggregate is its group values followed by its aggregate values.
#[derive(Clone, Debug, PartialEq)]
pub enum Rel<C = usize> {
    Scan(usize),
    Filter {
        input: Box<Rel<C>>,
        pred: Expr<C>,
    },
    Map {
        id: usize,
        input: Box<Rel<C>>,
        exprs: Vec<Expr<C>>,
    },
    Join {
        left: Box<Rel<C>>,
        right: Box<Rel<C>>,
        kind: JoinKind,
        left_keys: Vec<Expr<C>>,
        right_keys: Vec<Expr<C>>,
    },
    Aggregate {
        id: usize,
        input: Box<Rel<C>>,
        group: Vec<Expr<C>>,
        aggs: Vec<Agg<C>>,
    },
}

/// A column while planning.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColumnId {
    /// A path of scan `.0`.
    Path(usize, Path),
    /// Output `.1` of the Map or Aggregate node with id `.0`.
    Out(usize, usize),
}

/// An output column of the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `*`: the fields of the row object are spread into the output.
    pub spread: bool,
    /// Not shown: a key column the SELECT list does not name.
    pub hidden: bool,
}

/// A compiled view.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub name: String,
    pub scans: Vec<Scan>,
    /// Ends in the Map that computes `columns`.
    pub root: Rel,
    pub columns: Vec<Column>,
    /// Positions in `columns` of the view's key.
    pub key: Vec<usize>,
}

impl Plan {
    /// The view's row as JSON: its visible columns, `*` columns spread.
    pub fn row_json(&self, row: &[Datum]) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (c, d) in self.columns.iter().zip(row) {
            if c.spread {
                if let Datum::Json(v) = d
                    && let Some(fields) = v.as_object()
                {
                    for (k, v) in fields {
                        out.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            } else if !c.hidden {
                out.insert(c.name.clone(), d.to_json());
            }
        }
        serde_json::Value::Object(out)
    }

    /// The key of a row as text: its key values joined by `/`.
    pub fn key_text(&self, row: &[Datum]) -> Text {
        if let [k] = self.key[..]
            && let Datum::Str(t) = &row[k]
        {
            return t.clone();
        }
        let mut out = String::new();
        for (i, k) in self.key.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            use std::fmt::Write;
            let _ = write!(out, "{}", row[*k]);
        }
        Text::from(out)
    }

    /// The order a view reads its sources in while it catches up with the log, as a
    /// rank per event type (0 first): one source after the other, the right side of
    /// each join before its left side. The side read last emits each key's row once,
    /// with every change the other sides had by then; read together, each side's
    /// changes would emit (and retract) a row each. And a LEFT JOIN's preserved side
    /// read before its match would emit a padded row per key, retracted when the match
    /// comes. (`bench views`, 100,000 keys and 200,000 updates: the engine's changes
    /// 0.72M -> 0.10M, one per key.)
    pub fn catch_up_ranks(&self) -> BTreeMap<String, usize> {
        fn right_first(rel: &Rel, out: &mut Vec<usize>) {
            match rel {
                Rel::Scan(s) => out.push(*s),
                Rel::Filter { input, .. }
                | Rel::Map { input, .. }
                | Rel::Aggregate { input, .. } => right_first(input, out),
                Rel::Join { left, right, .. } => {
                    right_first(right, out);
                    right_first(left, out);
                }
            }
        }
        let mut scans = Vec::new();
        right_first(&self.root, &mut scans);
        let mut ranks = BTreeMap::new();
        for s in scans {
            // A type read in several places is read at the first of them.
            let next = ranks.len();
            ranks
                .entry(self.scans[s].event_type.clone())
                .or_insert(next);
        }
        ranks
    }
}

/// The candidate keys of a relation: sets of columns no two rows share.
pub(crate) fn keys(rel: &Rel<ColumnId>, scans: &[ScanDraft]) -> Vec<Vec<ColumnId>> {
    match rel {
        Rel::Scan(s) => match &scans[*s].info.kind {
            SourceKind::Table { key } => {
                vec![key.iter().map(|p| ColumnId::Path(*s, p.clone())).collect()]
            }
            SourceKind::Stream => Vec::new(),
        },
        Rel::Filter { input, .. } => keys(input, scans),
        Rel::Map { id, input, exprs } => keys(input, scans)
            .into_iter()
            .filter_map(|k| {
                k.iter()
                    .map(|c| {
                        exprs
                            .iter()
                            .position(|e| *e == Expr::Col(c.clone()))
                            .map(|i| ColumnId::Out(*id, i))
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .collect(),
        Rel::Aggregate { id, group, .. } => {
            vec![(0..group.len()).map(|i| ColumnId::Out(*id, i)).collect()]
        }
        Rel::Join {
            left,
            right,
            kind,
            left_keys,
            right_keys,
        } => {
            let (lk, rk) = (keys(left, scans), keys(right, scans));
            // Joined on a whole key of one side: at most one match per row of the other.
            let covers = |on: &[Expr<ColumnId>], ks: &[Vec<ColumnId>]| {
                ks.iter()
                    .any(|k| k.iter().all(|c| on.contains(&Expr::Col(c.clone()))))
            };
            let mut out = Vec::new();
            if covers(right_keys, &rk) {
                out.extend(lk.iter().cloned());
            }
            if *kind == JoinKind::Inner && covers(left_keys, &lk) {
                out.extend(rk.iter().cloned());
            }
            if out.is_empty() {
                for l in &lk {
                    for r in &rk {
                        out.push(l.iter().chain(r).cloned().collect());
                    }
                }
            }
            out.sort_by_key(Vec::len);
            out
        }
    }
}

/// A scan while planning: its paths grow as the SQL names them.
#[derive(Clone, Debug)]
pub(crate) struct ScanDraft {
    pub event_type: String,
    pub alias: String,
    pub info: SourceInfo,
    pub paths: Vec<Path>,
}

impl ScanDraft {
    pub fn new(event_type: String, alias: String, info: SourceInfo) -> ScanDraft {
        let paths = match &info.kind {
            SourceKind::Table { key } => key.clone(),
            SourceKind::Stream => Vec::new(),
        };
        ScanDraft {
            event_type,
            alias,
            info,
            paths,
        }
    }
}

/// Lays out every node's row and turns column names into positions.
pub(crate) fn bind(rel: Rel<ColumnId>, scans: &[ScanDraft]) -> (Rel, Vec<ColumnId>) {
    let at = |layout: &[ColumnId], e: Expr<ColumnId>| -> Expr {
        e.map_cols(&mut |c: ColumnId| layout.iter().position(|x| *x == c).ok_or(()))
            .expect("every column a node uses is in its input's layout")
    };
    match rel {
        Rel::Scan(s) => (
            Rel::Scan(s),
            scans[s]
                .paths
                .iter()
                .map(|p| ColumnId::Path(s, p.clone()))
                .collect(),
        ),
        Rel::Filter { input, pred } => {
            let (input, layout) = bind(*input, scans);
            let pred = at(&layout, pred);
            (
                Rel::Filter {
                    input: Box::new(input),
                    pred,
                },
                layout,
            )
        }
        Rel::Map { id, input, exprs } => {
            let (input, layout) = bind(*input, scans);
            let n = exprs.len();
            let exprs = exprs.into_iter().map(|e| at(&layout, e)).collect();
            (
                Rel::Map {
                    id,
                    input: Box::new(input),
                    exprs,
                },
                (0..n).map(|i| ColumnId::Out(id, i)).collect(),
            )
        }
        Rel::Aggregate {
            id,
            input,
            group,
            aggs,
        } => {
            let (input, layout) = bind(*input, scans);
            let n = group.len() + aggs.len();
            let group = group.into_iter().map(|e| at(&layout, e)).collect();
            let aggs = aggs
                .into_iter()
                .map(|a| Agg {
                    func: a.func,
                    arg: a.arg.map(|e| at(&layout, e)),
                })
                .collect();
            (
                Rel::Aggregate {
                    id,
                    input: Box::new(input),
                    group,
                    aggs,
                },
                (0..n).map(|i| ColumnId::Out(id, i)).collect(),
            )
        }
        Rel::Join {
            left,
            right,
            kind,
            left_keys,
            right_keys,
        } => {
            let (left, l) = bind(*left, scans);
            let (right, r) = bind(*right, scans);
            let left_keys = left_keys.into_iter().map(|e| at(&l, e)).collect();
            let right_keys = right_keys.into_iter().map(|e| at(&r, e)).collect();
            let layout = l.into_iter().chain(r).collect();
            (
                Rel::Join {
                    left: Box::new(left),
                    right: Box::new(right),
                    kind,
                    left_keys,
                    right_keys,
                },
                layout,
            )
        }
    }
}

/// Every path each scan's columns use, added to the scan drafts.
pub(crate) fn collect_paths(rel: &Rel<ColumnId>, scans: &mut [ScanDraft]) {
    let add = |e: &Expr<ColumnId>, scans: &mut [ScanDraft]| {
        let mut cols = Vec::new();
        e.cols(&mut cols);
        for c in cols {
            if let ColumnId::Path(s, p) = c
                && !scans[*s].paths.contains(p)
            {
                scans[*s].paths.push(p.clone());
            }
        }
    };
    match rel {
        Rel::Scan(_) => {}
        Rel::Filter { input, pred } => {
            add(pred, scans);
            collect_paths(input, scans);
        }
        Rel::Map { input, exprs, .. } => {
            exprs.iter().for_each(|e| add(e, scans));
            collect_paths(input, scans);
        }
        Rel::Aggregate {
            input, group, aggs, ..
        } => {
            group.iter().for_each(|e| add(e, scans));
            aggs.iter()
                .filter_map(|a| a.arg.as_ref())
                .for_each(|e| add(e, scans));
            collect_paths(input, scans);
        }
        Rel::Join {
            left,
            right,
            left_keys,
            right_keys,
            ..
        } => {
            left_keys
                .iter()
                .chain(right_keys)
                .for_each(|e| add(e, scans));
            collect_paths(left, scans);
            collect_paths(right, scans);
        }
    }
}
