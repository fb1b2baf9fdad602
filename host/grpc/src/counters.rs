//! Requests served per RPC, for `/metrics` and for the compatibility tests that prove which RPCs each
//! official client really calls.

use std::sync::atomic::{AtomicU64, Ordering};

/// The RPCs of `MessagingService`, in the order of the schema.
pub const RPCS: [&str; 17] = [
    "QueryRoute",
    "Heartbeat",
    "SendMessage",
    "QueryAssignment",
    "ReceiveMessage",
    "AckMessage",
    "ForwardMessageToDeadLetterQueue",
    "PullMessage",
    "UpdateOffset",
    "GetOffset",
    "QueryOffset",
    "EndTransaction",
    "Telemetry",
    "NotifyClientTermination",
    "ChangeInvisibleDuration",
    "RecallMessage",
    "SyncLiteSubscription",
];

#[derive(Debug, Default)]
pub struct RpcCounters {
    counts: [AtomicU64; RPCS.len()],
}

impl RpcCounters {
    /// Counts one request of `rpc` (a name from [`RPCS`]).
    pub fn count(&self, rpc: &str) {
        if let Some(i) = RPCS.iter().position(|r| *r == rpc) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(rpc, requests)` for every RPC.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        RPCS.iter().zip(&self.counts).map(|(r, c)| (*r, c.load(Ordering::Relaxed))).collect()
    }
}
