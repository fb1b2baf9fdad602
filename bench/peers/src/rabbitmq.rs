//! RabbitMQ quorum queues as a benchmark target (AMQP 0.9.1).

use std::time::Duration;

use anyhow::Context as _;
use ferrymq_bench::{Consumer, Producer, Target, stamp_of};
use futures_util::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// Deliveries taken per receive, acknowledged together.
const RECEIVE_MAX: usize = 32;
const PREFETCH: u16 = 1000;
const RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// `delivery_mode` 2: the message is persistent.
const PERSISTENT: u8 = 2;

pub struct Rabbitmq {
    pub url: String,
    pub queue: String,
}

impl Rabbitmq {
    async fn channel(&self) -> anyhow::Result<(Connection, Channel)> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to RabbitMQ at {}", self.url))?;
        let channel = connection.create_channel().await.context("opening a channel")?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        channel
            .queue_declare(
                &self.queue,
                QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
                arguments,
            )
            .await
            .context("declaring the quorum queue")?;
        Ok((connection, channel))
    }
}

impl Target for Rabbitmq {
    type Producer = RabbitmqProducer;
    type Consumer = RabbitmqConsumer;

    fn name(&self) -> String {
        "rabbitmq-quorum".into()
    }

    async fn producer(&self, _index: usize) -> anyhow::Result<RabbitmqProducer> {
        let (connection, channel) = self.channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.context("turning publisher confirms on")?;
        Ok(RabbitmqProducer { _connection: connection, channel, queue: self.queue.clone() })
    }

    async fn consumer(&self, index: usize) -> anyhow::Result<RabbitmqConsumer> {
        let (connection, channel) = self.channel().await?;
        channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.context("setting the prefetch")?;
        let consumer = channel
            .basic_consume(
                &self.queue,
                &format!("bench-{index}"),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("starting a consumer")?;
        Ok(RabbitmqConsumer { _connection: connection, _channel: channel, consumer })
    }
}

pub struct RabbitmqProducer {
    _connection: Connection,
    channel: Channel,
    queue: String,
}

impl Producer for RabbitmqProducer {
    async fn send(&mut self, bodies: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
        let mut confirms = Vec::with_capacity(bodies.len());
        for body in &bodies {
            let confirm = self
                .channel
                .basic_publish("", &self.queue, BasicPublishOptions::default(), body, properties.clone())
                .await
                .context("publishing")?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = confirm.await.context("waiting for a publisher confirm")?;
            anyhow::ensure!(confirmation.is_ack(), "the broker refused a message (nack)");
        }
        Ok(())
    }
}

pub struct RabbitmqConsumer {
    _connection: Connection,
    _channel: Channel,
    consumer: lapin::Consumer,
}

impl Consumer for RabbitmqConsumer {
    async fn receive(&mut self, stamps: &mut Vec<u64>) -> anyhow::Result<()> {
        let first = match tokio::time::timeout(RECEIVE_WAIT, self.consumer.next()).await {
            Err(_) => return Ok(()),
            Ok(None) => anyhow::bail!("the consumer was cancelled by the broker"),
            Ok(Some(delivery)) => delivery.context("receiving")?,
        };
        let mut last = first;
        stamps.extend(stamp_of(&last.data));
        // Take what else is already here, then acknowledge everything up to the last one.
        while stamps.len() < RECEIVE_MAX {
            match self.consumer.next().now_or_never() {
                Some(Some(delivery)) => {
                    last = delivery.context("receiving")?;
                    stamps.extend(stamp_of(&last.data));
                }
                _ => break,
            }
        }
        last.acker.ack(BasicAckOptions { multiple: true }).await.context("acknowledging")?;
        Ok(())
    }
}
