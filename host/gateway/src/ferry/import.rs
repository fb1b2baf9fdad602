//! Ferry import: batch files read from `[source] ferry_dir`, each checked (checksum and signature)
//! the first time it is seen, imported once and in sequence order, then removed.
//!
//! * A file that fails its checks is moved to `<data_dir>/ferry-quarantine/`, reported (log,
//!   counter, `GET /v1/gateway`), and never imported: its sequence number stays missing until a
//!   resend brings a good copy.
//! * A file whose batch was imported already (a duplicate) is removed unread.
//! * A file ahead of the next expected one waits; the missing numbers are written to
//!   `<data_dir>/ferry-gaps.json` (and shown by `GET /v1/gateway`), for `ferrymq gateway resend`
//!   on the exporting side.
//! * A batch is imported message by message in file order, each under its own id (the target drops
//!   a second copy), through the forward named by the message's topic, with that forward's policy.
//!   The next expected number is saved (`<data_dir>/ferry-import.json`) only after every message of
//!   the batch was taken by the target or recorded in the decision log.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::durable;
use anyhow::Context;
use ed25519_dalek::VerifyingKey;
use ferrymq_client::{Message, Received, ReceivedKind, now_ms};
use ferrymq_proto::sync::lock;
use ferrymq_proto::throttle::Throttle;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::file::{self, FileError};
use crate::decisions::{Decision, Entry, Recorded};
use crate::forward::{Route, Target};
use crate::leg::sleep_unless_stopped;

/// How often the inbox is looked at.
const POLL: Duration = Duration::from_millis(200);
/// Largest batch file read: an exporter's files stay below it (`ferry_file_bytes_max` is at most
/// 768 MiB, plus one forward's batch); a larger file is quarantined unread, so whatever drops files
/// in the inbox cannot make the importer take the memory it likes.
pub const FILE_BYTES_MAX: u64 = 1 << 30;

pub struct ImportSettings {
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub key: VerifyingKey,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
struct ImportState {
    next_seq: u64,
    /// Numbers the exporter announced it skipped, at or after `next_seq`.
    skipped: BTreeSet<u64>,
}

/// The importer's counters and reports, for `/metrics` and `GET /v1/gateway`.
#[derive(Debug, Default)]
pub struct ImportStats {
    pub files_imported: AtomicU64,
    pub files_duplicate: AtomicU64,
    pub files_quarantined: AtomicU64,
    pub messages_imported: AtomicU64,
    pub next_seq: AtomicU64,
    /// Missing sequence numbers before the files that wait.
    pub gaps: std::sync::Mutex<Vec<u64>>,
    /// Files quarantined, with why.
    pub quarantined: std::sync::Mutex<Vec<(String, String)>>,
}

/// How many quarantine reports `GET /v1/gateway` keeps.
const QUARANTINE_REPORTS_MAX: usize = 100;
/// Most missing numbers a gap report names (the first ones).
const GAPS_REPORTED_MAX: usize = 10_000;

fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ferry-import.json")
}

/// Imports until `stop`.
pub async fn run(
    settings: ImportSettings,
    routes: Vec<Arc<Route>>,
    mut target: Target,
    stats: Arc<ImportStats>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.dir).with_context(|| format!("create {}", settings.dir.display()))?;
    let quarantine = settings.data_dir.join("ferry-quarantine");
    std::fs::create_dir_all(&quarantine).with_context(|| format!("create {}", quarantine.display()))?;
    let path = state_path(&settings.data_dir);
    let mut state: ImportState = match durable::read(&path)? {
        Some(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("read {}", path.display()))?,
        None => ImportState::default(),
    };
    stats.next_seq.store(state.next_seq, Ordering::Relaxed);
    // Files checked already, by name and length: each is verified once, when first seen.
    let mut verified: HashSet<(String, u64)> = HashSet::new();
    loop {
        let files = tokio::task::block_in_place(|| scan(&settings.dir));
        for (seq, path) in &files {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if *seq < state.next_seq || state.skipped.contains(seq) {
                if std::fs::remove_file(path).is_ok() {
                    stats.files_duplicate.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(seq, "a batch imported already came again; removed");
                }
                continue;
            }
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if verified.contains(&(name.clone(), len)) {
                continue;
            }
            match tokio::task::block_in_place(|| read(path, &settings.key)) {
                Ok(_) => {
                    verified.insert((name, len));
                }
                Err(err) => set_aside(path, &quarantine, &err, &stats),
            }
        }
        // Import in order for as long as the next batch is here.
        loop {
            let seq = state.next_seq;
            let path = settings.dir.join(file::file_name(seq));
            if !path.exists() {
                break;
            }
            let (header, messages) = match tokio::task::block_in_place(|| read(&path, &settings.key)) {
                Ok(batch) => batch,
                Err(err) => {
                    set_aside(&path, &quarantine, &err, &stats);
                    break;
                }
            };
            let count = messages.len() as u64;
            if !import(&routes, messages, &mut target, &mut stop).await {
                return Ok(());
            }
            state.skipped.extend(header.skipped.iter().copied().filter(|&s| s > seq));
            state.next_seq = seq + 1;
            while state.skipped.remove(&state.next_seq) {
                state.next_seq += 1;
            }
            save(&settings.data_dir, &state)?;
            let _ = std::fs::remove_file(&path);
            stats.files_imported.fetch_add(1, Ordering::Relaxed);
            stats.messages_imported.fetch_add(count, Ordering::Relaxed);
            stats.next_seq.store(state.next_seq, Ordering::Relaxed);
            tracing::info!(seq, messages = count, "ferry batch imported");
        }
        report_gaps(&settings.data_dir, &state, &scan(&settings.dir), &stats);
        if !sleep_unless_stopped(POLL, &mut stop).await {
            return Ok(());
        }
    }
}

/// Batch files in `dir`, by sequence number (temporary and foreign names left alone).
fn scan(dir: &Path) -> BTreeMap<u64, PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeMap::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((file::seq_of(&e.file_name().to_string_lossy())?, e.path())))
        .collect()
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("{len} bytes: over the {FILE_BYTES_MAX}-byte limit of a batch file")]
    TooLarge { len: u64 },
    #[error(transparent)]
    File(#[from] FileError),
}

fn read(path: &Path, key: &VerifyingKey) -> Result<(file::Header, Vec<Message>), ReadError> {
    let len = std::fs::metadata(path)?.len();
    if len > FILE_BYTES_MAX {
        return Err(ReadError::TooLarge { len });
    }
    let bytes = std::fs::read(path)?;
    let batch = file::decode(&bytes, key)?;
    let expected = path.file_name().and_then(|n| file::seq_of(&n.to_string_lossy()));
    if expected != Some(batch.0.seq) {
        return Err(FileError::Malformed {
            what: "header",
            reason: format!("it says batch {}, the file name says otherwise", batch.0.seq),
        }
        .into());
    }
    Ok(batch)
}

/// Moves a file that failed its checks to the quarantine directory, and reports it.
fn set_aside(path: &Path, quarantine: &Path, err: &ReadError, stats: &ImportStats) {
    if let ReadError::Io(_) = err {
        // Not the file's fault (it may be half carried): look again later.
        static UNREADABLE: Throttle = Throttle::per_second(1);
        if let Some(suppressed) = UNREADABLE.admit() {
            tracing::warn!(file = %path.display(), %err, suppressed, "a ferry file cannot be read yet");
        }
        return;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let to = quarantine.join(format!("{name}.{}", now_ms()));
    match std::fs::rename(path, &to) {
        Ok(()) => {
            tracing::error!(file = %name, %err, quarantined = %to.display(), "a ferry file failed its checks and is quarantined; it is not imported");
            stats.files_quarantined.fetch_add(1, Ordering::Relaxed);
            let mut reports = lock(&stats.quarantined);
            reports.push((name, err.to_string()));
            let excess = reports.len().saturating_sub(QUARANTINE_REPORTS_MAX);
            reports.drain(..excess);
        }
        Err(move_err) => {
            tracing::error!(file = %name, %err, %move_err, "a ferry file failed its checks and cannot be moved aside");
        }
    }
}

fn save(data_dir: &Path, state: &ImportState) -> anyhow::Result<()> {
    let path = state_path(data_dir);
    durable::write(&path, &serde_json::to_vec_pretty(state)?).with_context(|| format!("write {}", path.display()))
}

/// Writes `<data_dir>/ferry-gaps.json` with the numbers missing before the files that wait.
fn report_gaps(data_dir: &Path, state: &ImportState, files: &BTreeMap<u64, PathBuf>, stats: &ImportStats) {
    let last = files.keys().next_back().copied();
    let gaps: Vec<u64> = match last {
        Some(last) if last > state.next_seq => (state.next_seq..last)
            .filter(|s| !files.contains_key(s) && !state.skipped.contains(s))
            .take(GAPS_REPORTED_MAX)
            .collect(),
        _ => Vec::new(),
    };
    let mut current = lock(&stats.gaps);
    if *current == gaps {
        return;
    }
    if !gaps.is_empty() {
        tracing::warn!(next = state.next_seq, missing = ?gaps, "ferry batches are missing; resend them from the exporting gateway (ferrymq gateway resend --seq …)");
    }
    let report = serde_json::json!({
        "next_seq": state.next_seq,
        "missing": gaps,
        "waiting": files.keys().filter(|&&s| s > state.next_seq).collect::<Vec<_>>(),
        "time_ms": now_ms(),
    });
    if let Ok(bytes) = serde_json::to_vec_pretty(&report) {
        let _ = durable::write(&data_dir.join("ferry-gaps.json"), &bytes);
    }
    *current = gaps;
}

/// Imports one batch's messages in order; false when the gateway stops first.
async fn import(
    routes: &[Arc<Route>],
    messages: Vec<Message>,
    target: &mut Target,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    // Consecutive messages of one forward are judged, sent and recorded together.
    let mut rest = messages.into_iter().peekable();
    while let Some(first) = rest.next() {
        let topic = first.topic.clone();
        let mut run = vec![first];
        while let Some(next) = rest.next_if(|m| m.topic == topic) {
            run.push(next);
        }
        let Some(route) = routes.iter().find(|r| r.topic == topic) else {
            // No forward for this topic: recorded whole, not lost.
            let entries: Vec<Entry> = run
                .iter()
                .map(|m| Entry {
                    time_ms: now_ms(),
                    topic: topic.clone(),
                    message_id: m.message_id.clone().unwrap_or_default(),
                    decision: Decision::SetAside,
                    reason: format!("no [[forward]] imports topic {topic:?}"),
                    message: Some(Recorded::of(m)),
                })
                .collect();
            let Some(any) = routes.first() else { return false };
            if !any.record(&entries, stop).await {
                return false;
            }
            continue;
        };
        route.stats.received.fetch_add(run.len() as u64, Ordering::Relaxed);
        let mut crossings = Vec::with_capacity(run.len());
        let mut entries = Vec::new();
        for message in run {
            let received = as_received(&message);
            let message = Message { topic: route.target_topic.clone(), ..message };
            if route.judge_one(&received, message, &mut crossings, &mut entries, stop).await.is_none() {
                return false;
            }
        }
        let Some(refused) = route.deliver(crossings, target, stop).await else { return false };
        entries.extend(refused);
        if !entries.is_empty() && !route.record(&entries, stop).await {
            return false;
        }
    }
    true
}

/// A message read from a file as the policy sees a received one.
fn as_received(m: &Message) -> Received {
    let kind = if m.message_group.is_some() {
        ReceivedKind::Fifo
    } else if m.delivery_ms.is_some() {
        ReceivedKind::Delay
    } else {
        ReceivedKind::Normal
    };
    let store_ms =
        m.properties.iter().find(|(k, _)| k == crate::forward::SOURCE_STORE_MS).and_then(|(_, v)| v.parse().ok());
    Received {
        topic: m.topic.clone(),
        message_id: m.message_id.clone().unwrap_or_default(),
        receipt_handle: String::new(),
        queue_id: -1,
        queue_offset: -1,
        delivery_attempt: 1,
        tag: m.tag.clone(),
        keys: m.keys.clone(),
        message_group: m.message_group.clone(),
        properties: m.properties.clone(),
        body: m.body.clone(),
        kind,
        delivery_ms: m.delivery_ms,
        born_ms: m.born_ms,
        store_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_limit_is_refused_unread_and_a_good_one_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let mut message = Message::new("t", b"body".to_vec());
        message.message_id = Some("ID".into());
        let good = dir.path().join(file::file_name(4));
        std::fs::write(&good, file::encode("gw", 4, 0, Vec::new(), &[message], &key).expect("encode")).expect("write");
        let (header, messages) = read(&good, &key.verifying_key()).expect("a good file reads");
        assert_eq!((header.seq, messages.len()), (4, 1));

        // Sparse: over the limit on paper, no disk taken.
        let huge = dir.path().join(file::file_name(5));
        std::fs::File::create(&huge).and_then(|f| f.set_len(FILE_BYTES_MAX + 1)).expect("sparse file");
        match read(&huge, &key.verifying_key()) {
            Err(ReadError::TooLarge { len }) => assert_eq!(len, FILE_BYTES_MAX + 1),
            other => panic!("an oversized file: {:?}", other.map(|(h, _)| h)),
        }
        let misnamed = dir.path().join(file::file_name(6));
        std::fs::copy(&good, &misnamed).expect("copy");
        assert!(matches!(read(&misnamed, &key.verifying_key()), Err(ReadError::File(FileError::Malformed { .. }))));
    }
}
