//! A slave's side of replication: find the master, send HELLO with the local log end, append every
//! DATA frame verbatim, confirm it, and copy the master's metadata.

use std::io::{BufReader, BufWriter};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail};
use ferrymq_broker::Broker;
use ferrymq_proto::record::{self, Entry, FILLER_BYTES_MIN, Verify};

use super::master::{Hello, MetadataCopy};
use super::wire::Frame;
use super::{Cluster, Role};

/// Pause between attempts to reach the master.
const RETRY: Duration = Duration::from_millis(500);
/// How much of its log end a slave fingerprints for its master.
const TAIL_DIGEST_BYTES: u64 = 64 << 10;

/// Follows the master until `stop` is set.
pub fn start(cluster: Arc<Cluster>, broker: Arc<Broker>, stop: Arc<AtomicBool>) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ferrymq-ha-follow".into())
        .spawn(move || {
            let mut last_error = String::new();
            while !stop.load(Ordering::Acquire) {
                let Some(addr) = master_address(&cluster) else {
                    std::thread::sleep(RETRY);
                    continue;
                };
                match follow(&cluster, &broker, &addr, &stop) {
                    Ok(()) => last_error.clear(),
                    Err(err) => {
                        let err = format!("{err:#}");
                        // Say it once per kind of failure, not every half second.
                        if err != last_error {
                            tracing::warn!(master = %addr, %err, "replication from the master stopped; retrying");
                            last_error = err;
                        }
                    }
                }
                cluster.master_lost();
                std::thread::sleep(RETRY);
            }
        })
        .context("start the replication thread")
}

/// The master's HA address: configured, or the set's master as the name servers know it.
fn master_address(cluster: &Cluster) -> Option<String> {
    if let Some(addr) = &cluster.config.master_ha {
        return Some(addr.clone());
    }
    let view = cluster.view()?;
    view.brokers
        .iter()
        .map(|m| &m.registration)
        .find(|r| r.broker_set == cluster.broker_set && r.role == Role::Master)
        .map(|r| r.ha.clone())
}

fn follow(cluster: &Cluster, broker: &Broker, addr: &str, stop: &AtomicBool) -> anyhow::Result<()> {
    let target = addr
        .to_socket_addrs()
        .with_context(|| format!("resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let stream =
        TcpStream::connect_timeout(&target, Duration::from_secs(1)).with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(cluster.config.master_down_ms)))?;
    stream.set_write_timeout(Some(Duration::from_millis(cluster.config.master_down_ms)))?;
    let store = broker.store().clone();
    let mut out = BufWriter::new(stream.try_clone()?);
    let mut input = BufReader::with_capacity(256 << 10, stream);
    // Progress made here while the master was down goes back with the HELLO.
    let served = cluster.take_served();
    let log_end = store.log_end();
    let hello = Hello {
        broker_set: cluster.broker_set.clone(),
        broker_id: cluster.config.broker_id,
        log_end,
        tail: store.tail_digest(log_end, TAIL_DIGEST_BYTES)?,
        offsets: if served { broker.offsets_snapshot() } else { Vec::new() },
    };
    let hello = Frame::Hello { json: serde_json::to_vec(&hello)? };
    if let Err(err) = hello.write_to(&mut out) {
        if served {
            cluster.restore_served();
        }
        return Err(err).context("send HELLO");
    }
    let first = match Frame::read_from(&mut input) {
        Ok(frame) => frame,
        Err(err) => {
            if served {
                cluster.restore_served();
            }
            return Err(err).context("the master did not answer (see its log for why it refused)");
        }
    };
    if let Frame::Refuse { reason } = &first {
        if served {
            cluster.restore_served();
        }
        bail!("the master refused: {reason}");
    }
    cluster.master_connected(addr);
    tracing::info!(master = %addr, log_end = store.log_end(), "following the master");
    let mut frame = first;
    loop {
        match frame {
            Frame::Data { offset, master_written, bytes } => {
                check_topics(&bytes).with_context(|| format!("refuse the master's bytes at {offset}"))?;
                let end = store
                    .append_raw_wait(offset, bytes)
                    .with_context(|| format!("append the master's bytes at {offset}"))?;
                Frame::Ack { log_end: end }.write_to(&mut out).context("confirm")?;
                cluster.master_heard(end, master_written);
            }
            Frame::Beat { master_written } => {
                let end = store.log_end();
                Frame::Ack { log_end: end }.write_to(&mut out).context("confirm")?;
                cluster.master_heard(end, master_written);
            }
            Frame::Meta { json } => {
                let copy: MetadataCopy = serde_json::from_slice(&json).context("decode the master's metadata")?;
                apply_metadata(broker, copy);
                cluster.master_heard(store.log_end(), 0);
            }
            other => bail!("unexpected frame from the master: {other:?}"),
        }
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        frame = Frame::read_from(&mut input).context("read from the master")?;
    }
}

/// Refuses a DATA payload holding a record whose topic is not a topic name. The store names
/// consume-queue directories after topics, so a name such as `../x` from a master would reach
/// outside the data directory. Entries that do not decode are left to the store, which refuses them.
pub(crate) fn check_topics(bytes: &[u8]) -> ferrymq_store::Result<()> {
    let mut at = 0;
    while let Some(rest) = bytes.get(at..).filter(|rest| !rest.is_empty()) {
        match record::decode(rest, 0, Verify::Structure) {
            Ok(Entry::Record { record, total_bytes }) => {
                ferrymq_store::validate_topic(record.topic)?;
                at += total_bytes;
            }
            // A payload carries only a filler's head; the next segment's entries follow it.
            Ok(Entry::Filler { .. }) => at += FILLER_BYTES_MIN,
            Err(_) => break,
        }
    }
    Ok(())
}

/// Makes this slave's topics, groups and consumer offsets the master's.
fn apply_metadata(broker: &Broker, copy: MetadataCopy) {
    match broker.metadata().replace_all(copy.topics, copy.groups) {
        Ok(true) => tracing::debug!("copied the master's topics and groups"),
        Ok(false) => {}
        Err(err) => tracing::warn!(%err, "could not save the master's topics and groups"),
    }
    let delivery = broker.delivery();
    for (key, offset) in copy.offsets {
        if delivery.offset(&key) != Some(offset) {
            delivery.set_offset(key, offset);
        }
    }
}
