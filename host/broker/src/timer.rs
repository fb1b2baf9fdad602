//! Delay and timer messages: a message with a future delivery time waits in the system topic
//! `rmq_sys_wheel_timer` and is copied to its real topic and queue once due.
//!
//! The timer reads its topic like a consumer (subscriber `%SYS%timer`, progress kept in the offsets
//! file), keeps the pending delivery times in memory, and on every [`Timer::tick`] stores the due
//! messages in their real topic and marks them done. Waiting messages survive a restart because they
//! are in the log; a crash between storing a due message and saving progress can deliver it twice.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::{Arc, Mutex};

use ferrymq_proto::properties::{self, PropertiesError, REAL_QUEUE_ID, REAL_TOPIC, TIMER_DELIVER_MS};
use ferrymq_proto::sync::lock;
use ferrymq_proto::throttle::Throttle;
use ferrymq_store::clock::Clock;
use ferrymq_store::{NewMessage, Store, StoreError};
use thiserror::Error;

use crate::metadata::TIMER_TOPIC;
use crate::offsets::{OffsetKey, Offsets};

/// Queue entries read per tick.
pub const TIMER_READ_BATCH_MAX: usize = 4096;
/// Due messages delivered per tick.
pub const TIMER_DELIVER_BATCH_MAX: usize = 4096;
const SUBSCRIBER: &str = "%SYS%timer";

#[derive(Debug, Default)]
struct State {
    /// Next timer-queue offset to read.
    next: u64,
    /// Every timer message below is delivered.
    commit: u64,
    done: BTreeSet<u64>,
    pending: BinaryHeap<Reverse<(i64, u64)>>,
}

#[derive(Debug)]
pub struct Timer {
    store: Arc<Store>,
    offsets: Arc<Offsets>,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

/// Why a due timer message could not be stored in its real topic (it is tried again next tick).
#[derive(Debug, Error)]
enum DeliverError {
    #[error("the timer message is gone")]
    Gone,
    #[error("no real topic")]
    NoRealTopic,
    #[error("no real queue")]
    NoRealQueue,
    #[error(transparent)]
    Properties(#[from] PropertiesError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn key() -> OffsetKey {
    OffsetKey { subscriber: SUBSCRIBER.into(), topic: TIMER_TOPIC.into(), queue_id: 0 }
}

impl Timer {
    pub fn new(store: Arc<Store>, offsets: Arc<Offsets>, clock: Arc<dyn Clock>) -> Self {
        let start = offsets.get(&key()).unwrap_or(0);
        Self { store, offsets, clock, state: Mutex::new(State { next: start, commit: start, ..State::default() }) }
    }

    /// Messages waiting for their delivery time.
    pub fn pending(&self) -> usize {
        lock(&self.state).pending.len()
    }

    /// Reads newly stored timer messages and delivers the due ones; returns how many it delivered.
    /// Blocks while due messages are stored.
    pub fn tick(&self) -> usize {
        let mut state = lock(&self.state);
        if let Some((min, _)) = self.store.queue_bounds(TIMER_TOPIC, 0)
            && state.next < min
        {
            state.next = min;
            state.commit = state.commit.max(min);
        }
        for entry in self.store.read_queue(TIMER_TOPIC, 0, state.next, TIMER_READ_BATCH_MAX) {
            state.next = entry.queue_offset + 1;
            let due = self.store.record(entry.offset, entry.len).ok().and_then(|r| {
                r.decode().ok().and_then(|rec| properties::get(rec.properties, TIMER_DELIVER_MS)?.parse::<i64>().ok())
            });
            match due {
                Some(ms) => state.pending.push(Reverse((ms, entry.queue_offset))),
                None => {
                    static UNREADABLE: Throttle = Throttle::per_second(5);
                    if let Some(suppressed) = UNREADABLE.admit() {
                        tracing::warn!(
                            offset = entry.queue_offset,
                            suppressed,
                            "timer message without a readable delivery time; dropped"
                        );
                    }
                    Self::complete(&mut state, entry.queue_offset);
                }
            }
        }
        let now = self.clock.now_ms();
        let mut delivered = 0;
        while delivered < TIMER_DELIVER_BATCH_MAX {
            let Some(&Reverse((ms, offset))) = state.pending.peek() else { break };
            if ms > now {
                break;
            }
            match self.deliver(offset) {
                Ok(()) => {
                    state.pending.pop();
                    Self::complete(&mut state, offset);
                    delivered += 1;
                }
                Err(err) => {
                    static UNDELIVERED: Throttle = Throttle::per_second(1);
                    if let Some(suppressed) = UNDELIVERED.admit() {
                        tracing::warn!(%err, offset, suppressed, "could not deliver a due timer message; will retry");
                    }
                    break;
                }
            }
        }
        self.offsets.set(key(), state.commit);
        delivered
    }

    fn complete(state: &mut State, offset: u64) {
        state.done.insert(offset);
        while state.done.remove(&state.commit) {
            state.commit += 1;
        }
    }

    /// Stores the timer message at `offset` in its real topic and queue.
    fn deliver(&self, offset: u64) -> Result<(), DeliverError> {
        let entry = self
            .store
            .read_queue(TIMER_TOPIC, 0, offset, 1)
            .into_iter()
            .next()
            .filter(|e| e.queue_offset == offset)
            .ok_or(DeliverError::Gone)?;
        let record = self.store.record(entry.offset, entry.len)?;
        let rec = record.decode()?;
        let topic = properties::get(rec.properties, REAL_TOPIC).ok_or(DeliverError::NoRealTopic)?.to_owned();
        let queue_id = properties::get(rec.properties, REAL_QUEUE_ID)
            .and_then(|q| q.parse().ok())
            .ok_or(DeliverError::NoRealQueue)?;
        let kept = properties::decode(rec.properties)
            .map_while(Result::ok)
            .filter(|p| p.name != REAL_TOPIC && p.name != REAL_QUEUE_ID)
            .map(|p| (p.name, p.value));
        let mut props = Vec::with_capacity(rec.properties.len());
        properties::encode(kept, &mut props)?;
        let message = NewMessage {
            topic,
            queue_id,
            flag: rec.meta.flag,
            sys_flag: rec.meta.sys_flag,
            born_timestamp_ms: rec.meta.born_timestamp_ms,
            born_host: rec.meta.born_host,
            reconsume_times: 0,
            prepared_tx_offset: 0,
            properties: props,
            body: rec.body.to_vec(),
        };
        self.store.append_wait(message)?;
        Ok(())
    }
}
