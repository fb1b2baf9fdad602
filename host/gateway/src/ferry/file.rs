//! The batch file that carries messages over a one-way link (a data diode or a file-exchange
//! gateway): `ferry-<seq>.fmq`, sequence-numbered, checksummed and signed.
//!
//! ```text
//! file    := magic "FMQFERRY", version u16 (1), header_len u32, header (JSON),
//!            payload_len u64, payload, signature (64 bytes)
//! payload := message × header.count
//! message := meta_len u32, meta (JSON: topic, message_id, tag, keys, message_group, delivery_ms,
//!            born_ms, properties), body_len u32, body
//! ```
//! Integers are little-endian. `header.payload_sha256` is the SHA-256 of the payload; the signature
//! is ed25519 over every byte before it, by the exporting gateway's key. `header.skipped` names
//! sequence numbers the exporter reserved and never wrote (a crash between the two), so that the
//! importer does not wait for them.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use ferrymq_client::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 8] = b"FMQFERRY";
pub const VERSION: u16 = 1;
/// Longest header or message meta accepted.
const META_BYTES_MAX: u32 = 1 << 20;
/// File name extension.
pub const EXTENSION: &str = "fmq";

/// The file name of batch `seq`: sorts in sequence order.
pub fn file_name(seq: u64) -> String {
    format!("ferry-{seq:020}.{EXTENSION}")
}

/// The sequence number a batch file's name carries, if it is one.
pub fn seq_of(name: &str) -> Option<u64> {
    name.strip_prefix("ferry-")?.strip_suffix(&format!(".{EXTENSION}"))?.parse().ok()
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The exporting gateway's name.
    pub gateway: String,
    pub seq: u64,
    pub created_ms: i64,
    pub count: u32,
    /// Sequence numbers that will never be written.
    #[serde(default)]
    pub skipped: Vec<u64>,
    pub payload_sha256: String,
}

/// A message's fields besides its body.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    topic: String,
    message_id: String,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    message_group: Option<String>,
    #[serde(default)]
    delivery_ms: Option<i64>,
    #[serde(default)]
    born_ms: Option<i64>,
    #[serde(default)]
    properties: Vec<(String, String)>,
}

/// Why a file cannot be imported.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("not a ferry batch file (bad magic)")]
    Magic,
    #[error("ferry file version {0} is not supported (this gateway reads version {VERSION})")]
    Version(u16),
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("the signature does not verify with the configured public key (forged, or signed by another gateway)")]
    Signature,
    #[error("the payload does not match its checksum (corrupted)")]
    Checksum,
    #[error("{0} bytes after the signature")]
    Trailing(usize),
}

/// Encodes batch `header.seq` of `messages` and signs it.
pub fn encode(
    gateway: &str,
    seq: u64,
    created_ms: i64,
    skipped: Vec<u64>,
    messages: &[Message],
    key: &SigningKey,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut payload = Vec::with_capacity(messages.iter().map(|m| m.body.len() + 256).sum());
    for m in messages {
        let meta = Meta {
            topic: m.topic.clone(),
            message_id: m.message_id.clone().unwrap_or_default(),
            tag: m.tag.clone(),
            keys: m.keys.clone(),
            message_group: m.message_group.clone(),
            delivery_ms: m.delivery_ms,
            born_ms: m.born_ms,
            properties: m.properties.clone(),
        };
        let meta = serde_json::to_vec(&meta)?;
        payload.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        payload.extend_from_slice(&meta);
        payload.extend_from_slice(&(m.body.len() as u32).to_le_bytes());
        payload.extend_from_slice(&m.body);
    }
    let header = Header {
        gateway: gateway.to_owned(),
        seq,
        created_ms,
        count: messages.len() as u32,
        skipped,
        payload_sha256: ferrymq_proto::hex::encode(&Sha256::digest(&payload)),
    };
    let header = serde_json::to_vec(&header)?;
    let mut out = Vec::with_capacity(payload.len() + header.len() + 96);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    let signature = key.sign(&out);
    out.extend_from_slice(&signature.to_bytes());
    Ok(out)
}

/// Reads fixed-size fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FileError> {
        if self.0.len() < n {
            return Err(FileError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FileError> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

/// Checks the signature, the checksum and the structure of `bytes`; the batch's header and
/// messages.
pub fn decode(bytes: &[u8], key: &VerifyingKey) -> Result<(Header, Vec<Message>), FileError> {
    let signed_len = bytes.len().checked_sub(64).ok_or(FileError::Truncated("signature"))?;
    let mut r = Reader(bytes);
    if r.take(MAGIC.len(), "magic")? != MAGIC {
        return Err(FileError::Magic);
    }
    let version = r.take(2, "version")?;
    let version = u16::from_le_bytes([version[0], version[1]]);
    if version != VERSION {
        return Err(FileError::Version(version));
    }
    let header_len = r.u32("header length")?;
    if header_len > META_BYTES_MAX {
        return Err(FileError::Malformed { what: "header", reason: format!("{header_len} bytes") });
    }
    let header: Header = serde_json::from_slice(r.take(header_len as usize, "header")?)
        .map_err(|e| FileError::Malformed { what: "header", reason: e.to_string() })?;
    let payload_len = r.take(8, "payload length")?;
    let payload_len = u64::from_le_bytes(payload_len.try_into().map_err(|_| FileError::Truncated("payload length"))?);
    let payload_len = usize::try_from(payload_len).map_err(|_| FileError::Truncated("payload"))?;
    let payload = r.take(payload_len, "payload")?;
    if ferrymq_proto::hex::encode(&Sha256::digest(payload)) != header.payload_sha256 {
        return Err(FileError::Checksum);
    }
    let trailing = r.0.len().checked_sub(64).ok_or(FileError::Truncated("signature"))?;
    if trailing != 0 {
        return Err(FileError::Trailing(trailing));
    }
    // Checked after the checksum, so that a damaged file is told from a forged one.
    let signature: [u8; 64] = bytes[signed_len..].try_into().map_err(|_| FileError::Truncated("signature"))?;
    key.verify(&bytes[..signed_len], &Signature::from_bytes(&signature)).map_err(|_| FileError::Signature)?;
    let mut p = Reader(payload);
    let mut messages = Vec::with_capacity(header.count.min(100_000) as usize);
    for _ in 0..header.count {
        let meta_len = p.u32("message meta length")?;
        if meta_len > META_BYTES_MAX {
            return Err(FileError::Malformed { what: "message", reason: format!("meta of {meta_len} bytes") });
        }
        let meta: Meta = serde_json::from_slice(p.take(meta_len as usize, "message meta")?)
            .map_err(|e| FileError::Malformed { what: "message", reason: e.to_string() })?;
        let body_len = p.u32("body length")?;
        let body = p.take(body_len as usize, "body")?.to_vec();
        messages.push(Message {
            topic: meta.topic,
            body,
            tag: meta.tag,
            keys: meta.keys,
            message_group: meta.message_group,
            delivery_ms: meta.delivery_ms,
            properties: meta.properties,
            message_id: Some(meta.message_id),
            born_ms: meta.born_ms,
        });
    }
    if !p.0.is_empty() {
        return Err(FileError::Malformed {
            what: "payload",
            reason: format!("{} bytes after the last message", p.0.len()),
        });
    }
    Ok((header, messages))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn messages() -> Vec<Message> {
        (0..5)
            .map(|i| {
                let mut m = Message::new("decisions", vec![i as u8; 100 * i]);
                m.message_id = Some(format!("ID{i}"));
                m.tag = Some("t".into());
                m.keys = vec![format!("k{i}")];
                m.properties = vec![("p".into(), i.to_string())];
                m.message_group = (i % 2 == 0).then(|| "g".to_owned());
                m
            })
            .collect()
    }

    #[test]
    fn a_batch_reads_back_as_written() {
        let bytes = encode("gw", 7, 1_000, vec![5], &messages(), &key(1)).expect("encode");
        let (header, read) = decode(&bytes, &key(1).verifying_key()).expect("decode");
        assert_eq!((header.seq, header.count, header.skipped.as_slice()), (7, 5, &[5][..]));
        assert_eq!(read.len(), 5);
        for (a, b) in read.iter().zip(messages()) {
            assert_eq!(
                (&a.topic, &a.message_id, &a.body, &a.keys, &a.properties),
                (&b.topic, &b.message_id, &b.body, &b.keys, &b.properties)
            );
            assert_eq!(a.message_group, b.message_group);
        }
        assert_eq!(seq_of(&file_name(7)), Some(7));
        assert_eq!(seq_of("ferry-x.fmq"), None);
    }

    #[test]
    fn any_changed_byte_a_forged_signature_or_a_cut_is_refused() {
        let bytes = encode("gw", 1, 1_000, Vec::new(), &messages(), &key(1)).expect("encode");
        let public = key(1).verifying_key();
        for at in [0, 9, 20, bytes.len() / 2, bytes.len() - 70, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad, &public).is_err(), "a flipped byte at {at}");
        }
        for len in [0, 10, 63, 64, bytes.len() - 1] {
            assert!(decode(&bytes[..len], &public).is_err(), "cut at {len}");
        }
        let forged = encode("gw", 1, 1_000, Vec::new(), &messages(), &key(2)).expect("encode");
        assert_eq!(decode(&forged, &public).map(|_| ()), Err(FileError::Signature));
    }
}
