//! Wakes long-polling consumers when messages arrive in a topic.
//!
//! The store's dispatcher calls [`Arrivals::notify`] for every queue that grew; a waiting receive holds
//! a [`tokio::sync::Notify`] per topic it reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferrymq_proto::sync::lock;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Arrivals {
    topics: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Arrivals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        lock(&self.topics)
    }

    /// Wakes everyone waiting on `topic`. Cheap when nobody waits.
    pub fn notify(&self, topic: &str) {
        if let Some(notify) = self.lock().get(topic) {
            notify.notify_waiters();
        }
    }

    /// The signal for `topic`.
    pub fn listener(&self, topic: &str) -> Arc<Notify> {
        self.lock().entry(topic.to_owned()).or_default().clone()
    }
}
