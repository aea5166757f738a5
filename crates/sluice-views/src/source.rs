//! Events to rows: a scan's columns read from an event, and its source table (latest
//! row per key) turned into changes with weights, -1 for the row a key had, +1 for the
//! row it has now.

use std::sync::Arc;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::datum::{Datum, Row};
use crate::plan::{Scan, SourceKind};

/// What an event does to its source.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The row for its key is now this (a stream: a new row).
    Upsert(Row),
    /// The row with this key is gone (data_op D).
    Delete(Vec<Datum>),
}

/// An event as a view reads it: the values of the fields its scans use.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// By slot (`Decoder`): `None` when the event lacks the field.
    Fields(Vec<Option<Datum>>),
    /// A compaction tombstone (a record without a value): its key.
    Tombstone(String),
}

/// Reads the fields a view uses from the events of one event type, straight from
/// their bytes: only those paths are built into values, the rest is skipped. Every
/// path of every scan of the event type has a slot in `Event::Fields`.
#[derive(Debug)]
pub struct Decoder {
    root: PathNode,
    slots: usize,
    data_change: bool,
    /// The slot of `data_op` (data change events).
    data_op: Option<usize>,
    /// Set when the event has a `data` member (data change events).
    has_data: Option<usize>,
    /// Some scan reads a whole row (`*`): events are parsed whole.
    whole: Option<usize>,
    /// The slot of each column, per scan: (scan index, slots).
    pub(crate) scans: Vec<(usize, Vec<usize>)>,
}

/// A member of the event the decoder looks into.
#[derive(Debug, Default)]
struct PathNode {
    /// The value here is a column.
    slot: Option<usize>,
    /// The value is an object with these members of interest.
    children: Vec<(String, PathNode)>,
}

impl PathNode {
    fn child(&self, name: &[u8]) -> Option<&PathNode> {
        self.children
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, c)| c)
    }

    fn child_mut(&mut self, name: &str) -> &mut PathNode {
        match self.children.iter().position(|(n, _)| n == name) {
            Some(i) => &mut self.children[i].1,
            None => {
                self.children.push((name.to_string(), PathNode::default()));
                &mut self.children.last_mut().expect("just pushed").1
            }
        }
    }

    /// Fills the slots under this node from a value already built.
    fn fill(&self, v: &Value, out: &mut [Option<Datum>]) {
        if let Some(s) = self.slot {
            out[s] = Some(Datum::from_json(v));
        }
        for (name, child) in &self.children {
            if let Some(c) = v.get(name) {
                child.fill(c, out);
            }
        }
    }
}

impl Decoder {
    /// The decoder of `scans` (all of one event type; indices into the plan's scans).
    pub fn new<'a>(scans: impl IntoIterator<Item = (usize, &'a Scan)>) -> Decoder {
        let mut d = Decoder {
            root: PathNode::default(),
            slots: 0,
            data_change: false,
            data_op: None,
            has_data: None,
            whole: None,
            scans: Vec::new(),
        };
        for (i, scan) in scans {
            d.data_change = scan.info.data_change;
            let slots = scan
                .columns
                .iter()
                .map(|p| {
                    let in_row = d.data_change && !(p.len() > 1 && p[0] == "metadata");
                    d.slot_of(p, in_row)
                })
                .collect();
            d.scans.push((i, slots));
        }
        if d.data_change {
            d.data_op = Some(d.slot_of(&["data_op".to_string()], false));
            d.root.child_mut("data");
            let at = d.slots;
            d.slots += 1;
            d.has_data = Some(at);
        }
        d
    }

    /// The slot of a path: of the event, or of its `data` (`in_data`).
    fn slot_of(&mut self, path: &[String], in_data: bool) -> usize {
        if path.is_empty() {
            return *self.whole.get_or_insert_with(|| {
                self.slots += 1;
                self.slots - 1
            });
        }
        let mut node = &mut self.root;
        if in_data {
            node = node.child_mut("data");
        }
        for p in path {
            node = node.child_mut(p);
        }
        *node.slot.get_or_insert_with(|| {
            self.slots += 1;
            self.slots - 1
        })
    }

    /// An event's fields from its bytes.
    pub fn decode(&self, bytes: &[u8]) -> Result<Event, String> {
        if self.whole.is_some() {
            let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
            return Ok(self.read(&v));
        }
        let mut out = vec![None; self.slots];
        let mut de = serde_json::Deserializer::from_slice(bytes);
        Members {
            node: &self.root,
            out: &mut out,
            has_data: self.has_data,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| format!("not JSON: {e}"))?;
        Ok(Event::Fields(out))
    }

    /// An event's fields from its JSON value (a tombstone is a JSON string).
    pub fn read(&self, event: &Value) -> Event {
        if let Value::String(key) = event {
            return Event::Tombstone(key.clone());
        }
        let mut out = vec![None; self.slots];
        self.root.fill(event, &mut out);
        let row = if self.data_change {
            event.get("data")
        } else {
            Some(event)
        };
        if let (Some(s), Some(_)) = (self.has_data, row) {
            out[s] = Some(Datum::Bool(true));
        }
        if let (Some(s), Some(row)) = (self.whole, row) {
            out[s] = Some(whole_row(event, row, self.data_change));
        }
        Event::Fields(out)
    }

    /// What an event means for one of the decoder's scans (`k`: its place in `scans`).
    pub fn change(&self, scan: &Scan, k: usize, event: &Event) -> Result<Change, String> {
        let fields = match event {
            Event::Tombstone(key) => {
                return match scan.key_len {
                    1 => Ok(Change::Delete(vec![Datum::str(key)])),
                    _ => Err("a tombstone for a source without a compaction key".into()),
                };
            }
            Event::Fields(f) => f,
        };
        if let Some(s) = self.has_data
            && fields[s].is_none()
        {
            return Err("a data change event without `data`".into());
        }
        let slots = &self.scans[k].1;
        let value = |s: usize| fields[s].clone().unwrap_or(Datum::Null);
        if let SourceKind::Table { .. } = &scan.info.kind
            && let Some(i) = (0..scan.key_len).find(|&i| value(slots[i]).is_null())
        {
            return Err(format!(
                "the event has no key field `{}`",
                scan.columns[i].join(".")
            ));
        }
        let deleting = self
            .data_op
            .and_then(|s| fields[s].as_ref())
            .is_some_and(|op| matches!(op, Datum::Str(t) if t.as_bytes() == b"D"));
        if deleting {
            return Ok(Change::Delete(
                slots[..scan.key_len].iter().map(|&s| value(s)).collect(),
            ));
        }
        Ok(Change::Upsert(slots.iter().map(|&s| value(s)).collect()))
    }
}

/// What an event means for a scan: an upsert of its row or a delete of its key (the
/// decoder of this one scan; views keep one per event type).
pub fn change(scan: &Scan, event: &Value) -> Result<Change, String> {
    let d = Decoder::new([(0, scan)]);
    d.change(scan, 0, &d.read(event))
}

/// Walks an object, visiting only the members a decoder wants.
struct Members<'a> {
    node: &'a PathNode,
    out: &'a mut [Option<Datum>],
    /// Mark this slot when the `data` member is met (at the root only).
    has_data: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for Members<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Members<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(child) = map.next_key_seed(MemberName(self.node))? {
            let Some(child) = child else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if let Some(s) = self.has_data
                && self
                    .node
                    .child(b"data")
                    .is_some_and(|d| std::ptr::eq(child, d))
            {
                self.out[s] = Some(Datum::Bool(true));
            }
            match (child.slot, child.children.is_empty()) {
                // A column: its value, built.
                (Some(s), true) => self.out[s] = Some(map.next_value_seed(DatumSeed)?),
                // A column that is also looked into.
                (Some(_), false) => {
                    let v: Value = map.next_value()?;
                    child.fill(&v, self.out);
                }
                (None, _) => map.next_value_seed(Members {
                    node: child,
                    out: &mut *self.out,
                    has_data: None,
                })?,
            }
        }
        Ok(())
    }

    // Anything but an object has no members: skipped.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A member's name, looked up among a node's children without allocating. Read as
/// bytes: only names the view asks for are compared, so the name's UTF-8 need not
/// be checked (a name that is not UTF-8 matches none of them).
struct MemberName<'a>(&'a PathNode);

impl<'de, 'a> DeserializeSeed<'de> for MemberName<'a> {
    type Value = Option<&'a PathNode>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de, 'a> Visitor<'de> for MemberName<'a> {
    type Value = Option<&'a PathNode>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }
    fn visit_bytes<E>(self, name: &[u8]) -> Result<Self::Value, E> {
        Ok(self.0.child(name))
    }
    fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self.0.child(name.as_bytes()))
    }
}

/// A value built as a datum directly (objects and arrays as JSON).
struct DatumSeed;

impl<'de> DeserializeSeed<'de> for DatumSeed {
    type Value = Datum;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Datum, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DatumSeed {
    type Value = Datum;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Datum, E> {
        Ok(Datum::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Datum, E> {
        Ok(Datum::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Datum, E> {
        // As `Datum::from_json`: integers beyond i64 are doubles.
        Ok(i64::try_from(u).map_or(Datum::Float(u as f64), Datum::Int))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Datum, E> {
        Ok(Datum::Float(x))
    }
    fn visit_str<E>(self, s: &str) -> Result<Datum, E> {
        Ok(Datum::str(s))
    }
    fn visit_unit<E>(self) -> Result<Datum, E> {
        Ok(Datum::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Datum, A::Error> {
        let v = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Datum::Json(Arc::new(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Datum, A::Error> {
        let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(Datum::Json(Arc::new(v)))
    }
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
