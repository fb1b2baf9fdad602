//! Ferry export: the forwards' crossing messages written as batch files into `[target] ferry_dir`
//! for a one-way link to carry. A forward's batch is settled on the source only once the file
//! holding it is on disk, so a crash before that sends the batch again in a later file; the
//! importing gateway sends each message under its own id and the target drops the second copy.
//!
//! Sequence numbers never repeat: the next one is reserved in `<data_dir>/ferry-export.json`
//! before its file is written, and one reserved but never written (a crash between the two) is
//! announced as skipped in the next file. A copy of every file stays in `<data_dir>/ferry-sent/`
//! (the oldest removed beyond `ferry_keep_bytes`) for `ferrymq gateway resend`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::durable;
use anyhow::Context;
use ed25519_dalek::SigningKey;
use ferrymq_client::{Message, now_ms};
use ferrymq_proto::sync::lock;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::file;

/// Where and how batch files are written.
#[derive(Clone)]
pub struct ExportSettings {
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub gateway: String,
    pub key: SigningKey,
    /// A file is written once its messages reach this size…
    pub file_bytes_max: usize,
    /// …or its first message has waited this long.
    pub file_age: Duration,
    /// Bytes of sent copies kept for resends.
    pub keep_bytes: u64,
}

/// What the exporter remembers across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
struct ExportState {
    next_seq: u64,
    /// Reserved and not yet known to be written.
    reserved: Option<u64>,
    /// Reserved and never written: announced in the next file.
    skipped: Vec<u64>,
}

fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ferry-export.json")
}

/// Where copies of sent files are kept.
pub fn sent_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("ferry-sent")
}

struct Job {
    messages: Vec<Message>,
    done: oneshot::Sender<Result<u64, String>>,
}

/// The forwards' handle on the export task.
#[derive(Clone)]
pub struct Exporter {
    jobs: mpsc::Sender<Job>,
}

impl Exporter {
    /// Writes `messages` (in order) into a batch file; returns its sequence number once the file is
    /// on disk.
    pub async fn export(&self, messages: Vec<Message>) -> Result<u64, String> {
        let (done, answer) = oneshot::channel();
        self.jobs.send(Job { messages, done }).await.map_err(|_| "the exporter stopped".to_owned())?;
        answer.await.map_err(|_| "the exporter stopped".to_owned())?
    }
}

/// Starts the export task; it runs until `stop`.
pub fn start(
    settings: ExportSettings,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(Exporter, tokio::task::JoinHandle<()>)> {
    std::fs::create_dir_all(&settings.dir).with_context(|| format!("create {}", settings.dir.display()))?;
    std::fs::create_dir_all(sent_dir(&settings.data_dir))
        .with_context(|| format!("create {}", sent_dir(&settings.data_dir).display()))?;
    let file_age = settings.file_age;
    let file_bytes_max = settings.file_bytes_max;
    let writer = Arc::new(Mutex::new(Writer::open(settings)?));
    let (jobs, mut rx) = mpsc::channel::<Job>(256);
    let task = tokio::spawn(async move {
        let mut pending: Vec<Job> = Vec::new();
        let mut bytes = 0usize;
        let mut first_at: Option<Instant> = None;
        loop {
            let flush_at = first_at.map(|t| t + file_age);
            let due = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => {
                        bytes += job.messages.iter().map(|m| m.body.len() + 256).sum::<usize>();
                        first_at.get_or_insert_with(Instant::now);
                        pending.push(job);
                        if bytes < file_bytes_max {
                            continue;
                        }
                    }
                    None => return,
                },
                _ = due => {}
                _ = stop.changed() => return,
            }
            let jobs = std::mem::take(&mut pending);
            bytes = 0;
            first_at = None;
            let messages: Vec<Message> = jobs.iter().flat_map(|j| j.messages.iter().cloned()).collect();
            let w = writer.clone();
            let answer = match tokio::task::spawn_blocking(move || lock(&w).write(&messages)).await {
                Ok(result) => result.map_err(|err| format!("{err:#}")),
                Err(err) => Err(format!("the ferry writer failed: {err}")),
            };
            if let Err(err) = &answer {
                tracing::error!(%err, "a ferry file could not be written; its messages come again from the source");
            }
            for job in jobs {
                let _ = job.done.send(answer.clone());
            }
        }
    });
    Ok((Exporter { jobs }, task))
}

/// Writes files and keeps the state.
struct Writer {
    settings: ExportSettings,
    state: ExportState,
}

impl Writer {
    fn open(settings: ExportSettings) -> anyhow::Result<Self> {
        let path = state_path(&settings.data_dir);
        let mut state: ExportState = match durable::read(&path)? {
            Some(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("read {}", path.display()))?,
            None => ExportState::default(),
        };
        if let Some(reserved) = state.reserved.take() {
            let name = file::file_name(reserved);
            if sent_dir(&settings.data_dir).join(&name).exists() {
                tracing::info!(seq = reserved, "the last ferry file was written before the stop");
            } else {
                tracing::warn!(seq = reserved, "a ferry file was reserved and never written; the next file says so");
                state.skipped.push(reserved);
            }
        }
        let writer = Self { settings, state };
        writer.save()?;
        Ok(writer)
    }

    fn save(&self) -> anyhow::Result<()> {
        let path = state_path(&self.settings.data_dir);
        let bytes = serde_json::to_vec_pretty(&self.state)?;
        durable::write(&path, &bytes).with_context(|| format!("write {}", path.display()))
    }

    /// Writes one batch file of `messages`; returns its sequence number.
    fn write(&mut self, messages: &[Message]) -> anyhow::Result<u64> {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        self.state.reserved = Some(seq);
        self.save()?;
        let skipped = self.state.skipped.clone();
        let bytes = file::encode(&self.settings.gateway, seq, now_ms(), skipped, messages, &self.settings.key)?;
        let name = file::file_name(seq);
        // The kept copy first: a file in the outbox always has its copy for resends.
        durable::write(&sent_dir(&self.settings.data_dir).join(&name), &bytes)
            .with_context(|| format!("keep a copy of {name}"))?;
        durable::place(&self.settings.dir, &name, &bytes)?;
        self.state.reserved = None;
        self.state.skipped.clear();
        self.save()?;
        tracing::debug!(seq, messages = messages.len(), bytes = bytes.len(), "ferry file written");
        self.trim_copies();
        Ok(seq)
    }

    /// Removes the oldest kept copies beyond `keep_bytes`.
    fn trim_copies(&self) {
        let dir = sent_dir(&self.settings.data_dir);
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        let mut files: Vec<(u64, PathBuf, u64)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let seq = file::seq_of(&e.file_name().to_string_lossy())?;
                Some((seq, e.path(), e.metadata().ok()?.len()))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        for (_, path, len) in files {
            if total <= self.settings.keep_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// `ferrymq gateway resend`: puts the kept copies of batches `seqs` into the outbox again.
pub fn resend(data_dir: &Path, outbox: &Path, seqs: &[u64]) -> anyhow::Result<()> {
    for &seq in seqs {
        let name = file::file_name(seq);
        let copy = sent_dir(data_dir).join(&name);
        let bytes = std::fs::read(&copy).with_context(|| {
            format!("batch {seq} is not kept any more ({}); raise ferry_keep_bytes to keep more", copy.display())
        })?;
        durable::place(outbox, &name, &bytes)?;
        tracing::info!(seq, "batch placed in the outbox again");
    }
    Ok(())
}
