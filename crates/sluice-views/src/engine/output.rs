//! The view's rows by key: the integral of the root's changes, what reads are served
//! from and what a view publishes.
//!
//! A key's one row of weight 1 (nearly every key) is kept encoded, as a source table
//! keeps its rows (`table.rs`): the codec's bytes take about a fifth of a row of
//! values, and a state file's rows are copied as they are when it loads. A row is
//! decoded when read. Anything else (a row holding JSON, several rows under a
//! declared key that is not unique) keeps its values.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{Rows, ZSet};
use crate::codec::{Damaged, Reader, Result, Source, Writer};
use crate::datum::{Datum, Row, Text};
use crate::plan::Plan;

/// The rows under one key.
#[derive(Clone, Debug)]
pub(crate) enum Slot {
    /// One row of weight 1, as `Writer::row` writes it.
    Packed(Box<[u8]>),
    Rows(Box<Rows>),
}

impl Slot {
    /// The rows as a key's rows are changed.
    fn into_rows(self) -> Rows {
        match self {
            Slot::Packed(bytes) => Rows::One((unpack(&bytes), 1)),
            Slot::Rows(rows) => *rows,
        }
    }

    /// Keeps a key's rows: packed when they are one row of weight 1 with no JSON.
    fn of(rows: Rows, scratch: &mut Writer) -> Slot {
        match rows {
            Rows::One((row, 1)) if !row.iter().any(|d| matches!(d, Datum::Json(_))) => {
                scratch.buf.clear();
                scratch.row(&row);
                Slot::Packed(scratch.buf.as_slice().into())
            }
            rows => Slot::Rows(Box::new(rows)),
        }
    }

    /// The row with a positive weight (the key's visible row).
    fn visible(&self) -> Option<Row> {
        match self {
            Slot::Packed(bytes) => Some(unpack(bytes)),
            Slot::Rows(rows) => rows.visible().cloned(),
        }
    }

    pub(crate) fn has_visible(&self) -> bool {
        match self {
            Slot::Packed(_) => true,
            Slot::Rows(rows) => rows.visible().is_some(),
        }
    }

    /// Writes each row and its weight (`Writer::row`, `Writer::i64`); how many rows.
    pub(crate) fn write(&self, w: &mut Writer) -> u64 {
        match self {
            Slot::Packed(bytes) => {
                w.buf.extend_from_slice(bytes);
                w.i64(1);
                1
            }
            Slot::Rows(rows) => {
                for (row, weight) in rows.iter() {
                    w.row(row);
                    w.i64(*weight);
                }
                rows.len() as u64
            }
        }
    }

    /// Loads the slot's first bytes (`snapshot::in_groups`).
    pub(crate) fn touch(&self) {
        match self {
            Slot::Packed(bytes) => std::hint::black_box(bytes.first().copied()),
            Slot::Rows(rows) => std::hint::black_box(rows.as_slice().first().map(|r| r.1 as u8)),
        };
    }
}

/// A packed row's values. Written by `Writer::row` (`Slot::of`) or checked as
/// `Reader::row` reads it (`Output::read_rows`): it reads back.
fn unpack(bytes: &[u8]) -> Row {
    Reader::new(bytes)
        .row()
        .expect("an output's rows are checked when kept")
}

/// The view's rows by key text.
#[derive(Debug, Default)]
pub struct Output {
    rows: BTreeMap<Text, Slot>,
    /// Where a row is encoded before it is kept.
    scratch: Writer,
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
            // The key's rows taken out (an empty slot left in place) and put back.
            let mut entry = self.rows.entry(key.clone());
            let mut rows = match &mut entry {
                Entry::Occupied(o) => {
                    Some(std::mem::replace(o.get_mut(), Slot::Packed(Box::default())).into_rows())
                }
                Entry::Vacant(_) => None,
            };
            let before = rows.as_ref().and_then(Rows::visible).cloned();
            super::add_to(&mut rows, row, w);
            while let Some((_, row, w)) = keyed.next_if(|(k, _, _)| *k == key) {
                super::add_to(&mut rows, row, w);
            }
            let after = rows.as_ref().and_then(Rows::visible).cloned();
            match (entry, rows) {
                (Entry::Occupied(mut o), Some(rows)) => {
                    *o.get_mut() = Slot::of(rows, &mut self.scratch)
                }
                (Entry::Occupied(o), None) => {
                    o.remove();
                }
                (Entry::Vacant(v), Some(rows)) => {
                    v.insert(Slot::of(rows, &mut self.scratch));
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
    pub fn get(&self, key: &str) -> Option<Row> {
        self.rows.get(&Text::new(key))?.visible()
    }

    /// How many keys hold rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The visible rows in key order: keys starting with `prefix` from `from` on, at
    /// most `limit`.
    pub fn range(&self, from: Bound<&str>, prefix: &str, limit: usize) -> Vec<Row> {
        let from = from.map(Text::new);
        self.rows
            .range((from, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(_, slot)| slot.visible())
            .take(limit)
            .collect()
    }

    /// Every key with its visible row, in key order.
    pub fn visible(&self) -> impl Iterator<Item = (&Text, Row)> {
        self.rows
            .iter()
            .filter_map(|(k, slot)| Some((k, slot.visible()?)))
    }

    /// Every key with all its rows and their weights, in key order.
    pub fn weighted(&self) -> impl Iterator<Item = (&Text, Vec<(Row, i64)>)> {
        self.rows.iter().map(|(k, slot)| {
            let rows = match slot {
                Slot::Packed(bytes) => vec![(unpack(bytes), 1)],
                Slot::Rows(rows) => rows.as_slice().to_vec(),
            };
            (k, rows)
        })
    }

    pub(crate) fn slots(&self) -> impl Iterator<Item = (&Text, &Slot)> {
        self.rows.iter()
    }

    /// Reads the rows `snapshot::encode_output` wrote (`Slot::write`), in place of the rows held. A row is
    /// checked as `Reader::row` reads it, and kept as its bytes when it can be.
    pub(crate) fn read(&mut self, plan: &Plan, src: &mut impl Source) -> Result<()> {
        let n = src.count()?;
        let width = plan.columns.len();
        let mut rows: Vec<(Text, Slot)> = Vec::with_capacity(n);
        for _ in 0..n {
            let (key, slot) = src.next(|r| {
                let from = r.position();
                if r.len()? != width {
                    return Err(Damaged("an output row of another width".into()));
                }
                let mut json = false;
                for _ in 0..width {
                    json |= r.skip_datum()?;
                }
                let bytes = r.since(from);
                let weight = r.i64()?;
                let slot = if weight == 1 && !json {
                    Slot::Packed(bytes.into())
                } else {
                    Slot::Rows(Box::new(Rows::One((Reader::new(bytes).row()?, weight))))
                };
                Ok((key_of(plan, bytes)?, slot))
            })?;
            match rows.last_mut() {
                Some((k, held)) if *k == key => {
                    let mut both =
                        std::mem::replace(held, Slot::Packed(Box::default())).into_rows();
                    for (row, weight) in slot.into_rows().iter() {
                        both.add(row.clone(), *weight);
                    }
                    *held = Slot::Rows(Box::new(both));
                }
                Some((k, _)) if *k > key => {
                    return Err(Damaged("output rows out of key order".into()));
                }
                _ => rows.push((key, slot)),
            }
        }
        // Written in key order: the map is built in one pass.
        self.rows = rows.into_iter().collect();
        Ok(())
    }
}

/// The key text of a row as the codec writes it (`Plan::key_text`), with no row made
/// when the key is one text column.
fn key_of(plan: &Plan, bytes: &[u8]) -> Result<Text> {
    if let [k] = plan.key[..] {
        let mut r = Reader::new(bytes);
        r.len()?;
        for _ in 0..k {
            r.skip()?;
        }
        if let Datum::Str(t) = r.datum()? {
            return Ok(t);
        }
    }
    Ok(plan.key_text(&Reader::new(bytes).row()?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::plan::{Catalog, SourceInfo, SourceKind};

    struct Events;

    impl Catalog for Events {
        fn source(&self, _: &str) -> Option<SourceInfo> {
            Some(SourceInfo {
                kind: SourceKind::Stream,
                data_change: false,
            })
        }
    }

    fn row(sku: &str, v: Datum) -> Row {
        Row::from(vec![Datum::str(sku), v])
    }

    /// The output's rows as a state file has them, read back.
    fn read_back(plan: &Plan, output: &Output) -> Result<Output> {
        let mut w = Writer::default();
        let count = w.reserve_u64();
        let n: u64 = output.slots().map(|(_, slot)| slot.write(&mut w)).sum();
        w.fill_u64(count, n);
        let mut back = Output::default();
        let mut r = Reader::new(&w.buf);
        back.read(plan, &mut r)?;
        assert!(r.is_empty());
        Ok(back)
    }

    #[test]
    fn rows_packed_several_or_with_json_read_back_from_their_bytes() {
        // A declared key that is not unique: a key may hold several rows.
        let sql = r#"CREATE VIEW v WITH (key = 'sku') AS SELECT sku, v FROM "t""#;
        let plan = crate::sql::compile(sql, &Events).unwrap();
        let mut out = Output::default();
        let json = Datum::Json(Arc::new(json!({"a": [1, 2]})));
        let rows = [
            row("a text key longer than twenty-two bytes", Datum::Int(1)),
            row("b", Datum::Float(2.5)),
            row("b", Datum::Int(3)),
            row("c", json.clone()),
            row("d", Datum::Null),
        ];
        let changes = out.apply(&plan, rows.iter().map(|r| (r.clone(), 1)).collect());
        assert_eq!(changes.len(), 4);
        assert!(changes.iter().all(|c| c.before.is_none()));
        // One row twice: a weight of 2.
        let twice = row("e", Datum::Int(7));
        out.apply(&plan, vec![(twice.clone(), 1), (twice.clone(), 1)]);
        let packed = |out: &Output| {
            out.slots()
                .filter(|(_, s)| matches!(s, Slot::Packed(_)))
                .count()
        };
        assert_eq!(packed(&out), 2, "one row of weight 1 and no JSON");
        assert_eq!(out.get("c"), Some(rows[3].clone()));
        assert_eq!(out.get("f"), None);
        assert_eq!(
            out.range(Bound::Excluded("b"), "", 2),
            vec![rows[3].clone(), rows[4].clone()]
        );

        let back = read_back(&plan, &out).unwrap();
        let all = |o: &Output| -> Vec<(String, Vec<(Row, i64)>)> {
            o.weighted().map(|(k, rs)| (k.to_string(), rs)).collect()
        };
        assert_eq!(all(&back), all(&out));
        assert_eq!(packed(&back), 2);
        assert_eq!(all(&back)[1].1.len(), 2, "both rows of b");
        assert_eq!(all(&back)[4].1, vec![(twice, 2)]);

        // A packed row replaced, then deleted: each a change from the row it had.
        let mut back = back;
        let newer = row("d", Datum::str("x"));
        let changes = back.apply(&plan, vec![(rows[4].clone(), -1), (newer.clone(), 1)]);
        assert_eq!(
            changes,
            vec![RowChange {
                key: Text::new("d"),
                before: Some(rows[4].clone()),
                row: Some(newer.clone()),
            }]
        );
        let changes = back.apply(&plan, vec![(newer.clone(), -1)]);
        assert_eq!(changes[0].row, None);
        assert_eq!(back.len(), 4);
        // A row retracted and put again in one step is no change.
        assert!(
            back.apply(&plan, vec![(rows[0].clone(), -1), (rows[0].clone(), 1)])
                .is_empty()
        );
        assert_eq!(packed(&back), 1);
    }

    #[test]
    fn output_rows_out_of_key_order_or_damaged_are_refused() {
        let sql = r#"CREATE VIEW v WITH (key = 'sku') AS SELECT sku, v FROM "t""#;
        let plan = crate::sql::compile(sql, &Events).unwrap();
        let write = |rows: &[Row]| {
            let mut w = Writer::default();
            w.u64(rows.len() as u64);
            for r in rows {
                w.row(r);
                w.i64(1);
            }
            w.buf
        };
        let mut out = Output::default();
        let unordered = write(&[row("b", Datum::Int(1)), row("a", Datum::Int(2))]);
        let e = out.read(&plan, &mut Reader::new(&unordered)).unwrap_err();
        assert!(e.0.contains("out of key order"), "{e}");
        let narrow = write(&[Row::from(vec![Datum::str("a")])]);
        let e = out.read(&plan, &mut Reader::new(&narrow)).unwrap_err();
        assert!(e.0.contains("another width"), "{e}");
        let mut bad_text = write(&[row("a", Datum::Int(2))]);
        // The key's one byte of text, made invalid UTF-8.
        let at = bad_text.iter().position(|b| *b == b'a').unwrap();
        bad_text[at] = 0xff;
        assert!(out.read(&plan, &mut Reader::new(&bad_text)).is_err());
        assert!(out.is_empty());
    }
}
