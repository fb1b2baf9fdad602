//! Topics and consumer groups: what an administrator creates, kept in `<data_dir>/metadata.json`.
//!
//! Changes are written to a temporary file, flushed, and renamed over the old one, so a crash leaves
//! either the old or the new catalog, never a torn one. System topics (retry, dead-letter, timer) are
//! not stored: they exist implicitly with one queue.
//!
//! A group a client creates by using it has default settings only, so it is not worth a rewrite of
//! the whole file each: it is written with the next change or [`Metadata::persist_pending`] (the
//! broker calls it with consumer progress). A crash before that forgets the group, and its next use
//! creates it again, the same. Such creations are bounded in number and in rate ([`GroupLimits`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use ferrymq_proto::limit::Limit;
use ferrymq_proto::sync::{lock, read, write};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::durable_file;

/// Most queues a topic may have.
pub const TOPIC_QUEUES_MAX: u32 = 1024;
/// Longest consumer-group name: its dead-letter topic (`%DLQ%<group>`) must still be a valid topic
/// name. (RocketMQ allows 255 bytes; a longer group could never set a message aside.)
pub const GROUP_NAME_BYTES_MAX: usize = ferrymq_proto::name::GROUP_BYTES_MAX;
const _: () = assert!(GROUP_NAME_BYTES_MAX + DLQ_TOPIC_PREFIX.len() == ferrymq_store::TOPIC_BYTES_MAX);
/// Most delivery attempts a group may allow.
pub const MAX_ATTEMPTS_MAX: u32 = 1000;

/// Prefix of a group's retry topic: `%RETRY%<group>_<topic>`.
pub const RETRY_TOPIC_PREFIX: &str = "%RETRY%";
/// Prefix of a group's dead-letter topic: `%DLQ%<group>`.
pub const DLQ_TOPIC_PREFIX: &str = "%DLQ%";
/// Prefix of the broker's own topics.
pub const SYSTEM_TOPIC_PREFIX: &str = "rmq_sys_";
/// Where delay/timer messages wait until they are due.
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";

/// The retry topic of `group` for messages of `topic`.
pub fn retry_topic(group: &str, topic: &str) -> String {
    format!("{RETRY_TOPIC_PREFIX}{group}_{topic}")
}

/// The dead-letter topic of `group`.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_TOPIC_PREFIX}{group}")
}

const _: () = assert!(DLQ_TOPIC_PREFIX.len() + GROUP_NAME_BYTES_MAX <= ferrymq_store::TOPIC_BYTES_MAX);

/// Whether a message of `topic` that `group` did not acknowledge is delivered again from where it
/// is rather than through the retry topic: always for FIFO and broadcast groups, and for any group
/// whose retry topic for `topic` would be longer than a topic name may be (a long group name on a
/// long topic), so that such a message still comes back.
pub fn retries_in_place(group: &GroupConfig, topic: &str) -> bool {
    let retry_topic_bytes = RETRY_TOPIC_PREFIX.len() + group.name.len() + 1 + topic.len();
    group.fifo || group.broadcast || retry_topic_bytes > ferrymq_store::TOPIC_BYTES_MAX
}

/// RocketMQ 4's own topics: a client that meets one of them takes it for the broker's (the default
/// topic it creates others from, the delay schedule, half messages, trace and offsets), so none may
/// be a user's topic here either.
pub const ROCKETMQ_SYSTEM_TOPICS: [&str; 8] = [
    "TBW102",
    "SCHEDULE_TOPIC_XXXX",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "RMQ_SYS_TRACE_TOPIC",
    "OFFSET_MOVED_EVENT",
    "SELF_TEST_TOPIC",
];

/// Topics the broker creates and names itself.
pub fn is_system_topic(topic: &str) -> bool {
    topic.starts_with(RETRY_TOPIC_PREFIX)
        || topic.starts_with(DLQ_TOPIC_PREFIX)
        || topic.starts_with(SYSTEM_TOPIC_PREFIX)
}

/// Names no user topic may take: the broker's own, and RocketMQ's.
pub fn is_reserved_topic(topic: &str) -> bool {
    is_system_topic(topic) || topic.starts_with("RMQ_SYS_") || ROCKETMQ_SYSTEM_TOPICS.contains(&topic)
}

/// What kinds of message a topic takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicType {
    Normal,
    Fifo,
    Delay,
    Transaction,
    /// All four kinds.
    Mixed,
}

/// The kind of one message, as its producer declared it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Normal,
    Fifo,
    Delay,
    Transaction,
}

impl TopicType {
    pub fn accepts(self, kind: MessageKind) -> bool {
        matches!(
            (self, kind),
            (TopicType::Mixed, _)
                | (TopicType::Normal, MessageKind::Normal)
                | (TopicType::Fifo, MessageKind::Fifo)
                | (TopicType::Delay, MessageKind::Delay)
                | (TopicType::Transaction, MessageKind::Transaction)
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            TopicType::Normal => "normal",
            TopicType::Fifo => "fifo",
            TopicType::Delay => "delay",
            TopicType::Transaction => "transaction",
            TopicType::Mixed => "mixed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub name: String,
    pub message_type: TopicType,
    pub queues: u32,
}

/// Where a group without a committed offset starts reading a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumeFrom {
    /// The oldest message still stored: nothing sent before the group's first read is missed.
    #[default]
    Earliest,
    /// Messages stored after the group's first read of that queue.
    Latest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupConfig {
    pub name: String,
    /// Deliver each message group in order, one message of a group in flight at a time.
    pub fifo: bool,
    /// Deliveries before a message goes to the group's dead-letter topic.
    pub max_attempts: u32,
    /// Delay before the n-th redelivery, for clients that nack (sent to them in Settings).
    pub retry_backoff_ms: Vec<u64>,
    /// Every consumer of the group gets every message (instead of each message once per group).
    pub broadcast: bool,
    pub consume_from: ConsumeFrom,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            fifo: false,
            max_attempts: 17,
            retry_backoff_ms: DEFAULT_RETRY_BACKOFF_MS.to_vec(),
            broadcast: false,
            consume_from: ConsumeFrom::Earliest,
        }
    }
}

/// Most steps of a retry schedule, and the longest step (a day: what a delay may be).
pub const RETRY_BACKOFF_STEPS_MAX: usize = 64;
pub const RETRY_BACKOFF_MS_MAX: u64 = 86_400_000;

/// RocketMQ's default retry schedule: 1s 5s 10s 30s 1m … 2h.
pub const DEFAULT_RETRY_BACKOFF_MS: [u64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000, 480_000, 540_000,
    600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("topic {0:?} already exists with a different type or fewer queues")]
    TopicConflict(String),
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    #[error("group {0:?} does not exist")]
    GroupNotFound(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic { name: String, reason: String },
    #[error("invalid group {name:?}: {reason}")]
    InvalidGroup { name: String, reason: String },
    #[error("a topic needs 1 to {TOPIC_QUEUES_MAX} queues, not {0}")]
    InvalidQueues(u32),
    #[error("group {name:?} cannot be created: the broker holds its limit of {max} groups (broker.groups_max)")]
    TooManyGroups { name: String, max: usize },
    #[error(
        "group {name:?} cannot be created now: clients created {per_s} groups this second \
         (broker.auto_create_groups_per_s); retry, or create it with the admin API"
    )]
    GroupCreationThrottled { name: String, per_s: u32 },
    #[error(transparent)]
    Persist(#[from] PersistError),
}

/// Why the catalog file could not be read or written.
#[derive(Debug, Error)]
pub enum PersistError {
    /// Reading or replacing the file failed (the error names the file and the step).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{} is not a valid catalog: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Encode(serde_json::Error),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Catalog {
    topics: BTreeMap<String, TopicConfig>,
    groups: BTreeMap<String, GroupConfig>,
}

/// Bounds on consumer groups: how many the catalog holds, and how fast clients may create them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLimits {
    /// Most groups, however created; a new one beyond is refused.
    pub groups_max: usize,
    /// Most groups created by clients' use per second; more are refused until the next second.
    pub auto_create_per_s: u32,
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self { groups_max: 10_000, auto_create_per_s: 100 }
    }
}

/// The catalog of topics and groups.
#[derive(Debug)]
pub struct Metadata {
    path: PathBuf,
    catalog: RwLock<Catalog>,
    /// Serialises writers so that the file always holds the latest catalog.
    write: Mutex<()>,
    limits: GroupLimits,
    /// Groups were created in memory since the file was last written.
    pending: AtomicBool,
    /// Automatic creations in the current second: (second since `epoch`, count).
    created: Mutex<(u64, u32)>,
    epoch: Instant,
}

/// Checks a group name: 1 to 255 bytes of `[A-Za-z0-9%|_-]`.
pub fn validate_group(name: &str) -> Result<(), MetadataError> {
    match ferrymq_proto::name::problem(name, GROUP_NAME_BYTES_MAX) {
        None => Ok(()),
        Some(reason) => Err(MetadataError::InvalidGroup { name: name.to_owned(), reason: reason.to_owned() }),
    }
}

fn validate_user_topic(name: &str) -> Result<(), MetadataError> {
    // The store's rule for topic names (`ferrymq_store::validate_topic`).
    if let Some(reason) = ferrymq_proto::name::problem(name, ferrymq_store::TOPIC_BYTES_MAX) {
        return Err(MetadataError::InvalidTopic { name: name.to_owned(), reason: reason.to_owned() });
    }
    if is_reserved_topic(name) {
        return Err(MetadataError::InvalidTopic {
            name: name.to_owned(),
            reason: "names starting with %RETRY%, %DLQ%, rmq_sys_ or RMQ_SYS_, and RocketMQ's own topics (TBW102, SCHEDULE_TOPIC_XXXX, …), are reserved".into(),
        });
    }
    Ok(())
}

impl Metadata {
    /// Loads `<dir>/metadata.json`, or starts empty.
    pub fn open(dir: &Path) -> Result<Self, MetadataError> {
        let path = dir.join("metadata.json");
        let catalog = match durable_file::read(&path).map_err(PersistError::Io)? {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| PersistError::Invalid { path: path.clone(), source })?
            }
            None => Catalog::default(),
        };
        Ok(Self {
            path,
            catalog: RwLock::new(catalog),
            write: Mutex::new(()),
            limits: GroupLimits::default(),
            pending: AtomicBool::new(false),
            created: Mutex::new((0, 0)),
            epoch: Instant::now(),
        })
    }

    /// The same catalog with other group bounds.
    pub fn with_group_limits(self, limits: GroupLimits) -> Self {
        Self { limits, ..self }
    }

    /// Writes groups created in memory since the last write, if any.
    pub fn persist_pending(&self) -> Result<(), MetadataError> {
        let _writer = lock(&self.write);
        if !self.pending.load(Ordering::Acquire) {
            return Ok(());
        }
        self.persist(&read(&self.catalog))?;
        self.pending.store(false, Ordering::Release);
        Ok(())
    }

    /// Refuses a new group `name` beyond `groups_max`.
    fn check_room(&self, catalog: &Catalog, name: &str) -> Result<(), MetadataError> {
        if !catalog.groups.contains_key(name) && catalog.groups.len() >= self.limits.groups_max {
            Limit::Groups.reached();
            return Err(MetadataError::TooManyGroups { name: name.to_owned(), max: self.limits.groups_max });
        }
        Ok(())
    }

    /// Takes one automatic creation from this second's allowance.
    fn take_creation(&self, name: &str) -> Result<(), MetadataError> {
        let second = self.epoch.elapsed().as_secs();
        let mut created = lock(&self.created);
        if created.0 != second {
            *created = (second, 0);
        }
        if created.1 >= self.limits.auto_create_per_s {
            Limit::GroupCreations.reached();
            return Err(MetadataError::GroupCreationThrottled {
                name: name.to_owned(),
                per_s: self.limits.auto_create_per_s,
            });
        }
        created.1 += 1;
        Ok(())
    }

    fn persist(&self, catalog: &Catalog) -> Result<(), MetadataError> {
        let bytes = serde_json::to_vec_pretty(catalog).map_err(PersistError::Encode)?;
        Ok(durable_file::write(&self.path, &bytes).map_err(PersistError::Io)?)
    }

    /// Applies `change` to a copy of the catalog, persists it, then publishes it.
    fn update<T>(&self, change: impl FnOnce(&mut Catalog) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        let _writer = lock(&self.write);
        let mut next = {
            let current = read(&self.catalog);
            Catalog { topics: current.topics.clone(), groups: current.groups.clone() }
        };
        let out = change(&mut next)?;
        self.persist(&next)?;
        *write(&self.catalog) = next;
        // Groups created in memory were in the copy just written.
        self.pending.store(false, Ordering::Release);
        Ok(out)
    }

    /// Creates a topic; creating it again with the same type is allowed and may add queues.
    pub fn create_topic(&self, topic: TopicConfig) -> Result<TopicConfig, MetadataError> {
        validate_user_topic(&topic.name)?;
        if topic.queues == 0 || topic.queues > TOPIC_QUEUES_MAX {
            return Err(MetadataError::InvalidQueues(topic.queues));
        }
        self.update(|c| {
            if let Some(existing) = c.topics.get(&topic.name)
                && (existing.message_type != topic.message_type || existing.queues > topic.queues)
            {
                return Err(MetadataError::TopicConflict(topic.name.clone()));
            }
            c.topics.insert(topic.name.clone(), topic.clone());
            Ok(topic)
        })
    }

    pub fn delete_topic(&self, name: &str) -> Result<(), MetadataError> {
        self.update(|c| c.topics.remove(name).map(drop).ok_or_else(|| MetadataError::TopicNotFound(name.to_owned())))
    }

    /// A topic by name, including the implicit one-queue system topics.
    pub fn topic(&self, name: &str) -> Option<TopicConfig> {
        if let Some(topic) = read(&self.catalog).topics.get(name) {
            return Some(topic.clone());
        }
        is_system_topic(name).then(|| TopicConfig { name: name.to_owned(), message_type: TopicType::Normal, queues: 1 })
    }

    pub fn topics(&self) -> Vec<TopicConfig> {
        read(&self.catalog).topics.values().cloned().collect()
    }

    /// Creates or replaces a group's settings.
    pub fn put_group(&self, group: GroupConfig) -> Result<GroupConfig, MetadataError> {
        validate_group(&group.name)?;
        if group.max_attempts == 0 || group.max_attempts > MAX_ATTEMPTS_MAX {
            return Err(MetadataError::InvalidGroup {
                name: group.name.clone(),
                reason: format!("max_attempts must be between 1 and {MAX_ATTEMPTS_MAX}"),
            });
        }
        if group.retry_backoff_ms.len() > RETRY_BACKOFF_STEPS_MAX
            || group.retry_backoff_ms.iter().any(|&ms| ms == 0 || ms > RETRY_BACKOFF_MS_MAX)
        {
            return Err(MetadataError::InvalidGroup {
                name: group.name.clone(),
                reason: format!(
                    "retry_backoff_ms takes at most {RETRY_BACKOFF_STEPS_MAX} steps of 1 to {RETRY_BACKOFF_MS_MAX} ms"
                ),
            });
        }
        self.update(|c| {
            self.check_room(c, &group.name)?;
            c.groups.insert(group.name.clone(), group.clone());
            Ok(group)
        })
    }

    pub fn group(&self, name: &str) -> Option<GroupConfig> {
        read(&self.catalog).groups.get(name).cloned()
    }

    /// The group, created with default settings if it does not exist yet (in memory, written with
    /// the next change or [`Metadata::persist_pending`]), within [`GroupLimits`].
    pub fn group_or_default(&self, name: &str) -> Result<GroupConfig, MetadataError> {
        if let Some(group) = self.group(name) {
            return Ok(group);
        }
        validate_group(name)?;
        let _writer = lock(&self.write);
        let mut catalog = write(&self.catalog);
        if let Some(group) = catalog.groups.get(name) {
            return Ok(group.clone());
        }
        self.check_room(&catalog, name)?;
        self.take_creation(name)?;
        let group = GroupConfig { name: name.to_owned(), ..GroupConfig::default() };
        catalog.groups.insert(name.to_owned(), group.clone());
        self.pending.store(true, Ordering::Release);
        tracing::info!(group = name, "consumer group created on first use, with default settings");
        Ok(group)
    }

    pub fn groups(&self) -> Vec<GroupConfig> {
        read(&self.catalog).groups.values().cloned().collect()
    }

    /// Replaces the whole catalog with a master's (a replica copies its master's topics and groups);
    /// returns whether anything changed.
    pub fn replace_all(&self, topics: Vec<TopicConfig>, groups: Vec<GroupConfig>) -> Result<bool, MetadataError> {
        let topics: BTreeMap<String, TopicConfig> = topics.into_iter().map(|t| (t.name.clone(), t)).collect();
        let groups: BTreeMap<String, GroupConfig> = groups.into_iter().map(|g| (g.name.clone(), g)).collect();
        {
            let current = read(&self.catalog);
            if current.topics == topics && current.groups == groups {
                return Ok(false);
            }
        }
        self.update(|c| {
            c.topics = topics;
            c.groups = groups;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, message_type: TopicType, queues: u32) -> TopicConfig {
        TopicConfig { name: name.into(), message_type, queues }
    }

    #[test]
    fn topics_and_groups_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let meta = Metadata::open(dir.path()).expect("open");
            meta.create_topic(topic("orders", TopicType::Fifo, 8)).expect("create");
            meta.put_group(GroupConfig {
                name: "billing".into(),
                fifo: true,
                max_attempts: 5,
                ..GroupConfig::default()
            })
            .expect("group");
        }
        let meta = Metadata::open(dir.path()).expect("reopen");
        assert_eq!(meta.topic("orders"), Some(topic("orders", TopicType::Fifo, 8)));
        let group = meta.group("billing").expect("group");
        assert!(group.fifo);
        assert_eq!(group.max_attempts, 5);
    }

    #[test]
    fn a_catalog_that_is_not_json_is_refused_naming_the_file_with_the_parse_error_as_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("metadata.json"), b"{not json").expect("write");
        let err = Metadata::open(dir.path()).expect_err("an invalid catalog is refused");
        assert!(matches!(&err, MetadataError::Persist(PersistError::Invalid { .. })), "{err:?}");
        assert!(err.to_string().contains("metadata.json is not a valid catalog"), "{err}");
        let source = std::error::Error::source(&err).expect("the parse error travels along");
        assert!(source.is::<serde_json::Error>(), "{source:?}");
    }

    #[test]
    fn recreating_a_topic_may_add_queues_but_not_change_its_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Metadata::open(dir.path()).expect("open");
        meta.create_topic(topic("t", TopicType::Normal, 4)).expect("create");
        meta.create_topic(topic("t", TopicType::Normal, 8)).expect("grow");
        assert!(matches!(meta.create_topic(topic("t", TopicType::Normal, 2)), Err(MetadataError::TopicConflict(_))));
        assert!(matches!(meta.create_topic(topic("t", TopicType::Fifo, 8)), Err(MetadataError::TopicConflict(_))));
    }

    #[test]
    fn bad_names_and_counts_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Metadata::open(dir.path()).expect("open");
        for bad in ["", "a/b", "%DLQ%x", "rmq_sys_mine", "with space", "TBW102", "SCHEDULE_TOPIC_XXXX", "RMQ_SYS_X"] {
            assert!(
                matches!(meta.create_topic(topic(bad, TopicType::Normal, 1)), Err(MetadataError::InvalidTopic { .. })),
                "{bad}"
            );
        }
        assert!(matches!(meta.create_topic(topic("t", TopicType::Normal, 0)), Err(MetadataError::InvalidQueues(0))));
        assert!(matches!(
            meta.create_topic(topic("t", TopicType::Normal, 1025)),
            Err(MetadataError::InvalidQueues(1025))
        ));
        assert!(meta.group_or_default("bad group").is_err());
        let zero = GroupConfig { name: "g".into(), max_attempts: 0, ..GroupConfig::default() };
        assert!(meta.put_group(zero).is_err());
        for backoff in [vec![u64::MAX], vec![0], vec![1_000; RETRY_BACKOFF_STEPS_MAX + 1]] {
            let group = GroupConfig { name: "g".into(), retry_backoff_ms: backoff, ..GroupConfig::default() };
            assert!(meta.put_group(group).is_err(), "a backoff clients would read as negative or endless");
        }
    }

    #[test]
    fn groups_clients_create_are_bounded_in_number_and_rate_and_written_in_one_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Metadata::open(dir.path())
            .expect("open")
            .with_group_limits(GroupLimits { groups_max: 5, auto_create_per_s: 3 });
        for name in ["a", "b", "c"] {
            meta.group_or_default(name).expect("within this second's allowance");
        }
        // The same second (the test takes far less than one): a fourth creation waits.
        match meta.group_or_default("d") {
            Err(MetadataError::GroupCreationThrottled { per_s: 3, .. }) => {}
            other => panic!("a fourth creation in one second: {other:?}"),
        }
        assert!(meta.group_or_default("a").is_ok(), "a known group is not a creation");
        // Nothing written yet: a crash now would forget a, b and c (and their next use recreates them).
        assert!(Metadata::open(dir.path()).expect("reopen").groups().is_empty());
        meta.persist_pending().expect("persist");
        assert_eq!(Metadata::open(dir.path()).expect("reopen").groups().len(), 3);
        // The administrator's groups count against the same bound.
        meta.put_group(GroupConfig { name: "e".into(), ..GroupConfig::default() }).expect("fourth");
        meta.put_group(GroupConfig { name: "f".into(), ..GroupConfig::default() }).expect("fifth");
        match meta.put_group(GroupConfig { name: "g".into(), ..GroupConfig::default() }) {
            Err(MetadataError::TooManyGroups { max: 5, .. }) => {}
            other => panic!("a sixth group: {other:?}"),
        }
        meta.put_group(GroupConfig { name: "f".into(), fifo: true, ..GroupConfig::default() })
            .expect("changing an existing group is not a new one");
        std::thread::sleep(std::time::Duration::from_millis(1_050));
        match meta.group_or_default("h") {
            Err(MetadataError::TooManyGroups { .. }) => {}
            other => panic!("a client's creation past groups_max: {other:?}"),
        }
    }

    #[test]
    fn system_topics_exist_implicitly_with_one_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Metadata::open(dir.path()).expect("open");
        assert_eq!(meta.topic(&dlq_topic("g")).map(|t| t.queues), Some(1));
        assert_eq!(meta.topic(&retry_topic("g", "t")).map(|t| t.queues), Some(1));
        assert_eq!(meta.topic("unknown"), None);
    }

    #[test]
    fn topic_types_accept_their_kind_and_mixed_accepts_all() {
        assert!(TopicType::Fifo.accepts(MessageKind::Fifo));
        assert!(!TopicType::Fifo.accepts(MessageKind::Normal));
        for kind in [MessageKind::Normal, MessageKind::Fifo, MessageKind::Delay, MessageKind::Transaction] {
            assert!(TopicType::Mixed.accepts(kind));
        }
    }
}
