//! Seeded fuzz tests of the codecs whose input a file, a peer or a plugin controls: the commit-log
//! record, the property encoding and the plugin batch. Round trips must be exact; any other input
//! must decode to an error or to a value that encodes back to the same bytes, and never panic.
//!
//! Budgets and replay: `ferrymq_fuzzgen` (`FERRYMQ_FUZZ_SEED`, `FERRYMQ_FUZZ_CASES`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ferrymq_fuzzgen::{Rng, cases, mutate};

use crate::plugin_batch::{PluginMessage, decode_batch, encode_batch, encode_message};
use crate::properties::{self, NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR, PropertiesError};
use crate::record::{
    self, Entry, FILLER_BYTES_MIN, FILLER_MAGIC, HEADER_BYTES, RECORD_MAGIC, RecordMeta, Verify, sys_flag,
};

// ---------------------------------------------------------------------------------------------------------
// The commit-log record

fn host(rng: &mut Rng) -> SocketAddr {
    let port = if rng.bool() { rng.next_u64() as u16 } else { *rng.pick(&[0, 1, 8081, u16::MAX]) };
    let ip = match rng.below(4) {
        0 => IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32)),
        // v4-mapped: the record keeps 16 bytes, and decoding gives the IPv4 address back.
        1 => IpAddr::V6(Ipv4Addr::from(rng.next_u64() as u32).to_ipv6_mapped()),
        2 => IpAddr::V6(Ipv6Addr::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()))),
        _ => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, port)
}

/// The address as the record gives it back: a v4-mapped IPv6 address comes back as IPv4.
fn as_decoded(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => SocketAddr::new(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4), addr.port()),
        IpAddr::V4(_) => addr,
    }
}

fn meta(rng: &mut Rng, physical_offset: u64) -> RecordMeta {
    let flags = [0, sys_flag::COMPRESSED, sys_flag::TRANSACTION_PREPARED, sys_flag::BATCH_CONTINUES, u32::MAX];
    RecordMeta {
        sys_flag: if rng.bool() { *rng.pick(&flags) } else { rng.next_u64() as u32 },
        flag: rng.edge_u64() as u32,
        queue_id: rng.edge_u64() as u32,
        queue_offset: rng.edge_u64(),
        physical_offset,
        born_timestamp_ms: rng.edge_i64(),
        store_timestamp_ms: rng.edge_i64(),
        born_host: host(rng),
        store_host: host(rng),
        reconsume_times: rng.edge_u64() as u32,
        prepared_tx_offset: rng.edge_u64(),
    }
}

/// Random variable fields: any UTF-8 topic, properties that are valid or not, a body of any bytes.
fn fields(rng: &mut Rng) -> (String, Vec<u8>, Vec<u8>) {
    let topic = if rng.bool() { rng.word(40) } else { rng.text(40) };
    let props = if rng.bool() {
        let n = rng.size(300);
        rng.bytes(n)
    } else {
        let mut out = Vec::new();
        let list: Vec<(String, String)> = (0..rng.size(6)).map(|_| (rng.word(12), rng.word(20))).collect();
        properties::encode(list.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut out).expect("plain words");
        out
    };
    let n = rng.size(3000);
    (topic, props, rng.bytes(n))
}

fn encoded_record(rng: &mut Rng, at: u64, out: &mut Vec<u8>) {
    let (topic, props, body) = fields(rng);
    record::encode(&meta(rng, at), &topic, &props, &body, out).expect("fields within the record's limits");
}

#[test]
fn records_round_trip_every_field_under_both_verifications() {
    cases!(20_000, |rng| {
        let at = rng.edge_u64();
        let meta = meta(rng, at);
        let (topic, props, body) = fields(rng);
        let prefix = rng.size(16);
        let mut out = rng.bytes(prefix);
        record::encode(&meta, &topic, &props, &body, &mut out).expect("fields within the record's limits");
        assert_eq!(out.len() - prefix, record::encoded_len(&topic, &props, &body));
        let trailing = rng.size(32);
        out.extend(rng.bytes(trailing));
        let expected =
            RecordMeta { born_host: as_decoded(meta.born_host), store_host: as_decoded(meta.store_host), ..meta };
        for verify in [Verify::Full, Verify::Structure] {
            let Ok(Entry::Record { record, total_bytes }) = record::decode(&out[prefix..], at, verify) else {
                panic!("a record just encoded does not decode ({verify:?})");
            };
            assert_eq!(total_bytes, record::encoded_len(&topic, &props, &body));
            assert_eq!(record.meta, expected);
            assert_eq!((record.topic, record.properties, record.body), (topic.as_str(), &props[..], &body[..]));
        }
    });
}

/// The CRC of the record at the start of `buf`, recomputed over what its length field claims (as far
/// as the buffer reaches): lets mutations of the structure get past the checksum.
fn fix_crc(buf: &mut [u8]) {
    if buf.len() < 12 {
        return;
    }
    let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let end = total.clamp(12, buf.len());
    let crc = crc32c::crc32c(&buf[12..end]);
    buf[8..12].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn mutated_records_are_refused_or_re_encode_to_the_same_bytes() {
    cases!(100_000, |rng| {
        let at = rng.edge_u64() & !0xF;
        let mut valid = Vec::new();
        encoded_record(rng, at, &mut valid);
        let mut donor = Vec::new();
        encoded_record(rng, 0, &mut donor);
        if rng.one_in(4) {
            record::encode_filler_head((rng.edge_u64() as u32).max(8), &mut donor);
        }
        let mut buf = valid.clone();
        mutate(rng, &mut buf, &[&donor, &valid]);
        if rng.bool() {
            fix_crc(&mut buf);
        }
        for verify in [Verify::Full, Verify::Structure] {
            match record::decode(&buf, at, verify) {
                Err(_) => {}
                Ok(Entry::Filler { total_bytes }) => assert!(total_bytes >= FILLER_BYTES_MIN),
                Ok(Entry::Record { record, total_bytes }) => {
                    assert!((HEADER_BYTES..=buf.len()).contains(&total_bytes), "{total_bytes} of {}", buf.len());
                    let mut again = Vec::new();
                    record::encode(&record.meta, record.topic, record.properties, record.body, &mut again)
                        .expect("a decoded record encodes");
                    let original = &buf[..total_bytes];
                    if verify == Verify::Full {
                        assert_eq!(again, original, "a verified record is canonical");
                    } else {
                        // Structure-only decoding does not read the checksum.
                        assert_eq!((&again[..8], &again[12..]), (&original[..8], &original[12..]));
                    }
                }
            }
        }
    });
}

#[test]
fn scanning_any_bytes_entry_by_entry_always_moves_forward() {
    cases!(50_000, |rng| {
        // Records, fillers and garbage back to back, as recovery walks a segment.
        let mut buf = Vec::new();
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 => record::encode_filler_head((rng.edge_u64() as u32).max(8), &mut buf),
                1 => {
                    let n = rng.size(200);
                    buf.extend(rng.bytes(n));
                }
                _ => encoded_record(rng, buf.len() as u64, &mut buf),
            }
        }
        if rng.bool() {
            mutate(rng, &mut buf, &[]);
        }
        if rng.one_in(4) {
            let at = rng.index(buf.len().saturating_sub(8));
            let magic = if rng.bool() { RECORD_MAGIC } else { FILLER_MAGIC };
            if let Some(slot) = buf.get_mut(at + 4..at + 8) {
                slot.copy_from_slice(&magic.to_be_bytes());
            }
        }
        let mut pos = 0;
        while pos < buf.len() {
            let Ok(entry) = record::decode(&buf[pos..], pos as u64, Verify::Full) else { break };
            let total = match entry {
                Entry::Record { total_bytes, .. } | Entry::Filler { total_bytes } => total_bytes,
            };
            assert!(total >= FILLER_BYTES_MIN, "an entry of {total} bytes at {pos}");
            pos += total;
        }
    });
}

// ---------------------------------------------------------------------------------------------------------
// Properties

fn has_separator(s: &str) -> bool {
    s.bytes().any(|b| b == NAME_VALUE_SEPARATOR || b == PROPERTY_SEPARATOR)
}

#[test]
fn properties_encode_what_decodes_back_and_refuse_the_rest() {
    cases!(50_000, |rng| {
        let list: Vec<(String, String)> = (0..rng.size(12))
            .map(|_| {
                let name = if rng.one_in(3) { rng.text(8) } else { rng.word(8) };
                let value = if rng.one_in(3) { rng.text(16) } else { rng.word(16) };
                (name, value)
            })
            .collect();
        let mut out = Vec::new();
        let result = properties::encode(list.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut out);
        let first_bad = list.iter().find(|(k, v)| k.is_empty() || has_separator(k) || has_separator(v));
        match (result, first_bad) {
            (Ok(()), None) => {
                let back: Vec<_> =
                    properties::decode(&out).collect::<Result<_, _>>().expect("encoded properties decode");
                let back: Vec<(String, String)> =
                    back.iter().map(|p| (p.name.to_owned(), p.value.to_owned())).collect();
                assert_eq!(back, list);
                for (name, _) in &list {
                    let first = list.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
                    assert_eq!(properties::get(&out, name), first, "the first {name:?} is the one found");
                }
            }
            (Err(err), Some((name, _))) => {
                let expected = if name.is_empty() {
                    PropertiesError::EmptyName
                } else if has_separator(name) {
                    PropertiesError::SeparatorInName { name: name.clone() }
                } else {
                    PropertiesError::SeparatorInValue { name: name.clone() }
                };
                assert_eq!(err, expected);
            }
            (result, bad) => panic!("encode gave {result:?}, but the first bad property is {bad:?}"),
        }
    });
}

#[test]
fn decoding_any_bytes_gives_clean_properties_up_to_the_first_error() {
    cases!(100_000, |rng| {
        let mut bytes = Vec::new();
        let list: Vec<(String, String)> = (0..rng.size(8)).map(|_| (rng.word(8), rng.word(12))).collect();
        properties::encode(list.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut bytes).expect("plain words");
        let noise = rng.bytes(16);
        mutate(rng, &mut bytes, &[&noise, b"\x01\x02\xff\xfe"]);

        let items: Vec<_> = properties::decode(&bytes).collect();
        let separators = bytes.iter().filter(|&&b| b == PROPERTY_SEPARATOR).count();
        assert!(items.len() <= separators + 1, "{} items from {separators} separators", items.len());
        let ok: Vec<_> = items.iter().map_while(|i| i.as_ref().ok()).collect();
        assert!(items.len() - ok.len() <= 1, "decoding goes on after an error");
        for p in &ok {
            // A name ends at the first 0x01, so a value may hold more of them (as in RocketMQ).
            assert!(!has_separator(p.name) && !p.value.contains('\u{2}'), "{p:?}");
            let first = ok.iter().find(|q| q.name == p.name).map(|q| q.value);
            assert_eq!(properties::get(&bytes, p.name), first);
        }
        // Whatever decodes cleanly to what encode accepts (names, no separator in values) encodes back
        // to the same bytes; only a last property without its terminator is accepted beyond that.
        if ok.len() == items.len() && ok.iter().all(|p| !p.name.is_empty() && !has_separator(p.value)) {
            let mut again = Vec::new();
            properties::encode(ok.iter().map(|p| (p.name, p.value)), &mut again).expect("decoded properties encode");
            let mut terminated = bytes.clone();
            if terminated.last().is_some_and(|&b| b != PROPERTY_SEPARATOR) {
                terminated.push(PROPERTY_SEPARATOR);
            }
            assert_eq!(again, terminated);
        }
    });
}

// ---------------------------------------------------------------------------------------------------------
// The plugin batch

#[derive(Clone, Debug)]
struct Owned {
    topic: String,
    tag: String,
    keys: String,
    properties: Vec<u8>,
    body: Option<Vec<u8>>,
    born_ms: i64,
    store_ms: i64,
    attempt: u32,
}

impl Owned {
    fn random(rng: &mut Rng) -> Self {
        // Now and then a string past the format's 64 KiB, of two-byte characters: it is clipped, and
        // must still be UTF-8 after the clip.
        let long = |rng: &mut Rng| if rng.one_in(200) { "é".repeat(40_000) } else { rng.text(24) };
        let n = rng.size(200);
        Owned {
            topic: rng.word(40),
            tag: long(rng),
            keys: long(rng),
            properties: rng.bytes(n),
            body: rng.bool().then(|| {
                let n = rng.size(2000);
                rng.bytes(n)
            }),
            born_ms: rng.edge_i64(),
            store_ms: rng.edge_i64(),
            attempt: rng.edge_u64() as u32,
        }
    }

    fn view(&self) -> PluginMessage<'_> {
        PluginMessage {
            topic: &self.topic,
            tag: &self.tag,
            keys: &self.keys,
            properties: &self.properties,
            body: self.body.as_deref(),
            born_ms: self.born_ms,
            store_ms: self.store_ms,
            attempt: self.attempt,
        }
    }
}

/// The longest prefix of `s` the batch format carries.
fn clipped(s: &str) -> &str {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[test]
fn plugin_batches_round_trip_with_and_without_bodies() {
    cases!(10_000, |rng| {
        let messages: Vec<Owned> = (0..rng.size(20)).map(|_| Owned::random(rng)).collect();
        let with_body = rng.bool();
        let mut buf = Vec::new();
        encode_batch(messages.iter().map(Owned::view), with_body, &mut buf);
        let decoded = decode_batch(&buf).expect("an encoded batch decodes");
        let expected: Vec<PluginMessage<'_>> = messages
            .iter()
            .map(|m| PluginMessage {
                tag: clipped(&m.tag),
                keys: clipped(&m.keys),
                body: if with_body { m.body.as_deref() } else { None },
                ..m.view()
            })
            .collect();
        assert_eq!(decoded, expected);
    });
}

#[test]
fn mutated_plugin_batches_are_refused_or_decode_to_what_they_re_encode_to() {
    cases!(100_000, |rng| {
        let messages: Vec<Owned> = (0..rng.size(4)).map(|_| Owned::random(rng)).collect();
        let mut buf = Vec::new();
        encode_batch(messages.iter().map(Owned::view), rng.bool(), &mut buf);
        let mut donor = Vec::new();
        encode_message(&Owned::random(rng).view(), true, &mut donor);
        mutate(rng, &mut buf, &[&donor]);

        let Some(decoded) = decode_batch(&buf) else { return };
        assert_eq!(decoded.len() as u32, u32::from_le_bytes(buf[..4].try_into().unwrap()));
        let mut again = (decoded.len() as u32).to_le_bytes().to_vec();
        for m in &decoded {
            encode_message(m, m.body.is_some(), &mut again);
        }
        assert!(again.len() <= buf.len(), "re-encoding grew the batch");
        assert_eq!(decode_batch(&again).as_ref(), Some(&decoded));
    });
}
