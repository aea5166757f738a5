//! A scan's source table (latest row per key) and the changes with weights it makes:
//! -1 for the row a key had, +1 for the row it has now.
//!
//! Rows are kept encoded (`codec`: a value takes the bytes it needs, where a `Datum`
//! takes 24 and a row's allocation 16 more), found by the bytes of their key columns,
//! which come first; a row is decoded when read. A source table is most of a view's
//! state (the stock of a shop is a row per sku and location), so this is most of the
//! memory saved, and a load copies each row's bytes from the state file as they are.
//! A row holding JSON (an object or array taken whole) is kept as values, in a map of
//! its own: decoding it would parse the JSON again at every read. Kept apart, the
//! table's slots are one boxed slice each (16 bytes, not 24 for a slot that could be
//! either; at 10M keys the tables are ~2^25 slots).

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::{HashTable, hash_table};

use crate::codec::{Damaged, Reader, Result, Writer};
use crate::datum::{Datum, Row, Seeded};
use crate::plan::{Scan, SourceKind};
use crate::source::Change;

/// One row of a table, taken out of it or to be put in.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    /// As `Writer::row` writes it: the count, then each value, the key's first.
    Packed(Box<[u8]>),
    /// A row holding JSON.
    Values(Row),
}

impl Stored {
    fn of(row: &Row, buf: &mut Writer) -> Stored {
        if row.iter().any(|d| matches!(d, Datum::Json(_))) {
            return Stored::Values(row.clone());
        }
        buf.buf.clear();
        buf.row(row);
        Stored::Packed(buf.buf.as_slice().into())
    }

    /// The row's values.
    pub fn row(&self) -> Row {
        match self {
            Stored::Packed(bytes) => unpack(bytes),
            Stored::Values(row) => row.clone(),
        }
    }
}

/// A row as the table holds it (`SourceTable::rows`).
#[derive(Clone, Copy, Debug)]
pub enum RowRef<'a> {
    Packed(&'a [u8]),
    Values(&'a Row),
}

impl RowRef<'_> {
    /// Loads the row's first bytes (`snapshot::in_groups`).
    pub fn touch(&self) {
        match self {
            RowRef::Packed(bytes) => {
                std::hint::black_box(bytes.first());
            }
            RowRef::Values(row) => {
                std::hint::black_box(row.first().map(std::mem::discriminant));
            }
        }
    }

    /// Writes the row as `Writer::row` does.
    pub fn write(&self, w: &mut Writer) {
        match self {
            RowRef::Packed(bytes) => w.buf.extend_from_slice(bytes),
            RowRef::Values(row) => w.row(row),
        }
    }
}

/// A packed row's values. Written by `Writer::row` (`Stored::of`) or checked as
/// `Reader::row` reads it (`SourceTable::read_row`): it reads back.
fn unpack(bytes: &[u8]) -> Row {
    Reader::new(bytes)
        .row()
        .expect("a table's rows are checked when put")
}

/// The bytes of a packed row's first `n` values, as `Writer::datum` writes them.
#[inline]
fn key_bytes(bytes: &[u8], n: usize) -> &[u8] {
    let mut r = Reader::new(bytes);
    // Checked when put: a count, then at least `n` values.
    let _ = r.u64();
    let from = r.position();
    for _ in 0..n {
        let _ = r.skip();
    }
    &bytes[from..r.position()]
}

/// Where a key looked up is written (`Writer::datum`), kept per thread.
struct Probe(Writer);

impl Probe {
    fn of(&mut self, key: &[Datum]) -> &[u8] {
        self.0.buf.clear();
        key.iter().for_each(|d| self.0.datum(d));
        &self.0.buf
    }
}

thread_local! {
    static PROBE: std::cell::RefCell<Probe> = std::cell::RefCell::new(Probe(Writer::default()));
}

/// The current rows of one scan's source (tables only): one row per key, found by
/// the key columns the row starts with (so the key is not stored twice).
#[derive(Debug)]
pub struct SourceTable {
    key_len: usize,
    rows: HashTable<Box<[u8]>>,
    /// Rows holding JSON, by the bytes of their key (no row of the table has the key
    /// of one of these).
    json: HashMap<Box<[u8]>, Row, Seeded>,
    hasher: Seeded,
    /// Where a row or key is encoded before it is stored or looked up.
    scratch: Writer,
}

impl SourceTable {
    pub fn new(key_len: usize) -> SourceTable {
        SourceTable {
            key_len,
            rows: HashTable::new(),
            json: HashMap::default(),
            hasher: Seeded::default(),
            scratch: Writer::default(),
        }
    }

    /// The seed of its hasher (kept with its state: `datum::Seeded`).
    pub fn seed(&self) -> u64 {
        self.hasher.seed
    }

    /// Hashes with the given seed from now on (for an empty table being restored).
    pub fn reseed(&mut self, seed: u64) {
        debug_assert!(self.is_empty());
        self.hasher = Seeded::with_seed(seed);
    }

    pub fn len(&self) -> usize {
        self.rows.len() + self.json.len()
    }

    pub fn key_len(&self) -> usize {
        self.key_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every row: the packed ones in the order the table holds them, then those
    /// holding JSON.
    pub fn rows(&self) -> impl Iterator<Item = RowRef<'_>> {
        self.rows
            .iter()
            .map(|b| RowRef::Packed(b))
            .chain(self.json.values().map(RowRef::Values))
    }

    pub fn reserve(&mut self, n: usize) {
        let (n_key, hasher) = (self.key_len, &self.hasher);
        self.rows
            .reserve(n, |r| hasher.hash_one(key_bytes(r, n_key)));
    }

    /// Puts a row in place of the one with its key; the row it replaced, and whether
    /// that was the same row.
    fn put(&mut self, stored: Stored) -> Option<(Stored, bool)> {
        let n = self.key_len;
        let hasher = &self.hasher;
        match stored {
            Stored::Packed(bytes) => {
                let key = key_bytes(&bytes, n);
                let hash = hasher.hash_one(key);
                let was_json = if self.json.is_empty() {
                    None
                } else {
                    self.json.remove(key)
                };
                match self.rows.entry(
                    hash,
                    |r| key_bytes(r, n) == key,
                    |r| hasher.hash_one(key_bytes(r, n)),
                ) {
                    hash_table::Entry::Occupied(mut o) => {
                        let same = *o.get() == bytes;
                        let old = std::mem::replace(o.get_mut(), bytes);
                        Some((Stored::Packed(old), same))
                    }
                    hash_table::Entry::Vacant(v) => {
                        v.insert(bytes);
                        was_json.map(|row| (Stored::Values(row), false))
                    }
                }
            }
            Stored::Values(row) => {
                self.scratch.buf.clear();
                row.iter().take(n).for_each(|d| self.scratch.datum(d));
                let key: Box<[u8]> = self.scratch.buf.as_slice().into();
                let was_packed = self
                    .rows
                    .find_entry(hasher.hash_one(&key[..]), |r| key_bytes(r, n) == &key[..])
                    .ok()
                    .map(|o| Stored::Packed(o.remove().0));
                match self.json.insert(key, row.clone()) {
                    Some(old) => {
                        let same = old == row;
                        Some((Stored::Values(old), same))
                    }
                    None => was_packed.map(|old| (old, false)),
                }
            }
        }
    }

    /// Reads a row as a state file has it (`Writer::row`, checked as `Reader::row`
    /// reads it) and puts it; whether a row with its key was there already.
    pub fn read_row(&mut self, r: &mut Reader<'_>) -> Result<bool> {
        let from = r.position();
        let n = r.len()?;
        if n < self.key_len {
            return Err(Damaged("a source row shorter than its key".into()));
        }
        let mut json = false;
        for _ in 0..n {
            json |= r.skip_datum()?;
        }
        let bytes = r.since(from);
        let stored = if json {
            Stored::Values(Reader::new(bytes).row()?)
        } else {
            Stored::Packed(bytes.into())
        };
        Ok(self.put(stored).is_some())
    }

    /// The row with this key.
    pub fn get(&self, key: &[Datum]) -> Option<Row> {
        let n = self.key_len;
        PROBE.with_borrow_mut(|probe| {
            let key = probe.of(key);
            match self
                .rows
                .find(self.hasher.hash_one(key), |r| key_bytes(r, n) == key)
            {
                Some(bytes) => Some(unpack(bytes)),
                None if self.json.is_empty() => None,
                None => self.json.get(key).cloned(),
            }
        })
    }

    /// Takes out the row with this key.
    fn take(&mut self, key: &[Datum]) -> Option<Stored> {
        let n = self.key_len;
        PROBE.with_borrow_mut(|probe| {
            let key = probe.of(key);
            match self
                .rows
                .find_entry(self.hasher.hash_one(key), |r| key_bytes(r, n) == key)
            {
                Ok(o) => Some(Stored::Packed(o.remove().0)),
                Err(_) if self.json.is_empty() => None,
                Err(_) => self.json.remove(key).map(Stored::Values),
            }
        })
    }

    /// Applies a change: pushes the weighted rows it makes to `out`; what undoes it.
    pub fn apply(&mut self, scan: &Scan, change: Change, out: &mut Vec<(Row, i64)>) -> Undo {
        match (&scan.info.kind, change) {
            (SourceKind::Stream, Change::Upsert(row)) => {
                out.push((row, 1));
                Undo::Nothing
            }
            (SourceKind::Stream, Change::Delete(_)) => Undo::Nothing,
            (SourceKind::Table { .. }, Change::Upsert(row)) => {
                let stored = Stored::of(&row, &mut self.scratch);
                match self.put(stored) {
                    Some((old, true)) => Undo::Put(old),
                    Some((old, false)) => {
                        out.push((old.row(), -1));
                        out.push((row, 1));
                        Undo::Put(old)
                    }
                    None => {
                        out.push((row.clone(), 1));
                        Undo::Remove(row)
                    }
                }
            }
            (SourceKind::Table { .. }, Change::Delete(key)) => match self.take(&key) {
                Some(old) => {
                    out.push((old.row(), -1));
                    Undo::Put(old)
                }
                None => Undo::Nothing,
            },
        }
    }

    pub fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Nothing => {}
            Undo::Put(stored) => {
                self.put(stored);
            }
            Undo::Remove(row) => {
                self.take(&row[..self.key_len]);
            }
        }
    }
}

/// How to take a change to a source table back.
#[derive(Debug)]
pub enum Undo {
    Nothing,
    /// Put this row back (in place of the one with its key).
    Put(Stored),
    /// Remove the row with this row's key.
    Remove(Row),
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::plan::SourceInfo;

    fn scan() -> Scan {
        Scan {
            event_type: "t".into(),
            alias: "t".into(),
            info: SourceInfo {
                kind: SourceKind::Table {
                    key: vec![vec!["sku".into()]],
                },
                data_change: true,
            },
            columns: vec![vec!["sku".into()], vec!["v".into()]],
            key_len: 1,
        }
    }

    fn row(key: Datum, v: Datum) -> Row {
        Row::from(vec![key, v])
    }

    #[test]
    fn rows_packed_or_with_json_read_back_and_changes_undo() {
        let scan = scan();
        let mut t = SourceTable::new(1);
        let json = Datum::Json(Arc::new(json!({"a": [1, 2]})));
        let rows = [
            row(Datum::str("sku-1"), Datum::Int(-7)),
            row(
                Datum::str("a text longer than twenty-two bytes, größer"),
                Datum::Float(2.5),
            ),
            row(Datum::Int(2), Datum::Null),
            // Not the key of the row before: a double is another value.
            row(Datum::Float(2.0), Datum::Bool(true)),
            row(Datum::str("sku-json"), json.clone()),
        ];
        let mut out = Vec::new();
        for r in &rows {
            t.apply(&scan, Change::Upsert(r.clone()), &mut out);
        }
        assert_eq!(out, rows.iter().map(|r| (r.clone(), 1)).collect::<Vec<_>>());
        assert_eq!((t.rows.len(), t.json.len()), (4, 1));
        for r in &rows {
            assert_eq!(t.get(&r[..1]).as_ref(), Some(r));
        }
        assert_eq!(t.get(&[Datum::str("sku-2")]), None);

        // The same row again changes nothing; another row retracts the old one.
        out.clear();
        t.apply(&scan, Change::Upsert(rows[0].clone()), &mut out);
        assert!(out.is_empty());
        let newer = row(Datum::str("sku-1"), Datum::Int(8));
        let undo = t.apply(&scan, Change::Upsert(newer.clone()), &mut out);
        assert_eq!(out, vec![(rows[0].clone(), -1), (newer.clone(), 1)]);
        assert_eq!(t.get(&[Datum::str("sku-1")]), Some(newer));
        t.undo(undo);
        assert_eq!(t.get(&[Datum::str("sku-1")]).as_ref(), Some(&rows[0]));

        out.clear();
        let undo = t.apply(
            &scan,
            Change::Delete(vec![Datum::str("sku-json")]),
            &mut out,
        );
        assert_eq!(out, vec![(rows[4].clone(), -1)]);
        assert_eq!(t.get(&[Datum::str("sku-json")]), None);
        t.undo(undo);
        assert_eq!(t.get(&[Datum::str("sku-json")]).as_ref(), Some(&rows[4]));
        let fresh = row(Datum::str("sku-3"), Datum::Int(1));
        let undo = t.apply(&scan, Change::Upsert(fresh), &mut out);
        t.undo(undo);
        assert_eq!(t.get(&[Datum::str("sku-3")]), None);
        assert_eq!(t.len(), rows.len());

        // Written as a state file has them and read back into a table seeded alike.
        let mut w = Writer::default();
        t.rows().for_each(|r| r.write(&mut w));
        let mut back = SourceTable::new(1);
        back.reseed(t.seed());
        back.reserve(t.len());
        let mut r = Reader::new(&w.buf);
        for _ in 0..t.len() {
            assert!(!back.read_row(&mut r).unwrap());
        }
        assert!(r.is_empty());
        for row in &rows {
            assert_eq!(back.get(&row[..1]).as_ref(), Some(row));
        }
        assert!(
            back.read_row(&mut Reader::new(&w.buf)).unwrap(),
            "a key twice"
        );
    }

    #[test]
    fn a_key_whose_row_comes_to_hold_json_or_not_is_in_one_place_only() {
        let scan = scan();
        let mut t = SourceTable::new(1);
        let plain = row(Datum::str("sku-1"), Datum::Int(1));
        let json = row(
            Datum::str("sku-1"),
            Datum::Json(Arc::new(json!({"size": "M"}))),
        );
        let mut out = Vec::new();
        t.apply(&scan, Change::Upsert(plain.clone()), &mut out);
        let undo = t.apply(&scan, Change::Upsert(json.clone()), &mut out);
        assert_eq!(out[1..], [(plain.clone(), -1), (json.clone(), 1)]);
        assert_eq!((t.rows.len(), t.json.len()), (0, 1));
        assert_eq!(t.get(&plain[..1]), Some(json.clone()));
        t.undo(undo);
        assert_eq!((t.rows.len(), t.json.len()), (1, 0));
        assert_eq!(t.get(&plain[..1]), Some(plain.clone()));

        t.apply(&scan, Change::Upsert(json.clone()), &mut out);
        out.clear();
        // The same JSON row again is no change; a plain row replaces it.
        t.apply(&scan, Change::Upsert(json.clone()), &mut out);
        assert!(out.is_empty());
        let undo = t.apply(&scan, Change::Upsert(plain.clone()), &mut out);
        assert_eq!(out, [(json.clone(), -1), (plain.clone(), 1)]);
        assert_eq!((t.rows.len(), t.json.len()), (1, 0));
        t.undo(undo);
        assert_eq!(t.get(&plain[..1]), Some(json.clone()));
        out.clear();
        let undo = t.apply(&scan, Change::Delete(plain[..1].to_vec()), &mut out);
        assert_eq!(out, [(json.clone(), -1)]);
        assert!(t.is_empty());
        t.undo(undo);
        assert_eq!(t.get(&plain[..1]), Some(json));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_damaged_row_is_refused_and_not_put() {
        let mut t = SourceTable::new(2);
        let mut w = Writer::default();
        w.row(&[Datum::str("only the key's first value")]);
        let short = t.read_row(&mut Reader::new(&w.buf)).unwrap_err();
        assert!(short.0.contains("shorter than its key"), "{short}");
        for bad in [&[2u8, 5, 1, 0xff, 0][..], &[2, 9, 0], &[2, 3]] {
            assert!(t.read_row(&mut Reader::new(bad)).is_err(), "{bad:?}");
        }
        assert!(t.is_empty());
    }
}
