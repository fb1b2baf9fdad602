//! One forward, top to bottom: receive a batch from the source zone, judge each message (the
//! policy, if any), send what crosses to the target zone under each message's own id, record what
//! does not cross, and only then settle the batch on the source.
//!
//! Why nothing is lost or duplicated: a message is acknowledged on the source only after the target
//! acknowledged it (or the decision log holds it); after a crash, a cut link or a failed
//! acknowledgement the source delivers it again, the gateway sends it again under the same id, and
//! the target's de-duplication answers with the first copy's receipt instead of storing a second.
//! Why order holds: a batch is forwarded in the order received, and a worker asks for its next batch
//! only once the target holds this one (its ack on the source runs beside the next receive); with a
//! FIFO group on the source, a message group's next message is not delivered (to any worker) before
//! its previous one is settled, so a forward's several workers keep each group in order.
//! Why a long outage costs no delivery attempts: while a worker holds a batch (however long the
//! target is away) it renews the batch's invisible time on the source (`held`), so the source does
//! not deliver it again and never counts it towards the group's `max_attempts`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use ferrymq_client::{Client, ClientError, Message, Receive, Received, ReceivedKind, now_ms, pb};
use ferrymq_proto::sync::lock;
use ferrymq_proto::throttle::Throttle;
use serde::Serialize;
use tokio::sync::watch;

use crate::decisions::{Decision, Decisions, Entry, Recorded};
use crate::ferry::export::Exporter;
use crate::held::Held;
use crate::leg::{Backoff, Leg};
use crate::policy::{Policy, Verdict};

/// Where crossing messages go.
pub enum Target {
    /// The target zone's brokers.
    Brokers(Box<Leg>),
    /// Batch files for a one-way link.
    Ferry(Exporter),
}

/// The property naming the zone a message came from.
pub const SOURCE_ZONE: &str = "ferrymq-source-zone";
/// The property holding when the source broker stored it (milliseconds since the Unix epoch).
pub const SOURCE_STORE_MS: &str = "ferrymq-source-store-ms";
/// How long one receive waits on the source for a first message.
const LONG_POLLING: Duration = Duration::from_secs(10);

/// Counters and state of one forward, for `/metrics` and `GET /v1/gateway`.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub received: AtomicU64,
    pub forwarded: AtomicU64,
    pub rejected: AtomicU64,
    pub dropped: AtomicU64,
    pub redacted: AtomicU64,
    pub set_aside: AtomicU64,
    /// Sends to the target tried again (target absent, slow or refusing for now).
    pub retried: AtomicU64,
    /// Judgements tried again because the policy failed (fail-closed).
    pub policy_waits: AtomicU64,
    /// Invisible times of held messages renewed on the source.
    pub renewed: AtomicU64,
    /// Renewals that failed (each is tried again at the next round, unless the source refused the
    /// handle for good).
    pub renew_failed: AtomicU64,
    /// Age of the oldest message being forwarded, by the source's store time; 0 when idle.
    pub lag_ms: AtomicI64,
    /// Messages received and not yet settled.
    pub in_flight: AtomicU64,
    /// Messages of the topic the gateway's group has not consumed on the source, as the source
    /// counts them (looked at every few seconds).
    pub lag_messages: AtomicU64,
    state: std::sync::Mutex<&'static str>,
}

impl RouteStats {
    pub fn state(&self) -> &'static str {
        *lock(&self.state)
    }

    fn set_state(&self, state: &'static str) {
        *lock(&self.state) = state;
    }
}

/// One forward, as configured.
pub struct Route {
    pub topic: String,
    pub target_topic: String,
    pub group: String,
    pub batch: u32,
    pub invisible: Duration,
    pub zone: String,
    pub policy: Option<Arc<Policy>>,
    pub stats: RouteStats,
    pub decisions: Arc<Decisions>,
}

/// Whether a refusal concerns this one message for good (it could never be stored as it is), as
/// opposed to the target's state (absent topic, full disk, a slave, too busy), which passes.
fn refuses_for_good(err: &ClientError) -> bool {
    use pb::Code;
    err.code().and_then(|c| Code::try_from(c).ok()).is_some_and(|code| {
        matches!(
            code,
            Code::MessageBodyEmpty
                | Code::MessageBodyTooLarge
                | Code::MessagePropertiesTooLarge
                | Code::IllegalMessagePropertyKey
                | Code::IllegalMessageTag
                | Code::IllegalMessageKey
                | Code::IllegalMessageGroup
                | Code::IllegalMessageId
                | Code::IllegalDeliveryTime
        )
    })
}

/// A batch's ack on the source, running.
type Settling = tokio::task::JoinHandle<Result<(), ClientError>>;

impl Route {
    /// Forwards until `stop` says so. Messages received and not settled when it stops are
    /// delivered again by the source after their invisible time.
    pub async fn run(self: Arc<Self>, mut source: Leg, mut target: Target, mut stop: watch::Receiver<bool>) {
        let mut settling = None;
        self.forward(&mut source, &mut target, &mut stop, &mut settling).await;
        if let Some(previous) = settling {
            self.settled(previous.await, &mut source);
        }
    }

    /// The receive-judge-send loop. A batch's ack (`settling`) runs while the next batch is received
    /// and sent: at most one per worker, awaited before the next one starts.
    async fn forward(
        self: &Arc<Self>,
        source: &mut Leg,
        target: &mut Target,
        stop: &mut watch::Receiver<bool>,
        settling: &mut Option<Settling>,
    ) {
        static RECEIVE_FAILED: Throttle = Throttle::per_second(1);
        let mut backoff = Backoff::default();
        loop {
            self.stats.set_state("connecting to the source");
            let Some(client) = source.client(stop).await else { return };
            self.stats.set_state("waiting for messages");
            let ask = Receive {
                group: &self.group,
                topic: &self.topic,
                tag_expression: "*",
                batch: self.batch,
                invisible: self.invisible,
                long_polling: LONG_POLLING,
            };
            let received = tokio::select! {
                received = client.receive(&ask) => received,
                _ = stop.changed() => return,
            };
            let mut received = match received {
                Ok(received) => received,
                Err(err) => {
                    if let Some(suppressed) = RECEIVE_FAILED.admit() {
                        tracing::warn!(topic = %self.topic, %err, suppressed, "receive from the source failed; retrying");
                    }
                    if err.code().is_none() {
                        source.broke();
                    }
                    if !backoff.wait(stop).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            if received.is_empty() {
                self.stats.lag_ms.store(0, Ordering::Relaxed);
                continue;
            }
            let oldest = received.iter().filter_map(|r| r.store_ms).min().unwrap_or_else(now_ms);
            self.stats.lag_ms.store((now_ms() - oldest).max(0), Ordering::Relaxed);
            self.stats.received.fetch_add(received.len() as u64, Ordering::Relaxed);
            self.stats.in_flight.fetch_add(received.len() as u64, Ordering::Relaxed);

            // Kept invisible on the source from here to the ack, however long the target is away.
            let held = Held::start(self.clone(), client.clone(), &mut received);
            let Some((crossings, mut entries)) = self.judge(&received, stop).await else { return };
            self.stats.set_state("sending to the target");
            let Some(set_aside) = self.deliver(crossings, target, stop).await else { return };
            entries.extend(set_aside);
            if !entries.is_empty() && !self.record(&entries, stop).await {
                return;
            }
            if let Some(previous) = settling.take() {
                self.settled(previous.await, source);
            }
            *settling = Some(self.settle(client, held, received));
        }
    }

    /// Acks a batch the target holds (and whose set-aside messages are recorded) on the source,
    /// with the newest receipt handles, in a task of its own.
    fn settle(self: &Arc<Self>, client: Client, held: Held, mut received: Vec<Received>) -> Settling {
        let route = self.clone();
        tokio::spawn(async move {
            held.release(&mut received).await;
            let acked = client.ack(&route.group, &route.topic, &received).await;
            route.stats.in_flight.fetch_sub(received.len() as u64, Ordering::Relaxed);
            acked
        })
    }

    /// Reports how a batch's ack went.
    fn settled(&self, outcome: Result<Result<(), ClientError>, tokio::task::JoinError>, source: &mut Leg) {
        static ACK_FAILED: Throttle = Throttle::per_second(1);
        let err = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err,
            Err(join) => {
                tracing::error!(topic = %self.topic, err = %join, "settling on the source stopped; the messages will come again and be recognised");
                return;
            }
        };
        // The source delivers them again after their invisible time; the target holds them already
        // and answers the second send with the first copy's receipt.
        if let Some(suppressed) = ACK_FAILED.admit() {
            tracing::warn!(topic = %self.topic, %err, suppressed, "settling on the source failed; the messages will come again and be recognised");
        }
        if err.code().is_none() {
            source.broke();
        }
    }

    /// What crosses and what is recorded instead, in order; `None` when the gateway stops while a
    /// failing policy holds a message.
    async fn judge(
        &self,
        received: &[Received],
        stop: &mut watch::Receiver<bool>,
    ) -> Option<(Vec<Message>, Vec<Entry>)> {
        let mut crossings = Vec::with_capacity(received.len());
        let mut entries = Vec::new();
        for r in received {
            self.judge_one(r, self.crossing(r), &mut crossings, &mut entries, stop).await?;
        }
        Some((crossings, entries))
    }

    /// Judges `r`, to be sent as `message`: pushes what crosses onto `crossings` and what does not
    /// onto `entries`; `None` when the gateway stops while a failing policy holds it.
    pub(crate) async fn judge_one(
        &self,
        r: &Received,
        message: Message,
        crossings: &mut Vec<Message>,
        entries: &mut Vec<Entry>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        let Some(policy) = &self.policy else {
            crossings.push(message);
            return Some(());
        };
        let mut backoff = Backoff::default();
        let verdict = loop {
            // Plugin calls block; they run beside the runtime's other tasks.
            let verdict = tokio::task::block_in_place(|| policy.judge(r, message.clone(), &self.target_topic));
            match verdict {
                Ok(verdict) => break verdict,
                Err(reason) => {
                    static WAITING: Throttle = Throttle::per_second(1);
                    self.stats.policy_waits.fetch_add(1, Ordering::Relaxed);
                    self.stats.set_state("waiting for the policy");
                    if let Some(suppressed) = WAITING.admit() {
                        tracing::warn!(topic = %self.topic, message_id = %r.message_id, %reason, suppressed, "the policy could not judge a message; it waits and is judged again");
                    }
                    if !backoff.wait(stop).await {
                        return None;
                    }
                }
            }
        };
        let entry = |decision, reason: String, message: Option<Recorded>| Entry {
            time_ms: now_ms(),
            topic: self.topic.clone(),
            message_id: r.message_id.clone(),
            decision,
            reason,
            message,
        };
        match verdict {
            Verdict::Cross { message, topics, changed } => {
                if changed {
                    self.stats.redacted.fetch_add(1, Ordering::Relaxed);
                }
                for topic in topics {
                    crossings.push(Message { topic, ..(*message).clone() });
                }
            }
            Verdict::Reject(reason) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::info!(topic = %self.topic, message_id = %r.message_id, %reason, "the policy rejected a message; it does not cross");
                entries.push(entry(Decision::Rejected, reason, None));
            }
            Verdict::Drop(reason) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::info!(topic = %self.topic, message_id = %r.message_id, %reason, "the policy dropped a message; it does not cross");
                entries.push(entry(Decision::Dropped, reason, None));
            }
            Verdict::SetAside(reason) => {
                self.stats.set_aside.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %self.topic, message_id = %r.message_id, %reason, "a message is set aside in the decision log");
                entries.push(entry(Decision::SetAside, reason, Some(Recorded::of(&message))));
            }
        }
        Some(())
    }

    /// The message to send for `r`: the same id, keys, tag, group, properties and body, plus where
    /// it came from.
    fn crossing(&self, r: &Received) -> Message {
        let mut properties = r.properties.clone();
        properties.retain(|(k, _)| k != SOURCE_ZONE && k != SOURCE_STORE_MS);
        properties.push((SOURCE_ZONE.into(), self.zone.clone()));
        if let Some(ms) = r.store_ms {
            properties.push((SOURCE_STORE_MS.into(), ms.to_string()));
        }
        Message {
            topic: self.target_topic.clone(),
            body: r.body.clone(),
            tag: r.tag.clone(),
            keys: r.keys.clone(),
            message_group: r.message_group.clone(),
            // Due already (the source delivers a delay message at its time); the target stores it
            // as due, in its delay topic.
            delivery_ms: if r.kind == ReceivedKind::Delay { r.delivery_ms } else { None },
            properties,
            message_id: Some(r.message_id.clone()),
            born_ms: r.born_ms,
        }
    }

    /// Sends every crossing, consecutive ones to the same topic in one request, each until the
    /// target takes it (or writes them into one batch file); returns the entries of those the
    /// target refuses for good, or `None` when the gateway stops first.
    pub(crate) async fn deliver(
        &self,
        crossings: Vec<Message>,
        target: &mut Target,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<Entry>> {
        if crossings.is_empty() {
            return Some(Vec::new());
        }
        let target = match target {
            Target::Brokers(leg) => &mut **leg,
            Target::Ferry(exporter) => {
                self.export(crossings, exporter, stop).await?;
                return Some(Vec::new());
            }
        };
        let mut refused = Vec::new();
        let mut rest = crossings.as_slice();
        while let Some(first) = rest.first() {
            let run = rest.iter().take_while(|m| m.topic == first.topic).count();
            let (now, later) = rest.split_at(run);
            refused.extend(self.send_run(now, target, stop).await?);
            rest = later;
        }
        Some(refused)
    }

    /// Writes `crossings` into a batch file, trying again until it is on disk.
    async fn export(
        &self,
        crossings: Vec<Message>,
        exporter: &Exporter,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        let mut backoff = Backoff::default();
        let count = crossings.len() as u64;
        loop {
            let written = tokio::select! {
                written = exporter.export(crossings.clone()) => written,
                _ = stop.changed() => return None,
            };
            match written {
                Ok(_) => {
                    self.stats.forwarded.fetch_add(count, Ordering::Relaxed);
                    return Some(());
                }
                Err(err) => {
                    static UNWRITTEN: Throttle = Throttle::per_second(1);
                    self.stats.retried.fetch_add(count, Ordering::Relaxed);
                    self.stats.set_state("waiting for the ferry directory");
                    if let Some(suppressed) = UNWRITTEN.admit() {
                        tracing::warn!(topic = %self.topic, %err, suppressed, "messages could not be written to a ferry file; retrying");
                    }
                    if !backoff.wait(stop).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Sends one run of messages to one topic until each is stored or refused for good.
    async fn send_run(
        &self,
        run: &[Message],
        target: &mut Leg,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<Entry>> {
        static SEND_FAILED: Throttle = Throttle::per_second(1);
        let mut pending: Vec<&Message> = run.iter().collect();
        let mut refused = Vec::new();
        let mut backoff = Backoff::default();
        loop {
            let client = target.client(stop).await?;
            let messages = pending.iter().map(|&m| m.clone()).collect();
            let outcome = tokio::select! {
                outcome = client.send_each(messages) => outcome,
                _ = stop.changed() => return None,
            };
            let failure = match outcome {
                Ok(results) => {
                    let mut again = Vec::new();
                    let mut failure = None;
                    for (message, result) in pending.into_iter().zip(results) {
                        match result {
                            Ok(_) => {
                                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(err) if refuses_for_good(&err) => {
                                self.stats.set_aside.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(topic = %self.topic, target = %message.topic, message_id = ?message.message_id, %err, "the target refuses a message for good; it is set aside in the decision log");
                                refused.push(Entry {
                                    time_ms: now_ms(),
                                    topic: self.topic.clone(),
                                    message_id: message.message_id.clone().unwrap_or_default(),
                                    decision: Decision::SetAside,
                                    reason: format!("{} refuses it: {err}", message.topic),
                                    message: Some(Recorded::of(message)),
                                });
                            }
                            Err(err) => {
                                failure.get_or_insert(err);
                                again.push(message);
                            }
                        }
                    }
                    pending = again;
                    match failure {
                        None => return Some(refused),
                        Some(err) => err,
                    }
                }
                Err(err) => {
                    if err.code().is_none() {
                        target.broke();
                    }
                    err
                }
            };
            self.stats.retried.fetch_add(pending.len() as u64, Ordering::Relaxed);
            self.stats.set_state("waiting for the target");
            if let Some(suppressed) = SEND_FAILED.admit() {
                tracing::warn!(topic = %self.topic, target = %self.target_topic, err = %failure, waiting = pending.len(), suppressed, "the target did not take messages; retrying (nothing is dropped)");
            }
            if !backoff.wait(stop).await {
                return None;
            }
        }
    }

    /// Writes `entries` to the decision log, retrying until it works; false when the gateway stops
    /// first (the batch is then not settled, and comes again).
    pub(crate) async fn record(&self, entries: &[Entry], stop: &mut watch::Receiver<bool>) -> bool {
        let mut backoff = Backoff::default();
        loop {
            match tokio::task::block_in_place(|| self.decisions.record(entries)) {
                Ok(()) => return true,
                Err(err) => {
                    static UNRECORDED: Throttle = Throttle::per_second(1);
                    if let Some(suppressed) = UNRECORDED.admit() {
                        tracing::error!(err = %format!("{err:#}"), suppressed, "the decision log cannot be written; the batch waits");
                    }
                    if !backoff.wait(stop).await {
                        return false;
                    }
                }
            }
        }
    }
}

impl Route {
    /// Asks the source every [`LAG_EVERY`] how many messages of the topic the gateway's group has
    /// not consumed yet, until `stop`.
    pub async fn watch_lag(self: Arc<Self>, mut source: Leg, mut stop: watch::Receiver<bool>) {
        loop {
            if !crate::leg::sleep_unless_stopped(LAG_EVERY, &mut stop).await {
                return;
            }
            let Some(client) = source.client(&mut stop).await else { return };
            match self.backlog(&client).await {
                Ok(lag) => self.stats.lag_messages.store(lag, Ordering::Relaxed),
                Err(err) => {
                    tracing::debug!(topic = %self.topic, %err, "could not ask the source for the lag");
                    if err.code().is_none() {
                        source.broke();
                    }
                }
            }
        }
    }

    /// Messages of the topic, and of the group's retry topic (where the source moves a message whose
    /// invisible time ran out), that the gateway's group has not consumed.
    async fn backlog(&self, client: &ferrymq_client::Client) -> Result<u64, ClientError> {
        let mut lag = 0u64;
        let retry_topic = format!("%RETRY%{}_{}", self.group, self.topic);
        let retries = client.route(&retry_topic).await.unwrap_or_default();
        for queue in client.route(&self.topic).await?.iter().chain(&retries) {
            let end = client.queue_offset(queue, true).await?;
            let done = match client.committed_offset(&self.group, queue).await? {
                Some(done) => done,
                None => client.queue_offset(queue, false).await?,
            };
            lag += u64::try_from(end.saturating_sub(done)).unwrap_or(0);
        }
        Ok(lag)
    }
}

/// How often a forward's lag in messages is asked for.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// One forward as `GET /v1/gateway` shows it.
#[derive(Debug, Serialize)]
pub struct RouteView {
    pub topic: String,
    pub target_topic: String,
    pub group: String,
    pub state: &'static str,
    pub policy: Option<PolicyView>,
    pub received: u64,
    pub forwarded: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub redacted: u64,
    pub set_aside: u64,
    pub retried: u64,
    pub policy_waits: u64,
    pub renewed: u64,
    pub renew_failed: u64,
    pub in_flight: u64,
    pub lag_messages: u64,
    pub lag_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct PolicyView {
    pub digest: String,
    pub calls: u64,
    pub failures: u64,
    pub quarantined: bool,
}

impl Route {
    pub fn view(&self) -> RouteView {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RouteView {
            topic: self.topic.clone(),
            target_topic: self.target_topic.clone(),
            group: self.group.clone(),
            state: s.state(),
            policy: self.policy.as_ref().map(|p| {
                let stats = p.stats();
                PolicyView {
                    digest: p.digest(),
                    calls: stats.calls,
                    failures: stats.failures,
                    quarantined: stats.quarantined,
                }
            }),
            received: get(&s.received),
            forwarded: get(&s.forwarded),
            rejected: get(&s.rejected),
            dropped: get(&s.dropped),
            redacted: get(&s.redacted),
            set_aside: get(&s.set_aside),
            retried: get(&s.retried),
            policy_waits: get(&s.policy_waits),
            renewed: get(&s.renewed),
            renew_failed: get(&s.renew_failed),
            in_flight: get(&s.in_flight),
            lag_messages: get(&s.lag_messages),
            lag_seconds: s.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_the_message_itself_sets_it_aside() {
        let broker =
            |code: pb::Code| ClientError::Broker { rpc: "SendMessage", code: code as i32, message: String::new() };
        assert!(refuses_for_good(&broker(pb::Code::MessageBodyTooLarge)));
        assert!(refuses_for_good(&broker(pb::Code::IllegalMessageTag)));
        for passing in [
            pb::Code::TopicNotFound,
            pb::Code::TooManyRequests,
            pb::Code::Forbidden,
            pb::Code::InternalServerError,
            pb::Code::HaNotAvailable,
        ] {
            assert!(!refuses_for_good(&broker(passing)), "{passing:?} passes: wait and send again");
        }
        let lost = ClientError::Protocol { rpc: "SendMessage", reason: "x".into() };
        assert!(!refuses_for_good(&lost));
    }
}
