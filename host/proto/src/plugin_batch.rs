//! The compact batch encoding that plugins receive (`ferrymq:plugin@0.1.0`).
//!
//! One buffer for a whole batch, copied into the plugin once, decoded by the SDKs without allocating.
//! All integers little-endian (the guest's own order):
//!
//! ```text
//! batch   := count u32, message × count
//! message := len u32 (bytes that follow in this message), flags u32, born_ms i64, store_ms i64,
//!            attempt u32, topic str, tag str, keys str, properties bytes, body bytes
//! str     := len u16, UTF-8 bytes            bytes := len u32, bytes
//! flags   := bit 0: the body was left out (the plugin may ask the host for it)
//! ```
//! `keys` are separated by spaces; `properties` use the record encoding (`name\x01value\x02…`);
//! an empty tag means none.

/// The body was left out of the batch.
pub const FLAG_BODY_OMITTED: u32 = 1;

/// One message as a plugin sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginMessage<'a> {
    pub topic: &'a str,
    pub tag: &'a str,
    pub keys: &'a str,
    pub properties: &'a [u8],
    /// `None` when left out.
    pub body: Option<&'a [u8]>,
    pub born_ms: i64,
    pub store_ms: i64,
    pub attempt: u32,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Topic, tag and keys are bounded far below 64 KiB by the send limits; clip defensively, on a
    // character boundary so that what the plugin reads is still UTF-8.
    let bytes = &s.as_bytes()[..s.floor_char_boundary(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends one message; its body only when `with_body`.
pub fn encode_message(m: &PluginMessage<'_>, with_body: bool, out: &mut Vec<u8>) {
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let body = if with_body { m.body } else { None };
    let flags = if body.is_none() { FLAG_BODY_OMITTED } else { 0 };
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&m.born_ms.to_le_bytes());
    out.extend_from_slice(&m.store_ms.to_le_bytes());
    out.extend_from_slice(&m.attempt.to_le_bytes());
    put_str(out, m.topic);
    put_str(out, m.tag);
    put_str(out, m.keys);
    put_bytes(out, m.properties);
    put_bytes(out, body.unwrap_or_default());
    let len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Encodes a whole batch.
pub fn encode_batch<'a>(
    messages: impl ExactSizeIterator<Item = PluginMessage<'a>>,
    with_body: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for m in messages {
        encode_message(&m, with_body, out);
    }
}

/// Decodes a batch (the host's own check of what it encodes; the SDKs have their own decoders).
pub fn decode_batch(buf: &[u8]) -> Option<Vec<PluginMessage<'_>>> {
    let mut r = Reader { buf, at: 0 };
    let count = r.u32()?;
    let mut out = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let len = r.u32()? as usize;
        let end = r.at.checked_add(len)?;
        let flags = r.u32()?;
        let born_ms = r.u64()? as i64;
        let store_ms = r.u64()? as i64;
        let attempt = r.u32()?;
        let topic = r.str()?;
        let tag = r.str()?;
        let keys = r.str()?;
        let properties = r.bytes()?;
        let body = r.bytes()?;
        if r.at != end {
            return None;
        }
        let body = (flags & FLAG_BODY_OMITTED == 0).then_some(body);
        out.push(PluginMessage { topic, tag, keys, properties, body, born_ms, store_ms, attempt });
    }
    (r.at == buf.len()).then_some(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u8) -> PluginMessage<'static> {
        PluginMessage {
            topic: "orders",
            tag: if i.is_multiple_of(2) { "TagA" } else { "" },
            keys: "k1 k2",
            properties: b"enterpriseId\x0191350200\x02",
            body: Some(b"hello body"),
            born_ms: 1_764_000_000_000 + i64::from(i),
            store_ms: 1_764_000_000_500,
            attempt: u32::from(i) + 1,
        }
    }

    #[test]
    fn batches_round_trip_with_and_without_bodies() {
        let messages: Vec<_> = (0..5).map(sample).collect();
        let mut buf = Vec::new();
        encode_batch(messages.iter().cloned(), true, &mut buf);
        assert_eq!(decode_batch(&buf).expect("decodes"), messages);
        buf.clear();
        encode_batch(messages.iter().cloned(), false, &mut buf);
        let decoded = decode_batch(&buf).expect("decodes");
        assert!(decoded.iter().all(|m| m.body.is_none()));
        assert_eq!(decoded[3].attempt, 4);
    }

    #[test]
    fn truncated_or_padded_buffers_are_refused() {
        let mut buf = Vec::new();
        encode_batch([sample(1)].into_iter(), true, &mut buf);
        for cut in 0..buf.len() {
            assert!(decode_batch(&buf[..cut]).is_none(), "cut at {cut}");
        }
        buf.push(0);
        assert!(decode_batch(&buf).is_none());
    }
}
