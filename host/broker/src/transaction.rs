//! Transactional messages: half messages, commit and rollback, check-back, and discard.
//!
//! A transactional send stores a *half* message in `rmq_sys_trans_half`, invisible to consumers.
//! Its producer then commits or rolls back; if it does not, the broker asks — first a bound
//! [`TransactionChecker`] (a plugin), else a live producer of the topic through a
//! [`TransactionProber`] — after the immunity time and then every check interval, and after
//! `checks_max` checks moves the half message to `rmq_sys_trans_discarded`.
//!
//! Every outcome is a record in `rmq_sys_trans_op` (commit, rollback, check, discard), and a commit is
//! appended together with its real message as one atomic batch. After a crash the pending set is rebuilt
//! from those two topics alone: a commit either happened whole (message and record) or not at all,
//! so a committed message is never lost, never delivered twice, and a rolled-back one never delivered.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferrymq_proto::properties::{
    self, CHECK_IMMUNITY_SECONDS, HALF_OFFSET, PRODUCER_GROUP, PropertiesError, REAL_QUEUE_ID, REAL_TOPIC,
    TRANSACTION_ID, TRANSACTION_OP, TRANSACTION_PREPARED,
};
use ferrymq_proto::record::{RecordRef, sys_flag};
use ferrymq_proto::sync::lock;
use ferrymq_proto::throttle::Throttle;
use ferrymq_store::clock::Clock;
use ferrymq_store::{Appended, NewMessage, Store, StoreError, StoredRecord};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::offsets::{OffsetKey, Offsets};

/// Where half messages wait for their outcome.
pub const HALF_TOPIC: &str = "rmq_sys_trans_half";
/// Where outcomes are recorded.
pub const OP_TOPIC: &str = "rmq_sys_trans_op";
/// Where half messages go after `checks_max` checks without an answer.
pub const DISCARD_TOPIC: &str = "rmq_sys_trans_discarded";
/// Resolved transactions remembered, so that a second commit or rollback is answered OK.
pub const RESOLVED_REMEMBERED_MAX: usize = 100_000;
const SUBSCRIBER: &str = "%SYS%transactions";

/// Check-back timing, RocketMQ's defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransactionConfig {
    /// A half message younger than this is not checked (unless it asks for a longer immunity).
    pub first_check_ms: i64,
    /// Time between two checks of one transaction.
    pub check_interval_ms: i64,
    /// Checks before a half message is discarded.
    pub checks_max: u32,
    /// Longest per-message immunity a producer may ask for.
    pub immunity_ms_max: i64,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self { first_check_ms: 6_000, check_interval_ms: 30_000, checks_max: 15, immunity_ms_max: 3_600_000 }
    }
}

/// A transaction's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    Commit,
    Rollback,
    /// Not decided yet: check again later.
    Unknown,
}

/// Decides orphaned transactions before any producer is asked (a policy plugin, for instance).
pub trait TransactionChecker: Send + Sync {
    /// `None`: no opinion, ask a producer as RocketMQ does.
    fn check(&self, topic: &str, transaction_id: &str, half: &RecordRef<'_>) -> Option<Resolution>;
}

/// Asks a live producer of `topic` to resolve a transaction; it answers later with EndTransaction.
pub trait TransactionProber: Send + Sync {
    /// Whether some producer was asked.
    fn probe(&self, topic: &str, transaction_id: &str, half: &StoredRecord) -> bool;
}

#[derive(Debug, Error)]
pub enum TransactionError {
    #[error("no pending transaction {0:?} (never started, or already discarded)")]
    NotFound(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The stored half message does not say which topic it is for.
    #[error("store: half message without a topic")]
    HalfWithoutTopic,
    /// The released message could not carry the half message's properties.
    #[error("store: {0}")]
    Properties(#[source] PropertiesError),
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransactionStats {
    pub pending: usize,
    pub checks_sent: u64,
    pub commits: u64,
    pub rollbacks: u64,
    pub discards: u64,
}

#[derive(Debug)]
struct Pending {
    topic: String,
    half_offset: u64,
    log_offset: u64,
    len: u32,
    checks: u32,
    next_check_ms: i64,
    /// An outcome is being stored; other resolutions wait for it.
    resolving: bool,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<String, Pending>,
    /// Half offset → transaction, for the lowest unresolved offset.
    by_half: BTreeMap<u64, String>,
    /// Next half-topic offset not yet seen.
    next_half: u64,
    resolved: HashMap<String, Resolution>,
    resolved_order: std::collections::VecDeque<String>,
}

#[derive(Debug, Default)]
struct Counters {
    checks_sent: AtomicU64,
    commits: AtomicU64,
    rollbacks: AtomicU64,
    discards: AtomicU64,
}

/// The transaction service.
pub struct Transactions {
    store: Arc<Store>,
    offsets: Arc<Offsets>,
    clock: Arc<dyn Clock>,
    config: TransactionConfig,
    state: Mutex<State>,
    counters: Counters,
}

impl std::fmt::Debug for Transactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transactions").field("config", &self.config).finish_non_exhaustive()
    }
}

fn key() -> OffsetKey {
    OffsetKey { subscriber: SUBSCRIBER.into(), topic: HALF_TOPIC.into(), queue_id: 0 }
}

fn op_name(resolution: Resolution) -> &'static str {
    match resolution {
        Resolution::Commit => "commit",
        Resolution::Rollback => "rollback",
        Resolution::Unknown => "check",
    }
}

impl Transactions {
    /// Rebuilds the pending transactions from the half and op topics.
    pub fn open(store: Arc<Store>, offsets: Arc<Offsets>, clock: Arc<dyn Clock>, config: TransactionConfig) -> Self {
        let this =
            Self { store, offsets, clock, config, state: Mutex::new(State::default()), counters: Counters::default() };
        this.rebuild();
        this
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Reads every record of `topic` queue 0 from `from`, in order.
    fn scan(&self, topic: &str, from: u64, mut each: impl FnMut(u64, &StoredRecord, &RecordRef<'_>)) {
        let Some((min, max)) = self.store.queue_bounds(topic, 0) else { return };
        let mut at = from.max(min);
        while at < max {
            let entries = self.store.read_queue(topic, 0, at, 1024);
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                at = entry.queue_offset + 1;
                let Ok(stored) = self.store.record(entry.offset, entry.len) else { continue };
                if let Ok(rec) = stored.decode() {
                    each(entry.queue_offset, &stored, &rec);
                }
            }
        }
    }

    fn rebuild(&self) {
        let commit = self.offsets.get(&key()).unwrap_or(0);
        let mut resolved = BTreeSet::new();
        let mut checks: HashMap<u64, u32> = HashMap::new();
        self.scan(OP_TOPIC, 0, |_, _, rec| {
            let Some(half) = properties::get(rec.properties, HALF_OFFSET).and_then(|h| h.parse::<u64>().ok()) else {
                return;
            };
            if half < commit {
                return;
            }
            match properties::get(rec.properties, TRANSACTION_OP) {
                Some("check") => *checks.entry(half).or_default() += 1,
                Some(_) => {
                    resolved.insert(half);
                }
                None => {}
            }
        });
        let now = self.clock.now_ms();
        let mut state = self.lock();
        state.next_half = commit;
        self.scan(HALF_TOPIC, commit, |half_offset, stored, rec| {
            state.next_half = half_offset + 1;
            if resolved.contains(&half_offset) {
                return;
            }
            let Some(tx_id) = properties::get(rec.properties, TRANSACTION_ID) else { return };
            let topic = properties::get(rec.properties, REAL_TOPIC).unwrap_or_default().to_owned();
            let done = checks.get(&half_offset).copied().unwrap_or(0);
            let immunity_s = properties::get(rec.properties, CHECK_IMMUNITY_SECONDS).and_then(|s| s.parse().ok());
            let first = rec.meta.store_timestamp_ms + self.immunity_ms(immunity_s);
            // Checked before the restart: the next check waits a whole interval from now.
            let next_check_ms = if done > 0 { now + self.config.check_interval_ms } else { first };
            state.by_half.insert(half_offset, tx_id.to_owned());
            state.pending.insert(
                tx_id.to_owned(),
                Pending {
                    topic,
                    half_offset,
                    log_offset: stored.offset(),
                    len: stored.len() as u32,
                    checks: done,
                    next_check_ms,
                    resolving: false,
                },
            );
        });
        if !state.pending.is_empty() {
            tracing::info!(pending = state.pending.len(), "transactions awaiting an outcome");
        }
    }

    /// How long after its store time a half message is first checked: the producer's wish, if longer
    /// than `first_check_ms`, up to `immunity_ms_max`.
    fn immunity_ms(&self, immunity_s: Option<i64>) -> i64 {
        let asked = immunity_s.unwrap_or(0).saturating_mul(1000).clamp(0, self.config.immunity_ms_max);
        asked.max(self.config.first_check_ms)
    }

    /// The half-message form of a transactional message bound for `topic`/`queue_id`.
    pub fn half(
        message: NewMessage,
        topic: &str,
        queue_id: u32,
        transaction_id: &str,
        immunity_s: Option<i64>,
    ) -> NewMessage {
        let queue = queue_id.to_string();
        let immunity = immunity_s.map(|s| s.to_string());
        let mut props = message.properties;
        let mut extra = vec![
            (REAL_TOPIC, topic),
            (REAL_QUEUE_ID, queue.as_str()),
            (TRANSACTION_PREPARED, "true"),
            (TRANSACTION_ID, transaction_id),
            (PRODUCER_GROUP, topic),
        ];
        if let Some(immunity) = &immunity {
            extra.push((CHECK_IMMUNITY_SECONDS, immunity));
        }
        // The names are the broker's own and the values were validated, so encoding cannot fail.
        let _ = properties::encode(extra, &mut props);
        NewMessage {
            topic: HALF_TOPIC.into(),
            queue_id: 0,
            sys_flag: message.sys_flag | sys_flag::TRANSACTION_PREPARED,
            properties: props,
            ..message
        }
    }

    /// Records a stored half message as pending.
    pub fn register(&self, topic: &str, transaction_id: &str, stored: &Appended, immunity_s: Option<i64>) {
        let immunity = self.immunity_ms(immunity_s);
        let mut state = self.lock();
        state.next_half = state.next_half.max(stored.queue_offset + 1);
        state.by_half.insert(stored.queue_offset, transaction_id.to_owned());
        state.pending.insert(
            transaction_id.to_owned(),
            Pending {
                topic: topic.to_owned(),
                half_offset: stored.queue_offset,
                log_offset: stored.offset,
                len: stored.len,
                checks: 0,
                next_check_ms: stored.store_timestamp_ms + immunity,
                resolving: false,
            },
        );
    }

    fn op(&self, op: &str, transaction_id: &str, half_offset: u64) -> NewMessage {
        let half = half_offset.to_string();
        let mut props = Vec::new();
        let _ = properties::encode(
            [(TRANSACTION_ID, transaction_id), (TRANSACTION_OP, op), (HALF_OFFSET, half.as_str())],
            &mut props,
        );
        NewMessage {
            topic: OP_TOPIC.into(),
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp_ms: self.clock.now_ms(),
            born_host: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            reconsume_times: 0,
            prepared_tx_offset: half_offset,
            properties: props,
            body: half.into_bytes(),
        }
    }

    /// The message a half message becomes: in `topic` (its real one, or the discard topic), without
    /// the transaction's internal properties.
    fn released(&self, half: &RecordRef<'_>, topic: Option<&str>, flag: u32) -> Result<NewMessage, TransactionError> {
        let real_topic = properties::get(half.properties, REAL_TOPIC).ok_or(TransactionError::HalfWithoutTopic)?;
        let queue_id = properties::get(half.properties, REAL_QUEUE_ID).and_then(|q| q.parse().ok()).unwrap_or(0);
        let internal = [REAL_QUEUE_ID, TRANSACTION_PREPARED, PRODUCER_GROUP, CHECK_IMMUNITY_SECONDS];
        // A discarded message keeps its real topic, so an operator sees where it was headed.
        let keep_real = topic.is_some();
        let kept = properties::decode(half.properties)
            .map_while(Result::ok)
            .filter(|p| !internal.contains(&p.name) && (keep_real || p.name != REAL_TOPIC))
            .map(|p| (p.name, p.value));
        let mut props = Vec::with_capacity(half.properties.len());
        properties::encode(kept, &mut props).map_err(TransactionError::Properties)?;
        Ok(NewMessage {
            topic: topic.unwrap_or(real_topic).to_owned(),
            queue_id: if topic.is_some() { 0 } else { queue_id },
            flag: half.meta.flag,
            sys_flag: (half.meta.sys_flag & !sys_flag::TRANSACTION_MASK) | flag,
            born_timestamp_ms: half.meta.born_timestamp_ms,
            born_host: half.meta.born_host,
            reconsume_times: 0,
            prepared_tx_offset: half.meta.queue_offset,
            properties: props,
            body: half.body.to_vec(),
        })
    }

    /// Ends a transaction. Commit stores the real message and its outcome record atomically; rollback
    /// stores the outcome; Unknown changes nothing. Resolving an already resolved transaction again is
    /// a no-op. Blocks until stored.
    pub fn end(&self, transaction_id: &str, resolution: Resolution) -> Result<(), TransactionError> {
        if resolution == Resolution::Unknown {
            return if self.lock().pending.contains_key(transaction_id) {
                Ok(())
            } else {
                self.already(transaction_id)
            };
        }
        let (half_offset, log_offset, len) = {
            let mut state = self.lock();
            let Some(p) = state.pending.get_mut(transaction_id) else {
                drop(state);
                return self.already(transaction_id);
            };
            if p.resolving {
                return Ok(());
            }
            p.resolving = true;
            (p.half_offset, p.log_offset, p.len)
        };
        let result = self.store_outcome(transaction_id, resolution, half_offset, log_offset, len);
        let mut state = self.lock();
        match result {
            Ok(()) => {
                self.forget(&mut state, transaction_id, half_offset, resolution);
                let counter =
                    if resolution == Resolution::Commit { &self.counters.commits } else { &self.counters.rollbacks };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                if let Some(p) = state.pending.get_mut(transaction_id) {
                    p.resolving = false;
                }
                Err(err)
            }
        }
    }

    fn already(&self, transaction_id: &str) -> Result<(), TransactionError> {
        if self.lock().resolved.contains_key(transaction_id) {
            Ok(())
        } else {
            Err(TransactionError::NotFound(transaction_id.to_owned()))
        }
    }

    fn store_outcome(
        &self,
        transaction_id: &str,
        resolution: Resolution,
        half_offset: u64,
        log_offset: u64,
        len: u32,
    ) -> Result<(), TransactionError> {
        let op = self.op(op_name(resolution), transaction_id, half_offset);
        match resolution {
            Resolution::Commit => {
                let stored = self.store.record(log_offset, len)?;
                let half = stored.decode()?;
                let message = self.released(&half, None, sys_flag::TRANSACTION_COMMIT)?;
                self.store.append_batch_wait(vec![message, op])?;
            }
            Resolution::Rollback => {
                self.store.append_wait(op)?;
            }
            Resolution::Unknown => {}
        }
        Ok(())
    }

    /// Drops a resolved transaction from the pending set and moves the recovery point.
    fn forget(&self, state: &mut State, transaction_id: &str, half_offset: u64, resolution: Resolution) {
        state.pending.remove(transaction_id);
        state.by_half.remove(&half_offset);
        state.resolved.insert(transaction_id.to_owned(), resolution);
        state.resolved_order.push_back(transaction_id.to_owned());
        while state.resolved_order.len() > RESOLVED_REMEMBERED_MAX {
            if let Some(old) = state.resolved_order.pop_front() {
                state.resolved.remove(&old);
            }
        }
        let commit = state.by_half.keys().next().copied().unwrap_or(state.next_half);
        self.offsets.set(key(), commit);
    }

    /// Checks every transaction that is due: asks `checker`, else a producer through `prober`; discards
    /// what ran out of checks. Blocks while outcomes are stored. Returns how many were checked.
    pub fn check(&self, checker: Option<&dyn TransactionChecker>, prober: Option<&dyn TransactionProber>) -> usize {
        let now = self.clock.now_ms();
        let due: Vec<(String, String, u64, u64, u32, u32)> = {
            let mut state = self.lock();
            let ids: Vec<String> = state
                .pending
                .iter()
                .filter(|(_, p)| !p.resolving && p.next_check_ms <= now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| {
                    let p = state.pending.get_mut(&id)?;
                    p.resolving = p.checks >= self.config.checks_max;
                    let out = (id.clone(), p.topic.clone(), p.half_offset, p.log_offset, p.len, p.checks);
                    p.checks += 1;
                    p.next_check_ms = now + self.config.check_interval_ms;
                    Some(out)
                })
                .collect()
        };
        for (id, topic, half_offset, log_offset, len, checks) in &due {
            if *checks >= self.config.checks_max {
                self.discard(id, *half_offset, *log_offset, *len);
                continue;
            }
            if let Err(err) = self.store.append_wait(self.op("check", id, *half_offset)) {
                static UNRECORDED: Throttle = Throttle::per_second(5);
                if let Some(suppressed) = UNRECORDED.admit() {
                    tracing::warn!(%err, transaction = %id, suppressed, "could not record a transaction check");
                }
            }
            let Ok(stored) = self.store.record(*log_offset, *len) else { continue };
            let verdict = match (checker, stored.decode()) {
                (Some(checker), Ok(half)) => checker.check(topic, id, &half),
                _ => None,
            };
            match verdict {
                Some(Resolution::Unknown) => {}
                Some(resolution) => {
                    if let Err(err) = self.end(id, resolution) {
                        static UNAPPLIED: Throttle = Throttle::per_second(5);
                        if let Some(suppressed) = UNAPPLIED.admit() {
                            tracing::warn!(%err, transaction = %id, suppressed, "could not apply the checker's outcome");
                        }
                    }
                }
                None => {
                    if prober.is_some_and(|p| p.probe(topic, id, &stored)) {
                        self.counters.checks_sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tracing::debug!(transaction = %id, %topic, "no live producer to ask about a transaction");
                    }
                }
            }
        }
        due.len()
    }

    fn discard(&self, transaction_id: &str, half_offset: u64, log_offset: u64, len: u32) {
        let result = (|| {
            let stored = self.store.record(log_offset, len)?;
            let half = stored.decode()?;
            let message = self.released(&half, Some(DISCARD_TOPIC), 0)?;
            self.store.append_batch_wait(vec![message, self.op("discard", transaction_id, half_offset)])?;
            Ok::<_, TransactionError>(())
        })();
        let mut state = self.lock();
        match result {
            Ok(()) => {
                static DISCARDED: Throttle = Throttle::per_second(10);
                if let Some(suppressed) = DISCARDED.admit() {
                    tracing::warn!(transaction = %transaction_id, checks = self.config.checks_max, suppressed, "transaction never resolved; discarded to {DISCARD_TOPIC}");
                }
                self.forget(&mut state, transaction_id, half_offset, Resolution::Rollback);
                self.counters.discards.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                static UNDISCARDED: Throttle = Throttle::per_second(5);
                if let Some(suppressed) = UNDISCARDED.admit() {
                    tracing::warn!(%err, transaction = %transaction_id, suppressed, "could not discard a transaction; will retry");
                }
                if let Some(p) = state.pending.get_mut(transaction_id) {
                    p.resolving = false;
                }
            }
        }
    }

    pub fn stats(&self) -> TransactionStats {
        TransactionStats {
            pending: self.lock().pending.len(),
            checks_sent: self.counters.checks_sent.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
            rollbacks: self.counters.rollbacks.load(Ordering::Relaxed),
            discards: self.counters.discards.load(Ordering::Relaxed),
        }
    }

    /// `(transaction id, topic, checks so far)` of every pending transaction.
    pub fn pending(&self) -> Vec<(String, String, u32)> {
        let mut out: Vec<_> =
            self.lock().pending.iter().map(|(id, p)| (id.clone(), p.topic.clone(), p.checks)).collect();
        out.sort();
        out
    }
}
