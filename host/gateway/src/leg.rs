//! One side of the gateway: a connection to one of a zone's brokers, made when first needed and made
//! again (to the next endpoint) after it breaks, waiting between attempts without giving up.

use std::time::Duration;

use ferrymq_client::{Client, ClientOptions};
use ferrymq_proto::throttle::Throttle;
use tokio::sync::watch;

/// Longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);

/// Doubling waits, from 100 ms up to [`BACKOFF_MAX`].
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_FIRST }
    }
}

impl Backoff {
    /// Waits the next interval; false when the gateway is stopping instead.
    pub async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        sleep_unless_stopped(wait, stop).await
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

/// Sleeps `wait`; false when the gateway is stopping instead.
pub async fn sleep_unless_stopped(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// A zone's brokers, as one forward uses them.
pub struct Leg {
    /// `source` or `target`, for logs.
    side: &'static str,
    endpoints: Vec<String>,
    options: ClientOptions,
    client: Option<Client>,
    next: usize,
    backoff: Backoff,
}

impl Leg {
    pub fn new(side: &'static str, endpoints: Vec<String>, client_id: String) -> Self {
        let options = ClientOptions { client_id, ..ClientOptions::default() };
        Self { side, endpoints, options, client: None, next: 0, backoff: Backoff::default() }
    }

    /// A connected client, connecting (endpoint after endpoint, with back-off) when there is none;
    /// `None` when the gateway stops first.
    pub async fn client(&mut self, stop: &mut watch::Receiver<bool>) -> Option<Client> {
        static UNREACHABLE: Throttle = Throttle::per_second(1);
        loop {
            if *stop.borrow() {
                return None;
            }
            if let Some(client) = &self.client {
                return Some(client.clone());
            }
            let endpoint = &self.endpoints[self.next % self.endpoints.len()];
            self.next = self.next.wrapping_add(1);
            let attempt = tokio::select! {
                connected = Client::connect(endpoint, self.options.clone()) => connected,
                _ = stop.changed() => return None,
            };
            match attempt {
                Ok(client) => {
                    tracing::info!(side = self.side, %endpoint, "connected");
                    self.backoff.reset();
                    self.client = Some(client);
                }
                Err(err) => {
                    if let Some(suppressed) = UNREACHABLE.admit() {
                        tracing::warn!(side = self.side, %endpoint, %err, suppressed, "cannot reach the zone's broker; retrying");
                    }
                    if !self.backoff.wait(stop).await {
                        return None;
                    }
                }
            }
        }
    }

    /// The connection failed: the next call connects again, to the next endpoint.
    pub fn broke(&mut self) {
        self.client = None;
    }
}
