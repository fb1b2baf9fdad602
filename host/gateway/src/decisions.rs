//! The gateway's decision log (`<data_dir>/decisions.jsonl`): one JSON line per message that did not
//! cross — rejected or dropped by a policy, or set aside because the target refuses it for good or
//! its policy failed under `dead-letter` — written and flushed to disk before the message is settled
//! on the source, so nothing leaves the source zone unrecorded. A set-aside message is recorded
//! whole (body in hex), so it can be carried over by hand. The file is renamed to
//! `decisions.jsonl.1` (replacing an older one) once it passes [`FILE_BYTES_MAX`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use ferrymq_client::Message;
use ferrymq_proto::sync::lock;
use serde::Serialize;

/// Size at which the log starts a new file.
pub const FILE_BYTES_MAX: u64 = 64 << 20;

/// What happened to a message that did not cross.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Rejected,
    Dropped,
    SetAside,
}

/// One line of the log.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub time_ms: i64,
    /// The source topic.
    pub topic: String,
    pub message_id: String,
    pub decision: Decision,
    pub reason: String,
    /// The whole message, for a set-aside one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Recorded>,
}

/// A message as recorded.
#[derive(Debug, Serialize)]
pub struct Recorded {
    pub target_topic: String,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    pub message_group: Option<String>,
    pub delivery_ms: Option<i64>,
    pub properties: Vec<(String, String)>,
    pub body_hex: String,
}

impl Recorded {
    pub fn of(message: &Message) -> Self {
        Self {
            target_topic: message.topic.clone(),
            tag: message.tag.clone(),
            keys: message.keys.clone(),
            message_group: message.message_group.clone(),
            delivery_ms: message.delivery_ms,
            properties: message.properties.clone(),
            body_hex: ferrymq_proto::hex::encode(&message.body),
        }
    }
}

pub struct Decisions {
    path: PathBuf,
    file: Mutex<(File, u64)>,
}

impl Decisions {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("decisions.jsonl");
        let file = open_append(&path)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self { path, file: Mutex::new((file, len)) })
    }

    /// Appends `entries` and flushes them to disk.
    pub fn record(&self, entries: &[Entry]) -> anyhow::Result<()> {
        let mut text = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut text, entry).context("encode a decision")?;
            text.push(b'\n');
        }
        let mut file = lock(&self.file);
        if file.1 > 0 && file.1 + text.len() as u64 > FILE_BYTES_MAX {
            let older = self.path.with_extension("jsonl.1");
            std::fs::rename(&self.path, &older).with_context(|| format!("rename {}", self.path.display()))?;
            *file = (open_append(&self.path)?, 0);
        }
        file.0.write_all(&text).with_context(|| format!("write {}", self.path.display()))?;
        file.0.sync_data().with_context(|| format!("flush {}", self.path.display()))?;
        file.1 += text.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("open {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_lines_of_json_and_a_set_aside_message_is_kept_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Decisions::open(dir.path()).expect("open");
        let mut message = Message::new("out", b"\x00body".to_vec());
        message.properties = vec![("k".into(), "v".into())];
        log.record(&[
            Entry {
                time_ms: 1,
                topic: "in".into(),
                message_id: "A".into(),
                decision: Decision::Rejected,
                reason: "unclassified".into(),
                message: None,
            },
            Entry {
                time_ms: 2,
                topic: "in".into(),
                message_id: "B".into(),
                decision: Decision::SetAside,
                reason: "body too large".into(),
                message: Some(Recorded::of(&message)),
            },
        ])
        .expect("record");
        let text = std::fs::read_to_string(dir.path().join("decisions.jsonl")).expect("read");
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["decision"], "rejected");
        assert!(lines[0].get("message").is_none());
        assert_eq!(lines[1]["decision"], "set-aside");
        assert_eq!(lines[1]["message"]["body_hex"], "00626f6479");
        assert_eq!(lines[1]["message"]["target_topic"], "out");
    }
}
