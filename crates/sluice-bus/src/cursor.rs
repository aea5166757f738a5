//! Nakadi-style opaque cursor offsets (sans-IO): `001-0001-000000000000000042`, a format
//! version, a timeline (always 0001 here) and the log offset, zero-padded to 18 digits
//! so that offsets of a partition sort as strings. `BEGIN` (any case) means "before the
//! first event"; bare numbers, Nakadi's legacy format, are accepted too.

use std::fmt;

const PREFIX: &str = "001-0001-";

/// A position in a partition as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CursorOffset {
    /// Before the first event of the partition.
    Begin,
    /// The event at this log offset (consumed up to and including it).
    At(u64),
}

impl CursorOffset {
    pub fn parse(s: &str) -> Option<CursorOffset> {
        if s.eq_ignore_ascii_case("begin") {
            return Some(CursorOffset::Begin);
        }
        let digits = s.strip_prefix(PREFIX).unwrap_or(s);
        if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(CursorOffset::At)
    }

    /// The cursor for the newest event below `latest` (the log's next offset), or
    /// `BEGIN` when nothing was ever written below `earliest`.
    pub fn newest(earliest: u64, latest: u64) -> CursorOffset {
        if latest > earliest {
            CursorOffset::At(latest - 1)
        } else {
            CursorOffset::Begin
        }
    }
}

impl fmt::Display for CursorOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CursorOffset::Begin => f.write_str("BEGIN"),
            CursorOffset::At(o) => write!(f, "{PREFIX}{o:018}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_order() {
        let c = CursorOffset::At(42);
        assert_eq!(c.to_string(), "001-0001-000000000000000042");
        assert_eq!(CursorOffset::parse(&c.to_string()), Some(c));
        assert_eq!(CursorOffset::parse("begin"), Some(CursorOffset::Begin));
        assert_eq!(CursorOffset::parse("BEGIN"), Some(CursorOffset::Begin));
        assert_eq!(CursorOffset::parse("17"), Some(CursorOffset::At(17)));
        for bad in ["", "001-0001-", "x", "001-0001--1", "-5", "001-0002-12a"] {
            assert_eq!(CursorOffset::parse(bad), None, "{bad}");
        }
        let a = CursorOffset::At(9).to_string();
        let b = CursorOffset::At(10).to_string();
        assert!(a < b, "offsets sort as strings");
        assert_eq!(CursorOffset::newest(0, 0), CursorOffset::Begin);
        assert_eq!(CursorOffset::newest(0, 5), CursorOffset::At(4));
    }
}
