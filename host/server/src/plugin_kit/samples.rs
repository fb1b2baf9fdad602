//! Sample messages for `ferrymq plugin test`: one JSON object per line,
//! `{"topic":"t","tag":"A","keys":["k1"],"properties":{"enterpriseId":"E1"},"body":"text"}`, with
//! `"body_base64"` for a binary body and, for a tx-check, an optional `"transaction_id"`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine as _;
use serde::Deserialize;

/// Largest messages file read.
pub const FILE_BYTES_MAX: u64 = 64 << 20;
/// Most messages in one file.
pub const MESSAGES_MAX: usize = 100_000;

/// One line of a messages file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    topic: String,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    keys: Keys,
    #[serde(default)]
    properties: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    transaction_id: Option<String>,
    #[serde(default)]
    born_ms: Option<i64>,
}

/// `"keys": "k1 k2"` or `"keys": ["k1", "k2"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Keys {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

/// A sample message, ready to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Line number in its file (1-based).
    pub line: usize,
    pub topic: String,
    pub tag: String,
    /// Space-separated, as the broker hands keys to plugins.
    pub keys: String,
    /// In the record encoding (`name\x01value\x02…`).
    pub properties: Vec<u8>,
    pub body: Vec<u8>,
    pub transaction_id: Option<String>,
    pub born_ms: i64,
}

impl Sample {
    /// The message as the broker passes it to a plugin.
    pub fn as_plugin_message(&self, with_body: bool, attempt: u32) -> ferrymq_proto::plugin_batch::PluginMessage<'_> {
        ferrymq_proto::plugin_batch::PluginMessage {
            topic: &self.topic,
            tag: &self.tag,
            keys: &self.keys,
            properties: &self.properties,
            body: with_body.then_some(&self.body[..]),
            born_ms: self.born_ms,
            store_ms: 0,
            attempt,
        }
    }
}

/// Reads a messages file.
pub fn read(path: &Path) -> anyhow::Result<Vec<Sample>> {
    let size = std::fs::metadata(path).with_context(|| format!("read {}", path.display()))?.len();
    if size > FILE_BYTES_MAX {
        bail!("{} is {size} bytes; a messages file is at most {FILE_BYTES_MAX}", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {} (UTF-8 JSON lines)", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Parses JSON lines; blank lines and lines starting with `#` or `//` are skipped.
pub fn parse(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("//") {
            continue;
        }
        if samples.len() == MESSAGES_MAX {
            bail!("more than {MESSAGES_MAX} messages");
        }
        samples.push(sample(i + 1, trimmed).with_context(|| format!("line {}", i + 1))?);
    }
    if samples.is_empty() {
        bail!("no messages (one JSON object per line, e.g. {{\"topic\":\"t\",\"body\":\"text\"}})");
    }
    Ok(samples)
}

fn sample(line: usize, text: &str) -> anyhow::Result<Sample> {
    let parsed: Line = serde_json::from_str(text)?;
    if parsed.topic.is_empty() {
        bail!("the topic is empty");
    }
    let body = match (parsed.body, parsed.body_base64) {
        (Some(_), Some(_)) => bail!("give body or body_base64, not both"),
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => {
            base64::engine::general_purpose::STANDARD.decode(b64.trim()).context("body_base64 is not valid base64")?
        }
        (None, None) => Vec::new(),
    };
    let keys = match parsed.keys {
        Keys::None => Vec::new(),
        Keys::One(k) => k.split(' ').filter(|k| !k.is_empty()).map(str::to_owned).collect(),
        Keys::Many(keys) => keys,
    };
    if let Some(bad) = keys.iter().find(|k| k.is_empty() || k.contains(' ')) {
        bail!("key {bad:?} is empty or holds a space (keys are separated by spaces on the wire)");
    }
    let mut properties = Vec::new();
    ferrymq_proto::properties::encode(
        parsed.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &mut properties,
    )?;
    for (what, len) in [("topic", parsed.topic.len()), ("tag", parsed.tag.as_deref().map_or(0, str::len))] {
        if len > u16::MAX as usize {
            bail!("the {what} is {len} bytes; at most {}", u16::MAX);
        }
    }
    Ok(Sample {
        line,
        topic: parsed.topic,
        tag: parsed.tag.unwrap_or_default(),
        keys: keys.join(" "),
        properties,
        body,
        transaction_id: parsed.transaction_id,
        born_ms: parsed.born_ms.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_takes_every_field_and_keys_either_way() {
        let samples = parse(
            "# comment\n\
             {\"topic\":\"t\",\"tag\":\"A\",\"keys\":[\"k1\",\"k2\"],\"properties\":{\"enterpriseId\":\"E1\"},\"body\":\"text\"}\n\
             \n\
             {\"topic\":\"t\",\"keys\":\"a b\",\"body_base64\":\"AAH/\",\"transaction_id\":\"tx-1\"}\n",
        )
        .expect("parses");
        assert_eq!(samples.len(), 2);
        assert_eq!((samples[0].line, samples[0].tag.as_str(), samples[0].keys.as_str()), (2, "A", "k1 k2"));
        assert_eq!(samples[0].properties, b"enterpriseId\x01E1\x02");
        assert_eq!(samples[0].body, b"text");
        assert_eq!((samples[1].line, samples[1].keys.as_str()), (4, "a b"));
        assert_eq!(samples[1].body, [0, 1, 255]);
        assert_eq!(samples[1].transaction_id.as_deref(), Some("tx-1"));
    }

    #[test]
    fn bad_lines_are_named_with_their_number_and_reason() {
        let too_many = "{\"topic\":\"t\"}\n".repeat(MESSAGES_MAX + 1);
        for (text, expected) in [
            ("{\"topic\":\"t\"}\n{\"topc\":\"t\"}", "line 2"),
            ("{\"topic\":\"\"}", "topic is empty"),
            ("{\"topic\":\"t\",\"body\":\"a\",\"body_base64\":\"YQ==\"}", "not both"),
            ("{\"topic\":\"t\",\"body_base64\":\"***\"}", "not valid base64"),
            ("{\"topic\":\"t\",\"keys\":[\"a b\"]}", "holds a space"),
            ("{\"topic\":\"t\",\"properties\":{\"a\\u0001\":\"x\"}}", "property"),
            ("not json", "line 1"),
            ("", "no messages"),
            (too_many.as_str(), "more than 100000 messages"),
        ] {
            let err = format!("{:#}", parse(text).expect_err(text));
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
