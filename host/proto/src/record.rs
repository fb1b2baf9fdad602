//! The commit-log record: how one stored message is laid out on disk and on the replication wire.
//!
//! The shape follows RocketMQ's commit-log record (total size, magic, queue id and offsets, system
//! flags, timestamps, hosts, reconsume count, transaction offset, topic, properties, body), with two
//! deliberate changes: a CRC32C covers the whole record rather than only the body, so recovery can tell
//! a torn or corrupt record from a valid one; and the variable fields come in the order topic,
//! properties, body, so that reading a message's metadata never touches its body. All integers are
//! big-endian.
//!
//! ```text
//!   0 total_bytes u32     4 magic u32          8 crc32c u32 (of bytes 12..total)
//!  12 sys_flag u32       16 flag u32          20 queue_id u32
//!  24 queue_offset u64   32 physical_offset u64
//!  40 born_timestamp_ms i64                   48 store_timestamp_ms i64
//!  56 born_host (16-byte IPv6 or v4-mapped address, u16 port)
//!  74 store_host (same)
//!  92 reconsume_times u32                     96 prepared_tx_offset u64
//! 104 topic_bytes u16   106 properties_bytes u16                 108 body_bytes u32
//! 112 topic, properties, body
//! ```
//!
//! A segment that cannot hold the next record ends with a *filler*: `total_bytes` (the rest of the
//! segment) and [`FILLER_MAGIC`]; its remaining bytes are not read.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use thiserror::Error;

/// Magic of a message record, format version 1.
pub const RECORD_MAGIC: u32 = 0xF3B1_0A01;
/// Magic of the filler that closes a segment.
pub const FILLER_MAGIC: u32 = 0xF3B1_0AFF;
/// Bytes of the fixed record header, before topic, properties and body.
pub const HEADER_BYTES: usize = 112;
/// Bytes a filler needs; a segment always keeps this much room after its last record.
pub const FILLER_BYTES_MIN: usize = 8;
/// Longest topic name the record can carry.
pub const TOPIC_BYTES_MAX: usize = u16::MAX as usize;
/// Longest encoded property string the record can carry.
pub const PROPERTIES_BYTES_MAX: usize = u16::MAX as usize;

/// Offset of the first byte the CRC covers.
const CRC_FROM: usize = 12;

/// System flag bits, as RocketMQ assigns them.
pub mod sys_flag {
    pub const COMPRESSED: u32 = 0x1;
    pub const MULTI_TAGS: u32 = 0x2;
    pub const TRANSACTION_PREPARED: u32 = 0x4;
    pub const TRANSACTION_COMMIT: u32 = 0x8;
    pub const TRANSACTION_ROLLBACK: u32 = 0xC;
    pub const TRANSACTION_MASK: u32 = 0xC;
    /// ferrymq's own: another record of the same atomic batch follows. Recovery keeps a batch whole
    /// or drops it whole.
    pub const BATCH_CONTINUES: u32 = 0x4000_0000;
}

/// The fixed-size fields of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub sys_flag: u32,
    pub flag: u32,
    pub queue_id: u32,
    /// Position of the message in its consume queue; assigned by the log writer.
    pub queue_offset: u64,
    /// Position of this record in the commit log; assigned by the log writer.
    pub physical_offset: u64,
    pub born_timestamp_ms: i64,
    /// Assigned by the log writer.
    pub store_timestamp_ms: i64,
    pub born_host: SocketAddr,
    pub store_host: SocketAddr,
    pub reconsume_times: u32,
    pub prepared_tx_offset: u64,
}

/// A decoded record borrowing its variable fields from the buffer it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub meta: RecordMeta,
    pub topic: &'a str,
    /// Encoded properties; see [`crate::properties`].
    pub properties: &'a [u8],
    pub body: &'a [u8],
}

/// What starts at a position of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    Record { record: RecordRef<'a>, total_bytes: usize },
    Filler { total_bytes: usize },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record needs {need} bytes, only {have} are left")]
    Truncated { need: usize, have: usize },
    #[error("unknown record magic {0:#010x}")]
    BadMagic(u32),
    #[error("record length {total} is inconsistent with its fields ({fields})")]
    BadLength { total: usize, fields: usize },
    #[error("record checksum {stored:#010x} does not match its contents ({computed:#010x})")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record says it sits at offset {stored}, but was read at {expected}")]
    OffsetMismatch { stored: u64, expected: u64 },
    #[error("record topic is not valid UTF-8")]
    TopicNotUtf8,
    #[error("topic of {0} bytes exceeds the record limit of {TOPIC_BYTES_MAX}")]
    TopicTooLong(usize),
    #[error("properties of {0} bytes exceed the record limit of {PROPERTIES_BYTES_MAX}")]
    PropertiesTooLong(usize),
    #[error("body of {0} bytes exceeds the record limit of {max}", max = u32::MAX)]
    BodyTooLong(usize),
}

/// Bytes the record for these variable fields takes.
pub fn encoded_len(topic: &str, properties: &[u8], body: &[u8]) -> usize {
    HEADER_BYTES + topic.len() + properties.len() + body.len()
}

/// Appends the record to `out`, computing its checksum.
pub fn encode(
    meta: &RecordMeta,
    topic: &str,
    properties: &[u8],
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    let topic_len = u16::try_from(topic.len()).map_err(|_| RecordError::TopicTooLong(topic.len()))?;
    let props_len = u16::try_from(properties.len()).map_err(|_| RecordError::PropertiesTooLong(properties.len()))?;
    let body_len = u32::try_from(body.len()).map_err(|_| RecordError::BodyTooLong(body.len()))?;
    let total = encoded_len(topic, properties, body);
    let total_u32 = u32::try_from(total).map_err(|_| RecordError::BodyTooLong(body.len()))?;

    let start = out.len();
    out.reserve(total);
    out.extend_from_slice(&total_u32.to_be_bytes());
    out.extend_from_slice(&RECORD_MAGIC.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // checksum, filled in below
    out.extend_from_slice(&meta.sys_flag.to_be_bytes());
    out.extend_from_slice(&meta.flag.to_be_bytes());
    out.extend_from_slice(&meta.queue_id.to_be_bytes());
    out.extend_from_slice(&meta.queue_offset.to_be_bytes());
    out.extend_from_slice(&meta.physical_offset.to_be_bytes());
    out.extend_from_slice(&meta.born_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&meta.store_timestamp_ms.to_be_bytes());
    put_host(out, meta.born_host);
    put_host(out, meta.store_host);
    out.extend_from_slice(&meta.reconsume_times.to_be_bytes());
    out.extend_from_slice(&meta.prepared_tx_offset.to_be_bytes());
    out.extend_from_slice(&topic_len.to_be_bytes());
    out.extend_from_slice(&props_len.to_be_bytes());
    out.extend_from_slice(&body_len.to_be_bytes());
    debug_assert_eq!(out.len() - start, HEADER_BYTES);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(properties);
    out.extend_from_slice(body);
    debug_assert_eq!(out.len() - start, total);

    let crc = crc32c::crc32c(&out[start + CRC_FROM..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Appends a filler of `total_bytes` (at least [`FILLER_BYTES_MIN`]); only its 8-byte head is written.
pub fn encode_filler_head(total_bytes: u32, out: &mut Vec<u8>) {
    debug_assert!(total_bytes as usize >= FILLER_BYTES_MIN);
    out.extend_from_slice(&total_bytes.to_be_bytes());
    out.extend_from_slice(&FILLER_MAGIC.to_be_bytes());
}

/// How much checking [`decode`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Check the checksum and that the record sits where it says: for data of unknown integrity
    /// (recovery, replication input).
    Full,
    /// Check structure only: for data this process wrote and published itself.
    Structure,
}

/// Decodes the entry at the start of `buf`, which was read at commit-log offset `at`.
pub fn decode(buf: &[u8], at: u64, verify: Verify) -> Result<Entry<'_>, RecordError> {
    let total = read_u32(buf, 0)? as usize;
    let magic = read_u32(buf, 4)?;
    match magic {
        FILLER_MAGIC => {
            if total < FILLER_BYTES_MIN {
                return Err(RecordError::BadLength { total, fields: FILLER_BYTES_MIN });
            }
            Ok(Entry::Filler { total_bytes: total })
        }
        RECORD_MAGIC => decode_record(buf, total, at, verify),
        other => Err(RecordError::BadMagic(other)),
    }
}

fn decode_record(buf: &[u8], total: usize, at: u64, verify: Verify) -> Result<Entry<'_>, RecordError> {
    if total < HEADER_BYTES {
        return Err(RecordError::BadLength { total, fields: HEADER_BYTES });
    }
    if buf.len() < total {
        return Err(RecordError::Truncated { need: total, have: buf.len() });
    }
    let rec = &buf[..total];
    let topic_len = usize::from(read_u16(rec, 104)?);
    let props_len = usize::from(read_u16(rec, 106)?);
    let body_len = read_u32(rec, 108)? as usize;
    let fields = HEADER_BYTES + topic_len + props_len + body_len;
    if fields != total {
        return Err(RecordError::BadLength { total, fields });
    }
    let meta = RecordMeta {
        sys_flag: read_u32(rec, 12)?,
        flag: read_u32(rec, 16)?,
        queue_id: read_u32(rec, 20)?,
        queue_offset: read_u64(rec, 24)?,
        physical_offset: read_u64(rec, 32)?,
        born_timestamp_ms: read_u64(rec, 40)? as i64,
        store_timestamp_ms: read_u64(rec, 48)? as i64,
        born_host: read_host(rec, 56)?,
        store_host: read_host(rec, 74)?,
        reconsume_times: read_u32(rec, 92)?,
        prepared_tx_offset: read_u64(rec, 96)?,
    };
    if verify == Verify::Full {
        let stored = read_u32(rec, 8)?;
        let computed = crc32c::crc32c(&rec[CRC_FROM..]);
        if stored != computed {
            return Err(RecordError::CrcMismatch { stored, computed });
        }
        if meta.physical_offset != at {
            return Err(RecordError::OffsetMismatch { stored: meta.physical_offset, expected: at });
        }
    }
    let topic_end = HEADER_BYTES + topic_len;
    let props_end = topic_end + props_len;
    let topic = std::str::from_utf8(&rec[HEADER_BYTES..topic_end]).map_err(|_| RecordError::TopicNotUtf8)?;
    Ok(Entry::Record {
        record: RecordRef { meta, topic, properties: &rec[topic_end..props_end], body: &rec[props_end..] },
        total_bytes: total,
    })
}

fn put_host(out: &mut Vec<u8>, host: SocketAddr) {
    let ip = match host.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&host.port().to_be_bytes());
}

fn read_host(buf: &[u8], at: usize) -> Result<SocketAddr, RecordError> {
    let octets: [u8; 16] = read_array(buf, at)?;
    let port = read_u16(buf, at + 16)?;
    let v6 = Ipv6Addr::from(octets);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    Ok(SocketAddr::new(ip, port))
}

fn read_array<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], RecordError> {
    buf.get(at..at + N).and_then(|s| s.try_into().ok()).ok_or(RecordError::Truncated { need: at + N, have: buf.len() })
}

fn read_u16(buf: &[u8], at: usize) -> Result<u16, RecordError> {
    read_array(buf, at).map(u16::from_be_bytes)
}

fn read_u32(buf: &[u8], at: usize) -> Result<u32, RecordError> {
    read_array(buf, at).map(u32::from_be_bytes)
}

fn read_u64(buf: &[u8], at: usize) -> Result<u64, RecordError> {
    read_array(buf, at).map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(at: u64) -> RecordMeta {
        RecordMeta {
            sys_flag: sys_flag::TRANSACTION_PREPARED,
            flag: 7,
            queue_id: 3,
            queue_offset: 41,
            physical_offset: at,
            born_timestamp_ms: 1_764_000_000_000,
            store_timestamp_ms: 1_764_000_000_123,
            born_host: "10.1.2.3:40000".parse().expect("addr"),
            store_host: "[2001:db8::1]:8081".parse().expect("addr"),
            reconsume_times: 2,
            prepared_tx_offset: 99,
        }
    }

    fn encoded(at: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&meta(at), "orders", b"TAGS\x01a\x02", body, &mut out).expect("encodes");
        out
    }

    #[test]
    fn record_round_trips_every_field() {
        let buf = encoded(4096, b"hello");
        assert_eq!(buf.len(), encoded_len("orders", b"TAGS\x01a\x02", b"hello"));
        let Entry::Record { record, total_bytes } = decode(&buf, 4096, Verify::Full).expect("decodes") else {
            panic!("expected a record");
        };
        assert_eq!(total_bytes, buf.len());
        assert_eq!(record.meta, meta(4096));
        assert_eq!(record.topic, "orders");
        assert_eq!(record.properties, b"TAGS\x01a\x02");
        assert_eq!(record.body, b"hello");
    }

    #[test]
    fn any_flipped_bit_is_detected_by_full_verification() {
        let buf = encoded(0, &[0x5a; 300]);
        for byte in CRC_FROM..buf.len() {
            let mut bad = buf.clone();
            bad[byte] ^= 0x10;
            assert!(decode(&bad, 0, Verify::Full).is_err(), "flip at byte {byte} went unnoticed");
        }
    }

    #[test]
    fn a_record_read_at_the_wrong_offset_is_refused() {
        let buf = encoded(128, b"x");
        assert_eq!(decode(&buf, 256, Verify::Full), Err(RecordError::OffsetMismatch { stored: 128, expected: 256 }));
        assert!(decode(&buf, 256, Verify::Structure).is_ok());
    }

    #[test]
    fn truncated_and_zeroed_input_is_an_error_not_a_panic() {
        let buf = encoded(0, b"body");
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut], 0, Verify::Full).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(&[0u8; 64], 0, Verify::Full), Err(RecordError::BadMagic(0)));
    }

    #[test]
    fn filler_decodes_with_its_length() {
        let mut buf = Vec::new();
        encode_filler_head(4000, &mut buf);
        assert_eq!(decode(&buf, 0, Verify::Full), Ok(Entry::Filler { total_bytes: 4000 }));
    }

    #[test]
    fn oversized_fields_are_refused_at_encode() {
        let long_topic = "t".repeat(TOPIC_BYTES_MAX + 1);
        assert_eq!(
            encode(&meta(0), &long_topic, b"", b"", &mut Vec::new()),
            Err(RecordError::TopicTooLong(TOPIC_BYTES_MAX + 1))
        );
        let long_props = vec![b'a'; PROPERTIES_BYTES_MAX + 1];
        assert_eq!(
            encode(&meta(0), "t", &long_props, b"", &mut Vec::new()),
            Err(RecordError::PropertiesTooLong(PROPERTIES_BYTES_MAX + 1))
        );
    }
}
