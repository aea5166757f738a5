//! Record-batch framing (sans-IO): encoding, header parsing, CRC checks, decoding.
//! The byte layout is drawn in docs/design/log-format.md; keep the two in step.

use std::ops::Range;

use bytes::Bytes;

use super::varint;
use crate::types::{Header, Offset, Record, StoredRecord, Timestamp};

/// Bytes before the first record: base offset, length, CRC and the CRC'd fields.
pub const HEADER_LEN: usize = 44;
/// The CRC covers `[CRC_START, total_len)` followed by the base offset `[0, 8)`. The
/// body's CRC is computed when the batch is encoded, before its offset is known;
/// placing the batch extends it by the 8 offset bytes, so the writer never re-reads
/// the body and yet a flipped bit in the offset is caught.
pub const CRC_START: usize = 16;
/// Bytes counted by the length field are those after it.
const LENGTH_END: usize = 12;
pub const MAGIC: u8 = 1;
/// A batch larger than this is refused on append and treated as corrupt on read.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("unknown magic byte {0}")]
    BadMagic(u8),
    #[error("impossible batch length {0}")]
    BadLength(u64),
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("malformed record: {0}")]
    BadRecord(&'static str),
}

/// The fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub length: u32,
    pub crc: u32,
    pub attributes: u8,
    pub last_offset_delta: u32,
    pub record_count: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
}

impl BatchHeader {
    pub fn total_len(&self) -> usize {
        LENGTH_END + self.length as usize
    }

    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Parses and sanity-checks a header from the first `HEADER_LEN` bytes of `buf`.
pub fn decode_header(buf: &[u8]) -> Result<BatchHeader, FormatError> {
    if buf.len() < HEADER_LEN {
        return Err(FormatError::Truncated {
            needed: HEADER_LEN,
            available: buf.len(),
        });
    }
    let length = u32_at(buf, 8);
    let total = LENGTH_END as u64 + u64::from(length);
    if total < HEADER_LEN as u64 || total > MAX_BATCH_BYTES as u64 {
        return Err(FormatError::BadLength(total));
    }
    let magic = buf[16];
    if magic != MAGIC {
        return Err(FormatError::BadMagic(magic));
    }
    Ok(BatchHeader {
        base_offset: u64_at(buf, 0),
        length,
        crc: u32_at(buf, 12),
        attributes: buf[17],
        last_offset_delta: u32_at(buf, 20),
        record_count: u32_at(buf, 24),
        first_timestamp: u64_at(buf, 28) as i64,
        max_timestamp: u64_at(buf, 36) as i64,
    })
}

/// Checks the CRC of a whole batch (`batch.len() == header.total_len()`).
pub fn verify(batch: &[u8], header: &BatchHeader) -> Result<(), FormatError> {
    let total = header.total_len();
    if batch.len() < total {
        return Err(FormatError::Truncated {
            needed: total,
            available: batch.len(),
        });
    }
    let computed = crc32c::crc32c_append(crc32c::crc32c(&batch[CRC_START..total]), &batch[0..8]);
    if computed != header.crc {
        return Err(FormatError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Places an encoded batch at `base`: writes the offset and the CRC of body + offset.
/// `body_crc` is the CRC of `batch[CRC_START..]`, as `BatchBuilder::finish_body` returned.
pub fn set_base_offset(batch: &mut [u8], base: u64, body_crc: u32) {
    let base_bytes = base.to_le_bytes();
    let crc = crc32c::crc32c_append(body_crc, &base_bytes);
    batch[0..8].copy_from_slice(&base_bytes);
    batch[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// Builds one batch record by record. Offsets are deltas from the base offset, which
/// is set when the batch is placed in the log.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    last_offset_delta: u32,
}

impl BatchBuilder {
    pub fn new(first_timestamp: i64, capacity: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(HEADER_LEN + capacity);
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            first_timestamp,
            max_timestamp: i64::MIN,
            last_offset_delta: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    pub fn push(
        &mut self,
        offset_delta: u32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        let ts_delta = varint::zigzag(timestamp.wrapping_sub(self.first_timestamp));
        let nullable_len = |b: Option<&[u8]>| b.map_or(0, |b| b.len() as u64 + 1);
        let mut body = varint::len_u64(u64::from(offset_delta))
            + varint::len_u64(ts_delta)
            + varint::len_u64(nullable_len(key))
            + key.map_or(0, <[u8]>::len)
            + varint::len_u64(nullable_len(value))
            + value.map_or(0, <[u8]>::len)
            + varint::len_u64(headers.len() as u64);
        for h in headers {
            body += varint::len_u64(h.key.len() as u64)
                + h.key.len()
                + varint::len_u64(h.value.len() as u64)
                + h.value.len();
        }
        let out = &mut self.buf;
        out.reserve(body + 5);
        varint::put_u64(out, body as u64);
        varint::put_u64(out, u64::from(offset_delta));
        varint::put_u64(out, ts_delta);
        varint::put_u64(out, nullable_len(key));
        out.extend_from_slice(key.unwrap_or_default());
        varint::put_u64(out, nullable_len(value));
        out.extend_from_slice(value.unwrap_or_default());
        varint::put_u64(out, headers.len() as u64);
        for h in headers {
            varint::put_u64(out, h.key.len() as u64);
            out.extend_from_slice(h.key.as_bytes());
            varint::put_u64(out, h.value.len() as u64);
            out.extend_from_slice(&h.value);
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.last_offset_delta = offset_delta;
    }

    /// Fills in the header at `base_offset`, with its CRC.
    pub fn finish(self, base_offset: u64) -> Vec<u8> {
        let (mut buf, body_crc) = self.finish_body();
        set_base_offset(&mut buf, base_offset, body_crc);
        buf
    }

    /// Fills in the header but the base offset and CRC; returns the body's CRC for
    /// `set_base_offset`.
    pub fn finish_body(mut self) -> (Vec<u8>, u32) {
        let length = (self.buf.len() - LENGTH_END) as u32;
        let max_ts = if self.count == 0 {
            self.first_timestamp
        } else {
            self.max_timestamp
        };
        let b = &mut self.buf;
        b[8..12].copy_from_slice(&length.to_le_bytes());
        b[16] = MAGIC;
        b[17] = 0;
        b[18..20].copy_from_slice(&[0, 0]);
        b[20..24].copy_from_slice(&self.last_offset_delta.to_le_bytes());
        b[24..28].copy_from_slice(&self.count.to_le_bytes());
        b[28..36].copy_from_slice(&self.first_timestamp.to_le_bytes());
        b[36..44].copy_from_slice(&max_ts.to_le_bytes());
        let body_crc = crc32c::crc32c(&b[CRC_START..]);
        (self.buf, body_crc)
    }
}

/// An encoded batch of records to append, with its offsets still to be assigned.
#[derive(Debug)]
pub struct EncodedBatch {
    pub bytes: Vec<u8>,
    pub body_crc: u32,
    pub count: u32,
    pub max_timestamp: i64,
}

/// Encodes records for appending: offset deltas `0..n`, missing timestamps set to `now`.
pub fn encode_append(records: &[Record], now: Timestamp) -> Result<EncodedBatch, FormatError> {
    let first_ts = records.first().and_then(|r| r.timestamp).unwrap_or(now).0;
    let size_hint: usize = records
        .iter()
        .map(|r| {
            8 + r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())
        })
        .sum();
    let mut builder = BatchBuilder::new(first_ts, size_hint);
    for (i, r) in records.iter().enumerate() {
        let ts = r.timestamp.unwrap_or(now).0;
        builder.push(
            i as u32,
            ts,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
        if builder.encoded_len() > MAX_BATCH_BYTES {
            return Err(FormatError::BadLength(builder.encoded_len() as u64));
        }
    }
    let count = records.len() as u32;
    let max_timestamp = builder.max_timestamp;
    let (bytes, body_crc) = builder.finish_body();
    Ok(EncodedBatch {
        bytes,
        body_crc,
        count,
        max_timestamp,
    })
}

/// The range of a nullable field (`len + 1` varint, then bytes) at `*pos` in `body`.
fn nullable_span(body: &[u8], pos: &mut usize) -> Result<Option<Range<usize>>, FormatError> {
    let len = varint::get_u64(body, pos).ok_or(FormatError::BadRecord("length varint"))?;
    if len == 0 {
        return Ok(None);
    }
    span(body, pos, len - 1).map(Some)
}

/// The range of `len` bytes at `*pos`, which must lie inside `body`.
fn span(body: &[u8], pos: &mut usize, len: u64) -> Result<Range<usize>, FormatError> {
    let end = (*pos as u64)
        .checked_add(len)
        .filter(|&e| e <= body.len() as u64)
        .ok_or(FormatError::BadRecord("field runs past its record"))? as usize;
    let range = *pos..end;
    *pos = end;
    Ok(range)
}

/// Decodes the records of a verified batch. `batch` holds exactly the batch; the
/// returned keys and values share its memory.
pub fn decode_records(
    batch: &Bytes,
    header: &BatchHeader,
) -> Result<Vec<StoredRecord>, FormatError> {
    let mut out = Vec::with_capacity(header.record_count.min(1 << 16) as usize);
    decode_records_into(batch, header, 0, usize::MAX, &mut out)?;
    Ok(out)
}

/// Appends the batch's records with offsets at or after `from` to `out`, stopping when
/// `out` holds `limit` records.
pub fn decode_records_into(
    batch: &Bytes,
    header: &BatchHeader,
    from: u64,
    limit: usize,
    out: &mut Vec<StoredRecord>,
) -> Result<(), FormatError> {
    let mut pos = HEADER_LEN;
    for _ in 0..header.record_count {
        let body_len =
            varint::get_u64(batch, &mut pos).ok_or(FormatError::BadRecord("record length"))?;
        let end = (pos as u64)
            .checked_add(body_len)
            .filter(|&e| e <= batch.len() as u64)
            .ok_or(FormatError::BadRecord("record runs past the batch"))?
            as usize;
        // Every field of this record must lie inside its body.
        let body = &batch[..end];
        let delta = varint::get_u64(body, &mut pos).ok_or(FormatError::BadRecord("offset"))?;
        let ts = varint::get_u64(body, &mut pos).ok_or(FormatError::BadRecord("timestamp"))?;
        let key = nullable_span(body, &mut pos)?.map(|r| batch.slice(r));
        let value = nullable_span(body, &mut pos)?.map(|r| batch.slice(r));
        let n_headers =
            varint::get_u64(body, &mut pos).ok_or(FormatError::BadRecord("header count"))?;
        let mut headers = Vec::new();
        for _ in 0..n_headers {
            let klen = varint::get_u64(body, &mut pos).ok_or(FormatError::BadRecord("header"))?;
            let k = span(body, &mut pos, klen)?;
            let key = std::str::from_utf8(&body[k])
                .map_err(|_| FormatError::BadRecord("header key is not UTF-8"))?
                .to_owned();
            let vlen = varint::get_u64(body, &mut pos).ok_or(FormatError::BadRecord("header"))?;
            let value = batch.slice(span(body, &mut pos, vlen)?);
            headers.push(Header { key, value });
        }
        if pos != end || delta > u64::from(header.last_offset_delta) {
            return Err(FormatError::BadRecord(
                "record length or offset delta disagree",
            ));
        }
        let offset = header.base_offset + delta;
        if offset < from {
            continue;
        }
        if out.len() >= limit {
            break;
        }
        out.push(StoredRecord {
            offset: Offset(offset),
            timestamp: Timestamp(header.first_timestamp.wrapping_add(varint::unzigzag(ts))),
            key,
            value,
            headers,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::collection::vec(
                ("[a-z]{0,5}", proptest::collection::vec(any::<u8>(), 0..5)),
                0..3,
            ),
            proptest::option::of(-1_000_000i64..2_000_000_000_000),
        )
            .prop_map(|(k, v, h, ts)| Record {
                key: k.map(Bytes::from),
                value: v.map(Bytes::from),
                headers: h
                    .into_iter()
                    .map(|(key, value)| Header {
                        key,
                        value: Bytes::from(value),
                    })
                    .collect(),
                timestamp: ts.map(Timestamp),
            })
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(records in proptest::collection::vec(record(), 1..20), base in 0u64..1 << 50) {
            let now = Timestamp(1_700_000_000_000);
            let mut enc = encode_append(&records, now).unwrap();
            set_base_offset(&mut enc.bytes, base, enc.body_crc);
            let header = decode_header(&enc.bytes).unwrap();
            prop_assert_eq!(header.total_len(), enc.bytes.len());
            prop_assert_eq!(header.record_count as usize, records.len());
            verify(&enc.bytes, &header).unwrap();
            let bytes = Bytes::from(enc.bytes);
            let decoded = decode_records(&bytes, &header).unwrap();
            for (i, (r, d)) in records.iter().zip(&decoded).enumerate() {
                prop_assert_eq!(d.offset, Offset(base + i as u64));
                prop_assert_eq!(d.timestamp, r.timestamp.unwrap_or(now));
                prop_assert_eq!(&d.key, &r.key);
                prop_assert_eq!(&d.value, &r.value);
                prop_assert_eq!(&d.headers, &r.headers);
            }
        }

        #[test]
        fn any_flipped_bit_is_detected(records in proptest::collection::vec(record(), 1..5), bit in 0usize..10_000, base: u64) {
            let mut enc = encode_append(&records, Timestamp(0)).unwrap();
            set_base_offset(&mut enc.bytes, base, enc.body_crc);
            let mut bytes = enc.bytes;
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            let rejected = match decode_header(&bytes) {
                Err(_) => true,
                Ok(h) => verify(&bytes, &h).is_err(),
            };
            prop_assert!(rejected);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(h) = decode_header(&bytes) {
                let b = Bytes::from(bytes.clone());
                if h.total_len() <= b.len() {
                    let _ = decode_records(&b.slice(..h.total_len()), &h);
                }
            }
        }
    }
}
