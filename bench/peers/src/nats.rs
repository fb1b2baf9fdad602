//! NATS JetStream as a benchmark target.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use ferrymq_bench::{Consumer, Producer, Target, stamp_of};
use futures_util::StreamExt as _;

const FETCH_MAX: usize = 32;
const FETCH_WAIT: Duration = Duration::from_secs(1);

pub struct Nats {
    url: String,
    stream: String,
}

impl Nats {
    /// Connects once to create the stream (file storage, one replica) and its durable consumer.
    pub async fn connect(url: &str, name: &str) -> anyhow::Result<Nats> {
        let client = async_nats::connect(url).await.with_context(|| format!("connecting to NATS at {url}"))?;
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![name.to_owned()],
                storage: stream::StorageType::File,
                num_replicas: 1,
                ..stream::Config::default()
            })
            .await
            .context("creating the JetStream stream")?;
        stream
            .get_or_create_consumer(
                name,
                consumer::pull::Config {
                    durable_name: Some(name.to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    max_ack_pending: 100_000,
                    ..consumer::pull::Config::default()
                },
            )
            .await
            .context("creating the durable pull consumer")?;
        Ok(Nats { url: url.to_owned(), stream: name.to_owned() })
    }

    async fn context(&self) -> anyhow::Result<jetstream::Context> {
        let client = async_nats::connect(&self.url).await.with_context(|| format!("connecting to {}", self.url))?;
        Ok(jetstream::new(client))
    }
}

impl Target for Nats {
    type Producer = NatsProducer;
    type Consumer = NatsConsumer;

    fn name(&self) -> String {
        "nats-jetstream".into()
    }

    async fn producer(&self, _index: usize) -> anyhow::Result<NatsProducer> {
        Ok(NatsProducer { js: self.context().await?, subject: self.stream.clone() })
    }

    async fn consumer(&self, _index: usize) -> anyhow::Result<NatsConsumer> {
        let js = self.context().await?;
        let stream = js.get_stream(&self.stream).await.context("looking the stream up")?;
        let consumer =
            stream.get_consumer(&self.stream).await.map_err(|e| anyhow::anyhow!("looking the consumer up: {e}"))?;
        Ok(NatsConsumer { consumer })
    }
}

pub struct NatsProducer {
    js: jetstream::Context,
    subject: String,
}

impl Producer for NatsProducer {
    async fn send(&mut self, bodies: Vec<Vec<u8>>) -> anyhow::Result<()> {
        // Publish the whole batch, then wait for every acknowledgement: one round trip per batch.
        let mut acks = Vec::with_capacity(bodies.len());
        for body in bodies {
            acks.push(self.js.publish(self.subject.clone(), body.into()).await.context("publishing")?);
        }
        for ack in acks {
            ack.await.context("waiting for a publish acknowledgement")?;
        }
        Ok(())
    }
}

pub struct NatsConsumer {
    consumer: consumer::Consumer<consumer::pull::Config>,
}

impl Consumer for NatsConsumer {
    async fn receive(&mut self, stamps: &mut Vec<u64>) -> anyhow::Result<()> {
        let mut batch = self
            .consumer
            .batch()
            .max_messages(FETCH_MAX)
            .expires(FETCH_WAIT)
            .messages()
            .await
            .context("fetching a batch")?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("receiving: {e}"))?;
            stamps.extend(stamp_of(&message.payload));
            message.ack().await.map_err(|e| anyhow::anyhow!("acknowledging: {e}"))?;
        }
        Ok(())
    }
}
