//! The RocketMQ 5 gRPC front end (`apache.rocketmq.v2.MessagingService`, port 8081 by default).
//!
//! `service.rs` maps each RPC onto a `GrpcState` method in the module for its concern: `route`
//! (QueryRoute, QueryAssignment), `produce` (SendMessage), `consume` (receive, ack, invisible time,
//! dead letters), `pull` (pull and offsets), `telemetry` (Settings and server commands). `convert`
//! translates messages, `status` errors, `settings` the Settings reply.

mod arrivals;
mod clients;
mod consume;
// Public for the fuzz targets (fuzz/), which drive the conversions directly.
pub mod convert;
#[cfg(test)]
mod convert_fuzz;
mod counters;
mod listener;
mod produce;
mod pull;
mod route;
mod service;
mod settings;
mod spans;
mod status;
mod telemetry;
mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrymq_broker::Broker;
use ferrymq_proto::grpc::v2::messaging_service_server::MessagingServiceServer;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

pub use arrivals::Arrivals;
pub use clients::Clients;
pub use counters::RpcCounters;
pub use service::Messaging;

/// The gRPC endpoint's settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Listen address for RocketMQ 5 clients.
    pub listen: SocketAddr,
    /// `host:port` clients are told to use for this broker when they did not say how they reached it;
    /// defaults to the listen address (127.0.0.1 when listening on all interfaces).
    pub advertised_address: Option<String>,
    /// The broker name shown in routes.
    pub broker_name: String,
    /// Longest a receive or pull waits for messages.
    pub long_polling_ms_max: i64,
    /// Bounds of the invisible time a consumer may ask for.
    pub invisible_ms_min: i64,
    pub invisible_ms_max: i64,
    /// Invisible time of auto-renewed (push consumer) deliveries, renewed while the client lives.
    pub auto_renew_invisible_ms: i64,
    /// A client neither streaming telemetry nor heard from for this long is forgotten, and what it
    /// held is released for redelivery.
    pub client_idle_timeout_ms: u64,
    /// Receives waiting at once; more are answered TOO_MANY_REQUESTS.
    pub receive_waiters_max: usize,
    /// Largest gRPC message accepted (a batch of messages in one SendMessage).
    pub request_bytes_max: usize,
    /// Connections served at once; more wait in the accept queue. Lowered at start when the
    /// process's open-file limit could not hold them.
    pub connections_max: usize,
    /// A connection that sends nothing for this long after it is accepted is closed.
    pub first_bytes_ms: u64,
    /// Requests (HTTP/2 streams) open at once on one connection; a client is told, and waits.
    pub streams_per_connection_max: u32,
    /// Largest block of request headers (gRPC metadata) accepted.
    pub header_bytes_max: u32,
    /// Clients the broker keeps track of (Settings, telemetry stream, last heard); a new client
    /// id beyond them gets TOO_MANY_REQUESTS on heartbeat and telemetry until one idles out.
    pub clients_max: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            advertised_address: None,
            broker_name: "ferrymq".into(),
            long_polling_ms_max: 20_000,
            invisible_ms_min: 10_000,
            invisible_ms_max: 12 * 3_600_000,
            auto_renew_invisible_ms: 60_000,
            client_idle_timeout_ms: 120_000,
            receive_waiters_max: 10_000,
            request_bytes_max: 64 << 20,
            connections_max: 10_000,
            first_bytes_ms: 10_000,
            streams_per_connection_max: 1_024,
            header_bytes_max: 64 << 10,
            clients_max: 20_000,
        }
    }
}

impl GrpcConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.long_polling_ms_max <= 0 || self.invisible_ms_min < 0 || self.invisible_ms_max < self.invisible_ms_min {
            return Err("long_polling_ms_max must be positive and invisible_ms_min <= invisible_ms_max".into());
        }
        if self.auto_renew_invisible_ms <= 0 || self.receive_waiters_max == 0 || self.request_bytes_max == 0 {
            return Err("auto_renew_invisible_ms, receive_waiters_max and request_bytes_max must be positive".into());
        }
        if self.connections_max == 0
            || self.clients_max == 0
            || self.first_bytes_ms == 0
            || self.streams_per_connection_max == 0
            || self.header_bytes_max < 4096
        {
            return Err(
                "connections_max, clients_max, first_bytes_ms and streams_per_connection_max must be positive, header_bytes_max at least 4096"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What every RPC shares.
#[derive(Debug)]
pub struct GrpcState {
    pub broker: Arc<Broker>,
    pub clients: Clients,
    pub arrivals: Arc<Arrivals>,
    pub config: GrpcConfig,
    /// Where the listener actually bound (port 0 resolved).
    pub bound: SocketAddr,
    /// Requests served per RPC.
    pub rpcs: RpcCounters,
    /// This broker's place in its cluster (a standalone node is a master of its own).
    pub cluster: Arc<ferrymq_cluster::Cluster>,
    waiters: Semaphore,
}

impl GrpcState {
    pub fn new(
        broker: Arc<Broker>,
        arrivals: Arc<Arrivals>,
        config: GrpcConfig,
        bound: SocketAddr,
        cluster: Arc<ferrymq_cluster::Cluster>,
    ) -> Self {
        let waiters = Semaphore::new(config.receive_waiters_max);
        Self {
            broker,
            clients: Clients::new(config.clients_max),
            arrivals,
            config,
            bound,
            rpcs: RpcCounters::default(),
            cluster,
            waiters,
        }
    }

    /// The host and port clients are told to use for this broker.
    pub fn advertised(&self) -> (String, i32) {
        if let Some((host, port)) = self.config.advertised_address.as_deref().and_then(|a| a.rsplit_once(':'))
            && let Ok(port) = port.parse()
        {
            return (host.trim_matches(['[', ']']).to_owned(), port);
        }
        let ip = if self.bound.ip().is_unspecified() { "127.0.0.1".to_owned() } else { self.bound.ip().to_string() };
        (ip, i32::from(self.bound.port()))
    }

    /// Connected clients, for metrics.
    pub fn client_count(&self) -> usize {
        self.clients.count()
    }

    /// Forgets clients that went silent and releases what they held. Runs until `stop`.
    pub async fn expire_idle_clients(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let timeout = Duration::from_millis(self.config.client_idle_timeout_ms);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            for client in self.clients.take_idle(timeout) {
                let released = self.broker.delivery().release_client(&client);
                tracing::info!(%client, released, "client went silent; forgotten");
            }
        }
    }
}

/// HTTP/2 flow-control windows: a 1 MiB request (1,024 sends of 1 KiB) fits in one window.
const HTTP2_STREAM_WINDOW_BYTES: u32 = 2 << 20;
/// A connection is pinged after this long without traffic, and dropped when the ping is not
/// answered within the timeout (and with it every stream it held).
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 8 << 20;

/// Serves gRPC on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<GrpcState>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let config = state.config.clone();
    let service = MessagingServiceServer::new(Messaging { state })
        .max_decoding_message_size(config.request_bytes_max)
        .max_encoding_message_size(config.request_bytes_max);
    let incoming = listener::incoming(listener, config.connections_max, Duration::from_millis(config.first_bytes_ms));
    // Wider HTTP/2 windows let a batch of sends arrive without a window update. A peer that stops
    // answering pings is dropped, and with it its streams.
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(config.streams_per_connection_max))
        .http2_max_header_list_size(Some(config.header_bytes_max))
        .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW_BYTES))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.changed().await;
        })
        .await
}

/// Runs `job` on a blocking thread when it may call a plugin (`plugins`), inline otherwise: a plugin
/// call is synchronous and may take its whole time limit, which an async worker must not wait out.
/// `None` (logged, naming `what`) if the blocking thread failed.
///
/// # Cancel safety
/// Dropping the future leaves a started blocking job to finish on its own; its result is lost.
async fn off_the_runtime_if<T: Send + 'static>(
    plugins: bool,
    what: &'static str,
    job: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if !plugins {
        return Some(job());
    }
    match tokio::task::spawn_blocking(job).await {
        Ok(done) => Some(done),
        Err(err) => {
            tracing::error!(%err, what, "a request running a plugin failed");
            None
        }
    }
}
