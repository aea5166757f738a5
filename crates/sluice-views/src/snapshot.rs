//! A view's state on disk: every operator's state, the rows, and the source offsets
//! they reflect, in one file written whole (temporary file, fsync, rename), so state
//! and offsets can never disagree. A restart loads it and reads the log from there;
//! a fresh node can start from a copy of it ("a snapshot, a stream and a bunch of
//! deltas").
//!
//! ```text
//! "SLUICEVW" | version u32 LE | fingerprint of the SQL (u64 LE)
//! | offsets: n, (event type, partition, next offset)*
//! | source tables, operators (pre-order), output rows
//! | CRC32C of all the bytes before (u32 LE)
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::codec::{Damaged, Reader, Result, Writer};
use crate::engine::{Acc, Group, Node, Rows, add, join_key};
use crate::plan::Plan;
use crate::runner::SourcePartition;
use crate::view::View;

const MAGIC: &[u8; 8] = b"SLUICEVW";
const VERSION: u32 = 1;

/// Identifies the SQL a state was computed for: state of other SQL is not loaded.
pub fn fingerprint(sql: &str) -> u64 {
    let crc = u64::from(crc32c::crc32c(sql.as_bytes()));
    (crc << 32) | (sql.len() as u64 & 0xffff_ffff)
}

/// The bytes of a view's state and the offsets it reflects.
pub fn encode(view: &View, sql: &str, offsets: &BTreeMap<SourcePartition, u64>) -> Vec<u8> {
    let mut w = Writer::default();
    w.buf.extend_from_slice(MAGIC);
    w.buf.extend_from_slice(&VERSION.to_le_bytes());
    w.buf.extend_from_slice(&fingerprint(sql).to_le_bytes());
    w.u64(offsets.len() as u64);
    for ((t, p), next) in offsets {
        w.str(t);
        w.u64(u64::from(*p));
        w.u64(*next);
    }
    for table in &view.tables {
        w.u64(table.len() as u64);
        for row in table.rows() {
            w.row(row);
        }
    }
    encode_node(&view.root, &mut w);
    w.u64(view.output.rows.values().map(Rows::len).sum::<usize>() as u64);
    for rows in view.output.rows.values() {
        for (row, weight) in rows {
            w.row(row);
            w.i64(*weight);
        }
    }
    let crc = crc32c::crc32c(&w.buf);
    w.buf.extend_from_slice(&crc.to_le_bytes());
    w.buf
}

fn encode_node(node: &Node, w: &mut Writer) {
    match node {
        Node::Scan(_) => {}
        Node::Filter(input, _) | Node::Map(input, _) => encode_node(input, w),
        Node::Join(j) => {
            encode_node(&j.left, w);
            encode_node(&j.right, w);
            for index in [&j.left_index, &j.right_index] {
                w.u64(index.values().map(|rows| rows.len()).sum::<usize>() as u64);
                for rows in index.values() {
                    for (row, weight) in rows {
                        w.row(row);
                        w.i64(*weight);
                    }
                }
            }
        }
        Node::Aggregate(a) => {
            encode_node(&a.input, w);
            w.buf.push(u8::from(a.started));
            w.u64(a.groups.len() as u64);
            for (key, g) in &a.groups {
                w.row(key.values());
                w.i64(g.rows);
                for acc in &g.accs {
                    match acc {
                        Acc::Count(n) => w.i64(*n),
                        Acc::Sum {
                            ints,
                            floats,
                            float_values,
                            values,
                        } => {
                            w.i128(*ints);
                            w.f64(*floats);
                            w.i64(*float_values);
                            w.i64(*values);
                        }
                        Acc::Extreme(m) => {
                            w.u64(m.len() as u64);
                            for (d, n) in m {
                                w.datum(d);
                                w.i64(*n);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A view loaded from bytes, with the offsets to read its sources from.
pub fn decode(
    plan: Arc<Plan>,
    sql: &str,
    bytes: &[u8],
) -> Result<(View, BTreeMap<SourcePartition, u64>)> {
    if bytes.len() < 24 || &bytes[..8] != MAGIC {
        return Err(Damaged("not a view state file".into()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(Damaged("checksum mismatch".into()));
    }
    let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(Damaged(format!(
            "state version {version}, expected {VERSION}"
        )));
    }
    let print = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes"));
    if print != fingerprint(sql) {
        return Err(Damaged("the state is of other SQL".into()));
    }
    let mut r = Reader::new(&body[20..]);
    let mut offsets = BTreeMap::new();
    for _ in 0..r.len()? {
        let t = r.str()?.to_string();
        let p = u32::try_from(r.u64()?).map_err(|_| Damaged("partition".into()))?;
        offsets.insert((t, p), r.u64()?);
    }
    let mut view = View::empty(plan.clone());
    for (s, table) in view.tables.iter_mut().enumerate() {
        let key_len = plan.scans[s].key_len;
        let n = r.len()?;
        table.reserve(n);
        for _ in 0..n {
            let row = r.row()?;
            if row.len() < key_len {
                return Err(Damaged("a source row shorter than its key".into()));
            }
            if table.put(row).is_some() {
                return Err(Damaged("two source rows with one key".into()));
            }
        }
    }
    decode_node(&mut view.root, &mut r)?;
    for _ in 0..r.len()? {
        let row = r.row()?;
        let weight = r.i64()?;
        let key = view.plan().key_text(&row);
        match view.output.rows.get_mut(&key) {
            Some(rows) => {
                rows.add(row, weight);
            }
            None => {
                view.output.rows.insert(key, Rows::One((row, weight)));
            }
        }
    }
    if !r.is_empty() {
        return Err(Damaged("bytes after the state".into()));
    }
    Ok((view, offsets))
}

fn decode_node(node: &mut Node, r: &mut Reader<'_>) -> Result<()> {
    match node {
        Node::Scan(_) => {}
        Node::Filter(input, _) | Node::Map(input, _) => decode_node(input, r)?,
        Node::Join(j) => {
            decode_node(&mut j.left, r)?;
            decode_node(&mut j.right, r)?;
            for (keys, index) in [
                (&j.left_keys, &mut j.left_index),
                (&j.right_keys, &mut j.right_index),
            ] {
                let n = r.len()?;
                index.reserve(n);
                for _ in 0..n {
                    let row = r.row()?;
                    let weight = r.i64()?;
                    // Keys were computed once already: they compute again.
                    let Ok(Some(key)) = join_key(keys, &row) else {
                        return Err(Damaged("a joined row without its key".into()));
                    };
                    add(index, key, row, weight);
                }
            }
        }
        Node::Aggregate(a) => {
            decode_node(&mut a.input, r)?;
            a.started = r.u8()? == 1;
            let n = r.len()?;
            a.groups.reserve(n);
            for _ in 0..n {
                let key = crate::datum::Key::from_vec(r.row()?.to_vec());
                let mut g: Group = a.fresh();
                g.rows = r.i64()?;
                for acc in &mut g.accs {
                    match acc {
                        Acc::Count(n) => *n = r.i64()?,
                        Acc::Sum {
                            ints,
                            floats,
                            float_values,
                            values,
                        } => {
                            *ints = r.i128()?;
                            *floats = r.f64()?;
                            *float_values = r.i64()?;
                            *values = r.i64()?;
                        }
                        Acc::Extreme(m) => {
                            for _ in 0..r.len()? {
                                let d = r.datum()?;
                                m.insert(d, r.i64()?);
                            }
                        }
                    }
                }
                a.groups.insert(key, g);
            }
        }
    }
    Ok(())
}

/// Writes bytes to `path` whole: a temporary file, fsync, rename, fsync of the dir.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
