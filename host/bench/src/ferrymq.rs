//! ferrymq (or any RocketMQ 5 gRPC endpoint) as a benchmark target, through this crate's client.

use std::time::Duration;

use ferrymq_client::{Client, ClientOptions, Kind, Message, Receive};

use super::{Consumer, Producer, Target, stamp_of};

/// Receives ask for this many messages (RocketMQ's batch limit).
const RECEIVE_BATCH: u32 = 32;
const INVISIBLE: Duration = Duration::from_secs(30);
/// FIFO producers spread their messages over this many message groups each.
const FIFO_GROUPS_PER_PRODUCER: usize = 8;

/// A RocketMQ 5 gRPC endpoint: a topic to produce to and a consumer group to receive with.
#[derive(Clone, Debug)]
pub struct Ferrymq {
    pub name: String,
    pub address: String,
    /// Where consumers connect (the producers' address, or another zone's broker).
    pub consume_address: String,
    pub topic: String,
    pub group: String,
    pub kind: Kind,
    /// Delay messages are due this long after they are sent.
    pub delay: Duration,
    /// How long a receive may wait for messages (RocketMQ proxies refuse less than 5 s).
    pub long_polling: Duration,
}

impl Target for Ferrymq {
    type Producer = FerrymqProducer;
    type Consumer = FerrymqConsumer;

    fn name(&self) -> String {
        self.name.clone()
    }

    async fn producer(&self, index: usize) -> anyhow::Result<FerrymqProducer> {
        let client = Client::connect(&self.address, ClientOptions::default()).await?;
        // Fail before the clock starts if the topic is missing.
        client.route(&self.topic).await?;
        Ok(FerrymqProducer { client, target: self.clone(), index, sent: 0 })
    }

    async fn consumer(&self, _index: usize) -> anyhow::Result<FerrymqConsumer> {
        let client = Client::connect(&self.consume_address, ClientOptions::default()).await?;
        Ok(FerrymqConsumer {
            client,
            topic: self.topic.clone(),
            group: self.group.clone(),
            long_polling: self.long_polling,
        })
    }
}

pub struct FerrymqProducer {
    client: Client,
    target: Ferrymq,
    index: usize,
    sent: usize,
}

impl Producer for FerrymqProducer {
    async fn send(&mut self, bodies: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let due = ferrymq_client::now_ms() + self.target.delay.as_millis() as i64;
        let messages = bodies
            .into_iter()
            .map(|body| {
                let mut m = Message::new(self.target.topic.clone(), body);
                match self.target.kind {
                    Kind::Normal => {}
                    Kind::Fifo => {
                        let group = self.sent % FIFO_GROUPS_PER_PRODUCER;
                        m.message_group = Some(format!("bench-{}-{group}", self.index));
                    }
                    Kind::Delay => m.delivery_ms = Some(due),
                }
                self.sent += 1;
                m
            })
            .collect();
        self.client.send(messages).await?;
        Ok(())
    }
}

pub struct FerrymqConsumer {
    client: Client,
    topic: String,
    group: String,
    long_polling: Duration,
}

impl Consumer for FerrymqConsumer {
    async fn receive(&mut self, stamps: &mut Vec<u64>) -> anyhow::Result<()> {
        let ask = Receive {
            group: &self.group,
            topic: &self.topic,
            tag_expression: "*",
            batch: RECEIVE_BATCH,
            invisible: INVISIBLE,
            long_polling: self.long_polling,
        };
        let received = self.client.receive(&ask).await?;
        if received.is_empty() {
            return Ok(());
        }
        stamps.extend(received.iter().filter_map(|r| stamp_of(&r.body)));
        self.client.ack(&self.group, &self.topic, &received).await?;
        Ok(())
    }
}
