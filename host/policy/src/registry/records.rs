//! The records of the plugins topic. A record's body is one line of JSON (the record), then a
//! newline, then its payload (a component chunk's bytes; empty for the others).

use serde::{Deserialize, Serialize};

use crate::Shape;
use crate::config::{BindingRules, UnknownFields, deny_unknown};

/// Component bytes per chunk record.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Activations a binding's record keeps (the newest).
pub const HISTORY_RECORDS_MAX: usize = 64;

/// One uploaded version of a plugin.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct VersionInfo {
    /// `<department>/<plugin>`.
    pub plugin: String,
    /// 1, 2, … in upload order.
    pub version: u32,
    /// SHA-256 of the component, hex.
    pub digest: String,
    pub size: u64,
    /// `filter`, `route` or `tx-check`.
    pub world: String,
    /// The principal that uploaded it.
    pub uploader: String,
    pub uploaded_ms: i64,
    /// The department whose trusted key signed it, if it was signed.
    pub signed_by: Option<String>,
    /// Commit-log position of its record.
    pub position: u64,
}

/// A binding as the admin API sets it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct BindingSpec {
    pub name: String,
    /// `<department>/<plugin>`.
    pub plugin: String,
    /// The active version.
    pub version: u32,
    #[serde(flatten)]
    pub rules: BindingRules,
    /// Refused when a binding is set; kept (and ignored) in records written by a newer broker.
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

impl BindingSpec {
    /// Its rules, as checked and as the plugin host binds them.
    pub fn shape(&self) -> Shape<'_> {
        self.rules.shape(&self.name)
    }

    /// Why this binding cannot work, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        deny_unknown(&self.name, &self.unknown)?;
        self.shape().check()
    }
}

/// A version taking over a binding at a log position.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Activation {
    pub version: u32,
    pub position: u64,
    #[serde(default)]
    pub rollback: bool,
}

/// A binding and its activations, oldest first (the last is the active version).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct BindingRecord {
    pub spec: BindingSpec,
    pub history: Vec<Activation>,
}

/// A change, as stored in the plugins topic.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    /// Part `index` of `count` of a component; the bytes are the payload.
    Chunk {
        digest: String,
        index: u32,
        count: u32,
    },
    /// A version uploaded (its chunks come before it).
    Version(VersionInfo),
    VersionDeleted {
        plugin: String,
        version: u32,
    },
    /// A binding created or replaced.
    Bound {
        spec: BindingSpec,
    },
    /// A version activated on a binding (also a rollback).
    Activated {
        binding: String,
        version: u32,
        rollback: bool,
    },
    Unbound {
        binding: String,
    },
}

impl Record {
    /// The record's body with `payload` after it.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        // Serialising these plain structs cannot fail; an empty header would be refused on replay.
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out.extend_from_slice(payload);
        out
    }

    /// A record and its payload from a body.
    pub fn parse(body: &[u8]) -> Result<(Record, &[u8]), String> {
        let split = body.iter().position(|&b| b == b'\n').ok_or("no record header")?;
        let record = serde_json::from_slice(&body[..split]).map_err(|e| format!("bad record header: {e}"))?;
        Ok((record, &body[split + 1..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_their_payload() {
        let chunk = Record::Chunk { digest: "ab".into(), index: 1, count: 3 };
        let body = chunk.encode(b"\n\x00bytes");
        assert_eq!(Record::parse(&body).expect("parses"), (chunk, &b"\n\x00bytes"[..]));
        let activated = Record::Activated { binding: "b".into(), version: 7, rollback: true };
        assert_eq!(Record::parse(&activated.encode(&[])).expect("parses").0, activated);
        assert!(Record::parse(b"{\"type\":\"nope\"}\n").is_err());
        assert!(Record::parse(b"no newline").is_err());
    }
}
