//! A view's rows read straight from its state file, while the whole state loads.
//!
//! Loading a large view's state takes a while (every table, index and group is
//! rebuilt in memory); its rows are in the file already, in key order. `Frozen`
//! checks the file (one streaming pass for the checksum) and reads the output's
//! index the file keeps after the rows: the first key of every block of about
//! `snapshot::BLOCK` rows and where the block starts. A lookup finds its block in
//! memory and reads that block from the file (the page cache, mostly); a range reads
//! blocks in turn. Nothing of the file's size is allocated, so a node serves a large
//! view's reads as of its state within about the time it takes to read the file
//! once. `load` then decodes the whole state from the same file, each section read a
//! chunk at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::codec::{Damaged, Reader, Result, Source};
use crate::datum::{Datum, Row, Text};
use crate::plan::Plan;
use crate::runner::SourcePartition;
use crate::view::View;

/// How much of the file one read takes while checking and indexing it.
const CHUNK: usize = 4 << 20;
/// How much a lookup or range reads at once (about a block of rows).
const SCAN_CHUNK: usize = 8 << 10;

/// The rows of a view as its state file holds them.
#[derive(Debug)]
pub struct Frozen {
    plan: Arc<Plan>,
    file: File,
    /// Each block's first key and where it starts in the file; the last entry's
    /// offset is the end of the rows.
    blocks: Vec<(Text, u64)>,
    end: u64,
    /// Keys with a visible row.
    len: usize,
    /// The source offsets the rows reflect.
    pub offsets: BTreeMap<SourcePartition, u64>,
    /// Where each section of the state starts in the file, and its length.
    sections: Vec<(u64, u64)>,
}

/// A file read from a position on, a chunk at a time.
struct Chunks<'f> {
    file: &'f File,
    /// The file position of `buf[0]`.
    at: u64,
    buf: Vec<u8>,
    /// Where the next read starts in `buf`.
    pos: usize,
    end: u64,
    /// How much one read takes at least.
    chunk: usize,
}

impl<'f> Chunks<'f> {
    fn new(file: &'f File, at: u64, end: u64, chunk: usize) -> Chunks<'f> {
        Chunks {
            file,
            at,
            buf: Vec::new(),
            pos: 0,
            end,
            chunk,
        }
    }

    /// The file position of the next read.
    fn position(&self) -> u64 {
        self.at + self.pos as u64
    }

    fn done(&self) -> bool {
        self.position() >= self.end
    }

    /// Keeps the unread bytes and reads more after them (at least twice as many as
    /// are kept, so a value larger than a chunk still fits after enough calls).
    fn refill(&mut self) -> Result<()> {
        self.buf.drain(..self.pos);
        self.at += self.pos as u64;
        self.pos = 0;
        let kept = self.buf.len();
        let want = (self.end - self.at - kept as u64).min(self.chunk.max(2 * kept) as u64) as usize;
        if want == 0 {
            return Err(Damaged("the state file ends inside a row".into()));
        }
        self.buf.resize(kept + want, 0);
        self.file
            .read_exact_at(&mut self.buf[kept..], self.at + kept as u64)
            .map_err(|e| Damaged(format!("reading the state file: {e}")))
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        let to = self.position() + n;
        if to > self.end {
            return Err(Damaged("a section past the end of the state file".into()));
        }
        self.buf.clear();
        self.pos = 0;
        self.at = to;
        Ok(())
    }
}

impl Source for Chunks<'_> {
    /// Reads one value with `read`, refilling while the bytes at hand end inside it.
    fn next<T>(&mut self, mut read: impl FnMut(&mut Reader<'_>) -> Result<T>) -> Result<T> {
        loop {
            let mut r = Reader::new(&self.buf[self.pos..]);
            match read(&mut r) {
                Ok(v) => {
                    self.pos += r.position();
                    return Ok(v);
                }
                // Cut short by the end of the chunk, not of the file: read on.
                Err(_) if self.at + (self.buf.len() as u64) < self.end => self.refill()?,
                Err(e) => return Err(e),
            }
        }
    }

    fn left(&self) -> u64 {
        self.end - self.position()
    }
}

/// One output row as the file has it.
fn output_row(r: &mut Reader<'_>, values: &mut Vec<Datum>) -> Result<i64> {
    r.row_into(values)?;
    r.i64()
}

impl Frozen {
    /// Checks a state file (magic, version, SQL, checksum) and reads its output's
    /// index.
    pub fn open(plan: Arc<Plan>, sql: &str, path: &Path) -> Result<Frozen> {
        let io = |e: std::io::Error| Damaged(format!("reading {}: {e}", path.display()));
        let mut file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size < 24 {
            return Err(Damaged("not a view state file".into()));
        }
        // The checksum first, in one pass that allocates a chunk.
        let body = size - 4;
        let mut crc = 0;
        let mut buf = vec![0; CHUNK];
        let mut left = body;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            file.read_exact(&mut buf[..n]).map_err(io)?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            left -= n as u64;
        }
        let mut tail = [0; 4];
        file.read_exact(&mut tail).map_err(io)?;
        if crc != u32::from_le_bytes(tail) {
            return Err(Damaged("checksum mismatch".into()));
        }
        drop(buf);

        let mut c = Chunks::new(&file, 0, body, CHUNK);
        let head = c.next(|r| {
            let mut head = [0u8; 20];
            for b in &mut head {
                *b = r.u8()?;
            }
            Ok(head)
        })?;
        crate::snapshot::check_head(&head, sql)?;
        let offsets = c.next(|r| {
            let mut offsets = BTreeMap::new();
            for _ in 0..r.len()? {
                let t = r.str()?.to_string();
                let p = u32::try_from(r.u64()?).map_err(|_| Damaged("partition".into()))?;
                offsets.insert((t, p), r.u64()?);
            }
            Ok(offsets)
        })?;
        let n = c.count()?;
        let mut sections = Vec::with_capacity(n);
        for _ in 0..n {
            let len = c.next(|r| r.u64())?;
            let at = c.position();
            c.skip(len)?;
            sections.push((at, len));
        }
        if !c.done() {
            return Err(Damaged("bytes after the state".into()));
        }
        // The output's index is last, after the output.
        let (Some(&(index_at, index_len)), Some(&(rows_at, rows_len))) = (
            sections.last(),
            sections.len().checked_sub(2).map(|i| &sections[i]),
        ) else {
            return Err(Damaged("a state without its rows".into()));
        };
        let mut index = Chunks::new(&file, index_at, index_at + index_len, CHUNK);
        let len = usize::try_from(index.next(|r| r.u64())?)
            .map_err(|_| Damaged("a count of keys".into()))?;
        let n = index.count()?;
        let mut blocks: Vec<(Text, u64)> = Vec::with_capacity(n);
        for _ in 0..n {
            let (key, at) = index.next(|r| Ok((Text::new(r.str()?), r.u64()?)))?;
            let in_order = blocks
                .last()
                .is_none_or(|(k, a)| *k < key && *a < rows_at + at);
            if at >= rows_len || !in_order {
                return Err(Damaged("an index of the output out of order".into()));
            }
            blocks.push((key, rows_at + at));
        }
        if !index.done() {
            return Err(Damaged("bytes after the output's index".into()));
        }
        Ok(Frozen {
            plan,
            file,
            blocks,
            end: rows_at + rows_len,
            len,
            offsets,
            sections,
        })
    }

    /// The whole state from the file, its sections read a chunk at a time and decoded
    /// on as many threads as there are cores (the file was checked when opened).
    pub fn load(&self) -> Result<View> {
        let sections = self
            .sections
            .iter()
            .map(|&(at, len)| (len, Chunks::new(&self.file, at, at + len, CHUNK)))
            .collect();
        crate::snapshot::decode_sections(self.plan.clone(), sections)
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// How many keys have a row.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Visible rows in key order from block `from_block` on; `take` decides on each
    /// (key, row): keep it, skip it, or stop.
    fn scan(&self, from_block: usize, mut take: impl FnMut(&Text, &[Datum]) -> Step) {
        let Some((_, start)) = self.blocks.get(from_block) else {
            return;
        };
        let mut c = Chunks::new(&self.file, *start, self.end, SCAN_CHUNK);
        let mut values = Vec::new();
        let mut last: Option<Text> = None;
        while !c.done() {
            let Ok(weight) = c.next(|r| output_row(r, &mut values)) else {
                return;
            };
            if values.len() != self.plan.columns.len() {
                return;
            }
            let key = self.plan.key_text(&values);
            if weight <= 0 || last.as_ref() == Some(&key) {
                continue;
            }
            match take(&key, &values) {
                Step::Stop => return,
                Step::Skip | Step::Keep => last = Some(key),
            }
        }
    }

    /// The block where rows from `key` on start.
    fn block_of(&self, key: &str) -> usize {
        self.blocks
            .partition_point(|(k, _)| &**k <= key)
            .saturating_sub(1)
    }

    /// The row of a key.
    pub fn get(&self, key: &str) -> Option<Row> {
        let mut found = None;
        self.scan(self.block_of(key), |k, values| match (**k).cmp(key) {
            std::cmp::Ordering::Less => Step::Skip,
            std::cmp::Ordering::Equal => {
                found = Some(Row::from(values));
                Step::Stop
            }
            std::cmp::Ordering::Greater => Step::Stop,
        });
        found
    }

    /// Rows in key order from `from`, while their key starts with `prefix`.
    pub fn range(&self, from: Bound<&str>, prefix: &str, limit: usize) -> Vec<Row> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        let block = match from {
            Bound::Unbounded => 0,
            Bound::Included(k) | Bound::Excluded(k) => self.block_of(k),
        };
        self.scan(block, |k, values| {
            let before = match from {
                Bound::Unbounded => false,
                Bound::Included(f) => &**k < f,
                Bound::Excluded(f) => &**k <= f,
            };
            if before {
                return Step::Skip;
            }
            if !k.starts_with(prefix) {
                return Step::Stop;
            }
            out.push(Row::from(values));
            if out.len() >= limit {
                Step::Stop
            } else {
                Step::Keep
            }
        });
        out
    }
}

/// What a scan does with a row.
enum Step {
    Keep,
    Skip,
    Stop,
}
