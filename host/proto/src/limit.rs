//! How often each bound a client can run into was reached, for `/metrics`
//! (`ferrymq_limit_reached_total{limit="<setting>"}`): an operator sees which limit clients press
//! against, named by the setting that raises it.

use std::sync::atomic::{AtomicU64, Ordering};

/// A bound a client can reach, named by its setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Every gRPC connection slot taken: the next connection waits in the accept queue.
    GrpcConnections,
    /// A gRPC connection said nothing within `first_bytes_ms` and was closed.
    GrpcFirstBytes,
    /// A new client beyond `clients_max` was not tracked.
    GrpcClients,
    /// A receive found `receive_waiters_max` receives waiting and was refused.
    GrpcReceiveWaiters,
    /// Every admin connection slot taken: a connection got a spare slot (health and metrics only).
    AdminConnections,
    /// An admin request body did not arrive within `body_timeout_ms` (408).
    AdminBodyTimeout,
    /// An admin request body was over its limit (413).
    AdminBodyBytes,
    /// A new group beyond `groups_max` was refused.
    Groups,
    /// A group a client created by using it was refused beyond `auto_create_groups_per_s`.
    GroupCreations,
    /// Refused admin requests beyond the audit's entries per second were only counted.
    AuditRefusals,
    /// A send broke one of the `broker.send` limits (size, properties, names, times).
    Send,
}

impl Limit {
    pub const ALL: [Limit; 11] = [
        Limit::GrpcConnections,
        Limit::GrpcFirstBytes,
        Limit::GrpcClients,
        Limit::GrpcReceiveWaiters,
        Limit::AdminConnections,
        Limit::AdminBodyTimeout,
        Limit::AdminBodyBytes,
        Limit::Groups,
        Limit::GroupCreations,
        Limit::AuditRefusals,
        Limit::Send,
    ];

    /// The setting that moves this bound, as the configuration file spells it.
    pub fn setting(self) -> &'static str {
        match self {
            Limit::GrpcConnections => "grpc.connections_max",
            Limit::GrpcFirstBytes => "grpc.first_bytes_ms",
            Limit::GrpcClients => "grpc.clients_max",
            Limit::GrpcReceiveWaiters => "grpc.receive_waiters_max",
            Limit::AdminConnections => "admin.connections_max",
            Limit::AdminBodyTimeout => "admin.body_timeout_ms",
            Limit::AdminBodyBytes => "admin.body_bytes_max",
            Limit::Groups => "broker.groups_max",
            Limit::GroupCreations => "broker.auto_create_groups_per_s",
            Limit::AuditRefusals => "audit.refusals_per_s",
            Limit::Send => "broker.send",
        }
    }

    /// Counts one time the bound was reached.
    pub fn reached(self) {
        REACHED[self as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Times the bound was reached since the process started.
    pub fn count(self) -> u64 {
        REACHED[self as usize].load(Ordering::Relaxed)
    }
}

static REACHED: [AtomicU64; Limit::ALL.len()] = [const { AtomicU64::new(0) }; Limit::ALL.len()];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_has_its_own_counter_and_a_setting_name() {
        for (i, limit) in Limit::ALL.iter().enumerate() {
            assert_eq!(*limit as usize, i, "ALL is in declaration order");
            assert!(limit.setting().contains('.'), "{limit:?}");
        }
        let before = Limit::Groups.count();
        let other = Limit::Send.count();
        Limit::Groups.reached();
        assert_eq!(Limit::Groups.count(), before + 1);
        assert_eq!(Limit::Send.count(), other);
    }
}
