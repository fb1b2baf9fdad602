//! The checkpoint: how far the log is known durable and how far the derived data (consume queues,
//! index) is durable, so that recovery scans and rebuilds only what came after.
//!
//! The file holds two slots in separate sectors; each write goes to the slot the previous one did not
//! use and is flushed before the next, so a torn write can only ever damage the slot being written.
//! Each slot carries a sequence number and a CRC32C; recovery takes the valid slot with the higher
//! sequence number.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Result, StoreError};
use crate::index::IndexMark;
use crate::io::{Storage, StorageFile};

const MAGIC: u32 = 0xF3B1_C901;
const FILE_BYTES: u64 = 1024;
const SLOT_STRIDE: u64 = 512;
const SLOT_BYTES: usize = 52;

/// What a checkpoint vouches for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    /// Every log byte below this is durable (a record boundary).
    pub(crate) log_flushed: u64,
    /// Consume queues and index are durable for every record below this (a record boundary).
    pub(crate) dispatched: u64,
    pub(crate) index: IndexMark,
    /// Written last at a clean shutdown: the log ends exactly at `log_flushed == dispatched`.
    pub(crate) clean: bool,
}

#[derive(Debug)]
pub(crate) struct Checkpoint {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    sequence: u64,
}

fn encode(sequence: u64, mark: &Mark) -> [u8; SLOT_BYTES] {
    let mut out = [0u8; SLOT_BYTES];
    out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    out[4..12].copy_from_slice(&sequence.to_be_bytes());
    out[12..20].copy_from_slice(&mark.log_flushed.to_be_bytes());
    out[20..28].copy_from_slice(&mark.dispatched.to_be_bytes());
    out[28..36].copy_from_slice(&mark.index.file.to_be_bytes());
    out[36..40].copy_from_slice(&mark.index.count.to_be_bytes());
    out[40] = u8::from(mark.clean);
    let crc = crc32c::crc32c(&out[..SLOT_BYTES - 4]);
    out[SLOT_BYTES - 4..].copy_from_slice(&crc.to_be_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<(u64, Mark)> {
    let bytes: &[u8; SLOT_BYTES] = bytes.get(..SLOT_BYTES)?.try_into().ok()?;
    let u32_at = |at: usize| bytes[at..at + 4].try_into().ok().map(u32::from_be_bytes);
    let u64_at = |at: usize| bytes[at..at + 8].try_into().ok().map(u64::from_be_bytes);
    if u32_at(0)? != MAGIC || u32_at(SLOT_BYTES - 4)? != crc32c::crc32c(&bytes[..SLOT_BYTES - 4]) {
        return None;
    }
    let mark = Mark {
        log_flushed: u64_at(12)?,
        dispatched: u64_at(20)?,
        index: IndexMark { file: u64_at(28)?, count: u32_at(36)? },
        clean: bytes[40] == 1,
    };
    Some((u64_at(4)?, mark))
}

impl Checkpoint {
    /// Opens (or creates) the checkpoint in `dir`; returns it with the newest valid mark, if any.
    pub(crate) fn open(storage: &dyn Storage, dir: &Path) -> Result<(Self, Option<Mark>)> {
        let path = dir.join("checkpoint");
        let create = || crate::io::create_durably(storage, dir, &path, FILE_BYTES, "checkpoint");
        let opened = storage.open(&path);
        let damaged = match &opened {
            Ok(file) => file.len() != FILE_BYTES,
            Err(err) => crate::io::is_empty_file(err),
        };
        if damaged {
            // Not a file this store writes (cut short, or empty after a crash at its creation):
            // without a checkpoint, recovery verifies the whole log and rebuilds the consume queues
            // and the index from it.
            tracing::warn!(file = %path.display(), "replacing a damaged checkpoint; the whole log is scanned");
            drop(opened);
            storage.remove_file(&path).map_err(StoreError::io(format!("remove {}", path.display())))?;
            return Ok((Self { file: create()?, path, sequence: 0 }, None));
        }
        let file = match opened {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => create()?,
            Err(err) => return Err(StoreError::io(format!("open {}", path.display()))(err)),
        };
        // SAFETY: the checkpoint is read here, before anything writes it.
        let slots = [0, SLOT_STRIDE].map(|at| decode(unsafe { file.bytes(at, SLOT_BYTES) }));
        let newest = slots.into_iter().flatten().max_by_key(|(seq, _)| *seq);
        let sequence = newest.map_or(0, |(seq, _)| seq);
        Ok((Self { path, file, sequence }, newest.map(|(_, mark)| mark)))
    }

    /// Durably records `mark`.
    pub(crate) fn write(&mut self, mark: &Mark) -> Result<()> {
        let sequence = self.sequence + 1;
        let at = (sequence % 2) * SLOT_STRIDE;
        self.file
            .write(at, &encode(sequence, mark))
            .and_then(|()| self.file.sync())
            .map_err(StoreError::io(format!("write {}", self.path.display())))?;
        self.sequence = sequence;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::io::{FaultPlan, FaultStorage};

    #[test]
    fn the_newest_intact_slot_wins_even_when_the_last_write_was_torn() {
        let storage = FaultStorage::new(
            FaultPlan { capacity_bytes: 1 << 20, ..FaultPlan::default() },
            Arc::new(ManualClock::new(0)),
        );
        storage.create_dir_all(Path::new("s")).expect("dir");
        let (mut ck, none) = Checkpoint::open(&storage, Path::new("s")).expect("open");
        assert_eq!(none, None);
        let first = Mark { log_flushed: 100, dispatched: 90, index: IndexMark { file: 1, count: 7 }, clean: false };
        ck.write(&first).expect("write");
        let second = Mark { log_flushed: 200, clean: true, ..first };
        // Write the second mark without its flush completing: every crash image must hold one of them.
        ck.file.write(((ck.sequence + 1) % 2) * SLOT_STRIDE, &encode(ck.sequence + 1, &second)).expect("write");
        for seed in 0..32 {
            let image = storage.crash_image(seed);
            let (_, mark) = Checkpoint::open(&image, Path::new("s")).expect("reopen");
            assert!(mark == Some(first) || mark == Some(second), "seed {seed}: {mark:?}");
        }
    }
}
