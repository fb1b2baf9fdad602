//! The broker: topics, groups, sending, delivery and timers over one store, with a background
//! thread that redelivers expired messages, delivers due timer messages and saves consumer progress,
//! and one that checks orphaned transactions.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ferrymq_proto::sync::{lock, read, write};
use ferrymq_proto::throttle::Throttle;
use ferrymq_store::clock::Clock;
use ferrymq_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::dedup::{Dedup, DedupConfig, DedupStats};
use crate::delivery::Delivery;
use crate::hooks::{Policies, RouteVerdict, route_dlq_topic};
use crate::loss::Losses;
use crate::metadata::MessageKind;
use crate::metadata::{GroupLimits, Metadata, MetadataError};
use crate::offsets::{OffsetKey, Offsets};
use crate::send::{Outgoing, SendLimits, SendRejection, place};
use crate::timer::Timer;
use crate::transaction::{TransactionChecker, TransactionConfig, TransactionProber, Transactions};

/// Broker settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub send: SendLimits,
    pub transactions: TransactionConfig,
    /// Create a consumer group with default settings the first time a client uses it.
    pub auto_create_groups: bool,
    /// Most consumer groups the broker holds, however created.
    pub groups_max: usize,
    /// Most groups clients may create by using them, per second.
    pub auto_create_groups_per_s: u32,
    /// How often expired deliveries and due timer messages are handled.
    pub tick_ms: u64,
    /// How often consumer progress is written to disk.
    pub offsets_persist_ms: u64,
    pub dedup: DedupConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            send: SendLimits::default(),
            transactions: TransactionConfig::default(),
            auto_create_groups: true,
            groups_max: GroupLimits::default().groups_max,
            auto_create_groups_per_s: GroupLimits::default().auto_create_per_s,
            tick_ms: 100,
            offsets_persist_ms: 1_000,
            dedup: DedupConfig::default(),
        }
    }
}

impl BrokerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.tick_ms == 0 || self.offsets_persist_ms == 0 {
            return Err("tick_ms and offsets_persist_ms must be positive".into());
        }
        if self.groups_max == 0 || self.auto_create_groups_per_s == 0 {
            return Err("groups_max and auto_create_groups_per_s must be positive".into());
        }
        if self.send.body_bytes_max == 0 {
            return Err("send.body_bytes_max must be positive".into());
        }
        let tx = &self.transactions;
        if tx.first_check_ms < 0 || tx.check_interval_ms <= 0 || tx.immunity_ms_max < tx.first_check_ms {
            return Err("transactions: check_interval_ms must be positive and first_check_ms <= immunity_ms_max".into());
        }
        self.dedup.validate().map_err(|err| format!("dedup: {err}"))?;
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("consumer progress: {0}")]
    Offsets(std::io::Error),
    #[error("start a broker thread: {0}")]
    Thread(std::io::Error),
}

/// What a successful send reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReceipt {
    pub message_id: String,
    /// Set for transactional messages: what the producer ends the transaction with.
    pub transaction_id: Option<String>,
    pub queue_id: u32,
    /// Queue offset of the stored message (in the timer topic while a delayed message waits).
    pub queue_offset: u64,
    /// Commit-log offset of the stored record.
    pub log_offset: u64,
    /// Commit-log offset just past the stored record(s): what a replica must hold for this send to
    /// be replicated. 0 when nothing was stored.
    pub log_end: u64,
}

/// Why a send failed.
#[derive(Debug, Error)]
pub enum SendError {
    #[error(transparent)]
    Rejected(#[from] SendRejection),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The failure of a send that other sends of the same message id waited for (de-duplication):
    /// each of them is answered with it.
    #[error(transparent)]
    Shared(Arc<SendError>),
}

/// Called once with the outcome of a send, on a store thread.
pub type SendDone = Box<dyn FnOnce(Result<SendReceipt, SendError>) + Send>;

/// The hooks transaction checks go through; set once the front end exists.
#[derive(Default)]
struct Hooks {
    checker: Option<Arc<dyn TransactionChecker>>,
    prober: Option<Arc<dyn TransactionProber>>,
}

pub struct Broker {
    store: Arc<Store>,
    metadata: Arc<Metadata>,
    offsets: Arc<Offsets>,
    losses: Arc<Losses>,
    delivery: Arc<Delivery>,
    timer: Arc<Timer>,
    transactions: Arc<Transactions>,
    hooks: Arc<std::sync::RwLock<Hooks>>,
    clock: Arc<dyn Clock>,
    config: BrokerConfig,
    round_robin: AtomicU64,
    policies: std::sync::RwLock<Option<Arc<dyn Policies>>>,
    /// Held (read) by each send from its route decision until its records are queued for the log;
    /// taken (write) by [`Broker::with_sends_held`].
    send_gate: std::sync::RwLock<()>,
    dropped: AtomicU64,
    dedup: Dedup,
    /// Cleared on a replica: it stores nothing of its own (no sends, timers, retries or checks).
    writable: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens the broker's metadata and progress in `dir` over `store`, and starts its thread.
    pub fn open(
        store: Arc<Store>,
        dir: &Path,
        config: BrokerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BrokerError> {
        let limits = GroupLimits { groups_max: config.groups_max, auto_create_per_s: config.auto_create_groups_per_s };
        let metadata = Arc::new(Metadata::open(dir)?.with_group_limits(limits));
        let offsets = Arc::new(Offsets::open(dir).map_err(BrokerError::Offsets)?);
        // What retention deletes is counted against every group's progress.
        let losses = Arc::new(Losses::default());
        store.set_removal_hook(Some(losses.hook(offsets.clone())));
        let delivery = Arc::new(Delivery::new(store.clone(), metadata.clone(), offsets.clone(), clock.clone()));
        let timer = Arc::new(Timer::new(store.clone(), offsets.clone(), clock.clone()));
        let transactions =
            Arc::new(Transactions::open(store.clone(), offsets.clone(), clock.clone(), config.transactions.clone()));
        let dedup = Dedup::new(&config.dedup, store.clone(), clock.clone());
        let hooks: Arc<std::sync::RwLock<Hooks>> = Arc::default();
        let stopping = Arc::new(AtomicBool::new(false));
        // A replica's store is read-only before the broker opens: no thread starts out writable.
        let writable = Arc::new(AtomicBool::new(!store.is_read_only()));
        let spawn = |name: &str, work: Box<dyn Fn() + Send>| {
            let stopping = stopping.clone();
            let tick = Duration::from_millis(config.tick_ms);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    while !stopping.load(Ordering::Acquire) {
                        work();
                        std::thread::park_timeout(tick);
                    }
                })
                .map_err(BrokerError::Thread)
        };
        let housekeeping = {
            let (delivery, timer, offsets, metadata, writable) =
                (delivery.clone(), timer.clone(), offsets.clone(), metadata.clone(), writable.clone());
            let persist_every = (config.offsets_persist_ms / config.tick_ms).max(1);
            let ticks = AtomicU64::new(0);
            spawn(
                "ferrymq-broker",
                Box::new(move || {
                    let writable = writable.load(Ordering::Acquire);
                    delivery.revive();
                    if writable {
                        timer.tick();
                    }
                    if (ticks.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(persist_every) {
                        if let Err(err) = offsets.persist() {
                            tracing::error!(%err, "could not save consumer progress; will retry");
                        }
                        if let Err(err) = metadata.persist_pending() {
                            tracing::error!(%err, "could not save the groups clients created; will retry");
                        }
                    }
                }),
            )?
        };
        // Checks may wait on a plugin's HTTP call; they get a thread of their own so redelivery and
        // timers never wait behind them.
        let checks = {
            let (transactions, hooks, writable) = (transactions.clone(), hooks.clone(), writable.clone());
            spawn(
                "ferrymq-tx-check",
                Box::new(move || {
                    if !writable.load(Ordering::Acquire) {
                        return;
                    }
                    let (checker, prober) = {
                        let hooks = read(&hooks);
                        (hooks.checker.clone(), hooks.prober.clone())
                    };
                    transactions.check(checker.as_deref(), prober.as_deref());
                }),
            )?
        };
        Ok(Self {
            store,
            metadata,
            offsets,
            losses,
            delivery,
            timer,
            transactions,
            hooks,
            clock,
            config,
            round_robin: AtomicU64::new(0),
            policies: std::sync::RwLock::new(None),
            send_gate: std::sync::RwLock::new(()),
            dropped: AtomicU64::new(0),
            dedup,
            writable,
            stopping,
            threads: Mutex::new(vec![housekeeping, checks]),
        })
    }

    /// Makes this broker a replica (`false`: its store takes only replicated bytes, sends are refused,
    /// timers and transaction checks pause, expired deliveries wait for the master) or a writable
    /// broker again.
    pub fn set_writable(&self, writable: bool) {
        if writable && !self.is_writable() {
            // Its log holds sends its de-duplication memory never saw.
            self.dedup.cover_from_now();
        }
        self.store.set_read_only(!writable);
        self.writable.store(writable, Ordering::Release);
    }

    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// Every subscriber's committed offsets (what a replica copies).
    pub fn offsets_snapshot(&self) -> Vec<(OffsetKey, u64)> {
        self.offsets.all()
    }

    /// Messages retention deleted before each group consumed them: (group, cause, count).
    pub fn messages_lost(&self) -> Vec<(String, &'static str, u64)> {
        self.losses.snapshot()
    }

    pub fn offsets(&self) -> &Arc<Offsets> {
        &self.offsets
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn metadata(&self) -> &Arc<Metadata> {
        &self.metadata
    }

    pub fn delivery(&self) -> &Arc<Delivery> {
        &self.delivery
    }

    pub fn timer(&self) -> &Arc<Timer> {
        &self.timer
    }

    pub fn transactions(&self) -> &Arc<Transactions> {
        &self.transactions
    }

    /// Sets who is asked about orphaned transactions: `checker` first (e.g. a plugin), else a live
    /// producer through `prober`.
    pub fn set_transaction_hooks(
        &self,
        checker: Option<Arc<dyn TransactionChecker>>,
        prober: Option<Arc<dyn TransactionProber>>,
    ) {
        let mut hooks = write(&self.hooks);
        *hooks = Hooks { checker, prober };
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Sets the filters and routes bound to topics (and groups).
    pub fn set_policies(&self, policies: Option<Arc<dyn Policies>>) {
        self.delivery.set_policies(policies.clone());
        *write(&self.policies) = policies;
    }

    /// Whether sends to `topic` or receives of (`topic`, `group`) run a plugin, and so should run on a
    /// thread that may block.
    pub fn runs_plugins(&self, topic: &str, group: Option<&str>) -> bool {
        let policies = read(&self.policies);
        policies.as_ref().is_some_and(|p| match group {
            Some(group) => p.has_filter(topic, group),
            None => p.has_route(topic),
        })
    }

    /// The policies, if a filter is bound to (`topic`, `group`): for pull consumers, which judge
    /// what they read themselves.
    pub fn filter_bound(&self, topic: &str, group: &str) -> Option<Arc<dyn Policies>> {
        let policies = read(&self.policies);
        policies.clone().filter(|p| p.has_filter(topic, group))
    }

    /// Checks and stores a message; `done` runs once when it is stored as durably as the store's flush
    /// mode promises, or has failed. A send whose message id the topic received within the
    /// de-duplication window is answered with the first one's receipt (see [`crate::dedup`]); then a
    /// route bound to the topic decides.
    pub fn send(&self, message: &Outgoing, done: SendDone) {
        let _gate = read(&self.send_gate);
        // A replica's store refuses every send; its window answers none either.
        let done = if self.is_writable() { self.dedup.admit(message, done) } else { Some(done) };
        let Some(done) = done else { return };
        let policies = read(&self.policies).clone();
        let Some(policies) = policies.filter(|p| p.has_route(&message.topic)) else {
            return self.send_one(message, None, done);
        };
        match policies.route(message) {
            RouteVerdict::Accept(changed) => self.send_one(&changed, None, done),
            RouteVerdict::Redirect(topics) => self.send_copies(message, &topics, done),
            RouteVerdict::Reject(reason) => done(Err(SendRejection::RefusedByPolicy(reason).into())),
            RouteVerdict::Drop(reason) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                static DROPPED: Throttle = Throttle::per_second(10);
                if let Some(suppressed) = DROPPED.admit() {
                    tracing::info!(topic = %message.topic, id = %message.message_id, %reason, suppressed, "route policy dropped a message");
                }
                done(Ok(SendReceipt {
                    message_id: message.message_id.clone(),
                    transaction_id: None,
                    queue_id: 0,
                    queue_offset: 0,
                    log_offset: 0,
                    log_end: 0,
                }))
            }
            RouteVerdict::DeadLetter(reason) => {
                tracing::warn!(topic = %message.topic, id = %message.message_id, %reason, "route failed; message kept in its dead-letter topic");
                self.send_one(message, Some(route_dlq_topic(&message.topic)), done)
            }
        }
    }

    /// Runs `change` with no send between its route decision and its place in the log: sends that
    /// decided before finish queueing their records first, sends that arrive meanwhile wait. A route
    /// swapped inside `change` (with a record of the swap appended there) therefore decides exactly
    /// the messages stored after that record.
    pub fn with_sends_held<R>(&self, change: impl FnOnce() -> R) -> R {
        let _gate = write(&self.send_gate);
        change()
    }

    /// Messages a route policy dropped.
    pub fn dropped_by_policy(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Duplicates answered, ids remembered, store lookups.
    pub fn dedup_stats(&self) -> DedupStats {
        self.dedup.stats()
    }

    /// Stores one message, in `instead` (a dead-letter topic) if given.
    fn send_one(&self, message: &Outgoing, instead: Option<String>, done: SendDone) {
        let rr = self.round_robin.fetch_add(1, Ordering::Relaxed);
        let mut placed = match place(message, &self.metadata, &self.config.send, self.clock.now_ms(), rr) {
            Ok(placed) => placed,
            Err(rejection) => return done(Err(rejection.into())),
        };
        if let Some(topic) = instead {
            placed.message.topic = topic;
            placed.message.queue_id = 0;
            placed.transaction = None;
        }
        let message_id = message.message_id.clone();
        let queue_id = placed.queue_id;
        let half = placed.transaction.map(|half| (half, message.topic.clone(), self.transactions.clone()));
        self.store.append(
            placed.message,
            Box::new(move |result| {
                let transaction_id = match (&result, half) {
                    (Ok(stored), Some((half, topic, transactions))) => {
                        transactions.register(&topic, &half.transaction_id, stored, half.immunity_s);
                        Some(half.transaction_id)
                    }
                    _ => None,
                };
                let receipt = |a: ferrymq_store::Appended| SendReceipt {
                    message_id,
                    transaction_id,
                    queue_id,
                    queue_offset: a.queue_offset,
                    log_offset: a.offset,
                    log_end: a.offset + u64::from(a.len),
                };
                done(result.map(receipt).map_err(SendError::from))
            }),
        );
    }

    /// Stores a copy of `message` in each of `topics`, all or none.
    fn send_copies(&self, message: &Outgoing, topics: &[String], done: SendDone) {
        if message.kind == Some(MessageKind::Transaction) {
            return done(Err(
                SendRejection::RefusedByPolicy("a transactional message cannot be redirected".into()).into()
            ));
        }
        let mut copies = Vec::with_capacity(topics.len());
        let mut first_queue = 0;
        for (i, topic) in topics.iter().enumerate() {
            let copy = Outgoing { topic: topic.clone(), ..message.clone() };
            let rr = self.round_robin.fetch_add(1, Ordering::Relaxed);
            match place(&copy, &self.metadata, &self.config.send, self.clock.now_ms(), rr) {
                Ok(placed) => {
                    if i == 0 {
                        first_queue = placed.queue_id;
                    }
                    copies.push(placed.message);
                }
                Err(rejection) => return done(Err(rejection.into())),
            }
        }
        let message_id = message.message_id.clone();
        self.store.append_batch(
            copies,
            Box::new(move |result| {
                done(
                    result
                        .map(|stored| SendReceipt {
                            message_id,
                            transaction_id: None,
                            queue_id: first_queue,
                            queue_offset: stored.first().map_or(0, |a| a.queue_offset),
                            log_offset: stored.first().map_or(0, |a| a.offset),
                            log_end: stored.last().map_or(0, |a| a.offset + u64::from(a.len)),
                        })
                        .map_err(SendError::from),
                )
            }),
        );
    }

    /// Stops the background threads and saves consumer progress. The store is closed by its owner.
    pub fn close(&self) {
        self.stopping.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            thread.thread().unpark();
            let _ = thread.join();
        }
        if let Err(err) = self.offsets.persist() {
            tracing::error!(%err, "could not save consumer progress at shutdown");
        }
        if let Err(err) = self.metadata.persist_pending() {
            tracing::error!(%err, "could not save the groups clients created at shutdown");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.close();
    }
}
