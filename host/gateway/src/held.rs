//! A batch held between its receive and its ack, kept invisible on the source meanwhile.
//!
//! Why: the source delivers a message again once its invisible time runs out, and counts each
//! delivery as an attempt of the gateway's group; after `max_attempts` it moves the message to
//! `%DLQ%<group>`, where the forward never sees it. A worker waiting out an absent target holds its
//! batch for as long as the outage lasts, so without renewal an outage longer than
//! `invisible_ms × max_attempts` dead-letters the batch, and loses it once the worker holding its
//! last delivery goes away (killed, restarted). Renewing (`ChangeInvisibleDuration`) is not a
//! delivery, so it costs no attempt; each renewal replaces the message's receipt handle, and the ack
//! uses the newest one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrymq_client::{Client, ClientError, Received, pb};
use ferrymq_proto::sync::lock;
use ferrymq_proto::throttle::Throttle;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use crate::forward::Route;

/// Renewals per invisible time: a held message is renewed every third of it, so that one renewal may
/// fail or come late (a cut link, a busy source) and the next still lands a third of the invisible
/// time before the source would deliver the message again.
pub const RENEWALS_PER_INVISIBLE: u32 = 3;

/// How often a held batch is renewed for a forward whose messages are invisible for `invisible`.
pub fn renew_period(invisible: Duration) -> Duration {
    invisible / RENEWALS_PER_INVISIBLE
}

/// One held message: its id and the newest receipt handle the source gave for it.
struct Handle {
    message_id: String,
    receipt_handle: String,
    /// The source refused the handle (its invisible time ran out before a renewal reached it, and
    /// the message is being delivered again): renewing it again cannot succeed.
    refused: bool,
}

/// A received batch's receipt handles, renewed every [`renew_period`] by a task of its own until
/// [`Held::release`]. Dropping it (the gateway stops mid-batch) ends the renewals after the round in
/// progress; the source then delivers the batch again after its invisible time.
pub struct Held {
    handles: Arc<std::sync::Mutex<Vec<Handle>>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Held {
    /// Starts renewing `received`, the batch `client` just received for `route`. The receipt
    /// handles move into the `Held` (the batch's are left empty) and come back with
    /// [`Held::release`].
    pub fn start(route: Arc<Route>, client: Client, received: &mut [Received]) -> Held {
        let handles = received
            .iter_mut()
            .map(|r| Handle {
                message_id: r.message_id.clone(),
                receipt_handle: std::mem::take(&mut r.receipt_handle),
                refused: false,
            })
            .collect();
        let handles = Arc::new(std::sync::Mutex::new(handles));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(renew_until(route, client, handles.clone(), stopped));
        Held { handles, stop, task }
    }

    /// Stops the renewals and moves the newest receipt handle of each message back into `received`
    /// (the batch [`Held::start`] was given, in the same order), ready for the ack. A round in
    /// progress is finished first rather than cut off: a renewal the source carried out but whose
    /// answer was dropped would leave the ack with a handle the source no longer accepts.
    ///
    /// # Cancel safety
    /// Not cancel safe: cancelled, it leaves the handles in `received` as they were; the renewal
    /// task still ends after its round.
    pub async fn release(self, received: &mut [Received]) {
        let Held { handles, stop, task } = self;
        drop(stop);
        // A renewal task that panicked leaves the handles as its last finished renewal wrote them.
        let _ = task.await;
        for (r, handle) in received.iter_mut().zip(lock(&handles).iter_mut()) {
            r.receipt_handle = std::mem::take(&mut handle.receipt_handle);
        }
    }
}

/// Renews every handle not refused yet once per period, until `stopped` fires or its sender is
/// dropped.
async fn renew_until(
    route: Arc<Route>,
    client: Client,
    handles: Arc<std::sync::Mutex<Vec<Handle>>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let period = renew_period(route.invisible);
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    // A round that outlasts the period (a slow source) is followed by a full period, not a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stopped => return,
        }
        renew(&route, &client, &handles).await;
    }
}

/// One round: renews every handle not refused yet, all at once, and keeps the handles the source
/// answers with.
async fn renew(route: &Arc<Route>, client: &Client, handles: &Arc<std::sync::Mutex<Vec<Handle>>>) {
    static RENEW_FAILED: Throttle = Throttle::per_second(1);
    let mut calls = JoinSet::new();
    for (i, handle) in lock(handles).iter().enumerate().filter(|(_, h)| !h.refused) {
        let (route, client) = (route.clone(), client.clone());
        let (message_id, receipt_handle) = (handle.message_id.clone(), handle.receipt_handle.clone());
        calls.spawn(async move {
            let renewed = client
                .change_invisible(&route.group, &route.topic, &message_id, &receipt_handle, route.invisible)
                .await;
            (i, renewed)
        });
    }
    while let Some(joined) = calls.join_next().await {
        let Ok((i, renewed)) = joined else { continue };
        match renewed {
            Ok(receipt_handle) => {
                route.stats.renewed.fetch_add(1, Ordering::Relaxed);
                if let Some(handle) = lock(handles).get_mut(i) {
                    handle.receipt_handle = receipt_handle;
                }
            }
            Err(err) => {
                route.stats.renew_failed.fetch_add(1, Ordering::Relaxed);
                let refused = refused_for_good(&err);
                if refused && let Some(handle) = lock(handles).get_mut(i) {
                    handle.refused = true;
                }
                if let Some(suppressed) = RENEW_FAILED.admit() {
                    tracing::warn!(topic = %route.topic, %err, refused, suppressed, "renewing a held message's invisible time on the source failed; the source may deliver it again (the target recognises a second copy)");
                }
            }
        }
    }
}

/// Whether the source says the handle is no longer valid (so renewing it again cannot work), as
/// opposed to a failure that the next round may not meet.
fn refused_for_good(err: &ClientError) -> bool {
    err.code() == Some(pb::Code::InvalidReceiptHandle as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_message_is_renewed_well_before_its_invisible_time_runs_out() {
        for ms in [1_000, 30_000, 43_200_000] {
            let invisible = Duration::from_millis(ms);
            let period = renew_period(invisible);
            assert!(period > Duration::ZERO);
            assert!(period * 2 < invisible, "one renewal may fail and the next still land within {ms} ms");
        }
    }

    #[test]
    fn only_an_invalid_handle_stops_the_renewals_of_a_message() {
        let broker = |code: pb::Code| ClientError::Broker {
            rpc: "ChangeInvisibleDuration",
            code: code as i32,
            message: String::new(),
        };
        assert!(refused_for_good(&broker(pb::Code::InvalidReceiptHandle)));
        assert!(!refused_for_good(&broker(pb::Code::TooManyRequests)));
        assert!(!refused_for_good(&ClientError::Protocol { rpc: "ChangeInvisibleDuration", reason: "x".into() }));
    }
}
