//! A master's side of replication: accept slaves on `ha_listen`, stream each its missing log bytes,
//! send metadata every `metadata_sync_ms`, and record what each slave confirmed.

use std::io::{BufReader, BufWriter};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferrymq_broker::Broker;
use ferrymq_broker::offsets::OffsetKey;
use ferrymq_proto::throttle::Throttle;
use serde::{Deserialize, Serialize};

use super::Cluster;
use super::wire::{Frame, HELLO_BYTES_MAX};

/// What a master sends its slaves besides the log (the log carries messages, transactions, timers
/// and plugin records).
#[derive(Debug, Serialize, Deserialize)]
pub struct MetadataCopy {
    pub topics: Vec<ferrymq_broker::metadata::TopicConfig>,
    pub groups: Vec<ferrymq_broker::metadata::GroupConfig>,
    pub offsets: Vec<(OffsetKey, u64)>,
}

impl MetadataCopy {
    pub fn of(broker: &Broker) -> Self {
        Self {
            topics: broker.metadata().topics(),
            groups: broker.metadata().groups(),
            offsets: broker.offsets_snapshot(),
        }
    }
}

/// What a slave says first: who it is, where its log ends and a fingerprint of its last bytes (so
/// that a log that diverged from this master's is refused), and the consumer progress it made
/// while serving reads.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub broker_set: String,
    pub broker_id: u64,
    pub log_end: u64,
    /// `(start, crc32c)` of the log bytes `[start, log_end)`.
    pub tail: Option<(u64, u32)>,
    pub offsets: Vec<(OffsetKey, u64)>,
}

/// A master says something to each slave at least this often (a slave counts its master down after
/// `master_down_ms` of silence).
const BEAT_EVERY_MAX: Duration = Duration::from_millis(500);
/// How long a sender waits for new log bytes before it looks at the clock (heartbeat, metadata).
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// How long a master waits for a new slave's HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected slave, forgotten however its connection ends.
struct LinkGuard<'a> {
    cluster: &'a Cluster,
    link: u64,
}

impl Drop for LinkGuard<'_> {
    fn drop(&mut self) {
        self.cluster.slave_gone(self.link);
    }
}

/// Why this master will not stream to the slave that said `hello`, if it will not.
fn refusal(cluster: &Cluster, broker: &Broker, hello: &Hello) -> Option<String> {
    let store = broker.store();
    let stats = store.stats();
    let id = hello.broker_id;
    if hello.broker_set != cluster.broker_set {
        return Some(format!(
            "slave {id} belongs to broker set {:?}, this master to {:?}",
            hello.broker_set, cluster.broker_set
        ));
    }
    if hello.log_end == 0 {
        return None;
    }
    if hello.log_end < stats.min_offset {
        return Some(format!(
            "slave {id} ends at {}, before this master's oldest byte {}: empty its data directory to resync",
            hello.log_end, stats.min_offset
        ));
    }
    if hello.log_end > stats.written {
        return Some(format!(
            "slave {id} holds the log up to {}, past this master's end {}: its log diverged (the master lost unflushed bytes?); empty its data directory to resync",
            hello.log_end, stats.written
        ));
    }
    let Some((start, crc)) = hello.tail else {
        return Some(format!("slave {id} sent no fingerprint of its log end"));
    };
    match store.digest(start, hello.log_end) {
        Ok(ours) if ours == crc => None,
        Ok(_) => Some(format!(
            "slave {id}'s bytes before {} differ from this master's: its log diverged; empty its data directory to resync",
            hello.log_end
        )),
        Err(err) => Some(format!("slave {id}'s log end {} cannot be checked here: {err}", hello.log_end)),
    }
}

/// Accepts slaves until `stop` is set; each gets its own sender and ack-reader threads.
pub fn start(
    cluster: Arc<Cluster>,
    broker: Arc<Broker>,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<JoinHandle<()>> {
    listener.set_nonblocking(true).context("make the HA listener non-blocking")?;
    std::thread::Builder::new()
        .name("ferrymq-ha-accept".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let (cluster, broker, stop) = (cluster.clone(), broker.clone(), stop.clone());
                        let spawned = std::thread::Builder::new().name("ferrymq-ha-send".into()).spawn(move || {
                            if let Err(err) = serve_slave(&cluster, &broker, stream, &stop) {
                                static ENDED: Throttle = Throttle::per_second(5);
                                if let Some(suppressed) = ENDED.admit() {
                                    tracing::warn!(%peer, err = format!("{err:#}"), suppressed, "replication to a slave ended");
                                }
                            }
                        });
                        if let Err(err) = spawned {
                            tracing::error!(%err, "could not start a replication thread");
                        }
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(err) => {
                        static FAILED: Throttle = Throttle::per_second(1);
                        if let Some(suppressed) = FAILED.admit() {
                            tracing::warn!(%err, suppressed, "HA accept failed");
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })
        .context("start the HA listener thread")
}

fn serve_slave(
    cluster: &Arc<Cluster>,
    broker: &Arc<Broker>,
    stream: TcpStream,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    // A slave that stops reading (cut off, stopped) must not hold this thread for TCP's own timeout.
    stream.set_write_timeout(Some(Duration::from_millis(cluster.config.master_down_ms.max(1_000) * 2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Frame::Hello { json } = Frame::read_limited(&mut reader, HELLO_BYTES_MAX).context("read HELLO")? else {
        bail!("the first frame from a slave must be HELLO");
    };
    let hello: Hello = serde_json::from_slice(&json).context("decode HELLO")?;
    if let Some(reason) = refusal(cluster, broker, &hello) {
        let _ = Frame::Refuse { reason: reason.clone() }.write_to(&mut &stream);
        bail!(reason);
    }
    let store = broker.store().clone();
    // A slave with an empty log starts at this master's oldest byte.
    let mut pos = if hello.log_end == 0 { store.stats().min_offset } else { hello.log_end };
    // Progress the slave made while this master was down.
    let advanced = hello.offsets.into_iter().filter(|(k, o)| broker.delivery().advance_offset(k.clone(), *o)).count();
    if advanced > 0 {
        tracing::info!(
            slave = hello.broker_id,
            advanced,
            "took consumer progress made on the slave while this master was down"
        );
    }
    let link = cluster.slave_connected(hello.broker_id, peer.clone(), hello.log_end);
    let _link = LinkGuard { cluster, link };
    tracing::info!(slave = hello.broker_id, %peer, from = pos, "slave connected");
    stream.set_read_timeout(Some(Duration::from_millis(cluster.config.master_down_ms.max(1_000) * 2)))?;
    // Acknowledgements arrive on their own thread, so the sender never waits for them. When they
    // stop, the connection is shut down, which also ends a send blocked on it.
    let ended = Arc::new(AtomicBool::new(false));
    let acks = {
        let (ended, cluster, store, stream) = (ended.clone(), cluster.clone(), store.clone(), stream.try_clone()?);
        std::thread::Builder::new().name("ferrymq-ha-acks".into()).spawn(move || {
            while let Ok(frame) = Frame::read_from(&mut reader) {
                if let Frame::Ack { log_end } = frame {
                    cluster.slave_acked(link, log_end, store.log_end());
                }
            }
            ended.store(true, Ordering::Release);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        })?
    };
    let result = stream_log(cluster, broker, &stream, &mut pos, stop, &ended);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = acks.join();
    tracing::info!(slave = hello.broker_id, %peer, at = pos, "slave disconnected");
    result
}

/// Sends log bytes from `pos` as they become readable, a heartbeat when there are none, and the
/// metadata every `metadata_sync_ms`, until the slave goes away or the broker stops.
fn stream_log(
    cluster: &Cluster,
    broker: &Broker,
    stream: &TcpStream,
    pos: &mut u64,
    stop: &AtomicBool,
    ended: &AtomicBool,
) -> anyhow::Result<()> {
    let store = broker.store();
    let mut out = BufWriter::with_capacity(64 << 10, stream.try_clone()?);
    let metadata_every = Duration::from_millis(cluster.config.metadata_sync_ms);
    let beat_every = Duration::from_millis(cluster.config.heartbeat_ms).min(BEAT_EVERY_MAX);
    let mut metadata_sent: Option<Instant> = None;
    let mut last_sent = Instant::now();
    while !stop.load(Ordering::Acquire) && !ended.load(Ordering::Acquire) {
        if metadata_sent.is_none_or(|t| t.elapsed() >= metadata_every) {
            let json = serde_json::to_vec(&MetadataCopy::of(broker))?;
            Frame::Meta { json }.write_to(&mut out).context("send metadata")?;
            metadata_sent = Some(Instant::now());
        }
        let (bytes, next) = store.read_raw_chunk(*pos, cluster.config.transfer_bytes_max)?;
        if !bytes.is_empty() {
            let master_written = store.log_end();
            Frame::Data { offset: *pos, master_written, bytes }.write_to(&mut out).context("send log bytes")?;
            *pos = next;
            last_sent = Instant::now();
            continue;
        }
        if !store.wait_visible_past(*pos, beat_every.min(WAIT_SLICE)) && last_sent.elapsed() >= beat_every {
            Frame::Beat { master_written: store.log_end() }.write_to(&mut out).context("send heartbeat")?;
            last_sent = Instant::now();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterConfig;
    use ferrymq_broker::BrokerConfig;
    use ferrymq_store::clock::SystemClock;
    use ferrymq_store::{NewMessage, Store, StoreOptions};

    fn broker(dir: &std::path::Path, bodies: &[&str]) -> Arc<Broker> {
        let mut options = StoreOptions::new(dir);
        options.config.segment_bytes = 1 << 20;
        options.config.record_bytes_max = 64 << 10;
        let store = Arc::new(Store::open(options).expect("store"));
        for body in bodies {
            let message = NewMessage {
                topic: "t".into(),
                queue_id: 0,
                flag: 0,
                sys_flag: 0,
                born_timestamp_ms: 0,
                born_host: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                reconsume_times: 0,
                prepared_tx_offset: 0,
                properties: Vec::new(),
                body: body.as_bytes().to_vec(),
            };
            store.append_wait(message).expect("append");
        }
        Arc::new(Broker::open(store, dir, BrokerConfig::default(), Arc::new(SystemClock)).expect("broker"))
    }

    fn hello(set: &str, from: &Broker) -> Hello {
        let log_end = from.store().log_end();
        Hello {
            broker_set: set.into(),
            broker_id: 1,
            log_end,
            tail: from.store().tail_digest(log_end, 4096).expect("digest"),
            offsets: Vec::new(),
        }
    }

    #[test]
    fn a_master_refuses_a_slave_of_another_set_ahead_of_it_or_with_other_bytes() {
        let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
        let master = broker(dirs[0].path(), &["one", "two", "three"]);
        let cluster = Cluster::new(ClusterConfig::default(), "a".into());
        // A true prefix: the master's first record, copied as a slave copies it.
        let same = broker(dirs[1].path(), &[]);
        let first = master.store().read_raw(0, 1).expect("first record");
        same.store().append_raw_wait(0, first).expect("append raw");
        let other = broker(dirs[2].path(), &["uno", "dos"]);
        let ahead = broker(dirs[3].path(), &["one", "two", "three", "four"]);
        assert_eq!(refusal(&cluster, &master, &hello("a", &same)), None, "a prefix of the master's log");
        let empty = Hello { broker_set: "a".into(), broker_id: 1, log_end: 0, tail: None, offsets: Vec::new() };
        assert_eq!(refusal(&cluster, &master, &empty), None, "an empty slave starts at the oldest byte");
        let wrong_set = refusal(&cluster, &master, &hello("b", &same)).expect("refused");
        assert!(wrong_set.contains("broker set"), "{wrong_set}");
        let diverged = refusal(&cluster, &master, &hello("a", &other)).expect("refused");
        assert!(diverged.contains("diverged"), "{diverged}");
        let past = refusal(&cluster, &master, &hello("a", &ahead)).expect("refused");
        assert!(past.contains("past this master's end"), "{past}");
        let no_tail = Hello { tail: None, ..hello("a", &same) };
        assert!(refusal(&cluster, &master, &no_tail).is_some());
    }
}
