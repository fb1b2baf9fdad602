//! The commit-log record decoder on any bytes: what recovery scans and a slave receives.
//!
//! Input: the first byte chooses whether the checksum of the first record is recomputed (so that
//! mutations of its structure get past it), the next eight give the offset it is read at, the rest is
//! the buffer. Every entry decodes to an error or to one that re-encodes to the same bytes, and a
//! scan entry by entry always moves forward.
#![no_main]

use ferrymq_proto::record::{self, Entry, FILLER_BYTES_MIN, HEADER_BYTES, Verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((at, buf)) = rest.split_first_chunk::<8>() else { return };
    let at = u64::from_be_bytes(*at);
    let mut buf = buf.to_vec();
    if mode & 1 == 1 && buf.len() >= 12 {
        let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let crc = crc32c::crc32c(&buf[12..total.clamp(12, buf.len())]);
        buf[8..12].copy_from_slice(&crc.to_be_bytes());
    }
    for verify in [Verify::Full, Verify::Structure] {
        match record::decode(&buf, at, verify) {
            Err(_) => {}
            Ok(Entry::Filler { total_bytes }) => assert!(total_bytes >= FILLER_BYTES_MIN),
            Ok(Entry::Record { record, total_bytes }) => {
                assert!((HEADER_BYTES..=buf.len()).contains(&total_bytes));
                let mut again = Vec::new();
                record::encode(&record.meta, record.topic, record.properties, record.body, &mut again)
                    .expect("a decoded record encodes");
                let original = &buf[..total_bytes];
                if verify == Verify::Full {
                    assert_eq!(again, original);
                } else {
                    assert_eq!((&again[..8], &again[12..]), (&original[..8], &original[12..]));
                }
            }
        }
    }
    let mut pos = 0;
    while pos < buf.len() {
        let Ok(entry) = record::decode(&buf[pos..], at.wrapping_add(pos as u64), Verify::Full) else { break };
        let (Entry::Record { total_bytes, .. } | Entry::Filler { total_bytes }) = entry;
        assert!(total_bytes >= FILLER_BYTES_MIN);
        pos += total_bytes;
    }
});
