//! Reading the broker's compact batch encoding in place (layout in docs/plugins.md).

use std::borrow::Cow;

/// A batch of messages, borrowed from the buffer the broker passed in.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    count: u32,
    messages: &'a [u8],
    fetch: Option<BodyFetch>,
}

/// Asks the broker for the body of message `index` of the current batch.
pub type BodyFetch = fn(u32) -> Option<Vec<u8>>;

/// One message of a batch.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    index: u32,
    flags: u32,
    born_ms: i64,
    store_ms: i64,
    attempt: u32,
    // Checked as UTF-8 when read: a filter pays only for the fields it looks at.
    topic: &'a [u8],
    tag: &'a [u8],
    keys: &'a [u8],
    properties: &'a [u8],
    body: &'a [u8],
    fetch: Option<BodyFetch>,
}

const FLAG_BODY_OMITTED: u32 = 1;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a [u8]> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        self.take(n)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

impl<'a> Batch<'a> {
    /// Checks the header; messages are decoded as they are iterated. `fetch` gets bodies the broker
    /// left out (filters only).
    pub fn parse(buf: &'a [u8], fetch: Option<BodyFetch>) -> Option<Self> {
        let mut r = Reader { buf };
        let count = r.u32()?;
        Some(Self { count, messages: r.buf, fetch })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The messages, in order; stops at the first malformed one.
    pub fn iter(&self) -> impl Iterator<Item = Message<'a>> + 'a {
        let mut r = Reader { buf: self.messages };
        let fetch = self.fetch;
        (0..self.count).map_while(move |index| {
            let len = r.u32()? as usize;
            let mut m = Reader { buf: r.take(len)? };
            Some(Message {
                index,
                flags: m.u32()?,
                born_ms: m.i64()?,
                store_ms: m.i64()?,
                attempt: m.u32()?,
                topic: m.str()?,
                tag: m.str()?,
                keys: m.str()?,
                properties: m.bytes()?,
                body: m.bytes()?,
                fetch,
            })
        })
    }
}

/// The broker encodes these fields from UTF-8 strings; anything else reads as empty.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl<'a> Message<'a> {
    pub fn topic(&self) -> &'a str {
        text(self.topic)
    }

    pub fn tag(&self) -> Option<&'a str> {
        (!self.tag.is_empty()).then(|| text(self.tag))
    }

    pub fn keys(&self) -> impl Iterator<Item = &'a str> {
        text(self.keys).split(' ').filter(|k| !k.is_empty())
    }

    /// A property by name (user properties and the broker's own, such as `UNIQ_KEY`).
    pub fn property(&self, name: &str) -> Option<&'a str> {
        // Compare each property's name in place and jump to the next one with a word-at-a-time
        // search for the separator; only the value found is checked as UTF-8.
        let name = name.as_bytes();
        let mut rest = self.properties;
        loop {
            if let Some(value) = rest.strip_prefix(name).and_then(|r| r.strip_prefix(&[0x01])) {
                let end = memchr::memchr(0x02, value).unwrap_or(value.len());
                return std::str::from_utf8(&value[..end]).ok();
            }
            rest = &rest[memchr::memchr(0x02, rest)? + 1..];
        }
    }

    /// All properties, in order.
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.properties.split(|&b| b == 0x02).filter_map(|item| {
            let split = item.iter().position(|&b| b == 0x01)?;
            Some((std::str::from_utf8(&item[..split]).ok()?, std::str::from_utf8(&item[split + 1..]).ok()?))
        })
    }

    /// The body: borrowed when the broker sent it, fetched from the broker otherwise (filters get
    /// bodies only on request, so a filter that never calls this never pays for bodies).
    pub fn body(&self) -> Option<Cow<'a, [u8]>> {
        if self.flags & FLAG_BODY_OMITTED == 0 {
            return Some(Cow::Borrowed(self.body));
        }
        self.fetch.and_then(|fetch| fetch(self.index)).map(Cow::Owned)
    }

    pub fn born_ms(&self) -> i64 {
        self.born_ms
    }

    pub fn store_ms(&self) -> i64 {
        self.store_ms
    }

    /// 1 on first delivery (filters); 0 for messages not yet stored (route).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }

    /// One message laid out as docs/plugins.md describes.
    fn message(flags: u32, tag: &str, keys: &str, properties: &[u8], body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&flags.to_le_bytes());
        m.extend_from_slice(&1_700_000_000_000i64.to_le_bytes());
        m.extend_from_slice(&1_700_000_000_005i64.to_le_bytes());
        m.extend_from_slice(&2u32.to_le_bytes());
        put_str(&mut m, "inbox");
        put_str(&mut m, tag);
        put_str(&mut m, keys);
        put_bytes(&mut m, properties);
        put_bytes(&mut m, body);
        let mut out = (m.len() as u32).to_le_bytes().to_vec();
        out.extend(m);
        out
    }

    fn fetch(index: u32) -> Option<Vec<u8>> {
        Some(format!("fetched {index}").into_bytes())
    }

    #[test]
    fn reads_every_field_in_place_and_fetches_only_omitted_bodies() {
        let mut buf = 2u32.to_le_bytes().to_vec();
        buf.extend(message(0, "urgent", "k1 k2", b"enterpriseId\x01E1\x02region\x01north\x02", b"hello"));
        buf.extend(message(FLAG_BODY_OMITTED, "", "", b"", b""));
        let batch = Batch::parse(&buf, Some(fetch)).expect("header");
        assert_eq!(batch.len(), 2);
        let all: Vec<Message<'_>> = batch.iter().collect();
        assert_eq!(all.len(), 2);
        let first = &all[0];
        assert_eq!((first.topic(), first.tag(), first.attempt()), ("inbox", Some("urgent"), 2));
        assert_eq!(first.keys().collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(first.property("enterpriseId"), Some("E1"));
        assert_eq!(first.properties().count(), 2);
        assert_eq!(first.body().as_deref(), Some(&b"hello"[..]));
        assert_eq!((first.born_ms(), first.store_ms()), (1_700_000_000_000, 1_700_000_000_005));
        assert_eq!(all[1].tag(), None);
        assert_eq!(all[1].body().as_deref(), Some(&b"fetched 1"[..]));
    }

    #[test]
    fn a_truncated_batch_yields_the_messages_before_the_damage() {
        let mut buf = 2u32.to_le_bytes().to_vec();
        buf.extend(message(0, "a", "", b"", b"x"));
        let second = message(0, "b", "", b"", b"y");
        buf.extend(&second[..second.len() - 1]);
        let batch = Batch::parse(&buf, None).expect("header");
        assert_eq!(batch.iter().count(), 1);
        assert!(Batch::parse(&[1, 0], None).is_none(), "a header shorter than 4 bytes");
    }

    #[test]
    fn a_property_is_found_only_where_a_property_starts_and_by_its_whole_name() {
        let props = b"note\x01region\x01x\x02regionCode\x01N1\x02region\x01north\x02last\x01";
        let mut buf = 1u32.to_le_bytes().to_vec();
        buf.extend(message(0, "", "", props, b""));
        let batch = Batch::parse(&buf, None).expect("header");
        let m = batch.iter().next().expect("message");
        assert_eq!(m.property("region"), Some("north"), "not inside a value, not a longer name");
        assert_eq!(m.property("regionCode"), Some("N1"));
        assert_eq!(m.property("last"), Some(""), "the final property, without a trailing separator");
        assert_eq!(m.property("reg"), None);
        assert_eq!(m.property("north"), None);
    }
}
