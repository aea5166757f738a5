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

/// A cursor as a position on the partition's line of offsets: `BEGIN` (and the offset
/// just before the oldest available event) is `oldest - 1`. `Err` names the available
/// range when the cursor points at deleted events or past the newest.
pub fn position(c: CursorOffset, oldest: u64, latest: u64) -> Result<i128, String> {
    let available = || {
        format!(
            "available: {} to {}",
            CursorOffset::At(oldest),
            CursorOffset::newest(oldest, latest)
        )
    };
    match c {
        CursorOffset::Begin => Ok(i128::from(oldest) - 1),
        CursorOffset::At(o) if o + 1 < oldest => Err(format!(
            "offset {c} is no longer available (retention); {}",
            available()
        )),
        CursorOffset::At(o) if o >= latest => Err(format!(
            "offset {c} is past the newest event; {}",
            available()
        )),
        CursorOffset::At(o) => Ok(i128::from(o)),
    }
}

/// The cursor `shift` events after (or before, when negative) `c`.
pub fn shifted(
    c: CursorOffset,
    shift: i64,
    oldest: u64,
    latest: u64,
) -> Result<CursorOffset, String> {
    let to = position(c, oldest, latest)? + i128::from(shift);
    if to < i128::from(oldest) - 1 {
        return Err(format!(
            "shifting {c} by {shift} lands before the oldest available event ({})",
            CursorOffset::At(oldest)
        ));
    }
    if to >= i128::from(latest) {
        return Err(format!(
            "shifting {c} by {shift} lands past the newest event ({})",
            CursorOffset::newest(oldest, latest)
        ));
    }
    Ok(u64::try_from(to).map_or(CursorOffset::Begin, CursorOffset::At))
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

    #[test]
    fn arithmetic_on_cursors() {
        // Events 10..20 are available.
        let (oldest, latest) = (10, 20);
        assert_eq!(position(CursorOffset::Begin, oldest, latest), Ok(9));
        assert_eq!(position(CursorOffset::At(9), oldest, latest), Ok(9));
        assert_eq!(position(CursorOffset::At(19), oldest, latest), Ok(19));
        assert!(
            position(CursorOffset::At(8), oldest, latest)
                .unwrap_err()
                .contains("retention")
        );
        assert!(
            position(CursorOffset::At(20), oldest, latest)
                .unwrap_err()
                .contains("past the newest")
        );
        assert_eq!(
            shifted(CursorOffset::Begin, 3, oldest, latest),
            Ok(CursorOffset::At(12))
        );
        assert_eq!(
            shifted(CursorOffset::At(12), -3, oldest, latest),
            Ok(CursorOffset::At(9))
        );
        assert!(shifted(CursorOffset::At(12), -4, oldest, latest).is_err());
        assert!(shifted(CursorOffset::At(12), 8, oldest, latest).is_err());
        assert_eq!(
            shifted(CursorOffset::Begin, 0, 0, 5),
            Ok(CursorOffset::Begin)
        );
    }
}
