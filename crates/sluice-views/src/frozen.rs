//! A view's rows read straight from its state file, while the whole state loads.
//!
//! Loading a large view's state takes a while (every table, index and group is
//! rebuilt in memory); its rows are in the file already, in key order. `Frozen`
//! checks the file, walks its output section once to note where each key's row
//! starts, and answers key lookups and ranges by binary search, decoding only the
//! rows asked for. A node therefore serves a view's reads as of its state file within
//! the time it takes to read the file once, and serves them live once the state is
//! loaded and catching up with the log.

use std::collections::BTreeMap;
use std::ops::{Bound, Range};
use std::sync::Arc;

use crate::codec::{Damaged, Reader, Result};
use crate::datum::{Datum, Row, Text};
use crate::plan::Plan;
use crate::runner::SourcePartition;

/// The rows of a view as its state file holds them.
#[derive(Debug)]
pub struct Frozen {
    plan: Arc<Plan>,
    bytes: Arc<Vec<u8>>,
    /// Where the output section is in `bytes`.
    output: Range<usize>,
    /// Where each key's visible row starts in the output section, in key order.
    rows: Vec<u64>,
    /// The source offsets the rows reflect.
    pub offsets: BTreeMap<SourcePartition, u64>,
}

impl Frozen {
    /// Checks a state file (magic, version, SQL, checksum) and indexes its rows.
    pub fn open(plan: Arc<Plan>, sql: &str, bytes: Arc<Vec<u8>>) -> Result<Frozen> {
        let (offsets, sections) = crate::snapshot::open(sql, &bytes)?;
        let section = *sections
            .last()
            .ok_or_else(|| Damaged("a state without its rows".into()))?;
        let start = section.as_ptr() as usize - bytes.as_ptr() as usize;
        let output = start..start + section.len();
        let mut r = Reader::new(section);
        let n = r.len()?;
        let mut rows = Vec::with_capacity(n);
        let mut scratch = Vec::new();
        // Rows of one key are next to each other; the visible one has weight > 0.
        let mut last: Option<(Text, bool)> = None;
        for _ in 0..n {
            let at = r.position() as u64;
            r.row_into(&mut scratch)?;
            let weight = r.i64()?;
            if scratch.len() != plan.columns.len() {
                return Err(Damaged("an output row of another width".into()));
            }
            let key = plan.key_text(&scratch);
            let seen = match &mut last {
                Some((k, seen)) if *k == key => seen,
                Some((k, _)) if *k > key => {
                    return Err(Damaged("output rows out of key order".into()));
                }
                _ => &mut last.insert((key, false)).1,
            };
            if weight > 0 && !*seen {
                *seen = true;
                rows.push(at);
            }
        }
        if !r.is_empty() {
            return Err(Damaged("bytes after the rows".into()));
        }
        Ok(Frozen {
            plan,
            bytes,
            output,
            rows,
            offsets,
        })
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// How many keys have a row.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The values of the i-th row (checked when the file was opened).
    fn values(&self, i: usize, out: &mut Vec<Datum>) {
        let section = &self.bytes[self.output.clone()];
        let mut r = Reader::new(&section[self.rows[i] as usize..]);
        if r.row_into(out).is_err() {
            out.clear();
        }
    }

    fn key(&self, i: usize, scratch: &mut Vec<Datum>) -> Text {
        self.values(i, scratch);
        self.plan.key_text(scratch)
    }

    /// The index of the first key not below `from` (or above it, when excluded).
    fn seek(&self, from: Bound<&str>) -> usize {
        let mut scratch = Vec::new();
        match from {
            Bound::Unbounded => 0,
            Bound::Included(k) => partition(self.rows.len(), |i| &*self.key(i, &mut scratch) < k),
            Bound::Excluded(k) => partition(self.rows.len(), |i| &*self.key(i, &mut scratch) <= k),
        }
    }

    /// The row of a key.
    pub fn get(&self, key: &str) -> Option<Row> {
        let i = self.seek(Bound::Included(key));
        let mut values = Vec::new();
        (i < self.rows.len() && &*self.key(i, &mut values) == key).then(|| Row::from(&values[..]))
    }

    /// Rows in key order from `from`, while their key starts with `prefix`.
    pub fn range(&self, from: Bound<&str>, prefix: &str, limit: usize) -> Vec<Row> {
        let mut out = Vec::new();
        let mut values = Vec::new();
        for i in self.seek(from)..self.rows.len() {
            if out.len() >= limit || !self.key(i, &mut values).starts_with(prefix) {
                break;
            }
            out.push(Row::from(&values[..]));
        }
        out
    }
}

/// The first index in `0..n` for which `below` is false (`below` holds for a prefix).
fn partition(n: usize, mut below: impl FnMut(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}
