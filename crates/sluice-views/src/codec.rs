//! A compact binary form of values and rows, for view state on disk. Sans-IO: bytes
//! in, bytes out; a truncated or damaged input is an error, never a panic.

use std::sync::Arc;

use crate::datum::{Datum, Key, Row};

/// The bytes of a number filled in later (63 bits).
const RESERVED_LEN: usize = 9;

#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    pub fn i128(&mut self, v: i128) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// Room for a number known only later (`fill_u64`).
    pub fn reserve_u64(&mut self) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; RESERVED_LEN]);
        at
    }

    /// Writes `v` into the room `reserve_u64` made at `at`: a varint padded to
    /// `RESERVED_LEN` bytes (each but the last says another follows), read as any.
    pub fn fill_u64(&mut self, at: usize, v: u64) {
        for (i, b) in self.buf[at..at + RESERVED_LEN].iter_mut().enumerate() {
            let bits = ((v >> (7 * i)) & 0x7f) as u8;
            *b = if i + 1 < RESERVED_LEN {
                bits | 0x80
            } else {
                bits
            };
        }
    }

    /// Starts a part written in place that `bytes` would have written from a copy.
    pub fn begin_part(&mut self) -> usize {
        self.reserve_u64()
    }

    /// Fills in the length of the part begun at `at`.
    pub fn end_part(&mut self, at: usize) {
        let len = self.buf.len() - at - RESERVED_LEN;
        self.fill_u64(at, len as u64);
    }

    pub fn datum(&mut self, d: &Datum) {
        match d {
            Datum::Null => self.buf.push(0),
            Datum::Bool(false) => self.buf.push(1),
            Datum::Bool(true) => self.buf.push(2),
            Datum::Int(i) => {
                self.buf.push(3);
                self.i64(*i);
            }
            Datum::Float(x) => {
                self.buf.push(4);
                self.f64(*x);
            }
            Datum::Str(s) => {
                self.buf.push(5);
                self.bytes(s.as_bytes());
            }
            Datum::Json(v) => {
                self.buf.push(6);
                self.str(&v.to_string());
            }
        }
    }

    pub fn row(&mut self, r: &[Datum]) {
        self.u64(r.len() as u64);
        for d in r {
            self.datum(d);
        }
    }
}

/// Why bytes could not be read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("damaged view state: {0}")]
pub struct Damaged(pub String);

pub type Result<T> = std::result::Result<T, Damaged>;

#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

/// Where the values of a part of the state come from: bytes in memory (a `Reader`),
/// or a file read a chunk at a time (`frozen`).
pub trait Source {
    /// Reads one value with `read`, which may be called again from the value's start
    /// (with more bytes at hand).
    fn next<T>(&mut self, read: impl FnMut(&mut Reader<'_>) -> Result<T>) -> Result<T>;

    /// How many bytes are left.
    fn left(&self) -> u64;

    /// A count of items, each at least one byte: no more than the bytes left.
    fn count(&mut self) -> Result<usize> {
        let n = self.next(|r| r.u64())?;
        if n > self.left() {
            return Err(Damaged(format!("a count of {n} past the end")));
        }
        usize::try_from(n).map_err(|_| Damaged(format!("a count of {n}")))
    }
}

impl Source for Reader<'_> {
    fn next<T>(&mut self, mut read: impl FnMut(&mut Reader<'_>) -> Result<T>) -> Result<T> {
        read(self)
    }

    fn left(&self) -> u64 {
        (self.buf.len() - self.at) as u64
    }
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.buf.len()
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| Damaged(format!("cut short at byte {}", self.at)))?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    #[inline]
    pub fn u64(&mut self) -> Result<u64> {
        // Most numbers (lengths, counts, small values) take one byte.
        if let Some(&b) = self.buf.get(self.at)
            && b < 0x80
        {
            self.at += 1;
            return Ok(u64::from(b));
        }
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(Damaged(format!("a number too long at byte {}", self.at)))
    }

    /// A count of items, each at least one byte: no allocation beyond the input.
    #[inline]
    pub fn len(&mut self) -> Result<usize> {
        let n = self.u64()?;
        if n > (self.buf.len() - self.at) as u64 {
            return Err(Damaged(format!("a count of {n} past the end")));
        }
        Ok(n as usize)
    }

    pub fn i64(&mut self) -> Result<i64> {
        let v = self.u64()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub fn i128(&mut self) -> Result<i128> {
        let b: [u8; 16] = self.take(16)?.try_into().expect("16 bytes");
        Ok(i128::from_le_bytes(b))
    }

    pub fn f64(&mut self) -> Result<f64> {
        let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
        Ok(f64::from_bits(u64::from_le_bytes(b)))
    }

    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    #[inline]
    pub fn str(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|e| Damaged(e.to_string()))
    }

    pub fn datum(&mut self) -> Result<Datum> {
        Ok(match self.u8()? {
            0 => Datum::Null,
            1 => Datum::Bool(false),
            2 => Datum::Bool(true),
            3 => Datum::Int(self.i64()?),
            4 => Datum::Float(self.f64()?),
            5 => Datum::str(self.str()?),
            6 => Datum::Json(Arc::new(
                serde_json::from_str(self.str()?).map_err(|e| Damaged(e.to_string()))?,
            )),
            t => return Err(Damaged(format!("unknown value tag {t}"))),
        })
    }

    pub fn row(&mut self) -> Result<Row> {
        let n = self.len()?;
        let mut failed = None;
        // Decoded straight into the row's one allocation (the iterator's exact size
        // is known), not into a buffer first.
        let row: Row = (0..n)
            .map(|_| {
                self.datum().unwrap_or_else(|e| {
                    failed.get_or_insert(e);
                    Datum::Null
                })
            })
            .collect();
        match failed {
            Some(e) => Err(e),
            None => Ok(row),
        }
    }

    /// Reads over one value, neither built nor checked; its tag.
    #[inline]
    pub fn skip(&mut self) -> Result<u8> {
        let tag = self.u8()?;
        match tag {
            0..=2 => {}
            3 => {
                self.u64()?;
            }
            4 => {
                self.take(8)?;
            }
            5 | 6 => {
                self.bytes()?;
            }
            t => return Err(Damaged(format!("unknown value tag {t}"))),
        }
        Ok(tag)
    }

    /// Reads over one value, checked as `datum` reads it but not built (JSON is not
    /// parsed); whether it is JSON.
    pub fn skip_datum(&mut self) -> Result<bool> {
        if self.buf.get(self.at) == Some(&5) {
            self.at += 1;
            // Nearly every text is ASCII, checked a word at a time; a short text takes
            // `from_utf8` several times as long.
            let b = self.bytes()?;
            if !b.is_ascii() {
                std::str::from_utf8(b).map_err(|e| Damaged(e.to_string()))?;
            }
            return Ok(false);
        }
        Ok(self.skip()? == 6)
    }

    /// The bytes read since position `from`.
    pub fn since(&self, from: usize) -> &'a [u8] {
        &self.buf[from.min(self.at)..self.at]
    }

    /// A row read as a key of the engine's maps (`Key::from_slice` of the row, with
    /// no row made in between).
    pub fn key(&mut self) -> Result<Key> {
        let n = self.len()?;
        if n == 1 {
            return Ok(Key::One(self.datum()?));
        }
        let values: Result<Box<[Datum]>> = (0..n).map(|_| self.datum()).collect();
        Ok(Key::Many(values?))
    }

    /// A row's values into `out` (cleared first): no allocation for the row.
    pub fn row_into(&mut self, out: &mut Vec<Datum>) -> Result<()> {
        out.clear();
        let n = self.len()?;
        for _ in 0..n {
            let d = self.datum()?;
            out.push(d);
        }
        Ok(())
    }

    /// Where the next read starts, in bytes from the beginning.
    pub fn position(&self) -> usize {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_round_trip_and_damage_is_an_error() {
        let row: Row = Row::from(vec![
            Datum::Null,
            Datum::Bool(true),
            Datum::Int(-300),
            Datum::Int(i64::MIN),
            Datum::Float(2.5),
            Datum::str("sku-ü"),
            Datum::Json(Arc::new(json!({"a": [1, 2]}))),
        ]);
        let mut w = Writer::default();
        w.row(&row);
        w.i128(-(1 << 100));
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.row().unwrap(), row);
        assert_eq!(r.i128().unwrap(), -(1 << 100));
        assert!(r.is_empty());
        for cut in 0..w.buf.len() - 16 {
            assert!(Reader::new(&w.buf[..cut]).row().is_err(), "cut at {cut}");
        }
        assert!(Reader::new(&[1, 9]).row().is_err(), "unknown tag");
        assert!(Reader::new(&[0xff; 11]).u64().is_err());
    }

    #[test]
    fn a_part_written_in_place_reads_as_length_prefixed_bytes() {
        let sizes = [0, 1, 127, 128, 16_383, 16_384, 300_000];
        let mut w = Writer::default();
        for n in sizes {
            let at = w.begin_part();
            w.buf.extend((0..n).map(|i| i as u8));
            w.end_part(at);
            w.u64(7);
        }
        let mut r = Reader::new(&w.buf);
        for n in sizes {
            let part = r.bytes().unwrap();
            assert_eq!(part.len(), n);
            assert!(part.iter().enumerate().all(|(i, b)| *b == i as u8));
            assert_eq!(r.u64().unwrap(), 7);
        }
        assert!(r.is_empty());
    }
}
