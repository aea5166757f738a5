//! Sealed-segment index files (sans-IO): a checksummed header that summarises the
//! segment, followed by sparse entries. Two kinds share the layout:
//! the offset index (relative offset -> byte position) and the time index
//! (max timestamp so far -> relative offset). Layout in docs/design/log-format.md.

pub const MAGIC: [u8; 4] = *b"SLXI";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Offset = 1,
    Time = 2,
}

impl IndexKind {
    pub fn entry_len(self) -> usize {
        match self {
            IndexKind::Offset => 8,
            IndexKind::Time => 12,
        }
    }
}

/// What a sealed segment holds, stored in the header of both of its index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: u64,
    /// Exclusive end of the offset range the segment covers: the next segment's base.
    pub end_offset: u64,
    /// Bytes of the segment file covered (the file's length when sealed).
    pub log_bytes: u64,
    /// Largest record timestamp in the segment (`i64::MIN` when empty).
    pub max_timestamp: i64,
}

/// One offset-index entry: the batch with this relative base offset starts at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One time-index entry: records up to `relative_offset` have timestamps up to `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("index file too short")]
    Truncated,
    #[error("not a Sluice index file")]
    BadMagic,
    #[error("unsupported index version {0}")]
    BadVersion(u8),
    #[error("index kind mismatch")]
    WrongKind,
    #[error("index checksum mismatch")]
    Crc,
}

fn encode(kind: IndexKind, summary: &SegmentSummary, entries: &[u8], count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&summary.base_offset.to_le_bytes());
    out.extend_from_slice(&summary.end_offset.to_le_bytes());
    out.extend_from_slice(&summary.log_bytes.to_le_bytes());
    out.extend_from_slice(&summary.max_timestamp.to_le_bytes());
    out.extend_from_slice(&(count as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled below
    out.extend_from_slice(entries);
    let mut crc = crc32c::crc32c(&out[..44]);
    crc = crc32c::crc32c_append(crc, &out[HEADER_LEN..]);
    out[44..48].copy_from_slice(&crc.to_le_bytes());
    out
}

pub fn encode_offset_index(summary: &SegmentSummary, entries: &[OffsetEntry]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(entries.len() * 8);
    for e in entries {
        raw.extend_from_slice(&e.relative_offset.to_le_bytes());
        raw.extend_from_slice(&e.position.to_le_bytes());
    }
    encode(IndexKind::Offset, summary, &raw, entries.len())
}

pub fn encode_time_index(summary: &SegmentSummary, entries: &[TimeEntry]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(entries.len() * 12);
    for e in entries {
        raw.extend_from_slice(&e.timestamp.to_le_bytes());
        raw.extend_from_slice(&e.relative_offset.to_le_bytes());
    }
    encode(IndexKind::Time, summary, &raw, entries.len())
}

/// Parses a header; returns the summary and the number of entries.
pub fn decode_header(buf: &[u8], kind: IndexKind) -> Result<(SegmentSummary, u32), IndexError> {
    if buf.len() < HEADER_LEN {
        return Err(IndexError::Truncated);
    }
    if buf[0..4] != MAGIC {
        return Err(IndexError::BadMagic);
    }
    if buf[4] != VERSION {
        return Err(IndexError::BadVersion(buf[4]));
    }
    if buf[5] != kind as u8 {
        return Err(IndexError::WrongKind);
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut c = [0u8; 4];
    c.copy_from_slice(&buf[40..44]);
    let count = u32::from_le_bytes(c);
    Ok((
        SegmentSummary {
            base_offset: u64_at(8),
            end_offset: u64_at(16),
            log_bytes: u64_at(24),
            max_timestamp: u64_at(32) as i64,
        },
        count,
    ))
}

/// Checks a whole index file: header, length and checksum.
pub fn verify(buf: &[u8], kind: IndexKind) -> Result<(SegmentSummary, u32), IndexError> {
    let (summary, count) = decode_header(buf, kind)?;
    if buf.len() != HEADER_LEN + count as usize * kind.entry_len() {
        return Err(IndexError::Truncated);
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&buf[44..48]);
    let mut crc = crc32c::crc32c(&buf[..44]);
    crc = crc32c::crc32c_append(crc, &buf[HEADER_LEN..]);
    if crc != u32::from_le_bytes(stored) {
        return Err(IndexError::Crc);
    }
    Ok((summary, count))
}

pub fn decode_offset_entry(raw: &[u8]) -> OffsetEntry {
    let mut a = [0u8; 4];
    let mut b = [0u8; 4];
    a.copy_from_slice(&raw[0..4]);
    b.copy_from_slice(&raw[4..8]);
    OffsetEntry {
        relative_offset: u32::from_le_bytes(a),
        position: u32::from_le_bytes(b),
    }
}

pub fn decode_time_entry(raw: &[u8]) -> TimeEntry {
    let mut a = [0u8; 8];
    let mut b = [0u8; 4];
    a.copy_from_slice(&raw[0..8]);
    b.copy_from_slice(&raw[8..12]);
    TimeEntry {
        timestamp: i64::from_le_bytes(a),
        relative_offset: u32::from_le_bytes(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let s = SegmentSummary {
            base_offset: 100,
            end_offset: 250,
            log_bytes: 9000,
            max_timestamp: 42,
        };
        let entries = [
            OffsetEntry {
                relative_offset: 0,
                position: 0,
            },
            OffsetEntry {
                relative_offset: 70,
                position: 4100,
            },
        ];
        let buf = encode_offset_index(&s, &entries);
        assert_eq!(verify(&buf, IndexKind::Offset), Ok((s, 2)));
        assert_eq!(decode_offset_entry(&buf[HEADER_LEN + 8..]), entries[1]);
        assert_eq!(verify(&buf, IndexKind::Time), Err(IndexError::WrongKind));
        let mut bad = buf.clone();
        bad[HEADER_LEN + 3] ^= 4;
        assert_eq!(verify(&bad, IndexKind::Offset), Err(IndexError::Crc));
        assert_eq!(
            verify(&buf[..50], IndexKind::Offset),
            Err(IndexError::Truncated)
        );

        let t = encode_time_index(
            &s,
            &[TimeEntry {
                timestamp: 7,
                relative_offset: 3,
            }],
        );
        let (_, n) = verify(&t, IndexKind::Time).unwrap();
        assert_eq!(n, 1);
        assert_eq!(decode_time_entry(&t[HEADER_LEN..]).timestamp, 7);
    }
}
