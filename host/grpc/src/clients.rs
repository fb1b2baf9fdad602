//! The clients the broker knows: their Settings, their kind, and the Telemetry stream that carries
//! commands from the broker to them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrymq_proto::grpc::v2::{Settings, TelemetryCommand, settings::PubSub};
use ferrymq_proto::limit::Limit;
use ferrymq_proto::sync::lock;
use tokio::sync::mpsc;

/// Commands queued to one client; a client that does not read them gets no more.
pub const TELEMETRY_QUEUE_MAX: usize = 64;

pub type TelemetrySender = mpsc::Sender<Result<TelemetryCommand, tonic::Status>>;

#[derive(Debug)]
struct Client {
    settings: Option<Settings>,
    telemetry: Option<TelemetrySender>,
    last_seen: Instant,
}

/// The clients a broker tracks, at most `max` (a client id is whatever a caller sends, so a caller
/// could otherwise make the broker remember any number of them until they idle out).
#[derive(Debug)]
pub struct Clients {
    clients: Mutex<HashMap<String, Client>>,
    max: usize,
}

impl Clients {
    pub fn new(max: usize) -> Self {
        Self { clients: Mutex::new(HashMap::new()), max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Client>> {
        lock(&self.clients)
    }

    /// The client's entry, created if there is room; `None` for a new client when `max` are known.
    fn entry<'a>(&self, map: &'a mut HashMap<String, Client>, client_id: &str) -> Option<&'a mut Client> {
        // Known clients (every RPC of a live client) are found without allocating their id.
        if !map.contains_key(client_id) {
            if map.len() >= self.max {
                Limit::GrpcClients.reached();
                return None;
            }
            map.insert(client_id.to_owned(), Client { settings: None, telemetry: None, last_seen: Instant::now() });
        }
        let client = map.get_mut(client_id)?;
        client.last_seen = Instant::now();
        Some(client)
    }

    /// Whether the client is known, or could be.
    pub fn admits(&self, client_id: &str) -> bool {
        let map = self.lock();
        map.contains_key(client_id) || map.len() < self.max
    }

    /// Records that the client was heard from; `false` when it is new and `max` are known.
    pub fn touch(&self, client_id: &str) -> bool {
        self.entry(&mut self.lock(), client_id).is_some()
    }

    pub fn set_settings(&self, client_id: &str, settings: Settings) -> bool {
        self.entry(&mut self.lock(), client_id).map(|c| c.settings = Some(settings)).is_some()
    }

    pub fn attach_telemetry(&self, client_id: &str, sender: TelemetrySender) -> bool {
        self.entry(&mut self.lock(), client_id).map(|c| c.telemetry = Some(sender)).is_some()
    }

    /// Forgets the telemetry stream `sender` belongs to, if it is still the client's current one.
    pub fn detach_telemetry(&self, client_id: &str, sender: &TelemetrySender) {
        if let Some(client) = self.lock().get_mut(client_id)
            && client.telemetry.as_ref().is_some_and(|t| t.same_channel(sender))
        {
            client.telemetry = None;
        }
    }

    pub fn remove(&self, client_id: &str) {
        self.lock().remove(client_id);
    }

    /// Clients neither streaming telemetry nor heard from within `timeout`; they are removed.
    pub fn take_idle(&self, timeout: Duration) -> Vec<String> {
        let mut map = self.lock();
        let idle: Vec<String> = map
            .iter()
            .filter(|(_, c)| c.telemetry.as_ref().is_none_or(|t| t.is_closed()) && c.last_seen.elapsed() > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            map.remove(id);
        }
        idle
    }

    /// Live telemetry streams of producers that announced `topic`.
    pub fn producers_of(&self, topic: &str) -> Vec<(String, TelemetrySender)> {
        self.lock()
            .iter()
            .filter_map(|(id, c)| {
                let publishing = match c.settings.as_ref()?.pub_sub.as_ref()? {
                    PubSub::Publishing(p) => p,
                    PubSub::Subscription(_) => return None,
                };
                let announced = publishing.topics.iter().any(|t| t.name == topic);
                let telemetry = c.telemetry.as_ref().filter(|t| !t.is_closed())?;
                announced.then(|| (id.clone(), telemetry.clone()))
            })
            .collect()
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_clients_beyond_max_are_not_remembered_and_known_ones_still_are() {
        let clients = Clients::new(2);
        assert!(clients.touch("a") && clients.touch("b"));
        assert!(!clients.touch("c"), "a third client id");
        assert!(!clients.admits("c"));
        assert!(clients.touch("a"), "a known client is still heard");
        assert_eq!(clients.count(), 2);
        clients.remove("b");
        assert!(clients.touch("c"), "room again once one is gone");
    }
}
