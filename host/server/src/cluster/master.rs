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
use serde::{Deserialize, Serialize};

use super::Cluster;
use super::wire::Frame;

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

/// How long a master waits for a new slave's HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

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
                                tracing::warn!(%peer, err = format!("{err:#}"), "replication to a slave ended");
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
                        tracing::warn!(%err, "HA accept failed");
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
    let mut reader = BufReader::new(stream.try_clone()?);
    let Frame::Hello { broker_id, log_end, offsets } = Frame::read_from(&mut reader).context("read HELLO")? else {
        bail!("the first frame from a slave must be HELLO");
    };
    let store = broker.store().clone();
    let stats = store.stats();
    // A slave with an empty log starts at the master's oldest byte; one that lacks bytes retention
    // already removed, or holds more than the master, cannot continue this log.
    let mut pos = if log_end == 0 { stats.min_offset } else { log_end };
    if pos < stats.min_offset {
        bail!(
            "slave {broker_id} ends at {pos}, before this master's oldest byte {}: empty its data directory to resync",
            stats.min_offset
        );
    }
    if pos > stats.written {
        bail!(
            "slave {broker_id} holds the log up to {pos}, past this master's end {}: its log diverged; empty its data directory to resync",
            stats.written
        );
    }
    // Progress the slave made while this master was down.
    if let Ok(made) = serde_json::from_slice::<Vec<(OffsetKey, u64)>>(&offsets) {
        let advanced = made.into_iter().filter(|(k, o)| broker.delivery().advance_offset(k.clone(), *o)).count();
        if advanced > 0 {
            tracing::info!(
                slave = broker_id,
                advanced,
                "took consumer progress made on the slave while this master was down"
            );
        }
    }
    let link = cluster.slave_connected(broker_id, peer.clone(), log_end);
    tracing::info!(slave = broker_id, %peer, from = pos, "slave connected");
    // Acknowledgements arrive on their own thread, so the sender never waits for them.
    let ended = Arc::new(AtomicBool::new(false));
    stream.set_read_timeout(Some(Duration::from_millis(cluster.config.master_down_ms.max(1_000) * 2)))?;
    let acks = {
        let (ended, cluster, store) = (ended.clone(), cluster.clone(), store.clone());
        std::thread::Builder::new().name("ferrymq-ha-acks".into()).spawn(move || {
            while let Ok(frame) = Frame::read_from(&mut reader) {
                if let Frame::Ack { log_end } = frame {
                    cluster.slave_acked(link, log_end, store.stats().written);
                }
            }
            ended.store(true, Ordering::Release);
        })?
    };
    let result = stream_log(cluster, broker, &stream, &mut pos, stop, &ended);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = acks.join();
    cluster.slave_gone(link);
    tracing::info!(slave = broker_id, %peer, at = pos, "slave disconnected");
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
    let beat_every = Duration::from_millis(cluster.config.heartbeat_ms.min(500));
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
            let master_written = store.stats().written;
            Frame::Data { offset: *pos, master_written, bytes }.write_to(&mut out).context("send log bytes")?;
            *pos = next;
            last_sent = Instant::now();
            continue;
        }
        if !store.wait_visible_past(*pos, beat_every.min(Duration::from_millis(100)))
            && last_sent.elapsed() >= beat_every
        {
            Frame::Beat { master_written: store.stats().written }.write_to(&mut out).context("send heartbeat")?;
            last_sent = Instant::now();
        }
    }
    Ok(())
}
