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
//! A section is one part of the state: each source table, each join's indexes of its
//! own and each aggregate's groups (operators in pre-order), then the output rows (in
//! key order), then the output's index. A hash table's section starts with its
//! hasher's seed and lists its rows in the order the table holds them, so the
//! restored table, hashing alike, is filled front to back (`datum::Seeded`). Sections
//! are independent, so a load decodes them on all cores, each read from the file a
//! chunk at a time (`Frozen::load`). The output section alone answers reads while the
//! rest loads (`frozen.rs`), found by its index: how many keys have a visible row,
//! then the first key of every block of about `BLOCK` rows and where the block starts
//! in the output section (so opening a file reads no row).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::codec::{Damaged, Reader, Result, Source, Writer};
use crate::datum::{Key, Seeded};
use crate::engine::{Acc, Group, Index, Node, Output, Rows, Side, add, join_key};
use crate::expr::Expr;
use crate::plan::{Agg, Plan};
use crate::runner::SourcePartition;
use crate::table::SourceTable;
use crate::view::View;

const MAGIC: &[u8; 8] = b"SLUICEVW";
/// Raised whenever the sections a plan has change (5: a join side made of tables
/// joined on their key has no index; 6: nor has an aggregate joined on its group
/// value, nor the right side of a left join on a table's key; 7: the output's index
/// follows the output; 8: a source table hashes its rows by the bytes of their key,
/// so its rows are listed in another order). A file of another version is not used:
/// the view is built from the log instead.
const VERSION: u32 = 8;

/// Rows per block of the output's index (a block also ends only where a key's rows
/// do): a lookup in the file reads about this many rows.
pub(crate) const BLOCK: usize = 32;

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
    w.u64((view.tables.len() + node_parts(&view.root) + 2) as u64);
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
            in_groups(table.rows(), |r| r.touch(), |row| row.write(s));
        });
    }
    encode_node(&view.root, &mut w, &mut put);
    let at = w.begin_part();
    let index = encode_output(&mut w, &view.output);
    w.end_part(at);
    put(&mut w, &|s| s.buf.extend_from_slice(&index.buf));
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

/// The output's rows in key order (as `encode_rows`), and returns their index.
fn encode_output(w: &mut Writer, output: &Output) -> Writer {
    let start = w.buf.len();
    let count = w.reserve_u64();
    let mut blocks = Writer::default();
    let (mut rows, mut keys, mut n_blocks, mut in_block) = (0, 0, 0, BLOCK);
    in_groups(
        output.slots(),
        |(_, slot)| slot.touch(),
        |(key, slot)| {
            if in_block >= BLOCK {
                blocks.str(key);
                blocks.u64((w.buf.len() - start) as u64);
                n_blocks += 1;
                in_block = 0;
            }
            let n = slot.write(w);
            rows += n;
            in_block += n as usize;
            keys += u64::from(slot.has_visible());
        },
    );
    w.fill_u64(count, rows);
    let mut index = Writer::default();
    index.u64(keys);
    index.u64(n_blocks);
    index.buf.extend_from_slice(&blocks.buf);
    index
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
    let sources = sections
        .into_iter()
        .map(|b| (b.len() as u64, Reader::new(b)))
        .collect();
    Ok((decode_sections(plan, sources)?, offsets))
}

/// A view from its sections (the output's index, last, is not read), each with its
/// length in bytes, decoded on as many threads as there are cores.
pub(crate) fn decode_sections<S: Source + Send>(
    plan: Arc<Plan>,
    mut sections: Vec<(u64, S)>,
) -> Result<View> {
    let mut view = View::empty(plan);
    let parts = parts(&mut view);
    if parts.len() + 1 != sections.len() {
        return Err(Damaged(format!(
            "{} sections, the view has {} parts and the output's index",
            sections.len(),
            parts.len()
        )));
    }
    sections.pop();
    // The largest sections first, each taken by the next thread that is free (the
    // time a section takes depends on what it holds, not only on its bytes).
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(parts.len());
    let mut work: Vec<(Part<'_>, (u64, S))> = parts.into_iter().zip(sections).collect();
    work.sort_by_key(|(_, (len, _))| std::cmp::Reverse(*len));
    let queue = std::sync::Mutex::new(work.into_iter());
    let next = || {
        queue
            .lock()
            .map_err(|_| Damaged("a decoder panicked".into()))
            .map(|mut q| q.next())
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    while let Some((part, (_, mut source))) = next()? {
                        decode_part(part, &mut source)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Damaged("a decoder panicked".into())))
        })
    })?;
    Ok(view)
}

/// The seed of a table's hasher, as written (`datum::Seeded`).
fn seed(r: &mut Reader<'_>) -> Result<u64> {
    let mut b = [0u8; 8];
    for x in &mut b {
        *x = r.u8()?;
    }
    Ok(u64::from_le_bytes(b))
}

/// A row and its weight.
fn weighted(r: &mut Reader<'_>) -> Result<(crate::datum::Row, i64)> {
    Ok((r.row()?, r.i64()?))
}

fn decode_part(part: Part<'_>, src: &mut impl Source) -> Result<()> {
    match part {
        Part::Table(table) => {
            // The written table's seed: its rows come in the order of their places.
            table.reseed(src.next(seed)?);
            let n = src.count()?;
            table.reserve(n);
            for _ in 0..n {
                if src.next(|r| table.read_row(r))? {
                    return Err(Damaged("two source rows with one key".into()));
                }
            }
        }
        Part::Index(keys, index) => {
            let s = src.next(seed)?;
            let n = src.count()?;
            *index = Index::with_capacity_and_hasher(n, Seeded::with_seed(s));
            for _ in 0..n {
                let (row, weight) = src.next(weighted)?;
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
            *started = src.next(|r| r.u8())? == 1;
            let s = src.next(seed)?;
            let n = src.count()?;
            *groups = HashMap::with_capacity_and_hasher(n, Seeded::with_seed(s));
            for _ in 0..n {
                let (key, g) = src.next(|r| group(r, aggs))?;
                groups.insert(key, g);
            }
        }
        Part::Output(plan, output) => output.read(plan, src)?,
    }
    if src.left() != 0 {
        return Err(Damaged("bytes after a section".into()));
    }
    Ok(())
}

/// One group of an aggregate: its key, then its state.
fn group(r: &mut Reader<'_>, aggs: &[Agg]) -> Result<(Key, Group)> {
    let key = r.key()?;
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
    Ok((key, g))
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
