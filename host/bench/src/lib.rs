//! The workload runner behind `ferrymq bench`: producers and consumers driven against a [`Target`],
//! paced or flat out, with HDR histograms of acknowledgement and end-to-end latency.
//!
//! A target is anything that can send a batch of bodies and receive what was sent: ferrymq through
//! this crate's client ([`ferrymq::Ferrymq`]), or a peer broker through its own protocol (the
//! `bench/peers` crate). Every target runs exactly the same loop, so their figures compare.
//!
//! Each body starts with the send time (nanoseconds since the Unix epoch, little endian) so that a
//! consumer can tell end-to-end latency; producer and consumer run on one machine and share a clock.

pub mod cli;
pub mod ferrymq;
mod progress;
mod report;
mod run;
mod workload;

pub use report::{Lag, Latency, Report};
pub use run::run;
pub use workload::{Mode, Workload, parse_duration};

use std::future::Future;

/// One producer: a connection with one request in flight.
pub trait Producer: Send + 'static {
    /// Sends `bodies` and returns once the broker has acknowledged every one of them.
    fn send(&mut self, bodies: Vec<Vec<u8>>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// One consumer: a connection that receives and acknowledges.
pub trait Consumer: Send + 'static {
    /// Receives what is ready (waiting a few seconds at most when nothing is), acknowledges it, and
    /// pushes each message's send time (its body's first 8 bytes) onto `stamps`.
    fn receive(&mut self, stamps: &mut Vec<u64>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A broker under test.
pub trait Target: Send + Sync + 'static {
    type Producer: Producer;
    type Consumer: Consumer;
    /// A short name for reports, such as `ferrymq` or `nats-jetstream`.
    fn name(&self) -> String;
    fn producer(&self, index: usize) -> impl Future<Output = anyhow::Result<Self::Producer>> + Send;
    fn consumer(&self, index: usize) -> impl Future<Output = anyhow::Result<Self::Consumer>> + Send;
}

/// The send time a body carries, if it is long enough to carry one.
pub fn stamp_of(body: &[u8]) -> Option<u64> {
    body.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
}
