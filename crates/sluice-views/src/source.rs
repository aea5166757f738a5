//! Events to rows: a scan's columns read from an event, and its source table (latest
//! row per key) turned into changes with weights, -1 for the row a key had, +1 for the
//! row it has now.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::datum::{Datum, Key, Row};
use crate::plan::{Path, Scan, SourceKind};

/// What an event does to its source.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The row for its key is now this (a stream: a new row).
    Upsert(Row),
    /// The row with this key is gone (data_op D).
    Delete(Vec<Datum>),
}

/// Reads one field of an event.
fn field<'a>(event: &'a Value, row: &'a Value, path: &[String]) -> Option<&'a Value> {
    let (mut at, rest) = match path.split_first() {
        Some((first, rest)) if first == "metadata" && !rest.is_empty() => {
            (event.get("metadata")?, rest)
        }
        _ => (row, path),
    };
    for p in rest {
        at = at.get(p)?;
    }
    Some(at)
}

/// A compaction tombstone (a record without a value) as the view reads it: the key as
/// a JSON string, where events are objects.
pub fn tombstone(key: &str) -> Value {
    Value::String(key.to_string())
}

/// What an event means for a scan: an upsert of its row or a delete of its key.
pub fn change(scan: &Scan, event: &Value) -> Result<Change, String> {
    if let Value::String(key) = event {
        return match scan.key_len {
            1 => Ok(Change::Delete(vec![Datum::str(key)])),
            _ => Err("a tombstone for a source without a compaction key".into()),
        };
    }
    let row_value = if scan.info.data_change {
        match event.get("data") {
            Some(d) => d,
            None => return Err("a data change event without `data`".into()),
        }
    } else {
        event
    };
    let read = |path: &Path| -> Datum {
        if path.is_empty() {
            return whole_row(event, row_value, scan.info.data_change);
        }
        field(event, row_value, path).map_or(Datum::Null, Datum::from_json)
    };
    let deleting =
        scan.info.data_change && event.get("data_op").and_then(Value::as_str) == Some("D");
    if let SourceKind::Table { key } = &scan.info.kind
        && let Some(missing) = key
            .iter()
            .find(|p| field(event, row_value, p).is_none_or(Value::is_null))
    {
        return Err(format!(
            "the event has no key field `{}`",
            missing.join(".")
        ));
    }
    if deleting {
        return Ok(Change::Delete(
            scan.columns[..scan.key_len].iter().map(read).collect(),
        ));
    }
    Ok(Change::Upsert(scan.columns.iter().map(read).collect()))
}

/// `*`: the row object (a business event without its metadata).
fn whole_row(event: &Value, row: &Value, data_change: bool) -> Datum {
    if data_change {
        return Datum::from_json(row);
    }
    match event.as_object() {
        Some(o) => Datum::Json(Arc::new(Value::Object(
            o.iter()
                .filter(|(k, _)| *k != "metadata")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ))),
        None => Datum::from_json(event),
    }
}

/// The current rows of one scan's source, by key (tables only).
#[derive(Debug, Default)]
pub struct SourceTable {
    pub rows: HashMap<Key, Row, foldhash::fast::RandomState>,
}

impl SourceTable {
    /// Applies a change; returns the weighted rows it makes, and what undoes it.
    pub fn apply(&mut self, scan: &Scan, change: Change) -> (Vec<(Row, i64)>, Undo) {
        match (&scan.info.kind, change) {
            (SourceKind::Stream, Change::Upsert(row)) => (vec![(row.clone(), 1)], Undo::Stream),
            (SourceKind::Stream, Change::Delete(_)) => (Vec::new(), Undo::Stream),
            (SourceKind::Table { .. }, Change::Upsert(row)) => {
                let key = Key::from_slice(&row[..scan.key_len]);
                let old = self.rows.insert(key.clone(), row.clone());
                let mut out = Vec::with_capacity(2);
                match &old {
                    Some(o) if *o == row => return (out, Undo::Restore(key, old)),
                    Some(o) => out.push((o.clone(), -1)),
                    None => {}
                }
                out.push((row, 1));
                (out, Undo::Restore(key, old))
            }
            (SourceKind::Table { .. }, Change::Delete(key)) => {
                let key = Key::from_vec(key);
                let old = self.rows.remove(&key);
                let out = old.iter().map(|o| (o.clone(), -1)).collect();
                (out, Undo::Restore(key, old))
            }
        }
    }

    pub fn undo(&mut self, undo: Undo) {
        if let Undo::Restore(key, old) = undo {
            match old {
                Some(row) => self.rows.insert(key, row),
                None => self.rows.remove(&key),
            };
        }
    }
}

/// How to take a change back.
#[derive(Debug)]
pub enum Undo {
    Stream,
    Restore(Key, Option<Row>),
}
