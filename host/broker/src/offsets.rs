//! Consumer progress: for each (subscriber, topic, queue), the queue offset below which every message
//! is done. Kept in memory, written to `<data_dir>/offsets.json` by [`Offsets::persist`] (the broker
//! does so every second and at shutdown). After a crash a subscriber resumes from the last written
//! offsets, so messages done in the last second may be delivered again: delivery is at least once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrymq_proto::sync::lock;
use serde::{Deserialize, Serialize};

use crate::durable_file;

/// Whose progress: a consumer group, or for broadcast groups one client of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OffsetKey {
    pub subscriber: String,
    pub topic: String,
    pub queue_id: u32,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    key: OffsetKey,
    offset: u64,
}

#[derive(Debug)]
pub struct Offsets {
    path: PathBuf,
    map: Mutex<BTreeMap<OffsetKey, u64>>,
    dirty: AtomicBool,
}

impl Offsets {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("offsets.json");
        let map = match durable_file::read(&path)? {
            Some(bytes) => {
                let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
                })?;
                entries.into_iter().map(|e| (e.key, e.offset)).collect()
            }
            None => BTreeMap::new(),
        };
        Ok(Self { path, map: Mutex::new(map), dirty: AtomicBool::new(false) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<OffsetKey, u64>> {
        lock(&self.map)
    }

    pub fn get(&self, key: &OffsetKey) -> Option<u64> {
        self.lock().get(key).copied()
    }

    pub fn set(&self, key: OffsetKey, offset: u64) {
        let previous = self.lock().insert(key, offset);
        if previous != Some(offset) {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Every offset.
    pub fn all(&self) -> Vec<(OffsetKey, u64)> {
        self.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Every offset of `subscriber`.
    pub fn of_subscriber(&self, subscriber: &str) -> Vec<(OffsetKey, u64)> {
        self.lock().iter().filter(|(k, _)| k.subscriber == subscriber).map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Writes the offsets if they changed since the last write.
    pub fn persist(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let entries: Vec<Entry> = self.lock().iter().map(|(k, &offset)| Entry { key: k.clone(), offset }).collect();
        let bytes = serde_json::to_vec(&entries).map_err(std::io::Error::other)?;
        let result = durable_file::write(&self.path, &bytes);
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sub: &str, q: u32) -> OffsetKey {
        OffsetKey { subscriber: sub.into(), topic: "t".into(), queue_id: q }
    }

    #[test]
    fn persisted_offsets_are_read_back_and_unpersisted_ones_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let offsets = Offsets::open(dir.path()).expect("open");
        offsets.set(key("g", 0), 10);
        offsets.set(key("g", 1), 3);
        offsets.persist().expect("persist");
        offsets.set(key("g", 0), 99);
        let reopened = Offsets::open(dir.path()).expect("reopen");
        assert_eq!(reopened.get(&key("g", 0)), Some(10));
        assert_eq!(reopened.get(&key("g", 1)), Some(3));
        assert_eq!(reopened.of_subscriber("g").len(), 2);
        assert_eq!(reopened.get(&key("other", 0)), None);
    }
}
