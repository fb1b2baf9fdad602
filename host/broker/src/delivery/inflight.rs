//! Messages in flight: receipt handles, ack, a new invisible time (nack), and releasing what a client
//! that went away had auto-renewed.

use super::cursor::{Cursor, State};
use super::{Delivery, DeliveryError, subscriber};
use crate::metadata::GroupConfig;
use crate::offsets::OffsetKey;

/// A receipt handle, as the consumer carries it: `<run>:<generation>:<queue>:<offset>:<stored topic>`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Handle {
    pub(super) epoch: u64,
    pub(super) generation: u64,
    pub(super) queue_id: u32,
    pub(super) offset: u64,
    pub(super) topic: String,
}

impl Handle {
    pub(super) fn encode(&self) -> String {
        format!("{:x}:{:x}:{}:{}:{}", self.epoch, self.generation, self.queue_id, self.offset, self.topic)
    }

    fn decode(s: &str) -> Option<Self> {
        let mut parts = s.splitn(5, ':');
        Some(Self {
            epoch: u64::from_str_radix(parts.next()?, 16).ok()?,
            generation: u64::from_str_radix(parts.next()?, 16).ok()?,
            queue_id: parts.next()?.parse().ok()?,
            offset: parts.next()?.parse().ok()?,
            topic: parts.next()?.to_owned(),
        })
    }
}

impl Delivery {
    /// Finds the in-flight message a handle names, if the handle is current and not expired.
    pub(super) fn current<'s>(
        &self,
        state: &'s mut State,
        group: &GroupConfig,
        client_id: &str,
        handle: &str,
        now: i64,
    ) -> Result<(OffsetKey, u64, &'s mut Cursor), DeliveryError> {
        let handle = Handle::decode(handle).ok_or(DeliveryError::InvalidHandle)?;
        if handle.epoch != self.epoch {
            return Err(DeliveryError::InvalidHandle);
        }
        let key =
            OffsetKey { subscriber: subscriber(group, client_id), topic: handle.topic, queue_id: handle.queue_id };
        let cursor = state.cursors.get_mut(&key).ok_or(DeliveryError::InvalidHandle)?;
        match cursor.inflight.get(&handle.offset) {
            // An auto-renewed delivery stays valid between its deadline and the renewal that follows.
            Some(inflight)
                if inflight.generation == handle.generation
                    && (inflight.deadline_ms > now || inflight.renew.is_some()) =>
            {
                Ok((key, handle.offset, cursor))
            }
            _ => Err(DeliveryError::InvalidHandle),
        }
    }

    /// Acknowledges a message: it is done for this subscriber.
    pub fn ack(&self, group: &GroupConfig, client_id: &str, handle: &str) -> Result<(), DeliveryError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let (key, offset, cursor) = self.current(&mut state, group, client_id, handle, now)?;
        let inflight = cursor.inflight.remove(&offset);
        cursor.complete(offset);
        self.save(&key, cursor);
        if let Some(inflight) = inflight {
            state.deadlines.remove(&(inflight.deadline_ms, inflight.generation));
        }
        Ok(())
    }

    /// Gives a delivered message a new invisible time; returns the handle that replaces the old one.
    /// Zero makes it due for redelivery at once.
    pub fn change_invisible(
        &self,
        group: &GroupConfig,
        client_id: &str,
        handle: &str,
        invisible_ms: i64,
    ) -> Result<String, DeliveryError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let (key, offset, cursor) = self.current(&mut state, group, client_id, handle, now)?;
        let generation = self.next_generation();
        let deadline_ms = now.saturating_add(invisible_ms.max(0));
        let Some(inflight) = cursor.inflight.get_mut(&offset) else { return Err(DeliveryError::InvalidHandle) };
        let old = (inflight.deadline_ms, inflight.generation);
        inflight.generation = generation;
        inflight.deadline_ms = deadline_ms;
        // An explicit new invisible time (a nack) ends auto-renewal.
        inflight.renew = None;
        let handle = Handle { epoch: self.epoch, generation, queue_id: key.queue_id, offset, topic: key.topic.clone() };
        state.deadlines.remove(&old);
        state.deadlines.insert((deadline_ms, generation), (key, offset));
        Ok(handle.encode())
    }

    /// Stops auto-renewing what was delivered to `client_id` (it went away): those messages become due
    /// for redelivery at the next [`Delivery::revive`].
    pub fn release_client(&self, client_id: &str) -> usize {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let mut moved = Vec::new();
        for (key, cursor) in state.cursors.iter_mut() {
            for (&offset, inflight) in cursor.inflight.iter_mut() {
                if inflight.renew.as_ref().is_some_and(|r| r.client_id == client_id) {
                    inflight.renew = None;
                    moved.push((
                        (inflight.deadline_ms, inflight.generation),
                        (now, inflight.generation),
                        key.clone(),
                        offset,
                    ));
                    inflight.deadline_ms = now;
                }
            }
        }
        for (old, new, key, offset) in &moved {
            state.deadlines.remove(old);
            state.deadlines.insert(*new, (key.clone(), *offset));
        }
        moved.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_garbage_is_refused() {
        let h = Handle { epoch: 0xabc, generation: 42, queue_id: 3, offset: 99, topic: "%RETRY%g_t".into() };
        assert_eq!(Handle::decode(&h.encode()), Some(h));
        for bad in ["", "x", "1:2:3:4", "zz:1:1:1:t", "1:1:-1:1:t"] {
            assert_eq!(Handle::decode(bad), None, "{bad}");
        }
    }
}
