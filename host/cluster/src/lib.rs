//! Clusters: broker sets of one master (id 0) and N slaves, name servers, replication.
//!
//! * `config` — the `[cluster]` section.
//! * `wire` — the replication stream's frames.
//! * `master` — a master's HA listener: streams its log to each slave, copies metadata, counts acks.
//! * `slave` — a slave follows its master: appends the master's bytes verbatim, copies metadata.
//! * `view` — what brokers tell name servers, and the cluster as a name server sees it.
//! * `registration` — a broker's heartbeat to every name server, which also fetches the view.
//! * `namesrv` — the name server: registrations with a time to live, and the view it answers.
//!
//! [`Cluster`] is the state they share with the gRPC front end: the role, whether reads are served
//! here (a slave serves them only while its master is down), the slaves' acknowledgements that sync
//! replication waits for, and the latest cluster view.

pub mod config;
pub mod master;
pub mod namesrv;
pub mod registration;
pub mod slave;
pub mod view;
pub mod wire;
#[cfg(test)]
mod wire_fuzz;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use ferrymq_proto::sync::{lock, read, write};
use serde::Serialize;
use tokio::sync::watch;

pub use config::{ClusterConfig, ReplicationMode};
pub use view::{ClusterView, Registration, Role};

/// Why a sync-replicated write could not be confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationFailure {
    /// No slave is connected, or none is within `sync_gap_bytes_max` of the write: nothing can hold
    /// a copy in time (HA_NOT_AVAILABLE).
    NoSlave,
    /// A slave is connected but did not confirm within `sync_timeout_ms` (SLAVE_PERSISTENCE_TIMEOUT).
    Timeout,
}

/// One slave connected to this master.
#[derive(Debug, Clone, Serialize)]
pub struct SlaveLink {
    pub broker_id: u64,
    pub peer: String,
    /// Log end the slave has confirmed holding.
    pub acked: u64,
    #[serde(skip)]
    pub connected_at: Instant,
    #[serde(skip)]
    pub caught_up_at: Instant,
}

/// A slave's view of its master.
#[derive(Debug, Clone)]
struct Follow {
    connected: bool,
    last_contact: Option<Instant>,
    master_written: u64,
    /// When this slave last held everything its master had written.
    caught_up_at: Option<Instant>,
    master_addr: Option<String>,
}

/// Replication as `/metrics` reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicationStats {
    pub slave: bool,
    /// A master: slaves connected now.
    pub slaves_connected: usize,
    /// A slave: its own lag; a master: its furthest-behind slave's.
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub serving_reads: bool,
    pub master_reachable: bool,
    /// Sync sends and commits answered SLAVE_PERSISTENCE_TIMEOUT / HA_NOT_AVAILABLE.
    pub sync_timeouts: u64,
    pub sync_no_slave: u64,
}

#[derive(Debug)]
pub struct Cluster {
    pub config: ClusterConfig,
    /// The broker-set name (`grpc.broker_name`).
    pub broker_set: String,
    started: Instant,
    // Master side.
    next_link: AtomicU64,
    slaves: Mutex<BTreeMap<u64, SlaveLink>>,
    /// The highest log end any slave confirmed.
    acked: watch::Sender<u64>,
    // Slave side.
    follow: Mutex<Follow>,
    /// Set when this slave handed out or settled messages while its master was down; its progress
    /// goes to the master when they reconnect.
    served: AtomicBool,
    view: RwLock<Option<ClusterView>>,
    sync_timeouts: AtomicU64,
    sync_no_slave: AtomicU64,
}

impl Cluster {
    pub fn new(config: ClusterConfig, broker_set: String) -> Self {
        Self {
            config,
            broker_set,
            started: Instant::now(),
            next_link: AtomicU64::new(1),
            slaves: Mutex::new(BTreeMap::new()),
            acked: watch::Sender::new(0),
            follow: Mutex::new(Follow {
                connected: false,
                last_contact: None,
                master_written: 0,
                caught_up_at: None,
                master_addr: None,
            }),
            served: AtomicBool::new(false),
            view: RwLock::new(None),
            sync_timeouts: AtomicU64::new(0),
            sync_no_slave: AtomicU64::new(0),
        }
    }

    pub fn role(&self) -> Role {
        if self.config.broker_id == 0 { Role::Master } else { Role::Slave }
    }

    pub fn is_master(&self) -> bool {
        self.role() == Role::Master
    }

    /// Whether this broker is part of a cluster (it has name servers).
    pub fn clustered(&self) -> bool {
        !self.config.namesrv.is_empty()
    }

    // ---- master side ----

    pub(crate) fn slave_connected(&self, broker_id: u64, peer: String, acked: u64) -> u64 {
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        lock(&self.slaves).insert(id, SlaveLink { broker_id, peer, acked, connected_at: now, caught_up_at: now });
        self.acked.send_modify(|a| *a = (*a).max(acked));
        id
    }

    pub(crate) fn slave_acked(&self, link: u64, log_end: u64, master_written: u64) {
        if let Some(slave) = lock(&self.slaves).get_mut(&link) {
            slave.acked = slave.acked.max(log_end);
            if slave.acked >= master_written {
                slave.caught_up_at = Instant::now();
            }
        }
        self.acked.send_modify(|a| *a = (*a).max(log_end));
    }

    pub(crate) fn slave_gone(&self, link: u64) {
        lock(&self.slaves).remove(&link);
    }

    pub fn slaves(&self) -> Vec<SlaveLink> {
        lock(&self.slaves).values().cloned().collect()
    }

    /// Waits until a slave holds the log up to `end` (sync replication); returns at once for an
    /// async master.
    pub async fn replicated(&self, end: u64) -> Result<(), ReplicationFailure> {
        if self.config.replication != ReplicationMode::Sync || !self.is_master() || end == 0 {
            return Ok(());
        }
        let gap = self.config.sync_gap_bytes_max;
        if !lock(&self.slaves).values().any(|s| end.saturating_sub(s.acked) <= gap) {
            self.sync_no_slave.fetch_add(1, Ordering::Relaxed);
            return Err(ReplicationFailure::NoSlave);
        }
        let mut acked = self.acked.subscribe();
        let wait = acked.wait_for(|&a| a >= end);
        match tokio::time::timeout(Duration::from_millis(self.config.sync_timeout_ms), wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => {
                self.sync_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(ReplicationFailure::Timeout)
            }
        }
    }

    /// What `/metrics` reports; `own_end` is this broker's log end.
    pub fn stats(&self, own_end: u64) -> ReplicationStats {
        let (lag_bytes, lag_ms) = if self.is_master() {
            let slaves = lock(&self.slaves);
            let furthest = slaves.values().min_by_key(|s| s.acked);
            furthest.map_or((0, 0), |s| {
                let bytes = own_end.saturating_sub(s.acked);
                (bytes, if bytes == 0 { 0 } else { s.caught_up_at.elapsed().as_millis() as u64 })
            })
        } else {
            self.lag(own_end)
        };
        ReplicationStats {
            slave: !self.is_master(),
            slaves_connected: lock(&self.slaves).len(),
            lag_bytes,
            lag_seconds: lag_ms as f64 / 1000.0,
            serving_reads: self.serving_reads(),
            master_reachable: self.is_master() || self.master_reachable(),
            sync_timeouts: self.sync_timeouts.load(Ordering::Relaxed),
            sync_no_slave: self.sync_no_slave.load(Ordering::Relaxed),
        }
    }

    // ---- slave side ----

    pub(crate) fn master_connected(&self, addr: &str) {
        let mut f = lock(&self.follow);
        f.connected = true;
        f.last_contact = Some(Instant::now());
        f.master_addr = Some(addr.to_owned());
    }

    pub(crate) fn master_heard(&self, own_end: u64, master_written: u64) {
        let mut f = lock(&self.follow);
        let now = Instant::now();
        f.last_contact = Some(now);
        f.master_written = f.master_written.max(master_written);
        if own_end >= f.master_written {
            f.caught_up_at = Some(now);
        }
    }

    pub(crate) fn master_lost(&self) {
        lock(&self.follow).connected = false;
    }

    /// A slave's master counts as down when the slave has not heard from it for `master_down_ms`.
    pub fn master_down(&self) -> bool {
        if self.is_master() {
            return false;
        }
        let f = lock(&self.follow);
        let quiet = f.last_contact.unwrap_or(self.started).elapsed();
        !f.connected && quiet >= Duration::from_millis(self.config.master_down_ms)
    }

    /// Whether receives and acks are served here: always on a master, on a slave only while its
    /// master is down (then consumers read the set's queues from the slave).
    pub fn serving_reads(&self) -> bool {
        self.is_master() || self.master_down()
    }

    pub fn mark_served(&self) {
        self.served.store(true, Ordering::Release);
    }

    pub(crate) fn take_served(&self) -> bool {
        self.served.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn restore_served(&self) {
        self.served.store(true, Ordering::Release);
    }

    /// A slave's lag behind its master: bytes it lacks of what the master reported, and how long
    /// ago it last held everything the master had.
    pub fn lag(&self, own_end: u64) -> (u64, u64) {
        let f = lock(&self.follow);
        let bytes = f.master_written.saturating_sub(own_end);
        // Cut off from its master, a slave cannot tell what it misses: it reports the time since it
        // last held everything the master had.
        let ms = if bytes == 0 && f.connected {
            0
        } else {
            f.caught_up_at.unwrap_or(self.started).elapsed().as_millis() as u64
        };
        (bytes, ms)
    }

    pub fn master_reachable(&self) -> bool {
        lock(&self.follow).connected
    }

    pub fn master_addr(&self) -> Option<String> {
        lock(&self.follow).master_addr.clone()
    }

    // ---- the cluster view ----

    pub(crate) fn set_view(&self, view: ClusterView) {
        *write(&self.view) = Some(view);
    }

    pub fn view(&self) -> Option<ClusterView> {
        read(&self.view).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(replication: ReplicationMode, broker_id: u64) -> Cluster {
        let config =
            ClusterConfig { replication, broker_id, sync_timeout_ms: 100, master_down_ms: 50, ..Default::default() };
        Cluster::new(config, "a".into())
    }

    #[tokio::test]
    async fn sync_replication_waits_for_a_slave_and_says_why_it_could_not() {
        let c = cluster(ReplicationMode::Sync, 0);
        assert_eq!(c.replicated(100).await, Err(ReplicationFailure::NoSlave));
        let link = c.slave_connected(1, "peer".into(), 0);
        assert_eq!(c.replicated(100).await, Err(ReplicationFailure::Timeout));
        c.slave_acked(link, 150, 150);
        assert_eq!(c.replicated(100).await, Ok(()));
        assert_eq!(c.replicated(150).await, Ok(()));
        // An ack arriving while the send waits releases it.
        let waiting = c.replicated(300);
        let (result, ()) = tokio::join!(waiting, async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.slave_acked(link, 300, 300);
        });
        assert_eq!(result, Ok(()));
        c.slave_gone(link);
        assert_eq!(c.replicated(400).await, Err(ReplicationFailure::NoSlave));
        assert_eq!(cluster(ReplicationMode::Async, 0).replicated(100).await, Ok(()), "async never waits");
        // A slave far behind does not count.
        let far = Cluster::new(
            ClusterConfig {
                replication: ReplicationMode::Sync,
                sync_gap_bytes_max: 1000,
                sync_timeout_ms: 50,
                ..Default::default()
            },
            "a".into(),
        );
        far.slave_connected(1, "peer".into(), 0);
        assert_eq!(far.replicated(500).await, Err(ReplicationFailure::Timeout), "within the gap: it waits");
        assert_eq!(far.replicated(5000).await, Err(ReplicationFailure::NoSlave), "past the gap: at once");
    }

    #[test]
    fn a_slave_serves_reads_only_once_its_master_has_been_silent_long_enough() {
        let c = cluster(ReplicationMode::Async, 1);
        assert!(!c.is_master());
        c.master_connected("m:8083");
        c.master_heard(10, 10);
        assert!(!c.serving_reads(), "connected");
        assert_eq!(c.lag(10), (0, 0));
        c.master_heard(10, 40);
        assert_eq!(c.lag(10).0, 30);
        c.master_lost();
        assert!(!c.serving_reads(), "just lost: not yet down");
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.serving_reads(), "silent for master_down_ms");
        assert!(cluster(ReplicationMode::Async, 0).serving_reads(), "a master always serves");
    }
}
