//! A view's state on disk: every operator's state, the rows, and the source offsets
//! they reflect, in one file written whole (temporary file, fsync, rename), so state
//! and offsets can never disagree. A restart loads it and reads the log from there;
//! a fresh node can start from a copy of it ("a snapshot, a stream and a bunch of
//! deltas").
//!
//! ```text
//! "SLUICEVW" | version u32 LE | fingerprint of the SQL (u64 LE)
//! | offsets: n, (event type, partition, next offset)*
//! | sections: n, (byte length, bytes)*
//! | CRC32C of all the bytes before (u32 LE)
//! ```
//!
//! A section is one part of the state: each source table, each join's two indexes and
//! each aggregate's groups (operators in pre-order), and the output rows (in key
//! order). A hash table's section starts with its hasher's seed and lists its rows in
//! the order the table holds them, so the restored table, hashing alike, is filled
//! front to back (`datum::Seeded`). Sections are independent, so a load decodes them on all cores. The output
//! section alone answers reads while the rest loads (`frozen.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::codec::{Damaged, Reader, Result, Writer};
use crate::datum::{Key, Seeded, Text};
use crate::engine::{Acc, Group, Index, Node, Output, Rows, Side, add, join_key};
use crate::expr::Expr;
use crate::plan::{Agg, Plan};
use crate::runner::SourcePartition;
use crate::source::SourceTable;
use crate::view::View;

const MAGIC: &[u8; 8] = b"SLUICEVW";
/// Raised whenever the sections a plan has change (5: a join side made of tables
/// joined on their key has no index; 6: nor has an aggregate joined on its group
/// value, nor the right side of a left join on a table's key). A file of another
/// version is not used: the view is built from the log instead.
const VERSION: u32 = 6;

/// Identifies the SQL a state was computed for: state of other SQL is not loaded.
pub fn fingerprint(sql: &str) -> u64 {
    let crc = u64::from(crc32c::crc32c(sql.as_bytes()));
    (crc << 32) | (sql.len() as u64 & 0xffff_ffff)
}

/// One independent part of a view's state, borrowed to be written or filled.
enum Part<'a> {
    Table(&'a mut SourceTable),
    Index(&'a [Expr], &'a mut Index),
    Groups {
        aggs: &'a [Agg],
        started: &'a mut bool,
        groups: &'a mut HashMap<Key, Group, Seeded>,
    },
    Output(&'a Plan, &'a mut Output),
}

/// Parts of a state with their sections' bytes.
type Work<'a> = Vec<(Part<'a>, &'a [u8])>;

/// The parts of a view's state, in file order.
fn parts(view: &mut View) -> Vec<Part<'_>> {
    fn of_node<'a>(node: &'a mut Node, out: &mut Vec<Part<'a>>) {
        match node {
            Node::Scan(_) => {}
            Node::Filter(input, _) | Node::Map(input, _) => of_node(input, out),
            Node::Join(j) => {
                let crate::engine::Join {
                    left,
                    right,
                    left_keys,
                    right_keys,
                    left_index,
                    right_index,
                    ..
                } = &mut **j;
                of_node(left, out);
                of_node(right, out);
                // A side that is a source table has no state of its own.
                for (keys, side) in [(left_keys, left_index), (right_keys, right_index)] {
                    if let Side::Own(index) = side {
                        out.push(Part::Index(keys, index));
                    }
                }
            }
            Node::Aggregate(a) => {
                let crate::engine::Aggregate {
                    input,
                    aggs,
                    groups,
                    started,
                    ..
                } = &mut **a;
                of_node(input, out);
                out.push(Part::Groups {
                    aggs,
                    started,
                    groups,
                });
            }
        }
    }
    let View {
        plan,
        tables,
        root,
        output,
        ..
    } = view;
    let mut out: Vec<Part<'_>> = tables.iter_mut().map(Part::Table).collect();
    of_node(root, &mut out);
    out.push(Part::Output(plan, output));
    out
}

/// The bytes of a view's state and the offsets it reflects.
pub fn encode(view: &View, sql: &str, offsets: &BTreeMap<SourcePartition, u64>) -> Vec<u8> {
    encode_into(view, sql, offsets, Vec::new())
}

/// `encode` into `buf` (cleared first). A buffer kept from the last state saves
/// most of the time: a fresh one is memory the kernel must fault in and zero, and
/// grown as it fills it copies what it holds at each step (together about as long
/// as the encoding itself; the apply loop waits meanwhile).
pub fn encode_into(
    view: &View,
    sql: &str,
    offsets: &BTreeMap<SourcePartition, u64>,
    mut buf: Vec<u8>,
) -> Vec<u8> {
    buf.clear();
    let mut w = Writer { buf };
    w.buf.extend_from_slice(MAGIC);
    w.buf.extend_from_slice(&VERSION.to_le_bytes());
    w.buf.extend_from_slice(&fingerprint(sql).to_le_bytes());
    w.u64(offsets.len() as u64);
    for ((t, p), next) in offsets {
        w.str(t);
        w.u64(u64::from(*p));
        w.u64(*next);
    }
    w.u64((view.tables.len() + node_parts(&view.root) + 1) as u64);
    // Each section written in place, its length filled in after.
    let mut put = |w: &mut Writer, f: &dyn Fn(&mut Writer)| {
        let at = w.begin_part();
        f(w);
        w.end_part(at);
    };
    for table in &view.tables {
        put(&mut w, &|s| {
            s.buf.extend_from_slice(&table.seed().to_le_bytes());
            s.u64(table.len() as u64);
            in_groups(table.rows(), |r| touch(r), |row| s.row(row));
        });
    }
    encode_node(&view.root, &mut w, &mut put);
    put(&mut w, &|s| encode_rows(s, view.output.rows.values()));
    let crc = crc32c::crc32c(&w.buf);
    w.buf.extend_from_slice(&crc.to_le_bytes());
    w.buf
}

/// How many sections a node's state takes.
fn node_parts(node: &Node) -> usize {
    match node {
        Node::Scan(_) => 0,
        Node::Filter(input, _) | Node::Map(input, _) => node_parts(input),
        Node::Join(j) => {
            node_parts(&j.left)
                + node_parts(&j.right)
                + [&j.left_index, &j.right_index]
                    .iter()
                    .filter(|s| matches!(s, Side::Own(_)))
                    .count()
        }
        Node::Aggregate(a) => node_parts(&a.input) + 1,
    }
}

type Put<'a> = dyn FnMut(&mut Writer, &dyn Fn(&mut Writer)) + 'a;

fn encode_node(node: &Node, w: &mut Writer, put: &mut Put<'_>) {
    match node {
        Node::Scan(_) => {}
        Node::Filter(input, _) | Node::Map(input, _) => encode_node(input, w, put),
        Node::Join(j) => {
            encode_node(&j.left, w, put);
            encode_node(&j.right, w, put);
            for side in [&j.left_index, &j.right_index] {
                if let Side::Own(index) = side {
                    put(w, &|s| {
                        s.buf.extend_from_slice(&index.hasher().seed.to_le_bytes());
                        encode_rows(s, index.values());
                    });
                }
            }
        }
        Node::Aggregate(a) => {
            encode_node(&a.input, w, put);
            put(w, &|s| {
                s.buf.push(u8::from(a.started));
                s.buf
                    .extend_from_slice(&a.groups.hasher().seed.to_le_bytes());
                s.u64(a.groups.len() as u64);
                in_groups(
                    a.groups.iter(),
                    |(key, g)| {
                        touch(key.values());
                        touch(&g.accs);
                    },
                    |(key, g)| {
                        s.row(key.values());
                        s.i64(g.rows);
                        for acc in &g.accs {
                            encode_acc(s, acc);
                        }
                    },
                );
            });
        }
    }
}

fn encode_acc(w: &mut Writer, acc: &Acc) {
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

fn encode_rows<'a>(w: &mut Writer, rows: impl Iterator<Item = &'a Rows>) {
    // Counted as they are written: one walk over the rows, not two.
    let count = w.reserve_u64();
    let mut n = 0;
    in_groups(
        rows.flatten(),
        |(row, _)| touch(row),
        |(row, weight)| {
            w.row(row);
            w.i64(*weight);
            n += 1;
        },
    );
    w.fill_u64(count, n);
}

/// Rows ahead of the writer at once, touched before they are written.
const AHEAD: usize = 16;

/// Hands `items` to `f` in order, AHEAD at a time, each group's items first touched
/// together. What a table entry points to (a row, a group's accumulators) lies
/// scattered over the heap, so each is a cache miss: touched one by one as they are
/// written, the misses are waited for one after another; touched together
/// (independent loads), the processor waits for them at once. Halves the encoding.
fn in_groups<T>(items: impl Iterator<Item = T>, touch: impl Fn(&T), mut f: impl FnMut(T)) {
    let mut group: Vec<T> = Vec::with_capacity(AHEAD);
    let mut items = items.peekable();
    while items.peek().is_some() {
        group.extend(items.by_ref().take(AHEAD));
        group.iter().for_each(&touch);
        group.drain(..).for_each(&mut f);
    }
}

/// Loads the first value of a slice (see `in_groups`). Only the first: loading every
/// value of a row made the encoding slower again (more work than the misses it saved).
fn touch<T>(values: &[T]) {
    if let Some(first) = values.first() {
        std::hint::black_box(std::mem::discriminant(first));
    }
}

/// Checks the first 20 bytes of a state file: magic, version, and the SQL's fingerprint.
pub(crate) fn check_head(head: &[u8], sql: &str) -> Result<()> {
    if head.len() < 20 || &head[..8] != MAGIC {
        return Err(Damaged("not a view state file".into()));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(Damaged(format!(
            "state version {version}, expected {VERSION}"
        )));
    }
    let print = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
    if print != fingerprint(sql) {
        return Err(Damaged("the state is of other SQL".into()));
    }
    Ok(())
}

/// A state file's source offsets and its sections.
pub(crate) type Opened<'a> = (BTreeMap<SourcePartition, u64>, Vec<&'a [u8]>);

/// The offsets and the sections of a state file, checked (magic, version, SQL, CRC).
pub(crate) fn open<'a>(sql: &str, bytes: &'a [u8]) -> Result<Opened<'a>> {
    if bytes.len() < 24 || &bytes[..8] != MAGIC {
        return Err(Damaged("not a view state file".into()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(Damaged("checksum mismatch".into()));
    }
    check_head(&body[..20], sql)?;
    let mut r = Reader::new(&body[20..]);
    let mut offsets = BTreeMap::new();
    for _ in 0..r.len()? {
        let t = r.str()?.to_string();
        let p = u32::try_from(r.u64()?).map_err(|_| Damaged("partition".into()))?;
        offsets.insert((t, p), r.u64()?);
    }
    let mut sections = Vec::new();
    for _ in 0..r.len()? {
        sections.push(r.bytes()?);
    }
    if !r.is_empty() {
        return Err(Damaged("bytes after the state".into()));
    }
    Ok((offsets, sections))
}

/// A view loaded from bytes, with the offsets to read its sources from. Sections are
/// decoded on as many threads as there are cores.
pub fn decode(
    plan: Arc<Plan>,
    sql: &str,
    bytes: &[u8],
) -> Result<(View, BTreeMap<SourcePartition, u64>)> {
    let (offsets, sections) = open(sql, bytes)?;
    let mut view = View::empty(plan);
    let parts = parts(&mut view);
    if parts.len() != sections.len() {
        return Err(Damaged(format!(
            "{} sections, the view has {} parts",
            sections.len(),
            parts.len()
        )));
    }
    // The largest sections first, each to the least loaded thread.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(parts.len());
    let mut work: Work<'_> = parts.into_iter().zip(sections).collect();
    work.sort_by_key(|(_, b)| std::cmp::Reverse(b.len()));
    let mut bins: Vec<(usize, Work<'_>)> = (0..threads).map(|_| (0, Vec::new())).collect();
    for item in work {
        let bin = bins
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("one thread at least");
        bin.0 += item.1.len();
        bin.1.push(item);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = bins
            .into_iter()
            .map(|(_, items)| {
                s.spawn(move || {
                    items
                        .into_iter()
                        .try_for_each(|(part, bytes)| decode_part(part, bytes))
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Damaged("a decoder panicked".into())))
        })
    })?;
    Ok((view, offsets))
}

/// The seed of a table's hasher, as written (`datum::Seeded`).
fn seed(r: &mut Reader<'_>) -> Result<u64> {
    let mut b = [0u8; 8];
    for x in &mut b {
        *x = r.u8()?;
    }
    Ok(u64::from_le_bytes(b))
}

fn decode_part(part: Part<'_>, bytes: &[u8]) -> Result<()> {
    let mut r = Reader::new(bytes);
    match part {
        Part::Table(table) => {
            // The written table's seed: its rows come in the order of their places.
            table.reseed(seed(&mut r)?);
            let n = r.len()?;
            table.reserve(n);
            for _ in 0..n {
                let row = r.row()?;
                if row.len() < table.key_len() {
                    return Err(Damaged("a source row shorter than its key".into()));
                }
                if table.put(row).is_some() {
                    return Err(Damaged("two source rows with one key".into()));
                }
            }
        }
        Part::Index(keys, index) => {
            let s = seed(&mut r)?;
            let n = r.len()?;
            *index = Index::with_capacity_and_hasher(n, Seeded::with_seed(s));
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
        Part::Groups {
            aggs,
            started,
            groups,
        } => {
            *started = r.u8()? == 1;
            let s = seed(&mut r)?;
            let n = r.len()?;
            *groups = HashMap::with_capacity_and_hasher(n, Seeded::with_seed(s));
            for _ in 0..n {
                let key = Key::from_slice(&r.row()?);
                let mut g = Group {
                    rows: r.i64()?,
                    accs: aggs.iter().map(|a| Acc::new(a.func)).collect(),
                };
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
                groups.insert(key, g);
            }
        }
        Part::Output(plan, output) => {
            // Written in key order: the map is built in one pass.
            let n = r.len()?;
            let mut rows: Vec<(Text, Rows)> = Vec::with_capacity(n);
            for _ in 0..n {
                let row = r.row()?;
                let weight = r.i64()?;
                let key = plan.key_text(&row);
                match rows.last_mut() {
                    Some((k, rs)) if *k == key => {
                        rs.add(row, weight);
                    }
                    Some((k, _)) if *k > key => {
                        return Err(Damaged("output rows out of key order".into()));
                    }
                    _ => rows.push((key, Rows::One((row, weight)))),
                }
            }
            output.rows = rows.into_iter().collect();
        }
    }
    if !r.is_empty() {
        return Err(Damaged("bytes after a section".into()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_groups_hands_every_item_once_in_order() {
        for n in [0, 1, AHEAD - 1, AHEAD, AHEAD + 1, 3 * AHEAD + 5] {
            let touched = std::cell::Cell::new(0);
            let mut seen = Vec::new();
            in_groups(0..n, |_| touched.set(touched.get() + 1), |i| seen.push(i));
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
            assert_eq!(touched.get(), n);
        }
    }
}
